"""`make demo`: a local PostgreSQL primary + 2 replicas and a MariaDB primary + replica, dbproxy in front of both.

python -m deploy.demo [start]   start (or reuse) everything in ./.demo and print how to connect
python -m deploy.demo status    what is running
python -m deploy.demo stop      stop dbproxy and the database servers (data is kept)
python -m deploy.demo destroy   stop, then delete ./.demo
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from deploy.mysqlcluster import MONITOR_PASSWORD, MONITOR_USER, MysqlCluster, MysqlClusterError
from deploy.pgcluster import HOST, PgCluster, PgClusterError, accepts_tcp, pid_alive

REPO_ROOT = Path(__file__).resolve().parent.parent
DEMO_DIR = REPO_ROOT / ".demo"
PG_DIR = DEMO_DIR / "pg"
MYSQL_DIR = DEMO_DIR / "mysql"
CONFIG_PATH = DEMO_DIR / "dbproxy.toml"
LOG_PATH = DEMO_DIR / "dbproxy.log"
PID_PATH = DEMO_DIR / "dbproxy.pid"
CERT_DIR = DEMO_DIR / "certs"   # `dbproxy gen-cert`: a private CA and the proxy's certificate

# Below the kernel's ephemeral range (32768-60999): an outgoing connection cannot be holding them.
PG_PORTS = [25432, 25433, 25434]
ENDPOINTS = [("writer", 6432, "writer"), ("reader", 6433, "reader"), ("app", 6434, "split")]
MYSQL_PORTS = [23306, 23307]
MYSQL_ENDPOINTS = [("writer", 6306, "writer"), ("reader", 6307, "reader")]
ADMIN_PORT = 6400
HTTP_PORT = 9930
START_TIMEOUT = 15.0
STOP_TIMEOUT = 10.0


def render_config() -> str:
    """The demo's dbproxy.toml: every section of SPEC §2, spelled out."""
    instances = ", ".join(f'"{HOST}:{port}"' for port in PG_PORTS)
    endpoints = "".join(
        f'\n[[clusters.main.endpoints]]\nname   = "{name}"\nlisten = "{HOST}:{port}"\nrole   = "{role}"\n'
        for name, port, role in ENDPOINTS
    )
    mysql_instances = ", ".join(f'"{HOST}:{port}"' for port in MYSQL_PORTS)
    mysql_endpoints = "".join(
        f'\n[[clusters.shop.endpoints]]\nname   = "{name}"\nlisten = "{HOST}:{port}"\nrole   = "{role}"\n'
        for name, port, role in MYSQL_ENDPOINTS
    )
    return f"""\
# Written by `python -m deploy.demo` (make demo); rewritten on every start.
# Servers: PostgreSQL {", ".join(f"{HOST}:{port}" for port in PG_PORTS)} (primary first), see .demo/pg;
#          MariaDB {", ".join(f"{HOST}:{port}" for port in MYSQL_PORTS)} (primary first), see .demo/mysql.

[server]
admin_listen = "{HOST}:{ADMIN_PORT}"
http_listen  = "{HOST}:{HTTP_PORT}"
log_format   = "text"
log_level    = "info"

[[users]]
name     = "app"
password = "app-secret"     # the demo servers let role `app` in with trust: no server password needed

[[users]]
name     = "shop"
password = "app-pass"       # logs in to the MariaDB servers as `app` with the same password
server_user = "app"

[[users]]
name     = "admin"
password = "admin-secret"
admin    = true

[clusters.main]
engine      = "postgres"
instances   = [{instances}]
client_auth = "scram-sha-256"
tls         = {{ mode = "prefer", cert = "{CERT_DIR}/server.pem", key = "{CERT_DIR}/server-key.pem" }}
server_tls  = {{ mode = "disable" }}

[clusters.main.health]
interval          = "500ms"
timeout           = "1s"
failure_threshold = 3
max_replica_lag   = "10s"

[clusters.main.failover]
mode           = "follow"   # "promote" to have dbproxy promote a replica when the primary dies
promote_after  = "3s"
borrow_timeout = "30s"

[clusters.main.pool]
mode                   = "transaction"
max_server_connections = 20
min_idle               = 0
idle_timeout           = "5m"
max_lifetime           = "1h"
connect_timeout        = "2s"
max_client_connections = 10000
client_idle_timeout    = "0s"
init_query             = ""
prepared_statements    = true
{endpoints}
# A MariaDB cluster: roles from the probes (read_only, replication), failover like PostgreSQL's.
[clusters.shop]
engine      = "mysql"
instances   = [{mysql_instances}]
client_auth = "mysql_native_password"
tls         = {{ mode = "prefer", cert = "{CERT_DIR}/server.pem", key = "{CERT_DIR}/server-key.pem" }}

[clusters.shop.health]
user     = "{MONITOR_USER}"
password = "{MONITOR_PASSWORD}"

[clusters.shop.pool]
mode                   = "transaction"
max_server_connections = 20
{mysql_endpoints}"""


