"""A Cluster without servers (probe results fed by hand): discovery adds and drops instances on a fake
clock, reloads keep discovered replicas and apply placement changes, SHOW TOPOLOGY rows, /status
additions and the zone-pair metric."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.registry import Collector

from proxy.admin import topology_view
from proxy.config import Address, parse_config
from proxy.core.cluster import Cluster
from proxy.topology.coordinator import ActionFailed
from proxy.topology.model import ProbeResult

P, R1, R2, NEW = (Address("127.0.0.1", p) for p in (5001, 5002, 5003, 5004))

CONFIG = """
[server]
zone = "zone-a"
region = "lo"

[[users]]
name = "app"

[clusters.main]
engine = "postgres"
client_auth = "trust"
instances = [{ address = "127.0.0.1:5001", zone = "zone-b", region = "lo" },
             { address = "127.0.0.1:5002", zone = "zone-a", region = "lo", promotion_tier = TIER },
             { address = "127.0.0.1:5003", zone = "zone-b", region = "lo", promotion_tier = 0 }]
DISCOVER

[clusters.main.failover]
mode = "promote"

[[clusters.main.endpoints]]
name = "reader"
listen = "127.0.0.1:6001"
role = "reader"
"""

DISCOVERY = 'discover = true\n[clusters.main.discovery]\ninterval = "1s"\ngrace = "5s"\nzone = "zone-c"'


def config(tier: int = 1, discover: bool = True) -> Any:
    text = CONFIG.replace("TIER", str(tier)).replace("DISCOVER", DISCOVERY if discover else "")
    return parse_config(text, "f.toml", env={}).clusters[0]


class FakeLister:
    def __init__(self) -> None:
        self.reported: list[Address] = []
        self.fail = ""

    async def list_replicas(self, primary: Address, timeout: float) -> list[Address]:
        if self.fail:
            raise ActionFailed(self.fail, harmless=True)
        return list(self.reported)


def probed(cluster: Cluster, *replicas: Address) -> None:
    assert cluster.monitor is not None
    cluster.monitor.record(P, ProbeResult(ok=True, position=1000, timeline=1))
    for address in replicas:
        cluster.monitor.record(address, ProbeResult(ok=True, in_recovery=True, position=900, receive_position=900,
                                                    lag_seconds=0.0, timeline=1))


def with_fake_discovery(cluster: Cluster, now: list[float]) -> FakeLister:
    assert cluster.discovery is not None
    lister = FakeLister()
    cluster.discovery.lister = lister
    cluster.discovery._clock = lambda: now[0]
    return lister


async def test_discovery_adds_then_drops_after_the_grace_and_a_failed_listing_changes_nothing() -> None:
    cluster: Cluster = Cluster(config())
    assert cluster.monitor is not None and cluster.discovery is not None
    now = [100.0]
    lister = with_fake_discovery(cluster, now)
    probed(cluster, R1, R2)
    lister.reported = [R1, R2, NEW]
    await cluster.discovery.poll()
    assert NEW in cluster.monitor.snapshot
    assert cluster.monitor.snapshot.get(NEW).placement.discovered  # type: ignore[union-attr]
    probed(cluster, NEW)
    assert NEW in cluster.monitor.snapshot.usable_replicas
    lister.fail = "cannot connect"
    now[0] = 200.0
    await cluster.discovery.poll()                   # no listing: nothing dropped, however long
    assert NEW in cluster.monitor.snapshot and cluster.discovery.last_error == "cannot connect"
    lister.fail, lister.reported = "", [R1, R2]
    await cluster.discovery.poll()                   # not reported, but its probes find it up as a replica
    assert NEW in cluster.monitor.snapshot
    for _ in range(cluster.monitor.health.failure_threshold):
        cluster.monitor.record(NEW, ProbeResult(ok=False, error="connection refused"))
    now[0] = 206.0
    await cluster.discovery.poll()                   # down now, last seen live at 200: gone > 5 s
    assert NEW not in cluster.monitor.snapshot
    texts = [e.text for e in cluster.monitor.events]
    assert f"discovery: replica {NEW} reported by the writer {P}: added" in texts
    assert f"discovery: cannot list the replicas of {P}: cannot connect" in texts
    assert f"discovery: replica {NEW} not reported by the writer for more than 5s: dropped" in texts
    cluster.close()


async def test_reload_keeps_discovered_replicas_applies_placements_and_turning_discovery_off_drops_them() -> None:
    cluster: Cluster = Cluster(config())
    assert cluster.monitor is not None and cluster.discovery is not None
    lister = with_fake_discovery(cluster, [1.0])
    probed(cluster, R1, R2)
    lister.reported = [NEW]
    await cluster.discovery.poll()
    cluster.config = config(tier=7)
    cluster.apply_instances()
    assert cluster.discovery is not None   # same settings: the same loop, discovered replicas kept
    assert NEW in cluster.monitor.snapshot
    assert cluster.monitor.snapshot.get(R1).placement.promotion_tier == 7  # type: ignore[union-attr]
    cluster.config = config(tier=7, discover=False)
    cluster.apply_instances()
    assert cluster.discovery is None
    assert NEW not in cluster.monitor.snapshot
    cluster.close()


async def test_show_topology_rows_status_and_zone_metric() -> None:
    cluster: Cluster = Cluster(config())
    probed(cluster, R1, R2)
    rows = {row[1]: dict(zip([n for n, _ in topology_view.TOPOLOGY_COLUMNS], row, strict=True))
            for row in topology_view.topology_rows(cluster)}
    assert rows[str(P)]["writer"] and rows[str(P)]["why"] == "the writer"
    assert (rows[str(R1)]["nearness"], rows[str(R2)]["nearness"]) == ("zone", "region")
    assert rows[str(R2)]["next_promotion"] and rows[str(R2)]["promotion_rank"] == 1
    assert rows[str(R2)]["why"].startswith(f"promoted next: chose {R2} (order: standby first")
    assert rows[str(R1)]["promotion_rank"] == 2
    status = topology_view.status_of(cluster)
    assert (status["zone"], status["region"], status["next_promotion"]) == ("zone-a", "lo", str(R2))
    assert status["discovery"] == {"discovered": [], "last_error": None, "interval_s": 1.0, "grace_s": 5.0}

    cluster.retired_handouts.update({R1: 5, R2: 2, NEW: 1})   # NEW: gone meanwhile, placed as discovery places them
    app = SimpleNamespace(clusters={"main": cluster})

    class Source(Collector):
        def collect(self) -> Any:
            return topology_view.zone_metrics(app)  # type: ignore[arg-type]

    registry = CollectorRegistry()
    registry.register(Source())
    lines = [line for line in generate_latest(registry).decode().splitlines() if not line.startswith("#")]
    assert lines == ['dbproxy_zone_requests_total{cluster="main",instance_zone="zone-a",proxy_zone="zone-a"} 5.0',
                     'dbproxy_zone_requests_total{cluster="main",instance_zone="zone-b",proxy_zone="zone-a"} 2.0',
                     'dbproxy_zone_requests_total{cluster="main",instance_zone="zone-c",proxy_zone="zone-a"} 1.0']
    cluster.close()
