"""Byte vectors for rewriting Parse/Bind/Describe/Close under proxy-wide statement names."""

from __future__ import annotations

import struct

import pytest

from proxy.engines.postgres.statements import (
    ParseMessage,
    StatementNames,
    bind_statement,
    close_statement,
    decode_parse,
    describe_statement,
    rewrite_bind,
    target_name,
    unnamed_bind,
)
from proxy.engines.postgres.wire.framing import MessageReader
from proxy.errors import ProtocolViolation

# Parse: name "s1", query "SELECT $1, $2", two parameter types int4 (23) and unspecified (0).
PARSE_BODY = b"s1\x00SELECT $1, $2\x00" + b"\x00\x02" + b"\x00\x00\x00\x17" + b"\x00\x00\x00\x00"
PARSE_TAIL = b"\x00\x02\x00\x00\x00\x17\x00\x00\x00\x00"

# Bind: portal "p1", statement "s1", one format code (text) applying to all parameters,
# two parameters "42" and NULL, one result format code (binary).
BIND_BODY = (b"p1\x00" + b"s1\x00"
             + b"\x00\x01" + b"\x00\x00"
             + b"\x00\x02" + b"\x00\x00\x00\x0242" + b"\xff\xff\xff\xff"
             + b"\x00\x01" + b"\x00\x01")


def only_message(data: bytes) -> tuple[int, bytes]:
    reader = MessageReader()
    reader.feed(data)
    msg = reader.next()
    assert msg is not None and reader.buffered == 0
    return msg


def test_decode_parse() -> None:
    parse = decode_parse(PARSE_BODY)
    assert parse == ParseMessage(b"s1", b"SELECT $1, $2", PARSE_TAIL)


def test_parse_encode_under_a_new_name() -> None:
    encoded = decode_parse(PARSE_BODY).encode(b"dbproxy_1")
    body = b"dbproxy_1\x00SELECT $1, $2\x00" + PARSE_TAIL
    assert encoded == b"P" + (4 + len(body)).to_bytes(4, "big") + body
    assert encoded[:5] == b"P\x00\x00\x00\x26"
    assert only_message(encoded) == (ord("P"), body)


def test_parse_unnamed_without_parameter_types() -> None:
    parse = decode_parse(b"\x00SELECT 1\x00\x00\x00")
    assert parse == ParseMessage(b"", b"SELECT 1", b"\x00\x00")
    assert parse.encode(b"") == b"P\x00\x00\x00\x10\x00SELECT 1\x00\x00\x00"


@pytest.mark.parametrize("body", [b"", b"s1", b"s1\x00SELECT 1"])
def test_decode_parse_malformed(body: bytes) -> None:
    with pytest.raises(ProtocolViolation, match="malformed Parse"):
        decode_parse(body)


def test_bind_statement_span() -> None:
    assert bind_statement(BIND_BODY) == (3, 5)
    assert BIND_BODY[3:5] == b"s1"


def test_rewrite_bind_keeps_portal_parameters_and_formats() -> None:
    start, end = bind_statement(BIND_BODY)
    rewritten = rewrite_bind(BIND_BODY, start, end, b"dbproxy_7")
    expected_body = (b"p1\x00" + b"dbproxy_7\x00"
                     + b"\x00\x01\x00\x00"
                     + b"\x00\x02\x00\x00\x00\x0242\xff\xff\xff\xff"
                     + b"\x00\x01\x00\x01")
    assert rewritten == b"B\x00\x00\x00\x25" + expected_body
    assert len(expected_body) + 4 == 0x25
    assert only_message(rewritten) == (ord("B"), expected_body)


def test_rewrite_bind_unnamed_portal_and_statement() -> None:
    body = b"\x00\x00" + b"\x00\x00" + b"\x00\x00" + b"\x00\x00"
    start, end = bind_statement(body)
    assert (start, end) == (1, 1)
    assert rewrite_bind(body, start, end, b"dbproxy_1") == (
        b"B\x00\x00\x00\x15\x00dbproxy_1\x00\x00\x00\x00\x00\x00\x00")


