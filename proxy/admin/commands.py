"""The admin console's commands: a table of (name, handler, help), parsing, and the handlers.

Handlers take the running ProxyApp and the command's arguments and return a `Table` (a result
set) or a `Done` (a command tag plus an optional notice); they raise `AdminError` for a clear
ERROR. They read views (views.py) and call the few lifecycle methods of ProxyApp and Cluster.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from ..cache.backends import BackendDown
from ..config import Address
from ..errors import ShuttingDown
from ..topology import ActionFailed, SwitchoverRefused
from . import listen_views, topology_view, views
from .resultset import Table

if TYPE_CHECKING:
    from ..core.app_view import AppView as ProxyApp
    from ..core.cluster import Cluster

log = logging.getLogger("dbproxy.admin")


class AdminError(Exception):
    """An admin command failed; sent to the admin client as ERROR with this SQLSTATE."""

    def __init__(self, sqlstate: str, message: str, hint: str | None = None) -> None:
        super().__init__(message)
        self.sqlstate = sqlstate
        self.message = message
        self.hint = hint


@dataclass(frozen=True)
class Done:
    """A command without rows: its CommandComplete tag and an optional NOTICE for the client."""

    tag: str
    notice: str | None = None


Result = Table | Done
Handler = Callable[["ProxyApp", list[str]], Awaitable[Result]]


@dataclass(frozen=True)
class Command:
    name: str        # the keywords that select it, upper case ("SHOW POOLS")
    usage: str       # as shown by SHOW HELP ("PAUSE [cluster]")
    help: str
    handler: Handler
    max_args: int = 0
    min_args: int = 0


# ---- parsing -------------------------------------------------------------------------------------

_TOKEN = re.compile(r"""'(?:[^']|'')*'|"(?:[^"]|"")*"|[^\s'"]+""")


def tokenize(text: str) -> list[str]:
    """Split a command into words; 'literals' and "identifiers" lose their quotes."""
    tokens = []
    for token in _TOKEN.findall(text):
        if token[:1] == "'":
            token = token[1:-1].replace("''", "'")
        elif token[:1] == '"':
            token = token[1:-1].replace('""', '"')
        tokens.append(token)
    return tokens


def split_statements(sql: str) -> list[str]:
    """The non-empty statements of a simple Query, split on semicolons outside quotes."""
    statements: list[str] = []
    current: list[str] = []
    quote = ""
    for ch in sql:
        if quote:
            if ch == quote:
                quote = ""
        elif ch in "'\"":
            quote = ch
        elif ch == ";":
            statements.append("".join(current))
            current = []
            continue
        current.append(ch)
    statements.append("".join(current))
    return [s.strip() for s in statements if s.strip()]


def find_command(tokens: list[str]) -> tuple[Command, list[str]]:
    """The command named by the leading keywords (longest match) and its arguments."""
    words = [t.upper() for t in tokens]
    best: Command | None = None
    for command in COMMANDS:
        keywords = command.name.split()
        if words[:len(keywords)] == keywords and (best is None or len(keywords) > len(best.name.split())):
            best = command
    if best is None:
        raise AdminError("42601", f'unknown admin command "{" ".join(tokens)}"', hint=_HINT)
    args = tokens[len(best.name.split()):]
    if not best.min_args <= len(args) <= best.max_args:
        raise AdminError("42601", f"wrong arguments for {best.name}: usage is {best.usage}", hint=_HINT)
    return best, args


async def execute(app: ProxyApp, statement: str) -> Result:
    command, args = find_command(tokenize(statement))
    if app.workers is not None:   # [server] workers = N: gathered from (or sent to) every worker
        return await app.workers.execute(command.name, statement, lambda: command.handler(app, args))
    return await command.handler(app, args)


# ---- SHOW ----------------------------------------------------------------------------------------

def _show(view: Callable[[ProxyApp], Table]) -> Handler:
    async def handler(app: ProxyApp, args: list[str]) -> Result:
        return view(app)
    return handler


async def _show_help(app: ProxyApp, args: list[str]) -> Result:
    return Table.of(("command", "description"), [(c.usage, c.help) for c in COMMANDS])


# ---- PAUSE / RESUME -------------------------------------------------------------------------------

def _clusters(app: ProxyApp, args: list[str]) -> list[Cluster]:
    if not args:
        return list(app.clusters.values())
    cluster = app.clusters.get(args[0])
    if cluster is None:
        known = ", ".join(app.clusters) or "none"
        raise AdminError("42704", f'no cluster named "{args[0]}" (clusters: {known})')
    return [cluster]


def in_flight(app: ProxyApp, clusters: list[Cluster]) -> int:
    """Client transactions still running on a server in these clusters."""
    names = {c.name for c in clusters}
    return sum(1 for s in app.sessions
               if s.cluster.name in names and s.server is not None and not s.server.idle)


