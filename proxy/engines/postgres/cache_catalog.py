"""The query cache's catalog of a PostgreSQL database (proxy.cache.catalog): read from the writer's
pg_class on a connection of its own, logged in as the probes are.

Opaque: views, materialized views, foreign, partitioned and inherited tables (relhassubclass or
relispartition), and names some session uses for a temporary table. Writes elsewhere: a trigger
other than a foreign key check (cascades are triggers on the referenced table), or a rule.
Integer columns: int2, int4, int8.
"""

from __future__ import annotations

import asyncio
import json
import struct
from typing import Any

from ...cache.catalog import MAX_RELATIONS, CatalogReader, Relation, add_relation
from ...errors import ProxyError
from .sql import PgSqlConnection, QueryFailed, Row

APPLICATION_NAME = "dbproxy-cache-catalog"
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
ERRORS = (OSError, EOFError, TimeoutError, ProxyError, QueryFailed, ValueError, struct.error)


def relations_from_rows(rows: list[Row]) -> dict[str, Relation]:
    """The catalog query's rows as relations by name."""
    relations: dict[str, Relation] = {}
    for row in rows:
        if len(row) != 6 or row[0] is None:
            continue
        name, kind, temp, inherits, writes, columns = row[0], *row[1:]
        try:
            ints = frozenset(str(c) for c in json.loads(columns or "[]"))
        except ValueError:
            ints = frozenset()
        add_relation(relations, name, Relation(kind != "r" or temp == "true" or inherits == "true",
                                               writes == "true", ints))
    return relations


def catalog_reader(cluster: Any) -> CatalogReader:
    """The reader of `cluster`'s (the core Cluster) databases: the current writer, the health login."""

    async def fetch(database: str) -> dict[str, Relation]:
        health = cluster.config.health
        topology = cluster.topology
        address = topology.writer if topology is not None else cluster.config.instances[0]
        if address is None:
            raise OSError("no writer")
        conn = PgSqlConnection(address, health.user or "postgres", health.password, database, APPLICATION_NAME,
                               health.tls)
        try:
            await asyncio.wait_for(conn.connect(), health.timeout)
            return relations_from_rows(await asyncio.wait_for(conn.query(QUERY), max(health.timeout, 5.0)))
        finally:
            conn.close()

    clock = cluster.cache.clock if cluster.cache is not None else asyncio.get_running_loop().time
    return CatalogReader(cluster.name, fetch, clock, ERRORS)
