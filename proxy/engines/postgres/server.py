"""A connection from the proxy to a PostgreSQL server: login, then relay for whichever client owns it (an engines.ServerLink)."""

from __future__ import annotations

import asyncio
import itertools
import logging
import struct
import time
from collections import OrderedDict
from typing import Protocol

from ...config import Address, TlsSettings
from ...errors import ServerConnectFailed
from .server_login import ServerLogin
from .server_tls import open_transport
from .wire import messages as m
from .wire.framing import MessageReader
from .wire.responses import CAPTURE, DROP_ALL, QUERY, ResponseTracker, Slot

log = logging.getLogger("dbproxy.server")
_ids = itertools.count(1)
_NO_TLS = TlsSettings()


class ServerOwner(Protocol):
    """Whoever currently uses a server connection (a client session)."""

    def server_data(self, server: ServerConnection, data: bytes) -> None: ...

    def server_lost(self, server: ServerConnection, reason: str) -> None: ...

    def server_pause_writing(self) -> None: ...

    def server_resume_writing(self) -> None: ...


_PID = struct.Struct("!I")
# Per instance, the trackers of the proxy's backends by pid (4 bytes): NOTIFY pids are rewritten from it.
_BACKENDS: dict[Address, dict[bytes, ResponseTracker]] = {}


class ServerConnection(asyncio.Protocol):
    """One PostgreSQL backend connection, owned by at most one client session at a time."""

    def __init__(self, address: Address, login: ServerLogin) -> None:
        self.id = next(_ids)
        self.address = address
        self.user = login.user
        self.database = login.database
        self.transport: asyncio.Transport | None = None
        self.created_at = time.monotonic()
        self.last_used = self.created_at
        self.generation = 0
        self.owner: ServerOwner | None = None
        self.tracker = ResponseTracker()
        self.parameters: dict[str, str] = {}       # as reported at login (server defaults)
        self.gucs: dict[str, str] = {}             # session settings applied on top of defaults
        self.prepared: OrderedDict[bytes, None] = OrderedDict()   # server statement names
        # Transaction pooling: the client Parse message (that very object) whose unnamed statement this
        # backend holds, None after a simple Query (which drops it) or when not known.
        self.unnamed: bytes | None = None
        self.pid = 0
        self.key = 0
        self.pinned_reason: str | None = None
        self.on_release: ServerCleanup | None = None
        self._login: ServerLogin | None = login
        self._login_reader = MessageReader(max_length=1 << 20)
        self.ready: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._closed = False
        self.close_reason = ""

    # ---- asyncio.Protocol -----------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # uvloop transports are not asyncio.Transport subclasses
        # uvloop already sets TCP_NODELAY on every TCP transport.
        assert self._login is not None
        transport.write(self._login.startup())  # type: ignore[attr-defined]

    def data_received(self, data: bytes) -> None:
        if self._login is not None:
            self._login_data(data)
            return
        out = self.tracker.feed(data)
        owner = self.owner
        if owner is not None:
            owner.server_data(self, out)
        elif self.on_release is not None:
            self.on_release.check(self)

    def connection_lost(self, exc: Exception | None) -> None:
        self._closed = True
        self._forget_pid()
        reason = self.close_reason or (f"server closed the connection: {exc}" if exc else "server closed the connection")
        if not self.ready.done():
            self.ready.set_exception(ServerConnectFailed(f"{self.address}: {reason}"))
        if self.owner is not None:
            self.owner.server_lost(self, reason)
        if self.on_release is not None:
            self.on_release.lost(self)

    def _forget_pid(self) -> None:
        tracker = self.tracker
        peers = tracker.peers
        if peers is not None and peers.get(tracker.own_pid) is tracker:
            del peers[tracker.own_pid]
            if not peers:
                _BACKENDS.pop(self.address, None)

    def pause_writing(self) -> None:
        if self.owner is not None:
            self.owner.server_pause_writing()

    def resume_writing(self) -> None:
        if self.owner is not None:
            self.owner.server_resume_writing()

    # ---- login ----------------------------------------------------------------------------------

    def _login_data(self, data: bytes) -> None:
        login = self._login
        assert login is not None and self.transport is not None
        self._login_reader.feed(data)
        try:
            while not login.done:
                msg = self._login_reader.next()
                if msg is None:
                    return
                reply = login.receive(*msg)
                if reply:
                    self.transport.write(reply)
        except Exception as exc:  # noqa: BLE001 - any login failure fails this connection only
            self._login = None
            if not self.ready.done():
                self.ready.set_exception(exc if isinstance(exc, ServerConnectFailed)
                                         else ServerConnectFailed(f"{self.address}: {exc}"))
            self.close()
            return
        self.parameters = dict(login.parameters)
        self.pid, self.key = login.backend_pid, login.backend_key
        tracker = self.tracker
        tracker.own_pid = _PID.pack(self.pid & 0xFFFFFFFF)
        peers = tracker.peers = _BACKENDS.setdefault(self.address, {})
        peers[tracker.own_pid] = tracker
        self._login = None
        rest = self._login_reader.take_rest()
        self.ready.set_result(None)
        if rest:
            self.data_received(rest)

    # ---- use ------------------------------------------------------------------------------------

    @property
    def closed(self) -> bool:
        """Closed, closing, or told by the server that it is ending (never to be pooled again)."""
        return self._closed or self.transport is None or self.transport.is_closing() or self.tracker.terminated

    @property
    def idle(self) -> bool:
        """No response outstanding and outside a transaction (ReadyForQuery 'I')."""
        return self.tracker.idle

    @property
    def in_transaction(self) -> bool:
        return self.tracker.status != b"I"

    @property
    def transaction_status(self) -> str:
        return self.tracker.status.decode()

    def write(self, data: bytes) -> None:
        assert self.transport is not None
        self.transport.write(data)

    def close(self, reason: str = "") -> None:
        if reason and not self.close_reason:
            self.close_reason = reason
        if self.transport is not None and not self.transport.is_closing():
            try:
                self.transport.write(m.terminate())
            except Exception:  # noqa: BLE001
                pass
            self.transport.close()
        self._closed = True

    def run_hidden(self, sql: str) -> None:
        """Send a query whose whole response is swallowed (SET replay, ROLLBACK, DISCARD ALL)."""
        self.unnamed = None
        self.tracker.push(Slot(QUERY, DROP_ALL))
        self.write(m.query(sql))

    def run_capture(self, sql: str) -> None:
        """Send a query whose response is swallowed but whose rows land in tracker.captured."""
        self.unnamed = None
        self.tracker.captured.clear()
        self.tracker.push(Slot(QUERY, CAPTURE))
        self.write(m.query(sql))

    def pause_reading(self) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.pause_reading()

    def resume_reading(self) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.resume_reading()

    def __repr__(self) -> str:
        return f"<ServerConnection {self.id} {self.address} pid={self.pid}>"


