"""The PostgreSQL client of `dbproxy replay`: the proxy's own login (server_login.py) and the wire protocol, as clients sent it.

asyncpg cannot send a Bind with values as raw bytes in the formats a client chose (it encodes
Python values itself, in binary), so prepared executions are replayed on this small client:
`run` sends a simple Query (as recorded), `execute` a Parse (once per text and declared types on
the connection, under a name of its own: the target plans it once, as the original server did)
then Bind with the recorded formats and values, Execute and Sync (with `prepared_limit`, the mirror's,
texts past that many are parsed as the unnamed statement each time: a long-lived connection does
not keep one statement per distinct text). Errors raise `PgError` with the server's message; `fetch`
returns rows as text and `execute` as the raw values (in the formats asked for), for the mirror.
"""

from __future__ import annotations

import asyncio
import struct
from typing import Any

from ..engines.postgres.server_login import ServerLogin
from ..engines.postgres.wire import messages as m

_HEAD = struct.Struct("!cI")


class PgError(Exception):
    pass


class PgWireClient:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                 prepared_limit: int | None = None) -> None:
        self.reader = reader
        self.writer = writer
        self.prepared: dict[tuple[bytes, tuple[int, ...]], bytes] = {}
        self.prepared_limit = prepared_limit
        self._names = 0   # statement names are never reused (a failed Bind leaves its Parse's statement)
        self.parsed = False   # the last exchange had a ParseComplete

    async def _message(self) -> tuple[int, bytes]:
        kind, length = _HEAD.unpack(await self.reader.readexactly(5))
        return kind[0], await self.reader.readexactly(length - 4)

    async def _until_ready(self, raw: bool = False) -> list[tuple[Any, ...]]:
        rows: list[tuple[Any, ...]] = []
        error: str | None = None
        self.parsed = False
        while True:
            kind, body = await self._message()
            if kind == 0x44:   # DataRow
                rows.append(_raw_row(body) if raw else tuple(m.parse_data_row(body)))
            elif kind == 0x31:   # ParseComplete
                self.parsed = True
            elif kind == 0x45 and error is None:
                fields = m.parse_error_fields(body)
                error = f"{fields.message} (SQLSTATE {fields.code})"
            elif kind == 0x5A:   # ReadyForQuery
                if error is not None:
                    raise PgError(error)
                return rows

    async def run(self, sql: str) -> None:
        await self.fetch(sql)

    async def fetch(self, sql: str) -> list[tuple[Any, ...]]:
        self.writer.write(m.query(sql))
        return await self._until_ready()

    async def execute(self, query: bytes, types: tuple[int, ...], formats: tuple[int, ...],
                      values: tuple[bytes | None, ...], result_formats: tuple[int, ...]) -> list[tuple[Any, ...]]:
        """The rows of one prepared execution, each value as the bytes the server sent (None for NULL)."""
        out = []
        key = (query, types)
        name = self.prepared.get(key)
        new = name is None
        if name is None:
            if self.prepared_limit is not None and len(self.prepared) >= self.prepared_limit:
                name = b""   # the unnamed statement, parsed again each time
            else:
                self._names += 1
                name = self.prepared[key] = b"r%d" % self._names
            out.append(m.message(b"P", name + b"\x00" + query + b"\x00"
                                 + struct.pack(f"!h{len(types)}I", len(types), *types)))
        bind = [b"\x00", name, b"\x00", struct.pack(f"!h{len(formats)}h", len(formats), *formats),
                struct.pack("!h", len(values))]
        for value in values:
            bind.append(struct.pack("!i", -1) if value is None else struct.pack("!i", len(value)) + value)
        bind.append(struct.pack(f"!h{len(result_formats)}h", len(result_formats), *result_formats))
        out += [m.message(b"B", b"".join(bind)), m.message(b"E", b"\x00\x00\x00\x00\x00"), m.sync()]
        self.writer.write(b"".join(out))
        try:
            return await self._until_ready(raw=True)
        except PgError:
            if new and not self.parsed:   # its Parse failed: parse it again next time
                self.prepared.pop(key, None)
            raise

    async def close(self) -> None:
        try:
            self.writer.write(m.terminate())
            self.writer.close()
            await self.writer.wait_closed()
        except (OSError, RuntimeError):
            pass


def _raw_row(body: bytes) -> tuple[bytes | None, ...]:
    """A DataRow's values as sent (binary or text; None for SQL NULL)."""
    (count,) = struct.unpack_from("!h", body, 0)
    pos = 2
    values: list[bytes | None] = []
    for _ in range(count):
        (length,) = struct.unpack_from("!i", body, pos)
        pos += 4
        if length < 0:
            values.append(None)
        else:
            values.append(body[pos:pos + length])
            pos += length
    return tuple(values)


async def connect_pg(host: str, port: int, user: str, password: str | None, database: str,
                     timeout: float, prepared_limit: int | None = None) -> PgWireClient:
    reader, writer = await asyncio.wait_for(asyncio.open_connection(host, port), timeout)
    client = PgWireClient(reader, writer, prepared_limit)
    try:
        login = ServerLogin(user, password, database)
        writer.write(login.startup())
        while not login.done:
            kind, body = await asyncio.wait_for(client._message(), timeout)
            reply = login.receive(kind, body)
            if reply:
                writer.write(reply)
    except BaseException:
        writer.close()
        raise
    return client
