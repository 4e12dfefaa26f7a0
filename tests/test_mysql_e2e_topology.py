"""MySQL clusters through the shared topology: probes, reader spread, lag exclusion, split, read_your_writes,
switchover and promote-mode failover, against a MariaDB primary + 2 GTID replicas (semi-sync) of this module.

The cluster is this module's own: the tests stop, delay, kill and promote its instances, in order.
The proxy has two clusters over the same instances: "my" (max_replica_lag 2s, promote mode; writer,
reader and split endpoints, the split one without read_your_writes so that it shows pure routing) and "ryw" (no lag limit, so delayed replicas stay in use; a split endpoint
with read_your_writes and one without, the control).
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Iterator
from typing import Any

import pymysql
import pytest
from conftest import _dispose_mysql, _new_mysql_cluster
from e2e_helpers import wait_until
from mysql_e2e_helpers import (
    MysqlProxy,
    admin_rows,
    connect,
    direct,
    mysql_cluster_toml,
    mysql_module_proxy,
    rows,
    scalar,
)
from ops_helpers import http_get, scrape

from deploy.mysqlcluster import MONITOR_PASSWORD, MONITOR_USER, REPL_PASSWORD, REPL_USER, MysqlCluster
from deploy.pgcluster import free_ports

Conn = pymysql.connections.Connection  # type: ignore[type-arg]


@pytest.fixture(scope="module")
def cluster() -> Iterator[MysqlCluster]:
    made = _new_mysql_cluster(3, semi_sync=True)
    try:
        made.start()
        yield made
    finally:
        _dispose_mysql(made)


@pytest.fixture(scope="module")
def ports() -> dict[str, int]:
    names = ("split", "ryw", "plain")
    return dict(zip(names, free_ports(len(names)), strict=True))


@pytest.fixture(scope="module")
def proxy(cluster: MysqlCluster, ports: dict[str, int], tmp_path_factory: pytest.TempPathFactory) -> Iterator[MysqlProxy]:
    with direct(cluster) as conn:
        for sql in ("CREATE TABLE IF NOT EXISTS app.topo (id INT PRIMARY KEY, v TEXT)",
                    "GRANT ALL ON app.* TO 'app'@'%'"):
            rows(conn, sql)
    cluster.wait_replicated()
    ryw = mysql_cluster_toml(
        "ryw", cluster, {"mode": "transaction", "max_server_connections": 5},
        [("split-ryw", ports["ryw"], "split", {"read_your_writes": True}),
         ("split-plain", ports["plain"], "split", {"read_your_writes": False})],
        health={"user": MONITOR_USER, "password": MONITOR_PASSWORD, "max_replica_lag": "0s"})
    with mysql_module_proxy(cluster, tmp_path_factory.mktemp("my-topo"), reader=True, pool_size=5,
                            health={"max_replica_lag": "2s", "failure_threshold": 3, "user": MONITOR_USER,
                                    "password": MONITOR_PASSWORD},
                            failover={"mode": "promote", "promote_after": "1s", "replication_user": REPL_USER,
                                      "replication_password": REPL_PASSWORD},
                            borrow_timeout="15s",
                            more_endpoints=[("split", ports["split"], "split", {"read_your_writes": False})],
                            endpoints_extra=ryw) as running:
        yield running
        running.assert_alive_and_clean()


def instances(proxy: MysqlProxy, name: str = "my") -> dict[int, dict[str, Any]]:
    """SHOW INSTANCES of one cluster, by port."""
    return {int(r["instance"].rsplit(":", 1)[1]): r for r in admin_rows(proxy, "SHOW INSTANCES") if r["cluster"] == name}


def port_of(conn: Conn) -> int:
    return int(scalar(conn, "SELECT @@port"))


def test_probes_show_the_primary_and_both_replicas(proxy: MysqlProxy, cluster: MysqlCluster) -> None:
    shown = wait_until(lambda: (lambda s: s if all(r["state"] == "up" for r in s.values()) else None)(instances(proxy)),
                       timeout=10, what="all instances up")
    assert shown[cluster.ports[0]]["role"] == "primary"
    assert [shown[p]["role"] for p in cluster.ports[1:]] == ["replica", "replica"]
    assert all(shown[p]["position"] is not None for p in cluster.ports)
    with connect(proxy) as conn:
        assert port_of(conn) == cluster.ports[0]   # the writer endpoint


def test_status_and_metrics_show_the_mysql_cluster_as_a_postgresql_one(proxy: MysqlProxy,
                                                                       cluster: MysqlCluster) -> None:
    """/status (what the status page renders) and the instance gauges, as tests/test_http.py checks them."""
    assert proxy.http_port is not None
    status = http_get(proxy.http_port, "/status").json()
    mine = next(c for c in status["clusters"] if c["name"] == "my")
    primary, *replicas = cluster.addresses
    assert mine["engine"] == "mysql" and mine["topology"] is True and mine["writer"] == primary
    roles = {i["instance"]: (i["role"], i["state"], i["writer"]) for i in mine["instances"]}
    assert roles == {primary: ("primary", "up", True), **{r: ("replica", "up", False) for r in replicas}}
    assert {e["endpoint"] for e in mine["endpoints"]} == {"writer", "reader", "split"}
    metrics = scrape(proxy.http_port)
    for address, is_primary in ((primary, 1), *((r, 0) for r in replicas)):
        key = f'{{cluster="my",instance="{address}"}}'
        assert metrics[f"dbproxy_instance_up{key}"] == 1
        assert metrics[f"dbproxy_instance_is_primary{key}"] == is_primary


def test_reader_spreads_over_both_replicas(proxy: MysqlProxy, cluster: MysqlCluster) -> None:
    assert proxy.reader_port is not None
    seen: Counter[int] = Counter()
    with connect(proxy.reader_port) as conn:
        for _ in range(200):
            seen[port_of(conn)] += 1
    assert set(seen) == set(cluster.ports[1:]), seen
    assert all(60 <= seen[p] <= 140 for p in cluster.ports[1:]), seen   # within 70/30 (121/79 seen on a loaded machine)


def test_split_lands_reads_on_replicas_and_writes_on_the_primary(proxy: MysqlProxy, ports: dict[str, int],
                                                                 cluster: MysqlCluster) -> None:
    primary, replicas = cluster.ports[0], set(cluster.ports[1:])
    with connect(ports["split"]) as conn:
        assert port_of(conn) in replicas
        assert scalar(conn, "SELECT @@port FOR UPDATE") == primary
        assert scalar(conn, "SELECT GET_LOCK('topo', 0) + @@port - 1") == primary
        rows(conn, "SELECT RELEASE_LOCK('topo')")
        rows(conn, "REPLACE INTO topo VALUES (1, 'split')")
        conn.begin()
        assert port_of(conn) == primary   # an explicit transaction: the primary
        conn.commit()
        assert scalar(conn, "/* dbproxy:route=primary */ SELECT @@port") == primary


# Where each statement lands through the split endpoint (SPEC §3.3, §12): R a replica, P the primary.
LANDING = [
    ("SELECT @@port", "R"),
    ("  select @@port ;", "R"),
    ("SELECT @@port FROM DUAL WHERE 1 = 1", "R"),
    ("WITH t AS (SELECT 1 AS x) SELECT @@port FROM t", "R"),
    ("SELECT @@port UNION SELECT @@port", "R"),
    ("SELECT (SELECT @@port)", "R"),
    ("SELECT @@port, COUNT(*) FROM topo", "R"),
    ("/* dbproxy:route=replica */ SELECT @@port FOR UPDATE", "R"),
    ("SELECT @@port FOR UPDATE", "P"),
    ("SELECT @@port LOCK IN SHARE MODE", "P"),
    ("SELECT @@port FROM topo FOR UPDATE SKIP LOCKED", "P"),
    ("SELECT GET_LOCK('landing', 0) * 0 + @@port", "P"),
    ("SELECT COALESCE(RELEASE_LOCK('landing'), 0) * 0 + @@port", "P"),
    ("SELECT SLEEP(0) + @@port", "P"),
    ("SELECT LAST_INSERT_ID() * 0 + @@port", "P"),
    ("SELECT @@port /*!99999 FOR UPDATE */", "P"),   # an executable comment is read as code
    ("SELECT @@port /*M!100000 FOR UPDATE */", "P"),
    ("/* dbproxy:route=primary */ SELECT @@port", "P"),
]


@pytest.mark.parametrize(("sql", "where"), LANDING, ids=[sql for sql, _ in LANDING])
def test_split_landing_table(proxy: MysqlProxy, ports: dict[str, int], cluster: MysqlCluster,
                             sql: str, where: str) -> None:
    with connect(ports["split"]) as conn:
        landed = int(rows(conn, sql)[0][-1])
    assert (landed == cluster.ports[0]) == (where == "P"), (sql, landed)


def test_show_and_read_only_transactions_on_a_replica_others_on_the_primary(proxy: MysqlProxy,
                                                                           ports: dict[str, int],
                                                                           cluster: MysqlCluster) -> None:
    with connect(ports["split"]) as conn:
        assert int(rows(conn, "SHOW VARIABLES LIKE 'port'")[0][1]) in cluster.ports[1:]
        rows(conn, "START TRANSACTION READ ONLY")
        inside = port_of(conn)
        rows(conn, "COMMIT")
        rows(conn, "START TRANSACTION")
        plain = port_of(conn)
        rows(conn, "COMMIT")
    assert inside in cluster.ports[1:] and plain == cluster.ports[0]


def test_a_stopped_replica_leaves_and_comes_back(proxy: MysqlProxy, cluster: MysqlCluster) -> None:
    assert proxy.reader_port is not None
    stopped = cluster.ports[2]
    cluster.stop_instance(2)
    try:
        wait_until(lambda: instances(proxy)[stopped]["state"] == "down", timeout=10, what="the stopped replica down")
        with connect(proxy.reader_port) as conn:
            assert {port_of(conn) for _ in range(30)} == {cluster.ports[1]}
    finally:
        cluster.start_instance(2)
    wait_until(lambda: instances(proxy)[stopped]["state"] == "up", timeout=15, what="the replica back up")
    with connect(proxy.reader_port) as conn:
        wait_until(lambda: stopped in {port_of(conn) for _ in range(20)}, timeout=5, what="reads on it again")


def test_a_delayed_replica_is_excluded_while_over_max_replica_lag(proxy: MysqlProxy, cluster: MysqlCluster) -> None:
    assert proxy.reader_port is not None
    delayed = cluster.ports[1]
    cluster.set_delay(1, 30)
    try:
        with connect(proxy) as writer:
            deadline = time.monotonic() + 15
            while instances(proxy)[delayed]["state"] != "lagging":
                assert time.monotonic() < deadline, instances(proxy)[delayed]
                rows(writer, "REPLACE INTO topo VALUES (2, NOW(6))")   # events for the delayed replica to hold
                time.sleep(0.3)
        with connect(proxy.reader_port) as conn:
            assert {port_of(conn) for _ in range(30)} == {cluster.ports[2]}
    finally:
        cluster.set_delay(1, 0)
    wait_until(lambda: instances(proxy)[delayed]["state"] == "up", timeout=20, what="the replica caught up")


def test_read_your_writes_by_gtid_never_misses_its_own_write(proxy: MysqlProxy, ports: dict[str, int],
                                                             cluster: MysqlCluster) -> None:
    wait_until(lambda: all(r["state"] == "up" for r in instances(proxy, "ryw").values()), timeout=10,
               what="cluster ryw up")
    cluster.set_delay(1, 3)
    cluster.set_delay(2, 3)
    missed = {"ryw": 0, "plain": 0}
    try:
        with connect(ports["ryw"]) as ryw, connect(ports["plain"]) as plain:
            for i in range(20):
                for name, conn in (("ryw", ryw), ("plain", plain)):
                    key = 1000 + i * 2 + (name == "plain")
                    rows(conn, "INSERT INTO topo VALUES (%s, %s)", (key, name))
                    if scalar(conn, "SELECT COUNT(*) FROM topo WHERE id = %s", (key,)) != 1:
                        missed[name] += 1
            # Reads with nothing new written still go to replicas once they have replayed the writes.
            cluster.set_delay(1, 0)
            cluster.set_delay(2, 0)
            replicas = set(cluster.ports[1:])
            wait_until(lambda: port_of(ryw) in replicas, timeout=15, what="ryw reads back on a replica")
    finally:
        cluster.set_delay(1, 0)
        cluster.set_delay(2, 0)
    assert missed["ryw"] == 0, missed
    assert missed["plain"] >= 15, missed   # the control endpoint reads from the delayed replicas


def test_read_your_writes_does_not_send_reads_after_a_set_to_the_primary(proxy: MysqlProxy, ports: dict[str, int],
                                                                         cluster: MysqlCluster) -> None:
    """A SET (PyMySQL sends SET AUTOCOMMIT at connect) runs on the primary but commits nothing: the next
    read on a read_your_writes endpoint has no position to wait for and goes to a replica at once (it used
    to wait for the proxy's own SELECT @@last_gtid, and went to the primary when it came first)."""
    wait_until(lambda: all(r["state"] == "up" for r in instances(proxy, "ryw").values()), timeout=10,
               what="cluster ryw up")
    cluster.wait_replicated()
    landed: Counter[str] = Counter()
    with connect(ports["ryw"]) as conn:
        for i in range(30):
            rows(conn, "SET AUTOCOMMIT = 1" if i % 2 else "SET NAMES utf8mb4")
            landed["replica" if port_of(conn) in cluster.ports[1:] else "primary"] += 1
    assert landed == Counter({"replica": 30}), landed


def test_switchover_under_load_fails_no_transaction(proxy: MysqlProxy, cluster: MysqlCluster) -> None:
    cluster.wait_replicated()
    target = cluster.address(1)
    failures: list[str] = []
    done = threading.Event()
    counts = Counter[str]()

    def load(kind: str) -> None:
        conn = connect(proxy) if kind == "write" else connect(proxy.reader_port or 0)
        with conn:
            n = 0
            while not done.is_set():
                n += 1
                try:
                    if kind == "write":
                        conn.begin()
                        rows(conn, "REPLACE INTO topo VALUES (3, %s)", (str(n),))
                        conn.commit()
                    else:
                        scalar(conn, "SELECT COUNT(*) FROM topo")
                    counts[kind] += 1
                except pymysql.err.MySQLError as exc:
                    failures.append(f"{kind}: {exc}")
                time.sleep(0.005)

    workers = [threading.Thread(target=load, args=(k,)) for k in ("write", "write", "read")]
    for w in workers:
        w.start()
    try:
        time.sleep(0.5)
        result = admin_rows(proxy, f"FAILOVER my TO '{target}'")
        time.sleep(0.5)
    finally:
        done.set()
        for w in workers:
            w.join(10)
    assert failures == [], failures[:5]
    assert counts["write"] > 20 and counts["read"] > 20, counts
    assert result and str(result[0]["new_writer"]) == target, result
    shown = instances(proxy)
    assert shown[cluster.ports[1]]["role"] == "primary" and shown[cluster.ports[1]]["state"] == "up"
    with connect(proxy) as conn:
        assert port_of(conn) == cluster.ports[1]
    status = cluster.slave_status(2)
    assert status.get("Master_Port") == str(cluster.ports[1]), status   # re-pointed by GTID
    # The old primary rejoined as a replica of the new one (failover.replication_user/password).
    rejoined = cluster.slave_status(0)
    assert rejoined.get("Master_Port") == str(cluster.ports[1]) and rejoined.get("Slave_SQL_Running") == "Yes", rejoined
    wait_until(lambda: (lambda r: r["role"] == "replica" and r["state"] == "up")(instances(proxy)[cluster.ports[0]]),
               timeout=10, what="the old primary an up replica")
    wait_until(lambda: rejoined.get("Slave_IO_Running") == "Yes" or
               cluster.slave_status(0).get("Slave_IO_Running") == "Yes", timeout=10, what="its IO thread connected")


def test_promote_mode_replaces_a_killed_primary_and_fences_it_when_it_returns(proxy: MysqlProxy,
                                                                            cluster: MysqlCluster,
                                                                            ports: dict[str, int]) -> None:
    shown = instances(proxy)
    old = next(i for i, p in enumerate(cluster.ports) if shown[p]["role"] == "primary")
    others = [i for i in range(len(cluster.ports)) if i != old]
    # dbproxy promoted it and rejoined the switchover's old primary: both others replicate from it.
    cluster.masters[old] = None   # the launcher's view
    for i in others:
        cluster.masters[i] = old
        assert cluster.slave_status(i).get("Master_Port") == str(cluster.ports[old])
    with direct(cluster, old) as conn:
        rows(conn, "CREATE TABLE IF NOT EXISTS app.acked (id INT PRIMARY KEY)")
    cluster.wait_replicated()
    idle = connect(proxy)
    assert scalar(idle, "SELECT 1") == 1
    acked: list[int] = []
    errors: list[tuple[float, str]] = []
    done = threading.Event()
    lock = threading.Lock()
    next_id = iter(range(1, 10**6))

    def writer() -> None:
        with connect(proxy, read_timeout=10) as conn:
            while not done.is_set():
                with lock:
                    key = next(next_id)
                try:
                    rows(conn, "INSERT INTO acked VALUES (%s)", (key,))
                    with lock:
                        acked.append(key)
                except pymysql.err.MySQLError as exc:
                    errors.append((time.monotonic(), str(exc.args[:2])))
                    time.sleep(0.02)

    workers = [threading.Thread(target=writer) for _ in range(4)]
    for w in workers:
        w.start()
    try:
        time.sleep(0.5)
        before = len(acked)
        killed_at = time.monotonic()
        cluster.kill_instance(old)
        wait_until(lambda: len(acked) > before + 20, timeout=30, what="writes back after the kill")
        back_after = time.monotonic() - killed_at
    finally:
        done.set()
        for w in workers:
            w.join(15)
    shown = instances(proxy)
    survivor = next(i for i in others if shown[cluster.ports[i]]["role"] == "primary")
    assert back_after < 10, back_after
    with direct(cluster, survivor) as conn:
        present = {r[0] for r in rows(conn, "SELECT id FROM acked")}
    assert set(acked) <= present, f"{len(set(acked) - present)} acknowledged writes lost"   # semi-sync
    assert scalar(idle, "SELECT 'idle client kept'") == "idle client kept"
    idle.close()
    # Cluster "ryw" is in follow mode over the same instances: it follows the promotion made elsewhere.
    wait_until(lambda: instances(proxy, "ryw")[cluster.ports[survivor]]["role"] == "primary", timeout=5,
               what="the follow-mode cluster on the new primary")
    with connect(ports["ryw"]) as conn:
        rows(conn, "INSERT INTO acked VALUES (0)")
        assert scalar(conn, "/* dbproxy:route=primary */ SELECT @@port") == cluster.ports[survivor]
    # The old primary comes back writable: it is fenced, writes stay on the new one.
    cluster.start_instance(old, replicate=False)
    cluster.query(old, "SET GLOBAL read_only = OFF", admin=True)
    wait_until(lambda: instances(proxy)[cluster.ports[old]]["state"] == "fenced", timeout=10,
               what="the returning old primary fenced")
    with connect(proxy) as conn:
        assert port_of(conn) == cluster.ports[survivor]
    print(f"\nMySQL promote-mode failover: writes back {back_after * 1000:.0f} ms after kill -9; "
          f"{len(errors)} failed statements, {len(acked)} acknowledged writes, none lost")
