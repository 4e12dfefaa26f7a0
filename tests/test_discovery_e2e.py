"""Replica discovery against real clusters (disposable: an instance is stopped and started).

The proxy is configured with the primary and one replica and `discover = true`. A third replica
started while the proxy runs is reported by the primary (PostgreSQL: pg_stat_replication, its
application_name set to its address; MariaDB: SHOW SLAVE HOSTS with report_host, the replica
starting to replicate), added without a reload, and serves reads on the reader endpoint; it shows
on /status and SHOW TOPOLOGY as discovered. Once the primary no longer reports it (PostgreSQL: the
replica stopped; MariaDB: STOP SLAVE), it is dropped after the grace period.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Callable
from contextlib import closing
from typing import Any

import psycopg
import pymysql
import pytest
from conftest import ProxyProcess
from e2e_helpers import wait_until
from ops_helpers import admin, http_get

from deploy.mysqlcluster import MONITOR_PASSWORD, MONITOR_USER, MysqlCluster
from deploy.pgcluster import APP_DB, HOST, PgCluster, free_ports

pytestmark = pytest.mark.slow

ADMIN_PASSWORD = "admin-secret"
GRACE = "2s"


def discovery_config(engine: str, instances: list[str], ports: list[int], cluster_keys: str, users: str) -> str:
    admin_port, http_port, reader = ports
    listed = ", ".join(f'"{a}"' for a in instances)
    return f"""
[server]
admin_listen = "{HOST}:{admin_port}"
http_listen = "{HOST}:{http_port}"
shutdown_timeout = "2s"

[[users]]
{users}
[[users]]
name = "admin"
password = "{ADMIN_PASSWORD}"
admin = true

[clusters.main]
engine = "{engine}"
instances = [{listed}]
discover = true
{cluster_keys}
interval = "200ms"
timeout = "1s"
failure_threshold = 2

[clusters.main.discovery]
interval = "200ms"
grace = "{GRACE}"
zone = "zone-c"

[[clusters.main.endpoints]]
name = "reader"
listen = "{HOST}:{reader}"
role = "reader"
"""


def status(http_port: int) -> dict[str, Any]:
    (cluster,) = http_get(http_port, "/status").json()["clusters"]
    return cluster  # type: ignore[no-any-return]


def wait_log(proxy: ProxyProcess, text: str, timeout: float = 20.0) -> None:
    wait_until(lambda: text in proxy.log_text(), timeout=timeout, interval=0.05, what=f"log line {text!r}")


def check_discovered_then_dropped(proxy: ProxyProcess, ports: list[int], writer: str, new: str, new_port: int,
                                  reads: Callable[[], Counter[int]], stop: Callable[[], None]) -> None:
    wait_log(proxy, f"discovery: replica {new} reported by the writer {writer}: added")
    # (MariaDB may still list a stopped replica for a while: it is then added, seen down, and up once started)
    wait_until(lambda: re.search(rf"instance {re.escape(new)} (unknown|down) -> up", proxy.log_text()), timeout=20,
               what="the discovered replica up")
    wait_until(lambda: new_port in reads(), timeout=10, what="a read served by the discovered replica")
    shown = status(ports[1])
    assert shown["discovery"]["discovered"] == [new]
    row = next(r for r in shown["placement"] if r["instance"] == new)
    assert (row["discovered"], row["zone"], row["promotion_tier"]) == (True, "zone-c", 15)
    assert any(e["text"].startswith(f"discovery: replica {new} reported") for e in shown["role_changes"])
    topo = {r["instance"]: r for r in admin(ports[0], "SHOW TOPOLOGY", user="admin", password=ADMIN_PASSWORD)}
    assert topo[new]["discovered"] == "t" and topo[new]["serves_reads"] == "t"

    stop()
    wait_log(proxy, f"discovery: replica {new} not reported by the writer for more than 2s: dropped", timeout=20)
    assert new not in {r["instance"] for r in status(ports[1])["instances"]}
    assert new_port not in reads()
    assert "Traceback" not in proxy.log_text()


def test_pg_replica_started_later_is_discovered_serves_reads_and_is_dropped(
        pg_cluster_factory: Callable[..., PgCluster], proxy_factory: Callable[..., ProxyProcess]) -> None:
    pg = pg_cluster_factory(n_instances=3)
    a = pg.instance_addrs()
    pg.stop_instance(2)
    ports = free_ports(3)
    proxy = proxy_factory(discovery_config("postgres", a[:2], ports, 'client_auth = "trust"\n'
                                           '[clusters.main.health]\nuser = "postgres"', 'name = "app"\nserver_user = "app"'))
    wait_log(proxy, f"writer none -> {a[0]}")

    pg.start_instance(2)      # streams as "node2": no address in its name, no discovery.port: not added
    conninfo = f"host={HOST} port={pg.ports[0]} user=postgres application_name={a[2]}"
    pg.sql(2, f"ALTER SYSTEM SET primary_conninfo = '{conninfo}'")
    pg.sql(2, "SELECT pg_reload_conf()")

    def reads() -> Counter[int]:
        with psycopg.connect(host=HOST, port=ports[2], user="app", dbname=APP_DB, autocommit=True,
                             connect_timeout=5) as conn:
            return Counter(int(conn.execute("SELECT inet_server_port()").fetchone()[0])  # type: ignore[index]
                           for _ in range(40))

    check_discovered_then_dropped(proxy, ports, a[0], a[2], pg.ports[2], reads, lambda: pg.stop_instance(2))
    assert not re.search(r"discovery: replica \S+:5432 ", proxy.log_text())   # "node2" was never taken as an address


def test_mysql_replica_started_later_is_discovered_serves_reads_and_is_dropped(
        mysql_cluster_factory: Callable[..., MysqlCluster], proxy_factory: Callable[..., ProxyProcess]) -> None:
    my = mysql_cluster_factory(3, settings={"report_host": HOST})
    a = list(my.addresses)
    # Replica 2 stops replicating (its registration with the primary ends at once; a killed or
    # stopped server stays listed until the primary notices, ~10 s here).
    my.query(2, "STOP SLAVE", admin=True)
    wait_until(lambda: len(my.query(0, "SHOW SLAVE HOSTS", admin=True)) == 1, timeout=20,
               what="the primary listing one replica")
    ports = free_ports(3)
    keys = (f'client_auth = "mysql_native_password"\n[clusters.main.health]\nuser = "{MONITOR_USER}"\n'
            f'password = "{MONITOR_PASSWORD}"')
    proxy = proxy_factory(discovery_config("mysql", a[:2], ports, keys, 'name = "app"\npassword = "app-pass"'))
    wait_log(proxy, f"writer none -> {a[0]}")
    my.query(2, "START SLAVE", admin=True)

    def reads() -> Counter[int]:
        with closing(pymysql.connect(host=HOST, port=ports[2], user="app", password="app-pass", database="app",
                                     autocommit=True, connect_timeout=5, read_timeout=10)) as conn:
            found: Counter[int] = Counter()
            with conn.cursor() as cur:
                for _ in range(40):
                    cur.execute("SELECT @@port")
                    found[int(cur.fetchone()[0])] += 1  # type: ignore[index]
            return found

    check_discovered_then_dropped(proxy, ports, a[0], a[2], my.ports[2], reads,
                                  lambda: my.query(2, "STOP SLAVE", admin=True))
