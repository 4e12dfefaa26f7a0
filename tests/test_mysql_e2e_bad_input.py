"""End to end, MySQL engine, SPEC §9: bad logins and bad bytes get a clear error (or a close), nobody else notices.

After every test a normal client still works, no server connection of the proxy is left inside a
transaction, and the proxy's log holds no traceback.
"""

from __future__ import annotations

import asyncio
import hashlib
import shutil
import string
import subprocess
import time
from collections.abc import Iterator

import asyncpg
import pymysql
import pytest
from e2e_helpers import clean_env, wait_until
from mysql_e2e_helpers import (
    MysqlProxy,
    admin_rows,
    connect,
    direct,
    mariadb_cli,
    mysql_module_proxy,
    rows,
    scalar,
    server_thread,
    trx_count,
)
from mysql_e2e_helpers import (
    RawSocket as RawClient,
)

from deploy.mysqlcluster import HOST, MysqlCluster
from proxy.engines.mysql.wire.handshake import HandshakeResponse41
from proxy.engines.mysql.wire.messages import decode_err

LOGIN_TIMEOUT = 2.0
MAX_CLIENTS = 6
GLOBAL_USER, GLOBAL_PASSWORD = "e2e_global", "global-pass"   # has a global privilege: sees 1049, not 1044
BIG_DB = "e2e_big"


@pytest.fixture(scope="module")
def proxy(mysql_cluster: MysqlCluster, tmp_path_factory: pytest.TempPathFactory) -> Iterator[MysqlProxy]:
    with direct(mysql_cluster) as conn:
        for sql in (f"CREATE USER IF NOT EXISTS '{GLOBAL_USER}'@'%' IDENTIFIED BY '{GLOBAL_PASSWORD}'",
                    f"GRANT SELECT ON *.* TO '{GLOBAL_USER}'@'%'",
                    f"CREATE DATABASE IF NOT EXISTS {BIG_DB}", f"GRANT ALL ON {BIG_DB}.* TO 'app'@'%'",
                    "DROP TABLE IF EXISTS app.e2e_bad", "CREATE TABLE app.e2e_bad (id INT PRIMARY KEY, b LONGBLOB)"):
            rows(conn, sql)
    with mysql_module_proxy(mysql_cluster, tmp_path_factory.mktemp("my-bad"), pool_size=2,
                            client_login_timeout=f"{LOGIN_TIMEOUT:g}s", max_client_connections=MAX_CLIENTS,
                            extra_users=[(GLOBAL_USER, GLOBAL_PASSWORD)]) as proxy:
        yield proxy
        proxy.assert_alive_and_clean()


@pytest.fixture(autouse=True)
def still_serving(proxy: MysqlProxy, mysql_cluster: MysqlCluster) -> Iterator[None]:
    yield
    with connect(proxy) as conn:
        assert scalar(conn, "SELECT 'still serving'") == "still serving"
    wait_until(lambda: trx_count(mysql_cluster) == 0, timeout=5, what="no server connection in a transaction")
    proxy.assert_alive_and_clean()


def _packet(payload: bytes, seq: int) -> bytes:
    return len(payload).to_bytes(3, "little") + bytes((seq,)) + payload


def _err(payload: bytes) -> tuple[int, str]:
    err = decode_err(payload)
    return err.errno, err.message


def _logged(proxy: MysqlProxy, client: RawClient) -> bool:
    return f"127.0.0.1:{client.local_port}" in proxy.log_text()


# ---- logins ---------------------------------------------------------------------------------------


