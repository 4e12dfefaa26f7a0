"""Sans-IO: the LISTEN / UNLISTEN messages a transaction-pooling client sends, and the replies the proxy gives them.

In transaction pooling the proxy answers LISTEN, UNLISTEN and UNLISTEN * itself (listen_flow.py);
this module decides which client messages those are and what the server would have answered:

- `listen_commands(sql)`: the commands of a text made only of LISTEN / UNLISTEN statements (None
  for any other text). The real PostgreSQL parser (pglast) reads the channel names, so quoting,
  case folding (ASCII letters only, as the server does in UTF-8), `U&"..."` escapes and the
  truncation of identifiers to 63 bytes (on a character boundary) are the server's own.
- `take_batch(data, status)`: the leading complete messages of a client batch that are such
  statements — simple Queries, or whole extended-protocol groups (an unnamed Parse of one such
  statement, then Bind / Describe / Execute / Flush of it, ending with Sync) — with the replies a
  server in transaction status `status` (ReadyForQuery's I, T or E) would send and the commands
  that take effect. In a failed transaction (E) the server refuses every statement with 25P02 and
  the commands are not taken. Anything else (another statement, a group without its Sync yet)
  ends the batch: it goes to a server as usual. The unnamed statement lives only within its group.
- `TransactionOutcome`: reads a server's replies to a client inside a transaction block, to tell
  whether that transaction committed (its last CommandComplete before ReadyForQuery I is COMMIT and
  no error follows) — LISTENs made inside it take effect only then, as in PostgreSQL.
"""

from __future__ import annotations

import functools
import json
import re
import struct
from dataclasses import dataclass

from pglast import parser

from .wire import messages as m

LISTEN, UNLISTEN, UNLISTEN_ALL = "LISTEN", "UNLISTEN", "UNLISTEN *"
_U32 = struct.Struct("!I")
_QUERY, _PARSE, _BIND, _DESCRIBE, _EXECUTE, _SYNC, _FLUSH, _CLOSE = 0x51, 0x50, 0x42, 0x44, 0x45, 0x53, 0x48, 0x43
# The first byte of a text that may start with LISTEN / UNLISTEN (letters, or space / comment first).
_FIRST = frozenset(b"lLuU \t\r\n/-(")
_START = re.compile(rb"(?:\s|/\*(?:[^*]|\*(?!/))*\*/|--[^\n\r]*)*(?:un)?listen\b", re.IGNORECASE)
_ABORTED = m.error_response("25P02", "current transaction is aborted, commands ignored until end of transaction block")
_NO_DATA = m.message(b"n")
_NO_PARAMETERS = m.message(b"t", b"\x00\x00")
_PARSE_COMPLETE, _BIND_COMPLETE, _CLOSE_COMPLETE = m.message(b"1"), m.message(b"2"), m.message(b"3")


@dataclass(frozen=True, slots=True)
class ListenCommand:
    """One LISTEN ch, UNLISTEN ch or UNLISTEN * (channel b"")."""

    kind: str
    channel: bytes = b""

    @property
    def tag(self) -> bytes:
        """The CommandComplete the server sends for it."""
        return m.message(b"C", (b"LISTEN" if self.kind == LISTEN else b"UNLISTEN") + b"\x00")


@dataclass(frozen=True, slots=True)
class ListenBatch:
    """The leading LISTEN messages of a client batch: `consumed` bytes, answered by `reply`."""

    consumed: int
    commands: tuple[ListenCommand, ...]
    reply: bytes


def may_be_listen(sql: bytes) -> bool:
    """Cheap: the text starts (after spaces and comments) with LISTEN or UNLISTEN."""
    return bool(sql) and sql[0] in _FIRST and _START.match(sql) is not None


def listen_commands(sql: str) -> tuple[ListenCommand, ...] | None:
    """The commands of a text made only of LISTEN / UNLISTEN statements, else None (module docstring)."""
    if len(sql) > 4096 or "\x00" in sql:
        return None
    return _parsed(sql)


@functools.lru_cache(maxsize=1024)
def _parsed(sql: str) -> tuple[ListenCommand, ...] | None:
    try:
        statements = json.loads(parser.parse_sql_json(sql)).get("stmts", [])
    except (parser.ParseError, ValueError, RecursionError):
        return None
    commands: list[ListenCommand] = []
    for item in statements:
        stmt = item.get("stmt", {})
        if "ListenStmt" in stmt:
            commands.append(ListenCommand(LISTEN, str(stmt["ListenStmt"].get("conditionname", "")).encode()))
        elif "UnlistenStmt" in stmt:
            name = stmt["UnlistenStmt"].get("conditionname")
            commands.append(ListenCommand(UNLISTEN, str(name).encode()) if name is not None
                            else ListenCommand(UNLISTEN_ALL))
        else:
            return None
    return tuple(commands) if commands else None


def listen_only(sql: bytes) -> tuple[ListenCommand, ...] | None:
    """The commands of a query text made only of LISTEN / UNLISTEN statements (after the cheap check), else None."""
    if not may_be_listen(sql):
        return None
    return listen_commands(sql.decode("utf-8", "replace"))


def _query_commands(body: bytes) -> tuple[ListenCommand, ...] | None:
    return listen_only(body[:-1])


