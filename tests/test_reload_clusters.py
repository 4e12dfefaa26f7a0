"""Reload removing a whole cluster: its listeners close, its connected clients keep working, and the
cluster (pools, probes) goes away once its last client has left."""

from __future__ import annotations

import signal
from collections.abc import Callable

import asyncpg
from conftest import ProxyProcess
from e2e_helpers import wait_until

from deploy.pgcluster import HOST, PgCluster, free_ports


def config(pg: PgCluster, ports: dict[str, int], with_other: bool) -> str:
    def cluster(name: str) -> str:
        return f"""
[clusters.{name}]
engine = "postgres"
instances = ["{HOST}:{pg.ports[0]}"]
client_auth = "trust"
[clusters.{name}.health]
interval = "100ms"
[[clusters.{name}.endpoints]]
name = "writer"
listen = "{HOST}:{ports[name]}"
role = "writer"
"""
    return ('[server]\nshutdown_timeout = "2s"\n\n[[users]]\nname = "app"\nserver_user = "app"\n'
            + cluster("main") + (cluster("other") if with_other else ""))


async def test_removed_cluster_serves_its_clients_then_goes_away(
        pg_cluster: PgCluster, proxy_factory: Callable[..., ProxyProcess]) -> None:
    ports = dict(zip(("main", "other"), free_ports(2), strict=True))
    proxy = proxy_factory(config(pg_cluster, ports, with_other=True))
    client = await asyncpg.connect(host=HOST, port=ports["other"], user="app", database="app")
    try:
        assert await client.fetchval("SELECT 1") == 1
        proxy.config_path.write_text(config(pg_cluster, ports, with_other=False))
        proxy.send_signal(signal.SIGHUP)
        wait_until(lambda: "configuration reloaded" in proxy.log_text(), what="reload")
        for _ in range(5):   # the connected client keeps working after its cluster left the config
            assert await client.fetchval("SELECT 2") == 2
        try:
            await asyncpg.connect(host=HOST, port=ports["other"], user="app", database="app", timeout=2)
            raise AssertionError("the removed cluster's endpoint still accepts connections")
        except (TimeoutError, OSError):
            pass
        assert "cluster other removed by reload" not in proxy.log_text()
    finally:
        await client.close()
    wait_until(lambda: "cluster other removed by reload" in proxy.log_text(), timeout=10,
                           what="the drained cluster to be dropped")
    main = await asyncpg.connect(host=HOST, port=ports["main"], user="app", database="app")
    try:
        assert await main.fetchval("SELECT 3") == 3
    finally:
        await main.close()
    assert "Traceback" not in proxy.log_text()
