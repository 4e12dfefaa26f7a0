"""Topology without servers: the health state machine on a fake clock, writer election and fencing,
snapshots, endpoint selection, refused-connection avoidance, the monitor fed by fake probes."""

from __future__ import annotations

import asyncio
import random
import struct
from collections import Counter
from dataclasses import replace

import pytest

from proxy.config import Address, EndpointConfig, HealthSettings
from proxy.engines.postgres.probe import parse_data_row, parse_lsn, parse_probe_row
from proxy.metrics import Metrics
from proxy.topology.health import build_snapshot, changes, elect, observe
from proxy.topology.model import InstanceState, ProbeResult, TopologySnapshot
from proxy.topology.monitor import TopologyMonitor
from proxy.topology.select import RefusedConnections, choose, least_outstanding

A, B, C, D = (Address("10.0.0.1", 5432), Address("10.0.0.2", 5432), Address("10.0.0.3", 5432),
              Address("10.0.0.4", 5432))
LISTEN = Address("127.0.0.1", 6432)

PRIMARY = ProbeResult(ok=True, in_recovery=False, position=1000, timeline=1)
REPLICA = ProbeResult(ok=True, in_recovery=True, position=900, receive_position=900, lag_seconds=0.0, timeline=1)
FAIL = ProbeResult.failed("connection refused")


def step(prev: InstanceState, probe: ProbeResult, now: float, threshold: int = 3,
         max_lag: float = 10.0) -> InstanceState:
    return observe(prev, probe, now, failure_threshold=threshold, max_replica_lag=max_lag)


def behind(lag: float) -> ProbeResult:
    return replace(REPLICA, lag_seconds=lag, receive_position=950)


# --------------------------------------------------------------------------- the state machine


def test_first_good_probe_makes_an_instance_up_with_its_role() -> None:
    s = step(InstanceState(A), PRIMARY, now=1.0)
    assert (s.state, s.role, s.failures, s.since, s.last_ok, s.position, s.timeline) == (
        "up", "primary", 0, 1.0, 1.0, 1000, 1)
    assert step(InstanceState(B), REPLICA, now=1.0).role == "replica"


def test_down_only_after_failure_threshold_consecutive_failures() -> None:
    s = step(InstanceState(A), PRIMARY, now=0.0)
    for now in (0.5, 1.0):
        s = step(s, FAIL, now)
        assert (s.state, s.role) == ("up", "primary")
    s = step(s, FAIL, 1.5)
    assert (s.state, s.since, s.failures, s.error) == ("down", 1.5, 3, "connection refused")


def test_a_success_resets_the_failure_count() -> None:
    s = step(InstanceState(A), PRIMARY, now=0.0)
    s = step(step(s, FAIL, 0.5), FAIL, 1.0)
    s = step(s, PRIMARY, 1.5)
    s = step(step(s, FAIL, 2.0), FAIL, 2.5)
    assert s.state == "up"


def test_one_good_probe_brings_a_down_instance_back() -> None:
    s = InstanceState(A)
    for now in (0.0, 0.5, 1.0):
        s = step(s, FAIL, now)
    assert s.state == "down"
    s = step(s, REPLICA, 2.0)
    assert (s.state, s.since, s.failures) == ("up", 2.0, 0)


def test_unknown_stays_unknown_below_the_threshold() -> None:
    s = step(InstanceState(A), FAIL, 0.0)
    assert s.state == "unknown" and not s.reachable


def test_a_replica_is_lagging_only_after_being_behind_for_max_replica_lag() -> None:
    s = step(InstanceState(B), REPLICA, now=0.0, max_lag=1.0)
    s = step(s, behind(5.0), now=1.0, max_lag=1.0)       # first seen behind: lag capped at 0s
    assert (s.state, s.lag_seconds, s.behind_since) == ("up", 0.0, 1.0)
    s = step(s, behind(5.5), now=1.6, max_lag=1.0)
    assert s.state == "up" and s.lag_seconds == pytest.approx(0.6)
    s = step(s, behind(6.0), now=2.1, max_lag=1.0)
    assert (s.state, s.since) == ("lagging", 2.1) and s.lag_seconds == pytest.approx(1.1)
    assert not s.usable_replica
    s = step(s, REPLICA, now=3.0, max_lag=1.0)            # caught up
    assert (s.state, s.lag_seconds, s.behind_since) == ("up", 0.0, None)


def test_an_old_replay_timestamp_after_a_quiet_period_is_not_lag() -> None:
    s = step(InstanceState(B), REPLICA, now=0.0, max_lag=1.0)
    s = step(s, behind(3600.0), now=100.0, max_lag=1.0)   # the primary was idle for an hour
    assert s.state == "up"
    s = step(s, REPLICA, now=100.1, max_lag=1.0)
    assert s.state == "up" and s.behind_since is None


