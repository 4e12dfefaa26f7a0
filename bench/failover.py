"""Failover drill (issue 4): kill -9 the primary under a steady write load and report the timeline.

Run from the repository root: `.venv/bin/python bench/failover.py [--runs 3] [--clients 8]`.

Each run starts, in a temporary directory on free ports, a PostgreSQL primary + 2 replicas with
synchronous_commit = remote_apply and synchronous_standby_names = 'ANY 1 (*)' (an acknowledged
insert has been applied on a replica), and dbproxy in promote mode (health interval 200ms,
failure_threshold 3, promote_after 1s). `--clients` asyncpg clients insert unique keys through
the writer endpoint back to back, and `--idle-clients` more sit idle on it. The drill kills the
primary (SIGKILL of the postmaster and all its processes), waits until every writing client has
written again, and reports in milliseconds relative to the kill (the moment every process of the
primary is gone): the last write acknowledged
before it, the proxy's detection, promotion and writer change (from /status), the first write
acknowledged after it, the errors clients saw, the client connections that were closed, whether
every idle client still works, and whether every acknowledged insert is on the new primary.
Everything is removed at the end, also on error or Ctrl-C.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.request import urlopen

# `python bench/failover.py` puts bench/, not the repository root, on sys.path.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import asyncpg  # noqa: E402

from bench.procs import BenchError, Service  # noqa: E402
from deploy.pgcluster import APP_DB, HOST, PgCluster, PgClusterError, free_ports  # noqa: E402

REPO_ROOT = Path(__file__).resolve().parent.parent
TABLE = "drill"
SYNCHRONOUS = {"synchronous_standby_names": "ANY 1 (*)", "synchronous_commit": "remote_apply"}
GOAL_MS = 2000.0


# ---------------------------------------------------------------------------- the load


@dataclass
class Write:
    """One insert: when it started and ended (monotonic seconds) and the error, if any."""

    client: int
    seq: int
    started: float
    ended: float
    error: str | None = None
    sqlstate: str | None = None


@dataclass
class WriteLoad:
    """`clients` connections inserting (client, seq) rows into TABLE back to back through `dsn`.

    A connection that gets closed under a client is counted in `disconnected` and replaced, so the
    load goes on; the proxy is meant never to close one.
    """

    dsn: str
    clients: int
    table: str = TABLE
    writes: list[Write] = field(default_factory=list)
    disconnected: Counter[int] = field(default_factory=Counter)
    conns: list[asyncpg.Connection] = field(default_factory=list)
    _stop: asyncio.Event = field(default_factory=asyncio.Event)
    _tasks: list[asyncio.Task[None]] = field(default_factory=list)

    async def start(self) -> None:
        self.conns = [await asyncpg.connect(self.dsn) for _ in range(self.clients)]
        loop = asyncio.get_running_loop()
        self._tasks = [loop.create_task(self._client(i)) for i in range(self.clients)]

    async def stop(self) -> None:
        self._stop.set()
        await asyncio.gather(*self._tasks)

    async def close(self) -> None:
        for conn in self.conns:
            await conn.close()

    async def _client(self, i: int) -> None:
        sql = f"INSERT INTO {self.table} (client, seq) VALUES ($1, $2)"
        seq = 0
        while not self._stop.is_set():
            seq += 1
            started = time.monotonic()
            write = Write(i, seq, started, started)
            try:
                await self.conns[i].execute(sql, i, seq, timeout=30)
            except asyncpg.PostgresError as exc:
                write.error, write.sqlstate = f"{exc.sqlstate}: {exc}", exc.sqlstate
            except (asyncpg.InterfaceError, asyncpg.InternalClientError, OSError, TimeoutError) as exc:
                write.error = f"{type(exc).__name__}: {exc}"
            write.ended = time.monotonic()
            self.writes.append(write)
            if self.conns[i].is_closed():
                self.disconnected[i] += 1
                self.conns[i] = await asyncpg.connect(self.dsn)

    def acknowledged(self) -> set[tuple[int, int]]:
        return {(w.client, w.seq) for w in self.writes if w.error is None}

    def errors(self) -> list[Write]:
        return [w for w in self.writes if w.error is not None]

    async def wait_resumed(self, since: float, timeout: float) -> float:
        """Wait until every client had a write acknowledged after `since`; the monotonic time then."""
        deadline = time.monotonic() + timeout
        while True:
            done = {w.client for w in self.writes[-20 * self.clients:] if w.error is None and w.started > since}
            if len(done) == self.clients:
                return time.monotonic()
            if time.monotonic() > deadline:
                raise BenchError(f"writes did not resume for clients {sorted(set(range(self.clients)) - done)} "
                                 f"within {timeout:g}s of the kill")
            await asyncio.sleep(0.01)


# ---------------------------------------------------------------------------- set-up


def make_synchronous(pg: PgCluster) -> None:
    """Turn on synchronous replication on every instance (the promoted one keeps it)."""
    for i in range(len(pg.ports)):
        for name, value in SYNCHRONOUS.items():
            pg.sql(i, f"ALTER SYSTEM SET {name} = '{value}'")
        pg.sql(i, "SELECT pg_reload_conf()")


def dbproxy_config(pg: PgCluster, writer_port: int, http_port: int) -> str:
    instances = ", ".join(f'"{a}"' for a in pg.instance_addrs())
    return f"""\
