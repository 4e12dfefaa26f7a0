"""The query-result cache for a MySQL cluster (SPEC §11 + §12) end to end: a dbproxy with the memory
cache in front of the test MariaDB primary, PyMySQL clients (text protocol, COM_QUERY), and
mysql-connector-python prepared cursors and a raw client (binary protocol, COM_STMT_EXECUTE).

Whether a read was answered from the cache is seen from a change made directly on the server (not
through dbproxy, so nothing is invalidated): a cached read still returns the old row.
"""

from __future__ import annotations

import shutil
import struct
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pymysql
import pytest
from mysql_e2e_helpers import (
    MysqlProxy,
    RawSocket,
    admin_rows,
    connect,
    direct,
    mysql_module_proxy,
    rows,
    scalar,
)
from redis_helpers import RedisServer

from deploy.mysqlcluster import APP_DB, APP_PASSWORD, APP_USER, HOST, MysqlCluster
from proxy.engines.mysql.auth import native_password_token
from proxy.engines.mysql.wire.codes import Capability, Status
from proxy.engines.mysql.wire.handshake import AuthSwitchRequest, HandshakeResponse41
from proxy.engines.mysql.wire.messages import encode_end_of_rows
from proxy.engines.mysql.wire.packets import encode_packets

CACHE = """
[clusters.my.cache]
backend = "memory"
rules = [ { match = "^SELECT .* FROM cache_named", ttl = "60s", tables = ["cache_items"] },
          { match = "^SELECT .* FROM cache_(items|view|audit|other|types)\\\\b", ttl = "60s" } ]
"""
SETUP = [
    "DROP TABLE IF EXISTS cache_items, cache_audit, cache_watched, cache_other, cache_types",
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
    "CREATE TABLE cache_types (id int PRIMARY KEY, i int, u int unsigned, big bigint, n decimal(12,3), s varchar(40),"
    " d date, t datetime(6), f double, b varbinary(20), tm time)",
    "INSERT INTO cache_types VALUES (1, -5, 4000000000, -9223372036854775808, -12.345, 'h\u00e9llo \u2713',"
    " '2024-02-29', '2024-02-29 23:59:58.123456', 2.5, x'00ff7f', '-01:02:03'),"
    " (2, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL),"
    " (3, 0, 0, 9223372036854775807, 0.001, '', '1999-12-31', '2000-01-01 00:00:00', -1e100, '', '838:59:59')",
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


def test_the_redis_backend_caches_prepared_reads(redis_proxy: MysqlProxy, mysql_cluster: MysqlCluster,
                                                reset: None) -> None:
    _invalidate(redis_proxy, "cache_items")
    conn = _connector(redis_proxy.port)
    try:
        cur = conn.cursor(prepared=True)
        assert _fetch(cur, READ_V, (2,)) == [("b",)]
        time.sleep(1.0)   # the catalog is read and the Redis pool opened in the background: then a miss is stored
        assert _fetch(cur, READ_V, (2,)) == [("b",)]
        on_server(mysql_cluster, "UPDATE cache_items SET v = 'direct' WHERE id = 2")
        assert _fetch(cur, READ_V, (2,)) == [("b",)]   # a hit, from Redis
        cur.execute("UPDATE cache_items SET v = ? WHERE id = ?", ("redis", 2))
        assert _fetch(cur, READ_V, (2,)) == [("redis",)]
    finally:
        conn.close()


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


# ---- binary prepared statements (COM_STMT_EXECUTE) ------------------------------------------------


def _connector(port: int, **kwargs: Any) -> Any:
    import mysql.connector

    kwargs.setdefault("user", APP_USER)
    kwargs.setdefault("password", APP_PASSWORD)
    return mysql.connector.connect(host=HOST, port=port, database=APP_DB, autocommit=True, use_pure=True, **kwargs)


def _hits(proxy: MysqlProxy) -> int:
    return int(next(r for r in admin_rows(proxy, "SHOW CACHE") if r["cluster"] == "my")["hits"])


def _invalidate(proxy: MysqlProxy, table: str) -> None:
    """A write through dbproxy that changes no row: every cached result of `table` goes."""
    client = connect(proxy)
    with client.cursor() as cur:
        cur.execute(f"UPDATE {table} SET id = id WHERE id < 0")
    client.close()


def _fetch(cur: Any, sql: str, params: tuple[Any, ...]) -> list[tuple[Any, ...]]:
    cur.execute(sql, params)
    return [tuple(row) for row in cur.fetchall()]


READ_V = "SELECT v FROM cache_items WHERE id = ?"


def test_a_prepared_select_is_cached_per_parameter_values(proxy: MysqlProxy, mysql_cluster: MysqlCluster,
                                                          reset: None) -> None:
    _invalidate(proxy, "cache_items")
    conn, other = _connector(proxy.port), _connector(proxy.port)
    try:
        cur = conn.cursor(prepared=True)
        assert _fetch(cur, READ_V, (1,)) == [("a",)]
        hits = _hits(proxy)
        on_server(mysql_cluster, "UPDATE cache_items SET v = 'direct' WHERE id IN (1, 2)")
        assert _fetch(cur, READ_V, (1,)) == [("a",)]          # a hit: the direct UPDATE is not seen
        assert _hits(proxy) == hits + 1
        assert _fetch(cur, READ_V, (2,)) == [("direct",)]     # another value, another entry
        assert _fetch(cur, READ_V, ("1",)) == [("direct",)]   # the same value as a string: another entry
        assert _hits(proxy) == hits + 1
        ocur = other.cursor(prepared=True)                    # another client, its own statement id
        assert _fetch(ocur, READ_V, (1,)) == [("a",)]
        assert _hits(proxy) == hits + 2
        assert scalar(connect(proxy), "SELECT v FROM cache_items WHERE id = 1") == "direct"   # text: not shared
        writer = conn.cursor(prepared=True)
        writer.execute("UPDATE cache_items SET v = ? WHERE id = ?", ("proxy", 3))   # a prepared write invalidates
        assert _fetch(ocur, READ_V, (1,)) == [("direct",)]
        assert _fetch(cur, READ_V, (3,)) == [("proxy",)]
    finally:
        conn.close()
        other.close()


def test_no_prepared_select_is_cached_in_a_transaction(proxy: MysqlProxy, mysql_cluster: MysqlCluster,
                                                      reset: None) -> None:
    _invalidate(proxy, "cache_items")
    conn = _connector(proxy.port)
    try:
        cur = conn.cursor(prepared=True)
        conn.start_transaction()
        assert _fetch(cur, READ_V, (3,)) == [("c",)]
        conn.commit()
        on_server(mysql_cluster, "UPDATE cache_items SET v = 'c1' WHERE id = 3")
        assert _fetch(cur, READ_V, (3,)) == [("c1",)]   # the read in the transaction stored nothing
        on_server(mysql_cluster, "UPDATE cache_items SET v = 'c2' WHERE id = 3")
        assert _fetch(cur, READ_V, (3,)) == [("c1",)]   # ... this one did
        conn.start_transaction()
        hits = _hits(proxy)
        assert _fetch(cur, READ_V, (3,)) == [("c2",)]   # in a transaction: not looked up
        conn.commit()
        assert _hits(proxy) == hits
    finally:
        conn.close()


READ_TYPES = ("SELECT id, i, u, big, n, s, d, t, f, b, tm FROM cache_types WHERE id >= ? AND (s IS NULL OR s <> ?)"
              " AND (d IS NULL OR d > ?) AND (? IS NULL) AND n IS NOT NULL = ? ORDER BY id")


@pytest.mark.parametrize("not_null", [1, 0])
def test_prepared_values_decode_as_uncached(proxy: MysqlProxy, mysql_cluster: MysqlCluster, not_null: int) -> None:
    import datetime
    import decimal

    params = (0, "zz", datetime.date(1990, 1, 1), None, not_null)
    reference = _connector(mysql_cluster.ports[0], user="root", password="")
    conn = _connector(proxy.port)
    try:
        expected = _fetch(reference.cursor(prepared=True), READ_TYPES, params)
        assert len(expected) == (2 if not_null else 1)
        if not_null:
            assert expected[0][4] == decimal.Decimal("-12.345") and expected[0][6] == datetime.date(2024, 2, 29)
        cur = conn.cursor(prepared=True)
        hits = _hits(proxy)
        first = _fetch(cur, READ_TYPES, params)
        on_server(mysql_cluster, "UPDATE cache_types SET i = i + 1")
        second = _fetch(cur, READ_TYPES, params)
        on_server(mysql_cluster, "UPDATE cache_types SET i = i - 1")
        assert _hits(proxy) == hits + 1
        for got in (first, second):
            assert got == expected
            assert [[type(v) for v in row] for row in got] == [[type(v) for v in row] for row in expected]
    finally:
        reference.close()
        conn.close()


# A raw client with CLIENT_DEPRECATE_EOF (mysql-connector-python does not offer it): the replies' bytes.
RAW_CAPS = int(Capability.LONG_PASSWORD | Capability.LONG_FLAG | Capability.CONNECT_WITH_DB | Capability.PROTOCOL_41
               | Capability.TRANSACTIONS | Capability.SECURE_CONNECTION | Capability.MULTI_RESULTS
               | Capability.PS_MULTI_RESULTS | Capability.PLUGIN_AUTH | Capability.DEPRECATE_EOF)


class RawClient(RawSocket):
    """A blocking MySQL client on a plain socket that logs in (mysql_native_password) and prepares."""

    def __init__(self, port: int, user: str, password: str) -> None:
        super().__init__(port)
        greeting = self.greeting()
        scramble = greeting.scramble[:20]
        token = native_password_token(password.encode(), scramble) if password else b""
        login = HandshakeResponse41(RAW_CAPS, 1 << 24, 45, user, token, APP_DB, "mysql_native_password")
        self.send_packet(login.encode(), 1)
        seq, payload = self.next_packet()
        if payload[:1] == b"\xfe":   # AuthSwitchRequest
            switch = AuthSwitchRequest.decode(payload)
            assert switch.plugin == "mysql_native_password"
            self.send_packet(native_password_token(password.encode(), switch.data[:20]) if password else b"", seq + 1)
            seq, payload = self.next_packet()
        assert payload[:1] == b"\x00", payload

    def next_packet(self) -> tuple[int, bytes]:
        got = self.packet()
        assert got is not None, "connection closed"
        return got

    def send_packet(self, payload: bytes, seq: int = 0) -> None:
        self.send(encode_packets(payload, seq)[0])

    def prepare(self, sql: str) -> tuple[int, int]:
        """(statement id, parameter count); its definitions are read (DEPRECATE_EOF: no EOFs)."""
        self.send_packet(b"\x16" + sql.encode())
        _, ok = self.next_packet()
        assert ok[:1] == b"\x00", ok
        statement_id, columns, params = struct.unpack_from("<IHH", ok, 1)
        for _ in range(columns + params):
            self.next_packet()
        return statement_id, params

    def execute(self, payload: bytes) -> bytes:
        """The whole reply to a COM_STMT_EXECUTE of a SELECT, as framed on the wire."""
        self.send_packet(payload)
        out = []
        seq, first = self.next_packet()
        out.append(encode_packets(first, seq)[0])
        assert first[:1] not in (b"\x00", b"\xff"), first
        for _ in range(first[0]):
            out.append(encode_packets(self.next_packet()[1], len(out) + 1)[0])
        while True:
            seq, row = self.next_packet()
            out.append(encode_packets(row, seq)[0])
            if row[:1] == b"\xfe":
                return b"".join(out)


def test_a_deprecate_eof_client_gets_the_servers_bytes_from_the_cache(proxy: MysqlProxy,
                                                                      mysql_cluster: MysqlCluster,
                                                                      reset: None) -> None:
    _invalidate(proxy, "cache_types")
    sql = "SELECT id, n, s, d, t, tm FROM cache_types WHERE id IN (?, ?) ORDER BY id"
    reference = RawClient(mysql_cluster.ports[0], "root", "")
    client = RawClient(proxy.port, APP_USER, APP_PASSWORD)
    try:
        def run(raw: RawClient, statement_id: int) -> bytes:
            # two LONGLONG parameters (1, NULL): NULL bitmap 0b10, new-params-bound, types, one value
            return raw.execute(b"\x17" + statement_id.to_bytes(4, "little") + b"\x00\x01\x00\x00\x00" + b"\x02\x01"
                               + b"\x08\x00\x08\x00" + (1).to_bytes(8, "little"))

        (direct_id, direct_params), (first_id, params) = reference.prepare(sql), client.prepare(sql)
        assert direct_params == params == 2
        second_id = client.prepare(sql)[0]   # the client's second statement of the text: the entry is the text's
        assert second_id != first_id
        replies = [run(reference, direct_id), run(client, first_id)]
        on_server(mysql_cluster, "UPDATE cache_types SET s = 'direct' WHERE id = 1")
        replies.append(run(client, second_id))
        on_server(mysql_cluster, "UPDATE cache_types SET s = 'h\u00e9llo \u2713' WHERE id = 1")
        assert replies[0] == replies[1] == replies[2]   # the server's bytes; the third from the cache
        assert replies[2].endswith(encode_packets(encode_end_of_rows(RAW_CAPS, Status.AUTOCOMMIT), 4)[0][4:])
    finally:
        reference.close()
        client.close()


def _prepares(cluster: MysqlCluster) -> int:
    conn = direct(cluster)
    with conn.cursor() as cur:
        cur.execute("SHOW GLOBAL STATUS LIKE 'Com_stmt_prepare'")
        value = int(cur.fetchone()[1])
    conn.close()
    return value


def test_a_miss_prepared_again_on_another_server_connection_is_stored(proxy: MysqlProxy,
                                                                      mysql_cluster: MysqlCluster,
                                                                      reset: None) -> None:
    _invalidate(proxy, "cache_items")
    holder = connect(proxy)
    conn = _connector(proxy.port)
    try:
        cur = conn.cursor(prepared=True)
        cur.execute("SELECT v, id FROM cache_items WHERE id = ?", (2,))   # prepared on the pool's last-released connection
        cur.fetchall()
        _invalidate(proxy, "cache_items")
        with holder.cursor() as hold:   # ... which this transaction now holds
            hold.execute("BEGIN")
            hold.execute("SELECT 1")
        before = _prepares(mysql_cluster)
        assert _fetch(cur, "SELECT v, id FROM cache_items WHERE id = ?", (2,)) == [("b", 2)]
        assert _prepares(mysql_cluster) > before   # the statement was prepared on another server connection first
        on_server(mysql_cluster, "UPDATE cache_items SET v = 'direct' WHERE id = 2")
        assert _fetch(cur, "SELECT v, id FROM cache_items WHERE id = ?", (2,)) == [("b", 2)]   # stored all the same
    finally:
        holder.rollback()
        holder.close()
        conn.close()
