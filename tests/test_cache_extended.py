"""The query cache and the extended protocol (SPEC §11) end to end: prepared reads through asyncpg and
psycopg cached per statement, parameter values and result formats, with the memory backend and Redis.

As in test_cache_e2e, a hit is seen from a change made directly on the server (not through dbproxy,
so nothing is invalidated): a cached read still returns the old row.
"""

from __future__ import annotations

from collections.abc import Iterator

import asyncpg
import psycopg
import pytest
from e2e_helpers import EndpointSpec, app_database, routing_config, running_proxy
from redis_helpers import cache_backend

from deploy.pgcluster import HOST, PgCluster

DB = "cache_extended"
SETUP = """
CREATE TABLE items (id int PRIMARY KEY, v text, n int DEFAULT 0);
INSERT INTO items (id, v) VALUES (1, 'a'), (2, 'b'), (3, 'c'), (4, 'd');
CREATE TABLE other (id int PRIMARY KEY, n int DEFAULT 0);
INSERT INTO other (id) VALUES (1), (2);
CREATE SCHEMA s2;
CREATE TABLE s2.items (id int PRIMARY KEY, v text, n int DEFAULT 0);
INSERT INTO s2.items (id, v) VALUES (2, 'b-s2');
"""
CACHE = """
[clusters.main.cache]
backend = "{backend}"
rules = [ {{ match = "^SELECT v.* FROM items", ttl = "60s" }}, {{ match = "^SELECT n FROM items", ttl = "60s" }} ]
"""


def direct(pg: PgCluster, sql: str) -> None:
    pg.sql(0, sql, user="app", db=DB)


def dsn(port: int) -> str:
    return f"postgresql://app@{HOST}:{port}/{DB}"


@pytest.fixture(scope="module")
def extended_db(pg_cluster: PgCluster) -> Iterator[str]:
    with app_database(pg_cluster, DB, SETUP) as name:
        yield name


@pytest.fixture(scope="module", params=["memory", "redis"])
def port(request: pytest.FixtureRequest, pg_cluster: PgCluster, extended_db: str,
         tmp_path_factory: pytest.TempPathFactory) -> Iterator[int]:
    endpoint = EndpointSpec("writer", "writer")
    text = routing_config([pg_cluster.instance_addrs()[0]], [endpoint], interval_ms=200, pool_size=4)
    try:
        with (cache_backend(request.param, tmp_path_factory.mktemp("redis-ext")) as backend,
              running_proxy(text + CACHE.format(backend=backend), tmp_path_factory.mktemp("cache-ext"), endpoint.port)):
            yield endpoint.port
    finally:
        direct(pg_cluster, "UPDATE items SET v = CASE id WHEN 1 THEN 'a' WHEN 2 THEN 'b' WHEN 3 THEN 'c' ELSE 'd' END")


async def test_asyncpg_reads_are_cached_per_parameter_value(port: int, pg_cluster: PgCluster) -> None:
    conn = await asyncpg.connect(dsn(port))
    other = await asyncpg.connect(dsn(port))
    try:
        sql = "SELECT v FROM items WHERE id = $1"
        assert await conn.fetchval(sql, 1) == "a"
        assert await conn.fetchval(sql, 1) == "a"   # prepared before: Bind/Execute/Sync only, stored
        assert await conn.fetchval(sql, 2) == "b"
        direct(pg_cluster, "UPDATE items SET v = v || '-direct' WHERE id IN (1, 2, 3)")
        assert await conn.fetchval(sql, 1) == "a"          # a hit
        assert await conn.fetchval(sql, 2) == "b"          # a hit of its own entry
        assert await conn.fetchval(sql, 3) == "c-direct"   # another value never shares an entry
        # Another client: its first use of the statement is prepared with a Flush (no Sync) and bound in
        # the same batch: that one goes to the server; the next shares the entry.
        assert await other.fetchval(sql, 1) == "a-direct"
        assert await other.fetchval(sql, 1) == "a"
        await other.execute("UPDATE items SET v = 'a2' WHERE id = 1")
        assert await conn.fetchval(sql, 1) == "a2"         # invalidated by the UPDATE through dbproxy
        assert await conn.fetchval(sql, 2) == "b"          # another row: still cached (row-scoped)
        for _ in range(2):   # prepared and bound at once (not cached), then a miss stored
            rows = await conn.fetch("SELECT v, n FROM items WHERE id = $1", 4)
            assert [tuple(r) for r in rows] == [("d", 0)]
        direct(pg_cluster, "UPDATE items SET n = 7 WHERE id = 4")
        assert [tuple(r) for r in await conn.fetch("SELECT v, n FROM items WHERE id = $1", 4)] == [("d", 0)]
    finally:
        await conn.close()
        await other.close()
        direct(pg_cluster, "UPDATE items SET v = CASE id WHEN 1 THEN 'a' WHEN 2 THEN 'b' WHEN 3 THEN 'c' "
                           "ELSE 'd' END, n = 0")


