"""Topology: who is primary, who is healthy and how far behind, and where each endpoint sends work.

model.py    frozen data: ProbeResult, InstanceState, TopologySnapshot
health.py   pure decisions: instance state machine, writer election / fencing, snapshots
select.py   pure routing: (snapshot, endpoint, route) -> instance
monitor.py  the asyncio side: probe loops, snapshot publishing, logs, metrics
pg_probe.py the PostgreSQL engine adapter (a MySQL adapter provides the same `Probe` interface)
"""

from __future__ import annotations

from ..config import Address, HealthSettings
from .model import InstanceState, ProbeResult, TopologySnapshot
from .monitor import Probe, ProbeFactory, TopologyEvent, TopologyMonitor
from .select import choose


def probe_factory(engine: str) -> ProbeFactory | None:
    """The probe for an engine, or None where no adapter exists yet (routing then stays static)."""
    if engine == "postgres":
        return _pg_probe
    return None


def _pg_probe(address: Address, health: HealthSettings) -> Probe:
    from .pg_probe import PgProbe

    return PgProbe(address, health.user or "postgres", health.password, health.database)


__all__ = [
    "InstanceState",
    "Probe",
    "ProbeFactory",
    "ProbeResult",
    "TopologyEvent",
    "TopologyMonitor",
    "TopologySnapshot",
    "choose",
    "probe_factory",
]
