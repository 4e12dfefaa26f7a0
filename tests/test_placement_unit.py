"""Zones, tiers, standbys and discovery without servers: instance tables in the config (and their bad
values), zone-aware reader choice, promotion order, discovery reconciliation on a fake clock, the
engines' replica address rules, and the monitor/coordinator fed by fake probes."""

from __future__ import annotations

import asyncio
import random
from collections import Counter
from dataclasses import replace

import pytest

from proxy.config import Address, ConfigError, EndpointConfig, FailoverSettings, HealthSettings, parse_config
from proxy.config.model import DEFAULT_PLACEMENT, Locality, Placement
from proxy.engines.mysql.discovery import replica_address as mysql_replica_address
from proxy.engines.postgres.discovery import replica_address as pg_replica_address
from proxy.topology.coordinator import FailoverCoordinator
from proxy.topology.discovery import reconcile
from proxy.topology.failover import FailoverState, step, switchover_target
from proxy.topology.health import build_snapshot
from proxy.topology.lease import Lease
from proxy.topology.model import InstanceState, ProbeResult, TopologySnapshot
from proxy.topology.monitor import TopologyMonitor
from proxy.topology.nearby import nearest, proximity, weighted_least_outstanding
from proxy.topology.promotion import choose_promotion
from proxy.topology.select import choose, targets

A, B, C, D, E = (Address(f"10.0.0.{i}", 5432) for i in range(1, 6))
LISTEN = Address("127.0.0.1", 6432)
HERE = Locality("eu-west-1a", "eu-west-1")


def placed(zone: str = "", region: str = "", tier: int = 1, weight: int = 1, standby: bool = False) -> Placement:
    return Placement(zone, region, tier, weight, standby)


def inst(address: Address, role: str = "replica", state: str = "up", placement: Placement = DEFAULT_PLACEMENT,
         position: int = 100, received: int | None = None) -> InstanceState:
    return InstanceState(address, state=state, role=role, position=position, received=received,  # type: ignore[arg-type]
                         last_check=1.0, last_ok=1.0, placement=placement)


def snapshot(*states: InstanceState) -> TopologySnapshot:
    return build_snapshot("main", states, TopologySnapshot("main"), 0.0)


def endpoint(role: str, **kw: object) -> EndpointConfig:
    return EndpointConfig(name=role, listen=LISTEN, role=role, **kw)  # type: ignore[arg-type]


READER, SPLIT = endpoint("reader"), endpoint("split")
BALANCED = endpoint("reader", cross_zone="balanced")

# A writer in zone a, replicas B (zone a), C (zone b, same region), D (other region).
ZONED = snapshot(inst(A, "primary", placement=placed("eu-west-1a", "eu-west-1")),
                 inst(B, placement=placed("eu-west-1a", "eu-west-1")),
                 inst(C, placement=placed("eu-west-1b", "eu-west-1")),
                 inst(D, placement=placed("us-east-1a", "us-east-1")))


def picks(snap: TopologySnapshot, ep: EndpointConfig, n: int = 400, loads: dict[Address, int] | None = None,
          local: Locality | None = HERE, seed: int = 7) -> Counter[Address | None]:
    rng = random.Random(seed)
    return Counter(choose(snap, ep, "replica", lambda a: (loads or {}).get(a, 0), rng, locality=local)
                   for _ in range(n))


# --------------------------------------------------------------------------- config


BASE = """\
[server]
zone = "eu-west-1a"

[[users]]
name = "app"
password = "app-secret"

[clusters.main]
engine = "postgres"
instances = INSTANCES

[[clusters.main.endpoints]]
name = "reader"
listen = "127.0.0.1:6433"
role = "reader"
"""


def config(instances: str, extra: str = "", base: str = BASE) -> str:
    return base.replace("INSTANCES", instances) + extra


def problems(text: str) -> list[str]:
    with pytest.raises(ConfigError) as info:
        parse_config(text, "f.toml", env={})
    return [line.removeprefix("config error: f.toml: ") for line in info.value.problems]


