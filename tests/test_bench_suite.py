"""The benchmark report's parts (bench/latency.py, bench/idle.py, bench/results_page.py) against the local
PostgreSQL: pgbench --log files read back, idle logins held, RESULTS.md and its plots written."""

from __future__ import annotations

import asyncio
import os
import re
import subprocess
from pathlib import Path
from typing import Any

import asyncpg

from bench.idle import open_idle, tree_rss_bytes
from bench.latency import cdf_points, log_args, percentiles, read_latencies
from bench.results_page import write_results
from deploy.pgcluster import pg_binary

PG: dict[str, Any] = {"host": "127.0.0.1", "port": 5432, "user": "postgres", "database": "postgres"}


def test_pgbench_log_latencies_match_its_transaction_count(tmp_path: Path) -> None:
    script = tmp_path / "one.sql"
    script.write_text("SELECT 1;\n")
    prefix = tmp_path / "lat"
    res = subprocess.run(
        [pg_binary("pgbench"), "-n", "-h", PG["host"], "-p", str(PG["port"]), "-U", PG["user"], "-f", str(script),
         "-c", "2", "-j", "2", "-t", "150", *log_args(prefix), PG["database"]],
        capture_output=True, text=True, timeout=60, check=True)
    processed = int(re.search(r"actually processed: (\d+)", res.stdout)[1])  # type: ignore[index]
    latencies = read_latencies(prefix)
    assert processed == 300 and len(latencies) == 300
    assert all(0 <= us < 5_000_000 for us in latencies) and sum(latencies) > 0
    points = percentiles(latencies)
    assert points["p50"] <= points["p99"] <= max(latencies)
    cdf = cdf_points(latencies, count=11)
    assert cdf[0] == (min(latencies), 0.0) and cdf[-1] == (max(latencies), 1.0)


async def test_idle_clients_stay_logged_in_and_rss_counts_the_tree() -> None:
    writers = []
    admin = await asyncpg.connect(**PG)
    try:
        for _ in range(5):
            writers.append(await open_idle(PG["host"], PG["port"], PG["user"], "", PG["database"]))
        # They have not sent anything but the startup: the server shows them idle.
        count = await admin.fetchval(
            "SELECT count(*) FROM pg_stat_activity WHERE state = 'idle' AND client_port = ANY($1::int[])",
            [w.get_extra_info("sockname")[1] for w in writers])
        assert count == 5
    finally:
        for w in writers:
            w.close()
        await admin.close()
    child = subprocess.Popen(["sleep", "5"])
    try:
        await asyncio.sleep(0.1)
        alone = tree_rss_bytes(child.pid)
        assert 0 < alone < tree_rss_bytes(os.getpid())   # the parent's tree includes the child
    finally:
        child.kill()
        child.wait()


def _cells(values: dict[str, float]) -> dict[str, dict[str, Any]]:
    return {t: {"tps": v, "tps_rounds": [v], "error": None} for t, v in values.items()}


def test_results_page_judges_the_targets_and_writes_the_plots(tmp_path: Path) -> None:
    targets = ["direct", "dbproxy-w1", "dbproxy-w2", "pgbouncer"]
    cdf = [(40.0, 0.0), (60.0, 0.5), (200.0, 1.0)]

    def latency(p50: float, p99: float, direct: tuple[float, float]) -> dict[str, Any]:
        return {"tps": 1.0, "transactions": 10, "percentiles": {"p50": p50, "p99": p99},
                "added": {"p50": p50 - direct[0], "p99": p99 - direct[1]}, "cdf": cdf, "error": None}

    direct = (40.0, 100.0)
    data = {
        "started": "2026-12-03 19:00", "cpus": 2, "loadavg_before": [0.5, 0, 0], "loadavg_after": [1.0, 0, 0],
        "dbproxy": "abc1234", "pgbouncer": "PgBouncer 1.18.0", "notes": ["a note"], "targets": targets,
        "settings": {"rounds": 3, "pool_size": 20, "scale": 10},
        "tps": {"simple": _cells({"direct": 40000, "dbproxy-w1": 16000, "dbproxy-w2": 24000, "pgbouncer": 20000})},
        "connect": {"16": _cells({"direct": 300, "dbproxy-w1": 2000, "dbproxy-w2": 2100, "pgbouncer": 2000})},
        "latency": {"1": {"direct": latency(*direct, direct), "dbproxy-w1": latency(100, 300, direct),
                          "dbproxy-w2": latency(90, 280, direct), "pgbouncer": latency(70, 200, direct)}},
        "idle": {"clients": 10000, "targets": {
            "dbproxy-w1": {"login_seconds": 9.0, "rss_before_mb": 40.0, "rss_with_idle_mb": 80.0,
                           "per_client_kb": 4.1, "tps_16_beside_idle": 15000, "error": None},
            "dbproxy-w2": {"login_seconds": 8.0, "rss_before_mb": 70.0, "rss_with_idle_mb": 120.0,
                           "per_client_kb": 5.1, "tps_16_beside_idle": 22000, "error": None}}},
        "failover": {"writes": [[-50.0, 1.0, None], [10.0, 900.0, "08006"], [950.0, 2.0, None]],
                     "detected": 600.0, "promoted": 800.0, "writer_changed": 850.0, "errors": {"08006": 1},
                     "last_write_before": -49.0, "first_write_after": 952.0, "all_clients_writing": 990.0,
                     "disconnected": 0, "idle_ok": 8, "idle_clients": 8, "acknowledged": 2, "lost": 0},
    }
    text = write_results(data, tmp_path)
    assert (tmp_path / "RESULTS.md").read_text() == text
    rows = {line.split(" | ")[0].lstrip("| "): line for line in text.splitlines() if line.startswith("| ")}
    assert rows["-S, workers = 1 / PgBouncer"].endswith("| 0.80 | ≥ 0.78 | met |")
    assert rows["-S, dbproxy-w2 / PgBouncer"].endswith("| 1.20 | ≥ 1 | met |")
    assert rows["-C at 16 clients, dbproxy-w2 / PgBouncer"].endswith("| 1.05 | ≥ 1.1 | NOT met |")
    assert rows["added p50 at 1 client, dbproxy-w1 / PgBouncer's"].endswith("| 2.00 | ≤ 1.5 | NOT met |")
    assert rows["RSS with 10000 idle clients, dbproxy-w2 (MB)"].endswith("| 120.0 | ≤ 100 | NOT met |")
    assert rows["`-S -M simple`"] == "| `-S -M simple` | 40000 | 16000 | 24000 | 20000 | 0.80 | 1.20 |"
    assert "| 1 (direct 40 / 100) | 100 / 300 (+60 / +200) |" in text
    assert "Client errors: 1× 08006" in text
    for png in ("tps.png", "connect.png", "latency_cdf.png", "idle_rss.png", "failover.png"):
        assert (tmp_path / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert f"![{png}]({png})" in text
