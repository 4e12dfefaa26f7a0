"""End-to-end helpers for the MySQL engine: a dbproxy in front of ``mysql_cluster``, and its clients.

`mysql_proxy_config(cluster, port, ...)` writes the TOML of a proxy whose cluster "my" (engine
mysql, client_auth mysql_native_password) has a writer endpoint on ``port`` (and a reader endpoint
when ``reader_port`` is given), the proxy users

========== ============ ============= ==================================================
proxy user password     server user   what for
========== ============ ============= ==================================================
app        app-pass     app/app-pass  every client (server_password defaults to password)
admin      admin-pass   admin         the admin console (PostgreSQL protocol, admin_listen)
========== ============ ============= ==================================================

and an admin console on ``admin_port``. `mysql_module_proxy(cluster, directory, **config)` runs it
for a whole module (see e2e_helpers.running_proxy). Clients: PyMySQL connections through the proxy
(`connect`) or straight to the primary as root (`direct`), the ``mariadb`` CLI (`mariadb_cli`), the
admin console's tables (`admin_rows`), and the proxy's server connections as the primary sees them
(`proxy_threads`).
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
import pymysql
from e2e_helpers import RunningProxy, assert_no_traceback, running_proxy, wait_until

from deploy.mysqlcluster import APP_DB, APP_PASSWORD, APP_USER, HOST, MysqlCluster
from deploy.pgcluster import free_ports
from proxy.engines.mysql.wire.handshake import HandshakeV10

ADMIN_USER, ADMIN_PASSWORD = "admin", "admin-pass"
CLUSTER = "my"


def _q(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def mysql_proxy_config(
    cluster: MysqlCluster,
    port: int,
    mode: str = "transaction",
    pool_size: int = 5,
    *,
    admin_port: int | None = None,
    reader_port: int | None = None,
    http_port: int | None = None,
    client_login_timeout: str = "15s",
    borrow_timeout: str = "10s",
    max_client_connections: int | None = None,
    log_level: str = "info",
    pool_extra: dict[str, str | int | bool] | None = None,
    extra_users: Sequence[tuple[str, str]] = (),
    health: dict[str, str | int | bool] | None = None,
    failover: dict[str, str | int | bool] | None = None,
    more_endpoints: Sequence[tuple[str, int, str, dict[str, str | int | bool]]] = (),
    endpoints_extra: str = "",
) -> str:
    """TOML for dbproxy in front of ``cluster`` (see the module docstring); ``extra_users`` are more
    (name, password) proxy users that log in to the servers as themselves, ``more_endpoints`` more
    endpoints of the cluster (see `mysql_cluster_toml`), ``endpoints_extra`` TOML appended (more clusters)."""
    server = ["[server]", f"log_level = {_q(log_level)}", 'shutdown_timeout = "2s"',
              f"client_login_timeout = {_q(client_login_timeout)}"]
    if admin_port is not None:
        server.append(f'admin_listen = "{HOST}:{admin_port}"')
    if http_port is not None:
        server.append(f'http_listen = "{HOST}:{http_port}"')
    pool: dict[str, str | int | bool] = {"mode": mode, "max_server_connections": pool_size}
    if max_client_connections is not None:
        pool["max_client_connections"] = max_client_connections
    pool.update(pool_extra or {})
    endpoints: list[tuple[str, int, str, dict[str, str | int | bool]]] = [("writer", port, "writer", {})]
    if reader_port is not None:
        endpoints.append(("reader", reader_port, "reader", {}))
    endpoints += more_endpoints
    return "\n".join([
        *server, "",
        "[[users]]", f"name = {_q(APP_USER)}", f"password = {_q(APP_PASSWORD)}", "",
        "[[users]]", f"name = {_q(ADMIN_USER)}", f"password = {_q(ADMIN_PASSWORD)}", "admin = true", "",
        *(f"[[users]]\nname = {_q(name)}\npassword = {_q(password)}\n" for name, password in extra_users),
        mysql_cluster_toml(CLUSTER, cluster, pool, endpoints, health=health,
                           failover={"borrow_timeout": borrow_timeout, **(failover or {})}),
        endpoints_extra,
    ])


Settings = dict[str, str | int | bool]


def mysql_cluster_toml(name: str, cluster: MysqlCluster, pool: Settings,
                       endpoints: Sequence[tuple[str, int, str, Settings]], *, health: Settings | None = None,
                       failover: Settings | None = None) -> str:
    """One `[clusters.<name>]` section over ``cluster``'s instances: its health (probes as root, every
    200ms, unless told otherwise), failover and pool settings, and endpoints (name, port, role, extra keys)."""
    instances = ", ".join(_q(address) for address in cluster.addresses)
    # Probes log in as root (no password over TCP in the test clusters): SLAVE MONITOR, and not one of
    # the app user's connections that tests count.
    health_settings: Settings = {"user": "root", "interval": "200ms", "timeout": "1s", **(health or {})}
    lines = [f"[clusters.{name}]", 'engine = "mysql"', f"instances = [{instances}]",
             'client_auth = "mysql_native_password"', ""]
    for table, settings in (("health", health_settings), ("failover", failover or {}), ("pool", pool)):
        lines += [f"[clusters.{name}.{table}]", *(f"{key} = {_value(value)}" for key, value in settings.items()), ""]
    for endpoint, port, role, extra in endpoints:
        lines += [f"[[clusters.{name}.endpoints]]", f"name = {_q(endpoint)}", f'listen = "{HOST}:{port}"',
                  f"role = {_q(role)}", *(f"{key} = {_value(value)}" for key, value in extra.items()), ""]
    return "\n".join(lines)


def _value(value: str | int | bool) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value) if isinstance(value, int) else _q(value)


@dataclass
class MysqlProxy:
    """A running dbproxy with a MySQL cluster: its writer port, admin console, and the log."""

    running: RunningProxy
    admin_port: int
    reader_port: int | None = None
    http_port: int | None = None

    @property
    def port(self) -> int:
        return self.running.port

    @property
    def pid(self) -> int:
        return self.running.process.pid

    def log_text(self) -> str:
        return self.running.log_text()

    def assert_alive_and_clean(self) -> None:
        self.running.assert_alive_and_clean()

    def wait_logged(self, text: str, timeout: float = 10.0) -> None:
        wait_until(lambda: text in self.log_text(), timeout=timeout, what=f"{text!r} in the dbproxy log")


@contextmanager
def mysql_module_proxy(cluster: MysqlCluster, directory: Path, *, reader: bool = False,
                       **config: Any) -> Iterator[MysqlProxy]:
    """A dbproxy for a whole test module: `mysql_proxy_config` on free ports, stopped after."""
    port, admin_port, reader_port, http_port = free_ports(4)
    text = mysql_proxy_config(cluster, port, admin_port=admin_port, reader_port=reader_port if reader else None,
                              http_port=http_port, **config)
    with running_proxy(text, directory, port) as running:
        yield MysqlProxy(running, admin_port, reader_port if reader else None, http_port)


# ------------------------------------------------------------------------------ clients


def connect(proxy: MysqlProxy | int, *, user: str = APP_USER, password: str = APP_PASSWORD,
            database: str | None = APP_DB, **kwargs: Any) -> pymysql.connections.Connection[Any]:
    """A PyMySQL connection through the proxy (autocommit on unless told otherwise)."""
    port = proxy if isinstance(proxy, int) else proxy.port
    kwargs.setdefault("autocommit", True)
    kwargs.setdefault("connect_timeout", 5)
    kwargs.setdefault("read_timeout", 30)
    return pymysql.connect(host=HOST, port=port, user=user, password=password, database=database, **kwargs)


def direct(cluster: MysqlCluster, index: int = 0, *, user: str = "root", password: str = "",
           database: str | None = APP_DB, **kwargs: Any) -> pymysql.connections.Connection[Any]:
    """A PyMySQL connection straight to instance ``index`` (root over TCP has no password)."""
    kwargs.setdefault("autocommit", True)
    kwargs.setdefault("connect_timeout", 5)
    return pymysql.connect(host=HOST, port=cluster.ports[index], user=user, password=password, database=database,
                           **kwargs)


def scalar(conn: pymysql.connections.Connection[Any], sql: str, args: Any = None) -> Any:
    """The first column of the first row of ``sql`` (None without a row)."""
    with conn.cursor() as cur:
        cur.execute(sql, args)
        row = cur.fetchone()
    return None if row is None else row[0]


def rows(conn: pymysql.connections.Connection[Any], sql: str, args: Any = None) -> list[tuple[Any, ...]]:
    with conn.cursor() as cur:
        cur.execute(sql, args)
        return list(cur.fetchall())


def server_thread(conn: pymysql.connections.Connection[Any]) -> int:
    """The id of the server connection this client's statement runs on (CONNECTION_ID() on the server)."""
    return int(scalar(conn, "SELECT CONNECTION_ID()"))


