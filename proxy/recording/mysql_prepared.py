"""MySQL prepared-statement executions for a recording or a mirror, sans-IO: COM_STMT_EXECUTE's values as SQL literals.

`MysqlTap` sits on a client session while a recording covers it or its cluster mirrors
(session.prepared_tap). The session hands it each COM_STMT_EXECUTE with the client's statement
(text, parameter count, the types the client bound), and it hands each to each of its sinks as a
`MysqlBound`, whose values are decoded only when a sink asks (a recording with record_parameters;
the mirror in its worker, for the transactions it samples). `literals` decodes the binary-protocol values into SQL literals, and the replay and the mirror run
the text with each `?` placeholder replaced by its literal (aiomysql has no server-side prepared
statements; the types in the protocol make the literals exact: integers, doubles as `1.5e0`,
DECIMAL as written, strings quoted or as X'hex', dates and times quoted). Values sent with
COM_STMT_SEND_LONG_DATA are not in the execute: such executions are handed on without values
(not replayable, not mirrored).
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from typing import Any

_HEAD = 10
_STRINGS = frozenset({0x00, 0x0F, 0x10, 0xF5, 0xF6, 0xF7, 0xF8, 0xF9, 0xFA, 0xFB, 0xFC, 0xFD, 0xFE})
_INTS = {0x01: (1, "b"), 0x02: (2, "h"), 0x03: (4, "i"), 0x09: (4, "i"), 0x08: (8, "q"), 0x0D: (2, "h")}


def _lenenc(data: bytes, pos: int) -> tuple[int, int]:
    first = data[pos]
    if first < 0xFB:
        return first, pos + 1
    size = {0xFC: 2, 0xFD: 3, 0xFE: 8}[first]
    return int.from_bytes(data[pos + 1:pos + 1 + size], "little"), pos + 1 + size


def _string(raw: bytes) -> str:
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        text = None
    if text is None or "\\" in text or "\x00" in text:
        return f"X'{raw.hex()}'"
    return "'" + text.replace("'", "''") + "'"


def literals(payload: bytes, num_params: int, types: bytes) -> list[str]:
    """The SQL literals of a COM_STMT_EXECUTE's values (raises ValueError / IndexError / KeyError / struct.error)."""
    n = num_params
    bitmap = payload[_HEAD:_HEAD + (n + 7) // 8]
    pos = _HEAD + (n + 7) // 8
    if payload[pos]:   # new-params-bound: the types are here
        types = payload[pos + 1:pos + 1 + 2 * n]
        pos += 1 + 2 * n
    else:
        pos += 1
    if len(types) != 2 * n:
        raise ValueError("no parameter types")
    out: list[str] = []
    for i in range(n):
        kind, unsigned = types[2 * i], types[2 * i + 1] & 0x80
        if bitmap[i // 8] & (1 << (i % 8)) or kind == 0x06:
            out.append("NULL")
            continue
        if kind in _INTS:
            size, code = _INTS[kind]
            out.append(str(struct.unpack_from("<" + (code.upper() if unsigned else code), payload, pos)[0]))
            pos += size
        elif kind == 0x04 or kind == 0x05:
            size = 4 if kind == 0x04 else 8
            value = repr(struct.unpack_from("<f" if size == 4 else "<d", payload, pos)[0])
            out.append(value if "e" in value else value + "e0")
            pos += size
        elif kind in _STRINGS:
            length, pos = _lenenc(payload, pos)
            raw = payload[pos:pos + length]
            if len(raw) != length:
                raise ValueError("value past the end")
            pos += length
            out.append(raw.decode("ascii") if kind in (0x00, 0xF6) and raw.isascii() else _string(raw))
        elif kind in (0x07, 0x0A, 0x0C, 0x0B):
            length = payload[pos]
            part = payload[pos + 1:pos + 1 + length]
            pos += 1 + length
            if kind == 0x0B:
                neg, days, h, mi, s, us = (struct.unpack("<BIBBBI", part) if length == 12 else
                                           (*struct.unpack("<BIBBB", part), 0) if length == 8 else (0,) * 6)
                out.append(f"'{'-' if neg else ''}{days * 24 + h:02d}:{mi:02d}:{s:02d}.{us:06d}'")
            else:
                y, mo, d, h, mi, s, us = (*struct.unpack_from("<HBB", part.ljust(4, b"\0")), 0, 0, 0, 0)
                if length >= 7:
                    h, mi, s = part[4], part[5], part[6]
                if length == 11:
                    us = int.from_bytes(part[7:11], "little")
                out.append(f"'{y:04d}-{mo:02d}-{d:02d} {h:02d}:{mi:02d}:{s:02d}.{us:06d}'")
        else:
            raise ValueError(f"parameter type {kind:#x}")
    return out


class MysqlBound:
    """One COM_STMT_EXECUTE: its statement's text and parameter count, the values decoded when first asked."""

    __slots__ = ("sql", "count", "long_data", "_raw", "_values")

    def __init__(self, sql: bytes, count: int, types: bytes, payload: bytes, long_data: bool) -> None:
        self.sql = sql
        self.count = count
        self.long_data = long_data   # values sent as long data: not in the execute, never known
        self._raw: tuple[bytes, bytes] | None = None if long_data else (types, payload)
        self._values: list[str] | None = None

    def values(self) -> list[str] | None:
        """The values as SQL literals (None: sent as long data, or not decodable)."""
        raw = self._raw
        if raw is not None:
            self._raw = None
            try:
                self._values = literals(raw[1], self.count, raw[0]) if self.count else []
            except (ValueError, IndexError, KeyError, struct.error):
                self._values = None
        return self._values


class MysqlTap:
    """One MySQL client session's executions on their way to the recording and the mirror."""

    __slots__ = ("session", "sinks", "audit")

    def __init__(self, session: Any, sinks: tuple[Callable[[Any, MysqlBound], None], ...],
                 audit: Callable[[Any, bytes], None] | None) -> None:
        self.session = session
        self.sinks = sinks          # replaced in place when a recording or a mirror comes or goes
        self.audit = audit

    def prepare(self, sql: bytes) -> None:
        if self.audit is not None:
            self.audit(self.session, sql)

    def execute(self, sql: bytes, num_params: int, types: bytes, payload: bytes, long_data: bool) -> None:
        bound = MysqlBound(sql, num_params, types, payload, long_data)
        for sink in self.sinks:
            sink(self.session, bound)
