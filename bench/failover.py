"""Failover drill (issue 4): kill -9 the primary under a steady write load and report the timeline.

Run from the repository root: `.venv/bin/python bench/failover.py [--engine mysql] [--runs 3] [--clients 8]`.

Each run starts, in a temporary directory on free ports, a fresh cluster of three and dbproxy in
promote mode (health interval 200ms, failure_threshold 3, promote_after 1s):

- `--engine postgres` (the default): a PostgreSQL primary + 2 replicas with synchronous_commit =
  remote_apply and synchronous_standby_names = 'ANY 1 (*)' (an acknowledged insert has been
  applied on a replica); asyncpg clients; the health user is postgres.
- `--engine mysql`: a MariaDB primary + 2 GTID replicas with semi-synchronous replication
  (deploy/mysqlcluster.py; an acknowledged insert has been received by a replica); PyMySQL
  clients as app/app-pass; the health user is deploy.mysqlcluster's MONITOR_USER.

`--clients` clients insert unique keys through the writer endpoint back to back, and
`--idle-clients` more sit idle on it. The drill kills the primary (SIGKILL of the postmaster and
all its processes, or of mariadbd), waits until every writing client has written again, and
reports in milliseconds relative to the kill (the moment every process of the primary is gone):
the last write acknowledged
before it, the proxy's detection, promotion and writer change (from /status), the first write
acknowledged after it, the errors clients saw, the client connections that were closed, whether
every idle client still works, and whether every acknowledged insert is on the new primary.
Everything is removed at the end, also on error or Ctrl-C.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import json
import shutil
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol, TypeVar
from urllib.parse import urlsplit
from urllib.request import urlopen

# `python bench/failover.py` puts bench/, not the repository root, on sys.path.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import asyncpg  # noqa: E402
import pymysql  # noqa: E402

from bench.procs import BenchError, Service  # noqa: E402
from deploy import mysqlcluster  # noqa: E402
from deploy.mysqlcluster import MysqlCluster, MysqlClusterError  # noqa: E402
from deploy.pgcluster import APP_DB, HOST, PgCluster, PgClusterError, free_ports  # noqa: E402

REPO_ROOT = Path(__file__).resolve().parent.parent
TABLE = "drill"
SYNCHRONOUS = {"synchronous_standby_names": "ANY 1 (*)", "synchronous_commit": "remote_apply"}
GOAL_MS = 2000.0
T = TypeVar("T")


# ---------------------------------------------------------------------------- the clients


class ClientError(Exception):
    """A statement failed: `text` for the log, `code` (SQLSTATE, MySQL errno) for the tables, if any."""

    def __init__(self, text: str, code: str | None = None) -> None:
        super().__init__(text)
        self.text, self.code = text, code


class Client(Protocol):
    """One client connection of the drill, whatever the engine's driver (`conn`: the driver's own)."""

    conn: Any

    async def insert(self, client: int, seq: int) -> None: ...     # raises ClientError
    async def select_one(self) -> bool: ...                         # False when it fails
    def is_closed(self) -> bool: ...
    async def close(self) -> None: ...


class PgClient:
    """An asyncpg connection."""

    SQL = f"INSERT INTO {TABLE} (client, seq) VALUES ($1, $2)"
    ERRORS = (asyncpg.PostgresError, asyncpg.InterfaceError, asyncpg.InternalClientError, OSError, TimeoutError)

    def __init__(self, conn: asyncpg.Connection) -> None:
        self.conn = conn

    @classmethod
    async def connect(cls, dsn: str) -> PgClient:
        return cls(await asyncpg.connect(dsn))

    async def insert(self, client: int, seq: int) -> None:
        try:
            await self.conn.execute(self.SQL, client, seq, timeout=30)
        except asyncpg.PostgresError as exc:
            raise ClientError(f"{exc.sqlstate}: {exc}", exc.sqlstate) from exc
        except self.ERRORS as exc:
            raise ClientError(f"{type(exc).__name__}: {exc}") from exc

    async def select_one(self) -> bool:
        try:
            return not self.conn.is_closed() and await self.conn.fetchval("SELECT 1", timeout=10) == 1
        except self.ERRORS:
            return False

    def is_closed(self) -> bool:
        return self.conn.is_closed()

    async def close(self) -> None:
        await self.conn.close()


class PgTransactionClient(PgClient):
    """An asyncpg connection inserting in explicit transactions (`--replay`): BEGIN; INSERT; a SELECT
    of what it inserted; COMMIT. A failed step names itself in the error text ("COMMIT: 08007 ...")."""

    async def insert(self, client: int, seq: int) -> None:
        step = "BEGIN"
        try:
            await self.conn.execute("BEGIN", timeout=30)
            step = "INSERT"
            await self.conn.execute(self.SQL, client, seq, timeout=30)
            step = "SELECT"
            count = await self.conn.fetchval(f"SELECT count(*) FROM {TABLE} WHERE client = $1 AND seq = $2",
                                             client, seq, timeout=30)
            if count != 1:
                raise ClientError(f"SELECT: the transaction does not see its own insert ({count})", "wrong")
            step = "COMMIT"
            await self.conn.execute("COMMIT", timeout=30)
        except asyncpg.PostgresError as exc:
            await self._rollback()
            raise ClientError(f"{step}: {exc.sqlstate}: {exc}", exc.sqlstate) from exc
        except self.ERRORS as exc:
            await self._rollback()
            raise ClientError(f"{step}: {type(exc).__name__}: {exc}") from exc

    async def _rollback(self) -> None:
        try:
            if not self.conn.is_closed() and self.conn.is_in_transaction():
                await self.conn.execute("ROLLBACK", timeout=10)
        except self.ERRORS:
            pass


class MysqlClient:
    """A PyMySQL connection (autocommit) to a mysql://user:password@host:port/db DSN, driven from its
    own thread so that the drill's event loop never blocks."""

    SQL = f"INSERT INTO {TABLE} (client, seq) VALUES (%s, %s)"

    def __init__(self) -> None:
        self._thread = ThreadPoolExecutor(1, thread_name_prefix="drill-mysql")
        self.conn: pymysql.connections.Connection[Any] | None = None

    @classmethod
    async def connect(cls, dsn: str) -> MysqlClient:
        url = urlsplit(dsn)
        client = cls()
        try:
            client.conn = await client._run(
                pymysql.connect, host=url.hostname, port=url.port, user=url.username, password=url.password or "",
                database=url.path.lstrip("/") or None, autocommit=True, connect_timeout=5, read_timeout=30,
                write_timeout=30)
        except BaseException:
            client._thread.shutdown(wait=False)
            raise
        return client

    async def _run(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._thread, functools.partial(fn, *args, **kwargs))

    def _scalar(self, sql: str, args: tuple[int, ...] | None = None) -> Any:
        assert self.conn is not None
        with self.conn.cursor() as cur:
            cur.execute(sql, args)
            row = cur.fetchone()
        return None if row is None else row[0]

    async def insert(self, client: int, seq: int) -> None:
        try:
            await self._run(self._scalar, self.SQL, (client, seq))
        except pymysql.err.MySQLError as exc:
            errno = exc.args[0] if exc.args and isinstance(exc.args[0], int) and exc.args[0] else None
            code = str(errno) if errno is not None else type(exc).__name__
            raise ClientError(f"{code}: {exc}", code) from exc
        except OSError as exc:
            raise ClientError(f"{type(exc).__name__}: {exc}") from exc

    async def select_one(self) -> bool:
        try:
            return not self.is_closed() and await self._run(self._scalar, "SELECT 1") == 1
        except (pymysql.err.MySQLError, OSError):
            return False

    def is_closed(self) -> bool:
        return self.conn is None or not self.conn.open

    async def close(self) -> None:
        conn = self.conn
        if conn is not None and conn.open:
            try:
                await self._run(conn.close)
            except (pymysql.err.MySQLError, OSError):
                pass
        self._thread.shutdown(wait=True)


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
    """`clients` connections to `dsn` (opened by `connect`: asyncpg unless told otherwise) inserting
    (client, seq) rows into TABLE back to back.

    A connection that gets closed under a client is counted in `disconnected` and replaced, so the
    load goes on; the proxy is meant never to close one.
    """

    dsn: str
    clients: int
    connect: Callable[[str], Awaitable[Client]] = PgClient.connect
    writes: list[Write] = field(default_factory=list)
    disconnected: Counter[int] = field(default_factory=Counter)
    sessions: list[Client] = field(default_factory=list)
    _stop: asyncio.Event = field(default_factory=asyncio.Event)
    _tasks: list[asyncio.Task[None]] = field(default_factory=list)

    async def start(self) -> None:
        self.sessions = [await self.connect(self.dsn) for _ in range(self.clients)]
        loop = asyncio.get_running_loop()
        self._tasks = [loop.create_task(self._client(i)) for i in range(self.clients)]

    async def stop(self) -> None:
        self._stop.set()
        await asyncio.gather(*self._tasks)

    async def close(self) -> None:
        for conn in self.sessions:
            await conn.close()

    async def _client(self, i: int) -> None:
        seq = 0
        while not self._stop.is_set():
            seq += 1
            started = time.monotonic()
            write = Write(i, seq, started, started)
            try:
                await self.sessions[i].insert(i, seq)
            except ClientError as exc:
                write.error, write.sqlstate = exc.text, exc.code
            write.ended = time.monotonic()
            self.writes.append(write)
            if self.sessions[i].is_closed():
                self.disconnected[i] += 1
                await self.sessions[i].close()
                self.sessions[i] = await self.connect(self.dsn)

    @property
    def conns(self) -> list[Any]:
        """The driver's connections of the writing clients (asyncpg.Connection for PostgreSQL)."""
        return [session.conn for session in self.sessions]

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


