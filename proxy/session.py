"""One PostgreSQL client's life: login, then route → borrow → relay → release, with session state kept."""

from __future__ import annotations

import asyncio
import logging
import re
import struct
import time
from typing import TYPE_CHECKING

from .config import EndpointConfig
from .errors import AuthenticationFailed, ProtocolViolation, ProxyError, ServerUnavailable, TooManyConnections
from .logs import ConnectionLog
from .pool.pool import Pool
from .protocol.postgres import messages as m
from .protocol.postgres.client_auth import ClientAuthentication
from .protocol.postgres.framing import (
    MAX_CLIENT_MESSAGE,
    CancelRequest,
    GSSENCRequest,
    MessageReader,
    SSLRequest,
    StartupMessage,
    parse_startup_packet,
)
from .protocol.postgres.relay import (
    BIND,
    CLOSE,
    DESCRIBE,
    DROP,
    DROP_ALL,
    EXECUTE,
    PARSE,
    QUERY,
    SYNC,
    SYNTH,
    ResponseTracker,
    Slot,
)
from .protocol.postgres.statements import (
    ClientStatement,
    bind_statement,
    close_statement,
    decode_parse,
    describe_statement,
    rewrite_bind,
    target_name,
)
from .routing.classify import Classification, Route
from .routing.session_state import session_effects
from .server_reset import reset_then_release
from .session_gucs import GucState
from .startup import StartupRequest, known_startup, remember_startup
from .transport.pg_server import ServerConnection

if TYPE_CHECKING:
    from .cluster import Cluster
    from .server import ProxyApp
    from .users import Login

log = logging.getLogger("dbproxy.client")
# "connected" / "disconnected" lines: written in batches (see logs.BatchingHandler).
connections_log = ConnectionLog()

_U32 = struct.Struct("!I")
_STARTUP, _AUTH, _LOGIN, _READY, _CLOSED = range(5)
_SSL_REQUEST = m.ssl_request()
_READY_IDLE = m.ready_for_query(b"I")
_MAX_AUTH_MESSAGE = 16 * 1024
# Bytes buffered from a client that has no server yet before we stop reading from it.
_PAUSE_BUFFER = 4 * 1024 * 1024
def _plain_select_text(sql: bytes) -> bool:
    """A bytes-level shortcut before session_effects(): a lone SELECT with none of the words that
    could change session state (see routing.session_state.might_change_session)."""
    low = sql.lower().rstrip(b"; \t\r\n")   # one trailing ';' (as pgbench sends) is still one statement
    return (low[:7] == b"select " and b";" not in low and b"advisory" not in low
            and b"set_config" not in low and b"temp" not in low)


# _plain_select_text() per statement stem (the text without trailing digits, ';' and spaces, as in
# split routing): point lookups that differ only in a trailing number share one verdict. The digits
# cannot add a word that changes session state, and a statement made of digits alone changes nothing.
# Only short texts are remembered (at most 4096 x 512 bytes).
_PLAIN_STEMS: dict[bytes, bool] = {}
_PLAIN_STEMS_KEPT = 4096
_PLAIN_STEM_MAX = 512


def _statement_stem(sql: bytes) -> bytes:
    """The statement without trailing digits, ';' and spaces: texts that differ only there (a numeric
    literal at the end, as in point lookups) get the same routing and session-state verdicts."""
    return sql.rstrip(b"0123456789; \t\r\n")


def _plain_select(sql: bytes) -> bool:
    if len(sql) > _PLAIN_STEM_MAX:
        return _plain_select_text(sql)
    stem = _statement_stem(sql)
    verdict = _PLAIN_STEMS.get(stem)
    if verdict is None:
        verdict = _plain_select_text(sql)
        if len(_PLAIN_STEMS) >= _PLAIN_STEMS_KEPT:
            _PLAIN_STEMS.clear()
        _PLAIN_STEMS[stem] = verdict
    return verdict


_PLAIN_SELECT = _plain_select
_NO_VERDICT = Classification(Route.PRIMARY, "none yet")
_NO_COUNTS = [0, 0]
_NO_NAMES: list[str] = []   # never changed: replaced, not appended to
# read_your_writes: how long a client reads from the primary when its last write's position is unknown.
_RYW_FALLBACK_SECONDS = 10.0
_DEALLOCATE_RE = re.compile(rb'\s*deallocate\s+(?:prepare\s+)?(?:"((?:[^"]|"")+)"|([A-Za-z_][A-Za-z0-9_$]*))\s*;?\s*$',
                            re.IGNORECASE)
