"""End to end, MySQL engine: real drivers through dbproxy in front of MariaDB (SPEC §4, §12).

The mariadb CLI, PyMySQL (transactions, executemany, lastrowid, multi-statements), 50 aiomysql
clients on a pool of 5, mysql-connector-python's server-side prepared statements moving between
the server connections of a pool of 2, and SQLAlchemy 2 over aiomysql.
"""

from __future__ import annotations

import asyncio
import datetime
import decimal
import io
import random
import struct
import subprocess
from collections.abc import AsyncIterator, Iterator
from typing import Any

import aiomysql
import mysql.connector
import pymysql
import pytest
from e2e_helpers import proxy_server_ports
from mysql_e2e_helpers import (
    MysqlProxy,
    connect,
    direct,
    mariadb_cli,
    mariadb_cli_argv,
    mysql_module_proxy,
    rows,
    scalar,
    server_thread,
)
from pymysql.constants import CLIENT
from sqlalchemy import String, select
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from deploy.mysqlcluster import APP_DB, APP_PASSWORD, APP_USER, HOST, MysqlCluster

CLIENTS = 50
POOL_SIZE = 5
ROUNDS = 8


@pytest.fixture(scope="module")
def proxy(mysql_cluster: MysqlCluster, tmp_path_factory: pytest.TempPathFactory) -> Iterator[MysqlProxy]:
    with direct(mysql_cluster) as conn:
        rows(conn, "DROP TABLE IF EXISTS e2e_drv")
        rows(conn, "CREATE TABLE e2e_drv (id INT AUTO_INCREMENT PRIMARY KEY, client VARCHAR(20), n INT, "
                   "payload TEXT) ENGINE=InnoDB")
        rows(conn, "DROP TABLE IF EXISTS e2e_ps")
        rows(conn, "CREATE TABLE e2e_ps (id INT PRIMARY KEY, s VARCHAR(100), b LONGBLOB, d DATE, t DATETIME(6), "
                   "n DECIMAL(12, 3), f DOUBLE, big BIGINT) ENGINE=InnoDB")
        rows(conn, "DROP TABLE IF EXISTS e2e_orm")
    with mysql_module_proxy(mysql_cluster, tmp_path_factory.mktemp("my-drivers"), pool_size=POOL_SIZE,
                            reader=True) as proxy:
        yield proxy
        proxy.assert_alive_and_clean()


@pytest.fixture(scope="module")
def proxy2(mysql_cluster: MysqlCluster, tmp_path_factory: pytest.TempPathFactory) -> Iterator[MysqlProxy]:
    """A pool of 2: interleaved clients' statements land on both server connections."""
    with mysql_module_proxy(mysql_cluster, tmp_path_factory.mktemp("my-drivers2"), pool_size=2) as proxy:
        yield proxy
        proxy.assert_alive_and_clean()


# -------------------------------------------------------------------------------------- aiomysql


async def _proxy_threads(conn: aiomysql.Connection, ports: set[int]) -> int:
    async with conn.cursor() as cur:
        await cur.execute("SELECT HOST FROM information_schema.PROCESSLIST WHERE USER = %s", (APP_USER,))
        hosts = [row[0] for row in await cur.fetchall()]
    return sum(1 for host in hosts if int(host.rsplit(":", 1)[1]) in ports)


# First in the module: server connections are pooled per client variant (capabilities and handshake
# character set; the mariadb CLI's differ from PyMySQL's and aiomysql's), and max_server_connections
# applies per variant (see test_mixed_drivers_share_max_server_connections): the count below is only
# the pool of 5 while no other variant left idle connections behind.
@pytest.fixture
async def server_connection_cap(proxy: MysqlProxy, mysql_cluster: MysqlCluster) -> AsyncIterator[list[int]]:
    """Samples the proxy's server connections in the primary's PROCESSLIST; asserts <= POOL_SIZE."""
    seen: list[int] = []
    stop = asyncio.Event()
    watcher = await aiomysql.connect(host=HOST, port=mysql_cluster.ports[0], user="root", autocommit=True)

    async def sample() -> None:
        while not stop.is_set():
            ports = await asyncio.to_thread(proxy_server_ports, proxy.pid, mysql_cluster.ports[0])
            seen.append(await _proxy_threads(watcher, ports))
            await asyncio.sleep(0.02)

    task = asyncio.get_running_loop().create_task(sample())
    try:
        yield seen
    finally:
        stop.set()
        await task
        watcher.close()
    assert seen and max(seen) <= POOL_SIZE, f"proxy had {max(seen)} server connections (pool size {POOL_SIZE})"
    assert max(seen) >= 2, "the test should have kept several server connections busy"


