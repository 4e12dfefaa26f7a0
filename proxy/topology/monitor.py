"""Watching one cluster: a probe loop per instance, a new TopologySnapshot after every probe.

The monitor owns the asyncio side (timers, probe connections, logging, metrics); every decision
is made by the pure functions of health.py. Role changes are logged (and kept in `events` for
/status), counted, and reported through `on_writer_change` so the cluster can retire the pooled
connections of the instances whose role changed.

In failover mode "patroni" a PatroniWatcher (patroni_watch.py) sets `authority` from Patroni's
answers; every snapshot applies it (health.build_snapshot).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Protocol

from ..config import Address, HealthSettings
from ..config.model import DEFAULT_PLACEMENT, Placement
from .health import build_snapshot, changes, observe
from .model import Authority, InstanceState, ProbeResult, TopologySnapshot

if TYPE_CHECKING:
    from ..metrics import Metrics

log = logging.getLogger("dbproxy.topology")

MAX_EVENTS = 200


class Probe(Protocol):
    """An engine adapter's probe of one instance (see pg_probe.PgProbe)."""

    async def probe(self, timeout: float) -> ProbeResult: ...

    def close(self) -> None: ...


ProbeFactory = Callable[[Address, HealthSettings], Probe]
WriterChange = Callable[[Address | None, Address | None], None]
SnapshotListener = Callable[[TopologySnapshot], None]


@dataclass(frozen=True)
class TopologyEvent:
    """A logged topology change: wall-clock time and what happened."""

    at: float
    cluster: str
    text: str


@dataclass
class _Watch:
    probe: Probe
    wake: asyncio.Event
    task: asyncio.Task[None] | None = None
    reconnect: bool = False


