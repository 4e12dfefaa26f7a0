"""Record and replay on MariaDB (SPEC §13): PyMySQL clients' statements through dbproxy recorded, replayed by
`dbproxy replay` (aiomysql) onto another MariaDB this module starts (one instance): the same rows."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pymysql
import pytest
from conftest import REPO_ROOT, _dispose_mysql, _new_mysql_cluster
from e2e_helpers import running_proxy
from mysql_e2e_helpers import (
    MysqlProxy,
    connect,
    direct,
    mysql_proxy_config,
    rows,
)
from mysql_e2e_helpers import (
    admin_command as admin,
)

from deploy.mysqlcluster import HOST, MysqlCluster
from deploy.pgcluster import free_ports
from proxy.recording.format import read_recording


@pytest.fixture(scope="module")
def other_mariadb() -> Iterator[MysqlCluster]:
    """The replay's target: a MariaDB of its own (not the machine's on 3306)."""
    cluster = _new_mysql_cluster(1)
    try:
        cluster.start()
        yield cluster
    finally:
        _dispose_mysql(cluster)


@pytest.fixture(scope="module")
def proxy(mysql_cluster: MysqlCluster, tmp_path_factory: pytest.TempPathFactory) -> Iterator[MysqlProxy]:
    port, admin_port = free_ports(2)
    text = mysql_proxy_config(mysql_cluster, port, admin_port=admin_port).replace(
        "[server]\n", "[server]\nrecord_parameters = true\n", 1)
    with running_proxy(text, tmp_path_factory.mktemp("mysql-record"), port) as running:
        yield MysqlProxy(running, admin_port)


def test_recorded_clients_replay_to_the_same_rows(proxy: MysqlProxy, mysql_cluster: MysqlCluster,
                                                  other_mariadb: MysqlCluster, tmp_path: Path) -> None:
    def local(database: str | None = None) -> pymysql.connections.Connection[Any]:
        return direct(other_mariadb, 0, database=database)

    table = f"rec_{uuid.uuid4().hex[:8]}"
    target = f"replay_{uuid.uuid4().hex[:8]}"
    schema = f"CREATE TABLE {table} (id INT PRIMARY KEY, v INT NOT NULL)"
    with direct(mysql_cluster, 0) as conn:
        rows(conn, schema)
    with local() as conn:
        rows(conn, f"CREATE DATABASE {target}")
        rows(conn, f"USE {target}")
        rows(conn, schema)
    recording = tmp_path / "my.rec.gz"
    try:
        admin(proxy, f"RECORD START '{recording}' my")

        def client(n: int) -> None:
            with connect(proxy, ssl_disabled=True) as conn:
                for i in range(25):
                    rows(conn, f"INSERT INTO {table} VALUES ({n * 100 + i}, {i})")
                rows(conn, "BEGIN")
                rows(conn, f"UPDATE {table} SET v = v * 2 WHERE id BETWEEN {n * 100} AND {n * 100 + 99}")
                rows(conn, "COMMIT")

        threads = [threading.Thread(target=client, args=(n,)) for n in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(60)
        (row,) = admin(proxy, "SHOW RECORDING")
        assert row["engine"] == "mysql" and row["sessions"] == 4 and row["statements"] >= 4 * 28
        admin(proxy, "RECORD STOP")

        env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
        res = subprocess.run([sys.executable, "-m", "proxy", "replay", str(recording), "--target",
                              f"{HOST}:{other_mariadb.ports[0]}", "--user", "root", "--database", target, "--speed", "2",
                              "--json", "--quiet"], capture_output=True, text=True, timeout=120, env=env,
                             cwd=REPO_ROOT)
        assert res.returncode == 0, res.stdout + res.stderr
        report = json.loads(res.stdout)
        assert report["errors"] == 0 and report["sessions"] == 4, report
        # 25 autocommit INSERTs, one BEGIN ... COMMIT and PyMySQL's SET NAMES at connect, each
        assert report["transactions"] == 4 * 27, report
        check = f"SELECT count(*), sum(v) FROM {table}"
        with direct(mysql_cluster, 0) as source, local(target) as replayed:
            assert rows(replayed, check) == rows(source, check) == [(100, 4 * 2 * sum(range(25)))]
    finally:
        with direct(mysql_cluster, 0) as conn:
            rows(conn, f"DROP TABLE IF EXISTS {table}")
        with local() as conn:
            rows(conn, f"DROP DATABASE IF EXISTS {target}")


def test_recorded_server_side_prepared_statements_replay_to_the_same_rows(
        proxy: MysqlProxy, mysql_cluster: MysqlCluster, other_mariadb: MysqlCluster, tmp_path: Path) -> None:
    """mysql-connector's cursor(prepared=True): COM_STMT_PREPARE once, COM_STMT_EXECUTE with binary values
    (ints, strings with quotes and backslashes, doubles, decimals, dates, NULL); the replay runs each text
    with its values as literals and leaves the same rows."""
    import datetime
    import decimal

    import mysql.connector

    from deploy.mysqlcluster import APP_PASSWORD, APP_USER

    table = f"recp_{uuid.uuid4().hex[:8]}"
    target = f"replay_{uuid.uuid4().hex[:8]}"
    schema = (f"CREATE TABLE {table} (id INT PRIMARY KEY, s VARCHAR(40), f DOUBLE, d DECIMAL(10,2), "
              "t DATETIME(6), b VARBINARY(8))")
    with direct(mysql_cluster, 0) as conn:
        rows(conn, schema)
    with direct(other_mariadb, 0, database=None) as conn:
        rows(conn, f"CREATE DATABASE {target}")
        rows(conn, f"USE {target}")
        rows(conn, schema)
    recording = tmp_path / "prepared.rec.gz"
    try:
        admin(proxy, f"RECORD START '{recording}' my")
        conn = mysql.connector.connect(host=HOST, port=proxy.port, user=APP_USER, password=APP_PASSWORD,
                                       database="app", autocommit=True, ssl_disabled=True)
        try:
            cursor = conn.cursor(prepared=True)
            for i in range(20):
                cursor.execute(f"INSERT INTO {table} VALUES (?, ?, ?, ?, ?, ?)",
                               (i, f"it's \\ {i}" if i % 2 else None, i / 3, decimal.Decimal(f"{i}.25"),
                                datetime.datetime(2026, 1, 2, 3, 4, 5, 6000 + i), bytes([i, 0, 255])))
            cursor.execute(f"UPDATE {table} SET f = f * ? WHERE id < ?", (2.5, 10))
            cursor.execute(f"SELECT count(*) FROM {table} WHERE id > ?", (4,))
            assert cursor.fetchall() == [(15,)]
        finally:
            conn.close()
        admin(proxy, "RECORD STOP")
        executions = [e for e in read_recording(recording)[1] if e["e"] == "x"]
        assert len(executions) == 22 and all("l" in e for e in executions), executions[:3]
        env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
        res = subprocess.run([sys.executable, "-m", "proxy", "replay", str(recording), "--target",
                              f"{HOST}:{other_mariadb.ports[0]}", "--user", "root", "--database", target,
                              "--json", "--quiet"], capture_output=True, text=True, timeout=120, env=env,
                             cwd=REPO_ROOT)
        report = json.loads(res.stdout)
        assert report["errors"] == 0 and report["skipped"] == 0, report
        check = f"SELECT id, s, f, d, t, b FROM {table} ORDER BY id"
        with direct(mysql_cluster, 0) as source, direct(other_mariadb, 0, database=target) as replayed:
            assert rows(replayed, check) == rows(source, check)
            assert len(rows(source, check)) == 20
    finally:
        with direct(mysql_cluster, 0) as conn:
            rows(conn, f"DROP TABLE IF EXISTS {table}")
        with direct(other_mariadb, 0, database=None) as conn:
            rows(conn, f"DROP DATABASE IF EXISTS {target}")