def test_instance_tables_and_strings_mix_and_server_zone_implies_region() -> None:
    text = config('["10.0.0.1:5432", { address = "10.0.0.2:5432", zone = "eu-west-1b", promotion_tier = 0, '
                  'weight = 3 }, { address = "10.0.0.3:5432", zone = "z9", region = "r", standby = true }]',
                  "\n[clusters.main.failover]\nallow_cross_region = true\n")
    cfg = parse_config(text, "f.toml", env={})
    (main,) = cfg.clusters
    assert main.instances == (A, B, C)
    assert main.placement(A) == Placement()
    assert main.placement(B) == Placement("eu-west-1b", "eu-west-1", 0, 3, False)
    assert main.placement(C) == Placement("z9", "r", 1, 1, True)
    assert (cfg.server.zone, cfg.server.region) == ("eu-west-1a", "eu-west-1")
    assert main.locality == HERE
    assert main.failover.allow_cross_region
    assert main.endpoints[0].cross_zone == "prefer-local"


def test_discovery_settings() -> None:
    cfg = parse_config(config('["10.0.0.1:5432"]\ndiscover = true', '[clusters.main.discovery]\ngrace = "5s"\n'
                                                                  'interval = "500ms"\nport = 5432\npromotion_tier = 7\n'),
                       "f.toml", env={})
    discovery = cfg.clusters[0].discovery
    assert (discovery.enabled, discovery.grace, discovery.interval, discovery.port) == (True, 5.0, 0.5, 5432)
    assert discovery.placement() == Placement(promotion_tier=7, discovered=True)


@pytest.mark.parametrize(("instances", "cluster_keys", "tables", "expected"), [
    ('[{ zone = "a" }]', "", "", "clusters.main.instances[0].address: required key is missing"),
    ('[{ address = "10.0.0.1:5432", promotion_tier = 16 }]', "", "",
     "clusters.main.instances[0].promotion_tier: must be from 0 to 15 (got 16)"),
    ('[{ address = "10.0.0.1:5432", promotion_tier = -1 }]', "", "",
     "clusters.main.instances[0].promotion_tier: must be at least 0 (got -1)"),
    ('[{ address = "10.0.0.1:5432", weight = 0 }]', "", "",
     "clusters.main.instances[0].weight: must be at least 1 (got 0)"),
    ('[{ address = "10.0.0.1:5432", weight = 1001 }]', "", "",
     "clusters.main.instances[0].weight: must be from 1 to 1000 (got 1001)"),
    ('[{ address = "10.0.0.1:5432", standby = "yes" }]', "", "",
     'clusters.main.instances[0].standby: expected true or false, got string "yes"'),
    ('[{ address = "10.0.0.1:5432", zone = "" }]', "", "", "clusters.main.instances[0].zone: must not be empty"),
    ('[{ address = "10.0.0.1:5432", az = "a" }]', "", "", "clusters.main.instances[0].az: unknown key"),
    ('[{ address = "10.0.0.1" }]', "", "",
     'clusters.main.instances[0].address: invalid address "10.0.0.1": expected "host:port"'),
    ('["10.0.0.1:5432", { address = "10.0.0.1:5432" }]', "", "",
     "clusters.main.instances[1]: 10.0.0.1:5432 is listed twice"),
    ("[5432]", "", "",
     'clusters.main.instances[0]: expected a "host:port" string or an instance table, got integer 5432'),
    ('"10.0.0.1:5432"', "", "",
     'clusters.main.instances: expected an array of "host:port" strings or { address = "host:port", ... } tables, '
     'got string "10.0.0.1:5432"'),
    ('["10.0.0.1:5432"]', "", '[clusters.main.discovery]\ngrace = "5s"\n',
     "clusters.main.discovery: replica discovery settings given, but discover is not true"),
    ('["10.0.0.1:5432"]', "discover = true", '[clusters.main.discovery]\ngrace = "1s"\ninterval = "2s"\n',
     "clusters.main.discovery.grace: must be at least the discovery interval (1s < 2s)"),
    ('["10.0.0.1:5432"]', "discover = true", "[clusters.main.discovery]\nport = 70000\n",
     "clusters.main.discovery.port: must be a port number from 1 to 65535 (got 70000)"),
    ('["10.0.0.1:5432"]', "discover = true", "[clusters.main.discovery]\nzone = 3\n",
     "clusters.main.discovery.zone: expected a string, got integer 3"),
    ('["10.0.0.1:5432"]', 'discover = "yes"', "", 'clusters.main.discover: expected true or false, got string "yes"'),
    ('["10.0.0.1:5432"]', "", "[clusters.main.failover]\nallow_cross_region = 1\n",
     "clusters.main.failover.allow_cross_region: expected true or false, got integer 1"),
])
def test_bad_placement_values(instances: str, cluster_keys: str, tables: str, expected: str) -> None:
    text = config(instances + "\n" + cluster_keys, "\n" + tables)
    assert expected in problems(text)


