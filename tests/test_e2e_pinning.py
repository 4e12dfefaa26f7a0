"""End to end: state that cannot move pins a client to its server connection, and is gone after it leaves."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import ExitStack

import psycopg
import pytest
from e2e_helpers import RunningProxy, module_proxy

from deploy.pgcluster import PgCluster

POOL_SIZE = 2
LOCK_KEY = 4242042


@pytest.fixture(scope="module")
def proxy(pg_cluster: PgCluster, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningProxy]:
    with module_proxy(pg_cluster, tmp_path_factory.mktemp("pin"), pool_size=POOL_SIZE) as proxy:
        yield proxy
        proxy.assert_alive_and_clean()


def _connect(proxy: RunningProxy, autocommit: bool = True) -> psycopg.Connection:
    return psycopg.connect(proxy.conninfo(), autocommit=autocommit)


def _pid(conn: psycopg.Connection) -> int:
    row = conn.execute("SELECT pg_backend_pid()").fetchone()
    assert row is not None
    return int(row[0])


def _one(conn: psycopg.Connection, sql: str) -> object:
    row = conn.execute(sql).fetchone()
    assert row is not None
    return row[0]


# Each case: SQL that pins, a check that the state is there (run on the pinned client), and a check
# that it is NOT there (run by a later client on the same server connection).
def _temp_table_setup(conn: psycopg.Connection) -> None:
    conn.execute("CREATE TEMP TABLE e2e_pin_tmp (x int)")


def _temp_table_present(conn: psycopg.Connection, round_: int) -> None:
    conn.execute("INSERT INTO e2e_pin_tmp VALUES (%s)", (round_,))
    assert _one(conn, "SELECT count(*) FROM e2e_pin_tmp") == round_ + 1


def _temp_table_absent(conn: psycopg.Connection) -> None:
    assert _one(conn, "SELECT to_regclass('pg_temp.e2e_pin_tmp') IS NULL") is True
    assert _one(conn, "SELECT count(*) FROM pg_class WHERE relname = 'e2e_pin_tmp'") == 0


def _lock_setup(conn: psycopg.Connection) -> None:
    conn.execute("SELECT pg_advisory_lock(%s)", (LOCK_KEY,))


def _lock_count(conn: psycopg.Connection) -> object:
    return _one(conn, "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND pid = pg_backend_pid()")


def _lock_present(conn: psycopg.Connection, round_: int) -> None:
    assert _lock_count(conn) == 1


def _lock_absent(conn: psycopg.Connection) -> None:
    assert _lock_count(conn) == 0


def _listen_setup(conn: psycopg.Connection) -> None:
    # A LISTEN alone is answered by the proxy (test_e2e_listen.py); in one text with another statement
    # it runs on the server, which then listens for this client: that pins.
    conn.execute("LISTEN e2e_pin_channel; SELECT 1")


def _listen_present(conn: psycopg.Connection, round_: int) -> None:
    assert _one(conn, "SELECT array_agg(c) FROM pg_listening_channels() c") == ["e2e_pin_channel"]


def _listen_absent(conn: psycopg.Connection) -> None:
    assert _one(conn, "SELECT count(*) FROM pg_listening_channels()") == 0


def _prepare_setup(conn: psycopg.Connection) -> None:
    conn.execute("PREPARE e2e_pin_q(int) AS SELECT $1 * 10")


def _prepare_present(conn: psycopg.Connection, round_: int) -> None:
    assert _one(conn, f"EXECUTE e2e_pin_q({round_})") == round_ * 10


def _prepare_absent(conn: psycopg.Connection) -> None:
    assert _one(conn, "SELECT count(*) FROM pg_prepared_statements WHERE name = 'e2e_pin_q'") == 0


CASES: dict[str, tuple[Callable[..., None], Callable[..., None], Callable[..., None]]] = {
    "temp table": (_temp_table_setup, _temp_table_present, _temp_table_absent),
    "advisory lock": (_lock_setup, _lock_present, _lock_absent),
    "listen": (_listen_setup, _listen_present, _listen_absent),   # LISTEN with another statement
    "sql prepare": (_prepare_setup, _prepare_present, _prepare_absent),
}


@pytest.mark.parametrize("case", list(CASES))
def test_pinned_state_stays_and_then_goes(proxy: RunningProxy, pg_cluster: PgCluster, case: str) -> None:
    setup, present, absent = CASES[case]
    with _connect(proxy) as pinned, _connect(proxy) as other:
        setup(pinned)
        pinned_pid = _pid(pinned)
        for round_ in range(5):
            present(pinned, round_)
            assert _pid(pinned) == pinned_pid, "a pinned client must keep its server connection"
            # Everyone else shares the remaining server connection(s).
            assert _pid(other) != pinned_pid
            with other.transaction():
                assert _pid(other) != pinned_pid
        # Transactions of the pinned client stay on its server too.
        with pinned.transaction():
            present(pinned, 5)
            assert _pid(pinned) == pinned_pid
    assert f"pinned to server 127.0.0.1:{pg_cluster.ports[0]}: {case}" in proxy.log_text()

    # Hold every server connection of the pool at once: one of them is the one that was pinned.
    with ExitStack() as stack:
        clients = [stack.enter_context(_connect(proxy, autocommit=False)) for _ in range(POOL_SIZE)]
        pids = [_pid(c) for c in clients]   # each opens a transaction and keeps its server
        assert len(set(pids)) == POOL_SIZE
        assert pinned_pid in pids, f"the pinned server connection was closed instead of reused: {pids}"
        for client in clients:
            absent(client)
            client.rollback()
    if case == "advisory lock":   # nobody holds the lock any more
        assert pg_cluster.sql(0, f"SELECT pg_try_advisory_lock({LOCK_KEY})", db="app") == "t"


def test_listen_receives_notifications_through_the_proxy(proxy: RunningProxy) -> None:
    with _connect(proxy) as listener, _connect(proxy) as notifier:
        listener.execute("LISTEN e2e_notify")
        notifier.execute("NOTIFY e2e_notify, 'hello'")
        notifier.execute("SELECT pg_notify('e2e_notify', 'again')")
        listener.execute("SELECT 1")  # lets psycopg read what arrived
        payloads = [n.payload for n in listener.notifies(timeout=5, stop_after=2)]
        assert payloads == ["hello", "again"]


def test_a_notify_carries_the_pid_its_sender_was_given(proxy: RunningProxy, pg_cluster: PgCluster) -> None:
    """psycopg and asyncpg compare notify.pid with the sending connection's backend pid (BackendKeyData):
    its own (psycopg test_notify*) or another client's (asyncpg test_listen_02); a backend the proxy does
    not own keeps its real pid."""
    with _connect(proxy) as listener, _connect(proxy) as notifier:
        listener.execute("LISTEN e2e_own")
        listener.execute("NOTIFY e2e_own, 'mine'")
        notifier.execute("NOTIFY e2e_own, 'theirs'")
        pg_cluster.sql(0, "NOTIFY e2e_own, 'direct'", db="app")
        listener.execute("SELECT 1")
        notes = {n.payload: n.pid for n in listener.notifies(timeout=5, stop_after=3)}
        assert notes["mine"] == listener.pgconn.backend_pid
        assert notes["theirs"] == notifier.pgconn.backend_pid
        assert notes["direct"] not in (listener.pgconn.backend_pid, notifier.pgconn.backend_pid)


def test_with_hold_cursor_pins(proxy: RunningProxy) -> None:
    with _connect(proxy) as pinned, _connect(proxy) as other:
        pinned.execute("DECLARE e2e_cur CURSOR WITH HOLD FOR SELECT g FROM generate_series(1, 10) g")
        pid = _pid(pinned)
        for expected in (1, 2, 3):
            assert _pid(other) != pid
            assert _one(pinned, "FETCH NEXT FROM e2e_cur") == expected
            assert _pid(pinned) == pid
