"""Carrying out failover for one cluster: automatic promotion (promote mode) and planned switchover.

Decisions come from failover.py (pure) and engine work from an adapter (pg_failover.py); this
module is the asyncio side. It watches every snapshot the monitor publishes, promotes when the
policy says so, re-points the remaining replicas, and makes the monitor probe the new primary at
once so the writer moves without waiting for a probe interval. Each step is logged with a UTC
timestamp and kept in the monitor's events (/status "role_changes"):

    failover: detected ...        the cluster lost its writer (an incident begins)
    failover: promoting ...       promote mode decided; then "promoted" / "promotion failed"
    failover: writer resumed ...  a writer is back (the incident ends), with the time it took
    switchover: ...               the steps of a planned switchover (admin FAILOVER)

Counting failovers (dbproxy_failovers) and retiring the pooled connections of both instances
whose role changed happen on every writer change, in the monitor and the cluster.

In promote mode the coordinator also keeps this proxy's promote lease on the primary and, before
promoting, refuses when another promote-mode dbproxy's lease is live on the candidate (lease.py):

    failover: another dbproxy in promote mode watches ...   seen while renewing (the primary is up)
    failover: refusing to promote ...                        the refusal (dbproxy_failover_promotions_refused)
"""

from __future__ import annotations

import asyncio
import logging
import math
import os
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import Any, Protocol

from ..config import Address, FailoverSettings
from .failover import FailoverState, Incident, SwitchoverRefused, promotion_failed, step, switchover_target
from .lease import LEASE_RENEW, Lease, describe, live_others
from .model import TopologySnapshot
from .monitor import TopologyMonitor

log = logging.getLogger("dbproxy.failover")

PROMOTE_WAIT_SECONDS = 10       # pg_promote(wait_seconds => ...)
WRITER_WAIT = 5.0               # how long to keep probing a promoted instance until it is the writer
SWITCHOVER_DRAIN = 10.0         # how long a switchover waits for running transactions on the writer
SWITCHOVER_CATCH_UP = 10.0      # how long it waits for the target to replay the old primary's WAL
FAST_PROBE_PERIOD = 0.01


class ActionFailed(Exception):
    """An engine action failed. harmless: it surely changed nothing (no connection, or an ERROR)."""

    def __init__(self, message: str, harmless: bool = False) -> None:
        super().__init__(message)
        self.message = message
        self.harmless = harmless


class FailoverActions(Protocol):
    """What an engine adapter does for failover (pg_failover.PgFailoverActions); raises ActionFailed."""

    async def promote(self, address: Address, wait_seconds: int) -> bool: ...

    async def follow(self, replica: Address, primary: Address) -> str: ...

    async def rejoin(self, old_primary: Address, primary: Address) -> str:
        """After a switchover: make the old (read-only) primary a replica of the new one where the engine
        can; returns the note for the log and the result (what became of it, what the operator must do)."""

    async def stop_writes(self, primary: Address) -> int: ...

    async def allow_writes(self, primary: Address) -> None: ...

    async def wait_replayed(self, replica: Address, position: int, timeout: float) -> bool: ...

    def describe_position(self, position: int | None) -> str: ...

    async def missing_privileges(self, address: Address) -> list[str]:
        """What the health user lacks on `address` to promote, re-point and switch over (empty: all there)."""

    def rebuild_advice(self, old_primary: Address, primary: Address) -> str:
        """What the operator must do with a primary that crashed and was replaced (said in the log)."""

    async def renew_lease(self, primary: Address, holder: str, pid: int) -> list[Lease]:
        """Upsert this proxy's promote lease on the primary; every lease found there (lease.py)."""

    async def read_leases(self, instance: Address) -> list[Lease] | None:
        """The promote leases as replicated to `instance` (empty when there are none; None when the health
        user may not read them)."""


class Traffic(Protocol):
    """The cluster's side of a switchover: hold new transactions, count and cut connections."""

    @property
    def paused(self) -> bool: ...

    def pause(self) -> None: ...

    def resume(self) -> None: ...

    def in_flight(self, instance: Address) -> int: ...

    def close_pinned(self, instance: Address, reason: str) -> int: ...


@dataclass(frozen=True)
class SwitchoverResult:
    """What a planned switchover did; times in milliseconds, `duration_ms` = time paused."""

    cluster: str
    old_writer: Address
    new_writer: Address
    duration_ms: float
    drain_ms: float
    catch_up_ms: float
    repointed: tuple[Address, ...]
    old_writer_state: str
    note: str


