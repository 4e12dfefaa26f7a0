"""sysbench oltp_read_write through dbproxy's MySQL writer endpoint (16 threads on a pool of 8): no errors."""

from __future__ import annotations

import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from mysql_e2e_helpers import MysqlProxy, direct, mysql_module_proxy, rows, trx_count

from deploy.mysqlcluster import APP_DB, APP_PASSWORD, APP_USER, HOST, MysqlCluster

pytestmark = pytest.mark.skipif(shutil.which("sysbench") is None, reason="sysbench is not installed (make install)")
TABLES, TABLE_SIZE = 2, 2000
# Deadlocks are the server's business: sysbench retries those transactions ("ignored errors").
RETRYABLE = {"1213", "1205", "1020"}


@pytest.fixture(scope="module")
def proxy(mysql_cluster: MysqlCluster, tmp_path_factory: pytest.TempPathFactory) -> Iterator[MysqlProxy]:
    with mysql_module_proxy(mysql_cluster, tmp_path_factory.mktemp("my-sysbench"), pool_size=8) as proxy:
        yield proxy
        proxy.assert_alive_and_clean()


def sysbench(port: int, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    argv = ["sysbench", "oltp_read_write", f"--mysql-host={HOST}", f"--mysql-port={port}",
            f"--mysql-user={APP_USER}", f"--mysql-password={APP_PASSWORD}", f"--mysql-db={APP_DB}",
            f"--tables={TABLES}", f"--table-size={TABLE_SIZE}", "--db-driver=mysql", *args]
    return subprocess.run(argv, capture_output=True, text=True, timeout=timeout, check=False)


def test_oltp_read_write_16_threads_on_a_pool_of_8(proxy: MysqlProxy, mysql_cluster: MysqlCluster,
                                                    tmp_path: Path) -> None:
    with direct(mysql_cluster) as conn:
        for table in range(1, TABLES + 1):
            rows(conn, f"DROP TABLE IF EXISTS {APP_DB}.sbtest{table}")
    prepared = sysbench(proxy.port, "prepare")
    assert prepared.returncode == 0, prepared.stdout + prepared.stderr
    run = sysbench(proxy.port, "--threads=16", "--time=6", "--report-interval=0", "--verbosity=5", "run")
    output = run.stdout + run.stderr
    assert run.returncode == 0, output
    transactions = int(re.search(r"transactions:\s+(\d+)", output).group(1))  # type: ignore[union-attr]
    reconnects = int(re.search(r"reconnects:\s+(\d+)", output).group(1))  # type: ignore[union-attr]
    errnos = set(re.findall(r"error (\d+)", output, re.IGNORECASE))
    assert transactions > 100, output
    assert reconnects == 0, output
    assert errnos <= RETRYABLE, f"non-retryable errors through dbproxy: {errnos}\n{output[-3000:]}"
    assert "Traceback" not in proxy.log_text()
    assert trx_count(mysql_cluster) == 0   # nothing left open on the primary
