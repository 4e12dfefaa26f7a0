"""End to end: LISTEN / NOTIFY in transaction pooling without pinning (asyncpg, psycopg, psql, raw protocol).

One proxy (transaction pooling, a pool of 5, notification_queue = 20) in front of the shared
PostgreSQL cluster: 1,000 asyncpg clients listen through the writer endpoint and each receives a
NOTIFY once, unpinned; pid rules; delivery deferred inside a transaction; LISTEN inside a
transaction (commit / rollback / failed); UNLISTEN; channel names as the server folds them; the
extended protocol (psycopg); psql; a client whose queue overflows is disconnected with FATAL 53400.
"""

from __future__ import annotations

import asyncio
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import asyncpg
import psycopg
import pytest
from e2e_helpers import RawClient, RunningProxy, first_error, running_proxy, wait_until
from ops_helpers import OpsPorts, admin, ops_config, scrape

from deploy.pgcluster import APP_DB, HOST, PgCluster, free_ports

POOL_SIZE = 5
QUEUE = 20
SETTLE = 0.3   # seconds for a notification to reach the proxy's listening connection


@pytest.fixture(scope="module")
def ports() -> OpsPorts:
    return OpsPorts.of(free_ports(6))


@pytest.fixture(scope="module")
def proxy(pg_cluster: PgCluster, ports: OpsPorts, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningProxy]:
    text = ops_config(pg_cluster, ports, client_auth="trust", pool_size=POOL_SIZE)
    text = text.replace(f"max_server_connections = {POOL_SIZE}\n",
                        f"max_server_connections = {POOL_SIZE}\nnotification_queue = {QUEUE}\n")
    with running_proxy(text, tmp_path_factory.mktemp("listen"), ports.writer) as running:
        yield running
        running.assert_alive_and_clean()


def dsn(proxy: RunningProxy) -> str:
    return f"postgresql://app@{HOST}:{proxy.port}/{APP_DB}"


def conninfo(proxy: RunningProxy) -> str:
    return f"host={HOST} port={proxy.port} user=app dbname={APP_DB} sslmode=disable"


Note = tuple[int, str, str]   # (pid, channel, payload)


async def listener(proxy: RunningProxy, *channels: str) -> tuple[asyncpg.Connection, asyncio.Queue[Note]]:
    conn = await asyncpg.connect(dsn(proxy))
    queue: asyncio.Queue[Note] = asyncio.Queue()
    for channel in channels:
        await conn.add_listener(channel, lambda _c, pid, ch, payload: queue.put_nowait((pid, ch, payload)))
    return conn, queue


async def nothing_in(queue: asyncio.Queue[Note], seconds: float = 0.3) -> bool:
    await asyncio.sleep(seconds)
    return queue.empty()


def direct_sql(pg: PgCluster, sql: str) -> str:
    return pg.sql(0, sql, db=APP_DB)


async def test_a_thousand_listeners_get_each_notification_once_unpinned(
        proxy: RunningProxy, ports: OpsPorts, pg_cluster: PgCluster) -> None:
    n = 1000
    got: list[list[Note]] = [[] for _ in range(n)]
    conns: list[asyncpg.Connection] = []

    async def one(i: int) -> None:
        conn = await asyncpg.connect(dsn(proxy))
        conns.append(conn)
        await conn.add_listener("fanout", lambda _c, pid, ch, payload: got[i].append((pid, ch, payload)))

    started = time.monotonic()
    try:
        for first in range(0, n, 100):   # 100 logins at a time
            await asyncio.gather(*(one(i) for i in range(first, first + 100)))
        listened = time.monotonic() - started
        notifier = await asyncpg.connect(dsn(proxy))
        try:
            await notifier.execute("NOTIFY fanout, 'to everyone'")
            sender = notifier.get_server_pid()
        finally:
            await notifier.close()
        deadline = time.monotonic() + 20
        while sum(1 for g in got if g) < n and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        await asyncio.sleep(0.2)   # a duplicate would show up now
        print(f"\n{n} clients listening after {listened:.1f}s; delivered to all in "
              f"{time.monotonic() - started - listened:.2f}s")
        assert [len(g) for g in got] == [1] * n, "every listener gets the notification exactly once"
        assert all(g[0] == (sender, "fanout", "to everyone") for g in got)
        clients = admin(ports.admin, "SHOW CLIENTS")
        mine = [c for c in clients if c["endpoint"] == "writer"]
        assert len(mine) >= n
        assert not [c for c in mine if c["pinned"]], "LISTEN pins nobody"
        backends = int(direct_sql(pg_cluster, "SELECT count(*) FROM pg_stat_activity WHERE datname = 'app' "
                                              "AND usename = 'app' AND backend_type = 'client backend'"))
        assert backends <= POOL_SIZE + 1, f"{backends} server connections for {n} listeners"
        (row,) = admin(ports.admin, "SHOW LISTENERS")
        assert row["state"] == "up" and int(row["listening_clients"]) >= n
        metrics = scrape(ports.http)
        assert metrics['dbproxy_listen_clients{cluster="main"}'] >= n
        assert metrics['dbproxy_notifications_delivered_total{cluster="main"}'] >= n
    finally:
        await asyncio.gather(*(c.close() for c in conns))


