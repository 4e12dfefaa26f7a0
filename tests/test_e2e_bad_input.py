"""End to end, SPEC §9: clients sending bad bytes get an error or a close, and nobody else notices.

Every test talks raw protocol on a socket, then checks that the proxy still serves a normal client,
that no server connection was left in a transaction, and that the log holds no traceback.
"""

from __future__ import annotations

import socket
import struct
import time
from collections.abc import Iterator

import psycopg
import pytest
from e2e_helpers import (
    RawClient,
    RunningProxy,
    data_rows,
    first_error,
    message,
    module_proxy,
    query_message,
    startup_packet,
    wait_until,
)

from deploy.pgcluster import PgCluster

# The module's proxy lets a client take this long to log in (SPEC §9 slow-loris; default 15 s).
LOGIN_TIMEOUT = 3.0


@pytest.fixture(scope="module")
def proxy(pg_cluster: PgCluster, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningProxy]:
    # Trust client auth keeps the raw clients simple; pool size 1 makes every client reuse the
    # server connection a misbehaving client had.
    pg_cluster.sql(0, "DROP TABLE IF EXISTS e2e_bad; CREATE TABLE e2e_bad (x int); "
                      "GRANT ALL ON e2e_bad TO PUBLIC", db="app")
    with module_proxy(pg_cluster, tmp_path_factory.mktemp("bad"), pool_size=1, client_auth="trust",
                      client_login_timeout=f"{LOGIN_TIMEOUT:g}s") as proxy:
        yield proxy
        proxy.assert_alive_and_clean()


@pytest.fixture(autouse=True)
def still_serving(proxy: RunningProxy, pg_cluster: PgCluster) -> Iterator[None]:
    yield
    with psycopg.connect(proxy.conninfo(), autocommit=True, connect_timeout=5) as conn:
        assert conn.execute("SELECT 'still serving'").fetchone() == ("still serving",)
    assert _idle_in_transaction(pg_cluster) == [], "a server connection was left in a transaction"
    proxy.assert_alive_and_clean()


def _idle_in_transaction(pg_cluster: PgCluster) -> list[str]:
    out = pg_cluster.sql(0, "SELECT pid FROM pg_stat_activity WHERE usename = 'app' "
                            "AND state LIKE 'idle in transaction%'")
    return out.split()


def _backend_state(pg_cluster: PgCluster, pid: int) -> str:
    return pg_cluster.sql(0, f"SELECT coalesce(state, '?') FROM pg_stat_activity WHERE pid = {pid}")


def _peer_logged(proxy: RunningProxy, client: RawClient) -> bool:
    return f"127.0.0.1:{client.local_port}" in proxy.log_text()


def _expect_error_or_close(client: RawClient, sqlstate: str | None = "08P01") -> bytes:
    """The proxy answers with an ErrorResponse (if any bytes) and closes the connection."""
    data = client.read_all_until_eof(timeout=10)
    if data:
        err = first_error(data)
        assert err is not None, f"expected an ErrorResponse, got {data[:200]!r}"
        assert err["S"] == "FATAL"
        if sqlstate is not None:
            assert err["C"] == sqlstate, err
    return data


# ------------------------------------------------------------------------------ before login


@pytest.mark.parametrize("garbage", [
    b"\xff" * 64,                                                    # absurd length
    struct.pack("!II", 16, 0xDEADBEEF) + b"\x00" * 8,                # unknown protocol code
    struct.pack("!I", 3),                                            # length below the minimum
    b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + b"\x42" * 100,  # a TLS ClientHello, no SSLRequest
], ids=["ff", "bad-protocol", "short-length", "tls-hello"])
def test_garbage_before_startup(proxy: RunningProxy, garbage: bytes) -> None:
    client = RawClient(proxy.port)
    client.send(garbage)
    _expect_error_or_close(client, sqlstate=None)
    wait_until(lambda: _peer_logged(proxy, client), what="a log line about the client")
    client.close()


def test_http_request_to_the_pg_port(proxy: RunningProxy) -> None:
    client = RawClient(proxy.port)
    client.send(b"GET /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\nUser-Agent: curl/8\r\n\r\n")
    data = _expect_error_or_close(client, sqlstate=None)
    assert b"HTTP/1.1 200" not in data
    wait_until(lambda: _peer_logged(proxy, client), what="a log line about the client")
    client.close()


