"""Byte vectors for the sans-IO StatementRewriter: what reaches the server, what the client gets back."""

from __future__ import annotations

from collections import OrderedDict

from hypothesis import given
from hypothesis import strategies as st

from proxy.engines.postgres.rewrite import StatementRewriter
from proxy.engines.postgres.statements import StatementNames, decode_parse
from proxy.engines.postgres.wire import messages as m
from proxy.engines.postgres.wire.responses import (
    BIND,
    DESCRIBED,
    INVALIDATED,
    PARSE,
    PARSED,
    SYNC,
    ResponseTracker,
    Slot,
)

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
    assert rewriter.describe(b"Pportal\x00", prepared, tracker) is None   # the session forwards it as is
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


SCOPE = ("app", "appdb")
PARSE_MSG = m.message(b"P", PARSE_BODY)
DESCRIBE_MSG = m.message(b"D", b"Ss1\x00")
# What a server says to Describe of "SELECT $1" (int4): ParameterDescription, RowDescription.
DESCRIPTION = (m.message(b"t", b"\x00\x01\x00\x00\x00\x17")
               + m.message(b"T", b"\x00\x01?column?\x00" + bytes(6) + b"\x00\x00\x00\x17\x00\x04\xff\xff\xff\xff\x00\x00"))


def alone(confirmed: bool = True, described: bool = False) -> StatementRewriter:
    names = StatementNames()
    rewriter = StatementRewriter(names, 100, SCOPE)
    name = names.name_for(decode_parse(PARSE_BODY))
    if confirmed:
        names.confirm(name, SCOPE)
    if described:
        names.describe(name, SCOPE, DESCRIPTION)
    return rewriter


def always(_: bytes) -> bool:
    return True


def test_parse_and_sync_of_a_statement_a_server_accepted_are_answered_without_a_server() -> None:
    rewriter = alone()
    assert rewriter.answer_alone(PARSE_MSG + m.sync(), always, True) == (
        m.PARSE_COMPLETE + m.ready_for_query(b"I"), False)
    assert rewriter.statements[b"s1"].server_name == b"dbproxy_1"
    # Bound later on a server connection that lacks it: prepared there first (its ParseComplete dropped).
    tracker: ResponseTracker = ResponseTracker()
    prepared: OrderedDict[bytes, None] = OrderedDict()
    sent = rewriter.bind(BIND_BODY, prepared, tracker)
    assert sent == SERVER_PARSE + m.message(b"B", b"\x00dbproxy_1\x00" + BIND_BODY[4:])
    assert tracker.feed(m.PARSE_COMPLETE + m.BIND_COMPLETE) == m.BIND_COMPLETE


def test_a_batch_the_proxy_cannot_answer_changes_nothing() -> None:
    unconfirmed = alone(confirmed=False)
    assert unconfirmed.answer_alone(PARSE_MSG + m.sync(), always, True) is None
    assert unconfirmed.statements == {}
    rewriter = alone()
    other_scope = StatementRewriter(rewriter.names, 100, ("app", "otherdb"))
    assert other_scope.answer_alone(PARSE_MSG + m.sync(), always, True) is None
    assert rewriter.answer_alone(PARSE_MSG + m.sync(), lambda q: False, True) is None   # changes session state
    unnamed = m.message(b"P", b"\x00SELECT $1\x00\x00\x00")
    assert rewriter.answer_alone(unnamed + m.sync(), always, True) is None
    assert rewriter.answer_alone(PARSE_MSG + m.message(b"B", BIND_BODY) + m.sync(), always, True) is None
    assert rewriter.answer_alone(PARSE_MSG + m.sync()[:3], always, True) is None          # incomplete
    assert rewriter.answer_alone(PARSE_MSG + DESCRIBE_MSG + m.sync(), always, True) is None   # never described
    assert rewriter.statements == {}


def test_describe_is_answered_from_what_a_server_said_before() -> None:
    rewriter = alone(described=True)
    replies = rewriter.answer_alone(PARSE_MSG + DESCRIBE_MSG + m.sync(), always, True)
    assert replies == (m.PARSE_COMPLETE + DESCRIPTION + m.ready_for_query(b"I"), False)
    # A client with its own search_path may see other tables under the same names: a server answers.
    assert alone(described=True).answer_alone(PARSE_MSG + DESCRIBE_MSG + m.sync(), always, False) is None
    rewriter.names.schema_changed()   # DDL went through the proxy
    assert rewriter.answer_alone(DESCRIBE_MSG + m.sync(), always, True) is None
    assert rewriter.answer_alone(PARSE_MSG + m.sync(), always, True) is None   # a fresh name: no server knows it


