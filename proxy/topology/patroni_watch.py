"""Following Patroni (failover mode "patroni"): poll GET /cluster, hand the monitor Patroni's say, and
carry out admin FAILOVER as POST /switchover. dbproxy itself never promotes in this mode.

Every health.interval the watcher asks the members' REST APIs in turn (starting with the last one
that answered) for GET /cluster; the first 200 answer is parsed (patroni.py) and applied
(TopologyMonitor.set_authority). When no member answers, Patroni's last answer stands and that is
logged once. When Patroni names a new leader, the watcher probes it every few milliseconds until the
probe finds it primary (bounded), so the writer endpoint moves as soon as the promotion is done.

HTTP is httpx (TLS verified against patroni_ca or the system's CAs, basic auth from patroni_user /
patroni_password); every request is bounded by health.timeout (POST /switchover: SWITCHOVER_TIMEOUT,
Patroni answers only when its switchover is done).
"""

from __future__ import annotations

import asyncio
import logging
import ssl
import time
from collections.abc import Callable
from typing import Any

import httpx

from ..config import Address, FailoverSettings, HealthSettings
from .coordinator import ActionFailed, SwitchoverResult, Traffic
from .failover import SwitchoverRefused
from .monitor import TopologyMonitor
from .patroni import (
    PatroniCluster,
    PatroniError,
    PatroniMember,
    authority,
    describe,
    parse_cluster,
    read_switchover_answer,
    switchover_request,
    unmatched,
)

SWITCHOVER_TIMEOUT = 60.0     # Patroni's POST /switchover waits for the new leader (about 10-20 s at most)
WRITER_WAIT = 30.0            # after Patroni's answer: until the probe finds the new leader primary
FAST_PROBE_PERIOD = 0.02
DRAIN_TIMEOUT = 10.0


class PatroniUnreachable(Exception):
    """No member's REST API answered; the message lists why, per URL."""


class PatroniOutcomeUnknown(PatroniUnreachable):
    """A POST was sent (or may have been) but no answer came: it may have taken effect."""


class PatroniApi:
    """The members' REST APIs over HTTP, each tried in turn, starting with the last one that answered."""

    def __init__(self, settings: FailoverSettings, timeout: float) -> None:
        self.urls = list(settings.patroni)
        self.timeout = timeout
        auth = (settings.patroni_user, settings.patroni_password or "") if settings.patroni_user else None
        verify: ssl.SSLContext | bool = True
        if settings.patroni_ca:
            verify = ssl.create_default_context(cafile=settings.patroni_ca)
        self._client = httpx.AsyncClient(auth=auth, verify=verify, timeout=timeout, follow_redirects=False,
                                         headers={"User-Agent": "dbproxy"})
        self._first = 0

    async def request(self, method: str, path: str, body: bytes | None = None,
                      timeout: float | None = None) -> tuple[str, int, bytes]:
        """(base URL, HTTP status, body) of the first member that answers at all; PatroniUnreachable."""
        errors: list[str] = []
        for step in range(len(self.urls)):
            index = (self._first + step) % len(self.urls)
            url = self.urls[index]
            try:
                answer = await self._client.request(
                    method, url + path, content=body, timeout=timeout or self.timeout,
                    headers={"Content-Type": "application/json"} if body is not None else None)
            except httpx.HTTPError as exc:
                errors.append(f"{url}: {_describe(exc)}")
                if method != "GET" and not isinstance(exc, (httpx.ConnectError, httpx.ConnectTimeout)):
                    # Sent, or maybe sent (a read timeout, a dropped connection): sending it to another
                    # member could act twice (two switchovers).
                    raise PatroniOutcomeUnknown("; ".join(errors)) from None
                continue
            if method == "GET" and answer.status_code != 200:
                errors.append(f"{url}: HTTP {answer.status_code}")   # e.g. a member cut off from the DCS
                continue
            self._first = index
            return url, answer.status_code, answer.content
        raise PatroniUnreachable("; ".join(errors))

    async def close(self) -> None:
        await self._client.aclose()


def _describe(exc: httpx.HTTPError) -> str:
    if isinstance(exc, httpx.TimeoutException):
        return "timed out"
    cause = exc.__context__ or exc.__cause__
    text = str(exc) or type(exc).__name__
    if isinstance(cause, ssl.SSLError):
        text = f"TLS: {cause.reason or cause}"
    return text