def test_truncated_startup_then_close(proxy: RunningProxy) -> None:
    client = RawClient(proxy.port)
    client.send(startup_packet("app")[:11])
    time.sleep(0.2)
    client.close()
    wait_until(lambda: _peer_logged(proxy, client), what="a log line about the half-sent startup")
    # And a startup packet split over several writes still works.
    client = RawClient(proxy.port)
    packet = startup_packet("app")
    for i in range(0, len(packet), 5):
        client.send(packet[i:i + 5])
        time.sleep(0.01)
    messages = client.read_until_ready()
    assert messages[-1] == (b"Z", b"I")
    assert data_rows(client.query("SELECT 7")) == [["7"]]
    client.close()


def test_client_that_never_finishes_login_is_let_go(proxy: RunningProxy) -> None:
    """A half-sent startup packet and a silent connection are closed after client_login_timeout."""
    silent, half = RawClient(proxy.port), RawClient(proxy.port)
    half.send(startup_packet("app")[:11])
    started = time.monotonic()
    assert silent.read_all_until_eof(timeout=LOGIN_TIMEOUT + 5) == b""
    assert half.read_all_until_eof(timeout=5) == b""
    waited = time.monotonic() - started
    # The deadline is checked once a second.
    assert LOGIN_TIMEOUT - 0.5 <= waited <= LOGIN_TIMEOUT + 2.5, waited
    wait_until(lambda: f"login not completed within {LOGIN_TIMEOUT:g}s" in proxy.log_text(),
               what="the login timeout log line")
    # A client that logs in promptly and then stays idle longer than that is not touched.
    client = RawClient(proxy.port)
    client.login()
    time.sleep(LOGIN_TIMEOUT + 1.5)
    assert data_rows(client.query("SELECT 'still here'")) == [["still here"]]
    client.close()


def test_ssl_request_gets_n(proxy: RunningProxy) -> None:
    client = RawClient(proxy.port)
    client.send(struct.pack("!II", 8, 80877103))
    assert client.sock.recv(1) == b"N"
    client.login()
    assert data_rows(client.query("SELECT 'plain text after N'")) == [["plain text after N"]]
    client.close()


def test_gssenc_request_gets_n(proxy: RunningProxy) -> None:
    client = RawClient(proxy.port)
    client.send(struct.pack("!II", 8, 80877104))
    assert client.sock.recv(1) == b"N"
    client.login()
    assert data_rows(client.query("SELECT 1")) == [["1"]]
    client.close()


def test_libpq_sslmode_prefer(proxy: RunningProxy) -> None:
    """libpq's default sslmode=prefer sends SSLRequest first and carries on in plain text."""
    with psycopg.connect(proxy.conninfo(sslmode="prefer")) as conn:
        assert conn.execute("SELECT 1").fetchone() == (1,)
        assert conn.info.pgconn.ssl_in_use is False


# ------------------------------------------------------------------------------ after login


def test_oversized_message_after_login(proxy: RunningProxy) -> None:
    client = RawClient(proxy.port)
    client.login()
    client.send(b"Q" + struct.pack("!I", 0x7FFFFFF0) + b"SELECT 1")
    _expect_error_or_close(client)
    wait_until(lambda: _peer_logged(proxy, client), what="a log line about the client")
    client.close()


def test_oversized_message_mid_transaction(proxy: RunningProxy, pg_cluster: PgCluster) -> None:
    client = RawClient(proxy.port)
    client.login()
    replies = client.query("BEGIN; INSERT INTO e2e_bad VALUES (1); SELECT pg_backend_pid()")
    pid = int(data_rows(replies)[0][0])
    assert replies[-1] == (b"Z", b"T")
    client.send(b"Q" + struct.pack("!I", 0xFFFFFFFF))
    _expect_error_or_close(client)
    client.close()
    wait_until(lambda: _backend_state(pg_cluster, pid) in ("idle", ""), what="the backend leaves the transaction")
    assert pg_cluster.sql(0, "SELECT count(*) FROM e2e_bad", db="app") == "0"


