"""Framing of MySQL byte streams: 4-byte packet headers, payloads split at 16 MiB, and their reassembly.

A packet is a 3-byte little-endian payload length, a 1-byte sequence id and the payload. A
payload of 0xFFFFFF bytes or more is sent as packets of exactly 0xFFFFFF bytes followed by one
shorter packet (possibly empty), each with the next sequence id. The functions here read the
header only; `PacketReader` reassembles whole payloads for the places that need them (commands
from clients, the login exchange), while the response relay streams packets without reassembling.
"""

from __future__ import annotations

import struct

from ....errors import ProtocolViolation
from .codes import MAX_PACKET_PAYLOAD

HEADER_SIZE = 4
# Largest payload PacketReader accepts by default. The server refuses anything above its
# max_allowed_packet (MariaDB 10.11: 16 MiB by default, MySQL 8: 64 MiB, at most 1 GiB); a
# command beyond this is far more likely garbage or an attack than a real INSERT, and accepting
# it would let one client make the proxy buffer that much memory.
DEFAULT_MAX_PAYLOAD = 64 * 1024 * 1024
# The reader compacts its buffer once this much has been consumed and the consumed part is the
# larger half, so each byte is moved at most about once (framing stays O(n)).
_COMPACT_AFTER = 65536

_U32 = struct.Struct("<I")


def payload_length(buf: bytes | bytearray | memoryview, pos: int = 0) -> int:
    """The payload length in the packet header at buf[pos:pos + 4]."""
    return int(_U32.unpack_from(buf, pos)[0]) & 0xFFFFFF


def sequence_id(buf: bytes | bytearray | memoryview, pos: int = 0) -> int:
    """The sequence id in the packet header at buf[pos:pos + 4]."""
    return buf[pos + 3]


def packet_header(length: int, seq: int) -> bytes:
    """A packet header for a payload of `length` (< 0xFFFFFF) bytes."""
    return _U32.pack(length | (seq & 0xFF) << 24)


def encode_packets(payload: bytes | bytearray | memoryview, seq: int = 0) -> tuple[bytes, int]:
    """Frame one payload (split into 0xFFFFFF-byte packets if needed); returns (bytes, next seq)."""
    n = len(payload)
    if n < MAX_PACKET_PAYLOAD:
        return _U32.pack(n | (seq & 0xFF) << 24) + payload, (seq + 1) & 0xFF
    parts: list[bytes | bytearray | memoryview] = []
    for offset in range(0, n + 1, MAX_PACKET_PAYLOAD):  # n + 1: a multiple of 0xFFFFFF ends with an empty packet
        chunk = payload[offset:offset + MAX_PACKET_PAYLOAD]
        parts.append(_U32.pack(len(chunk) | (seq & 0xFF) << 24))
        parts.append(chunk)
        seq = (seq + 1) & 0xFF
    return b"".join(parts), seq


def encode_packet(payload: bytes | bytearray | memoryview, seq: int = 0) -> bytes:
    """Frame one payload starting at sequence id `seq` (see encode_packets for the next id)."""
    return encode_packets(payload, seq)[0]


def complete_prefix(buf: bytes | bytearray | memoryview, pos: int = 0) -> int:
    """The offset just past the last whole payload (all its packets) in buf[pos:], from headers only."""
    size = len(buf)
    end = last = pos
    while size - end >= HEADER_SIZE:
        length = int(_U32.unpack_from(buf, end)[0]) & 0xFFFFFF
        following = end + HEADER_SIZE + length
        if following > size:
            break
        end = following
        if length < MAX_PACKET_PAYLOAD:
            last = end
    return last


class PacketReader:
    """Splits a packet stream into (sequence id, payload) pairs, reassembling split payloads.

    The buffer is consumed from an offset and compacted only when drained or when the consumed
    part is large, and a payload spread over several packets is scanned header by header once,
    across feeds, so framing is O(n) in the bytes received. `next_seq` is the sequence id that
    follows the last packet of the payload returned last (the id of the reply).
    """

    __slots__ = ("_buf", "_pos", "_scan", "_total", "max_payload", "next_seq")

    def __init__(self, max_payload: int = DEFAULT_MAX_PAYLOAD) -> None:
        self._buf = bytearray()
        self._pos = 0          # start of the first packet not yet returned
        self._scan = 0         # offset of the next header of a payload still incomplete (0: none)
        self._total = 0        # payload bytes of that payload's packets scanned so far
        self.max_payload = max_payload
        self.next_seq = 0

    def feed(self, data: bytes | bytearray | memoryview) -> None:
        if self._pos and self._pos == len(self._buf):
            self._buf.clear()
            self._pos = 0
        self._buf += data

    def next(self) -> tuple[int, bytes] | None:
        """The next whole payload as (sequence id of its first packet, payload), or None."""
        buf, pos = self._buf, self._pos
        size = len(buf)
        if self._scan:
            scan, total = self._scan, self._total
        else:
            scan, total = pos, 0
        while size - scan >= HEADER_SIZE:
            word = int(_U32.unpack_from(buf, scan)[0])
            length = word & 0xFFFFFF
            if scan != pos and word >> 24 != (buf[scan - HEADER_SIZE - MAX_PACKET_PAYLOAD + 3] + 1) & 0xFF:
                raise ProtocolViolation("packets out of order inside a split payload")
            total += length
            if total > self.max_payload:
                raise ProtocolViolation(f"payload of at least {total} bytes exceeds the limit of "
                                        f"{self.max_payload}")
            end = scan + HEADER_SIZE + length
            if end > size:
                break
            if length == MAX_PACKET_PAYLOAD:
                scan = end
                continue
            self._scan = self._total = 0
            self.next_seq = ((word >> 24) + 1) & 0xFF
            seq = buf[pos + 3]
            payload = self._assemble(pos, end, total)
            self._pos = end
            if end == size or (end > _COMPACT_AFTER and 2 * end > size):
                del buf[:end]
                self._pos = 0
            return seq, payload
        if scan != pos:
            # Part of a split payload is buffered: resume at its next header next time.
            # The header was counted already if it is complete, so step back over it.
            if size - scan >= HEADER_SIZE:
                total -= int(_U32.unpack_from(buf, scan)[0]) & 0xFFFFFF
            self._scan, self._total = scan, total
        return None

    def _assemble(self, pos: int, end: int, total: int) -> bytes:
        buf = self._buf
        with memoryview(buf) as view:
            if total + HEADER_SIZE == end - pos:
                return bytes(view[pos + HEADER_SIZE:end])
            parts = []
            while pos < end:
                length = int(_U32.unpack_from(buf, pos)[0]) & 0xFFFFFF
                parts.append(view[pos + HEADER_SIZE:pos + HEADER_SIZE + length])
                pos += HEADER_SIZE + length
            payload = b"".join(parts)
            parts.clear()   # release the views before the buffer may be resized
            return payload

    def take_rest(self) -> bytes:
        """Remove and return every buffered byte not yet returned by next()."""
        rest = bytes(self._buf[self._pos:])
        self._buf.clear()
        self._pos = self._scan = self._total = 0
        return rest

    @property
    def buffered(self) -> int:
        """Bytes received and not yet returned as part of a payload."""
        return len(self._buf) - self._pos
