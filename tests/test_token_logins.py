"""End to end: token logins (SPEC §10) through dbproxy to the real PostgreSQL and MariaDB test clusters.

Users: "tok" (auth = "token") and "both" (auth = "password_or_token"), both logging in to the servers as
the usual app user. Endpoints: "writer" without TLS, "secure" and "other" with TLS (prefer). Tokens come
from `dbproxy token` or proxy.tokens.sign (expired ones, other users'); the secret from a file, so that
rotation is a file change and a reload (SIGHUP for PostgreSQL, the admin console's RELOAD for MySQL).
"""

from __future__ import annotations

import json
import signal
import ssl
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import psycopg
import pymysql
import pytest
from e2e_helpers import (
    HOST,
    REPO_ROOT,
    RawClient,
    RunningProxy,
    clean_env,
    first_error,
    proxy_config,
    running_proxy,
    startup_packet,
    wait_until,
)
from mysql_e2e_helpers import (
    ADMIN_PASSWORD,
    ADMIN_USER,
    APP_DB,
    APP_PASSWORD,
    APP_USER,
    mariadb_cli,
    mysql_proxy_config,
)

from deploy.mysqlcluster import MysqlCluster
from deploy.pgcluster import PgCluster, free_ports, pg_binary
from proxy.tls.certs import generate
from proxy.tokens import sign

SECRET = "first-secret-" + "a" * 32
NEXT_SECRET = "second-secret-" + "b" * 32


@dataclass
class TokenProxy:
    proxy: RunningProxy
    ports: dict[str, int]
    directory: Path

    @property
    def config(self) -> Path:
        return self.directory / "dbproxy.toml"

    def token(self, user: str = "tok", *extra: str) -> str:
        """`dbproxy token -c CONFIG --user USER ...`."""
        out = subprocess.run([sys.executable, "-m", "proxy", "token", "-c", str(self.config), "--user", user, *extra],
                             capture_output=True, text=True, timeout=30, cwd=REPO_ROOT, check=True)
        return out.stdout.strip()

    def reloads(self) -> int:
        return self.proxy.log_text().count("configuration reloaded")

    def rotate(self, secret: str, previous: str | None, reload: object) -> None:
        """Write the new secret files and reload (`reload()` triggers it), waiting for the log line."""
        (self.directory / "token.key").write_text(secret + "\n")
        old = self.directory / "previous.key"
        if previous is None:
            old.unlink(missing_ok=True)
        else:
            old.write_text(previous + "\n")
        text = self.config.read_text()
        line = 'previous_secret_file = "previous.key"\n'
        text = text.replace(line, "")
        if previous is not None:
            text = text.replace('secret_file = "token.key"\n', 'secret_file = "token.key"\n' + line)
        self.config.write_text(text)
        before = self.reloads()
        reload()   # type: ignore[operator]
        wait_until(lambda: self.reloads() > before, what="the reload")


def _tls(certs: Path) -> str:
    return f'{{ mode = "prefer", cert = "{certs / "server.pem"}", key = "{certs / "server-key.pem"}" }}'


def _token_config(cluster: str, ports: dict[str, int], certs: Path, server_user: str, server_password: str,
                  both_password: str, plaintext: bool = False) -> str:
    endpoints = "".join(f'\n[[clusters.{cluster}.endpoints]]\nname = "{name}"\nlisten = "{HOST}:{ports[name]}"\n'
                        f'role = "writer"\ntls = {_tls(certs)}\n' for name in ("secure", "other"))
    return f"""{endpoints}
[server.tokens]
secret_file = "token.key"
max_ttl = "1h"
allow_plaintext_tokens = {"true" if plaintext else "false"}

[[users]]
name = "tok"
auth = "token"
server_user = "{server_user}"
server_password = "{server_password}"

[[users]]
name = "both"
auth = "password_or_token"
password = "{both_password}"
server_user = "{server_user}"
server_password = "{server_password}"
"""


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return generate(tmp_path_factory.mktemp("token-certs"))


