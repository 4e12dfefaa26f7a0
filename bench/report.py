"""Medians per (workload, target), the Markdown results tables, and the JSON written to bench/results/."""

from __future__ import annotations

import json
import statistics
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

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


POOLERS = ("dbproxy", "pgbouncer")


def pooler_cpu_us(runs: list[CellRun], workload: str, target: str) -> float | None:
    """Median over the successful runs of the pooler's own CPU per transaction, in µs."""
    per_txn = [r.pooler_cpu_s / r.transactions * 1e6 for r in runs
               if r.workload == workload and r.target == target and r.ok
               and r.pooler_cpu_s is not None and r.transactions]
    return statistics.median(per_txn) if per_txn else None


def pooler_cpu_note(runs: list[CellRun], workloads: Sequence[Workload]) -> tuple[str | None, dict[str, dict[str, float]]]:
    """One line comparing the poolers' CPU per transaction by workload, and the numbers for the JSON.

    The TPS ratio depends on everything else the 2 cores run; the pooler's own CPU per transaction
    (from /proc, around each run) is the steadier measure of what the pooler costs.
    """
    numbers: dict[str, dict[str, float]] = {}
    for workload in workloads:
        row = {t: us for t in POOLERS if (us := pooler_cpu_us(runs, workload.key, t)) is not None}
        if row:
            numbers[workload.key] = row
    if not numbers:
        return None, numbers
    label = {w.key: w.label for w in workloads}
    names = {"dbproxy": "dbproxy", "pgbouncer": "PgBouncer"}
    parts = [label[key] + " " + ", ".join(f"{names[t]} {us:.0f} µs" for t, us in row.items())
             for key, row in numbers.items()]
    return ("Pooler CPU per transaction (the pooler's own processes, user + system, median of the rounds): "
            + "; ".join(parts) + "."), numbers


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
# The control rows of a table with ``direct_control`` (row keys, as in the JSON): the same load with no
# proxy, straight to the primary, and spread over the replicas by one pgbench per replica.
DIRECT_ROWS = ("direct_primary", "direct_replicas")
DIRECT_REPLICAS_TARGET = "direct-replicas"


def direct_primary_target(clients: int) -> str:
    """The CellRun target of the direct-to-the-primary control: direct-primary-16 for 16 clients."""
    return f"direct-primary-{clients}"


@dataclass(frozen=True)
class EndpointSet:
    """One writer/reader/split comparison: the endpoints of one dbproxy cluster, and where reads go.

    Under pgbench -S every transaction is a read: the writer keeps them on the primary; reader and
    split send them to ``reads_on`` ("replicas", or "primary" for a cluster without replicas, where
    both fall back to the primary). With ``direct_control``, the same load also runs with no proxy,
    on the primary and spread over the replicas (DIRECT_ROWS), in the same rounds.
    """

    key: str  # JSON key in bench/results/*.json
    cluster: str  # [clusters.<name>] in the dbproxy config
    title: str  # the table's heading
    reads_on: str  # "replicas" | "primary"
    label_prefix: str = ""  # row labels: "" -> "writer", "solo " -> "solo writer"
    direct_control: bool = False

    def target(self, name: str) -> str:
        """The CellRun target of endpoint ``name``: dbproxy-writer, dbproxy-solo-writer..."""
        return f"dbproxy-{name}" if self.cluster == "main" else f"dbproxy-{self.cluster}-{name}"

    @property
    def targets(self) -> list[str]:
        return [self.target(name) for name in ENDPOINT_NAMES]

    def direct_targets(self, clients: int) -> list[str]:
        """The control rows' CellRun targets (DIRECT_ROWS order), none without ``direct_control``."""
        return [direct_primary_target(clients), DIRECT_REPLICAS_TARGET] if self.direct_control else []

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
    direct_control=True,
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


def clients_each(counts: Sequence[int]) -> str:
    """The clients per direct-replicas pgbench in words: "8 clients each", or "8/7 clients"."""
    if len(set(counts)) == 1:
        return f"{counts[0]} clients each"
    return "/".join(map(str, counts)) + " clients"


