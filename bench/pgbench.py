"""The pgbench workloads of the benchmark, one run of one of them (or several pgbench at once, summed),
and parsing of its output."""

from __future__ import annotations

import re
import subprocess
import tempfile
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import IO, Any, TypeVar

from bench.cpu import CpuUsage
from bench.procs import clean_env, text_tail
from deploy.pgcluster import HOST, pg_binary


@dataclass(frozen=True)
class Workload:
    """One pgbench invocation pattern (a table row)."""

    key: str  # short name for --workload and JSON
    label: str  # row label in the table
    args: tuple[str, ...]
    target_ratio: float  # dbproxy/PgBouncer TPS the issue asks for
    prepared: bool = False


WORKLOADS: tuple[Workload, ...] = (
    Workload("simple", "`-S -M simple`", ("-S", "-M", "simple"), 0.7),
    Workload("prepared", "`-S -M prepared`", ("-S", "-M", "prepared"), 0.7, prepared=True),
    Workload("connect", "`-S -M simple -C`", ("-S", "-M", "simple", "-C"), 0.8),
)

# Issue 3: the same -S simple load on each of dbproxy's endpoints; target_ratio is endpoint/writer TPS
# ("routing must not cost more than 10% TPS versus the plain writer endpoint").
ENDPOINTS_WORKLOAD = Workload("endpoints", "`-S -M simple` per dbproxy endpoint", ("-S", "-M", "simple"), 0.9)


@dataclass(frozen=True)
class Endpoint:
    """Where pgbench connects and how it authenticates."""

    # direct | dbproxy | pgbouncer | dbproxy-writer | dbproxy-reader | dbproxy-split...; direct-primary-<N>,
    # direct-node<i> (the legs of direct-replicas): straight to one PostgreSQL instance
    name: str
    port: int
    user: str
    database: str
    password: str | None  # None: trust, no PGPASSWORD


@dataclass
class CellRun:
    """One pgbench run: its TPS, or why it has none."""

    target: str
    workload: str
    round: int
    tps: float | None = None
    transactions: int | None = None
    failed_transactions: int | None = None
    seconds: float = 0.0
    exit_code: int | None = None
    error: str | None = None
    argv: list[str] = field(default_factory=list)
    output_tail: str = ""
    cpu: CpuUsage | None = None  # how busy the machine was, and with what
    pooler_cpu_s: float | None = None  # CPU seconds the pooler's own process used during the run
    # Endpoint runs: pg_stat_database.xact_commit of the benchmark database, delta per instance
    # ("node0", "node1", ...) across the run: where its transactions really ran.
    instance_xacts: dict[str, int] | None = None
    # Several pgbench run at once and summed (run_pgbench_spread): each one's own run.
    parts: list[CellRun] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.error is None and self.tps is not None

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["cpu"] = self.cpu.to_json() if self.cpu is not None else None
        data["parts"] = [part.to_json() for part in self.parts]
        return data


_TPS_RE = re.compile(r"^tps = ([0-9.]+)", re.M)
_PROCESSED_RE = re.compile(r"^number of transactions actually processed: (\d+)", re.M)
_FAILED_RE = re.compile(r"^number of failed transactions: (\d+)", re.M)
_N = TypeVar("_N", int, float)


def pgbench_argv(endpoint: Endpoint, workload: Workload, clients: int, duration: float) -> list[str]:
    # -j must equal -c: pgbench 15 prepares with a blocking PQprepare per client, which can
    # deadlock through a transaction pooler when one thread serves several clients.
    return [
        pg_binary("pgbench"),
        "-h", HOST, "-p", str(endpoint.port), "-U", endpoint.user,
        "-n",  # no vacuum before the run (pointless, and a pooler may not route it)
        *workload.args,
        "-c", str(clients), "-j", str(clients),
        "-T", str(max(1, round(duration))),
        endpoint.database,
    ]  # fmt: skip


