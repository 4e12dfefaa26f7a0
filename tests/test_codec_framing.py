"""Byte-vector and Hypothesis tests of PostgreSQL framing: startup packets and the typed-message reader."""

from __future__ import annotations

import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from proxy.engines.postgres.wire import messages as m
from proxy.engines.postgres.wire.framing import (
    MAX_STARTUP_LENGTH,
    CancelRequest,
    GSSENCRequest,
    MessageReader,
    SSLRequest,
    StartupMessage,
    parse_startup_packet,
)
from proxy.errors import ProtocolViolation

# Hand-written from the protocol docs ("Message Formats"): int32 length, int32 code, body.
SSL_REQUEST = b"\x00\x00\x00\x08\x04\xd2\x16\x2f"          # 1234 << 16 | 5679
GSSENC_REQUEST = b"\x00\x00\x00\x08\x04\xd2\x16\x30"       # 1234 << 16 | 5680
CANCEL_REQUEST = b"\x00\x00\x00\x10\x04\xd2\x16\x2e" + b"\x00\x00\x30\x39" + b"\xde\xad\xbe\xef"
STARTUP = (b"\x00\x00\x00\x21" + b"\x00\x03\x00\x00"
           + b"user\x00alice\x00database\x00app\x00" + b"\x00")


# Modest example counts keep the whole unit suite fast; no deadline because CI machines are noisy.
FAST = settings(max_examples=60, deadline=None)


def startup_packet(body_after_version: bytes, version: int = m.PROTOCOL_V3) -> bytes:
    body = struct.pack("!i", version) + body_after_version
    return struct.pack("!i", len(body) + 4) + body


# ---- startup packets ---------------------------------------------------------------------------

def test_startup_message_vector() -> None:
    assert len(STARTUP) == 0x21
    event, used = parse_startup_packet(STARTUP)
    assert event == StartupMessage(m.PROTOCOL_V3, {"user": "alice", "database": "app"})
    assert used == len(STARTUP)


def test_ssl_gssenc_and_cancel_requests() -> None:
    assert parse_startup_packet(SSL_REQUEST) == (SSLRequest(), 8)
    assert parse_startup_packet(GSSENC_REQUEST) == (GSSENCRequest(), 8)
    assert parse_startup_packet(CANCEL_REQUEST) == (CancelRequest(12345, 0xDEADBEEF), 16)


def test_only_the_first_packet_is_consumed() -> None:
    # An SSLRequest followed by the start of a TLS ClientHello, or a pipelined startup.
    assert parse_startup_packet(SSL_REQUEST + b"\x16\x03\x01") == (SSLRequest(), 8)
    event, used = parse_startup_packet(STARTUP + SSL_REQUEST)
    assert isinstance(event, StartupMessage) and used == len(STARTUP)


def test_empty_parameter_list_is_valid() -> None:
    assert parse_startup_packet(startup_packet(b"\x00")) == (StartupMessage(m.PROTOCOL_V3, {}), 9)


def test_empty_value_is_kept() -> None:
    event, _ = parse_startup_packet(startup_packet(b"user\x00bob\x00options\x00\x00\x00"))
    assert event == StartupMessage(m.PROTOCOL_V3, {"user": "bob", "options": ""})


def test_utf8_parameters_are_decoded() -> None:
    event, _ = parse_startup_packet(startup_packet("user\x00zoë\x00\x00".encode()))
    assert isinstance(event, StartupMessage) and event.params == {"user": "zoë"}


@pytest.mark.parametrize("cut", range(0, len(STARTUP)))
def test_incomplete_packet_needs_more_bytes(cut: int) -> None:
    assert parse_startup_packet(STARTUP[:cut]) == (None, 0)


@pytest.mark.parametrize("length", [0, 3, 7, MAX_STARTUP_LENGTH + 1, 0x7FFFFFFF, 0xFFFFFFFF])
def test_bad_length_is_refused_as_soon_as_it_is_known(length: int) -> None:
    header = struct.pack("!I", length)
    with pytest.raises(ProtocolViolation, match="length"):
        parse_startup_packet(header)            # only 4 bytes: rejected before the code arrives
    with pytest.raises(ProtocolViolation, match="length"):
        parse_startup_packet(header + struct.pack("!i", m.PROTOCOL_V3))


