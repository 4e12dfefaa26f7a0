"""End to end, MySQL engine: session state in transaction pooling never leaks between clients (SPEC §4, §12).

The module's proxy has a pool of 2 server connections. Two clients interleaved: what one sets
(time_zone, sql_mode, SET NAMES, USE / COM_INIT_DB, autocommit, tx_isolation) follows it from
server connection to server connection and the other never sees it. COM_RESET_CONNECTION resets
the client's state. State that cannot move pins the client (shown in the admin console's SHOW
CLIENTS) and is gone for the next client of that server connection. A client that dies
mid-transaction leaves a clean server connection. KILL [QUERY] uses the proxy's connection ids.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from typing import Any

import mysql.connector
import pymysql
import pytest
from e2e_helpers import wait_until
from mysql_e2e_helpers import (
    MysqlProxy,
    admin_rows,
    client_row,
    connect,
    direct,
    mysql_module_proxy,
    proxy_threads,
    rows,
    scalar,
    server_thread,
    trx_count,
)

from deploy.mysqlcluster import APP_DB, APP_PASSWORD, APP_USER, HOST, MysqlCluster

POOL_SIZE = 2
# Proxy users that log in to the servers as themselves: boss may KILL others' threads there, peon not.
OTHER_USERS = (("boss", "boss-pass"), ("peon", "peon-pass"))
OTHER_DB = "e2e_other"
Conn = pymysql.connections.Connection  # type: ignore[type-arg]


@pytest.fixture(scope="module")
def proxy(mysql_cluster: MysqlCluster, tmp_path_factory: pytest.TempPathFactory) -> Iterator[MysqlProxy]:
    with direct(mysql_cluster) as conn:
        for sql in (f"CREATE DATABASE IF NOT EXISTS {OTHER_DB}", f"GRANT ALL ON {OTHER_DB}.* TO 'app'@'%'",
                    f"DROP TABLE IF EXISTS {OTHER_DB}.where_am_i", f"CREATE TABLE {OTHER_DB}.where_am_i (db TEXT)",
                    f"INSERT INTO {OTHER_DB}.where_am_i VALUES ('{OTHER_DB}')",
                    "DROP TABLE IF EXISTS app.where_am_i", "CREATE TABLE app.where_am_i (db TEXT)",
                    "INSERT INTO app.where_am_i VALUES ('app')",
                    "DROP TABLE IF EXISTS app.e2e_state", "CREATE TABLE app.e2e_state (id INT PRIMARY KEY, v TEXT)",
                    "DROP TABLE IF EXISTS app.e2e_lid", "CREATE TABLE app.e2e_lid (id INT AUTO_INCREMENT PRIMARY KEY, "
                    "who TEXT)", "DROP TABLE IF EXISTS app.e2e_lid_child",
                    "CREATE TABLE app.e2e_lid_child (id INT AUTO_INCREMENT PRIMARY KEY, parent INT)",
                    "DROP TABLE IF EXISTS app.e2e_pin", "CREATE TABLE app.e2e_pin (id INT PRIMARY KEY)",
                    "INSERT INTO app.e2e_pin VALUES (1), (2), (3)"):
            rows(conn, sql)
        for name, password in OTHER_USERS:
            rows(conn, f"CREATE USER IF NOT EXISTS '{name}'@'%' IDENTIFIED BY '{password}'")
            rows(conn, f"GRANT ALL ON app.* TO '{name}'@'%'")
        rows(conn, "GRANT CONNECTION ADMIN, PROCESS ON *.* TO 'boss'@'%'")
    with mysql_module_proxy(mysql_cluster, tmp_path_factory.mktemp("my-state"), pool_size=POOL_SIZE,
                            borrow_timeout="8s", extra_users=OTHER_USERS) as proxy:
        yield proxy
        proxy.assert_alive_and_clean()


@pytest.fixture
def two(proxy: MysqlProxy) -> Iterator[tuple[Conn, Conn]]:
    with connect(proxy) as a, connect(proxy) as b:
        yield a, b


# ---- movable state: each client keeps its own values ------------------------------------------------

SETTINGS: dict[str, tuple[str, str, Any]] = {
    # name: (the statement, what reads it back, the value it gives)
    "time_zone": ("SET time_zone = '+05:30'", "SELECT @@session.time_zone", "+05:30"),
    "time_zone effect": ("SET SESSION time_zone = '+01:00'",
                         "SELECT TIMESTAMPDIFF(HOUR, UTC_TIMESTAMP(), NOW())", 1),
    "sql_mode": ("SET sql_mode = 'ANSI_QUOTES,PIPES_AS_CONCAT'", "SELECT 'a' || 'b'", "ab"),
    "SET NAMES": ("SET NAMES latin1", "SELECT @@character_set_client, @@character_set_results",
                  ("latin1", "latin1")),
    "tx_isolation": ("SET SESSION tx_isolation = 'READ-COMMITTED'", "SELECT @@tx_isolation", "READ-COMMITTED"),
    "TRANSACTION ISOLATION LEVEL": ("SET SESSION TRANSACTION ISOLATION LEVEL SERIALIZABLE",
                                    "SELECT @@tx_isolation", "SERIALIZABLE"),
    "several at once": ("SET @@session.wait_timeout = 1234, SESSION div_precision_increment = 9",
                        "SELECT @@wait_timeout, @@div_precision_increment", (1234, 9)),
}


def _read(conn: Conn, sql: str) -> Any:
    row = rows(conn, sql)[0]
    return row[0] if len(row) == 1 else tuple(row)


@pytest.mark.parametrize("name", list(SETTINGS))
def test_setting_follows_its_client_only(two: tuple[Conn, Conn], name: str) -> None:
    a, b = two
    statement, check, value = SETTINGS[name]
    before = _read(b, check)
    assert before != value
    rows(a, statement)
    for round_ in range(4):
        assert _read(a, check) == value, f"round {round_}: the client lost its own {name}"
        assert _read(b, check) == before, f"round {round_}: {name} leaked to another client"
        with b.cursor() as cur:   # b in a transaction: a runs on the other server connection meanwhile
            b.begin()
            cur.execute("SELECT 1")
            assert _read(a, check) == value
            b.commit()
    assert server_thread(a) > 0 and server_thread(b) > 0
    # A client that arrives later, on whichever server connection, has the defaults.
    with connect(a.port) as c:
        assert _read(c, check) == before


def test_failed_set_is_not_taken_for_the_client(two: tuple[Conn, Conn]) -> None:
    a, b = two
    rows(a, "SET time_zone = '+03:00'")
    with pytest.raises(pymysql.err.DatabaseError) as excinfo:
        rows(a, "SET time_zone = 'No/Such_Zone'")
    assert excinfo.value.args[0] == 1298
    # MariaDB 10.11 has tx_isolation only (transaction_isolation came with 11.1): refused, not taken.
    with pytest.raises(pymysql.err.DatabaseError) as excinfo:
        rows(a, "SET SESSION transaction_isolation = 'READ-COMMITTED'")
    assert excinfo.value.args[0] == 1193
    for _ in range(3):
        b.begin()
        rows(b, "SELECT 1")
        assert scalar(a, "SELECT @@tx_isolation") == "REPEATABLE-READ"
        assert scalar(a, "SELECT @@time_zone") == "+03:00"   # on the other server connection
        b.commit()
        assert scalar(a, "SELECT @@time_zone") == "+03:00"
        assert scalar(b, "SELECT @@time_zone") == "SYSTEM"


def test_use_and_init_db_follow_their_client(two: tuple[Conn, Conn]) -> None:
    a, b = two
    rows(a, f"USE {OTHER_DB}")
    for _ in range(3):
        assert scalar(a, "SELECT db FROM where_am_i") == OTHER_DB
        assert scalar(b, "SELECT db FROM where_am_i") == "app"
        assert scalar(a, "SELECT DATABASE()") == OTHER_DB
        b.begin()
        assert scalar(a, "SELECT DATABASE()") == OTHER_DB
        b.commit()
    b.select_db(OTHER_DB)   # COM_INIT_DB
    a.select_db(APP_DB)
    assert (scalar(a, "SELECT db FROM where_am_i"), scalar(b, "SELECT db FROM where_am_i")) == ("app", OTHER_DB)
    # A failing USE / COM_INIT_DB keeps the schema the client had.
    with pytest.raises(pymysql.err.OperationalError) as excinfo:
        b.select_db("e2e_no_such_db")
    assert excinfo.value.args[0] in (1044, 1049)
    with pytest.raises(pymysql.err.OperationalError):
        rows(b, "USE e2e_no_such_db")
    assert scalar(b, "SELECT DATABASE()") == OTHER_DB
    assert scalar(a, "SELECT DATABASE()") == APP_DB
    with connect(a.port) as c:
        assert scalar(c, "SELECT DATABASE()") == APP_DB


def test_client_without_a_database_stays_without(proxy: MysqlProxy) -> None:
    with connect(proxy, database=None) as a, connect(proxy, database=None) as b:
        assert scalar(a, "SELECT DATABASE()") is None
        rows(a, f"USE {OTHER_DB}")
        assert scalar(a, "SELECT DATABASE()") == OTHER_DB
        assert scalar(b, "SELECT DATABASE()") is None
    with connect(proxy, database=None) as c:
        assert scalar(c, "SELECT DATABASE()") is None


def test_set_names_round_trips_text(two: tuple[Conn, Conn]) -> None:
    a, b = two
    rows(a, "SET NAMES latin1")
    # a's latin1 bytes for 'é' are 0xE9; b (utf8mb4) sends C3 A9: both mean U+00E9.
    with a.cursor() as cur:
        cur.execute(b"SELECT HEX(CONVERT(_binary'\xe9' USING latin1)) AS a, HEX(CONVERT('\xe9' USING utf8mb4)) AS b")
        assert cur.fetchone() == ("E9", "C3A9")
    assert scalar(b, "SELECT HEX(CONVERT('é' USING utf8mb4)) AS h") == "C3A9"
    assert scalar(b, "SELECT @@character_set_connection") == "utf8mb4"


def test_autocommit_off_is_a_transaction_per_client(two: tuple[Conn, Conn]) -> None:
    a, b = two
    rows(a, "DELETE FROM e2e_state")
    a.autocommit(False)
    assert scalar(a, "SELECT @@autocommit") == 0
    assert scalar(b, "SELECT @@autocommit") == 1
    rows(a, "INSERT INTO e2e_state VALUES (1, 'rolled back')")
    assert scalar(b, "SELECT COUNT(*) FROM e2e_state") == 0   # a's transaction is open: b cannot see it
    a.rollback()
    rows(a, "INSERT INTO e2e_state VALUES (2, 'committed')")
    assert scalar(a, "SELECT COUNT(*) FROM e2e_state") == 1
    assert scalar(b, "SELECT COUNT(*) FROM e2e_state") == 0
    a.commit()
    assert rows(b, "SELECT id FROM e2e_state") == [(2,)]
    # b's statements never ran in a's transaction; a's next statement opens a new one.
    rows(b, "INSERT INTO e2e_state VALUES (3, 'b autocommit')")
    rows(a, "UPDATE e2e_state SET v = 'changed' WHERE id = 3")
    assert scalar(b, "SELECT v FROM e2e_state WHERE id = 3") == "b autocommit"
    a.rollback()
    a.autocommit(True)
    assert scalar(a, "SELECT @@autocommit") == 1
    assert scalar(a, "SELECT v FROM e2e_state WHERE id = 3") == "b autocommit"


def test_isolation_level_applies_to_its_client(two: tuple[Conn, Conn]) -> None:
    a, b = two
    rows(a, "DELETE FROM e2e_state")
    rows(a, "SET SESSION tx_isolation = 'READ-COMMITTED'")
    for conn in (a, b):
        conn.begin()
        assert scalar(conn, "SELECT COUNT(*) FROM e2e_state") == 0
    b.commit()   # a third client would wait for a server connection
    with connect(a.port) as writer:
        rows(writer, "INSERT INTO e2e_state VALUES (10, 'new')")
    b.begin()
    assert scalar(b, "SELECT COUNT(*) FROM e2e_state") == 1
    rows(b, "INSERT INTO e2e_state VALUES (11, 'newer')")   # b is repeatable read: its snapshot holds
    b.commit()
    assert scalar(a, "SELECT COUNT(*) FROM e2e_state") == 2   # a: read committed sees new rows mid-transaction
    a.commit()


def test_last_insert_id_is_the_clients_own(proxy: MysqlProxy, two: tuple[Conn, Conn]) -> None:
    """LAST_INSERT_ID() on another server connection: the client's own last insert id (SPEC §12)."""
    a, b = two
    rows(a, "INSERT INTO e2e_lid (who) VALUES ('a')")
    a_id = a.insert_id()
    assert scalar(a, "SELECT LAST_INSERT_ID()") == a_id
    for _ in range(2):
        b.begin()
        rows(b, "SELECT 1")   # a's next statements run on the other server connection
        assert scalar(a, "SELECT LAST_INSERT_ID()") == a_id
        b.commit()
    rows(b, "INSERT INTO e2e_lid (who) VALUES ('b')")
    b_id = b.insert_id()
    assert b_id > a_id
    assert scalar(a, "SELECT LAST_INSERT_ID()") == a_id
    assert scalar(b, "SELECT LAST_INSERT_ID()") == b_id
    # The parent/child pattern, with another client's insert on that server connection in between.
    b.begin()
    rows(b, "INSERT INTO e2e_lid (who) VALUES ('b again')")
    rows(a, "INSERT INTO e2e_lid_child (parent) VALUES (LAST_INSERT_ID())")
    b.commit()
    assert scalar(a, "SELECT parent FROM e2e_lid_child WHERE id = LAST_INSERT_ID()") == a_id
    with connect(proxy) as c:   # a client that never inserted
        assert scalar(c, "SELECT LAST_INSERT_ID()") == 0
    # LAST_INSERT_ID(expr) sets the value where no OK packet tells: that pins.
    with connect(proxy) as d:
        assert scalar(d, "SELECT LAST_INSERT_ID(777)") == 777
        assert client_row(proxy, d.thread_id())["pinned"] == "LAST_INSERT_ID()"
        assert scalar(d, "SELECT LAST_INSERT_ID()") == 777


