"""Record and replay end to end (SPEC §13): a pgbench run through dbproxy recorded with RECORD START, replayed by
`dbproxy replay` against another PostgreSQL (the local server on 5432, a fresh database) reproduces the
transaction count and the final table contents."""

from __future__ import annotations

import gzip
import json
import os
import re
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from conftest import REPO_ROOT
from e2e_helpers import APP, RunningProxy, clean_env, running_proxy, wait_until
from ops_helpers import AdminError, OpsPorts, admin, ops_config

from deploy.pgcluster import HOST, PgCluster, free_ports, pg_binary
from proxy.recording.format import read_recording

LOCAL_PORT = 5432   # the machine's PostgreSQL (trust): the replay's "other cluster"
CHECK = ("SELECT (SELECT count(*) FROM pgbench_history), (SELECT sum(delta) FROM pgbench_history), "
         "(SELECT sum(abalance) FROM pgbench_accounts), (SELECT sum(tbalance) FROM pgbench_tellers), "
         "(SELECT sum(bbalance) FROM pgbench_branches)")


def psql(port: int, database: str, sql: str, user: str = "postgres") -> str:
    res = subprocess.run([pg_binary("psql"), "-X", "-At", "-v", "ON_ERROR_STOP=1", "-h", HOST, "-p", str(port),
                          "-U", user, "-d", database, "-c", sql], capture_output=True, text=True, timeout=60,
                         env=clean_env(PGCONNECT_TIMEOUT="5"), stdin=subprocess.DEVNULL)
    assert res.returncode == 0, res.stderr
    return res.stdout.strip()


def pgbench(port: int, user: str, database: str, *args: str, password: str | None = None) -> str:
    env = clean_env(PGSSLMODE="disable", **({"PGPASSWORD": password} if password else {}))
    res = subprocess.run([pg_binary("pgbench"), "-h", HOST, "-p", str(port), "-U", user, *args, database],
                         capture_output=True, text=True, timeout=120, env=env, stdin=subprocess.DEVNULL)
    assert res.returncode == 0, res.stdout + res.stderr
    return res.stdout + res.stderr


@pytest.fixture(scope="module")
def ports() -> OpsPorts:
    return OpsPorts.of(free_ports(6))


@pytest.fixture(scope="module")
def proxy(pg_cluster: PgCluster, ports: OpsPorts, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningProxy]:
    text = ops_config(pg_cluster, ports, client_auth="md5").replace("[server]\n", "[server]\nrecord_parameters = true\n", 1)
    with running_proxy(text, tmp_path_factory.mktemp("record"), ports.writer) as running:
        wait_until(lambda: all(r["state"] == "up" for r in admin(ports.admin, "SHOW INSTANCES")),
                   what="every instance up")
        yield running


