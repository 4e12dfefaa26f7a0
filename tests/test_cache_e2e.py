"""The query-result cache (SPEC §11) end to end: dbproxy processes in front of the test cluster's
primary, with the memory backend and with a private redis-server shared by two proxies.

Whether a read was answered from the cache is seen from a change made directly on the server
(not through dbproxy, so nothing is invalidated): a cached read still returns the old row.
"""

from __future__ import annotations

import json
import shutil
import time
import urllib.request
from collections.abc import Iterator

import pytest
from conftest import free_port
from e2e_helpers import (
    EndpointSpec,
    RawClient,
    app_database,
    first_error,
    routing_config,
    running_proxy,
    single_value,
)
from redis_helpers import RedisServer

from deploy.pgcluster import HOST, PgCluster

DB = "cache_e2e"
HTTP_PORT = free_port()
SETUP = """
CREATE TABLE items (id int PRIMARY KEY, v text, n int DEFAULT 0, ts timestamptz DEFAULT '2024-01-01 12:00:00+00');
INSERT INTO items (id, v) VALUES (1, 'a'), (2, 'b'), (3, 'c');
CREATE TABLE other (id int PRIMARY KEY, v text);
INSERT INTO other VALUES (1, 'o');
CREATE SCHEMA s1; CREATE SCHEMA s2;
CREATE TABLE s1.pathed (v text); INSERT INTO s1.pathed VALUES ('one');
CREATE TABLE s2.pathed (v text); INSERT INTO s2.pathed VALUES ('two');
"""
CACHE = """
[clusters.main.cache]
backend = "{backend}"
max_memory = "4MB"
rules = [ {{ match = "^SELECT v.* FROM items", ttl = "60s" }}, {{ match = "^SELECT .* FROM pathed", ttl = "60s" }},
          {{ match = "^SELECT ts::text FROM items", ttl = "60s" }} ]
"""


def config(pg: PgCluster, endpoint: EndpointSpec, backend: str) -> str:
    return routing_config([pg.instance_addrs()[0]], [endpoint], interval_ms=200, pool_size=4) + CACHE.format(
        backend=backend)


def direct(pg: PgCluster, sql: str) -> str:
    return pg.sql(0, sql, user="app", db=DB)


def connect(port: int) -> RawClient:
    client = RawClient(port)
    client.login("app", DB)
    return client


@pytest.fixture(scope="module")
def cache_db(pg_cluster: PgCluster) -> Iterator[str]:
    with app_database(pg_cluster, DB, SETUP) as name:
        yield name


