"""End to end: asyncpg and psycopg 3, 50 concurrent clients on a pool of 5, named prepared statements."""

from __future__ import annotations

import asyncio
import decimal
import os
import random
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator

import asyncpg
import psycopg
import pytest
from e2e_helpers import RunningProxy, count_proxy_backends, module_proxy

from deploy.pgcluster import PgCluster

CLIENTS = 50
POOL_SIZE = 5
ROUNDS = 12


@pytest.fixture(scope="module")
def proxy(pg_cluster: PgCluster, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningProxy]:
    pg_cluster.sql(0, """
        DROP TABLE IF EXISTS e2e_drivers;
        CREATE TABLE e2e_drivers (client text, n int, payload text);
        DROP TYPE IF EXISTS e2e_mood;
        CREATE TYPE e2e_mood AS ENUM ('sad', 'ok', 'happy');
        GRANT ALL ON e2e_drivers TO PUBLIC;
    """, db="app")
    with module_proxy(pg_cluster, tmp_path_factory.mktemp("drivers"), pool_size=POOL_SIZE) as proxy:
        yield proxy
        proxy.assert_alive_and_clean()


@pytest.fixture
async def server_connection_cap(proxy: RunningProxy, pg_cluster: PgCluster) -> AsyncIterator[list[int]]:
    """Samples the proxy's server connections in pg_stat_activity during the test; asserts <= POOL_SIZE."""
    seen: list[int] = []
    stop = asyncio.Event()
    direct = await asyncpg.connect(f"postgresql://postgres@127.0.0.1:{pg_cluster.ports[0]}/postgres")

    async def sample() -> None:
        while not stop.is_set():
            seen.append(await count_proxy_backends(direct, proxy.process.pid, pg_cluster.ports[0]))
            await asyncio.sleep(0.02)

    task = asyncio.get_running_loop().create_task(sample())
    try:
        yield seen
    finally:
        stop.set()
        await task
        await direct.close()
    assert max(seen) <= POOL_SIZE, f"proxy had {max(seen)} server connections (pool size {POOL_SIZE})"


def _is_statement_error(exc: BaseException) -> bool:
    text = str(exc)
    return "prepared statement" in text and ("already exists" in text or "does not exist" in text)


# ------------------------------------------------------------------------------------- asyncpg


async def _asyncpg_client(proxy: RunningProxy, i: int) -> int:
    """Runs a varied workload on one connection (statement cache on); returns the queries checked."""
    rng = random.Random(i)
    tag = f"apg{i}"
    checked = 0
    conn = await asyncpg.connect(proxy.dsn())
    try:
        explicit = await conn.prepare("SELECT $1::int * $2::int AS product, $3::text AS tag")
        for r in range(ROUNDS):
            n = rng.randrange(1000)
            # Shared statement texts (every client), per-client texts, and explicit prepares.
            assert await conn.fetchval("SELECT $1::int * 2", n) == n * 2
            assert await conn.fetchval(f"SELECT {i} + $1::bigint", n) == i + n
            row = await explicit.fetchrow(n, r, tag)
            assert (row["product"], row["tag"]) == (n * r, tag)
            rows = await conn.fetch("SELECT g, g::text || $2::text FROM generate_series(1, $1::int) g", r + 1, tag)
            assert [tuple(x) for x in rows] == [(g, f"{g}{tag}") for g in range(1, r + 2)]
            assert await conn.fetchval("SELECT $1::numeric(10, 2) + 0.5", decimal.Decimal(n)) == n + decimal.Decimal("0.5")
            assert await conn.fetchval("SELECT $1::int[]", [n, r, i]) == [n, r, i]
            assert await conn.fetchval("SELECT $1::e2e_mood", "happy") == "happy"   # type introspection
            async with conn.transaction():
                await conn.execute("INSERT INTO e2e_drivers VALUES ($1, $2, $3)", tag, r, "x" * n)
                assert await conn.fetchval("SELECT count(*) FROM e2e_drivers WHERE client = $1", tag) == r + 1
            if r % 4 == 0:
                with pytest.raises(asyncpg.DivisionByZeroError):
                    await conn.fetchval("SELECT 1 / $1::int", 0)
                await conn.executemany("SELECT $1::int + $2::int", [(k, k) for k in range(5)])
            if r % 5 == 0:
                await conn.execute("SELECT 1; SELECT 2")    # simple protocol, several statements
            checked += 9
        assert await conn.fetchval("SELECT sum(n) FROM e2e_drivers WHERE client = $1", tag) == sum(range(ROUNDS))
    finally:
        await conn.close()
    return checked


