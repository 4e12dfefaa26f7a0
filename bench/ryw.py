"""What read_your_writes costs a write workload on a split endpoint (SPEC §3.4, issue 12).

Run from the repository root: `.venv/bin/python -m bench.ryw [--quick] [--rounds 5] [--clients 4]`
(or `bench/run.py --ryw`, after the main benchmark). In a temporary directory on free ports: a
PostgreSQL primary + replica (deploy/pgcluster.py, the benchmark's usual settings: fsync and
synchronous_commit off, so commits are cheap and the extra round trip weighs the most) and dbproxy
with two split endpoints over them, `on` (read_your_writes left at its default, on) and `off`
(`read_your_writes = false`), transaction pooling with a pool larger than the client count.

Workloads, pgbench -M simple with --clients clients (-j = -c), one run of --duration seconds per
endpoint and round, the endpoint order alternating per round (on, off / off, on):
- `tpcb`: pgbench's built-in TPC-B-like transaction (BEGIN; 3 UPDATEs, a SELECT, an INSERT; END);
- `update`: one autocommit UPDATE of a random pgbench_accounts row per transaction (the shortest
  write transaction, where the follow-up costs the most relative to the work).

Every transaction writes, so on `on` each one needs the primary's WAL position after it: the proxy
reads `pg_current_wal_insert_lsn()` on a connection of its own (proxy/engines/postgres/positions.py),
one query for all the writes that committed before it was sent, while the client's server connection
goes back at once. Reported per workload: median TPS of each endpoint, their ratio (and the median of
the per-round ratios), the median of pgbench's "latency average" and the latency added per write
transaction (on − off). Results: bench/results/ryw-<stamp>.json / .md and ryw-latest.json / .md.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

# `python bench/ryw.py` puts bench/, not the repository root, on sys.path.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.pgbench import CellRun, Endpoint, Workload, run_pgbench  # noqa: E402
from bench.procs import BenchError, Service, git_version, run_checked  # noqa: E402
from bench.report import save_results  # noqa: E402
from bench.services import query_check  # noqa: E402
from deploy.pgcluster import APP_DB, HOST, PgCluster, PgClusterError, free_ports, pg_binary  # noqa: E402

REPO_ROOT = Path(__file__).resolve().parent.parent
USER, PASSWORD = "bench", "bench-secret"
ENDPOINTS = ("on", "off")
UPDATE_SCRIPT = """\
\\set aid random(1, 100000 * :scale)
\\set delta random(-5000, 5000)
UPDATE pgbench_accounts SET abalance = abalance + :delta WHERE aid = :aid;
"""
_LATENCY_RE = re.compile(r"^latency average = ([0-9.]+) ms", re.M)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="bench/ryw.py", description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=int, help="seconds per pgbench run (default 10, 3 with --quick)")
    parser.add_argument("--rounds", type=int, help="rounds, endpoint order alternating (default 5, 3 with --quick)")
    parser.add_argument("--quick", action="store_true", help="shorter runs, fewer rounds")
    parser.add_argument("--clients", type=int, default=4, help="pgbench -c (and -j) (default 4)")
    parser.add_argument("--scale", type=int, default=10, help="pgbench -i -s (default 10)")
    parser.add_argument("--pool-size", type=int, default=8, help="server connections per pool (default 8)")
    parser.add_argument("--workload", default="tpcb,update", help="comma-separated: tpcb, update (default both)")
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory (logs, data)")
    args = parser.parse_args(argv)
    args.duration = args.duration or (3 if args.quick else 10)
    args.rounds = args.rounds or (3 if args.quick else 5)
    args.workloads = [w.strip() for w in args.workload.split(",") if w.strip()]
    if not args.workloads or any(w not in ("tpcb", "update") for w in args.workloads):
        parser.error(f"--workload {args.workload!r}: choose from tpcb, update")
    for name in ("duration", "rounds", "clients", "scale", "pool_size"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be at least 1")
    return args


def log(message: str) -> None:
    print(f"bench ryw: {message}", file=sys.stderr, flush=True)


def dbproxy_config(instances: list[int], ports: dict[str, int], pool_size: int) -> str:
    addrs = ", ".join(f'"{HOST}:{port}"' for port in instances)
    return f"""\
# Written by bench/ryw.py for one run.
[server]
log_level        = "info"
shutdown_timeout = "2s"

[[users]]
name     = "{USER}"
password = "{PASSWORD}"   # the servers let this role in with trust

