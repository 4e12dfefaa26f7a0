"""Connection-phase payloads: HandshakeV10, SSLRequest, HandshakeResponse41, auth switch, COM_CHANGE_USER.

Payloads only (the bytes after the 4-byte packet header): framing and sequence ids belong to the
caller. Every decoder raises ProtocolViolation for truncated or malformed input, never IndexError
or struct.error. Trailing optional fields that a client omits entirely (database, plugin name,
connect attributes when the packet ends just before them) decode as absent, as servers accept.

OK and ERR packets, and length-encoded values, are messages.py's.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field

from ....errors import ProtocolViolation
from .codes import AUTH_MORE_DATA_HEADER, EOF_HEADER, Capability
from .messages import lenenc_bytes, read_lenenc_int

PROTOCOL_VERSION = 10
SSL_REQUEST_LENGTH = 32
_FILLER_23 = bytes(23)


@dataclass(frozen=True)
class HandshakeV10:
    """The server's greeting. `mariadb_capabilities` is written only when LONG_PASSWORD is clear."""

    server_version: str
    connection_id: int
    scramble: bytes                      # the whole auth plugin data, without its trailing NUL
    capabilities: int
    charset: int
    status: int
    auth_plugin: str = ""
    mariadb_capabilities: int = 0        # MariaDB 10.2+: the extended bits in the reserved filler

    def encode(self) -> bytes:
        if len(self.scramble) < 8:
            raise ValueError("a scramble has at least 8 bytes")
        caps = self.capabilities & 0xFFFFFFFF
        plugin_auth = bool(caps & Capability.PLUGIN_AUTH)
        reserved = bytes(6) + (struct.pack("<I", self.mariadb_capabilities)
                               if not caps & Capability.LONG_PASSWORD else bytes(4))
        out = [
            bytes((PROTOCOL_VERSION,)), _cstr(self.server_version.encode()),
            struct.pack("<I", self.connection_id), self.scramble[:8], b"\x00",
            struct.pack("<HBHHB", caps & 0xFFFF, self.charset, self.status, caps >> 16,
                        len(self.scramble) + 1 if plugin_auth else 0),
            reserved,
        ]
        if caps & Capability.SECURE_CONNECTION:
            out.append((self.scramble[8:] + b"\x00").ljust(13, b"\x00"))
        if plugin_auth:
            out.append(_cstr(self.auth_plugin.encode()))
        return b"".join(out)

    @classmethod
    def decode(cls, payload: bytes) -> HandshakeV10:
        r = _Reader(payload, "server greeting")
        version = r.u8()
        if version != PROTOCOL_VERSION:
            raise ProtocolViolation(f"server greeting: unsupported protocol version {version}")
        server_version = _text(r.cstr())
        connection_id = r.u32()
        part1 = r.take(8)
        r.take(1)
        caps_low, charset, status, caps_high, data_len = r.unpack("<HBHHB")
        caps = caps_low | caps_high << 16
        r.take(6)
        mariadb_caps = r.u32()
        if caps & Capability.LONG_PASSWORD:
            mariadb_caps = 0
        scramble = part1
        if caps & Capability.SECURE_CONNECTION:
            scramble = part1 + r.take(max(13, data_len - 8))
            if data_len:
                scramble = scramble[:max(data_len - 1, 8)]
            elif scramble.endswith(b"\x00"):
                scramble = scramble[:-1]
        plugin = ""
        if caps & Capability.PLUGIN_AUTH and not r.at_end():
            plugin = r.cstr_or_rest()      # MySQL 5.5.7-5.5.9 forgot the NUL
        return cls(server_version, connection_id, scramble, caps, charset, status, plugin, mariadb_caps)


