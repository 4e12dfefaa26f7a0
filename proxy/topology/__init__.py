"""Topology: who is primary, who is healthy and how far behind, and where each endpoint sends work.

model.py    frozen data: ProbeResult, InstanceState, TopologySnapshot
health.py   pure decisions: instance state machine, writer election / fencing, snapshots
select.py   pure routing: (snapshot, endpoint, route) -> instance
monitor.py  the asyncio side: probe loops, snapshot publishing, logs, metrics
failover.py pure failover decisions: when to promote which replica, switchover targets
coordinator.py the asyncio side of failover: automatic promotion, planned switchover, their logs
pg_probe.py, pg_failover.py   the PostgreSQL engine adapter (probe; promote, re-point, stop writes);
            a MySQL adapter provides the same `Probe` and `FailoverActions` interfaces
pg_sql.py   the minimal PostgreSQL client both use
"""

from __future__ import annotations

from ..config import Address, HealthSettings
from .coordinator import ActionFailed, FailoverActions, FailoverCoordinator, SwitchoverResult
from .failover import SwitchoverRefused
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


def failover_actions(engine: str, health: HealthSettings) -> FailoverActions | None:
    """The engine's failover actions (promote, re-point, stop writes), logging in as the health user;
    None where no adapter exists yet (then the writer only follows what the probes report)."""
    if engine == "postgres":
        from .pg_failover import PgFailoverActions

        return PgFailoverActions.from_health(health)
    return None


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
    "failover_actions",
    "probe_factory",
]