@pytest.fixture(scope="module")
def memory_port(pg_cluster: PgCluster, cache_db: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[int]:
    endpoint = EndpointSpec("writer", "writer")
    text = config(pg_cluster, endpoint, "memory").replace("[server]\n", f'[server]\nhttp_listen = "{HOST}:{HTTP_PORT}"\n', 1)
    with running_proxy(text, tmp_path_factory.mktemp("cache-memory"), endpoint.port):
        yield endpoint.port


@pytest.fixture(scope="module")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    if shutil.which("redis-server") is None:
        pytest.skip("redis-server is not installed")
    server = RedisServer(tmp_path_factory.mktemp("redis"))
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def redis_ports(pg_cluster: PgCluster, cache_db: str, redis_server: RedisServer,
                tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[int, int]]:
    url = f"redis://{HOST}:{redis_server.port}/0"
    a, b = EndpointSpec("writer", "writer"), EndpointSpec("writer", "writer")
    with running_proxy(config(pg_cluster, a, url), tmp_path_factory.mktemp("cache-a"), a.port), \
            running_proxy(config(pg_cluster, b, url), tmp_path_factory.mktemp("cache-b"), b.port):
        yield a.port, b.port


# ------------------------------------------------------------------------------ memory backend


def test_a_rule_caches_and_a_write_through_dbproxy_invalidates(memory_port: int, pg_cluster: PgCluster) -> None:
    client = connect(memory_port)
    sql = "SELECT v FROM items WHERE id = 1"
    assert single_value(client, sql) == "a"
    direct(pg_cluster, "UPDATE items SET v = 'direct' WHERE id = 1")
    assert single_value(client, sql) == "a"                      # a hit: the direct write is not seen
    assert single_value(connect(memory_port), sql) == "a"        # another client shares the entry
    client.query("UPDATE items SET v = 'proxied' WHERE id = 1")
    assert single_value(client, sql) == "proxied"                # invalidated before the UPDATE's ReadyForQuery
    direct(pg_cluster, "UPDATE items SET v = 'a' WHERE id = 1")


def test_a_hint_opts_in_and_off_opts_out(memory_port: int, pg_cluster: PgCluster) -> None:
    client = connect(memory_port)
    hinted = "/* dbproxy:cache ttl=30s */ SELECT v FROM other WHERE id = 1"
    plain = "SELECT v FROM other WHERE id = 1"
    off = "/* dbproxy:cache off */ SELECT v FROM items WHERE id = 2"
    assert single_value(client, hinted) == "o"
    assert single_value(client, plain) == "o"
    assert single_value(client, off) == "b"
    direct(pg_cluster, "UPDATE other SET v = 'o2' WHERE id = 1; UPDATE items SET v = 'b2' WHERE id = 2")
    assert single_value(client, hinted) == "o"      # cached by its hint
    assert single_value(client, plain) == "o2"      # no rule, no hint: never cached
    assert single_value(client, off) == "b2"        # a rule matches, the hint opts out
    client.query("UPDATE other SET v = 'o' WHERE id = 1")
    assert single_value(client, hinted) == "o"
    direct(pg_cluster, "UPDATE items SET v = 'b' WHERE id = 2")


def test_nothing_is_cached_inside_a_transaction(memory_port: int, pg_cluster: PgCluster) -> None:
    client = connect(memory_port)
    sql = "SELECT v FROM items WHERE id = 3"
    for _ in range(2):
        client.query("BEGIN")
        assert single_value(client, sql) == "c"
        client.query("COMMIT")
        direct(pg_cluster, "UPDATE items SET v = 'c' WHERE id = 3")   # not a change: the next read may miss
    client.query("BEGIN")
    single_value(client, sql)
    direct(pg_cluster, "UPDATE items SET v = 'c-direct' WHERE id = 3")
    assert single_value(client, sql) == "c-direct"
    client.query("COMMIT")
    direct(pg_cluster, "UPDATE items SET v = 'c' WHERE id = 3")


def test_a_write_inside_a_transaction_invalidates_at_commit(memory_port: int) -> None:
    reader, writer = connect(memory_port), connect(memory_port)
    sql = "SELECT v FROM items WHERE id = 2"
    assert single_value(reader, sql) == "b"
    writer.query("BEGIN")
    writer.query("UPDATE items SET v = 'tx' WHERE id = 2")
    assert single_value(reader, sql) == "b"
    writer.query("COMMIT")
    assert single_value(reader, sql) == "tx"
    writer.query("UPDATE items SET v = 'b' WHERE id = 2")
    assert single_value(reader, sql) == "b"


def test_volatile_functions_and_writes_are_never_cached(memory_port: int) -> None:
    client = connect(memory_port)
    first = single_value(client, "SELECT v || clock_timestamp()::text FROM items WHERE id = 1")
    time.sleep(0.01)
    assert single_value(client, "SELECT v || clock_timestamp()::text FROM items WHERE id = 1") != first
    first = single_value(client, "SELECT v || now()::text FROM items WHERE id = 1")
    time.sleep(0.01)
    assert single_value(client, "SELECT v || now()::text FROM items WHERE id = 1") != first
    first = single_value(client, "SELECT v || random()::text FROM items WHERE id = 1")
    assert single_value(client, "SELECT v || random()::text FROM items WHERE id = 1") != first
    write = "/* dbproxy:cache ttl=30s */ UPDATE items SET n = n + 1 WHERE id = 3 RETURNING n"
    assert int(single_value(client, write) or 0) + 1 == int(single_value(client, write) or 0)


def test_search_path_and_timezone_never_share_an_entry(memory_port: int) -> None:
    one, two = connect(memory_port), connect(memory_port)
    one.query("SET search_path = s1")
    two.query("SET search_path = s2")
    assert single_value(one, "SELECT v FROM pathed") == "one"
    assert single_value(two, "SELECT v FROM pathed") == "two"
    assert single_value(one, "SELECT v FROM pathed") == "one"
    one.query("SET search_path = public; SET TimeZone = 'UTC'")
    two.query("SET search_path = public; SET TimeZone = 'Asia/Tokyo'")
    sql = "SELECT ts::text FROM items WHERE id = 1"
    assert single_value(one, sql) == "2024-01-01 12:00:00+00"
    assert single_value(two, sql) == "2024-01-01 21:00:00+09"
    assert single_value(one, sql) == "2024-01-01 12:00:00+00"


def test_errors_are_not_cached(memory_port: int) -> None:
    client = connect(memory_port)
    replies = client.query("SELECT v FROM items WHERE id = 1 / 0")
    assert first_error(replies) is not None
    assert first_error(client.query("SELECT v FROM items WHERE id = 1 / 0")) is not None
    assert single_value(client, "SELECT v FROM items WHERE id = 1") == "a"


def test_metrics_and_status_show_the_cache(memory_port: int) -> None:
    client = connect(memory_port)
    for _ in range(3):
        single_value(client, "SELECT v FROM items WHERE id = 1")
    metrics = urllib.request.urlopen(f"http://{HOST}:{HTTP_PORT}/metrics", timeout=5).read().decode()
    assert 'dbproxy_cache_requests_total{cluster="main",result="hit"}' in metrics
    assert "dbproxy_cache_bytes" in metrics
    status = json.loads(urllib.request.urlopen(f"http://{HOST}:{HTTP_PORT}/status", timeout=5).read())
    cache = status["clusters"][0]["cache"]
    assert cache["state"] == "up" and cache["hits"] >= 2 and cache["entries"] >= 1


# ------------------------------------------------------------------------------ redis backend


def test_an_update_through_one_dbproxy_invalidates_the_other(redis_ports: tuple[int, int]) -> None:
    a, b = connect(redis_ports[0]), connect(redis_ports[1])
    sql = "SELECT v FROM items WHERE id = 1"
    a.query("UPDATE items SET v = 'before' WHERE id = 1")
    assert single_value(b, sql) == "before"
    assert single_value(a, sql) == "before"    # (from the entry B stored)
    a.query("UPDATE items SET v = 'after' WHERE id = 1")
    assert single_value(b, sql) == "after"
    a.query("UPDATE items SET v = 'a' WHERE id = 1")
    assert single_value(b, sql) == "a"


def test_entries_are_shared_through_redis(redis_ports: tuple[int, int], pg_cluster: PgCluster) -> None:
    a, b = connect(redis_ports[0]), connect(redis_ports[1])
    sql = "SELECT v FROM items WHERE id = 2"
    assert single_value(a, sql) == "b"
    direct(pg_cluster, "UPDATE items SET v = 'b-direct' WHERE id = 2")
    assert single_value(b, sql) == "b"          # stored by A, served to B
    b.query("UPDATE items SET v = 'b' WHERE id = 2")


def test_a_row_write_through_one_dbproxy_invalidates_only_that_row_in_the_other(
        redis_ports: tuple[int, int], pg_cluster: PgCluster) -> None:
    a, b = connect(redis_ports[0]), connect(redis_ports[1])
    one, two = "SELECT v FROM items WHERE id = 1", "SELECT v FROM items WHERE id = 2"
    assert single_value(b, one) == "a" and single_value(b, two) == "b"
    direct(pg_cluster, "UPDATE items SET v = v || '-direct' WHERE id IN (1, 2)")
    assert single_value(b, one) == "a"                       # cached (in Redis)
    a.query("UPDATE items SET v = 'b2' WHERE id = 2")  # through the other dbproxy: row 2 only
    assert single_value(b, two) == "b2"
    assert single_value(b, one) == "a"                       # row 1 stays cached
    a.query("UPDATE items SET v = CASE id WHEN 1 THEN 'a' ELSE 'b' END WHERE id IN (1, 2)")   # table-wide
    assert single_value(b, one) == "a" and single_value(b, two) == "b"
    a.close()
    b.close()


def test_queries_keep_working_when_redis_stops(redis_ports: tuple[int, int], redis_server: RedisServer) -> None:
    client = connect(redis_ports[0])
    sql = "SELECT v FROM items WHERE id = 3"
    assert single_value(client, sql) == "c"
    redis_server.stop()
    try:
        started = time.monotonic()
        for i in range(20):
            assert single_value(client, sql) == "c"
            client.query(f"UPDATE items SET n = {i} WHERE id = 3")
        assert time.monotonic() - started < 5
        assert single_value(connect(redis_ports[1]), sql) == "c"
    finally:
        redis_server.start()
