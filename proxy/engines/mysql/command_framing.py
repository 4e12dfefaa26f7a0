"""Client commands in a MySQL byte stream, pure functions: where one ends, how long it is, its payload.

A client command is one payload with sequence id 0, sent as one packet or, from 16 MiB on, as a
run of 0xFFFFFF-byte packets ending with a shorter one (wire/packets.py). The session reads
commands straight from the bytes it received, without reassembling them, using these helpers;
a command over MAX_COMMAND raises `CommandTooLarge` (the session answers it with
ER_NET_PACKET_TOO_LARGE and drains the client, see login_flow.refuse_too_large). NO_RESPONSE
names the commands a server sends nothing back for.
"""

from __future__ import annotations

from ...errors import ProtocolViolation
from .wire.codes import MAX_PACKET_PAYLOAD, Command, ErrorCode

# Commands answered without a response; the rest get one (or a whole result).
NO_RESPONSE = frozenset((Command.STMT_CLOSE, Command.STMT_SEND_LONG_DATA, Command.QUIT))
# The largest command a client may send (the sum of its 16 MiB packets): larger is refused (1153).
MAX_COMMAND = 64 * 1024 * 1024


class CommandTooLarge(ProtocolViolation):
    """A command over MAX_COMMAND; `seq` is the sequence id the client expects the answer with."""

    def __init__(self, seq: int) -> None:
        super().__init__(f"Got a packet bigger than 'max_allowed_packet' bytes ({MAX_COMMAND})")
        self.errno = ErrorCode.NET_PACKET_TOO_LARGE
        self.seq = seq & 0xFF


def command_end(data: bytes | bytearray, pos: int) -> int:
    """Where the command starting at pos ends (past len(data) while incomplete)."""
    size = len(data)
    end = pos
    total = 0
    while True:
        if size - end < 4:
            return size + 1
        length = data[end] | data[end + 1] << 8 | data[end + 2] << 16
        total += length
        if total > MAX_COMMAND:
            raise CommandTooLarge(data[end + 3] + 1)
        end += 4 + length
        if length < MAX_PACKET_PAYLOAD:
            return end


def incomplete_length(data: bytes, pos: int) -> int:
    """The length the incomplete command at data[pos:] must reach before it can be complete (what its
    headers so far tell: a large command is then not copied and scanned again for every chunk)."""
    size = len(data)
    end = pos
    while size - end >= 4:
        length = data[end] | data[end + 1] << 8 | data[end + 2] << 16
        end += 4 + length
        if length < MAX_PACKET_PAYLOAD or end > size:
            break
    else:
        end += 4
    return end - pos


def joined_payload(data: bytes, pos: int, end: int) -> bytes:
    """The payload of the command at data[pos:end] that spans several 16 MiB packets, joined."""
    parts = []
    while pos < end:
        length = data[pos] | data[pos + 1] << 8 | data[pos + 2] << 16
        parts.append(data[pos + 4:pos + 4 + length])
        pos += 4 + length
    return b"".join(parts)


def speaks_postgres(data: bytes) -> bool:
    """A PostgreSQL SSLRequest, GSSENCRequest or v3 StartupMessage (libpq, psql) at a MySQL endpoint."""
    return len(data) >= 8 and data[:3] == b"\x00\x00\x00" and (
        data[4:8] in (b"\x04\xd2\x16\x2f", b"\x04\xd2\x16\x30") or data[4:8] == b"\x00\x03\x00\x00")
