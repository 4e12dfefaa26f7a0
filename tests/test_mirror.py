"""Traffic mirroring end to end (SPEC §13): cluster main mirrors to cluster "shadow", a second PostgreSQL started
here. Mirrored writes leave the same row counts on the shadow; reads_only + compare count mismatches (logged with
the statement); with the shadow stopped the primary still answers and the dropped work is counted. Prepared
executions (asyncpg's named statements with binary values and results, psycopg's prepare=True) are mirrored with
their values, reads_only drops prepared writes and compare compares their rows. (The TPS cost of mirroring to a dead
shadow is a timing question: bench/mirror_overhead.py.)"""

from __future__ import annotations

import asyncio
import math
import re
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import asyncpg
import psycopg
import pytest
from e2e_helpers import APP, RunningProxy, clean_env, running_proxy, wait_until
from ops_helpers import OpsPorts, admin, ops_config, scrape

from deploy.pgcluster import HOST, PgCluster, free_ports, pg_binary
from proxy.recording.format import read_recording

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


def connect(ports: OpsPorts, prepare_threshold: int | None = None) -> psycopg.Connection:
    """prepare_threshold=None: psycopg sends every statement as an unnamed Parse/Bind/Execute (the tests that
    want named prepared statements say prepare=True)."""
    return psycopg.connect(f"host={HOST} port={ports.writer} user=app password={APP.password} dbname=app "
                           "sslmode=disable", autocommit=True, prepare_threshold=prepare_threshold)


async def asyncpg_connect(ports: OpsPorts) -> asyncpg.Connection:
    return await asyncpg.connect(host=HOST, port=ports.writer, user="app", password=APP.password, database="app")


def new_table(pg_cluster: PgCluster, shadow: PgCluster, rows: int = 0) -> str:
    table = f"mirrorp_{uuid.uuid4().hex[:8]}"
    for cluster in (pg_cluster, shadow):
        cluster.sql(0, f"CREATE TABLE {table} (id int PRIMARY KEY, v int, s text)", user="app", db="app")
        if rows:
            cluster.sql(0, f"INSERT INTO {table} SELECT i, i * 10, 'row ' || i FROM generate_series(1, {rows}) i",
                        user="app", db="app")
    return table


def contents(cluster: PgCluster, table: str) -> str:
    return cluster.sql(0, f"SELECT count(*), sum(v), string_agg(coalesce(s, '-'), ',' ORDER BY id) FROM {table}",
                       user="app", db="app")


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


def test_prepared_executions_are_mirrored_with_their_values(
        setup: tuple[RunningProxy, OpsPorts, Path, str], pg_cluster: PgCluster, shadow: PgCluster) -> None:
    """asyncpg (named statements, binary values) and psycopg prepare=True: every execution reaches the shadow with
    its values (quotes, NULLs), explicit transactions whole, a rolled back one not at all. A recording running
    meanwhile (record_parameters = false) gets the executions too, without their values; after RECORD STOP the
    mirror still gets them."""
    proxy, ports, directory, _ = setup
    table = new_table(pg_cluster, shadow)
    sent_before = metric(ports, "dbproxy_mirror_sent_total")
    recording = directory / f"{table}.rec.gz"
    admin(ports.admin, f"RECORD START '{recording}' main")

    async def clients() -> None:
        conn = await asyncpg_connect(ports)
        try:
            insert = await conn.prepare(f"INSERT INTO {table} VALUES ($1, $2, $3)")
            for i in range(50):
                await insert.fetch(i, i * 2, f"it's {i}" if i % 3 else None)
            async with conn.transaction():   # BEGIN / COMMIT as simple queries, the rest prepared
                await conn.execute(f"UPDATE {table} SET v = v + $1 WHERE id < $2", 1000, 10)
                await conn.execute(f"DELETE FROM {table} WHERE id = $1", 49)
            transaction = conn.transaction()
            await transaction.start()
            await conn.execute(f"INSERT INTO {table} VALUES ($1, $2, $3)", 100, 1, "rolled back")
            await transaction.rollback()
            admin(ports.admin, "RECORD STOP")   # the session's tap stays for the mirror, its statements known
            for i in range(200, 205):
                await insert.fetch(i, i, "after the recording")
        finally:
            await conn.close()

    asyncio.run(clients())
    executions = [e for e in read_recording(recording)[1] if e["e"] == "x" and table in (e["q"] or "")]
    assert len(executions) == 50 + 2 + 1 and all("p" not in e and e["np"] for e in executions), executions[:2]
    with connect(ports) as conn:
        for i in range(50, 80):
            conn.execute(f"INSERT INTO {table} VALUES (%s, %s, %s)", (i, -i, f"p{i}"), prepare=True)
    assert count(pg_cluster, table) == 84
    wait_until(lambda: contents(shadow, table) == contents(pg_cluster, table), what="the shadow has the same rows")
    time.sleep(0.3)
    assert metric(ports, "dbproxy_mirror_sent_total") - sent_before == 50 + 1 + 5 + 30
    assert metric(ports, "dbproxy_mirror_dropped_total", reason="error") == 0
    proxy.assert_alive_and_clean()


