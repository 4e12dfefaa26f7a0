"""End to end: pgbench through dbproxy in transaction mode, more clients than server connections."""

from __future__ import annotations

import asyncio
import re
from collections.abc import Iterator
from pathlib import Path

import asyncpg
import pytest
from e2e_helpers import APP, RunningProxy, clean_env, count_proxy_backends, module_proxy

from deploy.pgcluster import HOST, PgCluster, pg_binary

POOL_SIZE = 4
CLIENTS = 16


@pytest.fixture(scope="module")
def proxy(pg_cluster: PgCluster, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningProxy]:
    with module_proxy(pg_cluster, tmp_path_factory.mktemp("pgbench"), pool_size=POOL_SIZE,
                      client_auth="md5", log_level="warning") as proxy:
        yield proxy
        proxy.assert_alive_and_clean()


async def _pgbench(proxy: RunningProxy, pg_cluster: PgCluster, *args: str,
                   timeout: float = 120) -> tuple[str, int]:
    """Run pgbench against the proxy; returns (output, peak server connections of the proxy)."""
    direct = await asyncpg.connect(f"postgresql://postgres@{HOST}:{pg_cluster.ports[0]}/postgres")
    proc = await asyncio.create_subprocess_exec(
        pg_binary("pgbench"), "-h", HOST, "-p", str(proxy.port), "-U", APP.name, *args, "app",
        stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
        env=clean_env(PGPASSWORD=APP.password or "", PGSSLMODE="disable"))
    peak = 0
    try:
        communicate = asyncio.ensure_future(asyncio.wait_for(proc.communicate(), timeout))
        while not communicate.done():
            peak = max(peak, await count_proxy_backends(direct, proxy.process.pid, pg_cluster.ports[0]))
            await asyncio.wait([communicate], timeout=0.1)
        out = (await communicate)[0].decode(errors="replace")
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
        await direct.close()
    assert proc.returncode == 0, f"pgbench {' '.join(args)} exited with {proc.returncode}:\n{out}"
    return out, peak


def _check_run(out: str, peak: int, pool: int = POOL_SIZE) -> int:
    processed = re.search(r"number of transactions actually processed: (\d+)", out)
    failed = re.search(r"number of failed transactions: (\d+)", out)
    assert processed and failed, out
    assert int(failed[1]) == 0, out
    assert int(processed[1]) > 0, out
    assert "error" not in out.lower(), out
    assert peak <= pool, f"proxy used {peak} server connections (pool size {pool})"
    return int(processed[1])


@pytest.fixture(scope="module")
async def initialized(proxy: RunningProxy, pg_cluster: PgCluster) -> None:
    """pgbench -i through the proxy (DROP/CREATE, COPY of pgbench_accounts, VACUUM, primary keys)."""
    out, _ = await _pgbench(proxy, pg_cluster, "-i", "-s", "1", "-q")
    assert "done in" in out, out
    counts = pg_cluster.sql(0, "SELECT (SELECT count(*) FROM pgbench_accounts), "
                               "(SELECT count(*) FROM pgbench_branches)", db="app")
    assert counts == "100000|1"


@pytest.mark.parametrize("mode", ["simple", "extended", "prepared"])
async def test_pgbench_modes(proxy: RunningProxy, pg_cluster: PgCluster, initialized: None, mode: str) -> None:
    out, peak = await _pgbench(proxy, pg_cluster, "-n", "-M", mode, "-c", str(CLIENTS), "-j", "4", "-T", "3")
    _check_run(out, peak)


@pytest.mark.parametrize(("pool", "clients", "jobs"), [(5, 12, 2), (8, 32, 4)])
async def test_pgbench_prepared_with_fewer_threads_than_clients(
        pg_cluster: PgCluster, initialized: None, tmp_path: Path, pool: int, clients: int,
        jobs: int) -> None:
    """pgbench 15 -M prepared prepares each statement with a blocking PQprepare per client, so one thread
    serving several clients blocks in PQprepare for client X while client Y of the same thread holds a
    server connection mid-transaction. A pooler that needs a server connection for that Parse deadlocks
    (and times out with "no server connection available"); dbproxy answers the Parse of a statement some
    server connection already accepted by itself and prepares it where it is next bound."""
    with module_proxy(pg_cluster, tmp_path, pool_size=pool, client_auth="md5", log_level="warning") as proxy:
        out, peak = await _pgbench(proxy, pg_cluster, "-n", "-M", "prepared", "-c", str(clients), "-j", str(jobs),
                                   "-T", "4")
        _check_run(out, peak, pool)
        proxy.assert_alive_and_clean()


async def test_pgbench_select_only_prepared(proxy: RunningProxy, pg_cluster: PgCluster, initialized: None) -> None:
    out, peak = await _pgbench(proxy, pg_cluster, "-n", "-S", "-M", "prepared", "-c", str(CLIENTS),
                               "-j", str(CLIENTS), "-t", "200")
    assert _check_run(out, peak) == CLIENTS * 200


async def test_pgbench_connect_per_transaction(proxy: RunningProxy, pg_cluster: PgCluster,
                                               initialized: None) -> None:
    out, peak = await _pgbench(proxy, pg_cluster, "-n", "-C", "-c", "8", "-j", "4", "-T", "3")
    _check_run(out, peak)
    assert re.search(r"average connection time = [\d.]+ ms", out), out
