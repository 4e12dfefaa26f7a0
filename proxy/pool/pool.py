"""One pool of server connections for one (instance, user, database): borrow, release, expire.

Engine-neutral: a pool only knows how to open a connection (an async factory) and the small
`PooledConnection` interface. Idle connections are reused LIFO (warm caches, lets extra ones
age out); waiters are served FIFO and give up after the borrow timeout.

Pools whose connections cannot serve each other's clients but count against one limit (MySQL's
login variants of one instance, user and database) share a `SharedLimit`: together they hold at
most its `max_size`. A pool that needs room while the limit is reached closes an idle connection
of a sibling; a connection coming back while only a sibling has waiters is closed, so the sibling
can open one of its own.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, Generic, Protocol, TypeVar

from ..errors import BorrowTimeout, PoolRerouted, ProxyError, ServerConnectFailed
from .policy import idle_to_close, is_retired

log = logging.getLogger("dbproxy.pool")

MIN_IDLE_RETRY_MAX = 30.0   # seconds between tries to open min_idle connections that keep failing


class PooledConnection(Protocol):
    created_at: float
    last_used: float
    generation: int

    @property
    def closed(self) -> bool: ...

    def close(self) -> None: ...


C = TypeVar("C", bound=PooledConnection)


class SharedLimit:
    """One max_size for several pools (see the module docstring)."""

    def __init__(self, max_size: int) -> None:
        self.max_size = max_size
        self.pools: list[Pool[Any]] = []

    @property
    def size(self) -> int:
        return sum(pool.size for pool in self.pools)

    def make_room(self, asking: Pool[Any]) -> bool:
        """Below the limit, or made so by closing a sibling's oldest idle connection."""
        if self.size < self.max_size:
            return True
        for pool in self.pools:
            if pool is not asking and pool.idle:
                pool.idle.pop(0).close()
                return True
        return False

    def wake(self, freed_by: Pool[Any]) -> None:
        """Room was freed: let the first sibling with waiters open a connection."""
        for pool in self.pools:
            if pool is not freed_by and not pool.closed and pool.waiting():
                pool._capacity_freed()
                return

    def sibling_waits(self, pool: Pool[Any]) -> bool:
        return any(other is not pool and not other.closed and other.waiting() for other in self.pools)


class _ParkedDone:
    """A parked waiter's end (see Pool.park): stop its timer, count its wait."""

    __slots__ = ("pool", "timer", "started")

    def __init__(self, pool: Pool[Any], timer: asyncio.TimerHandle, started: float) -> None:
        self.pool, self.timer, self.started = pool, timer, started

    def __call__(self, fut: asyncio.Future[Any]) -> None:
        self.timer.cancel()
        pool = self.pool
        pool.wait_seconds_total += pool.clock() - self.started


