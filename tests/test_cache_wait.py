"""The query cache (SPEC §11) and misses that wait for a server connection: a cacheable read whose
client has no server yet waits in its pool's queue (the pool's one connection is busy) or for a new
connection to be opened (a fresh pool, min_idle 0); its response is stored all the same, for the simple
protocol and for prepared reads (psycopg's unnamed Parse/Bind, asyncpg's named statements), with the
memory backend and with Redis.

A hit is seen from a change made directly on the server (not through dbproxy, so nothing is
invalidated): a cached read still returns the old row; /status counts the hit.
"""

from __future__ import annotations

import asyncio
import json
import time
import urllib.request
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, TypeVar

import asyncpg
import psycopg
import pytest
from conftest import free_port
from e2e_helpers import (
    EndpointSpec,
    RawClient,
    app_database,
    data_rows,
    first_error,
    query_message,
    routing_config,
    running_proxy,
    single_value,
)
from redis_helpers import cache_backend

from deploy.pgcluster import HOST, PgCluster

DB = "cache_wait"
SETUP = """
CREATE TABLE items (id int PRIMARY KEY, v text);
INSERT INTO items SELECT i, 'v' || i FROM generate_series(1, 20) i;
"""
CACHE = """
[clusters.main.cache]
backend = "{backend}"
rules = [ {{ match = "^SELECT v FROM items", ttl = "60s" }} ]
"""
FRESH_USERS = ("fresh1", "fresh2", "fresh3", "fresh4")   # each test that needs a pool never used takes one
WAIT = 0.4   # how long a waiting client is left waiting before its server is freed
T = TypeVar("T")


@dataclass
class Proxy:
    port: int
    http: int


def direct(pg: PgCluster, sql: str) -> None:
    pg.sql(0, sql, user="app", db=DB)


def counts(proxy: Proxy) -> tuple[int, int]:
    """(hits, misses) of the cluster's cache, as /status (and SHOW CACHE) count them."""
    status = json.loads(urllib.request.urlopen(f"http://{HOST}:{proxy.http}/status", timeout=5).read())
    cache = status["clusters"][0]["cache"]
    return int(cache["hits"]), int(cache["misses"])


def hits(proxy: Proxy) -> int:
    return counts(proxy)[0]


def misses(proxy: Proxy) -> int:
    return counts(proxy)[1]


def connect(proxy: Proxy, user: str = "app") -> RawClient:
    client = RawClient(proxy.port)
    client.login(user, DB)
    return client


def backends(pg: PgCluster) -> int:
    """The server connections dbproxy's pools hold to this test's database."""
    return int(pg.sql(0, f"SELECT count(*) FROM pg_stat_activity WHERE datname = '{DB}' AND usename = 'app' "
                         "AND pid <> pg_backend_pid() AND application_name NOT LIKE 'dbproxy-%'"))


@pytest.fixture(scope="module")
def wait_db(pg_cluster: PgCluster) -> Iterator[str]:
    with app_database(pg_cluster, DB, SETUP) as name:
        yield name


@pytest.fixture(scope="module", params=["memory", "redis"])
def proxy(request: pytest.FixtureRequest, pg_cluster: PgCluster, wait_db: str,
          tmp_path_factory: pytest.TempPathFactory) -> Iterator[Proxy]:
    endpoint = EndpointSpec("writer", "writer")
    http = free_port()
    text = routing_config([pg_cluster.instance_addrs()[0]], [endpoint], interval_ms=200, pool_size=1)
    text = text.replace("[server]\n", f'[server]\nhttp_listen = "{HOST}:{http}"\n', 1)
    text += "".join(f'\n[[users]]\nname = "{user}"\nserver_user = "app"\n' for user in FRESH_USERS)
    with (cache_backend(request.param, tmp_path_factory.mktemp("redis-wait")) as backend,
          running_proxy(text + CACHE.format(backend=backend), tmp_path_factory.mktemp("cache-wait"), endpoint.port)):
        warm = RawClient(endpoint.port)   # the database's catalog is read now (not in the tests' waits)
        warm.login("app", DB)
        assert first_error(warm.query("SELECT 1")) is None
        warm.close()
        yield Proxy(endpoint.port, http)


@pytest.fixture
def holder(proxy: Proxy) -> Iterator[RawClient]:
    """A client holding the pool's only server connection (an open transaction) until it commits; its
    application_name differs, so the server gets the waiting client's settings (SET/RESET) first."""
    client = connect(proxy)
    assert first_error(client.query("SET application_name = 'holder'")) is None
    assert first_error(client.query("BEGIN")) is None
    assert first_error(client.query("SELECT 1")) is None
    yield client
    client.query("COMMIT")
    client.close()


def while_held(holder: RawClient, call: Callable[[], T]) -> T:
    """call() in a thread that must wait for the server holder holds; the holder commits after WAIT."""
    with ThreadPoolExecutor(1) as pool:
        future = pool.submit(call)
        time.sleep(WAIT)
        assert not future.done(), "the read did not wait for the busy pool"
        assert first_error(holder.query("COMMIT")) is None
        return future.result(timeout=10)


def test_a_simple_miss_that_waited_for_the_busy_pool_is_stored(proxy: Proxy, holder: RawClient,
                                                               pg_cluster: PgCluster) -> None:
    sql = "SELECT v FROM items WHERE id = 1"
    client = connect(proxy)
    try:
        missed = misses(proxy)
        client.send(query_message(sql))
        replies = while_held(holder, client.read_until_ready)
        assert data_rows(replies) == [["v1"]], replies
        assert misses(proxy) == missed + 1   # looked up once (not again when its server came)
        direct(pg_cluster, "UPDATE items SET v = 'direct' WHERE id = 1")
        before = hits(proxy)
        assert single_value(client, sql) == "v1"               # a hit: the direct write is not seen
        assert single_value(connect(proxy), sql) == "v1"        # ... by another client too
        assert hits(proxy) == before + 2
    finally:
        client.close()
        direct(pg_cluster, "UPDATE items SET v = 'v1' WHERE id = 1")


