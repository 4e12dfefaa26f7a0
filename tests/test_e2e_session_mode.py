"""End to end: session pooling (a server per client, reset on release), borrow timeout, client limit."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import psycopg
import pytest
from e2e_helpers import ClusterSpec, RunningProxy, proxy_config, running_proxy

from deploy.pgcluster import PgCluster, free_ports

CLIENT_LIMIT = 3


@pytest.fixture(scope="module")
def proxies(pg_cluster: PgCluster, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, RunningProxy]]:
    session_port, limited_port, wide_port = free_ports(3)
    config = proxy_config(pg_cluster, session_port, pool_mode="session", pool_size=1, more_clusters=[
        ClusterSpec("limited", limited_port, pool_size=2, borrow_timeout="1s",
                    pool_extra={"max_client_connections": CLIENT_LIMIT}),
        ClusterSpec("wide", wide_port, pool_mode="session", pool_size=4),
    ])
    # The session cluster's borrow timeout: long enough for a second client to wait for the first.
    with running_proxy(config, tmp_path_factory.mktemp("session-mode"), session_port) as proxy:
        yield {"session": proxy, "limited": RunningProxy(proxy.process, limited_port),
               "wide": RunningProxy(proxy.process, wide_port)}
        proxy.assert_alive_and_clean()


def _one(conn: psycopg.Connection, sql: str) -> object:
    row = conn.execute(sql).fetchone()
    assert row is not None
    return row[0]


def test_session_mode_keeps_the_server_then_resets_it(proxies: dict[str, RunningProxy]) -> None:
    proxy = proxies["session"]
    with psycopg.connect(proxy.conninfo(), autocommit=True) as a:
        pid = _one(a, "SELECT pg_backend_pid()")
        a.execute("SET work_mem = '7MB'")
        a.execute("CREATE TEMP TABLE e2e_session_tmp (x int)")
        a.execute("PREPARE e2e_session_q AS SELECT 5")
        for _ in range(3):
            with a.transaction():
                assert _one(a, "SELECT pg_backend_pid()") == pid
            assert _one(a, "SHOW work_mem") == "7MB"
            assert _one(a, "EXECUTE e2e_session_q") == 5
    with psycopg.connect(proxy.conninfo(), autocommit=True) as b:
        assert _one(b, "SELECT pg_backend_pid()") == pid      # pool size 1: the same server, reset
        assert _one(b, "SHOW work_mem") == "4MB"
        assert _one(b, "SELECT to_regclass('pg_temp.e2e_session_tmp') IS NULL") is True
        assert _one(b, "SELECT count(*) FROM pg_prepared_statements") == 0


def test_second_client_waits_for_the_session_server(proxies: dict[str, RunningProxy]) -> None:
    """Pool size 1 in session mode: B's first query waits until A disconnects, then runs."""
    proxy = proxies["session"]
    a = psycopg.connect(proxy.conninfo(), autocommit=True)
    _one(a, "SELECT 1")
    threading.Timer(0.5, a.close).start()
    started = time.monotonic()
    with psycopg.connect(proxy.conninfo(), autocommit=True) as b:
        assert _one(b, "SELECT 'b ran'") == "b ran"
    assert time.monotonic() - started >= 0.4


def test_borrow_timeout_gives_a_clear_error(proxies: dict[str, RunningProxy]) -> None:
    proxy = proxies["limited"]
    with psycopg.connect(proxy.conninfo()) as a, psycopg.connect(proxy.conninfo()) as b:
        _one(a, "SELECT 1")   # a and b hold both server connections in open transactions
        _one(b, "SELECT 1")
        with psycopg.connect(proxy.conninfo(), autocommit=True) as c:
            started = time.monotonic()
            with pytest.raises(psycopg.OperationalError) as info:
                c.execute("SELECT 1")
            assert 0.8 < time.monotonic() - started < 3
            assert info.value.sqlstate == "53300"
            assert "no server connection available" in str(info.value)
            a.rollback()
            assert _one(c, "SELECT 'c ran'") == "c ran"   # the client stays usable


