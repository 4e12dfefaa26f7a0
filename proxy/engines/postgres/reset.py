"""Finishing a server connection no client owns any more (ROLLBACK / DISCARD ALL), then pooling it."""

from __future__ import annotations

import asyncio

from ...pool.pool import Pool
from .server import ServerConnection


class _Reset:
    """Owns an orphaned server connection while ROLLBACK / DISCARD ALL run, then releases it."""

    def __init__(self, pool: Pool[ServerConnection], timer: asyncio.TimerHandle | None = None) -> None:
        self.pool = pool
        self.timer = timer

    def check(self, server: ServerConnection) -> None:
        tracker = server.tracker
        tracker.parameters.clear()
        if not tracker.quiet:
            return
        self._done(server)
        if tracker.status == b"I" and not tracker.failed_statements:
            self.pool.release(server)
        else:
            self.pool.discard(server)

    def lost(self, server: ServerConnection) -> None:
        self._done(server)
        self.pool.discard(server)

    def _done(self, server: ServerConnection) -> None:
        server.on_release = None
        if self.timer is not None:
            self.timer.cancel()


def reset_then_release(server: ServerConnection, pool: Pool[ServerConnection], statements: list[str],
                       timeout: float = 10.0) -> None:
    """Run cleanup statements on a server no client owns, then return it to the pool (or close it)."""
    if "DISCARD ALL" in statements:
        server.prepared.clear()
        server.gucs.clear()
        server.pinned_reason = None
    reset = _Reset(pool)
    server.on_release = reset
    reset.timer = asyncio.get_running_loop().call_later(timeout, reset.lost, server)
    for sql in statements:
        server.run_hidden(sql)
