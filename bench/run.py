"""Benchmark (issues 2, 3): pgbench -S directly, through dbproxy and PgBouncer, and per dbproxy endpoint.

Run from the repository root: `.venv/bin/python bench/run.py [--quick] [--only dbproxy] [--profile]`.
Everything (a PostgreSQL primary + replicas, dbproxy, PgBouncer) runs in a temporary directory
on free ports and is removed at the end, also on Ctrl-C or error. Results go to bench/results/.

Two tables of pgbench runs, interleaved in the same rounds (target order rotated per round):
- issue 2: -S simple / prepared / -C against the primary directly, dbproxy's writer endpoint and
  PgBouncer;
- issue 3 (`--endpoints`, on by default; `--workload endpoints`): -S simple against dbproxy's
  writer, reader and split endpoints, with the TPS ratio to the writer and, from each instance's
  pg_stat_database, where the transactions really ran; plus the split classifier's cost per
  statement (bench/classify_cost.py). Two sets of endpoints, two tables: those of the "main"
  cluster (reads on the replicas: routing plus where the reads run) and those of a "solo" cluster
  listing only the primary (every endpoint on the primary: routing work alone). The replica table
  has a control in the same rounds: the same load with no proxy, on the primary and spread over the
  replicas (one pgbench per replica, started together); their ratio, the spread factor, is what
  spreading costs on this machine, and reader/writer ÷ spread factor is the routing alone.

With `--ryw`, bench/ryw.py (what read_your_writes costs write transactions on a split endpoint)
runs afterwards with the same --duration, --quick, --keep and --rounds if given.

With `--cache`, bench/cache.py (the query-result cache on a split endpoint: 90% point reads, 10%
updates; memory and Redis vs no cache vs direct, hit ratio, a verification pass) runs afterwards with
the same --duration, --quick, --keep and --rounds if given.

With `--tls`, bench/tls.py (pgbench -S and -S -C with client TLS, dbproxy vs PgBouncer
client_tls_sslmode = require, issue 13) runs afterwards with the same --duration, --quick, --keep and
--rounds if given.

With `--mysql`, the MySQL benchmark (bench/sysbench.py: sysbench oltp_point_select direct vs dbproxy,
oltp_read_write through dbproxy, on its own MariaDB) runs afterwards with the same --duration,
--quick, --clients (sysbench --threads), --wait-idle, --profile and --keep, and --rounds if given
(else its own default, 3); its results go to bench/results/sysbench-*.json / .md.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import signal
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from types import FrameType
from typing import Any, NoReturn

# `python bench/run.py` puts bench/, not the repository root, on sys.path.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import classify_cost
from bench import sysbench as mysql_bench
from bench.cpu import sample, tree_seconds, usage
from bench.pgbench import (
    ENDPOINTS_WORKLOAD,
    WORKLOADS,
    CellRun,
    Endpoint,
    Workload,
    pgbench_argv,
    run_pgbench,
    run_pgbench_spread,
    split_clients,
)
from bench.procs import BenchError, Service, git_version, run_checked
from bench.report import (
    DIRECT_REPLICAS_TARGET,
    DIRECT_ROWS,
    ENDPOINT_NAMES,
    ENDPOINT_SETS,
    REPLICA_ENDPOINTS,
    SOLO_ENDPOINTS,
    TARGETS,
    Cell,
    DirectControl,
    EndpointSet,
    build_endpoints_table,
    build_table,
    clients_each,
    direct_primary_target,
    pooler_cpu_note,
    summarize,
)
from bench.services import (
    DBPROXY_ENDPOINTS,
    DbproxyCluster,
    ensure_py_spy,
    pgbouncer_supports_prepared,
    pgbouncer_version,
    start_dbproxy,
    start_pgbouncer,
)
from deploy.pgcluster import APP_DB, HOST, PgCluster, PgClusterError, free_ports, pg_binary

REPO_ROOT = Path(__file__).resolve().parent.parent
RESULTS_DIR = REPO_ROOT / "bench" / "results"
BENCH_USER = "bench"
BENCH_PASSWORD = "bench-secret"
PREPARED_NA = "n/a (PgBouncer {version} has no prepared-statement support in transaction mode)"
WORKLOAD_KEYS = (*(w.key for w in WORKLOADS), ENDPOINTS_WORKLOAD.key)
# PostgreSQL 15 flushes a busy backend's counters (pg_stat_database.xact_commit...) at most once a
# second and an idle one's within 10 s: wait that long before trusting a "before" snapshot.
STATS_IDLE_FLUSH_S = 10.5


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="bench/run.py", description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=int, help="seconds per pgbench run (default 10, 3 with --quick)")
    parser.add_argument("--quick", action="store_true", help="3 s runs and a shorter warm-up")
    parser.add_argument(
        "--rounds",
        type=int,
        default=None,
        help="runs per cell, target order rotated; median kept (default 1)",
    )
    parser.add_argument("--clients", type=int, default=16, help="pgbench -c (and -j) (default 16)")
    parser.add_argument("--pool-size", type=int, default=20, help="server connections per pool, both poolers")
    parser.add_argument("--scale", type=int, default=10, help="pgbench -i -s (default 10)")
    parser.add_argument("--workers", type=int, default=1,
                        help="dbproxy [server] workers: data-plane processes (default 1: one process)")
    parser.add_argument("--replicas", type=int, default=2, help="streaming replicas next to the primary")
    parser.add_argument(
        "--only",
        type=_csv(TARGETS),
        default=list(TARGETS),
        help=f"comma-separated subset of {','.join(TARGETS)} (e.g. --only dbproxy)",
    )
    parser.add_argument(
        "--workload",
        type=_csv(WORKLOAD_KEYS),
        default=None,
        help="comma-separated subset of " + ",".join(WORKLOAD_KEYS) + " (default: all; endpoints = "
        "the dbproxy writer/reader/split comparison and the classification cost)",
    )
    parser.add_argument(
        "--endpoints",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="pgbench -S -M simple on dbproxy's writer, reader and split endpoints side by side, and the "
        "split classifier's cost per statement (default: on when dbproxy is among --only)",
    )
    parser.add_argument(
        "--profile",
        action="store_true",
        help="also run -S simple once more against dbproxy under py-spy (bench/results/profile.svg)",
    )
    parser.add_argument(
        "--wait-idle",
        type=float,
        default=0,
        metavar="SECONDS",
        help="before each run, wait up to SECONDS for other processes to leave the CPUs alone (default 0)",
    )
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory (logs, data)")
    parser.add_argument(
        "--mysql",
        action="store_true",
        help="afterwards, the MySQL benchmark too (bench/sysbench.py, its own MariaDB; sysbench must be "
        "installed); results in bench/results/sysbench-*",
    )
    parser.add_argument(
        "--ryw",
        action="store_true",
        help="afterwards, the read_your_writes cost on a split endpoint (bench/ryw.py, its own primary + "
        "replica) with the same --duration, --quick, --keep and --rounds if given; results in "
        "bench/results/ryw-*",
    )
    parser.add_argument(
        "--cache",
        action="store_true",
        help="afterwards, the query-result cache on a split endpoint (bench/cache.py, its own primary + replica "
        "and redis-server) with the same --duration, --quick, --keep and --rounds if given; results in "
        "bench/results/cache-*",
    )
    parser.add_argument(
        "--tls",
        action="store_true",
        help="afterwards, pgbench -S and -S -C with client TLS, dbproxy vs PgBouncer (bench/tls.py, its own "
        "primary) with the same --duration, --quick, --keep and --rounds if given; results in bench/results/tls-*",
    )
    args = parser.parse_args(argv)
    args.rounds_given = args.rounds is not None
    if args.rounds is None:
        args.rounds = 1
    asked_endpoints = args.endpoints is True or (args.workload is not None and "endpoints" in args.workload)
    workloads = list(args.workload) if args.workload is not None else list(WORKLOAD_KEYS)
    if args.endpoints is True and "endpoints" not in workloads:
        workloads.append("endpoints")
    if args.endpoints is False and "endpoints" in workloads:
        workloads.remove("endpoints")
    if "endpoints" in workloads and args.replicas < 1:
        if asked_endpoints:
            parser.error("the endpoint comparison (--endpoints, --workload endpoints) needs --replicas >= 1")
        workloads.remove("endpoints")
    if "endpoints" in workloads and "dbproxy" not in args.only:
        if asked_endpoints:
            parser.error(
                "the endpoint comparison (--endpoints, --workload endpoints) needs dbproxy among --only"
            )
        workloads.remove("endpoints")
    if not workloads:
        parser.error("nothing to run: --no-endpoints leaves no --workload")
    args.workload = workloads
    args.endpoints = "endpoints" in workloads
    if args.duration is None:
        args.duration = 3 if args.quick else 10
    if args.profile and "dbproxy" not in args.only:
        parser.error("--profile needs dbproxy among --only")
    for name in ("duration", "rounds", "clients", "pool_size", "scale"):
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


def log(message: str) -> None:
    print(f"bench: {message}", file=sys.stderr, flush=True)


class Bench:
    """One benchmark run: owns the cluster, the poolers and the temporary directory."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.workdir = Path(tempfile.mkdtemp(prefix="dbproxy-bench-", dir="/tmp"))
        self.workdir.chmod(0o755)  # the postgres OS user must reach pg/ and pgbouncer/
        self.cluster: PgCluster | None = None
        self.services: dict[str, Service] = {}
        self.endpoints: dict[str, Endpoint] = {}
        # Targets run as several pgbench at once, TPS summed: target -> (endpoint, clients) per process.
        self.spreads: dict[str, list[tuple[Endpoint, int]]] = {}
        self.runs: list[CellRun] = []
        self.versions: dict[str, str] = {}
        self.bouncer_prepared = True
        self.profile: dict[str, Any] | None = None
        self.workloads: list[Workload] = [w for w in WORKLOADS if w.key in args.workload]
        # The targets of the issue-2 table (none if only the endpoint comparison runs).
        self.main_targets: list[str] = list(args.only) if self.workloads else []
        # The endpoint comparisons (issue 3), each run as one group per round, and all their targets.
        self.endpoint_sets: list[EndpointSet] = list(ENDPOINT_SETS) if args.endpoints else []
        # With their direct (no proxy) controls, rotated with them.
        self.endpoint_targets: list[str] = [t for es in self.endpoint_sets for t in self.endpoint_group(es)]
        self.classify: classify_cost.ClassifyCost | None = None
        self.stats_pending_since: float | None = None  # end of the last run whose stats may be unflushed
        self.started = datetime.now()
        self.loadavg_before = os.getloadavg()

    # ------------------------------------------------------------------ setup

    def setup(self) -> None:
        args = self.args
        self.versions["postgres"] = run_checked(
            [pg_binary("postgres"), "--version"], "postgres --version"
        ).strip()
        self.versions["pgbench"] = run_checked(
            [pg_binary("pgbench"), "--version"], "pgbench --version"
        ).strip()
        self.versions["python"] = platform.python_version()
        self.versions["dbproxy"] = git_version()
        if "pgbouncer" in self.main_targets:
            line, numbers = pgbouncer_version()
            self.versions["pgbouncer"] = line
            self.bouncer_prepared = pgbouncer_supports_prepared(numbers)

        pg_ports = free_ports(1 + args.replicas)
        log(f"PostgreSQL: primary + {args.replicas} replica(s) on {pg_ports} in {self.workdir / 'pg'}")
        self.cluster = PgCluster(self.workdir / "pg", pg_ports, users={BENCH_USER: ("", "trust")})
        self.cluster.start()
        primary = pg_ports[0]
        self.endpoints["direct"] = Endpoint("direct", primary, BENCH_USER, APP_DB, None)

        log(f"pgbench -i -s {args.scale}")
        run_checked(
            [pg_binary("pgbench"), "-i", "-q", "-s", str(args.scale), "-h", HOST, "-p", str(primary),
             "-U", BENCH_USER, APP_DB],
            "pgbench -i",
        )  # fmt: skip
        self.cluster.sql(0, "CHECKPOINT")
        self._wait_replicas_caught_up()

        if "pgbouncer" in self.main_targets:
            (port,) = free_ports(1)
            log(f"PgBouncer on {port} ({self.versions['pgbouncer']})")
            self.services["pgbouncer"] = start_pgbouncer(
                self.workdir / "pgbouncer", port, primary, BENCH_USER, BENCH_PASSWORD, APP_DB, args.pool_size
            )
            self.endpoints["pgbouncer"] = Endpoint("pgbouncer", port, BENCH_USER, APP_DB, BENCH_PASSWORD)
        if "dbproxy" in args.only:
            clusters = self._dbproxy_clusters(pg_ports)
            log("dbproxy endpoints " + "; ".join(f"{c.name} {c.endpoint_ports}" for c in clusters))
            self.services["dbproxy"] = start_dbproxy(
                self.workdir / "dbproxy", clusters, BENCH_USER, BENCH_PASSWORD, APP_DB, args.pool_size,
                server_extra=f"workers = {args.workers}" if args.workers > 1 else "",
            )
            by_name = {c.name: c for c in clusters}
            writer = by_name[REPLICA_ENDPOINTS.cluster].endpoint_ports["writer"]
            self.endpoints["dbproxy"] = Endpoint("dbproxy", writer, BENCH_USER, APP_DB, BENCH_PASSWORD)
            for endpoint_set in self.endpoint_sets:
                ports = by_name[endpoint_set.cluster].endpoint_ports
                for name in ENDPOINT_NAMES:
                    target = endpoint_set.target(name)
                    self.endpoints[target] = Endpoint(target, ports[name], BENCH_USER, APP_DB, BENCH_PASSWORD)
        if any(es.direct_control for es in self.endpoint_sets):
            self._add_direct_controls(pg_ports)

    def endpoint_group(self, endpoint_set: EndpointSet) -> list[str]:
        """An endpoint set's targets as measured in each round: its endpoints, then its direct controls."""
        return endpoint_set.targets + endpoint_set.direct_targets(self.args.clients)

    def replica_clients(self) -> list[int]:
        """The clients of each direct-replicas pgbench: --clients over the replicas (16 over 2: 8 each)."""
        return split_clients(self.args.clients, self.args.replicas)

    def _add_direct_controls(self, pg_ports: list[int]) -> None:
        """The replica table's controls, straight to PostgreSQL with trust auth (like "direct"): all
        the clients on the primary, and one pgbench per replica started together."""
        primary = direct_primary_target(self.args.clients)
        self.endpoints[primary] = Endpoint(primary, pg_ports[0], BENCH_USER, APP_DB, None)
        self.spreads[DIRECT_REPLICAS_TARGET] = [
            (Endpoint(f"direct-node{i}", pg_ports[i], BENCH_USER, APP_DB, None), clients)
            for i, clients in enumerate(self.replica_clients(), start=1)
        ]

    def _dbproxy_clusters(self, pg_ports: list[int]) -> list[DbproxyCluster]:
        """dbproxy's clusters: "main" (primary + replicas: issue 2's dbproxy target and the replica
        endpoint table) and, with --endpoints, "solo" (the primary alone: the routing-only table)."""
        wanted = [(REPLICA_ENDPOINTS.cluster, pg_ports)]
        if self.args.endpoints:
            wanted.append((SOLO_ENDPOINTS.cluster, pg_ports[:1]))
        ports = iter(free_ports(len(DBPROXY_ENDPOINTS) * len(wanted)))
        return [
            DbproxyCluster(name, tuple(instances), {role: next(ports) for role in DBPROXY_ENDPOINTS})
            for name, instances in wanted
        ]

    def _wait_replicas_caught_up(self, timeout: float = 120) -> None:
        """Replaying pgbench -i's WAL would otherwise eat CPU during the first measurements."""
        assert self.cluster is not None
        if self.args.replicas == 0:
            return
        lsn = self.cluster.sql(0, "SELECT pg_current_wal_lsn()")
        deadline = time.monotonic() + timeout
        for i in range(1, 1 + self.args.replicas):
            while self.cluster.sql(i, f"SELECT pg_last_wal_replay_lsn() >= '{lsn}'::pg_lsn") != "t":
                if time.monotonic() > deadline:
                    raise BenchError(f"replica node{i} did not replay up to {lsn} in {timeout:.0f}s")
                time.sleep(0.2)

    # ---------------------------------------------------------------- measure

    def skip_note(self, workload: Workload, target: str) -> str | None:
        if target == "pgbouncer" and workload.prepared and not self.bouncer_prepared:
            version = self.versions["pgbouncer"].split()[-1]
            return PREPARED_NA.format(version=version)
        return None

    @staticmethod
    def service_name(target: str) -> str:
        return "dbproxy" if target.startswith("dbproxy") else target

    def one(self, workload: Workload, target: str, round_no: int, duration: float) -> CellRun:
        service = self.services.get(self.service_name(target))
        if service is not None and not service.alive():
            cell = CellRun(target, workload.key, round_no, error=f"{target} is not running")
            cell.argv = pgbench_argv(self.endpoints[target], workload, self.args.clients, duration)
            return cell
        roots = self._our_pids()
        self._wait_idle(roots)
        before = sample(roots)
        pooler_before = tree_seconds(service.pid) if service is not None else None
        began = time.monotonic()
        cell = self._pgbench(workload, target, round_no, duration)
        cell.cpu = usage(before, sample(roots), time.monotonic() - began)
        pooler_after = tree_seconds(service.pid) if service is not None else None
        if pooler_before is not None and pooler_after is not None:
            cell.pooler_cpu_s = pooler_after - pooler_before
        self.stats_pending_since = time.monotonic()
        return cell

    def _pgbench(self, workload: Workload, target: str, round_no: int, duration: float) -> CellRun:
        """``target``'s pgbench: one process, or for a spread target one per leg at once, summed."""
        if target in self.spreads:
            return run_pgbench_spread(target, self.spreads[target], workload, duration, round_no)
        return run_pgbench(self.endpoints[target], workload, self.args.clients, duration, round_no)

    # Where an endpoint run's transactions ran: pg_stat_database.xact_commit per instance.

    def _xact_commits(self) -> list[int]:
        assert self.cluster is not None
        query = f"SELECT xact_commit FROM pg_stat_database WHERE datname = '{APP_DB}'"
        return [int(self.cluster.sql(i, query) or 0) for i in range(len(self.cluster.ports))]

    def _settle_stats(self) -> None:
        """Wait until every backend has flushed the counters of earlier runs (see STATS_IDLE_FLUSH_S)."""
        if self.stats_pending_since is None:
            return
        wait = self.stats_pending_since + STATS_IDLE_FLUSH_S - time.monotonic()
        if wait > 0:
            log(f"waiting {wait:.1f}s for PostgreSQL to flush the previous runs' statistics")
            time.sleep(wait)
        self.stats_pending_since = None

    def _xacts_since(self, before: list[int], transactions: int) -> dict[str, int]:
        """Deltas per instance once they add up to ``transactions`` (the flush is delayed; bounded wait)."""
        deadline = time.monotonic() + STATS_IDLE_FLUSH_S + 1
        while True:
            delta = [after - b for after, b in zip(self._xact_commits(), before, strict=True)]
            if sum(delta) >= transactions or time.monotonic() > deadline:
                break
            time.sleep(0.5)
        if sum(delta) < transactions:
            log(f"only {sum(delta)} of {transactions} transactions counted by pg_stat_database in time")
        else:
            self.stats_pending_since = None  # this run's counters are in: the next snapshot is clean
        return {f"node{i}": n for i, n in enumerate(delta)}

    def instance_roles(self) -> dict[str, str]:
        assert self.cluster is not None
        return {f"node{i}": "primary" if i == 0 else "replica" for i in range(len(self.cluster.ports))}

    def one_endpoint(self, target: str, round_no: int, duration: float) -> CellRun:
        """One endpoint-comparison run, with its transactions' distribution over the instances."""
        self._settle_stats()
        before = self._xact_commits()
        cell = self.one(ENDPOINTS_WORKLOAD, target, round_no, duration)
        cell.instance_xacts = self._xacts_since(before, cell.transactions or 0)
        return cell

    def _wait_idle(self, roots: list[int], threshold: float = 0.15) -> None:
        """With --wait-idle: wait (bounded) until processes outside the benchmark use < ``threshold`` cores."""
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
                    f"waiting for the machine to calm down: others use {busy.other_cores:.2f} cores [{busy.top_others}]"
                )
                waited = True
        else:
            if waited:
                log(f"still busy after {self.args.wait_idle:.0f}s; measuring anyway")

    def _our_pids(self) -> list[int]:
        """This process (pgbench is reaped into it), the poolers and every postmaster."""
        pids = [os.getpid(), *(s.pid for s in self.services.values() if s.alive())]
        if self.cluster is not None:
            pids += [pid for i in range(len(self.cluster.ports)) if (pid := self.cluster.postmaster_pid(i))]
        return pids

    def warm_up(self) -> None:
        seconds = 1 if self.args.quick else 2
        for target in self.main_targets + self.endpoint_targets:  # the replicas' caches and pools too
            cell = self.one(WORKLOADS[0], target, 0, seconds)
            if not cell.ok:
                self._report_failure(cell, "warm-up")

    def measure(self) -> None:
        args = self.args
        groups = [(w, self.main_targets) for w in self.workloads]
        # Last in each round, one group per endpoint set (each set's order rotated on its own, its
        # runs back to back): one stats settle per round, not one per run.
        # The replica set's group also holds its direct controls, rotated with the endpoints.
        groups += [(ENDPOINTS_WORKLOAD, self.endpoint_group(es)) for es in self.endpoint_sets]
        total = args.rounds * sum(1 for w, ts in groups for t in ts if self.skip_note(w, t) is None)
        done = 0
        for round_no in range(1, args.rounds + 1):
            for wi, (workload, targets) in enumerate(groups):
                shift = (round_no - 1 + wi) % len(targets)  # rotate the order to spread drift
                for target in targets[shift:] + targets[:shift]:
                    if self.skip_note(workload, target) is not None:
                        continue
                    done += 1
                    if workload is ENDPOINTS_WORKLOAD:
                        cell = self.one_endpoint(target, round_no, args.duration)
                    else:
                        cell = self.one(workload, target, round_no, args.duration)
                    self.runs.append(cell)
                    shown = f"{cell.tps:>10,.0f} tps" if cell.tps is not None else "         - tps"
                    status = "" if cell.ok else f"  FAILED: {cell.error}"
                    load = ""
                    if (cpu := cell.cpu) is not None:
                        load = (
                            f"  cpu {cpu.busy_cores:.2f} (irq {cpu.irq_cores:.2f}), others {cpu.other_cores:.2f}"
                            + (f" [{cpu.top_others}]" if cpu.other_cores >= 0.1 and cpu.top_others else "")
                            + f", steal {cpu.steal_cores:.2f}"
                        )
                    where = ""
                    if cell.instance_xacts:
                        where = "  xacts " + " ".join(f"{k} {v}" for k, v in cell.instance_xacts.items())
                    label = workload.label if workload is not ENDPOINTS_WORKLOAD else "`-S -M simple`"
                    log(
                        f"[{done}/{total}] round {round_no} {label:<18} {target:<19} {shown}{load}{where}{status}"
                    )
                    if not cell.ok:
                        self._report_failure(cell, "run")
                    time.sleep(0.5)

    def measure_classification(self) -> None:
        """The split classifier's µs per statement (bench/classify_cost.py), in this process, pgbench idle."""
        repeats, seconds = (7, 0.05) if self.args.quick else (11, 0.1)
        log("classification cost (in-process micro-benchmark)")
        self.classify = classify_cost.measure(repeats, seconds, roots=self._our_pids())

    def run_profile(self) -> None:
        """-S simple once more against dbproxy, with py-spy attached to it (not in the table)."""
        service = self.services["dbproxy"]
        if not service.alive():
            log("--profile skipped: dbproxy is not running")
            return
        py_spy = ensure_py_spy()
        RESULTS_DIR.mkdir(parents=True, exist_ok=True)
        svg = RESULTS_DIR / "profile.svg"
        svg.unlink(missing_ok=True)
        spy_log = self.workdir / "py-spy.log"
        spy = Service("py-spy", [py_spy, "record", "-o", str(svg), "--pid", str(service.pid)], spy_log,
                      stop_signal=signal.SIGINT)  # fmt: skip
        log(f"profiling dbproxy (pid {service.pid}) under py-spy during -S simple")
        spy.start()
        try:
            time.sleep(1.0)
            if not spy.alive():
                raise spy.failure("py-spy exited before the run")
            cell = run_pgbench(
                self.endpoints["dbproxy"], WORKLOADS[0], self.args.clients, self.args.duration, 0
            )
        finally:
            spy.stop(timeout=60)
        if not cell.ok:
            self._report_failure(cell, "profiled run")
        if not svg.exists():
            raise spy.failure(f"py-spy wrote no {svg}")
        self.profile = {
            "svg": str(svg.relative_to(REPO_ROOT)),
            "tps_under_profiler": cell.tps,
            "run": cell.to_json(),
        }
        log(f"profile: {svg} ({cell.tps or 0:,.0f} tps while sampled)")

    def _report_failure(self, cell: CellRun, what: str) -> None:
        print(f"\n--- {what} failed: {cell.target} {cell.workload}: {cell.error}", file=sys.stderr)
        print(f"--- {' '.join(cell.argv)}\n{cell.output_tail}", file=sys.stderr)
        service = self.services.get(self.service_name(cell.target))
        if service is not None:
            print(service.log_tail(25), file=sys.stderr)
        elif self.cluster is not None:
            print(f"--- primary log (tail) ---\n{self.cluster.log_tail(0, 25)}", file=sys.stderr)
        print(file=sys.stderr, flush=True)

    # ----------------------------------------------------------------- report

    def report(self) -> tuple[str, bool]:
        """Print the table, write it and the raw numbers to bench/results/; (markdown, all runs ok)."""
        args = self.args
        cells: dict[str, dict[str, Cell]] = {
            w.key: {t: summarize(self.runs, w.key, t, self.skip_note(w, t)) for t in TARGETS}
            for w in self.workloads
        }
        table, derived = build_table(self.workloads, cells)
        cpus = os.cpu_count() or 0
        pgbouncer = self.versions.get("pgbouncer", "PgBouncer not run").splitlines()[0]
        postgres = self.versions["postgres"].replace("postgres (PostgreSQL)", "PostgreSQL")
        title = (
            f"**dbproxy bench** ({self.started:%Y-%m-%d %H:%M}): dbproxy {self.versions['dbproxy']} · "
            f"{postgres} · {pgbouncer} · Python {self.versions['python']}"
        )
        notes = [
            f"pgbench -c {args.clients} -j {args.clients}, {args.duration} s per run, {args.rounds} round(s) "
            f"with the target order rotated (median shown), scale {args.scale}; pool size {args.pool_size} "
            f"on both poolers, transaction mode, md5 client auth on the poolers (direct: trust); "
            f"{args.replicas} replica(s), idle except in the endpoint comparison; dbproxy "
            f"{'with [server] workers = ' + str(args.workers) if args.workers > 1 else 'in one process'}.",
            f"{cpus} CPU(s) shared by pgbench, PostgreSQL and the pooler: absolute numbers are small and noisy; "
            "compare the ratios.",
        ]
        others = [r.cpu.other_cores for r in self.runs if r.cpu]
        steals = [r.cpu.steal_cores for r in self.runs if r.cpu]
        if others:
            note = (
                f"CPU taken from the benchmark during the runs, in cores: by other processes mean "
                f"{sum(others) / len(others):.2f} / max {max(others):.2f}, stolen by the hypervisor mean "
                f"{sum(steals) / len(steals):.2f} / max {max(steals):.2f} "
                f"(load average before the run: {self.loadavg_before[0]:.2f})"
            )
            if max(others) > 0.15 or max(steals) > 0.1:
                note += (
                    ": the machine was not quiet, numbers are disturbed (more --rounds help; see runs[].cpu)"
                )
            notes.append(note + ".")
        if any(self.skip_note(w, "pgbouncer") for w in self.workloads) and "pgbouncer" in args.only:
            notes.append(
                "PgBouncer < 1.21 cannot pool protocol-level prepared statements in transaction mode "
                "(max_prepared_statements): its -M prepared cell is n/a, so is that row's target."
            )
        if any(w.key == "connect" for w in self.workloads):
            notes.append("-C: a new connection per transaction; pgbench's TPS includes reconnection time.")
        cpu_note, pooler_cpu = pooler_cpu_note(self.runs, self.workloads)
        if cpu_note is not None:
            notes.append(cpu_note)
        if self.profile is not None:
            notes.append(
                f"py-spy profile of dbproxy during -S simple: {self.profile['svg']} "
                f"({self.profile['tps_under_profiler'] or 0:,.0f} TPS while sampled; not in the table)."
            )
        markdown = (
            f"{title}\n\n" + (f"{table}\n\n" if self.workloads else "") + "".join(f"- {n}\n" for n in notes)
        )
        endpoints_md, endpoints_derived = self._endpoints_report()
        if endpoints_md:
            markdown += f"\n{endpoints_md}"
        if self.classify is not None:
            markdown += (
                f"\n**Split classification cost** (per statement, in-process)\n\n"
                f"{classify_cost.build_table(self.classify)}\n\n"
                + "".join(f"- {n}\n" for n in classify_cost.notes(self.classify))
            )
        print("\n" + markdown, flush=True)

        RESULTS_DIR.mkdir(parents=True, exist_ok=True)
        stamp = self.started.strftime("%Y%m%d-%H%M%S")
        data = {
            "started": stamp,
            "argv": sys.argv[1:],
            "settings": {
                "duration_s": args.duration, "rounds": args.rounds, "clients": args.clients,
                "pool_size": args.pool_size, "scale": args.scale, "replicas": args.replicas,
                "targets": args.only, "workloads": [w.key for w in self.workloads],
                **{es.key: es.targets if es in self.endpoint_sets else [] for es in ENDPOINT_SETS},
                "endpoints_direct": REPLICA_ENDPOINTS.direct_targets(args.clients) if args.endpoints else [],
                "direct_replicas_clients": self.replica_clients() if args.endpoints else [],
            },
            "host": {"cpus": cpus, "platform": platform.platform(), "loadavg_before": self.loadavg_before,
                     "loadavg_after": os.getloadavg()},
            "versions": self.versions,
            "median_tps": {w: {t: c.tps for t, c in row.items()} for w, row in cells.items()},
            "cells": {w: {t: c.show() for t, c in row.items()} for w, row in cells.items()},
            "derived": derived,
            "pooler_cpu_us_per_transaction": pooler_cpu,
            **{es.key: endpoints_derived.get(es.key) for es in ENDPOINT_SETS},
            "classification_cost_us": self.classify.to_json() if self.classify is not None else None,
            "table_markdown": markdown,
            "profile": self.profile,
            "runs": [r.to_json() for r in self.runs],
        }  # fmt: skip
        for name in (f"bench-{stamp}", "latest"):
            (RESULTS_DIR / f"{name}.json").write_text(json.dumps(data, indent=2) + "\n")
            (RESULTS_DIR / f"{name}.md").write_text(markdown)
        log(f"results: {RESULTS_DIR / f'bench-{stamp}.json'} (and latest.json / latest.md)")
        return markdown, all(r.ok for r in self.runs)

    def _endpoints_report(self) -> tuple[str, dict[str, dict[str, Any]]]:
        """The endpoint comparisons' tables and notes (Markdown), and their JSON by set key; ("", {}) if not run."""
        if not self.endpoint_sets:
            return "", {}
        markdown = ""
        derived: dict[str, dict[str, Any]] = {}
        for endpoint_set in self.endpoint_sets:
            table, rows = self._endpoint_table(endpoint_set)
            markdown += f"**{endpoint_set.title}**\n\n{table}\n\n" + "".join(
                f"- {n}\n" for n in self._endpoint_set_notes(endpoint_set)
            )
            derived[endpoint_set.key] = rows
            markdown += "\n"
        markdown += "Both endpoint tables:\n\n" + "".join(f"- {n}\n" for n in self._endpoint_notes())
        return markdown, derived

    def _endpoint_table(self, endpoint_set: EndpointSet) -> tuple[str, dict[str, Any]]:
        """One endpoint set's table (medians, ratios, where the transactions ran) and its JSON."""
        key = ENDPOINTS_WORKLOAD.key
        targets = {name: endpoint_set.target(name) for name in ENDPOINT_NAMES}
        direct: DirectControl | None = None
        if endpoint_set.direct_control:
            targets |= dict(zip(DIRECT_ROWS, endpoint_set.direct_targets(self.args.clients), strict=True))
            direct = DirectControl(
                primary=summarize(self.runs, key, targets["direct_primary"]),
                replicas=summarize(self.runs, key, targets["direct_replicas"]),
                primary_target=targets["direct_primary"],
                replica_clients=tuple(self.replica_clients()),
            )
        cells = {row: summarize(self.runs, key, target) for row, target in targets.items()}
        xacts = {row: self._summed_xacts(target) for row, target in targets.items()}
        table, rows = build_endpoints_table(
            endpoint_set, ENDPOINTS_WORKLOAD.target_ratio, cells, xacts, self.instance_roles(), direct
        )
        data: dict[str, Any] = {"median_tps": {n: c.tps for n, c in cells.items()}, "rows": rows}
        if direct is not None:
            data["spread_factor"] = direct.spread_factor
        return table, data

    def _summed_xacts(self, target: str) -> dict[str, int]:
        """xact_commit deltas per instance of ``target``'s endpoint-comparison runs, summed over the rounds."""
        total: dict[str, int] = {}
        for run in self.runs:
            if run.workload == ENDPOINTS_WORKLOAD.key and run.target == target and run.instance_xacts:
                for node, n in run.instance_xacts.items():
                    total[node] = total.get(node, 0) + n
        return total

    def _endpoint_set_notes(self, endpoint_set: EndpointSet) -> list[str]:
        """What one endpoint table measures."""
        cpus = os.cpu_count() or 0
        if endpoint_set.reads_on == "replicas":
            return [
                f"Cluster `{endpoint_set.cluster}`: the primary and {self.args.replicas} replica(s). The writer "
                "runs every `-S` read on the primary, reader and split on the replicas: reader/writer and "
                "split/writer measure routing (replica choice; for split, classifying the statements) plus "
                f"spreading the reads over replicas that share the same {cpus} cores as the primary, pgbench and "
                "dbproxy. Spreading adds no capacity here, and which instance serves the reads (its cache, "
                "its share of the CPUs) moves these ratios from run to run: they are not the routing cost alone "
                "(the direct rows measure the spreading without dbproxy; the routing-only table, the routing "
                "without the spreading).",
                *self._direct_notes(),
            ]
        return [
            f"Cluster `{endpoint_set.cluster}`: the same primary (node0) and nothing else, with the same pool, "
            "auth and TLS settings, in the same dbproxy process. With no replica, its reader endpoint falls back "
            "to the primary, and its split endpoint routes each transaction as on the other cluster (statement "
            "text, classification, replica choice) and then runs it on the primary too. The three endpoints "
            "share the backend and differ only in dbproxy's routing work: reader/writer and split/writer "
            "here measure that work alone.",
            f"The `{endpoint_set.cluster}` cluster exists only with the endpoint comparison; its health probes "
            "(another database, twice a second) are all it adds to the other runs.",
        ]

    def _direct_notes(self) -> list[str]:
        """The replica table's direct rows and its two ratios, in plain words."""
        args = self.args
        cpus = os.cpu_count() or 0
        return [
            f"Direct rows (the control, no proxy, same rounds and rotation): `pgbench -S -M simple -c "
            f"{args.clients} -j {args.clients}` straight to the primary, and one pgbench per replica "
            f"({clients_each(self.replica_clients())}, "
            "`-j` the same) started together, TPS and transactions summed (either one failing fails the row). "
            "Spread factor = direct replicas / direct primary: what sending the same reads to the replicas "
            f"instead of the primary does on this machine without any proxy (below 1.00: the instances "
            f"compete for the same {cpus} cores).",
            "`vs writer` is the raw ratio, spreading effect included; its PASS/FAIL is the issue's target as "
            "stated. `vs writer ÷ spread factor` divides that hardware effect out and leaves the cost of "
            f"dbproxy's routing, checked against the same ≥ {ENDPOINTS_WORKLOAD.target_ratio:.2f}.",
        ]

    def _endpoint_notes(self) -> list[str]:
        """How the endpoint runs were made and counted (both tables)."""
        args = self.args
        key = ENDPOINTS_WORKLOAD.key
        notes = [
            f"`pgbench -S -M simple -c {args.clients} -j {args.clients}`, {args.duration} s per run, against "
            "each endpoint (one dbproxy process serves both clusters) and the replica table's direct rows, "
            "in the same rounds as the other runs, each table's endpoints back to back with their order rotated per round (median shown). Target "
            "(issue 3): routing costs ≤ 10% TPS vs the plain writer endpoint, i.e. reader/writer and "
            f"split/writer ≥ {ENDPOINTS_WORKLOAD.target_ratio:.2f}.",
            "Where the transactions ran: the increase of pg_stat_database.xact_commit for the benchmark "
            "database on each instance across each run, summed over the rounds, read after the backends "
            "flushed their counters (dbproxy's health probes use another database and are not counted).",
            "`-M simple` puts a new `aid` literal in every statement text: a split session reuses its "
            "previous verdict for a text that differs from the previous one only in trailing digits "
            "(proxy/session.py `_route`), so the classifier itself rarely runs here; its costs per call are "
            "below.",
        ]
        others = [r.cpu.other_cores for r in self.runs if r.cpu and r.workload == key]
        if others:
            notes.append(
                f"Other processes took mean {sum(others) / len(others):.2f} / max {max(others):.2f} cores during "
                "these runs" + (": disturbed, compare with care." if max(others) > 0.15 else ".")
            )
        return notes

    # ---------------------------------------------------------------- cleanup

    def cleanup(self) -> None:
        for name in ("dbproxy", "pgbouncer"):
            service = self.services.get(name)
            if service is None:
                continue
            try:
                service.stop()
            except Exception as exc:  # keep cleaning up the rest
                log(f"stopping {name} failed: {exc}")
        if self.cluster is not None:
            try:
                self.cluster.destroy()
            except Exception as exc:
                log(f"destroying the PostgreSQL cluster failed: {exc}")
        if self.args.keep:
            log(f"kept {self.workdir}")
        else:
            shutil.rmtree(self.workdir, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    code = run_postgres(args)
    if args.mysql and code != 130:
        code = max(code, run_mysql(args))
    if args.ryw and code != 130:
        code = max(code, run_ryw(args))
    if args.tls and code != 130:
        code = max(code, run_tls(args))
    if args.cache and code != 130:
        code = max(code, run_cache(args))
    return code


def run_cache(args: argparse.Namespace) -> int:
    """bench/cache.py with this run's duration (its own client count)."""
    from bench import cache

    signal.signal(signal.SIGINT, signal.default_int_handler)  # run_postgres's cleanup left them ignored
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    argv = ["--duration", str(args.duration), *(["--rounds", str(args.rounds)] if args.rounds_given else [])]
    argv += [flag for flag, on in (("--quick", args.quick), ("--keep", args.keep)) if on]
    log(f"query-result cache: bench/cache.py {' '.join(argv)}")
    return cache.main(argv)


def run_tls(args: argparse.Namespace) -> int:
    """bench/tls.py with this run's duration (its own client count)."""
    from bench import tls

    signal.signal(signal.SIGINT, signal.default_int_handler)  # run_postgres's cleanup left them ignored
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    argv = ["--duration", str(args.duration), *(["--rounds", str(args.rounds)] if args.rounds_given else [])]
    argv += [flag for flag, on in (("--quick", args.quick), ("--keep", args.keep)) if on]
    log(f"client TLS, dbproxy vs PgBouncer: bench/tls.py {' '.join(argv)}")
    return tls.main(argv)


def run_ryw(args: argparse.Namespace) -> int:
    """bench/ryw.py with this run's duration (its own client count: a few writers, not --clients)."""
    from bench import ryw

    signal.signal(signal.SIGINT, signal.default_int_handler)  # run_postgres's cleanup left them ignored
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    argv = ["--duration", str(args.duration), *(["--rounds", str(args.rounds)] if args.rounds_given else [])]
    argv += [flag for flag, on in (("--quick", args.quick), ("--keep", args.keep)) if on]
    log(f"read_your_writes cost: bench/ryw.py {' '.join(argv)}")
    return ryw.main(argv)


def run_mysql(args: argparse.Namespace) -> int:
    """bench/sysbench.py with this run's settings; its JSON and Markdown into bench/results/."""
    signal.signal(signal.SIGINT, signal.default_int_handler)  # run_postgres's cleanup left them ignored
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    json_path = RESULTS_DIR / f"sysbench-{stamp}.json"
    argv = ["--json", str(json_path), "--duration", str(args.duration), "--threads", str(args.clients),
            "--wait-idle", str(args.wait_idle), "--profile-dir", str(RESULTS_DIR)]  # fmt: skip
    if args.rounds_given:
        argv += ["--rounds", str(args.rounds)]
    argv += [
        flag
        for flag, on in (("--quick", args.quick), ("--profile", args.profile), ("--keep", args.keep))
        if on
    ]
    log(f"MySQL benchmark: bench/sysbench.py {' '.join(argv)}")
    code = mysql_bench.main(argv)
    if json_path.exists():
        markdown = json.loads(json_path.read_text()).get("table_markdown", "")
        (RESULTS_DIR / f"sysbench-{stamp}.md").write_text(markdown)
        (RESULTS_DIR / "sysbench-latest.md").write_text(markdown)
        shutil.copyfile(json_path, RESULTS_DIR / "sysbench-latest.json")
        log(f"MySQL results: {json_path} (and sysbench-latest.json / .md)")
    return code


def run_postgres(args: argparse.Namespace) -> int:
    """The PostgreSQL benchmark (the module docstring); 0, 1 (a failure or error) or 130 (interrupted)."""
    signal.signal(signal.SIGTERM, _on_sigterm)
    bench = Bench(args)
    try:
        bench.setup()
        bench.warm_up()
        bench.measure()
        if args.endpoints:
            bench.measure_classification()
        if args.profile:
            bench.run_profile()
        _, all_ok = bench.report()
        return 0 if all_ok else 1
    except KeyboardInterrupt:
        log("interrupted: cleaning up")
        return 130
    except (BenchError, PgClusterError) as exc:
        log(f"error: {exc}")
        return 1
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # a second Ctrl-C must not abort the cleanup
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        bench.cleanup()


if __name__ == "__main__":
    sys.exit(main())