def test_last_insert_id_after_a_multi_statement_insert(proxy: MysqlProxy) -> None:
    """`INSERT ...; UPDATE ...` answers with two OK packets at once: the next client of that server
    connection still reads its own LAST_INSERT_ID(), not the multi-statement client's."""
    from pymysql.constants import CLIENT

    holder = connect(proxy)
    try:
        holder.begin()
        holder_thread = server_thread(holder)   # a and b below share the other server connection
        with connect(proxy, client_flag=CLIENT.MULTI_STATEMENTS) as a, a.cursor() as cur:
            cur.execute("INSERT INTO e2e_lid (who) VALUES ('multi'); UPDATE e2e_lid SET who = who WHERE id < 0")
            while cur.nextset():
                pass
            thread = server_thread(a)
        with connect(proxy) as b:
            assert server_thread(b) == thread != holder_thread
            assert scalar(b, "SELECT LAST_INSERT_ID()") == 0
        holder.commit()
    finally:
        holder.close()


def test_last_insert_id_in_prepared_statements(proxy: MysqlProxy) -> None:
    clients = [mysql.connector.connect(host=HOST, port=proxy.port, user=APP_USER, password=APP_PASSWORD,
                                       database=APP_DB, autocommit=True, use_pure=True) for _ in range(2)]
    try:
        ids = []
        for conn in clients:
            cur = conn.cursor(prepared=True)
            cur.execute("INSERT INTO e2e_lid (who) VALUES (?)", ("prepared",))
            ids.append(cur.lastrowid)
        for _ in range(3):
            for k, conn in enumerate(clients):
                other = clients[1 - k]
                other.start_transaction()
                hold = other.cursor()
                hold.execute("SELECT 1")
                hold.fetchall()
                cur = conn.cursor(prepared=True)
                cur.execute("SELECT LAST_INSERT_ID(), ?", (k,))
                assert cur.fetchall() == [(ids[k], k)]
                other.commit()
    finally:
        for conn in clients:
            conn.close()


