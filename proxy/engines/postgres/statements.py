"""Named prepared statements in transaction pooling: naming, and rewriting Parse/Bind/Describe/Close.

A client's statement name is private to that client; on the server the statement lives under
a proxy-wide name derived from its text and parameter types, so every client preparing the
same query shares one server-side statement per server connection.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from ...errors import ProtocolViolation
from .wire.messages import message

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


class StatementNames:
    """Proxy-wide server-side names: one per distinct (query text, parameter types)."""

    def __init__(self, prefix: bytes = b"dbproxy_") -> None:
        self._names: dict[tuple[bytes, bytes], bytes] = {}
        self._prefix = prefix

    def name_for(self, parse: ParseMessage) -> bytes:
        key = (parse.query, parse.tail)
        name = self._names.get(key)
        if name is None:
            name = self._prefix + str(len(self._names) + 1).encode()
            self._names[key] = name
        return name

    def __len__(self) -> int:
        return len(self._names)


@dataclass(slots=True)
class ClientStatement:
    """A client's prepared statement: the server-side name and the Parse that creates it there."""

    server_name: bytes
    parse: bytes   # a complete Parse message under server_name
    query: bytes   # the statement text (for routing on split endpoints)
