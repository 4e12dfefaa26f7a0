"""Failover with LISTEN in transaction pooling: kill -9 of the primary (promote mode); the proxy's listening
connection follows the writer to the promoted replica and notifications sent there reach the clients that
listened before the failover, on the same client connections (disposable cluster: slow)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

import asyncpg
import pytest
from conftest import ProxyProcess
from e2e_helpers import wait_until
from ops_helpers import OpsPorts, admin
from test_failover import dsn, promoted_instance, start_proxy, wait_log

from deploy.pgcluster import PgCluster, free_ports

pytestmark = pytest.mark.slow


async def test_listeners_keep_getting_notifications_after_a_failover(
        pg_cluster_factory: Callable[..., PgCluster], proxy_factory: Callable[..., ProxyProcess]) -> None:
    pg = pg_cluster_factory(2)
    ports = OpsPorts.of(free_ports(6))
    proxy = start_proxy(proxy_factory, pg, ports, "promote")
    queue: asyncio.Queue[tuple[int, str]] = asyncio.Queue()
    listeners = [await asyncpg.connect(dsn(ports.writer)) for _ in range(20)]
    notifier = await asyncpg.connect(dsn(ports.writer))
    try:
        for i, conn in enumerate(listeners):
            await conn.add_listener("failover_ch", lambda _c, _pid, _ch, payload, i=i: queue.put_nowait((i, payload)))
        await notifier.execute("NOTIFY failover_ch, 'before'")
        assert sorted([await asyncio.wait_for(queue.get(), 5) for _ in range(20)]) == [(i, "before") for i in range(20)]

        await asyncio.to_thread(pg.kill_instance, 0)
        killed = time.monotonic()
        new = pg.instance_addrs()[promoted_instance(proxy, pg)]
        await asyncio.to_thread(wait_log, proxy, f"listening connection for app/app up on {new}", 20.0)
        followed = time.monotonic() - killed
        await notifier.execute("NOTIFY failover_ch, 'after'")   # an idle client: waits for the new writer
        got = sorted([await asyncio.wait_for(queue.get(), 10) for _ in range(20)])
        print(f"\nthe listening connection was up on the new writer {followed * 1000:.0f} ms after the kill")
        assert got == [(i, "after") for i in range(20)]
        assert queue.empty()
        (row,) = admin(ports.admin, "SHOW LISTENERS")
        assert row["instance"] == new and row["state"] == "up" and int(row["connects"]) >= 2
        assert not [c for c in admin(ports.admin, "SHOW CLIENTS") if c["pinned"]]
        wait_until(lambda: all(not c.is_closed() for c in listeners), what="listeners still connected")
    finally:
        for conn in (*listeners, notifier):
            await conn.close()