@pytest.fixture
def databases(pg_cluster: PgCluster) -> Iterator[tuple[str, str]]:
    """A pgbench database on the test cluster (owned by app) and an identical one on the local server."""
    name = f"replay_{uuid.uuid4().hex[:8]}"
    pg_cluster.sql(0, f"CREATE DATABASE {name} OWNER app")
    psql(LOCAL_PORT, "postgres", f"CREATE DATABASE {name}")
    try:
        pgbench(pg_cluster.ports[0], "app", name, "-i", "-s", "1", "-q")
        pgbench(LOCAL_PORT, "postgres", name, "-i", "-s", "1", "-q")
        yield name, name
    finally:
        pg_cluster.sql(0, f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
        psql(LOCAL_PORT, "postgres", f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


def replay_cli(recording: Path, target: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    return subprocess.run([sys.executable, "-m", "proxy", "replay", str(recording), "--target",
                           f"{HOST}:{LOCAL_PORT}", "--user", "postgres", "--database", target, *args],
                          capture_output=True, text=True, timeout=120, env=env, cwd=REPO_ROOT)


def test_recorded_prepared_pgbench_run_replays_to_the_same_tables(proxy: RunningProxy, ports: OpsPorts,
                                                                   pg_cluster: PgCluster,
                                                                   databases: tuple[str, str], tmp_path: Path) -> None:
    """pgbench -M prepared (named statements, Parse once, Bind/Execute per run) with record_parameters = true:
    every execution is an "x" event with its values, and the replay re-prepares and runs them with those."""
    source, target = databases
    recording = tmp_path / "prepared.rec.gz"
    admin(ports.admin, f"RECORD START '{recording}' main")
    out = pgbench(ports.writer, APP.name, source, "-n", "-M", "prepared", "-c", "4", "-j", "2", "-t", "40",
                  password=APP.password)
    processed = int(re.search(r"number of transactions actually processed: (\d+)", out).group(1))  # type: ignore[union-attr]
    assert processed == 160
    (row,) = admin(ports.admin, "SHOW RECORDING")
    admin(ports.admin, "RECORD STOP")
    header, events = read_recording(recording)
    executions = [e for e in events if e["e"] == "x"]
    assert header.parameters and len(executions) >= 7 * processed
    assert all(e["q"] and "np" not in e for e in executions)
    updates = [e for e in executions if e["q"].startswith("UPDATE pgbench_accounts")]
    assert len(updates) == processed and all(len(e["p"]) == 2 and e["p"][0].lstrip("-").isdigit() for e in updates)
    assert sum(e["q"].strip().upper().startswith("BEGIN") for e in executions if e.get("n")) == processed

    res = replay_cli(recording, target, "--speed", "4", "--json", "--quiet")
    assert res.returncode == 0, res.stdout + res.stderr
    report = json.loads(res.stdout)
    assert report["errors"] == 0 and report["skipped"] == 0, report
    assert report["statements"] == int(row["statements"])
    assert processed <= report["transactions"] <= processed + 3, report
    assert psql(LOCAL_PORT, target, CHECK) == pg_cluster.sql(0, CHECK, user="app", db=source)
    assert psql(LOCAL_PORT, target, "SELECT count(*) FROM pgbench_history") == str(processed)


def test_parameters_are_not_recorded_when_record_parameters_is_off(pg_cluster: PgCluster, databases: tuple[str, str],
                                                                    tmp_path: Path) -> None:
    """record_parameters = false (the default): an asyncpg client's prepared executions (binary values, unnamed
    and named statements) are recorded as texts without their values; the replay skips and counts those with values."""
    import asyncio

    import asyncpg

    source, target = databases
    off = OpsPorts.of(free_ports(6))
    recording = tmp_path / "off.rec.gz"
    marker = "Zq7-secret-value"
    with running_proxy(ops_config(pg_cluster, off, client_auth="md5"), tmp_path / "proxy", off.writer):
        wait_until(lambda: all(r["state"] == "up" for r in admin(off.admin, "SHOW INSTANCES")),
                   what="every instance up")
        admin(off.admin, f"RECORD START '{recording}' main")

        async def client() -> None:
            conn = await asyncpg.connect(host=HOST, port=off.writer, user=APP.name, password=APP.password,
                                         database=source, ssl=False, statement_cache_size=0)
            try:
                await conn.execute("CREATE TABLE IF NOT EXISTS rec_off (v text)")
                await conn.execute("INSERT INTO rec_off VALUES ($1)", marker)
                assert await conn.fetchval("SELECT count(*) FROM rec_off WHERE v = $1", marker) == 1
                assert await conn.fetchval("SELECT 41 + 1") == 42   # no parameter: replayable
            finally:
                await conn.close()

        asyncio.run(client())
        admin(off.admin, "RECORD STOP")
    with gzip.open(recording, "rb") as raw:
        assert marker.encode() not in raw.read()
    header, events = read_recording(recording)
    executions = [e for e in events if e["e"] == "x"]
    assert not header.parameters and all("p" not in e for e in executions), executions
    assert sorted(e["np"] for e in executions) == [0, 1, 1], executions
    res = replay_cli(recording, target, "--json", "--quiet")
    report = json.loads(res.stdout)
    assert report["skipped"] == 2 and report["errors"] == 0, report
    assert report["skipped_reasons"] == {"parameters not recorded (record_parameters = false)": 2}, report
    assert psql(LOCAL_PORT, target, "SELECT count(*) FROM rec_off") == "0"   # the table, not the row
    res = replay_cli(recording, target, "--quiet")
    assert "skipped: 2 prepared execution(s) not replayable" in res.stdout, res.stdout


def test_recorded_pgbench_run_replays_to_the_same_tables(proxy: RunningProxy, ports: OpsPorts,
                                                          pg_cluster: PgCluster, databases: tuple[str, str],
                                                          tmp_path: Path) -> None:
    source, target = databases
    recording = tmp_path / "pgbench.rec.gz"
    admin(ports.admin, f"RECORD START '{recording}' main")
    with pytest.raises(AdminError, match="a recording to .* is running"):
        admin(ports.admin, f"RECORD START '{tmp_path / 'other.gz'}'")
    out = pgbench(ports.writer, APP.name, source, "-n", "-M", "simple", "-c", "4", "-j", "2", "-t", "40",
                  password=APP.password)
    processed = int(re.search(r"number of transactions actually processed: (\d+)", out).group(1))  # type: ignore[union-attr]
    assert processed == 160
    (row,) = admin(ports.admin, "SHOW RECORDING")
    assert row["cluster"] == "main" and int(row["sessions"]) >= 4 and int(row["statements"]) >= 7 * processed
    admin(ports.admin, "RECORD STOP")
    assert admin(ports.admin, "SHOW RECORDING") == []
    with pytest.raises(AdminError, match="no recording is running"):
        admin(ports.admin, "RECORD STOP")
    with pytest.raises(AdminError, match="exists"):
        admin(ports.admin, f"RECORD START '{recording}'")

    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    res = subprocess.run([sys.executable, "-m", "proxy", "replay", str(recording), "--target",
                          f"{HOST}:{LOCAL_PORT}", "--user", "postgres", "--database", target, "--speed", "4",
                          "--json"], capture_output=True, text=True, timeout=120, env=env, cwd=REPO_ROOT)
    assert res.returncode == 0, res.stdout + res.stderr
    report = json.loads(res.stdout)
    assert report["errors"] == 0, report
    assert report["statements"] == int(row["statements"])
    # Every pgbench transaction starts with BEGIN (a new transaction); pgbench's own setup queries are more.
    header, events = read_recording(recording)
    starts = [e["q"] for e in events if e["e"] == "q" and e.get("n")]
    assert header.engine == "postgres" and sum(q.strip().upper().startswith("BEGIN") for q in starts) == processed
    assert report["transactions"] == len(starts) and len(starts) - processed <= 3, report
    assert report["latency_ms"]["p50"] > 0 and "statements" in res.stderr   # the progress bar's last line
    assert psql(LOCAL_PORT, target, CHECK) == pg_cluster.sql(0, CHECK, user="app", db=source)
    assert psql(LOCAL_PORT, target, "SELECT count(*) FROM pgbench_history") == str(processed)


def test_replay_refuses_what_is_not_a_recording(tmp_path: Path) -> None:
    bogus = tmp_path / "bogus.gz"
    bogus.write_bytes(b"not gzip")
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    res = subprocess.run([sys.executable, "-m", "proxy", "replay", str(bogus), "--target", f"{HOST}:1"],
                         capture_output=True, text=True, timeout=60, env=env, cwd=REPO_ROOT)
    assert res.returncode == 1 and "is not a dbproxy recording" in res.stderr


def test_recording_masks_passwords(proxy: RunningProxy, ports: OpsPorts, tmp_path: Path) -> None:
    """Statements that set a password are written with their literals masked, as the audit log does."""
    recording = tmp_path / "secret.rec.gz"
    admin(ports.admin, f"RECORD START '{recording}' main")
    try:
        with psycopg.connect(host=HOST, port=ports.writer, user=APP.name, password=APP.password, dbname="app",
                             sslmode="disable", autocommit=True) as conn:
            # a role that does not exist: the server refuses it, the proxy still records the text
            with pytest.raises(psycopg.Error):
                conn.execute("ALTER ROLE no_such_role_rec PASSWORD 'S3cretPW'")
            assert conn.execute("SELECT 'visible'").fetchone() == ("visible",)
    finally:
        admin(ports.admin, "RECORD STOP")
    texts = [e["q"] for e in read_recording(recording)[1] if e["e"] == "q"]
    assert "ALTER ROLE no_such_role_rec PASSWORD '***'" in texts and "SELECT 'visible'" in texts, texts
    with gzip.open(recording, "rb") as raw:
        assert b"S3cretPW" not in raw.read()
