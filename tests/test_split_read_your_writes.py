"""read_your_writes on the split endpoint (SPEC §3.4) end to end, against a real primary + 2 replicas that
apply commits late: a client never misses its own write on an endpoint with read_your_writes, the same
loop on an endpoint without it does miss (so the delay is real), reads return to the replicas once they
have replayed the write, it holds across a user's connections and under synchronous_commit = off (the
proxy captures the WAL insert position, at or past the commit). Timings are printed (-s)."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

import asyncpg
import pytest
from conftest import ProxyProcess
from e2e_helpers import EndpointSpec, psql
from split_helpers import PORT_SQL, SimpleClient, split_endpoint, start_proxy, wait_replayed, where

from deploy.pgcluster import HOST, PgCluster

# ============================================================================== 3. read_your_writes
#
# Both replicas apply commits APPLY_DELAY late (recovery_min_apply_delay); max_replica_lag is 60s so
# they stay usable.  A read right after the write and a read LATER seconds after it (the replicas
# have then received and replayed everything up to the commit record, which waits) must both find
# the row.  The main test runs with synchronous_commit = on; with the test clusters' default (off)
# the proxy misses the second kind: see test_read_your_writes_with_asynchronous_commit.

APPLY_DELAY = 2.0
ITERATIONS = 30
LATER = 0.5   # after the primary's WAL writer has flushed (wal_writer_delay 200ms), before the replicas apply


def delayed_cluster(factory: Callable[..., PgCluster], synchronous_commit: str) -> PgCluster:
    """A disposable primary + 2 replicas that apply commits APPLY_DELAY late, with a table ryw."""
    pg = factory(settings={"synchronous_commit": synchronous_commit})
    pg.sql(0, "CREATE TABLE ryw (id int PRIMARY KEY); GRANT ALL ON ryw TO PUBLIC", db="app")
    wait_replayed(pg)
    for i in (1, 2):
        pg.sql(i, f"ALTER SYSTEM SET recovery_min_apply_delay = '{APPLY_DELAY:g}s'")
        pg.sql(i, "SELECT pg_reload_conf()")
    return pg


def ryw_endpoints(factory: Callable[..., ProxyProcess], pg: PgCluster) -> tuple[EndpointSpec, EndpointSpec]:
    """A proxy with a split endpoint with read_your_writes and one without (max_replica_lag 60s)."""
    ryw, control = split_endpoint("ryw", read_your_writes=True), split_endpoint("control", read_your_writes=False)
    start_proxy(factory, pg, [ryw, control], max_lag="60s")
    return ryw, control


@dataclass
class WriteThenRead:
    """Results of "INSERT a row, then SELECT it" loops on one client connection."""

    missed: list[int] = field(default_factory=list)
    ports: Counter[str] = field(default_factory=Counter)


async def write_then_read_simple(port: int, ids: range, pg: PgCluster, result: WriteThenRead) -> None:
    client = await SimpleClient.connect(port, "app")
    try:
        for row_id in ids:
            reply = await client.query(f"INSERT INTO ryw (id) VALUES ({row_id})")
            assert reply.error is None, reply.error
            reply = await client.query(f"SELECT inet_server_port(), count(*) FROM ryw WHERE id = {row_id}")
            assert reply.error is None, reply.error
            result.ports[where(int(reply.rows[0][0] or 0), pg)] += 1
            if reply.rows[0][1] != "1":
                result.missed.append(row_id)
    finally:
        await client.close()


async def write_then_read_extended(port: int, ids: range, pg: PgCluster, result: WriteThenRead) -> None:
    conn = await asyncpg.connect(host=HOST, port=port, user="app", database="app")
    try:
        for row_id in ids:
            await conn.execute("INSERT INTO ryw (id) VALUES ($1)", row_id)
            found = await conn.fetchrow("SELECT inet_server_port() AS port, count(*) AS n FROM ryw WHERE id = $1",
                                        row_id)
            assert found is not None
            result.ports[where(found["port"], pg)] += 1
            if found["n"] != 1:
                result.missed.append(row_id)
    finally:
        await conn.close()


async def write_then_read_later(port: int, ids: range, pg: PgCluster, result: WriteThenRead) -> None:
    """INSERT, wait LATER seconds, SELECT (same connection); then let the replicas catch up, so each
    round starts from replicas that have replayed everything."""
    client = await SimpleClient.connect(port, "app")
    try:
        for row_id in ids:
            assert (await client.query(f"INSERT INTO ryw (id) VALUES ({row_id})")).error is None
            await asyncio.sleep(LATER)
            reply = await client.query(f"SELECT inet_server_port(), count(*) FROM ryw WHERE id = {row_id}")
            assert reply.error is None, reply.error
            result.ports[where(int(reply.rows[0][0] or 0), pg)] += 1
            if reply.rows[0][1] != "1":
                result.missed.append(row_id)
            await asyncio.to_thread(wait_replayed, pg)
    finally:
        await client.close()


def control_missed(result: WriteThenRead) -> None:
    """The endpoint without read_your_writes must miss, or the test shows nothing (pytest.fail, not an
    AssertionError: the xfail below expects an AssertionError from the read_your_writes endpoint only)."""
    if not result.missed:
        pytest.fail(f"the endpoint without read_your_writes never missed a write ({dict(result.ports)}): "
                    "the apply delay shows nothing")


@pytest.mark.slow
async def test_read_your_writes_never_misses_a_write_on_delayed_replicas(
        pg_cluster_factory: Callable[..., PgCluster], proxy_factory: Callable[..., ProxyProcess]) -> None:
    pg = delayed_cluster(pg_cluster_factory, synchronous_commit="on")
    ryw, control = ryw_endpoints(proxy_factory, pg)

    began = time.monotonic()
    at_once, unguarded = WriteThenRead(), WriteThenRead()
    await asyncio.wait_for(write_then_read_simple(ryw.port, range(1, 1 + ITERATIONS), pg, at_once), 30)
    await asyncio.wait_for(write_then_read_extended(ryw.port, range(1001, 1001 + ITERATIONS), pg, at_once), 30)
    await asyncio.wait_for(write_then_read_simple(control.port, range(2001, 2001 + ITERATIONS), pg, unguarded), 30)
    await asyncio.wait_for(write_then_read_extended(control.port, range(3001, 3001 + ITERATIONS), pg, unguarded),
                           30)
    loops = time.monotonic() - began
    control_missed(unguarded)
    await asyncio.to_thread(wait_replayed, pg)
    later = WriteThenRead()
    await asyncio.wait_for(write_then_read_later(ryw.port, range(4001, 4004), pg, later), 30)

    # Once the replicas have replayed the writes, the same client's reads go back to them.
    client = await SimpleClient.connect(ryw.port, "app")
    try:
        assert (await client.query("INSERT INTO ryw (id) VALUES (5000)")).error is None
        await asyncio.sleep(APPLY_DELAY + 1.0)
        after_delay = Counter([where(int((await client.query(PORT_SQL)).value or 0), pg) for _ in range(10)])
        found = (await client.query("SELECT count(*) FROM ryw WHERE id = 5000")).value
    finally:
        await client.close()
    print(f"\nread_your_writes, {2 * ITERATIONS} reads right after the write: missed {at_once.missed}, "
          f"on {dict(at_once.ports)} ({loops:.2f}s with the control loops); without read_your_writes: missed "
          f"{len(unguarded.missed)}, on {dict(unguarded.ports)}; reads {LATER}s after the write: missed "
          f"{later.missed}, on {dict(later.ports)}; {APPLY_DELAY + 1:g}s after the last write: {dict(after_delay)}; "
          f"{time.monotonic() - began:.1f}s")
    assert not at_once.missed, f"read_your_writes: rows missed by their own writer: {at_once.missed}"
    assert not later.missed, f"read_your_writes: rows missed by their own writer: {later.missed}"
    assert after_delay == Counter(replica=10)
    assert found == "1"


def psql_rounds(port: int, rounds: range) -> list[int]:
    """psql -c CREATE TABLE / INSERT / SELECT, three separate connections per round: the rounds whose
    SELECT did not see the row (or the table)."""
    missed = []
    for i in rounds:
        for sql in (f"CREATE TABLE ryw_psql_{i} (x int)", f"INSERT INTO ryw_psql_{i} VALUES (1)"):
            done = psql(port, "app", None, sql)
            assert done.returncode == 0, done.stderr
        seen = psql(port, "app", None, f"SELECT count(*) FROM ryw_psql_{i}")
        if seen.returncode != 0 or seen.stdout.strip() != "1":
            missed.append(i)
    return missed


PSQL_ROUNDS = 50


@pytest.mark.slow
def test_read_your_writes_holds_across_a_users_connections(
        pg_cluster_factory: Callable[..., PgCluster], proxy_factory: Callable[..., ProxyProcess]) -> None:
    """The demo's three `psql -c` in a row are three clients: read_your_writes follows the proxy user's
    latest write, not only the connection's (SPEC §3.4: no client reads its own committed write as missing).
    The endpoint has the default config (read_your_writes not written: on); 50 rounds, 0 misses."""
    pg = delayed_cluster(pg_cluster_factory, synchronous_commit="on")
    pg.sql(0, "GRANT CREATE ON SCHEMA public TO app", db="app")
    default, control = split_endpoint("app"), split_endpoint("control", read_your_writes=False)
    start_proxy(proxy_factory, pg, [default, control], max_lag="60s")
    sessions = "SELECT sessions FROM pg_stat_database WHERE datname = 'app'"
    opened_before = int(pg.sql(0, sessions))
    began = time.monotonic()
    missed = psql_rounds(default.port, range(PSQL_ROUNDS))
    took = time.monotonic() - began
    time.sleep(1.0)   # the statistics of ended backends reach pg_stat_database
    opened = int(pg.sql(0, sessions)) - opened_before
    # psql leaves as soon as its write's ReadyForQuery arrives, while the proxy still reads the write's
    # position on that server connection: it finishes that read and pools the connection (not one new
    # server connection per write, which closing it would cost).
    assert opened < PSQL_ROUNDS, f"{opened} server sessions opened for {2 * PSQL_ROUNDS} psql writes"
    unguarded = psql_rounds(control.port, range(100, 105))
    print(f"\nread_your_writes (default config) across psql connections: missed {missed} of {PSQL_ROUNDS} "
          f"({took:.1f}s); without it: {len(unguarded)} of 5")
    assert unguarded, "the endpoint without read_your_writes never missed: the apply delay shows nothing"
    assert missed == [], missed


@pytest.mark.slow
async def test_read_your_writes_with_asynchronous_commit(
        pg_cluster_factory: Callable[..., PgCluster], proxy_factory: Callable[..., ProxyProcess]) -> None:
    pg = delayed_cluster(pg_cluster_factory, synchronous_commit="off")
    ryw, control = ryw_endpoints(proxy_factory, pg)
    unguarded = WriteThenRead()
    await asyncio.wait_for(write_then_read_simple(control.port, range(101, 103), pg, unguarded), 30)
    control_missed(unguarded)
    await asyncio.to_thread(wait_replayed, pg)
    later = WriteThenRead()
    await asyncio.wait_for(write_then_read_later(ryw.port, range(1, 5), pg, later), 30)
    print(f"\nsynchronous_commit = off, reads {LATER}s after the write with read_your_writes: "
          f"missed {later.missed}, on {dict(later.ports)}")
    assert not later.missed, f"read_your_writes: rows missed by their own writer: {later.missed}"
