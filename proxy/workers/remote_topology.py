"""A worker's topology: the snapshots the control process publishes, in place of probing itself."""

from __future__ import annotations

from collections.abc import Callable

from ..config import Address, HealthSettings
from ..config.model import DEFAULT_PLACEMENT, Placement
from ..topology import ProbeResult, TopologyMonitor, TopologySnapshot
from ..topology.monitor import WriterChange


class _NoProbe:
    async def probe(self, timeout: float) -> ProbeResult:   # pragma: no cover - never started
        return ProbeResult.failed("workers do not probe")

    def close(self) -> None:
        pass


class RemoteTopology(TopologyMonitor):
    """A TopologyMonitor that never probes: `apply` takes each snapshot the control process sent.

    Writer changes still reach `on_writer_change` (the worker's cluster retires its pooled
    connections to the instances whose role changed) and every snapshot wakes the borrowers
    waiting for a target. An instance that refused a connection is reported to the control
    process (`ask_probe`), whose monitor probes it at once.
    """

    def __init__(self, cluster: str, snapshot: TopologySnapshot, health: HealthSettings,
                 ask_probe: Callable[[str, Address], None], on_writer_change: WriterChange | None = None) -> None:
        super().__init__(cluster, snapshot.addresses, health, lambda address, settings: _NoProbe(),
                         on_writer_change=on_writer_change)
        self.snapshot = snapshot
        self._ask_probe = ask_probe

    def apply(self, snapshot: TopologySnapshot) -> None:
        before, self.snapshot = self.snapshot, snapshot
        if before.writer != snapshot.writer and self.on_writer_change is not None:
            self.on_writer_change(before.writer, snapshot.writer)
        for listener in self.snapshot_listeners:
            listener(snapshot)

    def start(self) -> None:
        pass

    async def wait_probed(self, timeout: float) -> None:
        pass

    def stop(self) -> None:
        pass

    def probe_now(self, address: Address, reconnect: bool = True) -> None:
        self._ask_probe(self.cluster, address)

    def add_instance(self, address: Address, placement: Placement = DEFAULT_PLACEMENT) -> None:
        pass   # the control process's monitor watches it; its snapshots bring it here

    def remove_instance(self, address: Address) -> None:
        pass

    def set_health(self, health: HealthSettings) -> None:
        self.health = health