def test_a_parse_after_ddl_does_not_land_on_the_copy_prepared_before() -> None:
    rewriter, prepared, tracker = fresh()
    assert rewriter.parse(decode_parse(PARSE_BODY), PARSE_BODY, prepared, tracker) == SERVER_PARSE
    rewriter.names.schema_changed()
    # Another client (or the same one again) prepares the same text: a fresh server-side name, sent to
    # the server, though this connection has dbproxy_1 (whose types may be the old ones).
    other = StatementRewriter(rewriter.names, 100)
    assert other.parse(decode_parse(PARSE_BODY), PARSE_BODY, prepared, tracker) == m.message(
        b"P", b"dbproxy_2\x00SELECT $1\x00\x00\x01\x00\x00\x00\x17")
    assert list(prepared) == [b"dbproxy_1", b"dbproxy_2"]
    # The first client's statement keeps its name (the server checks that copy's result type itself).
    assert rewriter.bind(BIND_BODY, prepared, ResponseTracker()) == m.message(b"B", b"\x00dbproxy_1\x00" + BIND_BODY[4:])
    # A name from before the change is retired like any other when the server invalidates it.
    rewriter.names.retire(b"dbproxy_1")
    assert b"dbproxy_1" in rewriter.names.retired
    assert rewriter.names.name_for(decode_parse(PARSE_BODY)) == b"dbproxy_2"


def test_a_describe_failing_with_a_changed_result_type_is_reported() -> None:
    rewriter, prepared, _ = fresh()
    rewriter.parse(decode_parse(PARSE_BODY), PARSE_BODY, prepared, ResponseTracker())
    tracker = ResponseTracker()
    rewriter.describe(DESCRIBE_MSG[5:], prepared, tracker)
    stale = m.error_response("0A000", "cached plan must not change result type")
    assert tracker.feed(stale) == stale
    assert tracker.news == [(INVALIDATED, b"dbproxy_1", b"")]


def test_an_open_batch_and_close_without_a_server() -> None:
    rewriter = alone()
    assert rewriter.answer_alone(PARSE_MSG + m.flush(), always, True) == (m.PARSE_COMPLETE, True)
    close = m.message(b"C", b"Ss1\x00")
    assert rewriter.answer_alone(close + m.sync(), always, True) == (m.CLOSE_COMPLETE + m.ready_for_query(b"I"), False)
    assert rewriter.statements == {}


def test_the_tracker_reports_what_servers_said_about_named_statements() -> None:
    tracker = ResponseTracker()
    tracker.push(Slot(PARSE, payload=b"dbproxy_1"))
    describe = rewriter_slot = StatementRewriter(StatementNames(), 100)
    rewriter_slot.parse(decode_parse(PARSE_BODY), PARSE_BODY, OrderedDict(), ResponseTracker())
    statement = describe.statements[b"s1"]
    tracker.push(statement.describe_slot)
    # The ParameterDescription arrives in two pieces: it is still forwarded whole.
    reply = m.PARSE_COMPLETE + DESCRIPTION
    assert tracker.feed(reply[:8]) + tracker.feed(reply[8:]) == reply
    assert tracker.news == [(PARSED, b"dbproxy_1", b""), (DESCRIBED, b"dbproxy_1", DESCRIPTION)]