async def _pause(app: ProxyApp, args: list[str]) -> Result:
    clusters = _clusters(app, args)
    for cluster in clusters:
        cluster.pause()
    names = ", ".join(c.name for c in clusters)
    log.info("admin: paused %s: new transactions wait, running ones finish", names)
    deadline = time.monotonic() + app.config.server.shutdown_timeout
    while (running := in_flight(app, clusters)) and time.monotonic() < deadline:
        await asyncio.sleep(0.02)
    if running:
        return Done("PAUSE", f"paused {names}; {running} transaction(s) still running after "
                             f"{app.config.server.shutdown_timeout:g}s")
    return Done("PAUSE", f"paused {names}; no transaction running")


async def _flush_cache(app: ProxyApp, args: list[str]) -> Result:
    clusters = [c for c in _clusters(app, args) if c.cache is not None]
    if not clusters:
        raise AdminError("55000", "no query cache is configured" + (f" for cluster {args[0]}" if args else ""))
    for cluster in clusters:
        assert cluster.cache is not None
        try:
            await cluster.cache.flush()
        except BackendDown as exc:
            raise AdminError("58000", f"cache of cluster {cluster.name} is down: {exc}") from exc
    names = ", ".join(c.name for c in clusters)
    log.info("admin: flushed the query cache of %s", names)
    return Done("FLUSH", f"flushed the query cache of {names}")


async def _resume(app: ProxyApp, args: list[str]) -> Result:
    clusters = _clusters(app, args)
    for cluster in clusters:
        cluster.resume()
    names = ", ".join(c.name for c in clusters)
    log.info("admin: resumed %s", names)
    return Done("RESUME", f"resumed {names}")


async def _reconnect(app: ProxyApp, args: list[str]) -> Result:
    """Retire pooled server connections (as PgBouncer's RECONNECT): idle ones close now, borrowed ones
    when their client gives them back; new connections are opened as needed."""
    clusters = _clusters(app, args[:1])
    database = args[1] if len(args) > 1 else None
    idle = pools = 0
    for cluster in clusters:
        retired, closed = cluster.retire_pools(database)
        pools, idle = pools + retired, idle + closed
    scope = ", ".join(c.name for c in clusters) + (f" database {database}" if database else "")
    log.info("admin: RECONNECT %s: %d pool(s), %d idle connection(s) closed", scope, pools, idle)
    return Done("RECONNECT", f"{scope}: {pools} pool(s) retired, {idle} idle server connection(s) closed; "
                             "borrowed ones close when their clients are done")


# ---- RELOAD / SHUTDOWN / KILL -----------------------------------------------------------------------

async def _reload(app: ProxyApp, args: list[str]) -> Result:
    log.info("admin: RELOAD")
    problems = await app.reload()
    if problems:
        rejected = all(p.startswith("config error") for p in problems)
        message = ("configuration not reloaded; the running one is kept" if rejected
                   else "configuration reloaded with problems")
        raise AdminError("F0000", message, hint="\n".join(problems))
    return Done("RELOAD", f"configuration reloaded from {app.config.path}")


async def _shutdown(app: ProxyApp, args: list[str]) -> Result:
    log.info("admin: SHUTDOWN")
    app.stopping.set()
    return Done("SHUTDOWN", "dbproxy is draining and will exit")


async def _kill_client(app: ProxyApp, args: list[str]) -> Result:
    try:
        client_id = int(args[0])
    except ValueError:
        raise AdminError("22P02", f'invalid client id "{args[0]}" (see SHOW CLIENTS)') from None
    session = next((s for s in app.sessions if s.pid == client_id and s.pid), None)
    if session is None:
        raise AdminError("42704", f"no client with id {client_id} (see SHOW CLIENTS)")
    log.info("admin: KILL CLIENT %d (%s)", client_id, session.peer)
    session.close_with_error("killed by admin", ShuttingDown("terminating connection due to administrator command"))
    return Done("KILL", f"client {client_id} ({session.peer}) disconnected")


# ---- FAILOVER -------------------------------------------------------------------------------------

async def _failover(app: ProxyApp, args: list[str]) -> Result:
    cluster = _clusters(app, args[:1])[0]
    target: Address | None = None
    if len(args) > 1:
        if len(args) != 3 or args[1].upper() != "TO":
            raise AdminError("42601", "usage: FAILOVER cluster [TO 'host:port']")
        try:
            target = Address.parse(args[2])
        except ValueError as exc:
            raise AdminError("22023", f"invalid instance address {args[2]!r}: {exc}") from None
        if target not in cluster.config.instances and (cluster.topology is None or target not in cluster.topology):
            raise AdminError("42704", f"{target} is not an instance of cluster {cluster.name}")
    log.info("admin: FAILOVER %s to %s", cluster.name, target or "the most advanced replica")
    try:
        result = await cluster.switchover(target)
    except SwitchoverRefused as exc:
        raise AdminError("55000", f"FAILOVER refused: {exc}") from None
    except ActionFailed as exc:
        raise AdminError("58000", f"FAILOVER failed: {exc}") from None
    return Table.of(
        [("cluster", "text"), ("old_writer", "text"), ("new_writer", "text"), ("paused_ms", "float"),
         ("drain_ms", "float"), ("catch_up_ms", "float"), ("repointed", "text"), ("old_writer_state", "text"),
         ("note", "text")],
        [(result.cluster, str(result.old_writer), str(result.new_writer), round(result.duration_ms, 1),
          round(result.drain_ms, 1), round(result.catch_up_ms, 1), ",".join(map(str, result.repointed)),
          result.old_writer_state, result.note or None)])