def proxy_addrs() -> list[tuple[str, int]]:
    return ([(HOST, port) for _, port, _ in ENDPOINTS + MYSQL_ENDPOINTS]
            + [(HOST, ADMIN_PORT), (HOST, HTTP_PORT)])


def dbproxy_command() -> list[str]:
    """The venv's `dbproxy` script next to this interpreter, else `python -m proxy`."""
    script = Path(sys.executable).parent / "dbproxy"
    return [str(script)] if script.exists() else [sys.executable, "-m", "proxy"]


def running_proxy_pid() -> int | None:
    try:
        pid = int(PID_PATH.read_text().strip())
    except (OSError, ValueError):
        return None
    return pid if pid_alive(pid) else None


def log_tail(lines: int = 30) -> str:
    try:
        return "\n".join(LOG_PATH.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def start() -> int:
    DEMO_DIR.mkdir(exist_ok=True)
    DEMO_DIR.chmod(0o755)  # the postgres OS user must reach .demo/pg
    print(f"PostgreSQL: primary + 2 replicas on ports {PG_PORTS} in {PG_DIR} ...", flush=True)
    PgCluster(PG_DIR, PG_PORTS).start()
    print(f"MariaDB: primary + 1 replica on ports {MYSQL_PORTS} in {MYSQL_DIR} ...", flush=True)
    (MysqlCluster.load(MYSQL_DIR) if (MYSQL_DIR / "cluster.json").exists()
     else MysqlCluster(MYSQL_DIR, MYSQL_PORTS)).start()

    pid = running_proxy_pid()
    if pid is not None:
        print(f"dbproxy already running (pid {pid})")
        print_usage(pid)
        return 0
    busy = [f"{host}:{port}" for host, port in proxy_addrs() if accepts_tcp(host, port)]
    if busy:
        print(f"demo: {', '.join(busy)} already in use by something else; free them first", file=sys.stderr)
        return 1

    if not (CERT_DIR / "server.pem").exists():
        from proxy.tls.certs import generate

        generate(CERT_DIR)
        print(f"TLS: a private CA and the proxy's certificate in {CERT_DIR.relative_to(REPO_ROOT)}", flush=True)
    CONFIG_PATH.write_text(render_config())
    argv = [*dbproxy_command(), "run", "--config", str(CONFIG_PATH)]
    print(f"dbproxy: {' '.join(argv)}", flush=True)
    with LOG_PATH.open("ab") as log:
        proc = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=REPO_ROOT,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
            start_new_session=True,  # outlives `make demo`; stopped by `make demo-stop`
        )
    PID_PATH.write_text(f"{proc.pid}\n")
    deadline = time.monotonic() + START_TIMEOUT
    pending = proxy_addrs()
    while pending:
        if proc.poll() is not None:
            print(
                f"demo: dbproxy exited with code {proc.returncode}; {LOG_PATH}:\n{log_tail()}",
                file=sys.stderr,
            )
            return 1
        if time.monotonic() > deadline:
            print(
                f"demo: dbproxy not listening on {pending} after {START_TIMEOUT}s:\n{log_tail()}",
                file=sys.stderr,
            )
            return 1
        time.sleep(0.1)
        pending = [addr for addr in pending if not accepts_tcp(*addr)]
    print_usage(proc.pid)
    return 0