def test_unknown_message_type_after_login(proxy: RunningProxy) -> None:
    client = RawClient(proxy.port)
    client.login()
    client.send(message(b"\x01", b"junk"))
    _expect_error_or_close(client)
    client.close()


def test_message_shorter_than_its_header(proxy: RunningProxy) -> None:
    client = RawClient(proxy.port)
    client.login()
    client.send(b"Q" + struct.pack("!I", 2))
    _expect_error_or_close(client)
    client.close()


# --------------------------------------------------------------------- disconnect mid-transaction


@pytest.mark.parametrize("how", ["close", "reset"])
def test_disconnect_mid_transaction(proxy: RunningProxy, pg_cluster: PgCluster, how: str) -> None:
    client = RawClient(proxy.port)
    client.login()
    replies = client.query("BEGIN; INSERT INTO e2e_bad VALUES (42); SELECT pg_backend_pid()")
    assert replies[-1] == (b"Z", b"T")
    pid = int(data_rows(replies)[0][0])
    assert _backend_state(pg_cluster, pid) == "idle in transaction"
    if how == "reset":   # RST instead of FIN
        client.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    client.close()
    # The proxy rolls the server connection back (or closes it) before anyone else gets it.
    wait_until(lambda: _backend_state(pg_cluster, pid) in ("idle", ""), what="rollback of the abandoned transaction")
    assert _idle_in_transaction(pg_cluster) == []
    with psycopg.connect(proxy.conninfo(), autocommit=True) as conn:
        row = conn.execute("SELECT pg_backend_pid(), (SELECT count(*) FROM e2e_bad), "
                           "txid_current_if_assigned() IS NULL, current_setting('transaction_isolation')"
                           ).fetchone()
        assert row is not None
        next_pid, rows, no_xid, _ = row
        assert rows == 0, "the abandoned INSERT was committed"
        assert no_xid
        # Pool size 1: the same server connection was rolled back and reused, not leaked.
        assert next_pid == pid, "the server connection was closed instead of rolled back and reused"
        conn.execute("INSERT INTO e2e_bad VALUES (1)")
        conn.execute("DELETE FROM e2e_bad")


def test_disconnect_with_query_in_flight(proxy: RunningProxy, pg_cluster: PgCluster) -> None:
    """A client that leaves while its query runs: the server connection can't be reused as is."""
    client = RawClient(proxy.port)
    client.login()
    pid = int(data_rows(client.query("SELECT pg_backend_pid()"))[0][0])
    client.send(query_message("BEGIN; INSERT INTO e2e_bad VALUES (7); SELECT pg_sleep(1.5)"))
    wait_until(lambda: _backend_state(pg_cluster, pid) == "active", what="query running")
    client.close()
    with psycopg.connect(proxy.conninfo(), autocommit=True) as conn:
        row = conn.execute("SELECT pg_backend_pid(), (SELECT count(*) FROM e2e_bad)").fetchone()
        assert row is not None and row[1] == 0
    wait_until(lambda: _backend_state(pg_cluster, pid) in ("idle", ""), timeout=10,
               what="the abandoned backend to finish")
    assert pg_cluster.sql(0, "SELECT count(*) FROM e2e_bad", db="app") == "0"


def test_disconnect_mid_extended_batch(proxy: RunningProxy, pg_cluster: PgCluster) -> None:
    """Parse/Bind/Execute without Sync, then gone: the unfinished batch must not leak to the next client."""
    client = RawClient(proxy.port)
    client.login()
    client.query("BEGIN")
    sql = b"INSERT INTO e2e_bad VALUES (9)\0"
    client.send(message(b"P", b"\0" + sql + b"\0\0")
                + message(b"B", b"\0\0" + b"\0\0" + b"\0\0" + b"\0\0")
                + message(b"E", b"\0" + b"\0\0\0\0"))
    time.sleep(0.2)
    client.close()
    with psycopg.connect(proxy.conninfo(), autocommit=True) as conn:
        assert conn.execute("SELECT count(*) FROM e2e_bad").fetchone() == (0,)
        assert conn.execute("SELECT now() = statement_timestamp()").fetchone() == (True,)  # not in a transaction
