"""deploy/compose's shell scripts: shellcheck on every one, and the MariaDB primary's init script run
for real against a MariaDB primary + replica: the probe login it makes replicates, logs in with a
password full of quotes and backslashes, and may run the queries dbproxy's MySQL probe runs."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pymysql
import pytest
from deploy_helpers import DEPLOY, run

from deploy.mysqlcluster import HOST, MysqlCluster
from proxy.engines.mysql.probe import MARIADB_SQL, SLAVE_STATUS_SQL

SCRIPTS = sorted(DEPLOY.glob("compose/**/*.sh")) + sorted(DEPLOY.glob("docker/*.sh"))
MARIADB_INIT = DEPLOY / "compose" / "mariadb" / "primary-init.sh"
TEST_USER = "deploy_check_monitor"   # the script's dbproxy_monitor exists in the shared test cluster already


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: str(p.relative_to(DEPLOY)))
def test_shell_scripts_pass_shellcheck(script: Path) -> None:
    shellcheck = shutil.which("shellcheck")
    if shellcheck is None:
        pytest.skip("needs shellcheck (apt install shellcheck; make install does)")
    shell = "sh" if script.read_text().startswith("#!/bin/sh") else "bash"
    proc = run([shellcheck, "--shell", shell, "--severity", "style", str(script)], timeout=30)
    assert proc.returncode == 0, proc.stdout


def test_mariadb_init_script_makes_a_probe_login_that_replicates(mysql_cluster: MysqlCluster,
                                                                 tmp_path: Path) -> None:
    script = tmp_path / "primary-init.sh"
    script.write_text(MARIADB_INIT.read_text().replace("dbproxy_monitor", TEST_USER))
    script.chmod(0o755)
    primary = mysql_cluster.primary_index()
    assert primary is not None
    replicas = [i for i in range(len(mysql_cluster.ports)) if i != primary]
    password = "it's a \\ \"test\" pw"
    env = {**os.environ, "DBPROXY_MONITOR_PASSWORD": password, "MARIADB_ROOT_PASSWORD": "",
           "MYSQL_UNIX_PORT": str(mysql_cluster.instance_dir(primary) / "mysqld.sock")}
    try:
        proc = run([str(script)], env=env, timeout=30)   # executable: the image's entrypoint runs it so
        assert proc.returncode == 0, proc.stderr
        mysql_cluster.wait_replicated()
        for i in (primary, *replicas):
            conn = pymysql.connect(host=HOST, port=mysql_cluster.ports[i], user=TEST_USER, password=password,
                                   connect_timeout=5)
            try:
                with conn.cursor() as cursor:
                    cursor.execute(MARIADB_SQL)
                    read_only, _, _ = cursor.fetchone()
                    assert read_only == (0 if i == primary else 1)
                    cursor.execute(SLAVE_STATUS_SQL)       # needs SLAVE MONITOR
                    assert (cursor.fetchone() is None) == (i == primary)
            finally:
                conn.close()
    finally:
        mysql_cluster.query(primary, f"DROP USER IF EXISTS '{TEST_USER}'@'%'", admin=True)