async def _aiomysql_client(proxy: MysqlProxy, i: int) -> int:
    rng = random.Random(i)
    tag = f"aio{i}"
    checked = 0
    conn = await aiomysql.connect(host=HOST, port=proxy.port, user=APP_USER, password=APP_PASSWORD, db=APP_DB,
                                  autocommit=True)
    try:
        async with conn.cursor() as cur:
            for r in range(ROUNDS):
                n = rng.randrange(1000)
                await cur.execute("SELECT %s * 2, %s", (n, tag))
                assert await cur.fetchone() == (n * 2, tag)
                await conn.begin()
                await cur.execute("INSERT INTO e2e_drv (client, n, payload) VALUES (%s, %s, %s)", (tag, r, "x" * n))
                await cur.execute("SELECT COUNT(*), SUM(LENGTH(payload)) FROM e2e_drv WHERE client = %s", (tag,))
                count, _ = await cur.fetchone()
                assert count == r + 1
                if r % 3 == 2:
                    await conn.rollback()
                    await cur.execute("INSERT INTO e2e_drv (client, n) VALUES (%s, %s)", (tag, r))
                else:
                    await conn.commit()
                await cur.execute("SELECT seq FROM seq_1_to_%s" % (r + 10))
                assert [row[0] for row in await cur.fetchall()] == list(range(1, r + 11))
                if r % 4 == 0:
                    with pytest.raises(pymysql.err.ProgrammingError):
                        await cur.execute("SELECT * FROM e2e_missing_table")
                checked += 4
            await cur.execute("SELECT SUM(n), COUNT(*) FROM e2e_drv WHERE client = %s", (tag,))
            assert await cur.fetchone() == (decimal.Decimal(sum(range(ROUNDS))), ROUNDS)
    finally:
        conn.close()
    return checked


async def test_aiomysql_50_clients_pool_of_5(proxy: MysqlProxy, server_connection_cap: list[int]) -> None:
    results = await asyncio.gather(*(_aiomysql_client(proxy, i) for i in range(CLIENTS)), return_exceptions=True)
    errors = [r for r in results if isinstance(r, BaseException)]
    assert not errors, errors[:3]
    assert sum(r for r in results if isinstance(r, int)) == CLIENTS * ROUNDS * 4


# ------------------------------------------------------------------------------------ mariadb CLI


def test_mariadb_cli(proxy: MysqlProxy) -> None:
    result = mariadb_cli(proxy.port, "SELECT 1 + 1, DATABASE(), CURRENT_USER(); SELECT 'two'; "
                                     "SELECT COUNT(*) FROM information_schema.TABLES WHERE TABLE_NAME = 'e2e_drv'")
    assert result.returncode == 0, result.stderr
    assert result.stdout.split("\n")[:3] == ["2\tapp\tapp@%", "two", "1"]
    # A failing statement: the server's own error, and the next invocation works.
    result = mariadb_cli(proxy.port, "SELECT * FROM no_such_table")
    assert result.returncode == 1
    assert "ERROR 1146 (42S02)" in result.stderr and "no_such_table" in result.stderr
    # USE inside a session, then a multi-statement batch with a transaction.
    result = mariadb_cli(proxy.port, "USE information_schema; SELECT DATABASE(); USE app; "
                                     "BEGIN; INSERT INTO e2e_drv (client, n) VALUES ('cli', 1); "
                                     "SELECT COUNT(*) FROM e2e_drv WHERE client = 'cli'; ROLLBACK; "
                                     "SELECT COUNT(*) FROM e2e_drv WHERE client = 'cli'")
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["information_schema", "1", "0"]


