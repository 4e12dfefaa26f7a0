"""MySQL benchmark: sysbench oltp_point_select straight to MariaDB vs through dbproxy, and oltp_read_write.

Run from the repository root: `.venv/bin/python -m bench.sysbench [--quick] [--json PATH] [--profile]`
(or `.venv/bin/python bench/run.py --mysql`, after the PostgreSQL benchmark). Everything (a MariaDB
primary, optionally GTID replicas, from deploy/mysqlcluster.py, and dbproxy with one MySQL cluster and
its writer endpoint in transaction mode) runs in a temporary directory on free ports and is removed at
the end, also on Ctrl-C or error. sysbench 1.0 (Debian's `sysbench` package, libmariadb) must be
installed.

The workloads, `--threads 16`, rounds alternating direct and dbproxy (order rotated per round, median
kept):
- `oltp_point_select` with server-side prepared statements (`--db-ps-mode=auto`, sysbench's default:
  COM_STMT_PREPARE once per thread, then COM_STMT_EXECUTE per query) and without them
  (`--db-ps-mode=disable`: a COM_QUERY per query), direct vs dbproxy; target dbproxy/direct ≥ 0.6;
- `oltp_read_write` (BEGIN, 10 point selects, 4 range selects, 2 updates, a delete and an insert,
  COMMIT per transaction) through dbproxy, and direct as the reference; target 0 errors.
Per run: QPS, TPS, sysbench's "ignored errors" and "reconnects", latency p95, and dbproxy's own CPU
(user + system, from /proc) per transaction.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, replace
from datetime import datetime
from pathlib import Path
from types import FrameType
from typing import Any, NoReturn

# `python bench/sysbench.py` puts bench/, not the repository root, on sys.path.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import python_relay, tcp_forwarder
from bench.cpu import sample, usage
from bench.pgbench import CellRun
from bench.procs import BenchError, Service, clean_env, git_version, run_checked, text_tail
from bench.report import Cell, pooler_cpu_us, ratio
from bench.services import ensure_py_spy
from deploy.mysqlcluster import APP_DB, APP_PASSWORD, APP_USER, HOST, MysqlCluster, MysqlClusterError
from deploy.pgcluster import free_ports

REPO_ROOT = Path(__file__).resolve().parent.parent
SYSBENCH = "sysbench"
CLUSTER_NAME = "my"
TARGETS = ("direct", "dbproxy", "haproxy", "relay")
FLOORS = ("haproxy", "relay")   # proxies that only forward bytes: C (HAProxy) and Python (bench/python_relay.py)
# HAProxy (bench/tcp_forwarder.py) runs the point selects only: the floor of a proxy's cost on this machine.
POINT_TARGETS = TARGETS
POINT_SELECT_TARGET = 0.6  # dbproxy/direct QPS the issue asks for
# py-spy samples per second under --profile: with --native it stops dbproxy for every sample.
PROFILE_RATE = 150


@dataclass(frozen=True)
class SysbenchWorkload:
    """One sysbench invocation pattern (a table row) and the targets it runs against."""

    key: str  # short name for --workload and JSON
    label: str  # row label in the table
    script: str  # sysbench's Lua test (/usr/share/sysbench/<script>.lua)
    args: tuple[str, ...]
    targets: tuple[str, ...] = ("direct", "dbproxy")
    target_ratio: float | None = None  # dbproxy/direct QPS asked for; None: the target is 0 errors


WORKLOADS: tuple[SysbenchWorkload, ...] = (
    SysbenchWorkload(
        "point_ps",
        "`oltp_point_select` prepared (`--db-ps-mode=auto`)",
        "oltp_point_select",
        ("--db-ps-mode=auto",),
        POINT_TARGETS,
        target_ratio=POINT_SELECT_TARGET,
    ),
    SysbenchWorkload(
        "point_text",
        "`oltp_point_select` text (`--db-ps-mode=disable`)",
        "oltp_point_select",
        ("--db-ps-mode=disable",),
        POINT_TARGETS,
        target_ratio=POINT_SELECT_TARGET,
    ),
    SysbenchWorkload(
        "read_write",
        "`oltp_read_write` prepared (`--db-ps-mode=auto`)",
        "oltp_read_write",
        ("--db-ps-mode=auto",),
    ),
)
WORKLOAD_KEYS = tuple(w.key for w in WORKLOADS)


@dataclass(frozen=True)
class MysqlEndpoint:
    """Where sysbench connects and how it logs in (the same user and password at both targets)."""

    name: str  # direct | dbproxy | haproxy | relay
    port: int
    user: str = APP_USER
    password: str = APP_PASSWORD
    database: str = APP_DB


@dataclass
class SysbenchRun(CellRun):
    """One sysbench run. ``tps`` / ``transactions`` are sysbench's transactions (events); the rest its
    queries, ignored errors, reconnects and 95th percentile latency."""

    qps: float | None = None
    queries: int | None = None
    ignored_errors: int | None = None
    reconnects: int | None = None
    latency_p95_ms: float | None = None
    # The ignored errors by "errno message" (sysbench logs each at --verbosity=5), e.g. "1213 Deadlock found...".
    ignored_by_error: dict[str, int] = field(default_factory=dict)
    pooler_system_s: float | None = None  # the kernel's part of pooler_cpu_s (system time)


_TRANSACTIONS_RE = re.compile(r"^\s*transactions:\s+(\d+)\s+\(([0-9.]+) per sec\.\)", re.M)
_QUERIES_RE = re.compile(r"^\s*queries:\s+(\d+)\s+\(([0-9.]+) per sec\.\)", re.M)
_IGNORED_RE = re.compile(r"^\s*ignored errors:\s+(\d+)", re.M)
_RECONNECTS_RE = re.compile(r"^\s*reconnects:\s+(\d+)", re.M)
_P95_RE = re.compile(r"^\s*95th percentile:\s+([0-9.]+)", re.M)
_FATAL_RE = re.compile(r"^FATAL: .*$", re.M)
_IGNORING_RE = re.compile(r"^DEBUG: Ignoring error (\d+) (.*?),? *$", re.M)


def log(message: str) -> None:
    print(f"bench: {message}", file=sys.stderr, flush=True)


# ------------------------------------------------------------------ the MySQL twins of bench/services.py


def mysql_env() -> dict[str, str]:
    """clean_env without MYSQL*/MARIADB* variables either (MYSQL_PWD, MYSQL_HOST... change what clients do)."""
    return {k: v for k, v in clean_env().items() if not k.startswith(("MYSQL", "MARIADB"))}


def mysql_dbproxy_config(
    instances: Sequence[int], writer_port: int, user: str, password: str, pool_size: int
) -> str:
    """A dbproxy TOML config (SPEC §2): one MySQL cluster, its writer endpoint, transaction pooling.

    The twin of bench.services.dbproxy_config (engine postgres, md5): mysql_native_password client
    auth; the proxy user's password is also the server password (the servers know ``user`` too).
    """
    addrs = ", ".join(f'"{HOST}:{port}"' for port in instances)
    return f"""\
