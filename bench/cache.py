"""What the query-result cache gives a read-mostly workload on a split endpoint (SPEC §11, issue 14).

Run from the repository root: `.venv/bin/python -m bench.cache [--quick] [--rounds 3] [--clients 8]`
(or `bench/run.py --cache`, after the main benchmark). In a temporary directory on free ports: a
PostgreSQL primary + replica (deploy/pgcluster.py, fsync and synchronous_commit off), a private
redis-server, and one dbproxy with three clusters over the same two instances, each with one split
endpoint (transaction pooling, read_your_writes at its default):
- `memory`: `[cache] backend = "memory"`; `redis`: the private redis-server; `nocache`: no cache;
and `direct`: pgbench straight to the primary (no proxy, no replica).

Workload: a pgbench script, 90% point reads `SELECT abalance FROM pgbench_accounts WHERE aid = :aid`
and 10% `UPDATE ... SET abalance = abalance + 1` of the same --rows hot rows (random, uniform), with
-M prepared by default (the extended protocol: Bind/Describe/Execute/Sync; --mode simple for Query
messages), --clients clients (-j = -c), one run of --duration s per target and round, the target
order rotating per round. A cache rule admits the SELECT (ttl 60 s); every UPDATE through the proxy
invalidates the point reads of its row (row-scoped) before its ReadyForQuery, so about one read in ten
(the first after an update of its row) misses. "vs no cache, per round": the median over rounds of each
round's ratio to that round's uncached run (the machine's load moves between rounds).

The hit ratio of each run comes from /status (clusters[].cache hits / lookups, the difference over
the run). After the rounds, a verification pass on each cached endpoint: --verify times, a row is
read (populating the cache), updated to a new value by another client through the proxy, then read
again by the first client (prepared and simple) and must return the new value; stale reads are
counted and fail the run. Results: bench/results/cache-<stamp>.json / .md and cache-latest.*.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import urllib.request
from datetime import datetime
from pathlib import Path
from typing import Any

# `python bench/cache.py` puts bench/, not the repository root, on sys.path.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.pgbench import CellRun, Endpoint, Workload, run_pgbench  # noqa: E402
from bench.procs import BenchError, Service, git_version, run_checked  # noqa: E402
from bench.report import save_results  # noqa: E402
from bench.services import query_check  # noqa: E402
from deploy.pgcluster import APP_DB, HOST, PgCluster, PgClusterError, free_ports, pg_binary  # noqa: E402

REPO_ROOT = Path(__file__).resolve().parent.parent
USER, PASSWORD = "bench", "bench-secret"
TARGETS = ("memory", "redis", "nocache", "direct")
CACHED = ("memory", "redis")
SCRIPT = """\
\\set aid random(1, {rows})
\\set r random(1, 100)
\\if :r <= 90
SELECT abalance FROM pgbench_accounts WHERE aid = :aid;
\\else
UPDATE pgbench_accounts SET abalance = abalance + 1 WHERE aid = :aid;
\\endif
"""


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="bench/cache.py", description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=int, help="seconds per pgbench run (default 10, 4 with --quick)")
    parser.add_argument("--rounds", type=int, help="rounds, target order rotating (default 3, 2 with --quick)")
    parser.add_argument("--quick", action="store_true", help="shorter runs, fewer rounds")
    parser.add_argument("--clients", type=int, default=8, help="pgbench -c (and -j) (default 8)")
    parser.add_argument("--rows", type=int, default=1000, help="hot rows read and updated (default 1000)")
    parser.add_argument("--mode", choices=("prepared", "simple"), default="prepared", help="pgbench -M")
    parser.add_argument("--pool-size", type=int, default=8, help="server connections per pool (default 8)")
    parser.add_argument("--verify", type=int, default=200, help="read/update/read checks per cached endpoint")
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory (logs, data)")
    args = parser.parse_args(argv)
    args.duration = args.duration or (4 if args.quick else 10)
    args.rounds = args.rounds or (2 if args.quick else 3)
    for name in ("duration", "rounds", "clients", "rows", "pool_size"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be at least 1")
    return args


def log(message: str) -> None:
    print(f"bench cache: {message}", file=sys.stderr, flush=True)


def dbproxy_config(instances: list[int], ports: dict[str, int], http_port: int, redis_port: int,
                   pool_size: int) -> str:
    addrs = ", ".join(f'"{HOST}:{port}"' for port in instances)
    text = f"""\
