"""Two dbproxy processes in promote mode on one real PostgreSQL primary + replica: each holds a promote
lease on the primary (replicated to the replica), each logs that the other exists, and when the primary
is killed both refuse to promote (logged, counted): the replica stays a replica. One proxy alone on
such a cluster promotes (tests/test_failover.py, whose proxies hold a lease too)."""

from __future__ import annotations

import socket
from collections.abc import Callable

import pytest
from conftest import ProxyProcess
from e2e_helpers import wait_until
from ops_helpers import OpsPorts, scrape
from test_failover import start_proxy, wait_log

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
