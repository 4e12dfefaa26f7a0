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
    with running_proxy(ops_config(pg_cluster, ports, client_auth="md5"), tmp_path_factory.mktemp("record"),
                       ports.writer) as running:
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
