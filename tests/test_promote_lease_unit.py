"""Promote leases without servers: which holders are live (lease.py, on the rows' own clock), and the
coordinator refusing to promote when another promote-mode dbproxy's lease is live on the candidate."""

from __future__ import annotations

import asyncio
import logging
import os

import pytest
from test_failover_unit import FAIL, PROMOTE_AFTER, THRESHOLD, B, C, coordinated, replica

import proxy.topology.coordinator as coordinator_module
from proxy.config import (
    Address,
    ClusterConfig,
    EndpointConfig,
    FailoverSettings,
    HealthSettings,
    PoolSettings,
    TlsSettings,
)
from proxy.topology.coordinator import ActionFailed
from proxy.topology.lease import LEASE_WINDOW, Lease, holder_name, live_others, parse_rows

ME = "dbproxy/main"          # the coordinator's holder name when none is given


def test_live_others_judges_on_the_freshest_renewal_not_on_a_clock() -> None:
    mine, other = Lease(ME, 1, 5000.0), Lease("h2/main/x", 2, 4999.2)
    assert live_others([mine, other], ME) == [other]
    # Long after the primary died the rows do not change, and neither does the answer.
    assert live_others([Lease(ME, 1, 10.0), Lease("h2/main/x", 2, 9.0)], ME) == [Lease("h2/main/x", 2, 9.0)]
    stale = Lease("decommissioned/main/x", 3, 5000.0 - LEASE_WINDOW - 0.1)
    assert live_others([mine, other, stale], ME) == [other]
    assert live_others([mine], ME) == [] and live_others([], ME) == []
    # A previous incarnation of this proxy is this proxy.
    assert live_others([Lease(ME, 99, 5000.0), mine], ME) == []


def test_parse_rows_skips_what_is_not_a_lease() -> None:
    assert parse_rows([("a", "12", "1700000000.25"), ("b", None, "1"), ("c", "x", "1"), ("d", "1")]) == [
        Lease("a", 12, 1700000000.25)]


def test_holder_name_is_host_cluster_and_first_endpoint() -> None:
    endpoint = EndpointConfig("writer", Address("127.0.0.1", 6432), "writer")
    cluster = ClusterConfig("main", "postgres", (Address("h", 5432),), "trust", TlsSettings(), TlsSettings(),
                            HealthSettings(), FailoverSettings(), PoolSettings(), (endpoint,))
    assert holder_name(cluster, "db-proxy-1") == "db-proxy-1/main/127.0.0.1:6432"


def kill_primary(monitor, clock) -> None:  # type: ignore[no-untyped-def]
    for _ in range(THRESHOLD):
        monitor.record(Address("10.0.0.1", 5432), FAIL)
    clock.now += PROMOTE_AFTER
    monitor.record(B, replica(900))


async def test_refuses_to_promote_while_another_promote_mode_lease_is_live(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, "dbproxy")
    monitor, actions, coordinator, clock = coordinated()
    actions.leases = [Lease(ME, 1, 1000.0), Lease("other-host/main/10.1.1.1:6432", 7, 999.5)]
    kill_primary(monitor, clock)
    await asyncio.sleep(0.05)
    assert actions.calls == []                       # no promotion
    assert monitor.snapshot.writer is None
    refusal = next(e.text for e in monitor.events if "refusing to promote" in e.text)
    assert f"refusing to promote {C}" in refusal and "other-host/main/10.1.1.1:6432 (pid 7)" in refusal
    assert "follow or patroni" in refusal
    assert any(r.levelno == logging.ERROR and "refusing to promote" in r.getMessage() for r in caplog.records)
    assert monitor.metrics is not None
    assert monitor.metrics.registry.get_sample_value("dbproxy_failover_promotions_refused_total",
                                                     {"cluster": "main"}) == 1
    # Not again in this incident, however long it lasts.
    for _ in range(5):
        clock.now += PROMOTE_AFTER * 3
        monitor.record(B, replica(900))
        await asyncio.sleep(0)
    assert actions.calls == []
    assert monitor.metrics.registry.get_sample_value("dbproxy_failover_promotions_refused_total",
                                                     {"cluster": "main"}) == 1


async def test_a_stale_lease_of_another_proxy_does_not_block_promotion() -> None:
    monitor, actions, coordinator, clock = coordinated()
    actions.leases = [Lease(ME, 1, 1000.0), Lease("gone/main/x", 7, 1000.0 - LEASE_WINDOW - 1)]
    kill_primary(monitor, clock)
    await asyncio.sleep(0.05)
    assert actions.calls[0] == f"promote {C}" and monitor.snapshot.writer == C


