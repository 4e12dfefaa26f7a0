"""read_your_writes for PostgreSQL: the primary's WAL position after a client's write, read off the client's path.

A client's write transaction has committed when its ReadyForQuery arrives; any WAL position the
primary reports after that moment is at or past the commit. `PositionReader` (one per cluster)
reads `pg_current_wal_insert_lsn()` on a connection of its own to the current writer, logged in
as the probes are (health user, server_tls). Requests made while a read is in flight wait for the
next read (the one in flight may have been sent before their commit), so one query serves every
write that committed before it was sent, and the client's server connection goes back to its pool
at once — the client never waits for the position. Until it is known, the writer's reads (and its
proxy user's) go to the primary (core.session `_route`).
"""

from __future__ import annotations

import asyncio
import logging
import struct
import time
from collections.abc import Callable
from typing import Any

from ...core.session import RYW_FALLBACK_SECONDS
from ...errors import ProxyError
from .sql import PgSqlConnection, QueryFailed, parse_lsn

log = logging.getLogger("dbproxy.topology")

Done = Callable[[int | None], None]
APPLICATION_NAME = "dbproxy-position"
_QUERY = "SELECT pg_current_wal_insert_lsn()::text"


class PositionReader:
    """See the module docstring. `cluster`: the core Cluster (its config's health settings, its topology)."""

    def __init__(self, cluster: Any) -> None:
        self._cluster = cluster
        self._conn: PgSqlConnection | None = None
        self._waiting: list[Done] = []
        self._task: asyncio.Task[None] | None = None
        self.reads = 0   # queries sent (for tests and the curious: far fewer than writes under load)

    def request(self, done: Done) -> None:
        """done(position) once a read sent after now returns (done(None) if it failed)."""
        self._waiting.append(done)
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run())

    async def _run(self) -> None:
        try:
            while self._waiting:
                batch, self._waiting = self._waiting, []
                position = await self._read()
                for done in batch:
                    done(position)
        finally:
            self._task = None

    async def _read(self) -> int | None:
        cluster = self._cluster
        topology = cluster.topology
        address = topology.writer if topology is not None else cluster.config.instances[0]
        if address is None:
            return None
        health = cluster.config.health
        conn = self._conn
        try:
            if conn is None or conn.address != address or not conn.connected:
                if conn is not None:
                    conn.close()
                conn = self._conn = PgSqlConnection(address, health.user or "postgres", health.password,
                                                    health.database, APPLICATION_NAME, health.tls)
                await asyncio.wait_for(conn.connect(), health.timeout)
            value = await asyncio.wait_for(conn.query_value(_QUERY), health.timeout)
            self.reads += 1
            return parse_lsn(value or "")
        except (OSError, EOFError, TimeoutError, ProxyError, QueryFailed, ValueError, struct.error) as exc:
            log.info("cluster %s: read_your_writes could not read the write position on %s: %s (the writers' "
                     "reads go to the primary for a while)", cluster.name, address, exc)
            if self._conn is not None:
                self._conn.close()
                self._conn = None
            return None

    def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
        if self._conn is not None:
            self._conn.close()
            self._conn = None


def request_position(session: Any) -> None:
    """read_your_writes: a transaction on the primary just ended; its WAL position is read off the
    client's path (PositionReader) while this server connection goes back at once. Until
    the position is known, this client's and its proxy user's reads go to the primary."""
    assert session.login is not None
    reader = session.shared.positions
    if reader is None:
        reader = session.shared.positions = PositionReader(session.cluster)
    cluster, user = session.cluster, session.login.user.name
    session._primary_until = time.monotonic() + RYW_FALLBACK_SECONDS
    session._positions_pending += 1
    cluster.write_pending(user)

    def done(position: int | None) -> None:
        session._positions_pending -= 1
        cluster.write_settled(user, position, RYW_FALLBACK_SECONDS)
        if position is None:
            return   # the fail-safe stays: reads from the primary for RYW_FALLBACK_SECONDS
        session.min_position = max(session.min_position or 0, position)
        if session._positions_pending == 0:
            session._primary_until = 0.0

    reader.request(done)