def split_clients(total: int, parts: int) -> list[int]:
    """``total`` clients over at most ``parts`` processes, as evenly as possible (16 over 2: [8, 8])."""
    shares = [total // parts + (1 if i < total % parts else 0) for i in range(parts)]
    return [n for n in shares if n > 0]


def run_pgbench(
    endpoint: Endpoint, workload: Workload, clients: int, duration: float, round_no: int
) -> CellRun:
    """Run one pgbench; never raises for pgbench's own failures (they go into ``error``)."""
    argv = pgbench_argv(endpoint, workload, clients, duration)
    (cell,) = _run_together([(endpoint, argv)], workload, duration, round_no)
    return cell


def run_pgbench_spread(
    target: str,
    legs: Sequence[tuple[Endpoint, int]],
    workload: Workload,
    duration: float,
    round_no: int,
) -> CellRun:
    """One pgbench per (endpoint, clients) leg, all started at once; their sum as one CellRun.

    The legs' own runs are kept in ``parts``; a failed leg fails the whole (see combine_runs).
    """
    started = [(endpoint, pgbench_argv(endpoint, workload, clients, duration)) for endpoint, clients in legs]
    return combine_runs(target, workload.key, round_no, _run_together(started, workload, duration, round_no))


def combine_runs(target: str, workload: str, round_no: int, parts: list[CellRun]) -> CellRun:
    """Concurrent runs as one: TPS and transactions summed, any part's error the whole's error.

    ``argv`` reads as the shell line that would start them together (``a & b``).
    """
    cell = CellRun(target, workload, round_no, parts=parts)
    cell.argv = [arg for i, part in enumerate(parts) for arg in (["&"] if i else []) + part.argv]
    cell.seconds = max((part.seconds for part in parts), default=0.0)
    # The first non-zero exit code (None: killed), else 0.
    cell.exit_code = next((part.exit_code for part in parts if part.exit_code != 0), 0)
    cell.tps = _sum_or_none([part.tps for part in parts])
    cell.transactions = _sum_or_none([part.transactions for part in parts])
    cell.failed_transactions = _sum_or_none([part.failed_transactions for part in parts])
    errors = [f"{part.target}: {part.error}" for part in parts if part.error is not None]
    cell.error = "; ".join(errors) if errors else None
    cell.output_tail = "\n".join(f"--- {part.target} ---\n{part.output_tail}" for part in parts)
    return cell


def _sum_or_none(values: list[_N | None]) -> _N | None:
    """The sum, or None if any value (or every value: an empty list) is missing."""
    if not values or any(value is None for value in values):
        return None
    return sum(value for value in values if value is not None)


class _PgbenchProcess:
    """One pgbench started in the background, its output in temporary files (no pipe to drain)."""

    def __init__(self, endpoint: Endpoint, argv: list[str], cell: CellRun) -> None:
        self.cell = cell
        self.stdout: IO[str] = tempfile.TemporaryFile("w+")
        self.stderr: IO[str] = tempfile.TemporaryFile("w+")
        env = clean_env({"PGPASSWORD": endpoint.password} if endpoint.password is not None else None)
        self.began = time.monotonic()
        self.proc = subprocess.Popen(
            argv, stdin=subprocess.DEVNULL, stdout=self.stdout, stderr=self.stderr, env=env
        )

    def finish(self, timeout: float) -> CellRun:
        """Wait until ``timeout`` s after the start (then kill it: it hung) and fill the CellRun."""
        cell = self.cell
        try:
            self.proc.wait(timeout=max(0.0, self.began + timeout - time.monotonic()))
        except subprocess.TimeoutExpired:
            self.kill()
            cell.error = f"pgbench hung: killed after {timeout:.0f}s"
        cell.seconds = time.monotonic() - self.began
        stdout, stderr = _read(self.stdout), _read(self.stderr)
        cell.output_tail = text_tail(stdout + stderr)
        if cell.error is None:
            cell.exit_code = self.proc.returncode
            _parse_output(cell, stdout)
        return cell

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    def close(self) -> None:
        self.kill()
        self.stdout.close()
        self.stderr.close()


def _run_together(
    started: Sequence[tuple[Endpoint, list[str]]], workload: Workload, duration: float, round_no: int
) -> list[CellRun]:
    """Start every (endpoint, argv) at once, wait for all; one CellRun each (named after its endpoint)."""
    timeout = duration + 60
    processes: list[_PgbenchProcess] = []
    try:
        for endpoint, argv in started:
            cell = CellRun(endpoint.name, workload.key, round_no, argv=argv)
            processes.append(_PgbenchProcess(endpoint, argv, cell))
        return [process.finish(timeout) for process in processes]
    finally:  # also on Ctrl-C or a failed start: no pgbench left behind
        for process in processes:
            process.close()


def _read(file: IO[str]) -> str:
    file.seek(0)
    return file.read()


def _parse_output(cell: CellRun, stdout: str) -> None:
    """TPS and transaction counts from pgbench's stdout, and ``error`` if the run is not a result."""
    if m := _TPS_RE.search(stdout):
        cell.tps = float(m.group(1))
    if m := _PROCESSED_RE.search(stdout):
        cell.transactions = int(m.group(1))
    if m := _FAILED_RE.search(stdout):
        cell.failed_transactions = int(m.group(1))
    if cell.exit_code != 0:
        cell.error = f"pgbench exit code {cell.exit_code}"
    elif cell.tps is None:
        cell.error = "no 'tps =' line in pgbench output"
    elif cell.failed_transactions:
        cell.error = f"{cell.failed_transactions} failed transactions"
    elif not cell.transactions:
        cell.error = "no transaction processed"