# ---- PostgreSQL ------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def pg(pg_cluster: PgCluster, tmp_path_factory: pytest.TempPathFactory, certs: Path) -> Iterator[TokenProxy]:
    port, secure, other = free_ports(3)
    ports = {"writer": port, "secure": secure, "other": other}
    directory = tmp_path_factory.mktemp("token-pg")
    (directory / "token.key").write_text(SECRET + "\n")
    text = proxy_config(pg_cluster, port, client_auth="scram-sha-256").replace(
        "[server]\n", '[server]\naudit_log = "audit.jsonl"\n', 1) + _token_config(
        "main", ports, certs, "app", "app-secret", "both-secret")
    with running_proxy(text, directory, port) as proxy:
        yield TokenProxy(proxy, ports, directory)
        proxy.assert_alive_and_clean()


def _pg(tp: TokenProxy, endpoint: str, password: str, user: str = "tok", sslmode: str = "require") -> str:
    return (f"host={HOST} port={tp.ports[endpoint]} user={user} dbname=app password='{password}' "
            f"sslmode={sslmode} connect_timeout=5")


def _pg_refused(tp: TokenProxy, endpoint: str, password: str, reason: str, user: str = "tok",
                sslmode: str = "require") -> None:
    """Refused exactly like a wrong password (28P01), with `reason` in the log and never the token."""
    before = tp.proxy.log_text().count(reason)
    with pytest.raises(psycopg.OperationalError, match=f'password authentication failed for user "{user}"') as info:
        psycopg.connect(_pg(tp, endpoint, password, user, sslmode))
    assert info.value.sqlstate in (None, "28P01")
    wait_until(lambda: tp.proxy.log_text().count(reason) > before, what=f"{reason!r} in the log")
    assert password not in tp.proxy.log_text()


def test_psql_and_psycopg_with_a_token(pg: TokenProxy) -> None:
    token = pg.token("tok", "--ttl", "5m")
    out = subprocess.run([pg_binary("psql"), f"host={HOST} port={pg.ports['secure']} user=tok dbname=app "
                          "sslmode=require", "-Atc", "SELECT current_user"],
                         capture_output=True, text=True, timeout=30, env=clean_env(PGPASSWORD=token))
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "app"   # the server login is the user's server_user
    with psycopg.connect(_pg(pg, "other", token)) as conn:
        assert conn.pgconn.ssl_in_use and conn.execute("SELECT 40 + 2").fetchone() == (42,)
    assert token not in pg.proxy.log_text()


def test_refused_tokens_fail_like_a_wrong_password(pg: TokenProxy) -> None:
    good = pg.token("tok")
    _pg_refused(pg, "secure", sign(SECRET, "tok", "*", int(time.time()) - 5), "token expired")
    tampered = good[:-3] + ("AAA" if not good.endswith("AAA") else "BBB")
    _pg_refused(pg, "secure", tampered, "token signature does not verify")
    _pg_refused(pg, "secure", sign("another-secret-" + "c" * 32, "tok", "*", int(time.time()) + 60),
                "token signature does not verify")
    _pg_refused(pg, "secure", pg.token("both"), "token was issued for another user")
    _pg_refused(pg, "secure", "not-a-token", "not a dbproxy token")


def test_token_bound_to_an_endpoint(pg: TokenProxy) -> None:
    for endpoint in ("other", "main/other"):
        token = pg.token("tok", "--endpoint", endpoint)
        with psycopg.connect(_pg(pg, "other", token)) as conn:
            assert conn.execute("SELECT 1").fetchone() == (1,)
        _pg_refused(pg, "secure", token, f"token is for endpoint '{endpoint}', not main/secure")


