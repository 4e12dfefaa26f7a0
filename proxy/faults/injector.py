"""The running process's fault injection: the table, its clock and RNG, logging, metrics, and the hooks it sets.

`FaultInjector` is made once per ProxyApp. Faults can be added only when `[server] faults = true`
(`FaultsDisabled` otherwise). While the table holds at least one fault, every cluster's `faults`
attribute is this injector (None otherwise): the client relay checks that one attribute when a
transaction starts and does nothing more when it is None. Every fault that fires is logged and
counted in dbproxy_faults_injected_total{cluster,kind}.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable, Collection
from typing import TYPE_CHECKING, Any

from ..config import Address
from ..errors import InjectedFault
from .policy import TRANSACTION_KINDS, Fault, FaultSpec, FaultSpecError, FaultTable, error_codes

if TYPE_CHECKING:
    from ..core.cluster import Cluster
    from ..metrics import Metrics

log = logging.getLogger("dbproxy.faults")

DISABLED = "fault injection is off: set faults = true in the [server] section of the configuration to enable it"
_NOTHING: frozenset[Address] = frozenset()


class FaultsDisabled(Exception):
    """A fault was asked for while [server] faults is false."""

    def __init__(self) -> None:
        super().__init__(DISABLED)


class FaultInjector:
    """See the module docstring."""

    def __init__(self, enabled: bool, metrics: Metrics, clusters: Callable[[], dict[str, Cluster[Any]]],
                 clock: Callable[[], float] = time.monotonic, rng: random.Random | None = None) -> None:
        self.enabled = enabled
        self.metrics = metrics
        self.table = FaultTable()
        self._clusters = clusters
        self._clock = clock
        self.rng = rng or random.Random()

    # ---- the table (admin console, HTTP) ----------------------------------------------------

    def add(self, spec: FaultSpec) -> Fault:
        """Add a checked fault; raises FaultsDisabled, FaultSpecError (unknown cluster, endpoint, instance)."""
        if not self.enabled:
            raise FaultsDisabled()
        self._check_scope(spec)
        fault = self.table.add(spec, self._clock())
        log.warning("fault %d added: %s %s %s probability %g%s", fault.id, spec.kind, spec.argument(), spec.scope(),
                    spec.probability, f" for {spec.duration:g}s" if spec.duration else "")
        self.sync()
        return fault

    def _check_scope(self, spec: FaultSpec) -> None:
        clusters = self._clusters()
        if spec.cluster is not None:
            cluster = clusters.get(spec.cluster)
            if cluster is None:
                raise FaultSpecError(f"no cluster named {spec.cluster!r} (clusters: {', '.join(clusters) or 'none'})")
            if spec.endpoint is not None and spec.endpoint not in {e.name for e in cluster.config.endpoints}:
                raise FaultSpecError(f"cluster {spec.cluster} has no endpoint named {spec.endpoint!r}")
            scoped = [cluster]
        else:
            scoped = list(clusters.values())
        if spec.instance is not None:
            try:
                address = Address.parse(spec.instance)
            except ValueError as exc:
                raise FaultSpecError(f"invalid instance address {spec.instance!r}: {exc}") from None
            if not any(address in c.config.instances for c in scoped):
                where = f"cluster {spec.cluster}" if spec.cluster else "any cluster"
                raise FaultSpecError(f"{spec.instance} is not an instance of {where}")

    def remove(self, fault_id: int) -> Fault | None:
        fault = self.table.remove(fault_id)
        if fault is not None:
            log.warning("fault %d cleared (fired %d times)", fault.id, fault.fired)
            self.sync()
        return fault

    def clear(self) -> int:
        gone = self.table.clear()
        if gone:
            log.warning("faults cleared: %s", ", ".join(f"{f.id} (fired {f.fired} times)" for f in gone))
        self.sync()
        return len(gone)

    def set_enabled(self, enabled: bool) -> None:
        """[server] faults after a reload: turning it off clears every fault."""
        self.enabled = enabled
        if not enabled and len(self.table):
            log.warning("[server] faults is now false: clearing every fault")
            self.clear()

    def maintain(self) -> None:
        """Once a second: faults whose duration is over go."""
        gone = self.table.expire(self._clock())
        for fault in gone:
            log.warning("fault %d expired (fired %d times)", fault.id, fault.fired)
        if gone:
            self.sync()

    def sync(self) -> None:
        """Point every cluster (and its monitor's blackhole check) at this injector while faults exist."""
        active = self if len(self.table) else None
        for cluster in self._clusters().values():
            cluster.faults = active

    def rows(self) -> list[dict[str, Any]]:
        """SHOW FAULTS and GET /faults: one dict per fault."""
        now = self._clock()
        out = []
        for fault in self.table.faults.values():
            spec = fault.spec
            out.append({"id": fault.id, "kind": spec.kind, "argument": spec.argument(), "scope": spec.scope(),
                        "probability": spec.probability,
                        "expires_in": None if fault.expires_at is None else round(max(0.0, fault.expires_at - now), 3),
                        "fired": fault.fired})
        return out

    # ---- decisions (client sessions, probes, routing) ---------------------------------------

    def transaction_fault(self, cluster: str, endpoint: str, user: str | None, instance: str | None,
                          statement: str | None, peer: str) -> Fault | None:
        """The latency, error or drop fault for a transaction starting now, if one fires (logged, counted)."""
        fault = self.table.matches(TRANSACTION_KINDS, cluster, endpoint, user, instance, statement, self._clock(),
                                   self.rng)
        if fault is not None:
            self._fired(fault, cluster, f"client {peer}")
        return fault

    def refusal(self, cluster: str, endpoint: str, user: str, peer: str) -> InjectedFault | None:
        """The error refusing a new client connection now, if a refuse fault fires (logged, counted)."""
        fault = self.table.matches(("refuse",), cluster, endpoint, user, None, None, self._clock(), self.rng)
        if fault is None:
            return None
        self._fired(fault, cluster, f"client {peer} (user {user})")
        return InjectedFault(f"connection refused by dbproxy fault injection (fault {fault.id})", "08004", 1040)

    def blackholed(self, cluster: str, address: Address) -> Fault | None:
        """The blackhole fault making this instance look dead now, if any (not counted: see probe_blackholed)."""
        return self.table.blackholed(cluster, str(address), self._clock())

    def probe_blackholed(self, cluster: str, address: Address) -> str | None:
        """A probe of `address` is about to run: the failure it reports instead, if blackholed (logged, counted)."""
        fault = self.blackholed(cluster, address)
        if fault is None:
            return None
        fault.fired += 1
        self._fired(fault, cluster, f"probe of {address}", level=logging.INFO)
        return f"blackholed by fault {fault.id}"

    def avoided(self, cluster: str, addresses: Collection[Address]) -> frozenset[Address]:
        """The instances among `addresses` routing must treat as dead now (blackholed)."""
        if not any(f.spec.kind == "blackhole" for f in self.table.faults.values()):
            return _NOTHING
        return frozenset(a for a in addresses if self.blackholed(cluster, a) is not None)

    def _fired(self, fault: Fault, cluster: str, who: str, level: int = logging.WARNING) -> None:
        spec = fault.spec
        self.metrics.fault_injected(cluster, spec.kind)
        log.log(level, "fault %d injected: %s %s on %s, %s", fault.id, spec.kind, spec.argument(), cluster, who)


def injected_error(fault: Fault) -> InjectedFault:
    """The error an error fault answers a batch with (SQLSTATE for PostgreSQL, errno for MySQL)."""
    sqlstate, errno = error_codes(fault.spec.code)
    return InjectedFault(f"error injected by dbproxy fault {fault.id}", sqlstate, errno)