def test_length_limit_is_10000_bytes_inclusive() -> None:
    filler = b"x" * (MAX_STARTUP_LENGTH - 24)   # 8 header + "user\0\0" + "options\0" + "\0" + "\0"
    exact = startup_packet(b"user\x00" + b"\x00" + b"options\x00" + filler + b"\x00\x00")
    assert len(exact) == MAX_STARTUP_LENGTH
    event, used = parse_startup_packet(exact)
    assert isinstance(event, StartupMessage) and used == MAX_STARTUP_LENGTH
    assert event.params["options"] == filler.decode()
    too_long = startup_packet(b"user\x00" + b"\x00" + b"options\x00" + filler + b"y\x00\x00")
    assert len(too_long) == MAX_STARTUP_LENGTH + 1
    with pytest.raises(ProtocolViolation):
        parse_startup_packet(too_long)


@pytest.mark.parametrize("body", [
    b"",                                   # no terminator at all
    b"user\x00bob\x00",                    # pairs but no list terminator
    b"user\x00bob",                        # value not terminated
    b"user\x00bob\x00database",            # name not terminated
])
def test_missing_terminator_is_refused(body: bytes) -> None:
    with pytest.raises(ProtocolViolation, match="terminator"):
        parse_startup_packet(startup_packet(body))


@pytest.mark.parametrize("body", [b"user\x00\x00", b"user\x00bob\x00database\x00\x00", b"\x00\x00"])
def test_odd_number_of_strings_is_refused(body: bytes) -> None:
    with pytest.raises(ProtocolViolation, match="odd number"):
        parse_startup_packet(startup_packet(body))


def test_non_utf8_parameters_are_refused() -> None:
    with pytest.raises(ProtocolViolation, match="UTF-8"):
        parse_startup_packet(startup_packet(b"user\x00\xff\xfe\x00\x00"))


def test_terminator_before_the_end_is_refused() -> None:
    # PostgreSQL stops at the first empty name and then requires it to be the last byte
    # ("invalid startup packet layout: expected terminator as last byte").
    with pytest.raises(ProtocolViolation):
        parse_startup_packet(startup_packet(b"user\x00bob\x00\x00\x00database\x00app\x00\x00"))


@pytest.mark.parametrize("version", [(2 << 16), (1 << 16), (4 << 16), 0, 1234 << 16 | 5678])
def test_unsupported_protocol_version_is_refused(version: int) -> None:
    with pytest.raises(ProtocolViolation, match="unsupported frontend protocol"):
        parse_startup_packet(startup_packet(b"user\x00bob\x00\x00", version))


def test_newer_minor_version_of_protocol_3_is_accepted() -> None:
    event, _ = parse_startup_packet(startup_packet(b"user\x00bob\x00\x00", (3 << 16) | 2))
    assert event == StartupMessage((3 << 16) | 2, {"user": "bob"})


@pytest.mark.parametrize("packet", [
    b"\x00\x00\x00\x0c\x04\xd2\x16\x2f\x00\x00\x00\x00",   # SSLRequest with a body
    b"\x00\x00\x00\x0c\x04\xd2\x16\x2e\x00\x00\x00\x01",   # CancelRequest without a key
])
def test_special_request_with_wrong_length_is_refused(packet: bytes) -> None:
    with pytest.raises(ProtocolViolation):
        parse_startup_packet(packet)


_names = st.text(st.characters(codec="utf-8", exclude_characters="\x00"), min_size=1, max_size=20)
_values = st.text(st.characters(codec="utf-8", exclude_characters="\x00"), max_size=40)


@FAST
@given(st.dictionaries(_names, _values, max_size=8))
def test_startup_message_round_trip(params: dict[str, str]) -> None:
    packet = m.startup_message(params)
    assert parse_startup_packet(packet + b"trailing") == (StartupMessage(m.PROTOCOL_V3, params), len(packet))


@FAST
@given(st.integers(-(2**31), 2**31 - 1), st.integers(0, 2**32 - 1))
def test_cancel_request_round_trip(pid: int, key: int) -> None:
    assert parse_startup_packet(m.cancel_request(pid, key)) == (CancelRequest(pid, key), 16)


@FAST
@given(st.binary(max_size=64))
def test_startup_garbage_only_raises_protocol_violation(data: bytes) -> None:
    try:
        event, used = parse_startup_packet(data)
    except ProtocolViolation:
        return
    assert (event is None and used == 0) or 8 <= used <= len(data)


@FAST
@given(st.integers(0, 2**32 - 1), st.binary(max_size=64))
def test_framed_garbage_only_raises_protocol_violation(code: int, body: bytes) -> None:
    # A plausible length with any code and body exercises the layout checks, not just the length check.
    packet = struct.pack("!iI", len(body) + 8, code) + body
    try:
        event, used = parse_startup_packet(packet)
    except ProtocolViolation:
        return
    assert event is not None and used == len(packet)


# ---- typed messages ----------------------------------------------------------------------------

def drain(reader: MessageReader) -> list[tuple[int, bytes]]:
    out = []
    while (msg := reader.next()) is not None:
        out.append(msg)
    return out