# ---- FAULT (SPEC §13: fault_commands.py, imported when used: it builds on this module) -------------

async def _fault(app: ProxyApp, args: list[str]) -> Result:
    from .fault_commands import fault
    return await fault(app, args)


async def _show_faults(app: ProxyApp, args: list[str]) -> Result:
    from .fault_commands import show_faults
    return show_faults(app)


# ---- RECORD (SPEC §13: record_commands.py, imported when used) ------------------------------------

async def _record(app: ProxyApp, args: list[str]) -> Result:
    from .record_commands import record
    return await record(app, args)


async def _show_recording(app: ProxyApp, args: list[str]) -> Result:
    from .record_commands import show_recording
    return show_recording(app)


# ---- the table ------------------------------------------------------------------------------------

COMMANDS: tuple[Command, ...] = (
    Command("SHOW HELP", "SHOW HELP", "this list", _show_help),
    Command("SHOW POOLS", "SHOW POOLS", "server connection pools per instance, user and database",
            _show(views.pools)),
    Command("SHOW CLIENTS", "SHOW CLIENTS", "client connections (id is the one KILL CLIENT takes)",
            _show(views.clients)),
    Command("SHOW SERVERS", "SHOW SERVERS", "server connections and which client uses each",
            _show(views.servers)),
    Command("SHOW INSTANCES", "SHOW INSTANCES", "instances: role, state, lag, position, connections",
            _show(views.instances)),
    Command("SHOW TOPOLOGY", "SHOW TOPOLOGY",
            "zones, regions, promotion tiers, standbys, discovered replicas, who is promoted next and why",
            _show(topology_view.topology)),
    Command("SHOW ENDPOINTS", "SHOW ENDPOINTS", "endpoints, their clients and current targets",
            _show(views.endpoints)),
    Command("SHOW STATS", "SHOW STATS", "counters per cluster and endpoint", _show(views.stats)),
    Command("SHOW CONFIG", "SHOW CONFIG", "the running configuration, secrets masked",
            _show(views.config_rows)),
    Command("SHOW VERSION", "SHOW VERSION", "dbproxy version", _show(views.version)),
    Command("SHOW CACHE", "SHOW CACHE", "query cache per cluster: entries, bytes, hit ratio, state",
            _show(views.cache)),
    Command("SHOW LISTENERS", "SHOW LISTENERS",
            "listening connections (LISTEN in transaction pooling): channels, clients, notifications",
            _show(listen_views.listeners)),
    Command("FLUSH CACHE", "FLUSH CACHE [cluster]", "drop every cached result (of one cluster)", _flush_cache,
            max_args=1),
    Command("PAUSE", "PAUSE [cluster]", "new transactions wait; returns when running ones have finished",
            _pause, max_args=1),
    Command("RESUME", "RESUME [cluster]", "let paused transactions go", _resume, max_args=1),
    Command("RELOAD", "RELOAD", "re-read the configuration file (as SIGHUP)", _reload),
    Command("RECONNECT", "RECONNECT [cluster [database]]",
            "retire pooled server connections: idle ones now, borrowed ones when given back", _reconnect,
            max_args=2),
    Command("FAILOVER", "FAILOVER cluster [TO 'host:port']", "planned switchover to a replica",
            _failover, min_args=1, max_args=3),
    Command("SHOW FAULTS", "SHOW FAULTS", "injected faults: kind, scope, probability, expiry, times fired",
            _show_faults),
    Command("FAULT", "FAULT ADD kind [...] | FAULT DEL id | FAULT CLEAR [id]",
            "fault injection ([server] faults = true): latency, error, drop, refuse, blackhole", _fault,
            min_args=1, max_args=30),
    Command("SHOW RECORDING", "SHOW RECORDING", "the recording running (RECORD START): file, sessions, statements",
            _show_recording),
    Command("RECORD", "RECORD START 'file' [cluster] | RECORD STOP",
            "record every client statement with its timing to a file for dbproxy replay", _record,
            min_args=1, max_args=3),
    Command("KILL CLIENT", "KILL CLIENT id", "disconnect one client", _kill_client, min_args=1, max_args=1),
    Command("SHUTDOWN", "SHUTDOWN", "drain and exit (as SIGTERM)", _shutdown),
)

_HINT = "SHOW HELP lists the commands: " + ", ".join(c.usage for c in COMMANDS)
