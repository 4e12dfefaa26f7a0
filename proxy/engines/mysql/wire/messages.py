"""Payloads of the MySQL protocol: length-encoded values, OK/ERR/EOF, result sets, statement commands.

Everything here works on payloads (packet framing is packets.py) and assumes CLIENT_PROTOCOL_41,
which the proxy always negotiates. Decoders raise ProtocolViolation on truncated or invalid input.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import NamedTuple

from ....errors import ProtocolViolation
from .codes import (
    EOF_HEADER,
    ERR_HEADER,
    ERROR_SQLSTATE,
    LOCAL_INFILE_HEADER,
    NOT_FIXED_DEC,
    OK_HEADER,
    UTF8MB4_GENERAL_CI,
    Capability,
    ColumnType,
    Command,
    CursorType,
    SessionTrack,
    Status,
)
from .packets import encode_packets

Buffer = bytes | bytearray | memoryview

NULL = b"\xfb"   # a NULL column value in a text row

_U16 = struct.Struct("<H")
_U32 = struct.Struct("<I")
_U64 = struct.Struct("<Q")
_ERR_HEAD = struct.Struct("<BH")
_EOF = struct.Struct("<BHH")
_PREPARE_OK = struct.Struct("<BIHHBH")
_COLUMN_TAIL = struct.Struct("<HIBHBxx")
_EXECUTE = struct.Struct("<BIBI")
_STMT = struct.Struct("<BI")
_FETCH = struct.Struct("<BII")

# --------------------------------------------------------------------- length-encoded values


def read_lenenc_int(buf: Buffer, pos: int) -> tuple[int | None, int]:
    """The length-encoded integer at buf[pos] (None for the 0xFB NULL marker) and the offset after it."""
    if pos >= len(buf):
        raise ProtocolViolation("truncated length-encoded integer")
    first = buf[pos]
    if first < 0xFB:
        return first, pos + 1
    if first == 0xFB:
        return None, pos + 1
    if first == 0xFC:
        size = 2
    elif first == 0xFD:
        size = 3
    elif first == 0xFE:
        size = 8
    else:
        raise ProtocolViolation("invalid length-encoded integer prefix 0xFF")
    end = pos + 1 + size
    if end > len(buf):
        raise ProtocolViolation("truncated length-encoded integer")
    return int.from_bytes(buf[pos + 1:end], "little"), end


def read_lenenc_bytes(buf: Buffer, pos: int) -> tuple[bytes | None, int]:
    """The length-encoded string at buf[pos] (None for NULL) and the offset after it."""
    length, pos = read_lenenc_int(buf, pos)
    if length is None:
        return None, pos
    end = pos + length
    if end > len(buf):
        raise ProtocolViolation("truncated length-encoded string")
    return bytes(buf[pos:end]), end


def _read_lenenc_text(buf: Buffer, pos: int) -> tuple[bytes, int]:
    """A length-encoded string that may not be NULL."""
    value, pos = read_lenenc_bytes(buf, pos)
    if value is None:
        raise ProtocolViolation("unexpected NULL string")
    return value, pos


def lenenc_int(value: int) -> bytes:
    """The length-encoded form of a non-negative integer below 2**64."""
    if value < 0xFB:
        if value < 0:
            raise ValueError("length-encoded integers are unsigned")
        return bytes((value,))
    if value < 0x10000:
        return b"\xfc" + _U16.pack(value)
    if value < 0x1000000:
        return b"\xfd" + value.to_bytes(3, "little")
    return b"\xfe" + _U64.pack(value)   # struct refuses values of 2**64 and above


def lenenc_bytes(value: Buffer) -> bytes:
    """The length-encoded form of a string."""
    return lenenc_int(len(value)) + value


# --------------------------------------------------------------------- OK, ERR, EOF


class StateChange(NamedTuple):
    """One session-state-change record of an OK packet (CLIENT_SESSION_TRACK).

    `name` is the variable name for SYSTEM_VARIABLES and empty otherwise; `value` is the new
    value, schema, GTID list, transaction state or characteristics (the raw record body for
    types this module does not know).
    """

    kind: int
    name: bytes
    value: bytes


@dataclass(frozen=True, slots=True)
class OkPacket:
    affected_rows: int
    last_insert_id: int
    status: int
    warnings: int
    info: bytes = b""
    changes: tuple[StateChange, ...] = ()


@dataclass(frozen=True, slots=True)
class ErrPacket:
    errno: int
    sqlstate: str
    message: str


@dataclass(frozen=True, slots=True)
class EofPacket:
    warnings: int
    status: int


def decode_ok(payload: Buffer, capabilities: int) -> OkPacket:
    """An OK packet, or with DEPRECATE_EOF an OK-as-EOF (header 0xFE)."""
    if not payload or payload[0] not in (OK_HEADER, EOF_HEADER):
        raise ProtocolViolation("not an OK packet")
    affected, pos = read_lenenc_int(payload, 1)
    insert_id, pos = read_lenenc_int(payload, pos)
    if affected is None or insert_id is None or pos + 4 > len(payload):
        raise ProtocolViolation("truncated OK packet")
    status, warnings = _U16.unpack_from(payload, pos)[0], _U16.unpack_from(payload, pos + 2)[0]
    pos += 4
    info = b""
    changes: tuple[StateChange, ...] = ()
    if pos < len(payload):
        # Servers send the info length-encoded with or without SESSION_TRACK (MariaDB and MySQL
        # both use net_store_data); only the session-state part depends on the capability.
        info, pos = _read_lenenc_text(payload, pos)
        if capabilities & Capability.SESSION_TRACK and status & Status.SESSION_STATE_CHANGED and pos < len(payload):
            state, pos = _read_lenenc_text(payload, pos)
            changes = tuple(decode_session_state(state))
    return OkPacket(affected, insert_id, status, warnings, info, changes)


def decode_session_state(data: Buffer) -> list[StateChange]:
    """The records of an OK packet's session-state information."""
    changes = []
    pos = 0
    while pos < len(data):
        kind = data[pos]
        body, pos = _read_lenenc_text(data, pos + 1)
        if kind == SessionTrack.SYSTEM_VARIABLES:
            at = 0
            while at < len(body):   # one name/value pair per record in practice; accept several
                name, at = _read_lenenc_text(body, at)
                value, at = _read_lenenc_text(body, at)
                changes.append(StateChange(kind, name, value))
        elif kind == SessionTrack.GTIDS:
            if not body:
                raise ProtocolViolation("truncated GTIDS session-state record")
            changes.append(StateChange(kind, b"", _read_lenenc_text(body, 1)[0]))   # after the encoding byte
        elif kind in (SessionTrack.SCHEMA, SessionTrack.TRANSACTION_STATE, SessionTrack.TRANSACTION_CHARACTERISTICS):
            changes.append(StateChange(kind, b"", _read_lenenc_text(body, 0)[0]))
        else:   # STATE_CHANGE: MariaDB and MySQL send a bare b"1" (not length-encoded as documented)
            changes.append(StateChange(kind, b"", body))
    return changes


