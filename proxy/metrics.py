"""Prometheus metrics named after RDS Proxy's CloudWatch metrics (SPEC §8), on a private registry."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import CounterMetricFamily, Metric
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
        # Pool gauges (dbproxy_database_connections*, dbproxy_client_waiting) and server connection
        # setup failures are sampled from the pools at scrape time by the sources given to on_scrape().
        self._scrape = _ScrapeCollector()
        r.register(self._scrape)
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

    def on_scrape(self, source: Callable[[], Iterable[Metric]]) -> None:
        """Add metric families computed when /metrics is scraped (never on the hot path)."""
        self._scrape.sources.append(source)

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


class _ScrapeCollector(Collector):
    """Metric families computed at scrape time by the registered sources."""

    def __init__(self) -> None:
        self.sources: list[Callable[[], Iterable[Metric]]] = []

    def collect(self) -> Iterator[Metric]:
        for source in self.sources:
            yield from source()
