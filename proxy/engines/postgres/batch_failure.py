"""Sans-IO: the replies a server would give to a client batch it never saw, when no server can run it."""

from __future__ import annotations

import struct
from dataclasses import dataclass

from .wire import messages as m

_U32 = struct.Struct("!I")


@dataclass(frozen=True, slots=True)
class FailedBatch:
    """`reply` for the first `consumed` bytes; `discarding`: the client's extended batch is still open
    (skip until its Sync); `terminate`: the client sent Terminate."""

    reply: bytes
    consumed: int
    discarding: bool
    terminate: bool = False


def fail_batch(data: bytes, sqlstate: str, message: str, discarding: bool, first_batch_only: bool) -> FailedBatch:
    """Answer the complete messages of `data` with an error, as a server would (one per Query, one per
    extended batch, a ReadyForQuery I at each Query and Sync). `discarding`: an error was already given
    for the open batch. With first_batch_only, stop after the first Query or Sync."""
    out: list[bytes] = []
    pos = 0
    errored = discarding
    error = m.error_response(sqlstate, message)
    while len(data) - pos >= 5:
        kind = data[pos]
        end = pos + 1 + _U32.unpack_from(data, pos + 1)[0]
        if end > len(data):
            break
        if kind == 0x51 or kind == 0x46:  # Query / FunctionCall
            if not errored:
                out.append(error)
                out.append(m.ready_for_query(b"I"))
                if first_batch_only:
                    pos = end
                    break
        elif kind == 0x53:  # Sync
            if not errored:
                out.append(error)
            out.append(m.ready_for_query(b"I"))
            errored = False
            if first_batch_only:
                pos = end
                break
        elif kind == 0x58:
            return FailedBatch(b"".join(out), pos, errored, terminate=True)
        elif kind in (0x50, 0x42, 0x44, 0x45, 0x43, 0x48):
            if not errored:
                out.append(error)
                errored = True
        pos = end
    return FailedBatch(b"".join(out), pos, errored)
