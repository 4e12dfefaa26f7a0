"""Promotion tiers and standbys in kill -9 drills against real clusters (disposable, promote mode).

PostgreSQL, four instances: node0 the primary, node1 tier 1, node2 tier 0, node3 a standby (tier 5).
- the standby never serves a read (reader endpoint) and SHOW TOPOLOGY names it as the next promotion;
- kill -9 of node0: the standby is promoted first (over the tier-0 replica);
- node2's WAL receiver is then cut, rows are written, so node1 (tier 1) holds more than node2
  (tier 0, caught up on what it received, so within max_replica_lag); kill -9 of node3: node2 is
  promoted, the tier order deciding over the position, and the log gives the order.
MariaDB, three instances: node1 tier 3, node2 tier 0: kill -9 of node0 promotes node2 (configuration
order would pick node1).
"""

from __future__ import annotations

import re
import time
from collections import Counter
from collections.abc import Callable
from contextlib import closing
from pathlib import Path

import psycopg
import pymysql
import pytest
from conftest import ProxyProcess
from e2e_helpers import wait_until
from ops_helpers import admin

from deploy.mysqlcluster import MONITOR_PASSWORD, MONITOR_USER, REPL_PASSWORD, REPL_USER, MysqlCluster
from deploy.pgcluster import APP_DB, HOST, PgCluster, free_ports

pytestmark = pytest.mark.slow

ADMIN_PASSWORD = "admin-secret"


def drill_config(engine: str, instances: str, ports: list[int], cluster_keys: str, users: str,
                 failover_extra: str = "") -> str:
    admin_port, writer, reader = ports
    return f"""
[server]
admin_listen = "{HOST}:{admin_port}"
shutdown_timeout = "2s"

[[users]]
{users}
[[users]]
name = "admin"
password = "{ADMIN_PASSWORD}"
admin = true

[clusters.main]
engine = "{engine}"
instances = [{instances}]
{cluster_keys}
interval = "200ms"
timeout = "1s"
failure_threshold = 3

[clusters.main.failover]
mode = "promote"
promote_after = "1s"
borrow_timeout = "20s"
{failover_extra}

[[clusters.main.endpoints]]
name = "writer"
listen = "{HOST}:{writer}"
role = "writer"

[[clusters.main.endpoints]]
name = "reader"
listen = "{HOST}:{reader}"
role = "reader"
"""


def wait_log(proxy: ProxyProcess, pattern: str, timeout: float = 20.0) -> re.Match[str]:
    def found() -> re.Match[str] | None:
        return re.search(pattern, proxy.log_text())
    return wait_until(found, timeout=timeout, interval=0.05, what=f"log matching {pattern!r}")  # type: ignore[no-any-return]


def promoting_lines(proxy: ProxyProcess) -> list[str]:
    return [line for line in proxy.log_text().splitlines() if "failover: promoting " in line]


def topology(port: int) -> dict[str, dict[str, str]]:
    return {r["instance"]: r for r in admin(port, "SHOW TOPOLOGY", user="admin", password=ADMIN_PASSWORD)}


def instances_view(port: int) -> dict[str, dict[str, str]]:
    return {r["instance"]: r for r in admin(port, "SHOW INSTANCES", user="admin", password=ADMIN_PASSWORD)}


# ----------------------------------------------------------------------------- PostgreSQL


def pg_reads(port: int, n: int) -> Counter[int]:
    with psycopg.connect(host=HOST, port=port, user="app", dbname=APP_DB, autocommit=True, connect_timeout=5) as c:
        return Counter(int(c.execute("SELECT inet_server_port()").fetchone()[0]) for _ in range(n))  # type: ignore[index]


