"""The test MariaDB cluster itself: GTID replication, read-only replicas, logins, failover drills."""

from __future__ import annotations

import functools
import json
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from deploy.mysqlcluster import (
    APP_PASSWORD,
    APP_USER,
    ERR_READ_ONLY,
    MysqlCluster,
    MysqlClusterError,
    MysqlQueryError,
)

REPO_ROOT = Path(__file__).resolve().parent.parent
Factory = Callable[..., MysqlCluster]


def _mariadbd_pids(base_dir: Path) -> list[int]:
    """Live (non-zombie) mariadbd processes whose command line mentions ``base_dir``, from /proc."""
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes()
            state = (entry / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except (OSError, IndexError):
            continue
        if b"mariadbd" in cmdline and str(base_dir).encode() in cmdline and state not in ("Z", "X"):
            pids.append(int(entry.name))
    return pids


def _wait_for(predicate: Callable[[], bool], timeout: float, what: str) -> float:
    """Poll ``predicate`` until true; returns the seconds it took (fails the test after ``timeout``)."""
    began = time.monotonic()
    while not predicate():
        assert time.monotonic() - began < timeout, f"{what}: not within {timeout}s"
        time.sleep(0.05)
    return time.monotonic() - began


def _has_marker(cluster: MysqlCluster, i: int, table: str, marker: str) -> bool:
    try:
        return cluster.scalar(i, f"SELECT COUNT(*) FROM app.{table} WHERE marker = '{marker}'") == "1"
    except MysqlQueryError as exc:  # the table itself may not have arrived yet
        if exc.errno == 1146:
            return False
        raise


def _write_marker(cluster: MysqlCluster, i: int, table: str = "probe") -> str:
    marker = uuid.uuid4().hex
    cluster.query(
        i,
        f"CREATE TABLE IF NOT EXISTS {table} (id INT AUTO_INCREMENT PRIMARY KEY, marker VARCHAR(64)); "
        f"INSERT INTO {table} (marker) VALUES ('{marker}')",
        user=APP_USER,
        password=APP_PASSWORD,
        db="app",
    )
    return marker


# ----------------------------------------------------------------- the healthy session cluster


def test_topology(mysql_cluster: MysqlCluster) -> None:
    c = mysql_cluster
    assert c.addresses == [f"127.0.0.1:{port}" for port in c.ports]
    assert 3306 not in c.ports
    variables = (
        "@@server_id, @@gtid_domain_id, @@log_bin, @@binlog_format, @@gtid_strict_mode, "
        "@@log_slave_updates, @@bind_address, @@port, @@global.read_only, @@skip_name_resolve"
    )
    rows = [c.query(i, f"SELECT {variables}")[0] for i in range(3)]
    assert len({row[0] for row in rows}) == 3  # distinct server ids
    for i, row in enumerate(rows):
        assert row[1:8] == ["0", "1", "ROW", "1", "1", "127.0.0.1", str(c.ports[i])]
        assert row[9] == "1"
    assert [row[8] for row in rows] == ["0", "1", "1"]
    assert c.primary_index() == 0
    assert c.slave_status(0) == {}
    for i in (1, 2):
        status = c.slave_status(i)
        assert status["Master_Host"] == "127.0.0.1"
        assert status["Master_Port"] == str(c.ports[0])
        assert status["Using_Gtid"] == "Slave_Pos"
        assert (status["Slave_IO_Running"], status["Slave_SQL_Running"]) == ("Yes", "Yes")


def test_logins_over_tcp(mysql_cluster: MysqlCluster) -> None:
    c = mysql_cluster
    for i in range(3):  # users and the database were made on the primary and replicated
        assert c.scalar(i, "SELECT CURRENT_USER()") == "root@127.0.0.1"
        assert c.query(i, "SELECT CURRENT_USER(), DATABASE()", user=APP_USER, password=APP_PASSWORD, db="app") == [
            ["app@%", "app"]
        ]
        assert c.scalar(i, "SELECT plugin FROM mysql.user WHERE user = 'app' AND host = '%'") == "mysql_native_password"
        with pytest.raises(MysqlQueryError) as denied:
            c.query(i, "SELECT 1", user=APP_USER, password="wrong")
        assert denied.value.errno == 1045
        with pytest.raises(MysqlQueryError) as no_password:
            c.query(i, "SELECT 1", user=APP_USER)
        assert no_password.value.errno == 1045


def test_write_on_primary_reaches_both_replicas(mysql_cluster: MysqlCluster) -> None:
    c = mysql_cluster
    marker = _write_marker(c, 0)
    for i in (1, 2):
        _wait_for(functools.partial(_has_marker, c, i, "probe", marker), 10, f"row replicated to node{i}")
    c.wait_replicated(timeout=10)
    primary_pos = c.scalar(0, "SELECT @@global.gtid_binlog_pos")
    assert [c.scalar(i, "SELECT @@global.gtid_slave_pos") for i in (1, 2)] == [primary_pos, primary_pos]


@pytest.mark.parametrize("as_root", [False, True], ids=["app", "root"])
def test_replicas_refuse_writes(mysql_cluster: MysqlCluster, as_root: bool) -> None:
    c = mysql_cluster
    c.query(0, "CREATE TABLE IF NOT EXISTS app.ro_probe (x INT)")
    c.wait_replicated(timeout=10)
    login: dict[str, Any] = {} if as_root else {"user": APP_USER, "password": APP_PASSWORD}
    for i in (1, 2):
        with pytest.raises(MysqlQueryError) as refused:
            c.query(i, "INSERT INTO app.ro_probe VALUES (1)", **login)
        assert refused.value.errno == ERR_READ_ONLY == 1290
    c.query(0, "INSERT INTO app.ro_probe VALUES (1)", **login)  # the primary takes it


def test_query_returns_exact_values(mysql_cluster: MysqlCluster) -> None:
    rows = mysql_cluster.query(0, "SELECT 'a\\tb\\nc\\\\d', NULL, '', 'NULL' IS NULL; SELECT 2")
    assert rows == [["a\tb\nc\\d", None, "", "0"], ["2"]]
    with pytest.raises(MysqlQueryError) as syntax:
        mysql_cluster.query(0, "SELEC 1")
    assert syntax.value.errno == 1064


def test_set_delay_holds_back_one_replica(mysql_cluster: MysqlCluster) -> None:
    c = mysql_cluster
    c.set_delay(1, 3)
    try:
        assert c.slave_status(1)["SQL_Delay"] == "3"
        marker = _write_marker(c, 0, "delay_probe")
        began = time.monotonic()
        _wait_for(lambda: _has_marker(c, 2, "delay_probe", marker), 5, "row on the undelayed node2")
        time.sleep(max(0.0, 1.0 - (time.monotonic() - began)))
        assert not _has_marker(c, 1, "delay_probe", marker), "node1 applied the row without delay"
        _wait_for(lambda: _has_marker(c, 1, "delay_probe", marker), 10, "row on delayed node1")
        # MASTER_DELAY counts from the event's timestamp, which has whole seconds.
        assert time.monotonic() - began >= 1.9
    finally:
        c.set_delay(1, 0)
    assert c.slave_status(1)["SQL_Delay"] == "0"
    c.wait_replicated(timeout=10)


# ------------------------------------------------------------------- throwaway clusters


def test_kill_restart_stop_and_destroy(mysql_cluster_factory: Factory) -> None:
    c = mysql_cluster_factory()
    killed_pid = c.pid(2)
    assert killed_pid is not None
    c.kill(2)
    assert not c.is_running(2)
    assert killed_pid not in _mariadbd_pids(c.base_dir)
    markers = [_write_marker(c, 0) for _ in range(3)]  # written while node2 is down
    c.start_instance(2)
    c.wait_replicated(timeout=20)
    assert all(_has_marker(c, 2, "probe", m) for m in markers)
    assert c.scalar(2, "SELECT @@global.read_only") == "1"
    assert c.slave_status(2)["Slave_SQL_Running"] == "Yes"

    c.stop_instance(1)  # a clean stop and start keeps replicating too
    assert not c.is_running(1)
    marker = _write_marker(c, 0)
    c.start_instance(1)
    c.wait_replicated(timeout=20)
    assert _has_marker(c, 1, "probe", marker)

    assert len(_mariadbd_pids(c.base_dir)) == 3
    c.stop()
    assert _mariadbd_pids(c.base_dir) == []
    assert not any(c.is_running(i) for i in range(3))
    assert not any(_accepts(port) for port in c.ports)

    again = MysqlCluster.load(c.base_dir)  # as another process would: from cluster.json
    again.start()
    assert all(_has_marker(again, i, "probe", marker) for i in range(3))
    assert again.slave_status(1)["Slave_IO_Running"] == "Yes"
    again.destroy()
    assert _mariadbd_pids(c.base_dir) == []
    assert not c.base_dir.exists()


def test_promote_and_repoint(mysql_cluster_factory: Factory) -> None:
    c = mysql_cluster_factory()
    before = _write_marker(c, 0)
    c.wait_replicated(timeout=10)
    c.kill(0)
    c.promote(1)
    assert c.slave_status(1) == {}
    assert c.scalar(1, "SELECT @@global.read_only") == "0"
    c.repoint(2, 1)
    after = _write_marker(c, 1)  # the new primary takes writes...
    c.wait_replicated(timeout=10)
    assert _has_marker(c, 2, "probe", before) and _has_marker(c, 2, "probe", after)  # ...and ships them
    assert c.slave_status(2)["Master_Port"] == str(c.ports[1])
    assert c.primary_index() == 1
    assert json.loads((c.base_dir / "cluster.json").read_text())["masters"] == [None, None, 1]

    c.start_instance(0)  # the old primary comes back (writable: nobody told it) and rejoins
    c.repoint(0, 1)
    assert c.scalar(0, "SELECT @@global.read_only") == "1"
    latest = _write_marker(c, 1)
    c.wait_replicated(timeout=10)
    assert all(_has_marker(c, i, "probe", latest) for i in range(3))
    assert MysqlCluster.load(c.base_dir).masters == [1, None, 1]


def test_failed_start_leaves_nothing_behind_after_stop(free_ports: Callable[..., list[int]]) -> None:
    ports = free_ports(3)
    base = Path(tempfile.mkdtemp(prefix="dbproxy-my-"))
    c = MysqlCluster(base, ports)
    with socket.socket() as squatter:  # node2 cannot bind its port
        squatter.bind(("127.0.0.1", ports[2]))
        squatter.listen()
        try:
            with pytest.raises(MysqlClusterError, match="node2"):
                c.start(timeout=20)
            assert _mariadbd_pids(base)  # node0 and node1 did start
        finally:
            c.stop()
            assert _mariadbd_pids(base) == []
            c.destroy()
    assert not base.exists()


def test_semi_sync(mysql_cluster_factory: Factory) -> None:
    c = mysql_cluster_factory(2, semi_sync=True)

    def status(i: int) -> dict[str, str | None]:
        return {str(row[0]): row[1] for row in c.query(i, "SHOW GLOBAL STATUS LIKE 'Rpl_semi_sync_%'")}

    assert status(0)["Rpl_semi_sync_master_status"] == "ON"
    assert status(0)["Rpl_semi_sync_master_clients"] == "1"
    assert status(1)["Rpl_semi_sync_slave_status"] == "ON"
    assert status(1)["Rpl_semi_sync_master_status"] == "OFF"  # a replica must not wait for acks itself
    acked = int(status(0)["Rpl_semi_sync_master_yes_tx"] or 0)
    began = time.monotonic()
    _write_marker(c, 0)
    assert time.monotonic() - began < 5  # acknowledged, not the 10 s timeout
    assert int(status(0)["Rpl_semi_sync_master_yes_tx"] or 0) > acked


def test_cli(free_ports: Callable[..., list[int]]) -> None:
    base = Path(tempfile.mkdtemp(prefix="dbproxy-my-"))
    ports = free_ports(2)

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "deploy.mysqlcluster", *args, "--dir", str(base)],
            capture_output=True, text=True, cwd=REPO_ROOT, timeout=120,
        )

    try:
        started = cli("start", "--ports", ",".join(map(str, ports)), "--set", "max_connections=123")
        assert started.returncode == 0, started.stderr
        assert "started in" in started.stdout
        c = MysqlCluster.load(base)
        assert c.scalar(1, "SELECT @@max_connections") == "123"
        status = cli("status").stdout
        assert "node0" in status and "primary" in status and "replica of" in status
        assert cli("kill", "--index", "1").returncode == 0
        assert "node1  127.0.0.1" in cli("status").stdout and not c.is_running(1)
        assert cli("start-instance", "--index", "1").returncode == 0
        c.wait_replicated(timeout=10)
        assert cli("stop").returncode == 0
        assert _mariadbd_pids(base) == []
        assert cli("status").stdout.count("stopped") == 2
    finally:
        cli("destroy")
    assert not base.exists() and _mariadbd_pids(base) == []


def _accepts(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.5)
        return sock.connect_ex(("127.0.0.1", port)) == 0