@dataclass(frozen=True)
class HandshakeResponse41:
    """The client's login packet. With no user it is the 32-byte SSLRequest prefix only."""

    capabilities: int
    max_packet: int = 0xFFFFFF
    charset: int = 45
    user: str = ""
    auth_response: bytes = b""
    database: str | None = None          # sent when CONNECT_WITH_DB (None means not sent)
    auth_plugin: str = ""                # sent when PLUGIN_AUTH
    attributes: dict[str, str] = field(default_factory=dict)   # sent when CONNECT_ATTRS
    mariadb_capabilities: int = 0        # read when LONG_PASSWORD is clear; always written as 0
    zstd_level: int = 0                  # MySQL 8 ZSTD_COMPRESSION only

    def encode_ssl_request(self) -> bytes:
        """The SSLRequest that precedes this response when the client upgrades to TLS."""
        caps = (self.capabilities | Capability.SSL) & 0xFFFFFFFF
        return struct.pack("<IIB", caps, self.max_packet, self.charset) + _FILLER_23

    def encode(self) -> bytes:
        caps = self.capabilities
        out = [struct.pack("<IIB", caps & 0xFFFFFFFF, self.max_packet, self.charset), _FILLER_23,
               _cstr(self.user.encode())]
        auth = self.auth_response
        if caps & Capability.PLUGIN_AUTH_LENENC_CLIENT_DATA:
            out.append(lenenc_bytes(auth))
        elif caps & Capability.SECURE_CONNECTION:
            if len(auth) > 255:
                raise ValueError("auth response longer than 255 bytes needs PLUGIN_AUTH_LENENC_CLIENT_DATA")
            out += [bytes((len(auth),)), auth]
        else:
            out.append(_cstr(auth))
        if caps & Capability.CONNECT_WITH_DB:
            out.append(_cstr((self.database or "").encode()))
        if caps & Capability.PLUGIN_AUTH:
            out.append(_cstr(self.auth_plugin.encode()))
        if caps & Capability.CONNECT_ATTRS:
            out.append(_encode_attributes(self.attributes))
        if caps & Capability.ZSTD_COMPRESSION:
            out.append(bytes((self.zstd_level,)))
        return b"".join(out)

    @classmethod
    def decode(cls, payload: bytes) -> HandshakeResponse41:
        """A full response (not an SSLRequest: check `is_ssl_request` first)."""
        r = _Reader(payload, "handshake response")
        caps, max_packet, charset = r.unpack("<IIB")
        if not caps & Capability.PROTOCOL_41:
            raise ProtocolViolation("handshake response: the client does not speak the 4.1 protocol")
        r.take(19)
        mariadb_caps = r.u32()
        if caps & Capability.LONG_PASSWORD:
            mariadb_caps = 0
        user = _text(r.cstr())
        if caps & Capability.PLUGIN_AUTH_LENENC_CLIENT_DATA:
            auth = r.take(r.lenenc())
        elif caps & Capability.SECURE_CONNECTION:
            auth = r.take(r.u8())
        else:
            auth = r.cstr()
        database = None
        if caps & Capability.CONNECT_WITH_DB and not r.at_end():
            database = _text(r.cstr())
        plugin = _text(r.cstr()) if caps & Capability.PLUGIN_AUTH and not r.at_end() else ""
        attributes = _decode_attributes(r) if caps & Capability.CONNECT_ATTRS and not r.at_end() else {}
        zstd = r.u8() if caps & Capability.ZSTD_COMPRESSION and not r.at_end() else 0
        return cls(caps, max_packet, charset, user, auth, database, plugin, attributes, mariadb_caps, zstd)


def is_ssl_request(payload: bytes) -> bool:
    """True for the short 32-byte packet with CLIENT_SSL that asks for a TLS upgrade."""
    if len(payload) != SSL_REQUEST_LENGTH:
        return False
    (caps,) = struct.unpack_from("<I", payload, 0)
    return bool(caps & Capability.SSL)


def decode_ssl_request(payload: bytes) -> tuple[int, int, int]:
    """(capabilities, max_packet, charset) of an SSLRequest."""
    if not is_ssl_request(payload):
        raise ProtocolViolation("not an SSL request")
    caps, max_packet, charset = struct.unpack_from("<IIB", payload, 0)
    return caps, max_packet, charset


@dataclass(frozen=True)
class AuthSwitchRequest:
    """0xFE, the plugin to use, its challenge (a scramble: servers end it with a NUL)."""

    plugin: str
    data: bytes

    def encode(self) -> bytes:
        return bytes((EOF_HEADER,)) + _cstr(self.plugin.encode()) + self.data

    @classmethod
    def decode(cls, payload: bytes) -> AuthSwitchRequest:
        r = _Reader(payload, "auth switch request")
        if r.u8() != EOF_HEADER:
            raise ProtocolViolation("auth switch request: bad header")
        if r.at_end():
            raise ProtocolViolation("auth switch request: old-password switch is not supported")
        return cls(_text(r.cstr()), r.rest())


def auth_switch_scramble(data: bytes, length: int) -> bytes:
    """The scramble inside auth-switch data of a plugin whose challenge has `length` bytes."""
    if len(data) == length + 1 and data.endswith(b"\x00"):
        return data[:-1]
    return data[:length] if len(data) >= length else data


def encode_auth_more_data(data: bytes) -> bytes:
    """0x01 + plugin data (caching_sha2's 0x03/0x04 status bytes, a PEM public key)."""
    return bytes((AUTH_MORE_DATA_HEADER,)) + data


def decode_auth_more_data(payload: bytes) -> bytes:
    if not payload or payload[0] != AUTH_MORE_DATA_HEADER:
        raise ProtocolViolation("auth more data: bad header")
    return payload[1:]


