"""Row-scoped invalidation, views and the catalog against the real server (SPEC §11, issue 14): a
dbproxy with the memory cache in front of the test cluster's primary.

Whether a read was answered from the cache is seen from a change made directly on the server (not
through dbproxy, so nothing is invalidated): a cached read still returns the old row.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import psycopg
import pytest
from e2e_helpers import (
    EndpointSpec,
    RawClient,
    first_error,
    routing_config,
    running_proxy,
    single_value,
)

from deploy.pgcluster import HOST, PgCluster

DB = "cache_scopes"
SETUP = """
CREATE TABLE acc (id int PRIMARY KEY, v text, n int DEFAULT 0);
INSERT INTO acc (id, v) SELECT i, 'a' || i FROM generate_series(1, 5) i;
CREATE VIEW acc_view AS SELECT id, v FROM acc;
CREATE VIEW acc_named AS SELECT id, v FROM acc;
CREATE TABLE audit (n int);
CREATE TABLE watched (id int PRIMARY KEY, v text);
INSERT INTO watched VALUES (1, 'w');
CREATE FUNCTION log_it() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN INSERT INTO audit VALUES (NEW.id); RETURN NEW; END $$;
CREATE TRIGGER watched_log AFTER UPDATE ON watched FOR EACH ROW EXECUTE FUNCTION log_it();
CREATE FUNCTION touch(i int) RETURNS int LANGUAGE sql AS $$ UPDATE acc SET n = n + 1 WHERE id = i RETURNING n $$;
"""
CACHE = """
[clusters.main.cache]
backend = "memory"
rules = [ { match = "^SELECT .* FROM acc_named", ttl = "60s", tables = ["acc"] },
          { match = "^SELECT .* FROM (acc|acc_view|audit|later)\\\\b", ttl = "60s" } ]