def test_wrong_password_and_unknown_user_look_the_same(proxy: MysqlProxy) -> None:
    messages = {}
    for user, password in (("app", "wrong"), ("nobody", "wrong"), ("app", "")):
        with pytest.raises(pymysql.err.OperationalError) as excinfo:
            connect(proxy, user=user, password=password)
        errno, message = excinfo.value.args
        assert errno == 1045
        messages[(user, password)] = message
    assert messages[("app", "wrong")] == "Access denied for user 'app'@'127.0.0.1' (using password: YES)"
    assert messages[("nobody", "wrong")] == "Access denied for user 'nobody'@'127.0.0.1' (using password: YES)"
    assert messages[("app", "")] == "Access denied for user 'app'@'127.0.0.1' (using password: NO)"
    result = mariadb_cli(proxy.port, "SELECT 1", password="wrong")
    assert result.returncode == 1
    assert "ERROR 1045 (28000): Access denied for user 'app'@'127.0.0.1' (using password: YES)" in result.stderr
    assert "login refused: wrong password" in proxy.log_text()
    assert "login refused: unknown user" in proxy.log_text()


def test_unknown_database(proxy: MysqlProxy) -> None:
    # A user with a global privilege learns that the database does not exist (1049); app, whose
    # grants are per database, gets the server's 1044 as the server words it.
    with pytest.raises(pymysql.err.OperationalError) as excinfo:
        connect(proxy, user=GLOBAL_USER, password=GLOBAL_PASSWORD, database="e2e_no_such_db")
    assert excinfo.value.args == (1049, "Unknown database 'e2e_no_such_db'")
    with pytest.raises(pymysql.err.OperationalError) as excinfo:
        connect(proxy, database="e2e_no_such_db")
    assert excinfo.value.args == (1044, "Access denied for user 'app'@'%' to database 'e2e_no_such_db'")
    result = mariadb_cli(proxy.port, "SELECT 1", database="e2e_no_such_db")
    assert result.returncode == 1 and "ERROR 1044 (42000)" in result.stderr
    # The same users reach the databases that exist.
    with connect(proxy, user=GLOBAL_USER, password=GLOBAL_PASSWORD, database="app") as conn:
        assert scalar(conn, "SELECT CURRENT_USER()") == f"{GLOBAL_USER}@%"