def test_reset_connection_resets_the_clients_state(proxy: MysqlProxy) -> None:
    conn = mysql.connector.connect(host=HOST, port=proxy.port, user=APP_USER, password=APP_PASSWORD,
                                   database=APP_DB, autocommit=True, use_pure=True)
    try:
        cur = conn.cursor()
        cur.execute("SET time_zone = '+07:00'")
        cur.execute("SET sql_mode = 'ANSI_QUOTES'")
        cur.execute(f"USE {OTHER_DB}")
        cur.execute("SELECT @@time_zone, @@sql_mode, DATABASE()")
        assert cur.fetchall() == [("+07:00", "ANSI_QUOTES", OTHER_DB)]
        assert conn.cmd_reset_connection() is True   # unpinned: answered by the proxy
        cur = conn.cursor()
        cur.execute("SELECT @@time_zone, @@sql_mode = @@global.sql_mode, DATABASE()")
        assert cur.fetchall() == [("SYSTEM", 1, OTHER_DB)]   # COM_RESET_CONNECTION keeps the schema
        # Pinned: a user variable and a temporary table; the reset sends them away and unpins.
        cur.execute("SET @mine = 42")
        cur.execute("CREATE TEMPORARY TABLE e2e_reset_tmp (x INT)")
        assert client_row(proxy, conn.connection_id)["pinned"] == "user variable"
        assert conn.cmd_reset_connection() is True
        cur = conn.cursor()
        cur.execute("SELECT @mine")
        assert cur.fetchall() == [(None,)]
        assert client_row(proxy, conn.connection_id)["pinned"] == "user variable"   # the SELECT @mine
        assert conn.cmd_reset_connection() is True
        assert client_row(proxy, conn.connection_id)["pinned"] is None
        with pytest.raises(mysql.connector.Error) as excinfo:
            cur = conn.cursor()
            cur.execute("SELECT * FROM e2e_reset_tmp")
            cur.fetchall()
        assert excinfo.value.errno == 1146
    finally:
        conn.close()


