"""Pure pool policy: which connections to retire, given the time now (tested with a fake clock)."""

from __future__ import annotations

from typing import Protocol


class Aging(Protocol):
    """What the policy needs to know about a pooled connection."""

    created_at: float
    last_used: float
    generation: int


def is_retired(conn: Aging, now: float, generation: int, max_lifetime: float) -> bool:
    """True when conn must not be handed out again: expired generation or past max_lifetime."""
    if conn.generation != generation:
        return True
    return max_lifetime > 0 and now - conn.created_at >= max_lifetime


def idle_to_close(idle: list, now: float, generation: int, idle_timeout: float,
                  max_lifetime: float, min_idle: int) -> list:
    """Idle connections to close now, oldest-used first, keeping min_idle healthy ones.

    `idle` is in LIFO order (most recently used last), as the pool keeps it.
    """
    retired = [c for c in idle if is_retired(c, now, generation, max_lifetime)]
    keep = [c for c in idle if c not in retired]
    if idle_timeout > 0:
        stale = [c for c in keep if now - c.last_used >= idle_timeout]
        allowed = max(0, len(keep) - min_idle)
        retired.extend(stale[:allowed])
    return retired
