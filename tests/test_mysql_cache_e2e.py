"""The query-result cache for a MySQL cluster (SPEC §11 + §12) end to end: a dbproxy with the memory
cache in front of the test MariaDB primary, PyMySQL clients (text protocol, COM_QUERY).

Whether a read was answered from the cache is seen from a change made directly on the server (not
through dbproxy, so nothing is invalidated): a cached read still returns the old row.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pymysql
import pytest
from mysql_e2e_helpers import MysqlProxy, admin_rows, connect, direct, mysql_module_proxy, rows, scalar
from redis_helpers import RedisServer

from deploy.mysqlcluster import APP_DB, APP_PASSWORD, APP_USER, HOST, MysqlCluster

CACHE = """
[clusters.my.cache]
backend = "memory"
rules = [ { match = "^SELECT .* FROM cache_named", ttl = "60s", tables = ["cache_items"] },
          { match = "^SELECT .* FROM cache_(items|view|audit|other)\\\\b", ttl = "60s" } ]
"""
SETUP = [
    "DROP TABLE IF EXISTS cache_items, cache_audit, cache_watched, cache_other",
    "DROP VIEW IF EXISTS cache_view, cache_named",
    "CREATE TABLE cache_items (id int PRIMARY KEY, v varchar(40), t datetime DEFAULT '2024-01-01 12:00:00')",
    "INSERT INTO cache_items (id, v) VALUES (1, 'a'), (2, 'b'), (3, 'c')",
    "CREATE TABLE cache_other (id int PRIMARY KEY, v varchar(40))",
    "INSERT INTO cache_other VALUES (1, 'o')",
    "CREATE VIEW cache_view AS SELECT id, v FROM cache_items",
    "CREATE VIEW cache_named AS SELECT id, v FROM cache_items",
    "CREATE TABLE cache_audit (n int)",
    "CREATE TABLE cache_watched (id int PRIMARY KEY, v varchar(40))",
    "INSERT INTO cache_watched VALUES (1, 'w')",
    "CREATE TRIGGER cache_watched_log AFTER UPDATE ON cache_watched FOR EACH ROW INSERT INTO cache_audit VALUES (NEW.id)",
]


@pytest.fixture(scope="module")
def proxy(mysql_cluster: MysqlCluster, tmp_path_factory: pytest.TempPathFactory) -> Iterator[MysqlProxy]:
    conn = direct(mysql_cluster)
    for statement in SETUP:
        with conn.cursor() as cur:
            cur.execute(statement)
    conn.close()
    with mysql_module_proxy(mysql_cluster, Path(tmp_path_factory.mktemp("mysql-cache")), endpoints_extra=CACHE) as running:
        client = connect(running)
        scalar(client, "SELECT v FROM cache_items WHERE id = 3")   # the first read reads the catalog
        time.sleep(0.5)
        client.close()
        yield running
    conn = direct(mysql_cluster)
    for statement in SETUP[:2]:
        with conn.cursor() as cur:
            cur.execute(statement)
    conn.close()


def on_server(cluster: MysqlCluster, sql: str) -> None:
    conn = direct(cluster)
    with conn.cursor() as cur:
        cur.execute(sql)
    conn.close()


@pytest.fixture
def reset(mysql_cluster: MysqlCluster) -> Iterator[None]:
    yield
    on_server(mysql_cluster, "UPDATE cache_items SET v = CASE id WHEN 1 THEN 'a' WHEN 2 THEN 'b' ELSE 'c' END")


def test_a_rule_caches_and_a_write_through_dbproxy_invalidates(proxy: MysqlProxy, mysql_cluster: MysqlCluster,
                                                               reset: None) -> None:
    client, writer = connect(proxy), connect(proxy)
    sql = "SELECT v FROM cache_items WHERE id = 1"
    assert scalar(client, sql) == "a"
    on_server(mysql_cluster, "UPDATE cache_items SET v = 'direct' WHERE id = 1")
    assert scalar(client, sql) == "a"                             # a hit
    assert scalar(writer, sql) == "a"                             # another client shares the entry
    assert scalar(client, "SELECT v FROM cache_other WHERE id = 1") == "o"
    with writer.cursor() as cur:
        cur.execute("UPDATE cache_items SET v = 'proxy' WHERE id = 1")
    assert scalar(client, sql) == "proxy"                         # invalidated before the OK reached the writer
    on_server(mysql_cluster, "UPDATE cache_other SET v = 'o2'")
    assert scalar(client, "SELECT v FROM cache_other WHERE id = 1") == "o"   # another table: still cached
    on_server(mysql_cluster, "UPDATE cache_other SET v = 'o'")
    client.close()
    writer.close()


def test_a_write_in_a_transaction_invalidates_at_commit(proxy: MysqlProxy, reset: None) -> None:
    client, writer = connect(proxy), connect(proxy, autocommit=False)
    sql = "SELECT v FROM cache_items WHERE id = 2"
    assert scalar(client, sql) == "b"
    with writer.cursor() as cur:
        cur.execute("UPDATE cache_items SET v = 'in-tx' WHERE id = 2")
    assert scalar(client, sql) == "b"
    writer.commit()
    assert scalar(client, sql) == "in-tx"
    client.close()
    writer.close()


def test_nothing_is_cached_in_a_transaction_or_volatile_or_from_a_view(proxy: MysqlProxy,
                                                                      mysql_cluster: MysqlCluster,
                                                                      reset: None) -> None:
    client = connect(proxy)
    with client.cursor() as cur:
        cur.execute("BEGIN")
    assert scalar(client, "SELECT v FROM cache_items WHERE id = 3") == "c"
    on_server(mysql_cluster, "UPDATE cache_items SET v = 'c1' WHERE id = 3")
    with client.cursor() as cur:
        cur.execute("COMMIT")
    assert scalar(client, "SELECT v FROM cache_items WHERE id = 3") == "c1"   # the read in the transaction stored nothing
    first = scalar(client, "SELECT v, NOW(6) FROM cache_items WHERE id = 3 AND RAND() >= 0")
    assert first == "c1"
    assert scalar(client, "SELECT v FROM cache_view WHERE id = 3") == "c1"
    assert scalar(client, "SELECT v FROM cache_named WHERE id = 3") == "c1"
    on_server(mysql_cluster, "UPDATE cache_items SET v = 'c2' WHERE id = 3")
    assert scalar(client, "SELECT v FROM cache_view WHERE id = 3") == "c2"    # a view: never cached
    assert scalar(client, "SELECT v FROM cache_named WHERE id = 3") == "c1"   # its rule names cache_items
    with client.cursor() as cur:
        cur.execute("UPDATE cache_items SET v = 'c3' WHERE id = 3")
    assert scalar(client, "SELECT v FROM cache_named WHERE id = 3") == "c3"
    client.close()


def test_time_zone_and_sql_mode_never_share_an_entry(proxy: MysqlProxy) -> None:
    utc, tokyo = connect(proxy), connect(proxy)
    with tokyo.cursor() as cur:
        cur.execute("SET time_zone = '+09:00'")
    sql = "SELECT CAST(UNIX_TIMESTAMP(t) AS CHAR) FROM cache_items WHERE id = 1"
    assert scalar(utc, sql) != scalar(tokyo, sql)
    with utc.cursor() as cur:
        cur.execute("SET sql_mode = 'PIPES_AS_CONCAT'")
    concat = "SELECT v || 'x' FROM cache_items WHERE id = 1"
    assert scalar(utc, concat) == "ax" and scalar(tokyo, concat) == 0   # || is OR without PIPES_AS_CONCAT
    utc.close()
    tokyo.close()


def test_a_trigger_write_and_a_hint(proxy: MysqlProxy, mysql_cluster: MysqlCluster) -> None:
    client = connect(proxy)
    before = scalar(client, "SELECT COUNT(*) FROM cache_audit")
    with client.cursor() as cur:
        cur.execute("UPDATE cache_watched SET v = 'x' WHERE id = 1")   # its trigger writes cache_audit
    assert scalar(client, "SELECT COUNT(*) FROM cache_audit") == before + 1
    hinted = "/* dbproxy:cache ttl=30s */ SELECT v FROM cache_watched WHERE id = 1"
    assert scalar(client, hinted) == "x"
    on_server(mysql_cluster, "UPDATE cache_watched SET v = 'y'")
    assert scalar(client, hinted) == "x"
    assert scalar(client, "/* dbproxy:cache off */ SELECT v FROM cache_items WHERE id = 1") in ("a", "proxy")
    client.close()


def test_errors_are_not_cached(proxy: MysqlProxy, mysql_cluster: MysqlCluster) -> None:
    client = connect(proxy)
    sql = "SELECT extra FROM cache_other WHERE id = 1"
    for _ in range(2):
        with pytest.raises(pymysql.err.OperationalError):
            scalar(client, sql)
    on_server(mysql_cluster, "ALTER TABLE cache_other ADD COLUMN extra int DEFAULT 7")
    try:
        assert scalar(client, sql) == 7
    finally:
        on_server(mysql_cluster, "ALTER TABLE cache_other DROP COLUMN extra")
    assert rows(client, "SELECT id FROM cache_items WHERE id < 3 ORDER BY id") == [(1,), (2,)]
    client.close()


def test_show_cache_reports_the_mysql_cluster(proxy: MysqlProxy) -> None:
    client = connect(proxy)
    for _ in range(3):
        scalar(client, "SELECT v FROM cache_other WHERE id = 1")
    client.close()
    shown: list[dict[str, Any]] = admin_rows(proxy, "SHOW CACHE")
    row = next(r for r in shown if r["cluster"] == "my")
    assert int(row["hits"]) >= 2 and int(row["entries"]) >= 1, row


def test_a_write_in_a_multi_statement_text_invalidates(proxy: MysqlProxy, reset: None) -> None:
    client = connect(proxy)
    writer = connect(proxy, client_flag=pymysql.constants.CLIENT.MULTI_STATEMENTS)
    sql = "SELECT v FROM cache_items WHERE id = 1"
    assert scalar(client, sql) == "a"
    with writer.cursor() as cur:   # the UPDATE's OK comes first: held until the whole answer (and the invalidation)
        cur.execute("UPDATE cache_items SET v = 'multi' WHERE id = 1; SELECT 1")
        assert cur.nextset() and cur.fetchall() == ((1,),)
    assert scalar(client, sql) == "multi"
    assert scalar(writer, "SELECT 2") == 2   # the writer's session goes on
    client.close()
    writer.close()


@pytest.fixture(scope="module")
def redis_proxy(proxy: MysqlProxy, mysql_cluster: MysqlCluster,
                tmp_path_factory: pytest.TempPathFactory) -> Iterator[MysqlProxy]:
    if shutil.which("redis-server") is None:
        pytest.skip("redis-server is not installed")
    redis = RedisServer(tmp_path_factory.mktemp("mysql-redis"))
    redis.start()
    section = CACHE.replace('backend = "memory"', f'backend = "redis://{HOST}:{redis.port}/0"')
    try:
        with mysql_module_proxy(mysql_cluster, Path(tmp_path_factory.mktemp("mysql-cache-redis")),
                                endpoints_extra=section) as running:
            yield running
    finally:
        redis.stop()


def test_the_redis_backend_caches_and_invalidates(redis_proxy: MysqlProxy, mysql_cluster: MysqlCluster,
                                                  reset: None) -> None:
    client, writer = connect(redis_proxy), connect(redis_proxy)
    sql = "SELECT v FROM cache_items WHERE id = 2"
    assert scalar(client, sql) == "b"
    time.sleep(1.0)   # the catalog is read and the Redis pool opened in the background: then a miss is stored
    assert scalar(client, sql) == "b"
    on_server(mysql_cluster, "UPDATE cache_items SET v = 'direct' WHERE id = 2")
    assert scalar(client, sql) == "b"                       # a hit, from Redis
    with writer.cursor() as cur:
        cur.execute("UPDATE cache_items SET v = 'redis' WHERE id = 2")
    assert scalar(client, sql) == "redis"
    client.close()
    writer.close()


def test_a_prepared_write_invalidates(proxy: MysqlProxy, mysql_cluster: MysqlCluster, reset: None) -> None:
    import mysql.connector

    client = connect(proxy)
    sql = "SELECT v FROM cache_items WHERE id = 3"
    assert scalar(client, sql) == "c"
    on_server(mysql_cluster, "UPDATE cache_items SET v = 'direct' WHERE id = 3")
    assert scalar(client, sql) == "c"   # cached
    writer = mysql.connector.connect(host=HOST, port=proxy.port, user=APP_USER, password=APP_PASSWORD,
                                     database=APP_DB, autocommit=True, use_pure=True)
    try:
        cur = writer.cursor(prepared=True)   # COM_STMT_PREPARE, then COM_STMT_EXECUTE of its text
        cur.execute("UPDATE cache_items SET v = ? WHERE id = ?", ("prepared", 3))
        cur.close()
    finally:
        writer.close()
    assert scalar(client, sql) == "prepared"
    client.close()
