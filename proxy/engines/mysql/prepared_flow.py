"""A MySQL client's prepared statements relayed to its server: ids mapped, re-prepared where missing.

The bookkeeping itself is sans-IO in statements.py (the client's ids and texts, each server
connection's ids); these functions of the session apply it to the commands in flight:
`statement_command` rewrites a COM_STMT_EXECUTE / SEND_LONG_DATA / RESET / FETCH to the attached
server's id (or, when that server never prepared the text, has it prepared first and holds the
command), `take_prepared` records what the server's PREPARE_OKs tell, and `sync_insert_id` gives
a server connection the client's LAST_INSERT_ID() before a statement that reads it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ...errors import ProtocolViolation
from .command_framing import NO_RESPONSE
from .session_state import might_change_session, session_effects
from .statements import ClientStatements, execute_payload
from .wire.codes import Command
from .wire.packets import encode_packets
from .wire.responses import DROP_ALL, Slot

if TYPE_CHECKING:
    from .server import MysqlServerConnection
    from .session import MysqlClientSession


def close_statement(prepared: ClientStatements, payload: bytes) -> None:
    """COM_STMT_CLOSE: the client's statement is gone (no server hears of it; no reply either)."""
    if len(payload) >= 5:
        prepared.close(int.from_bytes(payload[1:5], "little"))


def statement_command(session: MysqlClientSession, payload: bytes, server: MysqlServerConnection) -> bytes | None:
    """A COM_STMT_EXECUTE/SEND_LONG_DATA/RESET/FETCH under the server's id (None: re-preparing first,
    with the COM_STMT_PREPARE to send before the held command in session._reprepare)."""
    if len(payload) < 5:
        raise ProtocolViolation("truncated statement command")
    command = payload[0]
    client_id = int.from_bytes(payload[1:5], "little")
    statement = session.prepared.by_id.get(client_id)
    tracker = server.tracker
    if statement is None:   # the server's own "unknown prepared statement handler" is right
        if command not in NO_RESPONSE:
            tracker.push(Slot(command))
        return encode_packets(payload, 0)[0]
    server_id = server.statements.get(statement.sql)
    if server_id is None:
        session._awaiting_prepare = client_id
        tracker.push(Slot(Command.STMT_PREPARE, DROP_ALL, stmt_id=client_id))
        session._reprepare = encode_packets(bytes((Command.STMT_PREPARE,)) + statement.sql, 0)[0]
        return None
    before = b""
    if command == Command.STMT_EXECUTE:
        if len(payload) > 5 and payload[5] & 0x0F:
            session.pin("server-side cursor", server)
        if statement.uses_last_insert_id:
            before = sync_insert_id(session, server)
        body = execute_payload(payload, server_id, statement, server.statements)
        if session.prepared_tap is not None:   # a recording or a mirror
            session.prepared_tap.execute(statement.sql, statement.num_params, statement.types, payload,
                                         session._long_data)
        session._long_data = False
    else:
        body = payload[:1] + server_id.to_bytes(4, "little") + payload[5:]
        if command == Command.STMT_SEND_LONG_DATA:
            session._long_data = True
        elif command == Command.STMT_RESET:
            session._long_data = False
    if command not in NO_RESPONSE:
        tracker.push(Slot(command))
    session.queries += command == Command.STMT_EXECUTE
    return before + encode_packets(body, 0)[0]


def take_prepared(session: MysqlClientSession, server: MysqlServerConnection) -> None:
    """Statements the server just prepared: record their server ids (and close replaced ones)."""
    tracker = server.tracker
    prepared = session.prepared
    for done in tracker.prepared:
        sql = prepared.prepared(done.client_id, done.num_params, done.num_columns)
        if sql is None:
            statement = prepared.by_id.get(done.client_id)
            sql = statement.sql if statement is not None else None
        if sql is None:
            continue
        statement = prepared.by_id.get(done.client_id)
        if statement is not None and might_change_session(sql):
            statement.uses_last_insert_id = session_effects(sql.decode("utf-8", "replace")).uses_last_insert_id
        for stale in server.statements.add(sql, done.statement_id):
            server.write(encode_packets(Command.STMT_CLOSE.to_bytes(1, "little") + stale.to_bytes(4, "little"),
                                        0)[0])
        if done.client_id == session._awaiting_prepare:
            session._awaiting_prepare = 0
    tracker.prepared.clear()
    for client_id in tracker.failed_prepares:
        prepared.failed(client_id)
        if client_id == session._awaiting_prepare:
            # The statement no longer prepares (a table dropped...): let the client's command fail.
            session._awaiting_prepare = 0
            prepared.close(client_id)
    tracker.failed_prepares.clear()


def sync_insert_id(session: MysqlClientSession, server: MysqlServerConnection) -> bytes:
    """A statement reads LAST_INSERT_ID(): the hidden `SELECT LAST_INSERT_ID(n)` that first gives this
    server connection the client's own value (the id of its last insert, SPEC §12), if it lacks it."""
    if session.pinned is not None or session.session_mode or server.insert_id == session._insert_id:
        return b""
    server.insert_id = session._insert_id
    server.tracker.push(Slot(Command.QUERY, DROP_ALL))
    return encode_packets(b"\x03SELECT LAST_INSERT_ID(%d)" % session._insert_id, 0)[0]
