"""Sans-IO tracking of a server's response stream, so a pooler can release, drop and synthesize.

Every client message the proxy forwards (or answers itself) pushes a *slot* describing the
response it expects. `ResponseTracker.feed()` walks the server's bytes header by header,
forwards bodies untouched (streaming large DataRow/CopyData messages without buffering them),
drops the responses of messages the proxy injected, inserts synthesized responses at the right
position, and reports ReadyForQuery status and ParameterStatus changes. After an ErrorResponse
in the extended protocol the server discards messages until Sync; the tracker does the same
with its slots. An ErrorResponse that answers no outstanding message (a FATAL sent by a server
that is ending the connection: shutdown, crash of another backend, pg_terminate_backend) is
dropped and marks the connection `terminated`: in transaction pooling it belongs to no client,
and the client attached when it arrives learns of the loss when the connection closes.
A malformed ParameterStatus marks it `terminated` too: `feed()` never raises.
"""

from __future__ import annotations

import struct
from collections import deque

# Slot kinds: what ends the response to one client message.
QUERY = 0      # simple Query / FunctionCall: ends at ReadyForQuery
SYNC = 1       # Sync: ends at ReadyForQuery
PARSE = 2      # ParseComplete '1'
BIND = 3       # BindComplete '2'
CLOSE = 4      # CloseComplete '3'
DESCRIBE = 5   # RowDescription 'T' or NoData 'n' (after ParameterDescription for statements)
EXECUTE = 6    # CommandComplete 'C', EmptyQueryResponse 'I', PortalSuspended 's'
SYNTH = 7      # answered by the proxy itself: no server response, emit payload in order

# Actions: what happens to the slot's response messages.
PASS = 0       # forward to the client
DROP = 1       # drop success messages, forward an ErrorResponse (injected Parse)
DROP_ALL = 2   # drop everything, including ReadyForQuery and errors (injected SET/ROLLBACK)
CAPTURE = 3    # like DROP_ALL, but keep DataRow bodies in `captured` (injected probes of state)
REPLACE = 4    # like DROP_ALL, but an ErrorResponse is replaced by the slot's payload (a proxy-made error
               # standing for one the server would give: the server fails a message for real, so it skips
               # to Sync and aborts the transaction as it would have)

# What `news` reports about named server statements (slots with a statement name as payload).
PARSED = 0        # its Parse succeeded
DESCRIBED = 1     # the reply to Describe of it (ParameterDescription + RowDescription / NoData), as data
INVALIDATED = 2   # a Bind or Describe of it failed: "cached plan must not change result type" (0A000)

_ENDS: dict[int, bytes] = {
    PARSE: b"1", BIND: b"2", CLOSE: b"3", DESCRIBE: b"Tn", EXECUTE: b"CIs",
}

_U32 = struct.Struct("!I")
_Z, _S, _E, _N, _A, _T = 0x5A, 0x53, 0x45, 0x4E, 0x41, 0x74


class Slot:
    """The expected response to one client message."""

    __slots__ = ("kind", "action", "payload", "ends")

    def __init__(self, kind: int, action: int = PASS, payload: bytes = b"") -> None:
        self.kind = kind
        self.action = action
        self.payload = payload   # SYNTH, REPLACE: bytes to emit; PARSE, BIND, DESCRIBE: server statement name (or b"")
        self.ends = _ENDS.get(kind, b"")