@dataclass(frozen=True)
class DirectControl:
    """The control rows of a replica table: the same -S load straight to PostgreSQL, no proxy.

    ``primary``: all the clients on the primary; ``replicas``: one pgbench per replica, started
    together with ``replica_clients`` clients each, TPS summed. Their ratio, the spread factor, is
    what spreading the reads over the replicas does on this machine without any proxy.
    """

    primary: Cell
    replicas: Cell
    primary_target: str
    replica_clients: tuple[int, ...]

    @property
    def spread_factor(self) -> float | None:
        """direct replicas / direct primary TPS."""
        return ratio(self.replicas, self.primary)

    def target(self, row: str) -> str:
        return self.primary_target if row == "direct_primary" else DIRECT_REPLICAS_TARGET

    def cell(self, row: str) -> Cell:
        return self.primary if row == "direct_primary" else self.replicas

    def label(self, row: str) -> str:
        if row == "direct_primary":
            return "direct to the primary (no proxy)"
        n = len(self.replica_clients)
        replicas = "both replicas" if n == 2 else "the replica" if n == 1 else f"the {n} replicas"
        return f"direct to {replicas} (no proxy, {clients_each(self.replica_clients)})"

    def expected(self, row: str) -> str:
        return "primary" if row == "direct_primary" else "replicas"


def _shares(xacts: dict[str, int], roles: dict[str, str]) -> tuple[str, float | None, float | None]:
    """("node1 (replica) 50.1% · ...", primary share, replica share) from per-instance commit deltas."""
    total = sum(max(0, n) for n in xacts.values())
    if total == 0:
        return "no transactions counted", None, None
    ordered = sorted(xacts.items(), key=lambda item: (-item[1], item[0]))
    text = " · ".join(f"{node} ({roles.get(node, '?')}) {max(0, n) / total:.1%}" for node, n in ordered)
    primary = sum(max(0, n) for node, n in xacts.items() if roles.get(node) == "primary") / total
    return text, primary, 1.0 - primary


def _placement(
    xacts: dict[str, int], roles: dict[str, str], expected: str
) -> tuple[str, str, dict[str, object]]:
    """The "where the transactions ran" and "landed where expected" cells, and their JSON fields."""
    where, primary, replicas = _shares(xacts, roles)
    share = primary if expected == "primary" else replicas
    if share is None:
        landed = "unknown"
    else:
        landed = f"{'yes' if share >= LANDED_SHARE else '**NO**'}: {share:.1%} on the {expected}"
    return (
        where,
        landed,
        {
            "instance_xacts": xacts,
            "primary_share": primary,
            "replica_share": replicas,
            "expected_on": expected,
            "landed_as_expected": None if share is None else share >= LANDED_SHARE,
        },
    )


def _verdict(name: str, cell: Cell, writer: Cell, vs_writer: float | None, target_ratio: float) -> str:
    if name == "writer":
        return "baseline"
    if vs_writer is None:
        return "FAIL (no result)" if cell.runs or writer.runs else "n/a"
    return "PASS" if vs_writer >= target_ratio else "FAIL"


def _over_spread(vs_writer: float | None, direct: DirectControl) -> float | None:
    """endpoint/writer ÷ spread factor: the routing overhead with the hardware effect taken out."""
    spread = direct.spread_factor
    if vs_writer is None or spread is None or spread == 0:
        return None
    return vs_writer / spread


