"""Builders and parsers for the PostgreSQL v3 messages the proxy itself creates or reads."""

from __future__ import annotations

import struct
from dataclasses import dataclass

PROTOCOL_V3 = 196608
SSL_REQUEST_CODE = 80877103
GSSENC_REQUEST_CODE = 80877104
CANCEL_REQUEST_CODE = 80877102

_I16 = struct.Struct("!h")
_I32 = struct.Struct("!i")
_HDR = struct.Struct("!cI")
_BACKEND_KEY_DATA = struct.Struct("!cIiI")
_AUTH_MD5_HEADER = b"R\x00\x00\x00\x0c\x00\x00\x00\x05"   # 'R', length 12, AUTH_MD5; the 4-byte salt follows

# Authentication request codes (message 'R').
AUTH_OK = 0
AUTH_CLEARTEXT = 3
AUTH_MD5 = 5
AUTH_SASL = 10
AUTH_SASL_CONTINUE = 11
AUTH_SASL_FINAL = 12


def message(kind: bytes, body: bytes = b"") -> bytes:
    """Frame a typed message: type byte, int32 length (self-inclusive), body."""
    return _HDR.pack(kind, len(body) + 4) + body


def cstr(value: str | bytes) -> bytes:
    """A NUL-terminated string."""
    if isinstance(value, str):
        value = value.encode()
    return value + b"\x00"


# ---- backend (server → client) messages --------------------------------------------------------

def auth_request(code: int, payload: bytes = b"") -> bytes:
    return message(b"R", _I32.pack(code) + payload)


def auth_ok() -> bytes:
    return auth_request(AUTH_OK)


def auth_md5(salt: bytes) -> bytes:
    if len(salt) != 4:
        raise ValueError("an md5 salt is 4 bytes")
    return _AUTH_MD5_HEADER + salt


def auth_sasl(mechanisms: list[str]) -> bytes:
    return auth_request(AUTH_SASL, b"".join(cstr(m) for m in mechanisms) + b"\x00")


def auth_sasl_continue(data: bytes) -> bytes:
    return auth_request(AUTH_SASL_CONTINUE, data)


def auth_sasl_final(data: bytes) -> bytes:
    return auth_request(AUTH_SASL_FINAL, data)


def parameter_status(name: str, value: str) -> bytes:
    return message(b"S", cstr(name) + cstr(value))


def backend_key_data(pid: int, key: int) -> bytes:
    return _BACKEND_KEY_DATA.pack(b"K", 12, pid, key)


def ready_for_query(status: bytes = b"I") -> bytes:
    return message(b"Z", status)


PARSE_COMPLETE = message(b"1")
BIND_COMPLETE = message(b"2")
CLOSE_COMPLETE = message(b"3")


def error_response(code: str, text: str, severity: str = "ERROR", detail: str | None = None,
                   hint: str | None = None) -> bytes:
    """ErrorResponse with severity (localized and not), SQLSTATE, message and optional detail/hint."""
    fields = b"S" + cstr(severity) + b"V" + cstr(severity) + b"C" + cstr(code) + b"M" + cstr(text)
    if detail:
        fields += b"D" + cstr(detail)
    if hint:
        fields += b"H" + cstr(hint)
    return message(b"E", fields + b"\x00")


def notice_response(text: str, code: str = "00000", severity: str = "NOTICE") -> bytes:
    fields = b"S" + cstr(severity) + b"V" + cstr(severity) + b"C" + cstr(code) + b"M" + cstr(text)
    return message(b"N", fields + b"\x00")


# ---- frontend (client → server) messages -------------------------------------------------------

def startup_message(params: dict[str, str]) -> bytes:
    body = struct.pack("!i", PROTOCOL_V3) + b"".join(cstr(k) + cstr(v) for k, v in params.items()) + b"\x00"
    return struct.pack("!i", len(body) + 4) + body


def ssl_request() -> bytes:
    return struct.pack("!ii", 8, SSL_REQUEST_CODE)


def cancel_request(pid: int, key: int) -> bytes:
    return struct.pack("!iiiI", 16, CANCEL_REQUEST_CODE, pid, key)


def query(sql: str) -> bytes:
    return message(b"Q", cstr(sql))


def password_message(data: bytes) -> bytes:
    return message(b"p", data)


def sasl_initial_response(mechanism: str, data: bytes) -> bytes:
    return message(b"p", cstr(mechanism) + _I32.pack(len(data)) + data)


def terminate() -> bytes:
    return message(b"X")


def sync() -> bytes:
    return message(b"S")


def flush() -> bytes:
    return message(b"H")


# ---- parsers -----------------------------------------------------------------------------------

@dataclass(frozen=True)
class ErrorFields:
    """The interesting fields of an ErrorResponse / NoticeResponse."""

    severity: str
    code: str
    message: str

    def __str__(self) -> str:
        return f"{self.severity} {self.code}: {self.message}"


def parse_error_fields(body: bytes | memoryview) -> ErrorFields:
    fields: dict[str, str] = {}
    data = bytes(body)
    pos = 0
    while pos < len(data) and data[pos] != 0:
        key = chr(data[pos])
        end = data.index(b"\x00", pos + 1)
        fields[key] = data[pos + 1:end].decode("utf-8", "replace")
        pos = end + 1
    return ErrorFields(fields.get("V", fields.get("S", "ERROR")), fields.get("C", "XX000"), fields.get("M", ""))


def parse_parameter_status(body: bytes | memoryview) -> tuple[str, str]:
    data = bytes(body)
    name, value = data.split(b"\x00")[:2]
    return name.decode(), value.decode()


def read_cstr(data: bytes | memoryview, pos: int) -> tuple[bytes, int]:
    """Read a NUL-terminated string at pos; returns (value, position after the NUL). Raises ValueError."""
    data = bytes(data) if isinstance(data, memoryview) else data
    end = data.index(b"\x00", pos)
    return data[pos:end], end + 1


def quote_literal(value: str) -> str:
    """SQL string literal (standard_conforming_strings on)."""
    return "'" + value.replace("'", "''") + "'"


def quote_ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def parse_data_row(body: bytes) -> list[str | None]:
    """The text values of a DataRow message body (None for SQL NULL)."""
    (count,) = _I16.unpack_from(body, 0)
    pos = 2
    values: list[str | None] = []
    for _ in range(count):
        (length,) = _I32.unpack_from(body, pos)
        pos += 4
        if length < 0:
            values.append(None)
            continue
        values.append(body[pos:pos + length].decode("utf-8"))
        pos += length
    return values


def parse_lsn(text: str | None) -> int | None:
    """A PostgreSQL LSN "16/B374D848" as an integer byte position."""
    if text is None:
        return None
    high, _, low = text.partition("/")
    return (int(high, 16) << 32) | int(low, 16)


def format_lsn(position: int) -> str:
    """An integer byte position as a PostgreSQL LSN literal ("16/B374D848")."""
    return f"{position >> 32:X}/{position & 0xFFFFFFFF:X}"
