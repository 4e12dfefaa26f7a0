"""Transaction replay on failover (failover.replay = true) against real servers: one kill -9 of the primary
(promote mode, synchronous replication) while asyncpg clients are at every interesting point.

- a transaction with a statement in flight, one that changed a setting before it (the replay starts from
  the setting the transaction began with), one idle inside its transaction, an autocommit read in
  flight, and a load of transactions: no error for any of them except a COMMIT in flight (08007);
  every acknowledged insert is on the new primary and the transactions go on where they were;
- a transaction that had read random() (its replay reads another value), one past replay_max_bytes:
  08006, as without replay;
- a COMMIT in flight and an autocommit write in flight: 08007 (their outcome is unknown);
- the counters of dbproxy_replays_total.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from typing import Any

import asyncpg
import pytest
from conftest import ProxyProcess
from ops_helpers import OpsPorts, scrape
from test_failover import config_text, create_table, dsn, promoted_instance, rows_on, wait_log

from bench.failover import TABLE, PgTransactionClient, WriteLoad, make_synchronous
from deploy.pgcluster import APP_DB, PgCluster, free_ports

pytestmark = pytest.mark.slow

SLEEP = 1.5   # seconds a statement stays in flight on the server (the kill comes while it is)
MAX_BYTES = 16384   # failover.replay_max_bytes
REPLAYS = 'dbproxy_replays_total{cluster="main",outcome="%s"}'


def prepare(pg: PgCluster) -> None:
    """The drill table, and a table whose inserts make COMMIT take SLEEP seconds (a deferred trigger)."""
    create_table(pg)
    pg.sql(0, f"""
        CREATE TABLE slow_commit (id int);
        CREATE FUNCTION slow() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN PERFORM pg_sleep({SLEEP}); RETURN NULL; END $$;
        CREATE CONSTRAINT TRIGGER slow_commit AFTER INSERT ON slow_commit DEFERRABLE INITIALLY DEFERRED
            FOR EACH ROW EXECUTE FUNCTION slow();
        GRANT ALL ON slow_commit TO PUBLIC""", db=APP_DB)


async def outcome(step: Awaitable[Any]) -> Any:
    """The value, or the SQLSTATE of the error as 'error XXXXX'."""
    try:
        return await step
    except asyncpg.PostgresError as exc:
        return f"error {exc.sqlstate}"


class Scenarios:
    """One client per case; `in_flight` is set for each once its last statement before the kill is sent."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.in_flight: dict[str, asyncio.Event] = {}
        self.resume = asyncio.Event()     # set once the new writer is there (for the idle one)
        self.conns: list[asyncpg.Connection] = []

    async def connect(self, name: str) -> asyncpg.Connection:
        conn = await asyncpg.connect(dsn(self.port))
        self.conns.append(conn)
        self.in_flight[name] = asyncio.Event()
        return conn

    def sent(self, name: str) -> None:
        self.in_flight[name].set()

    async def statement_in_flight(self, conn: asyncpg.Connection) -> Any:
        await conn.execute("BEGIN")
        await conn.execute(f"INSERT INTO {TABLE} (client, seq) VALUES (100, 1)")
        seen = await conn.fetchval(f"SELECT count(*) FROM {TABLE} WHERE client = 100")
        self.sent("statement_in_flight")
        slept = await outcome(conn.fetchval(f"SELECT 7 FROM pg_sleep({SLEEP})"))
        await conn.execute(f"INSERT INTO {TABLE} (client, seq) VALUES (100, 2)")
        await conn.execute("COMMIT")
        return seen, slept, await conn.fetchval("SELECT inet_server_port()")

    async def setting_in_transaction(self, conn: asyncpg.Connection) -> Any:
        await conn.execute("BEGIN")
        before = await conn.fetchval("SHOW search_path")
        await conn.execute("SET search_path = pg_catalog, public")   # the replay starts from the setting before it
        self.sent("setting_in_transaction")
        after = await outcome(conn.fetchval(f"SELECT current_setting('search_path') FROM pg_sleep({SLEEP})"))
        await conn.execute("COMMIT")
        return before, after

    async def idle_in_transaction(self, conn: asyncpg.Connection) -> Any:
        await conn.execute("BEGIN")
        await conn.execute(f"INSERT INTO {TABLE} (client, seq) VALUES (101, 1)")
        self.sent("idle_in_transaction")
        await self.resume.wait()
        await asyncio.sleep(0.5)
        await conn.execute(f"INSERT INTO {TABLE} (client, seq) VALUES (101, 2)")
        return await outcome(conn.execute("COMMIT"))

    async def read_random(self, conn: asyncpg.Connection) -> Any:
        await conn.execute("BEGIN")
        await conn.fetchval("SELECT random()")
        self.sent("read_random")
        failed = await outcome(conn.fetchval(f"SELECT 1 FROM pg_sleep({SLEEP})"))
        return failed, conn.is_in_transaction(), await conn.fetchval("SELECT 2")

    async def commit_in_flight(self, conn: asyncpg.Connection) -> Any:
        await conn.execute("BEGIN")
        await conn.execute("INSERT INTO slow_commit VALUES (1)")
        self.sent("commit_in_flight")
        return await outcome(conn.execute("COMMIT")), await conn.fetchval("SELECT 3")

    async def past_the_bound(self, conn: asyncpg.Connection) -> Any:
        await conn.execute("BEGIN")
        await conn.fetchval("SELECT length($1::text)", "x" * (2 * MAX_BYTES))   # more than replay_max_bytes
        self.sent("past_the_bound")
        return await outcome(conn.fetchval(f"SELECT 1 FROM pg_sleep({SLEEP})"))

    async def autocommit_read(self, conn: asyncpg.Connection) -> Any:
        self.sent("autocommit_read")
        return await outcome(conn.fetchval(f"SELECT 42 FROM pg_sleep({SLEEP})"))

    async def autocommit_write(self, conn: asyncpg.Connection) -> Any:
        self.sent("autocommit_write")
        return await outcome(conn.execute(f"INSERT INTO {TABLE} (client, seq) SELECT 102, 1 FROM pg_sleep({SLEEP})"))


