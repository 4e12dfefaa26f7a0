"""Traffic mirroring on MariaDB (SPEC §13): cluster "my" mirrors every transaction to a one-instance shadow started
here; PyMySQL clients' writes leave the same rows on the shadow, and with the shadow stopped the primary still
answers and the dropped work is counted. mysql-connector's server-side prepared statements (COM_STMT_EXECUTE with
binary values) are mirrored with their values; with reads_only + compare their writes are not, and their reads are
compared."""

from __future__ import annotations

import datetime
import decimal
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from e2e_helpers import RunningProxy, running_proxy, wait_until
from mysql_e2e_helpers import (
    ADMIN_PASSWORD,
    HOST,
    connect,
    direct,
    mysql_cluster_toml,
    mysql_proxy_config,
    rows,
    scalar,
)
from ops_helpers import admin, scrape

from deploy.mysqlcluster import APP_PASSWORD, APP_USER, MysqlCluster
from deploy.pgcluster import free_ports
from proxy.recording.format import read_recording

Setup = tuple[RunningProxy, int, str, int, Path]


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
          tmp_path_factory: pytest.TempPathFactory) -> Iterator[Setup]:
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
    directory = tmp_path_factory.mktemp("mysql-mirror")
    with running_proxy(text, directory, port) as running:
        yield running, http_port, table, admin_port, directory
    with direct(mysql_cluster, 0) as conn:
        rows(conn, f"DROP TABLE IF EXISTS {table}")


def count(cluster: MysqlCluster, table: str) -> int:
    with direct(cluster, 0) as conn:
        return int(scalar(conn, f"SELECT count(*) FROM {table}"))


def metric(http_port: int, name: str, **labels: str) -> float:
    text = ",".join(f'{k}="{v}"' for k, v in {"cluster": "my", **labels}.items())
    return scrape(http_port).get(f"{name}{{{text}}}", 0.0)


def prepared_connection(proxy: RunningProxy) -> Any:
    import mysql.connector

    return mysql.connector.connect(host=HOST, port=proxy.port, user=APP_USER, password=APP_PASSWORD, database="app",
                                   autocommit=True, ssl_disabled=True)


def new_table(mysql_cluster: MysqlCluster, shadow: MysqlCluster, filled: int = 0) -> str:
    table = f"mirrorp_{uuid.uuid4().hex[:8]}"
    for cluster in (mysql_cluster, shadow):
        with direct(cluster, 0) as conn:
            rows(conn, f"CREATE TABLE {table} (id INT PRIMARY KEY, v INT, s VARCHAR(40), f DOUBLE, "
                       "d DECIMAL(10,2), t DATETIME(6))")
            for i in range(1, filled + 1):
                rows(conn, f"INSERT INTO {table} (id, v, s) VALUES ({i}, {i * 10}, 'row {i}')")
    return table


def table_rows(cluster: MysqlCluster, table: str) -> Any:
    with direct(cluster, 0) as conn:
        return rows(conn, f"SELECT * FROM {table} ORDER BY id")


def test_prepared_executions_are_mirrored_with_their_values(setup: Setup, mysql_cluster: MysqlCluster,
                                                            shadow: MysqlCluster) -> None:
    """cursor(prepared=True): COM_STMT_EXECUTEs with ints, quoted/backslashed strings, NULLs, doubles, decimals
    and datetimes reach the shadow as the same rows; a committed transaction goes whole, a rolled back one not.
    A recording running meanwhile gets the executions too (without values); after RECORD STOP the mirror still
    gets them."""
    proxy, http_port, _, admin_port, directory = setup
    table = new_table(mysql_cluster, shadow)
    recording = directory / f"{table}.rec.gz"
    admin(admin_port, f"RECORD START '{recording}' my", password=ADMIN_PASSWORD)
    conn = prepared_connection(proxy)
    time.sleep(0.3)   # its connect-time statements (SET NAMES ...) are mirrored too
    sent_before = metric(http_port, "dbproxy_mirror_sent_total")
    try:
        cursor = conn.cursor(prepared=True)
        for i in range(30):
            cursor.execute(f"INSERT INTO {table} VALUES (?, ?, ?, ?, ?, ?)",
                           (i, i * 2, f"it's \\ {i}" if i % 3 else None, i / 3, decimal.Decimal(f"{i}.25"),
                            datetime.datetime(2026, 1, 2, 3, 4, 5, 6000 + i)))
        conn.start_transaction()
        cursor.execute(f"UPDATE {table} SET v = v + ? WHERE id < ?", (1000, 10))
        cursor.execute(f"DELETE FROM {table} WHERE id = ?", (29,))
        conn.commit()
        conn.start_transaction()
        cursor.execute(f"INSERT INTO {table} (id, v) VALUES (?, ?)", (100, 1))
        conn.rollback()
        admin(admin_port, "RECORD STOP", password=ADMIN_PASSWORD)
        for i in range(200, 205):
            cursor.execute(f"INSERT INTO {table} VALUES (?, ?, ?, ?, ?, ?)", (i, i, "after", None, None, None))
    finally:
        conn.close()
    executions = [e for e in read_recording(recording)[1] if e["e"] == "x" and table in e["q"]]
    assert len(executions) == 30 + 2 + 1 and all("l" not in e for e in executions), executions[:2]
    assert len(table_rows(mysql_cluster, table)) == 34
    wait_until(lambda: table_rows(shadow, table) == table_rows(mysql_cluster, table),
               what="the shadow has the same rows")
    time.sleep(0.3)
    assert metric(http_port, "dbproxy_mirror_sent_total") - sent_before == 30 + 1 + 5
    assert metric(http_port, "dbproxy_mirror_dropped_total", reason="error") == 0
    proxy.assert_alive_and_clean()


