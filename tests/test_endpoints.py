"""Endpoints against real servers (a primary + 2 replicas): reader balancing, replica failure and
return, lag exclusion, custom endpoints growing and shrinking by SIGHUP, the writer following a
promotion and fencing the old primary. Timings (time to exclude / rejoin) are printed (-s)."""

from __future__ import annotations

import asyncio
import signal
import time
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import asyncpg
import pytest
from conftest import ProxyProcess
from e2e_helpers import EndpointSpec, async_wait_until, proxy_server_ports, routing_config, wait_until

from deploy.pgcluster import HOST, PgCluster, free_ports
from proxy.config import Address
from proxy.engines.postgres.probe import PgProbe

INTERVAL = 0.1
TIMEOUT = 0.5
THRESHOLD = 3
# After a replica stops, the proxy may still fail a client's in-flight transaction; once the
# monitor has had threshold probes (plus a timeout and some slack), nobody may see an error.
DETECTION_WINDOW = INTERVAL * THRESHOLD + TIMEOUT + 1.0
PORT_SQL = "SELECT inet_server_port()"


Endpoint = EndpointSpec


def config_text(instances: Iterable[str], endpoints: Iterable[Endpoint], max_lag: str = "10s") -> str:
    return routing_config(instances, endpoints, interval_ms=int(INTERVAL * 1000), pool_size=10,
                          timeout=f"{int(TIMEOUT * 1000)}ms", failure_threshold=THRESHOLD, max_lag=max_lag)


def dsn(endpoint: Endpoint) -> str:
    return f"postgresql://app@{HOST}:{endpoint.port}/app"


async def ports_in_turn(endpoint: Endpoint, transactions: int, clients: int = 4) -> Counter[int]:
    """Like ports_of, but the connections take turns: one transaction in flight at a time, so every
    choice is a tie of least-outstanding and the spread shows the random tie-break alone."""
    conns = [await asyncpg.connect(dsn(endpoint)) for _ in range(clients)]
    try:
        return Counter([await conns[i % clients].fetchval(PORT_SQL) for i in range(transactions)])
    finally:
        for conn in conns:
            await conn.close()


async def ports_of(endpoint: Endpoint, transactions: int, clients: int = 4) -> Counter[int]:
    """Run `transactions` SELECT inet_server_port() over `clients` concurrent connections; count per port."""
    counts: Counter[int] = Counter()

    async def client(n: int) -> None:
        conn = await asyncpg.connect(dsn(endpoint))
        try:
            for _ in range(n):
                counts[await conn.fetchval(PORT_SQL)] += 1
        finally:
            await conn.close()

    share, rest = divmod(transactions, clients)
    await asyncio.gather(*(client(share + (1 if i < rest else 0)) for i in range(clients)))
    return counts


@dataclass
class Read:
    at: float
    client: int
    port: int | None
    error: str | None


class ReadLoad:
    """Clients reading inet_server_port() in a loop through an endpoint, recording every answer."""

    def __init__(self, endpoint: Endpoint, clients: int = 4, pause: float = 0.005) -> None:
        self.endpoint = endpoint
        self.clients = clients
        self.pause = pause
        self.reads: list[Read] = []
        self._stop = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []

    def start(self) -> None:
        loop = asyncio.get_running_loop()
        self._tasks = [loop.create_task(self._client(i)) for i in range(self.clients)]

    async def stop(self) -> None:
        self._stop.set()
        await asyncio.gather(*self._tasks)

    async def _client(self, i: int) -> None:
        conn = await asyncpg.connect(dsn(self.endpoint))
        while not self._stop.is_set():
            try:
                port = await asyncio.wait_for(conn.fetchval(PORT_SQL), 20)
                self.reads.append(Read(time.monotonic(), i, port, None))
            except (asyncpg.PostgresError, OSError, asyncpg.InterfaceError, TimeoutError) as exc:
                self.reads.append(Read(time.monotonic(), i, None, f"{type(exc).__name__}: {exc}"))
                if conn.is_closed():
                    conn = await asyncpg.connect(dsn(self.endpoint))
            await asyncio.sleep(self.pause)
        await conn.close()

    def ports_since(self, t: float) -> Counter[int | None]:
        return Counter(r.port for r in self.reads if r.at >= t and r.error is None)

    def errors(self) -> list[Read]:
        return [r for r in self.reads if r.error is not None]

    async def wait_for_port(self, port: int, timeout: float = 20.0) -> float:
        """Seconds until a read lands on `port` (counted from the call)."""
        began = time.monotonic()

        async def seen() -> bool:
            return any(r.port == port and r.at >= began for r in self.reads[-50:])

        await async_wait_until(seen, timeout=timeout, interval=0.02, what=f"a read on port {port}")
        return time.monotonic() - began


