"""MySQL logins: ClientLogin driven by ServerLogin in-process, the mysql CLI, and a real MariaDB 10.11."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import threading
from collections.abc import Iterator
from typing import Any

import pytest

from proxy.engines.mysql import auth
from proxy.engines.mysql.auth import MysqlVerifiers, derive_verifiers
from proxy.engines.mysql.client_login import ClientLogin
from proxy.engines.mysql.server_login import MysqlServerRefused, ServerLogin
from proxy.engines.mysql.wire.codes import Capability as C
from proxy.engines.mysql.wire.codes import Status
from proxy.engines.mysql.wire.handshake import (
    AuthSwitchRequest,
    ChangeUser,
    HandshakeResponse41,
    HandshakeV10,
)
from proxy.engines.mysql.wire.messages import decode_err, encode_err
from proxy.errors import ProtocolViolation, ServerConnectFailed

NATIVE, SHA2, CLEAR = auth.NATIVE_PASSWORD, auth.CACHING_SHA2_PASSWORD, auth.CLEAR_PASSWORD
OFFERED = (C.LONG_PASSWORD | C.FOUND_ROWS | C.LONG_FLAG | C.CONNECT_WITH_DB | C.PROTOCOL_41
           | C.TRANSACTIONS | C.SECURE_CONNECTION | C.MULTI_STATEMENTS | C.MULTI_RESULTS | C.PLUGIN_AUTH
           | C.CONNECT_ATTRS | C.PLUGIN_AUTH_LENENC_CLIENT_DATA | C.SESSION_TRACK | C.DEPRECATE_EOF)
WANTED = C.LONG_FLAG | C.TRANSACTIONS | C.MULTI_RESULTS | C.DEPRECATE_EOF | C.COMPRESS | C.SSL
USERS: dict[str, MysqlVerifiers] = {"app": derive_verifiers("app-pw"), "nopw": derive_verifiers("")}


def client_login(method: str, **kw: object) -> ClientLogin:
    return ClientLogin(method, 42, "8.0.36-dbproxy", OFFERED, USERS.get, "10.1.2.3", **kw)  # type: ignore[arg-type]


def server_login(user: str = "app", password: str | None = "app-pw", **kw: object) -> ServerLogin:
    return ServerLogin(user, password, kw.pop("database", "shop"), WANTED,  # type: ignore[arg-type]
                       attributes={"_client_name": "dbproxy"}, **kw)  # type: ignore[arg-type]


def with_plugin(greeting: bytes, plugin: str) -> bytes:
    """The same greeting announcing another default plugin (so the client answers with that one)."""
    g = HandshakeV10.decode(greeting)
    return HandshakeV10(g.server_version, g.connection_id, g.scramble, g.capabilities, g.charset,
                        g.status, plugin).encode()


def drive(cl: ClientLogin, sl: ServerLogin, greeting_plugin: str | None = None,
          trace: list[str] | None = None) -> list[str]:
    """Run both machines against each other; returns (and appends to `trace`) each packet's
    "S<seq>:<first byte>" (from ClientLogin, the proxy-as-server) or "C<seq>:<length>"."""
    greeting = cl.greeting()
    if greeting_plugin:
        greeting = with_plugin(greeting, greeting_plugin)
    pending = [(0, greeting)]
    trace = [] if trace is None else trace
    while pending:
        to_server = []
        for seq, payload in pending:
            trace.append(f"S{seq}:{payload[:1].hex()}")
            to_server += sl.receive(seq, payload)
        pending = []
        for seq, payload in to_server:
            trace.append(f"C{seq}:{len(payload)}")
            pending += cl.receive(seq, payload)
    return trace


# ----------------------------------------------------------------------------- in-process logins


@pytest.mark.parametrize("method", [NATIVE, SHA2])
def test_login_each_plugin(method: str) -> None:
    cl, sl = client_login(method), server_login()
    trace = drive(cl, sl)
    if method == NATIVE:
        assert trace == ["S0:0a", "C1:" + trace[1][3:], "S2:00"]
    else:
        assert [t[:5] for t in trace] == ["S0:0a", "C1:" + trace[1][3:5], "S2:01", "S3:00"]
    assert cl.done and not cl.failed and sl.done
    assert (cl.user, cl.database, cl.client_plugin, cl.charset) == ("app", "shop", method, 45)
    assert cl.attributes == {"_client_name": "dbproxy"}
    assert cl.capabilities == sl.capabilities & OFFERED
    assert not sl.capabilities & (C.COMPRESS | C.SSL) and sl.capabilities & C.CONNECT_WITH_DB
    assert (sl.connection_id, sl.server_version, sl.status) == (42, "8.0.36-dbproxy", Status.AUTOCOMMIT)
    assert sl.server_capabilities == OFFERED | C.PROTOCOL_41


@pytest.mark.parametrize(("method", "client_default"), [(NATIVE, SHA2), (SHA2, NATIVE)])
def test_auth_switch_both_ways(method: str, client_default: str) -> None:
    cl, sl = client_login(method), server_login()
    trace = drive(cl, sl, greeting_plugin=client_default)
    assert trace[2] == "S2:fe" and cl.done and sl.done
    assert sl.plugin == method and cl.client_plugin == method


@pytest.mark.parametrize("method", [NATIVE, SHA2])
def test_wrong_password_and_unknown_user_get_1045(method: str) -> None:
    for user, pw, reason in [("app", "nope", "wrong password"), ("ghost", "app-pw", "unknown user")]:
        cl, sl = client_login(method), server_login(user, pw)
        with pytest.raises(MysqlServerRefused) as info:
            drive(cl, sl)
        assert (info.value.errno, info.value.sqlstate) == (1045, "28000")
        assert f"Access denied for user '{user}'@'10.1.2.3' (using password: YES)" in str(info.value)
        assert cl.failed and not cl.done and cl.failed_reason == f"login refused: {reason}"
        assert pw not in str(info.value) and pw not in cl.failed_reason


def test_unknown_user_goes_through_the_same_exchange_as_a_wrong_password() -> None:
    seen = []
    for user in ("app", "ghost"):
        cl, sl = client_login(SHA2), server_login(user, "bad")
        trace: list[str] = []
        with pytest.raises(MysqlServerRefused):
            drive(cl, sl, greeting_plugin=NATIVE, trace=trace)
        seen.append((trace, cl.failed_reason))
    assert seen[0][0][0] == "S0:0a" and seen[0][0][1].startswith("C1:")
    assert seen[0][0][2:] == seen[1][0][2:] == ["S2:fe", "C3:32", "S4:ff"]
    assert seen[0][1] != seen[1][1]      # only the log tells them apart


def test_empty_password() -> None:
    cl, sl = client_login(NATIVE), server_login("app", None)
    with pytest.raises(MysqlServerRefused, match=r"using password: NO"):
        drive(cl, sl)
    for method in (NATIVE, SHA2):
        cl, sl = client_login(method), server_login("nopw", "")
        drive(cl, sl)
        assert cl.done and sl.done


@pytest.mark.parametrize("tls", [False, True])
def test_caching_sha2_full_auth(tls: bool) -> None:
    cl, sl = client_login(SHA2, force_full_auth=True, tls=tls), server_login(tls=tls)
    trace = drive(cl, sl)
    assert cl.done and sl.done
    if tls:    # 0x04, then the cleartext password
        assert [t[:5] for t in trace[2:]] == ["S2:01", "C3:7", "S4:00"]
    else:      # 0x04, public key request 0x02, the PEM, the RSA ciphertext
        assert trace[2:] == ["S2:01", "C3:1", "S4:01", "C5:256", "S6:00"]
        assert sl.server_public_key == auth.proxy_public_key_pem()
        cl2 = client_login(SHA2, force_full_auth=True)
        sl2 = server_login(server_public_key=sl.server_public_key)
        assert drive(cl2, sl2)[2:] == ["S2:01", "C3:256", "S4:00"] and cl2.done


@pytest.mark.parametrize("tls", [False, True])
def test_caching_sha2_full_auth_wrong_password(tls: bool) -> None:
    cl, sl = client_login(SHA2, force_full_auth=True, tls=tls), server_login(password="bad", tls=tls)
    with pytest.raises(MysqlServerRefused, match="1045"):
        drive(cl, sl)
    assert cl.failed_reason == "login refused: wrong password"


def test_full_auth_cleartext_without_tls_is_refused() -> None:
    cl = client_login(SHA2, force_full_auth=True)
    cl.greeting()
    resp = HandshakeResponse41(OFFERED, user="app", auth_response=bytes(32), auth_plugin=SHA2)
    assert cl.receive(1, resp.encode()) == [(2, b"\x01\x04")]
    [(seq, err)] = cl.receive(3, b"app-pw\x00")
    assert seq == 4 and decode_err(err).errno == 1045
    assert cl.failed_reason == "login refused: client sent a cleartext password without TLS"


def _first_response(plugin: str, data: bytes, caps: int = OFFERED, user: str = "app") -> bytes:
    return HandshakeResponse41(caps, user=user, auth_response=data, database="shop", auth_plugin=plugin).encode()


def test_clear_password_over_tls_only() -> None:
    cl = client_login(NATIVE, tls=True)
    cl.greeting()
    [(seq, ok)] = cl.receive(1, _first_response(CLEAR, b"app-pw\x00"))
    assert (seq, ok[:1], cl.done, cl.client_plugin) == (2, b"\x00", True, CLEAR)
    cl = client_login(NATIVE)
    cl.greeting()
    [(seq, switch)] = cl.receive(1, _first_response(CLEAR, b"app-pw\x00"))
    assert AuthSwitchRequest.decode(switch).plugin == NATIVE and not cl.done


def test_cleartext_hook_for_token_logins() -> None:
    def check(user: str, password: bytes, verifiers: MysqlVerifiers | None) -> bool:
        return user == "tok" and password == b"signed-token" and verifiers is None

    cl = client_login(SHA2, tls=True, check_cleartext=check)
    cl.greeting()
    [(_, ok)] = cl.receive(1, _first_response(CLEAR, b"signed-token\x00", user="tok"))
    assert ok[:1] == b"\x00" and cl.user == "tok"


def test_tls_upgrade_then_full_response() -> None:
    cl = ClientLogin(NATIVE, 42, "8.0.36", OFFERED | C.SSL, USERS.get, "10.1.2.3")
    greeting = HandshakeV10.decode(cl.greeting())
    assert greeting.capabilities & C.SSL
    token = auth.native_password_token(b"app-pw", greeting.scramble)
    resp = HandshakeResponse41(OFFERED | C.SSL, user="app", auth_response=token, auth_plugin=NATIVE)
    assert cl.receive(1, resp.encode_ssl_request()) == [] and cl.wants_tls
    cl.tls_established()
    [(seq, ok)] = cl.receive(2, resp.encode())
    assert seq == 3 and ok[:1] == b"\x00" and cl.done and cl.tls


def test_ssl_request_when_not_offered_and_tls_required() -> None:
    cl = client_login(NATIVE)
    cl.greeting()
    [(_, err)] = cl.receive(1, HandshakeResponse41(OFFERED).encode_ssl_request())
    assert decode_err(err).errno == 1043 and cl.failed
    cl = client_login(NATIVE, require_tls=True)
    cl.greeting()
    [(_, err)] = cl.receive(1, _first_response(NATIVE, bytes(20)))
    assert decode_err(err).errno == 3159 and cl.failed_reason == "TLS required"


def test_pre_41_client_and_garbage_and_order() -> None:
    cl = client_login(NATIVE)
    cl.greeting()
    [(seq, err)] = cl.receive(1, HandshakeResponse41(C.SECURE_CONNECTION, user="u").encode())
    assert seq == 2 and err.startswith(b"\xff\x13\x04Bad handshake: client does not support the 4.1")
    cl = client_login(NATIVE)
    cl.greeting()
    [(_, err)] = cl.receive(1, b"\x00\x02\x00\x00garbage")
    assert decode_err(err).errno == 1043 and "malformed handshake response" in cl.failed_reason
    with pytest.raises(ProtocolViolation):
        cl.receive(2, b"more")
    cl = client_login(NATIVE)
    cl.greeting()
    [(_, err)] = cl.receive(5, _first_response(NATIVE, bytes(20)))
    assert decode_err(err).errno == 1156


def test_client_without_plugin_auth_is_checked_as_native() -> None:
    cl = client_login(SHA2)
    greeting = HandshakeV10.decode(cl.greeting())
    caps = C.PROTOCOL_41 | C.SECURE_CONNECTION
    resp = HandshakeResponse41(caps, user="app",
                               auth_response=auth.native_password_token(b"app-pw", greeting.scramble))
    [(_, ok)] = cl.receive(1, resp.encode())
    assert ok == b"\x00\x00\x00\x02\x00\x00\x00" and cl.client_plugin == NATIVE


# ----------------------------------------------------------------------------- COM_CHANGE_USER


def _logged_in(method: str) -> tuple[ClientLogin, bytes]:
    cl, sl = client_login(method), server_login()
    greeting = cl.greeting()
    pending = [(0, greeting)]
    while pending:
        pending = [r for seq, p in pending for s, d in sl.receive(seq, p) for r in cl.receive(s, d)]
    return cl, HandshakeV10.decode(greeting).scramble


@pytest.mark.parametrize("method", [NATIVE, SHA2])
def test_change_user_with_the_greeting_scramble(method: str) -> None:
    cl, scramble = _logged_in(method)
    token = (auth.native_password_token if method == NATIVE else auth.caching_sha2_token)(b"", scramble)
    packet = ChangeUser("nopw", token, "other", 33, method, {"k": "v"}).encode(cl.capabilities)
    replies = cl.change_user(packet)
    assert [p[:1] for _, p in replies] == ([b"\x00"] if method == NATIVE else [b"\x01", b"\x00"])
    assert [s for s, _ in replies] == list(range(1, len(replies) + 1))
    assert cl.done and (cl.user, cl.database, cl.charset, cl.attributes) == ("nopw", "other", 33, {"k": "v"})
    packet = ChangeUser("app", auth.native_password_token(b"app-pw", scramble), "", 45, NATIVE).encode(
        cl.capabilities)
    replies = cl.change_user(packet)
    if method == NATIVE:
        assert replies[0][1][:1] == b"\x00" and cl.user == "app" and cl.database is None
    else:      # another plugin: switch to the cluster's
        assert AuthSwitchRequest.decode(replies[0][1]).plugin == SHA2


def test_change_user_switch_round_and_wrong_password() -> None:
    cl, scramble = _logged_in(NATIVE)
    packet = ChangeUser("app", auth.native_password_token(b"bad", scramble), "", 45, NATIVE)
    [(seq, switch)] = cl.change_user(packet.encode(cl.capabilities))
    fresh = AuthSwitchRequest.decode(switch).data[:20]
    assert seq == 1 and fresh != scramble
    [(seq, err)] = cl.receive(2, auth.native_password_token(b"bad", fresh))
    assert seq == 3 and decode_err(err).errno == 1045 and cl.failed
    assert cl.failed_reason == "change user refused: wrong password"
    cl, scramble = _logged_in(NATIVE)
    cl.change_user(ChangeUser("app", b"x" * 20, "", 45, NATIVE).encode(cl.capabilities))
    fresh = cl._scramble
    [(seq, ok)] = cl.receive(2, auth.native_password_token(b"app-pw", fresh))
    assert seq == 3 and ok[:1] == b"\x00" and cl.done
    with pytest.raises(ProtocolViolation):
        client_login(NATIVE).change_user(b"\x11")
    [(_, err)] = cl.change_user(b"\x11no-nul")
    assert decode_err(err).errno == 1043


# ----------------------------------------------------------------------------- ServerLogin alone


def _greeting(plugin: str = NATIVE, caps: int = OFFERED) -> bytes:
    return HandshakeV10("10.11.19-MariaDB", 7, bytes(range(1, 21)), caps, 45, 2, plugin).encode()


def test_server_refusal_before_greeting() -> None:
    with pytest.raises(MysqlServerRefused) as info:
        server_login().receive(0, encode_err(1040, "Too many connections"))
    assert info.value.errno == 1040 and "Too many connections" in str(info.value)
    assert isinstance(info.value, ServerConnectFailed)


def test_server_asks_for_ed25519() -> None:
    from nacl.bindings import crypto_sign_open

    sl = server_login(password="ed-pw")
    sl.receive(0, _greeting())
    [(seq, sig)] = sl.receive(2, AuthSwitchRequest(auth.ED25519, bytes(range(32))).encode())
    assert seq == 3 and crypto_sign_open(sig + bytes(range(32)), auth.ed25519_public_key(b"ed-pw"))
    with pytest.raises(ServerConnectFailed, match="wrong length"):
        s2 = server_login()
        s2.receive(0, _greeting())
        s2.receive(2, AuthSwitchRequest(auth.ED25519, b"short").encode())


def test_server_clear_password_needs_tls_or_permission() -> None:
    cases: list[tuple[dict[str, Any], bool]] = [({}, False), ({"tls": True}, True), ({"allow_cleartext": True}, True)]
    for kw, ok in cases:
        sl = server_login(**kw)
        sl.receive(0, _greeting())
        switch = AuthSwitchRequest(CLEAR, b"").encode()
        if ok:
            assert sl.receive(2, switch) == [(3, b"app-pw\x00")]
        else:
            with pytest.raises(ServerConnectFailed, match="without TLS"):
                sl.receive(2, switch)


def test_server_login_protocol_errors() -> None:
    sl = server_login()
    with pytest.raises(ServerConnectFailed, match="out of order"):
        sl.receive(1, _greeting())
    with pytest.raises(ServerConnectFailed, match="malformed"):
        server_login().receive(0, b"\x0a5.5")
    with pytest.raises(ServerConnectFailed, match="capabilities"):
        server_login().receive(0, _greeting(caps=C.PROTOCOL_41 | C.SECURE_CONNECTION))
    sl = server_login()
    sl.receive(0, _greeting())
    with pytest.raises(ServerConnectFailed, match="unsupported auth plugin 'dialog'"):
        sl.receive(2, AuthSwitchRequest("dialog", b"").encode())
    sl = server_login()
    sl.receive(0, _greeting())
    with pytest.raises(ServerConnectFailed, match="unexpected auth data"):
        sl.receive(2, b"\x01\x03")
    sl = server_login()
    [(_, resp)] = sl.receive(0, _greeting(plugin="auth_gssapi_client"))
    assert HandshakeResponse41.decode(resp).auth_plugin == NATIVE     # unknown default: answer native


def test_server_login_without_database_leaves_connect_with_db_out() -> None:
    sl = server_login(database=None)
    [(_, resp)] = sl.receive(0, _greeting())
    decoded = HandshakeResponse41.decode(resp)
    assert decoded.database is None and not decoded.capabilities & C.CONNECT_WITH_DB


# ----------------------------------------------------------------------------- the mysql CLI as client


def _read_packet(sock: socket.socket) -> tuple[int, bytes] | None:
    header = _read_exactly(sock, 4)
    if header is None:
        return None
    payload = _read_exactly(sock, int.from_bytes(header[:3], "little"))
    return (header[3], payload) if payload is not None else None


def _read_exactly(sock: socket.socket, n: int) -> bytes | None:
    data = b""
    while len(data) < n:
        chunk = sock.recv(n - len(data))
        if not chunk:
            return None
        data += chunk
    return data


def _write_packet(sock: socket.socket, seq: int, payload: bytes) -> None:
    sock.sendall(len(payload).to_bytes(3, "little") + bytes((seq & 0xFF,)) + payload)


def _serve_one(listener: socket.socket, cl: ClientLogin) -> None:
    """Log the client in, then answer every command with OK until COM_QUIT."""
    sock, _ = listener.accept()
    with sock:
        sock.settimeout(10)
        _write_packet(sock, 0, cl.greeting())
        while not (cl.done or cl.failed):
            packet = _read_packet(sock)
            if packet is None:
                return
            for seq, payload in cl.receive(*packet):
                _write_packet(sock, seq, payload)
        while cl.done:
            packet = _read_packet(sock)
            if packet is None or packet[1][:1] == b"\x01":
                return
            _write_packet(sock, 1, b"\x00\x00\x00\x02\x00\x00\x00")


@pytest.mark.skipif(shutil.which("mysql") is None, reason="no mysql command-line client")
@pytest.mark.parametrize(("method", "password"), [(NATIVE, "app-pw"), (SHA2, "app-pw"), (SHA2, "wrong")])
def test_mysql_cli_logs_in(method: str, password: str) -> None:
    cl = ClientLogin(method, 9, "8.0.36-dbproxy", OFFERED, USERS.get, "127.0.0.1")
    with socket.create_server(("127.0.0.1", 0)) as listener:
        listener.settimeout(10)
        thread = threading.Thread(target=_serve_one, args=(listener, cl), daemon=True)
        thread.start()
        result = subprocess.run(
            ["mysql", "--no-defaults", "-h127.0.0.1", f"-P{listener.getsockname()[1]}", "-uapp",
             f"-p{password}", "-Dshop", "-e", "do 1"], capture_output=True, text=True, timeout=20)
        thread.join(10)
    if password == "app-pw":
        assert result.returncode == 0, result.stderr
        assert cl.done and (cl.user, cl.database, cl.client_plugin) == ("app", "shop", method)
        assert cl.attributes.get("program_name") == "mysql"
    else:
        assert result.returncode == 1
        assert "ERROR 1045 (28000): Access denied for user 'app'@'127.0.0.1' (using password: YES)" \
            in result.stderr


# ----------------------------------------------------------------------------- a real MariaDB

MARIADB = ("127.0.0.1", 3306)
SUFFIX = f"{os.getpid()}"
NATIVE_USER, ED_USER = f"dbp_native_{SUFFIX}", f"dbp_ed_{SUFFIX}"
NO_DB = f"dbp_missing_{SUFFIX}"


def _mariadb_up() -> bool:
    try:
        socket.create_connection(MARIADB, timeout=1).close()
    except OSError:
        return False
    return True


def login_to_mariadb(user: str, password: str | None, database: str | None = None) -> tuple[socket.socket, ServerLogin]:
    sock = socket.create_connection(MARIADB, timeout=10)
    sl = ServerLogin(user, password, database, WANTED, attributes={"program_name": "dbproxy-test"})
    try:
        while not sl.done:
            packet = _read_packet(sock)
            assert packet is not None, "server closed the connection during login"
            for seq, payload in sl.receive(*packet):
                _write_packet(sock, seq, payload)
    except BaseException:
        sock.close()
        raise
    return sock, sl


def run_sql(sock: socket.socket, sql: str) -> int:
    """One statement without a result set; returns 0 for OK or the ERR's errno."""
    _write_packet(sock, 0, b"\x03" + sql.encode())
    packet = _read_packet(sock)
    assert packet is not None
    if packet[1][:1] == b"\xff":
        return decode_err(packet[1]).errno
    assert packet[1][:1] == b"\x00", f"{sql!r} returned a result set"
    return 0


