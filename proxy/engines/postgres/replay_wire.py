"""Transaction replay (failover.replay), PostgreSQL's sans-IO part: framing the two streams core/replay.py keeps.

- `record_messages()`: the client's complete messages as forwarded go into the TransactionRecord,
  a unit ending at each Query, Sync and FunctionCall (each gets one ReadyForQuery); COPY from the
  client is not replayable.
- `PgResultDigest`: the server's messages as relayed to the client, hashed except ParameterStatus,
  NoticeResponse and NotificationResponse (they may differ on another server or at another time
  without the results differing); each ReadyForQuery ends a unit.
- `unit_traits()`: what decide() must know of a unit not yet answered (COMMIT in it, BEGIN, a
  statement that may write).
"""

from __future__ import annotations

import re
import struct
from collections.abc import Callable

from ...core.replay import RECORD, ResultDigest, TransactionRecord, UnitTraits
from .statements import bind_statement
from .wire.responses import is_fatal

_U32 = struct.Struct("!I")
_Z, _S, _N, _A, _E = 0x5A, 0x53, 0x4E, 0x41, 0x45
_QUERY, _SYNC, _FUNCTION, _PARSE, _BIND, _TERMINATE = 0x51, 0x53, 0x46, 0x50, 0x42, 0x58
_COPY_FROM_CLIENT = (0x64, 0x63, 0x66)   # CopyData, CopyDone, CopyFail
_UNCOUNTED = (_S, _N, _A)

_COMMIT = re.compile(rb"(?:^|;)\s*(?:commit|end|prepare\s+transaction)\b", re.IGNORECASE)
_BEGIN = re.compile(rb"\s*(?:begin|start\s+transaction)\b", re.IGNORECASE)
_ROLLBACK = re.compile(rb"(?:^|;)\s*(?:rollback|abort)\b(?!\s+to\b)", re.IGNORECASE)
# SQL that forgets the client's protocol-level statements (the proxy answers or follows it): not replayed.
_FORGETS_STATEMENTS = re.compile(rb"\s*(?:deallocate|discard)\b", re.IGNORECASE)
_CLOSE = 0x43


def record_messages(data: bytes, record: TransactionRecord, touched: list[bytes] | None = None) -> None:
    """Add the complete messages at the start of data (a client batch as forwarded) to record; the
    names of the named statements its Parse and Close messages (re)define go to `touched`."""
    if record.refused:
        return
    size, pos, start = len(data), 0, 0
    view = memoryview(data)
    while size - pos >= 5:
        kind = data[pos]
        end = pos + 1 + _U32.unpack_from(data, pos + 1)[0]
        if kind in _COPY_FROM_CLIENT:
            record.refuse("COPY from the client")
            return
        if end > size or kind == _TERMINATE:
            break
        if touched is not None:
            if kind == _PARSE and data[pos + 5] != 0:
                name_end = data.find(b"\x00", pos + 5, end)
                if name_end > 0:   # (a malformed Parse is refused by the forwarding)
                    touched.append(data[pos + 5:name_end])
            elif kind == _CLOSE and data[pos + 5:pos + 6] == b"S" and end - pos > 7:
                touched.append(data[pos + 6:end - 1])
            elif kind == _QUERY and _FORGETS_STATEMENTS.match(data, pos + 5, end):
                record.refuse("DEALLOCATE / DISCARD")
                return
        if kind == _QUERY or kind == _SYNC or kind == _FUNCTION:   # one record entry per unit
            record.add(view[start:end], True)
            start = end
        pos = end
    if start < pos:
        record.add(view[start:pos], False)


def unit_traits(unit: bytes, query_of: Callable[[bytes], bytes | None],
                reads_only: Callable[[bytes], bool]) -> UnitTraits:
    """The traits of one recorded unit. query_of(bind body): the text of the named statement a Bind
    runs (None if unknown); reads_only(sql): the text only reads (the cluster's classifier)."""
    texts: list[bytes] = []
    unknown = False
    unnamed = b""
    size, pos = len(unit), 0
    while size - pos >= 5:
        kind = unit[pos]
        end = pos + 1 + _U32.unpack_from(unit, pos + 1)[0]
        body = unit[pos + 5:end]
        if kind == _QUERY:
            texts.append(body[:-1])
        elif kind == _PARSE:
            name_end = body.find(b"\x00")
            query = body[name_end + 1:body.find(b"\x00", name_end + 1)]
            if name_end == 0:
                unnamed = query
            texts.append(query)
        elif kind == _BIND:
            start, stop = bind_statement(body)
            text = unnamed if start == stop else query_of(body)
            if text is None:
                unknown = True
            else:
                texts.append(text)
        elif kind == _FUNCTION:
            unknown = True
        pos = end
    return UnitTraits(
        commits=any(_COMMIT.search(t) for t in texts),
        begins=bool(texts) and _BEGIN.match(texts[0]) is not None,
        ends=any(_ROLLBACK.search(t) for t in texts),
        reads_only=not unknown and all(reads_only(t) for t in texts),
    )