class Pool(Generic[C]):
    """Connections to one server for one (user, database); see the module docstring."""

    def __init__(self, name: str, connect: Callable[[], Awaitable[C]], max_size: int,
                 min_idle: int = 0, idle_timeout: float = 300.0, max_lifetime: float = 3600.0,
                 clock: Callable[[], float] = time.monotonic, shared: SharedLimit | None = None) -> None:
        self.name = name
        self.shared = shared
        if shared is not None:
            shared.pools.append(self)
        self._connect = connect
        self.max_size = max_size
        self.min_idle = min_idle
        self.idle_timeout = idle_timeout
        self.max_lifetime = max_lifetime
        self.clock = clock
        self.idle: list[C] = []
        self.in_use: set[C] = set()
        self.opening = 0
        self.waiters: deque[asyncio.Future[C]] = deque()
        self.generation = 0
        self.closed = False
        # Counters for SHOW POOLS / metrics.
        self.borrows = 0
        self.handed_out = 0   # connections given out (take_idle or a borrow that got one), for zone metrics
        self.timeouts = 0
        self.connect_failures = 0
        self.wait_seconds_total = 0.0
        # min_idle connections that cannot be opened (a database that does not exist, an instance
        # that is down) are retried with a backoff, not on every maintenance tick.
        self._idle_failures = 0
        self._idle_retry_at = 0.0

    @property
    def size(self) -> int:
        return len(self.idle) + len(self.in_use) + self.opening

    def waiting(self) -> int:
        return sum(1 for w in self.waiters if not w.done())

    def _has_room(self) -> bool:
        """Room to open one more connection (closing a sibling's idle one if the shared limit is reached)."""
        if self.size >= self.max_size:
            return False
        return self.shared is None or self.shared.make_room(self)

    # ---- borrow / release -------------------------------------------------------------------

    async def borrow(self, timeout: float) -> C:
        """A connection for exclusive use until release(); waits up to timeout seconds."""
        if self.closed:
            raise ServerConnectFailed(f"pool {self.name} is closed")
        self.borrows += 1
        conn = self._take_idle()
        if conn is not None:
            self.in_use.add(conn)
            return conn
        if not self.waiting() and self._has_room():
            conn = await self._open()
            self.in_use.add(conn)
            return conn
        return await self._wait(timeout)

    def park(self, timeout: float) -> asyncio.Future[C] | None:
        """Queue for the next connection released, without a task: the future gets it (or BorrowTimeout
        after `timeout`, or ServerConnectFailed when a connection opened for the waiters fails).

        Only when borrow() would wait too (nothing idle, no room, or others queued first) and no sibling
        shares the limit; else None and the caller borrows. A cancelled future is skipped by release()."""
        if self.closed or self.idle:
            return None
        shared = self.shared
        if shared is not None and len(shared.pools) > 1:
            return None
        if self.size < self.max_size and not self.waiting():
            return None   # borrow() would open a connection
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[C] = loop.create_future()
        self.borrows += 1
        self.waiters.append(fut)
        timer = loop.call_later(timeout, self._expire_waiter, fut, timeout)
        fut.add_done_callback(_ParkedDone(self, timer, self.clock()))
        return fut

    async def _wait(self, timeout: float) -> C:
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[C] = loop.create_future()
        self.waiters.append(fut)
        started = self.clock()
        timer = loop.call_later(timeout, self._expire_waiter, fut, timeout)
        try:
            conn = await fut
        except asyncio.CancelledError:
            if fut.done() and not fut.cancelled() and fut.exception() is None:
                self.release(fut.result())   # handed over just as the borrower went away
            raise
        finally:
            timer.cancel()
            self.wait_seconds_total += self.clock() - started
        return conn

    def _expire_waiter(self, fut: asyncio.Future[C], timeout: float) -> None:
        if not fut.done():
            self.timeouts += 1
            fut.set_exception(BorrowTimeout(
                f"no server connection available in pool {self.name} within {timeout:g}s"))
        try:
            self.waiters.remove(fut)
        except ValueError:
            pass

    def _take_idle(self) -> C | None:
        now = self.clock()
        while self.idle:
            conn = self.idle.pop()
            if conn.closed:
                continue
            if is_retired(conn, now, self.generation, self.max_lifetime):
                conn.close()
                continue
            return conn
        return None

    async def _open(self, reserved: bool = False) -> C:
        """Open a connection; `reserved` means the caller already counted it in `opening`."""
        if not reserved:
            self.opening += 1
        generation = self.generation  # expire() during the connect retires it too
        try:
            conn = await self._connect()
        except ProxyError:
            self.connect_failures += 1
            raise
        except (TimeoutError, OSError) as exc:
            self.connect_failures += 1
            raise ServerConnectFailed(f"could not connect to server for pool {self.name}: {exc}") from exc
        finally:
            self.opening -= 1
        conn.generation = generation
        return conn

    def release(self, conn: C) -> None:
        """Give a clean, idle connection back (or retire it if it has expired)."""
        self.in_use.discard(conn)
        now = self.clock()
        conn.last_used = now
        shared = self.shared
        if shared is not None and len(shared.pools) < 2:
            shared = None   # no sibling: this pool's own max_size says it all
        if (conn.closed or self.closed or is_retired(conn, now, self.generation, self.max_lifetime)
                or self.size >= self.max_size   # over a limit lowered by resize()
                or (shared is not None and shared.size >= shared.max_size)):
            if not conn.closed:
                conn.close()
            self._capacity_freed()
            return
        while self.waiters:
            fut = self.waiters.popleft()
            if not fut.done():
                self.in_use.add(conn)
                fut.set_result(conn)
                return
        if shared is not None and shared.sibling_waits(self):
            conn.close()   # a sibling's client waits and cannot use it: make room for one of its own
            shared.wake(self)
            return
        self.idle.append(conn)

    def discard(self, conn: C) -> None:
        """A connection died or was closed while in use or idle: forget it."""
        self.in_use.discard(conn)
        try:
            self.idle.remove(conn)
        except ValueError:
            pass
        if not conn.closed:
            conn.close()
        self._capacity_freed()

    def _capacity_freed(self) -> None:
        if self.closed:
            shared = self.shared
            if shared is not None:
                if not self.size and self in shared.pools:
                    shared.pools.remove(self)
                shared.wake(self)
            return
        if self.waiting():
            if self._has_room():
                self._open_soon(self._open_for_waiter)
        elif self.shared is not None:
            self.shared.wake(self)

    def _open_soon(self, opener: Callable[[], Coroutine[Any, Any, None]]) -> None:
        """Start opening a connection in the background, counted against max_size right away."""
        self.opening += 1
        asyncio.get_running_loop().create_task(opener())

    async def _open_for_waiter(self) -> None:
        try:
            conn = await self._open(reserved=True)
        except ProxyError as exc:
            while self.waiters:
                fut = self.waiters.popleft()
                if not fut.done():
                    fut.set_exception(exc)
                    break
            return
        self.in_use.add(conn)
        self.release(conn)

    # ---- maintenance ------------------------------------------------------------------------

    def resize(self, max_size: int) -> None:
        """Change the limit (reload). More room serves queued borrowers at once; with less, idle
        connections over the limit close now and borrowed ones as they come back."""
        self.max_size = max_size
        if self.shared is not None:
            self.shared.max_size = max_size
        while self.idle and self.size > max_size:
            self.idle.pop(0).close()
        if self.closed:
            return
        for _ in range(min(self.waiting(), max_size - self.size)):
            if not self._has_room():
                break
            self._open_soon(self._open_for_waiter)

    def reroute_waiters(self, why: str) -> int:
        """Fail every queued borrower with PoolRerouted (they borrow again, routed anew); how many."""
        return self._fail_waiters(lambda: PoolRerouted(f"pool {self.name}: {why}"))

    def _fail_waiters(self, error: Callable[[], ProxyError]) -> int:
        """Fail every queued borrower with a fresh error(); how many were still waiting."""
        failed = 0
        while self.waiters:
            fut = self.waiters.popleft()
            if not fut.done():
                fut.set_exception(error())
                failed += 1
        return failed

    def expire(self) -> None:
        """Retire every connection: idle ones now, borrowed ones when they come back."""
        self.generation += 1
        for conn in self.idle:
            conn.close()
        self.idle.clear()

    def maintain(self) -> None:
        """Close idle connections past idle_timeout / max_lifetime; keep min_idle open."""
        now = self.clock()
        for conn in idle_to_close(self.idle, now, self.generation, self.idle_timeout,
                                  self.max_lifetime, self.min_idle):
            self.idle.remove(conn)
            conn.close()
        self.idle = [c for c in self.idle if not c.closed]
        room = self.max_size - self.size
        if self.shared is not None:
            room = min(room, self.shared.max_size - self.shared.size)
        missing = min(self.min_idle - len(self.idle) - self.opening, room)
        if missing > 0 and now < self._idle_retry_at:
            return
        for _ in range(max(0, missing)):
            self._open_soon(self._open_idle)

    async def _open_idle(self) -> None:
        try:
            conn = await self._open(reserved=True)
        except ProxyError as exc:
            now = self.clock()
            if now >= self._idle_retry_at:   # the first failure of this round (several may open at once)
                self._idle_failures += 1
                delay = min(MIN_IDLE_RETRY_MAX, 2.0 ** (self._idle_failures - 1))
                self._idle_retry_at = now + delay
                log.warning("pool %s: could not open min_idle connection (next try in %gs): %s",
                            self.name, delay, exc)
            return
        self._idle_failures = 0
        self.in_use.add(conn)
        self.release(conn)

    def close(self) -> None:
        """Close every idle connection now and every borrowed one as it comes back."""
        self.closed = True
        if self.shared is not None and self in self.shared.pools and not self.in_use and not self.opening:
            self.shared.pools.remove(self)
        self.expire()
        self._fail_waiters(lambda: ServerConnectFailed(f"pool {self.name} is closing"))