def test_token_over_plain_text_is_refused_before_it_is_sent(pg: TokenProxy) -> None:
    token = pg.token("tok")
    _pg_refused(pg, "writer", token, "token login over plain text refused", sslmode="disable")
    _pg_refused(pg, "secure", token, "token login over plain text refused", sslmode="disable")
    raw = RawClient(pg.ports["secure"])   # no password request at all: the token never crosses in plain text
    try:
        raw.send(startup_packet("tok"))
        messages = raw.read_all_until_eof()
        error = first_error(messages)
        assert error is not None and error["C"] == "28P01" and not messages.startswith(b"R")
    finally:
        raw.close()


def test_password_or_token(pg: TokenProxy) -> None:
    token = pg.token("both")
    for password in (token, "both-secret"):
        with psycopg.connect(_pg(pg, "secure", password, user="both")) as conn:
            assert conn.execute("SELECT current_user").fetchone() == ("app",)
    with psycopg.connect(_pg(pg, "writer", "both-secret", user="both", sslmode="disable")) as conn:   # SCRAM
        assert conn.execute("SELECT 1").fetchone() == (1,)
    _pg_refused(pg, "writer", token, "wrong password", user="both", sslmode="disable")
    _pg_refused(pg, "secure", "not-the-password", "wrong password", user="both")


def test_rotation_by_reload(pg: TokenProxy) -> None:
    old_token = pg.token("tok")
    pg.rotate(NEXT_SECRET, SECRET, lambda: pg.proxy.process.send_signal(signal.SIGHUP))
    new_token = pg.token("tok")
    assert new_token != old_token
    for token in (old_token, new_token):   # the previous secret: within its rotation grace
        with psycopg.connect(_pg(pg, "secure", token)) as conn:
            assert conn.execute("SELECT 1").fetchone() == (1,)
    pg.rotate(NEXT_SECRET, None, lambda: pg.proxy.process.send_signal(signal.SIGHUP))
    _pg_refused(pg, "secure", old_token, "token signature does not verify")
    with psycopg.connect(_pg(pg, "secure", new_token)) as conn:
        assert conn.execute("SELECT 1").fetchone() == (1,)
    log = pg.proxy.log_text()
    assert SECRET not in log and NEXT_SECRET not in log


def test_audit_log_of_token_logins(pg: TokenProxy) -> None:
    token = pg.token("tok")
    with psycopg.connect(_pg(pg, "secure", token)) as conn:
        conn.execute("SELECT 1")
    current = (pg.directory / "token.key").read_text().strip()   # (test_rotation_by_reload may have run)
    expired = sign(current, "tok", "*", int(time.time()) - 60)
    _pg_refused(pg, "secure", expired, "token expired")
    audit = pg.directory / "audit.jsonl"

    def entries() -> list[dict[str, object]]:
        return [json.loads(line) for line in audit.read_text().splitlines() if '"tok"' in line]

    wait_until(lambda: any(e.get("outcome") == "failure" and "token expired" in str(e.get("reason"))
                           for e in entries()), what="the failed token login in the audit log")
    logins = [e for e in entries() if e["event"] == "login"]
    assert {(e["auth_method"], e["outcome"]) for e in logins} >= {("token", "success"), ("token", "failure")}
    assert all(e["tls"] for e in logins if e["outcome"] == "success")   # (earlier tests tried plain text too)
    text = audit.read_text()
    assert token not in text and expired not in text and current not in text


# ---- MySQL / MariaDB ---------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def my(mysql_cluster: MysqlCluster, tmp_path_factory: pytest.TempPathFactory, certs: Path) -> Iterator[TokenProxy]:
    port, admin_port, secure, other = free_ports(4)
    ports = {"writer": port, "admin": admin_port, "secure": secure, "other": other}
    directory = tmp_path_factory.mktemp("token-my")
    (directory / "token.key").write_text(SECRET + "\n")
    text = mysql_proxy_config(mysql_cluster, port, admin_port=admin_port) + _token_config(
        "my", ports, certs, APP_USER, APP_PASSWORD, "both-pass")
    with running_proxy(text, directory, port) as proxy:
        yield TokenProxy(proxy, ports, directory)
        proxy.assert_alive_and_clean()


