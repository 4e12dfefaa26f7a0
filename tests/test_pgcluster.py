"""The test PostgreSQL cluster itself: roles, streaming replication, password authentication."""

from __future__ import annotations

import os
import subprocess
import time
import uuid

import pytest

from deploy.pgcluster import HOST, PgCluster, PgClusterError, pg_binary


def _psql(port: int, user: str, password: str, query: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
    env |= {"PGPASSWORD": password, "PGCONNECT_TIMEOUT": "5"}
    argv = [pg_binary("psql"), "-X", "-At", "-h", HOST, "-p", str(port)]
    argv += ["-U", user, "-d", "app", "-c", query]
    return subprocess.run(argv, capture_output=True, text=True, env=env, timeout=30)


def test_roles(pg_cluster: PgCluster) -> None:
    assert [pg_cluster.in_recovery(i) for i in range(3)] == [False, True, True]
    assert [pg_cluster.sql(i, "SELECT pg_is_in_recovery()") for i in range(3)] == ["f", "t", "t"]
    assert pg_cluster.primary_index() == 0
    assert pg_cluster.instance_addrs() == [f"127.0.0.1:{port}" for port in pg_cluster.ports]


def test_writes_reach_both_replicas(pg_cluster: PgCluster) -> None:
    marker = uuid.uuid4().hex
    pg_cluster.sql(0, "CREATE TABLE IF NOT EXISTS pgcluster_probe (marker text)", user="app", db="app")
    pg_cluster.sql(0, f"INSERT INTO pgcluster_probe VALUES ('{marker}')", user="app", db="app")
    query = f"SELECT count(*) FROM pgcluster_probe WHERE marker = '{marker}'"
    for i in (1, 2):
        deadline = time.monotonic() + 10
        while not _replicated(pg_cluster, i, query):
            assert time.monotonic() < deadline, f"row not replicated to node{i} within 10s"
            time.sleep(0.05)


def _replicated(pg_cluster: PgCluster, i: int, query: str) -> bool:
    try:
        return pg_cluster.sql(i, query, db="app") == "1"
    except PgClusterError:  # the table itself may not have arrived yet
        return False


@pytest.mark.parametrize(
    ("user", "password", "stored_prefix"),
    [
        ("md5user", "md5pass", "md5"),
        ("scramuser", "scrampass", "SCRAM-SHA-256$"),
        ("clearuser", "clearpass", "SCRAM"),
    ],
)
def test_password_logins(pg_cluster: PgCluster, user: str, password: str, stored_prefix: str) -> None:
    stored = pg_cluster.sql(0, f"SELECT rolpassword FROM pg_authid WHERE rolname = '{user}'")
    assert stored.startswith(stored_prefix)
    for port in pg_cluster.ports:  # replicas share the roles and pg_hba.conf
        ok = _psql(port, user, password, "SELECT current_user")
        assert ok.returncode == 0, ok.stderr
        assert ok.stdout.strip() == user
        bad = _psql(port, user, password + "-wrong", "SELECT 1")
        assert bad.returncode != 0
        assert "password authentication failed" in bad.stderr


def test_app_db_is_usable_by_every_role(pg_cluster: PgCluster) -> None:
    assert pg_cluster.sql(0, "SELECT current_user", user="app", db="app") == "app"
    create = "CREATE TABLE md5user_probe (x int); DROP TABLE md5user_probe; SELECT 1"
    ok = _psql(pg_cluster.ports[0], "md5user", "md5pass", create)  # CREATE on schema public
    assert ok.returncode == 0, ok.stderr


def test_killed_replica_restarts_and_streams_again(pg_cluster: PgCluster) -> None:
    pg_cluster.kill_instance(2)
    assert not pg_cluster.is_running(2)
    pg_cluster.start_instance(2)
    pg_cluster.wait_ready(2)
    pg_cluster.wait_streaming(timeout=20)
    assert pg_cluster.in_recovery(2)