class TopologyMonitor:
    """Probes every instance of one cluster and keeps `snapshot` current; see the module docstring."""

    def __init__(self, cluster: str, instances: Sequence[Address], health: HealthSettings,
                 probe_factory: ProbeFactory, *, on_writer_change: WriterChange | None = None,
                 metrics: Metrics | None = None, clock: Callable[[], float] = time.monotonic,
                 wall_clock: Callable[[], float] = time.time,
                 placements: Mapping[Address, Placement] | None = None) -> None:
        self.cluster = cluster
        self.health = health
        self.metrics = metrics
        self.on_writer_change = on_writer_change
        # Called with every published snapshot (the failover coordinator, borrowers waiting for a target).
        self.snapshot_listeners: list[SnapshotListener] = []
        self.events: deque[TopologyEvent] = deque(maxlen=MAX_EVENTS)
        self._probe_factory = probe_factory
        self._clock = clock
        self._wall_clock = wall_clock
        placed = placements or {}
        self._observed: dict[Address, InstanceState] = {
            a: InstanceState(a, since=clock(), placement=placed.get(a, DEFAULT_PLACEMENT)) for a in instances}
        self._watches: dict[Address, _Watch] = {}
        self._last_writer: Address | None = None
        self._running = False
        self.authority: Authority | None = None   # an HA manager's say (mode "patroni"), None: probes alone
        # Fault injection's blackhole (SPEC §13): the failure a probe reports instead of running.
        self.blackholed: Callable[[Address], str | None] | None = None
        self.snapshot = TopologySnapshot(cluster, tuple(self._observed.values()), taken_at=wall_clock())

    # ---- lifecycle ------------------------------------------------------------------------------

    def start(self) -> None:
        """Start one probe loop per instance (needs a running event loop)."""
        self._running = True
        for address in self._observed:
            self._watch(address)

    async def wait_probed(self, timeout: float) -> None:
        """Wait (bounded) until every instance has been probed once, so routing starts informed."""
        deadline = self._clock() + timeout
        while any(s.last_check is None for s in self._observed.values()) and self._clock() < deadline:
            await asyncio.sleep(0.01)

    def stop(self) -> None:
        self._running = False
        for address in list(self._watches):
            self._unwatch(address)

    def _watch(self, address: Address) -> None:
        watch = _Watch(self._probe_factory(address, self.health), asyncio.Event())
        self._watches[address] = watch
        watch.task = asyncio.get_running_loop().create_task(self._run(address, watch))

    def _unwatch(self, address: Address) -> None:
        watch = self._watches.pop(address, None)
        if watch is not None:
            if watch.task is not None:
                watch.task.cancel()
            watch.probe.close()

    async def _run(self, address: Address, watch: _Watch) -> None:
        while self._watches.get(address) is watch:
            if watch.reconnect:
                watch.reconnect = False
                watch.probe.close()
            started = self._clock()
            dead = self.blackholed(address) if self.blackholed is not None else None
            try:
                result = ProbeResult(False, dead) if dead else await watch.probe.probe(self.health.timeout)
            except Exception as exc:   # a probe must never end its loop: the instance would stay "up"
                log.warning("cluster %s: probe of %s failed unexpectedly: %r", self.cluster, address, exc)
                watch.probe.close()
                result = ProbeResult.failed(f"probe error: {type(exc).__name__}: {exc}")
            if self._watches.get(address) is not watch:
                return
            self.record(address, result, started)
            delay = max(0.0, self.health.interval - (self._clock() - started))
            try:
                await asyncio.wait_for(watch.wake.wait(), delay)
            except TimeoutError:
                pass
            watch.wake.clear()

    # ---- changes from outside -------------------------------------------------------------------

    def probe_now(self, address: Address, reconnect: bool = True) -> None:
        """Probe this instance at once, over a new connection unless told otherwise (a client
        connection to it just failed; or it is being promoted and should become the writer soon)."""
        watch = self._watches.get(address)
        if watch is not None:
            watch.reconnect = watch.reconnect or reconnect
            watch.wake.set()

    def add_instance(self, address: Address, placement: Placement = DEFAULT_PLACEMENT) -> None:
        """Start watching a new instance; it joins routing once a probe finds it healthy."""
        if address in self._observed:
            return
        self._observed[address] = InstanceState(address, since=self._clock(), placement=placement)
        self._event(f"instance {address} added" + (" (discovered)" if placement.discovered else ""))
        if self._running:
            self._watch(address)
        self._publish()

    def set_placement(self, address: Address, placement: Placement) -> None:
        """A reload changed where an instance is or how it is promoted; published at once."""
        state = self._observed.get(address)
        if state is not None and state.placement != placement:
            self._observed[address] = replace(state, placement=placement)
            self._publish()

    def remove_instance(self, address: Address) -> None:
        """Stop watching an instance; routing forgets it with the next snapshot (published now)."""
        if self._observed.pop(address, None) is None:
            return
        self._unwatch(address)
        self._event(f"instance {address} removed")
        self._forget_metrics(address)
        self._publish()

    def set_authority(self, authority: Authority | None) -> None:
        """Apply what the HA manager says now (None: probes alone); publishes when it changed. A new
        leader is probed at once, so the writer moves as soon as it reports primary."""
        if authority == self.authority:
            return
        old, self.authority = self.authority, authority
        leader = authority.leader if authority is not None else None
        if leader is not None and (old is None or old.leader != leader):
            self.probe_now(leader, reconnect=False)
        self._publish()

    def set_health(self, health: HealthSettings) -> None:
        """Apply reloaded health settings; new probe credentials reconnect every probe."""
        old, self.health = self.health, health
        if (old.user, old.password, old.database, old.tls) == (health.user, health.password, health.database,
                                                                health.tls):
            return
        for address, watch in self._watches.items():
            watch.probe.close()
            watch.probe = self._probe_factory(address, health)

    # ---- probe results --------------------------------------------------------------------------

    def record(self, address: Address, result: ProbeResult, started: float | None = None) -> None:
        """Feed one probe result (of a probe begun at `started`) through the state machine; publish."""
        prev = self._observed.get(address)
        if prev is None:
            return
        now = self._clock() if started is None else started
        self._observed[address] = observe(prev, result, now,
                                          failure_threshold=self.health.failure_threshold,
                                          max_replica_lag=self.health.max_replica_lag)
        self._publish()

    def _publish(self) -> None:
        before = self.snapshot
        self.snapshot = after = build_snapshot(self.cluster, tuple(self._observed.values()), before,
                                               self._wall_clock(), self.authority)
        for line in changes(before, after):
            self._event(line)
        self._update_metrics(after)
        if before.writer != after.writer:
            self._writer_changed(before.writer, after.writer)
        for listener in self.snapshot_listeners:
            listener(after)

    def _writer_changed(self, old: Address | None, new: Address | None) -> None:
        if new is not None:
            if self._last_writer is not None and new != self._last_writer and self.metrics is not None:
                self.metrics.failovers.labels(self.cluster).inc()
            self._last_writer = new
        if self.on_writer_change is not None:
            self.on_writer_change(old, new)

    def note(self, text: str, level: int = logging.INFO) -> None:
        """Log a topology event from outside (failover steps) and keep it in `events` for /status."""
        log.log(level, "cluster %s: %s", self.cluster, text)
        self.events.append(TopologyEvent(self._wall_clock(), self.cluster, text))

    def _event(self, text: str) -> None:
        alarm = text.endswith("-> none") or " -> down" in text
        self.note(text, logging.WARNING if alarm else logging.INFO)

    # ---- metrics --------------------------------------------------------------------------------

    def _update_metrics(self, snapshot: TopologySnapshot) -> None:
        metrics = self.metrics
        if metrics is None:
            return
        for state in snapshot.instances:
            labels = (self.cluster, str(state.address))
            metrics.instance_up.labels(*labels).set(1 if state.reachable else 0)
            metrics.instance_is_primary.labels(*labels).set(1 if state.address == snapshot.writer else 0)
            metrics.replica_lag_seconds.labels(*labels).set(state.lag_seconds or 0.0)

    def _forget_metrics(self, address: Address) -> None:
        if self.metrics is None:
            return
        for gauge in (self.metrics.instance_up, self.metrics.instance_is_primary,
                      self.metrics.replica_lag_seconds):
            try:
                gauge.remove(self.cluster, str(address))
            except KeyError:
                pass
