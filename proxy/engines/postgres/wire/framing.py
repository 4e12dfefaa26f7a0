"""Framing of PostgreSQL byte streams: the untyped startup packet and typed messages."""

from __future__ import annotations

import struct
from dataclasses import dataclass, field

from ....errors import ProtocolViolation
from .messages import CANCEL_REQUEST_CODE, GSSENC_REQUEST_CODE, SSL_REQUEST_CODE

# PostgreSQL itself refuses startup packets over 10,000 bytes (MAX_STARTUP_PACKET_LENGTH).
MAX_STARTUP_LENGTH = 10_000
# Largest typed message accepted from a client. PostgreSQL's own limit for most messages is 1 GB;
# anything above this is far more likely garbage (or an attack) than a real Bind or CopyData,
# and accepting it would let one client make the proxy buffer that much memory.
MAX_CLIENT_MESSAGE = 256 * 1024 * 1024

_U32 = struct.Struct("!I")
_TWO_I32 = struct.Struct("!ii")


@dataclass(frozen=True)
class StartupMessage:
    protocol: int
    params: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class SSLRequest:
    pass


@dataclass(frozen=True)
class GSSENCRequest:
    pass


@dataclass(frozen=True)
class CancelRequest:
    pid: int
    key: int


StartupEvent = StartupMessage | SSLRequest | GSSENCRequest | CancelRequest


def parse_startup_packet(buf: bytes | bytearray) -> tuple[StartupEvent | None, int]:
    """Parse one startup-phase packet from the front of buf.

    Returns (event, bytes consumed) or (None, 0) if more bytes are needed.
    Raises ProtocolViolation for packets that can never become valid.
    """
    if len(buf) < 8:
        if len(buf) >= 4 and not 8 <= _U32.unpack_from(buf, 0)[0] <= MAX_STARTUP_LENGTH:
            raise ProtocolViolation("invalid startup packet length")
        return None, 0
    length, code = _TWO_I32.unpack_from(buf, 0)
    if not 8 <= length <= MAX_STARTUP_LENGTH:
        raise ProtocolViolation("invalid startup packet length")
    if len(buf) < length:
        return None, 0
    if code == SSL_REQUEST_CODE and length == 8:
        return SSLRequest(), 8
    if code == GSSENC_REQUEST_CODE and length == 8:
        return GSSENCRequest(), 8
    if code == CANCEL_REQUEST_CODE and length == 16:
        pid, key = struct.unpack_from("!iI", buf, 8)
        return CancelRequest(pid, key), 16
    if code >> 16 != 3:
        version = code & 0xFFFFFFFF
        raise ProtocolViolation(f"unsupported frontend protocol {version >> 16}.{version & 0xFFFF}: "
                                "server supports 3.0")
    return StartupMessage(code, _decode_params(bytes(buf[8:length]))), length


def _decode_params(data: bytes) -> dict[str, str]:
    """The name/value pairs of a startup packet body."""
    if not data.endswith(b"\x00"):
        raise ProtocolViolation("invalid startup packet layout: expected terminator as last byte")
    body = data[:-1]  # without the list terminator; every name and value ends with its own NUL
    if body and not body.endswith(b"\x00"):
        raise ProtocolViolation("invalid startup packet layout: expected terminator as last byte")
    parts = body.split(b"\x00")[:-1] if body else []
    if len(parts) % 2:
        raise ProtocolViolation("invalid startup packet layout: odd number of strings")
    if b"" in parts[::2]:
        raise ProtocolViolation("invalid startup packet layout: expected terminator as last byte")
    try:
        items = [p.decode("utf-8") for p in parts]
    except UnicodeDecodeError as exc:
        raise ProtocolViolation("invalid startup packet: parameters are not UTF-8") from exc
    return dict(zip(items[::2], items[1::2], strict=True))


class MessageReader:
    """Splits a typed-message stream into (type, body) pairs; buffers partial messages.

    The buffer is consumed from an offset and compacted only when drained or large, so
    framing stays O(n) in the bytes received.
    """

    __slots__ = ("_buf", "_pos", "max_length")

    def __init__(self, max_length: int = MAX_CLIENT_MESSAGE) -> None:
        self._buf = bytearray()
        self._pos = 0
        self.max_length = max_length

    def feed(self, data: bytes) -> None:
        if self._pos and self._pos == len(self._buf):
            self._buf.clear()
            self._pos = 0
        self._buf += data

    def next(self) -> tuple[int, bytes] | None:
        """The next complete message as (type byte, body), or None if incomplete."""
        buf, pos = self._buf, self._pos
        if len(buf) - pos < 5:
            return None
        length = _U32.unpack_from(buf, pos + 1)[0]
        if length < 4 or length > self.max_length:
            raise ProtocolViolation(f"invalid message length {length}")
        end = pos + 1 + length
        if len(buf) < end:
            return None
        kind = buf[pos]
        body = bytes(buf[pos + 5:end])
        self._pos = end
        if end == len(buf) or end > 65536:
            del buf[:end]  # compact: consumed bytes never pile up, and each is moved at most once
            self._pos = 0
        return kind, body

    def take_rest(self) -> bytes:
        """Remove and return every buffered byte not yet returned by next()."""
        rest = bytes(self._buf[self._pos:])
        self._buf.clear()
        self._pos = 0
        return rest

    @property
    def buffered(self) -> int:
        return len(self._buf) - self._pos
