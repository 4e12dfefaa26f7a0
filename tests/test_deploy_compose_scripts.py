"""deploy/compose's shell scripts: shellcheck on every one, and the database scripts run for real:

- the PostgreSQL primary's init script and the replica's entrypoint, on servers set up the way the
  postgres image sets them up (initdb with the superuser app, the image's pg_hba: only
  `host all all all scram-sha-256` for TCP): the replica clones the primary over a replication login
  that only the script's pg_hba line admits, and then streams;
- the MariaDB primary's init script against a MariaDB primary + replica: the probe login it makes
  replicates, logs in with a password full of quotes and backslashes, and may run the queries dbproxy's
  MySQL probe runs."""

from __future__ import annotations

import os
import pwd
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pymysql
import pytest
from deploy_helpers import DEPLOY, run

from deploy.mysqlcluster import HOST, MysqlCluster
from deploy.pgcluster import accepts_tcp, free_ports
from proxy.engines.mysql.probe import MARIADB_SQL, SLAVE_STATUS_SQL

SCRIPTS = sorted(DEPLOY.glob("compose/**/*.sh")) + sorted(DEPLOY.glob("docker/*.sh"))
MARIADB_INIT = DEPLOY / "compose" / "mariadb" / "primary-init.sh"
PG_INIT = DEPLOY / "compose" / "postgres" / "primary-init.sh"
PG_REPLICA_ENTRYPOINT = DEPLOY / "compose" / "postgres" / "replica-entrypoint.sh"
PG_BIN = Path("/usr/lib/postgresql/15/bin")
# pg_hba.conf as the postgres image leaves it for a replica in another container: initdb's lines for
# local sockets, and the image's catch-all for TCP (no replication line: primary-init.sh adds it)
IMAGE_HBA = "local all all trust\nlocal replication all trust\nhost all all all scram-sha-256\n"
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


@pytest.fixture
def pg_dirs() -> Iterator[Path]:
    """A directory the postgres OS user owns (the servers run as postgres, as in the image)."""
    base = Path(tempfile.mkdtemp(prefix="dbproxy-deploy-pg-"))
    user = pwd.getpwnam("postgres")
    os.chown(base, user.pw_uid, user.pw_gid)
    try:
        yield base
    finally:
        for data in ("primary", "replica"):
            if (base / data / "postmaster.pid").exists():
                subprocess.run(["runuser", "-u", "postgres", "--", str(PG_BIN / "pg_ctl"), "-D", str(base / data),
                                "-m", "immediate", "stop"], capture_output=True, timeout=30)
        shutil.rmtree(base, ignore_errors=True)


