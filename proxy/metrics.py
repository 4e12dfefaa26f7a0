"""Prometheus metrics named after RDS Proxy's CloudWatch metrics (SPEC §8), on a private registry."""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import CounterMetricFamily
from prometheus_client.registry import Collector


class Metrics:
    """Every metric the proxy exports; gauges about pools and topology are refreshed on scrape."""

    def __init__(self) -> None:
        r = self.registry = CollectorRegistry()
        self.client_connections = Gauge(
            "dbproxy_client_connections", "Client connections open now", ["cluster", "endpoint"], registry=r)
        self.client_connections_received = Counter(
            "dbproxy_client_connections_received", "Client connections accepted", ["cluster", "endpoint"],
            registry=r)
        self.client_setup_failed_auth = Counter(
            "dbproxy_client_connections_setup_failed_auth", "Client logins refused for authentication",
            ["cluster", "endpoint"], registry=r)
        self.client_connections_tls = Gauge(
            "dbproxy_client_connections_tls", "Client connections using TLS", ["cluster", "endpoint"], registry=r)
        self.database_connections = Gauge(
            "dbproxy_database_connections", "Server connections open", ["cluster", "instance"], registry=r)
        self.database_connections_borrowed = Gauge(
            "dbproxy_database_connections_borrowed", "Server connections in use by a client",
            ["cluster", "instance"], registry=r)
        self.database_connections_in_transaction = Gauge(
            "dbproxy_database_connections_in_transaction", "Server connections inside a transaction",
            ["cluster", "instance"], registry=r)
        self.database_connections_pinned = Gauge(
            "dbproxy_database_connections_pinned", "Server connections pinned to one client",
            ["cluster", "instance"], registry=r)
        self.database_connection_setup_failed = Counter(
            "dbproxy_database_connection_setup_failed", "Server connections that failed to open",
            ["cluster", "instance"], registry=r)
        self.borrow_seconds = Histogram(
            "dbproxy_database_connection_borrow_seconds", "Time a transaction waited for a server connection",
            ["cluster"], registry=r,
            buckets=(0.0005, 0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1, 5, 30))
        # Counted on the hot path as plain ints; exported by _RequestCollector at scrape time.
        self.requests: dict[tuple[str, str, str], int] = {}
        r.register(_RequestCollector(self.requests))
        self.query_response_seconds = Histogram(
            "dbproxy_query_response_seconds", "Time from a transaction's first message to its release",
            ["cluster", "endpoint"], registry=r)
        self.pins = Counter(
            "dbproxy_client_pins", "Clients pinned to a server connection, by reason", ["cluster", "reason"],
            registry=r)
        self.instance_up = Gauge("dbproxy_instance_up", "Instance reachable (1) or down (0)",
                                 ["cluster", "instance"], registry=r)
        self.instance_is_primary = Gauge("dbproxy_instance_is_primary", "Instance is the primary",
                                         ["cluster", "instance"], registry=r)
        self.replica_lag_seconds = Gauge("dbproxy_replica_lag_seconds", "Replication lag",
                                         ["cluster", "instance"], registry=r)
        self.failovers = Counter("dbproxy_failovers", "Writer changes", ["cluster"], registry=r)
        self.client_waiting = Gauge("dbproxy_client_waiting", "Clients waiting for a server connection",
                                    ["cluster"], registry=r)

    def auth_failed(self, cluster: str, endpoint: str) -> None:
        self.client_setup_failed_auth.labels(cluster, endpoint).inc()

    def borrowed(self, cluster: str, seconds: float) -> None:
        self.borrow_seconds.labels(cluster).observe(seconds)

    def transaction_started(self, cluster: str, endpoint: str, route: str = "primary") -> None:
        key = (cluster, endpoint, route)
        requests = self.requests
        requests[key] = requests.get(key, 0) + 1

    def pinned(self, cluster: str, reason: str) -> None:
        self.pins.labels(cluster, reason).inc()


class _RequestCollector(Collector):
    """dbproxy_query_requests_total{cluster,endpoint,route} from the plain counters."""

    def __init__(self, requests: dict[tuple[str, str, str], int]) -> None:
        self._requests = requests

    def collect(self) -> Iterator[CounterMetricFamily]:
        family = CounterMetricFamily("dbproxy_query_requests", "Transactions (or statements in autocommit) routed",
                                     labels=["cluster", "endpoint", "route"])
        for (cluster, endpoint, route), value in list(self._requests.items()):
            family.add_metric([cluster, endpoint, route], value)
        yield family
