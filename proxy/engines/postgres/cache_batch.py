"""Extended-protocol batches the query cache may answer (SPEC §11): Parse?/Bind/Describe?/Execute/Sync of one
statement, decoded from one client read; and the server replies to them that may be stored. Pure, no I/O."""

from __future__ import annotations

import struct
from typing import NamedTuple

from ...cache.catalog import CatalogSnapshot
from ...cache.policy import CachePlan
from ...cache.scopes import Point, RowWrite
from .statements import ParseMessage, bind_statement, decode_parse

_U32 = struct.Struct("!I")
_SYNC = b"S\x00\x00\x00\x04"
_PARSE_COMPLETE = b"1\x00\x00\x00\x04"
# The message sequences answered: Bind, Describe (portal) and Execute of the same portal, then Sync.
_SHAPES = frozenset({b"BES", b"BDES", b"PBES", b"PBDES"})
# A stored extended reply: BindComplete, RowDescription (when the batch had a Describe), DataRows, and
# CommandComplete or PortalSuspended (Execute with a row limit: asyncpg's fetchrow asks for 1 row).
_STORED_KINDS = frozenset(b"2TDCs")


class ExtendedBatch(NamedTuple):
    """One complete batch of a prepared read: the Parse in it (None: a statement parsed before), the
    statement name the Bind runs, and the key material: Bind's parameter formats, values and result
    formats, and whether a Describe of the portal asks for its RowDescription."""

    parse: ParseMessage | None
    statement: bytes
    bound: bytes        # the Bind body after the statement name
    described: bool
    max_rows: bytes     # Execute's row limit (int32; 0: all rows)

    def key_parameters(self, tail: bytes) -> bytes:
        """What the key adds to the statement text: the parameter types the statement was parsed
        with, the formats and values bound, the result formats, and whether a RowDescription is in it."""
        head = b"E1" if self.described else b"E0"
        return head + self.max_rows + _U32.pack(len(tail)) + tail + self.bound


class RememberedBatch(NamedTuple):
    """What the cache made of a prepared read's Bind..Sync bytes (no Parse in them), kept per cluster so
    that the same bytes again skip decoding, planning and the point: valid while the session's statement
    `statement` is `known` (text, parameter types), the catalog snapshot and the cache settings are these."""

    statement: bytes
    known: tuple[bytes, bytes]
    snapshot: CatalogSnapshot | None
    settings: object
    plan: CachePlan
    point: Point | None
    parameters: bytes     # ExtendedBatch.key_parameters()
    keys: dict[bytes, str]   # key_prefix() → the key of this batch under it (filled as sessions use it)


class RememberedWrite(NamedTuple):
    """What a batch binding a statement that is not a cached read writes, kept as RememberedBatch is
    (same bytes, same statement text and parameter types `known`, catalog snapshot and cache settings)."""

    statement: bytes
    known: tuple[bytes, bytes]
    snapshot: CatalogSnapshot | None
    settings: object
    tables: tuple[str, ...]       # written table-wide
    rows: tuple[RowWrite, ...]    # written row by row


MAX_REMEMBERED = 10000      # batches (reads and writes) remembered per cluster (then forgotten all at once)
MAX_REMEMBERED_SIZE = 512   # ... of at most this many bytes (≤ 10000 × 512 bytes in all)


def extended_batch(data: bytes) -> ExtendedBatch | None:
    """`data` decoded if it is exactly one simple batch of one statement (see the module docstring), else None."""
    if not data.endswith(_SYNC):
        return None
    return unnamed_portal_batch(data) or any_batch(data)


# The unnamed portal's Describe and the head of its Execute (then the int32 row limit).
_DESCRIBE_UNNAMED = b"D\x00\x00\x00\x06P\x00"
_EXECUTE_UNNAMED = b"E\x00\x00\x00\x09\x00"


def unnamed_portal_batch(data: bytes) -> ExtendedBatch | None:
    """The common batch (the unnamed portal, as libpq, psycopg, pgbench and asyncpg send it) decoded at
    fixed offsets; None when `data` is any other shape (any_batch() decides then). `data` ends with Sync."""
    size = len(data)
    pos = 0
    if data[0] == 0x50:
        if size < 10:
            return None
        pos = 1 + _U32.unpack_from(data, 1)[0]
        if pos < 5 or pos + 10 > size:
            return None
    if size - pos < 10 or data[pos] != 0x42 or data[pos + 5] != 0:
        return None
    end = pos + 1 + _U32.unpack_from(data, pos + 1)[0]
    rest = size - end
    if rest == 22 and data.startswith(_DESCRIBE_UNNAMED, end):
        described, execute = True, end + 7
    elif rest == 15:
        described, execute = False, end
    else:
        return None
    if end < pos + 6 or not data.startswith(_EXECUTE_UNNAMED, execute):
        return None
    stop = data.find(b"\x00", pos + 6, end)
    if stop < 0:
        return None
    statement = data[pos + 6:stop]
    parse = None
    if pos:
        parse = decode_parse(data[5:pos])
        if parse.name != statement:
            return None
    return ExtendedBatch(parse, statement, data[stop + 1:end], described, data[execute + 6:execute + 10])


def any_batch(data: bytes) -> ExtendedBatch | None:
    """extended_batch() message by message, for any portal name. `data` ends with Sync."""
    size = len(data)
    pos = 0
    kinds = bytearray()
    bodies: list[bytes] = []
    while pos < size:
        if size - pos < 5 or len(kinds) >= 5:
            return None
        length = _U32.unpack_from(data, pos + 1)[0]
        end = pos + 1 + length
        if length < 4 or end > size:
            return None
        kinds.append(data[pos])
        bodies.append(data[pos + 5:end])
        pos = end
    shape = bytes(kinds)
    if shape not in _SHAPES:
        return None
    parse = None
    if shape[0] == 0x50:
        parse = decode_parse(bodies[0])
        bodies = bodies[1:]
    bind = bodies[0]
    start, stop = bind_statement(bind)
    portal = bind[:start - 1]
    statement = bind[start:stop]
    if parse is not None and parse.name != statement:
        return None
    described = len(bodies) == 4
    if described and bodies[1] != b"P" + portal + b"\x00":
        return None
    execute = bodies[-2]
    if len(execute) != len(portal) + 5 or not execute.startswith(portal + b"\x00"):
        return None
    return ExtendedBatch(parse, statement, bind[stop + 1:], described, execute[-4:])


def storable_extended(response: bytes) -> bytes | None:
    """The part of a server's reply to an extended batch (its ReadyForQuery removed) worth storing:
    BindComplete, RowDescription?, DataRows, CommandComplete or PortalSuspended, without any leading ParseComplete; None
    if it holds anything else (an error, a notice, a suspended portal...)."""
    while response.startswith(_PARSE_COMPLETE):
        response = response[5:]
    pos, size, last = 0, len(response), 0
    if size < 5 or response[0] != 0x32:
        return None
    while pos < size:
        if size - pos < 5 or response[pos] not in _STORED_KINDS:
            return None
        last = response[pos]
        pos += 1 + _U32.unpack_from(response, pos + 1)[0]
    return response if pos == size and (last == 0x43 or last == 0x73) else None