def test_reader_endpoint_reaches_a_replica(proxy: MysqlProxy, mysql_cluster: MysqlCluster) -> None:
    assert proxy.reader_port is not None
    with connect(proxy) as writer:
        rows(writer, "INSERT INTO e2e_drv (client, n) VALUES ('replicated', 1)")
    mysql_cluster.wait_replicated()
    with connect(proxy.reader_port) as reader:
        assert scalar(reader, "SELECT @@read_only") == 1
        assert scalar(reader, "SELECT @@port") in mysql_cluster.ports[1:]
        assert scalar(reader, "SELECT COUNT(*) FROM e2e_drv WHERE client = 'replicated'") == 1
        with pytest.raises(pymysql.err.OperationalError) as excinfo:   # the replica's own refusal (SPEC §3.2)
            rows(reader, "INSERT INTO e2e_drv (client, n) VALUES ('on a replica', 1)")
        assert excinfo.value.args[0] == 1290
        assert scalar(reader, "SELECT 'reader fine'") == "reader fine"


# -------------------------------------------------------------------------------------- PyMySQL


def test_pymysql_queries_transactions_executemany(proxy: MysqlProxy) -> None:
    with connect(proxy) as conn, conn.cursor() as cur:
        cur.execute("SELECT %s, %s, %s, %s", (1, "two", None, 2.5))
        assert cur.fetchone() == (1, "two", None, 2.5)
        cur.execute("INSERT INTO e2e_drv (client, n) VALUES (%s, %s)", ("pym", 1))
        first_id = cur.lastrowid
        assert first_id > 0 and conn.insert_id() == first_id
        cur.executemany("INSERT INTO e2e_drv (client, n) VALUES (%s, %s)", [("pym", n) for n in range(2, 12)])
        assert cur.rowcount == 10
        assert cur.lastrowid > first_id   # the first row of the multi-row INSERT executemany sends
        cur.execute("SELECT n FROM e2e_drv WHERE client = 'pym' ORDER BY id")
        assert [row[0] for row in cur.fetchall()] == list(range(1, 12))
        # Explicit transactions: a rollback leaves nothing, a commit keeps it.
        conn.begin()
        cur.execute("INSERT INTO e2e_drv (client, n) VALUES ('pym-tx', 1)")
        cur.execute("SELECT COUNT(*) FROM e2e_drv WHERE client = 'pym-tx'")
        assert cur.fetchone() == (1,)
        conn.rollback()
        cur.execute("SELECT COUNT(*) FROM e2e_drv WHERE client = 'pym-tx'")
        assert cur.fetchone() == (0,)
        conn.begin()
        cur.execute("INSERT INTO e2e_drv (client, n) VALUES ('pym-tx', 2)")
        conn.commit()
        # autocommit off: the driver's commit() ends each transaction.
        conn.autocommit(False)
        cur.execute("INSERT INTO e2e_drv (client, n) VALUES ('pym-tx', 3)")
        conn.rollback()
        cur.execute("UPDATE e2e_drv SET n = n * 10 WHERE client = 'pym-tx'")
        assert cur.rowcount == 1
        conn.commit()
        conn.autocommit(True)
        cur.execute("SELECT n FROM e2e_drv WHERE client = 'pym-tx'")
        assert cur.fetchall() == ((20,),)
        # Server errors reach the client and the connection goes on.
        with pytest.raises(pymysql.err.ProgrammingError) as excinfo:
            cur.execute("SELECT * FROM e2e_missing_table")
        assert excinfo.value.args[0] == 1146
        with pytest.raises(pymysql.err.IntegrityError):
            cur.execute("INSERT INTO e2e_drv (id, client) VALUES (%s, 'dup')", (first_id,))
        cur.execute("SELECT 'alive'")
        assert cur.fetchone() == ("alive",)
        conn.ping()
        # A larger result, streamed by an unbuffered cursor.
        with conn.cursor(pymysql.cursors.SSCursor) as stream:
            stream.execute("SELECT seq, REPEAT('x', 1000) FROM seq_1_to_20000")
            assert sum(1 for _ in stream) == 20000


