"""A connection from the proxy to a MySQL / MariaDB server: login, then relay for whichever client owns it.

TLS (server_tls): the login's SSL request goes out in plain text, reading pauses, loop.start_tls
negotiates (the server waits for the ClientHello), and the rest of the login runs inside TLS.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import ssl
import time
from typing import Any, NamedTuple

from ...config import Address, TlsSettings
from ...errors import ServerConnectFailed
from ...tls import servers as server_tls
from .server_login import ServerLogin, TlsRefused
from .session_state import SetVariable
from .statements import ServerStatements
from .wire.codes import Capability, Command
from .wire.messages import decode_err, encode_command
from .wire.packets import PacketReader, encode_packets
from .wire.responses import CAPTURE, DROP_ALL, ResponseTracker, Slot

log = logging.getLogger("dbproxy.server")
_ids = itertools.count(1)
_NO_TLS = TlsSettings()

# What a server connection's login fixes for its whole life and a client must match to use it:
# the response format (DEPRECATE_EOF, SESSION_TRACK), multi-results, FOUND_ROWS (affected-rows
# semantics), IGNORE_SPACE (parsing), and the handshake character set. Not MULTI_STATEMENTS:
# server connections log in without it and COM_SET_OPTION switches it per client (session_vars.py),
# so that clients that differ only there (PyMySQL and aiomysql) share one pool.
VARIANT_CAPABILITIES = (Capability.DEPRECATE_EOF | Capability.SESSION_TRACK
                        | Capability.MULTI_RESULTS | Capability.PS_MULTI_RESULTS | Capability.FOUND_ROWS
                        | Capability.IGNORE_SPACE | Capability.LONG_FLAG | Capability.INTERACTIVE
                        | Capability.TRANSACTIONS | Capability.LONG_PASSWORD)
# Never asked of a server: LOCAL_FILES (LOAD DATA LOCAL INFILE is refused, SPEC §12), CONNECT_WITH_DB
# is set per connection, compression is not supported towards servers; SSL as server_tls says.


class Variant(NamedTuple):
    """The login-time settings of a server connection (part of its pool's key)."""

    capabilities: int
    charset: int


class MysqlServerConnection(asyncio.Protocol):
    """One MySQL server connection, owned by at most one client session at a time."""

    def __init__(self, address: Address, login: ServerLogin, variant: Variant, max_statements: int = 1000,
                 tls_context: ssl.SSLContext | None = None) -> None:
        self.id = next(_ids)
        self.address = address
        self.user = login.user
        self.database = login.database or ""
        self.variant = variant
        self.transport: asyncio.Transport | None = None
        self.created_at = time.monotonic()
        self.last_used = self.created_at
        self.generation = 0
        self.owner: Any = None
        self.tracker = ResponseTracker(variant.capabilities)
        # LOAD DATA LOCAL requests reach the client only when allow_local_infile put LOCAL_FILES in the variant.
        self.tracker.allow_local_infile = bool(variant.capabilities & Capability.LOCAL_FILES)
        self.pid = 0                                # the server's thread (connection) id
        self.server_version = ""
        self.pinned_reason: str | None = None
        self.on_release: Any = None
        # Session state applied on this connection beyond its login defaults (see session_vars.py).
        self.schema = self.database
        self.variables: dict[str, SetVariable] = {}
        self.multi_statements = False   # COM_SET_OPTION; logins never ask for CLIENT_MULTI_STATEMENTS
        self.insert_id = 0   # its session's LAST_INSERT_ID(), as far as the OK packets told
        self.statements = ServerStatements(max_statements)   # statement text -> this server's id
        self.password: str | None = None   # set by open_server_connection: KILL QUERY logs in a second time
        self.tls = _NO_TLS                  # server_tls, also set by open_server_connection (for KILL QUERY too)
        self.tls_version: str | None = None   # "TLSv1.3" once encrypted
        self._tls_context = tls_context
        self._tls_task: asyncio.Task[None] | None = None
        self._login: ServerLogin | None = login
        self._reader = PacketReader(max_payload=1 << 24)
        self.ready: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._closed = False
        self.close_reason = ""

    # ---- asyncio.Protocol -----------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # uvloop transports are not asyncio.Transport subclasses

    def data_received(self, data: bytes) -> None:
        if self._login is not None:
            self._login_data(data)
            return
        tracker = self.tracker
        out = tracker.feed(data)
        if tracker.infile_reply:
            self.write(tracker.take_infile_reply())
        owner = self.owner
        if owner is not None:
            owner.server_data(self, out)
        elif self.on_release is not None:
            self.on_release.check(self)

    def connection_lost(self, exc: Exception | None) -> None:
        self._closed = True
        reason = self.close_reason or (f"server closed the connection: {exc}" if exc else "server closed the connection")
        if not self.ready.done():
            self.ready.set_exception(ServerConnectFailed(f"{self.address}: {reason}"))
        if self.owner is not None:
            self.owner.server_lost(self, reason)
        if self.on_release is not None:
            self.on_release.lost(self)

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
        self._reader.feed(data)
        try:
            while not login.done:
                packet = self._reader.next()
                if packet is None:
                    return
                for seq, payload in login.receive(*packet):
                    self.transport.write(encode_packets(payload, seq)[0])
                if login.awaiting_tls:
                    self._start_tls()
                    return
        except Exception as exc:  # noqa: BLE001 - any login failure fails this connection only
            self._login_failed(exc)
            return
        self._logged_in(login)

    def _login_failed(self, exc: BaseException) -> None:
        self._login = None
        if isinstance(exc, TlsRefused):
            exc = ServerConnectFailed(f"{self.address}: {exc.message}")
        if not self.ready.done():
            self.ready.set_exception(exc if isinstance(exc, ServerConnectFailed)
                                     else ServerConnectFailed(f"{self.address}: {exc}"))
        self.close()

    def _start_tls(self) -> None:
        """The SSL request is out: nothing is read in plain text any more; the handshake runs in a task."""
        assert self.transport is not None
        if self._tls_context is None or self._reader.take_rest():
            raise ServerConnectFailed("TLS requested without a context, or the server sent data after its greeting")
        self.transport.pause_reading()
        self._tls_task = asyncio.get_running_loop().create_task(self._upgrade(self.transport, self._tls_context))

    async def _upgrade(self, transport: asyncio.Transport, context: ssl.SSLContext) -> None:
        loop = asyncio.get_running_loop()
        try:
            secure = await loop.start_tls(transport, self, context,
                                          server_hostname=server_tls.hostname(self.address, context))
        except asyncio.CancelledError:
            transport.close()
            raise
        except (ssl.SSLError, OSError, EOFError) as exc:
            transport.close()
            self._login_failed(server_tls.handshake_failed(self.address, exc))
            return
        login = self._login
        if secure is None or login is None or self._closed:
            transport.close()
            self._login_failed(ServerConnectFailed(f"{self.address}: connection closed during the TLS handshake"))
            return
        self.transport = secure
        ssl_object = secure.get_extra_info("ssl_object")
        self.tls_version = ssl_object.version() if ssl_object is not None else "TLS"
        for seq, payload in login.tls_established():
            secure.write(encode_packets(payload, seq)[0])

    def _logged_in(self, login: ServerLogin) -> None:
        self.pid = login.connection_id
        self.server_version = login.server_version
        self.tracker.capabilities = login.capabilities
        self.tracker.status = login.status
        self._login = None
        rest = self._reader.take_rest()
        self.ready.set_result(None)
        if rest:
            self.data_received(rest)

    # ---- use ------------------------------------------------------------------------------------

    @property
    def closed(self) -> bool:
        """Closed, closing, or its response stream is broken (never to be pooled again)."""
        return self._closed or self.transport is None or self.transport.is_closing() or self.tracker.terminated

    @property
    def idle(self) -> bool:
        return self.tracker.idle

    @property
    def in_transaction(self) -> bool:
        return self.tracker.in_transaction

    @property
    def transaction_status(self) -> str:
        return "T" if self.tracker.in_transaction else "I"

    def write(self, data: bytes) -> None:
        assert self.transport is not None
        self.transport.write(data)

    def close(self, reason: str = "") -> None:
        if reason and not self.close_reason:
            self.close_reason = reason
        if self._tls_task is not None and not self._tls_task.done() and self._tls_task is not asyncio.current_task():
            self._tls_task.cancel()
        if self.transport is not None and not self.transport.is_closing():
            try:
                self.transport.write(encode_packets(encode_command(Command.QUIT), 0)[0])
            except Exception:  # noqa: BLE001
                pass
            self.transport.close()
        self._closed = True

    def run_hidden(self, command: int, body: bytes = b"") -> None:
        """Send a command whose whole response is swallowed (state replay, ROLLBACK, reset)."""
        self.tracker.push(Slot(command, DROP_ALL))
        self.write(encode_packets(encode_command(command, body), 0)[0])

    def run_capture(self, sql: str) -> None:
        """A hidden query whose rows land in tracker.captured."""
        self.tracker.captured.clear()
        self.tracker.captured_columns.clear()
        self.tracker.push(Slot(Command.QUERY, CAPTURE))
        self.write(encode_packets(encode_command(Command.QUERY, sql.encode()), 0)[0])

    def last_error_text(self) -> str:
        payload = self.tracker.last_error
        if not payload:
            return ""
        err = decode_err(payload)
        return f"ERROR {err.errno} ({err.sqlstate}): {err.message}"

    def pause_reading(self) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.pause_reading()

    def resume_reading(self) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.resume_reading()

    def __repr__(self) -> str:
        return f"<MysqlServerConnection {self.id} {self.address} thread={self.pid}>"


async def open_server_connection(address: Address, user: str, password: str | None, database: str,
                                 variant: Variant, timeout: float, init_query: str = "",
                                 max_statements: int = 1000, tls: TlsSettings = _NO_TLS) -> MysqlServerConnection:
    """Connect (TLS as server_tls says) and log in; raises ServerConnectFailed (MysqlServerRefused with the
    server's errno)."""
    loop = asyncio.get_running_loop()
    context = server_tls.context(address, tls)
    login = ServerLogin(user, password, database or None, variant.capabilities, variant.charset,
                        {"_client_name": "dbproxy", "program_name": "dbproxy"},
                        tls_mode=tls.mode if context is not None else "disable")
    made: list[MysqlServerConnection] = []

    def factory() -> MysqlServerConnection:
        made.append(MysqlServerConnection(address, login, variant, max_statements, context))
        return made[-1]

    try:
        _, conn = await asyncio.wait_for(loop.create_connection(factory, address.host, address.port), timeout)
        await asyncio.wait_for(asyncio.shield(conn.ready), timeout)
    except TimeoutError as exc:
        for started in made:   # (a login or TLS handshake that never finished)
            started.close()
        raise ServerConnectFailed(f"connecting to {address} timed out after {timeout:g}s") from exc
    except OSError as exc:
        raise ServerConnectFailed(f"could not connect to {address}: {exc.strerror or exc}") from exc
    conn.password = password
    conn.tls = tls
    if init_query:
        await run_query(conn, init_query, timeout)
    return conn


async def run_query(conn: MysqlServerConnection, sql: str, timeout: float, expected: tuple[int, ...] = ()) -> bool:
    """Run a statement on an unowned connection and wait for it (False and a warning if it failed;
    only an info line for the errnos in `expected`)."""
    errors_before = conn.tracker.errors
    conn.run_hidden(Command.QUERY, sql.encode())
    await wait_quiet(conn, sql, timeout)
    if conn.tracker.errors != errors_before:
        errno = decode_err(conn.tracker.last_error).errno if conn.tracker.last_error else 0
        log.log(logging.INFO if errno in expected else logging.WARNING, "%s: %r failed on the server: %s",
                conn.address, sql, conn.last_error_text())
        return False
    return True


async def wait_quiet(conn: MysqlServerConnection, what: str, timeout: float) -> None:
    """Wait until an unowned connection has answered everything sent (ServerConnectFailed if it is lost)."""
    if conn.tracker.quiet:
        return
    done: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    class _Waiter:
        def check(self, server: MysqlServerConnection) -> None:
            if server.tracker.quiet and not done.done():
                done.set_result(None)

        def lost(self, server: MysqlServerConnection) -> None:
            if not done.done():
                done.set_exception(ServerConnectFailed(f"{server.address}: connection lost during {what!r}"))

    conn.on_release = _Waiter()
    try:
        await asyncio.wait_for(done, timeout)
    finally:
        conn.on_release = None
