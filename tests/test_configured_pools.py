"""SHOW POOLS lists the pools of configured users before any client has connected (as PgBouncer's
configured pools): every non-admin user with its default database, on every instance an endpoint may
use, after the first probe; min_idle fills them; a reload adds the pools of a new user."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

import asyncpg
from conftest import ProxyProcess
from e2e_helpers import APP, MD5, wait_until
from ops_helpers import ADMIN_USER, OpsPorts, admin, admin_psql, ops_config

from deploy.pgcluster import HOST, PgCluster, free_ports


def _pools(port: int) -> dict[tuple[str, str, str], dict[str, str]]:
    return {(r["instance"], r["user"], r["database"]): r for r in admin(port, "SHOW POOLS")}


def _clients(port: int) -> list[dict[str, str]]:
    return admin(port, "SHOW CLIENTS")


def test_show_pools_lists_configured_pools_before_any_client(
        pg_cluster: PgCluster, proxy_factory: Callable[..., ProxyProcess]) -> None:
    ports = OpsPorts.of(free_ports(6))
    process = proxy_factory(ops_config(pg_cluster, ports))
    instances = pg_cluster.instance_addrs()   # writer, reader, split and custom endpoints: all of them
    pools = _pools(ports.admin)
    assert _clients(ports.admin) == []
    # app and md5user (databases named like them, as a client naming none gets), not the admin user.
    assert set(pools) == {(i, u, u) for i in instances for u in (APP.name, MD5.name)}, sorted(pools)
    for row in pools.values():
        assert (row["cluster"], row["mode"], row["max_size"]) == ("main", "transaction", "4")
        assert (row["open"], row["borrowed"], row["borrows"], row["connect_failures"]) == ("0", "0", "0", "0")
    time.sleep(1.5)   # a maintenance tick does not drop them while empty
    assert set(_pools(ports.admin)) == set(pools)

    # A client's own database gets its pool on demand; the configured pools stay as they are.
    async def one_client() -> None:
        conn = await asyncpg.connect(host=HOST, port=ports.writer, user=MD5.name, password=MD5.password,
                                     database="app")
        try:
            assert await conn.fetchval("SELECT 1") == 1
        finally:
            await conn.close()

    asyncio.run(one_client())
    after = _pools(ports.admin)
    assert set(after) == set(pools) | {(instances[0], MD5.name, "app")}
    assert int(after[(instances[0], MD5.name, "app")]["borrows"]) >= 1

    # A reload that adds a user adds its pools (a reload that drops one lets them go once empty).
    path = process.config_path
    text = path.read_text()
    path.write_text(text.replace(f'[[users]]\nname = "{ADMIN_USER}"',
                                 f'[[users]]\nname = "late"\npassword = "late-secret"\n\n'
                                 f'[[users]]\nname = "{ADMIN_USER}"'))
    res = admin_psql(ports.admin, "RELOAD", csv_output=False)
    assert res.returncode == 0, res.stderr
    wait_until(lambda: {(i, "late", "late") for i in instances} <= set(_pools(ports.admin)), timeout=5,
               what="the new user's pools")
    path.write_text(text)
    assert admin_psql(ports.admin, "RELOAD", csv_output=False).returncode == 0
    wait_until(lambda: not any(user == "late" for _, user, _ in _pools(ports.admin)), timeout=5,
               what="the dropped user's pools gone")
    assert "Traceback" not in process.log_text()


def test_min_idle_opens_configured_pools_before_any_client(
        pg_cluster: PgCluster, proxy_factory: Callable[..., ProxyProcess]) -> None:
    ports = OpsPorts.of(free_ports(6))
    config = ops_config(pg_cluster, ports).replace("max_server_connections = 4",
                                                   "max_server_connections = 4\nmin_idle = 2")
    process = proxy_factory(config)
    instances = pg_cluster.instance_addrs()

    def warm() -> bool:
        pools = _pools(ports.admin)
        return all(pools[(i, APP.name, APP.name)]["idle"] == "2" for i in instances)

    wait_until(warm, timeout=10, what="min_idle connections to database app on every instance")
    assert _clients(ports.admin) == []
    servers = admin(ports.admin, "SHOW SERVERS")
    assert sorted(s["instance"] for s in servers if s["user"] == APP.name) == sorted(instances * 2)
    # md5user's default database does not exist: its pools stay listed, empty, and are retried with
    # a backoff (1 s, 2 s, 4 s ...), not on every maintenance tick.
    time.sleep(3.5)
    pools = _pools(ports.admin)
    for instance in instances:
        row = pools[(instance, MD5.name, MD5.name)]
        assert row["open"] == "0" and 1 <= int(row["connect_failures"]) <= 8, row
    tries = process.log_text().count(f"main/{instances[0]}/{MD5.name}/{MD5.name}: could not open min_idle")
    assert 1 <= tries <= 4, tries