def as_postgres(*argv: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return run(["runuser", "-u", "postgres", "--", *argv], env=env, timeout=60)


def test_postgres_scripts_make_a_streaming_replica(pg_dirs: Path) -> None:
    primary_port, replica_port = free_ports(2)
    primary, replica = pg_dirs / "primary", pg_dirs / "replica"
    secrets = {"POSTGRES_PASSWORD": "app-'pw", "REPLICATION_PASSWORD": "repl-'pw\\x"}
    pwfile = pg_dirs / "pw"
    pwfile.write_text(secrets["POSTGRES_PASSWORD"] + "\n")
    os.chown(pwfile, pwd.getpwnam("postgres").pw_uid, -1)
    init = as_postgres(str(PG_BIN / "initdb"), "--no-sync", "-D", str(primary), "--username=app", f"--pwfile={pwfile}")
    assert init.returncode == 0, init.stderr
    (primary / "pg_hba.conf").write_text(IMAGE_HBA)
    started = as_postgres(str(PG_BIN / "pg_ctl"), "-D", str(primary), "-w", "-l", str(pg_dirs / "primary.log"),
                          "-o", f"-p {primary_port} -k {pg_dirs} -c listen_addresses=127.0.0.1 -c fsync=off",
                          "start")
    assert started.returncode == 0, started.stderr
    # the image runs docker-entrypoint-initdb.d scripts against its socket-only temporary server
    env = {**os.environ, **secrets, "POSTGRES_USER": "app", "POSTGRES_DB": "postgres", "PGDATA": str(primary),
           "PGHOST": str(pg_dirs), "PGPORT": str(primary_port), "PATH": f"{PG_BIN}:{os.environ['PATH']}"}
    script = as_postgres("bash", str(PG_INIT), env=env)
    assert script.returncode == 0, script.stderr
    assert as_postgres(str(PG_BIN / "pg_ctl"), "-D", str(primary), "reload").returncode == 0
    psql = [str(PG_BIN / "psql"), "-X", "-At", "-h", str(pg_dirs), "-p", str(primary_port), "-U", "app", "postgres"]
    assert as_postgres(*psql, "-c", "CREATE TABLE t AS SELECT 1 AS before_clone").returncode == 0

    # the replica's entrypoint, with gosu played by runuser and postgres' own PGPORT for its port
    shim = pg_dirs / "bin"
    shim.mkdir()
    (shim / "gosu").write_text('#!/bin/sh\nuser=$1; shift; exec runuser -u "$user" -- "$@"\n')
    (shim / "gosu").chmod(0o755)
    replica_env = {**os.environ, "PGDATA": str(replica), "PRIMARY_HOST": "127.0.0.1",
                   "PRIMARY_PORT": str(primary_port), "REPLICATION_PASSWORD": secrets["REPLICATION_PASSWORD"],
                   "PGPORT": str(replica_port), "PATH": f"{shim}:{PG_BIN}:{os.environ['PATH']}"}
    log = (pg_dirs / "replica.log").open("wb")
    proc = subprocess.Popen(["bash", str(PG_REPLICA_ENTRYPOINT)], env=replica_env, stdout=log,
                            stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                            start_new_session=True)
    try:
        deadline = time.monotonic() + 60
        while not accepts_tcp("127.0.0.1", replica_port):
            assert proc.poll() is None, (pg_dirs / "replica.log").read_text()[-3000:]
            assert time.monotonic() < deadline, (pg_dirs / "replica.log").read_text()[-3000:]
            time.sleep(0.2)
        on_replica = [str(PG_BIN / "psql"), "-X", "-At", "-h", "127.0.0.1", "-p", str(replica_port), "-U", "app",
                      "postgres"]
        replica_env_pw = {**os.environ, "PGPASSWORD": secrets["POSTGRES_PASSWORD"]}
        deadline = time.monotonic() + 30
        while (out := run([*on_replica, "-c", "SELECT pg_is_in_recovery()"], env=replica_env_pw)).stdout.strip() != "t":
            assert time.monotonic() < deadline, out.stderr
            time.sleep(0.2)
        assert as_postgres(*psql, "-c", "INSERT INTO t VALUES (2)").returncode == 0
        deadline = time.monotonic() + 30
        while run([*on_replica, "-c", "SELECT sum(before_clone) FROM t"], env=replica_env_pw).stdout.strip() != "3":
            assert time.monotonic() < deadline, "the replica does not stream the primary's writes"
            time.sleep(0.2)
        senders = as_postgres(*psql, "-c", "SELECT usename || ' ' || state FROM pg_stat_replication")
        assert senders.stdout.strip() == "replicator streaming"
        # without the script's pg_hba line the replication login is refused (the check above can fail)
        (primary / "pg_hba.conf").write_text(IMAGE_HBA)
        assert as_postgres(str(PG_BIN / "pg_ctl"), "-D", str(primary), "reload").returncode == 0
        refused = run([str(PG_BIN / "pg_basebackup"), "-h", "127.0.0.1", "-p", str(primary_port), "-U", "replicator",
                       "-D", str(pg_dirs / "refused"), "-X", "none"],
                      env={**os.environ, "PGPASSWORD": secrets["REPLICATION_PASSWORD"]})
        assert refused.returncode != 0 and "no pg_hba.conf entry for replication" in refused.stderr
    finally:
        os.killpg(proc.pid, signal.SIGINT)   # fast shutdown of the replica
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        log.close()
