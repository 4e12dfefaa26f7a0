"""One fuzz target per parser: a function of arbitrary bytes that raises only when it found a bug.

Each target feeds its input to one parser (or to a whole in-process client session, for the
message streams a logged-in client sends) and catches exactly the errors that parser documents
(ProtocolViolation, AuthenticationFailed...). Anything else escaping is a crash; a broken
invariant raises `Bug`. The runner (bench/fuzz/run.py) drives these with atheris, the CI-sized
slice (tests/test_fuzz_targets.py) replays the seed corpora and the regression inputs.

Targets (name: what is fed):
  pg_startup        PostgreSQL startup-phase packets (StartupMessage, SSLRequest, CancelRequest...)
  pg_frontend       a logged-in PostgreSQL client's message stream, through a real PgClientSession
  pg_scram          SCRAM-SHA-256 client-first / client-final messages (proxy as the SCRAM server)
  pg_responses      a PostgreSQL server's response stream through ResponseTracker
  mysql_handshake   MySQL HandshakeResponse41 / SSLRequest / COM_CHANGE_USER / greeting payloads
  mysql_auth        a MySQL client's login packets after the greeting (auth switch, full auth, RSA)
  mysql_command     a logged-in MySQL client's command stream, through a real MysqlClientSession
  mysql_responses   a MySQL server's response stream through ResponseTracker
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

from proxy.errors import AuthenticationFailed, ProtocolViolation

Target = Callable[[bytes], None]


class Bug(AssertionError):
    """An invariant a target checks did not hold."""


class _ErrorRecords(logging.Handler):
    """Fails a target for any log record at ERROR or above (SPEC §9: client mistakes never log errors)."""

    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)

    def check(self) -> None:
        if self.records:
            record = self.records[0]
            self.records.clear()
            raise Bug(f"error logged: {record.getMessage()}")


_errors = _ErrorRecords()


def _quiet_logging() -> None:
    root = logging.getLogger()
    if _errors not in root.handlers:
        root.addHandler(_errors)
    logging.getLogger("proxy").setLevel(logging.ERROR)
    logging.getLogger("asyncio").setLevel(logging.ERROR)


def _chunks(data: bytes, size_byte: int) -> list[bytes]:
    """data cut into pieces of 1..size_byte+1 bytes (0xFF: one piece)."""
    if size_byte == 0xFF or not data:
        return [data]
    step = size_byte % 37 + 1
    return [data[i:i + step] for i in range(0, len(data), step)]


# ------------------------------------------------------------------------------ PostgreSQL


def pg_startup(data: bytes) -> None:
    from proxy.engines.postgres.startup import startup_request
    from proxy.engines.postgres.wire.framing import StartupMessage, parse_startup_packet

    buf = data
    while buf:
        try:
            event, used = parse_startup_packet(buf)
        except ProtocolViolation:
            return
        if event is None:
            return
        if used <= 0:
            raise Bug("parse_startup_packet consumed nothing")
        if isinstance(event, StartupMessage):
            request = startup_request(bytes(buf[:used]), event.params)
            if not isinstance(request.database, str) or not isinstance(request.gucs, dict):
                raise Bug("startup_request returned a malformed request")
        buf = buf[used:]


def pg_scram(data: bytes) -> None:
    from proxy.engines.postgres.client_auth import ClientAuthentication
    from proxy.engines.postgres.wire.auth import ScramServerExchange

    if not data:
        return
    cut = 1 + data[0]
    first, final = data[1:cut], data[cut:]
    # The exchange itself: ProtocolViolation or AuthenticationFailed, nothing else.
    exchange = ScramServerExchange(_scram_verifier(), nonce=_SCRAM_NONCE, channel_binding=b"cb" if data[0] & 1 else None,
                                   plus=bool(data[0] & 2))
    try:
        server_first = exchange.server_first(first)
        # "%N" in the input stands for the combined nonce, which the fuzzer cannot guess.
        exchange.server_final(final.replace(b"%N", server_first.split(b",")[0][2:]))
    except (ProtocolViolation, AuthenticationFailed):
        pass
    # The same bytes as SASLInitialResponse / SASLResponse bodies of a client login.
    auth = ClientAuthentication("scram-sha-256", "app", None, _scram_verifier())
    auth.start()
    try:
        auth.receive(first)
        auth.receive(final)
    except (ProtocolViolation, AuthenticationFailed):
        pass


_SCRAM_NONCE = b"\x01" * 18
_verifier: Any = None


def _scram_verifier() -> Any:
    global _verifier
    if _verifier is None:
        from proxy.engines.postgres.wire.auth import ScramVerifier
        _verifier = ScramVerifier.from_password("pencil", salt=b"0123456789abcdef", iterations=4096)
    return _verifier


def pg_responses(data: bytes) -> None:
    from proxy.engines.postgres.wire import responses as r

    if len(data) < 2:
        return
    tracker = r.ResponseTracker()
    kinds = (r.QUERY, r.SYNC, r.PARSE, r.BIND, r.CLOSE, r.DESCRIBE, r.EXECUTE, r.SYNTH)
    actions = (r.PASS, r.DROP, r.DROP_ALL, r.CAPTURE)
    count = data[0] % 8
    spec, stream = data[1:1 + count], data[1 + count:]
    synthesized = 0
    for byte in spec:
        kind = kinds[byte % 8]
        payload = b"Z\x00\x00\x00\x05I" if kind == r.SYNTH else (b"dbproxy_1" if byte & 0x80 else b"")
        synthesized += len(payload) if kind == r.SYNTH else 0
        tracker.push(r.Slot(kind, actions[(byte >> 3) % 4], payload))
    out = 0
    try:
        for chunk in _chunks(stream, data[0]):
            out += len(tracker.feed(chunk))
    except ProtocolViolation:
        return
    if out > len(stream) + synthesized + 4 * len(stream) // 5 + 8:
        # NOTIFY pid rewriting is the only thing that may add bytes (and it is off here)
        raise Bug(f"forwarded {out} bytes for {len(stream)} received")
    if len(tracker._buf) > max(len(stream), 5) and tracker._buf[0] not in b"ZES":
        raise Bug("tracker buffers bytes it should stream")


class _PgHarness:
    """One ProxyApp with a PostgreSQL cluster, sessions on fake transports (bench/inprocess.py)."""

    def __init__(self) -> None:
        from bench.inprocess import one_instance_config
        from proxy.app import ProxyApp
        from proxy.config import parse_config

        _quiet_logging()
        self.loop = asyncio.new_event_loop()
        asyncio.set_event_loop(self.loop)
        self.app = ProxyApp(parse_config(one_instance_config()))
        self.cluster = self.app.clusters["main"]
        self.instance = self.cluster.config.instances[0]
        self.cluster.choose_target = lambda _endpoint, _route, _min_position=None: self.instance  # type: ignore[method-assign]
        login = self.app.users.get("app")
        assert login is not None
        self.login = login
        self.pool = self.cluster.pool(self.instance, login.user, "app")

    def run(self, data: bytes) -> None:
        self.loop.run_until_complete(self._run(data))
        _errors.check()

    async def _run(self, data: bytes) -> None:
        from bench.inprocess import idle_server, logged_in_session
        from proxy.engines.postgres.wire import messages as m

        pool = self.pool
        for server in (*pool.idle, *pool.in_use):
            server.close()
        pool.idle.clear()
        pool.in_use.clear()
        server = idle_server(self.cluster, self.instance, self.login, "app")
        session, _ = logged_in_session(self.app, "main", "app", "app")
        mode = data[0] if data else 0xFF
        for chunk in _chunks(data[1:], mode):
            session.data_received(chunk)
            if mode & 0x40 and session.server is server:
                # The server answers whatever it was asked with an idle ReadyForQuery.
                server.data_received(m.ready_for_query(b"I"))
        await asyncio.sleep(0)
        session.connection_lost(None)
        await asyncio.sleep(0)
        for idle in pool.idle:
            if idle.closed or not idle.tracker.idle:
                raise Bug("a server connection went back to the pool in an unknown state")


_pg: _PgHarness | None = None


def pg_frontend(data: bytes) -> None:
    global _pg
    if _pg is None:
        _pg = _PgHarness()
    _pg.run(data)


# ------------------------------------------------------------------------------ MySQL


def mysql_handshake(data: bytes) -> None:
    from proxy.engines.mysql.wire.handshake import (
        ChangeUser,
        HandshakeResponse41,
        HandshakeV10,
        decode_ssl_request,
        is_ssl_request,
    )

    for decode in (HandshakeResponse41.decode, HandshakeV10.decode, decode_ssl_request,
                   lambda p: ChangeUser.decode(p, int.from_bytes(p[:4].ljust(4, b"\x00"), "little")),
                   lambda p: ChangeUser.decode(b"\x11" + p, 0xFFFFFFFF)):
        try:
            decoded = decode(data)
        except ProtocolViolation:
            continue
        if isinstance(decoded, HandshakeResponse41 | ChangeUser) and not isinstance(decoded.user, str):
            raise Bug("decoded user is not text")
    is_ssl_request(data)
    # The login state machine: a client's mistakes end in an ERR, never an exception.
    login = _mysql_login()
    login.receive(1, data)


def mysql_auth(data: bytes) -> None:
    from proxy.engines.mysql.auth import CACHING_SHA2_PASSWORD, NATIVE_PASSWORD
    from proxy.engines.mysql.wire.handshake import (
        AuthSwitchRequest,
        auth_switch_scramble,
        decode_auth_more_data,
    )

    try:
        switch = AuthSwitchRequest.decode(data)
        auth_switch_scramble(switch.data, 20)
    except ProtocolViolation:
        pass
    try:
        decode_auth_more_data(data)
    except ProtocolViolation:
        pass
    if not data:
        return
    # A login through the switch / full-auth / RSA states with packets cut from the input.
    method = CACHING_SHA2_PASSWORD if data[0] & 1 else NATIVE_PASSWORD
    login = _mysql_login(method, force_full_auth=bool(data[0] & 2), tls=bool(data[0] & 4))
    packets = [_HANDSHAKE_OTHER_PLUGIN] + _split_packets(data[1:])
    seq = 1
    for payload in packets:
        replies = login.receive(seq, payload)
        if login.done or login.failed or login.wants_tls:
            return
        if not replies:
            raise Bug("a login packet got no reply")
        seq = replies[-1][0] + 1


def _split_packets(data: bytes) -> list[bytes]:
    """Length-prefixed pieces: one length byte, then that many bytes (the last piece takes the rest)."""
    out: list[bytes] = []
    while data and len(out) < 6:
        n = data[0]
        out.append(data[1:1 + n])
        data = data[1 + n:]
    return out


# caching_sha2 clients answering a native greeting (and vice versa) are switched: the auth states.
_HANDSHAKE_OTHER_PLUGIN = (b"\x85\xa6\xbf\x01" b"\x00\x00\x00\x01" b"\x2d" + bytes(23) + b"app\x00" + b"\x00"
                           + b"mysql_clear_password\x00")


def _mysql_login(method: str | None = None, force_full_auth: bool = False, tls: bool = False) -> Any:
    from proxy.engines.mysql.auth import NATIVE_PASSWORD, derive_verifiers
    from proxy.engines.mysql.client_login import ClientLogin
    from proxy.engines.mysql.wire.codes import Capability

    verifiers = derive_verifiers("app-pass")
    login = ClientLogin(method or NATIVE_PASSWORD, 7, "10.11.6-MariaDB-dbproxy", int(Capability.SSL), lambda name:
                        verifiers if name == "app" else None, "127.0.0.1", tls=tls,
                        force_full_auth=force_full_auth, scramble=b"abcdefghijklmnopqrst")
    login.greeting()
    return login


class _MysqlHarness:
    """One ProxyApp with a MySQL cluster, a logged-in session and an idle server per input (see bench/hotpath.py)."""

    def __init__(self) -> None:
        from bench.hotpath import MYSQL_CONFIG
        from proxy.app import ProxyApp
        from proxy.config import parse_config
        from proxy.engines.mysql.server import VARIANT_CAPABILITIES, Variant
        from proxy.engines.mysql.wire.codes import Capability

        _quiet_logging()
        self.loop = asyncio.new_event_loop()
        asyncio.set_event_loop(self.loop)
        self.app = ProxyApp(parse_config(MYSQL_CONFIG))
        self.cluster = self.app.clusters["main"]
        self.instance = self.cluster.config.instances[0]
        self.cluster.choose_target = lambda _endpoint, _route, _min_position=None: self.instance  # type: ignore[method-assign]
        login = self.app.users.get("app")
        assert login is not None
        self.login = login
        self.caps = int(Capability.PROTOCOL_41 | Capability.SECURE_CONNECTION | Capability.PLUGIN_AUTH
                        | Capability.MULTI_RESULTS | Capability.PS_MULTI_RESULTS | Capability.TRANSACTIONS
                        | Capability.LONG_PASSWORD | Capability.MULTI_STATEMENTS | Capability.DEPRECATE_EOF
                        | Capability.SESSION_TRACK)
        self.variant = Variant(self.caps & VARIANT_CAPABILITIES, 45)
        self.pool = self.cluster.pool(self.instance, login.user, "app", self.variant)

    def run(self, data: bytes) -> None:
        self.loop.run_until_complete(self._run(data))
        _errors.check()

    async def _run(self, data: bytes) -> None:
        from bench.inprocess import FakeTransport
        from proxy.config import Address
        from proxy.core.session import READY
        from proxy.engines.mysql.server import MysqlServerConnection
        from proxy.engines.mysql.server_login import ServerLogin
        from proxy.engines.mysql.session import MysqlClientSession
        from proxy.engines.mysql.wire.messages import encode_ok
        from proxy.engines.mysql.wire.packets import encode_packet

        pool = self.pool
        for old in (*pool.idle, *pool.in_use):
            old.close()
        pool.idle.clear()
        pool.in_use.clear()
        server = MysqlServerConnection(Address(self.instance.host, self.instance.port),
                                       ServerLogin("app", None, "app"), self.variant)
        server.transport = FakeTransport()  # type: ignore[assignment]
        server._login = None
        pool.in_use.add(server)
        pool.release(server)
        session = MysqlClientSession(self.app, self.cluster, self.cluster.config.endpoints[0])
        session.connection_made(FakeTransport(peer=("127.0.0.1", 40000)))  # type: ignore[arg-type]
        session.login, session.database, session.state, session.capabilities = self.login, "app", READY, self.caps
        session.state_vars.schema = "app"
        session.pool_variant = self.variant
        session._login_machine = self.logged_in_machine()   # for COM_CHANGE_USER
        mode = data[0] if data else 0xFF
        ok = encode_packet(encode_ok(self.caps), 1)
        for chunk in _chunks(data[1:], mode):
            session.data_received(chunk)
            if mode & 0x40 and session.server is server and not server.closed:
                server.data_received(ok)   # the server answers the command in flight with an OK
        await asyncio.sleep(0)
        session.connection_lost(None)
        await asyncio.sleep(0)
        for idle in pool.idle:
            if idle.closed or not idle.tracker.idle:
                raise Bug("a server connection went back to the pool in an unknown state")


    @staticmethod
    def logged_in_machine() -> Any:
        from proxy.engines.mysql.auth import native_password_token
        from proxy.engines.mysql.wire.codes import Capability
        from proxy.engines.mysql.wire.handshake import HandshakeResponse41

        login = _mysql_login()
        caps = int(Capability.PROTOCOL_41 | Capability.SECURE_CONNECTION | Capability.PLUGIN_AUTH)
        response = HandshakeResponse41(caps, user="app", auth_response=native_password_token(
            b"app-pass", b"abcdefghijklmnopqrst"), auth_plugin="mysql_native_password")
        login.receive(1, response.encode())
        assert login.done
        return login


_my: _MysqlHarness | None = None


def mysql_command(data: bytes) -> None:
    global _my
    if _my is None:
        _my = _MysqlHarness()
    _my.run(data)
    _mysql_command_payloads(data[1:])


def _mysql_command_payloads(data: bytes) -> None:
    """The pure decoders of command and response payloads, each on the input."""
    from proxy.engines.mysql import command_framing as cf
    from proxy.engines.mysql.statements import ClientStatement, ServerStatements, execute_payload
    from proxy.engines.mysql.wire import messages as msg

    try:
        end = cf.command_end(data, 0)
        if end <= len(data):
            cf.joined_payload(data, 0, end)
        else:
            cf.incomplete_length(data, 0)
    except cf.CommandTooLarge:
        pass
    for decode in (lambda p: msg.decode_ok(p, 0xFFFFFFFF), msg.decode_err, msg.decode_eof,
                   msg.decode_column_definition, msg.decode_text_row, msg.decode_session_state,
                   msg.decode_prepare_ok, msg.statement_id, msg.kill_thread_id, msg.set_option_value,
                   lambda p: msg.with_statement_id(p, 9),
                   lambda p: execute_payload(p, 9, ClientStatement(b"SELECT ?", p[0] % 9 if p else 1, 0,
                                                                   b"\x08\x00" * 3), ServerStatements(4))):
        try:
            decode(data)
        except ProtocolViolation:
            pass
    msg.query_text(data)
    msg.init_db_schema(data)


def mysql_responses(data: bytes) -> None:
    from proxy.engines.mysql.wire import responses as r
    from proxy.engines.mysql.wire.codes import Capability, Command

    if len(data) < 2:
        return
    commands = (Command.QUERY, Command.STMT_EXECUTE, Command.STMT_FETCH, Command.STMT_PREPARE,
                Command.FIELD_LIST, Command.STATISTICS, Command.CHANGE_USER, Command.PING, Command.INIT_DB)
    actions = (r.PASS, r.DROP_ALL, r.CAPTURE, r.SYNTH, r.RENAME)
    caps = int(Capability.PROTOCOL_41)
    if data[0] & 1:
        caps |= Capability.DEPRECATE_EOF
    if data[0] & 2:
        caps |= Capability.SESSION_TRACK
    tracker = r.ResponseTracker(caps)
    tracker.allow_local_infile = bool(data[0] & 4)
    tracker.rename = {1: 2}
    count = (data[0] >> 3) % 6
    spec, stream = data[1:1 + count], data[1 + count:]
    for byte in spec:
        action = actions[(byte >> 4) % 5]
        payload = b"\x07\x00\x00\x01\x00\x00\x00\x02\x00\x00\x00" if action == r.SYNTH else b""
        tracker.push(r.Slot(commands[byte % 9], action, payload, stmt_id=byte if byte & 8 else None))
    out = 0
    for chunk in _chunks(stream, data[0] >> 1):
        out += len(tracker.feed(chunk))   # documented: never raises; bad bytes mark it terminated
    if tracker.buffered > max(len(stream), 4) and not tracker.terminated:
        raise Bug("tracker buffers bytes it should stream")


TARGETS: dict[str, Target] = {
    "pg_startup": pg_startup,
    "pg_frontend": pg_frontend,
    "pg_scram": pg_scram,
    "pg_responses": pg_responses,
    "mysql_handshake": mysql_handshake,
    "mysql_auth": mysql_auth,
    "mysql_command": mysql_command,
    "mysql_responses": mysql_responses,
}


def warm_up() -> None:
    """Run every target once on a few bytes (imports their modules, builds the in-process harnesses)."""
    for target in TARGETS.values():
        target(b"\x00\x00\x00\x08\x04\xd2\x16\x2f")
