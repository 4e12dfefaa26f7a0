"""Transaction replay on failover for one MySQL client (failover.replay): core/replay_flow.py with MySQL's parts.

A unit is one command; COM_QUERY, COM_PING and COM_INIT_DB are replayable, any other command (the
COM_STMT_* of server-side prepared statements, LOAD DATA LOCAL, COM_CHANGE_USER...) makes the
transaction not replayable, and so does a client that sends a command before the previous one's
answer (then more than one would be in flight). The results are hashed as relayed, packet headers
included (a replayed answer has the same sequence ids). The transaction status is the OK/EOF
status flags': a statement outside a transaction with autocommit on that may write, a COMMIT, and
every statement that commits implicitly (DDL, BEGIN inside a transaction, LOCK TABLES, SET
autocommit...) have an unknown outcome when in flight.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import TYPE_CHECKING

from ...core.replay import ResultDigest, TransactionRecord, UnitTraits
from ...core.replay_flow import ReplayFlow
from ...errors import ProxyError
from ...routing.classify import Route
from .command_framing import command_end
from .session_state import SetVariable
from .wire.codes import MAX_PACKET_PAYLOAD, Command, Status
from .wire.responses import PASS, ResponseTracker

if TYPE_CHECKING:
    from .session import MysqlClientSession

_REPLAYABLE = frozenset((Command.QUERY, Command.PING, Command.INIT_DB))
# Statements that never commit by themselves (everything else may: DDL, LOCK TABLES, SET autocommit...).
_NO_COMMIT = re.compile(rb"\s*(?:\(\s*)*(?:select|insert|update|delete|replace|with|values|table|show|describe|desc|"
                        rb"explain|do|savepoint|release\s+savepoint|rollback\s+(?:work\s+)?to|set\s+(?!.*autocommit))\b",
                        re.IGNORECASE | re.DOTALL)
_BEGIN = re.compile(rb"\s*(?:begin|start\s+transaction)\b", re.IGNORECASE)
_ROLLBACK = re.compile(rb"\s*rollback\b(?!\s+(?:work\s+)?to\b)", re.IGNORECASE)
_KILL = re.compile(rb"\s*kill\b", re.IGNORECASE)   # acts on other connections: never run twice
_KILL_START = frozenset((b"k", b"K", b" ", b"\t", b"\r", b"\n"))


def record_commands(data: bytes, record: TransactionRecord, pipelined: bool) -> None:
    """Add the complete commands at the start of data to record, one unit each."""
    if record.refused:
        return
    if pipelined:
        record.refuse("a command sent before the previous one was answered")
        return
    size, pos = len(data), 0
    view = memoryview(data)
    while size - pos >= 5:
        end = command_end(data, pos)
        if end > size:
            return
        command = data[pos + 4]
        if command == Command.QUIT:
            return
        if command not in _REPLAYABLE:
            name = Command(command).name if command in Command._value2member_map_ else str(command)
            record.refuse(f"COM_{name}")
            return
        if command == Command.QUERY and data[pos + 5:pos + 6] in _KILL_START and _KILL.match(data, pos + 5, end):
            record.refuse("KILL")
            return
        record.add(view[pos:end], True)
        pos = end


def command_traits(unit: bytes, status: int, reads_only: Callable[[bytes], bool]) -> UnitTraits:
    """The traits of one command not yet answered; status: the last OK/EOF status flags."""
    command = unit[4]
    if command != Command.QUERY:
        return UnitTraits()   # COM_PING, COM_INIT_DB: change nothing in the database
    if len(unit) - 4 >= MAX_PACKET_PAYLOAD:
        return UnitTraits(commits=True)   # a statement of 16 MiB or more: not looked at, assumed the worst
    sql = unit[5:]
    in_transaction = bool(status & Status.IN_TRANS)
    begins = _BEGIN.match(sql) is not None
    several = b";" in sql.rstrip(b"; \t\r\n")
    if several or (begins and in_transaction) or (not begins and _NO_COMMIT.match(sql) is None
                                                  and _ROLLBACK.match(sql) is None):
        return UnitTraits(commits=True)
    return UnitTraits(
        begins=begins or not status & Status.AUTOCOMMIT,   # autocommit off: the statement opens a transaction
        ends=_ROLLBACK.match(sql) is not None,
        reads_only=reads_only(sql),
    )


class MysqlReplay(ReplayFlow):
    """One MySQL client's transaction record and replay."""

    session: MysqlClientSession

    def __init__(self, session: MysqlClientSession) -> None:
        super().__init__(session, ResultDigest())
        self._status = 0
        self._state: tuple[str, dict[str, SetVariable], bool] = ("", {}, False)   # when the transaction began

    def _record(self, data: bytes) -> None:
        server = self.session.server
        pipelined = server is not None and any(s.action == PASS for s in server.tracker.slots)
        record_commands(data, self.record, pipelined)

    def _answered(self, tracker: ResponseTracker) -> tuple[int, int]:
        in_flight = any(s.action == PASS for s in tracker.slots)
        self._status = tracker.status
        return 0, self.record.first + len(self.record.units) - (1 if in_flight else 0)

    def _traits(self, unit: bytes) -> UnitTraits:
        classifier = self.session.cluster.classifier

        def reads_only(sql: bytes) -> bool:
            return classifier.classify(sql.decode("utf-8", "replace")).route is Route.REPLICA

        return command_traits(unit, self._status, reads_only)

    def _keep_state(self) -> None:
        state = self.session.state_vars
        self._state = (state.schema, dict(state.variables), state.multi_statements)

    def _restore_state(self) -> None:
        state = self.session.state_vars
        state.schema, variables, state.multi_statements = self._state
        state.variables = dict(variables)

    def _in_transaction(self, tracker: ResponseTracker) -> bool:
        return tracker.in_transaction

    def _suspend(self) -> None:
        session = self.session
        session._sets_check = session._schema_check = None
        session._gtid_asked = False

    def _fail(self, tracker: ResponseTracker, err: ProxyError) -> None:
        self.session._fail_in_flight(any(s.action == PASS for s in tracker.slots), tracker.in_transaction, err)
