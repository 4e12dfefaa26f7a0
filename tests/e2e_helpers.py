"""End-to-end test helpers: dbproxy configs in front of the test cluster, module-scoped proxies, clients.

`proxy_config(pg, port, ...)` writes the TOML for a proxy whose endpoint sends everything to the
primary of ``pg_cluster``. Its users (``USERS``) cover every server-side authentication method the
cluster's pg_hba.conf asks for:

========== ============== =============== ====================================
proxy user client secret  server user     server auth (pg_hba of the cluster)
========== ============== =============== ====================================
app        app-secret     app             trust
md5user    md5-secret     md5user         md5 (server_password md5pass)
scramuser  scram-secret   scramuser       SCRAM-SHA-256 (scrampass)
clearuser  clear-secret   clearuser       cleartext "password" (clearpass)
badserver  bad-secret     md5user         md5 with a wrong server password
========== ============== =============== ====================================

`running_proxy(config, directory)` starts ``python -m proxy run`` for a whole test module (the
function-scoped ``proxy_factory`` fixture would restart it for every test).
"""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import socket
import struct
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import asyncpg
from conftest import REPO_ROOT, ProxyProcess, listen_addresses  # tests/ is on sys.path (rootdir conftest)

from deploy.pgcluster import HOST, PgCluster, free_ports, pg_binary
from proxy.engines.postgres.wire.messages import parse_data_row
from proxy.tls.certs import generate


@dataclass(frozen=True)
class ProxyUser:
    """A [[users]] entry: client-facing name/secret and the credentials used towards the servers."""

    name: str
    password: str | None
    server_user: str
    server_password: str | None = None

    def toml(self) -> str:
        lines = ["[[users]]", f"name = {_q(self.name)}"]
        if self.password is not None:
            lines.append(f"password = {_q(self.password)}")
        lines.append(f"server_user = {_q(self.server_user)}")
        if self.server_password is not None:
            lines.append(f"server_password = {_q(self.server_password)}")
        return "\n".join(lines) + "\n"


APP = ProxyUser("app", "app-secret", "app")
MD5 = ProxyUser("md5user", "md5-secret", "md5user", "md5pass")
SCRAM = ProxyUser("scramuser", "scram-secret", "scramuser", "scrampass")
CLEAR = ProxyUser("clearuser", "clear-secret", "clearuser", "clearpass")
BAD_SERVER_PASSWORD = ProxyUser("badserver", "bad-secret", "md5user", "not-the-password")
USERS: tuple[ProxyUser, ...] = (APP, MD5, SCRAM, CLEAR, BAD_SERVER_PASSWORD)
DB = "app"


@dataclass(frozen=True)
class ClusterSpec:
    """One [clusters.NAME] with a single writer endpoint listening on ``port``."""

    name: str
    port: int
    client_auth: str = "md5"
    pool_mode: str = "transaction"
    pool_size: int = 4
    borrow_timeout: str = "20s"
    pool_extra: Mapping[str, str | int | bool] = field(default_factory=dict)

    def toml(self, pg: PgCluster) -> str:
        instances = ", ".join(_q(addr) for addr in pg.instance_addrs())
        pool = {"mode": self.pool_mode, "max_server_connections": self.pool_size, **self.pool_extra}
        pool_lines = "".join(f"{key} = {_value(value)}\n" for key, value in pool.items())
        return (
            f"[clusters.{self.name}]\n"
            'engine = "postgres"\n'
            f"instances = [{instances}]\n"
            f"client_auth = {_q(self.client_auth)}\n"
            "\n"
            f"[clusters.{self.name}.failover]\n"
            f"borrow_timeout = {_q(self.borrow_timeout)}\n"
            "\n"
            f"[clusters.{self.name}.pool]\n"
            f"{pool_lines}"
            "\n"
            f"[[clusters.{self.name}.endpoints]]\n"
            'name = "writer"\n'
            f'listen = "{HOST}:{self.port}"\n'
            'role = "writer"\n'
        )


def proxy_config(
    pg: PgCluster,
    port: int,
    *,
    pool_mode: str = "transaction",
    pool_size: int = 4,
    client_auth: str = "md5",
    users: Sequence[ProxyUser] = USERS,
    pool_extra: Mapping[str, str | int | bool] | None = None,
    more_clusters: Sequence[ClusterSpec] = (),
    log_level: str = "info",
    client_login_timeout: str = "15s",
) -> str:
    """TOML for a proxy in front of ``pg`` (cluster "main" on ``port``, plus ``more_clusters``)."""
    main = ClusterSpec("main", port, client_auth, pool_mode, pool_size, pool_extra=dict(pool_extra or {}))
    parts = [
        "[server]\n"
        f"log_level = {_q(log_level)}\n"
        'shutdown_timeout = "2s"\n'
        f"client_login_timeout = {_q(client_login_timeout)}\n",
        *(user.toml() for user in users),
        *(spec.toml(pg) for spec in (main, *more_clusters)),
    ]
    return "\n".join(parts)