def test_a_bind_failing_with_a_changed_result_type_is_reported_and_the_name_retired() -> None:
    names = StatementNames()
    rewriter = StatementRewriter(names, 100, SCOPE)
    prepared: OrderedDict[bytes, None] = OrderedDict()
    rewriter.parse(decode_parse(PARSE_BODY), PARSE_BODY, prepared, ResponseTracker())
    tracker = ResponseTracker()
    rewriter.bind(BIND_BODY, prepared, tracker)
    stale = m.error_response("0A000", "cached plan must not change result type")
    assert tracker.feed(stale) == stale
    assert tracker.news == [(INVALIDATED, b"dbproxy_1", b"")]
    names.confirm(b"dbproxy_1", SCOPE)
    names.retire(b"dbproxy_1")
    assert (b"dbproxy_1", SCOPE) not in names.confirmed
    names.confirm(b"dbproxy_1", SCOPE)   # a late success of the old name does not bring it back
    assert not names.confirmed
    # The client's next Bind (no new Parse): moved to a fresh name, prepared first on this connection.
    sent = rewriter.bind(BIND_BODY, prepared, ResponseTracker())
    assert sent == (m.message(b"P", b"dbproxy_2\x00SELECT $1\x00\x00\x01\x00\x00\x00\x17")
                    + m.message(b"B", b"\x00dbproxy_2\x00" + BIND_BODY[4:]))
    assert rewriter.statements[b"s1"].bind_slot.payload == b"dbproxy_2"
    assert rewriter.statements[b"s1"].bind_slot.kind == BIND


_MESSAGES = {
    "parse": PARSE_MSG, "parse_other": m.message(b"P", b"s2\x00SELECT 2\x00\x00\x00"),
    "describe": DESCRIBE_MSG, "close": m.message(b"C", b"Ss1\x00"), "sync": m.sync(), "flush": m.flush(),
    "bind": m.message(b"B", BIND_BODY), "query": m.message(b"Q", b"SELECT 1\x00"),
}


@given(st.lists(st.sampled_from(sorted(_MESSAGES)), min_size=1, max_size=8), st.booleans())
def test_answer_alone_is_all_or_nothing(kinds: list[str], described: bool) -> None:
    rewriter = alone(described=described)
    data = b"".join(_MESSAGES[k] for k in kinds)
    answered = rewriter.answer_alone(data, always, True)
    if answered is None:
        assert rewriter.statements == {}
        return
    replies, open_batch = answered
    assert not {"bind", "query", "parse_other"} & set(kinds)
    assert replies.count(m.ready_for_query(b"I")) == kinds.count("sync")
    assert open_batch == (kinds[-1] != "sync")
    assert (b"s1" in rewriter.statements) == ("parse" in kinds and kinds[::-1].index("parse") < (
        kinds[::-1].index("close") if "close" in kinds else len(kinds)))


def test_a_parse_of_a_name_the_client_has_fails_as_on_the_server() -> None:
    rewriter, prepared, tracker = fresh()
    rewriter.parse(decode_parse(PARSE_BODY), PARSE_BODY, prepared, tracker)
    tracker.feed(m.PARSE_COMPLETE)
    rewriter.names.confirm(b"dbproxy_1", rewriter.scope)
    # The server is given a Parse that fails (so it skips to Sync); the client gets the server's words for a duplicate.
    sent = rewriter.parse(decode_parse(PARSE_BODY), PARSE_BODY, prepared, tracker)
    assert sent.startswith(b"P") and b"dbproxy_1" not in sent
    tracker.push(Slot(BIND))
    tracker.push(Slot(SYNC))
    duplicate = m.error_response("42P05", 'prepared statement "s1" already exists')
    assert tracker.feed(m.error_response("42601", "syntax error") + m.ready_for_query(b"E")) == (
        duplicate + m.ready_for_query(b"E"))
    assert list(prepared) == [b"dbproxy_1"]


def test_sql_execute_of_a_protocol_level_statement_runs_its_server_name() -> None:
    rewriter, prepared, tracker = fresh()
    rewriter.parse(decode_parse(PARSE_BODY), PARSE_BODY, prepared, ResponseTracker())
    assert rewriter.execute(b"EXECUTE s1 (41)", prepared, tracker) == m.message(b"Q", b"EXECUTE dbproxy_1 (41)\x00")
    assert rewriter.execute(b'  execute "s1";', prepared, tracker) == m.message(b"Q", b'  execute dbproxy_1;\x00')
    other: OrderedDict[bytes, None] = OrderedDict()   # a server connection without it: prepared first
    assert rewriter.execute(b"EXECUTE S1", other, tracker) == SERVER_PARSE + m.message(b"Q", b"EXECUTE dbproxy_1\x00")
    assert rewriter.execute(b"EXECUTE unknown", prepared, tracker) is None
    assert rewriter.execute(b"EXECUTE s1x", prepared, tracker) is None
    assert rewriter.execute(b"EXPLAIN EXECUTE s1", prepared, tracker) is None