def wait_log(proxy: ProxyProcess, text: str, timeout: float = 20.0) -> float:
    """Seconds until `text` appears in the proxy's log (counted from the call)."""
    began = time.monotonic()
    wait_until(lambda: text in proxy.log_text(), timeout=timeout, interval=0.02, what=f"log line {text!r}")
    return time.monotonic() - began


def addr(pg: PgCluster, i: int) -> str:
    return pg.instance_addrs()[i]


def start_proxy(factory: Callable[..., ProxyProcess], pg: PgCluster, endpoints: list[Endpoint],
                instances: Iterable[int] = (0, 1, 2), max_lag: str = "10s") -> ProxyProcess:
    proxy = factory(config_text([addr(pg, i) for i in instances], endpoints, max_lag))
    for i in instances:  # every instance has been probed once at startup; wait for the healthy ones
        if pg.is_running(i):
            wait_log(proxy, f"instance {addr(pg, i)} unknown -> up")
    return proxy


# ----------------------------------------------------------------------------- the probe itself


async def test_probe_reads_role_position_and_timeline(pg_cluster: PgCluster) -> None:
    primary = PgProbe(Address(HOST, pg_cluster.ports[0]), "app", None, "postgres")
    replica = PgProbe(Address(HOST, pg_cluster.ports[1]), "app", None, "postgres")
    try:
        # The replica first: WAL written between the two probes would put it ahead of an earlier primary sample.
        r = await replica.probe(2.0)
        p = await primary.probe(2.0)
        assert p.ok and r.ok, (p.error, r.error)
        assert (p.in_recovery, r.in_recovery) == (False, True)
        assert p.timeline == r.timeline == 1
        assert p.position and r.position and r.position <= p.position
        assert r.lag_seconds is not None and p.lag_seconds is None
        # The probe keeps its connection, and reconnects when the server ends it.
        pg_cluster.sql(0, "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                          "WHERE application_name = 'dbproxy-probe'")
        again = await primary.probe(2.0)
        assert again.ok, again.error
    finally:
        primary.close()
        replica.close()


async def test_probe_of_a_closed_port_fails_fast() -> None:
    probe = PgProbe(Address(HOST, free_ports(1)[0]), "app", None, "postgres")
    began = time.monotonic()
    result = await probe.probe(2.0)
    assert not result.ok and result.error
    assert time.monotonic() - began < 1.0


# ----------------------------------------------------------------------------- shared cluster


async def test_reader_spreads_over_both_replicas_and_writer_hits_the_primary(
        pg_cluster: PgCluster, proxy_factory: Callable[..., ProxyProcess]) -> None:
    writer, reader, split = Endpoint("writer", "writer"), Endpoint("reader", "reader"), Endpoint("app", "split")
    start_proxy(proxy_factory, pg_cluster, [writer, reader, split])
    primary, r1, r2 = pg_cluster.ports
    counts = await ports_in_turn(reader, 1000)
    busy = await ports_of(reader, 1000, clients=8)
    print(f"\nreader spread over 1000 transactions: {dict(counts)}; 8 concurrent clients: {dict(busy)}")
    assert set(counts) == {r1, r2}
    assert 400 <= counts[r1] <= 600, counts
    # Concurrent: least-outstanding favours whichever replica answers faster on a loaded machine,
    # but neither is starved.
    assert set(busy) == {r1, r2} and min(busy.values()) >= 250, busy
    assert await ports_of(writer, 50) == Counter({primary: 50})
    split_reads = await ports_of(split, 50)
    assert set(split_reads) <= {r1, r2}
    conn = await asyncpg.connect(dsn(split))
    try:
        async with conn.transaction():   # a read-write transaction on a split endpoint: the primary
            assert await conn.fetchval(PORT_SQL) == primary
    finally:
        await conn.close()


async def test_custom_endpoint_with_exclude_follows_instances_added_and_removed_by_sighup(
        pg_cluster: PgCluster, proxy_factory: Callable[..., ProxyProcess]) -> None:
    primary, r1, r2 = pg_cluster.ports
    custom = Endpoint("analytics", "custom", extra=f'exclude = ["{addr(pg_cluster, 0)}"]\n')
    reader = Endpoint("reader", "reader")
    proxy = start_proxy(proxy_factory, pg_cluster, [custom, reader], instances=(0, 1))
    assert await ports_of(custom, 40) == Counter({r1: 40})

    proxy.config_path.write_text(config_text(pg_cluster.instance_addrs(), [custom, reader]))
    proxy.send_signal(signal.SIGHUP)
    joined = wait_log(proxy, f"instance {addr(pg_cluster, 2)} unknown -> up")
    print(f"\nadded instance healthy {joined:.2f}s after SIGHUP")
    counts = await ports_of(custom, 200)
    assert set(counts) == {r1, r2}, counts
    assert set(await ports_of(reader, 100)) == {r1, r2}

    proxy.config_path.write_text(config_text([addr(pg_cluster, 0), addr(pg_cluster, 1)], [custom, reader]))
    proxy.send_signal(signal.SIGHUP)
    wait_log(proxy, f"instance {addr(pg_cluster, 2)} removed")
    assert await ports_of(custom, 40) == Counter({r1: 40})
    # Drained: no pooled connection and no probe towards the removed instance is left.
    wait_until(lambda: not proxy_server_ports(proxy.pid, r2), timeout=5, what="connections to the removed replica closed")


# ----------------------------------------------------------------------------- disposable clusters


@pytest.mark.slow
async def test_stopped_replica_leaves_reads_without_client_errors_and_rejoins(
        pg_cluster_factory: Callable[..., PgCluster], proxy_factory: Callable[..., ProxyProcess]) -> None:
    pg = pg_cluster_factory()
    reader = Endpoint("reader", "reader")
    proxy = start_proxy(proxy_factory, pg, [reader])
    _, r1, r2 = pg.ports
    load = ReadLoad(reader)
    load.start()
    try:
        await load.wait_for_port(r1)
        await load.wait_for_port(r2)
        stopped_at = time.monotonic()
        await asyncio.to_thread(pg.stop_instance, 1)
        excluded = await asyncio.to_thread(wait_log, proxy, f"instance {addr(pg, 1)} up -> down")
        excluded += time.monotonic() - stopped_at - excluded   # measured from the stop
        await asyncio.sleep(1.0)
        settled = stopped_at + DETECTION_WINDOW
        assert load.ports_since(stopped_at + 0.5).keys() <= {r2}
        restarted_at = time.monotonic()
        await asyncio.to_thread(pg.start_instance, 1)
        rejoined = await load.wait_for_port(r1)
        rejoined += time.monotonic() - restarted_at - rejoined
        await asyncio.sleep(0.5)
    finally:
        await load.stop()
    errors = load.errors()
    late = [e for e in errors if e.at > settled]
    per_client = Counter(e.client for e in errors)
    print(f"\nreplica stop: down after {excluded:.2f}s, reads back {rejoined:.2f}s after restart; "
          f"{len(load.reads)} reads, {len(errors)} client errors {[e.error for e in errors]}")
    assert not late, late
    assert all(n <= 1 for n in per_client.values()), per_client   # never twice for one client
    assert set(load.ports_since(time.monotonic() - 0.4)) == {r1, r2}


@pytest.mark.slow
async def test_lagging_replica_leaves_reads_and_returns(
        pg_cluster_factory: Callable[..., PgCluster], proxy_factory: Callable[..., ProxyProcess]) -> None:
    pg = pg_cluster_factory()
    pg.sql(0, "CREATE TABLE ticks (at timestamptz DEFAULT now()); GRANT ALL ON ticks TO PUBLIC", db="app")
    reader = Endpoint("reader", "reader")
    proxy = start_proxy(proxy_factory, pg, [reader], max_lag="1s")
    _, r1, r2 = pg.ports
    writer = await asyncpg.connect(f"postgresql://postgres@{HOST}:{pg.ports[0]}/app")
    stop = asyncio.Event()

    async def write() -> None:
        while not stop.is_set():
            await writer.execute("INSERT INTO ticks DEFAULT VALUES")
            await asyncio.sleep(0.05)

    ticker = asyncio.get_running_loop().create_task(write())
    load = ReadLoad(reader, clients=2)
    load.start()
    try:
        await load.wait_for_port(r1)
        delayed_at = time.monotonic()
        pg.sql(1, "ALTER SYSTEM SET recovery_min_apply_delay = '4s'")
        pg.sql(1, "SELECT pg_reload_conf()")
        excluded = await asyncio.to_thread(wait_log, proxy, f"instance {addr(pg, 1)} up -> lagging")
        excluded += time.monotonic() - delayed_at - excluded
        marker = time.monotonic()
        await asyncio.sleep(1.5)
        assert set(load.ports_since(marker + 0.2)) == {r2}
        caught_up_at = time.monotonic()
        pg.sql(1, "ALTER SYSTEM RESET recovery_min_apply_delay")
        pg.sql(1, "SELECT pg_reload_conf()")
        back = await load.wait_for_port(r1)
        back += time.monotonic() - caught_up_at - back
    finally:
        await load.stop()
        stop.set()
        await ticker
        await writer.close()
    print(f"\nlag: excluded {excluded:.2f}s after a 4s apply delay was set (max_replica_lag 1s), "
          f"back {back:.2f}s after the delay was removed; client errors: {len(load.errors())}")
    assert not load.errors()
    assert f"instance {addr(pg, 1)} lagging -> up" in proxy.log_text()


@pytest.mark.slow
async def test_writer_follows_the_promoted_replica_and_fences_the_old_primary(
        pg_cluster_factory: Callable[..., PgCluster], proxy_factory: Callable[..., ProxyProcess]) -> None:
    pg = pg_cluster_factory()
    writer, reader = Endpoint("writer", "writer"), Endpoint("reader", "reader")
    proxy = start_proxy(proxy_factory, pg, [writer, reader])
    p0, p1, p2 = pg.ports
    conn = await asyncpg.connect(dsn(writer))
    try:
        assert await conn.fetchval(PORT_SQL) == p0
        pg.kill_instance(0)
        wait_log(proxy, f"writer {addr(pg, 0)} -> none")
        promoted_at = time.monotonic()
        # A transaction started while there is no writer waits for one instead of failing.
        waiting = asyncio.get_running_loop().create_task(conn.fetchval(PORT_SQL))
        await asyncio.to_thread(pg.promote, 1)
        pg.follow(2, 1)
        assert await asyncio.wait_for(waiting, 15) == p1
        followed = time.monotonic() - promoted_at
        assert await conn.fetchval(PORT_SQL) == p1     # same client connection, no reconnect
        await conn.execute("CREATE TABLE IF NOT EXISTS after_failover (x int)")
        # The old primary comes back, still a primary on the old timeline: split-brain, fenced.
        await asyncio.to_thread(pg.start_instance, 0)
        wait_log(proxy, f"instance {addr(pg, 0)} down -> fenced")
        assert {await conn.fetchval(PORT_SQL) for _ in range(20)} == {p1}
        assert set(await ports_of(reader, 100)) <= {p2, p1}
    finally:
        await conn.close()
    print(f"\nwriter followed the promotion in {followed:.2f}s (waiting transaction served)")
    assert f"writer none -> {addr(pg, 1)}" in proxy.log_text()
