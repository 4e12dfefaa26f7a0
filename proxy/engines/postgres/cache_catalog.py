"""What the query cache must know of a database's relations (SPEC §11), read from the writer's catalog.

Per relation name (schemas merged, as the cache compares tables by name): is it a plain table, or
something a statement cannot be seen through (a view, a materialized view, a foreign, partitioned or
inherited table, a temporary table of some session); does writing it write elsewhere (a trigger
other than a foreign key check, a rule); which of its columns are integers (row-scoped invalidation
canonicalizes values as integers, so only those columns are row-scoped).

`CatalogSnapshot` is pure (built from the catalog query's rows). `CatalogReader` keeps one snapshot
per database of a cluster, read on a connection of its own to the current writer (logged in as the
probes are), at most MAX_AGE old, re-read after DDL seen by the proxy (`stale()`); until a fresh one
is there, nothing of that database is cached and its writes invalidate everything. `now` is passed in.
"""

from __future__ import annotations

import asyncio
import json
import logging
import struct
from dataclasses import dataclass
from typing import Any

from ...errors import ProxyError
from .sql import PgSqlConnection, QueryFailed, Row

log = logging.getLogger("dbproxy.cache")
APPLICATION_NAME = "dbproxy-cache-catalog"
MAX_AGE = 60.0          # a snapshot older than this is read again (DDL that bypassed the proxy)
RETRY_AFTER = 5.0       # after a failed read
MAX_RELATIONS = 50_000  # a larger catalog: the relations past it are unknown (not cached)
MAX_DATABASES = 64      # snapshots kept per cluster (least recently read go first)
# Trigger functions that only check (foreign keys): every other trigger may write other tables.
_CHECK_TRIGGERS = ("RI_FKey_check_ins", "RI_FKey_check_upd", "RI_FKey_noaction_del", "RI_FKey_noaction_upd",
                   "RI_FKey_restrict_del", "RI_FKey_restrict_upd")
QUERY = f"""
SELECT c.relname, c.relkind::text, (n.nspname LIKE 'pg\\_temp\\_%')::text,
       (c.relhassubclass OR c.relispartition)::text,
       (c.relhasrules OR EXISTS (SELECT 1 FROM pg_trigger g JOIN pg_proc p ON p.oid = g.tgfoid
                                 WHERE g.tgrelid = c.oid
                                   AND p.proname NOT IN ({", ".join(f"'{n}'" for n in _CHECK_TRIGGERS)})))::text,
       coalesce((SELECT json_agg(a.attname)::text FROM pg_attribute a
                 WHERE a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped
                   AND a.atttypid IN (20, 21, 23)), '[]')
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE c.relkind IN ('r', 'p', 'v', 'm', 'f')
  AND n.nspname NOT IN ('pg_catalog', 'information_schema') AND n.nspname NOT LIKE 'pg\\_toast%'
LIMIT {MAX_RELATIONS}
"""


@dataclass(frozen=True, slots=True)
class Relation:
    """One relation name as the cache sees it (see the module docstring)."""

    opaque: bool                        # a view or anything else a read cannot be seen through
    writes_elsewhere: bool              # writing it may write other tables (triggers, rules)
    int_columns: frozenset[str]


class CatalogSnapshot:
    """Relations by name, as of `loaded_at` (the reader's clock)."""

    def __init__(self, relations: dict[str, Relation], loaded_at: float) -> None:
        self.relations = relations
        self.loaded_at = loaded_at

    @classmethod
    def from_rows(cls, rows: list[Row], loaded_at: float) -> CatalogSnapshot:
        relations: dict[str, Relation] = {}
        for row in rows:
            if len(row) != 6 or row[0] is None:
                continue
            name, kind, temp, inherits, writes, columns = row[0], *row[1:]
            try:
                ints = frozenset(str(c) for c in json.loads(columns or "[]"))
            except ValueError:
                ints = frozenset()
            new = Relation(kind != "r" or temp == "true" or inherits == "true", writes == "true", ints)
            old = relations.get(name)
            if old is not None:   # the same name in several schemas: the most careful reading of both
                new = Relation(old.opaque or new.opaque, old.writes_elsewhere or new.writes_elsewhere,
                               old.int_columns & new.int_columns)
            relations[name] = new
        return cls(relations, loaded_at)

    def get(self, name: str) -> Relation | None:
        return self.relations.get(name)


@dataclass(slots=True)
class _Database:
    snapshot: CatalogSnapshot | None = None
    stale: bool = True
    retry_at: float = 0.0
    task: asyncio.Task[None] | None = None
    logged: str = ""   # the last failure logged (each new one is logged, a repeat at most once a minute)
    logged_at: float = -MAX_AGE


class CatalogReader:
    """Snapshots per database of one cluster (see the module docstring). `cluster`: the core Cluster."""

    def __init__(self, cluster: Any) -> None:
        self._cluster = cluster
        self._databases: dict[str, _Database] = {}
        self.reads = 0

    def snapshot(self, database: str, now: float) -> CatalogSnapshot | None:
        """The fresh snapshot of `database`, or None (one is being read: try again later)."""
        state = self._databases.get(database)
        if state is None:
            if len(self._databases) >= MAX_DATABASES:
                oldest = next(iter(self._databases))
                self._drop(oldest)
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
        cluster = self._cluster
        health = cluster.config.health
        topology = cluster.topology
        address = topology.writer if topology is not None else cluster.config.instances[0]
        conn: PgSqlConnection | None = None
        started = asyncio.get_running_loop().time()
        try:
            if address is None:
                raise OSError("no writer")
            conn = PgSqlConnection(address, health.user or "postgres", health.password, database, APPLICATION_NAME,
                                   health.tls)
            await asyncio.wait_for(conn.connect(), health.timeout)
            rows = await asyncio.wait_for(conn.query(QUERY), max(health.timeout, 5.0))
            self.reads += 1
            state.snapshot = CatalogSnapshot.from_rows(rows, cluster.cache.clock() if cluster.cache else started)
            state.stale = False
        except (OSError, EOFError, TimeoutError, ProxyError, QueryFailed, ValueError, struct.error) as exc:
            now = cluster.cache.clock() if cluster.cache else started
            if str(exc) != state.logged or now - state.logged_at >= MAX_AGE:
                state.logged, state.logged_at = str(exc), now
                log.info("cluster %s: the query cache could not read the catalog of database %s on %s: %s "
                         "(nothing of it is cached meanwhile)", cluster.name, database, address, exc)
            state.retry_at = now + RETRY_AFTER
        finally:
            if conn is not None:
                conn.close()
            if state.task is asyncio.current_task():
                state.task = None

    def _drop(self, database: str) -> None:
        state = self._databases.pop(database)
        if state.task is not None:
            state.task.cancel()

    def close(self) -> None:
        for database in list(self._databases):
            self._drop(database)
