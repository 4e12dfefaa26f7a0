"""Replay planning, sans-IO: a recording's events as one script per client session, percentiles, the progress bar.

A session's script keeps its statements in order with their recorded offsets; the replay runs
each script on its own connection and waits, before each statement, until its offset divided by
`speed` has passed since the replay started (never earlier: a slow target stretches the replay,
it does not reorder a session).
"""

from __future__ import annotations

import base64
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Prepared:
    """A recorded prepared execution with its values (an "x" event of a record_parameters recording)."""

    query: bytes
    types: tuple[int, ...]
    formats: tuple[int, ...]
    values: tuple[bytes | None, ...]
    result_formats: tuple[int, ...]


@dataclass(frozen=True)
class Step:
    at: float                  # seconds since the recording started
    sql: str
    starts_transaction: bool
    prepared: Prepared | None = None
    skip: str = ""             # why this step cannot be replayed (it is counted, not run)


def _value(value: Any) -> bytes | None:
    if value is None:
        return None
    if isinstance(value, dict):
        return base64.b64decode(str(value.get("b", "")))
    return str(value).encode("utf-8")


def with_literals(sql: str, values: list[str]) -> str:
    """A MySQL statement text with its `?` placeholders (the lexer's, not those in strings or comments) replaced."""
    from ..engines.mysql.lexer import TokenKind, tokenize

    out, last, it = [], 0, iter(values)
    for token in tokenize(sql):
        if token.kind is TokenKind.PARAM:
            out += [sql[last:token.start], next(it, "NULL")]
            last = token.end
    return "".join(out) + sql[last:]


def execution_step(event: dict[str, Any], at: float) -> Step:
    """The step of an "x" event: replayable with its values, or with none when it had none; else skipped."""
    query, starts = event.get("q"), bool(event.get("n"))
    if "l" in event:   # MySQL: the values as SQL literals, in place of the placeholders
        return Step(at, with_literals(str(query), [str(v) for v in event["l"]]), starts)
    if query is None:
        return Step(at, "", starts, skip="prepared before the recording started")
    values = event.get("p")
    if values is None:
        if event.get("np"):
            return Step(at, str(query), starts, skip="parameters not recorded (record_parameters = false)")
        values = []
    formats = event.get("pf") or [0] * len(values)
    prepared = Prepared(str(query).encode("utf-8"), tuple(int(t) for t in event.get("pt") or ()),
                        tuple(int(f) for f in formats), tuple(_value(v) for v in values),
                        tuple(int(f) for f in event.get("rf") or ()))
    return Step(at, str(query), starts, prepared)


@dataclass
class SessionScript:
    sid: int
    user: str
    database: str
    opened_at: float
    steps: list[Step] = field(default_factory=list)
    closed_at: float | None = None


def build_scripts(events: Iterable[dict[str, Any]]) -> list[SessionScript]:
    """One script per recorded session, by the time it opened (events of unknown kinds are skipped)."""
    scripts: dict[int, SessionScript] = {}
    for event in events:
        kind, sid, at = event.get("e"), int(event.get("s", 0)), float(event.get("t", 0.0))
        script = scripts.get(sid)
        if kind == "open" or script is None:
            if kind != "open" and kind != "q" and kind != "x":
                continue
            script = scripts[sid] = SessionScript(sid, str(event.get("u", "")), str(event.get("d", "")), at)
        if kind == "q":
            script.steps.append(Step(at, str(event.get("q", "")), bool(event.get("n"))))
        elif kind == "x":
            script.steps.append(execution_step(event, at))
        elif kind == "close":
            script.closed_at = at
    return sorted((s for s in scripts.values() if s.steps), key=lambda s: (s.opened_at, s.sid))


def due(at: float, speed: float) -> float:
    """Seconds after the replay's start at which an event recorded at `at` is due."""
    return at / speed


def peak_concurrency(scripts: Sequence[SessionScript]) -> int:
    """The most sessions open at once in the recording (a session lasts from its opening to its last event)."""
    edges = []
    for script in scripts:
        end = script.closed_at if script.closed_at is not None else script.steps[-1].at
        edges += [(script.opened_at, 1), (end, -1)]
    peak = current = 0
    for _, change in sorted(edges, key=lambda e: (e[0], -e[1])):
        current += change
        peak = max(peak, current)
    return peak


def percentile(sorted_values: Sequence[float], p: float) -> float:
    """The p-th percentile (nearest rank) of already sorted values; 0 for none."""
    if not sorted_values:
        return 0.0
    rank = max(1, math.ceil(p / 100 * len(sorted_values)))
    return sorted_values[min(rank, len(sorted_values)) - 1]


def progress_bar(done: int, total: int, errors: int, width: int = 30) -> str:
    fraction = done / total if total else 1.0
    filled = int(fraction * width)
    return f"[{'#' * filled}{'.' * (width - filled)}] {fraction:4.0%} {done}/{total} statements, {errors} errors"
