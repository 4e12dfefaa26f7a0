"""End to end: cancelling a running query through the proxy, and 100 MB COPY in and out, byte for byte."""

from __future__ import annotations

import asyncio
import hashlib
import random
import threading
import time
from collections.abc import Iterator

import asyncpg
import psycopg
import pytest
from e2e_helpers import RunningProxy, module_proxy, send_cancel_request

from deploy.pgcluster import PgCluster


@pytest.fixture(scope="module")
def proxy(pg_cluster: PgCluster, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningProxy]:
    with module_proxy(pg_cluster, tmp_path_factory.mktemp("cancel-copy"), pool_size=3) as proxy:
        yield proxy
        proxy.assert_alive_and_clean()


# ------------------------------------------------------------------------------------------ cancel


@pytest.mark.parametrize("in_transaction", [False, True], ids=["autocommit", "transaction"])
def test_psycopg_cancel(proxy: RunningProxy, in_transaction: bool) -> None:
    with psycopg.connect(proxy.conninfo(), autocommit=not in_transaction) as conn, \
            psycopg.connect(proxy.conninfo(), autocommit=True) as bystander:
        # A query on another server connection of the same pool must not be cancelled.
        outcome: dict[str, object] = {}

        def other_query() -> None:
            try:
                outcome["row"] = bystander.execute("SELECT pg_sleep(1.5), 'done'").fetchone()
            except Exception as exc:  # noqa: BLE001 - reported by the assertion below
                outcome["error"] = exc

        other = threading.Thread(target=other_query)
        other.start()
        timer = threading.Timer(0.5, conn.cancel_safe)
        started = time.monotonic()
        timer.start()
        with pytest.raises(psycopg.errors.QueryCanceled) as info:
            conn.execute("SELECT pg_sleep(10)")
        elapsed = time.monotonic() - started
        timer.join()
        assert info.value.sqlstate == "57014"
        assert elapsed < 1.5, f"cancel took {elapsed - 0.5:.2f}s to take effect"
        if in_transaction:
            conn.rollback()
        row = conn.execute("SELECT 'still works'").fetchone()
        assert row == ("still works",)
        other.join()
        assert outcome.get("row") == ("", "done"), outcome


async def test_asyncpg_timeout_cancels(proxy: RunningProxy) -> None:
    """asyncpg sends a CancelRequest when a query times out, then keeps using the connection."""
    conn = await asyncpg.connect(proxy.dsn())
    try:
        started = time.monotonic()
        with pytest.raises(asyncio.TimeoutError):
            await conn.fetchval("SELECT pg_sleep(10)", timeout=0.5)
        assert await conn.fetchval("SELECT 'after cancel'") == "after cancel"
        assert time.monotonic() - started < 1.5
    finally:
        await conn.close()


async def test_asyncpg_explicit_cancel_error(proxy: RunningProxy) -> None:
    """The cancelled query itself reports 57014 (asyncpg QueryCanceledError)."""
    conn = await asyncpg.connect(proxy.dsn())
    try:
        await conn.execute("SET statement_timeout = 0")
        task = asyncio.get_running_loop().create_task(conn.fetchval("SELECT pg_sleep(10)"))
        await asyncio.sleep(0.4)
        # The proxy closes a cancel connection without a reply, like PostgreSQL.
        assert await send_cancel_request(proxy.port, *_key_data(conn)) == b""
        started = time.monotonic()
        with pytest.raises(asyncpg.QueryCanceledError) as info:
            await task
        assert info.value.sqlstate == "57014"
        assert time.monotonic() - started < 1.0
        assert await conn.fetchval("SELECT 1") == 1
    finally:
        await conn.close()


def _key_data(conn: asyncpg.Connection) -> tuple[int, int]:
    """The BackendKeyData the proxy gave this client (asyncpg keeps it in its protocol object)."""
    protocol = conn._protocol  # type: ignore[attr-defined]
    return protocol.backend_pid, protocol.backend_secret


async def test_cancel_of_an_idle_client_hits_nobody(proxy: RunningProxy) -> None:
    """In transaction pooling a client's last server connection belongs to someone else now: a late
    cancel from that client must not cancel the other client's query."""
    a = await asyncpg.connect(proxy.dsn())
    b = await asyncpg.connect(proxy.dsn())
    try:
        a_server = await a.fetchval("SELECT pg_backend_pid()")
        task = asyncio.get_running_loop().create_task(b.fetchrow("SELECT pg_backend_pid(), pg_sleep(1)"))
        await asyncio.sleep(0.3)
        await send_cancel_request(proxy.port, *_key_data(a))
        await send_cancel_request(proxy.port, 12345, 678)          # unknown key data: ignored
        row = await task
        assert row[0] == a_server, "B ran on A's former server connection (the pool is LIFO)"
        assert await a.fetchval("SELECT 'a fine'") == "a fine"
    finally:
        await a.close()
        await b.close()