def test_change_user_is_authenticated_by_the_proxy_and_starts_over(proxy: MysqlProxy) -> None:
    conn = mysql.connector.connect(host=HOST, port=proxy.port, user=APP_USER, password=APP_PASSWORD,
                                   database=APP_DB, autocommit=True, use_pure=True)
    try:
        cur = conn.cursor()
        cur.execute("SET time_zone = '+07:00'")
        cur.execute("SET @pinned = 1")   # pinned: the server connection goes back (reset) first
        assert client_row(proxy, conn.connection_id)["pinned"] == "user variable"
        conn.cmd_change_user(username=APP_USER, password=APP_PASSWORD, database=OTHER_DB)
        cur = conn.cursor()
        cur.execute("SELECT @@time_zone, DATABASE(), @pinned, (SELECT db FROM where_am_i)")
        assert cur.fetchall() == [("SYSTEM", OTHER_DB, None, OTHER_DB)]
        assert client_row(proxy, conn.connection_id)["pinned"] == "user variable"   # the SELECT @pinned
        with pytest.raises(mysql.connector.Error) as excinfo:
            conn.cmd_change_user(username=APP_USER, password="wrong", database=APP_DB)
        assert excinfo.value.errno == 1045
    finally:
        conn.close()
    with connect(proxy) as other:   # the proxy and its pool carry on
        assert scalar(other, "SELECT 1") == 1


