"""MySQL connection-phase payloads: byte vectors, round trips (Hypothesis) and truncated input."""

from __future__ import annotations

import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from proxy.engines.mysql.wire.codes import Capability as C
from proxy.engines.mysql.wire.handshake import (
    AuthSwitchRequest,
    ChangeUser,
    HandshakeResponse41,
    HandshakeV10,
    auth_switch_scramble,
    decode_auth_more_data,
    decode_ssl_request,
    encode_auth_more_data,
    is_ssl_request,
)
from proxy.errors import ProtocolViolation

# A real MariaDB 10.11 greeting (payload only), captured from 127.0.0.1:3306.
MARIADB_GREETING = bytes.fromhex(
    "0a352e352e352d31302e31312e31392d4d6172696144422d302b64656231327531000c0000004b36682f4b6d6533"
    "00fef72d0200ff81150000000000001d000000693b2a5d765c4b42477c5b36006d7973716c5f6e61746976655f"
    "70617373776f726400")

MODERN = (C.LONG_PASSWORD | C.PROTOCOL_41 | C.SECURE_CONNECTION | C.PLUGIN_AUTH | C.TRANSACTIONS
          | C.CONNECT_WITH_DB | C.CONNECT_ATTRS | C.PLUGIN_AUTH_LENENC_CLIENT_DATA)


def _only_protocol_violations(decode, data: bytes) -> None:
    try:
        decode(data)
    except ProtocolViolation:
        pass


# ----------------------------------------------------------------------------- HandshakeV10


def test_decode_real_mariadb_greeting() -> None:
    g = HandshakeV10.decode(MARIADB_GREETING)
    assert g.server_version == "5.5.5-10.11.19-MariaDB-0+deb12u1"
    assert g.connection_id == 12
    assert g.scramble == b"K6h/Kme3" + b"i;*]v\\KBG|[6"
    assert g.capabilities == 0x81FFF7FE
    assert not g.capabilities & C.LONG_PASSWORD            # MariaDB: extended capabilities follow
    assert g.mariadb_capabilities == 0x1D
    assert g.charset == 45 and g.status == 2
    assert g.auth_plugin == "mysql_native_password"


def test_greeting_round_trip_and_layout() -> None:
    g = HandshakeV10("8.0.36-dbproxy", 0x01020304, b"abcdefgh" + b"ijklmnopqrst", MODERN, 45, 2,
                     "caching_sha2_password")
    data = g.encode()
    assert data[0] == 10 and data[1:16] == b"8.0.36-dbproxy\x00"
    assert data[16:20] == b"\x04\x03\x02\x01" and data[20:28] == b"abcdefgh" and data[28] == 0
    caps_low, charset, status, caps_high, plen = struct.unpack_from("<HBHHB", data, 29)
    assert caps_low | caps_high << 16 == MODERN and (charset, status, plen) == (45, 2, 21)
    assert data[37:47] == bytes(10)                      # reserved: we never set MariaDB's bits
    assert data[47:60] == b"ijklmnopqrst\x00"
    assert data[60:] == b"caching_sha2_password\x00"
    assert HandshakeV10.decode(data) == g


def test_greeting_mariadb_capabilities_written_only_without_long_password() -> None:
    g = HandshakeV10("x", 1, bytes(range(1, 21)), MODERN & ~C.LONG_PASSWORD, 45, 2, "p", 0x1D)
    assert HandshakeV10.decode(g.encode()) == g
    with_long = HandshakeV10("x", 1, bytes(range(1, 21)), MODERN, 45, 2, "p", 0x1D)
    assert HandshakeV10.decode(with_long.encode()).mariadb_capabilities == 0


def test_greeting_rejects_other_protocol_versions() -> None:
    with pytest.raises(ProtocolViolation, match="protocol version 9"):
        HandshakeV10.decode(b"\x09" + MARIADB_GREETING[1:])


def test_greeting_truncated_anywhere() -> None:
    fixed_end = MARIADB_GREETING.index(b"mysql_native")
    for n in range(len(MARIADB_GREETING)):
        if n < fixed_end:
            with pytest.raises(ProtocolViolation):
                HandshakeV10.decode(MARIADB_GREETING[:n])
        else:      # a cut plugin name still decodes (old servers omitted its NUL)
            _only_protocol_violations(HandshakeV10.decode, MARIADB_GREETING[:n])


# ----------------------------------------------------------------------------- HandshakeResponse41

# Names come off the wire as UTF-8, so never hold lone surrogates.
_chars = st.characters(blacklist_categories=("Cs",))
_names = st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"), max_size=40)
_caps = st.sets(st.sampled_from([C.CONNECT_WITH_DB, C.PLUGIN_AUTH, C.CONNECT_ATTRS, C.SECURE_CONNECTION,
                                 C.PLUGIN_AUTH_LENENC_CLIENT_DATA, C.LONG_PASSWORD, C.SESSION_TRACK,
                                 C.MULTI_STATEMENTS, C.ZSTD_COMPRESSION, C.DEPRECATE_EOF]))