def test_pymysql_multi_statements(proxy: MysqlProxy) -> None:
    with connect(proxy, client_flag=CLIENT.MULTI_STATEMENTS) as conn, conn.cursor() as cur:
        cur.execute("SELECT 1; SELECT 2, 3; INSERT INTO e2e_drv (client, n) VALUES ('multi', 1); "
                    "SELECT COUNT(*) FROM e2e_drv WHERE client = 'multi'")
        assert cur.fetchall() == ((1,),)
        assert cur.nextset() and cur.fetchall() == ((2, 3),)
        assert cur.nextset() and cur.rowcount == 1
        assert cur.nextset() and cur.fetchall() == ((1,),)
        assert not cur.nextset()
        # A transaction that opens and commits inside one batch, then an error mid-batch.
        cur.execute("BEGIN; INSERT INTO e2e_drv (client, n) VALUES ('multi', 2); COMMIT")
        while cur.nextset():
            pass
        with pytest.raises(pymysql.err.ProgrammingError):
            cur.execute("SELECT 1; SELECT * FROM e2e_missing_table; SELECT 3")
            while cur.nextset():
                pass
        cur.execute("SELECT COUNT(*) FROM e2e_drv WHERE client = 'multi'")
        assert cur.fetchall() == ((2,),)


# ------------------------------------------------------------------ mysql-connector prepared statements


def _connector(proxy: MysqlProxy, **kwargs: Any) -> Any:
    return mysql.connector.connect(host=HOST, port=proxy.port, user=APP_USER, password=APP_PASSWORD,
                                   database=APP_DB, autocommit=True, **kwargs)


ROWS = [
    (1, "plain", b"\x00\x01\x02\xff", datetime.date(2024, 2, 29), datetime.datetime(2024, 2, 29, 23, 59, 58, 123456),
     decimal.Decimal("12345.678"), 2.5, 2**40),
    (2, None, None, None, None, None, None, None),
    (3, "héllo wörld ✓ 😀", bytes(range(256)) * 40, datetime.date(1999, 12, 31),
     datetime.datetime(2000, 1, 1, 0, 0, 0), decimal.Decimal("-0.001"), -1e100, -(2**63)),
]
COUNTER = 100   # a row the clients update
SELECT_ROW = "SELECT id, s, b, d, t, n, f, big, CONNECTION_ID() FROM e2e_ps WHERE id = ?"


@pytest.mark.parametrize("use_pure", [
    True,
    pytest.param(False, marks=pytest.mark.skipif(not mysql.connector.HAVE_CEXT, reason="no C extension")),
], ids=["pure", "c-ext"])
def test_connector_prepared_statements_move_between_server_connections(proxy2: MysqlProxy, use_pure: bool) -> None:
    clients = [_connector(proxy2, use_pure=use_pure) for _ in range(3)]
    try:
        setup = clients[0].cursor(prepared=True)
        setup.execute("DELETE FROM e2e_ps")
        for row in ROWS:
            setup.execute("INSERT INTO e2e_ps (id, s, b, d, t, n, f, big) VALUES (?, ?, ?, ?, ?, ?, ?, ?)", row)
        setup.execute("INSERT INTO e2e_ps (id, f) VALUES (?, ?)", (COUNTER, 0.0))
        # SEND_LONG_DATA: a file-like parameter is streamed before the execute.
        setup.execute("UPDATE e2e_ps SET b = ? WHERE id = ?", (io.BytesIO(b"long data " * 5000), 2))
        setup.execute("UPDATE e2e_ps SET b = NULL WHERE id = ?", (2,))
        cursors = [conn.cursor(prepared=True) for conn in clients]
        threads: list[set[int]] = [set() for _ in clients]
        for round_ in range(6):
            for k, (conn, cur) in enumerate(zip(clients, cursors, strict=True)):
                # Another client holds a server connection in a transaction part of the time, so the
                # same prepared statement runs on both server connections of the pool.
                holder = clients[(k + 1) % len(clients)]
                holding = round_ % 2 == 1
                if holding:
                    holder.start_transaction()
                    hold = holder.cursor()
                    hold.execute("SELECT 1")
                    hold.fetchall()
                for row in ROWS:
                    cur.execute(SELECT_ROW, (row[0],))
                    got = cur.fetchall()
                    assert len(got) == 1 and tuple(got[0][:8]) == row, (got, row)
                    threads[k].add(int(got[0][8]))
                if holding:
                    holder.commit()
                conn.start_transaction()
                cur.execute(SELECT_ROW, (ROWS[0][0],))
                cur.fetchall()
                cur.execute("UPDATE e2e_ps SET f = f + ? WHERE id = ?", (1.0, COUNTER))
                conn.commit()
        for k, seen in enumerate(threads):
            assert len(seen) == 2, f"client {k}'s statement ran on server connections {seen}, expected both"
        check = cursors[0]
        check.execute("SELECT f FROM e2e_ps WHERE id = ?", (COUNTER,))
        assert check.fetchall() == [(6.0 * len(clients),)]
        # A failing execute, then the statement still works.
        bad = clients[1].cursor(prepared=True)
        with pytest.raises(mysql.connector.Error) as excinfo:
            bad.execute("INSERT INTO e2e_ps (id) VALUES (?)", (1,))
        assert excinfo.value.errno == 1062
        cursors[1].execute(SELECT_ROW, (3,))
        assert tuple(cursors[1].fetchall()[0][:8]) == ROWS[2]
    finally:
        for conn in clients:
            conn.close()