class ServerCleanup(Protocol):
    """Finishes a connection no client owns any more (rollback/reset), then releases it."""

    def check(self, server: ServerConnection) -> None: ...

    def lost(self, server: ServerConnection) -> None: ...


async def open_server_connection(address: Address, user: str, password: str | None, database: str,
                                 timeout: float, init_query: str = "",
                                 tls: TlsSettings = _NO_TLS) -> ServerConnection:
    """Connect (TLS as server_tls says) and log in; raises ServerConnectFailed (with the server's SQLSTATE
    when it refused)."""
    login = ServerLogin(user, password, database)
    try:
        conn = await asyncio.wait_for(open_transport(address, lambda: ServerConnection(address, login), tls), timeout)
        await asyncio.wait_for(asyncio.shield(conn.ready), timeout)
    except TimeoutError as exc:
        raise ServerConnectFailed(f"connecting to {address} timed out after {timeout:g}s") from exc
    except OSError as exc:
        raise ServerConnectFailed(f"could not connect to {address}: {exc.strerror or exc}") from exc
    if init_query:
        await run_query(conn, init_query, timeout)
    return conn


async def run_query(conn: ServerConnection, sql: str, timeout: float) -> None:
    """Run a statement on an unowned connection and wait for it to finish (errors are logged)."""
    done: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    class _Waiter:
        def check(self, server: ServerConnection) -> None:
            if server.tracker.quiet and not done.done():
                done.set_result(None)

        def lost(self, server: ServerConnection) -> None:
            if not done.done():
                done.set_exception(ServerConnectFailed(f"{server.address}: connection lost during {sql!r}"))

    conn.on_release = _Waiter()
    errors_before = conn.tracker.errors
    conn.run_hidden(sql)
    try:
        await asyncio.wait_for(done, timeout)
    finally:
        conn.on_release = None
    if conn.tracker.errors != errors_before:
        log.warning("%s: %r failed on the server", conn.address, sql)