def test_rewrite_bind_with_binary_parameter_containing_nul_bytes() -> None:
    # Parameter bytes may contain NULs; only the two leading strings are located.
    body = b"\x00s1\x00\x00\x01\x00\x01\x00\x01\x00\x00\x00\x04\x00\x00\x00\x2a\x00\x00"
    start, end = bind_statement(body)
    assert body[start:end] == b"s1"
    rewritten = rewrite_bind(body, start, end, b"dbproxy_2")
    assert only_message(rewritten)[1] == b"\x00dbproxy_2\x00" + body[4:]


@pytest.mark.parametrize("body", [b"", b"portal", b"portal\x00stmt"])
def test_bind_statement_malformed(body: bytes) -> None:
    with pytest.raises(ProtocolViolation, match="malformed Bind"):
        bind_statement(body)


@pytest.mark.parametrize(("body", "expected"), [
    (b"Ss1\x00", (ord("S"), b"s1")),
    (b"Pportal\x00", (ord("P"), b"portal")),
    (b"S\x00", (ord("S"), b"")),
])
def test_target_name(body: bytes, expected: tuple[int, bytes]) -> None:
    assert target_name(body) == expected


@pytest.mark.parametrize("body", [b"", b"S", b"Xs1\x00", b"Ss1", b"s\x00"])
def test_target_name_malformed(body: bytes) -> None:
    with pytest.raises(ProtocolViolation, match="malformed Describe/Close"):
        target_name(body)


def test_describe_and_close_statement_bytes() -> None:
    assert describe_statement(b"dbproxy_1") == b"D\x00\x00\x00\x0fSdbproxy_1\x00"
    assert close_statement(b"dbproxy_1") == b"C\x00\x00\x00\x0fSdbproxy_1\x00"
    assert target_name(only_message(describe_statement(b"x"))[1]) == (ord("S"), b"x")


def test_statement_names_dedup_by_query_and_parameter_types() -> None:
    names = StatementNames()
    a = names.name_for(ParseMessage(b"s1", b"SELECT $1", b"\x00\x01\x00\x00\x00\x17"))
    same = names.name_for(ParseMessage(b"other_client_name", b"SELECT $1", b"\x00\x01\x00\x00\x00\x17"))
    other_types = names.name_for(ParseMessage(b"s1", b"SELECT $1", b"\x00\x01\x00\x00\x00\x19"))
    untyped = names.name_for(ParseMessage(b"s1", b"SELECT $1", b"\x00\x00"))
    other_query = names.name_for(ParseMessage(b"s1", b"SELECT $1 ", b"\x00\x01\x00\x00\x00\x17"))
    assert a == same == b"dbproxy_1"
    assert len({a, other_types, untyped, other_query}) == 4
    assert [other_types, untyped, other_query] == [b"dbproxy_2", b"dbproxy_3", b"dbproxy_4"]
    assert len(names) == 4
    assert names.name_for(ParseMessage(b"", b"SELECT $1", b"\x00\x00")) == untyped
    assert len(names) == 4


def test_statement_names_prefix() -> None:
    names = StatementNames(prefix=b"p_")
    assert names.name_for(decode_parse(PARSE_BODY)) == b"p_1"


def test_unnamed_bind_reads_the_statement_name_after_the_portal_name() -> None:
    def framed(body: bytes) -> tuple[bytes, int, int]:
        data = b"junk" + b"B" + struct.pack("!I", len(body) + 4) + body + b"S\x00\x00\x00\x04"
        return data, 9, 9 + len(body)
    assert unnamed_bind(*framed(b"\x00\x00\x00\x00\x00\x00\x00\x00"))        # portal "", statement ""
    assert unnamed_bind(*framed(b"p1\x00\x00\x00\x00\x00\x00\x00\x00"))      # portal "p1", statement ""
    assert not unnamed_bind(*framed(b"\x00s1\x00\x00\x00\x00\x00\x00\x00"))  # statement "s1"
    assert not unnamed_bind(*framed(b"\x00"))                      # truncated: not a Bind of ""
    assert not unnamed_bind(*framed(b"portal-without-end"))
