"""Health decisions, pure and clock-free: one instance's state machine, the writer election, snapshots.

Per instance (`observe`), driven by probe results and the `now` passed in:

    unknown --probe ok--> up | lagging            (a replica whose lag exceeds max_replica_lag: lagging)
    up/lagging --failure_threshold consecutive failures--> down
    down/unknown --probe ok--> up | lagging        (one good probe brings an instance back)

Fewer failures than the threshold leave the state as it was (a slow probe is not an outage).

Lag: probes report `now() - pg_last_xact_replay_timestamp()` while a replica is behind. After a
quiet period on the primary that number is the age of the last commit, not real lag, so the
lag used here is capped by how long the replica has been seen behind without interruption
(`behind_since`): a replica only counts as lagging after being behind for max_replica_lag.
max_replica_lag = 0 disables lag checks (as ProxySQL's max_replication_lag = 0 does).

Cluster-wide (`elect`): the writer is the reachable instance reporting primary. With several
(split-brain), the newest timeline wins and the others are fenced; an instance on a timeline
older than any writer accepted before is fenced even when it is the only primary, so an old
primary that comes back is never written to. Ties keep the current writer, then the most
advanced position, then configuration order.

With an HA manager's `Authority` (failover mode "patroni"), only the instance it calls the leader may
be the writer (every other primary is fenced), and the replicas it excludes are published as
"excluded" (reachable, no reads); see patroni.py for the rule.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace

from ..config import Address
from .model import Authority, InstanceState, ProbeResult, Role, State, TopologySnapshot


def observe(prev: InstanceState, probe: ProbeResult, now: float, *,
            failure_threshold: int, max_replica_lag: float) -> InstanceState:
    """The instance's next state after one probe (never "fenced": fencing is decided by `elect`)."""
    if not probe.ok:
        return _failed(prev, probe.error, now, failure_threshold)
    role: Role = "replica" if probe.in_recovery else "primary"
    behind_since = _behind_since(prev, role, probe.lag_seconds, now)
    lag = _effective_lag(probe.lag_seconds, behind_since, now) if role == "replica" else None
    lagging = role == "replica" and max_replica_lag > 0 and lag is not None and lag > max_replica_lag
    state: State = "lagging" if lagging else "up"
    return replace(
        prev, state=state, role=role, failures=0, position=probe.position, received=probe.receive_position,
        lag_seconds=lag,
        timeline=probe.timeline if probe.timeline is not None else prev.timeline,
        since=_since(prev, state, now), last_check=now, last_ok=now, behind_since=behind_since, error="")


def _failed(prev: InstanceState, error: str, now: float, failure_threshold: int) -> InstanceState:
    failures = prev.failures + 1
    state: State = "down" if failures >= failure_threshold else prev.state
    return replace(prev, state=state, failures=failures, since=_since(prev, state, now), last_check=now,
                   error=error, behind_since=None if state == "down" else prev.behind_since)


def _since(prev: InstanceState, state: State, now: float) -> float:
    return prev.since if prev.state == state else now


def _behind_since(prev: InstanceState, role: Role, lag: float | None, now: float) -> float | None:
    if role != "replica" or not lag or lag <= 0:
        return None
    return prev.behind_since if prev.behind_since is not None else now


def _effective_lag(reported: float | None, behind_since: float | None, now: float) -> float | None:
    if reported is None:
        return None
    if behind_since is None or reported <= 0:
        return 0.0
    return min(reported, now - behind_since)


# --------------------------------------------------------------------------- the writer


@dataclass(frozen=True)
class Election:
    writer: Address | None
    writer_timeline: int | None      # highest timeline ever accepted for a writer
    fenced: frozenset[Address]