def _q(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _value(value: str | int | bool) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value) if isinstance(value, int) else _q(value)


@dataclass
class EndpointSpec:
    """One [[clusters.main.endpoints]] entry of a routing test's config, on a free port."""

    name: str
    role: str
    port: int = field(default_factory=lambda: free_ports(1)[0])
    extra: str = ""   # more TOML lines (instances, exclude, read_your_writes...)

    def toml(self) -> str:
        return (f'\n[[clusters.main.endpoints]]\nname = "{self.name}"\nlisten = "{HOST}:{self.port}"\n'
                f'role = "{self.role}"\n{self.extra}')


def routing_config(instances: Iterable[str], endpoints: Iterable[EndpointSpec], *, interval_ms: int,
                   pool_size: int, timeout: str = "500ms", failure_threshold: int = 3, max_lag: str = "10s",
                   read_only_functions: Iterable[str] = (), log_level: str = "info") -> str:
    """Cluster "main" over `instances` with trust auth and fast probes, and the given endpoints."""
    listed = ", ".join(f'"{a}"' for a in instances)
    functions = ", ".join(f'"{f}"' for f in read_only_functions)
    return f"""
[server]
log_level = "{log_level}"
shutdown_timeout = "2s"

[[users]]
name = "app"
server_user = "app"

[clusters.main]
engine = "postgres"
instances = [{listed}]
client_auth = "trust"
read_only_functions = [{functions}]

[clusters.main.health]
interval = "{interval_ms}ms"
timeout = "{timeout}"
failure_threshold = {failure_threshold}
max_replica_lag = "{max_lag}"

[clusters.main.failover]
borrow_timeout = "15s"

[clusters.main.pool]
max_server_connections = {pool_size}
""" + "".join(e.toml() for e in endpoints)


# ------------------------------------------------------------------------------ a running proxy


@dataclass
class RunningProxy:
    """A dbproxy subprocess and the port of its (first) endpoint."""

    process: ProxyProcess
    port: int

    def dsn(self, user: ProxyUser = APP, database: str = DB, password: str | None = None) -> str:
        secret = user.password if password is None else password
        return f"postgresql://{user.name}:{secret}@{HOST}:{self.port}/{database}"

    def conninfo(self, user: ProxyUser = APP, database: str = DB, **extra: str) -> str:
        """A libpq conninfo string (psycopg)."""
        parts = {"host": HOST, "port": str(self.port), "user": user.name, "dbname": database,
                 "password": user.password or "", "sslmode": "disable", **extra}
        return " ".join(f"{key}='{value}'" for key, value in parts.items())

    def log_text(self) -> str:
        return self.process.log_text()

    def assert_alive_and_clean(self) -> None:
        """The process still runs and its log holds no traceback."""
        assert self.process.returncode is None, f"dbproxy exited\n{self.process.log_tail()}"
        assert_no_traceback(self.log_text())


def assert_no_traceback(log_text: str) -> None:
    assert "Traceback" not in log_text, f"traceback in the dbproxy log:\n{log_text[-6000:]}"


@contextmanager
def running_proxy(config_text: str, directory: Path, port: int) -> Iterator[RunningProxy]:
    """Start dbproxy with ``config_text`` (files in ``directory``), wait until it listens, stop it after."""
    directory.mkdir(parents=True, exist_ok=True)
    config_path = directory / "dbproxy.toml"
    config_path.write_text(config_text)
    log_path = directory / "dbproxy.log"
    log_file = log_path.open("wb")
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT), env.get("PYTHONPATH")]))
    proc = subprocess.Popen(
        [sys.executable, "-m", "proxy", "run", "--config", str(config_path)],
        stdin=subprocess.DEVNULL, stdout=log_file, stderr=subprocess.STDOUT, cwd=REPO_ROOT, env=env,
    )
    process = ProxyProcess(proc, config_path, log_path, log_file)
    try:
        process.wait_listening(listen_addresses(config_text))
        yield RunningProxy(process, port)
    finally:
        process.stop()


