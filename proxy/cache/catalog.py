"""What the query cache must know of a database's relations (SPEC §11), engine-neutral: the snapshot
and its reader; each engine says how to read its catalog (`Fetch`).

Per relation name (schemas merged, as the cache compares tables by name): can a statement be seen
through it (not a view, a materialized view, a foreign, partitioned or inherited table, a temporary
table of some session...: `opaque`), does writing it write elsewhere (triggers, rules, cascading
foreign keys: `writes_elsewhere`), which of its columns are integers (row-scoped invalidation
canonicalizes values as integers, so only those columns are row-scoped).

`CatalogReader` keeps one snapshot per database of a cluster, at most MAX_AGE old, read again after
DDL seen by the proxy (`stale()`); until a fresh one is there, nothing of that database is cached
and its writes invalidate everything. `now` is passed in; the reads run as tasks.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

log = logging.getLogger("dbproxy.cache")
MAX_AGE = 60.0          # a snapshot older than this is read again (DDL that bypassed the proxy)
RETRY_AFTER = 5.0       # after a failed read
MAX_RELATIONS = 50_000  # a larger catalog: the relations past it are unknown (not cached)
MAX_DATABASES = 64      # snapshots kept per cluster (the oldest entry goes first)


@dataclass(frozen=True, slots=True)
class Relation:
    """One relation name as the cache sees it (see the module docstring)."""

    opaque: bool
    writes_elsewhere: bool
    int_columns: frozenset[str] = frozenset()

    def merged(self, other: Relation) -> Relation:
        """The same name in another schema: the most careful reading of both."""
        return Relation(self.opaque or other.opaque, self.writes_elsewhere or other.writes_elsewhere,
                        self.int_columns & other.int_columns)


class CatalogSnapshot:
    """Relations by name, as of `loaded_at` (the reader's clock)."""

    def __init__(self, relations: dict[str, Relation], loaded_at: float) -> None:
        self.relations = relations
        self.loaded_at = loaded_at

    def get(self, name: str) -> Relation | None:
        return self.relations.get(name)


def add_relation(relations: dict[str, Relation], name: str, relation: Relation) -> None:
    old = relations.get(name)
    relations[name] = relation if old is None else old.merged(relation)


# Reads the relations of one database (an engine's catalog query); raises what it raises.
Fetch = Callable[[str], Awaitable[dict[str, Relation]]]


@dataclass(slots=True)
class _Database:
    snapshot: CatalogSnapshot | None = None
    stale: bool = True
    retry_at: float = 0.0
    task: asyncio.Task[None] | None = None
    logged: str = ""   # the last failure logged (each new one is logged, a repeat at most once a minute)
    logged_at: float = -MAX_AGE


class CatalogReader:
    """Snapshots per database of one cluster (see the module docstring)."""

    def __init__(self, cluster: str, fetch: Fetch, clock: Callable[[], float],
                 errors: tuple[type[BaseException], ...]) -> None:
        self.cluster = cluster
        self._fetch = fetch
        self._clock = clock
        self._errors = errors
        self._databases: dict[str, _Database] = {}
        self.reads = 0

    def snapshot(self, database: str, now: float) -> CatalogSnapshot | None:
        """The fresh snapshot of `database`, or None (one is being read: try again later)."""
        state = self._databases.get(database)
        if state is None:
            if len(self._databases) >= MAX_DATABASES:
                self._drop(next(iter(self._databases)))
            state = self._databases[database] = _Database()
        snapshot = state.snapshot
        if snapshot is not None and not state.stale and now - snapshot.loaded_at < MAX_AGE:
            return snapshot
        if state.task is None and now >= state.retry_at:
            state.task = asyncio.get_running_loop().create_task(self._read(database, state))
        return snapshot if snapshot is not None and not state.stale else None

    def reading(self, database: str) -> asyncio.Task[None] | None:
        """The read of `database`'s catalog in flight, if any."""
        state = self._databases.get(database)
        return state.task if state is not None else None

    def stale(self) -> None:
        """DDL went through the proxy: every snapshot is read again before it is used."""
        for state in self._databases.values():
            state.stale = True
            if state.task is not None:   # it may have read the catalog before the DDL committed
                state.task.cancel()
                state.task = None

    async def _read(self, database: str, state: _Database) -> None:
        try:
            relations = await self._fetch(database)
            self.reads += 1
            state.snapshot = CatalogSnapshot(relations, self._clock())
            state.stale = False
        except self._errors as exc:
            now = self._clock()
            if str(exc) != state.logged or now - state.logged_at >= MAX_AGE:
                state.logged, state.logged_at = str(exc), now
                log.info("cluster %s: the query cache could not read the catalog of database %s: %s "
                         "(nothing of it is cached meanwhile)", self.cluster, database or "(all)", exc)
            state.retry_at = now + RETRY_AFTER
        finally:
            if state.task is asyncio.current_task():
                state.task = None

    def _drop(self, database: str) -> None:
        state = self._databases.pop(database)
        if state.task is not None:
            state.task.cancel()

    def close(self) -> None:
        for database in list(self._databases):
            self._drop(database)
