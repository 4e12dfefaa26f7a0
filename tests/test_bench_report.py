"""bench/report.py's pooler CPU per transaction: medians over the successful runs, one note line."""

from __future__ import annotations

from bench.pgbench import WORKLOADS, CellRun
from bench.report import pooler_cpu_note, pooler_cpu_us


def run(target: str, workload: str, cpu_s: float | None, transactions: int, ok: bool = True) -> CellRun:
    return CellRun(target, workload, 1, tps=1000.0 if ok else None, transactions=transactions,
                   pooler_cpu_s=cpu_s, error=None if ok else "failed")


def test_the_median_of_the_successful_runs_per_transaction() -> None:
    runs = [run("dbproxy", "connect", 0.30, 2000), run("dbproxy", "connect", 0.32, 2000),
            run("dbproxy", "connect", 0.60, 2000), run("dbproxy", "connect", 9.0, 2000, ok=False),
            run("dbproxy", "connect", None, 2000), run("pgbouncer", "connect", 0.22, 2000),
            run("dbproxy", "simple", 0.8, 20000)]
    assert round(pooler_cpu_us(runs, "connect", "dbproxy") or 0, 3) == 160.0   # 150, 160, 300 µs
    assert round(pooler_cpu_us(runs, "connect", "pgbouncer") or 0, 3) == 110.0
    assert pooler_cpu_us(runs, "connect", "direct") is None
    note, numbers = pooler_cpu_note(runs, WORKLOADS)
    assert numbers == {"simple": {"dbproxy": 40.0}, "connect": {"dbproxy": 160.0, "pgbouncer": 110.0}}
    assert note is not None and "`-S -M simple -C` dbproxy 160 µs, PgBouncer 110 µs" in note


def test_no_note_without_pooler_measurements() -> None:
    assert pooler_cpu_note([run("direct", "simple", None, 100)], WORKLOADS) == (None, {})


def test_ryw_summary_medians_ratios_and_added_latency() -> None:
    from bench.ryw import summarize

    def run(target: str, round_no: int, tps: float, latency: float) -> CellRun:
        return CellRun(target, "update", round_no, tps=tps, output_tail=f"latency average = {latency} ms\ntps = {tps}")

    runs = [run("on", 0, 900, 1.2), run("off", 0, 1000, 1.0), run("off", 1, 1100, 0.9), run("on", 1, 880, 1.1),
            run("on", 2, 950, 1.0), run("off", 2, 1000, 0.8)]
    s = summarize("update", runs)
    assert s.tps == {"on": 900, "off": 1000} and s.rounds == 3
    assert s.tps_ratio == 0.9 and s.paired_ratio == 0.9
    assert s.latency_ms == {"on": 1.1, "off": 0.9} and round(s.added_latency_us) == 200