def test_pg_standby_is_never_read_and_promoted_first_then_tier_beats_position(
        pg_cluster_factory: Callable[..., PgCluster], proxy_factory: Callable[..., ProxyProcess]) -> None:
    pg = pg_cluster_factory(n_instances=4)
    a = pg.instance_addrs()
    pg.sql(0, "CREATE TABLE drill (id int); GRANT ALL ON drill TO PUBLIC", db=APP_DB)
    ports = free_ports(3)
    instances = (f'"{a[0]}", {{ address = "{a[1]}", promotion_tier = 1 }}, '
                 f'{{ address = "{a[2]}", promotion_tier = 0 }}, {{ address = "{a[3]}", promotion_tier = 5, standby = true }}')
    proxy = proxy_factory(drill_config("postgres", instances, ports, 'client_auth = "trust"\n[clusters.main.health]\n'
                                       'user = "postgres"\nmax_replica_lag = "10s"', 'name = "app"\nserver_user = "app"'))
    for address in a:
        wait_log(proxy, re.escape(f"instance {address} unknown -> up"))
    wait_log(proxy, re.escape(f"writer none -> {a[0]}"))

    assert set(pg_reads(ports[2], 60)) == {pg.ports[1], pg.ports[2]}     # never the standby
    shown = topology(ports[0])
    assert (shown[a[3]]["standby"], shown[a[3]]["serves_reads"], shown[a[3]]["next_promotion"]) == ("t", "f", "t")
    assert shown[a[3]]["why"].startswith(f"promoted next: chose {a[3]} (order: standby first")
    assert [shown[x]["promotion_rank"] for x in a] == ["", "3", "2", "1"]

    pg.kill_instance(0)                       # 1: the standby first, over the tier-0 replica
    line = wait_log(proxy, r"failover: promoting (\S+) at .*").group(0)
    assert f"failover: promoting {a[3]} at" in line
    assert f"1. {a[3]} (standby, up" in line and f"2. {a[2]} (tier 0, up" in line and f"3. {a[1]} (tier 1" in line
    wait_log(proxy, re.escape(f"writer none -> {a[3]}"))
    pg.wait_streaming(primary=3, timeout=20)

    # node2 stops receiving; rows written afterwards reach node1 only: node1 is ahead, node2 caught up
    # on what it has (lag 0, "up") and of the lower tier.
    pg.sql(2, "ALTER SYSTEM SET primary_conninfo = ''")
    pg.sql(2, "SELECT pg_reload_conf()")
    wait_until(lambda: "node2" not in pg.sql(3, "SELECT application_name FROM pg_stat_replication"), timeout=10,
               what="node2's WAL receiver gone")
    with psycopg.connect(host=HOST, port=ports[1], user="app", dbname=APP_DB, autocommit=True) as conn:
        for i in range(20):
            conn.execute("INSERT INTO drill VALUES (%s)", (i,))

    def node1_ahead() -> bool:
        shown = instances_view(ports[0])
        lsn = [int(x, 16) for x in (shown[a[1]]["position"].split("/") + shown[a[2]]["position"].split("/"))]
        return (lsn[0], lsn[1]) > (lsn[2], lsn[3]) and shown[a[2]]["state"] == "up"
    wait_until(node1_ahead, timeout=10, what="node1 ahead of node2 while node2 stays up")

    pg.kill_instance(3)                       # 2: the tier-0 replica, though less advanced
    second = wait_until(lambda: (lambda lines: lines[1] if len(lines) > 1 else None)(promoting_lines(proxy)),
                        timeout=20, what="a second promotion")
    assert f"failover: promoting {a[2]} at" in second, second
    assert f"1. {a[2]} (tier 0, up" in second and f"2. {a[1]} (tier 1, up" in second, second
    wait_log(proxy, re.escape(f"writer none -> {a[2]}"))
    assert not pg.in_recovery(2)
    assert "Traceback" not in proxy.log_text()


# ----------------------------------------------------------------------------- MariaDB


def test_mysql_kill_of_the_primary_promotes_the_lowest_tier(
        mysql_cluster_factory: Callable[..., MysqlCluster], proxy_factory: Callable[..., ProxyProcess],
        tmp_path: Path) -> None:
    my = mysql_cluster_factory(3)
    a = list(my.addresses)
    ports = free_ports(3)
    instances = (f'"{a[0]}", {{ address = "{a[1]}", promotion_tier = 3 }}, '
                 f'{{ address = "{a[2]}", promotion_tier = 0, weight = 2 }}')
    health = (f'client_auth = "mysql_native_password"\n[clusters.main.health]\nuser = "{MONITOR_USER}"\n'
              f'password = "{MONITOR_PASSWORD}"')
    proxy = proxy_factory(drill_config("mysql", instances, ports, health, 'name = "app"\npassword = "app-pass"',
                                       f'replication_user = "{REPL_USER}"\nreplication_password = "{REPL_PASSWORD}"'))
    for address in a:
        wait_log(proxy, re.escape(f"instance {address} unknown -> up"))
    wait_log(proxy, re.escape(f"writer none -> {a[0]}"))
    assert topology(ports[0])[a[2]]["next_promotion"] == "t"
    with closing(pymysql.connect(host=HOST, port=ports[1], user="app", password="app-pass", database="app",
                                 autocommit=True, connect_timeout=5, read_timeout=20)) as conn:
        with conn.cursor() as cur:
            cur.execute("CREATE TABLE IF NOT EXISTS drill (id INT)")
            cur.execute("INSERT INTO drill VALUES (1)")
        killed = time.monotonic()
        my.kill_instance(0)
        line = wait_log(proxy, r"failover: promoting (\S+) at .*").group(0)
        assert f"failover: promoting {a[2]} at" in line, line
        assert f"1. {a[2]} (tier 0, up" in line and f"2. {a[1]} (tier 3, up" in line, line
        wait_log(proxy, re.escape(f"writer none -> {a[2]}"))
        with conn.cursor() as cur:     # the same client connection writes on the new primary
            cur.execute("INSERT INTO drill VALUES (2)")
            cur.execute("SELECT @@port")
            assert cur.fetchone()[0] == my.ports[2]  # type: ignore[index]
        print(f"\nMariaDB tier drill: writes back {time.monotonic() - killed:.1f}s after kill -9, {a[2]} promoted")
    assert "Traceback" not in proxy.log_text()