# ---- pins -------------------------------------------------------------------------------------------


def _user_var_absent(conn: Conn) -> None:
    assert scalar(conn, "SELECT @e2e_pin IS NULL") == 1


def _lock_tables_absent(conn: Conn) -> None:
    rows(conn, "SET SESSION lock_wait_timeout = 2")
    rows(conn, "UPDATE e2e_pin SET id = id WHERE id = 1")   # e2e_pin is not locked READ any more


def _get_lock_absent(conn: Conn) -> None:
    assert scalar(conn, "SELECT IS_FREE_LOCK('e2e_pin_lock')") == 1


def _temp_table_absent(conn: Conn) -> None:
    with pytest.raises(pymysql.err.ProgrammingError) as excinfo:
        rows(conn, "SELECT * FROM e2e_pin_tmp")
    assert excinfo.value.args[0] == 1146
    assert scalar(conn, "SELECT COUNT(*) FROM e2e_pin") == 3   # the real table, not a shadowing temp one


def _prepare_absent(conn: Conn) -> None:
    with pytest.raises(pymysql.err.DatabaseError) as excinfo:
        rows(conn, "EXECUTE e2e_pin_stmt")
    assert excinfo.value.args[0] == 1243   # unknown prepared statement handler


def _handler_absent(conn: Conn) -> None:
    with pytest.raises(pymysql.err.DatabaseError) as excinfo:
        rows(conn, "HANDLER e2e_pin READ FIRST")
    assert excinfo.value.args[0] == 1109   # unknown table in HANDLER


