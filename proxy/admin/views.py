"""Read-only views of a running proxy (pools, clients, servers, instances, endpoints, stats, config).

One place computes each view; the admin console shows it as a result set, /status as JSON and the
metrics collector samples it at scrape time. Nothing here is called on the hot path.

Instance state comes from the cluster's topology monitor when it has one; without it every
configured instance is listed with role and state "unknown".
"""

from __future__ import annotations

import json
import platform
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from .. import __version__
from ..config import Address, EndpointConfig
from ..config.display import to_display
from ..config.urls import shown_url
from ..metrics import cache_families
from ..topology.model import InstanceState, TopologySnapshot
from . import topology_view
from .listen_views import listen_metrics, listen_views
from .resultset import Table

if TYPE_CHECKING:
    from ..core.app_view import AppView as ProxyApp
    from ..core.cluster import Cluster
    from ..core.session import ClientSessionCore as ClientSession
    from ..engines.base import ServerLink as ServerConnection
    from ..pool.pool import Pool
    from ..topology.monitor import TopologyEvent


def version_string() -> str:
    try:
        import uvloop
        loop = f", uvloop {uvloop.__version__}"
    except ImportError:  # pragma: no cover - uvloop is a dependency
        loop = ""
    return f"dbproxy {__version__} (Python {platform.python_version()}{loop})"


# ---- time and formatting -----------------------------------------------------------------------

def iso_time(wall: float | None) -> str | None:
    """UTC ISO 8601 with milliseconds, or None."""
    if wall is None:
        return None
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(wall)) + f".{int(wall * 1000) % 1000:03d}Z"


def monotonic_to_wall(mono: float | None) -> float | None:
    if mono is None:
        return None
    return time.time() - (time.monotonic() - mono)


def format_position(engine: str, position: int | None) -> str | None:
    """A replication position as the engine writes it (PostgreSQL: an LSN such as 0/3000148)."""
    if position is None:
        return None
    if engine == "postgres":
        return f"{position >> 32:X}/{position & 0xFFFFFFFF:X}"
    return str(position)


# ---- topology --------------------------------------------------------------------------------

def snapshot_of(cluster: Cluster) -> TopologySnapshot | None:
    """The cluster's current topology snapshot, or None when its engine has no health checks."""
    return cluster.topology


def writer_of(cluster: Cluster) -> Address | None:
    """The current writer; without health checks, the first configured instance (static routing)."""
    snapshot = snapshot_of(cluster)
    if snapshot is not None:
        return snapshot.writer
    return cluster.config.instances[0] if cluster.config.instances else None


def events_of(cluster: Cluster) -> list[TopologyEvent]:
    """Recent topology changes (role, state, writer), oldest first."""
    return list(cluster.monitor.events) if cluster.monitor is not None else []


def instance_states(cluster: Cluster) -> list[InstanceState]:
    """Every instance: the topology's view, or configured instances with unknown state."""
    snapshot = snapshot_of(cluster)
    if snapshot is not None:
        return list(snapshot.instances)
    return [InstanceState(address) for address in cluster.config.instances]


def endpoint_targets(cluster: Cluster, endpoint: EndpointConfig) -> list[Address]:
    """Where the endpoint may send work right now (mirrors topology.select.choose, as a list)."""
    return cluster.endpoint_targets(endpoint)


# ---- pools and servers ---------------------------------------------------------------------------

@dataclass(frozen=True)
class PoolCounts:
    """What a pool's connections are doing right now."""

    open: int
    idle: int
    borrowed: int
    in_transaction: int
    pinned: int


def pool_counts(pool: Pool[ServerConnection]) -> PoolCounts:
    borrowed = list(pool.in_use)
    in_transaction = sum(1 for c in borrowed if c.in_transaction)
    pinned = sum(1 for c in borrowed if c.pinned_reason is not None)
    idle = sum(1 for c in pool.idle if not c.closed)
    return PoolCounts(idle + len(borrowed), idle, len(borrowed), in_transaction, pinned)