_STREAM_COPY_DATA = 0x64  # CopyData may stream through before it is complete
# Slots are immutable once made: share one per kind for plain pass-through responses.
_QUERY_SLOT, _SYNC_SLOT, _EXECUTE_SLOT = Slot(QUERY), Slot(SYNC), Slot(EXECUTE)
_BIND_SLOT, _DESCRIBE_SLOT, _CLOSE_SLOT, _PARSE_SLOT = Slot(BIND), Slot(DESCRIBE), Slot(CLOSE), Slot(PARSE)


class ClientSession(asyncio.Protocol):
    """A client connection on one endpoint of one cluster; see the module docstring."""

    # Defaults of what most connections never change or read only at login and close: a short-lived
    # connection does not pay for setting them (the per-transaction state is set in __init__).
    peer = "?"
    app_name = ""
    pid = 0
    key = 0
    connection_counts: list[int] = _NO_COUNTS   # its endpoint's [open, accepted] (ProxyApp)
    startup: StartupRequest | None = None
    _startup_buf = b""
    _auth_reader: MessageReader | None = None   # made when a password message comes in pieces
    _auth: ClientAuthentication | None = None
    _close_reason = ""
    _counted = False
    _sync_after_held = False
    _primary_until = 0.0
    _route_stem = b"\x00"   # split: the previous statement's text without trailing digits
    _route_verdict: Classification = _NO_VERDICT
    _capture_names: list[str] = _NO_NAMES
    _capture_position = False

    def __init__(self, app: ProxyApp, cluster: Cluster, endpoint: EndpointConfig) -> None:
        self.app = app
        self.cluster = cluster
        self.endpoint = endpoint
        self.transport: asyncio.Transport | None = None
        self.state = _STARTUP
        self.login: Login | None = None
        self.database = ""
        self.connected_at = time.time()
        self.server: ServerConnection | None = None
        self.server_pool: Pool[ServerConnection] | None = None
        self.gucs = GucState()
        self.statements: dict[bytes, ClientStatement] = {}
        self.pinned: str | None = None
        self.session_mode = cluster.config.pool.mode == "session"
        self.rewrite = not self.session_mode and cluster.config.pool.prepared_statements
        self.transactions = 0
        self.queries = 0
        self._pending = bytearray()
        self._copy_skip = 0
        self.unsynced = False
        self._borrow_task: asyncio.Task[None] | None = None
        self._discard_until_sync = False
        self._broken: ProxyError | None = None
        self._paused_reading = False
        self.opened = self.last_activity = time.monotonic()
        self._last_route = "primary"
        self._transaction_started = 0.0
        # Split endpoints: while on a replica, each further statement is classified too; one that
        # must go to the primary is held (with what follows) until the replica is released.
        self._on_replica = False
        self._first_checked = False
        self._held = False
        # read_your_writes (split endpoints): the WAL position of this client's last write
        # transaction; replicas serve it only once they have replayed that far.
        self._read_your_writes = endpoint.role == "split" and endpoint.read_your_writes
        self.min_position: int | None = None
        self._capturing = False
        self._tx_set_names: set[str] | None = None   # made by the first SET inside a transaction

    # ---- asyncio.Protocol -----------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # uvloop transports are not asyncio.Transport subclasses
        peer = transport.get_extra_info("peername")
        self.peer = f"{peer[0]}:{peer[1]}" if peer else "?"
        # uvloop already sets TCP_NODELAY on every TCP transport.
        self.app.client_opened(self)

    def check_login_deadline(self, now: float, limit: float) -> None:
        """SPEC §9 slow-loris: a client still logging in `limit` seconds after connecting is let go.

        Called about once a second for every client (ProxyApp's maintenance) instead of a timer per
        connection: short-lived connections are the common case and each timer costs.
        """
        if self.state in (_STARTUP, _AUTH) and now - self.opened > limit:
            log.info("client %s: login not completed within %gs", self.peer, limit)
            self.close("login timeout", m.error_response("08P01", "login timeout", "FATAL")
                       if self.state == _AUTH else b"")

    def data_received(self, data: bytes) -> None:
        try:
            if self.state == _READY:
                self._client_data(data)
            elif self.state == _STARTUP:
                self._startup_data(data)
            elif self.state == _AUTH:
                self._auth_data(data)
            elif self.state == _LOGIN:
                self._pending += data
        except ProxyError as exc:
            self.fail(exc)

    def connection_lost(self, exc: Exception | None) -> None:
        if self.state == _CLOSED:
            return
        if self.state == _STARTUP and self._startup_buf:   # SPEC §9: a half-sent startup gets a log line
            log.info("client %s: disconnected with an incomplete startup packet (%d bytes)",
                     self.peer, len(self._startup_buf))
        self.state = _CLOSED
        if not self._close_reason:
            self._close_reason = "client disconnected" if exc is None else f"client connection lost: {exc}"
        if self._borrow_task is not None:
            self._borrow_task.cancel()
        self._give_back_server(client_gone=True)
        if self._counted:
            self.cluster.clients -= 1
        self.app.client_closed(self, self._close_reason)

    def pause_writing(self) -> None:
        if self.server is not None:
            self.server.pause_reading()

    def resume_writing(self) -> None:
        if self.server is not None:
            self.server.resume_reading()

    # ---- errors and closing ---------------------------------------------------------------------

    def fail(self, exc: ProxyError) -> None:
        """Send a fatal error and close (login problems, protocol violations)."""
        level = logging.WARNING if isinstance(exc, ProtocolViolation) else logging.INFO
        log.log(level, "client %s: %s", self.peer, exc.message)
        self.close(exc.message, m.error_response(exc.sqlstate, exc.message, "FATAL"))

    def close(self, reason: str, last_words: bytes = b"") -> None:
        if not self._close_reason:
            self._close_reason = reason
        if self.transport is not None and not self.transport.is_closing():
            if last_words:
                self.transport.write(last_words)
            self.transport.close()

    def write(self, data: bytes) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(data)

    # ---- startup and authentication -------------------------------------------------------------

    def _startup_data(self, data: bytes) -> None:
        if not self._startup_buf:
            # Fast paths for a whole packet in one read: libpq's SSLRequest (sslmode=prefer), and a
            # StartupMessage seen before (every reconnect of the same client sends the same bytes).
            if data == _SSL_REQUEST:
                self.write(b"N")
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
            if isinstance(event, (SSLRequest, GSSENCRequest)):
                self.write(b"N")  # no TLS / GSS encryption yet: the client continues in plain text
            elif isinstance(event, CancelRequest):
                self.app.cancel(event.pid, event.key)
                self.close("cancel request")
                return
            elif isinstance(event, StartupMessage):
                self._startup(remember_startup(bytes(packet), event.params))
        self._startup_buf = b""
        if buf:
            self.data_received(buf)

    def _startup(self, request: StartupRequest) -> None:
        user_name = request.user
        if not user_name:
            raise ProtocolViolation("no PostgreSQL user name specified in startup packet")
        if request.replication:
            raise ProxyError("replication connections are not supported by dbproxy", "08P01")
        self.database = request.database
        login = self.app.users.get(user_name)
        if login is None:
            self.app.metrics.auth_failed(self.cluster.name, self.endpoint.name)
            raise AuthenticationFailed(f'password authentication failed for user "{user_name}"')
        self.login = login
        cluster = self.cluster
        if cluster.clients >= cluster.config.pool.max_client_connections:
            raise TooManyConnections(
                f"too many client connections for cluster {cluster.name!r} "
                f"(max_client_connections = {cluster.config.pool.max_client_connections})")
        cluster.clients += 1
        self._counted = True
        if request.options_error:
            raise ProtocolViolation(f"invalid startup options: {request.options_error}")
        self.startup = request
        self.gucs.client = dict(request.gucs)
        self.app_name = request.application_name
        self.state = _AUTH
        self._auth = ClientAuthentication(cluster.config.client_auth, user_name, login.user.password,
                                          login.verifier)
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
            self.app.metrics.auth_failed(self.cluster.name, self.endpoint.name)
            raise
        self._auth_step_done(reply)

    def _auth_step_done(self, reply: bytes) -> None:
        if reply:
            self.write(reply)
        if self._auth is not None and self._auth.done:
            self._authenticated()

    def _authenticated(self) -> None:
        self.state = _LOGIN
        if self._auth_reader is not None:
            rest = self._auth_reader.take_rest()
            if rest:
                self._pending += rest
        assert self.login is not None
        welcome = self.cluster.welcome.get((self.login.user.server_user, self.database))
        if welcome is not None:
            self._welcome(welcome)
        else:
            self._borrow_task = asyncio.get_running_loop().create_task(self._first_login())

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
        self.cluster.welcome[(user.server_user, self.database)] = welcome
        pool.release(conn)
        if self.state == _LOGIN:
            self._welcome(welcome)

    def _welcome_bytes(self, welcome: dict[str, str]) -> bytes:
        """AuthenticationOk + ParameterStatus messages, cached per server parameters and startup packet
        (before ReadyForQuery a client's settings are those of its startup packet)."""
        assert self.startup is not None
        key = (id(welcome), self.startup.packet)
        cache = self.cluster.welcome_messages
        cached = cache.get(key)
        if cached is None:
            cached = m.auth_ok() + b"".join(
                m.parameter_status(name, value) for name, value in self.gucs.welcome_parameters(welcome).items())
            if len(cache) > 1000:
                cache.clear()
            cache[key] = cached
        return cached

    def _welcome(self, welcome: dict[str, str]) -> None:
        """Finish the login: AuthenticationOk, parameters, cancel key, ReadyForQuery."""
        assert self.login is not None
        self.pid, self.key = self.app.register_cancel_key(self)
        self.write(self._welcome_bytes(welcome) + m.backend_key_data(self.pid, self.key) + _READY_IDLE)
        self.state = _READY
        connections_log.info("client %s connected: user=%s database=%s endpoint=%s/%s", self.peer,
                             self.login.user.name, self.database, self.cluster.name, self.endpoint.name)
        if self._pending:
            data = bytes(self._pending)
            self._pending.clear()
            self._client_data(data)

    # ---- relay: client → server ----------------------------------------------------------------

    def _client_data(self, data: bytes) -> None:
        self.last_activity = time.monotonic()
        server = self.server
        if server is None:
            if not self._pending and self._borrow_task is None:
                server = self._take_idle_server(data)
                if server is None:
                    return
            else:
                self._pending += data
                self._need_server()
                return
        if self._held:
            self._pending += data
            return
        if self._copy_skip:
            n = min(self._copy_skip, len(data))
            server.write(data[:n])
            self._copy_skip -= n
            data = data[n:]
            if not data:
                return
        if self._pending:
            self._pending += data
            if not self._has_complete_message():
                return
            data = bytes(self._pending)
            self._pending.clear()
        self._forward(data, server)

    def _take_idle_server(self, data: bytes) -> ServerConnection | None:
        """Fast path for a new transaction: attach an idle server now, or queue data and wait."""
        if len(data) < 5 or data[0] == 0x58 or self._broken is not None or self._discard_until_sync:
            self._pending += data
            self._need_server()
            return None
        assert self.login is not None
        route = self._last_route = self._route(data)
        taken = self.cluster.take_idle(self.endpoint, route, self.login.user, self.database,
                                       self._min_position(route))
        if taken is None:
            self._pending += data
            self._need_server()
            return None
        self._attach(*taken)
        return taken[0]

    def _has_complete_message(self) -> bool:
        buf = self._pending
        if len(buf) < 5:
            return False
        end = 1 + _U32.unpack_from(buf, 1)[0]
        return len(buf) >= end or (buf[0] == _STREAM_COPY_DATA and self.server is not None)

    def _need_server(self) -> None:
        """The client sent something while it has no server: get one (or fail the batch)."""
        if self._borrow_task is not None or self.state != _READY or not self._pending:
            return
        if self._pending[0] == 0x58:  # 'X' Terminate before any work
            self.close("client sent Terminate")
            return
        if self._broken is not None or self._discard_until_sync:
            err = self._broken or ServerUnavailable("server connection lost")
            self._broken = None
            self._fail_batch(err, first_batch_only=True)
            if not self._pending or self._discard_until_sync:
                return
        if len(self._pending) > _PAUSE_BUFFER and self.transport is not None:
            self.transport.pause_reading()
            self._paused_reading = True
        login = self.login
        assert login is not None
        route = self._last_route = self._route(self._pending)
        taken = self.cluster.take_idle(self.endpoint, route, login.user, self.database, self._min_position(route))
        if taken is not None:
            self._attach(*taken)
            return
        self._borrow_task = asyncio.get_running_loop().create_task(self._borrow(route))

    def _route(self, data: bytes | bytearray) -> str:
        """Where the transaction starting with data goes: "primary" or "replica" (SPEC §3)."""
        role = self.endpoint.role
        if role == "writer":
            return "primary"
        if role != "split":
            return "replica"
        if len(data) < 5:
            return "primary"
        end = 1 + _U32.unpack_from(data, 1)[0]
        if len(data) < end:
            return "primary"
        sql = self._statement_text(data[0], bytes(data[5:end]))
        if sql is None:
            return "primary"
        # Texts that differ from this client's previous one only in trailing digits (a numeric literal
        # at the end, as in point lookups) route the same way: the digits cannot turn the statement
        # into a write, a function call, a locking clause or a hint.
        stem = _statement_stem(sql)
        if stem == self._route_stem:
            verdict = self._route_verdict
        else:
            verdict = self.cluster.classifier.classify(sql.decode("utf-8", "replace"))
            self._route_stem, self._route_verdict = stem, verdict
        if verdict.route is not Route.REPLICA or verdict.ends_transaction:
            return "primary"
        if self._primary_until and time.monotonic() < self._primary_until:
            return "primary"  # read_your_writes without a known position for the last write
        return "replica"

    def _statement_text(self, kind: int, body: bytes) -> bytes | None:
        """The SQL a Query, a Parse, or a Bind of a known named statement runs (else None)."""
        if kind == 0x51:  # Query
            return body[:-1]
        if kind == 0x50:  # Parse
            return decode_parse(body).query
        if kind == 0x42:  # Bind of a statement prepared earlier
            start, stop = bind_statement(body)
            statement = self.statements.get(body[start:stop]) if start != stop else None
            return statement.query if statement is not None else None
        return None

    def _min_position(self, route: str) -> int | None:
        return self.min_position if route == "replica" and self._read_your_writes else None

    async def _borrow(self, route: str) -> None:
        assert self.login is not None
        started = time.monotonic()
        try:
            conn, pool = await self.cluster.borrow(self.endpoint, route, self.login.user, self.database,
                                                   self._min_position(route))
        except ProxyError as exc:
            self._borrow_task = None
            log.info("client %s: %s", self.peer, exc.message)
            self._fail_batch(exc)
            return
        self._borrow_task = None
        self.app.metrics.borrowed(self.cluster.name, time.monotonic() - started)
        if self.state != _READY:
            pool.release(conn)
            return
        self._attach(conn, pool)

    def _attach(self, server: ServerConnection, pool: Pool[ServerConnection] | None) -> None:
        self.server = server
        self.server_pool = pool
        server.owner = self
        self.transactions += 1
        self._on_replica = self._first_checked = self.endpoint.role == "split" and self._last_route == "replica"
        self._transaction_started = time.monotonic()
        self.app.metrics.transaction_started(self.cluster.name, self.endpoint.name, self._last_route)
        replay = self.gucs.replay_sql(server.gucs)
        if replay:
            server.run_hidden(replay)
            server.gucs = dict(self.gucs.client)
        if self._paused_reading and self.transport is not None:
            self.transport.resume_reading()
            self._paused_reading = False
        if self._pending:
            data = bytes(self._pending)
            self._pending.clear()
            self._client_data(data)

    def _forward(self, data: bytes, server: ServerConnection) -> None:
        """Forward complete client messages in data to server, rewriting where the pooler must."""
        tracker = server.tracker
        size = len(data)
        pos = start = 0
        out: list[bytes] = []
        while size - pos >= 5:
            kind = data[pos]
            length = _U32.unpack_from(data, pos + 1)[0]
            end = pos + 1 + length
            if length < 4 or length > MAX_CLIENT_MESSAGE:
                raise ProtocolViolation(f"invalid message length {length}")
            if end > size:
                if kind == _STREAM_COPY_DATA:
                    self._copy_skip = end - size
                    pos = size
                break
            if self._on_replica and kind in (0x51, 0x50, 0x42) and self._must_leave_replica(
                    kind, data[pos + 5:end], server):
                break
            if kind == 0x51:  # Query
                self.queries += 1
                sql = data[pos + 5:end - 1]
                if self.statements and sql[:1] in b"Dd" and self._deallocate(sql, tracker):
                    out.append(data[start:pos])   # answered by the proxy
                    start = end
                else:
                    self._statement_effects(sql, server)
                    tracker.push(_QUERY_SLOT)
            elif kind == 0x53:  # Sync
                tracker.push(_SYNC_SLOT)
                self.unsynced = False
            elif kind == 0x45:  # Execute
                self.queries += 1
                tracker.push(_EXECUTE_SLOT)
                self.unsynced = True
            elif kind == 0x42:  # Bind
                self.unsynced = True
                replacement = self._bind(data[pos + 5:end], server)
                if replacement is not None:
                    out.append(data[start:pos])
                    out.append(replacement)
                    start = end
                tracker.push(_BIND_SLOT)
            elif kind == 0x50:  # Parse
                self.unsynced = True
                out.append(data[start:pos])
                out.append(self._parse(data[pos + 5:end], server))
                start = end
            elif kind == 0x44:  # Describe
                self.unsynced = True
                replacement = self._describe(data[pos + 5:end], server)
                if replacement is not None:
                    out.append(data[start:pos])
                    out.append(replacement)
                    start = end
                tracker.push(_DESCRIBE_SLOT)
            elif kind == 0x43:  # Close
                self.unsynced = True
                if self._close_statement(data[pos + 5:end], server):
                    out.append(data[start:pos])
                    start = end
                else:
                    tracker.push(_CLOSE_SLOT)
            elif kind == 0x48:  # Flush
                self.unsynced = True
            elif kind == 0x64 or kind == 0x63 or kind == 0x66:  # CopyData / CopyDone / CopyFail
                pass
            elif kind == 0x46:  # FunctionCall
                tracker.push(_QUERY_SLOT)
            elif kind == 0x58:  # Terminate: not forwarded; the server stays in the pool
                out.append(data[start:pos])
                start = pos = end
                self._flush_to_server(server, out)
                self.close("client sent Terminate")
                return
            else:
                raise ProtocolViolation(f"invalid frontend message type {kind}")
            pos = end
        if pos < size:
            self._pending += data[pos:]
        if start == 0 and pos == size:
            server.write(data)
        else:
            out.append(data[start:pos])
            if self._sync_after_held:
                self._sync_after_held = False
                out.append(m.sync())   # ends the batch that stays on the replica (see _must_leave_replica)
            self._flush_to_server(server, out)

    @staticmethod
    def _flush_to_server(server: ServerConnection, out: list[bytes]) -> None:
        payload = b"".join(out)
        if payload:
            server.write(payload)

    # ---- session state and prepared statements -------------------------------------------------

    def _statement_effects(self, sql: bytes, server: ServerConnection) -> None:
        if _PLAIN_SELECT(sql):
            return
        effects = session_effects(sql.decode("utf-8", "replace"))
        if effects.discard_all:
            self.gucs.clear(server)
        if effects.discard_all or effects.deallocate_all:
            self.statements.clear()
            server.prepared.clear()
        if effects.sets:
            self.gucs.apply(effects.sets, server)
            tracker = server.tracker
            if tracker.status != b"I" or tracker.slots or b";" in sql:
                # Maybe inside a transaction that may roll back: re-read the real values after it.
                if self._tx_set_names is None:
                    self._tx_set_names = set()
                self._tx_set_names.update(c.name.lower() for c in effects.sets if c.value is not None)
        if effects.pin_reason and self.pinned is None and not self.session_mode:
            self.pinned = effects.pin_reason
            server.pinned_reason = effects.pin_reason
            self.app.metrics.pinned(self.cluster.name, effects.pin_reason)
            log.info("client %s pinned to server %s: %s", self.peer, server.address, effects.pin_reason)

    def _deallocate(self, sql: bytes, tracker: ResponseTracker) -> bool:
        """SQL `DEALLOCATE name` of a protocol-level statement (libpq < 17 does that): answer it here.

        The statement lives on the server under the proxy's name, and stays cached there.
        """
        match = _DEALLOCATE_RE.match(sql)
        if match is None:
            return False
        quoted, plain = match.group(1), match.group(2)
        name = quoted.replace(b'""', b'"') if quoted else plain.lower()
        if plain and name == b"all":
            return False
        if name not in self.statements:
            return False
        del self.statements[name]
        reply = m.message(b"C", b"DEALLOCATE\x00") + m.ready_for_query(tracker.status)
        self.write(tracker.push(Slot(SYNTH, payload=reply)))
        return True

    def _parse(self, body: bytes, server: ServerConnection) -> bytes:
        parse = decode_parse(body)
        self._statement_effects(parse.query, server)
        tracker = server.tracker
        if not parse.name or not self.rewrite:
            tracker.push(_PARSE_SLOT)
            return m.message(b"P", body)
        name = self.cluster.statement_names.name_for(parse)
        message = parse.encode(name)
        self.statements[parse.name] = ClientStatement(name, message, parse.query)
        if name in server.prepared:
            server.prepared.move_to_end(name)
            self.write(tracker.push(Slot(SYNTH, payload=m.PARSE_COMPLETE)))
            return b""
        evicted = self._remember_prepared(server, name)
        tracker.push(Slot(PARSE, payload=name))
        return evicted + message

    def _remember_prepared(self, server: ServerConnection, name: bytes) -> bytes:
        """Record name as prepared on server; returns a Close for the least recently used if full."""
        server.prepared[name] = None
        limit = self.cluster.config.pool.max_prepared_statements
        if len(server.prepared) <= limit:
            return b""
        oldest, _ = server.prepared.popitem(last=False)
        server.tracker.push(Slot(CLOSE, DROP))
        return close_statement(oldest)

    def _ensure_prepared(self, name: bytes, server: ServerConnection) -> tuple[bytes, bytes] | None:
        """(bytes to send first, server name) for a client statement, re-preparing it if needed."""
        statement = self.statements.get(name)
        if statement is None:
            return None
        server_name = statement.server_name
        if server_name in server.prepared:
            server.prepared.move_to_end(server_name)
            return b"", server_name
        evicted = self._remember_prepared(server, server_name)
        server.tracker.push(Slot(PARSE, DROP, server_name))
        return evicted + statement.parse, server_name

    def _bind(self, body: bytes, server: ServerConnection) -> bytes | None:
        if not self.rewrite:
            return None
        start, end = bind_statement(body)
        if start == end:
            return None
        ensured = self._ensure_prepared(body[start:end], server)
        if ensured is None:
            return None
        prefix, server_name = ensured
        return prefix + rewrite_bind(body, start, end, server_name)

    def _describe(self, body: bytes, server: ServerConnection) -> bytes | None:
        if not self.rewrite:
            return None
        kind, name = target_name(body)
        if kind != 0x53 or not name:
            return None
        ensured = self._ensure_prepared(name, server)
        if ensured is None:
            return None
        prefix, server_name = ensured
        return prefix + describe_statement(server_name)

    def _close_statement(self, body: bytes, server: ServerConnection) -> bool:
        """Answer Close of a named statement ourselves (True) — the server copy stays cached."""
        if not self.rewrite:
            return False
        kind, name = target_name(body)
        if kind != 0x53 or not name:
            return False
        self.statements.pop(name, None)
        self.write(server.tracker.push(Slot(SYNTH, payload=m.CLOSE_COMPLETE)))
        return True

    # ---- relay: server → client ----------------------------------------------------------------

    def server_data(self, server: ServerConnection, data: bytes) -> None:
        if data:
            self.write(data)
        tracker = server.tracker
        if tracker.parameters:
            self.gucs.reported(tracker.parameters, server)
            tracker.parameters.clear()
        if tracker.failed_statements:
            for name in tracker.failed_statements:
                server.prepared.pop(name, None)
            tracker.failed_statements.clear()
        if (tracker.idle and not self.unsynced and not self._copy_skip and self.pinned is None
                and not self.session_mode):
            if (self._capturing or self._tx_set_names or self._read_your_writes) and self._after_transaction(server):
                return
            self._release()

    def _after_transaction(self, server: ServerConnection) -> bool:
        """Hidden follow-up before release; True while it runs (the server is kept until then).

        - read_your_writes: the WAL position after a transaction on the primary;
        - settings SET inside a transaction: their real values now (a ROLLBACK undoes a SET).
        """
        if self._capturing:
            self._capturing = False
            self._use_captured(server)
            return False
        columns = []
        want_position = self._read_your_writes and self._last_route == "primary"
        if want_position:
            # The insert position: with synchronous_commit = off the commit record may not be
            # written yet, and the write position (pg_current_wal_lsn) would be before it.
            columns.append("pg_current_wal_insert_lsn()::text")
        self._capture_names = sorted(self._tx_set_names or ())
        self._tx_set_names = None
        columns.extend(f"current_setting({m.quote_literal(name)}, true)" for name in self._capture_names)
        if not columns:
            return False
        self._capture_position = want_position
        self._capturing = True
        server.run_capture("SELECT " + ", ".join(columns))
        return True

    def _use_captured(self, server: ServerConnection) -> None:
        rows = server.tracker.captured
        try:
            values = m.parse_data_row(rows[0]) if rows else []
        except (ValueError, struct.error):
            values = []
        if self._capture_position:
            # Until the position is known, fail safe: this client reads from the primary for a while.
            self._primary_until = time.monotonic() + _RYW_FALLBACK_SECONDS
        if not values:
            return
        if self._capture_position:
            try:
                position = m.parse_lsn(values.pop(0))
            except ValueError:
                position = None
            if position is not None:
                self.min_position = max(self.min_position or 0, position)
                self._primary_until = 0.0
        for name, value in zip(self._capture_names, values, strict=False):
            if value is not None:
                self.gucs.reported([(name.encode(), value.encode())], server)

    def _must_leave_replica(self, kind: int, body: bytes, server: ServerConnection) -> bool:
        """A statement for the primary arrived while this split client is on a replica.

        Outside a transaction block, hold it (and everything after it) until the replica is
        released, ending an open extended-protocol batch with a hidden Sync; it is then routed
        anew. Inside a block (BEGIN READ ONLY ...) it stays: the replica's read-only error is right.
        """
        if self._first_checked:
            self._first_checked = False  # the statement _route() just classified
            return False
        sql = self._statement_text(kind, body)
        if sql is None or self.pinned is not None or self.session_mode:
            return False
        verdict = self.cluster.classifier.classify(sql.decode("utf-8", "replace"))
        if verdict.route is Route.REPLICA or server.tracker.status != b"I":
            return False
        self._held = True
        if self.unsynced:
            # Written by _forward after the messages before this one, in order.
            server.tracker.push(Slot(SYNC, DROP_ALL))
            self._sync_after_held = True
            self.unsynced = False
        return True

    def _release(self) -> None:
        server, pool = self.server, self.server_pool
        assert server is not None
        self._held = False
        self._on_replica = False
        self.app.metrics.transaction_finished(self.cluster.name, self.endpoint.name,
                                              time.monotonic() - self._transaction_started)
        self.server = None
        self.server_pool = None
        server.owner = None
        if pool is not None:
            pool.release(server)
        else:
            server.close()
        if self._pending and self.state == _READY:
            self._need_server()

    def server_lost(self, server: ServerConnection, reason: str) -> None:
        """The server connection died under this client: error for work in flight, keep the client."""
        tracker = server.tracker
        self.server = None
        pool, self.server_pool = self.server_pool, None
        server.owner = None
        if pool is not None:
            pool.discard(server)
        log.warning("client %s: server %s lost: %s", self.peer, server.address, reason)
        err = ServerUnavailable(f"server connection to {server.address} lost: {reason}")
        waiting = [s for s in tracker.slots if s.kind in (QUERY, SYNC)]
        if waiting:
            out = [m.error_response(err.sqlstate, err.message)]
            out.extend(m.ready_for_query(b"I") for _ in waiting)
            self.write(b"".join(out))
        elif tracker.slots or self.unsynced:
            self.write(m.error_response(err.sqlstate, err.message))
            self._discard_until_sync = True
        elif tracker.status != b"I":
            self._broken = ServerUnavailable(
                f"the transaction was aborted because the server connection to {server.address} was lost")
        self.unsynced = False
        self._copy_skip = 0
        self._capturing = False
        if self.pinned is not None or self.session_mode:
            self.close(f"pinned server connection lost: {reason}",
                       m.error_response("08006", err.message, "FATAL"))
            return
        if self._pending:
            self._need_server()

    def server_pause_writing(self) -> None:
        if self.transport is not None and not self._paused_reading:
            self.transport.pause_reading()

    def server_resume_writing(self) -> None:
        if self.transport is not None and not self._paused_reading:
            self.transport.resume_reading()

    def _fail_batch(self, err: ProxyError, first_batch_only: bool = False) -> None:
        """No server for the client's pending messages: answer them with err, as a server would.

        With first_batch_only, stop after the first Query or Sync (the rest may run normally).
        """
        data = bytes(self._pending)
        self._pending.clear()
        out: list[bytes] = []
        pos = 0
        errored = self._discard_until_sync
        while len(data) - pos >= 5:
            kind = data[pos]
            end = pos + 1 + _U32.unpack_from(data, pos + 1)[0]
            if end > len(data):
                break
            if kind == 0x51 or kind == 0x46:  # Query / FunctionCall
                if not errored:
                    out.append(m.error_response(err.sqlstate, err.message))
                    out.append(m.ready_for_query(b"I"))
                    if first_batch_only:
                        pos = end
                        break
            elif kind == 0x53:  # Sync
                if not errored:
                    out.append(m.error_response(err.sqlstate, err.message))
                out.append(m.ready_for_query(b"I"))
                errored = False
                if first_batch_only:
                    pos = end
                    break
            elif kind == 0x58:
                self.close("client sent Terminate")
                return
            elif kind in (0x50, 0x42, 0x44, 0x45, 0x43, 0x48):
                if not errored:
                    out.append(m.error_response(err.sqlstate, err.message))
                    errored = True
            pos = end
        self._discard_until_sync = errored
        self._pending += data[pos:]
        self.write(b"".join(out))

    # ---- giving the server back ----------------------------------------------------------------

    def _give_back_server(self, client_gone: bool) -> None:
        server, pool = self.server, self.server_pool
        if server is None:
            return
        self.server = None
        self.server_pool = None
        server.owner = None
        if pool is None:
            server.close()
            return
        tracker = server.tracker
        if not tracker.quiet or self.unsynced or self._copy_skip:
            pool.discard(server)  # work in flight: closing is the only clean way out
            return
        cleanup: list[str] = []
        if tracker.status != b"I":
            cleanup.append("ROLLBACK")
        if self.pinned is not None or self.session_mode:
            cleanup.append("DISCARD ALL")
        if not cleanup:
            pool.release(server)
            return
        reset_then_release(server, pool, cleanup)
