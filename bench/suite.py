"""`make bench`: the benchmark report (issue 18): every scenario side by side, bench/results/RESULTS.md + plots.

Run from the repository root: `.venv/bin/python -m bench.suite [--quick] [--workers N] [--skip mysql,failover]`.

One PostgreSQL primary in a temporary directory; in front of it, on free ports: dbproxy with
workers = 1, dbproxy with workers = N (when this commit has `[server] workers`; --workers, default the
CPU count), and PgBouncer (transaction pooling, md5, the same pool size). Every measurement runs
against every target in the same rounds, the target order rotated per round, and keeps the median:
absolute numbers on a small shared machine are noisy, the ratios measured side by side are the result.

Sections, with a progress line for each step (and the time left):
1. TPS: pgbench -S -M simple, -S -M prepared, TPC-B-like at --clients (16), transaction mode.
2. Added latency: per-transaction latencies (pgbench --log) at 1 and 16 clients, -S -M simple:
   p50/p99 of each target, and the target's p50/p99 minus direct's; a CDF plot.
3. The -C storm (a new connection per transaction) at 16 and 64 clients.
4. 10,000 idle clients (--idle-clients) held by bench/idle.py: resident memory of each pooler's process
   tree before and with them, and the TPS of 16 active clients beside them.
5. read_your_writes cost on a split endpoint (bench/ryw.py, its own primary + replica).
6. MySQL point select, direct vs dbproxy (bench/sysbench.py, its own MariaDB).
7. The failover timeline: one kill -9 drill (bench/failover.py) plotted write by write.
Then bench/results/RESULTS.md (tables, targets met or not) and bench/results/*.png.
"""

from __future__ import annotations

import argparse
import json
import os
import select
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import python_relay  # noqa: E402
from bench.idle import tree_pss_bytes, tree_rss_bytes  # noqa: E402
from bench.latency import cdf_points, log_args, percentiles, read_latencies, remove_logs  # noqa: E402
from bench.pgbench import Endpoint, Workload, run_pgbench  # noqa: E402
from bench.procs import BenchError, Service, clean_env, git_version, run_checked  # noqa: E402
from bench.services import (  # noqa: E402
    DbproxyCluster,
    pgbouncer_supports_prepared,
    pgbouncer_version,
    start_dbproxy,
    start_pgbouncer,
)
from deploy.pgcluster import APP_DB, HOST, PgCluster, free_ports, pg_binary  # noqa: E402

REPO_ROOT = Path(__file__).resolve().parent.parent
RESULTS = REPO_ROOT / "bench" / "results"
USER, PASSWORD = "bench", "bench-secret"

SIMPLE = Workload("simple", "`-S -M simple`", ("-S", "-M", "simple"), 0.0)
PREPARED = Workload("prepared", "`-S -M prepared`", ("-S", "-M", "prepared"), 0.0, prepared=True)
TPCB = Workload("tpcb", "TPC-B-like `-M simple`", ("-b", "tpcb-like", "-M", "simple"), 0.0)
CONNECT = Workload("connect", "`-S -M simple -C`", ("-S", "-M", "simple", "-C"), 0.0)


@dataclass
class Progress:
    """One line per step on stderr: step n/total, what, elapsed, and the time left as planned."""

    plan: list[tuple[str, float]]  # (step name, planned seconds)
    began: float = field(default_factory=time.monotonic)
    done_planned: float = 0.0
    index: int = 0

    def step(self, name: str) -> None:
        planned = dict(self.plan).get(name, 0.0)
        self.index += 1
        elapsed = time.monotonic() - self.began
        left = sum(s for _, s in self.plan) - self.done_planned
        print(f"bench [{self.index}/{len(self.plan)}] {name}  (elapsed {elapsed / 60:.1f} min, "
              f"about {left / 60:.1f} min left)", file=sys.stderr, flush=True)
        self.done_planned += planned


def log(message: str) -> None:
    print(f"bench:   {message}", file=sys.stderr, flush=True)


def workers_supported() -> bool:
    """Whether this commit's config accepts `[server] workers` (issue 18's multi-process mode)."""
    from proxy.config import ConfigError, parse_config

    text = ('[server]\nworkers = 2\n[[users]]\nname = "u"\npassword = "p"\n[clusters.c]\nengine = "postgres"\n'
            'instances = ["127.0.0.1:1"]\n[[clusters.c.endpoints]]\nname = "w"\nlisten = "127.0.0.1:2"\n'
            'role = "writer"\n')
    try:
        parse_config(text)
    except ConfigError:
        return False
    return True


