"""Sans-IO framing of the control <-> worker channel: a 4-byte big-endian length, then a pickle.

Both ends are processes of this program started by the control process over a socketpair, so
pickle (of the frozen config and topology dataclasses) is trusted here; the length is bounded
so a corrupted stream fails loudly instead of buffering without end.
"""

from __future__ import annotations

import pickle
import struct
from dataclasses import dataclass
from typing import Any

_LENGTH = struct.Struct("!I")
MAX_FRAME = 64 << 20   # a config or a SHOW CLIENTS of many thousand clients fits easily


class ChannelError(Exception):
    """The bytes received are not a valid frame (a bug or a corrupted stream: the link is closed)."""


def encode(message: object) -> bytes:
    """One frame holding `message`."""
    body = pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL)
    if len(body) > MAX_FRAME:
        raise ChannelError(f"message of {len(body)} bytes is over the {MAX_FRAME} byte frame limit")
    return _LENGTH.pack(len(body)) + body


class FrameDecoder:
    """Feed received bytes, get back the messages completed by them (in order)."""

    def __init__(self, max_frame: int = MAX_FRAME) -> None:
        self._buffer = bytearray()
        self._max = max_frame

    def feed(self, data: bytes) -> list[Any]:
        buffer = self._buffer
        buffer += data
        messages = []
        start = 0
        while len(buffer) - start >= 4:
            (length,) = _LENGTH.unpack_from(buffer, start)
            if length > self._max:
                raise ChannelError(f"frame of {length} bytes is over the {self._max} byte limit")
            end = start + 4 + length
            if len(buffer) < end:
                break
            try:
                messages.append(pickle.loads(buffer[start + 4:end]))
            except Exception as exc:  # noqa: BLE001 - any unpickling failure means a broken stream
                raise ChannelError(f"undecodable frame: {exc}") from exc
            start = end
        if start:
            del buffer[:start]
        return messages

    @property
    def buffered(self) -> int:
        return len(self._buffer)


# ---- the messages ----------------------------------------------------------------------------------

@dataclass(frozen=True)
class Hello:
    """Control -> a new worker: who it is, the (already split) config and the current topology."""

    index: int
    count: int
    config: Any              # proxy.config.Config, this worker's share (shares.worker_config)
    snapshots: dict[str, Any]   # cluster name -> TopologySnapshot
    paused: frozenset[str] = frozenset()   # clusters paused now (admin PAUSE, a switchover)


@dataclass(frozen=True)
class Request:
    """Either side -> the other: do `kind` with `payload` and send a Reply with the same id."""

    id: int
    kind: str
    payload: Any = None


@dataclass(frozen=True)
class Reply:
    id: int
    ok: bool
    value: Any = None        # the result, or an error text when not ok


@dataclass(frozen=True)
class Notice:
    """A one-way message: control -> worker "topology" (cluster, snapshot), "drain"; worker -> control
    "ready", "probe_now" (cluster, address), "cancel" (pid, key)."""

    kind: str
    payload: Any = None