def test_real_lag_smaller_than_time_behind_is_used_as_reported() -> None:
    s = step(InstanceState(B), behind(0.2), now=0.0, max_lag=1.0)
    s = step(s, behind(0.3), now=5.0, max_lag=1.0)
    assert s.state == "up" and s.lag_seconds == 0.3


def test_max_replica_lag_zero_disables_the_lag_check() -> None:
    s = step(InstanceState(B), behind(50.0), now=0.0, max_lag=0.0)
    s = step(s, behind(60.0), now=30.0, max_lag=0.0)
    assert s.state == "up" and s.lag_seconds == 30.0


def test_unknown_lag_does_not_exclude_a_replica() -> None:
    s = step(InstanceState(B), replace(REPLICA, lag_seconds=None), now=0.0, max_lag=1.0)
    assert s.state == "up" and s.lag_seconds is None


def test_a_failure_keeps_the_last_known_position_and_role() -> None:
    s = step(step(InstanceState(A), PRIMARY, 0.0), FAIL, 0.5)
    assert (s.role, s.position, s.last_ok, s.last_check) == ("primary", 1000, 0.0, 0.5)


# --------------------------------------------------------------------------- writer election


def up(address: Address, role: str = "replica", timeline: int | None = 1, position: int = 0,
       state: str = "up") -> InstanceState:
    return InstanceState(address, state=state, role=role, timeline=timeline, position=position,  # type: ignore[arg-type]
                         last_check=0.0, last_ok=0.0)


def test_the_writer_is_the_instance_reporting_primary() -> None:
    e = elect([up(A, "primary"), up(B), up(C)], None, None)
    assert (e.writer, e.writer_timeline, e.fenced) == (A, 1, frozenset())


def test_no_reachable_primary_means_no_writer() -> None:
    e = elect([up(A, "primary", state="down"), up(B), up(C)], A, 1)
    assert (e.writer, e.writer_timeline) == (None, 1)


def test_split_brain_newer_timeline_wins_and_the_other_is_fenced() -> None:
    e = elect([up(A, "primary", timeline=1, position=5000), up(B, "primary", timeline=2, position=10)], A, 1)
    assert (e.writer, e.writer_timeline, e.fenced) == (B, 2, frozenset({A}))


def test_an_old_primary_coming_back_alone_stays_fenced() -> None:
    e = elect([up(A, "primary", timeline=1), up(B, "primary", state="down", timeline=2)], None, 2)
    assert (e.writer, e.fenced) == (None, frozenset({A}))


def test_same_timeline_keeps_the_current_writer_then_prefers_the_most_advanced() -> None:
    states = [up(A, "primary", position=10), up(B, "primary", position=20)]
    assert elect(states, A, 1).writer == A
    assert elect(states, None, 1).writer == B
    assert elect(states, None, 1).fenced == frozenset({A})


def test_unknown_timeline_loses_to_a_known_one() -> None:
    e = elect([up(A, "primary", timeline=None), up(B, "primary", timeline=3)], A, None)
    assert e.writer == B


# --------------------------------------------------------------------------- snapshots


def test_snapshot_fences_computes_lag_bytes_and_usable_replicas() -> None:
    observed = [up(A, "primary", timeline=1, position=5000), up(B, "primary", timeline=2, position=9000),
                up(C, position=8000), up(D, state="lagging", position=100)]
    snap = build_snapshot("main", observed, TopologySnapshot("main"), wall_time=123.0)
    assert (snap.writer, snap.writer_timeline, snap.version, snap.taken_at) == (B, 2, 1, 123.0)
    assert [s.state for s in snap.instances] == ["fenced", "up", "up", "lagging"]
    assert snap.get(C) is not None and snap.get(C).lag_bytes == 1000  # type: ignore[union-attr]
    assert snap.get(A).lag_bytes is None  # type: ignore[union-attr]
    assert snap.usable_replicas == (C,)
    assert A in snap and Address("x", 1) not in snap


def test_changes_name_state_role_and_writer_changes() -> None:
    before = build_snapshot("main", [up(A, "primary"), up(B)], TopologySnapshot("main"), 0.0)
    down_a = replace(up(A, "primary", state="down"), error="refused")
    after = build_snapshot("main", [down_a, up(B, "primary", timeline=2)], before, 1.0)
    assert changes(before, after) == [
        f"instance {A} up -> down (refused)",
        f"instance {B} role replica -> primary",
        f"writer {A} -> {B}",
    ]


# --------------------------------------------------------------------------- selection


def endpoint(role: str, **kw: object) -> EndpointConfig:
    return EndpointConfig(name=role, listen=LISTEN, role=role, **kw)  # type: ignore[arg-type]


WRITER, READER, SPLIT = endpoint("writer"), endpoint("reader"), endpoint("split")


