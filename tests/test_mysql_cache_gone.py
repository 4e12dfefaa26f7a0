"""The query cache of a MySQL cluster (SPEC §11) and a client that leaves while its miss is in flight:
its cacheable read waits for the pool's one server connection (held by another client's open
transaction) or runs on the server behind a table locked by LOCK TABLES, and the client disconnects
(no COM_QUIT) before the answer. Its key must not stay "in flight": the next identical read, from
another client, is answered well within stampede_wait (1 s) and stored. For a text COM_QUERY
(PyMySQL) and a prepared COM_STMT_EXECUTE (mysql-connector-python, cursor(prepared=True)), with the
memory backend and with Redis.

A hit is seen from a change made directly on the server (not through dbproxy, so nothing is
invalidated): a cached read still returns the old row; SHOW CACHE counts the hit.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from e2e_helpers import wait_until
from mysql_e2e_helpers import MysqlProxy, admin_rows, connect, direct, mysql_module_proxy, scalar
from redis_helpers import cache_backend

from deploy.mysqlcluster import APP_DB, APP_PASSWORD, APP_USER, HOST, MysqlCluster

TABLE = "cache_gone"
CACHE = """
[clusters.my.cache]
backend = "{backend}"
rules = [ {{ match = "^SELECT .* FROM cache_gone", ttl = "60s" }} ]
"""
WAIT = 0.4          # how long the leaving client's read is left waiting before it goes
FAST = 0.9          # the next identical read takes less (stampede_wait is 1 s)
READ = "SELECT v FROM cache_gone WHERE id = ?"
IN_FLIGHT = "gone with a statement in flight"   # logged with the KILL QUERY for a client that left
IDS = {("text", "pool"): 1, ("text", "lock"): 2, ("prepared", "pool"): 3, ("prepared", "lock"): 4}


@pytest.fixture(scope="module")
def gone_table(mysql_cluster: MysqlCluster) -> Iterator[None]:
    on_server(mysql_cluster, f"DROP TABLE IF EXISTS {TABLE}")
    on_server(mysql_cluster, f"CREATE TABLE {TABLE} (id int PRIMARY KEY, v varchar(40))")
    on_server(mysql_cluster, f"INSERT INTO {TABLE} VALUES " + ", ".join(f"({i}, 'v{i}')" for i in range(1, 21)))
    yield
    on_server(mysql_cluster, f"DROP TABLE IF EXISTS {TABLE}")


@pytest.fixture(scope="module", params=["memory", "redis"])
def proxy(request: pytest.FixtureRequest, mysql_cluster: MysqlCluster, gone_table: None,
          tmp_path_factory: pytest.TempPathFactory) -> Iterator[MysqlProxy]:
    with (cache_backend(request.param, tmp_path_factory.mktemp("mysql-gone-redis")) as backend,
          mysql_module_proxy(mysql_cluster, Path(tmp_path_factory.mktemp("mysql-gone")), pool_size=1,
                             endpoints_extra=CACHE.format(backend=backend)) as running):
        warm = connect(running)   # the catalog is read (and the Redis pool opened) now, not in the tests' waits
        assert scalar(warm, "SELECT v FROM cache_gone WHERE id = 20") == "v20"
        time.sleep(1.0)
        warm.close()
        yield running


def on_server(cluster: MysqlCluster, sql: str) -> None:
    conn = direct(cluster)
    with conn.cursor() as cur:
        cur.execute(sql)
    conn.close()


def hits(proxy: MysqlProxy) -> int:
    return int(next(r for r in admin_rows(proxy, "SHOW CACHE") if r["cluster"] == "my")["hits"])


def connector(proxy: MysqlProxy) -> Any:
    import mysql.connector

    return mysql.connector.connect(host=HOST, port=proxy.port, user=APP_USER, password=APP_PASSWORD,
                                   database=APP_DB, autocommit=True, use_pure=True)


def fetch(cur: Any, ident: int) -> list[tuple[Any, ...]]:
    cur.execute(READ, (ident,))   # the same str object each time: prepared once per cursor
    return [tuple(row) for row in cur.fetchall()]


@contextmanager
def blocked(how: str, proxy: MysqlProxy, cluster: MysqlCluster) -> Iterator[None]:
    """Reads of the table wait: for the pool's one server connection ("pool"), or on the server ("lock")."""
    if how == "pool":
        holder = connect(proxy, autocommit=False)
        with holder.cursor() as cur:
            cur.execute("BEGIN")
            cur.execute("SELECT 1")   # the pool's only server connection is this transaction's
        try:
            yield
        finally:
            holder.commit()
            holder.close()
        return
    locker = direct(cluster)
    with locker.cursor() as cur:
        cur.execute(f"LOCK TABLES {TABLE} WRITE")
    interrupted = proxy.log_text().count(IN_FLIGHT)
    try:
        yield
        # the read ran on the server when its client left (the proxy interrupted it there)
        wait_until(lambda: proxy.log_text().count(IN_FLIGHT) == interrupted + 1, timeout=5, what="the KILL QUERY")
    finally:
        with locker.cursor() as cur:
            cur.execute("UNLOCK TABLES")
        locker.close()


