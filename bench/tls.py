"""pgbench with TLS between the clients and the pooler: dbproxy and PgBouncer side by side (issue 13).

Run from the repository root: `.venv/bin/python -m bench.tls [--quick] [--rounds 5] [--clients 8]`
(or `bench/run.py --tls`, after the main benchmark). In a temporary directory on free ports: a
PostgreSQL primary (deploy/pgcluster.py, the benchmark's usual settings), a CA and server certificate
from `dbproxy gen-cert` (proxy.tls.certs), dbproxy with a writer endpoint `tls = { mode = "require" }`
and PgBouncer with `client_tls_sslmode = require`, the same certificate, transaction pooling and pool
size for both; neither uses TLS towards the server (what is measured is the client side).

Workloads, pgbench `sslmode=require` (a plain-text client would be refused by both), --clients
clients (-j = -c), one run of --duration seconds per pooler and round, the pooler order alternating
per round:
- `select`: `-S -M simple`, long-lived connections (TLS record processing on every message);
- `connect`: `-S -M simple -C`, a new connection per transaction: a TLS handshake (and the md5 login)
  per transaction, where a pooler's handshake cost shows.

Reported per workload: the median TPS of each pooler, dbproxy / PgBouncer of the medians and the
median of the per-round ratios, and each pooler's own CPU per transaction (from /proc around every
run: on a shared machine it moves less than TPS); the goal (issue 13) is ≥ 0.9× PgBouncer for both. Results:
bench/results/tls-<stamp>.json / .md and tls-latest.json / .md.
"""

from __future__ import annotations

import argparse
import os
import pwd
import shutil
import socket
import ssl
import statistics
import sys
import tempfile
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

# `python bench/tls.py` puts bench/, not the repository root, on sys.path.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import python_relay  # noqa: E402
from bench.cpu import process_seconds  # noqa: E402
from bench.pgbench import CellRun, Endpoint, Workload, run_pgbench  # noqa: E402
from bench.procs import BenchError, Service, git_version, run_checked  # noqa: E402
from bench.report import save_results  # noqa: E402
from bench.services import pgbouncer_version, query_check, start_pgbouncer  # noqa: E402
from deploy.pgcluster import APP_DB, HOST, PG_OS_USER, PgCluster, PgClusterError, free_ports, pg_binary  # noqa: E402
from proxy.tls.certs import generate  # noqa: E402