def snapshot(*states: InstanceState) -> TopologySnapshot:
    return build_snapshot("main", states, TopologySnapshot("main"), 0.0)


FULL = snapshot(up(A, "primary"), up(B), up(C))


def none_outstanding(address: Address) -> int:
    return 0


def pick(snap: TopologySnapshot, ep: EndpointConfig, route: str = "replica", loads: dict[Address, int] | None = None,
         avoid: frozenset[Address] = frozenset(), seed: int = 1) -> Address | None:
    return choose(snap, ep, route, lambda a: (loads or {}).get(a, 0), random.Random(seed), avoid)


def test_writer_endpoint_follows_the_writer() -> None:
    assert pick(FULL, WRITER) == A
    assert pick(snapshot(up(A, "primary", state="down"), up(B), up(C)), WRITER) is None


def test_reader_prefers_least_outstanding() -> None:
    assert pick(FULL, READER, loads={B: 3, C: 1}) == C
    assert pick(FULL, READER, loads={B: 0, C: 1}) == B


def test_reader_ties_are_random_and_balanced() -> None:
    rng = random.Random(42)
    counts = Counter(choose(FULL, READER, "replica", none_outstanding, rng) for _ in range(1000))
    assert set(counts) == {B, C}
    assert 400 <= counts[B] <= 600


def test_reader_skips_lagging_down_and_fenced_instances() -> None:
    snap = snapshot(up(A, "primary", timeline=2), up(B, state="lagging"), up(C, state="down"),
                    up(D, "primary", timeline=1))
    assert snap.get(D).state == "fenced"  # type: ignore[union-attr]
    assert {pick(snap, READER, seed=s) for s in range(20)} == {A}   # no usable replica: the primary


def test_reader_falls_back_to_the_primary_then_to_nothing() -> None:
    assert pick(snapshot(up(A, "primary"), up(B, state="down")), READER) == A
    assert pick(snapshot(up(A, "primary", state="down"), up(B, state="down")), READER) is None


def test_split_routes_by_route() -> None:
    assert pick(FULL, SPLIT, "primary") == A
    assert pick(FULL, SPLIT, "replica") in (B, C)


def test_route_only_matters_for_split_endpoints() -> None:
    assert pick(FULL, READER, "primary") in (B, C)
    assert pick(FULL, WRITER, "replica") == A


def test_custom_with_instances() -> None:
    ep = endpoint("custom", instances=(C,))
    assert pick(FULL, ep) == C
    assert pick(snapshot(up(A, "primary"), up(B), up(C, state="lagging")), ep) is None  # waits, no fallback


def test_custom_with_exclude_includes_instances_it_never_heard_of() -> None:
    ep = endpoint("custom", exclude=(B,))
    assert pick(FULL, ep) == C
    grown = snapshot(up(A, "primary"), up(B), up(C), up(D))
    assert {pick(grown, ep, seed=s) for s in range(30)} == {C, D}


def test_custom_kind_reader_never_uses_the_primary() -> None:
    ep = endpoint("custom", exclude=(B, C), kind="reader")
    assert pick(FULL, ep) is None


def test_custom_kind_any_may_use_the_primary() -> None:
    ep = endpoint("custom", instances=(A, B), kind="any")
    assert {pick(FULL, ep, seed=s) for s in range(30)} == {A, B}
    assert pick(FULL, ep, loads={B: 5}) == A
    only_primary = endpoint("custom", instances=(A,), kind="any")
    assert pick(FULL, only_primary) == A


def test_avoided_instances_are_skipped() -> None:
    assert pick(FULL, READER, avoid=frozenset({B})) == C
    assert pick(FULL, READER, avoid=frozenset({B, C})) == A
    assert pick(FULL, WRITER, avoid=frozenset({A})) is None


def test_least_outstanding_single_candidate_does_not_ask_for_load() -> None:
    def boom(address: Address) -> int:
        raise AssertionError("not needed")

    assert least_outstanding([B], boom, random.Random()) == B


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_refused_connections_expire_or_clear_after_a_later_good_probe() -> None:
    clock = FakeClock()
    refused = RefusedConnections(clock)
    assert refused.current(FULL) == frozenset()
    refused.add(B, hold=2.0)
    stale_probe = snapshot(up(A, "primary"), replace(up(B), last_ok=99.0), up(C))
    assert refused.current(stale_probe) == {B}
    clock.now = 101.0
    assert refused.current(snapshot(up(A, "primary"), replace(up(B), last_ok=100.5), up(C))) == frozenset()
    refused.add(C, hold=2.0)
    clock.now = 103.5
    assert refused.current(stale_probe) == frozenset()


# --------------------------------------------------------------------------- probe parsing


