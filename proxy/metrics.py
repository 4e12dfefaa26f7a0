"""Prometheus metrics named after RDS Proxy's CloudWatch metrics (SPEC §8), on a private registry."""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Callable, Iterable, Iterator
from typing import TYPE_CHECKING, Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector

if TYPE_CHECKING:
    from .cache.front import QueryCache


class Metrics:
    """Every metric the proxy exports; gauges about pools and topology are refreshed on scrape."""

    def __init__(self) -> None:
        r = self.registry = CollectorRegistry()
        # Client connections per (cluster, endpoint): [open now, accepted so far], counted as plain
        # ints on every connect and disconnect, exported by _ClientConnectionsCollector.
        self.client_connections: dict[tuple[str, str], list[int]] = {}
        r.register(_ClientConnectionsCollector(self.client_connections))
        self.client_setup_failed_auth = Counter(
            "dbproxy_client_connections_setup_failed_auth", "Client logins refused for authentication",
            ["cluster", "endpoint"], registry=r)
        self.client_refused = Counter(
            "dbproxy_client_connections_refused",
            "Client connections refused before or at login (allowlist, rate, user_limit, database_limit, "
            "max_client_connections); endpoint admin / http for those listeners",
            ["cluster", "endpoint", "reason"], registry=r)
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
        self._borrow_children: dict[str, Any] = {}
        # Counted on the hot path as plain ints; exported by _RequestCollector at scrape time.
        self.requests: dict[tuple[str, str, str], int] = {}
        r.register(_RequestCollector(self.requests))
        # Observed on the hot path into plain lists; exported by _ResponseTimeCollector at scrape time.
        self.response_times: dict[tuple[str, str], list[float]] = {}
        r.register(_ResponseTimeCollector(self.response_times))
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
        self.promotions_refused = Counter(
            "dbproxy_failover_promotions_refused",
            "Promote mode: promotions refused because another dbproxy in promote mode watches the cluster",
            ["cluster"], registry=r)
        self.patroni_api_up = Gauge("dbproxy_patroni_api_up",
                                    "Patroni mode: a member's REST API answered the last poll (1) or none did (0)",
                                    ["cluster"], registry=r)
        self.faults_injected = Counter(
            "dbproxy_faults_injected", "Faults injected (SPEC §13): latency, error, drop, refuse, blackhole (per probe)",
            ["cluster", "kind"], registry=r)
        self.mirror_sent = Counter("dbproxy_mirror_sent", "Mirrored transactions run on the shadow cluster",
                                   ["cluster"], registry=r)
        self.mirror_dropped = Counter(
            "dbproxy_mirror_dropped",
            "Mirrored transactions dropped (queue_full, shadow_down, timeout, error, stopped, unmirrorable)",
            ["cluster", "reason"], registry=r)
        self.mirror_mismatches = Counter(
            "dbproxy_mirror_mismatches", "Mirrored reads whose row count or digest differed from the primary's",
            ["cluster"], registry=r)
        self.replays = Counter(
            "dbproxy_replays", "Transactions whose writer connection died (failover.replay), by outcome: attempted, "
            "succeeded, mismatched, failed (no writer in time, lost again), not_replayable, unknown_outcome",
            ["cluster", "outcome"], registry=r)

    def on_scrape(self, source: Callable[[], Iterable[Metric]]) -> None:
        """Add metric families computed when /metrics is scraped (never on the hot path)."""
        self._scrape.sources.append(source)

    def client_connected(self, cluster: str, endpoint: str) -> list[int]:
        """Count a new client connection; returns its endpoint's [open, accepted] (for the disconnect)."""
        key = (cluster, endpoint)
        counts = self.client_connections.get(key)
        if counts is None:
            counts = self.client_connections[key] = [0, 0]
        counts[0] += 1
        counts[1] += 1
        return counts

    def auth_failed(self, cluster: str, endpoint: str) -> None:
        self.client_setup_failed_auth.labels(cluster, endpoint).inc()

    def refused(self, cluster: str, endpoint: str, reason: str) -> None:
        self.client_refused.labels(cluster, endpoint, reason).inc()

    def borrowed(self, cluster: str, seconds: float) -> None:
        child = self._borrow_children.get(cluster)
        if child is None:   # labels() hashes and locks on every call: keep each cluster's child
            child = self._borrow_children[cluster] = self.borrow_seconds.labels(cluster)
        child.observe(seconds)

    def transaction_started(self, cluster: str, endpoint: str, route: str = "primary") -> None:
        key = (cluster, endpoint, route)
        requests = self.requests
        requests[key] = requests.get(key, 0) + 1

    def transaction_finished(self, cluster: str, endpoint: str, seconds: float) -> None:
        """One transaction's time from borrowing a server connection to releasing it."""
        key = (cluster, endpoint)
        counts = self.response_times.get(key)
        if counts is None:
            counts = self.response_times[key] = [0.0] * (len(RESPONSE_BUCKETS) + 2)
        counts[bisect_left(RESPONSE_BUCKETS, seconds)] += 1
        counts[-1] += seconds

    def fault_injected(self, cluster: str, kind: str) -> None:
        self.faults_injected.labels(cluster, kind).inc()
    def replay(self, cluster: str, outcome: str) -> None:
        self.replays.labels(cluster, outcome).inc()

    def pinned(self, cluster: str, reason: str) -> None:
        self.pins.labels(cluster, reason).inc()


