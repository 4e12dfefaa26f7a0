"""One admin console connection: PostgreSQL startup and password login, then simple queries as commands.

Only database "dbproxy" and users with `admin = true` get in. The login uses the proxy's own users
(SCRAM-SHA-256, or md5 when every PostgreSQL cluster uses md5, as PgBouncer's auth_type applies
to its console too); `trust` never applies to the console. The extended query protocol is refused.
"""

from __future__ import annotations

import asyncio
import logging
import random
from typing import TYPE_CHECKING

from ..engines.postgres.client_auth import ClientAuthentication
from ..engines.postgres.wire import messages as m
from ..engines.postgres.wire.framing import (
    CancelRequest,
    GSSENCRequest,
    MessageReader,
    SSLRequest,
    StartupMessage,
    parse_startup_packet,
)
from ..errors import AuthenticationFailed, ProtocolViolation, ProxyError
from ..streams import start_screened_server
from . import commands
from .resultset import EMPTY_QUERY_RESPONSE, command_complete, encode_table
from .views import version_string

if TYPE_CHECKING:
    from ..core.app_view import AppView as ProxyApp
    from ..core.users import Login

log = logging.getLogger("dbproxy.admin")

ADMIN_DATABASE = "dbproxy"
LOGIN_TIMEOUT = 10.0
MAX_QUERY = 1 << 20
_EXTENDED = frozenset(b"PBDECH")   # Parse, Bind, Describe, Execute, Close, Flush


class AdminConnectionClosed(Exception):
    """The admin client went away or was refused; the reason is already logged."""