def test_bad_cross_zone_and_standby_in_custom_endpoint() -> None:
    bad_mode = config('["10.0.0.1:5432"]').replace('role = "reader"', 'role = "reader"\ncross_zone = "nearest"')
    assert problems(bad_mode) == [
        'clusters.main.endpoints[0].cross_zone: invalid value "nearest": expected one of prefer-local | balanced']
    writer = config('["10.0.0.1:5432"]').replace('role = "reader"', 'role = "writer"\ncross_zone = "balanced"')
    assert problems(writer) == [
        'clusters.main.endpoints[0].cross_zone: only valid for reader, split and custom endpoints (this one has '
        'role = "writer")']
    custom = config('["10.0.0.1:5432", { address = "10.0.0.2:5432", standby = true }]').replace(
        'role = "reader"', 'role = "custom"\ninstances = ["10.0.0.2:5432"]')
    assert problems(custom) == ["clusters.main.endpoints[0].instances: 10.0.0.2:5432 is a standby (standby = true): "
                                "it never serves reads"]
    server_zone = config('["10.0.0.1:5432"]').replace('zone = "eu-west-1a"', 'zone = 1')
    assert problems(server_zone) == ["server.zone: expected a string, got integer 1"]


# --------------------------------------------------------------------------- reader choice


def test_prefer_local_sends_reads_to_the_proxys_zone_only() -> None:
    assert picks(ZONED, READER) == Counter({B: 400})
    assert picks(ZONED, SPLIT) == Counter({B: 400})


def test_same_region_takes_over_then_any_zone() -> None:
    no_b = snapshot(*(replace(s, state="down") if s.address == B else s for s in ZONED.instances))
    assert picks(no_b, READER) == Counter({C: 400})
    only_d = snapshot(*(replace(s, state="down") if s.address in (B, C) else s for s in ZONED.instances))
    assert picks(only_d, READER) == Counter({D: 400})


def test_balanced_and_zoneless_proxy_use_every_replica() -> None:
    for counts in (picks(ZONED, BALANCED), picks(ZONED, READER, local=None), picks(ZONED, READER, local=Locality())):
        assert set(counts) == {B, C, D}
        assert all(100 <= counts[a] <= 170 for a in (B, C, D)), counts


def test_least_outstanding_within_the_local_zone() -> None:
    two_local = snapshot(*ZONED.instances, inst(E, placement=placed("eu-west-1a", "eu-west-1")))
    assert picks(two_local, READER, loads={B: 2, E: 1, C: 0}) == Counter({E: 400})


def test_weights_share_ties_and_scale_outstanding() -> None:
    snap = snapshot(inst(A, "primary"), inst(B, placement=placed(weight=3)), inst(C))
    rng = random.Random(3)
    counts = Counter(weighted_least_outstanding([B, C], snap, lambda a: 0, rng) for _ in range(4000))
    assert 2800 <= counts[B] <= 3200, counts       # 3:1
    assert weighted_least_outstanding([B, C], snap, {B: 5, C: 2}.__getitem__, rng) == B   # 5/3 < 2/1
    assert weighted_least_outstanding([B, C], snap, {B: 7, C: 2}.__getitem__, rng) == C   # 7/3 > 2/1


def test_standby_never_serves_reads_but_is_probed() -> None:
    snap = snapshot(inst(A, "primary"), inst(B, placement=placed(standby=True)), inst(C))
    assert snap.usable_replicas == (C,)
    assert picks(snap, READER, local=None) == Counter({C: 400})
    only_standby = snapshot(inst(A, "primary"), inst(B, placement=placed(standby=True)))
    assert picks(only_standby, READER, n=10) == Counter({A: 10})     # no usable replica: the writer
    custom_any = endpoint("custom", exclude=(A,), kind="reader")
    assert choose(only_standby, custom_any, "replica", lambda a: 0, random.Random(1)) is None
    assert B not in targets(only_standby, READER)


