"""End to end, transaction pooling on ONE server connection: prepared statements without a server, and re-prepared."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import asyncpg
import psycopg
import pytest
from e2e_helpers import RunningProxy, module_proxy
from psycopg import pq

from deploy.pgcluster import PgCluster


@pytest.fixture(scope="module")
def proxy(pg_cluster: PgCluster, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningProxy]:
    # Pool size 1: a client that needs a server while another holds the only one inside a transaction waits.
    with module_proxy(pg_cluster, tmp_path_factory.mktemp("prepared"), pool_size=1, client_auth="md5") as proxy:
        yield proxy
        proxy.assert_alive_and_clean()


def _pgconn(proxy: RunningProxy) -> pq.PGconn:
    conn = pq.PGconn.connect(proxy.dsn().encode())
    assert conn.status == pq.ConnStatus.OK, conn.error_message
    return conn


async def test_prepare_of_a_known_statement_needs_no_server(proxy: RunningProxy) -> None:
    first = _pgconn(proxy)
    res = first.prepare(b"known", b"SELECT $1::int + 1")
    assert res.status == pq.ExecStatus.COMMAND_OK, res.error_message
    holder = await asyncpg.connect(proxy.dsn())
    try:
        await holder.execute("BEGIN")   # holds the only server connection until COMMIT
        second = _pgconn(proxy)
        # Parse + Sync (PQprepare) and Parse + Describe + Sync (PQdescribePrepared after it): answered by the
        # proxy, promptly, while the only server connection is busy.
        loop = asyncio.get_running_loop()
        res = await asyncio.wait_for(loop.run_in_executor(None, second.prepare, b"mine", b"SELECT $1::int + 1"), 1.5)
        assert res.status == pq.ExecStatus.COMMAND_OK, res.error_message
        # A statement no server has seen needs a server: it waits for the transaction to end.
        other = loop.run_in_executor(None, second.prepare, b"other", b"SELECT 'not yet seen'")
        done, _ = await asyncio.wait([other], timeout=1.0)
        assert not done
        await holder.execute("COMMIT")
        assert (await asyncio.wait_for(other, 5)).status == pq.ExecStatus.COMMAND_OK
        # Bound now on the server connection: prepared there first, transparently.
        res = second.exec_prepared(b"mine", [b"41"])
        assert res.status == pq.ExecStatus.TUPLES_OK, res.error_message
        assert res.get_value(0, 0) == b"42"
        second.finish()
    finally:
        await holder.close()
        first.finish()


async def test_describe_of_a_known_statement_needs_no_server(proxy: RunningProxy) -> None:
    warm = await asyncpg.connect(proxy.dsn())
    holder = await asyncpg.connect(proxy.dsn())
    try:
        # asyncpg prepares with Parse + Describe + Flush: on a server, which stays with it until a Sync.
        statement = await warm.prepare("SELECT $1::int AS n, 'x'::text AS t")
        assert [a.name for a in statement.get_attributes()] == ["n", "t"]
        assert await statement.fetchval(1) == 1   # Bind + Execute + Sync: the server goes back
        await holder.execute("BEGIN")
        client = await asyncpg.connect(proxy.dsn())   # its prepare() names the statement
        try:
            prepared = await asyncio.wait_for(client.prepare("SELECT $1::int AS n, 'x'::text AS t"), 1.5)
            assert [a.name for a in prepared.get_attributes()] == ["n", "t"]
            assert [p.name for p in prepared.get_parameters()] == ["int4"]
            await holder.execute("COMMIT")
            assert await prepared.fetchrow(7) == (7, "x")
        finally:
            await client.close()
    finally:
        await holder.close()
        await warm.close()


async def test_a_statement_whose_result_type_changed_is_prepared_anew(proxy: RunningProxy,
                                                                      pg_cluster: PgCluster) -> None:
    setup = await asyncpg.connect(proxy.dsn())
    await setup.execute("DROP TABLE IF EXISTS e2e_retype; CREATE TABLE e2e_retype (a int); INSERT INTO e2e_retype VALUES (1)")
    try:
        # asyncpg: the server's "cached plan must not change result type" makes it re-prepare under a new
        # name of its own; the proxy gives that Parse a fresh server-side name, so the retry works, as directly.
        client = await asyncpg.connect(proxy.dsn())
        assert await client.fetch("SELECT * FROM e2e_retype") == [(1,)]
        pg_cluster.sql(0, "ALTER TABLE e2e_retype ADD COLUMN b text DEFAULT 'new'", db="app")  # behind the proxy
        assert await client.fetch("SELECT * FROM e2e_retype") == [(1, "new")]
        await client.close()

        # libpq: the statement fails once with the server's error (as directly); the next Bind of the same
        # client statement moves to the fresh name and works.
        conn = _pgconn(proxy)
        assert conn.prepare(b"st", b"SELECT * FROM e2e_retype").status == pq.ExecStatus.COMMAND_OK
        assert conn.exec_prepared(b"st", []).ntuples == 1
        pg_cluster.sql(0, "ALTER TABLE e2e_retype ADD COLUMN c int DEFAULT 3", db="app")
        failed = conn.exec_prepared(b"st", [])
        assert failed.status == pq.ExecStatus.FATAL_ERROR
        assert failed.error_field(pq.DiagnosticField.SQLSTATE) == b"0A000"
        again = conn.exec_prepared(b"st", [])
        assert again.status == pq.ExecStatus.TUPLES_OK, again.error_message
        assert again.nfields == 3 and again.get_value(0, 2) == b"3"
        conn.finish()

        # psycopg 3 with server-side prepared statements (prepare=True): the same.
        with psycopg.connect(proxy.dsn(), autocommit=True) as pconn:
            assert pconn.execute("SELECT * FROM e2e_retype", prepare=True).fetchall() == [(1, "new", 3)]
            pg_cluster.sql(0, "ALTER TABLE e2e_retype DROP COLUMN b", db="app")
            with pytest.raises(psycopg.errors.FeatureNotSupported):
                pconn.execute("SELECT * FROM e2e_retype", prepare=True)
            assert pconn.execute("SELECT * FROM e2e_retype", prepare=True).fetchall() == [(1, 3)]
    finally:
        await setup.execute("DROP TABLE IF EXISTS e2e_retype")
        await setup.close()