def test_connector_many_prepared_statements_interleaved(proxy2: MysqlProxy) -> None:
    """Several statements per client, closed and prepared again, across transactions."""
    clients = [_connector(proxy2, use_pure=True) for _ in range(4)]
    try:
        for round_ in range(5):
            for k, conn in enumerate(clients):
                cur = conn.cursor(prepared=True)
                cur.execute("SELECT ? + ?, CONCAT(?, ?)", (k, round_, "c", str(k)))
                assert cur.fetchall() == [(k + round_, f"c{k}")]
                cur.execute("SELECT ? * 3", (round_,))   # another statement on the same cursor
                assert cur.fetchall() == [(round_ * 3,)]
                if round_ % 2:
                    conn.start_transaction()
                    cur.execute("SELECT COUNT(*) FROM e2e_ps WHERE id > ?", (0,))
                    assert cur.fetchall() == [(len(ROWS) + 1,)]
                    conn.commit()
                cur.close()
    finally:
        for conn in clients:
            conn.close()


class _BinaryProtocol:
    """COM_STMT_PREPARE / COM_STMT_EXECUTE by hand over a PyMySQL connection (drivers such as MariaDB
    Connector/C send parameter types only on the first execute of a statement)."""

    def __init__(self, conn: pymysql.connections.Connection[Any]) -> None:
        self.conn = conn

    def _packet(self) -> bytes:
        return bytes(self.conn._read_packet()._data)   # type: ignore[attr-defined]  # raises on ERR

    def prepare(self, sql: str) -> int:
        self.conn._execute_command(0x16, sql)   # type: ignore[attr-defined]
        ok = self._packet()
        statement_id, columns, params = struct.unpack_from("<IHH", ok, 1)
        for count in (params, columns):
            if count:
                for _ in range(count + 1):   # definitions, then an EOF (PyMySQL asks no DEPRECATE_EOF)
                    self._packet()
        return int(statement_id)

    def execute(self, statement_id: int, types: bytes | None, value: bytes) -> bytes:
        """Execute with one parameter (types None: not sent again); the first column of the one row."""
        body = struct.pack("<IBI", statement_id, 0, 1) + b"\x00"
        body += b"\x01" + types if types is not None else b"\x00"
        self.conn._execute_command(0x17, body + value)   # type: ignore[attr-defined]
        first = self._packet()
        assert first[0] == 1, first   # one column
        self._packet()   # its definition
        self._packet()   # EOF
        row = self._packet()
        assert row[0] == 0 and self._packet()[0] == 0xFE   # one binary row, then the EOF
        length = row[2]   # header, 1-byte NULL bitmap, then a lenenc string (short)
        return row[3:3 + length]


LONGLONG, VARCHAR = b"\x08\x00", b"\x0f\x00"


