"""Classification cost (issue 3): µs per statement for the split endpoint's classifier, cached and uncached.

Run from the repository root: `.venv/bin/python bench/classify_cost.py [--quick] [--json]`; bench/run.py
calls `measure()` too and puts the table in its report.

- `Classifier.classify`, cached: one Classifier, the text classified once before timing, so every
  timed call is an LRU hit (what a split endpoint pays for a statement text it has seen before,
  e.g. a prepared statement or a query without literals).
- `Classifier.classify`, uncached: a Classifier with `cache_size=0` (the same call path, every
  call a miss that parses and walks the text). Also, for the pgbench SELECT, unique texts (a
  different `aid` each time, as `pgbench -S -M simple` sends) through a default Classifier: a miss
  plus an LRU insertion / eviction, which is what the split endpoint runs of the benchmark pay.
- `session_effects` on the pgbench SELECT: per call (an ordinary statement is never parsed or
  cached there, only checked for stateful keywords); it runs on every query on every endpoint.

Each figure is the median over `repeats` timings of a `time.perf_counter` loop of `n` calls
(`n` calibrated so that one timing takes about `target_seconds`); the min is kept in the JSON.
GC stays enabled (the proxy runs with it). The machine's other load during the measurement is
recorded (see bench/cpu.py): on shared cores the numbers are upper bounds.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import statistics
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

# `python bench/classify_cost.py` puts bench/, not the repository root, on sys.path.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.cpu import sample, usage  # noqa: E402
from proxy.engines.postgres.classify import PgClassifier as Classifier  # noqa: E402
from proxy.engines.postgres.session_state import EMPTY as NO_EFFECTS  # noqa: E402
from proxy.engines.postgres.session_state import session_effects  # noqa: E402

PGBENCH_SELECT = "SELECT abalance FROM pgbench_accounts WHERE aid = {aid};"

# (label, SQL text, expected route): representative statements; the expected route guards the table
# against measuring a path that no longer classifies the way the label says.
STATEMENTS: tuple[tuple[str, str, str], ...] = (
    ("pgbench `-S` SELECT", PGBENCH_SELECT.format(aid=12345), "replica"),
    (
        "pgbench UPDATE",
        "UPDATE pgbench_accounts SET abalance = abalance + -2843 WHERE aid = 12345;",
        "primary",
    ),
    (
        "3-table join",
        "SELECT a.aid, a.abalance, t.tbalance, b.bbalance FROM pgbench_accounts a "
        "JOIN pgbench_branches b ON b.bid = a.bid JOIN pgbench_tellers t ON t.bid = b.bid "
        "WHERE a.aid = 12345 AND t.tid < 20 ORDER BY t.tid LIMIT 10;",
        "replica",
    ),
    (
        "CTE with DML",
        "WITH moved AS (UPDATE pgbench_accounts SET abalance = abalance + 1 WHERE aid = 12345 "
        "RETURNING aid, abalance) SELECT m.aid, m.abalance FROM moved m;",
        "primary",
    ),
    (
        "`SELECT ... FOR UPDATE`",
        "SELECT abalance FROM pgbench_accounts WHERE aid = 12345 FOR UPDATE;",
        "primary",
    ),
    ("`BEGIN`", "BEGIN;", "primary"),
)


@dataclass
class Timing:
    """µs per call: the median (shown) and the min over the repeats, and how many calls each timed."""

    median_us: float
    min_us: float
    calls_per_repeat: int
    repeats: int


@dataclass
class StatementCost:
    label: str
    sql: str
    route: str
    reason: str
    cached: Timing
    uncached: Timing


@dataclass
class ClassifyCost:
    statements: list[StatementCost]
    pgbench_unique_texts: Timing  # the pgbench SELECT with a new aid each call, default Classifier
    session_effects: Timing  # session_effects(pgbench SELECT), per call
    other_cores: float  # CPU used by processes outside `roots` during the measurement, in cores
    top_others: str
    seconds: float

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def _time_loop(fn: Callable[[str], object], texts: Sequence[str], n: int) -> float:
    """Seconds for n calls of fn over texts (cycled if len(texts) < n; a single text is the usual case)."""
    if len(texts) == 1:
        text = texts[0]
        started = time.perf_counter()
        for _ in range(n):
            fn(text)
        return time.perf_counter() - started
    started = time.perf_counter()
    for text in texts[:n]:
        fn(text)
    return time.perf_counter() - started


def time_calls(
    fn: Callable[[str], object],
    text: str,
    repeats: int,
    target_seconds: float,
    unique: Callable[[int], str] | None = None,
) -> Timing:
    """µs per `fn(text)` call; with `unique`, every call (calibration included) gets a new text `unique(i)`."""
    serial = 0

    def texts(n: int) -> list[str]:
        nonlocal serial
        if unique is None:
            return [text]
        batch = [unique(serial + i) for i in range(n)]
        serial += n
        return batch

    n = 10  # calibrate: about target_seconds per timing, at least 100 calls
    while True:
        elapsed = _time_loop(fn, texts(n), n)
        if elapsed >= target_seconds / 4 or n >= 10_000_000:
            n = max(100, int(n * target_seconds / max(elapsed, 1e-9)))
            break
        n *= 4
    per_call: list[float] = []
    for _ in range(repeats):
        batch = texts(n)
        gc.collect()
        per_call.append(_time_loop(fn, batch, n) / n * 1e6)
    return Timing(statistics.median(per_call), min(per_call), n, repeats)


def measure(
    repeats: int = 7, target_seconds: float = 0.1, roots: Iterable[int] | None = None
) -> ClassifyCost:
    """Time every statement of STATEMENTS, the unique-text case and session_effects (see the module doc)."""
    roots = list(roots) if roots is not None else [os.getpid()]
    before = sample(roots)
    began = time.monotonic()
    rows: list[StatementCost] = []
    for label, sql, expected in STATEMENTS:
        verdict = Classifier(cache_size=0).classify(sql)
        if verdict.route.value != expected:
            raise RuntimeError(
                f"{label}: classified {verdict.route.value} ({verdict.reason}), expected {expected}"
            )
        cached = Classifier()
        cached.classify(sql)
        cached_timing = time_calls(cached.classify, sql, repeats, target_seconds)
        if cached.misses != 1:
            raise RuntimeError(f"{label}: {cached.misses} cache misses in the cached timing")
        uncached = Classifier(cache_size=0)
        uncached_timing = time_calls(uncached.classify, sql, repeats, target_seconds)
        if uncached.hits:
            raise RuntimeError(f"{label}: cache hits in the uncached timing")
        rows.append(
            StatementCost(label, sql, verdict.route.value, verdict.reason, cached_timing, uncached_timing)
        )

    # The pgbench SELECT as pgbench -S -M simple sends it: a new literal each time, default cache.
    fresh = Classifier()
    unique = time_calls(
        fresh.classify,
        PGBENCH_SELECT.format(aid=1),
        repeats,
        target_seconds,
        unique=lambda i: PGBENCH_SELECT.format(aid=i),
    )
    if fresh.misses != 1:
        # Texts that differ only in literals share one verdict (the classifier's literal-shape cache).
        raise RuntimeError(f"unique literals: {fresh.misses} cache misses, expected one parse for the shape")

    select = PGBENCH_SELECT.format(aid=12345)
    if session_effects(select) is not NO_EFFECTS:
        raise RuntimeError("session_effects found effects in the pgbench SELECT")
    effects = time_calls(session_effects, select, repeats, target_seconds)

    seconds = time.monotonic() - began
    cpu = usage(before, sample(roots), seconds)
    return ClassifyCost(rows, unique, effects, cpu.other_cores, cpu.top_others, seconds)


def _us(value: float) -> str:
    return f"{value:.2f}" if value < 10 else f"{value:.1f}"


def _cell(timing: Timing) -> str:
    return f"{_us(timing.median_us)} ({_us(timing.min_us)})"


def build_table(cost: ClassifyCost) -> str:
    """The Markdown table: µs per call, median (min) over the repeats."""
    lines = [
        "| call | statement | verdict | cached µs, median (min) | uncached µs, median (min) |",
        "|---|---|---|--:|--:|",
    ]
    for row in cost.statements:
        lines.append(
            f"| `Classifier.classify` | {row.label} | {row.route} ({row.reason}) "
            f"| {_cell(row.cached)} | {_cell(row.uncached)} |"
        )
    lines.append(
        "| `Classifier.classify` | pgbench `-S` SELECT, a new `aid` per call (as `-M simple` sends it) "
        f"| replica (select) | {_cell(cost.pgbench_unique_texts)} (literal-shape cache) | — |"
    )
    lines.append(
        "| `session_effects` | pgbench `-S` SELECT | no session effects (keyword check, never parsed) "
        f"| — | {_cell(cost.session_effects)} per call |"
    )
    return "\n".join(lines)


def notes(cost: ClassifyCost) -> list[str]:
    return [
        f"Classification cost: µs per call, median (min) of {cost.session_effects.repeats} "
        "`time.perf_counter` loops per cell, in-process, GC on. Cached = one Classifier and a text it has "
        "seen (LRU hit); uncached = `Classifier(cache_size=0)`, a full parse and walk per call. "
        "`pgbench -S -M simple` through the split endpoint sends a new `aid` literal every time: texts "
        "that differ only in literals share one verdict (a cache keyed by the text with literals replaced "
        'for texts without comments, quoted identifiers, backslashes or dollar quotes), so the "new `aid` '
        'per call" row costs a regex, not a parse). `session_effects` runs on every query on every endpoint.',
        f"Other processes used {cost.other_cores:.2f} cores during the {cost.seconds:.0f} s of this "
        "measurement"
        + (f" [{cost.top_others}]" if cost.top_others else "")
        + (
            ": shared cores, the µs are upper bounds (see the min in the JSON)."
            if cost.other_cores >= 0.15
            else "."
        ),
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bench/classify_cost.py", description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="7 repeats of ~0.05 s instead of 11 of ~0.1 s")
    parser.add_argument("--json", action="store_true", help="print the raw numbers as JSON too")
    args = parser.parse_args(argv)
    cost = measure(7, 0.05) if args.quick else measure(11, 0.1)
    print(build_table(cost))
    print()
    print("".join(f"- {note}\n" for note in notes(cost)), end="")
    if args.json:
        print(json.dumps(cost.to_json(), indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
