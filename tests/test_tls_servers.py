"""End to end: TLS from dbproxy to PostgreSQL servers (server_tls, SPEC §10), for pools and probes alike."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import psycopg
import pytest
from e2e_helpers import RunningProxy, proxy_config, running_proxy, server_certs, wait_until

from deploy.pgcluster import PgCluster, free_ports
from proxy.tls.certs import generate


@pytest.fixture(scope="module")
def certs() -> Iterator[Path]:
    with server_certs("postgres") as out:
        yield out


@pytest.fixture
def tls_cluster(pg_cluster_factory: Callable[..., PgCluster], certs: Path) -> PgCluster:
    return pg_cluster_factory(1, {"ssl": "on", "ssl_cert_file": str(certs / "server.pem"),
                                  "ssl_key_file": str(certs / "server-key.pem")})


def _config(cluster: PgCluster, port: int, server_tls: str) -> str:
    text = proxy_config(cluster, port, client_auth="md5")
    text = text.replace('engine = "postgres"\n', f'engine = "postgres"\nserver_tls = {server_tls}\n', 1)
    return text.replace('borrow_timeout = "20s"', 'borrow_timeout = "2s"', 1)


@contextmanager
def _proxy(cluster: PgCluster, directory: Path, server_tls: str) -> Iterator[RunningProxy]:
    port = free_ports(1)[0]
    with running_proxy(_config(cluster, port, server_tls), directory, port) as proxy:
        yield proxy


def _server_side_ssl(proxy: RunningProxy) -> tuple[bool, str]:
    with psycopg.connect(proxy.conninfo(), autocommit=True) as conn:
        row = conn.execute("SELECT ssl, version FROM pg_stat_ssl WHERE pid = pg_backend_pid()").fetchone()
    assert row is not None
    return bool(row[0]), str(row[1])


def test_verify_full_encrypts_pools_and_probes(tls_cluster: PgCluster, certs: Path, tmp_path: Path) -> None:
    with _proxy(tls_cluster, tmp_path, f'{{ mode = "verify-full", ca = "{certs / "ca.pem"}" }}') as proxy:
        ssl_on, version = _server_side_ssl(proxy)
        assert ssl_on and version.startswith("TLSv1.")
        probes = tls_cluster.sql(0, "SELECT count(*), bool_and(s.ssl) FROM pg_stat_activity a JOIN pg_stat_ssl s "
                                    "USING (pid) WHERE a.application_name = 'dbproxy-probe'")
        assert probes == "1|t", probes
        proxy.assert_alive_and_clean()


def test_verify_full_against_another_ca_fails_with_a_clear_log_line(tls_cluster: PgCluster,
                                                                    tmp_path: Path) -> None:
    other = generate(tmp_path / "other")
    with _proxy(tls_cluster, tmp_path / "run", f'{{ mode = "verify-full", ca = "{other / "ca.pem"}" }}') as proxy:
        wait_until(lambda: "certificate verify failed" in proxy.log_text(), what="the probe's TLS failure logged")
        line = next(x for x in proxy.log_text().splitlines() if "certificate verify failed" in x)
        assert "TLS handshake with the server failed" in line and str(tls_cluster.instance_addrs()[0]) in line
        with pytest.raises(psycopg.OperationalError):
            psycopg.connect(proxy.conninfo(), connect_timeout=10)
        proxy.assert_alive_and_clean()


def test_require_refuses_a_server_without_tls_and_prefer_falls_back(pg_cluster: PgCluster, tmp_path: Path) -> None:
    with _proxy(pg_cluster, tmp_path / "require", '{ mode = "require" }') as proxy:
        wait_until(lambda: "does not accept TLS" in proxy.log_text(), what="the refusal logged")
        proxy.assert_alive_and_clean()
    with _proxy(pg_cluster, tmp_path / "prefer", '{ mode = "prefer" }') as proxy:
        assert not _server_side_ssl(proxy)[0]
        proxy.assert_alive_and_clean()


def test_prefer_uses_tls_when_the_server_has_it(tls_cluster: PgCluster, tmp_path: Path) -> None:
    with _proxy(tls_cluster, tmp_path, '{ mode = "prefer" }') as proxy:
        assert _server_side_ssl(proxy)[0]