async def test_unreadable_leases_delay_the_promotion_until_they_can_be_read() -> None:
    monitor, actions, coordinator, clock = coordinated()
    actions.fail["read_leases"] = ActionFailed("connection refused", harmless=True)
    kill_primary(monitor, clock)
    await asyncio.sleep(0.05)
    assert actions.calls == []
    assert any("cannot read the promote leases" in e.text for e in monitor.events)
    del actions.fail["read_leases"]
    clock.now += PROMOTE_AFTER
    monitor.record(B, replica(900))
    await asyncio.sleep(0.05)
    assert actions.calls[0] == f"promote {C}"


async def test_leases_the_health_user_may_not_read_do_not_block_promotion() -> None:
    monitor, actions, coordinator, clock = coordinated()
    actions.leases_unreadable = True
    kill_primary(monitor, clock)
    await asyncio.sleep(0.05)
    assert actions.calls[0] == f"promote {C}"
    assert any("may not read the promote leases" in e.text for e in monitor.events)


async def test_the_lease_is_renewed_on_the_writer_and_another_holder_is_reported() -> None:
    monitor, actions, coordinator, clock = coordinated()
    actions.leases = [Lease("other-host/main/x", 7, 1000.5)]
    coordinator.start()
    try:
        await asyncio.sleep(0.05)
        assert actions.renewals == [f"10.0.0.1:5432 {ME}"]
        assert [lease.holder for lease in coordinator.lease_others] == ["other-host/main/x"]
        assert any("another dbproxy in promote mode watches this cluster: other-host/main/x (pid 7)" in e.text
                   for e in monitor.events)
    finally:
        coordinator.close()
    # Follow mode holds no lease.
    follow_monitor, follow_actions, follow, _ = coordinated(mode="follow")
    follow.start()
    await asyncio.sleep(0.05)
    follow.close()
    assert follow_actions.renewals == []


def test_a_row_of_this_host_and_pid_under_an_old_name_is_this_proxys_own() -> None:
    # A reload changed the first endpoint's listen address: the holder was renamed, the old row is still
    # live in the table with this process's pid.
    old, new = Lease("h1/main/127.0.0.1:6432", 4242, 5000.0), Lease("h1/main/127.0.0.1:7432", 4242, 5000.5)
    assert live_others([old, new], "h1/main/127.0.0.1:7432", 4242) == []
    # Without the pid (or with another pid, or on another host) it is another holder.
    assert live_others([old, new], "h1/main/127.0.0.1:7432") == [old]
    assert live_others([old, new], "h1/main/127.0.0.1:7432", 4243) == [old]
    elsewhere = Lease("h2/main/127.0.0.1:6432", 4242, 5000.0)
    assert live_others([elsewhere, new], "h1/main/127.0.0.1:7432", 4242) == [elsewhere]


async def test_the_proxys_own_row_under_an_old_name_does_not_refuse_its_promotion() -> None:
    monitor, actions, coordinator, clock = coordinated()
    actions.leases = [Lease(ME, 1, 1000.0), Lease("dbproxy/main/old-listen", os.getpid(), 999.5)]
    kill_primary(monitor, clock)
    await asyncio.sleep(0.05)
    assert actions.calls[0] == f"promote {C}" and monitor.snapshot.writer == C


async def test_an_unexpected_renewal_error_is_logged_and_the_renewal_goes_on(
        monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, "dbproxy")
    monkeypatch.setattr(coordinator_module, "LEASE_RENEW", 0.01)
    monitor, actions, coordinator, clock = coordinated()
    real_renew = actions.renew_lease
    failures = [RuntimeError("driver bug")]

    async def renew_once_broken(primary: Address, holder: str, pid: int) -> list[Lease]:
        if failures:
            actions.renewals.append("failed")
            raise failures.pop()
        return await real_renew(primary, holder, pid)

    monkeypatch.setattr(actions, "renew_lease", renew_once_broken)
    coordinator.start()
    try:
        for _ in range(100):
            await asyncio.sleep(0.01)
            if len(actions.renewals) >= 3:
                break
        assert actions.renewals[:3] == ["failed", f"10.0.0.1:5432 {ME}", f"10.0.0.1:5432 {ME}"]
        assert any(r.levelno == logging.ERROR and "renewing the promote lease" in r.getMessage()
                   and r.exc_info and isinstance(r.exc_info[1], RuntimeError) for r in caplog.records)
    finally:
        coordinator.close()


async def test_a_background_task_that_fails_is_logged(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, "dbproxy")
    monitor, actions, coordinator, clock = coordinated()

    async def broken() -> None:
        raise RuntimeError("boom in the background")

    coordinator._spawn(broken())
    await asyncio.sleep(0.01)
    assert any(r.levelno == logging.ERROR and r.exc_info and str(r.exc_info[1]) == "boom in the background"
               for r in caplog.records)
    coordinator.close()
