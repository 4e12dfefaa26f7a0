"""A minimal PostgreSQL client for the topology layer's own connections: log in, run simple queries.

Used by the probes (one persistent connection per instance) and by the failover adapter (a fresh
connection per action). Never a client's connection; no TLS, no extended protocol, text rows only.
"""

from __future__ import annotations

import asyncio

from ...config import Address, TlsSettings
from .server_login import ServerLogin
from .server_tls import open_stream
from .wire import messages as m
from .wire.framing import MessageReader
from .wire.messages import format_lsn, parse_data_row, parse_lsn

_MAX_MESSAGE = 1 << 20

Row = list[str | None]


class QueryFailed(Exception):
    """The server answered a query with an ERROR; the connection is still usable."""

    def __init__(self, fields: m.ErrorFields) -> None:
        super().__init__(str(fields))
        self.sqlstate = fields.code
        self.message = fields.message


_NO_TLS = TlsSettings()


class PgSqlConnection:
    """One connection to one instance, logged in as `user`; see the module docstring.

    `query` raises QueryFailed for an ERROR, EOFError when the server ends the connection (or
    sends FATAL), OSError for socket problems and ProxyError for login failures.
    """

    def __init__(self, address: Address, user: str, password: str | None, database: str,
                 application_name: str, tls: TlsSettings = _NO_TLS) -> None:
        self.address = address
        self.tls = tls
        self.user = user
        self.password = password
        self.database = database
        self.application_name = application_name
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None
        self._messages = MessageReader(max_length=_MAX_MESSAGE)

    @property
    def connected(self) -> bool:
        return self._writer is not None

    async def connect(self) -> None:
        self._messages = MessageReader(max_length=_MAX_MESSAGE)
        self._reader, self._writer = await open_stream(self.address, self.tls)
        login = ServerLogin(self.user, self.password, self.database, {"application_name": self.application_name})
        self._writer.write(login.startup())
        while not login.done:
            reply = login.receive(*await self._next())
            if reply:
                self._writer.write(reply)

    async def query(self, sql: str) -> list[Row]:
        """The rows of a simple query (several statements: the rows of all of them)."""
        assert self._writer is not None, "not connected"
        if self._writer.is_closing():   # the peer reset it (uvloop refuses writes on a closed transport)
            raise EOFError("server closed the connection")
        self._writer.write(m.query(sql))
        rows: list[Row] = []
        error: m.ErrorFields | None = None
        while True:
            kind, body = await self._next()
            if kind == 0x44:  # 'D' DataRow
                rows.append(parse_data_row(body))
            elif kind == 0x45:  # 'E' ErrorResponse
                error = m.parse_error_fields(body)
                if error.severity in ("FATAL", "PANIC"):
                    self.close()
                    raise EOFError(f"server terminated the connection: {error}")
            elif kind == 0x5A:  # 'Z' ReadyForQuery
                break
        if error is not None:
            raise QueryFailed(error)
        return rows

    async def query_value(self, sql: str) -> str | None:
        """The first column of the only row of a query."""
        rows = await self.query(sql)
        if len(rows) != 1 or not rows[0]:
            raise QueryFailed(m.ErrorFields("ERROR", "XX000", f"expected one row from {sql!r}, got {len(rows)}"))
        return rows[0][0]

    async def _next(self) -> tuple[int, bytes]:
        assert self._reader is not None
        while True:
            msg = self._messages.next()
            if msg is not None:
                return msg
            data = await self._reader.read(65536)
            if not data:
                raise EOFError("server closed the connection")
            self._messages.feed(data)

    def close(self) -> None:
        writer, self._writer, self._reader = self._writer, None, None
        if writer is not None and not writer.is_closing():
            try:
                writer.write(m.terminate())
            except (OSError, RuntimeError):
                pass
            writer.close()


__all__ = ["PgSqlConnection", "QueryFailed", "Row", "format_lsn", "parse_data_row", "parse_lsn"]
