"""Topology: who is primary, who is healthy and how far behind, and where each endpoint sends work.

model.py    frozen data: ProbeResult, InstanceState, TopologySnapshot
health.py   pure decisions: instance state machine, writer election / fencing, snapshots
select.py   pure routing: (snapshot, endpoint, route) -> instance
nearby.py   pure zone-aware choice among replicas: nearest first, least outstanding per weight
promotion.py pure promotion order: standby, tier, position, weight; regions
discovery.py replica discovery: reconcile (pure) and the asyncio loop asking the writer
monitor.py  the asyncio side: probe loops, snapshot publishing, logs, metrics
failover.py pure failover decisions: when to promote which replica, switchover targets
coordinator.py the asyncio side of failover: automatic promotion, planned switchover, their logs
Engine adapters (engines/<name>/probe.py, failover.py) provide the `Probe` and `FailoverActions`
interfaces; this package never imports an engine.
"""

from __future__ import annotations

from .coordinator import ActionFailed, FailoverActions, FailoverCoordinator, SwitchoverResult
from .failover import SwitchoverRefused
from .model import InstanceState, ProbeResult, TopologySnapshot
from .monitor import Probe, ProbeFactory, TopologyEvent, TopologyMonitor
from .select import choose

__all__ = [
    "ActionFailed",
    "FailoverActions",
    "FailoverCoordinator",
    "InstanceState",
    "Probe",
    "ProbeFactory",
    "ProbeResult",
    "SwitchoverRefused",
    "SwitchoverResult",
    "TopologyEvent",
    "TopologyMonitor",
    "TopologySnapshot",
    "choose",
]