class Suite:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.workdir = Path(tempfile.mkdtemp(prefix="dbproxy-suite-", dir="/tmp"))
        self.workdir.chmod(0o755)
        self.cluster: PgCluster | None = None
        self.services: dict[str, Service] = {}
        self.endpoints: dict[str, Endpoint] = {}
        self.targets: list[str] = []
        self.data: dict[str, Any] = {"started": datetime.now().strftime("%Y-%m-%d %H:%M"),
                                     "cpus": os.cpu_count(), "loadavg_before": os.getloadavg(),
                                     "dbproxy": git_version(), "notes": []}

    # ------------------------------------------------------------------ setup

    def setup(self) -> None:
        args = self.args
        (port,) = free_ports(1)
        log(f"PostgreSQL primary on {port}")
        self.cluster = PgCluster(self.workdir / "pg", [port], users={USER: ("", "trust")})
        self.cluster.start()
        run_checked([pg_binary("pgbench"), "-i", "-q", "-s", str(args.scale), "-h", HOST, "-p", str(port),
                     "-U", USER, APP_DB], "pgbench -i")
        self.cluster.sql(0, "CHECKPOINT")
        self.endpoints["direct"] = Endpoint("direct", port, USER, APP_DB, None)
        self.targets = ["direct"]
        worker_counts = [1]
        if args.workers > 1:
            if workers_supported():
                worker_counts.append(args.workers)
            else:
                self.data["notes"].append(f"dbproxy workers = {args.workers}: not measured, this commit has no "
                                          "`[server] workers` setting")
        for workers in worker_counts:
            name = f"dbproxy-w{workers}"
            (listen,) = free_ports(1)
            extra = f"workers = {workers}\n" if workers > 1 else ""
            log(f"{name} on {listen}")
            self.services[name] = start_dbproxy(
                self.workdir / name, [DbproxyCluster("main", (port,), {"writer": listen})], USER, PASSWORD,
                APP_DB, args.pool_size, server_extra=extra)
            self.endpoints[name] = Endpoint(name, listen, USER, APP_DB, PASSWORD)
            self.targets.append(name)
        (bouncer,) = free_ports(1)
        self.data["pgbouncer"], numbers = pgbouncer_version()
        self.bouncer_prepared = pgbouncer_supports_prepared(numbers)
        log(f"PgBouncer on {bouncer}")
        self.services["pgbouncer"] = start_pgbouncer(self.workdir / "pgbouncer", bouncer, port, USER, PASSWORD,
                                                     APP_DB, args.pool_size)
        self.endpoints["pgbouncer"] = Endpoint("pgbouncer", bouncer, USER, APP_DB, PASSWORD)
        self.targets.append("pgbouncer")
        if not args.no_relay:   # the floor of a Python proxy: bytes forwarded, nothing else (no pooling)
            (relay,) = free_ports(1)
            log(f"uvloop relay (bench/python_relay.py) on {relay}")
            self.services["relay"] = python_relay.start_relay(self.workdir / "relay", HOST, relay, HOST, port)
            self.endpoints["relay"] = Endpoint("relay", relay, USER, APP_DB, None)
            self.targets.append("relay")
            self.data["notes"].append("relay: bench/python_relay.py, a do-nothing asyncio + uvloop byte forwarder "
                                      "(one process, one server connection per client, no pooling): what any "
                                      "proxy written in Python costs before it does anything")

    def stop(self) -> None:
        for service in self.services.values():
            service.stop()
        if self.cluster is not None:
            self.cluster.destroy()
        shutil.rmtree(self.workdir, ignore_errors=True)

    # ---------------------------------------------------------------- measure

    def rounds(self, workload: Workload, clients: int, duration: float, targets: list[str] | None = None,
               latencies: bool = False) -> dict[str, dict[str, Any]]:
        """Every target, ``self.args.rounds`` times, order rotated; per target the median TPS (and, with
        ``latencies``, the per-transaction latencies of all rounds)."""
        targets = targets or self.targets
        tps: dict[str, list[float]] = {t: [] for t in targets}
        lats: dict[str, list[float]] = {t: [] for t in targets}
        errors: dict[str, str] = {}
        for r in range(self.args.rounds):
            for target in targets[r % len(targets):] + targets[: r % len(targets)]:
                prefix = self.workdir / "logs" / f"{workload.key}-{clients}-{target}-{r}"
                prefix.parent.mkdir(exist_ok=True)
                measured = (Workload(workload.key, workload.label, workload.args + log_args(prefix), 0.0)
                            if latencies else workload)
                cell = run_pgbench(self.endpoints[target], measured, clients, duration, r)
                if cell.ok and cell.tps is not None:
                    tps[target].append(cell.tps)
                else:
                    errors[target] = (cell.error or "no TPS")[:200]
                if latencies:
                    lats[target].extend(read_latencies(prefix))
                    remove_logs(prefix)
        return {t: {"tps": statistics.median(tps[t]) if tps[t] else None, "tps_rounds": tps[t],
                    "latencies": lats[t], "error": errors.get(t)} for t in targets}

    def tps_section(self) -> None:
        args = self.args
        table: dict[str, dict[str, Any]] = {}
        for workload in (SIMPLE, PREPARED, TPCB):
            self.progress.step(f"TPS {workload.label} at {args.clients} clients")
            targets = self.targets
            if workload.prepared and not self.bouncer_prepared:
                targets = [t for t in targets if t != "pgbouncer"]
                self.data["notes"].append(f"`-S -M prepared`: {self.data['pgbouncer']} has no prepared-statement "
                                          "support in transaction mode (1.21 added it): not measured on PgBouncer")
            cells = self.rounds(workload, args.clients, args.duration, targets)
            table[workload.key] = {t: {k: v for k, v in c.items() if k != "latencies"} for t, c in cells.items()}
        self.data["tps"] = table

    def latency_section(self) -> None:
        args = self.args
        result: dict[str, dict[str, Any]] = {}
        for clients in (1, args.clients):
            self.progress.step(f"latency -S -M simple at {clients} client(s)")
            cells = self.rounds(SIMPLE, clients, args.latency_duration, latencies=True)
            direct = percentiles(cells["direct"]["latencies"])
            per: dict[str, Any] = {}
            for target, cell in cells.items():
                points = percentiles(cell["latencies"])
                per[target] = {
                    "tps": cell["tps"], "transactions": len(cell["latencies"]), "percentiles": points,
                    "added": {k: round(v - direct[k], 1) for k, v in points.items() if k in direct},
                    "cdf": cdf_points(cell["latencies"]), "error": cell["error"],
                }
            result[str(clients)] = per
        self.data["latency"] = result

    def connect_section(self) -> None:
        result: dict[str, Any] = {}
        for clients in (16, 64):
            self.progress.step(f"-C storm at {clients} clients")
            cells = self.rounds(CONNECT, clients, self.args.duration)
            result[str(clients)] = {t: {k: v for k, v in c.items() if k != "latencies"} for t, c in cells.items()}
        self.data["connect"] = result

    def idle_section(self) -> None:
        args = self.args
        result: dict[str, Any] = {}
        for target in self.targets:
            if target in ("direct", "relay"):   # the relay opens a server connection per client
                continue
            self.progress.step(f"{args.idle_clients} idle clients on {target}")
            service = self.services[target]
            endpoint = self.endpoints[target]
            before, pss_before = tree_rss_bytes(service.pid), tree_pss_bytes(service.pid)
            holder = subprocess.Popen(
                [sys.executable, "-m", "bench.idle", "--port", str(endpoint.port), "--clients",
                 str(args.idle_clients), "--user", USER, "--database", APP_DB],
                stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, cwd=REPO_ROOT,
                env=clean_env({"PGPASSWORD": PASSWORD}))
            try:
                assert holder.stdout is not None
                ready, _, _ = select.select([holder.stdout], [], [], 60 + args.idle_clients / 100)
                line = holder.stdout.readline().split() if ready else ["timed out opening the clients"]
                if not line or line[0] != "ready":
                    result[target] = {"error": " ".join(line) or "the idle holder exited"}
                    continue
                time.sleep(1.0)
                with_idle, pss_with_idle = tree_rss_bytes(service.pid), tree_pss_bytes(service.pid)
                cell = run_pgbench(endpoint, SIMPLE, 16, args.duration, 0)
                result[target] = {
                    "login_seconds": float(line[2]), "rss_before_mb": round(before / 2**20, 1),
                    "rss_with_idle_mb": round(with_idle / 2**20, 1),
                    # PSS: shared pages (the workers' forked code) counted once over the tree
                    "pss_before_mb": round(pss_before / 2**20, 1), "pss_with_idle_mb": round(pss_with_idle / 2**20, 1),
                    "per_client_kb": round((with_idle - before) / args.idle_clients / 1024, 2),
                    "tps_16_beside_idle": cell.tps, "error": cell.error,
                }
            finally:
                if holder.stdin is not None:
                    holder.stdin.close()
                try:
                    holder.wait(timeout=60)
                except subprocess.TimeoutExpired:
                    holder.kill()
        self.data["idle"] = {"clients": args.idle_clients, "targets": result}

    # ------------------------------------------------------------ sub-benchmarks

    def sub_benchmarks(self) -> None:
        args = self.args
        quick = ["--quick"] if args.quick else []
        if "ryw" not in args.skip:
            self.progress.step("read_your_writes cost (bench/ryw.py)")
            self.data["ryw"] = self._sub("ryw", [sys.executable, "-m", "bench.ryw", *quick],
                                         RESULTS / "ryw-latest.json")
        if "mysql" not in args.skip:
            self.progress.step("MySQL point select (bench/sysbench.py)")
            path = self.workdir / "sysbench.json"
            self.data["mysql"] = self._sub("mysql", [sys.executable, "-m", "bench.sysbench", *quick,
                                                     "--json", str(path)], path)
        if "failover" not in args.skip:
            self.progress.step("failover drill (bench/failover.py, one run)")
            path = self.workdir / "failover.json"
            got = self._sub("failover", [sys.executable, "-m", "bench.failover", "--runs", "1", "--json",
                                         str(path)], path, ok_codes=(0, 1))
            self.data["failover"] = got[0] if isinstance(got, list) and got else got

    def _sub(self, name: str, argv: list[str], result: Path, ok_codes: tuple[int, ...] = (0,)) -> Any:
        began = time.monotonic()
        res = subprocess.run(argv, cwd=REPO_ROOT, capture_output=True, text=True, env=clean_env(), timeout=900)
        log(f"{name}: exit {res.returncode} after {time.monotonic() - began:.0f}s")
        if res.returncode not in ok_codes or not result.exists():
            return {"error": f"exit {res.returncode}: {(res.stderr or res.stdout)[-400:]}"}
        return json.loads(result.read_text())

    # ------------------------------------------------------------------ run

    def plan(self) -> list[tuple[str, float]]:
        args = self.args
        n = len(self.targets) * args.rounds
        steps = [(f"TPS {w.label} at {args.clients} clients", n * (args.duration + 1)) for w in (SIMPLE, PREPARED, TPCB)]
        steps += [(f"latency -S -M simple at {c} client(s)", n * (args.latency_duration + 1)) for c in (1, args.clients)]
        steps += [(f"-C storm at {c} clients", n * (args.duration + 1)) for c in (16, 64)]
        steps += [(f"{args.idle_clients} idle clients on {t}", args.duration + 10 + args.idle_clients / 1500)
                  for t in self.targets if t not in ("direct", "relay")]
        quick = args.quick
        for name, label, seconds in (("ryw", "read_your_writes cost (bench/ryw.py)", 60 if quick else 150),
                                     ("mysql", "MySQL point select (bench/sysbench.py)", 60 if quick else 150),
                                     ("failover", "failover drill (bench/failover.py, one run)", 40)):
            if name not in args.skip:
                steps.append((label, seconds))
        return steps

    def run(self) -> None:
        self.setup()
        self.progress = Progress(self.plan())
        self.tps_section()
        self.latency_section()
        self.connect_section()
        self.idle_section()
        self.sub_benchmarks()
        self.data["loadavg_after"] = os.getloadavg()
        self.data["targets"] = self.targets
        self.data["settings"] = {k: v for k, v in vars(self.args).items() if k != "skip"}


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="bench.suite", description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="short runs, one round, 1,000 idle clients (checks)")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 2, help="dbproxy workers = N column")
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--pool-size", type=int, default=20)
    parser.add_argument("--scale", type=int, default=10)
    parser.add_argument("--rounds", type=int)
    parser.add_argument("--duration", type=float, help="seconds per TPS run (default 6, 2 with --quick)")
    parser.add_argument("--latency-duration", type=float, help="seconds per latency run (default 5, 2 with --quick)")
    parser.add_argument("--idle-clients", type=int, help="default 10000, 1000 with --quick")
    parser.add_argument("--skip", default="", help="comma-separated: ryw, mysql, failover")
    parser.add_argument("--no-relay", action="store_true", help="leave out the uvloop relay column")
    args = parser.parse_args(argv)
    args.rounds = args.rounds or (1 if args.quick else 3)
    args.duration = args.duration or (2.0 if args.quick else 6.0)
    args.latency_duration = args.latency_duration or (2.0 if args.quick else 5.0)
    args.idle_clients = args.idle_clients or (1000 if args.quick else 10000)
    args.skip = {s.strip() for s in args.skip.split(",") if s.strip()}
    return args


def main(argv: list[str] | None = None) -> int:
    from bench.results_page import write_results

    args = parse_args(argv)
    suite = Suite(args)
    try:
        suite.run()
    except (BenchError, KeyboardInterrupt) as exc:
        print(f"bench: {exc or 'interrupted'}", file=sys.stderr)
        return 1
    finally:
        suite.stop()
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "suite-latest.json").write_text(json.dumps(suite.data, indent=1, default=str) + "\n")
    page = write_results(suite.data, RESULTS)
    print(page)
    print(f"bench: wrote {RESULTS / 'RESULTS.md'} and its plots", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