def encode_session_state(changes: Iterable[StateChange]) -> bytes:
    """Session-state information for an OK packet (the inverse of decode_session_state)."""
    out = []
    for kind, name, value in changes:
        if kind == SessionTrack.SYSTEM_VARIABLES:
            body = lenenc_bytes(name) + lenenc_bytes(value)
        elif kind == SessionTrack.GTIDS:
            body = b"\x00" + lenenc_bytes(value)
        elif kind in (SessionTrack.SCHEMA, SessionTrack.TRANSACTION_STATE, SessionTrack.TRANSACTION_CHARACTERISTICS):
            body = lenenc_bytes(value)
        else:
            body = value
        out.append(bytes((kind,)) + lenenc_bytes(body))
    return b"".join(out)


def encode_ok(capabilities: int, affected_rows: int = 0, last_insert_id: int = 0,
              status: int = Status.AUTOCOMMIT, warnings: int = 0, info: bytes = b"",
              session_state: bytes = b"", header: int = OK_HEADER) -> bytes:
    """An OK packet payload; header=EOF_HEADER makes the OK-as-EOF of DEPRECATE_EOF.

    `session_state` (from encode_session_state) is sent only with CLIENT_SESSION_TRACK, and sets
    SERVER_SESSION_STATE_CHANGED.
    """
    track = bool(capabilities & Capability.SESSION_TRACK and session_state)
    if track:
        status |= Status.SESSION_STATE_CHANGED
    out = bytes((header,)) + lenenc_int(affected_rows) + lenenc_int(last_insert_id) + _U16.pack(status) \
        + _U16.pack(warnings)
    if info or track:
        out += lenenc_bytes(info)
    if track:
        out += lenenc_bytes(session_state)
    return out


def decode_err(payload: Buffer) -> ErrPacket:
    """An ERR packet, with or without the '#' SQLSTATE marker (pre-4.1 form: SQLSTATE HY000)."""
    if len(payload) < 3 or payload[0] != ERR_HEADER:
        raise ProtocolViolation("not an ERR packet")
    errno = _U16.unpack_from(payload, 1)[0]
    if len(payload) >= 9 and payload[3] == 0x23:   # '#'
        sqlstate = bytes(payload[4:9]).decode("ascii", "replace")
        message = bytes(payload[9:])
    else:
        sqlstate, message = "HY000", bytes(payload[3:])
    return ErrPacket(errno, sqlstate, message.decode("utf-8", "replace"))


