"""Which instance an endpoint sends the next transaction to: a pure function of the topology snapshot.

- writer, and split endpoints with route "primary": the current writer (None while there is none).
- reader, and split endpoints with route "replica": the usable replicas (up, within max_replica_lag,
  not fenced, not a standby), the nearest first (nearby.py), by least outstanding work per weight,
  ties at random; with no usable replica the writer, as
  Aurora's reader endpoint does.
- custom: the members are `instances`, or every instance of the snapshot except `exclude` (so
  instances added by a reload join). kind "reader": usable replica members only, and None when
  there is none, so the borrow waits (bounded by borrow_timeout) rather than loading the primary
  the endpoint was made to keep away from. kind "any": usable replica members plus the writer
  if it is a member.

The route only matters for split endpoints; other roles ignore it. `avoid` holds instances that
just refused a connection: they are skipped until the monitor has had time to judge them.
"""

from __future__ import annotations

import functools
import random
from collections.abc import Callable, Collection

from ..config import Address, EndpointConfig
from ..config.model import Locality
from .model import TopologySnapshot
from .nearby import least_outstanding as least_outstanding
from .nearby import pick

Outstanding = Callable[[Address], int]

_NOTHING: frozenset[Address] = frozenset()


def choose(snapshot: TopologySnapshot, endpoint: EndpointConfig, route: str, outstanding: Outstanding,
           rng: random.Random, avoid: Collection[Address] = _NOTHING,
           min_position: int | None = None, locality: Locality | None = None) -> Address | None:
    """The instance for the next transaction on `endpoint`, or None if there is none right now.

    `min_position` (read_your_writes on split endpoints): only replicas that have replayed at
    least this far qualify; with none, the writer. `locality`: where this proxy runs; replicas
    near it are preferred as nearby.py says.
    """
    role = endpoint.role
    if role == "writer" or (role == "split" and route != "replica"):
        return _writer(snapshot, avoid)
    if role == "custom":
        return _custom(snapshot, endpoint, outstanding, rng, avoid, locality)
    replicas = [a for a in snapshot.usable_replicas if a not in avoid] if avoid else snapshot.usable_replicas
    if min_position is not None:
        replicas = [a for a in replicas if _replayed(snapshot, a, min_position)]
    if replicas:
        return pick(replicas, snapshot, locality, endpoint.cross_zone, outstanding, rng)
    return _writer(snapshot, avoid)


def targets(snapshot: TopologySnapshot, endpoint: EndpointConfig) -> list[Address]:
    """Every instance `choose` may pick for `endpoint` right now, by any route (writer first)."""
    writer = [snapshot.writer] if snapshot.writer is not None else []
    if endpoint.role == "custom":
        member = custom_membership(endpoint)
        found = [a for a in snapshot.usable_replicas if member(a)]
        if endpoint.kind == "any":
            found += [a for a in writer if member(a)]
        return found
    if endpoint.role == "writer":
        return writer
    replicas = list(snapshot.usable_replicas)
    if endpoint.role == "split":
        return writer + replicas
    return replicas or writer


def _replayed(snapshot: TopologySnapshot, address: Address, position: int) -> bool:
    state = snapshot.get(address)
    return state is not None and state.position is not None and state.position >= position


def _writer(snapshot: TopologySnapshot, avoid: Collection[Address]) -> Address | None:
    writer = snapshot.writer
    return None if writer is None or writer in avoid else writer


def _custom(snapshot: TopologySnapshot, endpoint: EndpointConfig, outstanding: Outstanding,
            rng: random.Random, avoid: Collection[Address], locality: Locality | None) -> Address | None:
    is_member = custom_membership(endpoint)
    candidates = [a for a in snapshot.usable_replicas if is_member(a) and a not in avoid]
    writer = _writer(snapshot, avoid)
    if endpoint.kind == "any" and writer is not None and is_member(writer):
        candidates.append(writer)
    return pick(candidates, snapshot, locality, endpoint.cross_zone, outstanding, rng) if candidates else None


@functools.lru_cache(maxsize=256)
def custom_membership(endpoint: EndpointConfig) -> Callable[[Address], bool]:
    """Whether an instance belongs to a custom endpoint: listed in `instances`, or not in `exclude`.

    Made once per endpoint config (a reload makes new ones), not once per routed transaction.
    """
    if endpoint.instances:
        listed = frozenset(endpoint.instances)
        return listed.__contains__
    excluded = frozenset(endpoint.exclude)
    return lambda address: address not in excluded


class RefusedConnections:
    """Instances that just refused a client connection, skipped by routing until judged again.

    An entry ends when `hold` seconds pass or when a probe that started after the refusal
    succeeded (the monitor reconnects its probe for that), whichever comes first.
    """

    def __init__(self, clock: Callable[[], float]) -> None:
        self._clock = clock
        self._entries: dict[Address, tuple[float, float]] = {}   # address -> (refused at, until)

    def add(self, address: Address, hold: float) -> None:
        now = self._clock()
        self._entries[address] = (now, now + hold)

    def __bool__(self) -> bool:
        """Any instance refused lately (routing then asks `current`)."""
        return bool(self._entries)

    def current(self, snapshot: TopologySnapshot) -> Collection[Address]:
        """The instances to avoid now (usually none: then no clock is read)."""
        if not self._entries:
            return _NOTHING
        now = self._clock()
        for address, (refused_at, until) in list(self._entries.items()):
            state = snapshot.get(address)
            if now >= until or state is None or (state.last_ok is not None and state.last_ok > refused_at):
                del self._entries[address]
        return frozenset(self._entries)