class Backend(Protocol):
    """What differs between the engines: the cluster, the proxy's settings for it, the clients."""

    replication: str       # how an acknowledged insert is protected (for the report)
    users_toml: str        # the [[users]] entry of the app user
    engine_toml: str       # engine and client_auth of the cluster
    health_toml: str       # the health user

    @property
    def addresses(self) -> list[str]: ...
    def start(self) -> None: ...                           # the cluster up, synchronous, TABLE created
    def kill(self, i: int) -> None: ...                    # returns once every process of instance i is gone
    def dsn(self, port: int) -> str: ...                   # of the writer endpoint on `port`, as the app user
    async def connect(self, dsn: str) -> Client: ...
    def present(self, i: int) -> set[tuple[int, int]]: ... # the (client, seq) rows on instance i
    def destroy(self) -> None: ...


class PgBackend:
    replication = "synchronous_commit = remote_apply, synchronous_standby_names = 'ANY 1 (*)'"
    users_toml = 'name = "app"\nserver_user = "app"'
    engine_toml = 'engine = "postgres"\ninstances = [{instances}]\nclient_auth = "trust"'
    health_toml = 'user = "postgres"          # promotion and re-pointing need a superuser (docs/failover.md)'

    def __init__(self, workdir: Path, ports: list[int]) -> None:
        self.pg = PgCluster(workdir / "pg", ports)

    @property
    def addresses(self) -> list[str]:
        return self.pg.instance_addrs()

    def start(self) -> None:
        self.pg.start()
        make_synchronous(self.pg)
        self.pg.sql(0, f"CREATE TABLE {TABLE} (client int, seq int, at timestamptz DEFAULT clock_timestamp(), "
                       f"PRIMARY KEY (client, seq)); GRANT ALL ON {TABLE} TO PUBLIC", db=APP_DB)

    def kill(self, i: int) -> None:
        self.pg.kill_instance(i)

    def dsn(self, port: int) -> str:
        return f"postgresql://app@{HOST}:{port}/{APP_DB}"

    async def connect(self, dsn: str) -> Client:
        return await PgClient.connect(dsn)

    def present(self, i: int) -> set[tuple[int, int]]:
        return {(int(c), int(s)) for c, s in
                (line.split("|") for line in self.pg.sql(i, f"SELECT client, seq FROM {TABLE}", db=APP_DB).split())}

    def destroy(self) -> None:
        self.pg.destroy()