def test_prepared_statement_parameter_types_per_client(proxy2: MysqlProxy) -> None:
    """Two clients run the same statement text on one server connection with other parameter types;
    one of them sends its types only once (allowed by the protocol)."""
    holder = connect(proxy2)
    a, b = connect(proxy2), connect(proxy2)
    try:
        holder.begin()
        scalar(holder, "SELECT 1")   # the other server connection stays busy: a and b share one
        pa, pb = _BinaryProtocol(a), _BinaryProtocol(b)
        sql = "SELECT CONCAT(?, '')"
        sa, sb = pa.prepare(sql), pb.prepare(sql)
        assert pa.execute(sa, LONGLONG, struct.pack("<q", 42)) == b"42"
        assert pb.execute(sb, VARCHAR, b"\x05hello") == b"hello"
        assert pa.execute(sa, None, struct.pack("<q", 43)) == b"43"
        assert pb.execute(sb, None, b"\x03bye") == b"bye"
        assert server_thread(a) == server_thread(b) != server_thread(holder)
        holder.commit()
    finally:
        for conn in (holder, a, b):
            conn.close()


# ---------------------------------------------------------------------------------- SQLAlchemy 2


class Base(DeclarativeBase):
    pass


class Item(Base):
    __tablename__ = "e2e_orm"
    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(50))
    qty: Mapped[int]


async def test_sqlalchemy_orm_over_aiomysql(proxy: MysqlProxy) -> None:
    pytest.importorskip("greenlet", reason="SQLAlchemy's asyncio extension needs greenlet (sqlalchemy[asyncio])")
    from sqlalchemy.ext.asyncio import async_sessionmaker, create_async_engine

    engine = create_async_engine(f"mysql+aiomysql://{APP_USER}:{APP_PASSWORD}@{HOST}:{proxy.port}/{APP_DB}",
                                 pool_size=3)
    try:
        async with engine.begin() as conn:
            await conn.run_sync(Base.metadata.create_all)
        sessions = async_sessionmaker(engine, expire_on_commit=False)
        async with sessions() as session, session.begin():
            session.add_all([Item(name=f"item{i}", qty=i) for i in range(10)])
        async with sessions() as session:
            items = (await session.scalars(select(Item).where(Item.qty >= 5).order_by(Item.id))).all()
            assert [item.name for item in items] == [f"item{i}" for i in range(5, 10)]
            items[0].qty = 100
            await session.delete(items[1])
            await session.commit()
        async with sessions() as session:
            try:
                async with session.begin():
                    session.add(Item(name="rolled back", qty=0))
                    await session.flush()
                    raise RuntimeError("roll back")
            except RuntimeError:
                pass
        async with sessions() as session:
            total = sum((await session.scalars(select(Item.qty))).all())
            assert total == sum(range(10)) - 5 - 6 + 100
            assert (await session.scalars(select(Item).where(Item.name == "rolled back"))).first() is None
        async with engine.begin() as conn:
            await conn.run_sync(Base.metadata.drop_all)
    finally:
        await engine.dispose()


def test_mixed_drivers_share_max_server_connections(proxy: MysqlProxy, mysql_cluster: MysqlCluster) -> None:
    holders = [connect(proxy, autocommit=False) for _ in range(POOL_SIZE)]
    try:
        for conn in holders:
            scalar(conn, "SELECT COUNT(*) FROM e2e_drv")   # each holds a server connection in a transaction
        cli = subprocess.Popen(mariadb_cli_argv(proxy.port, "SELECT CONNECTION_ID()"), stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True, stdin=subprocess.DEVNULL)
        try:
            cli.wait(1.5)
            finished_early = True
        except subprocess.TimeoutExpired:
            finished_early = False
        server_connections = len(proxy_server_ports(proxy.pid, mysql_cluster.ports[0]))
        for conn in holders:
            conn.commit()
        out, err = cli.communicate(timeout=15)
        assert cli.returncode == 0, err
        assert not finished_early, f"the CLI got a server connection while {POOL_SIZE} were busy " \
                                   f"({server_connections} open)"
    finally:
        for conn in holders:
            conn.close()


def test_all_server_connections_clean_after_drivers(proxy: MysqlProxy, mysql_cluster: MysqlCluster) -> None:
    """No server connection of the proxy is left inside a transaction by the tests above."""
    with connect(proxy) as conn:
        assert server_thread(conn) > 0
    with direct(mysql_cluster) as conn:
        open_transactions = scalar(conn, "SELECT COUNT(*) FROM information_schema.INNODB_TRX t JOIN "
                                         "information_schema.PROCESSLIST p ON p.ID = t.trx_mysql_thread_id "
                                         "WHERE p.USER = %s", (APP_USER,))
    assert open_transactions == 0
