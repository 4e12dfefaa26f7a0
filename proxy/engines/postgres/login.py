"""A PostgreSQL client's way in: SSLRequest / direct TLS, the startup packet, authentication, the welcome.

`PgLoginSession` is the part of a client session before ReadyForQuery (states STARTUP, AUTH, LOGIN);
`session.PgClientSession` adds the relay. The first client of a (user, database) opens a server
connection to learn its parameters (`_first_login`); session pooling attaches the client's own server
connection at login so the client is given that backend's pid (`_session_login`).
"""

from __future__ import annotations

import asyncio
import logging
import struct
from typing import TYPE_CHECKING, Any

from ...config import EndpointConfig
from ...core import token_login
from ...core.session import AUTH, LOGIN, READY, STARTUP, ClientSessionCore
from ...errors import AuthenticationFailed, ProtocolViolation, ProxyError
from ...logs import ConnectionLog
from ...tls import contexts as tls_contexts
from ...tls.layer import TlsConnection
from .client_auth import ClientAuthentication
from .gucs import GucState
from .startup import StartupRequest, known_startup, remember_startup
from .wire import messages as m
from .wire.framing import (
    CancelRequest,
    GSSENCRequest,
    MessageReader,
    SSLRequest,
    StartupMessage,
    parse_startup_packet,
)

if TYPE_CHECKING:
    from ...core.cluster import Cluster
    from .engine import PgClusterState
    from .server import ServerConnection

log = logging.getLogger("dbproxy.client")
# "connected" lines: written in batches (see logs.BatchingHandler).
connections_log = ConnectionLog()

_U32 = struct.Struct("!I")
_STARTUP, _AUTH, _LOGIN, _READY = STARTUP, AUTH, LOGIN, READY
_SSL_REQUEST = m.ssl_request()
_TLS_HANDSHAKE = 0x16   # the first byte of a TLS record carrying a ClientHello
_ALPN = ("postgresql",)
_READY_IDLE = m.ready_for_query(b"I")
_MAX_AUTH_MESSAGE = 16 * 1024


