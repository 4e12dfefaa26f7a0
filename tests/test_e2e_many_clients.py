"""End to end: 1,000 concurrent client connections multiplexed onto at most 20 server connections."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator

import asyncpg
import pytest
from e2e_helpers import RunningProxy, count_proxy_backends, module_proxy

from deploy.pgcluster import PgCluster

CLIENTS = 1000
POOL_SIZE = 20


@pytest.fixture(scope="module")
def proxy(pg_cluster: PgCluster, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningProxy]:
    with module_proxy(pg_cluster, tmp_path_factory.mktemp("many"), pool_size=POOL_SIZE,
                      client_auth="md5", log_level="warning") as proxy:
        yield proxy
        proxy.assert_alive_and_clean()


async def test_1000_clients_on_20_server_connections(proxy: RunningProxy, pg_cluster: PgCluster) -> None:
    began = time.monotonic()
    direct = await asyncpg.connect(f"postgresql://postgres@127.0.0.1:{pg_cluster.ports[0]}/postgres")
    seen: list[int] = []
    stop = asyncio.Event()

    async def sample() -> None:
        while not stop.is_set():
            seen.append(await count_proxy_backends(direct, proxy.process.pid, pg_cluster.ports[0]))
            await asyncio.sleep(0.05)

    sampler = asyncio.get_running_loop().create_task(sample())
    connecting = asyncio.Semaphore(100)   # bound the SYN burst, not the number of open clients

    async def connect() -> asyncpg.Connection:
        async with connecting:
            return await asyncpg.connect(proxy.dsn(), timeout=30, statement_cache_size=0)

    conns: list[asyncpg.Connection] = []
    try:
        results = await asyncio.gather(*(connect() for _ in range(CLIENTS)), return_exceptions=True)
        conns = [c for c in results if isinstance(c, asyncpg.Connection)]
        failures = [r for r in results if not isinstance(r, asyncpg.Connection)]
        assert not failures, failures[:3]
        assert len(conns) == CLIENTS
        # Every client is connected at the same time now; each one runs a query.
        rows = await asyncio.gather(*(
            c.fetchrow("SELECT $1::int * 2 AS v, pg_backend_pid() AS pid, pg_sleep(0.005)", i)
            for i, c in enumerate(conns)))
        assert [row["v"] for row in rows] == [i * 2 for i in range(CLIENTS)]
        pids = {row["pid"] for row in rows}
        assert 1 < len(pids) <= POOL_SIZE, f"{len(pids)} distinct server backends"
        # A second round on the same clients, in transactions.
        async def in_transaction(c: asyncpg.Connection, i: int) -> int:
            async with c.transaction():
                return await c.fetchval("SELECT $1::int + 1", i)
        assert await asyncio.gather(*(in_transaction(c, i) for i, c in enumerate(conns))) == [
            i + 1 for i in range(CLIENTS)]
    finally:
        stop.set()
        await sampler
        await asyncio.gather(*(c.close() for c in conns), return_exceptions=True)
        await direct.close()
    assert seen and max(seen) <= POOL_SIZE, f"proxy server connections peaked at {max(seen)}"
    assert time.monotonic() - began < 60


async def test_clients_that_leave_while_queued_for_a_server_leak_nothing(proxy: RunningProxy) -> None:
    """All 20 server connections held in transactions; 40 more clients queue for one (parked in the
    pool's queue); half of them disconnect while queued; the rest are served once the holders commit."""
    holders = [await asyncpg.connect(proxy.dsn(), statement_cache_size=0) for _ in range(POOL_SIZE)]
    queued = [await asyncpg.connect(proxy.dsn(), statement_cache_size=0) for _ in range(40)]
    try:
        for c in holders:
            await c.execute("BEGIN; SELECT 1")
        waits = [asyncio.get_running_loop().create_task(c.fetchval("SELECT $1::int", i))
                 for i, c in enumerate(queued)]
        await asyncio.sleep(0.3)
        assert not any(w.done() for w in waits), "a queued client got a server while all were held"
        for c in queued[::2]:
            c.terminate()                     # gone while queued
        for c in holders:
            await c.execute("COMMIT")
        served = await asyncio.wait_for(asyncio.gather(*waits[1::2]), 10)
        assert served == list(range(1, 40, 2))
        # Every server connection came back: all 20 can be held again at once.
        again = [await asyncpg.connect(proxy.dsn(), statement_cache_size=0) for _ in range(POOL_SIZE)]
        try:
            for c in again:
                await asyncio.wait_for(c.execute("BEGIN; SELECT 1"), 10)
        finally:
            await asyncio.gather(*(c.close() for c in again), return_exceptions=True)
    finally:
        await asyncio.gather(*(c.close() for c in holders + queued[1::2]), return_exceptions=True)