class MysqlBackend:
    replication = ("MariaDB semi-synchronous replication to 2 GTID replicas (rpl_semi_sync_master_wait_point = "
                   "AFTER_COMMIT, rpl_semi_sync_master_timeout = 10s: the server defaults)")
    users_toml = f'name = "{mysqlcluster.APP_USER}"\npassword = "{mysqlcluster.APP_PASSWORD}"'
    engine_toml = 'engine = "mysql"\ninstances = [{instances}]\nclient_auth = "mysql_native_password"'
    health_toml = (f'user = "{mysqlcluster.MONITOR_USER}"     # promotion and re-pointing need its grants\n'
                   f'password = "{mysqlcluster.MONITOR_PASSWORD}"')

    def __init__(self, workdir: Path, ports: list[int]) -> None:
        self.my = MysqlCluster(workdir / "my", ports, semi_sync=True)

    @property
    def addresses(self) -> list[str]:
        return self.my.addresses

    def start(self) -> None:
        self.my.start()
        self.my.query(0, f"CREATE TABLE {TABLE} (client INT NOT NULL, seq INT NOT NULL, "
                         "at TIMESTAMP(6) NOT NULL DEFAULT CURRENT_TIMESTAMP(6), PRIMARY KEY (client, seq))",
                      db=mysqlcluster.APP_DB)
        self.my.wait_replicated()

    def kill(self, i: int) -> None:
        self.my.kill_instance(i)

    def dsn(self, port: int) -> str:
        return f"mysql://{mysqlcluster.APP_USER}:{mysqlcluster.APP_PASSWORD}@{HOST}:{port}/{mysqlcluster.APP_DB}"

    async def connect(self, dsn: str) -> Client:
        return await MysqlClient.connect(dsn)

    def present(self, i: int) -> set[tuple[int, int]]:
        rows = self.my.query(i, f"SELECT client, seq FROM {TABLE}", db=mysqlcluster.APP_DB)
        return {(int(c or 0), int(s or 0)) for c, s in rows}

    def destroy(self) -> None:
        self.my.destroy()


