"""Engine-neutral routing verdicts: where a statement may run on a split endpoint (SPEC §3.3).

Each engine's classifier (PostgreSQL: engines/postgres/classify.py with pglast; MySQL:
engines/mysql/classify.py with a tokenizer) returns a `Classification`; the session core acts
on it without knowing the engine. The rule is "when in doubt, primary": a misrouted write is a
bug, a misrouted read only a missed optimization.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Protocol


class Route(enum.Enum):
    """Where a statement may be sent on a split endpoint."""

    REPLICA = "replica"
    PRIMARY = "primary"


@dataclass(frozen=True, slots=True)
class Classification:
    """The verdict for one SQL text (one or more statements).

    `route` is authoritative (hints included).  The flags describe the text:
    `begins_transaction` for BEGIN / START TRANSACTION; `begins_read_only` when that
    transaction (or SET TRANSACTION) is READ ONLY and may run on a replica (not SERIALIZABLE);
    `ends_transaction` for COMMIT / ROLLBACK / END / ABORT / PREPARE TRANSACTION, not ROLLBACK
    TO SAVEPOINT (after COMMIT AND CHAIN the server opens the next transaction at once: trust
    ReadyForQuery's status); `neutral` for statements that do not choose a server by themselves
    (COMMIT, ROLLBACK, SAVEPOINT, RELEASE, ROLLBACK TO, empty text); `session_only` for texts that change
    only session state and cannot write data (MySQL: a SET of variables with no call or subquery, USE):
    read_your_writes has no commit position to wait for after them.
    """

    route: Route
    reason: str
    begins_read_only: bool = False
    begins_transaction: bool = False
    ends_transaction: bool = False
    neutral: bool = False
    session_only: bool = False


UNPARSABLE = Classification(Route.PRIMARY, "unparsable")
EMPTY = Classification(Route.REPLICA, "empty", neutral=True)
SELECT = Classification(Route.REPLICA, "select")




class Classifier(Protocol):
    """What the session and the admin console need from an engine's classifier."""

    def classify(self, sql: str) -> Classification: ...

    @property
    def hits(self) -> int: ...

    @property
    def misses(self) -> int: ...

    @property
    def cached_entries(self) -> int: ...

    def clear_cache(self) -> None: ...


def combine(results: list[Classification]) -> Classification:
    """The verdict for a multi-statement text: REPLICA only if every statement may go there."""
    if len(results) == 1:
        return results[0]
    primary = next((r for r in results if r.route is Route.PRIMARY), None)
    if primary is not None:
        route, reason = Route.PRIMARY, primary.reason
    else:
        route = Route.REPLICA
        reason = next((r.reason for r in results if not r.neutral), results[0].reason)
    begins = [r for r in results if r.begins_transaction]
    return Classification(
        route,
        reason,
        begins_read_only=any(r.begins_read_only for r in results) and all(r.begins_read_only for r in begins),
        begins_transaction=bool(begins),
        ends_transaction=any(r.ends_transaction for r in results),
        neutral=all(r.neutral for r in results),
        session_only=all(r.session_only for r in results),
    )