def test_psycopg_prepared_and_unnamed_reads_are_cached(port: int, pg_cluster: PgCluster) -> None:
    with psycopg.connect(dsn(port), autocommit=True) as conn:
        sql = "SELECT v FROM items WHERE id = %s"
        for prepare in (True, False):   # a named statement (Parse once, then Bind), and unnamed Parse+Bind
            ident = 1 if prepare else 2
            original = conn.execute(sql, (ident,), prepare=prepare).fetchone()
            assert original is not None
            assert conn.execute(sql, (ident,), prepare=prepare).fetchone() == original
            direct(pg_cluster, f"UPDATE items SET v = v || '-direct' WHERE id = {ident}")
            assert conn.execute(sql, (ident,), prepare=prepare).fetchone() == original   # a hit
            assert conn.execute(sql, (3,), prepare=prepare).fetchone() == ("c",)
            conn.execute("UPDATE items SET n = n + 1 WHERE id = %s", (ident,), prepare=prepare)
            assert conn.execute(sql, (ident,), prepare=prepare).fetchone() == (original[0] + "-direct",)
        direct(pg_cluster, "UPDATE items SET v = 'a' WHERE id = 1; UPDATE items SET v = 'b' WHERE id = 2")
        conn.execute("UPDATE items SET n = 0")


def test_binary_and_text_results_never_share_an_entry(port: int, pg_cluster: PgCluster) -> None:
    with psycopg.connect(dsn(port), autocommit=True) as conn:
        sql = "SELECT n FROM items WHERE id = %s"
        assert conn.execute(sql, (4,), prepare=True, binary=True).fetchone() == (0,)
        assert conn.execute(sql, (4,), prepare=True, binary=True).fetchone() == (0,)
        direct(pg_cluster, "UPDATE items SET n = 5 WHERE id = 4")
        assert conn.execute(sql, (4,), prepare=True, binary=True).fetchone() == (0,)    # a binary hit
        assert conn.execute(sql, (4,), prepare=True, binary=False).fetchone() == (5,)   # text: its own entry
        assert conn.execute(sql, (4,), prepare=True, binary=False).fetchone() == (5,)
        cursor = conn.cursor(binary=True)
        assert cursor.execute(sql, (4,), prepare=True).fetchone() == (0,)
        conn.execute("UPDATE items SET n = 0 WHERE id = 4")
        assert conn.execute(sql, (4,), prepare=True, binary=True).fetchone() == (0,)
        direct(pg_cluster, "UPDATE items SET n = 9 WHERE id = 4")
        assert conn.execute(sql, (4,), prepare=True, binary=True).fetchone() == (0,)
        assert conn.execute(sql, (4,), prepare=True, binary=False).fetchone() == (9,)
        conn.execute("UPDATE items SET n = 0 WHERE id = 4")


def test_a_write_or_a_read_in_a_transaction_is_not_cached(port: int, pg_cluster: PgCluster) -> None:
    with psycopg.connect(dsn(port), autocommit=True) as conn:
        sql = "SELECT v FROM items WHERE id = %s"
        with conn.transaction():
            assert conn.execute(sql, (3,), prepare=True).fetchone() == ("c",)
            direct(pg_cluster, "UPDATE items SET v = 'c-tx' WHERE id = 3")
            assert conn.execute(sql, (3,), prepare=True).fetchone() == ("c-tx",)
        write = "UPDATE items SET n = n + 1 WHERE id = %s RETURNING n"
        first = conn.execute(write, (3,), prepare=True).fetchone()
        assert first is not None
        assert conn.execute(write, (3,), prepare=True).fetchone() == (first[0] + 1,)
        conn.execute("UPDATE items SET v = 'c', n = 0 WHERE id = 3")