async def test_the_cancel_connection_closes_once_the_server_has_the_cancel(proxy: RunningProxy) -> None:
    """As directly, the proxy closes a CancelRequest's connection only after the server has signalled the
    backend: a cancel that comes too late for its query (the backend is idle in a transaction here) is then
    dropped by the server instead of hitting the client's next query (asyncpg's copy_from_query timeout
    sends the next statement as soon as that connection closes)."""
    conn = await asyncpg.connect(proxy.dsn())
    try:
        for _ in range(5):
            tx = conn.transaction()
            await tx.start()   # keeps its server connection: the cancel has a backend to reach
            assert await conn.fetchval("SELECT 1") == 1
            await send_cancel_request(proxy.port, *_key_data(conn))
            assert await conn.fetchval("SELECT pg_sleep(0.3)::text") == ""
            await tx.rollback()
    finally:
        await conn.close()


# ------------------------------------------------------------------------------------------- COPY

ROWS_PER_CHUNK = 1000
PAYLOAD_CHARS = 1000
CHUNKS = 105   # 105 * 1000 rows of ~1007 bytes: a little over 100 MiB


def _copy_chunks(seed: int) -> Iterator[bytes]:
    """Deterministic COPY text: rows "id<TAB>1000 hex chars", in chunks of 1000 rows (~1 MB)."""
    rng = random.Random(seed)
    for chunk in range(CHUNKS):
        hexed = rng.randbytes(ROWS_PER_CHUNK * PAYLOAD_CHARS // 2).hex().encode()
        base = chunk * ROWS_PER_CHUNK
        yield b"".join(
            b"%d\t%s\n" % (base + j, hexed[j * PAYLOAD_CHARS:(j + 1) * PAYLOAD_CHARS])
            for j in range(ROWS_PER_CHUNK))


def test_copy_100mb_in_and_out(proxy: RunningProxy) -> None:
    sent = hashlib.sha256()
    sent_bytes = 0
    with psycopg.connect(proxy.conninfo(), autocommit=True) as conn:
        conn.execute("DROP TABLE IF EXISTS e2e_copy")
        conn.execute("CREATE UNLOGGED TABLE e2e_copy (id int, payload text)")
        try:
            with conn.cursor() as cur:
                with cur.copy("COPY e2e_copy (id, payload) FROM STDIN") as copy:
                    for chunk in _copy_chunks(20261125):
                        sent.update(chunk)
                        sent_bytes += len(chunk)
                        copy.write(chunk)
                assert cur.rowcount == CHUNKS * ROWS_PER_CHUNK
            assert sent_bytes > 100 * 1024 * 1024
            row = conn.execute("SELECT count(*), sum(length(payload)) FROM e2e_copy").fetchone()
            assert row == (CHUNKS * ROWS_PER_CHUNK, CHUNKS * ROWS_PER_CHUNK * PAYLOAD_CHARS)

            received = hashlib.sha256()
            received_bytes = 0
            with conn.cursor() as cur:
                # A freshly loaded heap is scanned in insertion order: the text comes back as sent.
                with cur.copy("COPY e2e_copy TO STDOUT") as copy:
                    for data in copy:
                        received.update(data)
                        received_bytes += len(data)
            assert received_bytes == sent_bytes
            assert received.hexdigest() == sent.hexdigest()
            assert conn.execute("SELECT 'after copy'").fetchone() == ("after copy",)
        finally:
            conn.execute("DROP TABLE IF EXISTS e2e_copy")


def test_copy_errors_leave_the_connection_usable(proxy: RunningProxy) -> None:
    with psycopg.connect(proxy.conninfo(), autocommit=True) as conn:
        conn.execute("CREATE TABLE IF NOT EXISTS e2e_copy_small (id int, t text)")
        try:
            with conn.cursor() as cur:
                # The server rejects a malformed row in the middle of the stream.
                with pytest.raises(psycopg.errors.InvalidTextRepresentation):
                    with cur.copy("COPY e2e_copy_small FROM STDIN") as copy:
                        copy.write(b"1\tok\n" * 1000 + b"not-a-number\tbad\n" + b"2\tok\n" * 1000)
                # The client aborts a COPY itself: psycopg sends CopyFail and re-raises the cause.
                with pytest.raises(RuntimeError, match="client gives up"):
                    with cur.copy("COPY e2e_copy_small FROM STDIN") as copy:
                        copy.write(b"3\tok\n" * 100)
                        raise RuntimeError("client gives up")
            assert conn.execute("SELECT count(*) FROM e2e_copy_small").fetchone() == (0,)
            # COPY TO STDOUT with psycopg's row-wise reader.
            conn.execute("INSERT INTO e2e_copy_small SELECT g, 'r' || g FROM generate_series(1, 50) g")
            with conn.cursor() as cur, cur.copy("COPY (SELECT * FROM e2e_copy_small ORDER BY id) TO STDOUT") as copy:
                rows = list(copy.rows())
            assert rows == [(str(g), f"r{g}") for g in range(1, 51)]
        finally:
            conn.execute("DROP TABLE IF EXISTS e2e_copy_small")
