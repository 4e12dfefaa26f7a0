"""Sans-IO replies for client work no server will answer: a lost server's work in flight, a batch no server can take."""

from __future__ import annotations

import struct
from collections.abc import Iterable

from ...errors import ProxyError
from .wire import messages as m
from .wire.responses import QUERY, SYNC, Slot

_U32 = struct.Struct("!I")
_EXTENDED = (0x50, 0x42, 0x44, 0x45, 0x43, 0x48)   # Parse, Bind, Describe, Execute, Close, Flush


def in_flight_replies(slots: Iterable[Slot], unsynced: bool, err: ProxyError) -> tuple[bytes, bool]:
    """What the client gets for the responses a lost server still owed (slots), and whether its
    messages are now skipped until Sync (an extended batch without its Sync yet)."""
    waiting = sum(1 for s in slots if s.kind == QUERY or s.kind == SYNC)
    if waiting:
        return m.error_response(err.sqlstate, err.message) + m.ready_for_query(b"I") * waiting, False
    if unsynced or any(True for _ in slots):
        return m.error_response(err.sqlstate, err.message), True
    return b"", False


def fail_pending(data: bytes, err: ProxyError, discarding: bool,
                 first_batch_only: bool) -> tuple[bytes, int, bool, bool]:
    """Answer the client's pending messages in data with err, as a server would.

    With first_batch_only, stop after the first Query or Sync (the rest may run normally).
    Returns (replies, bytes consumed, whether messages are still skipped until Sync, whether a
    Terminate was reached)."""
    out: list[bytes] = []
    pos = 0
    errored = discarding
    while len(data) - pos >= 5:
        kind = data[pos]
        end = pos + 1 + _U32.unpack_from(data, pos + 1)[0]
        if end > len(data):
            break
        if kind == 0x51 or kind == 0x46:  # Query / FunctionCall
            if not errored:
                out.append(m.error_response(err.sqlstate, err.message))
                out.append(m.ready_for_query(b"I"))
                if first_batch_only:
                    pos = end
                    break
        elif kind == 0x53:  # Sync
            if not errored:
                out.append(m.error_response(err.sqlstate, err.message))
            out.append(m.ready_for_query(b"I"))
            errored = False
            if first_batch_only:
                pos = end
                break
        elif kind == 0x58:
            return b"".join(out), pos, errored, True
        elif kind in _EXTENDED:
            if not errored:
                out.append(m.error_response(err.sqlstate, err.message))
                errored = True
        pos = end
    return b"".join(out), pos, errored, False
