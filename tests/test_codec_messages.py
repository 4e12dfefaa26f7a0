"""Exact bytes of the message builders (vectors from the protocol docs) and the small parsers."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from proxy.engines.postgres.wire import messages as m
from proxy.engines.postgres.wire.framing import MessageReader


def test_protocol_codes() -> None:
    assert m.PROTOCOL_V3 == 3 << 16
    assert m.SSL_REQUEST_CODE == (1234 << 16) | 5679 == 80877103
    assert m.GSSENC_REQUEST_CODE == (1234 << 16) | 5680 == 80877104
    assert m.CANCEL_REQUEST_CODE == (1234 << 16) | 5678 == 80877102


@pytest.mark.parametrize(("built", "expected"), [
    (m.message(b"X"), b"X\x00\x00\x00\x04"),
    (m.message(b"Q", b"abc"), b"Q\x00\x00\x00\x07abc"),
    (m.cstr("abc"), b"abc\x00"),
    (m.cstr(b"abc"), b"abc\x00"),
    (m.cstr("é"), b"\xc3\xa9\x00"),
], ids=["empty", "body", "cstr-str", "cstr-bytes", "cstr-utf8"])
def test_framing_helpers(built: bytes, expected: bytes) -> None:
    assert built == expected


# Backend messages, hand-written from "Message Formats" in the PostgreSQL docs.
@pytest.mark.parametrize(("built", "expected"), [
    (m.auth_ok(), b"R\x00\x00\x00\x08\x00\x00\x00\x00"),
    (m.auth_request(m.AUTH_CLEARTEXT), b"R\x00\x00\x00\x08\x00\x00\x00\x03"),
    (m.auth_md5(b"\x01\x02\x03\x04"), b"R\x00\x00\x00\x0c\x00\x00\x00\x05\x01\x02\x03\x04"),
    (m.auth_sasl(["SCRAM-SHA-256"]), b"R\x00\x00\x00\x17\x00\x00\x00\x0aSCRAM-SHA-256\x00\x00"),
    (m.auth_sasl(["SCRAM-SHA-256-PLUS", "SCRAM-SHA-256"]),
     b"R\x00\x00\x00\x2a\x00\x00\x00\x0aSCRAM-SHA-256-PLUS\x00SCRAM-SHA-256\x00\x00"),
    (m.auth_sasl_continue(b"r=abc"), b"R\x00\x00\x00\x0d\x00\x00\x00\x0br=abc"),
    (m.auth_sasl_final(b"v=xyz"), b"R\x00\x00\x00\x0d\x00\x00\x00\x0cv=xyz"),
    (m.parameter_status("client_encoding", "UTF8"), b"S\x00\x00\x00\x19client_encoding\x00UTF8\x00"),
    (m.backend_key_data(1234, 0xDEADBEEF), b"K\x00\x00\x00\x0c\x00\x00\x04\xd2\xde\xad\xbe\xef"),
    (m.backend_key_data(-1, 0), b"K\x00\x00\x00\x0c\xff\xff\xff\xff\x00\x00\x00\x00"),
    (m.ready_for_query(), b"Z\x00\x00\x00\x05I"),
    (m.ready_for_query(b"T"), b"Z\x00\x00\x00\x05T"),
    (m.ready_for_query(b"E"), b"Z\x00\x00\x00\x05E"),
    (m.PARSE_COMPLETE, b"1\x00\x00\x00\x04"),
    (m.BIND_COMPLETE, b"2\x00\x00\x00\x04"),
    (m.CLOSE_COMPLETE, b"3\x00\x00\x00\x04"),
    (m.error_response("42601", "syntax error"),
     b"E\x00\x00\x00\x28SERROR\x00VERROR\x00C42601\x00Msyntax error\x00\x00"),
    (m.error_response("57P01", "bye", severity="FATAL", detail="d", hint="h"),
     b"E\x00\x00\x00\x25SFATAL\x00VFATAL\x00C57P01\x00Mbye\x00Dd\x00Hh\x00\x00"),
    (m.notice_response("hi"), b"N\x00\x00\x00\x20SNOTICE\x00VNOTICE\x00C00000\x00Mhi\x00\x00"),
    (m.notice_response("w", code="01000", severity="WARNING"),
     b"N\x00\x00\x00\x21SWARNING\x00VWARNING\x00C01000\x00Mw\x00\x00"),
], ids=lambda v: v[:1].decode("latin-1") if isinstance(v, bytes) else None)
def test_backend_message_bytes(built: bytes, expected: bytes) -> None:
    assert built == expected


# Frontend messages.
@pytest.mark.parametrize(("built", "expected"), [
    (m.startup_message({"user": "bob", "database": "app"}),
     b"\x00\x00\x00\x1f\x00\x03\x00\x00user\x00bob\x00database\x00app\x00\x00"),
    (m.startup_message({}), b"\x00\x00\x00\x09\x00\x03\x00\x00\x00"),
    (m.ssl_request(), b"\x00\x00\x00\x08\x04\xd2\x16\x2f"),
    (m.cancel_request(1234, 5678), b"\x00\x00\x00\x10\x04\xd2\x16\x2e\x00\x00\x04\xd2\x00\x00\x16\x2e"),
    (m.cancel_request(1, 0xFFFFFFFF), b"\x00\x00\x00\x10\x04\xd2\x16\x2e\x00\x00\x00\x01\xff\xff\xff\xff"),
    (m.query("SELECT 1"), b"Q\x00\x00\x00\x0dSELECT 1\x00"),
    (m.password_message(b"secret\x00"), b"p\x00\x00\x00\x0bsecret\x00"),
    (m.sasl_initial_response("SCRAM-SHA-256", b"n,,n=,r=abc"),
     b"p\x00\x00\x00\x21SCRAM-SHA-256\x00\x00\x00\x00\x0bn,,n=,r=abc"),
    (m.terminate(), b"X\x00\x00\x00\x04"),
    (m.sync(), b"S\x00\x00\x00\x04"),
], ids=["startup", "startup-empty", "ssl", "cancel", "cancel-max-key", "query", "password", "sasl-initial",
        "terminate", "sync"])
def test_frontend_message_bytes(built: bytes, expected: bytes) -> None:
    assert built == expected


def test_cancel_request_is_16_bytes() -> None:
    assert len(m.cancel_request(42, 43)) == 16


# ---- parsers -----------------------------------------------------------------------------------

# An ErrorResponse body as a German-localized PostgreSQL 16 sends it (S localized, V not).
SERVER_ERROR_BODY = (b"SFEHLER\x00VERROR\x00C42P01\x00Mrelation \"nope\" does not exist\x00"
                     b"P15\x00Fparse_relation.c\x00L1392\x00RparserOpenTable\x00\x00")


def test_parse_error_fields_prefers_the_unlocalized_severity() -> None:
    err = m.parse_error_fields(SERVER_ERROR_BODY)
    assert err == m.ErrorFields("ERROR", "42P01", 'relation "nope" does not exist')
    assert str(err) == 'ERROR 42P01: relation "nope" does not exist'


def test_parse_error_fields_accepts_memoryview() -> None:
    assert m.parse_error_fields(memoryview(SERVER_ERROR_BODY)).code == "42P01"


def test_parse_error_fields_falls_back_to_localized_severity_and_defaults() -> None:
    assert m.parse_error_fields(b"SFATAL\x00Mbye\x00\x00") == m.ErrorFields("FATAL", "XX000", "bye")
    assert m.parse_error_fields(b"\x00") == m.ErrorFields("ERROR", "XX000", "")
    assert m.parse_error_fields(b"") == m.ErrorFields("ERROR", "XX000", "")


def test_parse_error_fields_replaces_invalid_utf8() -> None:
    assert m.parse_error_fields(b"C22021\x00Mbad \xff byte\x00\x00").message == "bad \ufffd byte"


def test_builder_output_parses_back() -> None:
    r = MessageReader()
    r.feed(m.error_response("28P01", 'password authentication failed for user "bob"', severity="FATAL",
                            detail="x"))
    kind, body = r.next() or (0, b"")
    assert kind == ord("E")
    assert m.parse_error_fields(body) == m.ErrorFields("FATAL", "28P01",
                                                       'password authentication failed for user "bob"')


_text = st.text(st.characters(codec="utf-8", exclude_characters="\x00"), max_size=30)


@settings(max_examples=60, deadline=None)
@given(st.from_regex(r"[0-9A-Z]{5}", fullmatch=True), _text, st.sampled_from(["ERROR", "FATAL", "PANIC"]))
def test_error_response_round_trip(code: str, text: str, severity: str) -> None:
    body = m.error_response(code, text, severity=severity, detail="d", hint="h")[5:]
    assert m.parse_error_fields(body) == m.ErrorFields(severity, code, text)


def test_parse_parameter_status() -> None:
    assert m.parse_parameter_status(b"TimeZone\x00Europe/Paris\x00") == ("TimeZone", "Europe/Paris")
    assert m.parse_parameter_status(memoryview(b"application_name\x00\x00")) == ("application_name", "")
    assert m.parse_parameter_status(m.parameter_status("search_path", '"$user", public')[5:]) == (
        "search_path", '"$user", public')


def test_read_cstr() -> None:
    data = b"portal\x00stmt\x00\x00rest"
    assert m.read_cstr(data, 0) == (b"portal", 7)
    assert m.read_cstr(data, 7) == (b"stmt", 12)
    assert m.read_cstr(memoryview(data), 12) == (b"", 13)
    with pytest.raises(ValueError):
        m.read_cstr(data, 13)


@pytest.mark.parametrize(("value", "expected"), [
    ("plain", "'plain'"),
    ("", "''"),
    ("O'Brien", "'O''Brien'"),
    ("''", "''''''"),
    ("back\\slash", "'back\\slash'"),       # standard_conforming_strings: backslash is literal
    ("Europe/Paris", "'Europe/Paris'"),
])
def test_quote_literal(value: str, expected: str) -> None:
    assert m.quote_literal(value) == expected


@pytest.mark.parametrize(("name", "expected"), [
    ("users", '"users"'),
    ("My Table", '"My Table"'),
    ('a"b', '"a""b"'),
    ("", '""'),
])
def test_quote_ident(name: str, expected: str) -> None:
    assert m.quote_ident(name) == expected
