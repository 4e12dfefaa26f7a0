"""Process lifecycle: start listeners, handle signals, reload, drain and stop."""

from __future__ import annotations

import asyncio
import functools
import logging
import random
import signal
import time
from collections.abc import Callable, Coroutine
from typing import TYPE_CHECKING, Any

from .admin import start_admin_console, topology_view
from .admin import views as admin_views
from .audit import AuditLog
from .config import ClusterConfig, Config, ConfigError, EndpointConfig, ServerSettings, User, load_config
from .config.diff import ConfigDiff, diff
from .core.admission import ConnectionCounts, ConnectRateLimiter, LogThrottle, allowlist_for, client_host
from .core.cluster import Cluster
from .core.session import LOGIN, READY
from .core.session import ClientSessionCore as ClientSession
from .core.users import UserDirectory
from .errors import ShuttingDown, TooManyConnections
from .faults.injector import FaultInjector
from .http import start_http_server
from .logs import ConnectionLog, setup_logging
from .metrics import Metrics
from .mirror.sender import make_mirrors
from .recording import recorder as recording
from .recording.recorder import Recorder, install_hooks
from .tokens import TokenKeys

if TYPE_CHECKING:
    from .workers.control import WorkerSet

log = logging.getLogger("dbproxy")
connections_log = ConnectionLog()