async def test_pids_the_sender_own_and_direct(proxy: RunningProxy, pg_cluster: PgCluster) -> None:
    a, qa = await listener(proxy, "pids")
    b, qb = await listener(proxy, "pids")
    try:
        await a.execute("NOTIFY pids, 'from a'")
        assert await asyncio.wait_for(qa.get(), 5) == (a.get_server_pid(), "pids", "from a")   # its own pid
        assert await asyncio.wait_for(qb.get(), 5) == (a.get_server_pid(), "pids", "from a")   # the sender's
        direct = await asyncpg.connect(f"postgresql://app@{HOST}:{pg_cluster.ports[0]}/{APP_DB}")
        try:
            await direct.execute("NOTIFY pids, 'direct'")
            assert await asyncio.wait_for(qb.get(), 5) == (direct.get_server_pid(), "pids", "direct")
        finally:
            await direct.close()
        assert (await asyncio.wait_for(qa.get(), 5))[2] == "direct"
    finally:
        await a.close()
        await b.close()


async def test_delivery_waits_for_the_end_of_the_transaction(proxy: RunningProxy) -> None:
    a, queue = await listener(proxy, "deferred")
    b = await asyncpg.connect(dsn(proxy))
    try:
        async with a.transaction():
            await a.fetchval("SELECT 1")
            await b.execute("NOTIFY deferred, 'one'")
            assert await nothing_in(queue, 0.5), "not delivered inside the transaction"
        assert await asyncio.wait_for(queue.get(), 5) == (b.get_server_pid(), "deferred", "one")
        await b.execute("NOTIFY deferred, 'idle'")   # idle: at once
        assert (await asyncio.wait_for(queue.get(), 5))[2] == "idle"
    finally:
        await a.close()
        await b.close()


def notes(conn: psycopg.Connection, seconds: float = 0.5) -> list[tuple[str, str]]:
    """The notifications conn has or gets within `seconds` (channel, payload)."""
    return [(n.channel, n.payload) for n in conn.notifies(timeout=seconds)]


def test_listen_inside_a_transaction_takes_effect_at_commit_only(proxy: RunningProxy) -> None:
    with psycopg.connect(conninfo(proxy), autocommit=True) as a, psycopg.connect(conninfo(proxy), autocommit=True) as b:
        a.execute("BEGIN")
        a.execute("LISTEN tx_commit")
        b.execute("NOTIFY tx_commit, 'before commit'")
        time.sleep(SETTLE)   # it reached the listening connection before a's COMMIT (see README: Limits)
        a.execute("COMMIT")
        b.execute("NOTIFY tx_commit, 'after commit'")
        assert notes(a) == [("tx_commit", "after commit")]
        a.execute("BEGIN")
        a.execute("LISTEN tx_rollback")
        a.execute("ROLLBACK")
        a.execute("BEGIN; LISTEN tx_rollback2")   # one text: BEGIN goes to a server, the LISTEN is held for it
        a.execute("ROLLBACK")
        b.execute("NOTIFY tx_rollback, 'x'; NOTIFY tx_rollback2, 'y'")
        assert notes(a) == [], "LISTENs rolled back take no effect"
        a.execute("BEGIN")
        with pytest.raises(psycopg.errors.DivisionByZero):
            a.execute("SELECT 1/0")
        with pytest.raises(psycopg.errors.InFailedSqlTransaction):
            a.execute("LISTEN tx_failed")
        a.execute("COMMIT")
        b.execute("NOTIFY tx_failed, 'z'")
        assert notes(a) == []
        a.execute("BEGIN")
        a.execute("LISTEN tx_error_at_commit")
        with pytest.raises(psycopg.errors.DivisionByZero):
            a.execute("SELECT 1/0")
        a.execute("COMMIT")   # answered ROLLBACK
        b.execute("NOTIFY tx_error_at_commit, 'z'")
        assert notes(a) == []
        assert a.execute("SELECT 2").fetchone() == (2,)