POOL_COLUMNS = (
    ("cluster", "text"), ("instance", "text"), ("user", "text"), ("database", "text"), ("mode", "text"),
    ("open", "int"), ("idle", "int"), ("borrowed", "int"), ("in_transaction", "int"), ("pinned", "int"),
    ("opening", "int"), ("waiting", "int"), ("max_size", "int"), ("borrows", "int"), ("timeouts", "int"),
    ("connect_failures", "int"), ("avg_wait_ms", "float"), ("generation", "int"), ("paused", "bool"),
)


def pools(app: ProxyApp) -> Table:
    rows = []
    for cluster in app.clusters.values():
        for (instance, user, database, _), pool in sorted(cluster.pools.items(), key=lambda kv: kv[0]):
            counts = pool_counts(pool)
            waited = pool.wait_seconds_total / pool.borrows * 1000 if pool.borrows else 0.0
            rows.append((cluster.name, str(instance), user, database, cluster.config.pool.mode, counts.open,
                         counts.idle, counts.borrowed, counts.in_transaction, counts.pinned, pool.opening,
                         pool.waiting(), pool.max_size, pool.borrows, pool.timeouts, pool.connect_failures,
                         round(waited, 3), pool.generation, cluster.paused))
    return Table.of(POOL_COLUMNS, rows)


SERVER_COLUMNS = (
    ("id", "int"), ("cluster", "text"), ("instance", "text"), ("user", "text"), ("database", "text"),
    ("state", "text"), ("client_id", "int"), ("tx_status", "text"), ("pinned", "text"),
    ("backend_pid", "int"), ("age_s", "float"), ("idle_s", "float"), ("generation", "int"),
)


def servers(app: ProxyApp) -> Table:
    now = time.monotonic()
    owners = {s.server.id: s.pid for s in app.sessions if s.server is not None}
    rows = []
    for cluster in app.clusters.values():
        for pool in cluster.pools.values():
            for conn, state in _pool_connections(pool):
                client_id = owners.get(conn.id)
                idle_s = round(now - conn.last_used, 3) if state == "idle" else None
                rows.append((conn.id, cluster.name, str(conn.address), conn.user, conn.database, state,
                             client_id, conn.transaction_status, conn.pinned_reason, conn.pid,
                             round(now - conn.created_at, 3), idle_s, conn.generation))
    rows.sort(key=lambda r: r[0])
    return Table.of(SERVER_COLUMNS, rows)


def _pool_connections(pool: Pool[ServerConnection]) -> Iterator[tuple[ServerConnection, str]]:
    for conn in pool.in_use:
        yield conn, "active" if conn.owner is not None else "resetting"
    for conn in pool.idle:
        if not conn.closed:
            yield conn, "idle"


# ---- clients ----------------------------------------------------------------------------------

CLIENT_COLUMNS = (
    ("id", "int"), ("cluster", "text"), ("endpoint", "text"), ("user", "text"), ("database", "text"),
    ("peer", "text"), ("application_name", "text"), ("state", "text"), ("server_id", "int"),
    ("server_instance", "text"), ("pinned", "text"), ("transactions", "int"), ("queries", "int"),
    ("connected_at", "text"), ("idle_s", "float"),
)


def client_state(session: ClientSession) -> str:
    if session.login is None or not session.pid:
        return "login"
    return "active" if session.server is not None else "idle"


def clients(app: ProxyApp) -> Table:
    now = time.monotonic()
    rows = []
    for session in sorted(app.sessions, key=lambda s: (s.connected_at, s.pid)):
        server = session.server
        user = session.login.user.name if session.login is not None else None
        idle_s = round(now - session.last_activity, 3) if server is None else None
        rows.append((session.pid or None, session.cluster.name, session.endpoint.name, user,
                     session.database or None, session.peer, session.app_name or None,
                     client_state(session), server.id if server is not None else None,
                     str(server.address) if server is not None else None, session.pinned,
                     session.transactions, session.queries, iso_time(session.connected_at), idle_s))
    return Table.of(CLIENT_COLUMNS, rows)


# ---- instances and endpoints --------------------------------------------------------------------

INSTANCE_COLUMNS = (
    ("cluster", "text"), ("instance", "text"), ("role", "text"), ("state", "text"), ("writer", "bool"),
    ("lag_ms", "float"), ("lag_bytes", "int"), ("position", "text"), ("timeline", "int"),
    ("server_connections", "int"), ("last_check", "text"), ("state_since", "text"), ("error", "text"),
)