def test_proximity_and_nearest() -> None:
    assert proximity(HERE, placed("eu-west-1a", "eu-west-1")) == "zone"
    assert proximity(HERE, placed("eu-west-1c", "eu-west-1")) == "region"
    assert proximity(HERE, placed()) == "other"
    assert proximity(Locality(), placed()) == "other"
    assert nearest([C, D], ZONED, HERE) == [C]


# --------------------------------------------------------------------------- promotion order


def test_lowest_tier_wins_over_a_more_advanced_replica_while_within_lag() -> None:
    states = [inst(A, "primary", state="down"), inst(B, placement=placed(tier=1), position=500),
              inst(C, placement=placed(tier=0), position=300)]
    choice = choose_promotion(states)
    assert choice.target == C
    assert [r.address for r in choice.ranking] == [C, B]
    text = choice.explain()
    assert text.startswith(f"chose {C} (order: standby first, then lowest promotion_tier (a replica over "
                           "max_replica_lag ranks with the highest tier present), then most advanced position")
    assert f"1. {C} (tier 0, up, position 300, weight 1); 2. {B} (tier 1, up, position 500, weight 1)" in text


def test_a_lagging_low_tier_replica_loses_to_a_fit_one() -> None:
    states = [inst(B, placement=placed(tier=1), position=500), inst(C, state="lagging", placement=placed(tier=0),
                                                                     position=300)]
    assert choose_promotion(states).target == B
    # Among lagging replicas only the position counts.
    lagging = [inst(B, state="lagging", placement=placed(tier=0), position=300),
               inst(C, state="lagging", placement=placed(tier=5), position=500)]
    assert choose_promotion(lagging).target == C
    # A lagging replica ranks with the highest tier present: more advanced, it still wins...
    ahead = [inst(B, placement=placed(tier=1), position=300), inst(C, state="lagging", placement=placed(tier=0),
                                                                   position=500)]
    choice = choose_promotion(ahead)
    assert choice.target == C
    assert f"1. {C} (tier 0, lagging, ranked as tier 1, position 500, weight 1)" in choice.explain()
    # ... and with no tiers at all the most advanced wins, lagging or not (as before tiers existed).
    assert choose_promotion([inst(B, position=300), inst(C, state="lagging", position=500)]).target == C
    # A lagging standby loses its standby priority too.
    assert choose_promotion([inst(B, placement=placed(tier=3), position=100),
                             inst(C, state="lagging", placement=placed(standby=True), position=100)]).target == B


def test_standby_first_then_position_then_weight_then_order() -> None:
    assert choose_promotion([inst(B, placement=placed(tier=0), position=900),
                             inst(C, placement=placed(tier=15, standby=True), position=100)]).target == C
    assert choose_promotion([inst(B, position=100, received=400), inst(C, position=300)]).target == B
    assert choose_promotion([inst(B), inst(C, placement=placed(weight=2))]).target == C
    assert choose_promotion([inst(B), inst(C)]).target == B
    assert choose_promotion([inst(B, state="down"), inst(C, role="primary")]).blocked == "no healthy replica to promote"


def test_cross_region_only_when_allowed_and_none_in_the_region() -> None:
    home, away = placed("a1", "eu"), placed("b1", "us")
    states = [inst(A, "primary", state="down", placement=home), inst(B, placement=away, position=900),
              inst(C, placement=home, position=100)]
    assert choose_promotion(states, writer_region="eu").target == C      # the region first, despite position
    gone_home = [states[0], states[1], replace(states[2], state="down")]
    blocked = choose_promotion(gone_home, writer_region="eu")
    assert blocked.target is None
    assert blocked.blocked == f"no usable replica in the writer's region eu (other regions: {B} (us); " \
                              "allow_cross_region = false)"
    allowed = choose_promotion(gone_home, writer_region="eu", allow_cross_region=True)
    assert (allowed.target, allowed.cross_region) == (B, True)
    assert "allow_cross_region = true" in allowed.explain()
    unknown = [states[0], inst(B, position=900)]      # a replica of unknown region counts as local
    assert choose_promotion(unknown, writer_region="eu").target == B