@st.composite
def responses(draw: st.DrawFn) -> HandshakeResponse41:
    caps = C.PROTOCOL_41
    for flag in draw(_caps):
        caps |= flag
    if caps & C.PLUGIN_AUTH_LENENC_CLIENT_DATA:
        auth_response = draw(st.binary(max_size=300))
    elif caps & C.SECURE_CONNECTION:
        auth_response = draw(st.binary(max_size=255))
    else:
        auth_response = draw(st.binary(max_size=40).filter(lambda b: b"\x00" not in b))
    return HandshakeResponse41(
        capabilities=int(caps),
        max_packet=draw(st.integers(0, 2**32 - 1)),
        charset=draw(st.integers(0, 255)),
        user=draw(_names),
        auth_response=auth_response,
        database=draw(_names) if caps & C.CONNECT_WITH_DB else None,
        auth_plugin=draw(_names) if caps & C.PLUGIN_AUTH else "",
        attributes=draw(st.dictionaries(st.text(_chars, max_size=300), st.text(_chars, max_size=300), max_size=5))
        if caps & C.CONNECT_ATTRS else {},
        zstd_level=draw(st.integers(0, 22)) if caps & C.ZSTD_COMPRESSION else 0,
    )


@settings(max_examples=300, deadline=None)
@given(responses())
def test_response_round_trip(resp: HandshakeResponse41) -> None:
    data = resp.encode()
    assert not is_ssl_request(data)
    assert HandshakeResponse41.decode(data) == resp


@settings(max_examples=60, deadline=None)
@given(responses())
def test_response_truncated_at_every_length_raises_only_protocol_violation(resp: HandshakeResponse41) -> None:
    data = resp.encode()
    for n in range(len(data)):
        _only_protocol_violations(HandshakeResponse41.decode, data[:n])
    for n in range(33):       # the fixed part and the user are always required
        with pytest.raises(ProtocolViolation):
            HandshakeResponse41.decode(data[:n])


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=200))
def test_garbage_raises_only_protocol_violation(data: bytes) -> None:
    for decode in (HandshakeResponse41.decode, HandshakeV10.decode, AuthSwitchRequest.decode,
                   lambda d: ChangeUser.decode(d, MODERN), lambda d: ChangeUser.decode(d, 0),
                   decode_auth_more_data):
        _only_protocol_violations(decode, data)


def test_response_byte_layout() -> None:
    resp = HandshakeResponse41(C.PROTOCOL_41 | C.SECURE_CONNECTION | C.PLUGIN_AUTH | C.CONNECT_WITH_DB,
                               16777216, 45, "app", b"\x01" * 20, "shop", "mysql_native_password")
    data = resp.encode()
    assert data[:9] == struct.pack("<IIB", resp.capabilities, 16777216, 45)
    assert data[9:32] == bytes(23)
    assert data[32:] == b"app\x00" + b"\x14" + b"\x01" * 20 + b"shop\x00mysql_native_password\x00"


def test_response_attributes_layout_and_lenenc_auth() -> None:
    resp = HandshakeResponse41(C.PROTOCOL_41 | C.PLUGIN_AUTH_LENENC_CLIENT_DATA | C.CONNECT_ATTRS,
                               user="u", auth_response=b"x" * 300, attributes={"_os": "Linux"})
    data = resp.encode()
    assert data[32:38] == b"u\x00\xfc\x2c\x01x"
    assert data.endswith(b"\x0a\x03_os\x05Linux")
    assert HandshakeResponse41.decode(data) == resp


def test_response_without_protocol_41_is_refused() -> None:
    data = HandshakeResponse41(C.SECURE_CONNECTION, user="u").encode()
    with pytest.raises(ProtocolViolation, match="4.1"):
        HandshakeResponse41.decode(data)


def test_response_bad_attributes_block() -> None:
    base = HandshakeResponse41(C.PROTOCOL_41 | C.CONNECT_ATTRS, user="u").encode()
    assert base.endswith(b"u\x00\x00\x00")              # empty NUL auth, empty attrs
    with pytest.raises(ProtocolViolation):
        HandshakeResponse41.decode(base[:-1] + b"\x03\x05ab")   # key longer than the block
    with pytest.raises(ProtocolViolation):
        HandshakeResponse41.decode(base[:-1] + b"\xff")          # invalid lenenc


def test_response_encode_refuses_unencodable_values() -> None:
    with pytest.raises(ValueError):
        HandshakeResponse41(C.PROTOCOL_41, user="a\x00b").encode()
    with pytest.raises(ValueError):
        HandshakeResponse41(C.PROTOCOL_41 | C.SECURE_CONNECTION, auth_response=bytes(256)).encode()


