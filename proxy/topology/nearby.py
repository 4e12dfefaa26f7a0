"""Zone-aware replica choice, pure: nearest replicas first, then the least outstanding work per weight.

With `cross_zone = "prefer-local"` (the default) an endpoint's candidates are narrowed to those in
the proxy's zone ([server] zone); when none of them qualifies, to those in its region; when none
does either, every candidate stays. `"balanced"` keeps every candidate. An instance whose zone (or
region) is not configured is never "local". A proxy without a zone and region narrows nothing.

Within the chosen set, the candidate with the least outstanding work per unit of weight wins
(outstanding / weight, so a weight-2 replica carries twice the work of a weight-1 one before it
loses); ties are broken at random in proportion to weight.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from typing import Literal

from ..config import Address
from ..config.model import DEFAULT_PLACEMENT, Locality, Placement
from .model import TopologySnapshot

Outstanding = Callable[[Address], int]
Proximity = Literal["zone", "region", "other"]


def proximity(local: Locality, placement: Placement) -> Proximity:
    """How near an instance is to this proxy: its zone, its region, or anywhere else."""
    if local.zone and placement.zone == local.zone:
        return "zone"
    if local.region and placement.region == local.region:
        return "region"
    return "other"


def nearest(candidates: Sequence[Address], snapshot: TopologySnapshot, local: Locality) -> Sequence[Address]:
    """The candidates in the proxy's zone, else in its region, else all of them."""
    if not (local.zone or local.region) or len(candidates) < 2:
        return candidates
    near = _nearness(snapshot, local)
    zone = [a for a in candidates if near.get(a) == "zone"]
    if zone:
        return zone
    region = [a for a in candidates if near.get(a) == "region"]
    return region or candidates


def _nearness(snapshot: TopologySnapshot, local: Locality) -> dict[Address, Proximity]:
    """How near each instance of the snapshot is, computed once per snapshot (and locality)."""
    near = snapshot.memo.get(local)
    if near is None:
        near = snapshot.memo[local] = {s.address: proximity(local, s.placement) for s in snapshot.instances}
    return near  # type: ignore[return-value]


def pick(candidates: Sequence[Address], snapshot: TopologySnapshot, local: Locality | None, cross_zone: str,
         outstanding: Outstanding, rng: random.Random) -> Address:
    """The replica (or member) for the next transaction among non-empty `candidates`."""
    if local is not None and cross_zone == "prefer-local":
        candidates = nearest(candidates, snapshot, local)
    if not snapshot.weighted:
        return least_outstanding(candidates, outstanding, rng)
    return weighted_least_outstanding(candidates, snapshot, outstanding, rng)


def least_outstanding(candidates: Sequence[Address], outstanding: Outstanding, rng: random.Random) -> Address:
    """The candidate with the least outstanding work; ties broken at random (all weights 1)."""
    if len(candidates) == 1:
        return candidates[0]
    loads = [outstanding(a) for a in candidates]
    low = min(loads)
    best = [a for a, load in zip(candidates, loads, strict=True) if load == low]
    return best[0] if len(best) == 1 else best[int(rng.random() * len(best))]


def weighted_least_outstanding(candidates: Sequence[Address], snapshot: TopologySnapshot,
                               outstanding: Outstanding, rng: random.Random) -> Address:
    """The least outstanding work per weight; ties at random, in proportion to weight."""
    if len(candidates) == 1:
        return candidates[0]
    weights = [_placement(snapshot, a).weight for a in candidates]
    loads = [outstanding(a) / w for a, w in zip(candidates, weights, strict=True)]
    low = min(loads)
    best = [(a, w) for a, w, load in zip(candidates, weights, loads, strict=True) if load == low]
    if len(best) == 1:
        return best[0][0]
    total = sum(w for _, w in best)
    point = rng.random() * total
    for address, weight in best:
        point -= weight
        if point < 0:
            return address
    return best[-1][0]


def _placement(snapshot: TopologySnapshot, address: Address) -> Placement:
    state = snapshot.get(address)
    return DEFAULT_PLACEMENT if state is None else state.placement