ENGINES: dict[str, type[PgBackend] | type[MysqlBackend]] = {"postgres": PgBackend, "mysql": MysqlBackend}


def make_synchronous(pg: PgCluster) -> None:
    """Turn on synchronous replication on every instance (the promoted one keeps it)."""
    for i in range(len(pg.ports)):
        for name, value in SYNCHRONOUS.items():
            pg.sql(i, f"ALTER SYSTEM SET {name} = '{value}'")
        pg.sql(i, "SELECT pg_reload_conf()")


def dbproxy_config(backend: Backend, writer_port: int, http_port: int, replay: bool = False) -> str:
    instances = ", ".join(f'"{a}"' for a in backend.addresses)
    return f"""\
# Written by bench/failover.py for one drill run.
[server]
http_listen = "{HOST}:{http_port}"
log_level = "info"
shutdown_timeout = "2s"

[[users]]
{backend.users_toml}

[clusters.main]
{backend.engine_toml.format(instances=instances)}

[clusters.main.health]
interval = "200ms"
timeout = "1s"
failure_threshold = 3
{backend.health_toml}

[clusters.main.failover]
mode = "promote"
promote_after = "1s"
borrow_timeout = "30s"
replay = {"true" if replay else "false"}

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
    # Every write of the run: (ms since the kill when it started, its latency in ms, SQLSTATE or error
    # code, None if acknowledged); bench/suite.py plots them as the failover timeline.
    writes: list[tuple[float, float, str | None]] = field(default_factory=list)


async def drive(backend: Backend, primary: int, writer_port: int, clients: int, idle_clients: int,
                warmup: float, replay: bool = False) -> tuple[WriteLoad, float, float, float, float, int]:
    """Load, kill, wait for the writes to resume; (load, kill mono, kill wall, kill took, resumed, idle ok).
    With replay, the writing clients insert in explicit transactions (PgTransactionClient)."""
    dsn = backend.dsn(writer_port)
    idle = [await backend.connect(dsn) for _ in range(idle_clients)]
    load = WriteLoad(dsn, clients, connect=PgTransactionClient.connect if replay else backend.connect)
    await load.start()
    try:
        await asyncio.sleep(warmup)
        began = time.monotonic()
        await asyncio.to_thread(backend.kill, primary)
        kill_mono, kill_wall = time.monotonic(), time.time()   # every process of the primary is gone
        kill_took = kill_mono - began
        resumed = await load.wait_resumed(kill_mono, timeout=30)
        await asyncio.sleep(0.5)
    finally:
        await load.stop()
    idle_ok = 0
    for conn in idle:
        if await conn.select_one():
            idle_ok += 1
        await conn.close()
    await load.close()
    return load, kill_mono, kill_wall, kill_took, resumed, idle_ok


def run_once(run: int, workdir: Path, engine: str, clients: int, idle_clients: int, warmup: float,
             replay: bool = False) -> DrillResult:
    cluster_ports, (writer_port, http_port) = free_ports(3), free_ports(2)
    backend = ENGINES[engine](workdir, cluster_ports)
    service: Service | None = None
    try:
        backend.start()
        config = workdir / "dbproxy.toml"
        config.write_text(dbproxy_config(backend, writer_port, http_port, replay))
        service = Service("dbproxy", [sys.executable, "-m", "proxy", "run", "--config", str(config)],
                          workdir / "dbproxy.log", cwd=REPO_ROOT, env={"PYTHONUNBUFFERED": "1"})
        service.start()
        service.wait_ready(HOST, http_port)
        old_primary = backend.addresses[0]
        wait_writer(http_port, old_primary, service)
        load, kill_mono, kill_wall, kill_took, resumed, idle_ok = asyncio.run(
            drive(backend, 0, writer_port, clients, idle_clients, warmup, replay))
        cluster = status(http_port)["clusters"][0]
        new_primary = cluster["writer"]
        present = backend.present(backend.addresses.index(new_primary))
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
            # with replay: the step that failed too ("COMMIT 08007": a COMMIT in flight, its outcome unknown)
            errors=Counter(f"{(w.error or '?').split(':')[0]} {w.sqlstate}" if replay
                           else w.sqlstate or (w.error or "?").split(":")[0] for w in errors),
            errored_clients=len({w.client for w in errors}),
            disconnected=sum(load.disconnected.values()),
            idle_ok=idle_ok, idle_clients=idle_clients,
            acknowledged=len(acknowledged), lost=len(acknowledged - present),
            old_primary=old_primary, new_primary=new_primary, events=events,
            writes=[(ms(w.started), round((w.ended - w.started) * 1000, 2),
                     None if w.error is None else (w.sqlstate or w.error.split(":")[0])) for w in load.writes])
    finally:
        if service is not None:
            service.stop()
        try:
            backend.destroy()
        except (PgClusterError, MysqlClusterError) as exc:
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
    parser.add_argument("--engine", choices=sorted(ENGINES), default="postgres",
                        help="postgres (default): PostgreSQL, synchronous replication; mysql: MariaDB, semi-sync")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--clients", type=int, default=8, help="clients inserting back to back (default 8)")
    parser.add_argument("--idle-clients", type=int, default=8, help="clients connected but idle (default 8)")
    parser.add_argument("--warmup", type=float, default=2.0, help="seconds of load before the kill")
    parser.add_argument("--keep", action="store_true", help="keep the work directory (logs)")
    parser.add_argument("--json", type=Path, metavar="FILE",
                        help="also write every run's result, its writes included, to FILE as JSON")
    parser.add_argument("--replay", action="store_true",
                        help="failover.replay = true; the clients insert in transactions (BEGIN; INSERT; SELECT; "
                             "COMMIT): only a COMMIT in flight may fail (08007)")
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
            results.append(run_once(run, workdir, args.engine, args.clients, args.idle_clients, args.warmup,
                                    args.replay))
    except BenchError as exc:
        print(f"failover drill: {exc}", file=sys.stderr)
        return 1
    finally:
        if args.keep:
            print(f"work directory kept: {base}", file=sys.stderr)
        else:
            shutil.rmtree(base, ignore_errors=True)
    if args.json is not None:
        # (not dataclasses.asdict: it rebuilds a Counter from (key, count) pairs, counting the pairs)
        args.json.write_text(json.dumps([{**vars(r), "errors": dict(r.errors)} for r in results]))
    if args.replay and args.engine != "postgres":
        print("failover drill: --replay is for --engine postgres", file=sys.stderr)
        return 2
    engine = ("" if args.engine == "postgres" else f" ({args.engine})") + (", failover.replay = true" if args.replay
                                                                          else "")
    print(f"## Failover drill{engine}: kill -9 of the primary under write load (promote mode)\n")
    print(f"{args.clients} clients inserting through the writer endpoint, {args.idle_clients} idle; "
          f"interval 200ms, failure_threshold 3, promote_after 1s; {ENGINES[args.engine].replication}. "
          "Times in ms relative to the kill.\n")
    print("\n".join(summary_table(results, args.clients)))
    print()
    for r in results:
        print("\n".join(run_table(r)))
    worst = max((r.first_write_after or float("inf")) for r in results)
    ok = worst <= GOAL_MS and all(r.lost == 0 and r.disconnected == 0 and r.idle_ok == r.idle_clients
                                  for r in results)
    if args.replay:   # only a COMMIT in flight may fail
        ok = ok and all(code.startswith("COMMIT 08007") for r in results for code in r.errors)
    print(f"Goal (writes back within {GOAL_MS:.0f} ms, nothing lost, no connection closed): "
          f"{'met' if ok else 'NOT met'}; worst first write after the kill: {fmt(worst)} ms")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
