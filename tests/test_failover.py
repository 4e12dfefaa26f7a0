"""Failover against real servers (a primary + 2 replicas, disposable clusters): kill -9 of the primary
under write load in promote mode (nothing acknowledged is lost, no client connection is closed),
follow mode with an external promotion, the old primary coming back as a stale primary (fenced,
no write reaches it), and a planned switchover (admin FAILOVER) under read+write load with zero
failed transactions. Timings are printed (-s). The load is the failover drill's (bench/failover.py).
"""

from __future__ import annotations

import asyncio
import re
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass

import asyncpg
import pytest
from conftest import ProxyProcess
from e2e_helpers import async_wait_until, wait_until
from ops_helpers import AdminError, OpsPorts, admin, http_get, ops_config, scrape

from bench.failover import TABLE, WriteLoad, make_synchronous
from deploy.pgcluster import APP_DB, HOST, PgCluster, free_ports

pytestmark = pytest.mark.slow

INTERVAL, THRESHOLD, PROMOTE_AFTER = "200ms", 3, "1s"
FAILOVERS = 'dbproxy_failovers_total{cluster="main"}'


def config_text(pg: PgCluster, ports: OpsPorts, mode: str) -> str:
    """Trust auth, probes as the superuser (promotion, fencing), the drill's health and failover timing."""
    return ops_config(pg, ports, client_auth="trust", pool_size=20, interval=INTERVAL,
                      failure_threshold=THRESHOLD, borrow_timeout="20s", shutdown_timeout="2s", mode=mode,
                      promote_after=PROMOTE_AFTER, health_user="postgres")


def dsn(port: int) -> str:
    return f"postgresql://app@{HOST}:{port}/{APP_DB}"


def create_table(pg: PgCluster) -> None:
    pg.sql(0, f"CREATE TABLE {TABLE} (client int, seq int, at timestamptz DEFAULT clock_timestamp(), "
              f"PRIMARY KEY (client, seq)); GRANT ALL ON {TABLE} TO PUBLIC", db=APP_DB)


def start_proxy(factory: Callable[..., ProxyProcess], pg: PgCluster, ports: OpsPorts, mode: str) -> ProxyProcess:
    proxy = factory(config_text(pg, ports, mode))
    for address in pg.instance_addrs():
        wait_log(proxy, f"instance {address} unknown -> up")
    wait_log(proxy, f"writer none -> {pg.instance_addrs()[0]}")
    return proxy


def wait_log(proxy: ProxyProcess, text: str, timeout: float = 15.0) -> str:
    """The first log line containing `text` (waits for it)."""
    def line() -> str | None:
        return next((ln for ln in proxy.log_text().splitlines() if text in ln), None)
    return wait_until(line, timeout=timeout, interval=0.02, what=f"log line {text!r}")  # type: ignore[no-any-return]


def rows_on(pg: PgCluster, i: int) -> set[tuple[int, int]]:
    out = pg.sql(i, f"SELECT client, seq FROM {TABLE}", db=APP_DB)
    return {(int(c), int(s)) for c, s in (line.split("|") for line in out.split())}


def promoted_instance(proxy: ProxyProcess, pg: PgCluster) -> int:
    match = re.search(r"failover: promoted (\S+) at", wait_log(proxy, "failover: promoted "))
    assert match is not None
    return pg.instance_addrs().index(match.group(1))


async def acknowledged_writes(load: WriteLoad, n: int) -> None:
    async def enough() -> bool:
        return len(load.acknowledged()) >= n
    await async_wait_until(enough, timeout=10, interval=0.02, what=f"{n} acknowledged writes")


def assert_connection_errors_only(load: WriteLoad) -> None:
    """Only transactions in flight failed: a class 08 error, at most once per client, and no
    client connection was ever closed (each went on writing on the same connection)."""
    errors = load.errors()
    assert all(e.sqlstate is not None and e.sqlstate.startswith("08") for e in errors), errors
    assert max(Counter(e.client for e in errors).values(), default=0) <= 1, errors
    assert not load.disconnected, load.disconnected
    assert not any(conn.is_closed() for conn in load.conns)


# ----------------------------------------------------------------------------- promote mode


