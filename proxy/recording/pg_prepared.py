"""PostgreSQL prepared-statement executions for a recording or a mirror, sans-IO: Parse / Bind / Execute / Close per session.

A `PgTap` sits on a client session only while a recording covers it or its cluster mirrors
(session.prepared_tap; None otherwise, so the relay pays one attribute check per extended-protocol
message). It keeps the client's statements (name -> text, declared parameter types) and portals
(name -> statement and the Bind) and hands each Execute of a freshly bound portal to each of its
sinks (the recording's, the mirror's) as a `Bound`, whose values are decoded (into an `Execution`)
only when a sink asks: the mirror asks only for the transactions it samples, and in its worker,
off the client's path. An Execute that continues a suspended
portal (max rows reached) is not handed on again: a replay runs the whole portal at once. A
statement parsed before the tap was installed is unknown here: its executions are handed on with
`query` None (the replay counts them as not replayable, the mirror as unmirrorable).
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from typing import Any, NamedTuple

_I16 = struct.Struct("!h")
_I32 = struct.Struct("!i")
_NO_FORMATS: tuple[int, ...] = ()


class Execution(NamedTuple):   # a tuple: made per Execute while a tap is on, cheaper than a frozen dataclass
    query: bytes | None
    types: tuple[int, ...]          # the parameter types the Parse declared (0: the server infers)
    formats: tuple[int, ...]        # one per value (0 text, 1 binary)
    values: tuple[bytes | None, ...]
    result_formats: tuple[int, ...]


def parse_types(rest: bytes) -> tuple[int, ...]:
    """The declared parameter type OIDs after a Parse's query (empty for a malformed tail)."""
    if len(rest) < 2:
        return ()
    (n,) = _I16.unpack_from(rest, 0)
    if n <= 0 or len(rest) < 2 + 4 * n:
        return ()
    return struct.unpack_from(f"!{n}I", rest, 2)


def decode_bind(body: bytes) -> tuple[bytes, bytes, tuple[int, ...], tuple[bytes | None, ...], tuple[int, ...]]:
    """portal, statement, per-value formats, values, result formats (raises ValueError / struct.error)."""
    portal_end = body.index(b"\x00")
    name_end = body.index(b"\x00", portal_end + 1)
    pos = name_end + 1
    (nformats,) = _I16.unpack_from(body, pos)
    codes = (_NO_FORMATS if nformats == 0 else _I16.unpack_from(body, pos + 2) if nformats == 1
             else struct.unpack_from(f"!{nformats}h", body, pos + 2))
    pos += 2 + 2 * nformats
    (nvalues,) = _I16.unpack_from(body, pos)
    pos += 2
    values: list[bytes | None] = []
    for _ in range(nvalues):
        (length,) = _I32.unpack_from(body, pos)
        pos += 4
        if length < 0:
            values.append(None)
        else:
            if pos + length > len(body):
                raise ValueError("value past the end of Bind")
            values.append(body[pos:pos + length])
            pos += length
    (nresults,) = _I16.unpack_from(body, pos)
    results = (_NO_FORMATS if nresults == 0 else _I16.unpack_from(body, pos + 2) if nresults == 1
               else struct.unpack_from(f"!{nresults}h", body, pos + 2))
    # one format code applies to every value; none means text
    formats = codes * nvalues if nformats == 1 else (codes if nformats else (0,) * nvalues)
    return body[:portal_end], body[portal_end + 1:name_end], tuple(formats), tuple(values), tuple(results)


class Bound:
    """A portal the client bound: its statement's text and declared types, and the Bind, decoded when first asked."""

    __slots__ = ("query", "types", "body", "_execution")

    def __init__(self, query: bytes | None, types: tuple[int, ...], body: bytes | None,
                 execution: Execution | None = None) -> None:
        self.query = query
        self.types = types
        self.body = body
        self._execution = execution

    def execution(self) -> Execution | None:
        """The execution with its values (None for a malformed Bind: the server refused it and what followed)."""
        body = self.body
        if body is not None:
            self.body = None
            try:
                _, _, formats, values, results = decode_bind(body)
            except (ValueError, struct.error):
                return None
            self._execution = Execution(self.query, self.types, formats, values, results)
        return self._execution


UNKNOWN = Bound(None, (), None, Execution(None, (), (), (), ()))   # a portal bound before the tap was installed


class PgTap:
    """One client session's statements and portals; see the module docstring."""

    __slots__ = ("session", "sinks", "audit", "statements", "portals")

    def __init__(self, session: Any, sinks: tuple[Callable[[Any, Bound], None], ...],
                 audit: Callable[[Any, bytes], None] | None) -> None:
        self.session = session
        self.sinks = sinks          # replaced in place when a recording or a mirror comes or goes
        self.audit = audit          # the audit log still sees the Parse texts
        self.statements: dict[bytes, tuple[bytes, tuple[int, ...]]] = {}
        self.portals: dict[bytes, Bound | None] = {}   # None: already executed (suspended)

    def parse(self, name: bytes, query: bytes, rest: bytes) -> None:
        if self.audit is not None:
            self.audit(self.session, query)
        self.statements[name] = (query, parse_types(rest))

    def bind(self, body: bytes) -> None:
        portal_end = body.find(b"\x00")
        name_end = body.find(b"\x00", portal_end + 1)
        if portal_end < 0 or name_end < 0:
            return   # the server answers a malformed Bind with its error
        known = self.statements.get(body[portal_end + 1:name_end])
        query, types = known if known is not None else (None, ())
        self.portals[body[:portal_end]] = Bound(query, types, body)

    def execute(self, body: bytes) -> None:
        portal = body[:body.find(b"\x00")]
        bound = self.portals.get(portal)
        if bound is None:
            if portal not in self.portals:   # a portal bound before the tap was installed
                for sink in self.sinks:
                    sink(self.session, UNKNOWN)
            return
        self.portals[portal] = None
        for sink in self.sinks:
            sink(self.session, bound)

    def close(self, body: bytes) -> None:
        name = body[1:body.find(b"\x00", 1)]
        (self.statements if body[:1] == b"S" else self.portals).pop(name, None)
