"""Which replica to promote, pure: standby first, then promotion tier, replay position, weight; regions.

Candidates are replicas whose latest probe succeeded and whose replay position is known.

Region: when the writer's region is known, only candidates in that region (or of unknown
region) are considered. If there is none, candidates in other regions are considered only with
`allow_cross_region = true` (promote mode); otherwise there is nothing to promote.

Order, first difference wins:
1. fit before lagging: a candidate whose health state is "up" (its lag was within
   max_replica_lag at its latest probe) comes before one that is "lagging";
2. among fit candidates, a standby (standby = true) first, then the lowest promotion_tier;
   among lagging ones tier and standby do not count: the most advanced wins;
3. the most advanced: the furthest received position (what it holds once it has applied all it
   received, which promotion does before taking writes), else its replay position;
4. the highest weight;
5. configuration order.

So a tier-0 replica wins over a more advanced tier-1 one only while it is within max_replica_lag;
once it lags further, the more advanced replica wins (README "Availability zones, tiers and
discovery" says why). With max_replica_lag = 0 nothing lags and the tiers alone decide.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass

from ..config import Address
from .model import InstanceState

Describe = Callable[[int | None], str]

ORDER = "fit (within max_replica_lag) first, then standby, then lowest promotion_tier, then most advanced " \
        "position, then highest weight, then configuration order"


@dataclass(frozen=True)
class Ranked:
    """One candidate in promotion order, with what decided its place."""

    address: Address
    fit: bool
    standby: bool
    tier: int
    holds: int
    weight: int
    region: str

    def describe(self, describe_position: Describe) -> str:
        parts = ["standby" if self.standby else f"tier {self.tier}",
                 "up" if self.fit else "lagging (tier not counted)",
                 f"position {describe_position(self.holds)}", f"weight {self.weight}"]
        if self.region:
            parts.append(f"region {self.region}")
        return f"{self.address} ({', '.join(parts)})"


@dataclass(frozen=True)
class PromotionChoice:
    """The replica to promote (None: none may be), every candidate in order, and why."""

    target: Address | None
    ranking: tuple[Ranked, ...] = ()
    cross_region: bool = False       # the target is outside the writer's region
    blocked: str = ""                # why there is no target

    def explain(self, describe_position: Describe = str) -> str:
        """One line for the log: the rule, the ranking, and what was left out."""
        if self.target is None:
            return self.blocked
        ranked = "; ".join(f"{i}. {r.describe(describe_position)}" for i, r in enumerate(self.ranking, 1))
        across = " (no usable replica in the writer's region: allow_cross_region = true)" if self.cross_region else ""
        return f"chose {self.target}{across} by {ORDER}: {ranked}"


def candidates(instances: Sequence[InstanceState], exclude: Collection[Address] = ()) -> list[InstanceState]:
    """Replicas that may be promoted: latest probe ok, replay position known, not excluded."""
    return [s for s in instances
            if s.role == "replica" and s.state in ("up", "lagging") and s.failures == 0
            and s.position is not None and s.address not in exclude]


def choose_promotion(instances: Sequence[InstanceState], exclude: Collection[Address] = (), *,
                     writer_region: str = "", allow_cross_region: bool = False) -> PromotionChoice:
    """The replica to promote by the rule of the module docstring."""
    found = candidates(instances, exclude)
    if not found:
        return PromotionChoice(None, blocked="no healthy replica to promote")
    local = [s for s in found if not writer_region or s.placement.region in ("", writer_region)]
    cross = not local
    if cross and not allow_cross_region:
        others = ", ".join(f"{s.address} ({s.placement.region})" for s in found)
        return PromotionChoice(None, blocked=f"no usable replica in the writer's region {writer_region} "
                                             f"(other regions: {others}; allow_cross_region = false)")
    pool = found if cross else local
    order = {s.address: i for i, s in enumerate(instances)}
    ranking = sorted((_ranked(s) for s in pool), key=lambda r: _key(r, order[r.address]))
    return PromotionChoice(ranking[0].address, tuple(ranking), cross_region=cross)


def _ranked(state: InstanceState) -> Ranked:
    placement = state.placement
    return Ranked(state.address, fit=state.state == "up", standby=placement.standby,
                  tier=placement.promotion_tier, holds=holds(state), weight=placement.weight,
                  region=placement.region)


def _key(r: Ranked, index: int) -> tuple[int, int, int, int, int, int]:
    if r.fit:
        return 0, 0 if r.standby else 1, r.tier, -r.holds, -r.weight, index
    return 1, 0, 0, -r.holds, -r.weight, index


def holds(state: InstanceState) -> int:
    """How far a replica will be once it has applied what it received."""
    return max(state.position or 0, state.received or 0)
