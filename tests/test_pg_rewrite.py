"""Byte vectors for the sans-IO StatementRewriter: what reaches the server, what the client gets back."""

from __future__ import annotations

from collections import OrderedDict

from proxy.engines.postgres.rewrite import StatementRewriter
from proxy.engines.postgres.statements import StatementNames, decode_parse
from proxy.engines.postgres.wire import messages as m
from proxy.engines.postgres.wire.responses import DESCRIBE, ResponseTracker, Slot

PARSE_BODY = b"s1\x00SELECT $1\x00\x00\x01\x00\x00\x00\x17"
BIND_BODY = b"\x00s1\x00\x00\x00\x00\x01\x00\x00\x00\x011\x00\x00"
SERVER_PARSE = m.message(b"P", b"dbproxy_1\x00SELECT $1\x00\x00\x01\x00\x00\x00\x17")


def fresh(limit: int = 100) -> tuple[StatementRewriter, OrderedDict[bytes, None], ResponseTracker]:
    return StatementRewriter(StatementNames(), limit), OrderedDict(), ResponseTracker()


def test_named_parse_goes_to_the_server_under_the_proxy_wide_name() -> None:
    rewriter, prepared, tracker = fresh()
    sent = rewriter.parse(decode_parse(PARSE_BODY), PARSE_BODY, prepared, tracker)
    assert sent == SERVER_PARSE
    assert list(prepared) == [b"dbproxy_1"] and rewriter.take_replies() == b""
    # The server's ParseComplete reaches the client.
    assert tracker.feed(m.PARSE_COMPLETE) == m.PARSE_COMPLETE


def test_parse_of_a_statement_the_server_has_is_answered_by_the_proxy() -> None:
    rewriter, prepared, tracker = fresh()
    prepared[b"dbproxy_1"] = None
    assert rewriter.parse(decode_parse(PARSE_BODY), PARSE_BODY, prepared, tracker) == b""
    assert rewriter.take_replies() == m.PARSE_COMPLETE


def test_bind_on_a_server_without_the_statement_re_prepares_it_and_drops_that_parse_complete() -> None:
    rewriter, prepared, tracker = fresh()
    rewriter.parse(decode_parse(PARSE_BODY), PARSE_BODY, prepared, ResponseTracker())
    other_server: OrderedDict[bytes, None] = OrderedDict()
    sent = rewriter.bind(BIND_BODY, other_server, tracker)
    assert sent == SERVER_PARSE + m.message(b"B", b"\x00dbproxy_1\x00" + BIND_BODY[4:])
    assert list(other_server) == [b"dbproxy_1"]
    assert tracker.feed(m.PARSE_COMPLETE) == b""   # the hidden Parse's reply is dropped


def test_bind_of_an_unknown_or_unnamed_statement_is_forwarded_as_is() -> None:
    rewriter, prepared, tracker = fresh()
    assert rewriter.bind(BIND_BODY, prepared, tracker) is None
    assert rewriter.bind(b"\x00\x00\x00\x00\x00\x00\x00\x00", prepared, tracker) is None


def test_describe_and_close_of_a_named_statement() -> None:
    rewriter, prepared, tracker = fresh()
    rewriter.parse(decode_parse(PARSE_BODY), PARSE_BODY, prepared, ResponseTracker())
    assert rewriter.describe(b"Ss1\x00", prepared, tracker) == m.message(b"D", b"Sdbproxy_1\x00")
    assert rewriter.describe(b"Pportal\x00", prepared, tracker) is None
    tracker.push(Slot(DESCRIBE))   # the session records the Describe it forwards
    assert rewriter.close(b"Ss1\x00", tracker) is True
    # Close is answered in order: after the Describe's reply, which the server has not sent yet.
    assert rewriter.take_replies() == b""
    assert tracker.feed(m.message(b"n")) == m.message(b"n") + m.CLOSE_COMPLETE
    assert b"s1" not in rewriter.statements and list(prepared) == [b"dbproxy_1"]   # server copy kept


def test_a_full_cache_closes_the_least_recently_used_statement() -> None:
    rewriter, prepared, tracker = fresh(limit=1)
    prepared[b"old"] = None
    sent = rewriter.parse(decode_parse(PARSE_BODY), PARSE_BODY, prepared, tracker)
    assert sent == m.message(b"C", b"Sold\x00") + SERVER_PARSE
    assert list(prepared) == [b"dbproxy_1"]
    # CloseComplete of the eviction is dropped, ParseComplete passes.
    assert tracker.feed(m.CLOSE_COMPLETE + m.PARSE_COMPLETE) == m.PARSE_COMPLETE


def test_sql_deallocate_of_a_protocol_statement_is_answered_here() -> None:
    rewriter, prepared, tracker = fresh()
    rewriter.parse(decode_parse(PARSE_BODY), PARSE_BODY, prepared, ResponseTracker())
    assert rewriter.deallocate(b"DEALLOCATE s1", tracker) is True
    assert rewriter.take_replies() == m.message(b"C", b"DEALLOCATE\x00") + m.ready_for_query(b"I")
    assert rewriter.deallocate(b"DEALLOCATE s1", tracker) is False      # gone: the server answers
    assert rewriter.deallocate(b"DEALLOCATE ALL", tracker) is False
    assert rewriter.deallocate(b'deallocate prepare "S1"', tracker) is False