async def test_unlisten_and_unlisten_all(proxy: RunningProxy) -> None:
    a, queue = await listener(proxy, "u1", "u2")
    b = await asyncpg.connect(dsn(proxy))
    try:
        await a.execute("UNLISTEN u1")
        await b.execute("NOTIFY u1, 'x'; NOTIFY u2, 'y'")
        assert (await asyncio.wait_for(queue.get(), 5))[1:] == ("u2", "y")
        assert await nothing_in(queue)
        await a.execute("UNLISTEN *")
        await b.execute("NOTIFY u2, 'z'")
        assert await nothing_in(queue)
    finally:
        await a.close()
        await b.close()


def test_channel_names_fold_and_truncate_as_the_server_does(proxy: RunningProxy, pg_cluster: PgCluster) -> None:
    with psycopg.connect(conninfo(proxy), autocommit=True) as a:
        a.execute(f'LISTEN MiXed; LISTEN "QuOted"; LISTEN {"l" * 70}; LISTEN "{"é" * 40}"; LISTEN U&"d\\0061t"')
        direct_sql(pg_cluster, f"SELECT pg_notify('mixed', '1'), pg_notify('QuOted', '2'), pg_notify('{'l' * 63}', '3'), "
                               f"pg_notify('{'é' * 31}', '4'), pg_notify('dat', '5'), pg_notify('MiXed', 'not this one')")
        assert sorted(notes(a)) == sorted([("mixed", "1"), ("QuOted", "2"), ("l" * 63, "3"), ("é" * 31, "4"),
                                           ("dat", "5")])


def test_psycopg_extended_protocol_and_transactions(proxy: RunningProxy) -> None:
    with psycopg.connect(conninfo(proxy), autocommit=True) as a, psycopg.connect(conninfo(proxy), autocommit=True) as b:
        for _ in range(2):   # a prepared statement: Parse + Sync, then Bind / Describe / Execute / Sync of it
            a.execute("LISTEN psy", prepare=True)
        b.execute("SELECT pg_notify('psy', %s)", ("one",))
        (note,) = list(a.notifies(timeout=5, stop_after=1))
        assert (note.channel, note.payload, note.pid) == ("psy", "one", b.info.backend_pid)
        a.execute("UNLISTEN psy", prepare=True)
        b.execute("NOTIFY psy, 'two'")
        assert notes(a) == []
    with psycopg.connect(conninfo(proxy)) as a, psycopg.connect(conninfo(proxy), autocommit=True) as b:
        a.execute("LISTEN psy_tx")                   # BEGIN first: inside a transaction
        b.execute("NOTIFY psy_tx, 'before'")
        time.sleep(SETTLE)
        a.commit()
        b.execute("NOTIFY psy_tx, 'after'")
        (note,) = list(a.notifies(timeout=5, stop_after=1))
        assert note.payload == "after"


def test_psql_prints_the_notification(proxy: RunningProxy) -> None:
    out = subprocess.run(
        ["psql", "-X", "-h", HOST, "-p", str(proxy.port), "-U", "app", "-d", APP_DB, "-c", "LISTEN psql_ch",
         "-c", "NOTIFY psql_ch, 'hi'", "-c", "SELECT pg_sleep(0.3)", "-c", "SELECT 1"],
        capture_output=True, text=True, timeout=30, check=True)
    assert 'Asynchronous notification "psql_ch" with payload "hi" received from server process with PID' in out.stdout