def test_failover_step_promotes_by_tier_and_says_why() -> None:
    home = placed("a1", "eu")
    snap = snapshot(inst(A, "primary", state="down", placement=home), inst(B, placement=placed("a1", "eu", 2)),
                    inst(C, placement=placed("b1", "eu", 0), position=50))
    lost = replace(snap.instances[0], failures=3, since=0.0)
    snap = snapshot(lost, *snap.instances[1:])
    state = FailoverState(last_writer=A)
    first = step(state, snap, 1.0, promote=True, promote_after=2.0)
    decision = step(first.state, snap, 3.5, promote=True, promote_after=2.0)
    assert decision.promote == C
    assert decision.why.startswith(f"chose {C} (order: standby first")
    away = snapshot(lost, inst(B, placement=placed("u1", "us", 0)))
    blocked = step(step(state, away, 1.0, promote=True, promote_after=2.0).state, away, 3.5, promote=True,
                   promote_after=2.0)
    assert blocked.promote is None and "allow_cross_region = false" in blocked.blocked
    allowed = step(step(state, away, 1.0, promote=True, promote_after=2.0, allow_cross_region=True).state, away, 3.5,
                   promote=True, promote_after=2.0, allow_cross_region=True)
    assert allowed.promote == B


def test_switchover_without_target_follows_the_tiers() -> None:
    snap = snapshot(inst(A, "primary"), inst(B, placement=placed(tier=3)), inst(C, placement=placed(tier=1)))
    assert switchover_target(snap, None) == (A, C)


# --------------------------------------------------------------------------- discovery


def test_reconcile_adds_reported_replicas_and_drops_them_after_the_grace() -> None:
    configured = {A, B}
    first = reconcile({}, [B, C], configured, A, now=10.0, grace=5.0)
    assert (first.added, first.dropped, first.last_seen) == ((C,), (), {C: 10.0})
    again = reconcile(first.last_seen, [C, D], configured, A, now=12.0, grace=5.0)
    assert (again.added, again.last_seen) == ((D,), {C: 12.0, D: 12.0})
    quiet = reconcile(again.last_seen, [D], configured, A, now=16.0, grace=5.0)
    assert (quiet.added, quiet.dropped) == ((), ())               # C gone for 4 s: not yet
    gone = reconcile(quiet.last_seen, [D], configured, A, now=17.5, grace=5.0)
    assert (gone.dropped, gone.last_seen) == ((C,), {D: 17.5})


def test_reconcile_never_drops_the_writer_nor_touches_configured_ones() -> None:
    seen = {C: 0.0}
    assert reconcile(seen, [], {A}, C, now=100.0, grace=5.0).dropped == ()      # C is the writer now
    assert reconcile(seen, [C], {A, C}, A, now=100.0, grace=5.0).last_seen == {}    # C became configured
    assert reconcile({}, [A], {A}, A, now=1.0, grace=5.0).added == ()


def test_engine_replica_address_rules() -> None:
    assert pg_replica_address("127.0.0.1:5434", "127.0.0.1", 0) == Address("127.0.0.1", 5434)
    assert pg_replica_address("10.9.9.9:5432", "127.0.0.1", 5432) is None   # names a host it did not come from
    assert pg_replica_address("127.0.0.1:5434", None, 5432) is None
    assert pg_replica_address("node2", "10.0.1.7", 5432) == Address("10.0.1.7", 5432)
    assert pg_replica_address("node2", "10.0.1.7", 0) is None
    assert pg_replica_address("walreceiver", None, 5432) is None       # over a Unix socket
    assert mysql_replica_address({"Host": "10.0.1.8", "Port": "3306"}) == Address("10.0.1.8", 3306)
    assert mysql_replica_address({"Host": "::1", "Port": "3307"}) == Address("::1", 3307)
    assert mysql_replica_address({"Host": "", "Port": "3306"}) is None
    assert mysql_replica_address({"Host": "db", "Port": "0"}) is None


# --------------------------------------------------------------------------- monitor and coordinator


class FakeProbe:
    def __init__(self, results: dict[Address, ProbeResult], address: Address) -> None:
        self.results, self.address = results, address

    async def probe(self, timeout: float) -> ProbeResult:
        return self.results[self.address]

    def close(self) -> None:
        pass