def test_max_client_connections(proxies: dict[str, RunningProxy]) -> None:
    proxy = proxies["limited"]
    conns = [psycopg.connect(proxy.conninfo(), autocommit=True) for _ in range(CLIENT_LIMIT)]
    try:
        with pytest.raises(psycopg.OperationalError) as info:
            psycopg.connect(proxy.conninfo(), autocommit=True)
        assert "too many client connections" in str(info.value)
        assert all(_one(c, "SELECT 1") == 1 for c in conns)
    finally:
        for c in conns:
            c.close()
    with psycopg.connect(proxy.conninfo(), autocommit=True) as again:   # a slot is free again
        assert _one(again, "SELECT 1") == 1


def test_a_terminated_backend_reaches_its_session_client_with_the_servers_own_fatal(
        proxies: dict[str, RunningProxy], pg_cluster: PgCluster) -> None:
    """pg_terminate_backend of a session-mode client's backend: the client gets FATAL 57P01 (AdminShutdown,
    as directly) and its connection is closed; the next client works."""
    proxy = proxies["session"]
    with psycopg.connect(proxy.conninfo(), autocommit=True) as victim:
        pid = _one(victim, "SELECT pg_backend_pid()")
        assert pg_cluster.sql(0, f"SELECT pg_terminate_backend({pid})") == "t"
        with pytest.raises(psycopg.errors.AdminShutdown):
            for _ in range(50):   # the FATAL arrives asynchronously: the next statement reads it
                victim.execute("SELECT 1")
                time.sleep(0.05)
        assert victim.closed or victim.broken
    with psycopg.connect(proxy.conninfo(), autocommit=True) as after:
        assert _one(after, "SELECT 1") == 1


def test_a_session_client_is_given_its_backends_own_pid(proxies: dict[str, RunningProxy],
                                                        pg_cluster: PgCluster) -> None:
    """Session mode: BackendKeyData carries the pid of the client's own backend, so pg_backend_pid(),
    pg_terminate_backend(conn.info.backend_pid) and the pids of NOTIFY from any client mean what they
    mean directly (psycopg test_broken, test_right_exception_on_server_disconnect; asyncpg test_listen_02)."""
    proxy = proxies["wide"]
    with psycopg.connect(proxy.conninfo(), autocommit=True) as listener, \
            psycopg.connect(proxy.conninfo(), autocommit=True) as notifier:
        assert _one(listener, "SELECT pg_backend_pid()") == listener.info.backend_pid
        assert _one(notifier, "SELECT pg_backend_pid()") == notifier.info.backend_pid
        assert listener.info.backend_pid != notifier.info.backend_pid
        listener.execute("LISTEN e2e_session_pids")
        listener.execute("NOTIFY e2e_session_pids, 'mine'")
        notifier.execute("NOTIFY e2e_session_pids, 'theirs'")
        listener.execute("SELECT 1")
        notes = {n.payload: n.pid for n in listener.notifies(timeout=5, stop_after=2)}
        assert notes == {"mine": listener.info.backend_pid, "theirs": notifier.info.backend_pid}
        # A cancel request with the key the proxy gave reaches that backend.
        with pytest.raises(psycopg.errors.QueryCanceled):
            threading.Timer(0.3, notifier.cancel).start()
            notifier.execute("SELECT pg_sleep(5)")
        assert _one(notifier, "SELECT 'after cancel'") == "after cancel"
        with pytest.raises(psycopg.errors.AdminShutdown):
            notifier.execute("SELECT pg_terminate_backend(%s)", [notifier.info.backend_pid])
        assert notifier.closed or notifier.broken
    with psycopg.connect(proxy.conninfo(), autocommit=True) as after:
        assert _one(after, "SELECT 1") == 1
