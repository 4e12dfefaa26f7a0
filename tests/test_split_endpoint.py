"""The split endpoint (SPEC §3.3, §3.4) end to end, against a real primary + 2 replicas.

- A table of statements sent through a split endpoint, each row asserting where its transaction
  ran, read from the result where it can show it (`inet_server_port()`, `SHOW port`, a RETURNING
  clause, COPY output, `pg_is_in_recovery()`), otherwise from an effect only one side allows: a
  write succeeds only on the primary (replicas reject it with 25006), and
  `1 / (inet_server_port() - <primary port>)` fails only on the primary (22012).  Simple-query
  rows use a small protocol client here (one Query message per statement, so a row can be an
  explicit transaction of several statements); extended-protocol rows use asyncpg (named,
  cached prepared statements) and psycopg (unnamed statements; server-side prepared).
- pgbench's built-in TPC-B-like script through the split endpoint (writes land on the primary: the
  replicas are read-only, so a misrouted write would fail the run; the history rows are counted
  on the primary), and a read-only script whose transactions are counted per instance as
  `xact_commit` deltas in pg_stat_database of a database only this test uses (the proxy is stopped
  before each reading, so the server backends exit and flush their statistics).
- read_your_writes: test_split_read_your_writes.py.

Regression tests: a write that follows an unsynced or pipelined read still reaches the primary
(test_write_behind_an_unsynced_or_pipelined_read_...), and read_your_writes holds under
synchronous_commit = off (the proxy captures the WAL insert position, at or past the commit).

Timings are printed (-s).
"""

from __future__ import annotations

import asyncio
import re
import subprocess
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import asyncpg
import psycopg
import pytest
from conftest import ProxyProcess
from e2e_helpers import EndpointSpec, clean_env, running_proxy, wait_until
from split_helpers import (
    PORT_SQL,
    Reply,
    SimpleClient,
    config_text,
    create_database,
    drop_database,
    split_endpoint,
    start_proxy,
    wait_instances_up,
    wait_replayed,
    where,
)

from deploy.pgcluster import HOST, PgCluster, pg_binary

TABLE_DB = "split_table"
BENCH_DB = "split_bench"
READ_ONLY_FUNCTION = "split_port_ro"


# ============================================================================== 1. the table

TABLE_SETUP = f"""
CREATE TABLE split_t (id serial PRIMARY KEY, v text);
INSERT INTO split_t (v) VALUES ('one'), ('for update');
CREATE SEQUENCE split_s;
CREATE VIEW split_v AS SELECT inet_server_port() AS port;
CREATE FUNCTION split_port() RETURNS int LANGUAGE sql STABLE AS 'SELECT inet_server_port()';
CREATE FUNCTION {READ_ONLY_FUNCTION}() RETURNS int LANGUAGE sql STABLE AS 'SELECT inet_server_port()';
"""


@dataclass(frozen=True)
class Case:
    """Statements sent one Query message at a time on a fresh connection; `at` shows where they ran.

    observe:
      port        the reply's value is the server port
      copy        the first COPY data line is the server port
      recovery    the reply's value is pg_is_in_recovery()
      write       the statement writes: success means the primary, 25006 (read-only) a replica
      off_primary the statement divides by (inet_server_port() - primary port): success means a
                  replica, 22012 (division by zero) the primary
    """

    statements: tuple[str, ...]
    expect: str
    observe: str = "port"
    at: int = -1


def case(*statements: str, expect: str, observe: str = "port", at: int = -1) -> Case:
    return Case(statements, expect, observe, at)


OFF_PRIMARY = "1 / (inet_server_port() - {primary})"