class FailoverCoordinator:
    """Automatic promotion and planned switchover for one cluster; see the module docstring."""

    def __init__(self, monitor: TopologyMonitor, settings: FailoverSettings, actions: FailoverActions, *,
                 holder: str = "", clock: Callable[[], float] = time.monotonic,
                 wall_clock: Callable[[], float] = time.time) -> None:
        self.monitor = monitor
        self.settings = settings
        self.actions = actions
        self.state = FailoverState()
        self.busy = asyncio.Lock()        # one promotion or switchover at a time
        self._clock = clock
        self._wall_clock = wall_clock
        self._blocked = ""
        # Promote mode whose health user cannot promote: said loudly (log, /status, /readyz, a metric).
        self.privilege_problem = ""
        self._tasks: set[asyncio.Task[Any]] = set()
        # Promote mode: this proxy's lease (lease.py) and the other live holders seen while renewing it.
        self.holder = holder or f"dbproxy/{monitor.cluster}"
        self.lease_others: list[Lease] = []
        self._lease_said = ""
        monitor.snapshot_listeners.append(self.observe)

    @property
    def cluster(self) -> str:
        return self.monitor.cluster

    def start(self) -> None:
        """Background work: the privilege check, and the promote lease renewals (needs a running loop)."""
        self.check_privileges_soon()
        self._spawn(self._keep_lease())

    def close(self) -> None:
        for task in self._tasks:
            task.cancel()

    # ---- can it act at all? ---------------------------------------------------------------------

    async def check_privileges(self) -> str:
        """Promote mode: ask an instance (the writer, else the first reachable) whether the health user
        may promote and re-point; sets and returns `privilege_problem` ("" when fine or not promote mode)."""
        problem = ""
        snapshot = self.monitor.snapshot
        target = snapshot.writer or next((s.address for s in snapshot.instances if s.reachable), None)
        if self.settings.mode == "promote" and target is not None:
            try:
                missing = await self.actions.missing_privileges(target)
            except ActionFailed as exc:
                missing, problem = [], f"could not check the health user's privileges on {target}: {exc.message}"
            if missing:
                problem = (f"promote mode, but the health user cannot promote or re-point on {target}: "
                           f"missing {', '.join(missing)} (docs/failover.md)")
        if problem and problem != self.privilege_problem:
            self._note(f"failover: {problem}", logging.ERROR)
        elif self.privilege_problem and not problem:
            self._note("failover: the health user's privileges are sufficient now")
        self.privilege_problem = problem
        return problem

    def check_privileges_soon(self) -> None:
        """`check_privileges` in the background (at start and after every reload)."""

        async def check() -> None:
            await self.check_privileges()

        self._spawn(check())

    # ---- the promote lease ----------------------------------------------------------------------

    async def _keep_lease(self) -> None:
        """Promote mode: renew this proxy's lease on the writer every LEASE_RENEW seconds."""
        while True:
            writer = self.monitor.snapshot.writer
            if self.settings.mode == "promote" and writer is not None:
                try:
                    leases = await self.actions.renew_lease(writer, self.holder, os.getpid())
                except ActionFailed as exc:
                    self._lease_state(f"failover: cannot renew this proxy's promote lease on {writer}: "
                                      f"{exc.message} (another dbproxy cannot know that this one runs promote mode)",
                                      logging.WARNING)
                except Exception:
                    # A bug or an unexpected driver error must not end the renewal: other promote-mode
                    # proxies would stop seeing this one, and both could promote.
                    log.exception("failover: renewing the promote lease on %s failed; retrying", writer)
                else:
                    self.lease_others = live_others(leases, self.holder, os.getpid())
                    self._lease_state(
                        f"failover: another dbproxy in promote mode watches this cluster: "
                        f"{describe(self.lease_others)}; promotion is refused while its lease is live (a fleet "
                        "uses failover mode follow or patroni)" if self.lease_others else "", logging.ERROR)
            await asyncio.sleep(LEASE_RENEW)

    def _lease_state(self, text: str, level: int) -> None:
        if text == self._lease_said:
            return
        if text:
            self._note(text, level)
        else:
            self._note(f"failover: promote lease held as {self.holder}; no other promote-mode dbproxy is live")
        self._lease_said = text

    async def _lease_refusal(self, target: Address) -> bool:
        """Before promoting: read the leases on the candidate; True (logged, counted) when promotion must not
        happen now: another promote-mode holder is live (not in this incident), or the leases are unreadable."""
        try:
            leases = await self.actions.read_leases(target)
        except ActionFailed as exc:
            self.state = promotion_failed(self.state, self._clock(), harmless=True,
                                          retry_after=self.settings.promote_after)
            self._note(f"failover: not promoting {target}: cannot read the promote leases there ({exc.message}); "
                       "it may be tried again", logging.ERROR)
            return True
        if leases is None:
            self._note(f"failover: the health user may not read the promote leases on {target}: promoting "
                       "without knowing whether another promote-mode dbproxy watches this cluster", logging.WARNING)
            return False
        others = live_others(leases, self.holder, os.getpid())
        if not others:
            return False
        self.state = promotion_failed(self.state, self._clock(), harmless=True, retry_after=math.inf)
        self._note(f"failover: refusing to promote {target}: another dbproxy in promote mode watches cluster "
                   f"{self.cluster} ({describe(others)}, lease live on {target}); no promotion in this incident: "
                   "promote a replica by hand, and run fleets in failover mode follow or patroni", logging.ERROR)
        metrics = self.monitor.metrics
        if metrics is not None:
            metrics.promotions_refused.labels(self.cluster).inc()
        return True

    # ---- automatic failover ---------------------------------------------------------------------

    def observe(self, snapshot: TopologySnapshot) -> None:
        """Called with every published snapshot: feed the policy, log, start a promotion."""
        now = self._clock()
        promote = self.settings.mode == "promote" and not self.busy.locked()
        decision = step(self.state, snapshot, now, promote=promote, promote_after=self.settings.promote_after,
                        allow_cross_region=self.settings.allow_cross_region,
                        describe=self.actions.describe_position)
        self.state = decision.state
        incident = decision.state.incident
        if decision.began and incident is not None:
            self._detected(incident)
        if decision.ended is not None:
            self._resumed(decision.ended, snapshot.writer, now)
        if promote and decision.blocked != self._blocked:
            if decision.blocked:
                self._note(f"failover: not promoting yet: {decision.blocked}", logging.WARNING)
            self._blocked = decision.blocked
        if decision.promote is not None and incident is not None:
            self._spawn(self._promote(decision.promote, incident, decision.why))

    def _detected(self, incident: Incident) -> None:
        lost = incident.lost_writer or "none known"
        if self.settings.mode == "promote":
            plan = f"promote mode: a replica (standby, tier, position) is promoted once it has been down for " \
                   f"{self.settings.promote_after:g}s"
        elif self.settings.mode == "patroni":
            plan = "patroni mode: waiting for Patroni's leader to report primary"
        else:
            plan = "follow mode: waiting for an instance to report primary"
        self._note(f"failover: detected at {self._iso()}: cluster has no writer (was {lost}); {plan}",
                   logging.WARNING)

    def _resumed(self, incident: Incident, writer: Address | None, now: float) -> None:
        took = f"{(now - incident.began) * 1000:.0f} ms after detection"
        if incident.promoted is not None and incident.promoted_at is not None:
            took += f", {(now - incident.promoted_at) * 1000:.0f} ms after the promotion of {incident.promoted}"
        self._note(f"failover: writer resumed at {self._iso()} on {writer} ({took})")
        self._blocked = ""

    async def _promote(self, target: Address, incident: Incident, why: str = "") -> None:
        async with self.busy:
            snapshot = self.monitor.snapshot
            if self.state.incident is not incident or snapshot.writer is not None:
                return   # a switchover ran first, or a writer came back meanwhile
            if await self._lease_refusal(target):
                return
            state = snapshot.get(target)
            position = state.position if state is not None else None
            lost = snapshot.get(incident.lost_writer) if incident.lost_writer is not None else None
            down_for = f", {incident.lost_writer} down for {(self._clock() - lost.since) * 1000:.0f} ms" \
                if lost is not None else ""
            self._note(f"failover: promoting {target} at {self._iso()} (replay position "
                       f"{self.actions.describe_position(position)}{down_for})"
                       + (f"; {why}" if why else ""), logging.WARNING)
            began = self._clock()
            exclude = {target} | ({incident.lost_writer} if incident.lost_writer is not None else set())
            try:
                done, repointed = await self._promote_and_repoint(target, exclude)
            except ActionFailed as exc:
                self.state = promotion_failed(self.state, self._clock(), harmless=exc.harmless,
                                              retry_after=self.settings.promote_after)
                self._note(f"failover: promotion of {target} failed: {exc.message}"
                           + ("; it may be tried again" if exc.harmless else
                              "; no further promotion in this incident (the operator must act)"), logging.ERROR)
                return
            if not done:
                return
            self._note(f"failover: done {(self._clock() - began) * 1000:.0f} ms after the promotion began: writer "
                       f"{self.monitor.snapshot.writer}, replicas re-pointed: "
                       f"{', '.join(map(str, repointed)) or 'none'}")
            if incident.lost_writer is not None:
                self._note(f"failover: {self.actions.rebuild_advice(incident.lost_writer, target)}; if it comes "
                           "back as a primary it is fenced")

    async def _promote_and_repoint(self, target: Address, exclude: set[Address]) -> tuple[bool, tuple[Address, ...]]:
        """Promote `target` and re-point the other replicas at it; (promoted, re-pointed replicas).

        Meanwhile the target is probed every few milliseconds, so the writer moves as soon as it
        reports primary, and re-pointing starts then (or when the promotion call returns, if that
        comes first): a synchronous primary acknowledges no commit before a replica streams from it.
        """
        loop = asyncio.get_running_loop()
        began = self._clock()
        promotion = loop.create_task(self.actions.promote(target, PROMOTE_WAIT_SECONDS))
        watcher = loop.create_task(self._await_writer(target, PROMOTE_WAIT_SECONDS + WRITER_WAIT))
        try:
            await asyncio.wait((promotion, watcher), return_when=asyncio.FIRST_COMPLETED)
            seen_first = watcher.done() and watcher.result()
            if not seen_first and not await promotion:    # raises ActionFailed
                self._note(f"failover: {target} still promoting after {PROMOTE_WAIT_SECONDS}s; it becomes "
                           "the writer when it reports primary", logging.ERROR)
                return False, ()
            repointing = loop.create_task(self._repoint(target, exclude))
            try:
                await promotion
            except ActionFailed as exc:
                if not seen_first:
                    raise
                self._note(f"failover: the promotion call failed ({exc.message}), but {target} reports primary",
                           logging.WARNING)
            self._note(f"failover: promoted {target} at {self._iso()} in {(self._clock() - began) * 1000:.0f} ms")
            seen, repointed = await watcher, await repointing
        finally:
            for task in (promotion, watcher):
                task.cancel()
        if not seen:
            self._note(f"failover: {target} was promoted but is not the writer after {WRITER_WAIT:g}s",
                       logging.ERROR)
        return True, repointed

    async def _await_writer(self, target: Address, timeout: float) -> bool:
        """Probe `target` every few milliseconds until the monitor makes it the writer (bounded)."""
        deadline = self._clock() + timeout
        while self.monitor.snapshot.writer != target:
            if self._clock() >= deadline:
                return False
            self.monitor.probe_now(target, reconnect=False)
            await asyncio.sleep(FAST_PROBE_PERIOD)
        return True

    async def _repoint(self, primary: Address, exclude: set[Address]) -> tuple[Address, ...]:
        """Point every reachable replica except `exclude` at the new primary, concurrently."""
        snapshot = self.monitor.snapshot
        replicas = [s.address for s in snapshot.instances
                    if s.address not in exclude and s.role == "replica" and s.reachable]
        missed = [s.address for s in snapshot.instances
                  if s.address not in exclude and s.address not in replicas]
        results = await asyncio.gather(*(self.actions.follow(r, primary) for r in replicas), return_exceptions=True)
        done: list[Address] = []
        for replica, result in zip(replicas, results, strict=True):
            if isinstance(result, BaseException):
                self._note(f"failover: could not re-point {replica} at {primary}: {result}", logging.ERROR)
            else:
                done.append(replica)
                self._note(f"failover: re-pointed {replica} at {primary}" + (f" ({result})" if result else ""),
                           logging.WARNING if result else logging.INFO)
        for address in missed:
            self._note(f"failover: {address} was not re-pointed (not a reachable replica); point it at "
                       f"{primary} by hand", logging.WARNING)
        return tuple(done)

    # ---- planned switchover ---------------------------------------------------------------------

    async def switchover(self, requested: Address | None, traffic: Traffic, *,
                         drain_timeout: float = SWITCHOVER_DRAIN,
                         catch_up_timeout: float = SWITCHOVER_CATCH_UP) -> SwitchoverResult:
        """Move the writer to `requested` (or the most advanced replica) without failing transactions.

        Pause new transactions, wait (bounded) for those running on the writer, stop writes on
        it, wait until the target has replayed its last WAL position, promote the target,
        re-point the other replicas, wait until the monitor has moved the writer, resume. Then the
        engine rejoins the old primary as a replica where it can (MySQL); otherwise it stays up,
        read-only and fenced (PostgreSQL cannot demote online: the operator rebuilds it with
        pg_rewind). Raises SwitchoverRefused or ActionFailed.
        """
        if self.busy.locked():
            raise SwitchoverRefused(f"cluster {self.cluster}: a promotion or switchover is already in progress")
        async with self.busy:
            old, new = switchover_target(self.monitor.snapshot, requested)
            began = self._clock()
            self._note(f"switchover: from {old} to {new} at {self._iso()}: pausing new transactions")
            paused_before = traffic.paused      # by the operator (admin PAUSE): stays paused afterwards
            traffic.pause()
            try:
                drained, caught_up, repointed = await self._switch(old, new, traffic, drain_timeout,
                                                                   catch_up_timeout)
            finally:
                if not paused_before:
                    traffic.resume()
            ended = self._clock()
            note = await self._rejoin(old, new)   # traffic already runs on the new writer
        state = self.monitor.snapshot.get(old)
        old_state = state.state if state is not None else "removed"
        self._note(f"switchover: done at {self._iso()}: writer {old} -> {new}, paused "
                   f"{(ended - began) * 1000:.0f} ms; {note}")
        return SwitchoverResult(self.cluster, old, new, round((ended - began) * 1000, 1),
                                round((drained - began) * 1000, 1), round((caught_up - drained) * 1000, 1),
                                repointed, old_state, note)

    async def _switch(self, old: Address, new: Address, traffic: Traffic, drain_timeout: float,
                      catch_up_timeout: float) -> tuple[float, float, tuple[Address, ...]]:
        deadline = self._clock() + drain_timeout
        while (running := traffic.in_flight(old)) and self._clock() < deadline:
            await asyncio.sleep(0.005)
        if running:
            raise SwitchoverRefused(f"{running} transaction(s) still running on {old} after {drain_timeout:g}s; "
                                    "switchover cancelled, nothing changed")
        drained = self._clock()
        try:
            position = await self.actions.stop_writes(old)
        except ActionFailed:
            await self._allow_writes_again(old)
            raise
        self._note(f"switchover: {old} is read-only at position {self.actions.describe_position(position)}; "
                   f"waiting for {new} to replay it")
        try:
            if not await self.actions.wait_replayed(new, position, catch_up_timeout):
                raise SwitchoverRefused(f"{new} did not replay {old}'s WAL within {catch_up_timeout:g}s; "
                                        "switchover cancelled, writes allowed again on the old primary")
        except (ActionFailed, SwitchoverRefused):
            await self._allow_writes_again(old)
            raise
        caught_up = self._clock()
        try:
            done, repointed = await self._promote_and_repoint(new, {old, new})
        except ActionFailed as exc:
            if exc.harmless:
                await self._allow_writes_again(old)
            raise
        if not done:
            raise ActionFailed(f"{new} did not finish promoting within {PROMOTE_WAIT_SECONDS}s; {old} stays "
                               "read-only; check both instances")
        cut = traffic.close_pinned(old, f"switchover: {old} is no longer the primary")
        if cut:
            self._note(f"switchover: closed {cut} pinned/session server connection(s) to {old}", logging.WARNING)
        return drained, caught_up, repointed

    async def _rejoin(self, old: Address, new: Address) -> str:
        """What became of the switchover's old primary (the engine's rejoin, or why not)."""
        try:
            return await self.actions.rejoin(old, new)
        except ActionFailed as exc:
            self._note(f"switchover: could not make {old} a replica of {new}: {exc.message}", logging.ERROR)
            return f"{old} is read-only and fenced: rejoining it as a replica failed ({exc.message})"

    async def _allow_writes_again(self, old: Address) -> None:
        try:
            await self.actions.allow_writes(old)
        except ActionFailed as exc:
            self._note(f"switchover: could not make {old} writable again: {exc.message}", logging.ERROR)

    # ---- helpers --------------------------------------------------------------------------------

    def _note(self, text: str, level: int = logging.INFO) -> None:
        self.monitor.note(text, level)

    def _iso(self) -> str:
        wall = self._wall_clock()
        return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(wall)) + f".{int(wall * 1000) % 1000:03d}Z"

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        task.add_done_callback(_log_failure)


def _log_failure(task: asyncio.Task[None]) -> None:
    """Done-callback of background tasks: an exception that ended one is logged, not lost."""
    if not task.cancelled() and (exc := task.exception()) is not None:
        log.error("failover: background task %s failed", task.get_coro(), exc_info=exc)
