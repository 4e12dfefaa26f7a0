"""dbproxy with [server] workers = 1 and = N side by side with PgBouncer and a direct connection (issue 18).

Run from the repository root: `.venv/bin/python -m bench.workers [--quick] [--rounds 5] [--workers 2]`.
In a temporary directory on free ports: a PostgreSQL primary (deploy/pgcluster.py), dbproxy with one
process, dbproxy with --workers processes, and PgBouncer, the same md5 login, transaction pooling and
pool size for each. Workloads (pgbench, -j = -c), one run of --duration seconds per target and round,
the target order rotated per round, medians over the rounds:
- `select`: `-S -M simple` with --clients clients (16);
- `connect`: `-S -M simple -C` with --clients clients: a new connection (and md5 login) per transaction;
- `latency`: `-S -M simple` with one client: µs each pooler adds per transaction over the direct one.

Reported: TPS per target, dbproxy / PgBouncer for each dbproxy (the goals of issue 18: -S >= 1.0x and
-C >= 1.1x with workers), the pooler's CPU µs per transaction (all its processes, from /proc) and the
load average before and after (the machine may be shared). Results: bench/results/workers-<stamp>.json
/ .md and workers-latest.json / .md.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
from datetime import datetime
from pathlib import Path
from typing import Any

# `python bench/workers.py` puts bench/, not the repository root, on sys.path.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.cpu import tree_seconds  # noqa: E402
from bench.pgbench import CellRun, Endpoint, Workload, run_pgbench  # noqa: E402
from bench.procs import BenchError, Service, git_version, run_checked  # noqa: E402
from bench.report import save_results  # noqa: E402
from bench.services import DbproxyCluster, pgbouncer_version, start_dbproxy, start_pgbouncer  # noqa: E402
from deploy.pgcluster import APP_DB, HOST, PgCluster, PgClusterError, free_ports, pg_binary  # noqa: E402

USER, PASSWORD = "bench", "bench-secret"
WORKLOADS = {
    "select": Workload("select", "`-S -M simple`", ("-S", "-M", "simple"), 1.0),
    "connect": Workload("connect", "`-S -M simple -C`", ("-S", "-M", "simple", "-C"), 1.1),
    "latency": Workload("latency", "`-S -M simple`, 1 client", ("-S", "-M", "simple"), 0.0),
}


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="bench/workers.py", description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=int, help="seconds per pgbench run (default 10, 3 with --quick)")
    parser.add_argument("--rounds", type=int, help="rounds, target order rotated (default 5, 3 with --quick)")
    parser.add_argument("--quick", action="store_true", help="shorter runs, fewer rounds")
    parser.add_argument("--clients", type=int, default=16, help="pgbench -c (and -j) of select and connect")
    parser.add_argument("--workers", type=int, default=2, help="the second dbproxy's [server] workers (default 2)")
    parser.add_argument("--scale", type=int, default=10, help="pgbench -i -s (default 10)")
    parser.add_argument("--pool-size", type=int, default=20, help="server connections per pool, every pooler")
    parser.add_argument("--workload", default="select,connect,latency",
                        help="comma-separated: select, connect, latency (default all)")
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory (logs, data)")
    args = parser.parse_args(argv)
    args.duration = args.duration or (3 if args.quick else 10)
    args.rounds = args.rounds or (3 if args.quick else 5)
    args.workloads = [w.strip() for w in args.workload.split(",") if w.strip()]
    if not args.workloads or any(w not in WORKLOADS for w in args.workloads):
        parser.error(f"--workload {args.workload!r}: choose from {', '.join(WORKLOADS)}")
    if args.workers < 2:
        parser.error("--workers must be at least 2 (workers = 1 is the first dbproxy)")
    return args


def log(message: str) -> None:
    print(f"bench workers: {message}", file=sys.stderr, flush=True)


class WorkersBench:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.workdir = Path(tempfile.mkdtemp(prefix="dbproxy-workersbench-", dir="/tmp"))
        self.workdir.chmod(0o755)
        self.cluster: PgCluster | None = None
        self.services: dict[str, Service] = {}
        self.endpoints: dict[str, Endpoint] = {}
        self.runs: list[CellRun] = []
        self.multi = f"dbproxy-w{args.workers}"
        self.targets = ["direct", "dbproxy", self.multi, "pgbouncer"]

    def setup(self) -> None:
        args = self.args
        (primary,) = free_ports(1)
        log(f"PostgreSQL primary on {primary} in {self.workdir / 'pg'}")
        self.cluster = PgCluster(self.workdir / "pg", [primary], users={USER: ("", "trust")})
        self.cluster.start()
        run_checked([pg_binary("pgbench"), "-i", "-q", "-s", str(args.scale), "-h", HOST, "-p", str(primary),
                     "-U", USER, APP_DB], "pgbench -i")
        self.cluster.sql(0, "CHECKPOINT")
        self.endpoints["direct"] = Endpoint("direct", primary, USER, APP_DB, None)
        one, many, bouncer = free_ports(3)
        for name, port, workers in (("dbproxy", one, 1), (self.multi, many, args.workers)):
            cluster = DbproxyCluster("main", (primary,), {"writer": port})
            self.services[name] = start_dbproxy(self.workdir / name, [cluster], USER, PASSWORD, APP_DB,
                                                args.pool_size, workers, name)
            self.endpoints[name] = Endpoint(name, port, USER, APP_DB, PASSWORD)
        self.services["pgbouncer"] = start_pgbouncer(self.workdir / "pgbouncer", bouncer, primary, USER, PASSWORD,
                                                     APP_DB, args.pool_size)
        self.endpoints["pgbouncer"] = Endpoint("pgbouncer", bouncer, USER, APP_DB, PASSWORD)
        log(f"dbproxy on {one}, dbproxy workers={args.workers} on {many}, PgBouncer on {bouncer}")

    def run(self, workload: Workload, target: str, round_no: int, duration: float) -> CellRun:
        service = self.services.get(target)
        before = tree_seconds(service.pid) if service is not None else None
        clients = 1 if workload.key == "latency" else self.args.clients
        cell = run_pgbench(self.endpoints[target], workload, clients, duration, round_no)
        after = tree_seconds(service.pid) if service is not None else None
        if before is not None and after is not None:
            cell.pooler_cpu_s = after - before
        if not cell.ok:
            raise BenchError(f"{workload.key} on {target}: {cell.error}\n{cell.output_tail}")
        return cell

    def measure(self) -> None:
        workloads = [WORKLOADS[key] for key in self.args.workloads]
        for workload in workloads:
            for target in self.targets:
                self.run(workload, target, -1, 1)   # warm-up
        for round_no in range(self.args.rounds):
            shift = round_no % len(self.targets)
            order = self.targets[shift:] + self.targets[:shift]
            for workload in workloads:
                for target in order:
                    cell = self.run(workload, target, round_no, self.args.duration)
                    self.runs.append(cell)
                    log(f"round {round_no + 1}/{self.args.rounds} {workload.key} {target}: {cell.tps:.0f} TPS")

    def summary(self, key: str) -> dict[str, Any]:
        runs = [c for c in self.runs if c.workload == key]
        tps = {t: statistics.median(c.tps or 0.0 for c in runs if c.target == t) for t in self.targets}
        cpu = {t: statistics.median((c.pooler_cpu_s or 0.0) * 1e6 / max(1, c.transactions or 0)
                                    for c in runs if c.target == t) for t in self.targets if t != "direct"}
        out: dict[str, Any] = {"tps": tps, "cpu_us": cpu,
                               "ratio": {t: tps[t] / tps["pgbouncer"] for t in ("dbproxy", self.multi)}}
        if key == "latency":   # µs per transaction over the direct connection, from the medians
            out["added_us"] = {t: 1e6 / tps[t] - 1e6 / tps["direct"] for t in self.targets if t != "direct"}
        return out

    def markdown(self, summaries: dict[str, dict[str, Any]], facts: dict[str, Any]) -> str:
        args, multi = self.args, self.multi
        lines = [f"# dbproxy workers = 1 and = {args.workers} vs PgBouncer ({facts['date']})", "",
                 f"pgbench, {args.duration} s per run, {args.rounds} rounds (target order rotated), medians; "
                 f"scale {args.scale}, transaction pooling, pool {args.pool_size}, md5 logins; {facts['pgbouncer']}; "
                 f"{facts['cpus']} CPUs, load average {facts['loadavg_before']} before, {facts['loadavg_after']} "
                 f"after (a shared machine: compare the ratios of one run); dbproxy {facts['dbproxy']}.", "",
                 f"| workload | direct TPS | dbproxy TPS | dbproxy w{args.workers} TPS | PgBouncer TPS | "
                 f"dbproxy / PgBouncer | w{args.workers} / PgBouncer | goal (w{args.workers}) | pooler CPU µs per "
                 f"transaction, dbproxy / w{args.workers} / PgBouncer |",
                 "|---|---:|---:|---:|---:|---:|---:|---|---:|"]
        for key, s in summaries.items():
            workload = WORKLOADS[key]
            tps, ratio, cpu = s["tps"], s["ratio"], s["cpu_us"]
            goal = (f"≥ {workload.target_ratio}× {'met' if ratio[multi] >= workload.target_ratio else 'NOT met'}"
                    if workload.target_ratio else "")
            label = workload.label if key == "latency" else f"{workload.label}, {args.clients} clients"
            lines.append(f"| {label} | {tps['direct']:.0f} | {tps['dbproxy']:.0f} | {tps[multi]:.0f} | "
                         f"{tps['pgbouncer']:.0f} | {ratio['dbproxy']:.2f}× | {ratio[multi]:.2f}× | {goal} | "
                         f"{cpu['dbproxy']:.0f} / {cpu[multi]:.0f} / {cpu['pgbouncer']:.0f} |")
        if "latency" in summaries:
            added = summaries["latency"]["added_us"]
            lines += ["", f"Added per transaction at 1 client over direct: dbproxy {added['dbproxy']:.0f} µs, "
                          f"w{args.workers} {added[multi]:.0f} µs, PgBouncer {added['pgbouncer']:.0f} µs "
                          f"(dbproxy / PgBouncer {added['dbproxy'] / added['pgbouncer']:.2f}×)."]
        lines.append("")
        return "\n".join(lines)

    def cleanup(self) -> None:
        for service in reversed(self.services.values()):
            service.stop()
        if self.cluster is not None:
            try:
                self.cluster.stop()
            except PgClusterError as exc:
                log(f"stopping PostgreSQL: {exc}")
        if self.args.keep:
            log(f"kept {self.workdir}")
        else:
            shutil.rmtree(self.workdir, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    bench = WorkersBench(args)
    loadavg_before = " ".join(f"{x:.2f}" for x in os.getloadavg())
    try:
        pgbouncer, _ = pgbouncer_version()
        bench.setup()
        bench.measure()
        facts = {"date": datetime.now().strftime("%Y-%m-%d %H:%M"), "cpus": os.cpu_count(),
                 "loadavg_before": loadavg_before, "loadavg_after": " ".join(f"{x:.2f}" for x in os.getloadavg()),
                 "dbproxy": git_version(), "pgbouncer": pgbouncer}
        summaries = {key: bench.summary(key) for key in args.workloads}
        text = bench.markdown(summaries, facts)
        data = {"facts": facts, "args": dict(vars(args)), "summaries": summaries,
                "runs": [c.to_json() for c in bench.runs], "table_markdown": text}
        saved = save_results("workers", data, text)
        log(f"results: {saved} (and workers-latest.md / .json)")
        print(text)
        return 0
    except KeyboardInterrupt:
        log("interrupted: cleaning up")
        return 130
    except (BenchError, PgClusterError) as exc:
        log(f"error: {exc}")
        return 1
    finally:
        bench.cleanup()


if __name__ == "__main__":
    sys.exit(main())
