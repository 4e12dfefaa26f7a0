"""PostgreSQL engine adapter for topology: probe role, WAL position, lag and timeline of one instance.

Each probe owns one small persistent connection (application_name "dbproxy-probe"), never a
client's; after any failure it is dropped and the next probe reconnects. One simple query per probe.
"""

from __future__ import annotations

import asyncio
import struct

from ...config import Address, TlsSettings
from ...errors import ProxyError
from ...topology.model import ProbeResult
from .sql import PgSqlConnection, QueryFailed, Row, parse_data_row, parse_lsn

__all__ = ["PROBE_SQL", "PgProbe", "ProbeFailed", "parse_data_row", "parse_lsn", "parse_probe_row"]

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


_NO_TLS = TlsSettings()


class ProbeFailed(Exception):
    """The probe query failed on a connection that is still usable."""


class PgProbe:
    """Probes one PostgreSQL instance; see the module docstring."""

    def __init__(self, address: Address, user: str, password: str | None, database: str,
                 tls: TlsSettings = _NO_TLS) -> None:
        self.address = address
        self.user = user
        self.password = password
        self.database = database
        self._conn = PgSqlConnection(address, user, password, database, "dbproxy-probe", tls)

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
        conn = self._conn
        reused = conn.connected
        if not reused:
            await conn.connect()
        try:
            row = await self._query_one_row(PROBE_SQL)
        except (OSError, EOFError):
            if not reused:
                raise
            conn.close()  # the server restarted since the last probe: one fresh try
            await conn.connect()
            row = await self._query_one_row(PROBE_SQL)
        return parse_probe_row(row)

    async def _query_one_row(self, sql: str) -> Row:
        try:
            rows = await self._conn.query(sql)
        except QueryFailed as exc:
            raise ProbeFailed(f"probe query failed: ERROR {exc.sqlstate}: {exc.message}") from None
        if len(rows) != 1:
            raise ProbeFailed(f"probe query returned {len(rows)} rows")
        return rows[0]

    def close(self) -> None:
        self._conn.close()


def _describe(exc: BaseException) -> str:
    if isinstance(exc, ProxyError):
        return exc.message
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    return str(exc) or type(exc).__name__


def parse_probe_row(row: Row) -> ProbeResult:
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