SIMPLE_CASES: dict[str, Case] = {
    # ---- to a replica
    "select": case(PORT_SQL, expect="replica"),
    "select-lowercase-semicolon": case("select inet_server_port();", expect="replica"),
    "select-from-table": case("SELECT inet_server_port() FROM split_t WHERE id = 1", expect="replica"),
    "select-for-update-in-a-literal": case(
        "SELECT inet_server_port() FROM split_t WHERE v = 'for update'", expect="replica"),
    "hint-text-in-a-literal": case("SELECT inet_server_port(), 'dbproxy:route=primary'", expect="replica"),
    "values": case("VALUES (inet_server_port())", expect="replica"),
    "table-of-a-view": case("TABLE split_v", expect="replica"),
    "show": case("SHOW port", expect="replica"),
    "current-setting": case("SELECT current_setting('port')::int", expect="replica"),
    "pg-is-in-recovery": case("SELECT pg_is_in_recovery()", expect="replica", observe="recovery"),
    "read-only-function-listed": case(f"SELECT {READ_ONLY_FUNCTION}()", expect="replica"),
    "read-only-function-qualified": case(f"SELECT public.{READ_ONLY_FUNCTION}()", expect="replica"),
    "replica-hint-on-user-function": case("/* dbproxy:route=replica */ SELECT split_port()", expect="replica"),
    "multi-statement-reads": case("SELECT 1; SELECT inet_server_port()", expect="replica"),
    "explain-analyze-select": case(f"EXPLAIN ANALYZE SELECT {OFF_PRIMARY}", expect="replica",
                                   observe="off_primary"),
    "begin-read-only-block": case("BEGIN READ ONLY", PORT_SQL, "COMMIT", expect="replica", at=1),
    "start-transaction-read-only-block": case(
        "START TRANSACTION READ ONLY", "SELECT pg_is_in_recovery()", PORT_SQL, "COMMIT",
        expect="replica", at=2),
    "begin-read-only-block-recovery": case(
        "BEGIN TRANSACTION ISOLATION LEVEL REPEATABLE READ READ ONLY", "SELECT pg_is_in_recovery()", "COMMIT",
        expect="replica", observe="recovery", at=1),
    # ---- to the primary
    "select-for-update": case("SELECT inet_server_port() FROM split_t WHERE id = 1 FOR UPDATE", expect="primary"),
    "select-for-share": case("SELECT inet_server_port() FROM split_t WHERE id = 1 FOR SHARE", expect="primary"),
    "select-for-no-key-update": case(
        "SELECT inet_server_port() FROM split_t WHERE id = 1 FOR NO KEY UPDATE", expect="primary"),
    "for-key-share-in-a-subquery": case(
        "SELECT inet_server_port() FROM split_t WHERE id IN (SELECT id FROM split_t FOR KEY SHARE)",
        expect="primary"),
    "cte-insert": case(
        "WITH x AS (INSERT INTO split_t (v) VALUES ('cte') RETURNING 1) SELECT inet_server_port()",
        expect="primary"),
    "cte-update": case(
        "WITH x AS (UPDATE split_t SET v = v WHERE id = 1 RETURNING 1) SELECT inet_server_port()",
        expect="primary"),
    "cte-delete": case(
        "WITH x AS (DELETE FROM split_t WHERE id < 0 RETURNING 1) SELECT inet_server_port()", expect="primary"),
    "nextval": case("SELECT inet_server_port(), nextval('split_s')", expect="primary"),
    "nextval-qualified": case("SELECT inet_server_port(), pg_catalog.nextval('split_s')", expect="primary"),
    "setval": case("SELECT inet_server_port(), setval('split_s', 100)", expect="primary"),
    "nextval-in-a-subquery": case(
        "SELECT p FROM (SELECT inet_server_port() AS p, nextval('split_s') AS n) s", expect="primary"),
    "advisory-lock": case("SELECT inet_server_port(), pg_advisory_xact_lock(4242)", expect="primary"),
    "txid-current": case("SELECT inet_server_port(), txid_current()", expect="primary"),
    "user-function-not-listed": case("SELECT split_port()", expect="primary"),
    "user-function-in-where": case("SELECT inet_server_port() WHERE split_port() > 0", expect="primary"),
    "primary-hint": case(f"/* dbproxy:route=primary */ {PORT_SQL}", expect="primary"),
    "primary-hint-line-comment": case(f"-- dbproxy:route=primary\n{PORT_SQL}", expect="primary"),
    "begin-block": case("BEGIN", PORT_SQL, "COMMIT", expect="primary", at=1),
    "begin-read-write-block": case("BEGIN READ WRITE", PORT_SQL, "COMMIT", expect="primary", at=1),
    "start-transaction-block": case("START TRANSACTION", PORT_SQL, "ROLLBACK", expect="primary", at=1),
    "begin-serializable-read-only": case(
        "BEGIN ISOLATION LEVEL SERIALIZABLE READ ONLY", PORT_SQL, "COMMIT", expect="primary", at=1),
    "begin-then-set-transaction-read-only": case(
        "BEGIN", "SET TRANSACTION READ ONLY", PORT_SQL, "COMMIT", expect="primary", at=2),
    "multi-statement-read-then-write": case(
        "SELECT inet_server_port(); INSERT INTO split_t (v) VALUES ('multi')", expect="primary", at=0,
        observe="write"),
    "insert-returning": case("INSERT INTO split_t (v) VALUES ('ret') RETURNING inet_server_port()",
                             expect="primary"),
    "update-returning": case("UPDATE split_t SET v = v WHERE id = 1 RETURNING inet_server_port()",
                             expect="primary"),
    "merge": case("MERGE INTO split_t t USING (VALUES (1)) s (id) ON t.id = s.id "
                  "WHEN MATCHED THEN UPDATE SET v = t.v", expect="primary", observe="write"),
    "select-into": case("SELECT inet_server_port() AS port INTO split_into; DROP TABLE split_into",
                        expect="primary", observe="write"),
    "explain-analyze-insert": case("EXPLAIN ANALYZE INSERT INTO split_t (v) VALUES ('explain')",
                                   expect="primary", observe="write"),
    "explain-analyze-nextval": case("EXPLAIN ANALYZE SELECT nextval('split_s')", expect="primary",
                                    observe="write"),
    "explain-analyze-user-function": case(f"EXPLAIN ANALYZE SELECT split_port(), {OFF_PRIMARY}",
                                          expect="primary", observe="off_primary"),
    "copy-to-stdout": case("COPY (SELECT inet_server_port()) TO STDOUT", expect="primary", observe="copy"),
}