@dataclass(frozen=True)
class ChangeUser:
    """COM_CHANGE_USER (0x11): the fields depend on the capabilities negotiated at login."""

    user: str
    auth_response: bytes = b""
    database: str = ""
    charset: int | None = None
    auth_plugin: str = ""
    attributes: dict[str, str] = field(default_factory=dict)

    def encode(self, capabilities: int) -> bytes:
        out = [b"\x11", _cstr(self.user.encode())]
        if capabilities & Capability.SECURE_CONNECTION:
            if len(self.auth_response) > 255:
                raise ValueError("auth response longer than 255 bytes")
            out += [bytes((len(self.auth_response),)), self.auth_response]
        else:
            out.append(_cstr(self.auth_response))
        out.append(_cstr(self.database.encode()))
        if self.charset is not None:
            out.append(struct.pack("<H", self.charset))
            if capabilities & Capability.PLUGIN_AUTH:
                out.append(_cstr(self.auth_plugin.encode()))
            if capabilities & Capability.CONNECT_ATTRS:
                out.append(_encode_attributes(self.attributes))
        return b"".join(out)

    @classmethod
    def decode(cls, payload: bytes, capabilities: int) -> ChangeUser:
        r = _Reader(payload, "COM_CHANGE_USER")
        if r.u8() != 0x11:
            raise ProtocolViolation("COM_CHANGE_USER: bad command byte")
        user = _text(r.cstr())
        auth = r.take(r.u8()) if capabilities & Capability.SECURE_CONNECTION else r.cstr()
        database = _text(r.cstr())
        charset = None
        plugin = ""
        attributes: dict[str, str] = {}
        if not r.at_end():
            (charset,) = r.unpack("<H")
            if capabilities & Capability.PLUGIN_AUTH and not r.at_end():
                plugin = _text(r.cstr())
            if capabilities & Capability.CONNECT_ATTRS and not r.at_end():
                attributes = _decode_attributes(r)
        return cls(user, auth, database, charset, plugin, attributes)


# --------------------------------------------------------------------------- private helpers


class _Reader:
    """A cursor over one payload whose every read is bounds-checked."""

    __slots__ = ("data", "pos", "what")

    def __init__(self, data: bytes, what: str) -> None:
        self.data = data
        self.pos = 0
        self.what = what

    def _short(self, need: int) -> ProtocolViolation:
        return ProtocolViolation(
            f"{self.what}: truncated at byte {self.pos} (needs {need} more, {len(self.data) - self.pos} left)")

    def at_end(self) -> bool:
        return self.pos >= len(self.data)

    def take(self, n: int) -> bytes:
        end = self.pos + n
        if end > len(self.data):
            raise self._short(n)
        chunk = self.data[self.pos:end]
        self.pos = end
        return chunk

    def rest(self) -> bytes:
        chunk = self.data[self.pos:]
        self.pos = len(self.data)
        return chunk

    def unpack(self, fmt: str) -> tuple[int, ...]:
        return struct.unpack(fmt, self.take(struct.calcsize(fmt)))

    def u8(self) -> int:
        if self.pos >= len(self.data):
            raise self._short(1)
        self.pos += 1
        return self.data[self.pos - 1]

    def u32(self) -> int:
        return int.from_bytes(self.take(4), "little")

    def cstr(self) -> bytes:
        end = self.data.find(b"\x00", self.pos)
        if end < 0:
            raise ProtocolViolation(f"{self.what}: string at byte {self.pos} has no terminating NUL")
        chunk = self.data[self.pos:end]
        self.pos = end + 1
        return chunk

    def cstr_or_rest(self) -> str:
        end = self.data.find(b"\x00", self.pos)
        return _text(self.cstr() if end >= 0 else self.rest())

    def lenenc(self) -> int:
        try:
            value, self.pos = read_lenenc_int(self.data, self.pos)
        except ProtocolViolation as exc:
            raise ProtocolViolation(f"{self.what}: {exc.message} at byte {self.pos}") from exc
        if value is None:
            raise ProtocolViolation(f"{self.what}: unexpected NULL at byte {self.pos - 1}")
        return value


def _text(raw: bytes) -> str:
    return raw.decode("utf-8", "replace")


def _cstr(raw: bytes) -> bytes:
    if b"\x00" in raw:
        raise ValueError("a NUL-terminated string cannot contain NUL")
    return raw + b"\x00"


def _encode_attributes(attributes: dict[str, str]) -> bytes:
    body = b"".join(lenenc_bytes(k.encode()) + lenenc_bytes(v.encode()) for k, v in attributes.items())
    return lenenc_bytes(body)


def _decode_attributes(r: _Reader) -> dict[str, str]:
    block = _Reader(r.take(r.lenenc()), f"{r.what} connect attributes")
    attributes: dict[str, str] = {}
    while not block.at_end():
        key = _text(block.take(block.lenenc()))
        attributes[key] = _text(block.take(block.lenenc()))
    return attributes

