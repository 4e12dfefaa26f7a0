"""Transaction replay on failover (failover.replay = true) for MySQL: one kill -9 of a MariaDB primary (promote
mode, semi-sync replication, a module cluster of its own) while PyMySQL clients are at every interesting point.

- a transaction with a statement in flight, one idle inside its transaction, an autocommit read in
  flight (a BENCHMARK()): no error, the transactions go on where they were, every acknowledged insert is on the new primary;
- a transaction that had read RAND(): 2013, as without replay;
- a COMMIT in flight (held by BACKUP STAGE BLOCK_COMMIT) and an autocommit write in flight: 2013 with SQLSTATE
  08007 "transaction resolution unknown";
- the counters of dbproxy_replays_total.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pymysql
import pytest
from conftest import _dispose_mysql, _new_mysql_cluster
from mysql_e2e_helpers import MysqlProxy, admin_rows, connect, direct, mysql_module_proxy, rows, scalar
from ops_helpers import scrape

from deploy.mysqlcluster import MONITOR_PASSWORD, MONITOR_USER, MysqlCluster

pytestmark = pytest.mark.slow

SLEEP = 1.5   # seconds a statement stays in flight (the kill comes while it does)
REPLAYS = 'dbproxy_replays_total{cluster="my",outcome="%s"}'
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
def proxy(cluster: MysqlCluster, tmp_path_factory: pytest.TempPathFactory) -> Iterator[MysqlProxy]:
    with direct(cluster) as conn:
        rows(conn, "CREATE TABLE IF NOT EXISTS app.replayed (client INT, seq INT, PRIMARY KEY (client, seq))")
        rows(conn, "GRANT ALL ON app.* TO 'app'@'%'")
    cluster.wait_replicated()
    with mysql_module_proxy(cluster, tmp_path_factory.mktemp("my-replay"), pool_size=20,
                            health={"failure_threshold": 3, "user": MONITOR_USER, "password": MONITOR_PASSWORD},
                            failover={"mode": "promote", "promote_after": "1s", "replay": True},
                            borrow_timeout="15s") as running:
        yield running


def outcome(step: Callable[[], Any]) -> Any:
    """The value, or the error as 'error <errno>' (with the message's first words for 2013s)."""
    try:
        return step()
    except pymysql.err.MySQLError as exc:
        code = exc.args[0] if exc.args else "?"
        resolution = " unknown" if len(exc.args) > 1 and "transaction resolution unknown" in str(exc.args[1]) else ""
        return f"error {code}{resolution}"


class Scenarios:
    def __init__(self, proxy: MysqlProxy, cluster: MysqlCluster) -> None:
        self.proxy, self.cluster = proxy, cluster
        self.in_flight: dict[str, threading.Event] = {}
        self.resume = threading.Event()
        self.conns: dict[str, Conn] = {}

    def open(self, name: str) -> None:
        self.conns[name] = connect(self.proxy, read_timeout=30)
        self.in_flight[name] = threading.Event()

    def statement_in_flight(self, conn: Conn) -> Any:
        rows(conn, "BEGIN")
        rows(conn, "INSERT INTO replayed VALUES (200, 1)")
        seen = scalar(conn, "SELECT COUNT(*) FROM replayed WHERE client = 200")
        self.in_flight["statement_in_flight"].set()
        slept = outcome(lambda: rows(conn, f"SELECT 7, SLEEP({SLEEP})"))
        rows(conn, "INSERT INTO replayed VALUES (200, 2)")
        rows(conn, "COMMIT")
        return seen, slept, scalar(conn, "SELECT @@port")

    def idle_in_transaction(self, conn: Conn) -> Any:
        rows(conn, "BEGIN")
        rows(conn, "INSERT INTO replayed VALUES (201, 1)")
        self.in_flight["idle_in_transaction"].set()
        self.resume.wait(30)
        time.sleep(0.5)
        rows(conn, "INSERT INTO replayed VALUES (201, 2)")
        return outcome(lambda: rows(conn, "COMMIT"))

    def read_rand(self, conn: Conn) -> Any:
        rows(conn, "BEGIN")
        scalar(conn, "SELECT RAND()")
        self.in_flight["read_rand"].set()
        return outcome(lambda: rows(conn, f"SELECT SLEEP({SLEEP})")), scalar(conn, "SELECT 2")

    def commit_in_flight(self, conn: Conn) -> Any:
        rows(conn, "BEGIN")
        rows(conn, "INSERT INTO replayed VALUES (203, 1)")
        with direct(self.cluster, 0) as lock:   # commits wait for this backup stage (the kill ends it)
            rows(lock, "BACKUP STAGE START")
            rows(lock, "BACKUP STAGE BLOCK_COMMIT")
            self.in_flight["commit_in_flight"].set()
            return outcome(lambda: rows(conn, "COMMIT")), scalar(conn, "SELECT 3")

    def autocommit_read(self, conn: Conn) -> Any:
        self.in_flight["autocommit_read"].set()   # a read of about 2 s (SLEEP() would count as a wait, not a read)
        return outcome(lambda: scalar(conn, "SELECT 42 + BENCHMARK(2500000, MD5('a'))"))

    def autocommit_write(self, conn: Conn) -> Any:
        self.in_flight["autocommit_write"].set()
        return outcome(lambda: rows(conn, f"INSERT INTO replayed SELECT 202, SLEEP({SLEEP})"))


def test_kill_of_the_primary_with_replay_hides_the_loss_from_transactions_that_had_not_committed(
        proxy: MysqlProxy, cluster: MysqlCluster) -> None:
    cases = Scenarios(proxy, cluster)
    names = ("statement_in_flight", "idle_in_transaction", "read_rand", "commit_in_flight", "autocommit_read",
             "autocommit_write")
    for name in names:
        cases.open(name)
    with ThreadPoolExecutor(len(names)) as pool:
        futures = {name: pool.submit(getattr(cases, name), cases.conns[name]) for name in names}
        for name, event in cases.in_flight.items():
            assert event.wait(15), name
        time.sleep(0.3)   # every statement in flight has reached the primary
        cluster.kill_instance(0)
        cases.resume.set()
        results = {name: future.result(timeout=40) for name, future in futures.items()}
    print(f"\nMySQL replay: {results}")
    primary = next(r for r in admin_rows(proxy, "SHOW INSTANCES") if r["role"] == "primary" and r["state"] == "up")
    new = cluster.ports.index(int(primary["instance"].rsplit(":", 1)[1]))
    assert results["statement_in_flight"] == (1, [(7, 0)], cluster.ports[new])
    assert results["idle_in_transaction"] == []
    assert results["read_rand"] == ("error 2013", 2)
    assert results["commit_in_flight"] == ("error 2013 unknown", 3)
    assert results["autocommit_read"] == 42
    assert results["autocommit_write"] == "error 2013 unknown"
    with direct(cluster, new) as conn:
        present = set(rows(conn, "SELECT client, seq FROM replayed"))
    assert {(200, 1), (200, 2), (201, 1), (201, 2)} <= present
    assert proxy.http_port is not None
    metrics = scrape(proxy.http_port)
    assert metrics.get(REPLAYS % "succeeded", 0) >= 3 and metrics.get(REPLAYS % "mismatched", 0) >= 1
    assert metrics.get(REPLAYS % "unknown_outcome", 0) >= 2
    for conn in cases.conns.values():
        conn.close()
