"""The pgbench workloads of the benchmark, one run of one of them, and parsing of its output."""

from __future__ import annotations

import re
import subprocess
import time
from dataclasses import asdict, dataclass, field
from typing import Any

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

    name: str  # direct | dbproxy | pgbouncer | dbproxy-writer | dbproxy-reader | dbproxy-split
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
    # Endpoint runs: pg_stat_database.xact_commit of the benchmark database, delta per instance
    # ("node0", "node1", ...) across the run: where its transactions really ran.
    instance_xacts: dict[str, int] | None = None

    @property
    def ok(self) -> bool:
        return self.error is None and self.tps is not None

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["cpu"] = self.cpu.to_json() if self.cpu is not None else None
        return data


_TPS_RE = re.compile(r"^tps = ([0-9.]+)", re.M)
_PROCESSED_RE = re.compile(r"^number of transactions actually processed: (\d+)", re.M)
_FAILED_RE = re.compile(r"^number of failed transactions: (\d+)", re.M)


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


def run_pgbench(
    endpoint: Endpoint, workload: Workload, clients: int, duration: float, round_no: int
) -> CellRun:
    """Run one pgbench; never raises for pgbench's own failures (they go into ``error``)."""
    argv = pgbench_argv(endpoint, workload, clients, duration)
    cell = CellRun(endpoint.name, workload.key, round_no, argv=argv)
    env = clean_env({"PGPASSWORD": endpoint.password} if endpoint.password is not None else None)
    began = time.monotonic()
    timeout = duration + 60
    try:
        res = subprocess.run(
            argv, capture_output=True, text=True, env=env, timeout=timeout, stdin=subprocess.DEVNULL
        )
    except subprocess.TimeoutExpired as exc:
        cell.seconds = time.monotonic() - began
        text = "".join(
            part.decode(errors="replace") if isinstance(part, bytes) else part
            for part in (exc.stdout, exc.stderr)
            if part
        )
        cell.error = f"pgbench hung: killed after {timeout:.0f}s"
        cell.output_tail = text_tail(text)
        return cell
    cell.seconds = time.monotonic() - began
    cell.exit_code = res.returncode
    out = res.stdout + res.stderr
    cell.output_tail = text_tail(out)
    if m := _TPS_RE.search(res.stdout):
        cell.tps = float(m.group(1))
    if m := _PROCESSED_RE.search(res.stdout):
        cell.transactions = int(m.group(1))
    if m := _FAILED_RE.search(res.stdout):
        cell.failed_transactions = int(m.group(1))
    if res.returncode != 0:
        cell.error = f"pgbench exit code {res.returncode}"
    elif cell.tps is None:
        cell.error = "no 'tps =' line in pgbench output"
    elif cell.failed_transactions:
        cell.error = f"{cell.failed_transactions} failed transactions"
    elif not cell.transactions:
        cell.error = "no transaction processed"
    return cell