def encode_err(errno: int, message: str, sqlstate: str | None = None) -> bytes:
    """An ERR packet payload; the SQLSTATE defaults to the one codes.ERROR_SQLSTATE gives the errno."""
    state = sqlstate or ERROR_SQLSTATE.get(errno, "HY000")
    if len(state) != 5:
        raise ValueError(f"SQLSTATE must have 5 characters: {state!r}")
    return _ERR_HEAD.pack(ERR_HEADER, errno) + b"#" + state.encode("ascii") + message.encode("utf-8")


def decode_eof(payload: Buffer) -> EofPacket:
    """An EOF packet (header 0xFE, payload shorter than 9 bytes)."""
    if len(payload) < 5 or payload[0] != EOF_HEADER:
        raise ProtocolViolation("not an EOF packet")
    _, warnings, status = _EOF.unpack_from(payload, 0)
    return EofPacket(warnings, status)


def encode_eof(warnings: int = 0, status: int = Status.AUTOCOMMIT) -> bytes:
    return _EOF.pack(EOF_HEADER, warnings, status)


def encode_end_of_rows(capabilities: int, status: int = Status.AUTOCOMMIT, warnings: int = 0) -> bytes:
    """What ends a list of rows or column definitions: EOF, or OK-as-EOF with DEPRECATE_EOF."""
    if capabilities & Capability.DEPRECATE_EOF:
        return encode_ok(capabilities, status=status, warnings=warnings, header=EOF_HEADER)
    return encode_eof(warnings, status)


# --------------------------------------------------------------------- result sets


class Column(NamedTuple):
    """A column definition (Protocol::ColumnDefinition41)."""

    name: str
    type: int = ColumnType.VAR_STRING
    charset: int = UTF8MB4_GENERAL_CI
    length: int = 1024
    flags: int = 0
    decimals: int = NOT_FIXED_DEC
    table: str = ""
    schema: str = ""


def encode_column_definition(column: Column) -> bytes:
    name, table = column.name.encode("utf-8"), column.table.encode("utf-8")
    return b"".join((
        lenenc_bytes(b"def"), lenenc_bytes(column.schema.encode("utf-8")), lenenc_bytes(table),
        lenenc_bytes(table), lenenc_bytes(name), lenenc_bytes(name), b"\x0c",
        _COLUMN_TAIL.pack(column.charset, column.length, column.type, column.flags, column.decimals),
    ))


def decode_column_definition(payload: Buffer) -> Column:
    """A column definition (a COM_FIELD_LIST default value after it is ignored)."""
    pos = 0
    texts = []
    for _ in range(6):   # catalog, schema, table, org_table, name, org_name
        text, pos = _read_lenenc_text(payload, pos)
        texts.append(text.decode("utf-8", "replace"))
    fixed, pos = read_lenenc_int(payload, pos)
    if fixed is None or fixed < _COLUMN_TAIL.size or pos + _COLUMN_TAIL.size > len(payload):
        raise ProtocolViolation("truncated column definition")
    charset, length, type_, flags, decimals = _COLUMN_TAIL.unpack_from(payload, pos)
    return Column(texts[4], type_, charset, length, flags, decimals, texts[2], texts[1])


TextValue = bytes | str | int | float | None


def encode_text_row(values: Iterable[TextValue]) -> bytes:
    """A text-protocol row; str values are sent as UTF-8, numbers in decimal, None as NULL."""
    out = []
    for value in values:
        if value is None:
            out.append(NULL)
            continue
        if isinstance(value, bytes):
            raw = value
        elif isinstance(value, bool):
            raw = b"1" if value else b"0"
        elif isinstance(value, str):
            raw = value.encode("utf-8")
        else:
            raw = str(value).encode("ascii")
        out.append(lenenc_int(len(raw)))
        out.append(raw)
    return b"".join(out)


def decode_text_row(payload: Buffer) -> list[bytes | None]:
    """The column values of a text-protocol row (None for NULL)."""
    values = []
    pos = 0
    while pos < len(payload):
        value, pos = read_lenenc_bytes(payload, pos)
        values.append(value)
    return values


def encode_result_set(columns: Sequence[Column | str], rows: Iterable[Sequence[TextValue]], capabilities: int,
                      status: int = Status.AUTOCOMMIT, seq: int = 1) -> bytes:
    """A whole text result set as packets, for an answer the proxy gives itself.

    Column count, definitions, EOF (unless DEPRECATE_EOF), rows, then EOF or OK-as-EOF.
    """
    out = []
    data, seq = encode_packets(lenenc_int(len(columns)), seq)
    out.append(data)
    for column in columns:
        data, seq = encode_packets(encode_column_definition(Column(column) if isinstance(column, str) else column),
                                   seq)
        out.append(data)
    if not capabilities & Capability.DEPRECATE_EOF:
        data, seq = encode_packets(encode_eof(0, status), seq)
        out.append(data)
    for row in rows:
        if len(row) != len(columns):
            raise ValueError(f"row of {len(row)} values for {len(columns)} columns")
        data, seq = encode_packets(encode_text_row(row), seq)
        out.append(data)
    out.append(encode_packets(encode_end_of_rows(capabilities, status), seq)[0])
    return b"".join(out)