def test_the_same_bind_bytes_of_different_statements_never_share_an_entry(port: int, pg_cluster: PgCluster) -> None:
    """Two clients whose statement of one name (psycopg's first: _pg3_0) has different texts send the
    very same Bind..Sync bytes; the per-cluster memo of those bytes must not answer one with the other's."""
    with (psycopg.connect(dsn(port), autocommit=True) as first, psycopg.connect(dsn(port), autocommit=True) as second):
        for _ in range(3):
            assert first.execute("SELECT v FROM items WHERE id = %s", (2,), prepare=True).fetchone() == ("b",)
            assert second.execute("SELECT n FROM items WHERE id = %s", (2,), prepare=True).fetchone() == (0,)
        direct(pg_cluster, "UPDATE items SET v = 'b-direct', n = 3 WHERE id = 2")
        for _ in range(2):   # hits, each of its own entry
            assert second.execute("SELECT n FROM items WHERE id = %s", (2,), prepare=True).fetchone() == (0,)
            assert first.execute("SELECT v FROM items WHERE id = %s", (2,), prepare=True).fetchone() == ("b",)
        second.execute("UPDATE items SET v = 'b', n = 0 WHERE id = 2")
        assert first.execute("SELECT v FROM items WHERE id = %s", (2,), prepare=True).fetchone() == ("b",)
        assert second.execute("SELECT n FROM items WHERE id = %s", (2,), prepare=True).fetchone() == (0,)


def test_the_same_bind_bytes_of_different_writes_invalidate_what_each_writes(port: int, pg_cluster: PgCluster) -> None:
    """The memo of Bind..Sync bytes also remembers what a bound write writes: a client whose statement of
    that name updates `other` must not make another client's update of `items` (the same bytes) miss
    its invalidation."""
    update_items, update_other = "UPDATE items SET n = n + 1 WHERE id = %s", "UPDATE other SET n = n + 1 WHERE id = %s"
    read = "SELECT n FROM items WHERE id = %s"
    with (psycopg.connect(dsn(port), autocommit=True) as writer, psycopg.connect(dsn(port), autocommit=True) as bystander,
          psycopg.connect(dsn(port), autocommit=True) as reader):
        for _ in range(3):   # each one's first prepared statement: the same name, the same Bind bytes
            bystander.execute(update_other, (2,), prepare=True)
        reader.execute("SELECT 1", prepare=True)   # the reader's own read is its second statement: other bytes
        assert reader.execute(read, (2,), prepare=True).fetchone() == (0,)
        assert reader.execute(read, (2,), prepare=True).fetchone() == (0,)   # stored
        for expected in (1, 2, 3):
            writer.execute(update_items, (2,), prepare=True)
            assert reader.execute(read, (2,), prepare=True).fetchone() == (expected,)   # invalidated each time
            bystander.execute(update_other, (2,), prepare=True)   # the memo now holds the bystander's
        writer.execute("UPDATE items SET n = 0 WHERE id = 2")
        bystander.execute("UPDATE other SET n = 0")


def test_the_same_bind_bytes_under_another_search_path_never_share_an_entry(port: int) -> None:
    """A remembered batch keeps one key per key prefix (database, user, result-affecting settings): the
    same Bind bytes of the same text under another search_path read another table's entry."""
    read = "SELECT v FROM items WHERE id = %s"
    with (psycopg.connect(dsn(port), autocommit=True) as public, psycopg.connect(dsn(port), autocommit=True) as other):
        other.execute("SET search_path = s2, public")
        for _ in range(3):
            assert public.execute(read, (2,), prepare=True).fetchone() == ("b",)
            assert other.execute(read, (2,), prepare=True).fetchone() == ("b-s2",)