class ResponseTracker:
    """Follows one server connection's response stream; see the module docstring."""

    __slots__ = ("slots", "status", "parameters", "failed_statements", "errors", "captured", "terminated",
                 "own_pid", "client_pid", "notify_pid", "farewell", "farewell_forwarded", "news", "_described", "_buf", "_skip",
                 "_skip_drop", "_aborted", "peers")

    def __init__(self) -> None:
        self.slots: deque[Slot] = deque()
        self.status = b"I"                      # last ReadyForQuery status: I, T or E
        self.parameters: list[tuple[bytes, bytes]] = []   # ParameterStatus seen since last taken
        self.failed_statements: list[bytes] = []          # server statement names whose Parse failed
        self.errors = 0                          # ErrorResponses seen (for metrics/logging)
        self.captured: list[bytes] = []          # DataRow bodies of CAPTURE slots
        self.news: list[tuple[int, bytes, bytes]] = []   # (PARSED | DESCRIBED | INVALIDATED, name, data)
        self._described = b""   # a ParameterDescription, until the RowDescription / NoData after it
        # A NotificationResponse carries the sending backend's pid (4 bytes): when that backend is one of
        # the proxy's (in `peers`, its instance's trackers by own_pid, this one included), the client gets
        # the pid the proxy gave the client that backend serves or last served instead (its client_pid,
        # from BackendKeyData; b"": not rewritten). A notification is sent when its transaction commits, and
        # may reach the proxy after that backend went to another client: while no response is outstanding,
        # the pid is that of the client the backend served at its last ReadyForQuery (notify_pid).
        self.own_pid = b""
        self.client_pid = b""
        self.notify_pid = b""
        self.peers: dict[bytes, ResponseTracker] | None = None
        self.farewell = b""   # the server's own unsolicited ErrorResponse (FATAL 57P01...) as it ends the connection
        self.farewell_forwarded = False   # a FATAL went to the client as the answer to its statement
        self.terminated = False                  # the server sent an unsolicited ErrorResponse (FATAL)
        self._buf = b""
        self._skip = 0            # bytes of a partially forwarded message still to stream
        self._skip_drop = False
        self._aborted = False     # an extended-protocol error: server skips until Sync

    @property
    def idle(self) -> bool:
        """No response outstanding and the server is outside a transaction."""
        return not self.slots and self.status == b"I" and not self._skip and not self._buf

    @property
    def quiet(self) -> bool:
        """No response outstanding (the server may be inside a transaction)."""
        return not self.slots and not self._skip and not self._buf

    @property
    def mid_message(self) -> bool:
        """Part of a message went to the client and the rest is still to come: if the server is lost
        now, the client's stream cannot be continued (an error message would land inside that one)."""
        return bool(self._skip) and not self._skip_drop

    def reset(self) -> None:
        self.slots.clear()
        self._buf = b""
        self._skip = 0
        self._aborted = False
        self.parameters.clear()
        self.failed_statements.clear()
        self.news.clear()
        self._described = b""

    def push(self, slot: Slot) -> bytes:
        """Record the expected response of a message sent (or answered) now.

        Returns bytes to send to the client immediately (a synthesized response whose turn
        has already come), else b"".
        """
        if self._aborted:
            if slot.kind == SYNC:
                self._aborted = False
            else:
                # The server will skip this message; its response never comes.
                if slot.kind == PARSE and slot.payload:
                    self.failed_statements.append(slot.payload)
                return b""
        if slot.kind == SYNTH and not self.slots:
            return slot.payload
        self.slots.append(slot)
        return b""

    def feed(self, data: bytes) -> bytes:
        """Consume server bytes; return the bytes to forward to the client."""
        out: list[bytes] = []
        if self._skip:
            n = min(self._skip, len(data))
            if not self._skip_drop:
                out.append(data[:n])
            self._skip -= n
            data = data[n:]
            if not data:
                return out[0] if out else b""
        if self._buf:
            data = self._buf + data
            self._buf = b""
        slots = self.slots
        size = len(data)
        pos = start = 0
        while size - pos >= 5:
            kind = data[pos]
            end = pos + 1 + _U32.unpack_from(data, pos + 1)[0]
            slot = slots[0] if slots else None
            action = slot.action if slot is not None else PASS
            if kind == _Z or kind == _E or kind == _S or (slot is not None and slot.ends and kind in slot.ends):
                if end > size:
                    break  # interesting messages are small: wait for the whole of it
                if kind == _S:
                    parameter = _parameter(data, pos + 5, end)
                    if parameter is None:
                        self.terminated = True   # not the protocol: this connection is never reused
                    else:
                        self.parameters.append(parameter)
                    if action >= DROP_ALL:
                        out.append(data[start:pos])
                        start = end
                    pos = end
                    continue
                if slot is None:
                    if kind == _E:   # unsolicited: the server is ending the connection (module docstring)
                        out.append(data[start:pos])
                        start = end
                        self.farewell = data[pos:end]
                        self.errors += 1
                        self.terminated = True
                    pos = end
                    continue
                drop = action >= DROP_ALL or (action == DROP and kind != _E)
                if drop:
                    out.append(data[start:pos])
                    start = end
                if kind == _Z:
                    self.status = data[pos + 5:end]   # one byte; never past the message (a malformed Z is empty)
                    self.notify_pid = self.client_pid
                    if slot.kind == QUERY or slot.kind == SYNC:
                        slots.popleft()
                elif kind == _E:
                    self.errors += 1
                    self._described = b""
                    if action == REPLACE:
                        out.append(slot.payload)
                    if slot.payload and (slot.kind == BIND or slot.kind == DESCRIBE) and _is_stale_plan(data, pos, end):
                        self.news.append((INVALIDATED, slot.payload, b""))
                    if not drop and is_fatal(data, pos, end):
                        self.farewell_forwarded = True
                    if slot.kind != QUERY and slot.kind != SYNC:
                        self._abort_until_sync()
                else:
                    slots.popleft()
                    if slot.payload:
                        self._learn(slot, data[pos:end])
                pos = end
                if slots and slots[0].kind == SYNTH:
                    out.append(data[start:pos])
                    start = pos
                    out.extend(self._emit_synthetic())
                continue
            # Anything else (DataRow, RowDescription, CopyData, notices...) belongs to the
            # head slot's response and streams through, possibly before it is complete.
            if action != PASS and (action >= DROP_ALL or kind not in (_N, _A)):
                if action == CAPTURE and kind == 0x44:
                    if end > size:
                        break  # a captured row is small: wait for all of it
                    self.captured.append(data[pos + 5:end])
                if end > size:
                    out.append(data[start:pos])
                    self._skip, self._skip_drop = end - size, True
                    return b"".join(out)
                out.append(data[start:pos])
                start = end
            elif kind == _T and slot is not None and slot.payload and slot.kind == DESCRIBE:
                if end > size:
                    break   # a ParameterDescription is small: wait for all of it
                self._described = data[pos:end]
            elif end > size:
                if kind == _A:
                    break  # a notification is small: wait for all of it (its pid may be rewritten)
                out.append(data[start:])
                self._skip, self._skip_drop = end - size, False
                return b"".join(out)
            elif kind == _A and self.peers is not None:
                sender = self.peers.get(data[pos + 5:pos + 9])
                if sender is not None:
                    pid = sender.client_pid if sender.slots or not sender.notify_pid else sender.notify_pid
                    if pid:
                        out.append(data[start:pos + 5])   # a NOTIFY from a backend of the proxy's: its client's pid
                        out.append(pid)
                        start = pos + 9
            pos = end
        if pos < size:
            self._buf = data[pos:]
        if start == 0 and pos == size and not out:
            return data
        out.append(data[start:pos])
        return b"".join(out)

    def _learn(self, slot: Slot, message: bytes) -> None:
        """A named statement's Parse or Describe succeeded (see `news`)."""
        if slot.kind == PARSE:
            self.news.append((PARSED, slot.payload, b""))
        elif slot.kind == DESCRIBE:
            self.news.append((DESCRIBED, slot.payload, self._described + message))
            self._described = b""

    def _abort_until_sync(self) -> None:
        """ErrorResponse in the extended protocol: the server discards everything until Sync."""
        slots = self.slots
        head = slots.popleft()
        if head.kind == PARSE and head.payload:
            self.failed_statements.append(head.payload)
        while slots and slots[0].kind != SYNC:
            skipped = slots.popleft()
            if skipped.kind == PARSE and skipped.payload:
                self.failed_statements.append(skipped.payload)
        if not slots:
            self._aborted = True

    def _emit_synthetic(self) -> list[bytes]:
        out = []
        slots = self.slots
        while slots and slots[0].kind == SYNTH:
            out.append(slots.popleft().payload)
        return out


def _parameter(data: bytes, start: int, end: int) -> tuple[bytes, bytes] | None:
    """The name and value of the ParameterStatus body at data[start:end] (None if it is not two strings)."""
    name_end = data.find(b"\x00", start, end)
    value_end = data.find(b"\x00", name_end + 1, end) if name_end >= 0 else -1
    if value_end < 0:
        return None
    return data[start:name_end], data[name_end + 1:value_end]


def is_fatal(data: bytes, pos: int, end: int) -> bool:
    """An ErrorResponse at data[pos:end] of severity FATAL or PANIC (the server ends the connection)."""
    body = data[pos + 5:end]
    return (body.startswith((b"SFATAL\x00", b"SPANIC\x00")) or b"\x00VFATAL\x00" in body
            or b"\x00VPANIC\x00" in body)


def _is_stale_plan(data: bytes, pos: int, end: int) -> bool:
    """An ErrorResponse at data[pos:end] saying a prepared statement's result type changed (0A000)."""
    body = data[pos + 5:end]
    return b"\x00C0A000\x00" in body and b"cached plan must not change result type" in body