def build_endpoints_table(
    endpoint_set: EndpointSet,
    target_ratio: float,
    cells: dict[str, Cell],
    xacts: dict[str, dict[str, int]],
    roles: dict[str, str],
    direct: DirectControl | None = None,
) -> tuple[str, dict[str, dict[str, object]]]:
    """One endpoint table (TPS, ratio vs writer, PASS/FAIL, where the transactions ran) and its JSON.

    ``cells`` and ``xacts`` are keyed by endpoint name (writer, reader, split) and, with ``direct``,
    by DIRECT_ROWS too; ``xacts`` holds the xact_commit deltas per instance summed over the row's
    runs; ``roles`` maps an instance to "primary" or "replica". With ``direct``: its two rows below
    the endpoints, and next to the raw ratio and verdict, the ratio divided by the spread factor
    with its own verdict against the same target.
    """
    baseline = endpoint_set.label("writer")
    want = f"≥ {target_ratio:.2f}× {baseline}"
    adjusted_head = (
        f" | vs {baseline} ÷ spread factor | routing alone, hardware effect taken out ({want})"
        if direct is not None
        else ""
    )
    lines = [
        f"| endpoint | TPS | vs {baseline} | routing costs ≤ 10% TPS ({want}){adjusted_head} "
        "| where the transactions ran (pg_stat_database xact_commit Δ) | landed where expected |",
        "|---|--:|--:|---|" + ("--:|---|" if direct is not None else "") + "---|---|",
    ]
    derived: dict[str, dict[str, object]] = {}
    writer = cells["writer"]
    for name in ENDPOINT_NAMES:
        cell = cells[name]
        vs_writer = ratio(cell, writer)
        mark = _verdict(name, cell, writer, vs_writer, target_ratio)
        where, landed, placement = _placement(xacts.get(name, {}), roles, endpoint_set.expected(name))
        derived[name] = {
            "target_name": endpoint_set.target(name),
            "tps": cell.tps,
            "vs_writer": vs_writer,
            "target": f"{want}: {mark}" if name != "writer" else mark,
            **placement,
        }
        ratio_text = "1.00×" if name == "writer" and writer.tps else _fmt_ratio(vs_writer)
        adjusted = ""
        if direct is not None:
            over = _over_spread(vs_writer, direct) if name != "writer" else None
            over_mark = _verdict(name, cell, writer, over, target_ratio)
            derived[name]["vs_writer_over_spread"] = over
            derived[name]["target_over_spread"] = f"{want}: {over_mark}" if name != "writer" else over_mark
            adjusted = f" | {'—' if name == 'writer' else _fmt_ratio(over)} | {over_mark}"
        lines.append(
            f"| {endpoint_set.label(name)} | {cell.show()} | {ratio_text} | {mark}{adjusted} | {where} | {landed} |"
        )
    if direct is not None:
        for row in DIRECT_ROWS:
            line, derived[row] = _direct_row(row, direct, xacts.get(row, {}), roles)
            lines.append(line)
    return "\n".join(lines), derived


def _direct_row(
    row: str, direct: DirectControl, xacts: dict[str, int], roles: dict[str, str]
) -> tuple[str, dict[str, object]]:
    """One control row of the replica table (the spread factor in the adjusted-ratio column) and its JSON."""
    cell = direct.cell(row)
    where, landed, placement = _placement(xacts, roles, direct.expected(row))
    data: dict[str, object] = {"target_name": direct.target(row), "tps": cell.tps}
    if row == "direct_primary":
        spread = "spread baseline"
    else:
        spread = f"spread factor {_fmt_ratio(direct.spread_factor)}"
        data["clients_per_replica"] = list(direct.replica_clients)
        data["spread_factor"] = direct.spread_factor
    line = f"| {direct.label(row)} | {cell.show()} | — | control | {spread} | control | {where} | {landed} |"
    return line, data | placement


RESULTS_DIR = Path(__file__).resolve().parent / "results"


def save_results(prefix: str, data: dict[str, Any], text: str) -> Path:
    """Write `data` (JSON) and `text` (Markdown) as bench/results/<prefix>-<stamp> and <prefix>-latest;
    returns the stamped Markdown file."""
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    for name in (f"{prefix}-{stamp}", f"{prefix}-latest"):
        (RESULTS_DIR / f"{name}.json").write_text(json.dumps(data, indent=2, default=str))
        (RESULTS_DIR / f"{name}.md").write_text(text)
    return RESULTS_DIR / f"{prefix}-{stamp}.md"