class FakeActions:
    """Promotion makes the fake probe of the target report primary at once."""

    def __init__(self, results: dict[Address, ProbeResult], monitor: TopologyMonitor) -> None:
        self.results, self.monitor = results, monitor
        self.promoted: list[Address] = []

    async def promote(self, address: Address, wait_seconds: int) -> bool:
        self.promoted.append(address)
        self.results[address] = ProbeResult(ok=True, position=1000, timeline=2)
        self.monitor.record(address, self.results[address])
        return True

    async def follow(self, replica: Address, primary: Address) -> str:
        return ""

    def describe_position(self, position: int | None) -> str:
        return f"#{position}"

    async def renew_lease(self, primary: Address, holder: str, pid: int) -> list[Lease]:
        return [Lease(holder, pid, 1000.0)]   # this proxy is the only promote-mode one

    async def read_leases(self, instance: Address) -> list[Lease]:
        return []


async def test_coordinator_promotes_the_standby_first_and_logs_the_order() -> None:
    now = [0.0]
    results = {A: ProbeResult(ok=True, position=1000, timeline=1),
               B: ProbeResult(ok=True, in_recovery=True, position=990, receive_position=1000, lag_seconds=0.0),
               C: ProbeResult(ok=True, in_recovery=True, position=900, receive_position=900, lag_seconds=0.0)}
    monitor = TopologyMonitor("main", [A, B, C], HealthSettings(interval=0.01, failure_threshold=1),
                              lambda a, h: FakeProbe(results, a), clock=lambda: now[0],
                              placements={B: placed(tier=0), C: placed(tier=9, standby=True)})
    actions = FakeActions(results, monitor)
    coordinator = FailoverCoordinator(monitor, FailoverSettings(mode="promote", promote_after=1.0), actions,  # type: ignore[arg-type]
                                      clock=lambda: now[0])
    for address in (A, B, C):
        monitor.record(address, results[address])
    assert monitor.snapshot.writer == A and monitor.snapshot.usable_replicas == (B,)
    results[A] = ProbeResult.failed("refused")
    monitor.record(A, results[A])
    now[0] = 2.0
    monitor.record(B, results[B])
    await asyncio.sleep(0.05)
    assert actions.promoted == [C]
    promoting = next(e.text for e in monitor.events if e.text.startswith("failover: promoting"))
    assert f"chose {C} (order: standby first" in promoting
    assert f"1. {C} (standby, up, position #900, weight 1); 2. {B} (tier 0, up, position #1000, weight 1)" in promoting
    coordinator.close()
    monitor.stop()


class RaisingProbe:
    """A probe whose driver raises something unexpected (uvloop: RuntimeError writing to a reset transport)."""

    def __init__(self) -> None:
        self.closed = 0

    async def probe(self, timeout: float) -> ProbeResult:
        raise RuntimeError("unable to perform operation on <TCPTransport closed=True>; the handler is closed")

    def close(self) -> None:
        self.closed += 1


async def test_a_probe_that_raises_counts_as_failed_and_the_loop_goes_on() -> None:
    probe = RaisingProbe()
    monitor = TopologyMonitor("main", [A], HealthSettings(interval=0.01, timeout=0.1, failure_threshold=2),
                              lambda a, h: probe)
    monitor.start()
    try:
        await asyncio.sleep(0.1)
        state = monitor.snapshot.instances[0]
        assert state.state == "down" and state.failures >= 3, state
        assert state.error.startswith("probe error: RuntimeError: unable to perform operation")
        assert probe.closed >= 3
    finally:
        monitor.stop()


def test_reconcile_keeps_a_discovered_replica_probes_find_up_though_the_new_writer_does_not_report_it() -> None:
    # C was discovered under writer A; B is the writer now and does not report C yet (not re-pointed,
    # or C streams from D), but C's probes find it up as a replica.
    seen = {C: 10.0, D: 10.0}
    kept = reconcile(seen, [D], {A, B}, B, now=30.0, grace=5.0, live_replicas=[C, D])
    assert (kept.dropped, kept.last_seen) == ((), {C: 30.0, D: 30.0})
    # Once its probes stop finding it a live replica, its grace runs from its last live sighting.
    later = reconcile(kept.last_seen, [D], {A, B}, B, now=33.0, grace=5.0, live_replicas=[D])
    assert later.dropped == ()
    gone = reconcile(later.last_seen, [D], {A, B}, B, now=35.5, grace=5.0, live_replicas=[D])
    assert (gone.dropped, gone.last_seen) == ((C,), {D: 35.5})
    # A live replica that is not a discovered one is not added by its probes alone.
    assert reconcile({}, [], {A, B}, B, now=1.0, grace=5.0, live_replicas=[C]).last_seen == {}
