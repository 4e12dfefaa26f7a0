"""Read-only views of the listening connections (PostgreSQL LISTEN in transaction pooling): SHOW LISTENERS, /metrics.

An engine whose cluster state has `listen_view()` (PostgreSQL: engines/postgres/engine.py) lists one
dict per listening connection; other engines list none.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from .resultset import Table

if TYPE_CHECKING:
    from ..core.app_view import AppView as ProxyApp
    from ..core.cluster import Cluster

LISTENER_COLUMNS = (
    ("cluster", "text"), ("user", "text"), ("database", "text"), ("instance", "text"), ("state", "text"),
    ("channels", "int"), ("listening_clients", "int"), ("received", "int"), ("delivered", "int"),
    ("dropped", "int"), ("disconnected", "int"), ("connects", "int"), ("server_pid", "int"), ("last_error", "text"),
)


def listen_views(cluster: Cluster) -> list[dict[str, Any]]:
    view = getattr(cluster.engine_state, "listen_view", None)
    return list(view()) if view is not None else []


def listeners(app: ProxyApp) -> Table:
    """SHOW LISTENERS: one row per listening connection (cluster, server user, database)."""
    rows = []
    for cluster in app.clusters.values():
        for v in listen_views(cluster):
            rows.append((cluster.name, v["user"], v["database"], v["instance"], v["state"], v["channels"],
                         v["listening_clients"], v["received"], v["delivered"], sum(v["dropped"].values()),
                         v["disconnected"], v["connects"], v["server_pid"], v["last_error"] or None))
    return Table.of(LISTENER_COLUMNS, rows)


def listen_metrics(app: ProxyApp) -> Iterator[Metric]:
    """dbproxy_listen_* gauges and dbproxy_notifications_* counters per cluster (sampled at scrape time)."""
    clients = GaugeMetricFamily("dbproxy_listen_clients", "Clients listening on at least one channel "
                                "(LISTEN answered by the proxy, transaction pooling)", labels=["cluster"])
    channels = GaugeMetricFamily("dbproxy_listen_channels", "Channels the listening connections listen on",
                                 labels=["cluster"])
    conns = GaugeMetricFamily("dbproxy_listen_connections", "Listening server connections up", labels=["cluster"])
    received = CounterMetricFamily("dbproxy_notifications_received", "Notifications the listening connections got",
                                   labels=["cluster"])
    delivered = CounterMetricFamily("dbproxy_notifications_delivered", "Notifications written to clients",
                                    labels=["cluster"])
    dropped = CounterMetricFamily("dbproxy_notifications_dropped", "Notifications not delivered, by reason "
                                  "(client_queue_full, client_gone, no_listener)", labels=["cluster", "reason"])
    disconnected = CounterMetricFamily("dbproxy_listen_disconnects", "Clients disconnected because their "
                                       "notification queue overflowed", labels=["cluster"])
    for cluster in app.clusters.values():
        views = listen_views(cluster)
        if not views:
            continue
        name = [cluster.name]
        clients.add_metric(name, sum(v["listening_clients"] for v in views))
        channels.add_metric(name, sum(v["channels"] for v in views))
        conns.add_metric(name, sum(1 for v in views if v["state"] == "up"))
        received.add_metric(name, sum(v["received"] for v in views))
        delivered.add_metric(name, sum(v["delivered"] for v in views))
        disconnected.add_metric(name, sum(v["disconnected"] for v in views))
        reasons: dict[str, int] = {}
        for v in views:
            for reason, n in v["dropped"].items():
                reasons[reason] = reasons.get(reason, 0) + n
        for reason, n in sorted(reasons.items()):
            dropped.add_metric([cluster.name, reason], n)
    yield from (clients, channels, conns, received, delivered, dropped, disconnected)
