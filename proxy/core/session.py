"""A client's life whatever its engine: login bookkeeping, route → borrow → attach → release, pins.

`ClientSessionCore` is the asyncio protocol of one client connection. An engine subclasses it and
brings what differs per wire protocol: reading the client's bytes (`data_received`), answering
the login, finding the statement a batch starts with (`_first_statement`), forwarding to the
server, encoding errors (`error_bytes`), failing a batch no server can run (`_fail_batch`),
replaying session state on a fresh server (`_attached`) and cleaning a server up before it goes
back to its pool (`_return_server`). Everything else — which server, waiting for one, giving it
back, pinning, counters and metrics — is written here once.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from ..config import EndpointConfig, TlsSettings
from ..errors import (
    AuthenticationFailed,
    ProtocolViolation,
    ProxyError,
    ServerConnectFailed,
    ServerUnavailable,
    TooManyConnections,
    TooManyUserConnections,
)
from ..recording.recorder import install_hooks
from ..routing.classify import Classification, Route
from ..tls import contexts as tls_contexts
from ..tls.layer import TlsConnection
from . import fault_hooks
from .stems import by_statement_stem, statement_stem
from .tasks import TaskSet

if TYPE_CHECKING:
    from ..pool.pool import Pool
    from .cluster import Cluster
    from .users import Login

log = logging.getLogger("dbproxy.client")

# Session states shared by every engine (an engine may refine STARTUP/AUTH internally).
STARTUP, AUTH, LOGIN, READY, CLOSED = range(5)

# Bytes buffered from a client that has no server yet before we stop reading from it.
PAUSE_BUFFER = 4 * 1024 * 1024
# read_your_writes: how long a client reads from the primary when its last write's position is unknown.
RYW_FALLBACK_SECONDS = 10.0
_NO_VERDICT = Classification(Route.PRIMARY, "none yet")
_NO_COUNTS = [0, 0]
__all__ = ["by_statement_stem", "statement_stem"]   # the engines' per-stem memos (stems.py)


class ClientSessionCore(asyncio.Protocol):
    """A client connection on one endpoint of one cluster; see the module docstring."""

    # Defaults of what most connections never change or read only at login and close: a short-lived
    # connection does not pay for setting them (the per-transaction state is set in __init__).
    peer = "?"
    app_name = ""
    pid = 0            # the proxy's id for this client (PostgreSQL backend pid, MySQL connection id)
    key = 0
    connection_counts: list[int] = _NO_COUNTS   # its endpoint's [open, accepted] (ProxyApp)
    _close_reason = ""
    _counted = False
    _primary_until = 0.0
    _route_stem = b"\x00"   # split: the previous statement's text without trailing digits
    _route_verdict: Classification = _NO_VERDICT
    pool_variant: Any = None   # the engine's login-time settings a server connection must match
    tls_version: str | None = None   # "TLSv1.3" once the client's TLS handshake is done
    _server_paused = False
    _reading_paused: Any = None
    # Admission and audit (SPEC §10): the refusal a rate-limited connection gets at its login, the
    # user it names (as soon as it does), its slot in the per-user / per-database counts, whether it
    # was welcomed, and the audit log's statement hook (None unless audit_statements is on: the
    # only per-statement cost is the check of this attribute).
    refusal: ProxyError | None = None
    user_name = ""
    _claimed: tuple[str, str] | None = None
    _welcomed = False
    statement_audit: Callable[[ClientSessionCore, bytes], None] | None = None
    # a recording's view of prepared executions (recording/pg_prepared.py PgTap, mysql_prepared.py MysqlTap)
    prepared_tap: Any = None
    _login_method: str | None = None   # "token" / "password": a token user's cleartext login (core/token_login.py)

    # Per-connection state that starts the same for every client: class defaults, assigned on the
    # instance when it changes (a short-lived connection does not pay for setting them all).
    transport: asyncio.Transport | None = None
    state = STARTUP
    login: Login | None = None
    database = ""
    server: Any = None
    server_pool: Pool[Any] | None = None
    pinned: str | None = None
    transactions = 0
    queries = 0
    _borrow_task: asyncio.Future[Any] | None = None   # a borrow task, or a parked waiter (Cluster.park)
    _broken: ProxyError | None = None
    _paused_reading = False
    _last_route = "primary"
    _last_session_only = False   # split: the last transaction's first text changed only session state
    _transaction_started = 0.0
    # Split endpoints: while on a replica, each further statement is classified too; one that
    # must go to the primary is held (with what follows) until the replica is released.
    _on_replica = False
    _first_checked = False
    _held = False
    # read_your_writes (split endpoints): the position of this client's last write transaction;
    # replicas serve it only once they have replayed that far (and that far as its user's latest
    # write from any connection: psql -c ... three times in a row are three clients).
    min_position: Any = None
    # Fault injection (SPEC §13, fault_hooks.py): a latency fault's timer, and "this transaction
    # already had its fault decided" (after the delay).
    _fault_timer: asyncio.TimerHandle | None = None
    _fault_passed = False

    def __init__(self, app: Any, cluster: Cluster[Any], endpoint: EndpointConfig) -> None:
        self.app = app
        self.cluster = cluster
        self.endpoint = endpoint
        self.connected_at = time.time()
        self.session_mode = cluster.config.pool.mode == "session"
        self._pending = bytearray()
        self.waits = TaskSet()   # waits on this client's behalf (the cache's catalog wait): cancelled when it goes
        self.opened = self.last_activity = time.monotonic()
        self._read_your_writes = endpoint.role == "split" and endpoint.read_your_writes

    # ---- what an engine provides ------------------------------------------------------------------

    def error_bytes(self, exc: ProxyError, fatal: bool = False) -> bytes:
        """exc as the engine's protocol error message."""
        raise NotImplementedError

    def _client_data(self, data: bytes) -> None:
        """Bytes from a logged-in client (READY state)."""
        raise NotImplementedError

    def _first_statement(self, data: bytes | bytearray) -> bytes | None:
        """The SQL text the batch in data starts with, if complete and known (split routing)."""
        raise NotImplementedError

    def _starts_with_quit(self) -> bool:
        """The pending bytes begin with the client's goodbye (Terminate, COM_QUIT)."""
        raise NotImplementedError

    def _fail_batch(self, err: ProxyError, first_batch_only: bool = False) -> None:
        """No server for the pending work: answer it with err, as a server would."""
        raise NotImplementedError

    def _discarding(self) -> bool:
        """The engine is skipping the client's messages after an error (PostgreSQL: until Sync)."""
        return False

    def _attached(self, server: Any) -> None:
        """A server was just attached: replay the client's session state on it."""

    def _return_server(self, server: Any, pool: Pool[Any]) -> None:
        """Give a quiet server back for good (client gone): roll back / reset first if needed."""
        pool.release(server)

    def _finish_own_work(self, server: Any, pool: Pool[Any]) -> bool:
        """The client left while only the proxy's own follow-up ran on its server (read_your_writes'
        position): True if the engine lets it finish and then pools the server itself."""
        return False

    def _work_in_flight(self, server: Any) -> bool:
        """Responses still outstanding: closing the server is then the only clean way out."""
        return not server.idle and not server.in_transaction

    # ---- asyncio.Protocol -------------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # uvloop transports are not asyncio.Transport subclasses
        peer = transport.get_extra_info("peername")
        self.peer = f"{peer[0]}:{peer[1]}" if peer else "?"
        app = self.app
        if (self.endpoint.allow or app.connect_rate is not None) and not app.screen(self, peer):
            self.state = CLOSED   # refused before any byte is read or written; never a session
            transport.close()
            return
        # uvloop already sets TCP_NODELAY on every TCP transport.
        app.client_opened(self)
        if app.audit is not None or app.recording is not None or self.cluster.mirror is not None:   # statement hooks
            install_hooks(self, app.audit, app.recording)

    def connection_lost(self, exc: Exception | None) -> None:
        if self.state == CLOSED:
            return
        self._lost_before_login()
        self.state = CLOSED
        if not self._close_reason:
            self._close_reason = "client disconnected" if exc is None else f"client connection lost: {exc}"
        if self._borrow_task is not None:
            self._borrow_task.cancel()
        self.waits.cancel()
        self._give_back_server()
        if self._counted:
            self.cluster.clients -= 1
        if self.tls_version is not None:
            self.app.metrics.client_connections_tls.labels(self.cluster.name, self.endpoint.name).dec()
        if self._claimed is not None:
            self.app.counts.release(self._claimed[0], self.cluster.name, self._claimed[1])
        audit = self.app.audit
        if audit is not None:
            if self._welcomed:
                audit.disconnect(self, self._close_reason, time.time())
            elif self.user_name:
                audit.login(self, "failure", self._close_reason)
        self.app.client_closed(self, self._close_reason)

    def _lost_before_login(self) -> None:
        """Hook: log what a client that vanished mid-login had sent (SPEC §9)."""

    # ---- TLS (SPEC §10) ---------------------------------------------------------------------------

    @property
    def tls_settings(self) -> TlsSettings:
        return self.endpoint.tls or self.cluster.config.tls

    def tls_context(self, alpn: Sequence[str] = ()) -> ssl.SSLContext | None:
        """The context for this client's TLS handshake; None when TLS is off here (or cannot work)."""
        try:
            return tls_contexts.for_clients(self.tls_settings, alpn)
        except (ssl.SSLError, OSError, ValueError) as exc:
            log.error("client %s: TLS is enabled on %s/%s but its certificate cannot be loaded: %s", self.peer,
                      self.cluster.name, self.endpoint.name, exc)
            return None

    def start_tls(self, context: ssl.SSLContext, already_read: bytes = b"") -> None:
        """The client's next bytes are a TLS handshake (already_read: the first of them)."""
        TlsConnection(self.transport, self, context, self._tls_done, already_read)

    def _tls_done(self, tls: TlsConnection | None, error: str | None) -> bool:
        if tls is None:
            log.info("client %s: TLS handshake failed: %s", self.peer, error)
            self._close_reason = f"TLS handshake failed: {error}"
            return False
        self.tls_version = tls.version
        self.app.metrics.client_connections_tls.labels(self.cluster.name, self.endpoint.name).inc()
        return self._tls_established(tls)

    def _tls_established(self, tls: TlsConnection) -> bool:
        """Hook: the handshake is done (False: the engine closed the connection)."""
        return True

    # Back-pressure (asyncio flow control): the client's write buffer is full, so its server is not
    # read meanwhile (_reading_paused); the server's is, so the client is not read (_server_paused).
    # Whatever is paused on this client's behalf is resumed when the server is detached (_unpause).

    def pause_writing(self) -> None:
        if self.server is not None:
            self._reading_paused = self.server
            self.server.pause_reading()

    def resume_writing(self) -> None:
        self._reading_paused = None
        if self.server is not None:
            self.server.resume_reading()

    def server_pause_writing(self) -> None:
        self._server_paused = True
        if self.transport is not None and not self._paused_reading:
            self.transport.pause_reading()

    def server_resume_writing(self) -> None:
        self._server_paused = False
        if self.transport is not None and not self._paused_reading:
            self.transport.resume_reading()

    def _unpause(self, server: Any) -> None:
        """The server is detached: undo what back-pressure paused on this client's behalf."""
        if self._reading_paused is server:   # the client was slow: the proxy stopped reading the server
            self._reading_paused = None
            server.resume_reading()
        if self._server_paused:   # the server was slow: the proxy stopped reading the client
            self.server_resume_writing()

    # ---- errors and closing -----------------------------------------------------------------------

    def check_login_deadline(self, now: float, limit: float) -> None:
        """SPEC §9 slow-loris: a client still logging in `limit` seconds after connecting is let go.

        Called about once a second for every client (ProxyApp's maintenance) instead of a timer per
        connection: short-lived connections are the common case and each timer costs.
        """
        if self.state in (STARTUP, AUTH) and now - self.opened > limit:
            log.info("client %s: login not completed within %gs", self.peer, limit)
            self.close("login timeout", self._login_timeout_words())

    def _login_timeout_words(self) -> bytes:
        return self.error_bytes(ProtocolViolation("login timeout"), fatal=True) if self.state == AUTH else b""

    def fail(self, exc: ProxyError) -> None:
        """Send a fatal error and close (login problems, protocol violations)."""
        if exc is not self.refusal:   # a rate-limited connection: logged (throttled) by ProxyApp.screen
            level = logging.WARNING if isinstance(exc, ProtocolViolation) else logging.INFO
            log.log(level, "client %s: %s", self.peer, exc.message)
        self.close(exc.message, self.error_bytes(exc, fatal=True))

    def close_with_error(self, reason: str, exc: ProxyError) -> None:
        """Close with a last fatal error message (shutdown, idle timeout, admin KILL CLIENT)."""
        self.close(reason, self.error_bytes(exc, fatal=True))

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

    # ---- login bookkeeping ------------------------------------------------------------------------

    def admit(self, user_name: str, refusal: str) -> Login:
        """The configured user for a login attempt, counted against max_client_connections.

        Raises AuthenticationFailed (message `refusal`) for an unknown user, TooManyConnections (also
        a rate-limited connection's refusal, see ProxyApp.screen).
        """
        self.user_name = user_name
        if self.refusal is not None:
            raise self.refusal
        if self.cluster.faults is not None:
            fault_hooks.refuse(self, user_name)
        login = self.app.users.get(user_name)
        if login is None:
            self.app.metrics.auth_failed(self.cluster.name, self.endpoint.name)
            raise AuthenticationFailed(refusal)
        self.login = login
        cluster = self.cluster
        if cluster.clients >= cluster.config.pool.max_client_connections:
            self.app.refused(self, "max_client_connections")
            raise TooManyConnections(
                f"too many client connections for cluster {cluster.name!r} "
                f"(max_client_connections = {cluster.config.pool.max_client_connections})")
        cluster.clients += 1
        self._counted = True
        return login

    def claim_limits(self) -> None:
        """Count the authenticated client against its user's and its database's max_client_connections.

        Called once the password is right (a refusal says nothing to who does not know it);
        raises TooManyUserConnections / TooManyConnections.
        """
        if not self.app.limits_on:   # no user or database limit configured: nothing to count
            return
        login = self.login
        assert login is not None
        user, database, cluster = login.user, self.database, self.cluster
        database_limit = cluster.config.database_limit(database)
        reason = self.app.counts.claim(user.name, user.max_client_connections, cluster.name, database, database_limit)
        if reason is None:
            self._claimed = (user.name, database)
            return
        self.app.refused(self, reason)
        if reason == "user_limit":
            raise TooManyUserConnections(f'too many connections for role "{user.name}" '
                                         f"(max_client_connections = {user.max_client_connections})")
        raise TooManyConnections(f'too many connections for database "{database}" '
                                 f"(max_client_connections = {database_limit})")

    def logged_in(self) -> None:
        """The engine welcomed the client (it is READY): the audit log's successful login."""
        self._welcomed = True
        audit = self.app.audit
        if audit is not None:
            audit.login(self, "success")

    def auth_method(self) -> str:
        """The client authentication method of this login, for the audit log ("token" for token logins)."""
        return self._login_method or self.cluster.config.client_auth

    def auth_failed(self, user_name: str = "", database: str | None = None) -> None:
        """Wrong password (or unknown user): counted; `user_name`/`database` when admit() was not called."""
        if user_name:
            self.user_name = user_name
        if database is not None:
            self.database = database
        self.app.metrics.auth_failed(self.cluster.name, self.endpoint.name)

    # ---- route, borrow, attach --------------------------------------------------------------------

    def _route(self, data: bytes | bytearray) -> str:
        """Where the transaction starting with data goes: "primary" or "replica" (SPEC §3)."""
        role = self.endpoint.role
        if role == "writer":
            return "primary"
        if role != "split":
            return "replica"
        sql = self._first_statement(data)
        if sql is None:
            self._last_session_only = False
            return "primary"
        # Texts that differ from this client's previous one only in trailing digits (a numeric literal
        # at the end, as in point lookups) route the same way: the digits cannot turn the statement
        # into a write, a function call, a locking clause or a hint.
        stem = statement_stem(sql)
        if stem == self._route_stem:
            verdict = self._route_verdict
        else:
            verdict = self.cluster.classifier.classify(sql.decode("utf-8", "replace"))
            self._route_stem, self._route_verdict = stem, verdict
        self._last_session_only = verdict.session_only
        if verdict.route is not Route.REPLICA or verdict.ends_transaction:
            return "primary"
        if self._primary_until and time.monotonic() < self._primary_until:
            return "primary"  # read_your_writes without a known position for the last write
        cluster = self.cluster
        if self._read_your_writes and (cluster.writes_pending or cluster.write_unknown_until) and self.login is not None:
            name = self.login.user.name
            if name in cluster.writes_pending:
                return "primary"  # a write of this user (any connection) whose position is being read
            until = cluster.write_unknown_until.get(name)
            if until is not None and time.monotonic() < until:
                return "primary"  # another client of this user left before its write position was read
        return "replica"

    def _min_position(self, route: str) -> Any:
        if route != "replica" or not self._read_your_writes:
            return None
        assert self.login is not None
        users = self.cluster.write_positions.get(self.login.user.name)
        own = self.min_position
        return own if users is None or (own is not None and own >= users) else users

    def _wrote_at(self, position: int) -> None:
        """read_your_writes: this client's transaction on the primary committed at `position`."""
        self.min_position = max(self.min_position or 0, position)
        self._primary_until = 0.0
        assert self.login is not None
        self.cluster.note_write(self.login.user.name, position)

    def _take_idle_now(self, data: bytes | bytearray) -> Any:
        """Fast path for a new transaction: attach an idle server now (returned), else None."""
        assert self.login is not None
        if self.cluster.faults is not None:
            return None   # faults are decided in _need_server
        route = self._last_route = self._route(data)
        taken = self.cluster.take_idle(self.endpoint, route, self.login.user, self.database,
                                       self._min_position(route), self.pool_variant)
        if taken is None:
            return None
        self._attach(*taken)
        return taken[0]

    def _need_server(self) -> None:
        """The client sent something while it has no server: get one (or fail the batch)."""
        if self._borrow_task is not None or self.state != READY or not self._pending or self._fault_timer is not None:
            return
        if self._starts_with_quit():
            self.close("client sent Terminate")
            return
        if self._broken is not None or self._discarding():
            err = self._broken or ServerUnavailable("server connection lost")
            self._broken = None
            self._fail_batch(err, first_batch_only=True)
            if not self._pending or self._discarding():
                return
        if self.cluster.faults is not None and fault_hooks.intercept(self, self.cluster.faults):
            return
        if len(self._pending) > PAUSE_BUFFER and self.transport is not None:
            self.transport.pause_reading()
            self._paused_reading = True
        login = self.login
        assert login is not None
        route = self._last_route = self._route(self._pending)
        taken = self.cluster.take_idle(self.endpoint, route, login.user, self.database, self._min_position(route),
                                       self.pool_variant)
        if taken is not None:
            self._attach(*taken)
            return
        parked = self.cluster.park(self.endpoint, route, login.user, self.database, self._min_position(route),
                                   self.pool_variant)
        if parked is not None:   # the pool is busy: wait in its queue, without a task
            fut, pool = parked
            self._borrow_task = fut
            fut.add_done_callback(_Parked(self, pool, route, time.monotonic()))
            return
        self._borrow_task = asyncio.get_running_loop().create_task(self._borrow(route))

    def _parked_done(self, fut: asyncio.Future[Any], pool: Pool[Any], route: str, started: float) -> None:
        """A parked waiter's turn (see _need_server): attach what it got, or borrow again, or fail."""
        if fut.cancelled():   # the client left (connection_lost) or a replay took over
            if self._borrow_task is fut:
                self._borrow_task = None
            return
        if self._borrow_task is not fut:   # abandoned after it was served
            if fut.exception() is None:
                pool.release(fut.result())
            return
        self._borrow_task = None
        exc = fut.exception()
        if exc is not None:
            if self.state != READY:
                return
            if isinstance(exc, ServerConnectFailed):   # the pool closed, or its new connection failed: borrow
                self._borrow_task = asyncio.get_running_loop().create_task(self._borrow(route))
                return
            self._borrow_failed(exc if isinstance(exc, ProxyError) else ServerUnavailable(str(exc)))
            return
        pool.handed_out += 1
        self._borrowed(fut.result(), pool, started)

    async def _borrow(self, route: str) -> None:
        assert self.login is not None
        started = time.monotonic()
        try:
            conn, pool = await self.cluster.borrow(self.endpoint, route, self.login.user, self.database,
                                                   self._min_position(route), self.pool_variant)
        except ProxyError as exc:
            self._borrow_task = None
            self._borrow_failed(exc)
            return
        self._borrow_task = None
        self._borrowed(conn, pool, started)

    def _borrowed(self, conn: Any, pool: Pool[Any], started: float) -> None:
        """A borrow (task or parked) got `conn`: attached, or given back if the client is gone meanwhile."""
        self.app.metrics.borrowed(self.cluster.name, time.monotonic() - started)
        if self.state != READY:
            pool.release(conn)
            return
        self._attach(conn, pool)

    def _borrow_failed(self, err: ProxyError) -> None:
        log.info("client %s: %s", self.peer, err.message)
        self._fail_batch(err)

    def _attach(self, server: Any, pool: Pool[Any] | None) -> None:
        self.server = server
        self.server_pool = pool
        server.owner = self
        self.transactions += 1
        self._on_replica = self._first_checked = self.endpoint.role == "split" and self._last_route == "replica"
        self._transaction_started = time.monotonic()
        self.app.metrics.transaction_started(self.cluster.name, self.endpoint.name, self._last_route)
        self._attached(server)
        if self._paused_reading and self.transport is not None:
            self.transport.resume_reading()
            self._paused_reading = False
        if self._pending:
            data = bytes(self._pending)
            self._pending.clear()
            self._client_data(data)

    # ---- release ----------------------------------------------------------------------------------

    def _release(self) -> None:
        """The transaction is over: the server goes back to its pool, pending work gets a new one.

        (An engine with bookkeeping to do first overrides this and calls it.)"""
        server, pool = self.server, self.server_pool
        assert server is not None
        self._held = False
        self._on_replica = False
        self.app.metrics.transaction_finished(self.cluster.name, self.endpoint.name,
                                              time.monotonic() - self._transaction_started)
        if self._reading_paused is not None or self._server_paused:
            self._unpause(server)
        self.server = None
        self.server_pool = None
        server.owner = None
        if pool is not None:
            pool.release(server)
        else:
            server.close()
        if self._pending and self.state == READY:
            self._need_server()

    def _detach_lost(self, server: Any, reason: str) -> None:
        """The server died under this client: forget it (the pool discards it)."""
        self._unpause(server)
        self.server = None
        pool, self.server_pool = self.server_pool, None
        server.owner = None
        if pool is not None:
            pool.discard(server)
        log.warning("client %s: server %s lost: %s", self.peer, server.address, reason)

    def _give_back_server(self) -> None:
        """The client is gone: its server goes back clean (rolled back / reset) or is closed."""
        server, pool = self.server, self.server_pool
        if server is None:
            return
        self._unpause(server)
        self.server = None
        self.server_pool = None
        server.owner = None
        if pool is None:
            server.close()
            return
        if self._work_in_flight(server):
            if self._finish_own_work(server, pool):
                return
            if self._read_your_writes and self._last_route == "primary" and self.login is not None:
                # Perhaps the proxy's own read of the write's position (read_your_writes) that the
                # client did not wait for (psql -c exits on ReadyForQuery): this user's next reads,
                # from any connection, must not trust replicas for a while.
                self.cluster.note_unknown_write(self.login.user.name, RYW_FALLBACK_SECONDS)
            pool.discard(server)  # work in flight: closing is the only clean way out
            return
        self._return_server(server, pool)

    # ---- pins -------------------------------------------------------------------------------------

    def pin(self, reason: str, server: Any) -> None:
        """State that cannot move keeps this client on `server` until it disconnects (SPEC §4)."""
        if self.pinned is not None or self.session_mode:
            return
        self.pinned = reason
        server.pinned_reason = reason
        self.app.metrics.pinned(self.cluster.name, reason)
        log.info("client %s pinned to server %s: %s", self.peer, server.address, reason)


class _Parked:
    """The done callback of a parked waiter: calls ClientSessionCore._parked_done (no closure per borrow)."""

    __slots__ = ("session", "pool", "route", "started")

    def __init__(self, session: ClientSessionCore, pool: Pool[Any], route: str, started: float) -> None:
        self.session, self.pool, self.route, self.started = session, pool, route, started

    def __call__(self, fut: asyncio.Future[Any]) -> None:
        self.session._parked_done(fut, self.pool, self.route, self.started)