def _xa_absent(conn: Conn) -> None:
    assert scalar(conn, "SELECT @@in_transaction") == 0
    rows(conn, "XA START 'e2e-xa-next'")   # no XA transaction is active on this server connection any more
    rows(conn, "XA END 'e2e-xa-next'")
    rows(conn, "XA ROLLBACK 'e2e-xa-next'")


def _nothing(conn: Conn) -> None:
    pass


PINS: dict[str, tuple[str, str, Callable[[Conn], None]]] = {
    # case: (what pins, the reason SHOW CLIENTS gives, a check that its state is gone for the next client)
    "user variable": ("SET @e2e_pin = 7", "user variable", _user_var_absent),
    "user variable read": ("SELECT @e2e_pin", "user variable", _user_var_absent),
    "LOCK TABLES": ("LOCK TABLES e2e_pin READ", "LOCK TABLES", _lock_tables_absent),
    "GET_LOCK": ("SELECT GET_LOCK('e2e_pin_lock', 1)", "GET_LOCK", _get_lock_absent),
    "temporary table": ("CREATE TEMPORARY TABLE e2e_pin_tmp (x INT)", "temporary table", _temp_table_absent),
    "SQL PREPARE": ("PREPARE e2e_pin_stmt FROM 'SELECT 1'", "SQL PREPARE", _prepare_absent),
    "SQL_CALC_FOUND_ROWS": ("SELECT SQL_CALC_FOUND_ROWS * FROM e2e_pin LIMIT 1", "SQL_CALC_FOUND_ROWS", _nothing),
    "FOUND_ROWS()": ("SELECT FOUND_ROWS()", "FOUND_ROWS()", _nothing),
    "SET non-literal": ("SET sql_mode = CONCAT(@@sql_mode, ',ANSI_QUOTES')", "SET with a non-literal value",
                        _nothing),
    "HANDLER": ("HANDLER e2e_pin OPEN", "HANDLER", _handler_absent),
    "XA": ("XA START 'e2e-xa'", "XA", _xa_absent),
}


@pytest.mark.parametrize("case", list(PINS))
def test_pin_holds_the_server_and_its_state_goes_with_the_client(proxy: MysqlProxy, case: str) -> None:
    statement, reason, absent = PINS[case]
    with ExitStack() as stack:
        pinned = connect(proxy)
        stack.callback(lambda: pinned.open and pinned.close())
        other = stack.enter_context(connect(proxy))
        rows(pinned, statement)
        row = client_row(proxy, pinned.thread_id())
        assert row["pinned"] == reason, row
        assert row["server_id"] is not None, "a pinned client keeps its server connection while idle"
        assert client_row(proxy, other.thread_id())["pinned"] is None
        thread = server_thread(pinned)
        for _ in range(3):
            assert server_thread(other) != thread, "another client ran on a pinned server connection"
            other.begin()
            assert server_thread(pinned) == thread
            other.commit()
        assert any(r["pinned"] == reason for r in _show_servers(proxy))
        # The pinned client leaves; `holder` keeps the other server connection busy, so the next
        # client gets the one that was pinned, reset (COM_RESET_CONNECTION) before reuse.
        holder = other
        holder.begin()
        holder_thread = server_thread(holder)
        pinned.close()
        with connect(proxy) as after:
            assert server_thread(after) == thread
            assert server_thread(after) != holder_thread
            absent(after)
            assert scalar(after, "SELECT @@in_transaction") == 0
        holder.commit()


def _show_servers(proxy: MysqlProxy) -> list[dict[str, Any]]:
    return admin_rows(proxy, "SHOW SERVERS")


# ---- clients that go away ---------------------------------------------------------------------------

_DYING_CLIENT = """
import sys, time, pymysql
conn = pymysql.connect(host=sys.argv[1], port=int(sys.argv[2]), user=sys.argv[3], password=sys.argv[4],
                       database=sys.argv[5], autocommit=True)
with conn.cursor() as cur:
    cur.execute("CREATE TEMPORARY TABLE e2e_dying_tmp (x INT)")
    cur.execute("BEGIN")
    cur.execute("INSERT INTO e2e_state VALUES (99, 'uncommitted')")
    cur.execute("SELECT CONNECTION_ID()")
    print(cur.fetchone()[0], flush=True)
    time.sleep(60)
"""