def test_mirrored_writes_and_a_dead_shadow(setup: Setup, mysql_cluster: MysqlCluster,
                                           shadow: MysqlCluster) -> None:
    proxy, http_port, table, _, _ = setup
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


def test_prepared_reads_compared_and_prepared_writes_not_mirrored(setup: Setup, mysql_cluster: MysqlCluster,
                                                                  shadow: MysqlCluster) -> None:
    """reads_only + compare: prepared reads of equal tables give no mismatch; a prepared write is not mirrored
    (nor a transaction holding one); the prepared reads that then differ are counted and logged."""
    proxy, http_port, _, admin_port, directory = setup
    config_path = directory / "dbproxy.toml"
    config_path.write_text(config_path.read_text().replace(
        'mirror = { cluster = "shadow", reads_only = false }',
        'mirror = { cluster = "shadow", reads_only = true, compare = true }'))
    admin(admin_port, "RELOAD", password=ADMIN_PASSWORD)
    wait_until(lambda: all(r["state"] == "up" for r in admin(admin_port, "SHOW INSTANCES", password=ADMIN_PASSWORD)),
               what="every instance up")
    table = new_table(mysql_cluster, shadow, filled=20)
    mismatches = metric(http_port, "dbproxy_mirror_mismatches_total")
    read = f"SELECT id, v, s FROM {table} WHERE id <= ? ORDER BY id"

    def reads(n: int, point: int | None = None) -> None:
        conn = prepared_connection(proxy)
        try:
            cursor = conn.cursor(prepared=True)
            for i in range(n):
                cursor.execute(read, (i % 20,))
                assert len(cursor.fetchall()) == i % 20
                if point is not None:
                    cursor.execute(f"SELECT v FROM {table} WHERE id = ?", (point,))
                    cursor.fetchall()
        finally:
            conn.close()

    def wait_sent(at_least: float) -> None:
        wait_until(lambda: metric(http_port, "dbproxy_mirror_sent_total") >= at_least, what="the reads mirrored")

    sent = metric(http_port, "dbproxy_mirror_sent_total")
    reads(40)
    wait_sent(sent + 40)
    assert metric(http_port, "dbproxy_mirror_mismatches_total") == mismatches

    sent = metric(http_port, "dbproxy_mirror_sent_total")
    conn = prepared_connection(proxy)
    try:
        cursor = conn.cursor(prepared=True)
        cursor.execute(f"UPDATE {table} SET v = ? WHERE id = ?", (-1, 3))
        conn.start_transaction()   # a read and a write: not mirrored
        cursor.execute(read, (5,))
        cursor.fetchall()
        cursor.execute(f"UPDATE {table} SET s = ? WHERE id = ?", ("changed", 4))
        conn.commit()
    finally:
        conn.close()
    reads(10, point=3)   # id 3 differs now
    wait_sent(sent + 20)
    time.sleep(0.3)
    assert metric(http_port, "dbproxy_mirror_sent_total") - sent == 20
    with direct(shadow, 0) as conn:
        assert rows(conn, f"SELECT v, s FROM {table} WHERE id IN (3, 4) ORDER BY id") == [(30, "row 3"), (40, "row 4")]
    wait_until(lambda: metric(http_port, "dbproxy_mirror_mismatches_total") - mismatches >= 10,
               what="mismatches counted")
    assert f"vs 1 on the primary for: SELECT v FROM {table} WHERE id = ?" in proxy.log_text()
    proxy.assert_alive_and_clean()