def landed(case_: Case, replies: list[Reply], pg: PgCluster) -> str:
    """Where the case's transaction ran, from the observed reply (see Case)."""
    for sql, reply in zip(case_.statements, replies, strict=True):
        allowed = reply is replies[case_.at] and case_.observe in ("write", "off_primary")
        assert reply.error is None or allowed, f"{sql!r} failed: {reply.error}"
    reply = replies[case_.at]
    code = reply.error.get("C") if reply.error else None
    if case_.observe == "port":
        assert reply.value is not None, f"no row: {reply}"
        return where(int(reply.value), pg)
    if case_.observe == "copy":
        return where(int(reply.copy_data[0]), pg)
    if case_.observe == "recovery":
        return {"t": "replica", "f": "primary"}[str(reply.value)]
    if case_.observe == "write":
        assert code in (None, "25006"), reply.error
        return "primary" if code is None else "replica"
    assert case_.observe == "off_primary"
    assert code in (None, "22012"), reply.error
    return "replica" if code is None else "primary"


@pytest.fixture(scope="module")
def table_db(pg_cluster: PgCluster) -> Iterator[str]:
    create_database(pg_cluster, TABLE_DB, TABLE_SETUP)
    yield TABLE_DB
    drop_database(pg_cluster, TABLE_DB)


