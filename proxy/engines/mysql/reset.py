"""Finishing a MySQL server connection no client owns any more (COM_RESET_CONNECTION), then pooling it."""

from __future__ import annotations

import asyncio

from ...pool.pool import Pool
from .server import MysqlServerConnection
from .wire.codes import Command


class _Reset:
    """Owns an orphaned server connection while COM_RESET_CONNECTION runs, then releases it."""

    def __init__(self, pool: Pool[MysqlServerConnection]) -> None:
        self.pool = pool
        self.timer: asyncio.TimerHandle | None = None
        self.errors = 0

    def check(self, server: MysqlServerConnection) -> None:
        tracker = server.tracker
        if not tracker.quiet:
            return
        self._done(server)
        if tracker.idle and tracker.errors == self.errors:
            self.pool.release(server)
        else:
            self.pool.discard(server)

    def lost(self, server: MysqlServerConnection) -> None:
        self._done(server)
        self.pool.discard(server)

    def _done(self, server: MysqlServerConnection) -> None:
        server.on_release = None
        if self.timer is not None:
            self.timer.cancel()


def reset_then_release(server: MysqlServerConnection, pool: Pool[MysqlServerConnection],
                       timeout: float = 10.0) -> None:
    """Roll back, drop temporary tables, locks, user variables and statements; then pool the connection.

    COM_RESET_CONNECTION keeps the current schema and the COM_SET_OPTION multi-statements switch;
    session variables go back to the global values.
    """
    server.variables.clear()
    server.statements.clear()
    server.insert_id = 0
    server.pinned_reason = None
    reset = _Reset(pool)
    reset.errors = server.tracker.errors
    server.on_release = reset
    reset.timer = asyncio.get_running_loop().call_later(timeout, reset.lost, server)
    server.run_hidden(Command.RESET_CONNECTION)