async def test_asyncpg_50_clients(proxy: RunningProxy, server_connection_cap: list[int]) -> None:
    results = await asyncio.gather(*(_asyncpg_client(proxy, i) for i in range(CLIENTS)),
                                   return_exceptions=True)
    errors = [r for r in results if isinstance(r, BaseException)]
    statement_errors = [e for e in errors if _is_statement_error(e)]
    assert not statement_errors, statement_errors[:3]
    assert not errors, errors[:3]
    assert sum(results) == CLIENTS * ROUNDS * 9  # type: ignore[arg-type]


# ------------------------------------------------------------------------------------- psycopg


async def _psycopg_client(proxy: RunningProxy, i: int) -> int:
    """Pipeline mode and server-side binding: half the clients prepare everything (threshold 0), the
    others ask for it per query (prepare=True); a small prepared_max makes psycopg Close old ones."""
    rng = random.Random(1000 + i)
    tag = f"pg3{i}"
    checked = 0
    threshold = 0 if i % 2 == 0 else 5
    conn = await psycopg.AsyncConnection.connect(proxy.conninfo(), autocommit=True, prepare_threshold=threshold)
    conn.prepared_max = 4
    try:
        for r in range(ROUNDS):
            n = rng.randrange(1000)
            async with conn.pipeline():
                c1 = await conn.execute("SELECT %s::int * 2", (n,), prepare=True)
                c2 = await conn.execute(f"SELECT {i} + %s::bigint, %s::text", (n, tag), prepare=True)
                c3 = await conn.execute("SELECT g FROM generate_series(1, %s::int) g", (r + 1,), prepare=True)
                c4 = await conn.execute(f"SELECT %s::text || '{r % 7}'", (tag,), prepare=True)
                async with conn.transaction():
                    await conn.execute("INSERT INTO e2e_drivers VALUES (%s, %s, %s)", (tag, r, "y" * n))
                    c5 = await conn.execute("SELECT count(*) FROM e2e_drivers WHERE client = %s", (tag,))
            assert await c1.fetchone() == (n * 2,)
            assert await c2.fetchone() == (i + n, tag)
            assert [row[0] for row in await c3.fetchall()] == list(range(1, r + 2))
            assert await c4.fetchone() == (f"{tag}{r % 7}",)
            assert await c5.fetchone() == (r + 1,)
            if r % 3 == 0:
                # A rolled-back transaction: psycopg then forgets its statements and sends DEALLOCATE ALL.
                async with conn.transaction(force_rollback=True):
                    await conn.execute("INSERT INTO e2e_drivers VALUES (%s, %s, 'rolled back')", (tag, -1))
                cur = await conn.execute("SELECT count(*) FROM e2e_drivers WHERE client = %s AND n = -1",
                                         (tag,), prepare=True)
                assert await cur.fetchone() == (0,)
            if r % 4 == 0:
                with pytest.raises(psycopg.errors.DivisionByZero):
                    await conn.execute("SELECT 1 / %s::int", (0,), prepare=True)
                async with conn.cursor() as cur:
                    await cur.executemany("INSERT INTO e2e_drivers VALUES (%s, %s, 'many')", [(tag, 100 + k) for k in range(3)])
                    await conn.execute("DELETE FROM e2e_drivers WHERE client = %s AND n >= 100", (tag,))
            checked += 5
        cur = await conn.execute("SELECT sum(n) FROM e2e_drivers WHERE client = %s", (tag,))
        assert await cur.fetchone() == (sum(range(ROUNDS)),)
    finally:
        await conn.close()
    return checked


async def test_psycopg_50_clients_pipeline_and_server_binding(
        proxy: RunningProxy, server_connection_cap: list[int]) -> None:
    results = await asyncio.gather(*(_psycopg_client(proxy, i) for i in range(CLIENTS)),
                                   return_exceptions=True)
    errors = [r for r in results if isinstance(r, BaseException)]
    statement_errors = [e for e in errors if _is_statement_error(e)]
    assert not statement_errors, statement_errors[:3]
    assert not errors, errors[:3]
    assert sum(results) == CLIENTS * ROUNDS * 5  # type: ignore[arg-type]


# ------------------------------------------------------------------- a statement follows its client