@pytest.fixture(scope="module")
def split_port(pg_cluster: PgCluster, table_db: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[int]:
    """A proxy (module-wide) with one split endpoint, read_your_writes off; its port."""
    split = split_endpoint("app", read_your_writes=False)
    text = config_text(pg_cluster, [split], read_only_functions=[READ_ONLY_FUNCTION])
    with running_proxy(text, tmp_path_factory.mktemp("split-table"), split.port) as proxy:
        wait_instances_up(proxy.process, pg_cluster)
        yield split.port
        proxy.assert_alive_and_clean()


@pytest.mark.parametrize("name", list(SIMPLE_CASES))
async def test_simple_query_lands_where_the_table_says(name: str, split_port: int, pg_cluster: PgCluster) -> None:
    case_ = SIMPLE_CASES[name]
    statements = [s.format(primary=pg_cluster.ports[0]) for s in case_.statements]
    client = await SimpleClient.connect(split_port, TABLE_DB)
    try:
        replies = [await client.query(sql) for sql in statements]
    finally:
        await client.close()
    assert replies[-1].status == "I", f"transaction left open: {replies[-1]}"
    assert landed(Case(tuple(statements), case_.expect, case_.observe, case_.at), replies, pg_cluster) \
        == case_.expect


@pytest.mark.parametrize("name", [n for n, c in SIMPLE_CASES.items() if c.observe != "port"])
async def test_the_observations_tell_the_primary_from_a_replica(name: str, table_db: str,
                                                                 pg_cluster: PgCluster) -> None:
    """Control for the rows that do not show a port: run directly on each server, they tell which."""
    case_ = SIMPLE_CASES[name]
    statements = tuple(s.format(primary=pg_cluster.ports[0]) for s in case_.statements)
    for index, expected in ((0, "primary"), (1, "replica")):
        client = await SimpleClient.connect(pg_cluster.ports[index], TABLE_DB)
        try:
            replies = [await client.query(sql) for sql in statements]
        finally:
            await client.close()
        assert landed(Case(statements, case_.expect, case_.observe, case_.at), replies, pg_cluster) == expected


# ---- extended protocol: asyncpg (named statements, cached and re-used) and psycopg (libpq)

Ports = Callable[[int, PgCluster], Awaitable[list[int]]]


def _asyncpg(port: int, **kwargs: object) -> Awaitable[asyncpg.Connection]:
    return asyncpg.connect(host=HOST, port=port, user="app", database=TABLE_DB, **kwargs)  # type: ignore[arg-type]


async def apg_cached_select(port: int, pg: PgCluster) -> list[int]:
    conn = await _asyncpg(port)
    try:   # the first call prepares (Parse, Describe, Sync) then binds: later calls only bind
        return [await conn.fetchval(PORT_SQL) for _ in range(4)]
    finally:
        await conn.close()


async def apg_select_with_parameter(port: int, pg: PgCluster) -> list[int]:
    conn = await _asyncpg(port)
    try:
        return [await conn.fetchval("SELECT inet_server_port() + $1::int", 0) for _ in range(3)]
    finally:
        await conn.close()


async def apg_prepared_select(port: int, pg: PgCluster) -> list[int]:
    conn = await _asyncpg(port)
    try:
        stmt = await conn.prepare("SELECT inet_server_port() FROM split_t WHERE id = $1")
        return [await stmt.fetchval(1) for _ in range(5)]
    finally:
        await conn.close()


async def apg_prepared_insert_returning(port: int, pg: PgCluster) -> list[int]:
    conn = await _asyncpg(port)
    try:
        stmt = await conn.prepare("INSERT INTO split_t (v) VALUES ($1) RETURNING inet_server_port()")
        return [await stmt.fetchval(f"asyncpg {i}") for i in range(3)]
    finally:
        await conn.close()


async def apg_prepared_writes_and_reads_interleaved(port: int, pg: PgCluster) -> list[int]:
    """A write statement prepared, then a read one: each Bind is routed by its own statement."""
    conn = await _asyncpg(port)
    try:
        write = await conn.prepare("UPDATE split_t SET v = v WHERE id = $1 RETURNING inet_server_port()")
        read = await conn.prepare(PORT_SQL)
        ports = []
        for _ in range(3):
            ports.append(await write.fetchval(1))
            assert where(await read.fetchval(), pg) == "replica"
        return ports
    finally:
        await conn.close()


async def apg_copy_records_to_table(port: int, pg: PgCluster) -> list[int]:
    conn = await _asyncpg(port)
    try:
        await conn.copy_records_to_table("split_t", records=[("copied",)], columns=["v"])
        return [await conn.fetchval(f"/* dbproxy:route=primary */ {PORT_SQL}")]   # it succeeded: primary
    finally:
        await conn.close()


async def apg_select_for_update(port: int, pg: PgCluster) -> list[int]:
    conn = await _asyncpg(port)
    try:
        return [await conn.fetchval("SELECT inet_server_port() FROM split_t WHERE id = $1 FOR UPDATE", 1)
                for _ in range(2)]
    finally:
        await conn.close()


async def apg_nextval(port: int, pg: PgCluster) -> list[int]:
    conn = await _asyncpg(port)
    try:
        return [await conn.fetchval("SELECT inet_server_port() WHERE nextval('split_s') > $1", 0)
                for _ in range(2)]
    finally:
        await conn.close()


async def apg_user_function(port: int, pg: PgCluster) -> list[int]:
    conn = await _asyncpg(port)
    try:
        return [await conn.fetchval("SELECT split_port()") for _ in range(2)]
    finally:
        await conn.close()


async def apg_listed_function(port: int, pg: PgCluster) -> list[int]:
    conn = await _asyncpg(port)
    try:
        return [await conn.fetchval(f"SELECT {READ_ONLY_FUNCTION}()") for _ in range(2)]
    finally:
        await conn.close()


async def apg_primary_hint(port: int, pg: PgCluster) -> list[int]:
    conn = await _asyncpg(port)
    try:
        return [await conn.fetchval(f"/* dbproxy:route=primary */ {PORT_SQL}") for _ in range(2)]
    finally:
        await conn.close()


async def apg_read_only_transaction(port: int, pg: PgCluster) -> list[int]:
    conn = await _asyncpg(port)
    try:
        ports = []
        for _ in range(2):
            async with conn.transaction(readonly=True):
                ports.append(await conn.fetchval(PORT_SQL))
                ports.append(await conn.fetchval("SELECT inet_server_port() FROM split_t WHERE id = $1", 1))
        return ports
    finally:
        await conn.close()


async def apg_transaction(port: int, pg: PgCluster) -> list[int]:
    conn = await _asyncpg(port)
    try:
        async with conn.transaction():
            return [await conn.fetchval(PORT_SQL), await conn.fetchval(PORT_SQL)]
    finally:
        await conn.close()


def _psycopg(port: int) -> Awaitable[psycopg.AsyncConnection]:
    return psycopg.AsyncConnection.connect(host=HOST, port=port, user="app", dbname=TABLE_DB,
                                           sslmode="disable", autocommit=True)


async def pg3_select_with_parameter(port: int, pg: PgCluster) -> list[int]:
    conn = await _psycopg(port)   # Parse/Bind/Describe/Execute/Sync of the unnamed statement
    try:
        return [(await (await conn.execute("SELECT inet_server_port() + %s", (0,))).fetchone())[0]  # type: ignore[index]
                for _ in range(3)]
    finally:
        await conn.close()


async def pg3_server_prepared_select(port: int, pg: PgCluster) -> list[int]:
    conn = await _psycopg(port)
    try:
        return [(await (await conn.execute("SELECT inet_server_port() WHERE %s", (True,), prepare=True))
                 .fetchone())[0] for _ in range(4)]  # type: ignore[index]
    finally:
        await conn.close()


async def pg3_insert_returning(port: int, pg: PgCluster) -> list[int]:
    conn = await _psycopg(port)
    try:
        return [(await (await conn.execute(
            "INSERT INTO split_t (v) VALUES (%s) RETURNING inet_server_port()", ("psycopg",))).fetchone())[0]  # type: ignore[index]
                for _ in range(2)]
    finally:
        await conn.close()


EXTENDED_CASES: dict[str, tuple[Ports, str]] = {
    "asyncpg-cached-select": (apg_cached_select, "replica"),
    "asyncpg-select-with-parameter": (apg_select_with_parameter, "replica"),
    "asyncpg-prepared-select": (apg_prepared_select, "replica"),
    "asyncpg-listed-function": (apg_listed_function, "replica"),
    "asyncpg-read-only-transaction": (apg_read_only_transaction, "replica"),
    "asyncpg-prepared-insert-returning": (apg_prepared_insert_returning, "primary"),
    "asyncpg-prepared-writes-and-reads-interleaved": (apg_prepared_writes_and_reads_interleaved, "primary"),
    "asyncpg-select-for-update": (apg_select_for_update, "primary"),
    "asyncpg-nextval": (apg_nextval, "primary"),
    "asyncpg-user-function": (apg_user_function, "primary"),
    "asyncpg-primary-hint": (apg_primary_hint, "primary"),
    "asyncpg-transaction": (apg_transaction, "primary"),
    "psycopg-select-with-parameter": (pg3_select_with_parameter, "replica"),
    "psycopg-server-prepared-select": (pg3_server_prepared_select, "replica"),
    "psycopg-insert-returning": (pg3_insert_returning, "primary"),
}


@pytest.mark.parametrize("name", list(EXTENDED_CASES))
async def test_extended_protocol_lands_where_the_table_says(name: str, split_port: int,
                                                            pg_cluster: PgCluster) -> None:
    run, expect = EXTENDED_CASES[name]
    ports = await asyncio.wait_for(run(split_port, pg_cluster), 20)
    assert ports and [where(p, pg_cluster) for p in ports] == [expect] * len(ports), ports


# ---- writes that follow a read without a Sync in between (SPEC §3.3: "a misrouted write is a bug")
#
# The proxy classifies only the first message it holds when it picks a server (session.py _route), then
# forwards everything else the client sends to that server until the server is idle *and* the client
# has sent Sync (server_data: `tracker.idle and not self.unsynced`).  A write queued behind a read in
# the same batch, or sent after a Parse/Describe/Flush that asyncpg's prepare() leaves unsynced, is
# never classified and runs on the replica, which refuses it.


async def write_after_asyncpg_prepare_of_a_read(port: int, pg: PgCluster) -> None:
    conn = await _asyncpg(port)
    try:
        await conn.prepare(PORT_SQL)
        await conn.execute("INSERT INTO split_t (v) VALUES ('after a prepare')")
    finally:
        await conn.close()


async def prepared_read_then_prepared_write(port: int, pg: PgCluster) -> None:
    conn = await _asyncpg(port)
    try:
        read = await conn.prepare(PORT_SQL)
        write = await conn.prepare("UPDATE split_t SET v = v WHERE id = $1 RETURNING inet_server_port()")
        assert where(await write.fetchval(1), pg) == "primary"
        assert where(await read.fetchval(), pg) == "replica"
    finally:
        await conn.close()


async def asyncpg_copy_records_to_table(port: int, pg: PgCluster) -> None:
    """copy_records_to_table prepares `SELECT <columns> FROM <table> LIMIT 1` first, then sends COPY."""
    await asyncio.wait_for(apg_copy_records_to_table(port, pg), 20)


async def pipelined_simple_queries(port: int, pg: PgCluster) -> None:
    client = await SimpleClient.connect(port, TABLE_DB)
    try:
        read, write = await client.pipeline(
            PORT_SQL, "INSERT INTO split_t (v) VALUES ('pipelined') RETURNING inet_server_port()")
    finally:
        await client.close()
    assert read.error is None and write.error is None, (read.error, write.error)
    assert where(int(write.value or 0), pg) == "primary"


async def psycopg_pipeline(port: int, pg: PgCluster) -> None:
    conn = await _psycopg(port)
    try:
        async with conn.pipeline():
            read = await conn.execute("SELECT inet_server_port() + %s", (0,))
            write = await conn.execute("INSERT INTO split_t (v) VALUES (%s) RETURNING inet_server_port()",
                                       ("psycopg pipeline",))
        row = await write.fetchone()
        assert row is not None and where(row[0], pg) == "primary"
        assert (await read.fetchone()) is not None
    finally:
        await conn.close()


def _scenario(fn: Callable[[int, PgCluster], Awaitable[None]]) -> object:
    return pytest.param(fn, id=fn.__name__.replace("_", "-"))


@pytest.mark.parametrize("scenario", [
    _scenario(write_after_asyncpg_prepare_of_a_read),
    _scenario(prepared_read_then_prepared_write),
    _scenario(asyncpg_copy_records_to_table),
    _scenario(pipelined_simple_queries),
    _scenario(psycopg_pipeline),
])
async def test_write_behind_an_unsynced_or_pipelined_read_runs_on_the_primary(
        scenario: Callable[[int, PgCluster], Awaitable[None]], split_port: int, pg_cluster: PgCluster) -> None:
    await asyncio.wait_for(scenario(split_port, pg_cluster), 20)


def test_the_table_is_big_enough() -> None:
    assert len(SIMPLE_CASES) + len(EXTENDED_CASES) >= 25
    expected = Counter(c.expect for c in SIMPLE_CASES.values()) + Counter(e for _, e in EXTENDED_CASES.values())
    assert min(expected.values()) >= 10, expected



# ============================================================================== 2. pgbench

READ_ONLY_SCRIPT = """\
\\set aid random(1, 100000)
SELECT abalance FROM pgbench_accounts WHERE aid = :aid;
"""


def pgbench(port: int, *args: str, timeout: float = 60) -> str:
    argv = [pg_binary("pgbench"), "-h", HOST, "-p", str(port), "-U", "app", *args, BENCH_DB]
    res = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL,
                         env=clean_env(PGSSLMODE="disable", PGCONNECT_TIMEOUT="5"))
    out = res.stdout + res.stderr
    assert res.returncode == 0, f"pgbench {' '.join(args)} exited with {res.returncode}:\n{out}"
    return out


