"""Two dbproxy processes in promote mode on one real primary + replica (PostgreSQL, and MariaDB): each
holds a promote lease on the primary (replicated to the replica), each logs that the other exists, and
when the primary is killed both refuse to promote (logged, counted): the replica stays a replica. One
proxy alone on such a cluster promotes (tests/test_failover.py and tests/test_mysql_e2e_topology.py,
whose proxies hold a lease too)."""

from __future__ import annotations

import socket
from collections.abc import Callable

import pytest
from conftest import ProxyProcess
from e2e_helpers import wait_until
from mysql_e2e_helpers import mysql_proxy_config
from ops_helpers import OpsPorts, scrape
from test_failover import start_proxy, wait_log

from deploy.mysqlcluster import MysqlCluster, MysqlQueryError
from deploy.pgcluster import PgCluster, PgClusterError, free_ports

pytestmark = pytest.mark.slow

REFUSED = 'dbproxy_failover_promotions_refused_total{cluster="main"}'


def lease_holders(pg: PgCluster, i: int) -> list[str]:
    try:
        return pg.sql(i, "SELECT holder FROM dbproxy_promote_leases ORDER BY holder").split()
    except PgClusterError:      # not made yet
        return []


def test_two_promote_mode_proxies_on_one_cluster_both_refuse_to_promote(
        pg_cluster_factory: Callable[..., PgCluster], proxy_factory: Callable[..., ProxyProcess]) -> None:
    pg = pg_cluster_factory(2)
    pa, pb = OpsPorts.of(free_ports(6)), OpsPorts.of(free_ports(6))
    a = start_proxy(proxy_factory, pg, pa, "promote")
    b = start_proxy(proxy_factory, pg, pb, "promote")
    for proxy in (a, b):
        wait_log(proxy, "another dbproxy in promote mode watches this cluster")
    wait_until(lambda: len(lease_holders(pg, 1)) == 2, timeout=10, what="both leases on the replica")
    host = socket.gethostname()
    assert lease_holders(pg, 1) == sorted(f"{host}/main/127.0.0.1:{p.writer}" for p in (pa, pb))
    pg.kill_instance(0)
    for proxy in (a, b):
        line = wait_log(proxy, "failover: refusing to promote", timeout=15)
        assert f"refusing to promote {pg.instance_addrs()[1]}" in line and "follow or patroni" in line
    for ports in (pa, pb):
        assert scrape(ports.http)[REFUSED] == 1
    assert pg.in_recovery(1)                       # nobody promoted it
    for proxy in (a, b):
        assert "failover: promoting" not in proxy.log_text()


def mysql_lease_holders(cluster: MysqlCluster, i: int) -> list[str]:
    try:
        return sorted(str(row[0]) for row in cluster.query(i, "SELECT holder FROM dbproxy.promote_leases"))
    except MysqlQueryError:     # not made yet
        return []


def test_two_promote_mode_proxies_on_one_mariadb_cluster_both_refuse_to_promote(
        mysql_cluster_factory: Callable[..., MysqlCluster], proxy_factory: Callable[..., ProxyProcess]) -> None:
    cluster = mysql_cluster_factory(2)
    proxies, ports = [], []
    for _ in range(2):
        writer, admin, http = free_ports(3)
        ports.append((writer, http))
        proxies.append(proxy_factory(mysql_proxy_config(
            cluster, writer, admin_port=admin, http_port=http, health={"failure_threshold": 2},
            failover={"mode": "promote", "promote_after": "1s"})))
    for proxy in proxies:
        wait_log(proxy, "another dbproxy in promote mode watches this cluster")
    wait_until(lambda: len(mysql_lease_holders(cluster, 1)) == 2, timeout=10, what="both leases on the replica")
    host = socket.gethostname()
    assert mysql_lease_holders(cluster, 1) == sorted(f"{host}/my/127.0.0.1:{writer}" for writer, _ in ports)
    cluster.kill_instance(0)
    for proxy in proxies:
        line = wait_log(proxy, "failover: refusing to promote", timeout=15)
        assert f"refusing to promote {cluster.addresses[1]}" in line
    for _, http in ports:
        assert scrape(http)['dbproxy_failover_promotions_refused_total{cluster="my"}'] == 1
    assert cluster.query(1, "SELECT @@read_only")[0][0] == "1"     # nobody promoted it
    for proxy in proxies:
        assert "failover: promoting" not in proxy.log_text()
