"""Traffic mirroring end to end (SPEC §13): cluster main mirrors to cluster "shadow", a second PostgreSQL started
here. Mirrored writes leave the same row counts on the shadow; reads_only + compare count mismatches (logged with
the statement); with the shadow stopped the primary still answers and the dropped work is counted. (The TPS cost
of mirroring to a dead shadow is a timing question: bench/mirror_overhead.py.)"""

from __future__ import annotations

import math
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from e2e_helpers import APP, RunningProxy, running_proxy, wait_until
from ops_helpers import OpsPorts, admin, ops_config, scrape

from deploy.pgcluster import HOST, PgCluster, free_ports

N = 200


def mirror_config(pg: PgCluster, shadow: PgCluster, ports: OpsPorts, shadow_port: int, mirror: str) -> str:
    text = ops_config(pg, ports, client_auth="md5")
    text = text.replace('[clusters.main]\nengine = "postgres"\n', f'[clusters.main]\nengine = "postgres"\n'
                        f"mirror = {{ {mirror} }}\n", 1)
    return text + f"""
[clusters.shadow]
engine = "postgres"
instances = ["{shadow.instance_addrs()[0]}"]
client_auth = "md5"

[clusters.shadow.health]
interval = "200ms"
timeout = "1s"
failure_threshold = 2

[[clusters.shadow.endpoints]]
name = "writer"
listen = "{HOST}:{shadow_port}"
role = "writer"
"""


@pytest.fixture(scope="module")
def shadow() -> Iterator[PgCluster]:
    cluster = PgCluster(tempfile.mkdtemp(prefix="dbproxy-shadow-"), free_ports(1))
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.destroy()


@pytest.fixture(scope="module")
def setup(pg_cluster: PgCluster, shadow: PgCluster,
          tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[RunningProxy, OpsPorts, Path, str]]:
    ports = OpsPorts.of(free_ports(6))
    shadow_port = free_ports(1)[0]
    table = f"mirror_{uuid.uuid4().hex[:8]}"
    for cluster in (pg_cluster, shadow):
        cluster.sql(0, f"CREATE TABLE {table} (id serial PRIMARY KEY, v int)", user="app", db="app")
    directory = tmp_path_factory.mktemp("mirror")
    config = mirror_config(pg_cluster, shadow, ports, shadow_port, 'cluster = "shadow", reads_only = false')
    with running_proxy(config, directory, ports.writer) as running:
        wait_until(lambda: all(r["state"] == "up" for r in admin(ports.admin, "SHOW INSTANCES")),
                   what="every instance up")
        yield running, ports, directory, table
    pg_cluster.sql(0, f"DROP TABLE IF EXISTS {table}", user="app", db="app")


def connect(ports: OpsPorts) -> psycopg.Connection:
    """prepare_threshold=None: psycopg would otherwise run repeated texts (BEGIN, COMMIT) as named prepared
    statements after 5 runs, which the statement hook does not see (README: limits of mirroring)."""
    return psycopg.connect(f"host={HOST} port={ports.writer} user=app password={APP.password} dbname=app "
                           "sslmode=disable", autocommit=True, prepare_threshold=None)


def count(cluster: PgCluster, table: str) -> int:
    return int(cluster.sql(0, f"SELECT count(*) FROM {table}", user="app", db="app"))


def metric(ports: OpsPorts, name: str, **labels: str) -> float:
    text = ",".join(f'{k}="{v}"' for k, v in {"cluster": "main", **labels}.items())
    return scrape(ports.http).get(f"{name}{{{text}}}", 0.0)


def test_mirrored_writes_give_the_same_row_counts(setup: tuple[RunningProxy, OpsPorts, Path, str],
                                                  pg_cluster: PgCluster, shadow: PgCluster) -> None:
    proxy, ports, _, table = setup
    with connect(ports) as conn:
        for i in range(N):
            conn.execute(f"INSERT INTO {table} (v) VALUES ({i})")
        for i in range(20):   # explicit transactions go whole; a rolled back one not at all
            conn.execute("BEGIN")
            conn.execute(f"INSERT INTO {table} (v) VALUES ({i}), ({i + 1})")
            conn.execute(f"UPDATE {table} SET v = v + 1 WHERE id = {i + 1}")
            conn.execute("ROLLBACK" if i % 5 == 0 else "COMMIT")
    assert count(pg_cluster, table) == N + 2 * 16
    wait_until(lambda: count(shadow, table) == count(pg_cluster, table), what="the shadow caught up")
    check = f"SELECT count(*), sum(v) FROM {table}"
    assert shadow.sql(0, check, user="app", db="app") == pg_cluster.sql(0, check, user="app", db="app")
    assert metric(ports, "dbproxy_mirror_sent_total") == N + 16
    proxy.assert_alive_and_clean()


def test_reads_only_with_compare_logs_mismatches_then_a_dead_shadow_drops(
        setup: tuple[RunningProxy, OpsPorts, Path, str], pg_cluster: PgCluster, shadow: PgCluster) -> None:
    proxy, ports, directory, table = setup
    config_path = directory / "dbproxy.toml"
    text = config_path.read_text().replace('cluster = "shadow", reads_only = false',
                                           'cluster = "shadow", sample = 0.5, reads_only = true, compare = true')
    config_path.write_text(text)
    admin(ports.admin, "RELOAD")
    wait_until(lambda: count(shadow, table) == count(pg_cluster, table), what="the shadow caught up")
    sent_before = metric(ports, "dbproxy_mirror_sent_total")
    with connect(ports) as conn:
        for _ in range(N):
            conn.execute(f"SELECT count(*) FROM {table}")
    wait_until(lambda: metric(ports, "dbproxy_mirror_sent_total") - sent_before >= N * 0.5 - 4 * math.sqrt(N / 4),
               what="the sampled reads mirrored")
    time.sleep(0.5)   # the last ones in flight
    sent = metric(ports, "dbproxy_mirror_sent_total") - sent_before
    assert abs(sent - N * 0.5) <= 4 * math.sqrt(N * 0.25), sent
    assert metric(ports, "dbproxy_mirror_mismatches_total") == 0
    with connect(ports) as conn:
        conn.execute(f"INSERT INTO {table} (v) VALUES (-1)")   # a write: not mirrored any more
    assert count(shadow, table) == count(pg_cluster, table) - 1
    with connect(ports) as conn:
        for _ in range(40):
            conn.execute(f"SELECT v FROM {table} ORDER BY id DESC LIMIT 1")   # -1 on the primary only
    wait_until(lambda: metric(ports, "dbproxy_mirror_mismatches_total") >= 5, what="mismatches counted")
    assert f"mirror mismatch on cluster shadow: 1 row(s) vs 1 on the primary for: SELECT v FROM {table}" in \
        proxy.log_text()

    shadow.stop()
    try:
        with connect(ports) as conn:
            for i in range(N):
                assert conn.execute("SELECT %s::int", (i,)).fetchone() == (i,)
        wait_until(lambda: sum(scrape(ports.http).get(f'dbproxy_mirror_dropped_total{{cluster="main",reason="{r}"}}',
                                                      0.0) for r in ("shadow_down", "error", "timeout", "queue_full")) >= 10,
                   what="mirrored work to the dead shadow dropped and counted")
    finally:
        shadow.start()
    proxy.assert_alive_and_clean()
