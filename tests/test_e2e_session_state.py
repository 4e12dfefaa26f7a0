"""End to end, transaction pooling on ONE server connection: SET state stays with its client."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator

import asyncpg
import psycopg
import pytest
from e2e_helpers import RunningProxy, module_proxy

from deploy.pgcluster import PgCluster

DEFAULT_SEARCH_PATH = '"$user", public'


@pytest.fixture(scope="module")
def proxy(pg_cluster: PgCluster, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningProxy]:
    # Pool size 1: every client of this proxy shares the same server connection.
    with module_proxy(pg_cluster, tmp_path_factory.mktemp("state"), pool_size=1, client_auth="md5") as proxy:
        yield proxy
        proxy.assert_alive_and_clean()


@pytest.fixture
async def two_clients(proxy: RunningProxy) -> AsyncIterator[tuple[asyncpg.Connection, asyncpg.Connection]]:
    a = await asyncpg.connect(proxy.dsn())
    b = await asyncpg.connect(proxy.dsn())
    try:
        yield a, b
    finally:
        await a.close()
        await b.close()


async def _settings(conn: asyncpg.Connection) -> tuple[str, str]:
    row = await conn.fetchrow(
        "SELECT current_setting('search_path'), current_setting('statement_timeout')")
    return row[0], row[1]


async def test_set_does_not_leak_to_other_client(
        two_clients: tuple[asyncpg.Connection, asyncpg.Connection]) -> None:
    a, b = two_clients
    pid = await a.fetchval("SELECT pg_backend_pid()")
    assert await b.fetchval("SELECT pg_backend_pid()") == pid, "pool size 1: one server connection"
    # asyncpg's execute() without arguments uses the simple query protocol.
    await a.execute("CREATE SCHEMA IF NOT EXISTS e2e_state_a")
    await a.execute("SET search_path = e2e_state_a, public")
    await a.execute("SET statement_timeout = '1234ms'")
    for _ in range(5):
        assert await _settings(b) == (DEFAULT_SEARCH_PATH, "0")
        assert await b.fetchval("SHOW search_path") == DEFAULT_SEARCH_PATH
        assert await _settings(a) == ("e2e_state_a, public", "1234ms")
        assert await a.fetchval("SHOW statement_timeout") == "1234ms"
        assert await b.fetchval("SELECT pg_backend_pid()") == pid
    # A's search_path really resolves A's tables; B's does not.
    await a.execute("CREATE TABLE IF NOT EXISTS e2e_state_a.only_a (x int)")
    assert await a.fetchval("SELECT to_regclass('only_a') IS NOT NULL")
    assert await b.fetchval("SELECT to_regclass('only_a') IS NULL")
    await a.execute("RESET search_path")
    assert await _settings(a) == (DEFAULT_SEARCH_PATH, "1234ms")
    await a.execute("SET statement_timeout TO DEFAULT")
    assert await _settings(a) == (DEFAULT_SEARCH_PATH, "0")
    assert await _settings(b) == (DEFAULT_SEARCH_PATH, "0")


async def test_standard_conforming_strings_off_does_not_leak_to_other_clients(
        two_clients: tuple[asyncpg.Connection, asyncpg.Connection]) -> None:
    """A client's SET standard_conforming_strings = off stays with it: another client on the same server
    connection would read backslashes in its literals differently (psycopg test_escape_noconn)."""
    a, b = two_clients
    await a.execute("SET standard_conforming_strings = off")
    await a.execute("SET application_name = 'back\\\\slash'")   # a's own literal, with scs off: back\slash
    assert await b.fetchval("SELECT current_setting('standard_conforming_strings')") == "on"
    assert await b.fetchval("SELECT length('a\\b')") == 3
    assert await a.fetchval("SELECT current_setting('standard_conforming_strings')") == "off"
    assert await a.fetchval("SELECT current_setting('application_name')") == "back\\slash"
    assert await b.fetchval("SELECT current_setting('application_name')") != "back\\slash"


async def test_statement_timeout_applies_only_to_its_client(
        two_clients: tuple[asyncpg.Connection, asyncpg.Connection]) -> None:
    a, b = two_clients
    await a.execute("SET statement_timeout = '200ms'")
    with pytest.raises(asyncpg.QueryCanceledError):
        await a.fetchval("SELECT pg_sleep(1)")
    await b.fetchval("SELECT pg_sleep(0.4)")          # B has no timeout on the same server connection
    with pytest.raises(asyncpg.QueryCanceledError):
        await a.execute("SELECT pg_sleep(1)")        # ... and A still has its own
    assert await a.fetchval("SELECT 1") == 1


async def test_extended_protocol_set_and_both_drivers(proxy: RunningProxy) -> None:
    """psycopg sends SET through Parse/Bind/Execute; asyncpg clients on the same server don't see it."""
    async with await psycopg.AsyncConnection.connect(proxy.conninfo(), autocommit=True) as p:
        other = await asyncpg.connect(proxy.dsn())
        try:
            await p.execute("SET work_mem = '3MB'")
            await p.execute("SET application_name = 'e2e-psycopg'")
            for _ in range(3):
                assert await other.fetchval("SHOW work_mem") == "4MB"
                assert await other.fetchval("SELECT current_setting('application_name')") == ""
                cur = await p.execute("SELECT current_setting('work_mem'), current_setting('application_name')")
                assert await cur.fetchone() == ("3MB", "e2e-psycopg")
        finally:
            await other.close()


