"""The query cache's catalog of a MySQL / MariaDB server (proxy.cache.catalog): information_schema on
the writer, read on a connection of the proxy's own, logged in as the probes are; one snapshot for
all schemas (key ""), as information_schema shows them all.

Opaque: views, system views, sequences, temporary tables. Writes elsewhere: a trigger on the table,
or a foreign key referencing it whose ON DELETE / ON UPDATE is not RESTRICT / NO ACTION (a cascade
writes the referencing table). No integer columns: row-scoped invalidation is PostgreSQL's only.
"""

from __future__ import annotations

import asyncio
from typing import Any

from ...cache.catalog import MAX_RELATIONS, CatalogReader, Relation, add_relation
from ...errors import ProxyError
from . import sql

QUERY = f"""
SELECT t.TABLE_NAME AS name, t.TABLE_TYPE AS kind,
  (SELECT COUNT(*) FROM information_schema.TRIGGERS g
    WHERE g.EVENT_OBJECT_SCHEMA = t.TABLE_SCHEMA AND g.EVENT_OBJECT_TABLE = t.TABLE_NAME)
  + (SELECT COUNT(*) FROM information_schema.REFERENTIAL_CONSTRAINTS r
    WHERE r.UNIQUE_CONSTRAINT_SCHEMA = t.TABLE_SCHEMA AND r.REFERENCED_TABLE_NAME = t.TABLE_NAME
      AND (r.DELETE_RULE NOT IN ('RESTRICT', 'NO ACTION') OR r.UPDATE_RULE NOT IN ('RESTRICT', 'NO ACTION')))
  AS writes
FROM information_schema.TABLES t
WHERE t.TABLE_SCHEMA NOT IN ('mysql', 'information_schema', 'performance_schema', 'sys')
LIMIT {MAX_RELATIONS}
"""
ERRORS = (OSError, EOFError, TimeoutError, ProxyError, ValueError)


def relations_from_rows(rows: list[sql.Row]) -> dict[str, Relation]:
    """The catalog query's rows as relations by (lower-cased) name."""
    relations: dict[str, Relation] = {}
    for row in rows:
        name = row.get("name")
        if name is None:
            continue
        add_relation(relations, name.lower(), Relation(row.get("kind") != "BASE TABLE",
                                                       (row.get("writes") or "0") != "0"))
    return relations


def catalog_reader(cluster: Any) -> CatalogReader:
    """The reader of `cluster`'s (the core Cluster) catalog: the current writer, the health login."""

    async def fetch(database: str) -> dict[str, Relation]:
        health = cluster.config.health
        topology = cluster.topology
        address = topology.writer if topology is not None else cluster.config.instances[0]
        if address is None:
            raise OSError("no writer")
        conn = await sql.connect(address, health.user or "root", health.password, health.timeout, health.tls)
        try:
            return relations_from_rows(await sql.query(conn, QUERY, max(health.timeout, 5.0)))
        finally:
            conn.close("catalog read")

    clock = cluster.cache.clock if cluster.cache is not None else asyncio.get_running_loop().time
    return CatalogReader(cluster.name, fetch, clock, ERRORS)