@pytest.fixture(scope="module")
def mariadb_users() -> Iterator[bool]:
    """Creates the native and ed25519 users as root; yields whether ed25519 is available."""
    if not _mariadb_up():
        pytest.skip("no MariaDB at 127.0.0.1:3306")
    root, _ = login_to_mariadb("root", "")
    with root:
        errno = run_sql(root, "INSTALL SONAME 'auth_ed25519'")
        ed25519 = errno in (0, 1968)          # installed now, or ER_PLUGIN_INSTALLED
        assert ed25519 or errno == 1126, f"INSTALL SONAME failed with {errno}"   # 1126: no .so file
        for user in (NATIVE_USER, ED_USER):
            run_sql(root, f"DROP USER IF EXISTS '{user}'@'%'")
        assert run_sql(root, f"CREATE USER '{NATIVE_USER}'@'%' IDENTIFIED VIA mysql_native_password "
                             "USING PASSWORD('native-pw')") == 0
        assert run_sql(root, f"GRANT ALL ON `{NO_DB}`.* TO '{NATIVE_USER}'@'%'") == 0
        if ed25519:
            assert run_sql(root, f"CREATE USER '{ED_USER}'@'%' IDENTIFIED VIA ed25519 "
                                 "USING PASSWORD('ed-pw')") == 0
        try:
            yield ed25519
        finally:
            for user in (NATIVE_USER, ED_USER):
                run_sql(root, f"DROP USER IF EXISTS '{user}'@'%'")


