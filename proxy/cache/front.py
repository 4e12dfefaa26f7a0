"""One cluster's query cache as sessions use it: lookups with stampede control, stores, invalidation,
counters, and bypass (never an error) while the backend is down."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass

from .backends import Backend, BackendConnecting, BackendDown, MemoryBackend
from .redis_backend import RedisBackend
from .scopes import ALL_TABLES, Point, RowWrite, Versions, written_tables
from .settings import CacheSettings

log = logging.getLogger("dbproxy.cache")
WARN_EVERY = 60.0      # seconds between two "cache down" warnings
RETRY_AFTER = 1.0      # once down, the backend is bypassed this long before it is tried again
RESEND_DELAYS = (0.05, 0.1, 0.2, 0.4, 0.8, 1.0, 1.0, 1.0, 1.0)   # a failed invalidation sent again (5.5 s)
DOWN_AFTER = 3         # consecutive failed calls that make it down (a lone slow answer only bypasses its call)


@dataclass(slots=True)
class Ticket:
    """The one miss of a key that runs the query; its result is stored under `versions`."""

    key: str
    tables: tuple[str, ...]
    point: Point | None
    versions: Versions
    ttl: float
    done: asyncio.Future[bytes | None]


class QueryCache:
    """The cache of one cluster (see the module docstring); `clock` is injected (tests)."""

    def __init__(self, cluster: str, settings: CacheSettings, backend: Backend | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.cluster = cluster
        self.settings = settings
        self.clock = clock
        if backend is None:
            backend = (MemoryBackend(settings.max_memory, clock) if settings.backend == "memory"
                       else RedisBackend(settings.backend, cluster, settings.redis_timeout, username=settings.username,
                                         password=settings.password, ca_file=settings.tls_ca_file))
        self.backend = backend
        self._memory = backend if isinstance(backend, MemoryBackend) else None
        if isinstance(backend, RedisBackend):
            try:
                backend.warm()   # connections made ahead of the first lookup
            except RuntimeError:
                pass             # no running loop (tests): made at the first call
        self._inflight: dict[str, Ticket] = {}
        self.requests = {"hit": 0, "miss": 0, "bypass": 0}
        self.stores = 0
        self.invalidations = 0
        self.down_since: float | None = None
        self.last_error = ""
        self._retry_at = 0.0
        self._failures = 0   # consecutive failed calls
        self._unsent = 0     # invalidations being sent again: nothing is served from the backend meanwhile
        self._generation_lost = False   # one never got through: bump the generation before serving again
        self._warned_at = -WARN_EVERY
        self._tasks: set[asyncio.Task[None]] = set()

    # ---- health ---------------------------------------------------------------------------------

    @property
    def up(self) -> bool:
        return self.down_since is None

    @property
    def evictions(self) -> int:
        return self._memory.evictions if self._memory is not None else 0

    def _usable(self) -> bool:
        if self._unsent:
            return False
        return self.down_since is None or self.clock() >= self._retry_at

    def _failed(self, exc: BackendDown) -> None:
        if isinstance(exc, BackendConnecting):
            return   # its connections are being made: bypassed, not down
        self.last_error = str(exc)
        self._failures += 1
        if self._failures < DOWN_AFTER and self.down_since is None:
            return
        now = self.clock()
        if self.down_since is None:
            self.down_since = now
        self._retry_at = now + RETRY_AFTER
        if now - self._warned_at >= WARN_EVERY:
            self._warned_at = now
            log.warning("cache of cluster %s is down, queries go to the database: %s", self.cluster, exc)

    def _answered(self) -> None:
        self._failures = 0
        if self.down_since is not None:
            log.info("cache of cluster %s is back", self.cluster)
            self.down_since = None

    # ---- lookups --------------------------------------------------------------------------------

    def lookup_now(self, key: str, tables: Sequence[str], ttl: float,
                   point: Point | None = None) -> tuple[bytes | None, Ticket | None] | None:
        """The memory backend's answer without waiting: (hit bytes, None) or (None, the miss's ticket);
        None when the answer needs a wait (another backend, or an identical miss already running)."""
        memory = self._memory
        if memory is None or key in self._inflight:
            return None
        found = memory.lookup_now(key, tables, point)
        if found.value is not None:
            self.requests["hit"] += 1
            return found.value, None
        self.requests["miss"] += 1
        return None, self._lead(key, tables, point, found.versions, ttl)

    async def lookup(self, key: str, tables: Sequence[str], ttl: float,
                     point: Point | None = None) -> tuple[bytes | None, Ticket | None]:
        """(hit bytes, None), or (None, a ticket: run the query, then complete()), or (None, None):
        run the query without storing it (bypass, or an identical miss ran and failed)."""
        running = self._inflight.get(key)
        if running is not None:
            return await self._follow(running)
        if not self._usable() or self._generation_lost and not await self._flush_lost():
            self.requests["bypass"] += 1
            return None, None
        try:
            found = await self.backend.lookup(key, tables, point)
        except BackendDown as exc:
            self._failed(exc)
            self.requests["bypass"] += 1
            return None, None
        self._answered()
        if found.value is not None:
            self.requests["hit"] += 1
            return found.value, None
        running = self._inflight.get(key)   # another identical miss got there while this one waited
        if running is not None:
            return await self._follow(running)
        self.requests["miss"] += 1
        return None, self._lead(key, tables, point, found.versions, ttl)

    def _lead(self, key: str, tables: Sequence[str], point: Point | None, versions: Versions, ttl: float) -> Ticket:
        ticket = Ticket(key, tuple(tables), point, versions, ttl, asyncio.get_running_loop().create_future())
        self._inflight[key] = ticket
        return ticket

    async def _follow(self, running: Ticket) -> tuple[bytes | None, Ticket | None]:
        """Stampede control: wait (bounded) for the identical miss that runs the query."""
        try:
            value = await asyncio.wait_for(asyncio.shield(running.done), self.settings.stampede_wait)
        except TimeoutError:
            value = None
        if value is None:
            self.requests["bypass"] += 1
            return None, None
        self.requests["hit"] += 1
        return value, None

    def complete(self, ticket: Ticket, value: bytes | None) -> None:
        """The leading miss finished: `value` is its response to store (None: nothing to store)."""
        if self._inflight.get(ticket.key) is ticket:
            del self._inflight[ticket.key]
        if not ticket.done.done():
            ticket.done.set_result(value)
        if value is None or len(value) > self.settings.max_entry:
            return
        if self._memory is not None:
            self._memory.store_now(ticket.key, value, ticket.tables, ticket.point, ticket.versions, ticket.ttl)
            self.stores += 1
            return
        self._spawn(self._store(ticket, value))

    async def _store(self, ticket: Ticket, value: bytes) -> None:
        if not self._usable():
            return
        try:
            await self.backend.store(ticket.key, value, ticket.tables, ticket.point, ticket.versions, ticket.ttl)
        except BackendDown as exc:
            self._failed(exc)
            return
        self._answered()
        self.stores += 1

    def _spawn(self, work: object) -> None:
        task: asyncio.Task[None] = asyncio.get_running_loop().create_task(work)  # type: ignore[arg-type]
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # ---- invalidation ---------------------------------------------------------------------------

    def invalidate_now(self, tables: Sequence[str], rows: Sequence[RowWrite] = ()) -> bool:
        """The memory backend invalidates at once (True); False: await invalidate()."""
        if self._memory is None:
            return False
        self._memory.invalidate_now(tables, rows)
        self._forget_inflight(written_tables(tables, rows))
        self.invalidations += 1
        return True

    async def invalidate(self, tables: Sequence[str], rows: Sequence[RowWrite] = ()) -> None:
        """Results that read any of `tables` (ALL_TABLES: every result), or the rows of `rows`, are
        never served again. Bounded; one that fails is sent again in the background (see _resend)."""
        self._forget_inflight(written_tables(tables, rows))
        if self.invalidate_now(tables, rows):
            return
        try:
            await self.backend.invalidate(tables, rows)
        except BackendDown as exc:
            self._failed(exc)
            self._unsent += 1
            self._spawn(self._resend(tuple(tables), tuple(rows)))
            return
        self._answered()
        self.invalidations += 1

    async def _resend(self, tables: tuple[str, ...], rows: tuple[RowWrite, ...]) -> None:
        """An invalidation that did not get through in time, sent again (RESEND_DELAYS); meanwhile
        this process serves nothing from the backend. If it never gets through, the generation is
        bumped (everything goes) at the first call the backend answers again."""
        try:
            for delay in RESEND_DELAYS:
                await asyncio.sleep(delay)
                try:
                    await self.backend.invalidate(tables, rows)
                except BackendDown:
                    continue
                self.invalidations += 1
                return
            self._generation_lost = True
        finally:
            self._unsent -= 1

    async def _flush_lost(self) -> bool:
        """Bump the generation for invalidations that were lost; True once done."""
        try:
            await self.backend.invalidate((ALL_TABLES,))
        except BackendDown:
            return False
        self._generation_lost = False
        return True

    def _forget_inflight(self, tables: Collection[str]) -> None:
        """Identical misses running now may have read the old rows: followers must not take them."""
        if not self._inflight:
            return
        written = set(tables)
        for key, ticket in list(self._inflight.items()):
            if ALL_TABLES in written or written.intersection(ticket.tables):
                del self._inflight[key]
                if not ticket.done.done():
                    ticket.done.set_result(None)

    async def flush(self) -> None:
        self._forget_inflight([ALL_TABLES])
        try:
            await self.backend.flush()
        except BackendDown as exc:
            self._failed(exc)
            raise

    def usage(self) -> tuple[int, int]:
        return self.backend.usage()

    def hit_ratio(self) -> float:
        looked = self.requests["hit"] + self.requests["miss"] + self.requests["bypass"]
        return self.requests["hit"] / looked if looked else 0.0

    async def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        await self.backend.close()
