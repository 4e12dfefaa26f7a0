"""What the MySQL query cache stores (SPEC §11), pure: which replies may be stored (`storable`: a text
result set; `storable_binary`: a COM_STMT_EXECUTE's binary one) and the key material of one
COM_STMT_EXECUTE (`execute_key`). No I/O.

An execute is keyed by its prepared text (cache_flow adds it) and `execute_key().parameters`: the
NULL bitmap, the parameter types in force (sent with this execute, or the ones the client bound
last: the server reads the values with them) and the value bytes. Executes with any flag set (a
cursor: CURSOR_TYPE_READ_ONLY ..., fetched later by COM_STMT_FETCH), an iteration count other than
1, or whose types are not known are not keyed.

A stored reply is replayed as it is: every command's reply starts at sequence id 1 whatever the
client sent before, and the column definitions a binary result set carries are the ones the client
decodes the rows with (the proxy offers no metadata-skipping capability: no
CLIENT_OPTIONAL_RESULTSET_METADATA, no MariaDB cache-metadata). `storable_binary` makes sure of the
framing (sequence ids 1, 2, ... in order, one packet per payload) and the shape: column count,
definitions, [EOF], binary rows (header 0x00), then EOF or OK-as-EOF without warnings or a status
a later client must not see (a transaction, more results, a cursor, session state changes).
"""

from __future__ import annotations

from dataclasses import dataclass

from .wire.codes import Command, Status

_EXECUTE_HEAD = 10        # command, statement id (4), flags, iteration count (4)
_ONE_ITERATION = b"\x01\x00\x00\x00"
_MAX_PACKET = 0xFFFFFF
# Final status flags a stored result set may not carry.
_UNSTORABLE_STATUS = Status.IN_TRANS | Status.MORE_RESULTS_EXISTS | Status.SESSION_STATE_CHANGED | \
    Status.IN_TRANS_READONLY | Status.CURSOR_EXISTS


def lenenc(payload: bytes, pos: int) -> tuple[int, int]:
    """The length-encoded integer at payload[pos] and the position after it."""
    first = payload[pos]
    if first < 0xFB:
        return first, pos + 1
    width = {0xFC: 2, 0xFD: 3, 0xFE: 8}.get(first)
    if width is None or pos + 1 + width > len(payload):
        raise ValueError("bad length")
    return int.from_bytes(payload[pos + 1:pos + 1 + width], "little"), pos + 1 + width


def storable(response: bytes, deprecate_eof: bool) -> bool:
    """True if `response` is whole packets of one text result set, without an error, warnings, more
    results or session state changes (column count, columns, [EOF], rows, EOF or OK)."""
    payloads: list[bytes] = []
    pos, size = 0, len(response)
    while pos < size:
        if size - pos < 4:
            return False
        length = int.from_bytes(response[pos:pos + 3], "little")
        if length == _MAX_PACKET or pos + 4 + length > size:
            return False
        payloads.append(response[pos + 4:pos + 4 + length])
        pos += 4 + length
    if len(payloads) < 3 or not payloads[0] or payloads[0][0] in (0x00, 0xFB, 0xFF):
        return False
    try:
        columns, _ = lenenc(payloads[0], 0)
        body = payloads[1 + columns:] if deprecate_eof else payloads[2 + columns:]
        if not deprecate_eof and (len(payloads) < 2 + columns or payloads[1 + columns][:1] != b"\xfe"):
            return False
        if not body or any(p[:1] == b"\xff" for p in payloads):
            return False
        end = body[-1]
        if end[:1] != b"\xfe":
            return False
        if deprecate_eof:
            _, at = lenenc(end, 1)
            _, at = lenenc(end, at)
            status, warnings = int.from_bytes(end[at:at + 2], "little"), int.from_bytes(end[at + 2:at + 4], "little")
        else:
            if len(end) != 5:
                return False
            warnings, status = int.from_bytes(end[1:3], "little"), int.from_bytes(end[3:5], "little")
    except (ValueError, IndexError):
        return False
    return warnings == 0 and not status & _UNSTORABLE_STATUS and all(p[:1] != b"\xfe" or len(p) >= 9 for p in body[:-1])


@dataclass(frozen=True, slots=True)
class ExecuteKey:
    """What an execute adds to its text's key, and the parameter types it sent (None: it sent none)."""

    parameters: bytes
    types: bytes | None


def execute_key(payload: bytes, num_params: int, known_types: bytes) -> ExecuteKey | None:
    """The key material of the COM_STMT_EXECUTE `payload` (command byte first) of a statement with
    `num_params` parameters whose client last bound `known_types`; None: not to be cached."""
    if len(payload) < _EXECUTE_HEAD or payload[0] != Command.STMT_EXECUTE:
        return None
    if payload[5] or payload[6:10] != _ONE_ITERATION:
        return None   # a cursor (or another flag), or more than one iteration
    if not num_params:
        return ExecuteKey(b"\x00\x00" + payload[_EXECUTE_HEAD:], None)
    bitmap_end = _EXECUTE_HEAD + (num_params + 7) // 8
    if len(payload) <= bitmap_end:
        return None
    bound = payload[bitmap_end]
    width = 2 * num_params
    if bound == 1:
        types = payload[bitmap_end + 1:bitmap_end + 1 + width]
        if len(types) != width:
            return None
        sent: bytes | None = types
        values = payload[bitmap_end + 1 + width:]
    elif bound == 0:
        types = known_types
        if len(types) != width:
            return None   # the server has no types for it: its own error is the answer
        sent = None
        values = payload[bitmap_end + 1:]
    else:
        return None
    return ExecuteKey(num_params.to_bytes(2, "little") + payload[_EXECUTE_HEAD:bitmap_end] + types + values, sent)


def storable_binary(response: bytes, deprecate_eof: bool) -> bool:
    """True if `response` is one binary result set, framed from sequence id 1, that a later execute of
    the same key may be answered with (see the module docstring)."""
    pos, size, seq = 0, len(response), 1
    firsts: list[int] = []
    while pos < size:
        if size - pos < 5:
            return False
        length = int.from_bytes(response[pos:pos + 3], "little")
        if length == _MAX_PACKET or length == 0 or response[pos + 3] != seq or pos + 4 + length > size:
            return False
        firsts.append(response[pos + 4])
        seq = (seq + 1) & 0xFF
        pos += 4 + length
    if not firsts or not storable(response, deprecate_eof):
        return False
    try:
        columns, _ = lenenc(response[4:4 + int.from_bytes(response[:3], "little")], 0)
    except (ValueError, IndexError):
        return False
    rows = firsts[1 + columns + (0 if deprecate_eof else 1):-1]
    return all(first == 0x00 for first in rows)