async def test_set_local_ends_with_its_transaction(
        two_clients: tuple[asyncpg.Connection, asyncpg.Connection]) -> None:
    a, b = two_clients
    async with a.transaction():
        await a.execute("SET LOCAL work_mem = '5MB'")
        assert await a.fetchval("SHOW work_mem") == "5MB"
    assert await b.fetchval("SHOW work_mem") == "4MB"
    assert await a.fetchval("SHOW work_mem") == "4MB"


async def test_rolled_back_set_is_not_replayed(
        two_clients: tuple[asyncpg.Connection, asyncpg.Connection]) -> None:
    a, b = two_clients
    tr = a.transaction()
    await tr.start()
    await a.execute("SET work_mem = '6MB'")
    await tr.rollback()
    assert await a.fetchval("SHOW work_mem") == "4MB"
    assert await b.fetchval("SHOW work_mem") == "4MB"
    assert await a.fetchval("SHOW work_mem") == "4MB"   # B ran in between: A's state was re-applied


async def test_asyncpg_type_introspection_does_not_pin(
        two_clients: tuple[asyncpg.Connection, asyncpg.Connection], pg_cluster: PgCluster) -> None:
    """asyncpg introspects a custom type with set_config('jit', 'off', false) and then restores it with
    set_config('jit', $1, false): the proxy reads the restored value back instead of pinning, so another
    client can still use the one server connection, and each client keeps its own jit setting."""
    pg_cluster.sql(0, "DROP TYPE IF EXISTS e2e_state_mood; CREATE TYPE e2e_state_mood AS ENUM ('sad', 'happy')",
                   db="app")
    a, b = two_clients
    assert await a.fetchval("SHOW jit") == "on"
    assert await a.fetchval("SELECT $1::e2e_state_mood", "happy") == "happy"   # introspection, jit restored
    # With a pinned a, b would wait for the one server connection until its borrow timeout.
    await asyncio.wait_for(b.execute("SET jit = off"), timeout=5)
    assert await asyncio.wait_for(b.fetchval("SHOW jit"), timeout=5) == "off"
    assert await a.fetchval("SHOW jit") == "on"
    assert await b.fetchval("SELECT $1::e2e_state_mood", "sad") == "sad"    # b's introspection: jit stays off
    assert (await a.fetchval("SHOW jit"), await b.fetchval("SHOW jit")) == ("on", "off")


async def test_drop_database_while_the_pool_holds_idle_connections_to_it(proxy: RunningProxy,
                                                                        pg_cluster: PgCluster) -> None:
    """The pool's idle server connections to a database are closed before DROP DATABASE reaches the server
    (which refuses while other sessions use it); the same for a rename."""
    for name in ("e2e_scratch", "e2e_scratch2"):
        pg_cluster.sql(0, f"DROP DATABASE IF EXISTS {name}")
    pg_cluster.sql(0, "CREATE DATABASE e2e_scratch OWNER app")
    pg_cluster.sql(0, "ALTER ROLE app CREATEDB")   # a rename needs it besides ownership
    user = await asyncpg.connect(proxy.dsn(database="e2e_scratch"))
    assert await user.fetchval("SELECT current_database()") == "e2e_scratch"
    await user.close()   # its server connection stays in the pool, idle, connected to e2e_scratch
    admin = await asyncpg.connect(proxy.dsn())
    try:
        await admin.execute("ALTER DATABASE e2e_scratch RENAME TO e2e_scratch2")
        user = await asyncpg.connect(proxy.dsn(database="e2e_scratch2"))
        await user.fetchval("SELECT 1")
        await user.close()
        await admin.execute("DROP DATABASE e2e_scratch2")
    finally:
        await admin.close()
        pg_cluster.sql(0, "ALTER ROLE app NOCREATEDB")
    assert pg_cluster.sql(0, "SELECT count(*) FROM pg_database WHERE datname LIKE 'e2e_scratch%'") == "0"


SPELLINGS = ["utf8", "UTF-8", "unicode", "latin1", "ISO-8859-1", "iso_8859_15", "win1252", "Windows-1251",
             "sql_ascii", "euc_jp", "koi8", "shift_jis_2004", "big5"]


def test_startup_client_encoding_is_reported_as_the_server_spells_it(proxy: RunningProxy,
                                                                    pg_cluster: PgCluster) -> None:
    """ParameterStatus at login carries the canonical name (psycopg/asyncpg compare it), like the server's."""
    from proxy.engines.postgres.gucs import canonical_value

    for spelling in SPELLINGS:
        server = pg_cluster.sql(0, f"SET client_encoding TO '{spelling}'; SHOW client_encoding").splitlines()[-1]
        assert canonical_value("client_encoding", spelling) == server, spelling
    with psycopg.connect(proxy.conninfo(client_encoding="utf8")) as conn:
        assert conn.info.parameter_status("client_encoding") == "UTF8"
    with psycopg.connect(proxy.conninfo(client_encoding="latin1")) as conn:
        assert conn.info.parameter_status("client_encoding") == "LATIN1"
        assert conn.execute("SHOW client_encoding").fetchone() == ("LATIN1",)
