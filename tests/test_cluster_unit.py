"""Cluster without servers: new connections use the last reload's credentials; waiting borrowers wake on topology."""

from __future__ import annotations

import asyncio
import time
from dataclasses import replace
from typing import Any

import pytest

import proxy.core.cluster as cluster_module
from proxy.config import User, parse_config
from proxy.core.cluster import Cluster
from proxy.topology.model import ProbeResult

CONFIG = """
[[users]]
name = "app"
password = "client-secret"
server_user = "app_rw"
server_password = "old-server-secret"

[clusters.main]
engine = "postgres"
instances = ["127.0.0.1:1"]
client_auth = "md5"

[[clusters.main.endpoints]]
name = "writer"
listen = "127.0.0.1:2"
role = "writer"
"""


async def test_new_server_connections_use_the_reloaded_server_password(monkeypatch: pytest.MonkeyPatch) -> None:
    config = parse_config(CONFIG)
    old = config.users[0]
    current: dict[str, User] = {"app": old}
    opened: list[tuple[str, str | None]] = []

    async def fake_open(instance: Any, user: str, password: str | None, *args: Any) -> Any:
        opened.append((user, password))
        raise cluster_module.ServerConnectFailed("not a real server")

    cluster = Cluster(config.clusters[0], current.get)
    monkeypatch.setattr(cluster.engine, "connect", fake_open)
    pool = cluster.pool(config.clusters[0].instances[0], old, "app")
    with pytest.raises(cluster_module.ServerConnectFailed):
        await pool.borrow(1.0)
    current["app"] = replace(old, server_password="new-server-secret")   # what a reload does
    assert cluster.pool(config.clusters[0].instances[0], old, "app") is pool  # the same pool
    with pytest.raises(cluster_module.ServerConnectFailed):
        await pool.borrow(1.0)
    assert opened == [("app_rw", "old-server-secret"), ("app_rw", "new-server-secret")]


async def test_a_borrower_waiting_for_a_writer_wakes_when_one_is_published(monkeypatch: pytest.MonkeyPatch) -> None:
    """No periodic re-check needed: the new snapshot itself wakes the waiting borrower."""
    monkeypatch.setattr(cluster_module, "RETARGET_INTERVAL", 3600.0)
    config = parse_config(CONFIG)
    cluster = Cluster(config.clusters[0], lambda name: None)
    assert cluster.monitor is not None and cluster.monitor.snapshot.writer is None
    endpoint = config.clusters[0].endpoints[0]
    waiting = asyncio.create_task(
        cluster._wait_for_target(endpoint, "primary", time.monotonic() + 60))
    await asyncio.sleep(0.01)
    assert not waiting.done()
    address = config.clusters[0].instances[0]
    cluster.monitor.record(address, ProbeResult(ok=True, in_recovery=False, position=1000, timeline=1))
    assert cluster.monitor.snapshot.writer == address
    assert await asyncio.wait_for(waiting, 5) == address
    cluster.close()


async def test_configured_pools_follow_the_topology() -> None:
    """SHOW POOLS' pools before any client: non-admin users x their default database, on the
    instances endpoints may use; kept while empty, dropped once no endpoint uses the instance."""
    text = CONFIG.replace('instances = ["127.0.0.1:1"]', 'instances = ["127.0.0.1:1", "127.0.0.1:3"]')
    text += '\n[[users]]\nname = "ops"\npassword = "x"\nadmin = true\n'
    config = parse_config(text)
    users = {u.name: u for u in config.users}
    cluster = Cluster(config.clusters[0], users.get, lambda: users.values())
    assert cluster.monitor is not None
    first, second = config.clusters[0].instances
    cluster.maintain()
    assert cluster.pools == {}   # no writer known yet: the writer endpoint uses no instance
    cluster.monitor.record(first, ProbeResult(ok=True, in_recovery=False, position=1000, timeline=1))
    cluster.monitor.record(second, ProbeResult(ok=True, in_recovery=True, position=1000, timeline=1))
    cluster.maintain()
    assert set(cluster.pools) == {(first, "app", "app", None)}   # writer only; not the admin user
    assert cluster.pools[(first, "app", "app", None)].size == 0
    cluster.maintain()
    assert set(cluster.pools) == {(first, "app", "app", None)}
    cluster.monitor.record(first, ProbeResult(ok=True, in_recovery=True, position=1000, timeline=1))
    cluster.monitor.record(second, ProbeResult(ok=True, in_recovery=False, position=1000, timeline=2))
    cluster.maintain()
    assert set(cluster.pools) == {(second, "app", "app", None)}
    cluster.close()


@pytest.mark.parametrize("engine", ["postgres", "mysql"])
def test_every_engine_takes_the_arguments_the_cluster_connects_with(engine: str) -> None:
    """Cluster.pool's connect() passes the cluster's server_tls to Engine.connect (a missing parameter
    would break every pool of that engine at run time)."""
    import inspect

    from proxy.config import Address, PoolSettings, TlsSettings
    from proxy.engines import get_engine

    connect = get_engine(engine).connect
    inspect.signature(connect).bind(Address("127.0.0.1", 1), "user", None, "db", PoolSettings(), None, TlsSettings())
