"""End to end, transaction pooling on ONE server connection: prepared statements across DDL, and unnamed ones across transactions."""

from __future__ import annotations

from collections.abc import Iterator

import asyncpg
import pytest
from e2e_helpers import RunningProxy, module_proxy
from psycopg import pq

from deploy.pgcluster import PgCluster


@pytest.fixture(scope="module")
def proxy(pg_cluster: PgCluster, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningProxy]:
    # Pool size 1: every client lands on the server connection that holds the others' statements.
    with module_proxy(pg_cluster, tmp_path_factory.mktemp("schema"), pool_size=1, client_auth="md5") as proxy:
        yield proxy
        proxy.assert_alive_and_clean()


async def test_a_statement_prepared_after_ddl_gets_the_new_types(proxy: RunningProxy) -> None:
    """A Parse after DROP/CREATE or ALTER through the proxy must not land on the server's copy from before:
    that copy answers Describe with "cached plan must not change result type" (asyncpg test_cache_invalidation)
    or with the old parameter types (asyncpg test_custom_codec_override_tuple)."""
    con = await asyncpg.connect(proxy.dsn())
    try:
        await con.execute("DROP TABLE IF EXISTS e2e_ddl; CREATE TABLE e2e_ddl (a int, b int)")
        await con.execute("INSERT INTO e2e_ddl VALUES ($1, 2)", 1)
        assert await con.fetchrow("SELECT * FROM e2e_ddl") == (1, 2)
        await con.execute("INSERT INTO e2e_ddl VALUES (1, $1)", 3)
        await con.execute("DROP TABLE e2e_ddl; CREATE TABLE e2e_ddl (a int, b text)")
        other = await asyncpg.connect(proxy.dsn())   # a client that never saw the old table
        try:
            # The parameter of the INSERT is text now, the result's second column too.
            await other.execute("INSERT INTO e2e_ddl VALUES ($1, 'x')", 1)
            await other.execute("INSERT INTO e2e_ddl VALUES (1, $1)", "y")
            assert sorted(await other.fetch("SELECT * FROM e2e_ddl")) == [(1, "x"), (1, "y")]
            assert sorted(await other.fetch("SELECT * FROM e2e_ddl")) == [(1, "x"), (1, "y")]
            await con.execute("ALTER TABLE e2e_ddl ALTER COLUMN b SET DATA TYPE int USING length(b)")
            assert sorted(await other.fetch("SELECT * FROM e2e_ddl")) == [(1, 1), (1, 1)]
            fresh = await asyncpg.connect(proxy.dsn())
            try:
                assert (await fresh.fetchrow("SELECT * FROM e2e_ddl WHERE b = $1", 1)) == (1, 1)
            finally:
                await fresh.close()
        finally:
            await other.close()
    finally:
        await con.execute("DROP TABLE IF EXISTS e2e_ddl")
        await con.close()


def _pgconn(proxy: RunningProxy) -> pq.PGconn:
    conn = pq.PGconn.connect(proxy.dsn().encode())
    assert conn.status == pq.ConnStatus.OK, conn.error_message
    return conn


def test_the_unnamed_statement_of_an_earlier_batch_is_the_clients_own(proxy: RunningProxy) -> None:
    """Parse of the unnamed statement + Sync, then Bind of it in a later batch (asyncpg with
    statement_cache_size=0 or an uncacheable query, libpq PQprepare("") + PQexecPrepared("")): between the
    two, the backend served another client, or ran a simple Query (the proxy's own SET replay or
    current_setting() read-back too), which drops the unnamed statement."""
    client, other = _pgconn(proxy), _pgconn(proxy)
    try:
        assert client.prepare(b"", b"SELECT $1::int * 2").status == pq.ExecStatus.COMMAND_OK
        # Another client's unnamed statement on the only backend: the client must not run that one.
        assert other.prepare(b"", b"SELECT 'other'::text").status == pq.ExecStatus.COMMAND_OK
        res = client.exec_prepared(b"", [b"21"])
        assert res.status == pq.ExecStatus.TUPLES_OK, res.error_message
        assert res.get_value(0, 0) == b"42"
        # A simple Query of another client dropped it: still the client's own.
        assert other.exec_(b"SELECT 1").status == pq.ExecStatus.TUPLES_OK
        described = client.describe_prepared(b"")
        assert described.status == pq.ExecStatus.COMMAND_OK, described.error_message
        assert described.nparams == 1 and described.ftype(0) == 23
        res = client.exec_prepared(b"", [b"5"])
        assert res.status == pq.ExecStatus.TUPLES_OK, res.error_message
        assert res.get_value(0, 0) == b"10"
        # The other client's statement was not replaced for good either.
        res = other.exec_prepared(b"", [])
        assert res.status == pq.ExecStatus.FATAL_ERROR   # its simple Query dropped it, as directly
        assert b"unnamed prepared statement does not exist" in res.error_message
    finally:
        client.finish()
        other.finish()


async def test_sql_execute_and_a_duplicate_name_of_a_protocol_level_statement(proxy: RunningProxy) -> None:
    """asyncpg test_prepare_explicitly_named: SQL EXECUTE (simple Query) finds a statement prepared with Parse,
    and a second Parse of the same name fails with 42P05 as directly (and aborts a transaction block)."""
    con = await asyncpg.connect(proxy.dsn())
    try:
        statement = await con.prepare("SELECT 1", name="foobar")
        assert statement.get_name() == "foobar"
        assert await con.execute("EXECUTE foobar") == "SELECT 1"   # no arguments: a simple Query
        with pytest.raises(asyncpg.exceptions.DuplicatePreparedStatementError,
                           match='prepared statement "foobar" already exists'):
            await con.prepare("SELECT 1", name="foobar")
        async with con.transaction():
            with pytest.raises(asyncpg.exceptions.DuplicatePreparedStatementError):
                await con.prepare("SELECT 2", name="foobar")
            with pytest.raises(asyncpg.exceptions.InFailedSQLTransactionError):
                await con.fetchval("SELECT 3")
    except asyncpg.exceptions.InFailedSQLTransactionError:
        pass   # the COMMIT of the aborted block
    finally:
        await con.close()
    conn = _pgconn(proxy)
    try:
        assert conn.prepare(b"st", b"SELECT $1::int + 1").status == pq.ExecStatus.COMMAND_OK
        res = conn.exec_(b'EXECUTE "st" (41)')
        assert res.status == pq.ExecStatus.TUPLES_OK, res.error_message
        assert res.get_value(0, 0) == b"42"
        # A statement that failed to prepare may be prepared again under its name.
        assert conn.prepare(b"bad", b"SELEC 1").status == pq.ExecStatus.FATAL_ERROR
        assert conn.prepare(b"bad", b"SELECT 2").status == pq.ExecStatus.COMMAND_OK
    finally:
        conn.finish()
