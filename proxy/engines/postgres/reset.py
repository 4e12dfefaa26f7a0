"""Finishing a server connection no client owns any more (ROLLBACK / DISCARD ALL, the proxy's own capture), then pooling it."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

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
        self._finished(server)
        if tracker.status == b"I" and not tracker.failed_statements:
            self.pool.release(server)
        else:
            self.pool.discard(server)

    def _finished(self, server: ServerConnection) -> None:
        """Hook: the statements are done (before the connection goes back)."""

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


class _Capture(_Reset):
    """The proxy's capture after a client's transaction (its WAL position) outlived the client."""

    def __init__(self, pool: Pool[ServerConnection], captured: Callable[[list[bytes]], None]) -> None:
        super().__init__(pool)
        self.captured = captured

    def _finished(self, server: ServerConnection) -> None:
        self.captured(server.tracker.captured)


def finish_capture_then_release(server: ServerConnection, pool: Pool[ServerConnection],
                                captured: Callable[[list[bytes]], None], timeout: float = 10.0) -> None:
    """A capture (run_capture) is in flight on a server whose client left: let it finish, hand its rows
    to `captured`, then return the server to the pool (or close it)."""
    finish = _Capture(pool, captured)
    server.on_release = finish
    finish.timer = asyncio.get_running_loop().call_later(timeout, finish.lost, server)
