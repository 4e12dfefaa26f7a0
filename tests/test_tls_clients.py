"""End to end: TLS between clients and dbproxy (SPEC §10) — PostgreSQL SSLRequest and direct TLS, MySQL CLIENT_SSL.

Certificates come from `dbproxy gen-cert` (proxy.tls.certs). Endpoints of one proxy: "writer" with TLS
off ('N' to an SSLRequest), "tls" with mode prefer, "secure" with mode require, "mtls" with client
certificates verified.
"""

from __future__ import annotations

import shutil
import socket
import ssl
import struct
import subprocess
from collections.abc import Iterator
from pathlib import Path

import asyncpg
import psycopg
import pymysql
import pytest
from e2e_helpers import (
    APP,
    HOST,
    RawClient,
    RunningProxy,
    clean_env,
    first_error,
    proxy_config,
    running_proxy,
    wait_until,
)
from mysql_e2e_helpers import APP_DB, APP_PASSWORD, APP_USER, mariadb_cli, mysql_proxy_config

from deploy.mysqlcluster import MysqlCluster
from deploy.pgcluster import PgCluster, free_ports, pg_binary
from proxy.tls.certs import generate


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return generate(tmp_path_factory.mktemp("certs"))


def _tls(certs: Path, mode: str, **extra: str) -> str:
    fields = {"mode": mode, "cert": str(certs / "server.pem"), "key": str(certs / "server-key.pem"), **extra}
    return "{ " + ", ".join(f'{key} = "{value}"' for key, value in fields.items()) + " }"


def _endpoints(cluster: str, ports: dict[str, int], certs: Path) -> str:
    tls = {"tls": _tls(certs, "prefer"), "secure": _tls(certs, "require"),
           "mtls": _tls(certs, "require", ca=str(certs / "ca.pem"), client_cert="verify")}
    return "\n".join(f'[[clusters.{cluster}.endpoints]]\nname = "{name}"\nlisten = "{HOST}:{ports[name]}"\n'
                     f'role = "writer"\ntls = {tls[name]}\n' for name in tls)


@pytest.fixture(scope="module")
def pg_proxy(pg_cluster: PgCluster, tmp_path_factory: pytest.TempPathFactory,
             certs: Path) -> Iterator[tuple[RunningProxy, dict[str, int]]]:
    port, *more = free_ports(4)
    ports = dict(zip(("tls", "secure", "mtls"), more, strict=True))
    text = proxy_config(pg_cluster, port, client_auth="scram-sha-256") + "\n" + _endpoints("main", ports, certs)
    with running_proxy(text, tmp_path_factory.mktemp("tls-pg"), port) as proxy:
        yield proxy, ports
        proxy.assert_alive_and_clean()


def _conninfo(proxy: RunningProxy, port: int, **extra: str) -> str:
    return proxy.conninfo(port=str(port), **extra)


def test_psycopg_sslmode_require_and_verify_full(pg_proxy: tuple[RunningProxy, dict[str, int]], certs: Path) -> None:
    proxy, ports = pg_proxy
    with psycopg.connect(_conninfo(proxy, ports["tls"], sslmode="require")) as conn:
        assert conn.pgconn.ssl_in_use
        assert conn.execute("SELECT 40 + 2").fetchone() == (42,)
    verify = _conninfo(proxy, ports["tls"], sslmode="verify-full", sslrootcert=str(certs / "ca.pem"), host="localhost")
    with psycopg.connect(verify) as conn:
        assert conn.pgconn.ssl_in_use and conn.execute("SELECT 1").fetchone() == (1,)
    # prefer on an endpoint with TLS: encrypted; on one without: plain text.
    with psycopg.connect(_conninfo(proxy, ports["tls"], sslmode="prefer")) as conn:
        assert conn.pgconn.ssl_in_use
    with psycopg.connect(_conninfo(proxy, proxy.port, sslmode="prefer")) as conn:
        assert not conn.pgconn.ssl_in_use
    with pytest.raises(psycopg.OperationalError, match="does not support SSL"):
        psycopg.connect(_conninfo(proxy, proxy.port, sslmode="require"))


def test_verify_full_with_another_ca_fails(pg_proxy: tuple[RunningProxy, dict[str, int]],
                                           tmp_path: Path) -> None:
    proxy, ports = pg_proxy
    other = generate(tmp_path / "other")
    with pytest.raises(psycopg.OperationalError, match="SSL error|certificate verify failed"):
        psycopg.connect(_conninfo(proxy, ports["tls"], sslmode="verify-full", sslrootcert=str(other / "ca.pem"),
                                  host="localhost"))


def test_require_refuses_plain_text(pg_proxy: tuple[RunningProxy, dict[str, int]]) -> None:
    proxy, ports = pg_proxy
    with pytest.raises(psycopg.OperationalError, match="accepts only TLS connections"):
        psycopg.connect(_conninfo(proxy, ports["secure"], sslmode="disable"))
    raw = RawClient(ports["secure"])
    try:
        raw.send(_startup())
        error = first_error(raw.read_all_until_eof())
        assert error is not None and error["C"] == "28000" and error["S"] == "FATAL", error
    finally:
        raw.close()
    with psycopg.connect(_conninfo(proxy, ports["secure"], sslmode="require")) as conn:
        assert conn.execute("SELECT 'secure'").fetchone() == ("secure",)


