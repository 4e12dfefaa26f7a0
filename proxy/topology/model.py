"""The topology data model: probe results, per-instance state and the immutable cluster snapshot.

Everything here is frozen: the monitor builds a new `TopologySnapshot` on every probe and swaps
one attribute, so routing reads the current picture without locks.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal

from ..config import Address
from ..config.model import DEFAULT_PLACEMENT, Placement

State = Literal["unknown", "up", "down", "lagging", "fenced", "excluded"]
Role = Literal["unknown", "primary", "replica"]


@dataclass(frozen=True)
class ProbeResult:
    """What one probe of one instance saw; `ok` False means unreachable, failed or too slow.

    position: the WAL position (PostgreSQL LSN as an integer) written on a primary, replayed on a replica.
    lag_seconds: replicas only; 0 when everything received is replayed, None when unknown.
    """

    ok: bool
    error: str = ""
    in_recovery: bool = False
    position: int | None = None
    receive_position: int | None = None
    lag_seconds: float | None = None
    timeline: int | None = None

    @classmethod
    def failed(cls, error: str) -> ProbeResult:
        return cls(ok=False, error=error)


@dataclass(frozen=True)
class InstanceState:
    """The health state machine's view of one instance (see health.py for the transitions).

    Times are monotonic seconds as passed in by the caller: `since` is when `state` was entered,
    `behind_since` when the replica was first seen not fully replayed (None while caught up).
    """

    address: Address
    state: State = "unknown"
    role: Role = "unknown"
    failures: int = 0
    position: int | None = None
    received: int | None = None      # replicas: how far they have received (applied before they take writes)
    lag_seconds: float | None = None
    lag_bytes: int | None = None
    timeline: int | None = None
    since: float = 0.0
    last_check: float | None = None
    last_ok: float | None = None
    behind_since: float | None = None
    error: str = ""
    placement: Placement = DEFAULT_PLACEMENT   # zone, region, promotion tier, weight, standby (configured)

    @property
    def reachable(self) -> bool:
        return self.state in ("up", "lagging", "fenced", "excluded")

    @property
    def usable_replica(self) -> bool:
        """May serve reader traffic: up, a replica, not lagging, not fenced and not a standby."""
        return self.state == "up" and self.role == "replica" and not self.placement.standby


@dataclass(frozen=True)
class Authority:
    """What an external HA manager (Patroni, see patroni.py) says, applied on top of the probes.

    Only `leader` may be the writer (None: no instance may, e.g. before the manager's first answer);
    the replicas in `excluded` (address -> why) serve no reads (state "excluded"); `lag_bytes` is the
    manager's own lag figure, shown instead of the one computed from positions.
    """

    source: str
    leader: Address | None
    excluded: Mapping[Address, str] = field(default_factory=dict)
    lag_bytes: Mapping[Address, int] = field(default_factory=dict)


@dataclass(frozen=True)
class TopologySnapshot:
    """One cluster's instances (in configuration order), its writer and the replicas fit for reads."""

    cluster: str
    instances: tuple[InstanceState, ...] = ()
    writer: Address | None = None
    writer_timeline: int | None = None
    version: int = 0
    taken_at: float = 0.0        # wall-clock time (time.time()) for display
    usable_replicas: tuple[Address, ...] = field(init=False)
    weighted: bool = field(init=False)     # some instance has a weight other than 1
    _by_address: dict[Address, InstanceState] = field(init=False, repr=False, compare=False)
    # Routing's per-snapshot memo (nearby.py: how near each instance is to this proxy's locality).
    memo: dict[object, object] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "usable_replicas", tuple(s.address for s in self.instances if s.usable_replica))
        object.__setattr__(self, "weighted", any(s.placement.weight != 1 for s in self.instances))
        object.__setattr__(self, "_by_address", {s.address: s for s in self.instances})
        object.__setattr__(self, "memo", {})

    @property
    def addresses(self) -> tuple[Address, ...]:
        return tuple(s.address for s in self.instances)

    def get(self, address: Address) -> InstanceState | None:
        return self._by_address.get(address)

    def __contains__(self, address: object) -> bool:
        return address in self._by_address