def test_garbage_after_the_greeting(proxy: MysqlProxy) -> None:
    for garbage in (b"\xff" * 64, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", b"\x05\x00\x00\x01\x00\x00\x00\x00\x00"):
        client = RawClient(proxy.port)
        client.greeting()
        client.send(garbage)
        reply = client.packet()
        if reply is not None:   # an ERR (then the close), or only the close
            errno, message = _err(reply[1])
            assert errno in (1043, 1156), message
        assert client.closed_by_peer()
        client.close()
        wait_until(lambda c=client: _logged(proxy, c), what="a log line about the client")  # type: ignore[misc]


def test_truncated_handshake_response_then_close(proxy: MysqlProxy) -> None:
    client = RawClient(proxy.port)
    greeting = client.greeting()
    response = HandshakeResponse41(greeting.capabilities & 0x3FFFFFF, 1 << 24, 45, "app", b"x" * 20, "app",
                                   "mysql_native_password", {}).encode()
    client.send(_packet(response, 1)[:len(response) // 2])
    time.sleep(0.1)
    client.close()
    wait_until(lambda: f"client 127.0.0.1:{client.local_port}: disconnected in the middle of its login"
               in proxy.log_text(), what="the half-sent login logged")


def test_slow_loris_is_let_go_after_client_login_timeout(proxy: MysqlProxy) -> None:
    started = time.monotonic()
    silent = RawClient(proxy.port)     # sends nothing at all
    silent.greeting()
    partial = RawClient(proxy.port)    # announces a 64-byte handshake response, sends 10 bytes of it
    partial.greeting()
    partial.send(b"\x40\x00\x00\x01" + b"\x00" * 10)
    reply = silent.packet()   # after client_login_timeout: an ERR, then the close
    elapsed = time.monotonic() - started
    assert reply is not None
    assert _err(reply[1])[0] == 1043
    assert silent.closed_by_peer()
    assert LOGIN_TIMEOUT - 0.2 <= elapsed <= LOGIN_TIMEOUT + 3, elapsed
    assert partial.closed_by_peer(timeout=3)
    for client in (silent, partial):
        wait_until(lambda c=client: f"client 127.0.0.1:{c.local_port}: login not completed"  # type: ignore[misc]
                   in proxy.log_text())
        client.close()


def test_too_many_clients(proxy: MysqlProxy) -> None:
    clients = [connect(proxy) for _ in range(MAX_CLIENTS)]
    try:
        with pytest.raises(pymysql.err.OperationalError) as excinfo:
            connect(proxy)
        assert excinfo.value.args[0] == 1040
        assert "max_client_connections" in excinfo.value.args[1]
        result = mariadb_cli(proxy.port, "SELECT 1")
        assert result.returncode == 1 and "ERROR 1040" in result.stderr, result.stderr
        for conn in clients:   # the ones in keep working
            assert scalar(conn, "SELECT 1") == 1
    finally:
        for conn in clients:
            conn.close()
    wait_until(lambda: len([c for c in admin_rows(proxy, "SHOW CLIENTS") if c["user"] == "app"]) == 0,
               what="the clients gone")


# ---- other protocols ---------------------------------------------------------------------------------


def test_postgresql_client_at_the_mysql_port(proxy: MysqlProxy) -> None:
    psql = shutil.which("psql")
    if psql is not None:
        result = subprocess.run([psql, "-X", "-h", HOST, "-p", str(proxy.port), "-U", "app", "-d", "app", "-c",
                                 "SELECT 1"], capture_output=True, text=True, timeout=20, stdin=subprocess.DEVNULL,
                                env=clean_env(PGCONNECT_TIMEOUT="5", PGSSLMODE="disable", PGPASSWORD="x"))
        assert result.returncode != 0
        assert result.stderr.strip(), "psql should say why it failed"

    async def with_asyncpg() -> BaseException:
        try:
            conn = await asyncpg.connect(host=HOST, port=proxy.port, user="app", password="x", database="app",
                                         ssl=False, timeout=5)
        except Exception as exc:  # noqa: BLE001 - any clear failure will do
            return exc
        await conn.close()
        raise AssertionError("asyncpg logged in to a MySQL endpoint")

    exc = asyncio.run(with_asyncpg())
    assert not isinstance(exc, TimeoutError), "asyncpg should fail at once, not time out"
    wait_until(lambda: "the client sent a PostgreSQL startup" in proxy.log_text(),
               what="the PostgreSQL client logged")


# ---- oversized commands ------------------------------------------------------------------------------


def test_command_over_64_mib_is_refused_and_closed(proxy: MysqlProxy) -> None:
    bystander = connect(proxy)
    big = connect(proxy, max_allowed_packet=96 * 1024 * 1024, read_timeout=30)
    try:
        with pytest.raises(pymysql.err.OperationalError) as excinfo:
            rows(big, "SELECT '" + "x" * (65 * 1024 * 1024) + "'")
        assert excinfo.value.args[0] == 1153, excinfo.value.args
        with pytest.raises(pymysql.err.Error):
            rows(big, "SELECT 1")
        assert scalar(bystander, "SELECT 'bystander fine'") == "bystander fine"
    finally:
        big.close()
        bystander.close()


def test_oversized_command_mid_transaction_rolls_back(proxy: MysqlProxy, mysql_cluster: MysqlCluster) -> None:
    big = connect(proxy, max_allowed_packet=96 * 1024 * 1024, read_timeout=30)
    try:
        rows(big, "DELETE FROM e2e_bad")
        big.begin()
        rows(big, "INSERT INTO e2e_bad (id) VALUES (1)")
        with pytest.raises(pymysql.err.OperationalError) as excinfo:
            rows(big, "INSERT INTO e2e_bad VALUES (2, '" + "y" * (64 * 1024 * 1024) + "')")
        assert excinfo.value.args[0] == 1153
    finally:
        big.close()
    wait_until(lambda: trx_count(mysql_cluster) == 0, what="the transaction rolled back")
    with connect(proxy) as conn:
        assert scalar(conn, "SELECT COUNT(*) FROM e2e_bad") == 0


def test_command_over_the_servers_max_allowed_packet(proxy: MysqlProxy, mysql_cluster: MysqlCluster) -> None:
    """Under the proxy's limit, over the server's (16 MiB): the server refuses it and hangs up; the
    client gets the server's error and carries on (on another server connection)."""
    with direct(mysql_cluster) as conn:
        limit = int(scalar(conn, "SELECT @@global.max_allowed_packet"))
    assert limit <= 16 * 1024 * 1024, "the cluster's default max_allowed_packet"
    client = connect(proxy, max_allowed_packet=96 * 1024 * 1024, read_timeout=15)
    try:
        thread = server_thread(client)
        with pytest.raises(pymysql.err.MySQLError) as excinfo:
            rows(client, "SELECT LENGTH('" + "z" * (20 * 1024 * 1024) + "')")
        assert excinfo.value.args[0] in (1153, 2013), excinfo.value.args
        assert scalar(client, "SELECT 'carries on'") == "carries on"
        assert server_thread(client) != thread
    finally:
        client.close()


def test_command_of_several_16_mib_packets(proxy: MysqlProxy, mysql_cluster: MysqlCluster) -> None:
    """A 20 MiB statement (two packets) and row, with a server that takes them: relayed intact."""
    with direct(mysql_cluster) as conn:
        rows(conn, "SET GLOBAL max_allowed_packet = 64 * 1024 * 1024")   # for connections opened from now
    try:
        # A database of its own: its pool opens new server connections, under the new limit.
        client = connect(proxy, database=BIG_DB, max_allowed_packet=96 * 1024 * 1024, read_timeout=30)
        try:
            text = (string.ascii_letters * (20 * 1024 * 1024 // 52 + 1))[:20 * 1024 * 1024]
            assert scalar(client, "SELECT MD5('" + text + "')") == hashlib.md5(text.encode()).hexdigest()
            value = scalar(client, "SELECT REPEAT('q', 20 * 1024 * 1024)")
            assert len(value) == 20 * 1024 * 1024 and set(value) == {"q"}
            assert scalar(client, "SELECT 'after' /* " + "@;" * 5 + " */") == "after"
        finally:
            client.close()
    finally:
        with direct(mysql_cluster) as conn:
            rows(conn, "SET GLOBAL max_allowed_packet = 16 * 1024 * 1024")


def test_slow_reader_of_a_large_result_then_the_next_client(proxy: MysqlProxy) -> None:
    """Back-pressure: while a client reads a large result slowly the proxy stops reading its server
    connection; once that connection goes back to the pool it must be read again, for the next client."""
    holder = connect(proxy)
    try:
        holder.begin()
        holder_thread = server_thread(holder)   # the other server connection stays busy
        for round_ in range(4):
            with connect(proxy) as slow, slow.cursor(pymysql.cursors.SSCursor) as stream:
                stream.execute("SELECT seq, REPEAT('s', 1000) FROM seq_1_to_10000")
                for i, _ in enumerate(stream):
                    if i % 2000 == 0:
                        time.sleep(0.05)
            with connect(proxy, read_timeout=5) as after:
                assert server_thread(after) != holder_thread
                assert scalar(after, "SELECT 'next client served'") == "next client served", round_
        holder.commit()
    finally:
        holder.close()


def test_server_side_state_after_bad_input(proxy: MysqlProxy) -> None:
    """SHOW SERVERS lists no server connection in a transaction or pinned once the dust settled."""
    wait_until(lambda: all(s["tx_status"] == "I" and s["pinned"] is None for s in admin_rows(proxy, "SHOW SERVERS")),
               what="every server connection idle")
