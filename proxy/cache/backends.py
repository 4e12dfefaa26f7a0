"""Where cached results live: the Backend interface and the in-process memory backend (LRU, TTL).

Every entry carries the versions of the counters it depends on (scopes.py: the cluster's generation,
each table read, and for a point read its rows) as they were when its lookup missed. An
invalidation changes the counters of what was written: O(tables and rows written), and an entry
stored after a concurrent write (its versions already old) is never served.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

from .scopes import (
    ALL_TABLES,
    GENERATION,
    ROW_TTL,
    Point,
    RowWrite,
    Versions,
    column_counter,
    increments,
    read_counters,
    row_counter,
    table_counter,
    versions,
)

__all__ = ["ALL_TABLES", "Backend", "BackendDown", "Found", "MemoryBackend", "Versions"]


class BackendDown(Exception):
    """The backend did not answer in time or failed: the caller bypasses the cache."""


class BackendConnecting(BackendDown):
    """The backend is still opening its connections: the caller bypasses the cache (it is not down)."""


@dataclass(frozen=True, slots=True)
class Found:
    """A lookup's answer: the stored bytes (None: a miss) and the versions to store a miss under."""

    value: bytes | None
    versions: Versions


class Backend(Protocol):
    """What the cache front needs of a store; every method may raise BackendDown."""

    async def lookup(self, key: str, tables: Sequence[str], point: Point | None) -> Found: ...

    async def store(self, key: str, value: bytes, tables: Sequence[str], point: Point | None, versions: Versions,
                    ttl: float) -> None: ...

    async def invalidate(self, tables: Sequence[str], rows: Sequence[RowWrite] = ()) -> None: ...

    async def flush(self) -> None: ...

    def usage(self) -> tuple[int, int]: ...   # (entries, bytes) as far as this process knows

    async def close(self) -> None: ...


@dataclass(slots=True)
class _Entry:
    value: bytes
    versions: Versions
    expires: float


# Per-entry bookkeeping on top of the response bytes and the key (a rough, fixed estimate).
ENTRY_OVERHEAD = 200
# Row counters kept at most; beyond, they are dropped and the generation bumped (everything goes).
MAX_ROW_COUNTERS = 200_000


class MemoryBackend:
    """Entries in this process, least recently used first out beyond max_memory bytes; `clock`
    (seconds, monotonic) is injected so tests can move time."""

    def __init__(self, max_memory: int, clock: Callable[[], float]) -> None:
        self.max_memory = max_memory
        self.clock = clock
        self._entries: OrderedDict[str, _Entry] = OrderedDict()
        self._counters: dict[str, int] = {}
        self._rows: dict[str, int] = {}
        self._point_names: dict[tuple[str, str], tuple[str, str, str]] = {}   # (table, column) → its counters' names
        self._sequence = 0   # row counters take unique values from here
        self.bytes = 0
        self.evictions = 0

    def snapshot(self, tables: Sequence[str], point: Point | None) -> Versions:
        counters, rows = self._counters, self._rows
        if point is not None and len(tables) == 1 and tables[0] == point.table:
            # The common point read of one table: versions() of read_counters() without building the list.
            names = self._point_names.get((point.table, point.column))
            if names is None:
                if len(self._point_names) >= MAX_ROW_COUNTERS:
                    self._point_names.clear()
                names = self._point_names[(point.table, point.column)] = (
                    table_counter(point.table), column_counter(point.table, point.column),
                    row_counter(Point(point.table, point.column, "")))
            get = counters.get
            return (get(GENERATION, 0), get(names[0], 0) - get(names[1], 0), rows.get(names[2] + point.value, 0))
        counter_names = read_counters(tables, point)
        return versions(tables, point,
                        [rows.get(n, 0) if n[0] == "r" else counters.get(n, 0) for n in counter_names])

    def lookup_now(self, key: str, tables: Sequence[str], point: Point | None) -> Found:
        """lookup() without a coroutine (the memory backend never waits)."""
        current = self.snapshot(tables, point)
        entry = self._entries.get(key)
        if entry is None:
            return Found(None, current)
        if entry.expires <= self.clock() or entry.versions != current:
            self._drop(key, entry)
            return Found(None, current)
        self._entries.move_to_end(key)
        return Found(entry.value, current)

    async def lookup(self, key: str, tables: Sequence[str], point: Point | None) -> Found:
        return self.lookup_now(key, tables, point)

    async def store(self, key: str, value: bytes, tables: Sequence[str], point: Point | None, versions: Versions,
                    ttl: float) -> None:
        self.store_now(key, value, tables, point, versions, ttl)

    def store_now(self, key: str, value: bytes, tables: Sequence[str], point: Point | None, versions: Versions,
                  ttl: float) -> None:
        size = len(value) + len(key) + ENTRY_OVERHEAD
        if size > self.max_memory or versions != self.snapshot(tables, point):
            return   # too big for the whole cache, or something it read was written since the miss
        old = self._entries.pop(key, None)
        if old is not None:
            self.bytes -= len(old.value) + len(key) + ENTRY_OVERHEAD
        self._entries[key] = _Entry(value, versions, self.clock() + min(ttl, ROW_TTL))
        self.bytes += size
        while self.bytes > self.max_memory and self._entries:
            old_key, entry = self._entries.popitem(last=False)
            self.bytes -= len(entry.value) + len(old_key) + ENTRY_OVERHEAD
            self.evictions += 1

    def _drop(self, key: str, entry: _Entry) -> None:
        del self._entries[key]
        self.bytes -= len(entry.value) + len(key) + ENTRY_OVERHEAD

    async def invalidate(self, tables: Sequence[str], rows: Sequence[RowWrite] = ()) -> None:
        self.invalidate_now(tables, rows)

    def invalidate_now(self, tables: Sequence[str], rows: Sequence[RowWrite] = ()) -> None:
        change = increments(tables, rows)
        counters = self._counters
        for name, n in change.add.items():
            counters[name] = counters.get(name, 0) + n
        if change.rows:
            if len(self._rows) + len(change.rows) > MAX_ROW_COUNTERS:
                self._rows.clear()   # a dropped counter reads 0 again: no old entry may match it
                counters[GENERATION] = counters.get(GENERATION, 0) + 1
            for name in change.rows:
                self._sequence += 1
                self._rows[name] = self._sequence

    async def flush(self) -> None:
        self._counters[GENERATION] = self._counters.get(GENERATION, 0) + 1
        self._entries.clear()
        self.bytes = 0

    def usage(self) -> tuple[int, int]:
        return len(self._entries), self.bytes

    async def close(self) -> None:
        return None