def processed(out: str) -> int:
    """Transactions pgbench completed; asserts that none failed and no error was printed."""
    done = re.search(r"number of transactions actually processed: (\d+)", out)
    failed = re.search(r"number of failed transactions: (\d+)", out)
    assert done and failed, out
    assert int(failed[1]) == 0 and "error" not in out.lower(), out
    assert int(done[1]) > 0, out
    return int(done[1])


def bench_backends(pg: PgCluster, i: int) -> int:
    return int(pg.sql(i, f"SELECT count(*) FROM pg_stat_activity WHERE datname = '{BENCH_DB}'"))


def xact_commits(pg: PgCluster) -> list[int]:
    """pg_stat_database.xact_commit of the bench database on every instance, once no backend of it
    is left (a backend flushes its statistics when it exits; idle ones may hold them for seconds)."""
    for i in range(len(pg.ports)):
        wait_until(lambda i=i: bench_backends(pg, i) == 0, timeout=15, what=f"no {BENCH_DB} backend on node{i}")  # type: ignore[misc]
    return [int(pg.sql(i, f"SELECT xact_commit FROM pg_stat_database WHERE datname = '{BENCH_DB}'"))
            for i in range(len(pg.ports))]


@pytest.fixture
def bench_db(pg_cluster: PgCluster) -> Iterator[str]:
    create_database(pg_cluster, BENCH_DB)
    yield BENCH_DB
    drop_database(pg_cluster, BENCH_DB)