class PatroniWatcher:
    """Polls Patroni for one cluster and applies its answers to the monitor; see the module docstring."""

    def __init__(self, monitor: TopologyMonitor, settings: FailoverSettings, health: HealthSettings, *,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.monitor = monitor
        self.settings = settings
        self.interval = health.interval
        self.api = PatroniApi(settings, health.timeout)
        self.view: PatroniCluster | None = None      # Patroni's last answer
        self.answered_at: float | None = None
        self.answered_by = ""
        self.problem = ""                              # why the last poll failed ("" when it worked)
        self._clock = clock
        self._unmatched: list[str] = []
        self._answered = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._chase: asyncio.Task[None] | None = None
        self._closing: asyncio.Task[None] | None = None
        # Until Patroni first answers, no instance may be the writer (a watcher replaced by a reload
        # keeps its predecessor's last answer meanwhile).
        if monitor.authority is None:
            monitor.set_authority(authority(PatroniCluster(()), ()))

    @property
    def cluster(self) -> str:
        return self.monitor.cluster

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def first_answer(self, timeout: float) -> None:
        """Wait (bounded) for Patroni's first answer, so routing starts informed."""
        try:
            await asyncio.wait_for(self._answered.wait(), timeout)
        except TimeoutError:
            pass

    def stop(self) -> None:
        """Stop polling; the HTTP client closes in the background."""
        for task in (self._task, self._chase):
            if task is not None:
                task.cancel()
        try:
            self._closing = asyncio.get_running_loop().create_task(self.api.close())
        except RuntimeError:    # no loop any more: nothing is open either
            pass

    def status(self) -> dict[str, Any]:
        """For /status: who answered when, the problem, Patroni's members."""
        view = self.view
        return {
            "answered_by": self.answered_by or None,
            "answered_s_ago": None if self.answered_at is None else round(self._clock() - self.answered_at, 3),
            "problem": self.problem,
            "members": [{"name": m.name, "role": m.role, "state": m.state,
                         "address": str(m.address) if m.address else None, "lag": m.lag}
                        for m in (view.members if view is not None else ())],
        }

    # ---- polling --------------------------------------------------------------------------------

    async def _run(self) -> None:
        while True:
            started = self._clock()
            try:
                await self.poll()
            except Exception as exc:   # never let the watcher die: the writer would freeze on a stale answer
                self._failed(f"unexpected error: {exc!r}")
            await asyncio.sleep(max(0.0, self.interval - (self._clock() - started)))

    async def poll(self) -> PatroniCluster | None:
        """Ask Patroni once and apply its answer; None when no member answered properly."""
        try:
            url, _, body = await self.api.request("GET", "/cluster")
            view = parse_cluster(body)
        except (PatroniUnreachable, PatroniError) as exc:
            self._failed(str(exc))
            return None
        if self.problem:
            self.monitor.note(f"patroni: {url} answers again")
        self.problem = ""
        self._apply(view, url)
        return view

    def _failed(self, problem: str) -> None:
        if not self.problem:
            self.monitor.note(f"patroni: no member answers GET /cluster ({problem}); Patroni's last answer "
                              "stands", logging.WARNING)
        self.problem = problem
        self._set_api_up(0)

    def _apply(self, view: PatroniCluster, url: str) -> None:
        before = self.view
        self.view, self.answered_at, self.answered_by = view, self._clock(), url
        self._set_api_up(1)
        instances = self.monitor.snapshot.addresses
        old_leader = before.leader if before is not None else None
        new_leader = view.leader
        if before is None or _name(old_leader) != _name(new_leader):
            self.monitor.note(f"patroni: leader {_name(old_leader)} -> {_name(new_leader)} ({describe(view)})",
                              logging.INFO if before is None else logging.WARNING)
        missing = unmatched(view, instances)
        if missing != self._unmatched:
            if missing:
                self.monitor.note(f"patroni: members not among the cluster's instances (not routed): "
                                  f"{', '.join(missing)}", logging.WARNING)
            self._unmatched = missing
        said = authority(view, instances)
        self.monitor.set_authority(said)
        if said.leader is not None and self.monitor.snapshot.writer != said.leader:
            self._chase_leader(said.leader)
        self._answered.set()

    def _chase_leader(self, leader: Address) -> None:
        """Probe Patroni's new leader every few milliseconds until it is the writer (bounded)."""
        if self._chase is not None and not self._chase.done():
            return

        async def chase() -> None:
            deadline = self._clock() + WRITER_WAIT
            while self.monitor.snapshot.writer != leader and self._clock() < deadline:
                if self.monitor.authority is None or self.monitor.authority.leader != leader:
                    return
                self.monitor.probe_now(leader, reconnect=False)
                await asyncio.sleep(FAST_PROBE_PERIOD)

        self._chase = asyncio.get_running_loop().create_task(chase())

    def _set_api_up(self, value: int) -> None:
        metrics = self.monitor.metrics
        if metrics is not None:
            metrics.patroni_api_up.labels(self.cluster).set(value)

    # ---- planned switchover ---------------------------------------------------------------------

    async def switchover(self, requested: Address | None, traffic: Traffic,
                         drain_timeout: float = DRAIN_TIMEOUT) -> SwitchoverResult:
        """Admin FAILOVER in patroni mode: new transactions paused, running ones drained, then Patroni's
        POST /switchover; resumes once the writer is Patroni's new leader. SwitchoverRefused / ActionFailed."""
        view = await self.poll()
        if view is None:
            raise SwitchoverRefused(f"cluster {self.cluster}: Patroni does not answer ({self.problem})")
        leader, old = view.leader, self.monitor.snapshot.writer
        if leader is None or leader.address is None:
            raise SwitchoverRefused(f"cluster {self.cluster}: Patroni reports no leader")
        if old is None or old != leader.address:
            raise SwitchoverRefused(f"cluster {self.cluster}: the writer ({old or 'none'}) is not Patroni's "
                                    f"leader {leader.name} yet; try again")
        candidate = None
        if requested is not None:
            if requested == old:
                raise SwitchoverRefused(f"{requested} is already the writer")
            member = view.member_at(requested)
            if member is None:
                raise SwitchoverRefused(f"{requested} is not a Patroni member of cluster {self.cluster}")
            candidate = member.name
        began = self._clock()
        self.monitor.note(f"switchover: asking Patroni to switch over from {leader.name} ({old}) to "
                          f"{candidate or 'a replica of its choice'}: pausing new transactions")
        paused_before = traffic.paused
        traffic.pause()
        try:
            drained = await self._drain(old, traffic, drain_timeout)
            note = await self._post_switchover(leader.name, candidate)
            new = await self._await_new_writer(old)
        finally:
            if not paused_before:
                traffic.resume()
        ended = self._clock()
        cut = traffic.close_pinned(old, f"switchover: {old} is no longer the primary")
        if cut:
            self.monitor.note(f"switchover: closed {cut} pinned/session server connection(s) to {old}",
                              logging.WARNING)
        snapshot = self.monitor.snapshot
        state = snapshot.get(old)
        replicas = tuple(s.address for s in snapshot.instances if s.role == "replica" and s.reachable)
        self.monitor.note(f"switchover: done: writer {old} -> {new}, paused {(ended - began) * 1000:.0f} ms; "
                          f"Patroni: {note}")
        return SwitchoverResult(self.cluster, old, new, round((ended - began) * 1000, 1),
                                round((drained - began) * 1000, 1), 0.0, replicas,
                                state.state if state is not None else "removed", f"Patroni: {note}")

    async def _drain(self, old: Address, traffic: Traffic, timeout: float) -> float:
        deadline = self._clock() + timeout
        while (running := traffic.in_flight(old)) and self._clock() < deadline:
            await asyncio.sleep(0.005)
        if running:
            raise SwitchoverRefused(f"{running} transaction(s) still running on {old} after {timeout:g}s; "
                                    "switchover cancelled, nothing changed")
        return self._clock()

    async def _post_switchover(self, leader: str, candidate: str | None) -> str:
        try:
            url, status, body = await self.api.request("POST", "/switchover", switchover_request(leader, candidate),
                                                       timeout=SWITCHOVER_TIMEOUT)
        except PatroniOutcomeUnknown as exc:
            raise ActionFailed(f"Patroni's POST /switchover got no answer ({exc}): the outcome is unknown, the "
                               "switchover may have taken effect; check the cluster (patronictl list)",
                               harmless=False) from None
        except PatroniUnreachable as exc:
            raise ActionFailed(f"Patroni's POST /switchover failed: {exc}", harmless=True) from None
        answer = read_switchover_answer(status, body)
        self.monitor.note(f"switchover: Patroni ({url}) answered: {answer.message}",
                          logging.INFO if answer.ok else logging.WARNING)
        if not answer.ok and not answer.retry:
            raise SwitchoverRefused(f"Patroni refused the switchover: {answer.message}")
        return answer.message

    async def _await_new_writer(self, old: Address) -> Address:
        """Poll Patroni and probe its leader until the writer is a new instance (bounded by WRITER_WAIT)."""
        deadline = self._clock() + WRITER_WAIT
        while self._clock() < deadline:
            writer = self.monitor.snapshot.writer
            if writer is not None and writer != old:
                return writer
            view = await self.poll()
            leader = view.leader if view is not None else None
            if leader is not None and leader.address is not None:
                self.monitor.probe_now(leader.address, reconnect=False)
            await asyncio.sleep(FAST_PROBE_PERIOD * 5)
        raise ActionFailed(f"the writer did not move off {old} within {WRITER_WAIT:g}s after Patroni's "
                           f"switchover ({self.problem or describe(self.view or PatroniCluster(()))})")


def _name(member: PatroniMember | None) -> str:
    return member.name if member is not None else "none"