def instances(app: ProxyApp) -> Table:
    rows = []
    for cluster in app.clusters.values():
        snapshot = snapshot_of(cluster)
        open_by_instance: dict[Address, int] = {}
        for (instance, _, _, _), pool in cluster.pools.items():
            open_by_instance[instance] = open_by_instance.get(instance, 0) + pool_counts(pool).open
        for state in instance_states(cluster):
            lag_ms = round(state.lag_seconds * 1000, 3) if state.lag_seconds is not None else None
            lag_bytes = state.lag_bytes
            if state.state == "down":   # last known lag of an instance that does not answer means nothing
                lag_ms = lag_bytes = None
            since = monotonic_to_wall(state.since) if snapshot is not None else None
            rows.append((cluster.name, str(state.address), state.role, state.state,
                         snapshot is not None and snapshot.writer == state.address, lag_ms, lag_bytes,
                         format_position(cluster.config.engine, state.position), state.timeline,
                         open_by_instance.get(state.address, 0), iso_time(monotonic_to_wall(state.last_check)),
                         iso_time(since), state.error or None))
    return Table.of(INSTANCE_COLUMNS, rows)


ENDPOINT_COLUMNS = (
    ("cluster", "text"), ("endpoint", "text"), ("role", "text"), ("listen", "text"), ("kind", "text"),
    ("clients", "int"), ("targets", "text"), ("requests_primary", "int"), ("requests_replica", "int"),
)


def endpoints(app: ProxyApp) -> Table:
    counts: dict[tuple[str, str], int] = {}
    for session in app.sessions:
        key = (session.cluster.name, session.endpoint.name)
        counts[key] = counts.get(key, 0) + 1
    requests = app.metrics.requests
    rows = []
    for cluster in app.clusters.values():
        for endpoint in cluster.config.endpoints:
            key = (cluster.name, endpoint.name)
            kind = endpoint.kind if endpoint.role == "custom" else None
            targets = ",".join(str(a) for a in endpoint_targets(cluster, endpoint))
            rows.append((cluster.name, endpoint.name, endpoint.role, str(endpoint.listen), kind,
                         counts.get(key, 0), targets, requests.get((*key, "primary"), 0),
                         requests.get((*key, "replica"), 0)))
    return Table.of(ENDPOINT_COLUMNS, rows)


# ---- stats, config, version ---------------------------------------------------------------------

STATS_COLUMNS = (
    ("cluster", "text"), ("endpoint", "text"), ("clients", "int"), ("clients_total", "int"),
    ("auth_failed", "int"), ("transactions", "int"), ("avg_transaction_ms", "float"),
    ("borrow_avg_ms", "float"), ("borrow_timeouts", "int"), ("server_connect_failures", "int"),
    ("pins", "int"),
)


def stats(app: ProxyApp) -> Table:
    registry = app.metrics.registry
    requests = app.metrics.requests

    def sample(name: str, **labels: str) -> float:
        return registry.get_sample_value(name, labels) or 0.0

    rows = []
    for cluster in app.clusters.values():
        name = cluster.name
        borrows = sample("dbproxy_database_connection_borrow_seconds_count", cluster=name)
        borrow_ms = round(sample("dbproxy_database_connection_borrow_seconds_sum", cluster=name) / borrows * 1000,
                          3) if borrows else None
        timeouts = sum(p.timeouts for p in cluster.pools.values())
        failures = sum(p.connect_failures for p in cluster.pools.values())
        pins = sum(s.value for metric in app.metrics.pins.collect() for s in metric.samples
                   if s.name.endswith("_total") and s.labels.get("cluster") == name)
        for endpoint in cluster.config.endpoints:
            labels = {"cluster": name, "endpoint": endpoint.name}
            count = sample("dbproxy_query_response_seconds_count", **labels)
            avg_ms = round(sample("dbproxy_query_response_seconds_sum", **labels) / count * 1000, 3) if count else None
            transactions = sum(v for (c, e, _), v in requests.items() if c == name and e == endpoint.name)
            rows.append((name, endpoint.name, int(sample("dbproxy_client_connections", **labels)),
                         int(sample("dbproxy_client_connections_received_total", **labels)),
                         int(sample("dbproxy_client_connections_setup_failed_auth_total", **labels)),
                         transactions, avg_ms, borrow_ms, timeouts, failures, int(pins)))
    return Table.of(STATS_COLUMNS, rows)