def test_mariadb_native_login(mariadb_users: bool) -> None:
    sock, sl = login_to_mariadb(NATIVE_USER, "native-pw", "information_schema")
    with sock:
        assert sl.done and sl.plugin == NATIVE and sl.connection_id > 0
        assert "MariaDB" in sl.server_version and sl.mariadb_capabilities
        assert sl.status & Status.AUTOCOMMIT
        assert sl.capabilities & C.CONNECT_WITH_DB and not sl.capabilities & (C.COMPRESS | C.SSL)
        assert run_sql(sock, "DO 1") == 0


def test_mariadb_ed25519_login(mariadb_users: bool) -> None:
    if not mariadb_users:
        pytest.skip("auth_ed25519.so is not installed on this MariaDB")
    sock, sl = login_to_mariadb(ED_USER, "ed-pw")
    with sock:
        assert sl.done and sl.plugin == auth.ED25519
        assert run_sql(sock, "DO 1") == 0


@pytest.mark.parametrize("which", ["native", "ed25519"])
def test_mariadb_wrong_password_gets_1045(mariadb_users: bool, which: str) -> None:
    if which == "ed25519" and not mariadb_users:
        pytest.skip("auth_ed25519.so is not installed on this MariaDB")
    user = NATIVE_USER if which == "native" else ED_USER
    with pytest.raises(MysqlServerRefused) as info:
        login_to_mariadb(user, "wrong-pw")
    assert (info.value.errno, info.value.sqlstate) == (1045, "28000")
    assert f"Access denied for user '{user}'" in str(info.value)


