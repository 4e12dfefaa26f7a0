"""dbproxy and PgBouncer set up for the benchmark: config files, start, readiness, versions."""

from __future__ import annotations

import hashlib
import os
import pwd
import re
import shutil
import subprocess
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from bench.procs import BenchError, Service, clean_env
from deploy.pgcluster import HOST, PG_OS_USER, pg_binary

REPO_ROOT = Path(__file__).resolve().parent.parent
PGBOUNCER = Path("/usr/sbin/pgbouncer")
DBPROXY_ENDPOINTS = ("writer", "reader", "split")  # all three compared by bench/run.py --endpoints


@dataclass(frozen=True)
class DbproxyCluster:
    """One [clusters.<name>] of the benchmark's dbproxy config: its instances and an endpoint per role.

    Two clusters may list the same instance (proxy/config/ only rejects an address listed twice in
    one list): bench/run.py's "solo" cluster lists only the primary that "main" also lists.
    """

    name: str
    instances: tuple[int, ...]  # PostgreSQL ports, the primary first
    endpoint_ports: dict[str, int]  # endpoint name (its role: writer, reader, split) -> listen port


def dbproxy_config(clusters: Sequence[DbproxyCluster], user: str, password: str, pool_size: int,
                   server_extra: str = "") -> str:
    """A dbproxy TOML config (SPEC §2): md5 client auth, transaction pooling, no TLS, no admin/http;
    ``server_extra``: more [server] lines (bench/suite.py: ``workers = 2``)."""
    return f"""\
# Written by bench/run.py for one benchmark run.

[server]
log_format       = "text"
log_level        = "info"
shutdown_timeout = "2s"
{server_extra}
[[users]]
name     = "{user}"
password = "{password}"   # the servers let this role in with trust
{"".join(_cluster_section(cluster, pool_size) for cluster in clusters)}"""


def _cluster_section(cluster: DbproxyCluster, pool_size: int) -> str:
    """One cluster's TOML: the same auth, TLS and pool settings for every cluster of the benchmark."""
    key = f"clusters.{cluster.name}"
    addrs = ", ".join(f'"{HOST}:{port}"' for port in cluster.instances)
    endpoints = "".join(
        f'\n[[{key}.endpoints]]\nname   = "{name}"\nlisten = "{HOST}:{port}"\nrole   = "{name}"\n'
        for name, port in cluster.endpoint_ports.items()
    )
    return f"""
[{key}]
engine      = "postgres"
instances   = [{addrs}]
client_auth = "md5"
tls         = {{ mode = "disable" }}
server_tls  = {{ mode = "disable" }}

[{key}.pool]
mode                   = "transaction"
max_server_connections = {pool_size}
min_idle               = 0
max_client_connections = 20000   # bench/suite.py holds 10,000 idle clients beside pgbench (workers: shares)
prepared_statements    = true
{endpoints}"""


def pgbouncer_ini(workdir: Path, port: int, primary_port: int, database: str, pool_size: int,
                  client_tls: tuple[Path, Path] | None = None) -> str:
    """A PgBouncer ini: transaction pooling, md5 auth from ``userlist.txt``, files in ``workdir``;
    ``client_tls`` (certificate, key): ``client_tls_sslmode = require`` with them (bench/tls.py)."""
    tls = ("client_tls_sslmode = disable\n" if client_tls is None else
           f"client_tls_sslmode = require\nclient_tls_cert_file = {client_tls[0]}\nclient_tls_key_file = {client_tls[1]}\n")
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
max_client_conn = 20000
max_db_connections = 0
server_tls_sslmode = disable
{tls}"""


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
    clusters: Sequence[DbproxyCluster],
    user: str,
    password: str,
    database: str,
    pool_size: int,
    server_extra: str = "",
) -> Service:
    """Write the config, start `python -m proxy run` and wait until a query works through every endpoint."""
    workdir.mkdir(parents=True, exist_ok=True)
    config = workdir / "dbproxy.toml"
    config.write_text(dbproxy_config(clusters, user, password, pool_size, server_extra))
    service = Service(
        "dbproxy",
        [sys.executable, "-m", "proxy", "run", "--config", str(config)],
        workdir / "dbproxy.log",
        cwd=REPO_ROOT,
        env={"PYTHONUNBUFFERED": "1"},
    )
    service.start()
    for cluster in clusters:
        for port in cluster.endpoint_ports.values():
            service.wait_ready(HOST, port, check=query_check(port, user, database, password))
    return service


def query_check(port: int, user: str, database: str, password: str | None) -> Callable[[], bool]:
    """A readiness check for Service.wait_ready: can_query with these arguments."""
    return lambda: can_query(port, user, database, password)


def start_pgbouncer(
    workdir: Path, port: int, primary_port: int, user: str, password: str, database: str, pool_size: int,
    client_tls: tuple[Path, Path] | None = None,
) -> Service:
    """Write ini + auth_file, start PgBouncer as the postgres OS user, wait until a query works
    (``client_tls``: see pgbouncer_ini; the postgres OS user must be able to read the key)."""
    workdir.mkdir(parents=True, exist_ok=True)
    (workdir / "pgbouncer.ini").write_text(pgbouncer_ini(workdir, port, primary_port, database, pool_size,
                                                         client_tls))
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