def test_psql_and_asyncpg_over_tls(pg_proxy: tuple[RunningProxy, dict[str, int]], certs: Path) -> None:
    proxy, ports = pg_proxy
    out = subprocess.run(
        [pg_binary("psql"), f"host=localhost port={ports['secure']} user=app dbname=app sslmode=verify-full "
         f"sslrootcert={certs / 'ca.pem'}", "-Atc", "SELECT 'psql over tls'"],
        capture_output=True, text=True, timeout=30, env=clean_env(PGPASSWORD=APP.password or ""))
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "psql over tls"


async def test_asyncpg_verified(pg_proxy: tuple[RunningProxy, dict[str, int]], certs: Path) -> None:
    proxy, ports = pg_proxy
    context = ssl.create_default_context(cafile=str(certs / "ca.pem"))
    conn = await asyncpg.connect(proxy.dsn().replace(f"{HOST}:{proxy.port}", f"localhost:{ports['secure']}"),
                                 ssl=context)
    try:
        assert await conn.fetchval("SELECT $1::int * 2", 21) == 42
    finally:
        await conn.close()


def test_client_certificates_are_verified(pg_proxy: tuple[RunningProxy, dict[str, int]], certs: Path,
                                          tmp_path: Path) -> None:
    proxy, ports = pg_proxy
    with psycopg.connect(_conninfo(proxy, ports["mtls"], sslmode="require", sslcert=str(certs / "client.pem"),
                                   sslkey=str(certs / "client-key.pem"))) as conn:
        assert conn.execute("SELECT 1").fetchone() == (1,)
    other = generate(tmp_path / "other")   # a certificate from a CA the endpoint does not trust
    for cert, key in ((other / "client.pem", other / "client-key.pem"), (None, None)):
        extra = {"sslcert": str(cert), "sslkey": str(key)} if cert else {"sslcert": str(tmp_path / "none.pem")}
        with pytest.raises(psycopg.OperationalError):
            psycopg.connect(_conninfo(proxy, ports["mtls"], sslmode="require", **extra))


def _startup(user: str = "app", database: str = "app") -> bytes:
    body = struct.pack("!I", 196608) + b"user\x00" + user.encode() + b"\x00database\x00" + database.encode() + b"\x00\x00"
    return struct.pack("!I", len(body) + 4) + body


def test_direct_tls_with_alpn(pg_proxy: tuple[RunningProxy, dict[str, int]], certs: Path) -> None:
    """PostgreSQL 17's sslnegotiation=direct: a ClientHello first, ALPN "postgresql" required."""
    proxy, ports = pg_proxy
    context = ssl.create_default_context(cafile=str(certs / "ca.pem"))
    context.set_alpn_protocols(["postgresql"])
    with socket.create_connection((HOST, ports["tls"]), timeout=5) as raw, \
            context.wrap_socket(raw, server_hostname="localhost") as tls:
        assert tls.selected_alpn_protocol() == "postgresql"
        tls.sendall(_startup())
        reply = tls.recv(1024)
        assert reply[:1] == b"R" and struct.unpack("!I", reply[5:9])[0] == 10   # SASL: SCRAM-SHA-256
    no_alpn = ssl.create_default_context(cafile=str(certs / "ca.pem"))
    with socket.create_connection((HOST, ports["tls"]), timeout=5) as raw, \
            no_alpn.wrap_socket(raw, server_hostname="localhost") as tls:
        tls.sendall(_startup())
        assert tls.recv(1024) == b""   # closed, as PostgreSQL 17 does without ALPN
    plain_context = ssl.create_default_context(cafile=str(certs / "ca.pem"))
    plain_context.set_alpn_protocols(["postgresql"])
    with socket.create_connection((HOST, proxy.port), timeout=5) as raw, pytest.raises((ssl.SSLError, OSError)):
        plain_context.wrap_socket(raw, server_hostname="localhost")   # TLS off on this endpoint: closed


def test_renewed_certificates_are_used_by_new_connections(pg_proxy: tuple[RunningProxy, dict[str, int]],
                                                          certs: Path, tmp_path: Path) -> None:
    proxy, ports = pg_proxy
    old_ca = tmp_path / "old-ca.pem"
    shutil.copy(certs / "ca.pem", old_ca)
    generate(certs)   # a new CA and server certificate at the same paths, as a renewal would write them
    ok = _conninfo(proxy, ports["tls"], sslmode="verify-full", sslrootcert=str(certs / "ca.pem"), host="localhost")
    with psycopg.connect(ok) as conn:
        assert conn.execute("SELECT 1").fetchone() == (1,)
    with pytest.raises(psycopg.OperationalError, match="SSL error|certificate verify failed"):
        psycopg.connect(_conninfo(proxy, ports["tls"], sslmode="verify-full", sslrootcert=str(old_ca),
                                  host="localhost"))


