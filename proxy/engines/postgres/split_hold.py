"""Split endpoints: whether a statement of a client on a replica must wait for the primary (the split hold).

Sans-IO: a `SplitHold` belongs to one client and works on one client message (its type byte and
body), the replica connection's `ResponseTracker` and the client's batch state; it returns what the
session sends and leaves the flags (`ClientSessionCore._held`, `PgClientSession.unsynced`) to it.

A split client is routed by the first statement of its transaction (`statement_text`, via the
core's `_route`). While it is on a replica, each further Query, Parse or Bind of a known named
statement is classified too. One that must go to the primary, outside a transaction block, is
held: it and everything after it stay in the session's pending bytes until the replica is released
(the core's `_release`, which then routes them anew). If the messages before it left an
extended-protocol batch open (no Sync yet), the replica would never reach ReadyForQuery: the hold
ends that batch with a hidden Sync, sent after those messages, whose replies (ReadyForQuery) are
dropped. Not held:

- inside a transaction block (BEGIN READ ONLY ...): the replica's read-only error is right;
- a pinned client or session pooling: the client never leaves its server;
- a message whose text is unknown (Bind of an unnamed or unknown statement, other types).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ...routing.classify import Route
from .statements import decode_parse
from .wire import messages as m
from .wire.responses import DROP_ALL, SYNC, ResponseTracker, Slot

if TYPE_CHECKING:
    from ...routing.classify import Classifier
    from .rewrite import StatementRewriter

_QUERY, _PARSE, _BIND = 0x51, 0x50, 0x42
HIDDEN_SYNC = m.sync()
_HIDDEN_SYNC_SLOT = Slot(SYNC, DROP_ALL)   # its ReadyForQuery is not the client's


def statement_text(kind: int, body: bytes, rewriter: StatementRewriter | None) -> bytes | None:
    """The SQL a Query, a Parse, or a Bind of a known named statement runs (else None).

    Raises ProtocolViolation for a malformed Parse or Bind (of a client that prepared statements)."""
    if kind == _QUERY:
        return body[:-1]
    if kind == _PARSE:
        return decode_parse(body).query
    if kind == _BIND and rewriter is not None:  # Bind of a statement prepared earlier
        return rewriter.query_of(body)
    return None


class SplitHold:
    """One split client's hold decisions while it is on a replica; see the module docstring."""

    __slots__ = ("classifier",)

    def __init__(self, classifier: Classifier) -> None:
        self.classifier = classifier

    def hold(self, kind: int, body: bytes, tracker: ResponseTracker, rewriter: StatementRewriter | None,
             unsynced: bool, keeps_server: bool) -> bytes | None:
        """Whether this client message, on the replica `tracker` follows, must wait for the primary.

        None: it runs on the replica. Otherwise it is held (with everything after it) and the
        result is what to send the replica after the messages before it: the hidden Sync when an
        extended-protocol batch is open (`unsynced`; its slot is pushed to tracker now, after
        theirs), else b"". The client's batch is then no longer open. `keeps_server`: the client
        cannot leave this server (pinned, session pooling). The message is not one the session's
        routing already classified (the first of the transaction).
        """
        sql = statement_text(kind, body, rewriter)
        if sql is None or keeps_server:
            return None
        verdict = self.classifier.classify(sql.decode("utf-8", "replace"))
        if verdict.route is Route.REPLICA or tracker.status != b"I":
            return None
        if not unsynced:
            return b""
        tracker.push(_HIDDEN_SYNC_SLOT)
        return HIDDEN_SYNC