"""


def direct(pg: PgCluster, sql: str) -> str:
    return pg.sql(0, sql, user="app", db=DB)


@pytest.fixture(scope="module")
def port(pg_cluster: PgCluster, tmp_path_factory: pytest.TempPathFactory) -> Iterator[int]:
    pg_cluster.sql(0, f"DROP DATABASE IF EXISTS {DB} WITH (FORCE)")
    pg_cluster.sql(0, f"CREATE DATABASE {DB} OWNER app")
    pg_cluster.sql(0, SETUP, user="app", db=DB)
    endpoint = EndpointSpec("writer", "writer")
    text = routing_config([pg_cluster.instance_addrs()[0]], [endpoint], interval_ms=200, pool_size=4) + CACHE
    with running_proxy(text, tmp_path_factory.mktemp("cache-scopes"), endpoint.port):
        client = connect(endpoint.port)
        single_value(client, "SELECT v FROM acc WHERE id = 5")   # the first read of the database reads its catalog
        time.sleep(0.5)
        client.close()
        yield endpoint.port
    pg_cluster.sql(0, f"DROP DATABASE IF EXISTS {DB} WITH (FORCE)")


def connect(port: int) -> RawClient:
    client = RawClient(port)
    client.login("app", DB)
    return client


def test_a_row_write_invalidates_only_its_rows(port: int, pg_cluster: PgCluster) -> None:
    client, writer = connect(port), connect(port)
    assert single_value(client, "SELECT v FROM acc WHERE id = 1") == "a1"
    assert single_value(client, "SELECT v FROM acc WHERE id = 2") == "a2"
    assert single_value(client, "SELECT count(*) FROM acc WHERE v LIKE 'a%'") == "5"
    direct(pg_cluster, "UPDATE acc SET v = 'direct' WHERE id IN (1, 2)")   # not seen by dbproxy
    assert single_value(client, "SELECT v FROM acc WHERE id = 1") == "a1"          # cached
    assert first_error(writer.query("UPDATE acc SET v = 'proxy' WHERE id = 2")) is None
    assert single_value(client, "SELECT v FROM acc WHERE id = 1") == "a1"          # another row: still cached
    assert single_value(client, "SELECT v FROM acc WHERE id = '02'") == "proxy"    # its row: the new value
    assert single_value(client, "SELECT v FROM acc WHERE id = 2") == "proxy"
    assert single_value(client, "SELECT count(*) FROM acc WHERE v LIKE 'a%'") == "3"   # a whole-table read: invalidated
    client.close()
    writer.close()


def test_prepared_writes_and_reads_are_row_scoped(port: int, pg_cluster: PgCluster) -> None:
    dsn = f"host={HOST} port={port} user=app dbname={DB}"
    sql = "SELECT v FROM acc WHERE id = %s"
    with psycopg.connect(dsn, autocommit=True) as reader, psycopg.connect(dsn, autocommit=True) as writer:
        for prepare in (True, False):
            assert reader.execute(sql, (3,), prepare=prepare).fetchone() is not None
            assert reader.execute(sql, (4,), prepare=prepare).fetchone() is not None
        direct(pg_cluster, "UPDATE acc SET v = 'direct' WHERE id IN (3, 4)")
        writer.execute("UPDATE acc SET v = %s WHERE id = %s", ("new", 4), prepare=True)
        for prepare in (True, False):
            assert reader.execute(sql, (4,), prepare=prepare).fetchone() == ("new",)
            assert reader.execute(sql, (3,), prepare=prepare).fetchone() != ("direct",)   # still cached
        with writer.cursor(binary=True) as cur:    # binary parameters (an int2/int4 id: row-scoped too)
            cur.execute("UPDATE acc SET v = %b WHERE id = %b", ("bin", 3))
        assert reader.execute(sql, (3,), prepare=True).fetchone() == ("bin",)


def test_inserts_and_deletes_invalidate_the_rows_they_name(port: int) -> None:
    client, writer = connect(port), connect(port)
    assert single_value(client, "SELECT count(*) FROM acc WHERE id = 10") == "0"
    assert first_error(writer.query("INSERT INTO acc (id, v) VALUES (10, 'ten')")) is None
    assert single_value(client, "SELECT count(*) FROM acc WHERE id = 10") == "1"
    assert first_error(writer.query("DELETE FROM acc WHERE id = 10")) is None
    assert single_value(client, "SELECT count(*) FROM acc WHERE id = 10") == "0"
    client.close()
    writer.close()


def test_a_view_is_cached_only_through_a_rule_naming_its_tables(port: int, pg_cluster: PgCluster) -> None:
    client, writer = connect(port), connect(port)
    direct(pg_cluster, "UPDATE acc SET v = 'e5' WHERE id = 5")
    assert single_value(client, "SELECT v FROM acc_view WHERE id = 5") == "e5"
    assert single_value(client, "SELECT v FROM acc_named WHERE id = 5") == "e5"
    direct(pg_cluster, "UPDATE acc SET v = 'f5' WHERE id = 5")
    assert single_value(client, "SELECT v FROM acc_view WHERE id = 5") == "f5"     # a view: never cached
    assert single_value(client, "SELECT v FROM acc_named WHERE id = 5") == "e5"    # its rule names acc: cached
    assert first_error(writer.query("UPDATE acc SET v = 'g5' WHERE id = 5")) is None
    assert single_value(client, "SELECT v FROM acc_named WHERE id = 5") == "g5"    # a write to acc invalidates it
    client.close()
    writer.close()


def test_a_write_through_a_trigger_or_a_function_invalidates(port: int, pg_cluster: PgCluster) -> None:
    client, writer = connect(port), connect(port)
    assert single_value(client, "SELECT count(*) FROM audit") == "0"
    assert first_error(writer.query("UPDATE watched SET v = 'x' WHERE id = 1")) is None   # its trigger writes audit
    assert single_value(client, "SELECT count(*) FROM audit") == "1"
    before = single_value(client, "SELECT n FROM acc WHERE id = 1")
    assert first_error(writer.query("SELECT touch(1)")) is None                 # a function that writes acc
    assert single_value(client, "SELECT n FROM acc WHERE id = 1") == str(int(before or 0) + 1)
    client.close()
    writer.close()


def test_ddl_through_the_proxy_rereads_the_catalog(port: int, pg_cluster: PgCluster) -> None:
    client, writer = connect(port), connect(port)
    assert first_error(writer.query("CREATE TABLE later (id int PRIMARY KEY, v text)")) is None
    assert first_error(writer.query("INSERT INTO later VALUES (1, 'l')")) is None
    for _ in range(3):   # the catalog is read again (in the background) before later is cached
        single_value(client, "SELECT v FROM later WHERE id = 1")
        time.sleep(0.2)
    direct(pg_cluster, "UPDATE later SET v = 'direct'")
    assert single_value(client, "SELECT v FROM later WHERE id = 1") == "l"            # a table now: cached
    assert first_error(writer.query(
        "DROP TABLE later; CREATE VIEW later AS SELECT id, v FROM acc")) is None
    for _ in range(3):
        single_value(client, "SELECT v FROM later WHERE id = 1")
        time.sleep(0.2)
    direct(pg_cluster, "UPDATE acc SET v = 'via view' WHERE id = 1")
    assert single_value(client, "SELECT v FROM later WHERE id = 1") == "via view"     # a view now: not cached
    client.close()
    writer.close()
