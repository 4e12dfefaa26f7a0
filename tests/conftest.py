"""Shared fixtures: a real PostgreSQL primary + 2 replicas, dbproxy subprocesses, free ports.

Fixtures
--------
pg_cluster      (session)  deploy.pgcluster.PgCluster; instance 0 primary, 1 and 2 replicas;
                           roles app (trust), md5user/md5pass, scramuser/scrampass,
                           clearuser/clearpass; database ``app``.
                           Set DBPROXY_KEEP_PG=1 to keep its directory after the run.
pg_cluster_factory         ``make(n_instances=3, settings=None) -> PgCluster`` for tests that
                           break the topology (failover...); destroyed at test end.
mysql_cluster   (session)  deploy.mysqlcluster.MysqlCluster: MariaDB, instance 0 primary, 1 and 2
                           read_only GTID replicas; root over TCP without password, app/app-pass
                           (mysql_native_password); database ``app``.
                           Set DBPROXY_KEEP_MYSQL=1 to keep its directory after the run.
mysql_cluster_factory      ``make(n_instances=3, settings=None, semi_sync=False) -> MysqlCluster``
                           for tests that break the topology; destroyed at test end.
proxy_factory              ``start(config_text, *, wait=True, env=None) -> ProxyProcess``:
                           runs ``python -m proxy run --config FILE``; stopped at test end.
free_ports                 ``free_ports(n=1) -> list[int]``, never the same port twice.
patroni_cluster (session)  deploy.patronicluster.PatroniCluster: etcd + 3 PostgreSQL 15 members under
                           Patroni, REST API over https (ca_file) (started only by tests/test_patroni.py).
                           Set DBPROXY_KEEP_PATRONI=1 to keep its directory after the run.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import tempfile
import time
import tomllib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Any

import pytest

REPO_ROOT = Path(__file__).resolve().parent.parent
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

from deploy.mysqlcluster import MysqlCluster  # noqa: E402
from deploy.patronicluster import PatroniCluster  # noqa: E402
from deploy.pgcluster import PgCluster, accepts_tcp, free_ports  # noqa: E402

PROXY_START_TIMEOUT = 15.0
PROXY_STOP_TIMEOUT = 10.0


def free_port() -> int:
    """One free TCP port on 127.0.0.1."""
    return free_ports(1)[0]


# ------------------------------------------------------------------------- PostgreSQL


def _new_cluster(n_instances: int, settings: dict[str, str] | None = None) -> PgCluster:
    # mkdtemp makes a 0700 root-owned directory; PgCluster chowns it to the postgres user.
    base = tempfile.mkdtemp(prefix="dbproxy-pg-")
    return PgCluster(base, free_ports(n_instances), settings=settings)


def _dispose(cluster: PgCluster) -> None:
    if os.environ.get("DBPROXY_KEEP_PG"):
        cluster.stop()
        print(f"\nDBPROXY_KEEP_PG: PostgreSQL cluster kept in {cluster.base_dir}", file=sys.stderr)
    else:
        cluster.destroy()


@pytest.fixture(scope="session")
def pg_cluster() -> Iterator[PgCluster]:
    cluster = _new_cluster(3)
    try:
        cluster.start()
        yield cluster
    finally:
        _dispose(cluster)


@pytest.fixture
def pg_cluster_factory() -> Iterator[Callable[..., PgCluster]]:
    made: list[PgCluster] = []

    def make(n_instances: int = 3, settings: dict[str, str] | None = None) -> PgCluster:
        cluster = _new_cluster(n_instances, settings)
        made.append(cluster)
        cluster.start()
        return cluster

    yield make
    for cluster in made:
        _dispose(cluster)


@pytest.fixture(scope="session")
def patroni_cluster() -> Iterator[PatroniCluster]:
    ports = free_ports(8)
    cluster = PatroniCluster(tempfile.mkdtemp(prefix="dbproxy-patroni-"), ports[:3], ports[3:6], ports[6:], tls=True)
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.destroy()


# ---------------------------------------------------------------------------- MariaDB


def _new_mysql_cluster(
    n_instances: int, settings: dict[str, str] | None = None, semi_sync: bool = False
) -> MysqlCluster:
    # mkdtemp makes a 0700 root-owned directory; MysqlCluster chowns it to the mysql user.
    base = tempfile.mkdtemp(prefix="dbproxy-my-")
    return MysqlCluster(base, free_ports(n_instances), settings=settings, semi_sync=semi_sync)


def _dispose_mysql(cluster: MysqlCluster) -> None:
    if os.environ.get("DBPROXY_KEEP_MYSQL"):
        cluster.stop()
        print(f"\nDBPROXY_KEEP_MYSQL: MariaDB cluster kept in {cluster.base_dir}", file=sys.stderr)
    else:
        cluster.destroy()


@pytest.fixture(scope="session")
def mysql_cluster() -> Iterator[MysqlCluster]:
    cluster = _new_mysql_cluster(3)
    try:
        cluster.start()
        yield cluster
    finally:
        _dispose_mysql(cluster)


@pytest.fixture
def mysql_cluster_factory() -> Iterator[Callable[..., MysqlCluster]]:
    made: list[MysqlCluster] = []

    def make(
        n_instances: int = 3, settings: dict[str, str] | None = None, semi_sync: bool = False
    ) -> MysqlCluster:
        cluster = _new_mysql_cluster(n_instances, settings, semi_sync)
        made.append(cluster)
        cluster.start()
        return cluster

    yield make
    for cluster in made:
        _dispose_mysql(cluster)


# ---------------------------------------------------------------------------- dbproxy


def listen_addresses(config_text: str) -> list[tuple[str, int]]:
    """Every ``*listen = "host:port"`` value in a TOML config (listen, admin_listen, http_listen)."""
    try:
        values = list(_listen_values(tomllib.loads(config_text)))
    except tomllib.TOMLDecodeError:  # a test may feed a broken config on purpose
        values = re.findall(r"\b\w*listen\s*=\s*[\"']([^\"']+)[\"']", config_text)
    addrs = []
    for value in values:
        host, _, port = value.rpartition(":")
        addrs.append((host.strip("[]") or "127.0.0.1", int(port)))
    return addrs


def _listen_values(node: Any) -> Iterator[str]:
    if isinstance(node, dict):
        for key, value in node.items():
            if key.endswith("listen") and isinstance(value, str):
                yield value
            else:
                yield from _listen_values(value)
    elif isinstance(node, list):
        for item in node:
            yield from _listen_values(item)


class ProxyProcess:
    """A ``python -m proxy run`` subprocess with its output in a log file."""

    def __init__(self, proc: subprocess.Popen[bytes], config_path: Path, log_path: Path, log_file: IO[bytes]):
        self.proc = proc
        self.config_path = config_path
        self.log_path = log_path
        self._log_file = log_file

    @property
    def pid(self) -> int:
        return self.proc.pid

    @property
    def returncode(self) -> int | None:
        return self.proc.poll()

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace")

    def log_tail(self, lines: int = 60) -> str:
        return "\n".join(self.log_text().splitlines()[-lines:])

    def send_signal(self, sig: int) -> None:
        self.proc.send_signal(sig)

    def wait(self, timeout: float) -> int:
        """Wait for exit; returns the exit code (raises subprocess.TimeoutExpired)."""
        return self.proc.wait(timeout)

    def wait_listening(self, addrs: list[tuple[str, int]], timeout: float = PROXY_START_TIMEOUT) -> None:
        """Wait until every address accepts TCP; pytest.fail with the log tail otherwise."""
        deadline = time.monotonic() + timeout
        pending = list(addrs)
        while pending:
            pending = [addr for addr in pending if not accepts_tcp(*addr)]
            if not pending:
                return
            if self.returncode is not None:
                pytest.fail(f"dbproxy exited with {self.returncode} before listening\n{self.log_tail()}")
            if time.monotonic() > deadline:
                pytest.fail(f"dbproxy not listening on {pending} after {timeout}s\n{self.log_tail()}")
            time.sleep(0.05)

    def stop(self, timeout: float = PROXY_STOP_TIMEOUT) -> int:
        """SIGTERM, wait ``timeout`` seconds, then SIGKILL; returns the exit code."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log_file.close()
        return self.proc.returncode


@pytest.fixture
def proxy_factory(tmp_path: Path) -> Iterator[Callable[..., ProxyProcess]]:
    started: list[ProxyProcess] = []

    def start(config_text: str, *, wait: bool = True, env: dict[str, str] | None = None) -> ProxyProcess:
        n = len(started)
        config_path = tmp_path / f"dbproxy-{n}.toml"
        config_path.write_text(config_text)
        log_path = tmp_path / f"dbproxy-{n}.log"
        log_file = log_path.open("wb")
        child_env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
        child_env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT), child_env.get("PYTHONPATH")]))
        proc = subprocess.Popen(
            [sys.executable, "-m", "proxy", "run", "--config", str(config_path)],
            stdin=subprocess.DEVNULL,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            cwd=REPO_ROOT,
            env=child_env,
        )
        proxy = ProxyProcess(proc, config_path, log_path, log_file)
        started.append(proxy)
        if wait:
            proxy.wait_listening(listen_addresses(config_text))
        return proxy

    yield start
    for proxy in started:
        proxy.stop()


@pytest.fixture(name="free_ports")
def free_ports_fixture() -> Callable[..., list[int]]:
    return free_ports
