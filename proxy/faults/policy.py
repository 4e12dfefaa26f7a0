"""Fault injection policy, sans-IO: the fault table, scopes, expiry and the decision whether a fault fires.

A fault (SPEC §13) has a kind, a scope and a probability:

- latency: the transaction's first statement reaches the server `latency` seconds late;
- error: the transaction's first batch is answered with an error (`code`: a SQLSTATE or a MySQL errno);
- drop: the client's connection is closed in the middle of the transaction's first result;
- refuse: a new client connection is refused at login;
- blackhole: an instance looks dead to probes and routing (the database itself is never touched).

Scope: cluster, endpoint (of that cluster), instance, user, and a statement pattern (a regular
expression searched in the transaction's first statement). An absent part matches everything.
`FaultTable.matches(kinds, ..., now, rng)` returns the first fault (by id) whose scope matches
and whose draw `rng.random() < probability` succeeds; at most one fault fires per transaction.
Time is passed in (`now`, the monotonic clock of the caller) and randomness is an argument, so
tests use a fake clock and a seeded `random.Random`.
"""

from __future__ import annotations

import re
from collections.abc import Collection, Iterable
from dataclasses import dataclass, field
from typing import Protocol

KINDS = ("latency", "error", "drop", "refuse", "blackhole")
TRANSACTION_KINDS = ("latency", "error", "drop")   # decided when a transaction starts
MAX_LATENCY = 600.0
MAX_FAULTS = 1000

# A SQLSTATE fault answers MySQL clients with the errno a MySQL server gives for that condition; an
# errno fault answers PostgreSQL clients with the SQLSTATE of that errno (ERR packets carry both).
_ERRNO_BY_SQLSTATE = {
    "40001": 1213, "40P01": 1213, "57014": 1317, "23505": 1062, "23000": 1062, "53300": 1040,
    "42P01": 1146, "42S02": 1146, "42601": 1064, "42000": 1064, "57P01": 1927, "55P03": 1205,
    "08004": 1040, "25006": 1792, "HY000": 1105,
}
_SQLSTATE_BY_ERRNO = {
    1213: "40001", 1205: "HY000", 1317: "70100", 1062: "23000", 1040: "08004", 1146: "42S02",
    1064: "42000", 1927: "70100", 1792: "25006", 1290: "HY000", 1105: "HY000", 2013: "HY000",
}
_SQLSTATE_RE = re.compile(r"[0-9A-Z]{5}")


class Random(Protocol):
    def random(self) -> float: ...


class FaultSpecError(ValueError):
    """A fault description that cannot be used; the message says which part and why."""


def error_codes(code: str) -> tuple[str, int]:
    """(SQLSTATE, MySQL errno) for a fault's error code: 5 characters are a SQLSTATE, 1 to 4 digits
    an errno (so '40001' is the serialization failure, not errno 40001). Raises FaultSpecError."""
    text = code.strip().upper()
    if _SQLSTATE_RE.fullmatch(text):
        return text, _ERRNO_BY_SQLSTATE.get(text, 1105)
    if text.isdigit() and 1 <= len(text) <= 4 and int(text) > 0:
        errno = int(text)
        return _SQLSTATE_BY_ERRNO.get(errno, "HY000"), errno
    raise FaultSpecError(f"invalid error code {code!r}: give a SQLSTATE of 5 characters ('40001') or a MySQL "
                         "errno of 1 to 4 digits ('1213')")


@dataclass(frozen=True)
class FaultSpec:
    """What FAULT ADD (or POST /faults) asked for, checked: see the module docstring."""

    kind: str
    latency: float = 0.0          # latency: seconds
    code: str = ""                # error: SQLSTATE or errno, as given
    cluster: str | None = None
    endpoint: str | None = None
    instance: str | None = None   # "host:port"
    user: str | None = None
    pattern: str | None = None
    probability: float = 1.0
    duration: float | None = None   # seconds until it expires; None: until cleared

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise FaultSpecError(f"unknown fault kind {self.kind!r}: one of {', '.join(KINDS)}")
        if not 0.0 < self.probability <= 1.0:
            raise FaultSpecError(f"probability must be in (0, 1], not {self.probability:g}")
        if self.duration is not None and self.duration <= 0:
            raise FaultSpecError("the duration (FOR) must be positive")
        if self.kind == "latency" and not 0.0 < self.latency <= MAX_LATENCY:
            raise FaultSpecError(f"latency must be positive and at most {MAX_LATENCY:g}s")
        if self.kind == "error":
            error_codes(self.code)
        if self.endpoint is not None and self.cluster is None:
            raise FaultSpecError("an endpoint scope needs its cluster: ON cluster/endpoint")
        if self.kind == "blackhole" and (self.instance is None or self.user or self.pattern or self.endpoint):
            raise FaultSpecError("blackhole takes an INSTANCE (and optionally ON cluster), no user, endpoint "
                                 "or statement pattern")
        if self.kind == "blackhole" and self.probability != 1.0:
            raise FaultSpecError("blackhole has no probability: the instance is dead for probes and routing "
                                 "until the fault expires or is cleared")
        if self.kind == "refuse" and (self.instance is not None or self.pattern is not None):
            raise FaultSpecError("refuse applies to new connections: scope it by cluster, endpoint or user, "
                                 "not by instance or statement")
        if self.pattern is not None:
            try:
                re.compile(self.pattern)
            except re.error as exc:
                raise FaultSpecError(f"invalid statement pattern {self.pattern!r}: {exc}") from None

    def argument(self) -> str:
        """The kind's own argument as written back by SHOW FAULTS (50ms, 40001, or nothing)."""
        if self.kind == "latency":
            return f"{self.latency * 1000:g}ms"
        return self.code if self.kind == "error" else ""

    def scope(self) -> str:
        parts = []
        if self.cluster is not None:
            parts.append(f"ON {self.cluster}" + (f"/{self.endpoint}" if self.endpoint else ""))
        if self.instance is not None:
            parts.append(f"INSTANCE '{self.instance}'")
        if self.user is not None:
            parts.append(f"USER {self.user}")
        if self.pattern is not None:
            parts.append("MATCH '" + self.pattern.replace("'", "''") + "'")
        return " ".join(parts) or "everything"


