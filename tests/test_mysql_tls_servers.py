"""TLS from dbproxy to MySQL / MariaDB servers (server_tls, SPEC §10): ServerLogin's SSL request in-process, then
a real MariaDB with ssl_cert / ssl_key / ssl_ca for pools, probes and KILL QUERY alike.

One MariaDB instance for the module; the tests that need a server without TLS restart it without the
ssl_* options (`_server_has_tls`), so any order works.
"""

from __future__ import annotations

import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pymysql
import pytest
from e2e_helpers import running_proxy, server_certs, wait_until
from mysql_e2e_helpers import MysqlProxy, connect, mysql_proxy_config, scalar

from deploy.mysqlcluster import MYSQL_OS_USER, MysqlCluster
from deploy.pgcluster import free_ports
from proxy.engines.mysql import auth
from proxy.engines.mysql.client_login import ClientLogin
from proxy.engines.mysql.server_login import ServerLogin, TlsRefused
from proxy.engines.mysql.wire.codes import Capability as C
from proxy.errors import ServerConnectFailed
from proxy.tls.certs import generate

OFFERED = (C.LONG_PASSWORD | C.LONG_FLAG | C.CONNECT_WITH_DB | C.PROTOCOL_41 | C.TRANSACTIONS
           | C.SECURE_CONNECTION | C.MULTI_RESULTS | C.PLUGIN_AUTH | C.CONNECT_ATTRS
           | C.PLUGIN_AUTH_LENENC_CLIENT_DATA | C.DEPRECATE_EOF)
SSL_VERSION = "SELECT variable_value FROM information_schema.session_status WHERE variable_name = 'Ssl_version'"
# Users that may only log in over TLS: if their connections worked, they were encrypted.
PROBE_USER, PROBE_PASSWORD = "tls_probe", "probe-pw"
TLS_USER, TLS_PASSWORD = "tls_app", "tls-app-pw"
_SSL_SETTINGS = ("ssl_cert", "ssl_key", "ssl_ca")


# ----------------------------------------------------------------------------- ServerLogin in-process


def _proxy_as_server(tls_offered: bool) -> ClientLogin:
    users = {"app": auth.derive_verifiers("app-pw")}
    return ClientLogin(auth.CACHING_SHA2_PASSWORD, 7, "10.11.0-MariaDB", OFFERED | (C.SSL if tls_offered else 0),
                       users.get, "10.1.2.3", force_full_auth=True)


def _login(mode: str) -> ServerLogin:
    return ServerLogin("app", "app-pw", "shop", int(C.MULTI_RESULTS | C.TRANSACTIONS), tls_mode=mode)


def test_ssl_request_then_full_response_inside_tls_and_full_auth_in_clear() -> None:
    server, login = _proxy_as_server(True), _login("verify-full")
    [(seq, request)] = login.receive(0, server.greeting())
    assert seq == 1 and len(request) == 32 and login.awaiting_tls and not login.tls
    assert server.receive(1, request) == [] and server.wants_tls
    with pytest.raises(ServerConnectFailed, match="instead of starting the TLS handshake"):
        login.receive(2, b"\x00")
    server.tls_established()
    [(seq, response)] = login.tls_established()
    assert seq == 2 and login.tls and login.capabilities & C.SSL
    [(seq, more)] = server.receive(2, response)
    assert (seq, more) == (3, b"\x01\x04")            # caching_sha2_password: perform full authentication
    [(seq, clear)] = login.receive(3, more)
    assert (seq, clear) == (4, b"app-pw\x00")          # over TLS the password goes in clear, as MySQL clients do
    [(seq, ok)] = server.receive(4, clear)
    assert login.receive(seq, ok) == [] and login.done and server.done and server.tls


@pytest.mark.parametrize("mode", ["require", "verify-ca", "verify-full"])
def test_a_server_without_client_ssl_is_refused(mode: str) -> None:
    with pytest.raises(TlsRefused, match=f'does not offer TLS .*mode = "{mode}" needs it'):
        _login(mode).receive(0, _proxy_as_server(False).greeting())


@pytest.mark.parametrize(("mode", "offered"), [("prefer", False), ("disable", True)])
def test_prefer_falls_back_and_disable_never_asks(mode: str, offered: bool) -> None:
    login = _login(mode)
    [(seq, response)] = login.receive(0, _proxy_as_server(offered).greeting())
    assert seq == 1 and len(response) > 32 and not login.awaiting_tls and not login.capabilities & C.SSL


# ----------------------------------------------------------------------------- a real MariaDB


@pytest.fixture(scope="module")
def certs() -> Iterator[Path]:
    with server_certs(MYSQL_OS_USER) as out:
        yield out


@pytest.fixture(scope="module")
def server(certs: Path) -> Iterator[MysqlCluster]:
    cluster = MysqlCluster(tempfile.mkdtemp(prefix="dbproxy-mytls-"), free_ports(1), settings=_tls_options(certs))
    try:
        cluster.start()
        grants = "SLAVE MONITOR, BINLOG MONITOR, REPLICATION CLIENT"
        cluster.query(0, f"CREATE USER '{PROBE_USER}'@'%' IDENTIFIED BY '{PROBE_PASSWORD}' REQUIRE SSL; "
                         f"GRANT {grants} ON *.* TO '{PROBE_USER}'@'%'; "
                         f"CREATE USER '{TLS_USER}'@'%' IDENTIFIED BY '{TLS_PASSWORD}' REQUIRE SSL; "
                         f"GRANT ALL ON app.* TO '{TLS_USER}'@'%'", admin=True)
        yield cluster
    finally:
        cluster.destroy()


def _tls_options(certs: Path) -> dict[str, str]:
    return {"ssl_cert": str(certs / "server.pem"), "ssl_key": str(certs / "server-key.pem"),
            "ssl_ca": str(certs / "ca.pem")}