@contextmanager
def module_proxy(pg: PgCluster, directory: Path, **config: object) -> Iterator[RunningProxy]:
    """``running_proxy(proxy_config(pg, <free port>, **config))``: the usual module fixture body."""
    port = free_ports(1)[0]
    with running_proxy(proxy_config(pg, port, **config), directory, port) as proxy:  # type: ignore[arg-type]
        yield proxy


# ------------------------------------------------------------------------------ clients


@contextmanager
def server_certs(os_user: str) -> Iterator[Path]:
    """`dbproxy gen-cert` files a database server running as `os_user` can read: outside pytest's private
    tmp tree, the key owned by that user (servers refuse a key others may read)."""
    out = generate(tempfile.mkdtemp(prefix="dbproxy-certs-"))
    os.chmod(out, 0o755)
    for name in ("server.pem", "ca.pem"):
        os.chmod(out / name, 0o644)
    if os.geteuid() == 0:
        shutil.chown(out / "server-key.pem", os_user, os_user)
    try:
        yield out
    finally:
        shutil.rmtree(out, ignore_errors=True)


def clean_env(**extra: str) -> dict[str, str]:
    """The environment without inherited PG* variables, plus ``extra``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
    env.update(extra)
    return env


def psql(port: int, user: str, password: str | None, sql: str, database: str = DB,
         timeout: float = 30, extra: Sequence[str] = ()) -> subprocess.CompletedProcess[str]:
    """Run ``psql -X -At -c sql`` against 127.0.0.1:port; returns the completed process."""
    env = clean_env(PGCONNECT_TIMEOUT="5", PGSSLMODE="disable")
    if password is not None:
        env["PGPASSWORD"] = password
    argv = [pg_binary("psql"), "-X", "-At", "-v", "ON_ERROR_STOP=1", "-h", HOST, "-p", str(port),
            "-U", user, "-d", database, *extra, "-c", sql]
    return subprocess.run(argv, capture_output=True, text=True, env=env, timeout=timeout,
                          stdin=subprocess.DEVNULL)


def proxy_server_ports(proxy_pid: int, server_port: int) -> set[int]:
    """Local ports of the proxy's TCP connections to ``server_port`` (read from /proc).

    pg_stat_activity.client_port of the proxy's server connections is one of these.
    """
    inodes = set()
    fd_dir = Path(f"/proc/{proxy_pid}/fd")
    for fd in fd_dir.iterdir():
        try:
            target = os.readlink(fd)
        except OSError:
            continue
        match = re.fullmatch(r"socket:\[(\d+)\]", target)
        if match:
            inodes.add(match[1])
    ports = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            local, remote, inode = fields[1], fields[2], fields[9]
            if inode in inodes and int(remote.rsplit(":", 1)[1], 16) == server_port:
                ports.add(int(local.rsplit(":", 1)[1], 16))
    return ports


async def count_proxy_backends(direct: asyncpg.Connection, proxy_pid: int, server_port: int,
                               database: str = DB) -> int:
    """Backends in pg_stat_activity (asked on ``direct``) that are pooled server connections of the
    proxy process to ``database``: the topology probes (database postgres, application_name
    dbproxy-probe) are not counted."""
    ports = proxy_server_ports(proxy_pid, server_port)
    rows = await direct.fetch(
        "SELECT client_port FROM pg_stat_activity WHERE backend_type = 'client backend' AND datname = $1"
        " AND application_name IS DISTINCT FROM 'dbproxy-probe'", database)
    return sum(1 for row in rows if row[0] in ports)


# ------------------------------------------------------------------------------ raw protocol


def startup_packet(user: str, database: str = DB, **params: str) -> bytes:
    body = struct.pack("!I", 196608)
    for key, value in {"user": user, "database": database, **params}.items():
        body += key.encode() + b"\0" + value.encode() + b"\0"
    body += b"\0"
    return struct.pack("!I", len(body) + 4) + body


def message(kind: bytes, body: bytes = b"") -> bytes:
    return kind + struct.pack("!I", len(body) + 4) + body


def query_message(sql: str) -> bytes:
    return message(b"Q", sql.encode() + b"\0")


class RawClient:
    """A blocking PostgreSQL client on a plain socket for the bad-input tests (trust auth only)."""

    def __init__(self, port: int, timeout: float = 10.0) -> None:
        self.sock = socket.create_connection((HOST, port), timeout=timeout)
        self.local_port: int = self.sock.getsockname()[1]   # how the proxy's log names this client
        self.buf = b""

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def read_message(self) -> tuple[bytes, bytes] | None:
        """The next message (type, body), or None at EOF."""
        while True:
            if len(self.buf) >= 5:
                length = struct.unpack_from("!I", self.buf, 1)[0]
                if len(self.buf) >= 1 + length:
                    kind, body = self.buf[:1], self.buf[5:1 + length]
                    self.buf = self.buf[1 + length:]
                    return kind, body
            chunk = self.sock.recv(65536)
            if not chunk:
                return None
            self.buf += chunk

    def read_until_ready(self) -> list[tuple[bytes, bytes]]:
        """Messages up to and including ReadyForQuery (or EOF)."""
        out = []
        while True:
            msg = self.read_message()
            if msg is None:
                return out
            out.append(msg)
            if msg[0] == b"Z":
                return out

    def login(self, user: str = "app", database: str = DB) -> list[tuple[bytes, bytes]]:
        self.send(startup_packet(user, database))
        messages = self.read_until_ready()
        assert messages and messages[-1][0] == b"Z", f"login failed: {messages}"
        assert (b"R", struct.pack("!I", 0)) in messages
        return messages

    def query(self, sql: str) -> list[tuple[bytes, bytes]]:
        self.send(query_message(sql))
        return self.read_until_ready()

    def read_all_until_eof(self, timeout: float = 10.0) -> bytes:
        """Everything the peer sends until it closes (raises TimeoutError if it does not)."""
        self.sock.settimeout(timeout)
        data, self.buf = self.buf, b""
        while True:
            try:
                chunk = self.sock.recv(65536)
            except ConnectionResetError:
                return data
            if not chunk:
                return data
            data += chunk

    def close(self) -> None:
        self.sock.close()


def data_rows(messages: list[tuple[bytes, bytes]]) -> list[list[str | None]]:
    """Text values of every DataRow in ``messages``."""
    return [parse_data_row(body) for kind, body in messages if kind == b"D"]


def error_fields(body: bytes) -> dict[str, str]:
    """ErrorResponse / NoticeResponse fields by their one-letter code."""
    fields = {}
    for part in body.split(b"\0"):
        if part:
            fields[chr(part[0])] = part[1:].decode(errors="replace")
    return fields


def first_error(messages: list[tuple[bytes, bytes]] | bytes) -> dict[str, str] | None:
    """The fields of the first ErrorResponse in ``messages`` (or in raw bytes), if any."""
    if isinstance(messages, bytes):
        parsed, pos = [], 0
        while len(messages) - pos >= 5 and messages[pos:pos + 1].isalpha():
            length = struct.unpack_from("!I", messages, pos + 1)[0]
            parsed.append((messages[pos:pos + 1], messages[pos + 5:pos + 1 + length]))
            pos += 1 + length
        messages = parsed
    for kind, body in messages:
        if kind == b"E":
            return error_fields(body)
    return None


@contextmanager
def app_database(pg: PgCluster, name: str, setup: str) -> Iterator[str]:
    """A fresh database `name` owned by app on instance 0, `setup` run in it as app; dropped afterwards."""
    pg.sql(0, f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
    pg.sql(0, f"CREATE DATABASE {name} OWNER app")
    pg.sql(0, setup, user="app", db=name)
    try:
        yield name
    finally:
        pg.sql(0, f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


def single_value(client: RawClient, sql: str) -> str | None:
    """The one value of the one row `sql` returns through `client` (no error allowed)."""
    replies = client.query(sql)
    assert first_error(replies) is None, first_error(replies)
    rows = data_rows(replies)
    assert len(rows) == 1, replies
    return rows[0][0]


async def send_cancel_request(port: int, pid: int, key: int) -> bytes:
    """Send a CancelRequest on a new connection, as libpq does; returns what the peer sent back."""
    reader, writer = await asyncio.open_connection(HOST, port)
    # Drivers may keep the key data as signed 32-bit integers (asyncpg does): send the same bits.
    writer.write(struct.pack("!IIII", 16, 80877102, pid & 0xFFFFFFFF, key & 0xFFFFFFFF))
    await writer.drain()
    reply = await asyncio.wait_for(reader.read(), 5)
    writer.close()
    return reply


# ------------------------------------------------------------------------------ waiting


def wait_until(predicate, timeout: float = 10.0, interval: float = 0.05, what: str = "condition"):  # type: ignore[no-untyped-def]
    """Poll ``predicate()`` until it returns a truthy value; returns it (AssertionError on timeout)."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} not reached within {timeout}s (last value {value!r})")
        time.sleep(interval)


async def async_wait_until(predicate, timeout: float = 10.0, interval: float = 0.05,  # type: ignore[no-untyped-def]
                           what: str = "condition"):
    deadline = time.monotonic() + timeout
    while True:
        value = await predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} not reached within {timeout}s (last value {value!r})")
        await asyncio.sleep(interval)
