"""End to end: a MySQL client logging in while its cluster has no writer gets a readable error."""

from __future__ import annotations

from pathlib import Path

import pymysql
import pytest
from e2e_helpers import running_proxy
from mysql_e2e_helpers import mariadb_cli

from deploy.pgcluster import HOST, free_ports


def test_login_without_a_writer_names_the_problem(tmp_path: Path) -> None:
    port, dead = free_ports(2)   # nothing listens on `dead`
    config = f"""
[server]
log_level = "info"
[[users]]
name = "app"
password = "app-pass"
[clusters.my]
engine = "mysql"
instances = ["{HOST}:{dead}"]
[clusters.my.failover]
borrow_timeout = "1s"
[[clusters.my.endpoints]]
name = "writer"
listen = "{HOST}:{port}"
role = "writer"
"""
    with running_proxy(config, tmp_path, port) as proxy:
        # Connector/C (the mariadb CLI) turns a client error number (2013) in the login's answer into
        # "ERROR 2027 Received malformed packet": the proxy answers ER_UNKNOWN_ERROR with its words.
        out = mariadb_cli(port, "SELECT 1", database=None, extra=["--skip-ssl"])
        assert out.returncode != 0
        assert "ERROR 1105 (HY000)" in out.stderr and "has no available writer" in out.stderr, out.stderr
        with pytest.raises(pymysql.err.OperationalError) as info:
            pymysql.connect(host=HOST, port=port, user="app", password="app-pass", connect_timeout=5)
        assert info.value.args[0] == 1105 and "no available writer" in info.value.args[1]
        proxy.assert_alive_and_clean()