REPO_ROOT = Path(__file__).resolve().parent.parent
USER, PASSWORD = "bench", "bench-secret"
POOLERS = ("dbproxy", "pgbouncer")
# bench/python_relay.py with TLS: ends TLS and forwards bytes, nothing else (no pooling: a server connection per
# client, so `select` only): the floor of a proxy written in Python with the ssl module.
RELAY = "relay"
GOAL = 0.9
WORKLOADS = {
    "select": Workload("select", "`-S -M simple`", ("-S", "-M", "simple"), GOAL),
    "connect": Workload("connect", "`-S -M simple -C`", ("-S", "-M", "simple", "-C"), GOAL),
}


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="bench/tls.py", description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=int, help="seconds per pgbench run (default 10, 3 with --quick)")
    parser.add_argument("--rounds", type=int, help="rounds, pooler order alternating (default 5, 3 with --quick)")
    parser.add_argument("--quick", action="store_true", help="shorter runs, fewer rounds")
    parser.add_argument("--clients", type=int, default=8, help="pgbench -c (and -j) (default 8)")
    parser.add_argument("--scale", type=int, default=10, help="pgbench -i -s (default 10)")
    parser.add_argument("--pool-size", type=int, default=10, help="server connections per pool, both poolers")
    parser.add_argument("--workload", default="select,connect", help="comma-separated: select, connect (default both)")
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory (logs, data)")
    parser.add_argument("--no-relay", action="store_true", help="leave out the uvloop TLS relay (select)")
    args = parser.parse_args(argv)
    args.duration = args.duration or (3 if args.quick else 10)
    args.rounds = args.rounds or (3 if args.quick else 5)
    args.workloads = [w.strip() for w in args.workload.split(",") if w.strip()]
    if not args.workloads or any(w not in WORKLOADS for w in args.workloads):
        parser.error(f"--workload {args.workload!r}: choose from {', '.join(WORKLOADS)}")
    for name in ("duration", "rounds", "clients", "scale", "pool_size"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be at least 1")
    return args


def log(message: str) -> None:
    print(f"bench tls: {message}", file=sys.stderr, flush=True)


def dbproxy_config(primary: int, port: int, pool_size: int, certs: Path) -> str:
    return f"""\
# Written by bench/tls.py for one run.
[server]
log_level        = "info"
shutdown_timeout = "2s"

[[users]]
name     = "{USER}"
password = "{PASSWORD}"   # the server lets this role in with trust

[clusters.main]
engine      = "postgres"
instances   = ["{HOST}:{primary}"]
client_auth = "md5"
tls         = {{ mode = "require", cert = "{certs / "server.pem"}", key = "{certs / "server-key.pem"}" }}
server_tls  = {{ mode = "disable" }}

[clusters.main.pool]
mode                   = "transaction"
max_server_connections = {pool_size}
min_idle               = 0
max_client_connections = 10000

[[clusters.main.endpoints]]
name   = "writer"
listen = "{HOST}:{port}"
role   = "writer"
"""


@dataclass
class Summary:
    """One workload's result over all rounds (medians)."""

    workload: str
    tps: dict[str, float]
    ratio: float            # median TPS dbproxy / median TPS PgBouncer
    paired_ratio: float     # median over rounds of (dbproxy / PgBouncer) of the same round
    cpu_us: dict[str, float]   # median of the pooler's own CPU µs per transaction
    rounds: int
    relay_ratio: float | None = None   # median TPS of the TLS relay / median TPS PgBouncer (select only)

    @property
    def meets_goal(self) -> bool:
        return self.ratio >= GOAL

    def to_json(self) -> dict[str, Any]:
        return {**self.__dict__, "goal": GOAL, "meets_goal": self.meets_goal}


def summarize(workload: str, runs: list[CellRun]) -> Summary:
    """Medians per pooler over the rounds of one workload (every run must have succeeded)."""
    by_round: dict[int, dict[str, CellRun]] = {}
    for cell in runs:
        by_round.setdefault(cell.round, {})[cell.target] = cell
    targets = [p for p in (*POOLERS, RELAY) if any(c.target == p for c in runs)]
    tps = {p: statistics.median(c.tps or 0.0 for c in runs if c.target == p) for p in targets}
    paired = [(r["dbproxy"].tps or 0.0) / (r["pgbouncer"].tps or 1.0) for r in by_round.values()
              if set(POOLERS) <= set(r)]
    cpu = {p: statistics.median(cpu_per_transaction_us(c) for c in runs if c.target == p) for p in targets}
    relay = tps[RELAY] / tps["pgbouncer"] if RELAY in tps else None
    return Summary(workload, tps, tps["dbproxy"] / tps["pgbouncer"], statistics.median(paired), cpu, len(by_round),
                   relay)


def cpu_per_transaction_us(cell: CellRun) -> float:
    return (cell.pooler_cpu_s or 0.0) * 1e6 / max(1, cell.transactions or 0)


def markdown(summaries: list[Summary], args: argparse.Namespace, facts: dict[str, Any]) -> str:
    lines = [
        f"# pgbench with client TLS: dbproxy vs PgBouncer ({facts['date']})",
        "",
        f"pgbench `sslmode=require`, {args.clients} clients (-j {args.clients}), {args.duration} s per run, "
        f"{args.rounds} rounds (pooler order alternating), medians; scale {args.scale}, transaction pooling, "
        f"pool {args.pool_size}; dbproxy `tls = {{ mode = \"require\" }}`, {facts['pgbouncer']} "
        f"`client_tls_sslmode = require`, the same certificate (ECDSA P-256, from `dbproxy gen-cert`), "
        f"{facts['tls_version']}; {facts['cpus']} CPUs, load average {facts['loadavg_before']} before, "
        f"{facts['loadavg_after']} after; dbproxy {facts['dbproxy']}.",
        "",
        "| workload | dbproxy TPS | PgBouncer TPS | dbproxy / PgBouncer | per-round ratio | goal "
        "| pooler CPU µs per transaction, dbproxy / PgBouncer | uvloop TLS relay TPS (/ PgBouncer), CPU µs |",
        "|---|---:|---:|---:|---:|---|---:|---:|",
    ]
    for s in summaries:
        relay = (f"{s.tps[RELAY]:.0f} ({s.relay_ratio:.2f}×), {s.cpu_us[RELAY]:.0f}" if s.relay_ratio is not None
                 else "—")
        lines.append(f"| {WORKLOADS[s.workload].label} | {s.tps['dbproxy']:.0f} | {s.tps['pgbouncer']:.0f} | "
                     f"{s.ratio:.2f}× | {s.paired_ratio:.2f}× | ≥ {GOAL}× {'met' if s.meets_goal else 'NOT met'} | "
                     f"{s.cpu_us['dbproxy']:.0f} / {s.cpu_us['pgbouncer']:.0f} | {relay} |")
    lines += ["", "uvloop TLS relay: bench/python_relay.py with the same certificate, ending TLS and forwarding bytes "
              "to PostgreSQL with no protocol work and no pooling (one server connection per client, hence `-S` "
              "only): what a proxy in Python with the ssl module costs before it does anything.", ""]
    return "\n".join(lines)


class TlsBench:
    """One run: owns the cluster, both poolers and the temporary directory."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.workdir = Path(tempfile.mkdtemp(prefix="dbproxy-tlsbench-", dir="/tmp"))
        self.workdir.chmod(0o755)  # the postgres OS user must reach pg/, pgbouncer/ and certs/
        self.cluster: PgCluster | None = None
        self.services: dict[str, Service] = {}
        self.endpoints: dict[str, Endpoint] = {}
        self.runs: list[CellRun] = []

    def setup(self) -> None:
        args = self.args
        (primary,) = free_ports(1)
        log(f"PostgreSQL primary on {primary} in {self.workdir / 'pg'}")
        self.cluster = PgCluster(self.workdir / "pg", [primary], users={USER: ("", "trust")})
        self.cluster.start()
        run_checked([pg_binary("pgbench"), "-i", "-q", "-s", str(args.scale), "-h", HOST, "-p", str(primary),
                     "-U", USER, APP_DB], "pgbench -i")
        self.cluster.sql(0, "CHECKPOINT")
        certs = generate(self.workdir / "certs")
        certs.chmod(0o755)
        if os.geteuid() == 0:   # PgBouncer runs as the postgres OS user and reads the key
            pw = pwd.getpwnam(PG_OS_USER)
            os.chown(certs / "server-key.pem", pw.pw_uid, pw.pw_gid)
        dbproxy_port, pgbouncer_port = free_ports(2)
        workdir = self.workdir / "dbproxy"
        workdir.mkdir()
        config = workdir / "dbproxy.toml"
        config.write_text(dbproxy_config(primary, dbproxy_port, args.pool_size, certs))
        dbproxy = Service("dbproxy", [sys.executable, "-m", "proxy", "run", "--config", str(config)],
                          workdir / "dbproxy.log", cwd=REPO_ROOT, env={"PYTHONUNBUFFERED": "1"})
        self.services["dbproxy"] = dbproxy
        dbproxy.start()
        dbproxy.wait_ready(HOST, dbproxy_port, check=query_check(dbproxy_port, USER, APP_DB, PASSWORD))
        self.services["pgbouncer"] = (start_pgbouncer(self.workdir / "pgbouncer", pgbouncer_port, primary, USER, PASSWORD,
                                             APP_DB, args.pool_size,
                                             client_tls=(certs / "server.pem", certs / "server-key.pem")))
        # pgbench passes its database argument to libpq as a connection string: sslmode rides along.
        database = f"dbname={APP_DB} sslmode=require"
        self.endpoints = {"dbproxy": Endpoint("dbproxy", dbproxy_port, USER, database, PASSWORD),
                          "pgbouncer": Endpoint("pgbouncer", pgbouncer_port, USER, database, PASSWORD)}
        if not args.no_relay:
            (relay_port,) = free_ports(1)
            self.services[RELAY] = python_relay.start_relay(self.workdir / "relay", HOST, relay_port, HOST, primary,
                                                            (certs / "server.pem", certs / "server-key.pem"))
            self.endpoints[RELAY] = Endpoint(RELAY, relay_port, USER, database, None)
        log(f"dbproxy on {dbproxy_port}, PgBouncer on {pgbouncer_port}, both tls require")

    def tls_version(self) -> str:
        """The TLS version and cipher dbproxy's endpoint negotiates (with this Python's OpenSSL defaults)."""
        with socket.create_connection((HOST, self.endpoints["dbproxy"].port), timeout=5) as raw:
            raw.sendall(b"\x00\x00\x00\x08\x04\xd2\x16\x2f")   # SSLRequest
            if raw.recv(1) != b"S":
                raise BenchError("dbproxy answered the SSLRequest with no")
            context = ssl.create_default_context(cafile=str(self.workdir / "certs" / "ca.pem"))
            with context.wrap_socket(raw, server_hostname="localhost") as tls:
                return f"{tls.version()} {(tls.cipher() or ('?',))[0]}"

    def run(self, workload: Workload, pooler: str, round_no: int, duration: float) -> CellRun:
        pid = self.services[pooler].pid
        before = process_seconds(pid)
        cell = run_pgbench(self.endpoints[pooler], workload, self.args.clients, duration, round_no)
        after = process_seconds(pid)
        if before is not None and after is not None:
            cell.pooler_cpu_s = after - before
        if not cell.ok:
            raise BenchError(f"{workload.key} on {pooler}: {cell.error}\n{cell.output_tail}")
        return cell

    def measure(self) -> None:
        workloads = [WORKLOADS[key] for key in self.args.workloads]

        def targets(workload: Workload) -> tuple[str, ...]:
            return (*POOLERS, RELAY) if workload.key == "select" and RELAY in self.services else POOLERS

        for workload in workloads:
            for pooler in targets(workload):
                self.run(workload, pooler, -1, 1 if self.args.quick else 2)   # warm-up
        for round_no in range(self.args.rounds):
            for workload in workloads:
                order = targets(workload)
                shift = round_no % len(order)
                for pooler in order[shift:] + order[:shift]:
                    cell = self.run(workload, pooler, round_no, self.args.duration)
                    self.runs.append(cell)
                    log(f"round {round_no + 1}/{self.args.rounds} {workload.key} {pooler}: {cell.tps:.0f} TPS, "
                        f"{cpu_per_transaction_us(cell):.0f} µs pooler CPU per transaction")

    def report(self, facts: dict[str, Any]) -> str:
        summaries = [summarize(key, [c for c in self.runs if c.workload == key]) for key in self.args.workloads]
        text = markdown(summaries, self.args, facts)
        data = {"facts": facts, "args": dict(vars(self.args)), "summaries": [s.to_json() for s in summaries],
                "runs": [c.to_json() for c in self.runs], "table_markdown": text}
        saved = save_results("tls", data, text)
        log(f"results: {saved} (and tls-latest.md / .json)")
        return text

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
    bench = TlsBench(args)
    loadavg_before = " ".join(f"{x:.2f}" for x in os.getloadavg())
    try:
        pgbouncer, _ = pgbouncer_version()
        bench.setup()
        tls_version = bench.tls_version()
        bench.measure()
        facts = {"date": datetime.now().strftime("%Y-%m-%d %H:%M"), "cpus": os.cpu_count(),
                 "loadavg_before": loadavg_before, "loadavg_after": " ".join(f"{x:.2f}" for x in os.getloadavg()),
                 "dbproxy": git_version(), "pgbouncer": pgbouncer, "tls_version": tls_version}
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
