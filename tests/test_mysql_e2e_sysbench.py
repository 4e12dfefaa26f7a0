"""sysbench through dbproxy's MySQL endpoints: oltp_read_write on the writer and on the split endpoint (16 threads
on a pool of 8, no errors but retried deadlocks), oltp_read_only on the split endpoint (its reads land on replicas)."""

from __future__ import annotations

import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from mysql_e2e_helpers import MysqlProxy, direct, mysql_module_proxy, rows, trx_count

from deploy.mysqlcluster import APP_DB, APP_PASSWORD, APP_USER, HOST, MysqlCluster
from deploy.pgcluster import free_ports

pytestmark = pytest.mark.skipif(shutil.which("sysbench") is None, reason="sysbench is not installed (make install)")
TABLES, TABLE_SIZE = 2, 2000
# Deadlocks are the server's business: sysbench retries those transactions ("ignored errors").
RETRYABLE = {"1213", "1205", "1020"}


@pytest.fixture(scope="module")
def split_port() -> int:
    return free_ports(1)[0]


@pytest.fixture(scope="module")
def proxy(mysql_cluster: MysqlCluster, split_port: int, tmp_path_factory: pytest.TempPathFactory) -> Iterator[MysqlProxy]:
    with mysql_module_proxy(mysql_cluster, tmp_path_factory.mktemp("my-sysbench"), pool_size=8,
                            more_endpoints=[("split", split_port, "split", {})]) as proxy:
        yield proxy
        proxy.assert_alive_and_clean()


def sysbench(port: int, *args: str, timeout: float = 120, workload: str = "oltp_read_write") -> subprocess.CompletedProcess[str]:
    argv = ["sysbench", workload, f"--mysql-host={HOST}", f"--mysql-port={port}",
            f"--mysql-user={APP_USER}", f"--mysql-password={APP_PASSWORD}", f"--mysql-db={APP_DB}",
            f"--tables={TABLES}", f"--table-size={TABLE_SIZE}", "--db-driver=mysql", *args]
    return subprocess.run(argv, capture_output=True, text=True, timeout=timeout, check=False)


@pytest.fixture(scope="module")
def tables(proxy: MysqlProxy, mysql_cluster: MysqlCluster) -> None:
    """sysbench's tables, made through the writer endpoint and replicated (each test may run alone)."""
    with direct(mysql_cluster) as conn:
        for table in range(1, TABLES + 1):
            rows(conn, f"DROP TABLE IF EXISTS {APP_DB}.sbtest{table}")
    prepared = sysbench(proxy.port, "prepare")
    assert prepared.returncode == 0, prepared.stdout + prepared.stderr
    mysql_cluster.wait_replicated()


@pytest.mark.usefixtures("tables")
def test_oltp_read_write_16_threads_on_a_pool_of_8(proxy: MysqlProxy, mysql_cluster: MysqlCluster,
                                                    tmp_path: Path) -> None:
    check_clean_run(sysbench(proxy.port, "--threads=16", "--time=6", "--report-interval=0", "--verbosity=5", "run"),
                    proxy, mysql_cluster)


def check_clean_run(run: subprocess.CompletedProcess[str], proxy: MysqlProxy, mysql_cluster: MysqlCluster) -> None:
    """A sysbench run that finished with transactions, no reconnects and only retryable errors."""
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


def selects(cluster: MysqlCluster) -> list[int]:
    """Com_select of each instance (statements and prepared executions of SELECT)."""
    counts = []
    for i in range(len(cluster.ports)):
        with direct(cluster, i) as conn:
            counts.append(int(rows(conn, "SHOW GLOBAL STATUS LIKE 'Com_select'")[0][1]))
    return counts


@pytest.mark.usefixtures("tables")
def test_oltp_read_only_through_split_lands_on_the_replicas(proxy: MysqlProxy, mysql_cluster: MysqlCluster,
                                                          split_port: int) -> None:
    """Without --skip-trx sysbench wraps each read in BEGIN ... COMMIT, which SPEC §3.3 sends to the primary
    (a transaction not declared read only); autocommit reads (prepared statements, the default) go to replicas."""
    mysql_cluster.wait_replicated()
    before = selects(mysql_cluster)
    run = sysbench(split_port, "--threads=8", "--time=5", "--report-interval=0", "--skip-trx=on", "run",
                   workload="oltp_read_only")
    assert run.returncode == 0, run.stdout + run.stderr
    assert "reconnects:" in run.stdout and re.search(r"reconnects:\s+0\b", run.stdout), run.stdout
    assert not re.search(r"errors:\s+[1-9]", run.stdout), run.stdout
    delta = [after - earlier for after, earlier in zip(selects(mysql_cluster), before, strict=True)]
    total = sum(delta)
    assert total > 1000, delta
    assert delta[0] < total * 0.02, f"the primary ran {delta[0]} of {total} SELECTs: {delta}"   # probes only
    assert all(d > total * 0.3 for d in delta[1:]), f"both replicas serve reads: {delta}"
    print(f"\noltp_read_only through split: SELECTs per instance (primary first): {delta}")


@pytest.mark.usefixtures("tables")
def test_oltp_read_write_through_split_has_no_errors(proxy: MysqlProxy, mysql_cluster: MysqlCluster,
                                                     split_port: int) -> None:
    check_clean_run(sysbench(split_port, "--threads=16", "--time=6", "--report-interval=0", "--verbosity=5", "run"),
                    proxy, mysql_cluster)