def config_rows(app: ProxyApp) -> Table:
    """The running configuration, secrets masked, one (key, value) row per setting."""
    rows = [("path", app.config.path)]
    rows.extend(_flatten("", to_display(app.config)))
    return Table.of(("key", "value"), rows)


def _flatten(prefix: str, value: Any) -> Iterator[tuple[str, str]]:
    if isinstance(value, dict):
        for key, item in value.items():
            yield from _flatten(f"{prefix}.{key}" if prefix else str(key), item)
    elif isinstance(value, list) and value and all(isinstance(v, dict) and "name" in v for v in value):
        for item in value:
            rest = {k: v for k, v in item.items() if k != "name"}
            yield from _flatten(f"{prefix}.{item['name']}", rest)
    elif isinstance(value, list):
        yield prefix, json.dumps(value)
    elif isinstance(value, bool):
        yield prefix, "true" if value else "false"
    else:
        yield prefix, str(value)


def version(app: ProxyApp) -> Table:
    return Table.of(("version",), [(version_string(),)])


# ---- everything at once, for /status --------------------------------------------------------------

def cache_status(cluster: Cluster) -> dict[str, Any] | None:
    """The query cache of one cluster as /status and SHOW CACHE show it (None: no cache)."""
    cache = cluster.cache
    if cache is None:
        return None
    entries, size = cache.usage()
    return {"backend": shown_url(cache.settings.backend), "state": "up" if cache.up else "down", "entries": entries,
            "bytes": size, "hits": cache.requests["hit"], "misses": cache.requests["miss"],
            "bypasses": cache.requests["bypass"], "hit_ratio": round(cache.hit_ratio(), 4),
            "stores": cache.stores, "invalidations": cache.invalidations, "evictions": cache.evictions,
            "last_error": cache.last_error if not cache.up else ""}


def cache(app: ProxyApp) -> Table:
    """SHOW CACHE: one row per cluster with a query cache (entries and bytes: this process's)."""
    rows = []
    for cluster in app.clusters.values():
        shown = cache_status(cluster)
        if shown is not None:
            rows.append([cluster.name, *shown.values()])
    return Table.of(("cluster", "backend", "state", "entries", "bytes", "hits", "misses", "bypasses", "hit_ratio",
                     "stores", "invalidations", "evictions", "last_error"), rows)


def status(app: ProxyApp) -> dict[str, Any]:
    """The JSON document served at /status."""
    by_cluster: dict[str, dict[str, list[dict[str, Any]]]] = {}
    for section, table in (("instances", instances(app)), ("endpoints", endpoints(app)),
                           ("pools", pools(app))):
        for row in table.as_dicts():
            by_cluster.setdefault(row.pop("cluster"), {}).setdefault(section, []).append(row)
    clients_by_cluster: dict[str, int] = {}
    for session in app.sessions:
        clients_by_cluster[session.cluster.name] = clients_by_cluster.get(session.cluster.name, 0) + 1
    clusters = []
    for cluster in app.clusters.values():
        views = by_cluster.get(cluster.name, {})
        writer = writer_of(cluster)
        clusters.append({
            "name": cluster.name,
            "engine": cluster.config.engine,
            "topology": snapshot_of(cluster) is not None,
            "writer": str(writer) if writer is not None else None,
            "paused": cluster.paused,
            "failover_problem": cluster.failover.privilege_problem if cluster.failover is not None else "",
            "patroni": cluster.patroni.status() if cluster.patroni is not None else None,
            "clients": clients_by_cluster.get(cluster.name, 0),
            "waiting": clients_waiting(cluster),
            "instances": views.get("instances", []),
            "endpoints": views.get("endpoints", []),
            "pools": views.get("pools", []),
            "role_changes": [{"at": iso_time(e.at), "text": e.text} for e in events_of(cluster)[-50:]],
            "cache": cache_status(cluster),
            **topology_view.status_of(cluster),   # zone, placement, discovery, next_promotion
            "listeners": [{**v, "since": iso_time(v["since"])} for v in listen_views(cluster)],
        })
    return {
        "version": version_string(),
        "now": iso_time(time.time()),
        "started_at": iso_time(app.started_at),
        "uptime_s": round(time.time() - app.started_at, 3),
        "draining": app.draining,
        "ready": not not_ready_reasons(app),
        "clusters": clusters,
    }