def leave_while_waiting(read: Callable[[], object], sock: socket.socket) -> None:
    """read() in a thread; after WAIT (still unanswered) its client's socket is shut: it goes, no COM_QUIT."""
    outcome: list[object] = []

    def run() -> None:
        try:
            outcome.append(read())
        except Exception as exc:   # its connection was shut under it
            outcome.append(exc)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    time.sleep(WAIT)
    assert not outcome, f"the read did not wait: {outcome}"
    sock.shutdown(socket.SHUT_RDWR)
    sock.close()
    thread.join(10)
    assert outcome and isinstance(outcome[0], Exception), outcome
    time.sleep(0.2)   # the proxy sees the client go


def assert_fast_then_stored(proxy: MysqlProxy, cluster: MysqlCluster, ident: int,
                            read: Callable[[], object], expected: object) -> None:
    started = time.monotonic()
    assert read() == expected
    took = time.monotonic() - started
    assert took < FAST, f"{took:.2f}s: behind the stampede wait for the miss whose client left"
    on_server(cluster, f"UPDATE {TABLE} SET v = 'direct' WHERE id = {ident}")
    before = hits(proxy)
    assert read() == expected   # stored: the direct write is not seen
    assert hits(proxy) == before + 1


@pytest.fixture
def restore(mysql_cluster: MysqlCluster) -> Iterator[None]:
    yield
    on_server(mysql_cluster, f"UPDATE {TABLE} SET v = CONCAT('v', id)")


@pytest.mark.parametrize("how", ["pool", "lock"])
def test_a_text_miss_whose_client_left_does_not_block_its_key(proxy: MysqlProxy, mysql_cluster: MysqlCluster,
                                                              how: str, restore: None) -> None:
    ident = IDS["text", how]
    sql = f"SELECT v FROM cache_gone WHERE id = {ident}"
    gone = connect(proxy)
    with blocked(how, proxy, mysql_cluster):
        leave_while_waiting(lambda: scalar(gone, sql), gone._sock)
    client = connect(proxy)
    try:
        assert_fast_then_stored(proxy, mysql_cluster, ident, lambda: scalar(client, sql), f"v{ident}")
    finally:
        client.close()


@pytest.mark.parametrize("how", ["pool", "lock"])
def test_a_prepared_miss_whose_client_left_does_not_block_its_key(proxy: MysqlProxy, mysql_cluster: MysqlCluster,
                                                                  how: str, restore: None) -> None:
    ident = IDS["prepared", how]
    gone = connector(proxy)
    cur = gone.cursor(prepared=True)
    assert fetch(cur, 20) == [("v20",)]   # prepared now: the read below is COM_STMT_RESET + COM_STMT_EXECUTE
    with blocked(how, proxy, mysql_cluster):
        leave_while_waiting(lambda: fetch(cur, ident), gone._socket.sock)
    client = connector(proxy)
    try:
        reader = client.cursor(prepared=True)
        assert fetch(reader, 19) == [("v19",)]   # prepared (its own miss), so only the execute is timed
        assert_fast_then_stored(proxy, mysql_cluster, ident, lambda: fetch(reader, ident), [(f"v{ident}",)])
    finally:
        client.close()
