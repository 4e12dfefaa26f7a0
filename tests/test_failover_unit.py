"""Failover without servers: the promotion policy on a fake clock (when, which replica, once per
incident, never while the old primary answers), switchover targets, conninfo re-pointing, and the
coordinator driven by fake engine actions (promotion, re-pointing, switchover order and undo)."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field, replace

import pytest

from proxy.config import Address, FailoverSettings, HealthSettings
from proxy.engines.postgres.failover import format_conninfo, parse_conninfo, retarget_conninfo
from proxy.metrics import Metrics
from proxy.topology.coordinator import ActionFailed, FailoverCoordinator
from proxy.topology.failover import (
    FailoverState,
    Step,
    SwitchoverRefused,
    best_replica,
    promotion_failed,
    step,
    switchover_target,
)
from proxy.topology.health import build_snapshot, observe
from proxy.topology.lease import Lease
from proxy.topology.model import InstanceState, ProbeResult, TopologySnapshot
from proxy.topology.monitor import TopologyMonitor

A, B, C = Address("10.0.0.1", 5432), Address("10.0.0.2", 5432), Address("10.0.0.3", 5432)
PRIMARY = ProbeResult(ok=True, in_recovery=False, position=1000, timeline=1)
FAIL = ProbeResult.failed("connection refused")
THRESHOLD = 3
PROMOTE_AFTER = 1.0


def replica(position: int, timeline: int = 1) -> ProbeResult:
    return ProbeResult(ok=True, in_recovery=True, position=position, receive_position=position,
                       lag_seconds=0.0, timeline=timeline)


class World:
    """Three instances seen through the health state machine, a fake clock and the failover policy."""

    def __init__(self, mode: str = "promote") -> None:
        self.now = 0.0
        self.promote = mode == "promote"
        self.states = {a: InstanceState(a) for a in (A, B, C)}
        self.snapshot = TopologySnapshot("main", tuple(self.states.values()))
        self.failover = FailoverState()
        self.steps: list[Step] = []

    def probe(self, address: Address, result: ProbeResult) -> Step:
        self.states[address] = observe(self.states[address], result, self.now,
                                       failure_threshold=THRESHOLD, max_replica_lag=10.0)
        self.snapshot = build_snapshot("main", tuple(self.states.values()), self.snapshot, self.now)
        decision = step(self.failover, self.snapshot, self.now, promote=self.promote, promote_after=PROMOTE_AFTER)
        self.failover = decision.state
        self.steps.append(decision)
        return decision

    def round(self, results: dict[Address, ProbeResult], dt: float = 0.2) -> list[Step]:
        """One probe of every instance, then the clock moves on."""
        steps = [self.probe(a, r) for a, r in results.items()]
        self.now += dt
        return steps

    def healthy(self, b: int = 900, c: int = 950) -> None:
        self.round({A: PRIMARY, B: replica(b), C: replica(c)})

    def promotions(self) -> list[Address]:
        return [s.promote for s in self.steps if s.promote is not None]


def kill_primary_and_wait(world: World, seconds: float, b: int = 900, c: int = 950) -> None:
    end = world.now + seconds
    while world.now < end - 1e-9:
        world.round({A: FAIL, B: replica(b), C: replica(c)})


# --------------------------------------------------------------------------- the policy


def test_promotes_the_most_advanced_replica_once_the_primary_is_down_for_promote_after() -> None:
    world = World()
    world.healthy()
    assert world.snapshot.writer == A
    kill_primary_and_wait(world, 0.6)      # three failed probes: down at the third
    assert world.snapshot.writer is None and world.states[A].state == "down"
    began = [s for s in world.steps if s.began]
    assert len(began) == 1 and began[0].state.incident is not None
    assert began[0].state.incident.lost_writer == A
    down_since = world.states[A].since
    kill_primary_and_wait(world, 0.8)
    assert world.promotions() == []        # down for less than promote_after
    kill_primary_and_wait(world, 0.4)
    assert world.promotions() == [C]       # 950 > 900
    incident = world.failover.incident
    assert incident is not None and incident.promoted == C
    assert incident.promoted_at is not None and incident.promoted_at - down_since >= PROMOTE_AFTER


def test_exactly_one_promotion_per_incident_and_a_new_incident_may_promote_again() -> None:
    world = World()
    world.healthy()
    kill_primary_and_wait(world, 5.0)
    assert world.promotions() == [C]
    # C reports primary on the new timeline: the incident ends.
    ended = world.round({A: FAIL, B: replica(960, 2), C: replace(PRIMARY, position=970, timeline=2)})
    assert any(s.ended is not None and s.ended.promoted == C for s in ended)
    assert world.snapshot.writer == C and world.failover.incident is None
    assert world.failover.last_writer == C
    # A second incident (C dies): B is promoted, the dead A is not a candidate.
    end = world.now + 3.0
    while world.now < end:
        world.round({A: FAIL, B: replica(980, 2), C: FAIL})
    assert world.promotions() == [C, B]


def test_never_promotes_while_the_old_primary_answers_probes() -> None:
    world = World()
    world.healthy()
    kill_primary_and_wait(world, 0.6)
    # A answers again, as a replica (someone is rebuilding it): no promotion, ever, and a reason.
    for _ in range(20):
        world.round({A: replica(1000), B: replica(900), C: replica(950)})
    assert world.promotions() == []
    assert world.steps[-1].blocked.startswith(f"old primary {A} is not gone: it answers probes")
    # A answers as a primary again before promote_after: the writer is back, no promotion.
    world = World()
    world.healthy()
    kill_primary_and_wait(world, 0.8)
    steps = world.round({A: PRIMARY, B: replica(900), C: replica(950)})
    assert world.snapshot.writer == A and any(s.ended is not None for s in steps)
    kill_primary_and_wait(world, 0.2)
    assert world.promotions() == []


def test_a_single_failed_probe_after_answering_does_not_count_as_down_time() -> None:
    world = World()
    world.healthy()
    kill_primary_and_wait(world, 0.6)
    # A answers once (as a replica): the state machine makes it "up"; two failures are not "down".
    world.round({A: replica(1000), B: replica(900), C: replica(950)})
    kill_primary_and_wait(world, 0.4)
    assert world.states[A].state == "up" and world.promotions() == []
    kill_primary_and_wait(world, 1.2)       # down again (third failure), then promote_after
    assert world.promotions() == [C]


def test_follow_mode_tracks_the_incident_but_never_promotes() -> None:
    world = World(mode="follow")
    world.healthy()
    kill_primary_and_wait(world, 10.0)
    assert world.promotions() == [] and world.failover.incident is not None
    steps = world.round({A: FAIL, B: replace(PRIMARY, position=960, timeline=2), C: replica(950)})
    assert [s.ended.lost_writer for s in steps if s.ended is not None] == [A]


def test_replicas_whose_latest_probe_failed_or_that_are_down_are_not_candidates() -> None:
    world = World()
    world.healthy()
    end = world.now + 2.0
    while world.now < end:
        world.round({A: FAIL, B: replica(900), C: FAIL})
    assert world.promotions() == [B]        # C, the more advanced one, stopped answering
    world = World()
    world.healthy()
    end = world.now + 3.0
    while world.now < end:
        world.round({A: FAIL, B: FAIL, C: FAIL})
    assert world.promotions() == []
    assert world.steps[-1].blocked == "no healthy replica to promote"


def test_a_fenced_stale_primary_does_not_block_promotion() -> None:
    world = World()
    # B is the writer on timeline 2; A came back as a primary on timeline 1: fenced.
    world.round({B: replace(PRIMARY, timeline=2), A: PRIMARY, C: replica(900, 2)})
    assert world.snapshot.writer == B and world.snapshot.get(A).state == "fenced"  # type: ignore[union-attr]
    end = world.now + 2.0
    while world.now < end:
        world.round({A: PRIMARY, B: FAIL, C: replica(900, 2)})
    assert world.snapshot.writer is None and world.promotions() == [C]


def test_no_incident_at_startup_before_every_instance_was_probed() -> None:
    world = World()
    world.probe(B, replica(900))
    world.probe(C, replica(950))
    assert world.failover.incident is None and not any(s.began for s in world.steps)
    world.probe(A, PRIMARY)
    assert world.failover == FailoverState(A, None) and not any(s.began or s.ended for s in world.steps)


def test_without_a_known_primary_every_non_replica_must_be_gone() -> None:
    world = World()
    # A never answers (role unknown); B and C are replicas: A is the suspect.
    end = world.now + 2.0
    while world.now < end:
        world.round({A: FAIL, B: replica(900), C: replica(950)})
    assert world.promotions() == [C]
    # Only replicas, no primary seen and nobody down: refuse (e.g. a cluster listing replicas only).
    world = World()
    for _ in range(20):
        world.round({A: replica(800), B: replica(900), C: replica(950)})
    assert world.promotions() == []
    assert world.steps[-1].blocked.startswith("no primary was seen since start")


def test_a_harmless_failed_attempt_is_retried_after_promote_after_any_other_is_not() -> None:
    world = World()
    world.healthy()
    kill_primary_and_wait(world, 2.0)
    assert world.promotions() == [C]
    world.failover = promotion_failed(world.failover, world.now, harmless=True, retry_after=PROMOTE_AFTER)
    kill_primary_and_wait(world, 0.8)
    assert world.promotions() == [C]
    kill_primary_and_wait(world, 0.4)
    assert world.promotions() == [C, C]
    world.failover = promotion_failed(world.failover, world.now, harmless=False, retry_after=PROMOTE_AFTER)
    kill_primary_and_wait(world, 5.0)
    assert world.promotions() == [C, C]


def test_best_replica_prefers_position_then_configuration_order() -> None:
    states = [InstanceState(A, "down", "primary", failures=3, position=2000),
              InstanceState(B, "up", "replica", position=950),
              InstanceState(C, "lagging", "replica", position=950)]
    assert best_replica(states) == B
    assert best_replica(states, exclude=(B,)) == C
    assert best_replica([replace(states[1], position=None)]) is None


def test_best_replica_is_the_one_that_received_most() -> None:
    """Promotion applies what was received first: 940 applied of 990 received beats 950 of 950."""
    states = [InstanceState(B, "up", "replica", position=950, received=950),
              InstanceState(C, "up", "replica", position=940, received=990)]
    assert best_replica(states) == C
    assert best_replica([replace(states[1], received=None)] + states[:1]) == B   # unknown: the replay position


# --------------------------------------------------------------------------- switchover targets


def test_switchover_target() -> None:
    world = World()
    world.healthy()
    assert switchover_target(world.snapshot, None) == (A, C)
    assert switchover_target(world.snapshot, B) == (A, B)
    with pytest.raises(SwitchoverRefused, match="already the writer"):
        switchover_target(world.snapshot, A)
    with pytest.raises(SwitchoverRefused, match="not an instance"):
        switchover_target(world.snapshot, Address("10.9.9.9", 1))
    kill_primary_and_wait(world, 0.2, c=950)
    world.round({A: PRIMARY, B: replica(900), C: FAIL})
    with pytest.raises(SwitchoverRefused, match="not a healthy replica"):
        switchover_target(world.snapshot, C)
    world.now += 1
    kill_primary_and_wait(world, 0.6)
    with pytest.raises(SwitchoverRefused, match="no writer"):
        switchover_target(world.snapshot, B)


# --------------------------------------------------------------------------- conninfo


def test_conninfo_parse_and_format() -> None:
    text = "user=postgres passfile='/var/lib/post gres/.pgpass' host=10.0.0.1 port=5432 sslmode=prefer " \
           "application_name=node1 options='-c x=\\'y\\''"
    params = parse_conninfo(text)
    assert params == {"user": "postgres", "passfile": "/var/lib/post gres/.pgpass", "host": "10.0.0.1",
                      "port": "5432", "sslmode": "prefer", "application_name": "node1", "options": "-c x='y'"}
    assert parse_conninfo(format_conninfo(params)) == params
    assert parse_conninfo("host = a  port= 1") == {"host": "a", "port": "1"}
    assert parse_conninfo("postgresql://u@h:1/db") is None
    assert parse_conninfo("host='unterminated") is None


def test_retarget_conninfo_keeps_other_keywords() -> None:
    new = Address("10.0.0.3", 5433)
    assert retarget_conninfo("host=10.0.0.1 hostaddr=10.0.0.1 port=5432 user=repl password='a b' "
                             "application_name=node2", new, "postgres", "node2") == \
        "host=10.0.0.3 port=5433 user=repl password='a b' application_name=node2"
    assert retarget_conninfo(None, new, "postgres", "node2") == \
        "host=10.0.0.3 port=5433 user=postgres application_name=node2"
    assert retarget_conninfo("", new, "postgres", "") == "host=10.0.0.3 port=5433 user=postgres"


# --------------------------------------------------------------------------- the coordinator, fake engine


@dataclass
class FakeActions:
    """Engine actions that only record calls; a promotion makes the monitor see a new primary."""

    monitor: TopologyMonitor
    calls: list[str] = field(default_factory=list)
    fail: dict[str, ActionFailed] = field(default_factory=dict)
    replayed: bool = True
    missing: list[str] = field(default_factory=list)
    leases: list[Lease] = field(default_factory=list)     # the promote leases on every instance
    renewals: list[str] = field(default_factory=list)
    leases_unreadable: bool = False

    def _maybe_fail(self, name: str) -> None:
        if name in self.fail:
            raise self.fail[name]

    async def promote(self, address: Address, wait_seconds: int) -> bool:
        self.calls.append(f"promote {address}")
        self._maybe_fail("promote")
        await asyncio.sleep(0)
        timeline = max(s.timeline or 0 for s in self.monitor.snapshot.instances) + 1
        self.monitor.record(address, replace(PRIMARY, position=2000, timeline=timeline))
        return True

    async def follow(self, replica: Address, primary: Address) -> str:
        self.calls.append(f"follow {replica} {primary}")
        return ""

    async def rejoin(self, old_primary: Address, primary: Address) -> str:
        self.calls.append(f"rejoin {old_primary} {primary}")
        self._maybe_fail("rejoin")
        return f"{old_primary} rejoined"

    async def stop_writes(self, primary: Address) -> int:
        self.calls.append(f"stop_writes {primary}")
        self._maybe_fail("stop_writes")
        return 1234

    async def allow_writes(self, primary: Address) -> None:
        self.calls.append(f"allow_writes {primary}")

    async def wait_replayed(self, replica: Address, position: int, timeout: float) -> bool:
        self.calls.append(f"wait_replayed {replica} {position}")
        return self.replayed

    def describe_position(self, position: int | None) -> str:
        return str(position)

    async def missing_privileges(self, address: Address) -> list[str]:
        self.calls.append(f"missing_privileges {address}")
        self._maybe_fail("missing_privileges")
        return list(self.missing)

    def rebuild_advice(self, old_primary: Address, primary: Address) -> str:
        return f"old primary {old_primary} must be rebuilt as a replica of {primary}"

    async def renew_lease(self, primary: Address, holder: str, pid: int) -> list[Lease]:
        self.renewals.append(f"{primary} {holder}")
        self._maybe_fail("renew_lease")
        now = max((lease.renewed_at for lease in self.leases), default=1000.0) + 1
        self.leases = [lease for lease in self.leases if lease.holder != holder] + [Lease(holder, pid, now)]
        return list(self.leases)

    async def read_leases(self, instance: Address) -> list[Lease] | None:
        self._maybe_fail("read_leases")
        return None if self.leases_unreadable else list(self.leases)


@dataclass
class FakeTraffic:
    calls: list[str]
    running: int = 0
    paused: bool = False

    def pause(self) -> None:
        self.calls.append("pause")
        self.paused = True

    def resume(self) -> None:
        self.calls.append("resume")
        self.paused = False

    def in_flight(self, instance: Address) -> int:
        if self.running:
            self.running -= 1
            return self.running + 1
        return 0

    def close_pinned(self, instance: Address, reason: str) -> int:
        self.calls.append(f"close_pinned {instance}")
        return 0


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def coordinated(mode: str = "promote") -> tuple[TopologyMonitor, FakeActions, FailoverCoordinator, FakeClock]:
    clock = FakeClock()

    def no_probe(address: Address, health: HealthSettings) -> object:
        raise AssertionError("not started")

    monitor = TopologyMonitor("main", (A, B, C), HealthSettings(failure_threshold=THRESHOLD),
                              no_probe, metrics=Metrics(), clock=clock)  # type: ignore[arg-type]
    actions = FakeActions(monitor)
    coordinator = FailoverCoordinator(monitor, FailoverSettings(mode=mode, promote_after=PROMOTE_AFTER), actions,
                                      clock=clock)
    monitor.record(A, PRIMARY)
    monitor.record(B, replica(900))
    monitor.record(C, replica(950))
    return monitor, actions, coordinator, clock


async def test_coordinator_promotes_repoints_and_logs_the_timeline(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, "dbproxy")
    monitor, actions, coordinator, clock = coordinated()
    for _ in range(THRESHOLD):
        monitor.record(A, FAIL)
    assert monitor.snapshot.writer is None
    clock.now += PROMOTE_AFTER
    monitor.record(B, replica(900))
    await asyncio.sleep(0.05)
    assert actions.calls == [f"promote {C}", f"follow {B} {C}"]
    assert monitor.snapshot.writer == C and coordinator.state.incident is None
    texts = [e.text for e in monitor.events]
    for prefix in ("failover: detected at ", f"failover: promoting {C} at ", f"failover: promoted {C} at ",
                   "failover: writer resumed at ", f"failover: re-pointed {B} at {C}",
                   f"failover: old primary {A} must be rebuilt"):
        assert any(t.startswith(prefix) for t in texts), (prefix, texts)
    assert monitor.metrics is not None
    assert monitor.metrics.registry.get_sample_value("dbproxy_failovers_total", {"cluster": "main"}) == 1
    # Nothing more happens in this incident or after it.
    clock.now += 10
    monitor.record(B, replica(960, 2))
    await asyncio.sleep(0)
    assert actions.calls == [f"promote {C}", f"follow {B} {C}"]


async def test_coordinator_follow_mode_never_promotes() -> None:
    monitor, actions, coordinator, clock = coordinated(mode="follow")
    for _ in range(THRESHOLD):
        monitor.record(A, FAIL)
    clock.now += 30
    monitor.record(B, replica(900))
    await asyncio.sleep(0)
    assert actions.calls == []
    assert any(e.text.startswith("failover: detected") and "follow mode" in e.text for e in monitor.events)


async def test_switchover_order_and_result() -> None:
    monitor, actions, coordinator, clock = coordinated(mode="follow")
    traffic = FakeTraffic(actions.calls, running=3)
    result = await coordinator.switchover(B, traffic)
    # The old primary is rejoined once traffic runs again (the engine says what became of it).
    assert actions.calls == ["pause", f"stop_writes {A}", f"wait_replayed {B} 1234", f"promote {B}",
                             f"follow {C} {B}", f"close_pinned {A}", "resume", f"rejoin {A} {B}"]
    assert (result.old_writer, result.new_writer, result.repointed, result.old_writer_state) == (A, B, (C,), "fenced")
    assert result.note == f"{A} rejoined"
    assert monitor.snapshot.writer == B
    # Paused by the operator before: still paused after.
    actions.calls.clear()
    traffic = FakeTraffic(actions.calls, paused=True)
    await coordinator.switchover(C, traffic)
    assert actions.calls[0] == "pause" and "resume" not in actions.calls and traffic.paused


async def test_a_failed_rejoin_does_not_undo_the_switchover() -> None:
    monitor, actions, coordinator, clock = coordinated(mode="follow")
    actions.fail["rejoin"] = ActionFailed("access denied")
    result = await coordinator.switchover(B, FakeTraffic(actions.calls))
    assert monitor.snapshot.writer == B and result.new_writer == B
    assert "rejoining it as a replica failed (access denied)" in result.note
    assert any("could not make" in e.text and "access denied" in e.text for e in monitor.events)


async def test_switchover_cancelled_when_the_target_does_not_catch_up_or_transactions_keep_running() -> None:
    monitor, actions, coordinator, clock = coordinated(mode="follow")
    actions.replayed = False
    with pytest.raises(SwitchoverRefused, match="did not replay"):
        await coordinator.switchover(None, FakeTraffic(actions.calls))
    assert actions.calls == ["pause", f"stop_writes {A}", f"wait_replayed {C} 1234", f"allow_writes {A}", "resume"]
    assert monitor.snapshot.writer == A
    actions.calls.clear()
    with pytest.raises(SwitchoverRefused, match="still running"):
        await coordinator.switchover(None, FakeTraffic(actions.calls, running=10**9), drain_timeout=0.0)
    assert actions.calls == ["pause", "resume"]
    actions.calls.clear()
    actions.replayed = True
    actions.fail["promote"] = ActionFailed("permission denied for function pg_promote", harmless=True)
    with pytest.raises(ActionFailed):
        await coordinator.switchover(None, FakeTraffic(actions.calls))
    assert actions.calls[-2:] == [f"allow_writes {A}", "resume"]


async def test_promote_mode_reports_a_health_user_that_cannot_promote(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, "dbproxy")
    monitor, actions, coordinator, clock = coordinated()
    actions.missing = ["EXECUTE on pg_promote(boolean, integer)"]
    problem = await coordinator.check_privileges()
    assert actions.calls == [f"missing_privileges {A}"]   # asked on the writer
    assert "cannot promote or re-point" in problem and "pg_promote" in problem
    assert coordinator.privilege_problem == problem
    assert any(r.levelno == logging.ERROR and "pg_promote" in r.getMessage() for r in caplog.records)
    actions.missing = []
    assert await coordinator.check_privileges() == "" and coordinator.privilege_problem == ""
    assert any("sufficient now" in e.text for e in monitor.events)
    # An instance that cannot be asked is a problem too; follow mode never asks.
    actions.fail["missing_privileges"] = ActionFailed("connection refused", harmless=True)
    assert "could not check" in await coordinator.check_privileges()
    follow_monitor, follow_actions, follow, _ = coordinated(mode="follow")
    assert await follow.check_privileges() == "" and follow_actions.calls == []