async def test_asyncpg_prepared_statement_moves_to_another_server(proxy: RunningProxy) -> None:
    a = await asyncpg.connect(proxy.dsn())
    b = await asyncpg.connect(proxy.dsn())
    try:
        stmt = await a.prepare("SELECT $1::int * 3, pg_backend_pid()")
        value, first_pid = await stmt.fetchrow(5)
        assert value == 15
        # B holds A's last server connection (the pool hands out the most recently used one first)
        # in an open transaction, so A's next transaction must run on another server connection.
        pids_seen = {first_pid}
        for k in range(3):
            async with b.transaction():
                held = await b.fetchval("SELECT pg_backend_pid()")
                value, pid = await stmt.fetchrow(k)
                assert value == k * 3
                assert pid != held
                pids_seen.add(pid)
        assert len(pids_seen) >= 2, "the statement never ran on another server connection"
        # And the cache of asyncpg (named statements too) keeps working everywhere.
        assert await a.fetchval("SELECT $1::text || 'z'", "y") == "yz"
    finally:
        await a.close()
        await b.close()


async def test_psycopg_prepared_statement_moves_to_another_server(proxy: RunningProxy) -> None:
    async with (await psycopg.AsyncConnection.connect(proxy.conninfo(), autocommit=True,
                                                      prepare_threshold=0) as a,
                await psycopg.AsyncConnection.connect(proxy.conninfo(), autocommit=True) as b):
        cur = await a.execute("SELECT %s::int * 3, pg_backend_pid()", (5,))
        value, first_pid = await cur.fetchone()  # type: ignore[misc]
        assert value == 15
        pids_seen = {first_pid}
        for k in range(3):
            async with b.transaction():
                held = await (await b.execute("SELECT pg_backend_pid()")).fetchone()
                cur = await a.execute("SELECT %s::int * 3, pg_backend_pid()", (k,))
                value, pid = await cur.fetchone()  # type: ignore[misc]
                assert value == k * 3
                assert (pid,) != held
                pids_seen.add(pid)
        assert len(pids_seen) >= 2


# ------------------------------------------------------------------- DEALLOCATE from the client


async def test_deallocate_all_does_not_break_other_clients(proxy: RunningProxy) -> None:
    """psycopg sends DEALLOCATE ALL after a ROLLBACK: it drops every statement on that server
    connection, those the proxy prepared there for other clients included."""
    async with (await psycopg.AsyncConnection.connect(proxy.conninfo(), autocommit=True,
                                                      prepare_threshold=0) as a,
                await psycopg.AsyncConnection.connect(proxy.conninfo(), autocommit=True,
                                                      prepare_threshold=0) as b):
        cur = await b.execute("SELECT %s::int + 100, pg_backend_pid()", (1,))
        _, b_server = await cur.fetchone()  # type: ignore[misc]
        cur = await a.execute("SELECT %s::int + 200, pg_backend_pid()", (1,))
        _, a_server = await cur.fetchone()  # type: ignore[misc]
        assert a_server == b_server   # idle connections are reused most recent first
        async with a.transaction(force_rollback=True):
            await a.execute("SELECT 1")
        await a.execute("DEALLOCATE ALL")          # and once more, explicitly
        cur = await b.execute("SELECT %s::int + 100, pg_backend_pid()", (1,))
        assert (await cur.fetchone())[0] == 101  # type: ignore[index]
        cur = await a.execute("SELECT %s::int + 200, pg_backend_pid()", (2,))
        assert (await cur.fetchone())[0] == 202  # type: ignore[index]


_OLD_LIBPQ_CLIENT = """
import sys, psycopg
with psycopg.connect(sys.argv[1], autocommit=True, prepare_threshold=0) as conn:
    conn.prepared_max = 2    # rotate the cache quickly: psycopg deallocates the oldest statement
    for i in range(6):
        assert conn.execute(f"SELECT {i} + %s::int", (1,)).fetchone() == (i + 1,)
print("ok")
"""


def _system_libpq_version() -> int:
    res = subprocess.run([sys.executable, "-c", "import psycopg; print(psycopg.pq.version())"],
                         capture_output=True, text=True, env={**os.environ, "PSYCOPG_IMPL": "python"})
    return int(res.stdout) if res.returncode == 0 else 0


def test_deallocate_by_name_from_old_libpq(proxy: RunningProxy) -> None:
    version = _system_libpq_version()
    if not 0 < version < 170000:
        pytest.skip(f"needs a system libpq older than 17 for psycopg's python implementation (got {version})")
    res = subprocess.run([sys.executable, "-c", _OLD_LIBPQ_CLIENT, proxy.conninfo()], capture_output=True,
                         text=True, timeout=60, env={**os.environ, "PSYCOPG_IMPL": "python"})
    assert res.returncode == 0 and res.stdout.strip() == "ok", res.stderr[-2000:]