[clusters.main]
engine      = "postgres"
instances   = [{addrs}]
client_auth = "md5"
tls         = {{ mode = "disable" }}
server_tls  = {{ mode = "disable" }}

[clusters.main.health]
interval = "200ms"

[clusters.main.pool]
mode                   = "transaction"
max_server_connections = {pool_size}

[[clusters.main.endpoints]]
name   = "on"                 # read_your_writes: the default (on)
listen = "{HOST}:{ports["on"]}"
role   = "split"

[[clusters.main.endpoints]]
name   = "off"
listen = "{HOST}:{ports["off"]}"
role   = "split"
read_your_writes = false
"""


@dataclass
class Summary:
    """One workload's result over all rounds (medians)."""

    workload: str
    tps: dict[str, float]
    latency_ms: dict[str, float]
    tps_ratio: float               # median TPS on / median TPS off
    paired_ratio: float            # median over rounds of (TPS on / TPS off) of the same round
    added_latency_us: float        # median latency on − median latency off, per write transaction
    rounds: int

    def to_json(self) -> dict[str, Any]:
        return dict(self.__dict__)


def latency_ms(cell: CellRun) -> float | None:
    m = _LATENCY_RE.search(cell.output_tail)
    return float(m.group(1)) if m else None


def summarize(workload: str, runs: list[CellRun]) -> Summary:
    """Medians per endpoint over the rounds of one workload (every run must have succeeded)."""
    by_round: dict[int, dict[str, CellRun]] = {}
    for cell in runs:
        by_round.setdefault(cell.round, {})[cell.target] = cell
    tps = {e: statistics.median(c.tps or 0.0 for c in runs if c.target == e) for e in ENDPOINTS}
    latency = {e: statistics.median(latency_ms(c) or 0.0 for c in runs if c.target == e) for e in ENDPOINTS}
    paired = [(r["on"].tps or 0.0) / (r["off"].tps or 1.0) for r in by_round.values() if set(r) == set(ENDPOINTS)]
    return Summary(workload, tps, latency, tps["on"] / tps["off"], statistics.median(paired),
                   (latency["on"] - latency["off"]) * 1000.0, len(by_round))