def take_batch(data: bytes | bytearray, status: bytes,
               statements: dict[bytes, tuple[ListenCommand, ...]] | None = None) -> ListenBatch | None:
    """The leading LISTEN / UNLISTEN messages of `data` and their replies (module docstring); None if none.

    `statements`: the client's prepared statements that are such commands (by name), updated for the
    batch taken (Parse adds, Close removes; the unnamed statement does not outlive its batch)."""
    known = statements if statements is not None else {}
    pos, size = 0, len(data)
    commands: list[ListenCommand] = []
    reply: list[bytes] = []
    while size - pos >= 5:
        kind = data[pos]
        end = pos + 1 + _U32.unpack_from(data, pos + 1)[0]
        if end > size or end - pos < 5:
            break
        if kind == _QUERY:
            found = _query_commands(bytes(data[pos + 5:end]))
            if found is None:
                break
            if status == b"E":
                reply += (_ABORTED, m.ready_for_query(b"E"))
            else:
                commands += found
                reply += [c.tag for c in found]
                reply.append(m.ready_for_query(status))
            pos = end
            continue
        group = _extended_group(data, pos, size, status, known)
        if group is None:
            break
        pos, taken, replies = group
        commands += taken
        reply += replies
    if pos == 0:
        return None
    return ListenBatch(pos, tuple(commands), b"".join(reply))


def _cstr(body: bytes, start: int) -> tuple[bytes, int] | None:
    end = body.find(b"\x00", start)
    return None if end < 0 else (body[start:end], end + 1)


def _extended_group(data: bytes | bytearray, pos: int, size: int, status: bytes,
                    known: dict[bytes, tuple[ListenCommand, ...]]) -> tuple[int, list[ListenCommand], list[bytes]] | None:
    """Extended-protocol messages up to and with a Sync (or a Flush that ends `data`) that all concern LISTEN
    statements: Parse of one (named or not), Bind of one to the unnamed portal, Describe / Execute / Close of
    them, Flush. None if any message is something else or the Sync has not come yet (then nothing in `known`
    changed)."""
    statements = dict(known)
    portal: tuple[ListenCommand, ...] | None = None
    failed = status == b"E"
    replies: list[bytes] = []
    commands: list[ListenCommand] = []
    while size - pos >= 5:
        kind = data[pos]
        end = pos + 1 + _U32.unpack_from(data, pos + 1)[0]
        if end > size or end - pos < 5:
            return None
        body = bytes(data[pos + 5:end])
        pos = end
        if kind == _SYNC or (kind == _FLUSH and pos == size):   # a Flush ending the client's bytes: asyncpg's prepare
            if kind == _SYNC:
                replies.append(m.ready_for_query(status))
            statements.pop(b"", None)
            known.clear()
            known.update(statements)
            return pos, commands, replies
        if kind == _FLUSH or (failed and replies):
            continue   # (a failed transaction: the server skips what follows its error until Sync)
        if kind == _PARSE:
            name = _cstr(body, 0)
            query = _cstr(body, name[1]) if name is not None else None
            if name is None or query is None:
                return None
            found = listen_only(query[0])
            if found is None or len(found) != 1:
                return None   # several commands cannot be one prepared statement: the server's own error
            statements[name[0]] = found
            reply = _PARSE_COMPLETE
        elif kind == _BIND:
            portal_name = _cstr(body, 0)
            statement = _cstr(body, portal_name[1]) if portal_name is not None else None
            if portal_name is None or portal_name[0] or statement is None or statement[0] not in statements:
                return None
            portal = statements[statement[0]]
            reply = _BIND_COMPLETE
        elif kind == _DESCRIBE or kind == _CLOSE:
            target = _cstr(body, 1)
            if not body or target is None:
                return None
            if body[0] == 0x53 and target[0] in statements:   # a statement
                if kind == _CLOSE:
                    del statements[target[0]]
                reply = _NO_PARAMETERS + _NO_DATA if kind == _DESCRIBE else _CLOSE_COMPLETE
            elif body[0] == 0x50 and not target[0] and portal is not None:   # the unnamed portal
                reply = _NO_DATA if kind == _DESCRIBE else _CLOSE_COMPLETE
            else:
                return None
        elif kind == _EXECUTE:
            if not body.startswith(b"\x00") or portal is None:
                return None
            commands += portal
            reply = portal[0].tag
        else:
            return None
        if failed:   # the first message of the group is refused (25P02); nothing of it takes effect
            statements, commands, reply = dict(known), [], _ABORTED
        replies.append(reply)
    return None   # no Sync yet


class TransactionOutcome:
    """Follows the server's replies to a client inside a transaction block (module docstring)."""

    __slots__ = ("last_tag", "error", "_buf", "_skip")

    def __init__(self) -> None:
        self.last_tag = b""
        self.error = False   # an ErrorResponse after the last CommandComplete
        self._buf = b""
        self._skip = 0

    @property
    def committed(self) -> bool:
        return self.last_tag == b"COMMIT" and not self.error

    def feed(self, data: bytes) -> None:
        if self._skip:
            n = min(self._skip, len(data))
            self._skip -= n
            data = data[n:]
        if self._buf:
            data = self._buf + data
            self._buf = b""
        pos, size = 0, len(data)
        while size - pos >= 5:
            kind = data[pos]
            end = pos + 1 + _U32.unpack_from(data, pos + 1)[0]
            if kind == 0x43 or kind == 0x45:   # CommandComplete / ErrorResponse: small, wait for them
                if end > size:
                    break
                if kind == 0x43:
                    self.last_tag = bytes(data[pos + 5:end - 1])
                    self.error = False
                else:
                    self.error = True
            elif end > size:
                self._skip = end - size
                return
            pos = end
        self._buf = bytes(data[pos:])