def _server_has_tls(cluster: MysqlCluster, certs: Path, on: bool) -> MysqlCluster:
    """Restart the instance with or without its ssl_* options, if it is not that way already."""
    if all(key in cluster.settings for key in _SSL_SETTINGS) == on:
        return cluster
    for key in _SSL_SETTINGS:
        cluster.settings.pop(key, None)
    if on:
        cluster.settings.update(_tls_options(certs))
    cluster.stop_instance(0)
    cluster.start_instance(0)
    return cluster


@contextmanager
def _proxy(cluster: MysqlCluster, directory: Path, server_tls: str, **config: Any) -> Iterator[MysqlProxy]:
    port, admin_port = free_ports(2)
    text = mysql_proxy_config(cluster, port, admin_port=admin_port, borrow_timeout="2s", **config)
    text = text.replace('engine = "mysql"\n', f'engine = "mysql"\nserver_tls = {server_tls}\n', 1)
    with running_proxy(text, directory, port) as running:
        yield MysqlProxy(running, admin_port)


def _ssl_version(proxy: MysqlProxy, **kwargs: Any) -> str:
    with connect(proxy, **kwargs) as conn:
        return str(scalar(conn, SSL_VERSION) or "")


def test_verify_full_encrypts_pools_probes_and_kill_query(server: MysqlCluster, certs: Path, tmp_path: Path) -> None:
    _server_has_tls(server, certs, True)
    verify = f'{{ mode = "verify-full", ca = "{certs / "ca.pem"}" }}'
    with _proxy(server, tmp_path, verify, health={"user": PROBE_USER, "password": PROBE_PASSWORD},
                extra_users=[(TLS_USER, TLS_PASSWORD)]) as proxy:
        assert _ssl_version(proxy).startswith("TLSv1.")
        # The probe logs in as a REQUIRE SSL user: connected, so encrypted (and it keeps the instance up).
        wait_until(lambda: server.scalar(0, "SELECT COUNT(*) FROM information_schema.PROCESSLIST "
                                            f"WHERE USER = '{PROBE_USER}'") == "1", what="the probe's connection")
        # KILL QUERY logs in a second time as the same server user (REQUIRE SSL too), with the same server_tls.
        with connect(proxy, user=TLS_USER, password=TLS_PASSWORD) as sleeper, \
                connect(proxy, user=TLS_USER, password=TLS_PASSWORD) as killer:
            assert scalar(sleeper, SSL_VERSION).startswith("TLSv1.")
            result: list[Any] = []

            def sleep() -> None:
                try:
                    result.append(scalar(sleeper, "SELECT SLEEP(20)"))
                except pymysql.err.OperationalError as exc:
                    result.append(exc.args[0])

            thread = threading.Thread(target=sleep)
            began = time.monotonic()
            thread.start()
            wait_until(lambda: server.scalar(0, "SELECT COUNT(*) FROM information_schema.PROCESSLIST "
                                                "WHERE INFO = 'SELECT SLEEP(20)'") == "1", what="the sleep running")
            scalar(killer, f"KILL QUERY {sleeper.thread_id()}")
            thread.join(10)
            # SLEEP() interrupted: 1, or ERROR 1317 "Query execution was interrupted" (MariaDB 10.11)
            assert result in ([1], [1317]) and time.monotonic() - began < 10, result
        assert "could not forward KILL QUERY" not in proxy.log_text()
        proxy.assert_alive_and_clean()


def test_verify_full_against_another_ca_fails_with_one_clear_log_line(server: MysqlCluster, certs: Path,
                                                                      tmp_path: Path) -> None:
    _server_has_tls(server, certs, True)
    other = generate(tmp_path / "other")
    with _proxy(server, tmp_path / "run", f'{{ mode = "verify-full", ca = "{other / "ca.pem"}" }}') as proxy:
        wait_until(lambda: "certificate verify failed" in proxy.log_text(), what="the probe's TLS failure logged")
        lines = [x for x in proxy.log_text().splitlines() if "certificate verify failed" in x]
        assert "TLS handshake with the server failed" in lines[0] and server.addresses[0] in lines[0], lines
        with pytest.raises(pymysql.err.OperationalError):
            connect(proxy, connect_timeout=10)
        time.sleep(1.0)   # several probes later: still the one line (a state change is logged once)
        assert len([x for x in proxy.log_text().splitlines() if "certificate verify failed" in x]) == 1
        proxy.assert_alive_and_clean()


def test_prefer_uses_tls_when_the_server_offers_it(server: MysqlCluster, certs: Path, tmp_path: Path) -> None:
    _server_has_tls(server, certs, True)
    with _proxy(server, tmp_path, '{ mode = "prefer" }') as proxy:
        assert _ssl_version(proxy).startswith("TLSv1.")


def test_require_refuses_a_server_without_tls_and_prefer_falls_back(server: MysqlCluster, certs: Path,
                                                                     tmp_path: Path) -> None:
    _server_has_tls(server, certs, False)
    with _proxy(server, tmp_path / "require", '{ mode = "require" }') as proxy:
        proxy.wait_logged("does not offer TLS (no CLIENT_SSL in its handshake)")
        line = next(x for x in proxy.log_text().splitlines() if "does not offer TLS" in x)
        assert server.addresses[0] in line and 'mode = "require" needs it' in line, line
        with pytest.raises(pymysql.err.OperationalError):
            connect(proxy, connect_timeout=10)
        proxy.assert_alive_and_clean()
    with _proxy(server, tmp_path / "prefer", '{ mode = "prefer" }') as proxy:
        assert _ssl_version(proxy) == ""
        proxy.assert_alive_and_clean()