@pytest.mark.parametrize("how", ["SIGKILL", "socket shutdown"])
def test_client_killed_mid_transaction_leaves_a_clean_server(proxy: MysqlProxy, mysql_cluster: MysqlCluster,
                                                              how: str) -> None:
    with connect(proxy) as conn:
        rows(conn, "DELETE FROM e2e_state")
    holder = connect(proxy)
    holder.begin()
    holder_thread = server_thread(holder)   # the other server connection stays busy meanwhile
    try:
        if how == "SIGKILL":
            child = subprocess.Popen([sys.executable, "-c", _DYING_CLIENT, HOST, str(proxy.port), APP_USER,
                                      APP_PASSWORD, APP_DB], stdout=subprocess.PIPE, text=True)
            assert child.stdout is not None
            thread = int(child.stdout.readline())
            assert trx_count(mysql_cluster) >= 1
            os.kill(child.pid, signal.SIGKILL)
            child.wait(10)
        else:
            dying = connect(proxy)
            rows(dying, "CREATE TEMPORARY TABLE e2e_dying_tmp (x INT)")
            dying.begin()
            rows(dying, "INSERT INTO e2e_state VALUES (99, 'uncommitted')")
            thread = server_thread(dying)
            dying._sock.shutdown(2)   # type: ignore[union-attr]  # gone without COM_QUIT
            dying._sock.close()   # type: ignore[union-attr]
        wait_until(lambda: trx_count(mysql_cluster) == 0, timeout=10, what="the dead client's transaction rolled back")
        with connect(proxy) as after:
            assert server_thread(after) == thread != holder_thread
            assert scalar(after, "SELECT @@in_transaction") == 0
            assert scalar(after, "SELECT COUNT(*) FROM e2e_state") == 0
            with pytest.raises(pymysql.err.ProgrammingError):
                rows(after, "SELECT * FROM e2e_dying_tmp")
    finally:
        holder.commit()
        holder.close()
    assert proxy.log_text().count("Traceback") == 0


def test_client_gone_with_a_query_in_flight(proxy: MysqlProxy, mysql_cluster: MysqlCluster) -> None:
    dying = connect(proxy)
    thread = server_thread(dying)
    dying._sock.sendall(b"\x11\x00\x00\x00\x03SELECT SLEEP(30)")   # type: ignore[union-attr]
    wait_until(lambda: any(r["INFO"] == "SELECT SLEEP(30)" for r in proxy_threads(mysql_cluster)), timeout=5,
               what="the SLEEP running")
    dying._sock.shutdown(2)   # type: ignore[union-attr]
    dying._sock.close()   # type: ignore[union-attr]
    # That server connection had work in flight: its statement is interrupted and it is closed,
    # never handed to another client.
    wait_until(lambda: all(r["ID"] != thread for r in proxy_threads(mysql_cluster)), timeout=5,
               what="the server connection of the departed client closed")
    with connect(proxy) as after:
        assert server_thread(after) != thread
        assert scalar(after, "SELECT 'fine'") == "fine"


# ---- KILL ---------------------------------------------------------------------------------------------


