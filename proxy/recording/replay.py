"""`dbproxy replay FILE --target HOST:PORT`: play a recording back with its concurrency and pacing, report latencies.

Each recorded client session gets its own connection (asyncpg for PostgreSQL recordings, aiomysql
for MySQL ones) opened when the session opened in the recording, and runs its statements in
order, each when its recorded offset divided by --speed has passed (plan.py). --clients N caps
the sessions connected at once (default: as many as the recording had). At the end: sessions,
statements, transactions, errors (the first distinct messages), latency percentiles, and a JSON
form of the same with --json.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TextIO

from ..config import Address
from .clients import connect
from .format import read_recording
from .plan import SessionScript, build_scripts, due, peak_concurrency, percentile, progress_bar


@dataclass
class Report:
    sessions: int = 0
    statements: int = 0
    transactions: int = 0
    errors: int = 0
    skipped: int = 0           # prepared executions that could not be replayed (no values recorded, ...)
    connect_errors: int = 0
    elapsed: float = 0.0
    recorded_seconds: float = 0.0
    latency_ms: dict[str, float] = field(default_factory=dict)
    first_errors: list[str] = field(default_factory=list)
    skipped_reasons: dict[str, int] = field(default_factory=dict)


@dataclass
class _Progress:
    total: int
    done: int = 0
    errors: int = 0
    latencies: list[float] = field(default_factory=list)
    messages: Counter[str] = field(default_factory=Counter)
    skipped: Counter[str] = field(default_factory=Counter)


async def replay(path: Path, target: Address, *, speed: float = 1.0, clients: int | None = None,
                 user: str | None = None, password: str | None = None, database: str | None = None,
                 progress: TextIO | None = None) -> Report:
    header, events = read_recording(path)
    scripts = build_scripts(events)
    total = sum(len(s.steps) for s in scripts)
    state = _Progress(total)
    report = Report(sessions=len(scripts), recorded_seconds=max((s.steps[-1].at for s in scripts), default=0.0))
    slots = asyncio.Semaphore(clients or max(1, peak_concurrency(scripts)))
    started = time.monotonic()

    async def session(script: SessionScript) -> None:
        await _sleep_until(started + due(script.opened_at, speed))
        async with slots:
            try:
                client = await connect(header.engine, target, user or script.user, password,
                                       database or script.database)
            except Exception as exc:  # noqa: BLE001 - any driver error is the target's answer
                report.connect_errors += 1
                state.errors += len(script.steps)
                state.done += len(script.steps)
                state.messages[f"connect: {exc}"] += 1
                return
            try:
                for step in script.steps:
                    await _sleep_until(started + due(step.at, speed))
                    if step.skip:
                        state.skipped[step.skip] += 1
                        state.done += 1
                        continue
                    began = time.monotonic()
                    try:
                        if step.prepared is not None:
                            p = step.prepared
                            await client.execute(p.query, p.types, p.formats, p.values, p.result_formats)
                        else:
                            await client.run(step.sql)
                    except Exception as exc:  # noqa: BLE001
                        state.errors += 1
                        state.messages[str(exc).splitlines()[0][:200]] += 1
                    else:
                        state.latencies.append(time.monotonic() - began)
                        report.transactions += step.starts_transaction
                    state.done += 1
            finally:
                try:
                    await client.close()
                except Exception:  # noqa: BLE001 - the replay is over for this session either way
                    pass

    ticker = asyncio.get_running_loop().create_task(_show_progress(state, progress)) if progress else None
    await asyncio.gather(*(session(s) for s in scripts))
    if ticker is not None:
        ticker.cancel()
        assert progress is not None
        progress.write("\r" + progress_bar(state.done, state.total, state.errors) + "\n")
    report.elapsed = round(time.monotonic() - started, 3)
    report.statements = state.done
    report.errors = state.errors
    values = sorted(state.latencies)
    report.latency_ms = {name: round(percentile(values, p) * 1000, 3)
                         for name, p in (("p50", 50), ("p90", 90), ("p99", 99), ("max", 100))}
    report.first_errors = [f"{count} x {message}" for message, count in state.messages.most_common(5)]
    report.skipped = sum(state.skipped.values())
    report.skipped_reasons = dict(state.skipped)
    return report


async def _sleep_until(deadline: float) -> None:
    delay = deadline - time.monotonic()
    if delay > 0:
        await asyncio.sleep(delay)


async def _show_progress(state: _Progress, out: TextIO) -> None:
    tty = out.isatty()
    while True:
        await asyncio.sleep(0.2 if tty else 5.0)
        out.write(("\r" if tty else "") + progress_bar(state.done, state.total, state.errors) + ("" if tty else "\n"))
        out.flush()


def format_report(report: Report) -> str:
    lat = report.latency_ms
    lines = [f"sessions: {report.sessions}   statements: {report.statements}   transactions: {report.transactions}",
             f"elapsed: {report.elapsed:g}s (recorded: {report.recorded_seconds:g}s)",
             f"errors: {report.errors} (connections refused: {report.connect_errors})",
             f"latency ms: p50 {lat.get('p50', 0):g}  p90 {lat.get('p90', 0):g}  p99 {lat.get('p99', 0):g}  "
             f"max {lat.get('max', 0):g}"]
    lines += [f"  {line}" for line in report.first_errors]
    if report.skipped:
        lines.append(f"skipped: {report.skipped} prepared execution(s) not replayable")
        lines += [f"  {count} x {reason}" for reason, count in report.skipped_reasons.items()]
    return "\n".join(lines)


def main(file: str, target: str, speed: float, clients: int | None, user: str | None, password: str | None,
         database: str | None, as_json: bool, quiet: bool, out: TextIO = sys.stdout) -> Report:
    """The CLI's replay (raises RecordingError, ValueError for a bad target, OSError)."""
    address = Address.parse(target)
    report = asyncio.run(replay(Path(file), address, speed=speed, clients=clients, user=user, password=password,
                                database=database, progress=None if quiet else sys.stderr))
    out.write((json.dumps(asdict(report)) if as_json else format_report(report)) + "\n")
    return report

