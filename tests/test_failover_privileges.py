"""Promote mode with a health user that may not promote is reported at start: log, /status, /readyz, a metric.

Against the session's real PostgreSQL and MariaDB clusters: one dbproxy with two clusters per engine
over the same instances, one probing as a user without the failover privileges, one as a user with them.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import REPO_ROOT
from e2e_helpers import RunningProxy, running_proxy, wait_until
from ops_helpers import http_get, scrape

from deploy.mysqlcluster import APP_PASSWORD as MY_APP_PASSWORD
from deploy.mysqlcluster import MONITOR_PASSWORD, MONITOR_USER, MysqlCluster
from deploy.pgcluster import HOST, PgCluster, free_ports


def cluster(name: str, engine: str, instances: list[str], auth: str, port: int, user: str,
            password: str | None) -> str:
    listed = ", ".join(f'"{a}"' for a in instances)
    secret = f'password = "{password}"\n' if password else ""
    return (f'[clusters.{name}]\nengine = "{engine}"\ninstances = [{listed}]\nclient_auth = "{auth}"\n\n'
            f'[clusters.{name}.health]\nuser = "{user}"\n{secret}interval = "200ms"\n\n'
            f'[clusters.{name}.failover]\nmode = "promote"\n\n'
            f'[[clusters.{name}.endpoints]]\nname = "writer"\nlisten = "{HOST}:{port}"\nrole = "writer"\n')


def config_text(pg_cluster: PgCluster, mysql_cluster: MysqlCluster, ports: list[int]) -> str:
    """Clusters pg_weak, pg_ok, my_weak, my_ok on ports[0:4]; HTTP on ports[4]."""
    http = ports[4]
    return "\n".join([
        f'[server]\nlog_level = "info"\nshutdown_timeout = "2s"\nhttp_listen = "{HOST}:{http}"\n',
        '[[users]]\nname = "app"\npassword = "app-secret"\nserver_user = "app"\n',
        cluster("pg_weak", "postgres", pg_cluster.instance_addrs(), "md5", ports[0], "app", None),
        cluster("pg_ok", "postgres", pg_cluster.instance_addrs(), "md5", ports[1], "postgres", None),
        cluster("my_weak", "mysql", mysql_cluster.addresses, "mysql_native_password", ports[2], "app",
                MY_APP_PASSWORD),
        cluster("my_ok", "mysql", mysql_cluster.addresses, "mysql_native_password", ports[3], MONITOR_USER,
                MONITOR_PASSWORD),
    ])


@pytest.fixture
def proxy(pg_cluster: PgCluster, mysql_cluster: MysqlCluster, tmp_path: Path) -> Iterator[tuple[RunningProxy, int]]:
    ports = free_ports(5)
    with running_proxy(config_text(pg_cluster, mysql_cluster, ports), tmp_path, ports[0]) as running:
        yield running, ports[4]


def test_a_health_user_that_cannot_promote_is_reported(proxy: tuple[RunningProxy, int]) -> None:
    running, http = proxy
    problems = wait_until(lambda: (lambda s: s if s["pg_weak"] and s["my_weak"] else None)(
        {c["name"]: c["failover_problem"] for c in http_get(http, "/status").json()["clusters"]}),
        timeout=15, what="both weak clusters reported")
    assert "pg_promote" in problems["pg_weak"] and "ALTER SYSTEM on primary_conninfo" in problems["pg_weak"]
    assert "READ_ONLY ADMIN" in problems["my_weak"] and "REPLICATION SLAVE ADMIN" in problems["my_weak"]
    assert problems["pg_ok"] == "" and problems["my_ok"] == ""
    ready = http_get(http, "/readyz")
    assert ready.status == 200, ready.text   # the writers work: ready, with the warning
    assert "warning: cluster pg_weak:" in ready.text and "warning: cluster my_weak:" in ready.text
    assert "pg_ok" not in ready.text
    metrics = scrape(http)
    assert {name: metrics[f'dbproxy_failover_privileges_ok{{cluster="{name}"}}']
            for name in ("pg_weak", "pg_ok", "my_weak", "my_ok")} == {
        "pg_weak": 0, "pg_ok": 1, "my_weak": 0, "my_ok": 1}
    log = running.log_text()
    assert "ERROR" in log and "cannot promote or re-point" in log


def test_check_config_connect_reports_them_as_config_errors(pg_cluster: PgCluster, mysql_cluster: MysqlCluster,
                                                           tmp_path: Path) -> None:
    path = tmp_path / "dbproxy.toml"
    path.write_text(config_text(pg_cluster, mysql_cluster, free_ports(5)))
    offline = subprocess.run([sys.executable, "-m", "proxy", "check-config", str(path)], capture_output=True,
                             text=True, timeout=60, cwd=REPO_ROOT)
    assert offline.returncode == 0, offline.stderr   # without --connect nothing is asked of the servers
    result = subprocess.run([sys.executable, "-m", "proxy", "check-config", "--connect", str(path)],
                            capture_output=True, text=True, timeout=60, cwd=REPO_ROOT)
    assert result.returncode == 2, result.stdout + result.stderr
    lines = result.stderr.strip().splitlines()
    assert [line.split(": ")[2] for line in lines] == ["clusters.pg_weak.health.user", "clusters.my_weak.health.user"]
    assert "pg_promote" in lines[0] and "READ_ONLY ADMIN" in lines[1]