# Written by bench/cache.py for one run.
[server]
log_level        = "info"
shutdown_timeout = "2s"
http_listen      = "{HOST}:{http_port}"

[[users]]
name     = "{USER}"
password = "{PASSWORD}"   # the servers let this role in with trust
"""
    for name in ("memory", "redis", "nocache"):
        text += f"""
[clusters.{name}]
engine      = "postgres"
instances   = [{addrs}]
client_auth = "md5"
tls         = {{ mode = "disable" }}
server_tls  = {{ mode = "disable" }}

[clusters.{name}.health]
interval = "200ms"

[clusters.{name}.pool]
mode                   = "transaction"
max_server_connections = {pool_size}

[[clusters.{name}.endpoints]]
name   = "split"
listen = "{HOST}:{ports[name]}"
role   = "split"
"""
        if name != "nocache":
            backend = "memory" if name == "memory" else f"redis://{HOST}:{redis_port}/0"
            text += f"""
[clusters.{name}.cache]
backend = "{backend}"
rules   = [ {{ match = "^SELECT abalance FROM pgbench_accounts", ttl = "60s" }} ]
"""
    return text


def cache_counts(http_port: int) -> dict[str, tuple[int, int]]:
    """cluster → (hits, lookups) from /status."""
    with urllib.request.urlopen(f"http://{HOST}:{http_port}/status", timeout=5) as reply:
        status = json.loads(reply.read())
    counts = {}
    for cluster in status["clusters"]:
        cache = cluster.get("cache")
        if cache:
            counts[cluster["name"]] = (cache["hits"], cache["hits"] + cache["misses"] + cache["bypasses"])
    return counts


def verify(port: int, checks: int, rows: int) -> tuple[int, int]:
    """(stale reads, reads) of read → update by another client → read, prepared and simple."""
    import psycopg

    conninfo = f"host={HOST} port={port} user={USER} password={PASSWORD} dbname={APP_DB} sslmode=disable"
    stale = reads = 0
    sql = "SELECT abalance FROM pgbench_accounts WHERE aid = %s"
    with psycopg.connect(conninfo, autocommit=True) as reader, psycopg.connect(conninfo, autocommit=True) as writer:
        for i in range(checks):
            aid = random.randint(1, rows)
            prepare = i % 2 == 0
            reader.execute(sql, (aid,), prepare=prepare).fetchone()
            reader.execute(sql, (aid,), prepare=prepare).fetchone()   # a hit now, most likely
            new = 1_000_000 + i
            writer.execute("UPDATE pgbench_accounts SET abalance = %s WHERE aid = %s", (new, aid))
            for how in (prepare, not prepare):
                row = reader.execute(sql, (aid,), prepare=how).fetchone()
                reads += 1
                if row is None or row[0] != new:
                    stale += 1
            literal = reader.execute(f"SELECT abalance FROM pgbench_accounts WHERE aid = {aid}").fetchone()
            reads += 1
            if literal is None or literal[0] != new:
                stale += 1
    return stale, reads


class CacheBench:
    """One run: owns the cluster, redis-server, dbproxy and the temporary directory."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.workdir = Path(tempfile.mkdtemp(prefix="dbproxy-cache-", dir="/tmp"))
        self.workdir.chmod(0o755)  # the postgres OS user must reach pg/
        self.cluster: PgCluster | None = None
        self.dbproxy: Service | None = None
        self.redis: Service | None = None
        self.endpoints: dict[str, Endpoint] = {}
        self.http_port = 0
        self.workload: Workload | None = None
        self.runs: list[CellRun] = []
        self.hit_ratio: dict[tuple[str, int], float] = {}
        self.verified: dict[str, tuple[int, int]] = {}

    def setup(self) -> None:
        args = self.args
        if shutil.which("redis-server") is None:
            raise BenchError("redis-server is not installed (make install)")
        pg_ports = free_ports(2)
        log(f"PostgreSQL primary + replica on {pg_ports} in {self.workdir / 'pg'}")
        self.cluster = PgCluster(self.workdir / "pg", pg_ports, users={USER: ("", "trust")})
        self.cluster.start()
        run_checked([pg_binary("pgbench"), "-i", "-q", "-s", "1", "-h", HOST, "-p", str(pg_ports[0]),
                     "-U", USER, APP_DB], "pgbench -i")
        self.cluster.sql(0, "CHECKPOINT")
        redis_port, self.http_port, *ports = free_ports(5)
        self.redis = Service("redis", ["redis-server", "--port", str(redis_port), "--bind", HOST, "--save", "",
                                       "--appendonly", "no", "--dir", str(self.workdir)], self.workdir / "redis.log")
        self.redis.start()
        self.redis.wait_ready(HOST, redis_port)
        named = dict(zip(("memory", "redis", "nocache"), ports, strict=True))
        workdir = self.workdir / "dbproxy"
        workdir.mkdir()
        config = workdir / "dbproxy.toml"
        config.write_text(dbproxy_config(pg_ports, named, self.http_port, redis_port, args.pool_size))
        self.dbproxy = Service("dbproxy", [sys.executable, "-m", "proxy", "run", "--config", str(config)],
                               workdir / "dbproxy.log", cwd=REPO_ROOT, env={"PYTHONUNBUFFERED": "1"})
        self.dbproxy.start()
        for name, port in named.items():
            self.dbproxy.wait_ready(HOST, port, check=query_check(port, USER, APP_DB, PASSWORD))
            self.endpoints[name] = Endpoint(name, port, USER, APP_DB, PASSWORD)
        self.endpoints["direct"] = Endpoint("direct", pg_ports[0], USER, APP_DB, None)
        log(f"dbproxy split endpoints: {named}, redis on {redis_port}")
        script = self.workdir / "cache.sql"
        script.write_text(SCRIPT.format(rows=args.rows))
        self.workload = Workload("cache", "90% reads / 10% updates", ("-f", str(script), "-M", args.mode), 2.0,
                                 prepared=args.mode == "prepared")

    def run(self, target: str, round_no: int, duration: float) -> CellRun:
        assert self.workload is not None
        before = cache_counts(self.http_port)
        cell = run_pgbench(self.endpoints[target], self.workload, self.args.clients, duration, round_no)
        if not cell.ok:
            raise BenchError(f"{target}: {cell.error}\n{cell.output_tail}")
        if target in CACHED:
            after = cache_counts(self.http_port)
            hits, looked = (a - b for a, b in zip(after[target], before[target], strict=True))
            self.hit_ratio[(target, round_no)] = hits / looked if looked else 0.0
        return cell

    def measure(self) -> None:
        for target in TARGETS:
            self.run(target, -1, 1 if self.args.quick else 2)   # warm-up
        for round_no in range(self.args.rounds):
            shift = round_no % len(TARGETS)
            for target in TARGETS[shift:] + TARGETS[:shift]:
                cell = self.run(target, round_no, self.args.duration)
                self.runs.append(cell)
                ratio = self.hit_ratio.get((target, round_no))
                log(f"round {round_no + 1}/{self.args.rounds} {target}: {cell.tps:.0f} TPS"
                    + (f", hit ratio {ratio:.3f}" if ratio is not None else ""))
        for target in CACHED:
            self.verified[target] = verify(self.endpoints[target].port, self.args.verify, self.args.rows)
            log(f"verification on {target}: {self.verified[target][0]} stale of {self.verified[target][1]} reads")

    def report(self, facts: dict[str, Any]) -> tuple[str, bool]:
        args = self.args
        tps = {t: statistics.median(c.tps or 0.0 for c in self.runs if c.target == t) for t in TARGETS}
        ratio = {t: statistics.median(v for (k, _), v in self.hit_ratio.items() if k == t and _ >= 0)
                 for t in CACHED}
        by_round = {(c.target, c.round): c.tps or 0.0 for c in self.runs}
        # The machine's load moves between rounds: each round's ratio to its own uncached run, then the median.
        per_round = {t: statistics.median(by_round[(t, r)] / by_round[("nocache", r)]
                                          for r in range(args.rounds) if by_round.get(("nocache", r)))
                     for t in TARGETS}
        lines = [
            f"# Query-result cache on a split endpoint ({facts['date']})",
            "",
            f"pgbench -M {args.mode}, 90% `SELECT abalance ... WHERE aid = :aid` / 10% `UPDATE ... abalance + 1` "
            f"over {args.rows} hot rows, {args.clients} clients (-j {args.clients}), {args.duration} s per run, "
            f"{args.rounds} rounds (target order rotating), medians; primary + replica with fsync and "
            f"synchronous_commit off, one dbproxy, transaction pooling (pool {args.pool_size}); {facts['cpus']} "
            f"CPUs, load average {facts['loadavg_before']} before, {facts['loadavg_after']} after; "
            f"dbproxy {facts['dbproxy']}.",
            "",
            "| target | TPS | vs no cache | vs no cache, per round | vs direct | hit ratio |",
            "|---|---:|---:|---:|---:|---:|",
        ]
        for t in TARGETS:
            hit = f"{ratio[t]:.3f}" if t in ratio else "–"
            lines.append(f"| {t} | {tps[t]:.0f} | {tps[t] / tps['nocache']:.2f}× | {per_round[t]:.2f}× "
                         f"| {tps[t] / tps['direct']:.2f}× | {hit} |")
        stale = sum(s for s, _ in self.verified.values())
        lines += ["", "`memory` / `redis`: split endpoint with the cache (memory / a local redis-server); `nocache`: "
                  "the same split endpoint without one; `direct`: pgbench to the primary.",
                  "Verification (read, update through another client, read again, prepared and simple): "
                  + ", ".join(f"{t}: {s} stale of {n} reads" for t, (s, n) in self.verified.items()) + ".", ""]
        text = "\n".join(lines)
        data = {"facts": facts, "args": vars(args), "tps": tps, "vs_nocache_per_round": per_round, "hit_ratio": ratio,
                "verified": self.verified, "runs": [c.to_json() for c in self.runs], "table_markdown": text}
        saved = save_results("cache", data, text)
        log(f"results: {saved} (and cache-latest.md / .json)")
        return text, stale == 0

    def cleanup(self) -> None:
        for service in (self.dbproxy, self.redis):
            if service is not None:
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
    bench = CacheBench(args)
    loadavg_before = " ".join(f"{x:.2f}" for x in os.getloadavg())
    try:
        bench.setup()
        bench.measure()
        facts = {"date": datetime.now().strftime("%Y-%m-%d %H:%M"), "cpus": os.cpu_count(),
                 "loadavg_before": loadavg_before, "loadavg_after": " ".join(f"{x:.2f}" for x in os.getloadavg()),
                 "dbproxy": git_version()}
        text, fresh = bench.report(facts)
        print(text)
        if not fresh:
            log("error: stale reads after an update")
            return 1
        return 0
    except KeyboardInterrupt:
        log("interrupted: cleaning up")
        return 130
    except (BenchError, PgClusterError, subprocess.SubprocessError) as exc:
        log(f"error: {exc}")
        return 1
    finally:
        bench.cleanup()


if __name__ == "__main__":
    sys.exit(main())