def test_a_client_that_does_not_take_its_notifications_is_disconnected(
        proxy: RunningProxy, ports: OpsPorts) -> None:
    before = scrape(ports.http).get('dbproxy_listen_disconnects_total{cluster="main"}', 0)
    slow = RawClient(proxy.port)
    try:
        slow.login(database=APP_DB)
        assert slow.query("LISTEN flood")[0][0] == b"C"
        slow.query("BEGIN")
        slow.query("SELECT 1")   # inside a transaction: notifications wait in its queue
        with psycopg.connect(conninfo(proxy), autocommit=True) as b:
            for i in range(QUEUE + 1):
                b.execute("SELECT pg_notify('flood', %s)", (str(i),))
        rest = slow.read_all_until_eof()
        error = first_error(rest)
        assert error is not None and error["C"] == "53400" and error["S"] == "FATAL", rest[-300:]
        assert "notification" in error["M"]
    finally:
        slow.close()
    after = wait_until(lambda: scrape(ports.http).get('dbproxy_listen_disconnects_total{cluster="main"}', 0) > before
                       and scrape(ports.http), what="the disconnect counted")
    assert after['dbproxy_notifications_dropped_total{cluster="main",reason="client_queue_full"}'] >= QUEUE + 1


def test_listen_in_session_pooling_is_unchanged(pg_cluster: PgCluster, tmp_path: Path) -> None:
    port = free_ports(1)[0]
    from e2e_helpers import proxy_config
    with running_proxy(proxy_config(pg_cluster, port, pool_mode="session", client_auth="trust"), tmp_path, port) as p:
        with psycopg.connect(f"host={HOST} port={port} user=app dbname=app sslmode=disable", autocommit=True) as a:
            a.execute("LISTEN sess")
            row = a.execute("SELECT array_agg(c) FROM pg_listening_channels() c").fetchone()
            assert row is not None and row[0] == ["sess"]   # on its own server connection, as before
        p.assert_alive_and_clean()


async def test_the_listening_connection_comes_back_when_its_backend_dies(
        proxy: RunningProxy, ports: OpsPorts, pg_cluster: PgCluster) -> None:
    a, queue = await listener(proxy, "revive")
    b = await asyncpg.connect(dsn(proxy))
    try:
        (before,) = admin(ports.admin, "SHOW LISTENERS")
        direct_sql(pg_cluster, f"SELECT pg_terminate_backend({before['server_pid']})")

        def back_up() -> dict[str, str] | None:
            (row,) = admin(ports.admin, "SHOW LISTENERS")
            return row if row["state"] == "up" and row["server_pid"] != before["server_pid"] else None
        after = wait_until(back_up, timeout=10, what="a new listening connection")
        assert int(after["connects"]) == int(before["connects"]) + 1
        await b.execute("NOTIFY revive, 'again'")
        assert (await asyncio.wait_for(queue.get(), 5))[2] == "again"
    finally:
        await a.close()
        await b.close()


def test_an_idle_client_that_stops_reading_is_cut_off(proxy: RunningProxy, ports: OpsPorts) -> None:
    """Idle, so its notifications are written at once, until its socket backs up; then they queue, and
    past notification_queue the proxy drops the connection (it could not read an error anyway)."""
    before = scrape(ports.http).get('dbproxy_listen_disconnects_total{cluster="main"}', 0)
    slow = RawClient(proxy.port)
    try:
        slow.login(database=APP_DB)
        assert slow.query("LISTEN unread")[0][0] == b"C"   # from now on it reads nothing
        with psycopg.connect(conninfo(proxy), autocommit=True) as b:
            b.execute("SELECT pg_notify('unread', g || repeat('x', 7900)) FROM generate_series(1, 3000) g")
        wait_until(lambda: scrape(ports.http).get('dbproxy_listen_disconnects_total{cluster="main"}', 0) > before,
                   timeout=20, what="the slow client cut off")
        with pytest.raises((ConnectionResetError, BrokenPipeError, OSError)):
            for _ in range(10_000):   # reads what the kernel buffered, then the reset
                if not slow.sock.recv(1 << 20):
                    raise ConnectionResetError("closed")
    finally:
        slow.close()