async def test_kill_of_the_primary_with_replay_hides_the_loss_from_transactions_that_had_not_committed(
        pg_cluster_factory: Callable[..., PgCluster], proxy_factory: Callable[..., ProxyProcess]) -> None:
    pg = pg_cluster_factory()
    make_synchronous(pg)
    prepare(pg)
    ports = OpsPorts.of(free_ports(6))
    text = config_text(pg, ports, "promote").replace(
        'borrow_timeout = "20s"', f'borrow_timeout = "20s"\nreplay = true\nreplay_max_bytes = {MAX_BYTES}')
    assert "replay = true" in text
    proxy = proxy_factory(text)
    wait_log(proxy, f"writer none -> {pg.instance_addrs()[0]}")
    cases = Scenarios(ports.writer)
    runs = {name: getattr(cases, name) for name in ("statement_in_flight", "setting_in_transaction", "idle_in_transaction", "read_random",
                                                    "commit_in_flight", "past_the_bound", "autocommit_read",
                                                    "autocommit_write")}
    conns = {name: await cases.connect(name) for name in runs}
    load = WriteLoad(dsn(ports.writer), clients=4, connect=PgTransactionClient.connect)
    await load.start()
    tasks = {name: asyncio.get_running_loop().create_task(run(conns[name])) for name, run in runs.items()}
    try:
        for event in cases.in_flight.values():
            await asyncio.wait_for(event.wait(), 10)
        await asyncio.sleep(0.3)   # every statement in flight has reached the primary
        await asyncio.to_thread(pg.kill_instance, 0)
        killed = time.monotonic()
        new = await asyncio.to_thread(promoted_instance, proxy, pg)
        cases.resume.set()
        results = dict(zip(tasks, await asyncio.wait_for(asyncio.gather(*tasks.values()), 30), strict=True))
        resumed = await load.wait_resumed(killed, timeout=15) - killed
        await asyncio.sleep(0.3)
    finally:
        await load.stop()
        for task in tasks.values():
            task.cancel()
    try:
        new_port = pg.ports[new]
        errors = Counter(w.error.split(":")[0] + " " + str(w.sqlstate) for w in load.errors() if w.error)
        print(f"\nreplay: {results}; load: {len(load.acknowledged())} transactions committed, errors {errors}, "
              f"writing again {resumed * 1000:.0f} ms after the kill")
        assert results["statement_in_flight"] == (1, 7, new_port)
        assert results["idle_in_transaction"] == "COMMIT"
        assert results["setting_in_transaction"] == ('"$user", public', "pg_catalog, public")
        assert results["read_random"] == ("error 08006", False, 2)
        assert results["commit_in_flight"] == ("error 08007", 3)
        assert results["autocommit_read"] == 42
        assert results["past_the_bound"] == "error 08006"
        assert results["autocommit_write"] == "error 08007"
        # the load: only a COMMIT in flight may fail, and with 08007; nothing closed
        assert all(w.error.startswith("COMMIT: 08007") for w in load.errors() if w.error), load.errors()
        assert len(load.errors()) <= load.clients
        assert not load.disconnected
        on_new = rows_on(pg, new)
        assert {(100, 1), (100, 2), (101, 1), (101, 2)} <= on_new
        missing = load.acknowledged() - on_new
        assert not missing, f"{len(missing)} acknowledged inserts missing on the new primary"
        metrics = scrape(ports.http)
        succeeded = metrics.get(REPLAYS % "succeeded", 0)
        assert succeeded >= 3 and metrics.get(REPLAYS % "mismatched", 0) >= 1
        assert metrics.get(REPLAYS % "unknown_outcome", 0) >= 2 and metrics.get(REPLAYS % "not_replayable", 0) >= 1
        assert metrics[REPLAYS % "attempted"] == succeeded + metrics.get(REPLAYS % "mismatched", 0) + metrics.get(
            REPLAYS % "failed", 0)
        assert "transaction replayed on" in proxy.log_text()
    finally:
        for conn in cases.conns:
            await conn.close()
        await load.close()