def test_mariadb_unknown_database_gets_1049(mariadb_users: bool) -> None:
    with pytest.raises(MysqlServerRefused) as info:
        login_to_mariadb(NATIVE_USER, "native-pw", NO_DB)
    assert info.value.errno == 1049 and NO_DB in str(info.value)


def test_misuse_and_odd_packets() -> None:
    with pytest.raises(ValueError, match="unsupported"):
        client_login("sha256_password")
    cl = ClientLogin(NATIVE, 42, "8.0.36", OFFERED | C.SSL, USERS.get, "10.1.2.3")
    cl.greeting()
    cl.receive(1, HandshakeResponse41(OFFERED).encode_ssl_request())
    with pytest.raises(ProtocolViolation, match="TLS upgrade"):
        cl.receive(2, _first_response(NATIVE, bytes(20)))
    cl = client_login(SHA2, force_full_auth=True)
    cl.greeting()
    cl.receive(1, _first_response(SHA2, bytes(32)))
    [(_, err)] = cl.receive(3, bytes(256))
    assert decode_err(err).errno == 1045 and cl.failed_reason.endswith("did not decrypt")
    sl = server_login()
    sl.receive(0, _greeting())
    for bad, match in [(b"", "empty packet"), (b"\x05", "unexpected login packet"), (b"\xfeno-nul", "malformed")]:
        with pytest.raises(ServerConnectFailed, match=match):
            sl.receive(2, bad)
    sl = server_login()
    sl.receive(0, _greeting(plugin=SHA2))
    with pytest.raises(ServerConnectFailed, match="unknown caching_sha2_password status"):
        sl.receive(2, b"\x01\x07")
    sl = server_login()
    sl.receive(0, _greeting(plugin=SHA2))
    assert sl.receive(2, b"\x01\x04") == [(3, b"\x02")]
    with pytest.raises(ServerConnectFailed, match="unusable RSA public key"):
        sl.receive(4, b"\x01not a pem")
    sl = server_login()
    sl.receive(0, _greeting())
    sl.receive(2, b"\x00\x00\x00\x02\x00\x00\x00")
    with pytest.raises(ServerConnectFailed, match="after the login finished"):
        sl.receive(3, b"\x00\x00\x00\x02\x00\x00\x00")
