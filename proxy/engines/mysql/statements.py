"""Binary prepared statements in transaction pooling: client statement ids are the proxy's (SPEC §12).

Sans-IO. A client's COM_STMT_PREPARE gets an id from the client's own counter (written into the
PREPARE_OK the client sees, see responses.Slot.stmt_id); the statement then lives on any number of
server connections under the ids those servers chose. `ClientStatements` keeps what the client
prepared (text, parameter count, the parameter types it last sent); `ServerStatements` is the
per-server-connection map text -> server id, least recently used first, bounded.

COM_STMT_EXECUTE names its parameter types only when the new-params-bound flag is set; a server
that never saw them for this statement, or last had another client's types for the same text, would
misread the values, so `execute_payload` adds the types the client sent earlier when the server's
differ.
"""

from __future__ import annotations

import struct
from collections import OrderedDict
from dataclasses import dataclass, field

from ...errors import ProtocolViolation

_U32 = struct.Struct("<I")
_EXECUTE_HEAD = 10   # command, statement id (4), flags, iteration count (4)


@dataclass(slots=True)
class ClientStatement:
    """One statement a client prepared."""

    sql: bytes
    num_params: int
    num_columns: int
    types: bytes = b""        # 2 bytes per parameter, as the client last bound them
    uses_last_insert_id: bool = False   # its text calls LAST_INSERT_ID() (prepared_flow.py gives the server the client's)


@dataclass
class ClientStatements:
    """A client's prepared statements by the ids the proxy gave it."""

    by_id: dict[int, ClientStatement] = field(default_factory=dict)
    preparing: dict[int, bytes] = field(default_factory=dict)   # id -> text, until PREPARE_OK
    _next_id: int = 0

    def new_id(self, sql: bytes) -> int:
        self._next_id += 1
        self.preparing[self._next_id] = sql
        return self._next_id

    def prepared(self, client_id: int, num_params: int, num_columns: int) -> bytes | None:
        """The server's PREPARE_OK for client_id arrived: the statement exists (returns its text)."""
        sql = self.preparing.pop(client_id, None)
        if sql is not None:
            self.by_id[client_id] = ClientStatement(sql, num_params, num_columns)
        return sql

    def failed(self, client_id: int) -> None:
        self.preparing.pop(client_id, None)

    def close(self, client_id: int) -> None:
        self.by_id.pop(client_id, None)

    def clear(self) -> None:
        self.by_id.clear()
        self.preparing.clear()


class ServerStatements:
    """One server connection's statements: text -> server id, which of them have parameter types."""

    __slots__ = ("ids", "typed", "limit")

    def __init__(self, limit: int) -> None:
        self.ids: OrderedDict[bytes, int] = OrderedDict()
        # server id -> the parameter types the server last had for it (shared by every client that
        # runs the same text on this connection: each client's own types must be the ones in force)
        self.typed: dict[int, bytes] = {}
        self.limit = limit

    def get(self, sql: bytes) -> int | None:
        server_id = self.ids.get(sql)
        if server_id is not None:
            self.ids.move_to_end(sql)
        return server_id

    def add(self, sql: bytes, server_id: int) -> list[int]:
        """Record a statement the server prepared; returns server ids to close (replaced or evicted)."""
        stale = []
        old = self.ids.pop(sql, None)
        if old is not None and old != server_id:
            stale.append(old)
        self.ids[sql] = server_id
        while len(self.ids) > self.limit:
            _, evicted = self.ids.popitem(last=False)
            stale.append(evicted)
        for server_id in stale:
            self.typed.pop(server_id, None)
        return stale

    def clear(self) -> None:
        self.ids.clear()
        self.typed.clear()


def execute_payload(payload: bytes, server_id: int, statement: ClientStatement, server: ServerStatements) -> bytes:
    """A client's COM_STMT_EXECUTE for `server`: its id, and parameter types when the server lacks them.

    Also remembers the types the client sends, for the next server.
    """
    if len(payload) < _EXECUTE_HEAD:
        raise ProtocolViolation("truncated COM_STMT_EXECUTE")
    n = statement.num_params
    head = payload[:1] + _U32.pack(server_id) + payload[5:_EXECUTE_HEAD]
    if not n:
        return head + payload[_EXECUTE_HEAD:]
    bitmap_end = _EXECUTE_HEAD + (n + 7) // 8
    if len(payload) <= bitmap_end:
        raise ProtocolViolation("truncated COM_STMT_EXECUTE")
    if payload[bitmap_end]:   # new-params-bound flag: the types follow
        types = payload[bitmap_end + 1:bitmap_end + 1 + 2 * n]
        if len(types) != 2 * n:
            raise ProtocolViolation("truncated COM_STMT_EXECUTE parameter types")
        statement.types = types
        server.typed[server_id] = types
        return head + payload[_EXECUTE_HEAD:]
    if not statement.types or server.typed.get(server_id) == statement.types:
        return head + payload[_EXECUTE_HEAD:]
    server.typed[server_id] = statement.types
    return head + payload[_EXECUTE_HEAD:bitmap_end] + b"\x01" + statement.types + payload[bitmap_end + 1:]
