"""Failover decisions, pure and clock-free: when to promote which replica, and switchover targets.

An *incident* begins with the first snapshot without a writer and ends with the first snapshot
that has one again, whoever it is. `step` is fed every snapshot and the monotonic `now`. In
promote mode it asks for at most one promotion per incident, and only when all of these hold:

- no instance reports primary: there is no writer. (A primary fenced for an older timeline does
  not count: without a writer every reachable primary is such a stale one, known to have been
  superseded, and it never gets traffic.)
- the primary is gone: the lost writer is `down` per the health state machine, its latest probe
  failed, and it has been down for `promote_after`. An old primary that answers probes at all,
  in whatever state or role, blocks promotion. When no writer was seen since start, every
  instance not known to be a replica must be gone that way, and at least one must exist.
- a candidate exists: a replica whose latest probe succeeded and whose replay position is known,
  in the lost writer's region unless `allow_cross_region`. promotion.py orders them: standby, then
  lowest promotion_tier (a lagging replica ranks with the highest tier present), then the most
  received (its received position, else its replay position), weight, configuration order. Promotion applies what a
  replica received before it takes writes (pg_promote; MySQL's promote waits for the relay log),
  so with synchronous replication (PostgreSQL `synchronous_commit = on`, MariaDB semi-sync) the
  most advanced replica holds every acknowledged commit: give the synchronous one the lowest
  tier (or standby = true) so that the tiers agree.

A promotion attempt that surely changed nothing (no connection, or an ERROR answer) may be retried
after another `promote_after`; any other outcome (success, timeout, lost connection) ends the
attempts for the incident: such a promotion may still complete, and a second one would split the brain.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass, replace

from ..config import Address
from .model import InstanceState, TopologySnapshot
from .promotion import Describe, choose_promotion


@dataclass(frozen=True)
class Incident:
    """A period without a writer; `promoted` is the replica asked to take over (None: not yet)."""

    lost_writer: Address | None
    began: float
    promoted: Address | None = None
    promoted_at: float | None = None
    not_before: float = 0.0          # no promotion attempt before this time (after a failed connect)


@dataclass(frozen=True)
class FailoverState:
    last_writer: Address | None = None
    incident: Incident | None = None


@dataclass(frozen=True)
class Step:
    """What `step` decided: the next state, and what the caller should log or do now.

    began: an incident began with this snapshot. ended: the incident that ended with it (the
    snapshot's writer is back). promote: promote this replica now. blocked: why no promotion can
    happen (not merely "not yet"), "" otherwise.
    """

    state: FailoverState
    began: bool = False
    ended: Incident | None = None
    promote: Address | None = None
    blocked: str = ""
    why: str = ""            # with promote: the ranking that chose it (promotion.PromotionChoice.explain)


def step(state: FailoverState, snapshot: TopologySnapshot, now: float, *, promote: bool,
         promote_after: float, allow_cross_region: bool = False, describe: Describe = str) -> Step:
    """The failover state after one snapshot; see the module docstring."""
    writer = snapshot.writer
    if writer is not None:
        return Step(FailoverState(writer, None), ended=state.incident)
    incident = state.incident
    if incident is None and state.last_writer is None and any(s.last_check is None for s in snapshot.instances):
        return Step(state)   # starting: not every instance has been probed yet
    began = incident is None
    if incident is None:
        incident = Incident(state.last_writer, now)
    if not promote or incident.promoted is not None:
        return Step(FailoverState(state.last_writer, incident), began=began)
    target, blocked, why = _promotion(snapshot, incident, now, promote_after, allow_cross_region, describe)
    if target is not None:
        incident = replace(incident, promoted=target, promoted_at=now)
    return Step(FailoverState(state.last_writer, incident), began=began, promote=target, blocked=blocked, why=why)


def promotion_failed(state: FailoverState, now: float, *, harmless: bool, retry_after: float) -> FailoverState:
    """After a failed attempt: allow another one after `retry_after` only if it surely changed nothing."""
    incident = state.incident
    if incident is None or not harmless:
        return state
    return replace(state, incident=replace(incident, promoted=None, promoted_at=None,
                                           not_before=now + retry_after))


def _promotion(snapshot: TopologySnapshot, incident: Incident, now: float, promote_after: float,
               allow_cross_region: bool, describe: Describe) -> tuple[Address | None, str, str]:
    if now < incident.not_before:
        return None, "", ""
    suspects = old_primaries(snapshot.instances, incident.lost_writer)
    if not suspects:
        return None, "no primary was seen since start and every instance is a replica", ""
    for suspect in suspects:
        if not gone(suspect):
            return None, f"old primary {suspect.address} is not gone: it answers probes or was not probed yet " \
                         f"({suspect.state} {suspect.role})", ""
    if any(now - suspect.since < promote_after for suspect in suspects):
        return None, "", ""
    choice = choose_promotion(snapshot.instances, writer_region=writer_region(snapshot, incident.lost_writer),
                              allow_cross_region=allow_cross_region)
    if choice.target is None:
        return None, choice.blocked, ""
    return choice.target, "", choice.explain(describe)


def writer_region(snapshot: TopologySnapshot, writer: Address | None) -> str:
    """The configured region of the (lost) writer, "" when unknown."""
    state = snapshot.get(writer) if writer is not None else None
    return state.placement.region if state is not None else ""


def old_primaries(instances: Sequence[InstanceState], lost_writer: Address | None) -> list[InstanceState]:
    """The instances that may still be the primary: the lost writer, or (unknown) every non-replica."""
    if lost_writer is not None:
        lost = [s for s in instances if s.address == lost_writer]
        if lost:
            return lost
    return [s for s in instances if s.role != "replica"]


def gone(state: InstanceState) -> bool:
    """Down per the health state machine, and its latest probe failed too."""
    return state.state == "down" and state.failures > 0


def best_replica(instances: Sequence[InstanceState], exclude: Collection[Address] = (), *,
                 writer_region: str = "", allow_cross_region: bool = False) -> Address | None:
    """The replica to promote (promotion.py: standby, tier, position, weight; region), or None."""
    return choose_promotion(instances, exclude, writer_region=writer_region,
                            allow_cross_region=allow_cross_region).target


# --------------------------------------------------------------------------- planned switchover


class SwitchoverRefused(Exception):
    """A planned switchover cannot start; the message says why."""


def switchover_target(snapshot: TopologySnapshot, requested: Address | None) -> tuple[Address, Address]:
    """(current writer, replica to switch to) or SwitchoverRefused."""
    writer = snapshot.writer
    if writer is None:
        raise SwitchoverRefused(f"cluster {snapshot.cluster} has no writer to switch over from")
    if requested is None:
        choice = choose_promotion(snapshot.instances, exclude=(writer,),
                                  writer_region=writer_region(snapshot, writer))
        if choice.target is None:
            blocked = choice.blocked.replace("no healthy replica to promote", "no healthy replica to switch over to")
            raise SwitchoverRefused(f"cluster {snapshot.cluster}: {blocked} (name one: FAILOVER {snapshot.cluster} "
                                    "TO 'host:port')")
        return writer, choice.target
    if requested == writer:
        raise SwitchoverRefused(f"{requested} is already the writer")
    state = snapshot.get(requested)
    if state is None:
        raise SwitchoverRefused(f"{requested} is not an instance of cluster {snapshot.cluster}")
    if state.role != "replica" or state.state not in ("up", "lagging") or state.failures:
        raise SwitchoverRefused(f"{requested} is not a healthy replica ({state.state} {state.role})")
    return writer, requested
