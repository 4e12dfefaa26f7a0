"""Network faults between dbproxy and its servers (tests/faulty_tcp.py): drop, reset mid-message, cut, blackhole, delay.

dbproxy's instances are a fault-injecting relay in front of the real PostgreSQL primary and
MariaDB primary. For every fault: the proxy lives on (process up, no traceback in its log), the
client in the middle of it gets a clean protocol error (PostgreSQL 08006 / a closed connection,
MySQL 2013-style), and no server connection is reused in an unknown state — a fresh client's
queries run right, with clean session state, afterwards.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import asyncpg
import pymysql
import pytest
from e2e_helpers import APP, RunningProxy, proxy_config, running_proxy, wait_until
from faulty_tcp import Fault, FaultyTcpProxy
from mysql_e2e_helpers import connect, mysql_proxy_config

from deploy.mysqlcluster import MysqlCluster
from deploy.pgcluster import PgCluster, free_ports

BIG = 300_000   # bytes of a result big enough to be cut in the middle of a DataRow / row packet


@dataclass
class _Instances:
    """What proxy_config needs of a PgCluster: the instance addresses (here, the relay's)."""

    addresses: list[str]

    def instance_addrs(self) -> list[str]:
        return self.addresses


@dataclass
class Faulty:
    proxy: RunningProxy
    relay: FaultyTcpProxy


@pytest.fixture(scope="module")
def pg_faulty(pg_cluster: PgCluster, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Faulty]:
    host, port = pg_cluster.instance_addrs()[0].rsplit(":", 1)
    relay = FaultyTcpProxy(host, int(port)).start()
    proxy_port = free_ports(1)[0]
    text = proxy_config(_Instances([relay.address]), proxy_port, client_auth="trust",  # type: ignore[arg-type]
                        pool_size=2, pool_extra={"connect_timeout": "1s"})
    text = text.replace('borrow_timeout = "20s"', 'borrow_timeout = "3s"')
    try:
        with running_proxy(text, tmp_path_factory.mktemp("pg-faults"), proxy_port) as proxy:
            yield Faulty(proxy, relay)
    finally:
        relay.stop()


@pytest.fixture
def pg(pg_faulty: Faulty) -> Iterator[Faulty]:
    yield pg_faulty
    pg_faulty.relay.clear()
    pg_faulty.proxy.assert_alive_and_clean()


async def _pg_connect(f: Faulty) -> asyncpg.Connection:
    return await asyncpg.connect(f.proxy.dsn(APP), ssl=False, timeout=10)


async def _pg_fresh_client_is_clean(f: Faulty) -> None:
    """A new client runs queries right and sees no other client's session state."""
    conn = await _pg_connect(f)
    try:
        for _ in range(4):   # more transactions than server connections: every pooled one is used
            assert await conn.fetchval("SELECT current_setting('application_name')") == ""
            assert await conn.fetchval("SELECT length(repeat('y', $1::int))", 12345) == 12345
            assert await conn.fetchval("SELECT current_setting('statement_timeout')") == "0"
    finally:
        await conn.close()


async def _pg_fault_breaks_one_query(f: Faulty, fault: Fault, sql: str) -> BaseException:
    conn = await _pg_connect(f)
    await conn.execute("SET statement_timeout = '123s'")   # session state the next client must not see
    f.relay.arm(fault)
    with pytest.raises((asyncpg.PostgresError, asyncpg.InterfaceError, ConnectionError, OSError)) as caught:
        await conn.fetch(sql, timeout=15)
    assert fault.fired == 1
    await conn.close(timeout=2) if not conn.is_closed() else None
    return caught.value


def _clean_pg_error(exc: BaseException) -> None:
    """08006-style (server connection lost) or the connection closed; never a garbled message."""
    if isinstance(exc, asyncpg.ConnectionDoesNotExistError):   # closed under it (asyncpg's own 08003)
        return
    if isinstance(exc, asyncpg.PostgresError):
        assert exc.sqlstate in ("08006", "08001", "08P01", "57P01"), (exc.sqlstate, str(exc))
    else:
        assert isinstance(exc, asyncpg.ConnectionDoesNotExistError | ConnectionError | OSError), repr(exc)


async def test_pg_reset_while_a_query_runs(pg: Faulty) -> None:
    exc = await _pg_fault_breaks_one_query(pg, Fault("reset", trigger=b"fault_reset"),
                                           "SELECT pg_sleep(0.2) /* fault_reset */")
    _clean_pg_error(exc)
    await _pg_fresh_client_is_clean(pg)


async def test_pg_cut_in_the_middle_of_a_data_row(pg: Faulty) -> None:
    exc = await _pg_fault_breaks_one_query(
        pg, Fault("cut", trigger=b"fault_cut", direction="to_client", after=40_000),
        f"SELECT repeat('x', {BIG}) /* fault_cut */")
    _clean_pg_error(exc)
    await _pg_fresh_client_is_clean(pg)


async def test_pg_server_closes_after_the_query_is_sent(pg: Faulty) -> None:
    exc = await _pg_fault_breaks_one_query(pg, Fault("cut", trigger=b"fault_fin", direction="to_client", after=0),
                                           "SELECT 1 /* fault_fin */")
    _clean_pg_error(exc)
    await _pg_fresh_client_is_clean(pg)


async def test_pg_drop_every_connection_mid_transaction(pg: Faulty) -> None:
    conn = await _pg_connect(pg)
    await conn.execute("BEGIN")
    await conn.execute("SET LOCAL statement_timeout = '77s'")
    assert pg.relay.drop_all() >= 1        # every server connection and probe, as drop_traffic does
    with pytest.raises((asyncpg.PostgresError, asyncpg.InterfaceError, ConnectionError, OSError)) as caught:
        await conn.fetchval("SELECT 1", timeout=15)
    _clean_pg_error(caught.value)
    await conn.close(timeout=2) if not conn.is_closed() else None
    await _pg_fresh_client_is_clean(pg)


async def test_pg_blackholed_server_connection_is_not_reused(pg: Faulty) -> None:
    """The route dies silently: the client gives up (its own timeout) and the proxy must not hand the
    half-answered server connection to anyone else."""
    conn = await _pg_connect(pg)
    pg.relay.arm(Fault("blackhole", trigger=b"fault_blackhole"))
    with pytest.raises((TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError)):
        await conn.fetchval("SELECT 42 /* fault_blackhole */", timeout=1.5)
    conn.terminate()
    await _pg_fresh_client_is_clean(pg)


async def test_pg_new_server_connections_into_a_blackhole_fail_cleanly(pg: Faulty) -> None:
    assert pg.relay.drop_all() >= 0
    pg.relay.arm(Fault("blackhole", times=None))   # every new server connection hangs (connect_timeout 1s)
    started = time.monotonic()
    conn = await _pg_connect(pg)   # logins are answered without a server once parameters are known
    try:
        with pytest.raises(asyncpg.PostgresError) as caught:
            await conn.fetchval("SELECT 1", timeout=20)
        assert caught.value.sqlstate in ("08001", "08006", "53300"), caught.value.sqlstate
        assert time.monotonic() - started < 15
    finally:
        conn.terminate()
    pg.relay.clear()
    await _pg_fresh_client_is_clean(pg)


async def test_pg_slow_network_loses_nothing(pg: Faulty) -> None:
    pg.relay.arm(Fault("delay", trigger=b"fault_delay", delay=0.05))
    conn = await _pg_connect(pg)
    try:
        rows = await conn.fetch("SELECT g, repeat('z', 1000) FROM generate_series(1, 200) g /* fault_delay */")
        assert [r[0] for r in rows] == list(range(1, 201))
    finally:
        await conn.close()
    await _pg_fresh_client_is_clean(pg)


# ------------------------------------------------------------------------------ MariaDB


@pytest.fixture(scope="module")
def my_faulty(mysql_cluster: MysqlCluster, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Faulty]:
    host, port = mysql_cluster.addresses[0].rsplit(":", 1)
    relay = FaultyTcpProxy(host, int(port)).start()
    proxy_port, admin_port = free_ports(2)

    class _Relayed:
        addresses = [relay.address]

    text = mysql_proxy_config(_Relayed(), proxy_port, pool_size=2, admin_port=admin_port,  # type: ignore[arg-type]
                              pool_extra={"connect_timeout": "1s"})
    try:
        with running_proxy(text, tmp_path_factory.mktemp("my-faults"), proxy_port) as proxy:
            yield Faulty(proxy, relay)
    finally:
        relay.stop()


@pytest.fixture
def my(my_faulty: Faulty) -> Iterator[Faulty]:
    yield my_faulty
    my_faulty.relay.clear()
    my_faulty.proxy.assert_alive_and_clean()


def _my_fresh_client_is_clean(f: Faulty) -> None:
    conn = connect(f.proxy.port)
    try:
        with conn.cursor() as cur:
            for _ in range(4):
                cur.execute("SELECT @@session.wait_timeout, LENGTH(REPEAT('y', 12345))")
                timeout, length = cur.fetchone()
                assert length == 12345 and int(timeout) != 4321
    finally:
        conn.close()


def _my_fault_breaks_one_query(f: Faulty, fault: Fault, sql: str) -> pymysql.MySQLError:
    conn = connect(f.proxy.port, read_timeout=15)
    with conn.cursor() as cur:
        cur.execute("SET SESSION wait_timeout = 4321")   # session state the next client must not see
        f.relay.arm(fault)
        with pytest.raises(pymysql.MySQLError) as caught:
            cur.execute(sql)
            cur.fetchall()
    assert fault.fired == 1
    conn.close() if conn.open else None
    return caught.value


def _clean_my_error(exc: pymysql.MySQLError) -> None:
    """2013 (lost connection) or the proxy's own 2013-style error; never a garbled packet."""
    code = exc.args[0] if exc.args else None
    assert isinstance(exc, pymysql.OperationalError | pymysql.InternalError), repr(exc)
    assert code in (2013, 2006, 1927, 1053, 2003), repr(exc)


def test_my_reset_while_a_query_runs(my: Faulty) -> None:
    _clean_my_error(_my_fault_breaks_one_query(my, Fault("reset", trigger=b"fault_reset"),
                                               "SELECT SLEEP(0.2) /* fault_reset */"))
    _my_fresh_client_is_clean(my)


def test_my_cut_in_the_middle_of_a_row(my: Faulty) -> None:
    _clean_my_error(_my_fault_breaks_one_query(
        my, Fault("cut", trigger=b"fault_cut", direction="to_client", after=40_000),
        f"SELECT REPEAT('x', {BIG}) /* fault_cut */"))
    _my_fresh_client_is_clean(my)


def test_my_drop_every_connection(my: Faulty) -> None:
    conn = connect(my.proxy.port, read_timeout=15)
    with conn.cursor() as cur:
        cur.execute("BEGIN")
        cur.execute("SELECT 1")
        assert my.relay.drop_all() >= 1
        with pytest.raises(pymysql.MySQLError) as caught:
            cur.execute("SELECT 2")
    _clean_my_error(caught.value)
    conn.close() if conn.open else None
    _my_fresh_client_is_clean(my)


def test_my_blackholed_server_connection_is_not_reused(my: Faulty) -> None:
    conn = connect(my.proxy.port, read_timeout=2)
    my.relay.arm(Fault("blackhole", trigger=b"fault_blackhole"))
    with pytest.raises(pymysql.MySQLError), conn.cursor() as cur:
        cur.execute("SELECT 42 /* fault_blackhole */")
    conn.close() if conn.open else None
    _my_fresh_client_is_clean(my)


def test_my_slow_network_loses_nothing(my: Faulty) -> None:
    my.relay.arm(Fault("delay", trigger=b"fault_delay", delay=0.05))
    conn = connect(my.proxy.port)
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT seq, REPEAT('z', 1000) FROM seq_1_to_200 /* fault_delay */")
            assert [r[0] for r in cur.fetchall()] == list(range(1, 201))
    finally:
        conn.close()
    _my_fresh_client_is_clean(my)


def test_relay_records_and_passes_bytes_through(tmp_path: Path) -> None:
    """The relay itself: bytes pass unchanged both ways when no fault is armed."""
    import contextlib
    import socket
    import threading

    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]

    def echo() -> None:
        conn, _ = listener.accept()
        with conn, contextlib.suppress(OSError):
            while data := conn.recv(65536):
                conn.sendall(data)

    threading.Thread(target=echo, daemon=True).start()
    relay = FaultyTcpProxy("127.0.0.1", port, record=True).start()
    try:
        with socket.create_connection(("127.0.0.1", relay.port)) as sock:
            sock.sendall(b"hello" * 1000)
            got = b""
            while len(got) < 5000:
                got += sock.recv(65536)
            assert got == b"hello" * 1000
        wait_until(lambda: relay.recordings() and len(relay.recordings()[0]["to_client"]) == 5000, timeout=5)
    finally:
        relay.stop()
        listener.close()