class ProxyApp:
    """Everything one dbproxy process runs: clusters, listeners, client sessions, metrics."""

    def __init__(self, config: Config) -> None:
        self.config = config
        self.users = UserDirectory(config.users, engines={c.engine for c in config.clusters})
        self.tokens = TokenKeys(config.server.tokens, None, time.time())   # token logins (proxy/tokens.py)
        self.metrics = Metrics()
        self.metrics.on_scrape(lambda: admin_views.live_metrics(self))
        self.metrics.on_scrape(lambda: topology_view.zone_metrics(self))
        self.clusters: dict[str, Cluster[Any]] = {c.name: self._new_cluster(c) for c in config.clusters}
        self.sessions: set[ClientSession] = set()
        self._by_pid: dict[int, ClientSession] = {}
        self._next_pid = random.randint(1 << 23, 1 << 29)   # above Linux pids (pid_max <= 2**22)
        self._pid_step = 1   # workers: N, each worker's ids stay apart (proxy/workers/worker.py)
        self.reuse_port = False   # workers: every worker listens on the same ports (SO_REUSEPORT)
        # The control process's view of its workers (proxy/workers/control.py): admin commands and
        # /metrics, /status are gathered from every worker through it. None in a single process.
        self.workers: WorkerSet | None = None
        self.listeners: dict[tuple[str, str], asyncio.Server] = {}
        self.started_at = time.time()
        self.stopping = asyncio.Event()
        self.draining = False
        self._tasks: set[asyncio.Task[Any]] = set()
        self.extra_services: list[asyncio.AbstractServer] = []
        # SPEC §10: the per-address connect rate (None: no limit), the per-user / per-database
        # counts, the throttle of refusal log lines, the audit log (None: off; opened by start()).
        self.connect_rate = _connect_rate(config.server)
        self.counts = ConnectionCounts()
        self.limits_on = _has_limits(config)   # False: logins are not counted (ClientSessionCore.claim_limits)
        self.refusal_log = LogThrottle()
        settings = config.server
        self.audit = AuditLog(settings.audit_log, settings.audit_statements) if settings.audit_log else None
        self.faults = FaultInjector(settings.faults, self.metrics, lambda: self.clusters)   # SPEC §13
        self.recording: Recorder | None = None   # RECORD START ... RECORD STOP (proxy/recording/)

    def _new_cluster(self, config: ClusterConfig) -> Cluster[Any]:
        """A cluster's runtime state (the control process and the workers make their own kind)."""
        return Cluster(config, self._configured_user, self._configured_users)

    def _configured_user(self, name: str) -> User | None:
        login = self.users.get(name)
        return login.user if login is not None else None

    def _configured_users(self) -> list[User]:
        return self.users.users()

    # ---- lifecycle ------------------------------------------------------------------------------

    async def start(self) -> None:
        if self.audit is not None:
            self.audit.open()
        for cluster in self.clusters.values():
            await cluster.start(self.metrics)
            for endpoint in cluster.config.endpoints:
                await self._listen(cluster, endpoint)
        make_mirrors(self.clusters, self.metrics)
        self._spawn(self._maintenance())
        await self._start_services()

    async def _start_services(self) -> None:
        """The admin console and the HTTP status service, when configured (closed by drain)."""
        settings = self.config.server
        if settings.admin_listen is not None:
            address = settings.admin_listen
            self.extra_services.append(await start_admin_console(self, address.host, address.port))
            log.info("admin console listening on %s", address)
        if settings.http_listen is not None:
            address = settings.http_listen
            self.extra_services.append(await start_http_server(self, address.host, address.port))
            log.info("HTTP status listening on %s", address)

    async def _listen(self, cluster: Cluster, endpoint: EndpointConfig) -> None:
        loop = asyncio.get_running_loop()
        name = endpoint.name

        # A reload may change the endpoint's settings: look them up again when the config changed.
        seen: list[Any] = [cluster.config, endpoint]

        make = cluster.engine.client_session

        def session() -> asyncio.Protocol:
            if seen[0] is not cluster.config:
                seen[0] = cluster.config
                seen[1] = next((e for e in cluster.config.endpoints if e.name == name), endpoint)
            return make(self, cluster, seen[1])

        server = await loop.create_server(session, endpoint.listen.host, endpoint.listen.port,
                                          reuse_address=True, reuse_port=self.reuse_port or None, backlog=2048)
        self.listeners[(cluster.name, endpoint.name)] = server
        log.info("endpoint %s/%s (%s) listening on %s", cluster.name, endpoint.name, endpoint.role,
                 endpoint.listen)

    def spawn(self, coro: Coroutine[Any, Any, Any]) -> None:
        """Run a background task the app keeps track of (cancelled on drain)."""
        self._spawn(coro)

    def _spawn(self, coro: Coroutine[Any, Any, Any]) -> None:
        task: asyncio.Task[Any] = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _maintenance(self) -> None:
        while True:
            await asyncio.sleep(1.0)
            for cluster in self.clusters.values():
                cluster.maintain()
            self.faults.maintain()
            if self.recording is not None:
                self.recording.writer.flush()
            self._forget_drained_clusters()
            self._close_idle_clients()
            self._close_stalled_logins()

    def _forget_drained_clusters(self) -> None:
        """A cluster removed by reload goes away once its last client has left."""
        for name, cluster in list(self.clusters.items()):
            if cluster.removed and cluster.clients == 0:
                cluster.close()
                del self.clusters[name]
                log.info("cluster %s removed by reload: its last client has left, pools and probes stopped", name)

    def _close_idle_clients(self) -> None:
        now = time.monotonic()
        for session in list(self.sessions):
            limit = session.cluster.config.pool.client_idle_timeout
            if limit > 0 and session.server is None and now - session.last_activity > limit:
                session.close_with_error("client_idle_timeout", ShuttingDown(
                    f"closing connection idle for more than {limit:g}s"))

    def _close_stalled_logins(self) -> None:
        now = time.monotonic()
        limit = self.config.server.client_login_timeout
        for session in list(self.sessions):
            session.check_login_deadline(now, limit)

    async def drain(self) -> None:
        """Graceful stop: close listeners, close idle clients, let transactions finish (bounded)."""
        self.draining = True
        log.info("draining: closing listeners, waiting for transactions to finish")
        for server in self.listeners.values():
            server.close()
        for service in self.extra_services:
            service.close()
        deadline = time.monotonic() + self.config.server.shutdown_timeout
        while True:
            busy = 0
            for session in list(self.sessions):
                if session.server is None:
                    session.close_with_error("shutdown", ShuttingDown("terminating connection: dbproxy is shutting down"))
                else:
                    busy += 1
            if not busy or time.monotonic() >= deadline:
                break
            await asyncio.sleep(0.05)
        for session in list(self.sessions):
            session.close_with_error("shutdown (timeout)",
                                     ShuttingDown("terminating connection: dbproxy is shutting down"))
        for cluster in self.clusters.values():
            cluster.close()
        for task in self._tasks:
            task.cancel()
        await asyncio.sleep(0)
        if self.audit is not None:   # after the disconnect lines of the clients closed above
            self.audit.close()
        if self.recording is not None:   # a recording still running ends with the process, complete
            recording.stop(self)

    # ---- admission (SPEC §10) -------------------------------------------------------------------

    def screen(self, session: ClientSession, peername: object) -> bool:
        """A new client connection, before any byte: False if the endpoint's allowlist refuses it.

        Over client_connect_rate from its address it is let in with a refusal to give at its login
        (TooManyConnections: a protocol error the client can read, not a reset).
        """
        host = client_host(peername)
        allow = allowlist_for(session.endpoint.allow)
        if allow is not None and not allow.allows(host):
            self.refused_connection(session.cluster.name, session.endpoint.name, host, "allowlist")
            return False
        rate = self.connect_rate
        if rate is not None and not rate.allow(host, time.monotonic()):
            self.refused_connection(session.cluster.name, session.endpoint.name, host, "rate")
            session.refusal = TooManyConnections(
                f"too many connections from {host}: more than {self.config.server.client_connect_rate} "
                "per second (client_connect_rate)")
        return True

    def screen_service(self, service: str, peername: object) -> bool:
        """The admin console's or the HTTP service's allowlist ([server] admin_allow / http_allow)."""
        settings = self.config.server
        allow = allowlist_for(settings.admin_allow if service == "admin" else settings.http_allow)
        if allow is None:
            return True
        host = client_host(peername)
        if allow.allows(host):
            return True
        self.refused_connection("", service, host, "allowlist")
        return False

    def refused(self, session: ClientSession, reason: str) -> None:
        """A login refused by a connection limit (the engine logs and answers it): counted."""
        self.metrics.refused(session.cluster.name, session.endpoint.name, reason)

    def refused_connection(self, cluster: str, endpoint: str, host: str, reason: str) -> None:
        """A connection refused by an allowlist or the connect rate: counted, logged and audited, throttled
        (a flood of refusals writes a line per address and reason every few seconds, saying how many)."""
        self.metrics.refused(cluster, endpoint, reason)
        dropped = self.refusal_log.admit(f"{reason} {cluster}/{endpoint} {host}", time.monotonic())
        if dropped is None:
            return
        where = f"{cluster}/{endpoint}" if cluster else endpoint
        more = f" ({dropped} more since the last line)" if dropped else ""
        if reason == "allowlist":
            log.warning("refused connection from %s to %s: address not in its allowlist%s", host, where, more)
        else:
            log.info("refused connection from %s to %s: over client_connect_rate%s", host, where, more)
        if self.audit is not None:
            self.audit.refused(host, cluster, endpoint, reason, dropped)

    def _apply_server_settings(self, new: ServerSettings) -> None:
        """Reload: the connect rate and the audit log follow [server] (allowlists are read per connection)."""
        old = self.config.server
        self.faults.set_enabled(new.faults)
        if (old.client_connect_rate, old.client_connect_burst) != (new.client_connect_rate, new.client_connect_burst):
            self.connect_rate = _connect_rate(new)
        if new.audit_log is None:
            if self.audit is not None:
                self.audit.close()
                self.audit = None
            return
        try:
            if self.audit is None:
                audit = AuditLog(new.audit_log, new.audit_statements)
                audit.open()
                self.audit = audit
            else:
                self.audit.reopen(new.audit_log, new.audit_statements)
        except OSError as exc:
            log.error("reload: cannot open audit_log %s: %s (the audit log stays as it was)", new.audit_log,
                      exc.strerror or exc)

    def _apply_limits(self, new: Config) -> None:
        """Reload: the first user or database limit makes the clients logged in meanwhile count."""
        limits_on = _has_limits(new)
        if limits_on and not self.limits_on:
            for session in self.sessions:
                if session.login is not None and session._claimed is None and session.state in (LOGIN, READY):
                    self.counts.claim(session.login.user.name, 0, session.cluster.name, session.database, 0)
                    session._claimed = (session.login.user.name, session.database)
        self.limits_on = limits_on

    # ---- sessions -------------------------------------------------------------------------------

    def client_opened(self, session: ClientSession) -> None:
        self.sessions.add(session)
        session.connection_counts = self.metrics.client_connected(session.cluster.name, session.endpoint.name)
        if self.draining:
            session.close_with_error("shutdown", ShuttingDown("dbproxy is shutting down"))

    def client_closed(self, session: ClientSession, reason: str) -> None:
        self.sessions.discard(session)
        if self.recording is not None:
            self.recording.closed(session)
        if session.cluster.mirror is not None:
            session.cluster.mirror.closed(session)
        self._by_pid.pop(session.pid, None)
        session.connection_counts[0] -= 1
        if session.login is not None and session.pid:
            connections_log.info("client %s disconnected: %s (transactions=%d)", session.peer, reason,
                                 session.transactions)
        else:
            log.debug("client %s closed before login: %s", session.peer, reason)

    def register_cancel_key(self, session: ClientSession, wanted_pid: int = 0) -> tuple[int, int]:
        """A (pid, cancel key) for a client: wanted_pid (its own server backend's pid, session mode) unless
        another client has that pid (backends of two instances), else the next proxy pid."""
        by_pid = self._by_pid
        if 0 < wanted_pid <= 0x7FFFFFFF and wanted_pid not in by_pid:
            pid = wanted_pid
        else:
            self._next_pid += self._pid_step
            pid = self._next_pid & 0x7FFFFFFF
            while pid in by_pid or not pid:
                self._next_pid += self._pid_step
                pid = self._next_pid & 0x7FFFFFFF
        key = random.getrandbits(32)
        self._by_pid[pid] = session
        return pid, key

    def client_by_id(self, pid: int) -> ClientSession | None:
        """The client with this proxy connection id (PostgreSQL backend pid, MySQL connection id)."""
        return self._by_pid.get(pid)

    def cancel(self, pid: int, key: int, done: Callable[[], None] | None = None) -> None:
        """A client's CancelRequest: forward it to the server running that client's query, then call
        done (once the server has it, or at once when there is nothing to cancel)."""
        session = self._by_pid.get(pid)
        if session is None or session.key != key:
            log.info("cancel request for unknown backend key %d ignored", pid)
        elif session.server is not None:
            self._spawn(self._cancel(session.cluster.engine.cancel(session.server), done))
            return
        if done is not None:
            done()

    @staticmethod
    async def _cancel(forwarded: Coroutine[Any, Any, None], done: Callable[[], None] | None) -> None:
        try:
            await forwarded
        finally:
            if done is not None:
                done()

    # ---- reload ---------------------------------------------------------------------------------

    async def reload(self) -> list[str]:
        """Re-read the config file and apply it; returns the problems (empty when applied).

        A bad file changes nothing: the problems are logged and the running config stays.
        """
        try:
            new = load_config(self.config.path)
        except ConfigError as exc:
            for line in exc.problems:
                log.error("reload rejected: %s", line)
            return list(exc.problems)
        return await self.apply_config(new)

    async def apply_config(self, new: Config) -> list[str]:
        """Apply a loaded config (reload; a worker gets it from the control process); returns the problems."""
        changes = diff(self.config, new)
        self._apply_server_settings(new.server)
        self._apply_limits(new)
        self.users = UserDirectory(new.users, self.users, {c.engine for c in new.clusters})
        self.tokens = TokenKeys(new.server.tokens, self.tokens, time.time())   # secrets re-read: rotation
        self._close_listeners_of_removed_clusters(new)
        problems: list[str] = []
        for cluster_config in new.clusters:
            cluster = self.clusters.get(cluster_config.name)
            old = cluster.config if cluster is not None else None
            if cluster is None:
                cluster = self.clusters[cluster_config.name] = self._new_cluster(cluster_config)
                await cluster.start(self.metrics)
            else:
                cluster.config = cluster_config
                cluster.apply_instances(old)
                for pool in cluster.pools.values():
                    settings = cluster_config.pool
                    pool.resize(settings.max_server_connections)
                    pool.min_idle = settings.min_idle
                    pool.idle_timeout = settings.idle_timeout
                    pool.max_lifetime = settings.max_lifetime
            problems += await self._apply_endpoints(cluster, old)
        self.config = new
        self.faults.sync()   # new clusters see the faults too
        make_mirrors(self.clusters, self.metrics)
        for session in self.sessions:   # their statement hooks follow the new mirrors
            install_hooks(session, self.audit, self.recording)
        log.info("configuration reloaded from %s: %s", new.path, _describe(changes))
        for setting in changes.requires_restart:
            log.warning("reload: %s changed; it takes effect only after a restart", setting)
        return problems

    async def _apply_endpoints(self, cluster: Cluster, old: ClusterConfig | None) -> list[str]:
        """Listeners follow the reloaded endpoints: new ones open, removed ones close, moved ones reopen.

        Connected clients stay where they are; new clients of a changed endpoint get its new settings.
        """
        wanted = {e.name: e for e in cluster.config.endpoints}
        for endpoint in old.endpoints if old is not None else ():
            if endpoint.name not in wanted or wanted[endpoint.name].listen != endpoint.listen:
                self._close_listener(cluster.name, endpoint.name)
        problems = []
        for endpoint in wanted.values():
            if (cluster.name, endpoint.name) not in self.listeners:
                try:
                    await self._listen(cluster, endpoint)
                except OSError as exc:
                    problem = (f"endpoint {cluster.name}/{endpoint.name}: cannot listen on {endpoint.listen}: "
                               f"{exc.strerror or exc}")
                    log.error("reload: %s", problem)
                    problems.append(problem)
        return problems

    def _close_listeners_of_removed_clusters(self, new: Config) -> None:
        kept = {c.name for c in new.clusters}
        for cluster_name, endpoint_name in list(self.listeners):
            if cluster_name not in kept:
                self._close_listener(cluster_name, endpoint_name)
        for name, cluster in self.clusters.items():
            cluster.removed = name not in kept   # dropped by _forget_drained_clusters once unused

    def _close_listener(self, cluster_name: str, endpoint_name: str) -> None:
        server = self.listeners.pop((cluster_name, endpoint_name), None)
        if server is not None:
            server.close()
            log.info("endpoint %s/%s closed by reload; its connected clients stay", cluster_name, endpoint_name)