class PgResultDigest(ResultDigest):
    """Frames the backend messages relayed to one client (see the module docstring and core.replay.ResultDigest)."""

    __slots__ = ("_head", "_left", "_counted", "_kind", "_prefix", "held")

    def __init__(self) -> None:
        super().__init__()
        self._head = b""        # the first bytes of a message header split between reads
        self._left = 0          # bytes of the current message still to come
        self._counted = False   # the current message is hashed
        self._kind = 0
        self._prefix = False    # part of the current message was the replayed prefix
        # A FATAL answer (a backend ending as its postmaster died) and all after it: kept from the client
        # while recording, since a replay makes it moot (core.replay_flow: `unhold` if none happens).
        self.held = b""

    def restart(self) -> None:
        super().restart()
        self._head, self._left, self._prefix, self.held = b"", 0, False, b""

    def feed(self, data: bytes) -> bytes:
        """Hash what counts in data; returns the bytes to relay (all of them unless a replay is checked)."""
        relaying = self.mode == RECORD
        if self.held:
            self.held += data
            return b""
        if relaying and not self._head and not self._left:
            return self._record(data)
        out: list[memoryview] = []
        view = memoryview(data)
        size, pos = len(data), 0
        while pos < size:
            if self._head:
                need = 5 - len(self._head)
                piece = data[pos:pos + need]
                self._head += piece
                self._run(view[pos:pos + len(piece)], out, relaying)
                pos += len(piece)
                if len(self._head) == 5:
                    self._left = _U32.unpack_from(self._head, 1)[0] - 4
                    self._head = b""
                    if self._left == 0:
                        self._message_end(data, pos)
                continue
            if self._left:
                n = min(self._left, size - pos)
                self._run(view[pos:pos + n], out, relaying)
                pos += n
                self._left -= n
                if self._left == 0:
                    self._message_end(data, pos)
                continue
            kind = data[pos]
            self._kind, self._counted, self._prefix = kind, kind not in _UNCOUNTED, False
            if size - pos < 5:
                self._head = data[pos:]
                self._run(view[pos:], out, relaying)
                break
            end = pos + 1 + _U32.unpack_from(data, pos + 1)[0]
            if end > size:
                self._left = end - size
                self._run(view[pos:], out, relaying)
                break
            self._run(view[pos:end], out, relaying)
            pos = end
            self._message_end(data, pos)
        return data if relaying else b"".join(out)

    def _record(self, data: bytes) -> bytes:
        """feed() from a message boundary while recording (the common case): one hash update per run
        of counted messages."""
        view = memoryview(data)
        size, pos, start = len(data), 0, 0
        digest = self._hash
        while size - pos >= 5:
            kind = data[pos]
            end = pos + 1 + _U32.unpack_from(data, pos + 1)[0]
            if end > size:   # the last message goes on in the next read
                self._kind, self._counted, self._prefix, self._left = kind, kind not in _UNCOUNTED, False, end - size
                if not self._counted:
                    size = pos
                break
            if kind == _E and is_fatal(data, pos, end):
                self.held = data[pos:]
                size = pos
                break
            if kind == _Z:
                digest.update(view[start:end])
                self.length += end - start
                start = end
                self._answered(data[end - 1] == 0x49)   # status 'I'
                digest = self._hash
            elif kind in _UNCOUNTED:
                if start < pos:
                    digest.update(view[start:pos])
                    self.length += pos - start
                start = end
            pos = end
        else:
            if pos < size:   # a header split between reads
                kind = data[pos]
                self._head = data[pos:]
                self._kind, self._counted, self._prefix = kind, kind not in _UNCOUNTED, False
                if not self._counted:
                    size = pos
        if start < size:
            digest.update(view[start:size])
            self.length += size - start
        return data[:size] if self.held else data

    def _run(self, run: memoryview, out: list[memoryview], relaying: bool) -> None:
        """A piece of the current message: hashed if it counts; kept for the client unless it is
        the replayed prefix (or, while the prefix is checked, uncounted)."""
        if self._counted:
            skipped = self._take(run)
            if skipped:
                self._prefix = True
            if not relaying and skipped < len(run) and self.mode == RECORD:
                out.append(run[skipped:])
        elif not relaying and self.mode == RECORD:
            out.append(run)

    def _message_end(self, data: bytes, end: int) -> None:
        if self._kind == _Z and not self._prefix and self.mode == RECORD:
            self._answered(data[end - 1] == 0x49)   # status 'I'