# ---- MySQL ---------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def my_proxy(mysql_cluster: MysqlCluster, tmp_path_factory: pytest.TempPathFactory,
             certs: Path) -> Iterator[tuple[RunningProxy, dict[str, int]]]:
    port, admin_port, *more = free_ports(5)
    ports = dict(zip(("tls", "secure", "mtls"), more, strict=False))
    text = mysql_proxy_config(mysql_cluster, port, admin_port=admin_port) + "\n" + _endpoints("my", ports, certs)
    with running_proxy(text, tmp_path_factory.mktemp("tls-my"), port) as proxy:
        yield proxy, ports
        proxy.assert_alive_and_clean()


def _pymysql(port: int, **kwargs: object) -> pymysql.connections.Connection[object]:
    return pymysql.connect(host=HOST, port=port, user=APP_USER, password=APP_PASSWORD, database=APP_DB,
                           connect_timeout=5, read_timeout=30, autocommit=True, **kwargs)  # type: ignore[arg-type]


def test_pymysql_over_tls_verified(my_proxy: tuple[RunningProxy, dict[str, int]], certs: Path) -> None:
    proxy, ports = my_proxy
    conn = _pymysql(ports["tls"], ssl={"ca": str(certs / "ca.pem"), "check_hostname": False})
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT 40 + 2")
            assert cur.fetchone() == (42,)
        assert conn._sock is not None and isinstance(conn._sock, ssl.SSLSocket)
    finally:
        conn.close()
    preferred = _pymysql(ports["tls"])   # this PyMySQL uses TLS when the server offers it
    try:
        assert isinstance(preferred._sock, ssl.SSLSocket)
    finally:
        preferred.close()
    plain = _pymysql(proxy.port)   # TLS off on this endpoint: CLIENT_SSL not offered
    try:
        assert not isinstance(plain._sock, ssl.SSLSocket)
    finally:
        plain.close()


def test_mysql_require_refuses_plain_text(my_proxy: tuple[RunningProxy, dict[str, int]]) -> None:
    _, ports = my_proxy
    with pytest.raises(pymysql.err.OperationalError) as info:
        _pymysql(ports["secure"], ssl_disabled=True)
    assert info.value.args[0] == 3159
    conn = _pymysql(ports["secure"], ssl={"check_hostname": False, "verify_mode": ssl.CERT_NONE})
    conn.close()


def test_mariadb_cli_over_tls(my_proxy: tuple[RunningProxy, dict[str, int]], certs: Path) -> None:
    _, ports = my_proxy
    out = mariadb_cli(ports["secure"], "SELECT 'cli over tls'",
                      extra=["--ssl", f"--ssl-ca={certs / 'ca.pem'}", "--ssl-verify-server-cert"])
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "cli over tls"
    refused = mariadb_cli(ports["secure"], "SELECT 1", extra=["--skip-ssl"])
    assert refused.returncode != 0 and "3159" in refused.stderr


def test_mysql_client_certificates(my_proxy: tuple[RunningProxy, dict[str, int]], certs: Path) -> None:
    _, ports = my_proxy
    conn = _pymysql(ports["mtls"], ssl={"ca": str(certs / "ca.pem"), "check_hostname": False,
                                        "cert": str(certs / "client.pem"), "key": str(certs / "client-key.pem")})
    conn.close()
    with pytest.raises(pymysql.err.OperationalError):
        _pymysql(ports["mtls"], ssl={"ca": str(certs / "ca.pem"), "check_hostname": False})


def test_scram_channel_binding_over_tls(pg_proxy: tuple[RunningProxy, dict[str, int]]) -> None:
    """libpq's channel_binding=require: SCRAM-SHA-256-PLUS with tls-server-end-point."""
    proxy, ports = pg_proxy
    with psycopg.connect(_conninfo(proxy, ports["tls"], sslmode="require", channel_binding="require")) as conn:
        assert conn.execute("SELECT 1").fetchone() == (1,)
    with pytest.raises(psycopg.OperationalError, match="channel binding"):   # plain text: nothing to bind
        psycopg.connect(_conninfo(proxy, proxy.port, sslmode="disable", channel_binding="require"))


def test_a_failed_handshake_after_sslrequest_closes_only_that_connection(
        pg_proxy: tuple[RunningProxy, dict[str, int]]) -> None:
    proxy, ports = pg_proxy
    with socket.create_connection((HOST, ports["tls"]), timeout=5) as raw:
        raw.sendall(struct.pack("!II", 8, 80877103))   # SSLRequest
        assert raw.recv(1) == b"S"
        raw.sendall(b"this is not a TLS ClientHello" * 10)
        rest = b""
        while chunk := raw.recv(4096):
            rest += chunk
        assert b"SELECT" not in rest   # closed (perhaps after a TLS alert), nothing else said
    wait_until(lambda: "TLS handshake failed" in proxy.log_text(), what="the failed handshake logged")
    with psycopg.connect(_conninfo(proxy, ports["tls"], sslmode="require")) as conn:   # others unaffected
        assert conn.execute("SELECT 1").fetchone() == (1,)
