"""SHOW TOPOLOGY, the placement part of /status and the zone-pair metric: zones, tiers, standbys,
discovered replicas, and which replica would be promoted next and why."""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from prometheus_client.core import CounterMetricFamily, Metric

from ..config import Address
from ..config.model import Placement
from ..topology.failover import writer_region
from ..topology.nearby import proximity
from ..topology.promotion import ORDER, PromotionChoice, candidates, choose_promotion
from .resultset import Table

if TYPE_CHECKING:
    from ..core.app_view import AppView as ProxyApp
    from ..core.cluster import Cluster

TOPOLOGY_COLUMNS = (
    ("cluster", "text"), ("instance", "text"), ("role", "text"), ("state", "text"), ("writer", "bool"),
    ("zone", "text"), ("region", "text"), ("promotion_tier", "int"), ("weight", "int"), ("standby", "bool"),
    ("discovered", "bool"), ("proxy_zone", "text"), ("nearness", "text"), ("serves_reads", "bool"),
    ("promotion_rank", "int"), ("next_promotion", "bool"), ("why", "text"),
)


def next_promotion(cluster: Cluster) -> PromotionChoice | None:
    """Who would be promoted if the writer failed now (or switched over to without a target)."""
    snapshot = cluster.topology
    if snapshot is None:
        return None
    exclude = (snapshot.writer,) if snapshot.writer is not None else ()
    return choose_promotion(snapshot.instances, exclude, writer_region=writer_region(snapshot, snapshot.writer),
                            allow_cross_region=cluster.config.failover.allow_cross_region)


def topology_rows(cluster: Cluster) -> list[tuple[Any, ...]]:
    """One SHOW TOPOLOGY row per instance of a cluster with a topology monitor."""
    snapshot = cluster.topology
    if snapshot is None:
        return []
    local = cluster.config.locality
    choice = next_promotion(cluster)
    ranks = {r.address: i for i, r in enumerate(choice.ranking, 1)} if choice is not None else {}
    eligible = {s.address for s in candidates(snapshot.instances)}
    describe = _describer(cluster)
    rows = []
    for state in snapshot.instances:
        p = state.placement
        rank = ranks.get(state.address)
        if rank == 1 and choice is not None:
            why = f"promoted next: {choice.explain(describe)}"
        elif rank is not None and choice is not None:
            why = choice.ranking[rank - 1].describe(describe)
        elif state.address == snapshot.writer:
            why = "the writer"
        elif state.address in eligible and choice is not None:
            why = f"not a promotion candidate: {choice.blocked or 'outside the writer region'}"
        else:
            why = f"not a promotion candidate: {state.state} {state.role}"
        rows.append((cluster.name, str(state.address), state.role, state.state, state.address == snapshot.writer,
                     p.zone or None, p.region or None, p.promotion_tier, p.weight, p.standby, p.discovered,
                     local.zone or None, proximity(local, p), state.address in snapshot.usable_replicas,
                     rank, rank == 1, why))
    return rows


def topology(app: ProxyApp) -> Table:
    """SHOW TOPOLOGY."""
    return Table.of(TOPOLOGY_COLUMNS, [row for c in app.clusters.values() for row in topology_rows(c)])


def status_of(cluster: Cluster) -> dict[str, Any]:
    """/status additions per cluster: where this proxy runs, the placements, discovery, the next promotion."""
    names = [name for name, _ in TOPOLOGY_COLUMNS[1:]]
    choice = next_promotion(cluster)
    discovery = cluster.discovery
    return {
        "zone": cluster.config.locality.zone or None,
        "region": cluster.config.locality.region or None,
        "placement": [dict(zip(names, row[1:], strict=True)) for row in topology_rows(cluster)],
        "next_promotion": str(choice.target) if choice is not None and choice.target is not None else None,
        "promotion_reason": choice.explain(_describer(cluster)) if choice is not None else None,
        "discovery": None if discovery is None else {
            "discovered": sorted(str(a) for a in discovery.discovered),
            "last_error": discovery.last_error or None,
            "interval_s": discovery.settings.interval, "grace_s": discovery.settings.grace,
        },
        "promotion_order": ORDER,
    }


def _describer(cluster: Cluster) -> Any:
    actions = cluster.failover.actions if cluster.failover is not None else None
    return actions.describe_position if actions is not None else str


# ---- dbproxy_zone_requests_total ------------------------------------------------------------------

def instance_placement(cluster: Cluster, address: Address) -> Placement:
    """The placement of an instance, also after it left (configured, else as discovery places them)."""
    if address in cluster.config.placements or address in cluster.config.instances:
        return cluster.config.placement(address)
    return cluster.config.discovery.placement()


def zone_metrics(app: ProxyApp) -> Iterator[Metric]:
    """Server connections handed out per (cluster, proxy zone, instance zone): the cross-AZ share."""
    family = CounterMetricFamily(
        "dbproxy_zone_requests", "Transactions (or sessions) sent to an instance, by this proxy's zone and the "
        "instance's zone (unknown: not configured)", labels=["cluster", "proxy_zone", "instance_zone"])
    for cluster in app.clusters.values():
        proxy_zone = cluster.config.locality.zone or "unknown"
        pairs: dict[str, int] = {}
        for address, count in cluster.handouts().items():
            zone = instance_placement(cluster, address).zone or "unknown"
            pairs[zone] = pairs.get(zone, 0) + count
        for zone, count in sorted(pairs.items()):
            family.add_metric([cluster.name, proxy_zone, zone], count)
    yield family
