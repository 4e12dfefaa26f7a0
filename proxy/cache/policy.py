"""Which statements are cached and for how long (SPEC §11): hints, rules, default_ttl; pure, no I/O.

The engine says what it knows of the text (`ReadFacts`: a plain read? volatile? which tables?);
`plan()` adds the session's state and the configuration and answers with a `CachePlan` or None.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from ..durations import parse_duration
from .settings import CacheSettings

# `/* dbproxy:cache ttl=10s */` opts one statement in, `/* dbproxy:cache off */` opts it out.
_HINT = re.compile(r"/\*\s*dbproxy:cache\s+(?:(off)|ttl\s*=\s*([0-9.]+\s*[a-z]*))\s*\*/", re.IGNORECASE)
_ANY_HINT = re.compile(r"/\*\s*dbproxy:[^*]*\*/\s*", re.IGNORECASE)
OFF = -1.0


@dataclass(frozen=True, slots=True)
class PointSource:
    """Where the rows of a point read (or a row-scoped write) are named: `column = <value>` in
    `table`, the value being the statement's literal number `literal` (0-based, in the engine's
    literal order) or its bound parameter number `param` (1-based); the engine reads and canonicalizes it."""

    table: str
    column: str
    literal: int = -1
    param: int = 0


@dataclass(frozen=True, slots=True)
class ReadFacts:
    """What an engine's parser says about a text: `cacheable` (one read, no volatile function, no
    catalog or view the parser cannot see through), why not (`reason`), the tables it reads, and
    where its rows are named when it is a point read of one table (`point`)."""

    cacheable: bool
    reason: str
    tables: tuple[str, ...] = ()
    point: PointSource | None = None


@dataclass(frozen=True, slots=True)
class CachePlan:
    """A statement to look up: its TTL (seconds), the tables whose writes invalidate it, and (a point
    read) where its rows are named (then only writes of those rows, or table-wide ones, invalidate it)."""

    ttl: float
    tables: tuple[str, ...]
    point: PointSource | None = None


def hint_ttl(sql: str) -> float | None:
    """The TTL a `dbproxy:cache` hint asks for (OFF for `off`), or None without one (or a bad TTL)."""
    if "dbproxy:cache" not in sql:
        return None
    match = _HINT.search(sql)
    if match is None:
        return None
    if match.group(1):
        return OFF
    try:
        return parse_duration(match.group(2))
    except ValueError:
        return None


def without_hints(sql: str) -> str:
    """The text rules match against: dbproxy hint comments removed, leading blanks stripped."""
    return _ANY_HINT.sub("", sql).lstrip() if "dbproxy:" in sql else sql.lstrip()


def opted_in(sql: str, settings: CacheSettings) -> tuple[float, tuple[str, ...] | None] | None:
    """(TTL, the rule's tables or None) if the configuration or a hint opts `sql` in, else None."""
    hinted = hint_ttl(sql)
    if hinted == OFF:
        return None
    text = without_hints(sql)
    for rule in settings.rules:
        if rule.pattern.search(text):
            ttl = hinted if hinted is not None else rule.ttl
            return (ttl, rule.tables or None) if ttl > 0 else None
    if hinted is not None:
        return (hinted, None) if hinted > 0 else None
    return (settings.default_ttl, None) if settings.default_ttl > 0 else None


def plan(sql: str, facts: ReadFacts, in_transaction: bool, settings: CacheSettings) -> CachePlan | None:
    """The cache plan for `sql` sent outside (or inside) an explicit transaction, or None: not cached.

    A rule that names its tables also admits a read the parser could not vouch for only because of
    what it reads (a view); volatile functions and writes are never cached."""
    if in_transaction:
        return None
    chosen = opted_in(sql, settings)
    if chosen is None:
        return None
    ttl, rule_tables = chosen
    if facts.cacheable:
        if rule_tables is not None:
            return CachePlan(ttl, rule_tables)
        return CachePlan(ttl, facts.tables, facts.point)
    if rule_tables is not None and facts.reason == "view":
        return CachePlan(ttl, rule_tables)
    return None