async def test_kill_of_the_primary_under_write_load_promotes_and_loses_nothing_acknowledged(
        pg_cluster_factory: Callable[..., PgCluster], proxy_factory: Callable[..., ProxyProcess]) -> None:
    pg = pg_cluster_factory()
    make_synchronous(pg)     # "acknowledged" means applied on a replica
    create_table(pg)
    ports = OpsPorts.of(free_ports(6))
    proxy = start_proxy(proxy_factory, pg, ports, "promote")
    idle = [await asyncpg.connect(dsn(ports.writer)) for _ in range(4)]
    load = WriteLoad(dsn(ports.writer), clients=8)
    await load.start()
    try:
        await acknowledged_writes(load, 200)
        await asyncio.to_thread(pg.kill_instance, 0)
        killed = time.monotonic()
        resumed = await load.wait_resumed(killed, timeout=15) - killed
        await asyncio.sleep(0.3)
    finally:
        await load.stop()
    try:
        new = promoted_instance(proxy, pg)
        new_port = pg.ports[new]
        print(f"\nkill -9 of the primary: every writer client wrote again {resumed * 1000:.0f} ms after the kill; "
              f"{len(load.acknowledged())} acknowledged inserts, errors {Counter(e.sqlstate for e in load.errors())}")
        assert resumed < 5.0      # the goal is 2 s (bench/failover.py measures it); slack for a busy machine
        assert_connection_errors_only(load)
        for conn in idle + load.conns:     # idle clients were untouched and now reach the new primary
            assert await conn.fetchval("SELECT inet_server_port()") == new_port
        assert not pg.in_recovery(new)
        pg.wait_streaming(primary=new, timeout=10)   # the other replica was re-pointed online
        missing = load.acknowledged() - rows_on(pg, new)
        assert not missing, f"{len(missing)} acknowledged inserts missing on the new primary"
        log = proxy.log_text()
        assert log.count("failover: promoting") == 1
        for step in ("failover: detected at", "failover: writer resumed at", "re-pointed "):
            assert step in log, step
        assert scrape(ports.http)[FAILOVERS] == 1
    finally:
        for conn in idle:
            await conn.close()
        await load.close()


async def test_old_primary_restarted_as_a_stale_primary_is_fenced_and_gets_no_write(
        pg_cluster_factory: Callable[..., PgCluster], proxy_factory: Callable[..., ProxyProcess]) -> None:
    pg = pg_cluster_factory()
    create_table(pg)
    ports = OpsPorts.of(free_ports(6))
    proxy = start_proxy(proxy_factory, pg, ports, "promote")
    old = pg.instance_addrs()[0]
    conn = await asyncpg.connect(dsn(ports.writer))
    try:
        await conn.execute(f"INSERT INTO {TABLE} (client, seq) VALUES (0, 0)")
        await asyncio.to_thread(pg.kill_instance, 0)
        wait_log(proxy, "failover: writer resumed at")
        new = promoted_instance(proxy, pg)
        await asyncio.to_thread(pg.start_instance, 0)       # comes back a primary, on the old timeline
        wait_log(proxy, f"instance {old} down -> fenced")
        for seq in range(1, 51):
            await conn.execute(f"INSERT INTO {TABLE} (client, seq) VALUES (1, $1)", seq)
        assert await conn.fetchval("SELECT inet_server_port()") == pg.ports[new]
        status = http_get(ports.http, "/status").json()["clusters"][0]
        assert status["writer"] == pg.instance_addrs()[new]
        assert {i["instance"]: i["state"] for i in status["instances"]}[old] == "fenced"
    finally:
        await conn.close()
    assert not pg.in_recovery(0)                           # still a primary: split-brain, handled
    assert pg.sql(0, f"SELECT count(*) FROM {TABLE} WHERE client = 1", db=APP_DB) == "0"
    assert pg.sql(new, f"SELECT count(*) FROM {TABLE} WHERE client = 1", db=APP_DB) == "50"
    await asyncio.sleep(1.5)                               # > promote_after: no second promotion
    log = proxy.log_text()
    assert log.count("failover: promoting") == 1
    assert scrape(ports.http)[FAILOVERS] == 1
    print(f"\nstale primary {old} fenced; 50 writes went to {pg.instance_addrs()[new]}, none to it")


# ----------------------------------------------------------------------------- follow mode