def mariadb_cli_argv(port: int, sql: str, *, user: str = APP_USER, password: str | None = APP_PASSWORD,
                     database: str | None = APP_DB, extra: Sequence[str] = ()) -> list[str]:
    """``mariadb -h127.0.0.1 -P<port> -u<user> -p<password> <db> -e sql`` (batch output, no column names)."""
    binary = shutil.which("mariadb") or "mariadb"
    argv = [binary, "--no-defaults", "--protocol=TCP", f"-h{HOST}", f"-P{port}", f"-u{user}",
            "--batch", "--skip-column-names", "--connect-timeout=5"]
    if password is not None:
        argv.append(f"-p{password}")
    argv += list(extra)
    if database is not None:
        argv.append(database)
    return [*argv, "-e", sql]


def mariadb_cli(port: int, sql: str, *, user: str = APP_USER, password: str | None = APP_PASSWORD,
                database: str | None = APP_DB, extra: Sequence[str] = (),
                timeout: float = 30) -> subprocess.CompletedProcess[str]:
    """Run `mariadb_cli_argv`; the completed process."""
    argv = mariadb_cli_argv(port, sql, user=user, password=password, database=database, extra=extra)
    return subprocess.run(argv, capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL)


def admin_rows(proxy: MysqlProxy, command: str, *, expect_rows: bool = True) -> list[dict[str, Any]]:
    """An admin console command's rows as dicts (psycopg, simple protocol); with expect_rows=False a
    command that answers with no result (FAULT ADD, RECORD START) gives []."""
    conninfo = (f"host={HOST} port={proxy.admin_port} user={ADMIN_USER} password={ADMIN_PASSWORD} "
                "dbname=dbproxy sslmode=disable connect_timeout=5")
    with psycopg.connect(conninfo, autocommit=True) as conn:
        cur = conn.execute(command, prepare=False)
        if cur.description is None and not expect_rows:
            return []
        assert cur.description is not None
        names = [column.name for column in cur.description]
        return [dict(zip(names, row, strict=True)) for row in cur.fetchall()]