class _ClientConnectionsCollector(Collector):
    """dbproxy_client_connections{cluster,endpoint} (open now) and dbproxy_client_connections_received."""

    def __init__(self, counts: dict[tuple[str, str], list[int]]) -> None:
        self._counts = counts

    def collect(self) -> Iterator[Metric]:
        open_now = GaugeMetricFamily("dbproxy_client_connections", "Client connections open now",
                                     labels=["cluster", "endpoint"])
        received = CounterMetricFamily("dbproxy_client_connections_received", "Client connections accepted",
                                       labels=["cluster", "endpoint"])
        for (cluster, endpoint), (now, total) in list(self._counts.items()):
            open_now.add_metric([cluster, endpoint], now)
            received.add_metric([cluster, endpoint], total)
        yield open_now
        yield received


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


# Upper bounds (seconds) of dbproxy_query_response_seconds buckets; +Inf is implicit.
RESPONSE_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class _ResponseTimeCollector(Collector):
    """dbproxy_query_response_seconds{cluster,endpoint} from the plain bucket lists.

    Each list holds one count per bucket (the last count is +Inf), then the sum of seconds.
    """

    def __init__(self, times: dict[tuple[str, str], list[float]]) -> None:
        self._times = times

    def collect(self) -> Iterator[HistogramMetricFamily]:
        family = HistogramMetricFamily("dbproxy_query_response_seconds",
                                       "Time from a transaction's borrow of a server connection to its release",
                                       labels=["cluster", "endpoint"])
        for (cluster, endpoint), counts in list(self._times.items()):
            cumulative = 0.0
            buckets = []
            for bound, count in zip((*RESPONSE_BUCKETS, float("inf")), counts[:-1], strict=True):
                cumulative += count
                buckets.append(("+Inf" if bound == float("inf") else repr(bound), cumulative))
            family.add_metric([cluster, endpoint], buckets, sum_value=counts[-1])
        yield family


def cache_families(caches: Iterable[tuple[str, QueryCache]]) -> Iterator[Metric]:
    """The query cache's counters (SPEC §11), read from each cluster's QueryCache at scrape time."""
    requests = CounterMetricFamily("dbproxy_cache_requests", "Query cache lookups by result",
                                   labels=["cluster", "result"])
    stores = CounterMetricFamily("dbproxy_cache_stores", "Results stored in the query cache", labels=["cluster"])
    invalidations = CounterMetricFamily("dbproxy_cache_invalidations", "Query cache invalidations (one per write "
                                        "transaction, whatever the number of tables)", labels=["cluster"])
    evictions = CounterMetricFamily("dbproxy_cache_evictions", "Entries evicted by max_memory (memory backend)",
                                    labels=["cluster"])
    size = GaugeMetricFamily("dbproxy_cache_bytes", "Bytes of cached results (memory: held; redis: stored by this "
                             "process)", labels=["cluster"])
    up = GaugeMetricFamily("dbproxy_cache_up", "Query cache backend answering (1) or bypassed (0)", labels=["cluster"])
    for name, cache in caches:
        for result, count in cache.requests.items():
            requests.add_metric([name, result], count)
        stores.add_metric([name], cache.stores)
        invalidations.add_metric([name], cache.invalidations)
        evictions.add_metric([name], cache.evictions)
        size.add_metric([name], cache.usage()[1])
        up.add_metric([name], 1 if cache.up else 0)
    yield from (requests, stores, invalidations, evictions, size, up)