@dataclass
class Fault:
    """One entry of the table: its spec, when it expires (monotonic seconds) and how often it fired."""

    id: int
    spec: FaultSpec
    added_at: float
    expires_at: float | None
    fired: int = 0
    regex: re.Pattern[str] | None = field(default=None, repr=False)

    def live(self, now: float) -> bool:
        return self.expires_at is None or now < self.expires_at

    def covers(self, cluster: str, endpoint: str | None, user: str | None, instance: str | None,
               statement: str | None) -> bool:
        """The scope matches (an absent scope part matches everything; a statement pattern needs a statement)."""
        spec = self.spec
        return ((spec.cluster is None or spec.cluster == cluster)
                and (spec.endpoint is None or spec.endpoint == endpoint)
                and (spec.user is None or spec.user == user)
                and (spec.instance is None or spec.instance == instance)
                and (self.regex is None or (statement is not None and self.regex.search(statement) is not None)))


class FaultTable:
    """The configured faults by id; see the module docstring."""

    def __init__(self) -> None:
        self.faults: dict[int, Fault] = {}
        self._next_id = 1
        # What callers must compute before asking (kept current by add/remove): any statement
        # pattern, any instance scope among the transaction faults.
        self.needs_statement = False
        self.needs_instance = False

    def __len__(self) -> int:
        return len(self.faults)

    def add(self, spec: FaultSpec, now: float) -> Fault:
        if len(self.faults) >= MAX_FAULTS:
            raise FaultSpecError(f"too many faults (at most {MAX_FAULTS}): FAULT CLEAR some first")
        fault = Fault(self._next_id, spec, now, None if spec.duration is None else now + spec.duration,
                      regex=re.compile(spec.pattern, re.IGNORECASE | re.DOTALL) if spec.pattern is not None else None)
        self._next_id += 1
        self.faults[fault.id] = fault
        self._refresh()
        return fault

    def remove(self, fault_id: int) -> Fault | None:
        fault = self.faults.pop(fault_id, None)
        self._refresh()
        return fault

    def clear(self) -> list[Fault]:
        gone = list(self.faults.values())
        self.faults.clear()
        self._refresh()
        return gone

    def expire(self, now: float) -> list[Fault]:
        """Remove and return the faults whose duration is over."""
        gone = [f for f in self.faults.values() if not f.live(now)]
        for fault in gone:
            del self.faults[fault.id]
        if gone:
            self._refresh()
        return gone

    def _refresh(self) -> None:
        transaction = [f for f in self.faults.values() if f.spec.kind in TRANSACTION_KINDS]
        self.needs_statement = any(f.regex is not None for f in transaction)
        self.needs_instance = any(f.spec.instance is not None for f in transaction)

    def matches(self, kinds: Collection[str], cluster: str, endpoint: str | None, user: str | None,
                instance: str | None, statement: str | None, now: float, rng: Random) -> Fault | None:
        """The fault that fires for this event, if any (counted in its `fired`); see the module docstring."""
        for fault in self.faults.values():
            if (fault.spec.kind in kinds and fault.live(now)
                    and fault.covers(cluster, endpoint, user, instance, statement)
                    and rng.random() < fault.spec.probability):
                fault.fired += 1
                return fault
        return None

    def blackholed(self, cluster: str, instance: str, now: float) -> Fault | None:
        """The blackhole fault covering this instance of this cluster right now, if any (never random:
        an outage is an outage; its probability is 1)."""
        for fault in self.faults.values():
            spec = fault.spec
            if (spec.kind == "blackhole" and spec.instance == instance and fault.live(now)
                    and (spec.cluster is None or spec.cluster == cluster)):
                return fault
        return None

    def blackholed_set(self, cluster: str, instances: Iterable[str], now: float) -> frozenset[str]:
        return frozenset(i for i in instances if self.blackholed(cluster, i, now) is not None)