def markdown(summaries: list[Summary], args: argparse.Namespace, facts: dict[str, Any]) -> str:
    lines = [
        f"# read_your_writes cost on a split endpoint ({facts['date']})",
        "",
        f"pgbench -M simple, {args.clients} clients (-j {args.clients}), {args.duration} s per run, "
        f"{args.rounds} rounds (endpoint order alternating), medians; scale {args.scale}, pool "
        f"{args.pool_size}; primary + replica with fsync and synchronous_commit off; {facts['cpus']} CPUs, "
        f"load average {facts['loadavg_before']} before, {facts['loadavg_after']} after; dbproxy {facts['dbproxy']}.",
        "",
        "| workload | TPS on | TPS off | on / off | per-round on / off | latency on (ms) | latency off (ms) "
        "| added per write transaction |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for s in summaries:
        lines.append(f"| {s.workload} | {s.tps['on']:.0f} | {s.tps['off']:.0f} | {s.tps_ratio:.3f} | "
                     f"{s.paired_ratio:.3f} | {s.latency_ms['on']:.3f} | {s.latency_ms['off']:.3f} | "
                     f"{s.added_latency_us:+.0f} µs |")
    lines += ["", "`on`: read_your_writes at its default (on): after write transactions the proxy reads "
              "pg_current_wal_insert_lsn() on a connection of its own (one read for every write committed "
              "before it); `off`: `read_your_writes = false`.", ""]
    return "\n".join(lines)


class RywBench:
    """One run: owns the cluster, dbproxy and the temporary directory."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.workdir = Path(tempfile.mkdtemp(prefix="dbproxy-ryw-", dir="/tmp"))
        self.workdir.chmod(0o755)  # the postgres OS user must reach pg/
        self.cluster: PgCluster | None = None
        self.dbproxy: Service | None = None
        self.endpoints: dict[str, Endpoint] = {}
        self.workloads: dict[str, Workload] = {}
        self.runs: list[CellRun] = []

    def setup(self) -> None:
        args = self.args
        pg_ports = free_ports(2)
        log(f"PostgreSQL primary + replica on {pg_ports} in {self.workdir / 'pg'}")
        self.cluster = PgCluster(self.workdir / "pg", pg_ports, users={USER: ("", "trust")})
        self.cluster.start()
        run_checked([pg_binary("pgbench"), "-i", "-q", "-s", str(args.scale), "-h", HOST, "-p", str(pg_ports[0]),
                     "-U", USER, APP_DB], "pgbench -i")
        self.cluster.sql(0, "CHECKPOINT")
        self._wait_replica_caught_up()
        ports = dict(zip(ENDPOINTS, free_ports(len(ENDPOINTS)), strict=True))
        workdir = self.workdir / "dbproxy"
        workdir.mkdir()
        config = workdir / "dbproxy.toml"
        config.write_text(dbproxy_config(pg_ports, ports, args.pool_size))
        self.dbproxy = Service("dbproxy", [sys.executable, "-m", "proxy", "run", "--config", str(config)],
                               workdir / "dbproxy.log", cwd=REPO_ROOT, env={"PYTHONUNBUFFERED": "1"})
        self.dbproxy.start()
        for name, port in ports.items():
            self.dbproxy.wait_ready(HOST, port, check=query_check(port, USER, APP_DB, PASSWORD))
            self.endpoints[name] = Endpoint(name, port, USER, APP_DB, PASSWORD)
        log(f"dbproxy split endpoints: {ports}")
        script = self.workdir / "update.sql"
        script.write_text(UPDATE_SCRIPT)
        known = {"tpcb": Workload("tpcb", "TPC-B-like", ("-b", "tpcb-like", "-M", "simple"), 0.0),
                 "update": Workload("update", "one UPDATE", ("-f", str(script), "-M", "simple"), 0.0)}
        self.workloads = {key: known[key] for key in args.workloads}

    def _wait_replica_caught_up(self, timeout: float = 120) -> None:
        assert self.cluster is not None
        lsn = self.cluster.sql(0, "SELECT pg_current_wal_lsn()")
        deadline = time.monotonic() + timeout
        while self.cluster.sql(1, f"SELECT pg_last_wal_replay_lsn() >= '{lsn}'::pg_lsn") != "t":
            if time.monotonic() > deadline:
                raise BenchError(f"the replica did not replay up to {lsn} in {timeout:.0f}s")
            time.sleep(0.2)

    def run(self, workload: Workload, endpoint: str, round_no: int, duration: float) -> CellRun:
        cell = run_pgbench(self.endpoints[endpoint], workload, self.args.clients, duration, round_no)
        if not cell.ok:
            raise BenchError(f"{workload.key} on {endpoint}: {cell.error}\n{cell.output_tail}")
        return cell

    def measure(self) -> None:
        for workload in self.workloads.values():
            for endpoint in ENDPOINTS:
                self.run(workload, endpoint, -1, 1 if self.args.quick else 2)   # warm-up
        for round_no in range(self.args.rounds):
            order = ENDPOINTS if round_no % 2 == 0 else ENDPOINTS[::-1]
            for workload in self.workloads.values():
                for endpoint in order:
                    cell = self.run(workload, endpoint, round_no, self.args.duration)
                    self.runs.append(cell)
                    log(f"round {round_no + 1}/{self.args.rounds} {workload.key} {endpoint}: {cell.tps:.0f} TPS, "
                        f"latency {latency_ms(cell)} ms")

    def report(self, facts: dict[str, Any]) -> str:
        summaries = [summarize(key, [c for c in self.runs if c.workload == key]) for key in self.workloads]
        text = markdown(summaries, self.args, facts)
        data = {"facts": facts, "args": {k: v for k, v in vars(self.args).items()},
                "summaries": [s.to_json() for s in summaries], "runs": [c.to_json() for c in self.runs],
                "table_markdown": text}
        saved = save_results("ryw", data, text)
        log(f"results: {saved} (and ryw-latest.md / .json)")
        return text

    def cleanup(self) -> None:
        if self.dbproxy is not None:
            self.dbproxy.stop()
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
    bench = RywBench(args)
    loadavg_before = " ".join(f"{x:.2f}" for x in os.getloadavg())
    try:
        bench.setup()
        bench.measure()
        facts = {"date": datetime.now().strftime("%Y-%m-%d %H:%M"), "cpus": os.cpu_count(),
                 "loadavg_before": loadavg_before, "loadavg_after": " ".join(f"{x:.2f}" for x in os.getloadavg()),
                 "dbproxy": git_version()}
        print(bench.report(facts))
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