def test_kill_query_and_kill_connection_by_proxy_id(proxy: MysqlProxy, mysql_cluster: MysqlCluster) -> None:
    victim = connect(proxy)
    killer = connect(proxy)
    holder = connect(proxy)
    try:
        victim_id = victim.thread_id()   # the proxy's id for this client (from its handshake)
        outcome: dict[str, Any] = {}

        def sleep() -> None:
            started = time.monotonic()
            try:
                outcome["value"] = scalar(victim, "SELECT SLEEP(30)")
            except pymysql.err.MySQLError as exc:
                outcome["error"] = exc.args[0]
            outcome["seconds"] = time.monotonic() - started

        sleeper = threading.Thread(target=sleep)
        sleeper.start()
        wait_until(lambda: any(r["INFO"] == "SELECT SLEEP(30)" for r in proxy_threads(mysql_cluster)),
                   timeout=10, what="the SLEEP running")
        holder.begin()
        rows(holder, "SELECT 1")   # now both server connections are busy: KILL needs none
        rows(killer, f"KILL QUERY {victim_id}")
        sleeper.join(15)
        assert not sleeper.is_alive()
        assert outcome["seconds"] < 10, outcome
        assert outcome.get("value") == 1 or outcome.get("error") == 1317, outcome   # interrupted
        holder.commit()
        assert scalar(victim, "SELECT 'still connected'") == "still connected"
        # KILL of an unknown id: ER_NO_SUCH_THREAD, as a server says it.
        with pytest.raises(pymysql.err.OperationalError) as excinfo:
            rows(killer, "KILL 4242424")
        assert excinfo.value.args[0] == 1094
        with pytest.raises(pymysql.err.OperationalError) as excinfo:
            rows(killer, "KILL QUERY 4242424")
        assert excinfo.value.args[0] == 1094
        # KILL of a client in the middle of a statement: its server thread stops too.
        victim_thread = server_thread(victim)
        outcome.clear()
        sleeper = threading.Thread(target=sleep)
        sleeper.start()
        wait_until(lambda: any(r["INFO"] == "SELECT SLEEP(30)" for r in proxy_threads(mysql_cluster)),
                   timeout=10, what="the SLEEP running again")
        rows(killer, f"KILL {victim_id}")
        sleeper.join(15)
        assert outcome.get("error") in (1927, 2006, 2013), outcome
        wait_until(lambda: all(r["ID"] != victim_thread for r in proxy_threads(mysql_cluster)), timeout=5,
                   what="the killed client's server thread gone")
        with pytest.raises(pymysql.err.MySQLError) as killed:
            scalar(victim, "SELECT 1")
        assert killed.value.args[0] in (0, 1927, 2006, 2013), killed.value.args
        wait_until(lambda: victim_id not in {r["id"] for r in _clients(proxy)}, timeout=5,
                   what="the killed client gone from SHOW CLIENTS")
        assert scalar(killer, "SELECT 'killer fine'") == "killer fine"
    finally:
        for conn in (victim, killer, holder):
            try:
                conn.close()
            except pymysql.err.Error:
                pass


def test_processlist_shows_proxy_ids_and_kill_of_another_user_is_the_servers_call(proxy: MysqlProxy) -> None:
    app = connect(proxy)
    boss = connect(proxy, user="boss", password="boss-pass")
    peon = connect(proxy, user="peon", password="peon-pass")
    try:
        # Its own SHOW PROCESSLIST row carries the id of its handshake (not the server thread's).
        own = [r for r in rows(app, "SHOW PROCESSLIST") if r[7] == "SHOW PROCESSLIST"]
        assert [r[0] for r in own] == [app.thread_id()]
        full = [r for r in rows(app, "show full processlist") if r[7] == "show full processlist"]
        assert [r[0] for r in full] == [app.thread_id()]
        app_id = app.thread_id()
        # An idle client of another user has no server thread the server could judge the KILL by.
        with pytest.raises(pymysql.err.OperationalError) as excinfo:
            rows(boss, f"KILL {app_id}")
        assert excinfo.value.args[0] == 1095
        app.begin()
        thread = server_thread(app)   # now it holds a server connection
        listed = {r[0]: r[1] for r in rows(boss, "SHOW PROCESSLIST")}
        assert listed.get(app_id) == APP_USER and thread not in listed
        # The server decides: without CONNECTION ADMIN it is refused, and the client lives on.
        with pytest.raises(pymysql.err.OperationalError) as excinfo:
            rows(peon, f"KILL QUERY {app_id}")
        assert excinfo.value.args[0] == 1095
        assert scalar(app, "SELECT 'alive'") == "alive"
        rows(boss, f"KILL {app_id}")
        with pytest.raises(pymysql.err.MySQLError):
            scalar(app, "SELECT 1")
        # KILL CONNECTION: the client is gone too, not only its server thread.
        wait_until(lambda: app_id not in {r["id"] for r in _clients(proxy)}, timeout=5,
                   what="the killed client gone from SHOW CLIENTS")
        assert scalar(boss, "SELECT 'boss fine'") == "boss fine"
        assert scalar(peon, "SELECT 'peon fine'") == "peon fine"
    finally:
        for conn in (app, boss, peon):
            try:
                conn.close()
            except pymysql.err.Error:
                pass


def _clients(proxy: MysqlProxy) -> list[dict[str, Any]]:
    return admin_rows(proxy, "SHOW CLIENTS")
