"""Where cached results live: the Backend interface and the in-process memory backend (LRU, TTL).

Every entry carries the version of each table it read (and the cluster's generation, bumped by
FLUSH CACHE and by writes whose tables are unknown) as they were when its lookup missed. An
invalidation increments the versions of the tables written: O(tables written), and an entry stored
after a concurrent write (its versions already old) is never served.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

# Invalidating this pseudo-table bumps the generation: every entry of the cluster goes.
ALL_TABLES = "\x00all"
Versions = tuple[int, ...]


class BackendDown(Exception):
    """The backend did not answer in time or failed: the caller bypasses the cache."""


@dataclass(frozen=True, slots=True)
class Found:
    """A lookup's answer: the stored bytes (None: a miss) and the versions to store a miss under."""

    value: bytes | None
    versions: Versions


class Backend(Protocol):
    """What the cache front needs of a store; every method may raise BackendDown."""

    async def lookup(self, key: str, tables: Sequence[str]) -> Found: ...

    async def store(self, key: str, value: bytes, tables: Sequence[str], versions: Versions, ttl: float) -> None: ...

    async def invalidate(self, tables: Sequence[str]) -> None: ...

    async def flush(self) -> None: ...

    def usage(self) -> tuple[int, int]: ...   # (entries, bytes) as far as this process knows

    async def close(self) -> None: ...


@dataclass(slots=True)
class _Entry:
    value: bytes
    versions: Versions
    tables: tuple[str, ...]
    expires: float


# Per-entry bookkeeping on top of the response bytes and the key (a rough, fixed estimate).
ENTRY_OVERHEAD = 200


class MemoryBackend:
    """Entries in this process, least recently used first out beyond max_memory bytes; `clock`
    (seconds, monotonic) is injected so tests can move time."""

    def __init__(self, max_memory: int, clock: Callable[[], float]) -> None:
        self.max_memory = max_memory
        self.clock = clock
        self._entries: OrderedDict[str, _Entry] = OrderedDict()
        self._versions: dict[str, int] = {}
        self._generation = 0
        self.bytes = 0
        self.evictions = 0

    def _snapshot(self, tables: Sequence[str]) -> Versions:
        versions = self._versions
        return (self._generation, *(versions.get(t, 0) for t in tables))

    def lookup_now(self, key: str, tables: Sequence[str]) -> Found:
        """lookup() without a coroutine (the memory backend never waits)."""
        versions = self._snapshot(tables)
        entry = self._entries.get(key)
        if entry is None:
            return Found(None, versions)
        if entry.expires <= self.clock() or entry.versions != versions or entry.tables != tuple(tables):
            self._drop(key, entry)
            return Found(None, versions)
        self._entries.move_to_end(key)
        return Found(entry.value, versions)

    async def lookup(self, key: str, tables: Sequence[str]) -> Found:
        return self.lookup_now(key, tables)

    async def store(self, key: str, value: bytes, tables: Sequence[str], versions: Versions, ttl: float) -> None:
        self.store_now(key, value, tables, versions, ttl)

    def store_now(self, key: str, value: bytes, tables: Sequence[str], versions: Versions, ttl: float) -> None:
        size = len(value) + len(key) + ENTRY_OVERHEAD
        if size > self.max_memory or versions != self._snapshot(tables):
            return   # too big for the whole cache, or a table it read was written since the miss
        old = self._entries.pop(key, None)
        if old is not None:
            self.bytes -= len(old.value) + len(key) + ENTRY_OVERHEAD
        self._entries[key] = _Entry(value, versions, tuple(tables), self.clock() + ttl)
        self.bytes += size
        while self.bytes > self.max_memory and self._entries:
            old_key, entry = self._entries.popitem(last=False)
            self.bytes -= len(entry.value) + len(old_key) + ENTRY_OVERHEAD
            self.evictions += 1

    def _drop(self, key: str, entry: _Entry) -> None:
        del self._entries[key]
        self.bytes -= len(entry.value) + len(key) + ENTRY_OVERHEAD

    async def invalidate(self, tables: Sequence[str]) -> None:
        self.invalidate_now(tables)

    def invalidate_now(self, tables: Sequence[str]) -> None:
        versions = self._versions
        for table in tables:
            if table == ALL_TABLES:
                self._generation += 1
            else:
                versions[table] = versions.get(table, 0) + 1

    async def flush(self) -> None:
        self._generation += 1
        self._entries.clear()
        self.bytes = 0

    def usage(self) -> tuple[int, int]:
        return len(self._entries), self.bytes

    async def close(self) -> None:
        return None
