"""Transaction replay on failover for one PostgreSQL client (failover.replay): core/replay_flow.py with PostgreSQL's parts.

Units end at Query, Sync and FunctionCall (replay_wire.py); a named statement a Bind runs is
known from the client's StatementRewriter; the transaction status is ReadyForQuery's.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ...core.replay import UnitTraits
from ...core.replay_flow import ReplayFlow
from ...errors import ProxyError
from ...routing.classify import Route
from .replay_wire import PgResultDigest, record_messages, unit_traits
from .statements import ClientStatement
from .wire.responses import ResponseTracker

if TYPE_CHECKING:
    from .session import PgClientSession


_NO_GUCS: dict[str, str] = {}   # never changed: replaced, not updated
_NO_STATEMENTS: dict[bytes, ClientStatement | None] = {}   # the same


class PgReplay(ReplayFlow):
    """One PostgreSQL client's transaction record and replay."""

    session: PgClientSession

    digest: PgResultDigest

    def __init__(self, session: PgClientSession) -> None:
        super().__init__(session, PgResultDigest())
        self._unsynced = False
        self._gucs = _NO_GUCS   # the client's settings when its transaction began
        self._statements = _NO_STATEMENTS   # its named statements that the transaction redefined, as they were

    def _record(self, data: bytes) -> None:
        rewriter = self.session.rewriter
        if rewriter is None:
            record_messages(data, self.record)
            return
        touched: list[bytes] = []
        record_messages(data, self.record, touched)
        for name in touched:   # what the client's statement was called before the transaction redefined it
            if name not in self._statements:
                if self._statements is _NO_STATEMENTS:
                    self._statements = {}
                self._statements[name] = rewriter.statements.get(name)

    def _traits(self, unit: bytes) -> UnitTraits:
        session = self.session
        classifier = session.cluster.classifier
        rewriter = session.rewriter

        def reads_only(sql: bytes) -> bool:
            return classifier.classify(sql.decode("utf-8", "replace")).route is Route.REPLICA

        def query_of(bind_body: bytes) -> bytes | None:
            return rewriter.query_of(bind_body) if rewriter is not None else None

        return unit_traits(unit, query_of, reads_only)

    def _keep_state(self) -> None:
        client = self.session.gucs.client
        self._gucs = dict(client) if client else _NO_GUCS
        self._statements = _NO_STATEMENTS

    def _restore_state(self) -> None:
        client = self.session.gucs.client
        client.clear()
        client.update(self._gucs)
        rewriter = self.session.rewriter
        if rewriter is not None:
            for name, statement in self._statements.items():
                if statement is None:
                    rewriter.statements.pop(name, None)
                else:
                    rewriter.statements[name] = statement

    def _replaying(self, on: bool) -> None:
        # The record's Parse messages passed the "already exists" check once: re-sent, they are the client's
        # own statements being prepared again on the new writer.
        if self.session.rewriter is not None:
            self.session.rewriter.replaying = on

    def _in_transaction(self, tracker: ResponseTracker) -> bool:
        return tracker.status != b"I"

    def _client_saw_fatal(self, tracker: ResponseTracker) -> bool:
        return tracker.farewell_forwarded and not self.digest.held

    def _unhold(self, relay: bool) -> None:
        held, self.digest.held = self.digest.held, b""
        if relay and held:
            self.session.write(held)

    def _suspend(self) -> None:
        session = self.session
        self._unsynced, session.unsynced = session.unsynced, False
        session._copy_skip = 0
        session._capturing = False

    def _fail(self, tracker: ResponseTracker, err: ProxyError) -> None:
        self.session.unsynced = self._unsynced
        self.session._fail_in_flight(tracker, err)
