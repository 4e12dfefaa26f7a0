"""Medians per (workload, target), the Markdown results tables, and the JSON written to bench/results/."""

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


# ---- issue 3: dbproxy's endpoints side by side ------------------------------------------------------

ENDPOINT_NAMES = ("writer", "reader", "split")
# "Landed" means at least this share of an endpoint's transactions ran where expected.
LANDED_SHARE = 0.95


@dataclass(frozen=True)
class EndpointSet:
    """One writer/reader/split comparison: the endpoints of one dbproxy cluster, and where reads go.

    Under pgbench -S every transaction is a read: the writer keeps them on the primary; reader and
    split send them to ``reads_on`` ("replicas", or "primary" for a cluster without replicas, where
    both fall back to the primary).
    """

    key: str  # JSON key in bench/results/*.json
    cluster: str  # [clusters.<name>] in the dbproxy config
    title: str  # the table's heading
    reads_on: str  # "replicas" | "primary"
    label_prefix: str = ""  # row labels: "" -> "writer", "solo " -> "solo writer"

    def target(self, name: str) -> str:
        """The CellRun target of endpoint ``name``: dbproxy-writer, dbproxy-solo-writer..."""
        return f"dbproxy-{name}" if self.cluster == "main" else f"dbproxy-{self.cluster}-{name}"

    @property
    def targets(self) -> list[str]:
        return [self.target(name) for name in ENDPOINT_NAMES]

    def label(self, name: str) -> str:
        return f"{self.label_prefix}{name}"

    def expected(self, name: str) -> str:
        """Where endpoint ``name`` must run -S's transactions: "primary" or "replicas"."""
        return "primary" if name == "writer" else self.reads_on


# Issue 3's comparison as first built: reader and split spread the reads over the replicas.
REPLICA_ENDPOINTS = EndpointSet(
    key="endpoints",
    cluster="main",
    title="dbproxy endpoints, reads on the replicas (issue 3: writer vs reader vs split)",
    reads_on="replicas",
)
# The same three endpoints on a cluster listing only the primary: the backend is held fixed, so
# the endpoints differ only in dbproxy's routing work.
SOLO_ENDPOINTS = EndpointSet(
    key="endpoints_solo",
    cluster="solo",
    title="dbproxy endpoints, routing only (every endpoint on the primary)",
    reads_on="primary",
    label_prefix="solo ",
)
ENDPOINT_SETS = (REPLICA_ENDPOINTS, SOLO_ENDPOINTS)


def _shares(xacts: dict[str, int], roles: dict[str, str]) -> tuple[str, float | None, float | None]:
    """("node1 (replica) 50.1% · ...", primary share, replica share) from per-instance commit deltas."""
    total = sum(max(0, n) for n in xacts.values())
    if total == 0:
        return "no transactions counted", None, None
    ordered = sorted(xacts.items(), key=lambda item: (-item[1], item[0]))
    text = " · ".join(f"{node} ({roles.get(node, '?')}) {max(0, n) / total:.1%}" for node, n in ordered)
    primary = sum(max(0, n) for node, n in xacts.items() if roles.get(node) == "primary") / total
    return text, primary, 1.0 - primary


def _verdict(name: str, cell: Cell, writer: Cell, vs_writer: float | None, target_ratio: float) -> str:
    if name == "writer":
        return "baseline"
    if vs_writer is None:
        return "FAIL (no result)" if cell.runs or writer.runs else "n/a"
    return "PASS" if vs_writer >= target_ratio else "FAIL"


def build_endpoints_table(
    endpoint_set: EndpointSet,
    target_ratio: float,
    cells: dict[str, Cell],
    xacts: dict[str, dict[str, int]],
    roles: dict[str, str],
) -> tuple[str, dict[str, dict[str, object]]]:
    """One endpoint table (TPS, ratio vs writer, PASS/FAIL, where the transactions ran) and its JSON.

    ``cells`` and ``xacts`` are keyed by endpoint name (writer, reader, split); ``xacts`` holds the
    xact_commit deltas per instance summed over the endpoint's runs; ``roles`` maps an instance to
    "primary" or "replica".
    """
    baseline = endpoint_set.label("writer")
    want = f"≥ {target_ratio:.2f}× {baseline}"
    lines = [
        f"| endpoint | TPS | vs {baseline} | routing costs ≤ 10% TPS ({want}) "
        "| where the transactions ran (pg_stat_database xact_commit Δ) | landed where expected |",
        "|---|--:|--:|---|---|---|",
    ]
    derived: dict[str, dict[str, object]] = {}
    writer = cells["writer"]
    for name in ENDPOINT_NAMES:
        cell = cells[name]
        vs_writer = ratio(cell, writer)
        mark = _verdict(name, cell, writer, vs_writer, target_ratio)
        where, primary, replicas = _shares(xacts.get(name, {}), roles)
        expected = endpoint_set.expected(name)
        share = primary if expected == "primary" else replicas
        if share is None:
            landed = "unknown"
        else:
            landed = f"{'yes' if share >= LANDED_SHARE else '**NO**'}: {share:.1%} on the {expected}"
        derived[name] = {
            "target_name": endpoint_set.target(name),
            "tps": cell.tps,
            "vs_writer": vs_writer,
            "target": f"{want}: {mark}" if name != "writer" else mark,
            "instance_xacts": xacts.get(name, {}),
            "primary_share": primary,
            "replica_share": replicas,
            "expected_on": expected,
            "landed_as_expected": None if share is None else share >= LANDED_SHARE,
        }
        ratio_text = "1.00×" if name == "writer" and writer.tps else _fmt_ratio(vs_writer)
        lines.append(
            f"| {endpoint_set.label(name)} | {cell.show()} | {ratio_text} | {mark} | {where} | {landed} |"
        )
    return "\n".join(lines), derived
