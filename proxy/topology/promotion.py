"""Which replica to promote, pure: standby first, then promotion tier, replay position, weight; regions.

Candidates are replicas whose latest probe succeeded and whose replay position is known.

Region: when the writer's region is known, only candidates in that region (or of unknown
region) are considered. If there is none, candidates in other regions are considered only with
`allow_cross_region = true` (promote mode); otherwise there is nothing to promote.

Order, first difference wins:
1. priority: a standby (standby = true) first, then the lowest promotion_tier. A lagging replica
   (health state "lagging": over max_replica_lag at its latest probe) keeps no priority of its
   own: it ranks as a non-standby of the highest tier among the candidates;
2. the most advanced: the furthest received position (what it holds once it has applied all it
   received, which promotion does before taking writes), else its replay position;
3. the highest weight;
4. configuration order.

So a tier-0 replica wins over a more advanced tier-1 one only while it is within max_replica_lag;
once it lags further, it competes on position only, and the more advanced replica wins (README
"Availability zones, tiers and discovery" says why). Without tiers (all equal) the most advanced
replica wins, lagging or not, as before tiers existed. With max_replica_lag = 0 nothing lags and
the tiers alone decide.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass

from ..config import Address
from .model import InstanceState

Describe = Callable[[int | None], str]

ORDER = "standby first, then lowest promotion_tier (a replica over max_replica_lag ranks with the highest tier " \
        "present), then most advanced position, then highest weight, then configuration order"


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

    ranked_tier: int = 0     # the tier it ranks with (lagging: the highest present)

    def describe(self, describe_position: Describe) -> str:
        parts = ["standby" if self.standby else f"tier {self.tier}",
                 "up" if self.fit else f"lagging, ranked as tier {self.ranked_tier}",
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
        return f"chose {self.target}{across} (order: {ORDER}): {ranked}"


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
    worst = max(s.placement.promotion_tier for s in pool)
    ranking = sorted((_ranked(s, worst) for s in pool), key=lambda r: _key(r, order[r.address]))
    return PromotionChoice(ranking[0].address, tuple(ranking), cross_region=cross)


def _ranked(state: InstanceState, worst_tier: int) -> Ranked:
    placement = state.placement
    fit = state.state == "up"
    return Ranked(state.address, fit=fit, standby=placement.standby, tier=placement.promotion_tier,
                  holds=holds(state), weight=placement.weight, region=placement.region,
                  ranked_tier=placement.promotion_tier if fit else worst_tier)


def _key(r: Ranked, index: int) -> tuple[int, int, int, int, int]:
    return 0 if r.fit and r.standby else 1, r.ranked_tier, -r.holds, -r.weight, index


def holds(state: InstanceState) -> int:
    """How far a replica will be once it has applied what it received."""
    return max(state.position or 0, state.received or 0)