async def test_follow_mode_waits_for_an_external_promotion_and_writes_resume_there(
        pg_cluster_factory: Callable[..., PgCluster], proxy_factory: Callable[..., ProxyProcess]) -> None:
    pg = pg_cluster_factory()
    create_table(pg)
    ports = OpsPorts.of(free_ports(6))
    proxy = start_proxy(proxy_factory, pg, ports, "follow")
    load = WriteLoad(dsn(ports.writer), clients=4)
    await load.start()
    try:
        await acknowledged_writes(load, 100)
        await asyncio.to_thread(pg.kill_instance, 0)
        await asyncio.to_thread(wait_log, proxy, "failover: detected at")
        await asyncio.sleep(1.5)                  # longer than promote_after: follow mode promotes nothing
        assert pg.in_recovery(1) and pg.in_recovery(2)
        promoted = time.monotonic()
        await asyncio.to_thread(pg.promote, 1)
        await asyncio.to_thread(pg.follow, 2, 1)
        resumed = await load.wait_resumed(promoted, timeout=15) - promoted
        await asyncio.sleep(0.3)
    finally:
        await load.stop()
    try:
        print(f"\nfollow mode: writes resumed {resumed * 1000:.0f} ms after the external promotion")
        assert "failover: promoting" not in proxy.log_text()
        wait_log(proxy, f"writer none -> {pg.instance_addrs()[1]}")
        assert_connection_errors_only(load)
        after = {(w.client, w.seq) for w in load.writes if w.error is None and w.started > promoted}
        assert after and after <= rows_on(pg, 1)
    finally:
        await load.close()


# ----------------------------------------------------------------------------- planned switchover


@dataclass
class ReadLoad:
    """Clients reading through the reader endpoint in a loop; every failure is kept."""

    port: int
    clients: int = 4
    reads: int = 0

    def __post_init__(self) -> None:
        self.errors: list[str] = []
        self._stop = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []

    async def start(self) -> None:
        conns = [await asyncpg.connect(dsn(self.port)) for _ in range(self.clients)]
        self._tasks = [asyncio.get_running_loop().create_task(self._client(c)) for c in conns]

    async def _client(self, conn: asyncpg.Connection) -> None:
        while not self._stop.is_set():
            try:
                await conn.fetchval(f"SELECT count(*) FROM {TABLE}", timeout=30)
                self.reads += 1
            except (asyncpg.PostgresError, asyncpg.InterfaceError, OSError, TimeoutError) as exc:
                self.errors.append(f"{type(exc).__name__}: {exc}")
            await asyncio.sleep(0.002)
        await conn.close()

    async def stop(self) -> None:
        self._stop.set()
        await asyncio.gather(*self._tasks)


async def test_switchover_under_read_and_write_load_fails_no_transaction(
        pg_cluster_factory: Callable[..., PgCluster], proxy_factory: Callable[..., ProxyProcess]) -> None:
    pg = pg_cluster_factory()
    create_table(pg)
    ports = OpsPorts.of(free_ports(6))
    proxy = start_proxy(proxy_factory, pg, ports, "follow")
    old, *replicas = pg.instance_addrs()
    writes, reads = WriteLoad(dsn(ports.writer), clients=4), ReadLoad(ports.reader)
    await writes.start()
    await reads.start()
    try:
        await acknowledged_writes(writes, 200)
        [row] = await asyncio.to_thread(admin, ports.admin, "FAILOVER main")
        switched = time.monotonic()
        await writes.wait_resumed(switched, timeout=10)
        await asyncio.sleep(0.3)
    finally:
        await writes.stop()
        await reads.stop()
    try:
        print(f"\nswitchover: {row}; {len(writes.acknowledged())} writes, {reads.reads} reads")
        assert row["old_writer"] == old and row["new_writer"] in replicas
        assert row["old_writer_state"] == "fenced"
        assert float(row["paused_ms"]) < 5000
        new = pg.instance_addrs().index(row["new_writer"])
        assert row["repointed"] == next(r for r in replicas if r != row["new_writer"])
        assert not writes.errors() and not reads.errors, (writes.errors()[:5], reads.errors[:5])
        assert not writes.disconnected
        missing = writes.acknowledged() - rows_on(pg, new)
        assert not missing, f"{len(missing)} acknowledged writes missing on the new primary"
        assert await writes.conns[0].fetchval("SELECT inet_server_port()") == pg.ports[new]
        assert pg.sql(0, "SHOW default_transaction_read_only") == "on"
        pg.wait_streaming(primary=new, timeout=10)
        instances = {r["instance"]: r["state"] for r in admin(ports.admin, "SHOW INSTANCES")}
        assert instances[old] == "fenced"
        assert scrape(ports.http)[FAILOVERS] == 1
        for command, message in ((f"FAILOVER main TO '{old}'", "not a healthy replica"),
                                 ("FAILOVER main TO '127.0.0.1:1'", "is not an instance"),
                                 ("FAILOVER nope", 'no cluster named "nope"')):
            with pytest.raises(AdminError, match=message):
                admin(ports.admin, command)
        assert "switchover: done at" in proxy.log_text()
    finally:
        await writes.close()