def pgbench(port: int, database: str, *args: str, password: str | None = None) -> str:
    env = clean_env(PGSSLMODE="disable", **({"PGPASSWORD": password} if password else {}))
    res = subprocess.run([pg_binary("pgbench"), "-h", HOST, "-p", str(port), "-U", "app", *args, database],
                         capture_output=True, text=True, timeout=120, env=env, stdin=subprocess.DEVNULL)
    assert res.returncode == 0, res.stdout + res.stderr
    return res.stdout + res.stderr


def test_pgbench_prepared_run_leaves_the_same_tables_on_the_shadow(
        setup: tuple[RunningProxy, OpsPorts, Path, str], pg_cluster: PgCluster, shadow: PgCluster) -> None:
    """pgbench -M prepared (BEGIN, UPDATE…, END all named prepared statements, Bind/Execute per run): every
    transaction reaches the shadow whole with its values; the balances and the history agree."""
    proxy, ports, _, _ = setup
    name = f"mirrorbench_{uuid.uuid4().hex[:8]}"
    check = ("SELECT (SELECT count(*) FROM pgbench_history), (SELECT sum(delta) FROM pgbench_history), "
             "(SELECT sum(abalance) FROM pgbench_accounts), (SELECT sum(tbalance) FROM pgbench_tellers), "
             "(SELECT sum(bbalance) FROM pgbench_branches)")
    for cluster in (pg_cluster, shadow):
        cluster.sql(0, f"CREATE DATABASE {name} OWNER app")
        pgbench(cluster.ports[0], name, "-i", "-s", "1", "-q")
    try:
        sent = metric(ports, "dbproxy_mirror_sent_total")
        out = pgbench(ports.writer, name, "-n", "-M", "prepared", "-c", "4", "-j", "2", "-t", "50",
                      password=APP.password)
        assert re.search(r"number of transactions actually processed: 200\b", out), out
        wait_until(lambda: metric(ports, "dbproxy_mirror_sent_total") - sent >= 200, what="the transactions mirrored")
        wait_until(lambda: shadow.sql(0, check, user="app", db=name) == pg_cluster.sql(0, check, user="app", db=name),
                   what="the shadow's tables agree")
        assert pg_cluster.sql(0, "SELECT count(*) FROM pgbench_history", user="app", db=name) == "200"
        # and pgbench's own reads (the scale, per thread) as autocommit statements
        assert 200 <= metric(ports, "dbproxy_mirror_sent_total") - sent <= 204
        assert metric(ports, "dbproxy_mirror_dropped_total", reason="error") == 0
    finally:
        for cluster in (pg_cluster, shadow):
            cluster.sql(0, f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
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


def test_prepared_reads_compared_and_prepared_writes_not_mirrored(
        setup: tuple[RunningProxy, OpsPorts, Path, str], pg_cluster: PgCluster, shadow: PgCluster) -> None:
    """reads_only + compare with prepared executions: equal tables give no mismatch (asyncpg's binary results
    compared as sent), a prepared write is not mirrored (nor a transaction holding one), and the reads that
    then differ are counted and logged with their text."""
    proxy, ports, directory, _ = setup
    config_path = directory / "dbproxy.toml"
    config_path.write_text(config_path.read_text().replace(
        'cluster = "shadow", sample = 0.5, reads_only = true, compare = true',
        'cluster = "shadow", reads_only = true, compare = true'))
    admin(ports.admin, "RELOAD")
    wait_until(lambda: all(r["state"] == "up" for r in admin(ports.admin, "SHOW INSTANCES")),
               what="every instance up")
    table = new_table(pg_cluster, shadow, rows=20)
    mismatches = metric(ports, "dbproxy_mirror_mismatches_total")
    read = f"SELECT id, v, s FROM {table} WHERE id <= $1 ORDER BY id"

    async def reads(n: int, point: int | None = None) -> None:
        conn = await asyncpg_connect(ports)
        try:
            for i in range(n):
                got = await conn.fetch(read, i % 20)
                assert len(got) == i % 20
                if point is not None:
                    await conn.fetchval(f"SELECT v FROM {table} WHERE id = $1", point)
        finally:
            await conn.close()

    def wait_sent(at_least: float) -> None:
        wait_until(lambda: metric(ports, "dbproxy_mirror_sent_total") >= at_least, what="the reads mirrored")

    sent = metric(ports, "dbproxy_mirror_sent_total")
    asyncio.run(reads(40))
    with connect(ports, prepare_threshold=0) as conn:   # psycopg: every statement a named prepared one
        for i in range(20):
            assert conn.execute(f"SELECT v FROM {table} WHERE id = %s", (i + 1,)).fetchone() == ((i + 1) * 10,)
    wait_sent(sent + 60)
    assert metric(ports, "dbproxy_mirror_mismatches_total") == mismatches

    async def write() -> None:
        conn = await asyncpg_connect(ports)
        try:
            await conn.execute(f"UPDATE {table} SET v = $1 WHERE id = $2", -1, 3)
            async with conn.transaction():   # a read and a write: not mirrored
                await conn.fetch(read, 5)
                await conn.execute(f"UPDATE {table} SET s = $1 WHERE id = $2", "changed", 4)
        finally:
            await conn.close()

    sent = metric(ports, "dbproxy_mirror_sent_total")
    asyncio.run(write())
    asyncio.run(reads(10, point=3))   # id 3 differs now
    wait_sent(sent + 20)
    time.sleep(0.3)
    assert metric(ports, "dbproxy_mirror_sent_total") - sent == 20
    assert shadow.sql(0, f"SELECT v, s FROM {table} WHERE id IN (3, 4) ORDER BY id", user="app", db="app") == \
        "30|row 3\n40|row 4"
    wait_until(lambda: metric(ports, "dbproxy_mirror_mismatches_total") - mismatches >= 10, what="mismatches counted")
    assert f"vs 1 on the primary for: SELECT v FROM {table} WHERE id = $1" in proxy.log_text()
    proxy.assert_alive_and_clean()


def test_a_mirror_configured_later_cannot_run_statements_prepared_before(
        setup: tuple[RunningProxy, OpsPorts, Path, str], pg_cluster: PgCluster, shadow: PgCluster) -> None:
    """With the mirror removed by a reload the session's prepared tap goes (nothing watches its Parses); once a
    reload brings the mirror back, executions of a statement prepared in between are dropped as unmirrorable,
    and those of a statement prepared after are mirrored."""
    _, ports, directory, _ = setup
    config_path = directory / "dbproxy.toml"
    text = config_path.read_text()
    line = 'mirror = { cluster = "shadow", reads_only = true, compare = true }\n'
    assert line in text
    table = new_table(pg_cluster, shadow, rows=5)

    async def client() -> tuple[float, float]:
        conn = await asyncpg_connect(ports)
        try:
            config_path.write_text(text.replace(line, ""))
            admin(ports.admin, "RELOAD")
            early = await conn.prepare(f"SELECT v FROM {table} WHERE id = $1")
            config_path.write_text(text)
            admin(ports.admin, "RELOAD")
            dropped, sent = (metric(ports, "dbproxy_mirror_dropped_total", reason="unmirrorable"),
                             metric(ports, "dbproxy_mirror_sent_total"))
            for i in range(5):
                assert await early.fetchval(i + 1) == (i + 1) * 10
            late = await conn.prepare(f"SELECT s FROM {table} WHERE id = $1")
            for i in range(5):
                assert await late.fetchval(i + 1) == f"row {i + 1}"
        finally:
            await conn.close()
        return dropped, sent

    dropped, sent = asyncio.run(client())
    wait_until(lambda: metric(ports, "dbproxy_mirror_sent_total") - sent >= 5, what="the later statement mirrored")
    assert metric(ports, "dbproxy_mirror_dropped_total", reason="unmirrorable") - dropped == 5