def data_row(*values: str | None) -> bytes:
    body = struct.pack("!h", len(values))
    for value in values:
        if value is None:
            body += struct.pack("!i", -1)
        else:
            raw = value.encode()
            body += struct.pack("!i", len(raw)) + raw
    return body


def test_parse_lsn() -> None:
    assert parse_lsn("0/3000060") == 0x3000060
    assert parse_lsn("16/B374D848") == (0x16 << 32) | 0xB374D848
    assert parse_lsn(None) is None


def test_parse_probe_rows() -> None:
    primary = parse_probe_row(parse_data_row(data_row("f", "0/3000060", None, None, "2")))
    assert primary == ProbeResult(ok=True, in_recovery=False, position=0x3000060, timeline=2)
    replica = parse_probe_row(parse_data_row(data_row("t", "0/3000000", "0/3000060", "1.5", "1")))
    assert (replica.in_recovery, replica.position, replica.receive_position, replica.lag_seconds) == (
        True, 0x3000000, 0x3000060, 1.5)


# --------------------------------------------------------------------------- the monitor


class FakeProbe:
    """Returns whatever the test put in `results[address]`."""

    results: dict[Address, ProbeResult] = {}
    closed: list[Address] = []

    def __init__(self, address: Address, health: HealthSettings) -> None:
        self.address = address

    async def probe(self, timeout: float) -> ProbeResult:
        return self.results.get(self.address, FAIL)

    def close(self) -> None:
        self.closed.append(self.address)


def make_monitor(clock: FakeClock, metrics: Metrics | None = None,
                 writer_changes: list[tuple[Address | None, Address | None]] | None = None) -> TopologyMonitor:
    def on_change(old: Address | None, new: Address | None) -> None:
        if writer_changes is not None:
            writer_changes.append((old, new))

    return TopologyMonitor("main", (A, B, C), HealthSettings(failure_threshold=2), FakeProbe,
                           on_writer_change=on_change, metrics=metrics, clock=clock, wall_clock=lambda: 5.0)


def test_monitor_publishes_snapshots_and_reports_writer_changes() -> None:
    clock, metrics, writer_changes = FakeClock(), Metrics(), []  # type: ignore[var-annotated]
    monitor = make_monitor(clock, metrics, writer_changes)
    monitor.record(A, PRIMARY)
    monitor.record(B, REPLICA)
    monitor.record(C, REPLICA)
    assert (monitor.snapshot.writer, monitor.snapshot.usable_replicas) == (A, (B, C))
    assert writer_changes == [(None, A)]
    clock.now += 1
    monitor.record(A, FAIL)
    monitor.record(A, FAIL)
    assert monitor.snapshot.writer is None
    monitor.record(B, replace(PRIMARY, timeline=2))
    assert writer_changes == [(None, A), (A, None), (None, B)]
    value = metrics.registry.get_sample_value
    assert value("dbproxy_failovers_total", {"cluster": "main"}) == 1
    assert value("dbproxy_instance_up", {"cluster": "main", "instance": str(A)}) == 0
    assert value("dbproxy_instance_is_primary", {"cluster": "main", "instance": str(B)}) == 1
    texts = [e.text for e in monitor.events]
    assert f"instance {A} up -> down (connection refused)" in texts
    assert f"writer none -> {B}" in texts


def test_monitor_adds_and_removes_instances() -> None:
    monitor = make_monitor(FakeClock())
    monitor.record(A, PRIMARY)
    monitor.add_instance(D)
    assert monitor.snapshot.addresses == (A, B, C, D)
    monitor.record(D, REPLICA)
    assert monitor.snapshot.usable_replicas == (D,)
    monitor.remove_instance(D)
    assert D not in monitor.snapshot and monitor.snapshot.usable_replicas == ()
    monitor.record(D, REPLICA)  # a late result for a removed instance is ignored
    assert D not in monitor.snapshot


async def test_monitor_loops_probe_until_stopped() -> None:
    FakeProbe.results = {A: PRIMARY, B: REPLICA, C: REPLICA}
    FakeProbe.closed = []
    monitor = TopologyMonitor("main", (A, B, C), HealthSettings(interval=0.01, failure_threshold=2), FakeProbe)
    monitor.start()
    await monitor.wait_probed(1.0)
    assert monitor.snapshot.writer == A and monitor.snapshot.usable_replicas == (B, C)
    FakeProbe.results[C] = FAIL
    await asyncio.sleep(0.1)
    assert monitor.snapshot.get(C).state == "down"  # type: ignore[union-attr]
    monitor.probe_now(B)   # reconnects B's probe
    await asyncio.sleep(0.02)
    assert B in FakeProbe.closed
    monitor.stop()
    version = monitor.snapshot.version
    await asyncio.sleep(0.05)
    assert monitor.snapshot.version == version
    assert set(FakeProbe.closed) >= {A, B, C}
