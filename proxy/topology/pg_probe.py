"""PostgreSQL engine adapter for topology: probe role, WAL position, lag and timeline of one instance.

Each probe owns one small persistent connection (application_name "dbproxy-probe"), never a
client's; after any failure it is dropped and the next probe reconnects. One simple query per probe.
"""

from __future__ import annotations

import asyncio
import struct

from ..config import Address
from ..errors import ProxyError
from ..protocol.postgres import messages as m
from ..protocol.postgres.framing import MessageReader
from ..protocol.postgres.server_login import ServerLogin
from .model import ProbeResult

# Role, position (written on a primary, replayed on a replica), received position, lag in seconds
# (0 when all received WAL is replayed), timeline (primary: from the current WAL file name, which
# changes at promotion at once; replica: the last restartpoint's).
PROBE_SQL = """\
WITH s AS (SELECT pg_is_in_recovery() AS r)
SELECT r,
  CASE WHEN r THEN pg_last_wal_replay_lsn() ELSE pg_current_wal_lsn() END,
  pg_last_wal_receive_lsn(),
  CASE WHEN NOT r THEN NULL
       WHEN pg_last_wal_receive_lsn() = pg_last_wal_replay_lsn() THEN 0
       ELSE EXTRACT(EPOCH FROM now() - pg_last_xact_replay_timestamp()) END,
  CASE WHEN r THEN (SELECT timeline_id FROM pg_control_checkpoint())
       ELSE ('x' || left(pg_walfile_name(pg_current_wal_lsn()), 8))::bit(32)::int END
FROM s"""

_MAX_MESSAGE = 1 << 20
_I16 = struct.Struct("!h")
_I32 = struct.Struct("!i")


class ProbeFailed(Exception):
    """The probe query failed on a connection that is still usable."""


class PgProbe:
    """Probes one PostgreSQL instance; see the module docstring."""

    def __init__(self, address: Address, user: str, password: str | None, database: str) -> None:
        self.address = address
        self.user = user
        self.password = password
        self.database = database
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None
        self._messages = MessageReader(max_length=_MAX_MESSAGE)

    async def probe(self, timeout: float) -> ProbeResult:
        """One probe, bounded by `timeout` seconds in all (connecting included); never raises."""
        try:
            return await asyncio.wait_for(self._probe(), timeout)
        except TimeoutError:
            self.close()
            return ProbeResult.failed(f"probe timed out after {timeout:g}s")
        except ProbeFailed as exc:
            return ProbeResult.failed(str(exc))
        except (OSError, EOFError, ProxyError, ValueError, struct.error) as exc:
            self.close()
            return ProbeResult.failed(_describe(exc))

    async def _probe(self) -> ProbeResult:
        reused = self._writer is not None
        if not reused:
            await self._connect()
        try:
            row = await self._query_one_row(PROBE_SQL)
        except (OSError, EOFError):
            if not reused:
                raise
            self.close()  # the server restarted since the last probe: one fresh try
            await self._connect()
            row = await self._query_one_row(PROBE_SQL)
        return parse_probe_row(row)

    async def _connect(self) -> None:
        self._messages = MessageReader(max_length=_MAX_MESSAGE)
        self._reader, self._writer = await asyncio.open_connection(self.address.host, self.address.port)
        login = ServerLogin(self.user, self.password, self.database, {"application_name": "dbproxy-probe"})
        self._writer.write(login.startup())
        while not login.done:
            reply = login.receive(*await self._next())
            if reply:
                self._writer.write(reply)

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

    async def _query_one_row(self, sql: str) -> list[str | None]:
        assert self._writer is not None
        self._writer.write(m.query(sql))
        rows: list[list[str | None]] = []
        error: m.ErrorFields | None = None
        while True:
            kind, body = await self._next()
            if kind == 0x44:  # 'D' DataRow
                rows.append(parse_data_row(body))
            elif kind == 0x45:  # 'E' ErrorResponse
                error = m.parse_error_fields(body)
                if error.severity in ("FATAL", "PANIC"):
                    raise EOFError(f"server terminated the probe connection: {error}")
            elif kind == 0x5A:  # 'Z' ReadyForQuery
                break
        if error is not None:
            raise ProbeFailed(f"probe query failed: {error}")
        if len(rows) != 1:
            raise ProbeFailed(f"probe query returned {len(rows)} rows")
        return rows[0]

    def close(self) -> None:
        writer, self._writer, self._reader = self._writer, None, None
        if writer is not None and not writer.is_closing():
            try:
                writer.write(m.terminate())
            except (OSError, RuntimeError):
                pass
            writer.close()


def _describe(exc: BaseException) -> str:
    if isinstance(exc, ProxyError):
        return exc.message
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    return str(exc) or type(exc).__name__


def parse_data_row(body: bytes) -> list[str | None]:
    """The text values of a DataRow message body (None for SQL NULL)."""
    (count,) = _I16.unpack_from(body, 0)
    pos = 2
    values: list[str | None] = []
    for _ in range(count):
        (length,) = _I32.unpack_from(body, pos)
        pos += 4
        if length < 0:
            values.append(None)
            continue
        values.append(body[pos:pos + length].decode("utf-8"))
        pos += length
    return values


def parse_lsn(text: str | None) -> int | None:
    """A PostgreSQL LSN "16/B374D848" as an integer byte position."""
    if text is None:
        return None
    high, _, low = text.partition("/")
    return (int(high, 16) << 32) | int(low, 16)


def parse_probe_row(row: list[str | None]) -> ProbeResult:
    """Turn the PROBE_SQL row into a ProbeResult."""
    if len(row) != 5:
        raise ProbeFailed(f"probe query returned {len(row)} columns")
    recovery, position, received, lag, timeline = row
    return ProbeResult(
        ok=True,
        in_recovery=recovery == "t",
        position=parse_lsn(position),
        receive_position=parse_lsn(received),
        lag_seconds=None if lag is None else max(0.0, float(lag)),
        timeline=None if timeline is None else int(timeline),
    )