def test_a_simple_miss_that_waited_for_a_new_server_connection_is_stored(proxy: Proxy,
                                                                         pg_cluster: PgCluster) -> None:
    sql = "SELECT v FROM items WHERE id = 2"
    opened = backends(pg_cluster)
    client = connect(proxy, FRESH_USERS[0])   # its pool has no connection yet
    try:
        missed = misses(proxy)
        assert single_value(client, sql) == "v2"
        assert misses(proxy) == missed + 1
        assert backends(pg_cluster) == opened + 1   # the read opened the pool's first connection
        direct(pg_cluster, "UPDATE items SET v = 'direct' WHERE id = 2")
        before = hits(proxy)
        assert single_value(client, sql) == "v2"
        assert hits(proxy) == before + 1
    finally:
        client.close()
        direct(pg_cluster, "UPDATE items SET v = 'v2' WHERE id = 2")


def _psycopg_read(port: int, user: str, ident: int) -> Any:
    with psycopg.connect(f"postgresql://{user}@{HOST}:{port}/{DB}", autocommit=True) as conn:
        return conn.execute("SELECT v FROM items WHERE id = %s", (ident,), prepare=False).fetchone()


def test_a_prepared_miss_that_waited_for_the_busy_pool_is_stored(proxy: Proxy, holder: RawClient,
                                                                 pg_cluster: PgCluster) -> None:
    # psycopg's unnamed Parse/Bind/Describe/Execute/Sync in one batch
    missed = misses(proxy)
    assert while_held(holder, lambda: _psycopg_read(proxy.port, "app", 3)) == ("v3",)
    try:
        assert misses(proxy) == missed + 1
        direct(pg_cluster, "UPDATE items SET v = 'direct' WHERE id = 3")
        before = hits(proxy)
        assert _psycopg_read(proxy.port, "app", 3) == ("v3",)
        assert hits(proxy) == before + 1
    finally:
        direct(pg_cluster, "UPDATE items SET v = 'v3' WHERE id = 3")


def test_a_prepared_miss_that_waited_for_a_new_server_connection_is_stored(proxy: Proxy,
                                                                           pg_cluster: PgCluster) -> None:
    opened = backends(pg_cluster)
    missed = misses(proxy)
    assert _psycopg_read(proxy.port, FRESH_USERS[1], 4) == ("v4",)
    try:
        assert misses(proxy) == missed + 1
        assert backends(pg_cluster) == opened + 1
        direct(pg_cluster, "UPDATE items SET v = 'direct' WHERE id = 4")
        before = hits(proxy)
        assert _psycopg_read(proxy.port, FRESH_USERS[1], 4) == ("v4",)
        assert hits(proxy) == before + 1
    finally:
        direct(pg_cluster, "UPDATE items SET v = 'v4' WHERE id = 4")


async def test_an_asyncpg_bind_that_waited_for_the_busy_pool_is_stored(proxy: Proxy, pg_cluster: PgCluster) -> None:
    sql = "SELECT v FROM items WHERE id = $1"
    holding = connect(proxy)
    conn = await asyncpg.connect(f"postgresql://app@{HOST}:{proxy.port}/{DB}")
    try:
        assert await conn.fetchval(sql, 6) == "v6"   # prepared (Parse/Describe/Flush, then Bind...): not cached
        assert first_error(holding.query("BEGIN")) is None
        assert first_error(holding.query("SELECT 1")) is None
        missed = misses(proxy)
        read = asyncio.ensure_future(conn.fetchval(sql, 5))   # Bind/Execute/Sync of the named statement
        await asyncio.sleep(WAIT)
        assert not read.done(), "the read did not wait for the busy pool"
        await asyncio.to_thread(holding.query, "COMMIT")
        assert await asyncio.wait_for(read, 10) == "v5"
        assert misses(proxy) == missed + 1
        direct(pg_cluster, "UPDATE items SET v = 'direct' WHERE id = 5")
        before = hits(proxy)
        assert await conn.fetchval(sql, 5) == "v5"
        assert hits(proxy) == before + 1
    finally:
        holding.close()
        await conn.close()
        direct(pg_cluster, "UPDATE items SET v = 'v5' WHERE id = 5")


def test_a_miss_whose_client_left_while_it_waited_does_not_block_its_key(proxy: Proxy, holder: RawClient,
                                                                         pg_cluster: PgCluster) -> None:
    sql = "SELECT v FROM items WHERE id = 7"
    gone = connect(proxy)
    gone.send(query_message(sql))
    time.sleep(WAIT)   # waiting for the busy pool ...
    gone.close()       # ... when its client goes
    time.sleep(0.2)
    assert first_error(holder.query("COMMIT")) is None
    client = connect(proxy)
    try:
        started = time.monotonic()
        assert single_value(client, sql) == "v7"
        assert time.monotonic() - started < 0.9   # not behind the stampede wait for the miss that left
        direct(pg_cluster, "UPDATE items SET v = 'direct' WHERE id = 7")
        before = hits(proxy)
        assert single_value(client, sql) == "v7"   # stored
        assert hits(proxy) == before + 1
    finally:
        client.close()
        direct(pg_cluster, "UPDATE items SET v = 'v7' WHERE id = 7")