def elect(states: Sequence[InstanceState], current: Address | None, floor_timeline: int | None,
          authority: Authority | None = None) -> Election:
    """Choose the writer among reachable instances reporting primary (see the module docstring)."""
    primaries = [s for s in states if s.role == "primary" and s.reachable]
    fresh = [s for s in primaries if not _stale(s, floor_timeline)
             and (authority is None or s.address == authority.leader)]
    writer = _best_primary(fresh, current)
    timeline = floor_timeline
    if writer is not None and writer.timeline is not None:
        timeline = max(writer.timeline, floor_timeline or 0)
    fenced = frozenset(s.address for s in primaries if writer is None or s.address != writer.address)
    return Election(writer.address if writer else None, timeline, fenced)


def _stale(state: InstanceState, floor_timeline: int | None) -> bool:
    return floor_timeline is not None and state.timeline is not None and state.timeline < floor_timeline


def _best_primary(candidates: list[InstanceState], current: Address | None) -> InstanceState | None:
    if not candidates:
        return None
    newest = max(_timeline_key(s) for s in candidates)
    candidates = [s for s in candidates if _timeline_key(s) == newest]
    for s in candidates:
        if s.address == current:
            return s
    best_position = max(_position_key(s) for s in candidates)
    return next(s for s in candidates if _position_key(s) == best_position)


def _timeline_key(state: InstanceState) -> int:
    return -1 if state.timeline is None else state.timeline


def _position_key(state: InstanceState) -> int:
    return -1 if state.position is None else state.position


# --------------------------------------------------------------------------- snapshots


def build_snapshot(cluster: str, observed: Sequence[InstanceState], previous: TopologySnapshot,
                   wall_time: float, authority: Authority | None = None) -> TopologySnapshot:
    """The next snapshot: elect the writer, fence the other primaries, compute lag in bytes."""
    election = elect(observed, previous.writer, previous.writer_timeline, authority)
    writer_position = next((s.position for s in observed if s.address == election.writer), None)
    published = tuple(_publish(s, election, previous.get(s.address), writer_position, authority)
                      for s in observed)
    return TopologySnapshot(cluster=cluster, instances=published, writer=election.writer,
                            writer_timeline=election.writer_timeline, version=previous.version + 1,
                            taken_at=wall_time)


def _publish(state: InstanceState, election: Election, before: InstanceState | None,
             writer_position: int | None, authority: Authority | None) -> InstanceState:
    if state.address in election.fenced:
        return replace(state, state="fenced", since=_entered(state, before, "fenced"), lag_bytes=None)
    lag_bytes = None
    if state.role == "replica" and writer_position is not None and state.position is not None:
        lag_bytes = max(0, writer_position - state.position)
    if authority is None:
        return replace(state, lag_bytes=lag_bytes)
    lag_bytes = authority.lag_bytes.get(state.address, lag_bytes) if state.role == "replica" else lag_bytes
    reason = authority.excluded.get(state.address)
    if reason is not None and state.state in ("up", "lagging") and state.address != election.writer:
        return replace(state, state="excluded", since=_entered(state, before, "excluded"), lag_bytes=lag_bytes,
                       error=reason)
    return replace(state, lag_bytes=lag_bytes)


def _entered(state: InstanceState, before: InstanceState | None, published: State) -> float:
    return before.since if before is not None and before.state == published else state.last_check or 0.0


# --------------------------------------------------------------------------- what changed


def changes(before: TopologySnapshot, after: TopologySnapshot) -> list[str]:
    """Human-readable state, role and writer changes between two snapshots (for the log)."""
    lines: list[str] = []
    for state in after.instances:
        old = before.get(state.address)
        old_state, old_role = (old.state, old.role) if old else ("unknown", "unknown")
        if old_state != state.state:
            detail = f" ({state.error})" if state.state == "down" and state.error else ""
            lines.append(f"instance {state.address} {old_state} -> {state.state}{detail}")
        if old_role != state.role:
            lines.append(f"instance {state.address} role {old_role} -> {state.role}")
    if before.writer != after.writer:
        lines.append(f"writer {before.writer or 'none'} -> {after.writer or 'none'}")
    return lines