# Written by bench/sysbench.py for one benchmark run.

[server]
log_format       = "text"
log_level        = "info"
shutdown_timeout = "2s"

[[users]]
name     = "{user}"
password = "{password}"

[clusters.{CLUSTER_NAME}]
engine      = "mysql"
instances   = [{addrs}]
client_auth = "mysql_native_password"

[clusters.{CLUSTER_NAME}.pool]
mode                   = "transaction"
max_server_connections = {pool_size}
min_idle               = 0
max_client_connections = 10000
prepared_statements    = true

[[clusters.{CLUSTER_NAME}.endpoints]]
name   = "writer"
listen = "{HOST}:{writer_port}"
role   = "writer"
"""


def mysql_can_query(endpoint: MysqlEndpoint) -> bool:
    """True if `SELECT 1` works at ``endpoint`` (the twin of bench.services.can_query, with the mariadb CLI)."""
    argv = [
        "mariadb", "--no-defaults", "--batch", "--skip-column-names", "--connect-timeout=3", "--protocol=TCP",
        "-h", HOST, "-P", str(endpoint.port), "-u", endpoint.user, f"--password={endpoint.password}",
        "-D", endpoint.database, "-e", "SELECT 1",
    ]  # fmt: skip
    try:
        res = subprocess.run(
            argv, capture_output=True, text=True, env=mysql_env(), timeout=10, stdin=subprocess.DEVNULL
        )
    except (subprocess.TimeoutExpired, OSError):
        return False
    return res.returncode == 0 and res.stdout.strip() == "1"


def start_dbproxy_mysql(workdir: Path, instances: Sequence[int], writer_port: int, pool_size: int) -> Service:
    """Write the config, start `python -m proxy run`, wait until a query works through the writer endpoint.

    The twin of bench.services.start_dbproxy (whose config and readiness check are PostgreSQL's).
    """
    workdir.mkdir(parents=True, exist_ok=True)
    config = workdir / "dbproxy.toml"
    config.write_text(mysql_dbproxy_config(instances, writer_port, APP_USER, APP_PASSWORD, pool_size))
    service = Service(
        "dbproxy",
        [sys.executable, "-m", "proxy", "run", "--config", str(config)],
        workdir / "dbproxy.log",
        cwd=REPO_ROOT,
        env={"PYTHONUNBUFFERED": "1"},
    )
    service.start()
    endpoint = MysqlEndpoint("dbproxy", writer_port)
    service.wait_ready(HOST, writer_port, check=lambda: mysql_can_query(endpoint))
    return service


# ----------------------------------------------------------------------------------- sysbench runs


def sysbench_argv(
    endpoint: MysqlEndpoint,
    script: str,
    args: Sequence[str],
    tables: int,
    table_size: int,
    threads: int,
    command: str = "run",
    duration: float | None = None,
) -> list[str]:
    argv = [
        SYSBENCH, script,
        f"--mysql-host={HOST}", f"--mysql-port={endpoint.port}", f"--mysql-user={endpoint.user}",
        f"--mysql-password={endpoint.password}", f"--mysql-db={endpoint.database}",
        f"--tables={tables}", f"--table-size={table_size}", f"--threads={threads}",
        "--verbosity=5",  # debug: one "Ignoring error <errno> <message>" line per ignored error
        *args,
    ]  # fmt: skip
    if duration is not None:
        argv += [f"--time={max(1, round(duration))}", "--events=0"]
    return [*argv, command]


def run_sysbench(
    endpoint: MysqlEndpoint,
    workload: SysbenchWorkload,
    settings: argparse.Namespace,
    duration: float,
    round_no: int,
) -> SysbenchRun:
    """One sysbench run; never raises for sysbench's own failures (they go into ``error``)."""
    argv = sysbench_argv(
        endpoint,
        workload.script,
        workload.args,
        settings.tables,
        settings.table_size,
        settings.threads,
        duration=duration,
    )
    cell = SysbenchRun(endpoint.name, workload.key, round_no, argv=argv)
    timeout = duration + 60
    began = time.monotonic()
    try:
        res = subprocess.run(
            argv, capture_output=True, text=True, env=mysql_env(), timeout=timeout, stdin=subprocess.DEVNULL
        )
    except subprocess.TimeoutExpired as exc:
        cell.seconds = time.monotonic() - began
        out = exc.stdout.decode(errors="replace") if isinstance(exc.stdout, bytes) else (exc.stdout or "")
        cell.output_tail = text_tail(out)
        cell.error = f"sysbench hung: killed after {timeout:.0f}s"
        return cell
    cell.seconds = time.monotonic() - began
    cell.exit_code = res.returncode
    cell.output_tail = text_tail(res.stdout + res.stderr, 30)
    parse_sysbench(cell, res.stdout + res.stderr)
    return cell


def parse_sysbench(cell: SysbenchRun, output: str) -> None:
    """Counts and rates from sysbench 1.0's report, and ``error`` if the run is not a result."""
    if m := _TRANSACTIONS_RE.search(output):
        cell.transactions, cell.tps = int(m.group(1)), float(m.group(2))
    if m := _QUERIES_RE.search(output):
        cell.queries, cell.qps = int(m.group(1)), float(m.group(2))
    if m := _IGNORED_RE.search(output):
        cell.ignored_errors = int(m.group(1))
    if m := _RECONNECTS_RE.search(output):
        cell.reconnects = int(m.group(1))
    if m := _P95_RE.search(output):
        cell.latency_p95_ms = float(m.group(1))
    cell.ignored_by_error = dict(
        Counter(f"{errno} {message}" for errno, message in _IGNORING_RE.findall(output))
    )
    fatal = _FATAL_RE.findall(output)
    if cell.exit_code != 0:
        cell.error = f"sysbench exit code {cell.exit_code}" + (f": {fatal[0]}" if fatal else "")
    elif fatal:
        cell.error = fatal[0]
    elif cell.tps is None or cell.qps is None:
        cell.error = "no 'transactions:' / 'queries:' line in sysbench output"
    elif not cell.transactions:
        cell.error = "no transaction processed"


def user_system_seconds(pid: int) -> tuple[float, float] | None:
    """(user, system) CPU seconds of one process so far, all threads (bench.cpu.process_seconds, split);
    None if it is gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    tick = os.sysconf("SC_CLK_TCK")
    return int(fields[11]) / tick, int(fields[12]) / tick


# ----------------------------------------------------------------------------------------- medians


def median_cell(runs: Sequence[SysbenchRun], workload: str, target: str, attr: str) -> Cell:
    """bench.report.summarize for any numeric field of the successful runs (qps, tps, latency_p95_ms)."""
    mine = [r for r in runs if r.workload == workload and r.target == target]
    good = [v for r in mine if r.ok and (v := getattr(r, attr)) is not None]
    return Cell(tps=statistics.median(good) if good else None, runs=len(mine), failed=len(mine) - len(good))


def error_counts(runs: Sequence[SysbenchRun], workload: str, target: str) -> dict[str, Any]:
    """Over every run of (workload, target): sysbench's ignored errors (also by errno and message),
    reconnects, and failed runs."""
    mine = [r for r in runs if r.workload == workload and r.target == target]
    messages: Counter[str] = Counter()
    for r in mine:
        messages.update(r.ignored_by_error)
    by_errno: Counter[str] = Counter()
    for message, n in messages.items():
        by_errno[message.split(" ", 1)[0]] += n
    return {
        "ignored_errors": sum(r.ignored_errors or 0 for r in mine),
        "ignored_by_errno": dict(by_errno),
        "ignored_messages": dict(messages),
        "reconnects": sum(r.reconnects or 0 for r in mine),
        "failed_runs": sum(1 for r in mine if not r.ok),
        "runs": len(mine),
    }


def _fmt(value: float | None, spec: str = ",.0f") -> str:
    return "—" if value is None else format(value, spec)


def _fmt_ratio(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.2f}×"


def _errors_text(counts: dict[str, Any]) -> str:
    if not counts["runs"]:
        return "—"
    text = f"{counts['ignored_errors']} / {counts['reconnects']}"
    if counts["ignored_by_errno"]:
        text += (
            " (" + ", ".join(f"{errno}×{n}" for errno, n in sorted(counts["ignored_by_errno"].items())) + ")"
        )
    return text + (
        f" ({counts['failed_runs']}/{counts['runs']} runs failed)" if counts["failed_runs"] else ""
    )


def clean(counts: dict[str, Any]) -> bool:
    return counts["runs"] > 0 and not (
        counts["ignored_errors"] or counts["reconnects"] or counts["failed_runs"]
    )


def build_table(
    workloads: Sequence[SysbenchWorkload], runs: Sequence[SysbenchRun]
) -> tuple[str, dict[str, dict[str, Any]]]:
    """The Markdown table and, per workload, the medians, ratio, error counts and verdict (for the JSON)."""
    lines = [
        "| workload | direct QPS | dbproxy QPS | dbproxy/direct | HAProxy tcp QPS | HAProxy/direct "
        "| uvloop relay QPS | relay/direct | dbproxy TPS "
        "| errors / reconnects (direct · dbproxy) | p95 ms (direct · dbproxy) "
        "| CPU µs/txn (system): dbproxy · HAProxy · relay | target |",
        "|---|--:|--:|--:|--:|--:|--:|--:|--:|---|---|--:|---|",
    ]
    derived: dict[str, dict[str, Any]] = {}
    for w in workloads:
        qps = {t: median_cell(runs, w.key, t, "qps") for t in TARGETS}
        tps = {t: median_cell(runs, w.key, t, "tps") for t in TARGETS}
        p95 = {t: median_cell(runs, w.key, t, "latency_p95_ms") for t in TARGETS}
        errors = {t: error_counts(runs, w.key, t) for t in TARGETS}
        vs_direct = ratio(qps["dbproxy"], qps["direct"])
        floors = {t: ratio(qps[t], qps["direct"]) if t in w.targets else None for t in FLOORS}
        floor = floors["haproxy"]
        cpu_us = {t: pooler_cpu_us(list(runs), w.key, t) for t in ("dbproxy", *FLOORS)}
        system_us = {t: _system_us(runs, w.key, t) for t in ("dbproxy", *FLOORS)}
        if w.target_ratio is not None:
            want = f"≥ {w.target_ratio:.1f}× direct"
            mark = (
                "FAIL (no result)" if vs_direct is None else "PASS" if vs_direct >= w.target_ratio else "FAIL"
            )
        else:
            want = "0 errors through dbproxy"
            mark = "PASS" if clean(errors["dbproxy"]) else "FAIL"
        derived[w.key] = {
            "median_qps": {t: c.tps for t, c in qps.items()},
            "median_tps": {t: c.tps for t, c in tps.items()},
            "median_latency_p95_ms": {t: c.tps for t, c in p95.items()},
            "errors": errors,
            "dbproxy_vs_direct": vs_direct,
            "haproxy_vs_direct": floor,
            "dbproxy_cpu_us_per_transaction": cpu_us["dbproxy"],
            "dbproxy_system_us_per_transaction": system_us["dbproxy"],
            "haproxy_cpu_us_per_transaction": cpu_us["haproxy"],
            "haproxy_system_us_per_transaction": system_us["haproxy"],
            "relay_vs_direct": floors["relay"],
            "relay_cpu_us_per_transaction": cpu_us["relay"],
            "relay_system_us_per_transaction": system_us["relay"],
            "target": f"{want}: {mark}",
        }
        floor_cpu = "".join(f" · {_fmt(cpu_us[t])} ({_fmt(system_us[t])})" if t in w.targets else " · —"
                            for t in FLOORS)
        lines.append(
            f"| {w.label} | {_show(qps['direct'])} | {_show(qps['dbproxy'])} | {_fmt_ratio(vs_direct)} "
            f"| {_show(qps['haproxy'])} | {_fmt_ratio(floor) if floor is not None else '—'} "
            f"| {_show(qps['relay'])} | {_fmt_ratio(floors['relay']) if floors['relay'] is not None else '—'} "
            f"| {_show(tps['dbproxy'])} | {_errors_text(errors['direct'])} · {_errors_text(errors['dbproxy'])} "
            f"| {_fmt(p95['direct'].tps, '.2f')} · {_fmt(p95['dbproxy'].tps, '.2f')} "
            f"| {_fmt(cpu_us['dbproxy'])} ({_fmt(system_us['dbproxy'])}){floor_cpu} "
            f"| {want}: {mark} |"
        )
    return "\n".join(lines), derived


def _system_us(runs: Sequence[SysbenchRun], workload: str, target: str = "dbproxy") -> float | None:
    """Median over a proxy's successful runs of its system (kernel) CPU per transaction, in µs."""
    per_txn = [
        r.pooler_system_s / r.transactions * 1e6
        for r in runs
        if r.workload == workload
        and r.target == target
        and r.ok
        and r.pooler_system_s is not None
        and r.transactions
    ]
    return statistics.median(per_txn) if per_txn else None


def _show(cell: Cell) -> str:
    return "—" if not cell.runs else cell.show()


# ------------------------------------------------------------------------------------------ profile


# Leaf frames of py-spy --native stacks that are system calls: time there is the kernel's (loopback TCP),
# or, on a machine with fewer cores than runnable processes, waiting for a CPU after waking a peer.
SYSCALL_LEAVES = frozenset(
    (
        "write",
        "read",
        "writev",
        "readv",
        "sendmsg",
        "recvmsg",
        "send",
        "recv",
        "epoll_wait",
        "epoll_pwait",
        "getpid",
    )
)


@dataclass
class ProfileSummary:
    """What py-spy's raw stacks of dbproxy say: the share of samples in system calls (by Python caller),
    and among the other samples the Python functions with most self and most inclusive time."""

    samples: int = 0
    syscall_share: float = 0.0  # of all samples
    syscalls: list[tuple[str, float]] = field(default_factory=list)  # "write <- caller", share of all
    python_self: list[tuple[str, float]] = field(default_factory=list)  # share of the non-syscall samples
    python_inclusive: list[tuple[str, float]] = field(default_factory=list)  # idem, frames under proxy/

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


_LINE_RE = re.compile(r":\d+\)$")


def summarize_profile(collapsed: str, path_filter: str = "proxy/", limit: int = 15) -> ProfileSummary:
    """A ProfileSummary of py-spy ``record -f raw [--native]`` output (one "frame;frame;... count" a line).

    A sample's Python self time goes to its innermost Python frame (native frames below it, uvloop's
    and CPython's, count as that function's); a sample whose innermost frame is a system call in
    libc counts as that call's, made by the innermost Python frame.
    """
    syscalls: Counter[str] = Counter()
    own: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    total = on_cpu = 0
    for line in collapsed.splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        n = int(count)
        total += n
        frames = [_LINE_RE.sub(")", frame) for frame in stack.split(";")]
        python = [frame for frame in frames if ".py)" in frame]
        caller = python[-1] if python else "(no Python frame)"
        leaf = frames[-1]
        if "libc.so" in leaf and leaf.split(" (", 1)[0] in SYSCALL_LEAVES:
            syscalls[f"{leaf.split(' (', 1)[0]} <- {caller}"] += n
            continue
        on_cpu += n
        own[caller] += n
        for frame in set(python):
            inclusive[frame] += n
    summary = ProfileSummary(samples=total)
    if not total:
        return summary
    summary.syscall_share = (total - on_cpu) / total
    summary.syscalls = [(f, n / total) for f, n in syscalls.most_common(6)]
    if on_cpu:
        summary.python_self = [(f, n / on_cpu) for f, n in own.most_common(limit)]
        summary.python_inclusive = [
            (f, n / on_cpu)
            for f, n in inclusive.most_common()
            if path_filter in f
            and "proxy/cli.py" not in f
            and "proxy/app.py" not in f
            and "proxy/__main__.py" not in f
        ][:limit]
    return summary


def _frame(frame: str) -> str:
    """`ResponseTracker.feed (proxy/engines/mysql/wire/responses.py)` -> `responses.py ResponseTracker.feed`."""
    name, _, where = frame.partition(" (")
    return f"{Path(where.rstrip(')')).name} {name}" if where else name


def profile_markdown(key: str, profile: dict[str, Any]) -> str:
    """One profiled run as Markdown: where the samples were, the top Python functions."""
    summary = profile["summary"]
    calls = ", ".join(
        f"`{c.split(' <- ')[0]}` from `{_frame(c.split(' <- ')[1])}` {share:.0%}"
        for c, share in summary["syscalls"][:4]
    )
    own = ", ".join(f"`{_frame(f)}` {share:.1%}" for f, share in summary["python_self"][:12])
    inclusive = ", ".join(f"`{_frame(f)}` {share:.0%}" for f, share in summary["python_inclusive"][:12])
    return (
        f"**py-spy profile of dbproxy during {key}** ({profile['qps_under_profiler'] or 0:,.0f} QPS while sampled, "
        f"{summary['samples']} samples; raw stacks: {profile['raw_stacks']}; not in the table)\n\n"
        f"- In system calls: {summary['syscall_share']:.0%} of the samples ({calls}). A thread that wakes its "
        "peer in write() can be preempted there when the cores are busy: this is wall time, not only CPU.\n"
        f"- The other samples, by innermost Python function (self): {own}.\n"
        f"- The same samples, inclusive: {inclusive}.\n"
    )


# --------------------------------------------------------------------------------------------- bench


class SysbenchBench:
    """One benchmark run: owns the MariaDB cluster, dbproxy and the temporary directory."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.workdir = Path(tempfile.mkdtemp(prefix="dbproxy-sysbench-", dir="/tmp"))
        self.workdir.chmod(0o755)  # the mysql OS user must reach my/
        self.cluster: MysqlCluster | None = None
        self.dbproxy: Service | None = None
        self.endpoints: dict[str, MysqlEndpoint] = {}
        self.haproxy: Service | None = None
        self.relay: Service | None = None
        self.workloads = [w for w in WORKLOADS if w.key in args.workload]
        if args.no_haproxy or not tcp_forwarder.available():
            self.workloads = [replace(w, targets=tuple(t for t in w.targets if t != "haproxy"))
                              for w in self.workloads]
        self.runs: list[SysbenchRun] = []
        self.versions: dict[str, str] = {}
        self.profiles: dict[str, dict[str, Any]] = {}
        self.started = datetime.now()
        self.loadavg_before = os.getloadavg()

    # ---------------------------------------------------------------- setup

    def setup(self) -> None:
        args = self.args
        if shutil.which(SYSBENCH) is None:
            raise BenchError(
                "sysbench not found: `apt-get install sysbench` (the Makefile's bench target does)"
            )
        self.versions["sysbench"] = run_checked([SYSBENCH, "--version"], "sysbench --version").strip()
        self.versions["mariadb"] = run_checked(["mariadbd", "--version"], "mariadbd --version").strip()
        self.versions["python"] = platform.python_version()
        self.versions["dbproxy"] = git_version()

        ports = free_ports(1 + args.replicas)
        log(f"MariaDB: primary + {args.replicas} replica(s) on {ports} in {self.workdir / 'my'}")
        self.cluster = MysqlCluster(self.workdir / "my", ports)
        self.cluster.start()
        self.endpoints["direct"] = MysqlEndpoint("direct", ports[0])

        log(f"sysbench prepare: {args.tables} tables of {args.table_size} rows")
        prepare = sysbench_argv(
            self.endpoints["direct"],
            "oltp_read_write",
            (),
            args.tables,
            args.table_size,
            threads=min(args.tables, 4),
            command="prepare",
        )
        run_checked(prepare, "sysbench prepare", timeout=300)
        if args.replicas:
            self.cluster.wait_replicated(timeout=120)

        (writer,) = free_ports(1)
        log(f"dbproxy writer endpoint on {writer} (pool {args.pool_size}, transaction mode)")
        self.dbproxy = start_dbproxy_mysql(self.workdir / "dbproxy", ports, writer, args.pool_size)
        self.endpoints["dbproxy"] = MysqlEndpoint("dbproxy", writer)
        if any("haproxy" in w.targets for w in self.workloads):
            (forwarder,) = free_ports(1)
            log(f"HAProxy (mode tcp, 1 thread) on {forwarder} → the primary: the floor of a proxy hop")
            self.haproxy = tcp_forwarder.start_haproxy(self.workdir / "haproxy", HOST, forwarder, HOST, ports[0])
            self.endpoints["haproxy"] = MysqlEndpoint("haproxy", forwarder)
            self.versions["haproxy"] = run_checked([tcp_forwarder.HAPROXY, "-v"], "haproxy -v").split("\n")[0]
        if any("relay" in w.targets for w in self.workloads):
            (relay,) = free_ports(1)
            log(f"uvloop relay (bench/python_relay.py, one process) on {relay} → the primary: a Python proxy's floor")
            self.relay = python_relay.start_relay(self.workdir / "relay", HOST, relay, HOST, ports[0])
            self.endpoints["relay"] = MysqlEndpoint("relay", relay)

    # -------------------------------------------------------------- measure

    def _our_pids(self) -> list[int]:
        """This process (sysbench is reaped into it), dbproxy and every mariadbd."""
        pids = [os.getpid()]
        for service in (self.dbproxy, self.haproxy, self.relay):
            if service is not None and service.alive():
                pids.append(service.pid)
        if self.cluster is not None:
            pids += self.cluster.server_pids()
        return pids

    def one(self, workload: SysbenchWorkload, target: str, round_no: int, duration: float) -> SysbenchRun:
        endpoint = self.endpoints[target]
        service = {"dbproxy": self.dbproxy, "haproxy": self.haproxy, "relay": self.relay}.get(target)
        if service is not None and not service.alive():
            cell = SysbenchRun(target, workload.key, round_no, error=f"{target} is not running")
            return cell
        roots = self._our_pids()
        self._wait_idle(roots)
        before = sample(roots)
        proxy_before = user_system_seconds(service.pid) if service is not None else None
        began = time.monotonic()
        cell = run_sysbench(endpoint, workload, self.args, duration, round_no)
        cell.cpu = usage(before, sample(roots), time.monotonic() - began)
        proxy_after = user_system_seconds(service.pid) if service is not None else None
        if proxy_before is not None and proxy_after is not None:
            cell.pooler_cpu_s = sum(proxy_after) - sum(proxy_before)
            cell.pooler_system_s = proxy_after[1] - proxy_before[1]
        return cell

    def _wait_idle(self, roots: list[int], threshold: float = 0.15) -> None:
        """With --wait-idle: wait (bounded) until processes outside the benchmark use < ``threshold`` cores
        (bench/run.py's Bench._wait_idle, for these processes)."""
        deadline = time.monotonic() + self.args.wait_idle
        waited = False
        while time.monotonic() < deadline:
            before = sample(roots)
            time.sleep(1.0)
            busy = usage(before, sample(roots), 1.0)
            if busy.other_cores < threshold:
                break
            if not waited:
                log(
                    f"waiting for the machine to calm down: others use {busy.other_cores:.2f} cores "
                    f"[{busy.top_others}]"
                )
                waited = True
        else:
            if waited:
                log(f"still busy after {self.args.wait_idle:.0f}s; measuring anyway")

    def warm_up(self) -> None:
        seconds = 1 if self.args.quick else 2
        for workload in self.workloads:
            for target in workload.targets:
                cell = self.one(workload, target, 0, seconds)
                if not cell.ok:
                    self._report_failure(cell, "warm-up")

    def measure(self) -> None:
        args = self.args
        total = args.rounds * sum(len(w.targets) for w in self.workloads)
        done = 0
        for round_no in range(1, args.rounds + 1):
            for wi, workload in enumerate(self.workloads):
                targets = list(workload.targets)
                shift = (round_no - 1 + wi) % len(targets)  # alternate which target goes first
                for target in targets[shift:] + targets[:shift]:
                    done += 1
                    cell = self.one(workload, target, round_no, args.duration)
                    self.runs.append(cell)
                    shown = (
                        f"{cell.qps:>9,.0f} qps {cell.tps or 0:>8,.0f} tps"
                        if cell.qps is not None
                        else "- qps"
                    )
                    extra = ""
                    if cell.ok:
                        extra = (
                            f"  p95 {cell.latency_p95_ms} ms, errors {cell.ignored_errors}, "
                            f"reconnects {cell.reconnects}"
                        )
                    if (
                        cell.pooler_cpu_s is not None
                        and cell.pooler_system_s is not None
                        and cell.transactions
                    ):
                        extra += (
                            f", dbproxy {cell.pooler_cpu_s / cell.transactions * 1e6:.0f} µs/txn"
                            f" (sys {cell.pooler_system_s / cell.transactions * 1e6:.0f})"
                        )
                    if (cpu := cell.cpu) is not None:
                        extra += f"  cpu {cpu.busy_cores:.2f}, others {cpu.other_cores:.2f}"
                        if cpu.other_cores >= 0.1 and cpu.top_others:
                            extra += f" [{cpu.top_others}]"
                    status = "" if cell.ok else f"  FAILED: {cell.error}"
                    log(
                        f"[{done}/{total}] round {round_no} {workload.key:<10} {target:<7} {shown}{extra}{status}"
                    )
                    if not cell.ok:
                        self._report_failure(cell, "run")
                    time.sleep(0.5)

    def run_profile(self) -> None:
        """Each point_select workload once more through dbproxy under py-spy (raw stacks; not in the table)."""
        if self.dbproxy is None or not self.dbproxy.alive():
            log("--profile skipped: dbproxy is not running")
            return
        py_spy = ensure_py_spy()
        out_dir = Path(self.args.profile_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        for workload in self.workloads:
            if workload.script != "oltp_point_select":
                continue
            raw = out_dir / f"sysbench-profile-{workload.key}.txt"
            raw.unlink(missing_ok=True)
            spy = Service(
                f"py-spy ({workload.key})",
                [
                    py_spy,
                    "record",
                    "--native",
                    "-f",
                    "raw",
                    "-r",
                    str(PROFILE_RATE),
                    "-o",
                    str(raw),
                    "--pid",
                    str(self.dbproxy.pid),
                ],  # fmt: skip
                self.workdir / f"py-spy-{workload.key}.log",
                stop_signal=signal.SIGINT,
            )
            log(f"profiling dbproxy (pid {self.dbproxy.pid}) under py-spy during {workload.key}")
            spy.start()
            try:
                time.sleep(1.0)
                if not spy.alive():
                    raise spy.failure("py-spy exited before the run")
                cell = run_sysbench(self.endpoints["dbproxy"], workload, self.args, self.args.duration, 0)
            finally:
                spy.stop(timeout=60)
            if not cell.ok:
                self._report_failure(cell, "profiled run")
            if not raw.exists():
                raise spy.failure(f"py-spy wrote no {raw}")
            self.profiles[workload.key] = {
                "raw_stacks": str(raw),
                "qps_under_profiler": cell.qps,
                "summary": summarize_profile(raw.read_text()).to_json(),
            }
            log(f"profile: {raw} ({cell.qps or 0:,.0f} qps while sampled)")

    def _report_failure(self, cell: SysbenchRun, what: str) -> None:
        print(f"\n--- {what} failed: {cell.target} {cell.workload}: {cell.error}", file=sys.stderr)
        print(f"--- {' '.join(cell.argv)}\n{cell.output_tail}", file=sys.stderr)
        if cell.target == "dbproxy" and self.dbproxy is not None:
            print(self.dbproxy.log_tail(25), file=sys.stderr)
        elif self.cluster is not None:
            print(f"--- primary log (tail) ---\n{self.cluster.log_tail(0, 25)}", file=sys.stderr)
        print(file=sys.stderr, flush=True)

    # --------------------------------------------------------------- report

    def report(self) -> tuple[str, bool]:
        """Print the table (and write the JSON to --json); (markdown, every run ok)."""
        args = self.args
        table, derived = build_table(self.workloads, self.runs)
        cpus = os.cpu_count() or 0
        title = (
            f"**dbproxy MySQL bench** ({self.started:%Y-%m-%d %H:%M}): dbproxy {self.versions['dbproxy']} · "
            f"{_short_mariadb(self.versions['mariadb'])} · {self.versions['sysbench'].split(' (')[0]} · "
            f"Python {self.versions['python']}"
        )
        notes = [
            f"sysbench --threads={args.threads}, {args.duration} s per run, {args.rounds} round(s) with direct "
            f"and dbproxy alternating first (median shown); {args.tables} tables of {args.table_size} rows; "
            f"dbproxy: one writer endpoint, transaction pooling, max_server_connections {args.pool_size}, "
            f"mysql_native_password; direct: the same user straight to the primary; {args.replicas} replica(s).",
            "Prepared: sysbench prepares each statement once per thread (COM_STMT_PREPARE) and runs "
            "COM_STMT_EXECUTE; dbproxy prepares each statement text once per server connection and rewrites "
            "the client's statement id to that connection's. "
            "Text: every query is a COM_QUERY.",
            'errors / reconnects: sysbench\'s "ignored errors" (errors after which it retries the transaction: '
            "1213 deadlock, 1205 lock wait timeout, 1020 record changed), with errno × count, and "
            '"reconnects", summed over the rounds; any other error aborts sysbench and fails the run. '
            "oltp_read_write's QPS counts BEGIN and COMMIT (20 queries per transaction).",
            "dbproxy CPU µs/txn: dbproxy's own process (user + system, from /proc) during the run divided by "
            "sysbench's transactions, median of the rounds (for point_select a transaction is one query); "
            "in parentheses its system (kernel: loopback TCP) part.",
            f"{cpus} CPU(s) shared by sysbench, MariaDB and dbproxy: absolute numbers are small and noisy; "
            "compare the ratios.",
        ]
        others = [r.cpu.other_cores for r in self.runs if r.cpu]
        if others:
            note = (
                f"CPU taken by other processes during the runs, in cores: mean {sum(others) / len(others):.2f} "
                f"/ max {max(others):.2f} (load average before the run: {self.loadavg_before[0]:.2f})"
            )
            if max(others) > 0.15:
                note += (
                    ": the machine was not quiet, numbers are disturbed (more --rounds help; see runs[].cpu)"
                )
            notes.append(note + ".")
        markdown = f"{title}\n\n{table}\n\n" + "".join(f"- {n}\n" for n in notes)
        for key, profile in self.profiles.items():
            markdown += "\n" + profile_markdown(key, profile)
        print("\n" + markdown, flush=True)

        targets_met = all(d["target"].endswith("PASS") for d in derived.values())
        if args.json:
            data = {
                "started": self.started.strftime("%Y%m%d-%H%M%S"),
                "argv": sys.argv[1:],
                "settings": {
                    "duration_s": args.duration, "rounds": args.rounds, "threads": args.threads,
                    "pool_size": args.pool_size, "tables": args.tables, "table_size": args.table_size,
                    "replicas": args.replicas, "workloads": [w.key for w in self.workloads],
                    "wait_idle_s": args.wait_idle,
                },
                "host": {"cpus": cpus, "platform": platform.platform(), "loadavg_before": self.loadavg_before,
                         "loadavg_after": os.getloadavg()},
                "versions": self.versions,
                "derived": derived,
                "targets_met": targets_met,
                "table_markdown": markdown,
                "profiles": self.profiles,
                "runs": [r.to_json() for r in self.runs],
            }  # fmt: skip
            path = Path(args.json)
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps(data, indent=2) + "\n")
            log(f"results: {path}")
        return markdown, all(r.ok for r in self.runs)  # like bench/run.py: a missed target is in the table

    # -------------------------------------------------------------- cleanup

    def cleanup(self) -> None:
        for service in (self.haproxy, self.relay):
            if service is not None:
                try:
                    service.stop()
                except Exception as exc:  # keep cleaning up the rest
                    log(f"stopping {service.name} failed: {exc}")
        if self.dbproxy is not None:
            try:
                self.dbproxy.stop()
            except Exception as exc:  # keep cleaning up the rest
                log(f"stopping dbproxy failed: {exc}")
        if self.cluster is not None:
            try:
                if self.args.keep:
                    self.cluster.stop()
                else:
                    self.cluster.destroy()
            except Exception as exc:
                log(f"stopping the MariaDB cluster failed: {exc}")
        if self.args.keep:
            log(f"kept {self.workdir}")
        else:
            shutil.rmtree(self.workdir, ignore_errors=True)


def _short_mariadb(version: str) -> str:
    """`mariadbd  Ver 10.11.6-MariaDB-0+deb12u1-log for debian-linux-gnu ...` -> `MariaDB 10.11.6`."""
    m = re.search(r"Ver (\d+\.\d+\.\d+)", version)
    return f"MariaDB {m.group(1)}" if m else version.splitlines()[0]


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.sysbench", description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=int, help="seconds per sysbench run (default 10, 3 with --quick)")
    parser.add_argument(
        "--rounds",
        type=int,
        help="runs per cell, direct/dbproxy order alternated; median kept (default 3, 1 with --quick)",
    )
    parser.add_argument("--quick", action="store_true", help="3 s runs, 1 round, a shorter warm-up")
    parser.add_argument("--threads", type=int, default=16, help="sysbench --threads (default 16)")
    parser.add_argument("--pool-size", type=int, default=8, help="dbproxy max_server_connections (default 8)")
    parser.add_argument("--tables", type=int, default=4, help="sysbench --tables (default 4)")
    parser.add_argument("--table-size", type=int, default=10000, help="sysbench --table-size (default 10000)")
    parser.add_argument(
        "--replicas", type=int, default=0, help="GTID replicas next to the primary (default 0)"
    )
    parser.add_argument(
        "--workload",
        type=_csv(WORKLOAD_KEYS),
        default=list(WORKLOAD_KEYS),
        help=f"comma-separated subset of {','.join(WORKLOAD_KEYS)} (default: all)",
    )
    parser.add_argument("--json", metavar="PATH", help="also write the results and every run as JSON to PATH")
    parser.add_argument(
        "--profile",
        action="store_true",
        help="also run each point_select workload once more through dbproxy under py-spy",
    )
    parser.add_argument(
        "--profile-dir",
        default=str(REPO_ROOT / "bench" / "results"),
        help="where --profile writes py-spy's raw stacks (default bench/results)",
    )
    parser.add_argument(
        "--wait-idle",
        type=float,
        default=0,
        metavar="SECONDS",
        help="before each run, wait up to SECONDS for other processes to leave the CPUs alone (default 0)",
    )
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory (logs, data)")
    parser.add_argument("--no-haproxy", action="store_true",
                        help="leave out the HAProxy TCP forwarder (run when haproxy is installed)")
    args = parser.parse_args(argv)
    if args.duration is None:
        args.duration = 3 if args.quick else 10
    if args.rounds is None:
        args.rounds = 1 if args.quick else 3
    for name in ("duration", "rounds", "threads", "pool_size", "tables", "table_size"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be at least 1")
    if args.replicas < 0:
        parser.error("--replicas must be >= 0")
    return args


def _csv(choices: tuple[str, ...]) -> Callable[[str], list[str]]:
    def parse(text: str) -> list[str]:
        items = [item.strip() for item in text.split(",") if item.strip()]
        bad = [item for item in items if item not in choices]
        if bad or not items:
            raise argparse.ArgumentTypeError(f"{text!r}: choose from {','.join(choices)}")
        return [c for c in choices if c in items]  # canonical order, no duplicates

    return parse


def _on_sigterm(signum: int, frame: FrameType | None) -> NoReturn:
    raise KeyboardInterrupt


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    previous = signal.signal(signal.SIGTERM, _on_sigterm)
    bench = SysbenchBench(args)
    try:
        bench.setup()
        bench.warm_up()
        bench.measure()
        if args.profile:
            bench.run_profile()
        _, all_ok = bench.report()
        return 0 if all_ok else 1
    except KeyboardInterrupt:
        log("interrupted: cleaning up")
        return 130
    except (BenchError, MysqlClusterError) as exc:
        log(f"error: {exc}")
        return 1
    finally:
        previous_int = signal.signal(
            signal.SIGINT, signal.SIG_IGN
        )  # a second Ctrl-C must not abort the cleanup
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        bench.cleanup()
        signal.signal(signal.SIGINT, previous_int)
        signal.signal(signal.SIGTERM, previous)


if __name__ == "__main__":
    sys.exit(main())
