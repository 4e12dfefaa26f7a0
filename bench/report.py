"""Medians per (workload, target), the Markdown results table, and the JSON written to bench/results/."""

from __future__ import annotations

import statistics
from dataclasses import dataclass

from bench.pgbench import CellRun, Workload

TARGETS = ("direct", "dbproxy", "pgbouncer")


@dataclass
class Cell:
    """The median of the successful runs of one (workload, target), or why there is none."""

    tps: float | None
    runs: int
    failed: int
    note: str | None = None  # e.g. "n/a (...)"; shown instead of a number

    def show(self) -> str:
        if self.note is not None:
            return self.note
        if self.tps is None:
            return "error" if self.failed else "—"
        text = f"{self.tps:,.0f}"
        return f"{text} ({self.failed}/{self.runs} runs failed)" if self.failed else text


def summarize(runs: list[CellRun], workload: str, target: str, note: str | None = None) -> Cell:
    mine = [r for r in runs if r.workload == workload and r.target == target]
    good = [r.tps for r in mine if r.ok and r.tps is not None]
    return Cell(
        tps=statistics.median(good) if good else None,
        runs=len(mine),
        failed=len(mine) - len(good),
        note=note if not mine else None,
    )


def ratio(a: Cell, b: Cell) -> float | None:
    if a.tps is None or b.tps is None or b.tps == 0 or a.failed or b.failed:
        return None
    return a.tps / b.tps


def verdict(workload: Workload, vs_bouncer: float | None, has_bouncer_run: bool) -> str:
    want = f"≥ {workload.target_ratio:.1f}× PgBouncer"
    if vs_bouncer is None:
        return f"{want}: n/a" if not has_bouncer_run else f"{want}: FAIL (no result)"
    return f"{want}: {'PASS' if vs_bouncer >= workload.target_ratio else 'FAIL'}"


def build_table(
    workloads: list[Workload], cells: dict[str, dict[str, Cell]]
) -> tuple[str, dict[str, dict[str, float | str | None]]]:
    """The Markdown table and, per workload, the ratios and verdict (for the JSON)."""
    lines = [
        "| workload | direct TPS | dbproxy TPS | PgBouncer TPS | dbproxy/PgBouncer | dbproxy/direct | target |",
        "|---|--:|--:|--:|--:|--:|---|",
    ]
    derived: dict[str, dict[str, float | str | None]] = {}
    for w in workloads:
        row = cells[w.key]
        vs_bouncer = ratio(row["dbproxy"], row["pgbouncer"])
        vs_direct = ratio(row["dbproxy"], row["direct"])
        has_bouncer = row["pgbouncer"].runs > 0 and row["dbproxy"].runs > 0
        mark = verdict(w, vs_bouncer, has_bouncer)
        derived[w.key] = {"dbproxy_vs_pgbouncer": vs_bouncer, "dbproxy_vs_direct": vs_direct, "target": mark}
        lines.append(
            f"| {w.label} | {row['direct'].show()} | {row['dbproxy'].show()} | {row['pgbouncer'].show()} "
            f"| {_fmt_ratio(vs_bouncer)} | {_fmt_ratio(vs_direct)} | {mark} |"
        )
    return "\n".join(lines), derived


def _fmt_ratio(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.2f}×"