def test_trailing_optional_fields_may_be_omitted() -> None:
    caps = C.PROTOCOL_41 | C.SECURE_CONNECTION | C.CONNECT_WITH_DB | C.PLUGIN_AUTH | C.CONNECT_ATTRS
    data = struct.pack("<IIB", caps, 0, 45) + bytes(23) + b"bob\x00\x00"
    resp = HandshakeResponse41.decode(data)
    assert (resp.user, resp.auth_response, resp.database, resp.auth_plugin, resp.attributes) == \
        ("bob", b"", None, "", {})


def test_mariadb_extended_capabilities_in_the_response_filler() -> None:
    caps = C.PROTOCOL_41 | C.SECURE_CONNECTION
    data = struct.pack("<IIB", caps, 0, 45) + bytes(19) + struct.pack("<I", 0x1D) + b"u\x00\x00"
    assert HandshakeResponse41.decode(data).mariadb_capabilities == 0x1D
    data = struct.pack("<IIB", caps | C.LONG_PASSWORD, 0, 45) + bytes(19) + b"\x1d\0\0\0" + b"u\x00\x00"
    assert HandshakeResponse41.decode(data).mariadb_capabilities == 0


# ----------------------------------------------------------------------------- SSLRequest


def test_ssl_request_detection() -> None:
    resp = HandshakeResponse41(MODERN, 1 << 24, 45, "u")
    ssl = resp.encode_ssl_request()
    assert len(ssl) == 32 and is_ssl_request(ssl)
    assert decode_ssl_request(ssl) == (MODERN | C.SSL, 1 << 24, 45)
    assert not is_ssl_request(ssl[:31]) and not is_ssl_request(ssl + b"\x00")
    no_ssl = struct.pack("<IIB", MODERN, 0, 45) + bytes(23)
    assert not is_ssl_request(no_ssl)
    with pytest.raises(ProtocolViolation):
        decode_ssl_request(no_ssl)


# ----------------------------------------------------------------------------- auth switch / more data


def test_auth_switch_round_trip_and_layout() -> None:
    sw = AuthSwitchRequest("mysql_native_password", b"12345678901234567890\x00")
    data = sw.encode()
    assert data == b"\xfemysql_native_password\x0012345678901234567890\x00"
    assert AuthSwitchRequest.decode(data) == sw
    assert auth_switch_scramble(sw.data, 20) == b"12345678901234567890"
    assert auth_switch_scramble(bytes(range(1, 33)), 32) == bytes(range(1, 33))
    with pytest.raises(ProtocolViolation, match="old-password"):
        AuthSwitchRequest.decode(b"\xfe")
    with pytest.raises(ProtocolViolation):
        AuthSwitchRequest.decode(b"\x01abc\x00")
    with pytest.raises(ProtocolViolation):
        AuthSwitchRequest.decode(b"\xfeno-nul")


def test_auth_more_data() -> None:
    assert encode_auth_more_data(b"\x03") == b"\x01\x03"
    assert decode_auth_more_data(b"\x01\x04") == b"\x04"
    with pytest.raises(ProtocolViolation):
        decode_auth_more_data(b"")
    with pytest.raises(ProtocolViolation):
        decode_auth_more_data(b"\x00\x03")


# ----------------------------------------------------------------------------- COM_CHANGE_USER


def test_change_user_layout() -> None:
    data = b"\x11bob\x00\x14" + b"\x02" * 20 + b"shop\x00\x2d\x00mysql_native_password\x00\x0a\x03_os\x05Linux"
    cu = ChangeUser.decode(data, MODERN)
    assert cu == ChangeUser("bob", b"\x02" * 20, "shop", 45, "mysql_native_password", {"_os": "Linux"})
    assert cu.encode(MODERN) == data
    old = ChangeUser.decode(b"\x11bob\x00pw\x00db\x00", 0)
    assert old == ChangeUser("bob", b"pw", "db", None)


@settings(max_examples=200, deadline=None)
@given(user=_names, token=st.binary(max_size=255), db=_names, charset=st.integers(0, 65535),
       plugin=_names, attrs=st.dictionaries(st.text(_chars, max_size=20), st.text(_chars, max_size=20), max_size=3),
       caps=_caps)
def test_change_user_round_trip(user: str, token: bytes, db: str, charset: int, plugin: str,
                                attrs: dict[str, str], caps: set[int]) -> None:
    flags = C.PROTOCOL_41 | C.SECURE_CONNECTION
    for f in caps:
        flags |= f
    cu = ChangeUser(user, token, db, charset, plugin if flags & C.PLUGIN_AUTH else "",
                    attrs if flags & C.CONNECT_ATTRS else {})
    data = cu.encode(flags)
    assert ChangeUser.decode(data, flags) == cu
    for n in range(len(data)):
        _only_protocol_violations(lambda d: ChangeUser.decode(d, flags), data[:n])

