"""dbproxy and PgBouncer set up for the benchmark: config files, start, readiness, versions."""

from __future__ import annotations

import hashlib
import os
import pwd
import re
import shutil
import subprocess
import sys
from pathlib import Path

from bench.procs import BenchError, Service, clean_env
from deploy.pgcluster import HOST, PG_OS_USER, pg_binary

REPO_ROOT = Path(__file__).resolve().parent.parent
PGBOUNCER = Path("/usr/sbin/pgbouncer")
DBPROXY_ENDPOINTS = ("writer", "reader", "split")  # all three compared by bench/run.py --endpoints


def dbproxy_config(
    instances: list[int],
    endpoint_ports: dict[str, int],
    user: str,
    password: str,
    pool_size: int,
) -> str:
    """A dbproxy TOML config (SPEC §2): md5 client auth, transaction pooling, no TLS, no admin/http."""
    addrs = ", ".join(f'"{HOST}:{port}"' for port in instances)
    endpoints = "".join(
        f'\n[[clusters.main.endpoints]]\nname   = "{name}"\nlisten = "{HOST}:{port}"\nrole   = "{name}"\n'
        for name, port in endpoint_ports.items()
    )
    return f"""\
# Written by bench/run.py for one benchmark run.

[server]
log_format       = "text"
log_level        = "info"
shutdown_timeout = "2s"

[[users]]
name     = "{user}"
password = "{password}"   # the servers let this role in with trust

[clusters.main]
engine      = "postgres"
instances   = [{addrs}]
client_auth = "md5"
tls         = {{ mode = "disable" }}
server_tls  = {{ mode = "disable" }}

[clusters.main.pool]
mode                   = "transaction"
max_server_connections = {pool_size}
min_idle               = 0
max_client_connections = 10000
prepared_statements    = true
{endpoints}"""


def pgbouncer_ini(workdir: Path, port: int, primary_port: int, database: str, pool_size: int) -> str:
    """A PgBouncer ini: transaction pooling, md5 auth from ``userlist.txt``, files in ``workdir``."""
    return f"""\
; Written by bench/run.py for one benchmark run.
[databases]
{database} = host={HOST} port={primary_port} dbname={database}

[pgbouncer]
listen_addr = {HOST}
listen_port = {port}
unix_socket_dir = {workdir}
pidfile = {workdir / "pgbouncer.pid"}
auth_type = md5
auth_file = {workdir / "userlist.txt"}
pool_mode = transaction
default_pool_size = {pool_size}
min_pool_size = 0
reserve_pool_size = 0
max_client_conn = 10000
max_db_connections = 0
server_tls_sslmode = disable
client_tls_sslmode = disable
"""


def md5_auth_line(user: str, password: str) -> str:
    """A PgBouncer auth_file line with PostgreSQL's md5 hash: "md5" + md5(password + user)."""
    digest = hashlib.md5((password + user).encode()).hexdigest()
    return f'"{user}" "md5{digest}"\n'


def pgbouncer_version() -> tuple[str, tuple[int, ...]]:
    """(first line of `pgbouncer --version`, version numbers) or BenchError if it is not installed."""
    if not PGBOUNCER.exists():
        raise BenchError(
            f"{PGBOUNCER} not found: `apt-get install pgbouncer` (the Makefile's bench target does)"
        )
    res = subprocess.run([str(PGBOUNCER), "--version"], capture_output=True, text=True, check=False)
    line = (res.stdout + res.stderr).strip().splitlines()[0] if (res.stdout + res.stderr).strip() else ""
    m = re.search(r"(\d+)\.(\d+)(?:\.(\d+))?", line)
    if res.returncode != 0 or not m:
        raise BenchError(f"`{PGBOUNCER} --version` failed (exit {res.returncode}): {line!r}")
    return line, tuple(int(part) for part in m.groups() if part is not None)


def pgbouncer_supports_prepared(version: tuple[int, ...]) -> bool:
    """max_prepared_statements (protocol-level prepared statements in transaction mode) came in 1.21."""
    return version >= (1, 21)


def can_query(port: int, user: str, database: str, password: str | None) -> bool:
    """True if `SELECT 1` works on ``HOST:port`` with these credentials."""
    argv = [pg_binary("psql"), "-X", "-At", "-h", HOST, "-p", str(port), "-U", user, "-d", database]
    env = {"PGCONNECT_TIMEOUT": "3"} | ({"PGPASSWORD": password} if password is not None else {})
    try:
        res = subprocess.run(
            [*argv, "-c", "SELECT 1"],
            capture_output=True,
            text=True,
            env=clean_env(env),
            timeout=10,
            stdin=subprocess.DEVNULL,
        )
    except subprocess.TimeoutExpired:
        return False
    return res.returncode == 0 and res.stdout.strip() == "1"


def start_dbproxy(
    workdir: Path,
    instances: list[int],
    endpoint_ports: dict[str, int],
    user: str,
    password: str,
    database: str,
    pool_size: int,
) -> Service:
    """Write the config, start `python -m proxy run` and wait until a query works through the writer."""
    workdir.mkdir(parents=True, exist_ok=True)
    config = workdir / "dbproxy.toml"
    config.write_text(dbproxy_config(instances, endpoint_ports, user, password, pool_size))
    service = Service(
        "dbproxy",
        [sys.executable, "-m", "proxy", "run", "--config", str(config)],
        workdir / "dbproxy.log",
        cwd=REPO_ROOT,
        env={"PYTHONUNBUFFERED": "1"},
    )
    service.start()
    port = endpoint_ports["writer"]
    service.wait_ready(HOST, port, check=lambda: can_query(port, user, database, password))
    return service


def start_pgbouncer(
    workdir: Path, port: int, primary_port: int, user: str, password: str, database: str, pool_size: int
) -> Service:
    """Write ini + auth_file, start PgBouncer as the postgres OS user, wait until a query works."""
    workdir.mkdir(parents=True, exist_ok=True)
    (workdir / "pgbouncer.ini").write_text(pgbouncer_ini(workdir, port, primary_port, database, pool_size))
    (workdir / "userlist.txt").write_text(md5_auth_line(user, password))
    run_as = None
    if os.geteuid() == 0:  # pgbouncer refuses to run as root
        run_as = PG_OS_USER
        pw = pwd.getpwnam(PG_OS_USER)
        workdir.chmod(0o755)
        for path in (workdir, workdir / "pgbouncer.ini", workdir / "userlist.txt"):
            os.chown(path, pw.pw_uid, pw.pw_gid)
        (workdir / "userlist.txt").chmod(0o600)
    service = Service(
        "pgbouncer",
        [str(PGBOUNCER), str(workdir / "pgbouncer.ini")],
        workdir / "pgbouncer.log",
        run_as=run_as,
    )
    service.start()
    service.wait_ready(HOST, port, check=lambda: can_query(port, user, database, password))
    return service


def ensure_py_spy() -> str:
    """Path of py-spy next to this interpreter, pip-installing it into the venv if missing."""
    candidate = Path(sys.executable).parent / "py-spy"
    if candidate.exists():
        return str(candidate)
    found = shutil.which("py-spy")
    if found:
        return found
    print("bench: installing py-spy into the venv for --profile", file=sys.stderr, flush=True)
    res = subprocess.run([sys.executable, "-m", "pip", "install", "-q", "py-spy"], check=False)
    if res.returncode != 0 or not candidate.exists():
        raise BenchError(f"pip install py-spy failed (exit {res.returncode})")
    return str(candidate)
