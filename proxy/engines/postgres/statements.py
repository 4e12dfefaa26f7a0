"""Named prepared statements in transaction pooling: naming, and rewriting Parse/Bind/Describe/Close.

A client's statement name is private to that client; on the server the statement lives under
a proxy-wide name derived from its text and parameter types, so every client preparing the
same query shares one server-side statement per server connection.
"""

from __future__ import annotations

import logging
import struct
from dataclasses import dataclass

from ...errors import ProtocolViolation
from .wire.messages import message
from .wire.responses import BIND, DESCRIBE, DESCRIBED, PARSED, Slot

log = logging.getLogger("dbproxy.client")

_HDR = struct.Struct("!cI")


@dataclass(frozen=True, slots=True)
class ParseMessage:
    """A decoded Parse: statement name, query text and the raw parameter-type tail."""

    name: bytes
    query: bytes
    tail: bytes   # int16 count + int32 OIDs, unchanged

    def encode(self, name: bytes) -> bytes:
        return message(b"P", name + b"\x00" + self.query + b"\x00" + self.tail)


def decode_parse(body: bytes) -> ParseMessage:
    try:
        name_end = body.index(b"\x00")
        query_end = body.index(b"\x00", name_end + 1)
    except ValueError as exc:
        raise ProtocolViolation("malformed Parse message") from exc
    return ParseMessage(body[:name_end], body[name_end + 1:query_end], body[query_end + 1:])


def bind_statement(body: bytes) -> tuple[int, int]:
    """Span (start, end) of the statement name inside a Bind body (after the portal name)."""
    try:
        start = body.index(b"\x00") + 1
        return start, body.index(b"\x00", start)
    except ValueError as exc:
        raise ProtocolViolation("malformed Bind message") from exc


def unnamed_bind(data: bytes, start: int, end: int) -> bool:
    """Whether the Bind body at data[start:end] binds the unnamed statement (the name after the portal's is empty)."""
    portal_end = data.find(b"\x00", start, end)
    return 0 <= portal_end < end - 1 and data[portal_end + 1] == 0


def rewrite_bind(body: bytes, start: int, end: int, name: bytes) -> bytes:
    return message(b"B", body[:start] + name + body[end:])


def target_name(body: bytes) -> tuple[int, bytes]:
    """Describe/Close body → (b'S' or b'P' as int, name)."""
    if len(body) < 2 or body[-1] != 0 or body[0] not in (0x53, 0x50):
        raise ProtocolViolation("malformed Describe/Close message")
    return body[0], body[1:-1]


def describe_statement(name: bytes) -> bytes:
    return message(b"D", b"S" + name + b"\x00")


def close_statement(name: bytes) -> bytes:
    return message(b"C", b"S" + name + b"\x00")


Scope = tuple[str, str]   # (server user, database): where a statement was prepared successfully
_MAX_KNOWN = 20_000       # confirmed statements and descriptions kept (then forgotten, and learnt again)


class StatementNames:
    """Proxy-wide server-side names: one per distinct (query text, parameter types), and what is known of them.

    - `confirmed`: (name, scope) pairs whose Parse succeeded on some server connection: a client's
      Parse of one is answered without a server (see rewrite.StatementRewriter.answer_alone);
    - `descriptions`: the server's reply to Describe of a statement (ParameterDescription and
      RowDescription or NoData);
    - `retired`: names whose cached plan the server invalidated ("cached plan must not change result
      type"): the query gets a new name, and clients still using the old one move to it on their next Bind.

    On DDL through the proxy (`schema_changed`) every query gets a fresh name at its next Parse, so a
    client preparing a statement after the change never lands on a server copy prepared before it
    (whose parameter and result types are the old ones); what was confirmed and described is forgotten.
    """

    def __init__(self, prefix: bytes = b"dbproxy_") -> None:
        self._names: dict[tuple[bytes, bytes], bytes] = {}
        self._keys: dict[bytes, tuple[bytes, bytes]] = {}
        self._prefix = prefix
        self._made = 0
        self.confirmed: set[tuple[bytes, Scope]] = set()
        self.descriptions: dict[tuple[bytes, Scope], bytes] = {}
        self.retired: set[bytes] = set()

    def name_for(self, parse: ParseMessage) -> bytes:
        key = (parse.query, parse.tail)
        name = self._names.get(key)
        if name is None:
            self._made += 1
            name = self._prefix + str(self._made).encode()
            self._names[key] = name
            self._keys[name] = key
        return name

    def confirm(self, name: bytes, scope: Scope) -> None:
        if name in self.retired:
            return
        if len(self.confirmed) >= _MAX_KNOWN:
            self.confirmed.clear()
        self.confirmed.add((name, scope))

    def describe(self, name: bytes, scope: Scope, reply: bytes) -> None:
        if name in self.retired:
            return
        if len(self.descriptions) >= _MAX_KNOWN:
            self.descriptions.clear()
        self.descriptions[(name, scope)] = reply

    def schema_changed(self) -> None:
        """A table, type or view may have changed (DDL went through the proxy): each query gets a fresh
        server-side name at its next Parse, and descriptions are learnt again from the servers. Statements
        clients prepared before keep their names: a server copy of one prepared before the change reports
        a changed result type itself (0A000), as directly."""
        self._names.clear()
        self.confirmed.clear()
        self.descriptions.clear()
        if len(self._keys) >= _MAX_KNOWN:
            self._keys.clear()   # only retire() reads it: an old name is then retired without its key

    def retire(self, name: bytes) -> None:
        """The server invalidated name's plan: its query gets a fresh name from now on."""
        key = self._keys.pop(name, None)
        if key is not None and self._names.get(key) == name:
            del self._names[key]
        self.retired.add(name)
        self.confirmed = {known for known in self.confirmed if known[0] != name}
        self.descriptions = {known: reply for known, reply in self.descriptions.items() if known[0] != name}

    def take_news(self, news: list[tuple[int, bytes, bytes]], scope: Scope, peer: str) -> None:
        """What a server said about named statements (ResponseTracker.news, emptied here): remembered."""
        for event, name, data in news:
            if event == PARSED:
                self.confirm(name, scope)
            elif event == DESCRIBED:
                self.describe(name, scope, data)
            else:
                self.retire(name)
                log.info("client %s: the server invalidated the plan of prepared statement %s (its result type "
                         "changed): it is prepared anew under another name", peer, name.decode())
        news.clear()

    def __len__(self) -> int:
        return len(self._names)


@dataclass(slots=True)
class ClientStatement:
    """A client's prepared statement: the server-side name and the Parse that creates it there."""

    server_name: bytes
    parse: bytes   # a complete Parse message under server_name
    query: bytes   # the statement text (for routing on split endpoints)
    source: ParseMessage   # the client's Parse (to move to a new name when server_name retires)
    bind_slot: Slot        # the expected replies of a Bind / Describe of it (shared by its uses)
    describe_slot: Slot

    @classmethod
    def of(cls, parse: ParseMessage, server_name: bytes) -> ClientStatement:
        return cls(server_name, parse.encode(server_name), parse.query, parse,
                   Slot(BIND, payload=server_name), Slot(DESCRIBE, payload=server_name))