_TLS = {"check_hostname": False, "verify_mode": ssl.CERT_NONE}


def _my(tp: TokenProxy, endpoint: str, password: str, user: str = "tok",
        tls: bool = True) -> pymysql.connections.Connection[object]:
    extra: dict[str, object] = {"ssl": _TLS} if tls else {"ssl_disabled": True}
    return pymysql.connect(host=HOST, port=tp.ports[endpoint], user=user, password=password, database=APP_DB,
                           connect_timeout=5, read_timeout=30, autocommit=True, **extra)  # type: ignore[arg-type]


def _my_refused(tp: TokenProxy, endpoint: str, password: str, reason: str, user: str = "tok",
                tls: bool = True) -> None:
    before = tp.proxy.log_text().count(reason)
    with pytest.raises(pymysql.err.OperationalError) as info:
        _my(tp, endpoint, password, user, tls)
    assert info.value.args[0] == 1045 and f"Access denied for user '{user}'" in info.value.args[1]
    wait_until(lambda: tp.proxy.log_text().count(reason) > before, what=f"{reason!r} in the log")
    assert password not in tp.proxy.log_text()


def test_pymysql_with_a_token(my: TokenProxy) -> None:
    token = my.token("tok")
    conn = _my(my, "secure", token)
    try:
        assert isinstance(conn._sock, ssl.SSLSocket)
        with conn.cursor() as cur:
            cur.execute("SELECT SUBSTRING_INDEX(CURRENT_USER(), '@', 1), 40 + 2")
            assert cur.fetchone() == (APP_USER, 42)
    finally:
        conn.close()


def test_mariadb_cli_with_a_token(my: TokenProxy, certs: Path) -> None:
    """The MariaDB client takes mysql_clear_password when the server switches to it (MySQL's needs
    --enable-cleartext-plugin, which MariaDB's calls obsolete)."""
    token = my.token("tok", "--endpoint", "secure")
    out = mariadb_cli(my.ports["secure"], "SELECT 'token via cli'", user="tok", password=token,
                      extra=["--ssl", f"--ssl-ca={certs / 'ca.pem'}", "--ssl-verify-server-cert"])
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "token via cli"


def test_mysql_refused_tokens(my: TokenProxy) -> None:
    _my_refused(my, "secure", sign(SECRET, "tok", "*", int(time.time()) - 5), "token expired")
    good = my.token("tok")
    _my_refused(my, "secure", good[:-2] + ("AA" if not good.endswith("AA") else "BB"),
                "token signature does not verify")
    _my_refused(my, "secure", my.token("tok", "--endpoint", "other"), "token is for endpoint 'other'")
    _my_refused(my, "writer", good, "token login over plain text refused", tls=False)
    _my_refused(my, "secure", good, "token login over plain text refused", tls=False)


def test_mysql_password_or_token(my: TokenProxy) -> None:
    for password in (my.token("both"), "both-pass"):
        _my(my, "secure", password, user="both").close()
    _my(my, "writer", "both-pass", user="both", tls=False).close()   # mysql_native_password without TLS
    _my_refused(my, "writer", my.token("both"), "wrong password", user="both", tls=False)


def test_mysql_rotation_by_admin_reload(my: TokenProxy) -> None:
    def reload() -> None:
        conninfo = (f"host={HOST} port={my.ports['admin']} user={ADMIN_USER} password={ADMIN_PASSWORD} "
                    "dbname=dbproxy sslmode=disable connect_timeout=5")
        with psycopg.connect(conninfo, autocommit=True) as conn:
            conn.execute("RELOAD", prepare=False)

    old_token = my.token("tok")
    my.rotate(NEXT_SECRET, SECRET, reload)
    new_token = my.token("tok")
    for token in (old_token, new_token):
        _my(my, "secure", token).close()
    my.rotate(NEXT_SECRET, None, reload)
    _my_refused(my, "secure", old_token, "token signature does not verify")
    _my(my, "secure", new_token).close()
