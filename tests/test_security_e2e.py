"""SPEC §10 end to end, both engines: allowlists, connection limits, the connect rate, the audit log, no secret leaks.

Refused addresses come from loopback aliases (127.0.0.2, 127.0.0.3: Linux routes all of 127/8 to lo)
while the allowlist names 127.0.0.1/32.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import signal
import socket
import struct
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import asyncpg
import pymysql
import pytest
from conftest import ProxyProcess
from e2e_helpers import APP, DB, SCRAM, USERS, assert_no_traceback, proxy_config, psql, wait_until
from mysql_e2e_helpers import ADMIN_PASSWORD, ADMIN_USER, connect, mysql_proxy_config

from deploy.mysqlcluster import APP_PASSWORD, MysqlCluster
from deploy.pgcluster import HOST, PgCluster

Start = Callable[..., ProxyProcess]
PG_ADMIN_PASSWORD = "admin-Secret-77"
WRONG = "wrong-Password-123"
PARAMETER = "param-value-Secret-42"


# ---- helpers ------------------------------------------------------------------------------------


def _with(text: str, *, server: str = "", endpoint: str = "", app_user: str = "", tail: str = "") -> str:
    """Config text with lines added to [server], the first endpoint, user "app", and at the end."""
    text = text.replace("[server]\n", f"[server]\n{server}\n", 1)
    text = text.replace('role = "writer"\n', f'role = "writer"\n{endpoint}\n', 1)
    text = text.replace('[[users]]\nname = "app"\n', f'[[users]]\nname = "app"\n{app_user}\n', 1)
    return text + "\n" + tail


def _pg_config(pg: PgCluster, port: int, admin_port: int, http_port: int, **extra: str) -> str:
    admin = f'\n[[users]]\nname = "admin"\npassword = "{PG_ADMIN_PASSWORD}"\nadmin = true\n'
    base = proxy_config(pg, port, client_auth="scram-sha-256", log_level="debug")
    base = base.replace("[server]\n", f'[server]\nadmin_listen = "{HOST}:{admin_port}"\n'
                        f'http_listen = "{HOST}:{http_port}"\n', 1)
    return _with(base.replace("\n[clusters.main]", admin + "\n[clusters.main]", 1), **extra)


def _raw(port: int, source: str, send: bytes = b"", timeout: float = 3.0) -> bytes:
    """Connect from `source`, send `send`, return everything received until the proxy closes (or timeout)."""
    with socket.create_connection((HOST, port), timeout=timeout, source_address=(source, 0)) as sock:
        if send:
            try:
                sock.sendall(send)
            except OSError:
                return b""
        received = b""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                chunk = sock.recv(65536)
            except (ConnectionResetError, TimeoutError):
                break
            if not chunk:
                break
            received += chunk
        return received


def _storm(port: int, source: str, count: int, send: bytes = b"") -> list[bytes]:
    """`count` connections from `source` opened at once (each sends `send`); what each first received."""
    socks = [socket.create_connection((HOST, port), timeout=3, source_address=(source, 0)) for _ in range(count)]
    replies = []
    for sock in socks:
        with sock:
            if send:
                sock.sendall(send)
            try:
                replies.append(sock.recv(65536))
            except OSError:
                replies.append(b"")
    return replies


def _startup(user: str = "app", database: str = DB) -> bytes:
    body = struct.pack("!I", 196608) + f"user\0{user}\0database\0{database}\0\0".encode()
    return struct.pack("!I", len(body) + 4) + body


def _http(port: int, path: str) -> str:
    with urllib.request.urlopen(f"http://{HOST}:{port}{path}", timeout=5) as response:
        return response.read().decode()


def _refused_count(http_port: int, cluster: str, endpoint: str, reason: str) -> float:
    wanted = (f'dbproxy_client_connections_refused_total{{cluster="{cluster}",endpoint="{endpoint}",'
              f'reason="{reason}"}}')
    for line in _http(http_port, "/metrics").splitlines():
        if line.startswith(wanted):
            return float(line.split()[-1])
    return 0.0


def _audit(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


async def _pg_error(dsn: str) -> asyncpg.PostgresError:
    with pytest.raises(asyncpg.PostgresError) as caught:
        conn = await asyncpg.connect(dsn, ssl=False)
        await conn.close()
    return caught.value


def _dsn(port: int, user: str, password: str) -> str:
    return f"postgresql://{user}:{password}@{HOST}:{port}/{DB}"


# ---- allowlists ----------------------------------------------------------------------------------


def test_pg_allowlist_refuses_before_any_byte_and_follows_reload(pg_cluster: PgCluster, proxy_factory: Start,
                                                                 free_ports: Callable[..., list[int]],
                                                                 tmp_path: Path) -> None:
    port, admin_port, http_port = free_ports(3)
    audit = tmp_path / "audit.jsonl"
    text = _pg_config(pg_cluster, port, admin_port, http_port, endpoint='allow = ["127.0.0.1/32", "::1/128"]',
                      server=f'admin_allow = ["10.0.0.0/8"]\nhttp_allow = ["127.0.0.1/32"]\naudit_log = "{audit}"')
    proxy = proxy_factory(text)
    for _ in range(5):   # no 'N', no ErrorResponse: closed before a byte is read or written
        assert _raw(port, "127.0.0.2", b"\x00\x00\x00\x08\x04\xd2\x16\x2f") == b""
        assert _raw(port, "127.0.0.2", _startup()) == b""
    assert _raw(admin_port, "127.0.0.1", _startup("admin", "dbproxy")) == b""   # admin_allow: 10/8 only
    assert _raw(http_port, "127.0.0.2", b"GET /healthz HTTP/1.1\r\n\r\n") == b""
    assert _raw(port, "127.0.0.1", b"\x00\x00\x00\x08\x04\xd2\x16\x2f") == b"N"   # allowed: SSLRequest answered

    async def allowed() -> None:
        conn = await asyncpg.connect(_dsn(port, APP.name, APP.password or ""), ssl=False)
        assert await conn.fetchval("SELECT 1") == 1
        await conn.close()

    asyncio.run(allowed())
    assert _refused_count(http_port, "main", "writer", "allowlist") == 10
    assert _refused_count(http_port, "", "admin", "allowlist") >= 1   # (and the test's wait for the listener)
    assert _refused_count(http_port, "", "http", "allowlist") == 1
    log = proxy.log_text()
    assert log.count("refused connection from 127.0.0.2 to main/writer: address not in its allowlist") == 1  # throttled
    wait_until(lambda: any(e["event"] == "refused" for e in _audit(audit)), what="refused line in the audit log")
    refused = [e for e in _audit(audit) if e["event"] == "refused"]
    assert {(e["client"], e["endpoint"], e["reason"]) for e in refused} == {
        ("127.0.0.2", "writer", "allowlist"), ("127.0.0.1", "admin", "allowlist"), ("127.0.0.2", "http", "allowlist")}

    # Reload: the endpoint now takes 127.0.0.2 as well, the admin console 127.0.0.1.
    proxy.config_path.write_text(text.replace('allow = ["127.0.0.1/32", "::1/128"]',
                                              'allow = ["127.0.0.1/32", "127.0.0.2/32"]')
                                 .replace('admin_allow = ["10.0.0.0/8"]', 'admin_allow = ["127.0.0.0/8"]'))
    proxy.send_signal(signal.SIGHUP)
    wait_until(lambda: "configuration reloaded" in proxy.log_text(), what="reload")
    assert _raw(port, "127.0.0.2", b"\x00\x00\x00\x08\x04\xd2\x16\x2f") == b"N"
    assert psql(admin_port, "admin", PG_ADMIN_PASSWORD, "SHOW VERSION", database="dbproxy").returncode == 0
    assert_no_traceback(proxy.log_text())


def test_config_error_names_the_bad_cidr(pg_cluster: PgCluster, proxy_factory: Start,
                                         free_ports: Callable[..., list[int]]) -> None:
    port, admin_port, http_port = free_ports(3)
    proxy = proxy_factory(_pg_config(pg_cluster, port, admin_port, http_port, endpoint='allow = ["10.0.0.300/8"]'),
                          wait=False)
    assert proxy.wait(15) == 2
    assert 'clusters.main.endpoints[0].allow[0]: invalid network "10.0.0.300/8"' in proxy.log_text()


def test_mysql_allowlist_refuses_before_the_greeting(mysql_cluster: MysqlCluster, proxy_factory: Start,
                                                     free_ports: Callable[..., list[int]]) -> None:
    port, admin_port, http_port = free_ports(3)
    text = _with(mysql_proxy_config(mysql_cluster, port, admin_port=admin_port, http_port=http_port),
                 endpoint='allow = ["127.0.0.1/32"]')
    proxy_factory(text)
    assert _raw(port, "127.0.0.2") == b""          # a server greets first: not even the greeting
    greeting = _raw(port, "127.0.0.1", timeout=0.5)
    assert greeting[4] == 10                        # HandshakeV10
    conn = connect(port)
    assert conn.cursor().execute("SELECT 1") == 1
    conn.close()
    assert _refused_count(http_port, "my", "writer", "allowlist") == 1


# ---- limits -------------------------------------------------------------------------------------


def test_pg_user_and_database_limits(pg_cluster: PgCluster, proxy_factory: Start,
                                     free_ports: Callable[..., list[int]]) -> None:
    port, admin_port, http_port = free_ports(3)
    proxy_factory(_pg_config(pg_cluster, port, admin_port, http_port, app_user="max_client_connections = 2",
                             tail="[clusters.main.databases.app]\nmax_client_connections = 3\n"))

    async def scenario() -> None:
        app = [await asyncpg.connect(_dsn(port, APP.name, APP.password or ""), ssl=False) for _ in range(2)]
        refused = await _pg_error(_dsn(port, APP.name, APP.password or ""))
        assert refused.sqlstate == "53300"
        assert 'too many connections for role "app"' in str(refused)
        wrong = await _pg_error(_dsn(port, APP.name, WRONG))   # limits come after the password
        assert wrong.sqlstate == "28P01"
        scram = await asyncpg.connect(_dsn(port, SCRAM.name, SCRAM.password or ""), ssl=False)
        full = await _pg_error(_dsn(port, SCRAM.name, SCRAM.password or ""))
        assert full.sqlstate == "53300" and 'too many connections for database "app"' in str(full)
        await app[0].close()
        again = await asyncpg.connect(_dsn(port, SCRAM.name, SCRAM.password or ""), ssl=False)
        assert await again.fetchval("SELECT 1") == 1
        for conn in (app[1], scram, again):
            await conn.close()

    asyncio.run(scenario())
    assert _refused_count(http_port, "main", "writer", "user_limit") == 1
    assert _refused_count(http_port, "main", "writer", "database_limit") == 1


def test_mysql_user_and_database_limits(mysql_cluster: MysqlCluster, proxy_factory: Start,
                                        free_ports: Callable[..., list[int]]) -> None:
    port, admin_port, http_port = free_ports(3)
    text = mysql_proxy_config(mysql_cluster, port, admin_port=admin_port, http_port=http_port,
                              extra_users=[("other", APP_PASSWORD)])
    text = text.replace('name = "other"\n', 'name = "other"\nserver_user = "app"\n')   # the servers' app account
    proxy_factory(_with(text, app_user="max_client_connections = 2",
                        tail="[clusters.my.databases.app]\nmax_client_connections = 3\n"))
    held = [connect(port), connect(port)]
    with pytest.raises(pymysql.err.OperationalError) as caught:
        connect(port)
    assert caught.value.args[0] == 1203   # ER_TOO_MANY_USER_CONNECTIONS
    with pytest.raises(pymysql.err.OperationalError) as wrong:
        connect(port, password=WRONG)
    assert wrong.value.args[0] == 1045
    held.append(connect(port, user="other"))
    with pytest.raises(pymysql.err.OperationalError) as full:
        connect(port, user="other")
    assert full.value.args[0] == 1040 and "too many connections for database" in full.value.args[1]
    held.pop(0).close()
    held.append(connect(port, user="other"))
    for conn in held:
        conn.close()
    assert _refused_count(http_port, "my", "writer", "user_limit") == 1
    assert _refused_count(http_port, "my", "writer", "database_limit") == 1


def test_connect_rate_per_address_both_engines(pg_cluster: PgCluster, mysql_cluster: MysqlCluster,
                                               proxy_factory: Start, free_ports: Callable[..., list[int]]) -> None:
    port, admin_port, http_port, my_port, my_admin, my_http = free_ports(6)
    rate = "client_connect_rate = 1\nclient_connect_burst = 3"
    proxy = proxy_factory(_pg_config(pg_cluster, port, admin_port, http_port, server=rate))
    storm = _storm(port, "127.0.0.3", 8, _startup())
    assert [reply[:1] for reply in storm[:3]] == [b"R"] * 3          # authentication requests
    for reply in storm[3:]:
        assert reply[:1] == b"E" and b"C53300\x00" in reply and b"too many connections from 127.0.0.3" in reply

    async def other_address() -> None:   # 127.0.0.1 has its own bucket
        conn = await asyncpg.connect(_dsn(port, APP.name, APP.password or ""), ssl=False)
        await conn.close()

    asyncio.run(other_address())
    assert _refused_count(http_port, "main", "writer", "rate") == 5
    assert proxy.log_text().count("refused connection from 127.0.0.3") == 1

    proxy_factory(_with(mysql_proxy_config(mysql_cluster, my_port, admin_port=my_admin, http_port=my_http),
                        server=rate))
    replies = _storm(my_port, "127.0.0.3", 6)
    assert [r[4] for r in replies[:3]] == [10, 10, 10]                 # greetings
    for reply in replies[3:]:
        assert reply[4] == 0xFF and int.from_bytes(reply[5:7], "little") == 1040   # ERR in place of the greeting
    conn = connect(my_port)
    conn.close()


# ---- audit and secrets --------------------------------------------------------------------------


def _secrets(passwords: dict[str, str]) -> set[str]:
    """Every form a secret could leak in: the passwords, md5 hashes, MySQL verifiers, verifier field names."""
    found = {"stored_key", "server_key", "SCRAM-SHA-256$", "native=b", "sha2=b"}
    for user, password in passwords.items():
        raw = password.encode()
        sha1 = hashlib.sha1(hashlib.sha1(raw).digest()).digest()
        sha2 = hashlib.sha256(hashlib.sha256(raw).digest()).digest()
        found |= {password, hashlib.md5(raw + user.encode()).hexdigest(), sha1.hex(), sha1.hex().upper(),
                  sha2.hex(), repr(sha1)[2:-1], repr(sha2)[2:-1]}
    return found


def _assert_no_secret(texts: dict[str, str], secrets: set[str]) -> None:
    for where, text in texts.items():
        for secret in secrets:
            assert secret not in text, f"{secret!r} found in {where}"


def test_pg_audit_log_and_no_secret_anywhere(pg_cluster: PgCluster, proxy_factory: Start,
                                             free_ports: Callable[..., list[int]], tmp_path: Path) -> None:
    port, admin_port, http_port = free_ports(3)
    audit = tmp_path / "audit.jsonl"
    proxy = proxy_factory(_pg_config(pg_cluster, port, admin_port, http_port,
                                     server=f'audit_log = "{audit}"\naudit_statements = "all"'))
    errors: list[str] = []

    async def clients() -> None:
        conn = await asyncpg.connect(_dsn(port, APP.name, APP.password or ""), ssl=False)
        await conn.execute("CREATE TEMP TABLE audited (x text)")
        await conn.execute("INSERT INTO audited VALUES ($1)", PARAMETER)
        assert await conn.fetchval("SELECT count(*) FROM audited WHERE x = $1", PARAMETER) == 1
        await conn.execute("SELECT 'simple query'")
        await conn.close()
        for dsn in (_dsn(port, APP.name, WRONG), _dsn(port, "nobody", WRONG), _dsn(port, SCRAM.name, WRONG)):
            errors.append(str(await _pg_error(dsn)))
        conn = await asyncpg.connect(_dsn(port, SCRAM.name, SCRAM.password or ""), ssl=False)
        await conn.close()

    asyncio.run(clients())
    shown = psql(admin_port, "admin", PG_ADMIN_PASSWORD, "SHOW CONFIG", database="dbproxy")
    assert shown.returncode == 0 and "password" in shown.stdout
    bad_admin = psql(admin_port, "admin", WRONG, "SHOW CONFIG", database="dbproxy")
    assert bad_admin.returncode != 0
    status, metrics = _http(http_port, "/status"), _http(http_port, "/metrics")
    wait_until(lambda: sum(e["event"] == "disconnect" for e in _audit(audit)) >= 2, what="disconnect lines")
    wait_until(lambda: any(e["event"] == "admin" for e in _audit(audit)), what="admin line")
    wait_until(lambda: sum(e["event"] == "login" and e["outcome"] == "failure" for e in _audit(audit)) >= 4,
               what="the failed logins")
    lines = _audit(audit)

    logins = [(e["user"], e["outcome"]) for e in lines if e["event"] == "login"]
    assert ("app", "success") in logins and ("app", "failure") in logins and ("nobody", "failure") in logins
    assert ("scramuser", "failure") in logins and ("admin", "success") in logins and ("admin", "failure") in logins
    ok = next(e for e in lines if e["event"] == "login" and e["user"] == "app" and e["outcome"] == "success")
    assert ok["auth_method"] == "scram-sha-256" and ok["tls"] is None and ok["database"] == DB
    assert ok["cluster"] == "main" and ok["endpoint"] == "writer" and ok["client"].startswith("127.0.0.1:")
    failed = next(e for e in lines if e["event"] == "login" and e["user"] == "app" and e["outcome"] == "failure")
    assert "password authentication failed" in failed["reason"]
    kinds = {e["text"]: e["kind"] for e in lines if e["event"] == "statement"}
    assert kinds["CREATE TEMP TABLE audited (x text)"] == "ddl"
    assert kinds["INSERT INTO audited VALUES ($1)"] == "write"
    assert kinds["SELECT count(*) FROM audited WHERE x = $1"] == "read"
    assert kinds["SELECT 'simple query'"] == "read"
    assert any(e["event"] == "admin" and e["command"] == "SHOW CONFIG" and e["outcome"] == "ok" for e in lines)
    disconnect = next(e for e in lines if e["event"] == "disconnect" and e["user"] == "app")
    assert disconnect["reason"] and disconnect["seconds"] >= 0

    passwords = {u.name: u.password for u in USERS if u.password} | {"admin": PG_ADMIN_PASSWORD, "wrong": WRONG}
    passwords |= {u.server_user: u.server_password for u in USERS if u.server_password}
    secrets = _secrets(passwords) | {PARAMETER}
    _assert_no_secret({"audit log": audit.read_text(), "proxy log": proxy.log_text(), "SHOW CONFIG": shown.stdout,
                       "admin error": bad_admin.stderr, "/status": status, "/metrics": metrics,
                       "client errors": "\n".join(errors)}, secrets)


def test_mysql_audit_log_and_no_secret_anywhere(mysql_cluster: MysqlCluster, proxy_factory: Start,
                                                free_ports: Callable[..., list[int]], tmp_path: Path) -> None:
    port, admin_port, http_port = free_ports(3)
    audit = tmp_path / "audit.jsonl"
    text = mysql_proxy_config(mysql_cluster, port, admin_port=admin_port, http_port=http_port, log_level="debug")
    proxy = proxy_factory(_with(text, server=f'audit_log = "{audit}"\naudit_statements = "writes"'))
    conn = connect(port)
    cursor = conn.cursor()
    cursor.execute("CREATE TEMPORARY TABLE audited (x varchar(64))")
    cursor.execute("INSERT INTO audited VALUES (%s)", (PARAMETER,))   # PyMySQL inlines it: the text has it
    cursor.execute("SELECT count(*) FROM audited")
    conn.close()
    errors = []
    for user in ("app", "nobody"):
        with pytest.raises(pymysql.err.OperationalError) as caught:
            connect(port, user=user, password=WRONG)
        errors.append(str(caught.value))
    shown = psql(admin_port, ADMIN_USER, ADMIN_PASSWORD, "SHOW CONFIG", database="dbproxy")
    assert shown.returncode == 0
    status = _http(http_port, "/status")
    wait_until(lambda: any(e["event"] == "disconnect" for e in _audit(audit)), what="disconnect line")
    wait_until(lambda: sum(e["event"] == "login" and e["outcome"] == "failure" for e in _audit(audit)) >= 2,
               what="both failed logins")
    lines = _audit(audit)
    logins = [(e["user"], e["outcome"], e["auth_method"]) for e in lines if e["event"] == "login"]
    assert ("app", "success", "mysql_native_password") in logins
    assert ("app", "failure", "mysql_native_password") in logins and ("nobody", "failure", "mysql_native_password") in logins
    kinds = {e["text"]: e["kind"] for e in lines if e["event"] == "statement"}
    assert kinds.get("CREATE TEMPORARY TABLE audited (x varchar(64))") == "ddl"
    assert any(k == "write" and t.startswith("INSERT INTO audited") for t, k in kinds.items())
    assert "SELECT count(*) FROM audited" not in kinds    # "writes" leaves reads out

    secrets = _secrets({"app": APP_PASSWORD, "admin": ADMIN_PASSWORD, "wrong": WRONG})
    audit_text = "\n".join(json.dumps(e) for e in lines if e["event"] != "statement")
    _assert_no_secret({"audit log (but the inlined statement)": audit_text, "proxy log": proxy.log_text(),
                       "SHOW CONFIG": shown.stdout, "/status": status, "client errors": "\n".join(errors)}, secrets)