def print_usage(pid: int) -> None:
    psql = f"PGPASSWORD=app-secret psql -h {HOST}"
    ca = CERT_DIR.relative_to(REPO_ROOT) / "ca.pem"
    print(
        f"""
dbproxy is running (pid {pid}, log {LOG_PATH.relative_to(REPO_ROOT)}, config {CONFIG_PATH.relative_to(REPO_ROOT)})

  writer  (primary)             {psql} -p 6432 -U app app
  reader  (replicas)            {psql} -p 6433 -U app app
  split   (reads to replicas)   {psql} -p 6434 -U app app
  writer over verified TLS      PGPASSWORD=app-secret psql "host=localhost port=6432 user=app dbname=app sslmode=verify-full sslrootcert={ca}"
  admin console                 PGPASSWORD=admin-secret psql -h {HOST} -p {ADMIN_PORT} -U admin dbproxy
  metrics / status              curl http://{HOST}:{HTTP_PORT}/metrics   open http://{HOST}:{HTTP_PORT}/
  pgbench through the writer    PGPASSWORD=app-secret pgbench -h {HOST} -p 6432 -U app -i app
                                PGPASSWORD=app-secret pgbench -h {HOST} -p 6432 -U app -c 50 -T 10 app

  MariaDB writer (primary)      mariadb -h {HOST} -P 6306 -u shop -papp-pass app
  MariaDB reader (replica)      mariadb -h {HOST} -P 6307 -u shop -papp-pass app
  MariaDB writer over TLS       mariadb -h localhost --protocol=TCP -P 6306 -u shop -papp-pass --ssl-ca={ca} --ssl-verify-server-cert app

  servers                       python -m deploy.pgcluster status --dir .demo/pg
  crash the primary             python -m deploy.pgcluster kill --dir .demo/pg --index 0
  promote a replica             python -m deploy.pgcluster promote --dir .demo/pg --index 1
  MariaDB servers               python -m deploy.mysqlcluster status --dir .demo/mysql

stop with `make demo-stop` (python -m deploy.demo stop); delete everything with `python -m deploy.demo destroy`
"""
    )


def stop_proxy() -> None:
    pid = running_proxy_pid()
    if pid is not None:
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + STOP_TIMEOUT
        while pid_alive(pid) and time.monotonic() < deadline:
            time.sleep(0.1)
        if pid_alive(pid):
            print(f"dbproxy (pid {pid}) ignored SIGTERM for {STOP_TIMEOUT}s: killing it")
            os.kill(pid, signal.SIGKILL)
        print(f"dbproxy (pid {pid}) stopped")
    PID_PATH.unlink(missing_ok=True)


def stop() -> int:
    stop_proxy()
    if (PG_DIR / "cluster.json").exists():
        PgCluster.load(PG_DIR).stop()
        print("PostgreSQL servers stopped (data kept in .demo/pg)")
    if (MYSQL_DIR / "cluster.json").exists():
        MysqlCluster.load(MYSQL_DIR).stop()
        print("MariaDB servers stopped (data kept in .demo/mysql)")
    return 0


def status() -> int:
    pid = running_proxy_pid()
    print(f"dbproxy: {'running, pid ' + str(pid) if pid else 'not running'}")
    if (PG_DIR / "cluster.json").exists():
        subprocess.run(
            [sys.executable, "-m", "deploy.pgcluster", "status", "--dir", str(PG_DIR)], check=False
        )
    if (MYSQL_DIR / "cluster.json").exists():
        subprocess.run(
            [sys.executable, "-m", "deploy.mysqlcluster", "status", "--dir", str(MYSQL_DIR)], check=False
        )
    return 0


def destroy() -> int:
    stop_proxy()
    if (PG_DIR / "cluster.json").exists():
        PgCluster.load(PG_DIR).destroy()
    if (MYSQL_DIR / "cluster.json").exists():
        MysqlCluster.load(MYSQL_DIR).destroy()
    shutil.rmtree(DEMO_DIR, ignore_errors=True)
    print("removed .demo")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m deploy.demo", description=__doc__.splitlines()[0])
    parser.add_argument("command", nargs="?", default="start", choices=["start", "stop", "status", "destroy"])
    args = parser.parse_args(argv)
    commands = {"start": start, "stop": stop, "status": status, "destroy": destroy}
    try:
        return commands[args.command]()
    except (PgClusterError, MysqlClusterError) as exc:
        print(f"demo: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
