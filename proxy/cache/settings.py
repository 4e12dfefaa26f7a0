"""[clusters.<name>.cache] settings: the backend, its bounds, the default TTL and the opt-in rules."""

from __future__ import annotations

import re
from dataclasses import dataclass, field


@dataclass(frozen=True)
class CacheRule:
    """One `rules` entry: statements whose text matches `match` (a regex) are cached for `ttl` seconds.

    `tables`, when given, are the tables the statement reads (for views, which the parser cannot see
    through): writes to them invalidate its results, and a view is cached only through such a rule."""

    match: str
    ttl: float
    tables: tuple[str, ...] = ()
    pattern: re.Pattern[str] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "pattern", re.compile(self.match, re.IGNORECASE | re.DOTALL))


@dataclass(frozen=True)
class CacheSettings:
    """backend is "memory" or a redis:// URL; sizes in bytes, durations in seconds."""

    backend: str = "memory"
    max_memory: int = 256 * 1024 * 1024
    max_entry: int = 1024 * 1024
    default_ttl: float = 0.0
    rules: tuple[CacheRule, ...] = ()
    redis_timeout: float = 0.02       # every Redis call is bounded by this, then bypassed
    stampede_wait: float = 1.0        # how long identical misses wait for the one that runs the query
    # function name (lower case) -> the tables it writes: a call invalidates those (any other function
    # that is not known read-only invalidates everything)
    write_functions: tuple[tuple[str, tuple[str, ...]], ...] = ()
    username: str | None = None       # Redis ACL user (password: AUTH; tls_ca_file: rediss:// certificates)
    password: str | None = field(default=None, repr=False)
    tls_ca_file: str | None = None