def encode_local_infile_request(filename: bytes) -> bytes:
    return bytes((LOCAL_INFILE_HEADER,)) + filename


def decode_local_infile_request(payload: Buffer) -> bytes:
    """The file name a LOCAL INFILE request (0xFB) asks the client to send."""
    if not payload or payload[0] != LOCAL_INFILE_HEADER:
        raise ProtocolViolation("not a LOCAL INFILE request")
    return bytes(payload[1:])


# --------------------------------------------------------------------- prepared statements


@dataclass(frozen=True, slots=True)
class PrepareOk:
    statement_id: int
    num_columns: int
    num_params: int
    warnings: int


def decode_prepare_ok(payload: Buffer) -> PrepareOk:
    """The first packet of a successful COM_STMT_PREPARE response."""
    if len(payload) < _PREPARE_OK.size or payload[0] != OK_HEADER:
        raise ProtocolViolation("not a COM_STMT_PREPARE OK packet")
    _, statement_id, columns, params, _, warnings = _PREPARE_OK.unpack_from(payload, 0)
    return PrepareOk(statement_id, columns, params, warnings)


def encode_prepare_ok(statement_id: int, num_columns: int, num_params: int, warnings: int = 0) -> bytes:
    return _PREPARE_OK.pack(OK_HEADER, statement_id, num_columns, num_params, 0, warnings)


def statement_id(payload: Buffer) -> int:
    """The 4-byte statement id at offset 1: COM_STMT_EXECUTE/CLOSE/RESET/SEND_LONG_DATA/FETCH, PREPARE_OK."""
    if len(payload) < 5:
        raise ProtocolViolation("truncated statement packet")
    return int(_U32.unpack_from(payload, 1)[0])


def with_statement_id(payload: Buffer, new_id: int) -> bytes:
    """The payload with its statement id (see statement_id) replaced."""
    if len(payload) < 5:
        raise ProtocolViolation("truncated statement packet")
    return bytes(payload[:1]) + _U32.pack(new_id) + bytes(payload[5:])


def encode_stmt_prepare(sql: bytes) -> bytes:
    return bytes((Command.STMT_PREPARE,)) + sql


def encode_stmt_execute(statement_id: int, flags: int = CursorType.NO_CURSOR) -> bytes:
    """COM_STMT_EXECUTE of a statement without parameters (what the proxy needs to send itself)."""
    return _EXECUTE.pack(Command.STMT_EXECUTE, statement_id, flags, 1)


def encode_stmt_fetch(statement_id: int, num_rows: int) -> bytes:
    return _FETCH.pack(Command.STMT_FETCH, statement_id, num_rows)


def encode_stmt_command(command: int, statement_id: int) -> bytes:
    """COM_STMT_CLOSE or COM_STMT_RESET."""
    return _STMT.pack(command, statement_id)


# --------------------------------------------------------------------- other commands


def encode_command(command: int, body: bytes = b"") -> bytes:
    """A command payload: COM_QUERY with the SQL, COM_INIT_DB with the schema, COM_PING..."""
    return bytes((command,)) + body


def query_text(payload: Buffer, encoding: str = "utf-8") -> str:
    """The SQL of a COM_QUERY; undecodable bytes survive as surrogates (errors='surrogateescape').

    MySQL 8's CLIENT_QUERY_ATTRIBUTES would put a parameter count first; the proxy does not
    negotiate it.
    """
    return bytes(payload[1:]).decode(encoding, "surrogateescape")


def init_db_schema(payload: Buffer) -> str:
    """The schema a COM_INIT_DB selects."""
    return bytes(payload[1:]).decode("utf-8", "surrogateescape")


def kill_thread_id(payload: Buffer) -> int:
    """The connection id a COM_PROCESS_KILL names."""
    if len(payload) < 5:
        raise ProtocolViolation("truncated COM_PROCESS_KILL")
    return int(_U32.unpack_from(payload, 1)[0])


def set_option_value(payload: Buffer) -> int:
    """The option of a COM_SET_OPTION (codes.SetOption)."""
    if len(payload) < 3:
        raise ProtocolViolation("truncated COM_SET_OPTION")
    return int(_U16.unpack_from(payload, 1)[0])