# Written by bench/failover.py for one drill run.
[server]
http_listen = "{HOST}:{http_port}"
log_level = "info"
shutdown_timeout = "2s"

[[users]]
name = "app"
server_user = "app"

[clusters.main]
engine = "postgres"
instances = [{instances}]
client_auth = "trust"

[clusters.main.health]
interval = "200ms"
timeout = "1s"
failure_threshold = 3
user = "postgres"          # promotion and re-pointing need a superuser (docs/failover.md)

[clusters.main.failover]
mode = "promote"
promote_after = "1s"
borrow_timeout = "30s"

[clusters.main.pool]
max_server_connections = 20

[[clusters.main.endpoints]]
name = "writer"
listen = "{HOST}:{writer_port}"
role = "writer"
"""


def status(http_port: int) -> dict[str, Any]:
    with urlopen(f"http://{HOST}:{http_port}/status", timeout=5) as response:
        return json.loads(response.read())


def wait_writer(http_port: int, writer: str, service: Service, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            cluster = status(http_port)["clusters"][0]
            if cluster["writer"] == writer and all(i["state"] == "up" for i in cluster["instances"]):
                return
        except OSError:
            pass
        if time.monotonic() > deadline or not service.alive():
            raise service.failure(f"no writer {writer} with every instance up after {timeout:g}s")
        time.sleep(0.1)


def iso_to_wall(text: str) -> float:
    return datetime.strptime(text, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=UTC).timestamp()


# ---------------------------------------------------------------------------- one run


@dataclass
class DrillResult:
    run: int
    kill_ms: float                    # how long kill_instance took (SIGSTOP, collect, SIGKILL, reaped)
                                      # times are relative to its end: every process of the primary gone
    last_write_before: float | None
    detected: float | None
    promoting: float | None
    promoted: float | None
    writer_changed: float | None
    first_write_after: float | None
    all_clients_writing: float
    errors: Counter[str]
    errored_clients: int
    disconnected: int
    idle_ok: int
    idle_clients: int
    acknowledged: int
    lost: int
    old_primary: str
    new_primary: str
    events: list[tuple[float, str]]


async def drive(pg: PgCluster, primary: int, dsn: str, http_port: int, clients: int, idle_clients: int,
                warmup: float) -> tuple[WriteLoad, float, float, float, float, int]:
    """Load, kill, wait for the writes to resume; (load, kill mono, kill wall, kill took, resumed, idle ok)."""
    idle = [await asyncpg.connect(dsn) for _ in range(idle_clients)]
    load = WriteLoad(dsn, clients)
    await load.start()
    try:
        await asyncio.sleep(warmup)
        began = time.monotonic()
        await asyncio.to_thread(pg.kill_instance, primary)
        kill_mono, kill_wall = time.monotonic(), time.time()   # every process of the primary is gone
        kill_took = kill_mono - began
        resumed = await load.wait_resumed(kill_mono, timeout=30)
        await asyncio.sleep(0.5)
    finally:
        await load.stop()
    idle_ok = 0
    for conn in idle:
        try:
            if not conn.is_closed() and await conn.fetchval("SELECT 1", timeout=10) == 1:
                idle_ok += 1
        except (asyncpg.PostgresError, asyncpg.InterfaceError, OSError, TimeoutError):
            pass
        await conn.close()
    await load.close()
    return load, kill_mono, kill_wall, kill_took, resumed, idle_ok


def run_once(run: int, workdir: Path, clients: int, idle_clients: int, warmup: float) -> DrillResult:
    pg_ports, (writer_port, http_port) = free_ports(3), free_ports(2)
    pg = PgCluster(workdir / "pg", pg_ports)
    service: Service | None = None
    try:
        pg.start()
        make_synchronous(pg)
        pg.sql(0, f"CREATE TABLE {TABLE} (client int, seq int, at timestamptz DEFAULT clock_timestamp(), "
                  f"PRIMARY KEY (client, seq)); GRANT ALL ON {TABLE} TO PUBLIC", db=APP_DB)
        config = workdir / "dbproxy.toml"
        config.write_text(dbproxy_config(pg, writer_port, http_port))
        service = Service("dbproxy", [sys.executable, "-m", "proxy", "run", "--config", str(config)],
                          workdir / "dbproxy.log", cwd=REPO_ROOT, env={"PYTHONUNBUFFERED": "1"})
        service.start()
        service.wait_ready(HOST, http_port)
        old_primary = pg.instance_addrs()[0]
        wait_writer(http_port, old_primary, service)
        dsn = f"postgresql://app@{HOST}:{writer_port}/{APP_DB}"
        load, kill_mono, kill_wall, kill_took, resumed, idle_ok = asyncio.run(
            drive(pg, 0, dsn, http_port, clients, idle_clients, warmup))
        cluster = status(http_port)["clusters"][0]
        new_primary = cluster["writer"]
        new_index = pg.instance_addrs().index(new_primary)
        present = {tuple(map(int, line.split("|")))
                   for line in pg.sql(new_index, f"SELECT client, seq FROM {TABLE}", db=APP_DB).split()}
        acknowledged = load.acknowledged()
        events = [(round((iso_to_wall(e["at"]) - kill_wall) * 1000, 1), e["text"]) for e in cluster["role_changes"]]
        events = [(at, text) for at, text in events if at > -1000]

        def event(prefix: str) -> float | None:
            return next((at for at, text in events if at >= 0 and text.startswith(prefix)), None)

        def ms(mono: float) -> float:
            return round((mono - kill_mono) * 1000, 1)

        before = [w.ended for w in load.writes if w.error is None and w.ended <= kill_mono]
        after = [w.ended for w in load.writes if w.error is None and w.started > kill_mono]
        errors = load.errors()
        return DrillResult(
            run=run, kill_ms=round(kill_took * 1000, 1),
            last_write_before=ms(max(before)) if before else None,
            detected=event(f"writer {old_primary} -> none"),
            promoting=event("failover: promoting"),
            promoted=event("failover: promoted"),
            writer_changed=event("writer none -> "),
            first_write_after=ms(min(after)) if after else None,
            all_clients_writing=ms(resumed),
            errors=Counter(w.sqlstate or (w.error or "?").split(":")[0] for w in errors),
            errored_clients=len({w.client for w in errors}),
            disconnected=sum(load.disconnected.values()),
            idle_ok=idle_ok, idle_clients=idle_clients,
            acknowledged=len(acknowledged), lost=len(acknowledged - present),
            old_primary=old_primary, new_primary=new_primary, events=events)
    finally:
        if service is not None:
            service.stop()
        try:
            pg.destroy()
        except PgClusterError as exc:
            print(f"failover drill: could not destroy the cluster: {exc}", file=sys.stderr)


# ---------------------------------------------------------------------------- report


def fmt(value: float | None) -> str:
    return "—" if value is None else f"{value:.0f}"


def run_table(r: DrillResult) -> Iterator[str]:
    yield f"### Run {r.run}: {r.old_primary} killed, {r.new_primary} promoted (kill took {r.kill_ms:.0f} ms)"
    yield ""
    yield "| ms since kill | event |"
    yield "|---:|---|"
    yield f"| {fmt(r.last_write_before)} | last write acknowledged before the kill |"
    for at, text in r.events:
        if at >= 0:
            yield f"| {at:.0f} | proxy: {text.replace('|', '/')} |"
    yield f"| {fmt(r.first_write_after)} | first write acknowledged after the kill |"
    yield f"| {fmt(r.all_clients_writing)} | every writing client has written again |"
    yield ""


def summary_table(results: list[DrillResult], clients: int) -> Iterator[str]:
    yield (f"| run | last write before | detected | promoting | promoted | writer changed | first write after | "
           f"all {clients} writing | client errors | clients disconnected | idle clients working | "
           "acknowledged inserts | lost |")
    yield "|---:|---:|---:|---:|---:|---:|---:|---:|---|---:|---:|---:|---:|"
    for r in results:
        errors = ", ".join(f"{n}× {code}" for code, n in sorted(r.errors.items())) or "none"
        yield (f"| {r.run} | {fmt(r.last_write_before)} | {fmt(r.detected)} | {fmt(r.promoting)} | "
               f"{fmt(r.promoted)} | {fmt(r.writer_changed)} | {fmt(r.first_write_after)} | "
               f"{fmt(r.all_clients_writing)} | {errors} ({r.errored_clients} clients) | {r.disconnected} | "
               f"{r.idle_ok}/{r.idle_clients} | {r.acknowledged} | {r.lost} |")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="bench/failover.py", description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--clients", type=int, default=8, help="clients inserting back to back (default 8)")
    parser.add_argument("--idle-clients", type=int, default=8, help="clients connected but idle (default 8)")
    parser.add_argument("--warmup", type=float, default=2.0, help="seconds of load before the kill")
    parser.add_argument("--keep", action="store_true", help="keep the work directory (logs)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    base = Path(tempfile.mkdtemp(prefix="dbproxy-failover-"))
    base.chmod(0o755)   # the postgres OS user must reach the cluster directories below
    results: list[DrillResult] = []
    try:
        for run in range(1, args.runs + 1):
            workdir = base / f"run{run}"
            workdir.mkdir()
            print(f"run {run}/{args.runs} ...", file=sys.stderr, flush=True)
            results.append(run_once(run, workdir, args.clients, args.idle_clients, args.warmup))
    except BenchError as exc:
        print(f"failover drill: {exc}", file=sys.stderr)
        return 1
    finally:
        if args.keep:
            print(f"work directory kept: {base}", file=sys.stderr)
        else:
            shutil.rmtree(base, ignore_errors=True)
    print("## Failover drill: kill -9 of the primary under write load (promote mode)\n")
    print(f"{args.clients} clients inserting through the writer endpoint, {args.idle_clients} idle; "
          "interval 200ms, failure_threshold 3, promote_after 1s; synchronous_commit = remote_apply, "
          "synchronous_standby_names = 'ANY 1 (*)'. Times in ms relative to the kill.\n")
    print("\n".join(summary_table(results, args.clients)))
    print()
    for r in results:
        print("\n".join(run_table(r)))
    worst = max((r.first_write_after or float("inf")) for r in results)
    ok = worst <= GOAL_MS and all(r.lost == 0 and r.disconnected == 0 and r.idle_ok == r.idle_clients
                                  for r in results)
    print(f"Goal (writes back within {GOAL_MS:.0f} ms, nothing lost, no connection closed): "
          f"{'met' if ok else 'NOT met'}; worst first write after the kill: {fmt(worst)} ms")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
