"""Replica discovery (Aurora replica auto-scaling): instances the primary reports join, gone ones leave.

With `discover = true`, every `discovery.interval` the current writer is asked which replicas
stream from it (the engine's `ReplicaLister`: MariaDB `SHOW SLAVE HOSTS`, PostgreSQL
`pg_stat_replication`). A reported replica that is not a configured instance is added to the
topology monitor (placement from [clusters.<name>.discovery]) and joins reader, split and custom
`exclude` endpoints once a probe finds it healthy. A discovered replica the writer has not
reported for longer than `discovery.grace` is dropped (its pools drain), unless it is the writer
now or its latest probe finds it up (not lagging) as a replica (after a writer change it may not be re-pointed yet,
or it streams from another replica). Configured instances are never added or dropped by discovery. A failed listing changes
nothing (and is logged once until a listing succeeds again).

`reconcile` decides, pure, with `now` passed in; `ReplicaDiscovery` is the asyncio loop.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, field
from typing import Protocol

from ..config import Address
from ..config.model import DiscoverySettings
from .coordinator import ActionFailed
from .monitor import TopologyMonitor


class ReplicaLister(Protocol):
    """An engine adapter's view of the replicas a primary serves (raises coordinator.ActionFailed)."""

    async def list_replicas(self, primary: Address, timeout: float) -> list[Address]: ...


@dataclass(frozen=True)
class Reconciled:
    """What one listing changes: when each discovered replica was last reported, who joins, who leaves."""

    last_seen: dict[Address, float] = field(default_factory=dict)
    added: tuple[Address, ...] = ()
    dropped: tuple[Address, ...] = ()


def reconcile(last_seen: Mapping[Address, float], reported: Collection[Address], configured: Collection[Address],
              writer: Address | None, now: float, grace: float,
              live_replicas: Collection[Address] = ()) -> Reconciled:
    """The discovered replicas after one successful listing at `now` (see the module docstring).

    `live_replicas`: instances whose latest probe found them up as replicas. A discovered one is kept
    (its grace starts again) although the writer does not report it: after a writer change it may not
    be re-pointed yet, or it may stream from another replica (cascading)."""
    seen = {a: t for a, t in last_seen.items() if a not in configured}
    for address in live_replicas:
        if address in seen:
            seen[address] = now
    added = []
    for address in reported:
        if address in configured or address == writer:
            continue
        if address not in seen:
            added.append(address)
        seen[address] = now
    dropped = tuple(a for a, t in seen.items() if a not in reported and a != writer and now - t > grace)
    for address in dropped:
        del seen[address]
    return Reconciled(seen, tuple(added), dropped)


class ReplicaDiscovery:
    """Polls the writer for its replicas and adds/drops instances of one cluster's monitor."""

    def __init__(self, monitor: TopologyMonitor, settings: DiscoverySettings, lister: ReplicaLister,
                 configured: Callable[[], Collection[Address]], on_dropped: Callable[[Address], None], *,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.monitor = monitor
        self.settings = settings
        self.lister = lister
        self._configured = configured
        self._on_dropped = on_dropped
        self._clock = clock
        self.last_seen: dict[Address, float] = {}     # discovered replicas -> last reported (monotonic)
        self.last_error = ""
        self.last_listing: float | None = None        # monotonic time of the last successful listing
        self._task: asyncio.Task[None] | None = None

    @property
    def discovered(self) -> frozenset[Address]:
        return frozenset(self.last_seen)

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run())

    def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            self._task = None

    async def _run(self) -> None:
        while True:
            await self.poll()
            await asyncio.sleep(self.settings.interval)

    async def poll(self) -> None:
        """Ask the writer once and apply what changed (nothing without a writer or on failure)."""
        writer = self.monitor.snapshot.writer
        if writer is None:
            return
        try:
            reported = await self.lister.list_replicas(writer, self.monitor.health.timeout + 1.0)
        except ActionFailed as exc:
            if exc.message != self.last_error:
                self.monitor.note(f"discovery: cannot list the replicas of {writer}: {exc.message}", logging.WARNING)
            self.last_error = exc.message
            return
        if self.last_error:
            self.monitor.note(f"discovery: listing the replicas of {writer} works again")
            self.last_error = ""
        now = self._clock()
        self.last_listing = now
        live = [i.address for i in self.monitor.snapshot.instances
                if i.role == "replica" and i.state == "up"]
        result = reconcile(self.last_seen, reported, self._configured(), writer, now, self.settings.grace, live)
        self.last_seen = result.last_seen
        for address in result.added:
            self.monitor.note(f"discovery: replica {address} reported by the writer {writer}: added")
            self.monitor.add_instance(address, self.settings.placement())
        for address in result.dropped:
            self.monitor.note(f"discovery: replica {address} not reported by the writer for more than "
                              f"{self.settings.grace:g}s: dropped", logging.WARNING)
            self.monitor.remove_instance(address)
            self._on_dropped(address)
