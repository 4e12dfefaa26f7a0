"""MySQL / MariaDB engine adapter for topology: role, GTID position and lag of one instance (SPEC §5, §12).

Each probe owns one small persistent connection (no database), never a client's; after any
failure it is dropped and the next probe reconnects. Two statements per probe:

    SELECT @@read_only, @@gtid_binlog_pos, @@gtid_slave_pos      (MySQL 8: @@gtid_executed)
    SHOW SLAVE STATUS                                             (MySQL 8.0.22+: SHOW REPLICA STATUS)

- Role: a replica is read-only or runs a replication SQL thread; anything else is a primary (the
  rule ProxySQL's read_only hostgroups use, plus: a writable instance that still applies a
  primary's changes is not a writer).
- Position: GTIDs replayed (replica: gtid_slave_pos) or written (primary: gtid_binlog_pos), as one
  integer: the sum over GTID domains of the last sequence number (MySQL 8: of the transaction
  counts per source uuid). With one domain, the MariaDB default, that is the sequence number itself,
  so "replica position >= the position of a client's commit" means the replica has applied it.
- Received: Gtid_IO_Pos, what the IO thread has received (promotion applies it first, so failover
  prefers the replica that received the most).
- Lag: Seconds_Behind_Master; a replica whose SQL thread is not running is reported as far behind
  (it applies nothing), so it leaves reader routing once that has lasted max_replica_lag.
- No timeline: MariaDB has none. An old primary that comes back writable is fenced because the
  current writer keeps its place (topology.health.elect).
"""

from __future__ import annotations

import asyncio
import logging
import re
import struct

from ...config import Address, TlsSettings
from ...errors import ProxyError
from ...topology.model import ProbeResult
from . import sql
from .server import MysqlServerConnection
from .sql import QueryFailed, Row

MARIADB_SQL = "SELECT @@read_only AS ro, @@gtid_binlog_pos AS written, @@gtid_slave_pos AS replayed"
MYSQL8_SQL = "SELECT @@read_only AS ro, @@gtid_executed AS written, @@gtid_executed AS replayed"
SLAVE_STATUS_SQL = "SHOW SLAVE STATUS"
REPLICA_STATUS_SQL = "SHOW REPLICA STATUS"
_PARSE_ERROR = 1064
_ACCESS_DENIED = 1227   # the probe user may not read replication status (needs SLAVE MONITOR / REPLICATION CLIENT)
STOPPED_LAG = 1e9   # the lag reported for a replica that applies nothing
log = logging.getLogger("dbproxy.topology")
_MYSQL_INTERVAL = re.compile(r"(\d+)(?:-(\d+))?")


class MysqlProbe:
    """Probes one MySQL / MariaDB instance; see the module docstring."""

    def __init__(self, address: Address, user: str, password: str | None, tls: TlsSettings | None = None) -> None:
        self.address = address
        self.user = user
        self.password = password
        self.tls = tls or TlsSettings()   # the cluster's server_tls
        self._conn: MysqlServerConnection | None = None
        self._status_sql = SLAVE_STATUS_SQL
        self._status_allowed = True

    async def probe(self, timeout: float) -> ProbeResult:
        """One probe, bounded by `timeout` seconds in all (connecting included); never raises."""
        try:
            return await asyncio.wait_for(self._probe(timeout), timeout)
        except TimeoutError:
            self.close()
            return ProbeResult.failed(f"probe timed out after {timeout:g}s")
        except QueryFailed as exc:
            return ProbeResult.failed(f"probe query failed: {exc.message}")
        except (OSError, EOFError, ProxyError, ValueError, struct.error) as exc:
            self.close()
            return ProbeResult.failed(exc.message if isinstance(exc, ProxyError) else str(exc) or type(exc).__name__)

    async def _probe(self, timeout: float) -> ProbeResult:
        conn = self._conn
        if conn is None or conn.closed:
            conn = self._conn = await sql.connect(self.address, self.user, self.password, timeout, self.tls)
        positions = await self._first_row(conn, timeout)
        if not self._status_allowed:
            return parse_probe(positions, None)
        try:
            status = await sql.query(conn, self._status_sql, timeout)
        except QueryFailed as exc:
            if exc.errno == _ACCESS_DENIED:
                log.warning("probe of %s: user %s may not read the replication status (%s): roles come from "
                            "@@read_only alone and replica lag is unknown; grant SLAVE MONITOR (MariaDB) or "
                            "REPLICATION CLIENT (MySQL)", self.address, self.user, exc.message)
                self._status_allowed = False
                return parse_probe(positions, None)
            if exc.errno != _PARSE_ERROR or self._status_sql == REPLICA_STATUS_SQL:
                raise
            self._status_sql = REPLICA_STATUS_SQL
            status = await sql.query(conn, self._status_sql, timeout)
        return parse_probe(positions, status)

    async def _first_row(self, conn: MysqlServerConnection, timeout: float) -> Row:
        rows = await sql.query(conn, MYSQL8_SQL if sql.is_mysql(conn) else MARIADB_SQL, timeout)
        if len(rows) != 1:
            raise ValueError(f"probe query returned {len(rows)} rows")
        return rows[0]

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None


def parse_probe(positions: Row, status: list[Row] | None) -> ProbeResult:
    """The ProbeResult of the two probe statements' rows (see the module docstring); status None:
    the replication status could not be read (the role from read_only alone, lag unknown)."""
    read_only = (positions.get("ro") or "0") not in ("0", "OFF")
    if status is None:
        column = "replayed" if read_only else "written"
        return ProbeResult(ok=True, in_recovery=read_only, position=gtid_position(positions.get(column)))
    channel = status[0] if status else None
    sql_running = channel is not None and _running(channel, "Slave_SQL_Running", "Replica_SQL_Running")
    replica = read_only or sql_running
    position = gtid_position(positions.get("replayed") if replica else positions.get("written"))
    lag: float | None = None
    received = None
    if replica:
        io_position = None if channel is None else gtid_position(channel.get("Gtid_IO_Pos") or None)
        received = max(position or 0, io_position or 0) if position is not None or io_position else None
        lag = STOPPED_LAG
        behind = None if channel is None else _column(channel, "Seconds_Behind_Master", "Seconds_Behind_Source")
        if sql_running and behind is not None:
            lag = float(behind)
    return ProbeResult(ok=True, in_recovery=replica, position=position, receive_position=received, lag_seconds=lag)


def _running(row: Row, *names: str) -> bool:
    return (_column(row, *names) or "").lower() == "yes"


def _column(row: Row, *names: str) -> str | None:
    for name in names:
        if name in row:
            return row[name]
    return None


def gtid_position(text: str | None) -> int | None:
    """A GTID set as one integer (see the module docstring): MariaDB `0-1-42,1-2-7` → 49; MySQL
    `uuid:1-42:50-51` → 44 (transactions); empty → 0; None → None."""
    if text is None:
        return None
    total = 0
    for part in text.replace("\n", "").split(","):
        part = part.strip()
        if not part:
            continue
        if ":" in part:   # MySQL: uuid:interval[:interval...]
            for interval in part.split(":")[1:]:
                match = _MYSQL_INTERVAL.fullmatch(interval)
                if match is None:
                    raise ValueError(f"bad GTID interval {interval!r}")
                start, end = int(match.group(1)), int(match.group(2) or match.group(1))
                total += end - start + 1
        else:              # MariaDB: domain-server-sequence
            pieces = part.split("-")
            if len(pieces) != 3:
                raise ValueError(f"bad GTID {part!r}")
            total += int(pieces[2])
    return total