def clients_waiting(cluster: Cluster) -> int:
    """Clients waiting for a server connection: for resume, for a writer, for a pool slot or a new connection."""
    return cluster.borrowing


def failover_problems(app: ProxyApp) -> list[str]:
    """Promote-mode clusters whose health user cannot promote (ready all the same: the writer works)."""
    return [f"cluster {cluster.name}: {cluster.failover.privilege_problem}" for cluster in app.clusters.values()
            if cluster.failover is not None and cluster.failover.privilege_problem]


def not_ready_reasons(app: ProxyApp) -> list[str]:
    """Why /readyz answers 503: draining, or a cluster without a writer. Empty when ready."""
    reasons = ["dbproxy is draining"] if app.draining else []
    for cluster in app.clusters.values():
        if writer_of(cluster) is None:
            reasons.append(f"cluster {cluster.name} has no writer")
    return reasons


# ---- metrics sampled at scrape time --------------------------------------------------------------

def live_metrics(app: ProxyApp) -> Iterator[Metric]:
    """Pool gauges per (cluster, instance), clients waiting per cluster, connect failures: from the pools."""
    labels = ["cluster", "instance"]
    families = {
        "open": GaugeMetricFamily("dbproxy_database_connections", "Server connections open", labels=labels),
        "borrowed": GaugeMetricFamily("dbproxy_database_connections_borrowed",
                                      "Server connections in use by a client", labels=labels),
        "in_transaction": GaugeMetricFamily("dbproxy_database_connections_in_transaction",
                                            "Server connections inside a transaction", labels=labels),
        "pinned": GaugeMetricFamily("dbproxy_database_connections_pinned",
                                    "Server connections pinned to one client", labels=labels),
    }
    failed = CounterMetricFamily("dbproxy_database_connection_setup_failed",
                                 "Server connections that failed to open", labels=labels)
    waiting = GaugeMetricFamily("dbproxy_client_waiting", "Clients waiting for a server connection",
                                labels=["cluster"])
    can_promote = GaugeMetricFamily("dbproxy_failover_privileges_ok",
                                    "Promote mode: the health user may promote and re-point (1) or not (0)",
                                    labels=["cluster"])
    for cluster in app.clusters.values():
        totals: dict[Address, list[int]] = {}
        for (instance, _, _, _), pool in cluster.pools.items():
            counts = pool_counts(pool)
            total = totals.setdefault(instance, [0, 0, 0, 0, 0])
            for i, value in enumerate((counts.open, counts.borrowed, counts.in_transaction, counts.pinned,
                                       pool.connect_failures)):
                total[i] += value
        for instance in cluster.config.instances:
            totals.setdefault(instance, [0, 0, 0, 0, 0])
        for instance, (open_, borrowed, in_transaction, pinned, failures) in totals.items():
            values = [cluster.name, str(instance)]
            families["open"].add_metric(values, open_)
            families["borrowed"].add_metric(values, borrowed)
            families["in_transaction"].add_metric(values, in_transaction)
            families["pinned"].add_metric(values, pinned)
            failed.add_metric(values, failures)
        waiting.add_metric([cluster.name], clients_waiting(cluster))
        if cluster.failover is not None and cluster.config.failover.mode == "promote":
            can_promote.add_metric([cluster.name], 0 if cluster.failover.privilege_problem else 1)
    yield from families.values()
    yield failed
    yield waiting
    yield can_promote
    yield from cache_families((c.name, c.cache) for c in app.clusters.values() if c.cache is not None)
    yield from listen_metrics(app)