def admin_command(proxy: MysqlProxy, command: str) -> list[dict[str, Any]]:
    """admin_rows for any command: its rows, or [] when it answers with no result."""
    return admin_rows(proxy, command, expect_rows=False)


def client_row(proxy: MysqlProxy, connection_id: int) -> dict[str, Any]:
    """The admin console's SHOW CLIENTS row of the client with this (proxy) connection id."""
    for row in admin_rows(proxy, "SHOW CLIENTS"):
        if row["id"] == connection_id:
            return row
    raise AssertionError(f"client {connection_id} not in SHOW CLIENTS")


def proxy_threads(cluster: MysqlCluster, index: int = 0, user: str = APP_USER) -> list[dict[str, Any]]:
    """The primary's PROCESSLIST rows of ``user`` (the proxy's server connections when only it logs in as app)."""
    with direct(cluster, index) as conn, conn.cursor(pymysql.cursors.DictCursor) as cur:
        cur.execute("SELECT ID, COMMAND, STATE, INFO, DB FROM information_schema.PROCESSLIST WHERE USER = %s", (user,))
        return list(cur.fetchall())


def trx_count(cluster: MysqlCluster, index: int = 0, user: str = APP_USER) -> int:
    """Open InnoDB transactions of ``user``'s server connections on the primary.

    INNODB_TRX is a cache that InnoDB refreshes only when it was not read in the last 0.1 s: polled
    faster, it shows a rolled-back transaction forever. Hence the pause before reading.
    """
    time.sleep(0.15)
    with direct(cluster, index) as conn:
        return int(scalar(conn, "SELECT COUNT(*) FROM information_schema.INNODB_TRX t JOIN "
                                "information_schema.PROCESSLIST p ON p.ID = t.trx_mysql_thread_id WHERE p.USER = %s",
                          (user,)))


__all__ = ["assert_no_traceback", "MysqlProxy", "mysql_proxy_config", "mysql_cluster_toml", "mysql_module_proxy", "connect", "direct",
           "scalar", "rows", "server_thread", "mariadb_cli", "mariadb_cli_argv", "admin_rows", "client_row", "proxy_threads",
           "trx_count"]


class RawSocket:
    """A blocking MySQL client on a plain socket: reads the greeting, then sends what a test wants."""

    def __init__(self, port: int, timeout: float = 10.0) -> None:
        self.sock = socket.create_connection((HOST, port), timeout=timeout)
        self.local_port: int = self.sock.getsockname()[1]
        self.buf = b""

    def packet(self) -> tuple[int, bytes] | None:
        """The next (sequence id, payload), None at EOF."""
        while True:
            if len(self.buf) >= 4:
                length = int.from_bytes(self.buf[:3], "little")
                if len(self.buf) >= 4 + length:
                    seq, payload = self.buf[3], self.buf[4:4 + length]
                    self.buf = self.buf[4 + length:]
                    return seq, payload
            try:
                chunk = self.sock.recv(65536)
            except ConnectionResetError:
                return None
            if not chunk:
                return None
            self.buf += chunk

    def greeting(self) -> HandshakeV10:
        got = self.packet()
        assert got is not None and got[0] == 0
        return HandshakeV10.decode(got[1])

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def closed_by_peer(self, timeout: float = 10.0) -> bool:
        self.sock.settimeout(timeout)
        try:
            while True:
                chunk = self.sock.recv(65536)
                if not chunk:
                    return True
                self.buf += chunk
        except ConnectionResetError:
            return True
        except TimeoutError:
            return False

    def close(self) -> None:
        self.sock.close()