def test_pgbench_tpcb_and_read_only_scripts_through_the_split_endpoint(
        pg_cluster: PgCluster, bench_db: str, proxy_factory: Callable[..., ProxyProcess], tmp_path: Path) -> None:
    pg = pg_cluster
    writer, split = EndpointSpec("writer", "writer"), split_endpoint("app")
    began = time.monotonic()
    proxy = start_proxy(proxy_factory, pg, [writer, split])
    pgbench(writer.port, "-i", "-s", "1", "-q")
    initialized = time.monotonic() - began

    # TPC-B-like (BEGIN; 3 UPDATEs, a SELECT, an INSERT; END) unchanged, in two protocol modes. -j
    # equals -c for prepared mode: see test_e2e_pgbench.
    tpcb = {}
    for mode in ("simple", "prepared"):
        history = int(pg.sql(0, "SELECT count(*) FROM pgbench_history", db=BENCH_DB))
        tpcb[mode] = processed(pgbench(split.port, "-n", "-M", mode, "-c", "4", "-j", "4", "-T", "3"))
        written = int(pg.sql(0, "SELECT count(*) FROM pgbench_history", db=BENCH_DB)) - history
        assert written == tpcb[mode], f"{mode}: {tpcb[mode]} transactions, {written} history rows on the primary"
    proxy.stop()
    wait_replayed(pg)

    script = tmp_path / "read-only.sql"
    script.write_text(READ_ONLY_SCRIPT)
    shares = {}
    for mode in ("simple", "prepared"):
        before = xact_commits(pg)
        proxy = start_proxy(proxy_factory, pg, [EndpointSpec("app", "split", port=split.port)])
        n = processed(pgbench(split.port, "-n", "-M", mode, "-f", str(script), "-c", "4", "-j", "4", "-t", "250"))
        assert n == 1000
        proxy.stop()
        after = xact_commits(pg)
        primary, *replicas = (b - a for a, b in zip(before, after, strict=True))
        shares[mode] = (primary, replicas)
        # Every transaction pgbench ran committed somewhere; a few more are the proxy's own
        # (first login on the primary, session-parameter replay) and the backends' start-up.
        assert primary + sum(replicas) >= n
        assert sum(replicas) >= 0.95 * n, f"{mode}: primary {primary}, replicas {replicas} of {n}"
        assert primary <= 0.05 * n, f"{mode}: primary {primary}, replicas {replicas} of {n}"
        assert min(replicas) > 0, f"{mode}: one replica got nothing: {replicas}"
    print(f"\npgbench through split: init {initialized:.1f}s; TPC-B transactions {tpcb} with no failure, "
          f"every history row on the primary; read-only script xact_commit deltas "
          f"(primary, [replicas]) per 1000 transactions: {shares}; {time.monotonic() - began:.1f}s in all")
