"""Traffic mirroring on MariaDB (SPEC §13): cluster "my" mirrors every transaction to a one-instance shadow started
here; PyMySQL clients' writes leave the same rows on the shadow, and with the shadow stopped the primary still
answers and the dropped work is counted."""

from __future__ import annotations

import tempfile
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from e2e_helpers import RunningProxy, running_proxy, wait_until
from mysql_e2e_helpers import connect, direct, mysql_cluster_toml, mysql_proxy_config, rows, scalar
from ops_helpers import scrape

from deploy.mysqlcluster import MysqlCluster
from deploy.pgcluster import free_ports


@pytest.fixture(scope="module")
def shadow() -> Iterator[MysqlCluster]:
    cluster = MysqlCluster(tempfile.mkdtemp(prefix="dbproxy-my-shadow-"), free_ports(1))
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.destroy()


@pytest.fixture(scope="module")
def setup(mysql_cluster: MysqlCluster, shadow: MysqlCluster,
          tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[RunningProxy, int, str]]:
    port, admin_port, http_port, shadow_port = free_ports(4)
    shadow_toml = mysql_cluster_toml("shadow", shadow, {"max_server_connections": 4},
                                     [("writer", shadow_port, "writer", {})], health={"failure_threshold": 2})
    text = mysql_proxy_config(mysql_cluster, port, admin_port=admin_port, http_port=http_port,
                              endpoints_extra=shadow_toml)
    text = text.replace('[clusters.my]\nengine = "mysql"\n',
                        '[clusters.my]\nengine = "mysql"\nmirror = { cluster = "shadow", reads_only = false }\n', 1)
    table = f"mirror_{uuid.uuid4().hex[:8]}"
    for cluster in (mysql_cluster, shadow):
        with direct(cluster, 0) as conn:
            rows(conn, f"CREATE TABLE {table} (id INT PRIMARY KEY, v INT)")
    with running_proxy(text, tmp_path_factory.mktemp("mysql-mirror"), port) as running:
        yield running, http_port, table
    with direct(mysql_cluster, 0) as conn:
        rows(conn, f"DROP TABLE IF EXISTS {table}")


def count(cluster: MysqlCluster, table: str) -> int:
    with direct(cluster, 0) as conn:
        return int(scalar(conn, f"SELECT count(*) FROM {table}"))


def test_mirrored_writes_and_a_dead_shadow(setup: tuple[RunningProxy, int, str], mysql_cluster: MysqlCluster,
                                           shadow: MysqlCluster) -> None:
    proxy, http_port, table = setup
    with connect(proxy.port, ssl_disabled=True) as conn:
        for i in range(100):
            rows(conn, f"INSERT INTO {table} VALUES ({i}, {i})")
        rows(conn, "BEGIN")
        rows(conn, f"UPDATE {table} SET v = v + 1000 WHERE id < 10")
        rows(conn, "COMMIT")
    wait_until(lambda: count(shadow, table) == 100, what="the shadow has the rows")
    check = f"SELECT count(*), sum(v) FROM {table}"

    def sums(cluster: MysqlCluster) -> Any:
        with direct(cluster, 0) as conn:
            return rows(conn, check)

    wait_until(lambda: sums(shadow) == sums(mysql_cluster), what="the shadow has the update")
    shadow.stop()
    try:
        with connect(proxy.port, ssl_disabled=True) as conn:
            for i in range(100, 200):
                rows(conn, f"INSERT INTO {table} VALUES ({i}, {i})")
        assert count(mysql_cluster, table) == 200

        def dropped() -> float:
            samples = scrape(http_port)
            return sum(samples.get(f'dbproxy_mirror_dropped_total{{cluster="my",reason="{r}"}}', 0.0)
                       for r in ("shadow_down", "error", "timeout", "queue_full"))

        wait_until(lambda: dropped() >= 10, what="mirrored work to the dead shadow dropped and counted")
    finally:
        shadow.start()
    proxy.assert_alive_and_clean()