class AdminConnection:
    """Serves one admin client over asyncio streams; see the module docstring."""

    def __init__(self, app: ProxyApp, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.app = app
        self.reader = reader
        self.writer = writer
        peer = writer.get_extra_info("peername")
        self.peer = f"{peer[0]}:{peer[1]}" if peer else "?"
        self.user = ""
        self.messages = MessageReader(max_length=MAX_QUERY)

    async def serve(self) -> None:
        reason = "admin client disconnected"
        logged_in = False
        try:
            await asyncio.wait_for(self._login(), LOGIN_TIMEOUT)
            logged_in = True
            log.info("admin client %s connected: user=%s", self.peer, self.user)
            self._audit_login("success")
            await self._commands()
        except TimeoutError:
            reason = "login timed out"
        except ProxyError as exc:
            reason = exc.message
            self._send(m.error_response(exc.sqlstate, exc.message, "FATAL"))
        except AdminConnectionClosed as exc:
            reason = str(exc) or reason
        except (ConnectionError, asyncio.IncompleteReadError):
            reason = "admin client connection lost"
        finally:
            log.info("admin client %s disconnected: %s", self.peer, reason)
            if not logged_in and self.user:
                self._audit_login("failure", reason)
            await self._close()

    def _audit_login(self, outcome: str, reason: str = "") -> None:
        if self.app.audit is not None:
            self.app.audit.admin_login(self.peer, self.user, outcome, reason)

    # ---- I/O ----------------------------------------------------------------------------------

    def _send(self, data: bytes) -> None:
        if not self.writer.is_closing():
            self.writer.write(data)

    async def _flush(self) -> None:
        await self.writer.drain()

    async def _close(self) -> None:
        if not self.writer.is_closing():
            self.writer.close()
        try:
            await self.writer.wait_closed()
        except (ConnectionError, OSError):
            pass

    async def _read_message(self) -> tuple[int, bytes]:
        while True:
            msg = self.messages.next()
            if msg is not None:
                return msg
            data = await self.reader.read(65536)
            if not data:
                raise AdminConnectionClosed("admin client disconnected")
            self.messages.feed(data)

    # ---- login --------------------------------------------------------------------------------

    async def _login(self) -> None:
        startup = await self._startup()
        params = startup.params
        self.user = params.get("user", "")
        if not self.user:
            raise ProtocolViolation("no PostgreSQL user name specified in startup packet")
        database = params.get("database") or self.user
        if database != ADMIN_DATABASE:
            raise ProxyError(f'database "{database}" does not exist: the admin console serves '
                             f'only database "{ADMIN_DATABASE}"', "3D000")
        login = self.app.users.get(self.user)
        if login is None:
            raise AuthenticationFailed(f'password authentication failed for user "{self.user}"')
        await self._authenticate(login)
        if not login.user.admin:
            raise ProxyError(f'user "{self.user}" is not an admin (admin = true in its [[users]] entry)',
                             "28000")
        self._send(m.auth_ok() + self._welcome())
        await self._flush()

    async def _startup(self) -> StartupMessage:
        buf = b""
        while True:
            event, used = parse_startup_packet(buf)
            if event is None:
                data = await self.reader.read(16384)
                if not data:
                    raise AdminConnectionClosed("admin client disconnected during startup")
                buf += data
                continue
            buf = buf[used:]
            if isinstance(event, (SSLRequest, GSSENCRequest)):
                self._send(b"N")
                await self._flush()
            elif isinstance(event, CancelRequest):
                raise AdminConnectionClosed("cancel request (the admin console has nothing to cancel)")
            else:
                self.messages.feed(buf)
                return event

    def _auth_method(self) -> str:
        methods = {c.client_auth for c in self.app.config.clusters if c.engine == "postgres"}
        return "md5" if methods == {"md5"} else "scram-sha-256"

    async def _authenticate(self, login: Login) -> None:
        user = login.user
        method = "md5" if self._auth_method() == "md5" and user.password is not None else "scram-sha-256"
        auth = ClientAuthentication(method, user.name, user.password, login.verifier)
        reply = auth.start()
        while not auth.done:
            self._send(reply)
            await self._flush()
            reply = auth.receive(await self._password_message())
        if reply:
            self._send(reply)

    async def _password_message(self) -> bytes:
        kind, body = await self._read_message()
        if kind != 0x70:  # 'p'
            raise ProtocolViolation(f"expected password response, got message type {chr(kind)!r}")
        return body

    def _welcome(self) -> bytes:
        parameters = {
            "server_version": f"{_short_version()} (dbproxy admin)",
            "server_encoding": "UTF8",
            "client_encoding": "UTF8",
            "DateStyle": "ISO, MDY",
            "integer_datetimes": "on",
            "standard_conforming_strings": "on",
            "application_name": "",
        }
        out = [m.parameter_status(k, v) for k, v in parameters.items()]
        out.append(m.backend_key_data(random.getrandbits(31), random.getrandbits(32)))
        out.append(m.ready_for_query(b"I"))
        return b"".join(out)

    # ---- commands -----------------------------------------------------------------------------

    async def _commands(self) -> None:
        while True:
            kind, body = await self._read_message()
            if kind == 0x51:  # Query
                await self._query(body.rstrip(b"\x00").decode("utf-8", "replace"))
            elif kind == 0x58:  # Terminate
                raise AdminConnectionClosed("admin client sent Terminate")
            elif kind == 0x53:  # Sync: end of a refused extended-protocol batch
                self._send(m.ready_for_query(b"I"))
            elif kind in _EXTENDED:
                await self._refuse_extended()
            else:
                raise ProtocolViolation(f"invalid frontend message type {kind}")
            await self._flush()

    async def _refuse_extended(self) -> None:
        self._send(m.error_response("0A000", "the admin console supports the simple query protocol only"))
        while True:  # discard until Sync, as a server does after an error
            kind, _ = await self._read_message()
            if kind == 0x53:
                self._send(m.ready_for_query(b"I"))
                return
            if kind == 0x58:
                raise AdminConnectionClosed("admin client sent Terminate")

    async def _query(self, sql: str) -> None:
        statements = commands.split_statements(sql)
        if not statements:
            self._send(EMPTY_QUERY_RESPONSE)
        for statement in statements:
            audit = self.app.audit
            try:
                result = await commands.execute(self.app, statement)
            except commands.AdminError as exc:
                if audit is not None:
                    audit.admin_command(self.peer, self.user, statement, "error", exc.message)
                self._send(m.error_response(exc.sqlstate, exc.message, hint=exc.hint))
                break
            except Exception as exc:  # noqa: BLE001 - a failing command must not end the console
                log.exception("admin command %r failed", statement)
                if audit is not None:
                    audit.admin_command(self.peer, self.user, statement, "error", f"internal error: {exc}")
                self._send(m.error_response("XX000", f"internal error: {exc}"))
                break
            if audit is not None:
                audit.admin_command(self.peer, self.user, statement, "ok")
            if isinstance(result, commands.Done):
                if result.notice:
                    self._send(m.notice_response(result.notice))
                self._send(command_complete(result.tag))
            else:
                self._send(encode_table(result, tag=statement.split(None, 1)[0].upper()))
        self._send(m.ready_for_query(b"I"))


def _short_version() -> str:
    return version_string().split()[1]


async def start_admin_console(app: ProxyApp, host: str, port: int) -> asyncio.Server:
    """Listen for admin clients on host:port."""

    async def accept(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await AdminConnection(app, reader, writer).serve()

    return await start_screened_server(accept, host, port, lambda peer: app.screen_service("admin", peer))