class PgLoginSession(ClientSessionCore):
    """The login half of a PostgreSQL client session; see the module docstring."""

    startup: StartupRequest | None = None
    _pid_bytes = b""          # the pid it was given, as NotificationResponse carries it (set at welcome)
    _startup_buf = b""
    _auth_reader: MessageReader | None = None   # made when a password message comes in pieces
    _auth: ClientAuthentication | None = None
    _direct = False   # the connection began with a TLS ClientHello (PostgreSQL 17 direct TLS)
    server: ServerConnection | None
    cluster: Cluster[ServerConnection]

    def __init__(self, app: Any, cluster: Cluster[ServerConnection], endpoint: EndpointConfig) -> None:
        super().__init__(app, cluster, endpoint)
        self.shared: PgClusterState = cluster.engine_state
        self.gucs = GucState()

    def _startup_data(self, data: bytes) -> None:
        if not self._startup_buf:
            # Fast paths for a whole packet in one read: libpq's SSLRequest (sslmode=prefer), and a
            # StartupMessage seen before (every reconnect of the same client sends the same bytes).
            if data == _SSL_REQUEST:
                self._ssl_request(b"")
                return
            if data[0] == _TLS_HANDSHAKE and self.tls_version is None:
                self._direct_tls(data)
                return
            request = known_startup(data)
            if request is not None:
                self._startup(request)
                return
        buf = self._startup_buf + data
        while self.state == _STARTUP:
            event, used = parse_startup_packet(buf)
            if event is None:
                self._startup_buf = buf
                return
            packet, buf = buf[:used], buf[used:]
            if isinstance(event, SSLRequest):
                self._startup_buf = b""
                if self._ssl_request(bytes(buf)):
                    return   # what followed is the TLS handshake's
            elif isinstance(event, GSSENCRequest):
                self.write(b"N")  # no GSS encryption: the client continues in plain text
            elif isinstance(event, CancelRequest):
                # As the server does, the connection closes once the backend has been signalled: a client
                # that then sends its next query (asyncpg after a timeout) must not see it cancelled.
                if self.transport is not None:
                    self.transport.pause_reading()
                self.app.cancel(event.pid, event.key, lambda: self.close("cancel request"))
                return
            elif isinstance(event, StartupMessage):
                self._startup(remember_startup(bytes(packet), event.params))
        self._startup_buf = b""
        if buf:
            self.data_received(buf)

    def _ssl_request(self, rest: bytes) -> bool:
        """SSLRequest: 'S' and TLS from here on (True), or 'N' when TLS is off on this endpoint."""
        if self.tls_version is not None:
            raise ProtocolViolation("SSLRequest received inside TLS")
        context = self.tls_context(_ALPN)
        if context is None:
            self.write(b"N")
            return False
        self.write(b"S")
        self.start_tls(context, rest)
        return True

    def _direct_tls(self, data: bytes) -> None:
        """PostgreSQL 17 direct TLS (sslnegotiation=direct): a ClientHello instead of a startup packet."""
        context = self.tls_context(_ALPN)
        if context is None:
            log.info("client %s: direct TLS connection, but TLS is off on %s/%s", self.peer, self.cluster.name,
                     self.endpoint.name)
            self.close("direct TLS without TLS enabled")
            return
        self._direct = True
        self.start_tls(context, data)

    def _tls_established(self, tls: TlsConnection) -> bool:
        if self._direct and tls.alpn != "postgresql":
            # As PostgreSQL 17: direct TLS must negotiate ALPN "postgresql" (no cross-protocol confusion).
            log.info("client %s: direct TLS connection without ALPN \"postgresql\": closed", self.peer)
            self.close("direct TLS without ALPN")
            return False
        return True

    def _startup(self, request: StartupRequest) -> None:
        user_name = request.user
        if self.tls_version is None and self.tls_settings.mode == "require":
            raise ProxyError(f"this dbproxy endpoint accepts only TLS connections; reconnect with sslmode=require "
                             f"(user \"{user_name}\", database \"{request.database}\", TLS off)", "28000")
        if not user_name:
            raise ProtocolViolation("no PostgreSQL user name specified in startup packet")
        if request.replication:
            raise ProxyError("replication connections are not supported by dbproxy", "08P01")
        self.database = request.database
        login = self.admit(user_name, f'password authentication failed for user "{user_name}"')
        cluster = self.cluster
        if request.options_error:
            raise ProtocolViolation(f"invalid startup options: {request.options_error}")
        self.startup = request
        self.gucs.client = dict(request.gucs)
        self.app_name = request.application_name
        self.state = _AUTH
        user = login.user
        method = token_login.postgres_method(self, user, cluster.config.client_auth)
        binding = tls_contexts.server_end_point(self.tls_settings) if self.tls_version is not None else None
        self._auth = ClientAuthentication(method, user_name, user.password, login.verifier, channel_binding=binding,
                                          check_cleartext=lambda secret: token_login.check_cleartext(self, user, secret))
        self._auth_step_done(self._auth.start())

    def _auth_data(self, data: bytes) -> None:
        reader = self._auth_reader
        if reader is None:
            # The common case: one whole password message in one read.
            if (5 <= len(data) <= _MAX_AUTH_MESSAGE and data[0] == 0x70
                    and _U32.unpack_from(data, 1)[0] + 1 == len(data)):
                self._auth_message(data[5:])
                return
            reader = self._auth_reader = MessageReader(max_length=_MAX_AUTH_MESSAGE)
        reader.feed(data)
        while self.state == _AUTH:
            msg = reader.next()
            if msg is None:
                return
            kind, body = msg
            if kind != 0x70:  # 'p'
                raise ProtocolViolation(f"expected password response, got message type {chr(kind)!r}")
            self._auth_message(body)
        rest = reader.take_rest()
        if rest:
            self.data_received(rest)

    def _auth_message(self, body: bytes) -> None:
        assert self._auth is not None
        try:
            reply = self._auth.receive(body)
        except AuthenticationFailed:
            self.auth_failed()
            if self.login is not None and self.login.user.auth != "password":   # token users: the real reason
                token_login.log_refusal(self, self._auth.user, self._auth.failed_reason)
            raise
        self._auth_step_done(reply)

    def _auth_step_done(self, reply: bytes) -> None:
        if reply:
            self.write(reply)
        if self._auth is not None and self._auth.done:
            self._authenticated()

    def _authenticated(self) -> None:
        self.claim_limits()
        self.state = _LOGIN
        if self._auth_reader is not None:
            rest = self._auth_reader.take_rest()
            if rest:
                self._pending += rest
        assert self.login is not None
        if self.session_mode and self.endpoint.role != "split":
            # Session pooling: the client's backend is its own for the whole session, so it is borrowed
            # now and the client is given that backend's pid (split endpoints choose theirs per statement).
            self._borrow_task = asyncio.get_running_loop().create_task(self._session_login())
            return
        welcome = self.shared.welcome.get((self.login.user.server_user, self.database))
        if welcome is not None:
            self._welcome(welcome)
        else:
            self._borrow_task = asyncio.get_running_loop().create_task(self._first_login())

    async def _session_login(self) -> None:
        """Session mode: attach the client's server connection before it is logged in, and give it the
        backend's real pid in BackendKeyData. Then `pg_terminate_backend(pid)`, `pg_backend_pid()` and
        the pids NOTIFY carries mean what they mean directly (psycopg's and asyncpg's suites rely on it)."""
        assert self.login is not None
        user = self.login.user
        route = self._last_route = self._route(b"")   # writer: primary; reader, custom: replica
        try:
            conn, pool = await self.cluster.borrow(self.endpoint, route, user, self.database, None,
                                                   self.pool_variant)
        except ProxyError as exc:
            self._borrow_task = None
            self.fail(ProxyError(exc.message, exc.sqlstate) if exc.sqlstate[:2] != "08" else exc)
            return
        self._borrow_task = None
        if self.state != _LOGIN:
            pool.release(conn)
            return
        key = (user.server_user, self.database)
        welcome = self.shared.welcome.get(key)
        if welcome is None:
            welcome = self.shared.welcome[key] = dict(conn.parameters)
        pending, self._pending = self._pending, bytearray()   # handled once the client is READY
        self._attach(conn, pool)
        self._pending = pending
        self._welcome(welcome, conn.pid)

    async def _first_login(self) -> None:
        """First client of a (user, database): open a server connection to learn its parameters."""
        assert self.login is not None
        user = self.login.user
        try:
            conn, pool = await self.cluster.borrow(self.endpoint, "primary", user, self.database)
        except ProxyError as exc:
            self._borrow_task = None
            self.fail(ProxyError(exc.message, exc.sqlstate) if exc.sqlstate[:2] != "08" else exc)
            return
        self._borrow_task = None
        welcome = dict(conn.parameters)
        self.shared.welcome[(user.server_user, self.database)] = welcome
        pool.release(conn)
        if self.state == _LOGIN:
            self._welcome(welcome)

    def _welcome_bytes(self, welcome: dict[str, str]) -> bytes:
        """AuthenticationOk + ParameterStatus messages, cached per server parameters and startup packet
        (before ReadyForQuery a client's settings are those of its startup packet)."""
        assert self.startup is not None
        key = (id(welcome), self.startup.packet)
        cache = self.shared.welcome_messages
        cached = cache.get(key)
        if cached is None:
            cached = m.auth_ok() + b"".join(
                m.parameter_status(name, value) for name, value in self.gucs.welcome_parameters(welcome).items())
            if len(cache) > 1000:
                cache.clear()
            cache[key] = cached
        return cached

    def _welcome(self, welcome: dict[str, str], backend_pid: int = 0) -> None:
        """Finish the login: AuthenticationOk, parameters, cancel key, ReadyForQuery.

        backend_pid: the pid of the server backend the client keeps (session mode), given as its own."""
        assert self.login is not None
        self.pid, self.key = self.app.register_cancel_key(self, backend_pid)
        self._pid_bytes = _U32.pack(self.pid)
        if self.server is not None:
            self.server.tracker.client_pid = self._pid_bytes
        self.write(self._welcome_bytes(welcome) + m.backend_key_data(self.pid, self.key) + _READY_IDLE)
        self.state = _READY
        self.logged_in()
        connections_log.info("client %s connected: user=%s database=%s endpoint=%s/%s", self.peer,
                             self.login.user.name, self.database, self.cluster.name, self.endpoint.name)
        if self._pending:
            data = bytes(self._pending)
            self._pending.clear()
            try:   # called from the first-login task too, where nothing else would catch it
                self._client_data(data)
            except ProxyError as exc:
                self.fail(exc)