def test_reader_vector() -> None:
    r = MessageReader()
    r.feed(b"Q\x00\x00\x00\x0dSELECT 1\x00" + b"X\x00\x00\x00\x04")
    assert drain(r) == [(ord("Q"), b"SELECT 1\x00"), (ord("X"), b"")]
    assert r.buffered == 0


def test_reader_split_at_every_byte() -> None:
    stream = m.query("SELECT 1") + m.sync() + m.password_message(b"md5abc\x00") + m.terminate()
    expected = [(ord("Q"), b"SELECT 1\x00"), (ord("S"), b""), (ord("p"), b"md5abc\x00"), (ord("X"), b"")]
    for cut in range(len(stream) + 1):
        r = MessageReader()
        r.feed(stream[:cut])
        got = drain(r)
        r.feed(stream[cut:])
        assert got + drain(r) == expected


def test_reader_one_byte_at_a_time() -> None:
    stream = m.query("SELECT 1") * 3
    r = MessageReader()
    got = []
    for i in range(len(stream)):
        r.feed(stream[i:i + 1])
        got += drain(r)
        assert r.buffered == (i + 1) % len(m.query("SELECT 1"))
    assert got == [(ord("Q"), b"SELECT 1\x00")] * 3


def test_reader_max_length_is_inclusive() -> None:
    r = MessageReader(max_length=8)
    r.feed(b"p\x00\x00\x00\x08abcd")
    assert r.next() == (ord("p"), b"abcd")
    r.feed(b"p\x00\x00\x00\x09")   # refused from the header alone, before the body arrives
    with pytest.raises(ProtocolViolation, match="invalid message length 9"):
        r.next()


@pytest.mark.parametrize("length", [0, 1, 3, 0xFFFFFFFF])
def test_reader_refuses_impossible_lengths(length: int) -> None:
    r = MessageReader()
    r.feed(b"Q" + struct.pack("!I", length))
    with pytest.raises(ProtocolViolation):
        r.next()


def test_reader_take_rest_returns_unread_bytes_including_partial_message() -> None:
    r = MessageReader()
    tail = m.query("SELECT 2")[:6]
    r.feed(m.sync() + m.query("SELECT 1") + tail)
    assert r.next() == (ord("S"), b"")
    assert r.take_rest() == m.query("SELECT 1") + tail
    assert r.buffered == 0 and r.next() is None
    r.feed(m.sync())
    assert r.next() == (ord("S"), b"")


def test_reader_large_message_then_more() -> None:
    big = m.message(b"d", b"x" * 100_000)
    r = MessageReader()
    r.feed(big[:50_000])
    assert r.next() is None and r.buffered == 50_000
    r.feed(big[50_000:])
    assert r.next() == (ord("d"), b"x" * 100_000)
    r.feed(m.sync())
    assert r.next() == (ord("S"), b"") and r.buffered == 0


def test_reader_memory_stays_bounded_on_a_long_unaligned_stream() -> None:
    msg = m.message(b"d", b"x" * 1000)            # 1005 bytes; chunks of 999 never align before 330 KB
    stream = msg * 1000
    r = MessageReader()
    peak = 0
    count = 0
    for pos in range(0, len(stream), 999):
        r.feed(stream[pos:pos + 999])
        count += len(drain(r))
        peak = max(peak, len(r._buf))
    assert count == 1000
    assert peak < 256 * 1024


_message = st.tuples(st.integers(0, 255), st.binary(max_size=300))


@settings(max_examples=100, deadline=None)
@given(st.lists(_message, max_size=12), st.data())
def test_any_chunking_yields_the_same_messages(msgs: list[tuple[int, bytes]], data: st.DataObject) -> None:
    stream = b"".join(m.message(bytes([k]), body) for k, body in msgs)
    cuts = sorted(data.draw(st.lists(st.integers(0, len(stream)), max_size=20)))
    r = MessageReader()
    got: list[tuple[int, bytes]] = []
    prev = 0
    for cut in [*cuts, len(stream)]:
        r.feed(stream[prev:cut])
        got += drain(r)
        prev = cut
    assert got == msgs
    assert r.buffered == 0


@FAST
@given(st.lists(st.binary(max_size=50), max_size=10))
def test_reader_garbage_only_raises_protocol_violation(chunks: list[bytes]) -> None:
    r = MessageReader(max_length=1024)
    total = 0
    try:
        for chunk in chunks:
            r.feed(chunk)
            for _kind, body in drain(r):
                assert len(body) <= 1024 - 4
                total += len(body) + 5
    except ProtocolViolation:
        return
    assert total + r.buffered == sum(len(c) for c in chunks)