def _has_limits(config: Config) -> bool:
    return any(u.max_client_connections for u in config.users) or any(c.databases for c in config.clusters)


def _connect_rate(settings: ServerSettings) -> ConnectRateLimiter | None:
    rate = settings.client_connect_rate
    return ConnectRateLimiter(rate, settings.client_connect_burst or rate) if rate else None


def _describe(changes: ConfigDiff) -> str:
    """One line saying what a reload changed."""
    parts = [f"{label} {', '.join(names)}" for label, names in (
        ("clusters added", changes.clusters_added), ("clusters removed", changes.clusters_removed),
        ("users added", changes.users_added), ("users removed", changes.users_removed),
        ("users changed", changes.users_changed)) if names]
    for cluster in changes.clusters_changed:
        what = [f"{field.replace('_', ' ')} {', '.join(map(str, value))}" if isinstance(value, tuple)
                else field.replace("_", " ") for field, value in vars(cluster).items() if value and field != "name"]
        parts.append(f"cluster {cluster.name}: {'; '.join(what)}")
    if changes.server_changed:
        parts.append("[server] changed")
    return "; ".join(parts) or "no changes"


async def serve(config: Config, make: Callable[[Config], ProxyApp] | None = None) -> int:
    """Run the app (`make`: the control process of workers; default a single ProxyApp) until stopped."""
    app = (make or ProxyApp)(config)
    loop = asyncio.get_running_loop()
    try:
        await app.start()
    except OSError as exc:
        log.error("could not start: %s", exc)
        return 1
    interrupts = 0

    def on_sigint() -> None:
        nonlocal interrupts
        interrupts += 1
        if interrupts >= 2:
            log.info("second SIGINT: stopping now")
            app.config = _with_shutdown_timeout(app.config, 0.0)
        app.stopping.set()

    loop.add_signal_handler(signal.SIGTERM, app.stopping.set)
    loop.add_signal_handler(signal.SIGINT, on_sigint)
    loop.add_signal_handler(signal.SIGHUP, lambda: app._spawn(app.reload()))
    log.info("dbproxy ready")
    await app.stopping.wait()
    await app.drain()
    log.info("dbproxy stopped")
    return 0


def _with_shutdown_timeout(config: Config, seconds: float) -> Config:
    from dataclasses import replace
    return replace(config, server=replace(config.server, shutdown_timeout=seconds))


def run(config: Config) -> int:
    """Run in the foreground until SIGTERM/SIGINT; returns the process exit code."""
    setup_logging(config.server.log_format, config.server.log_level)
    import uvloop

    make: Callable[[Config], ProxyApp] | None = None
    if config.server.workers > 1:
        from .workers.control import ControlApp
        from .workers.template import Template

        # Before the event loop and any thread: the workers are forked from this template.
        template = Template.start({c.engine for c in config.clusters})
        make = functools.partial(ControlApp, template=template)
    try:
        return uvloop.run(serve(config, make))
    except Exception:
        log.exception("dbproxy failed")
        return 1
