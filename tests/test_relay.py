"""Byte-vector tests of the server response tracker (drop, synthesize, abort-until-Sync, streaming)."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from proxy.engines.postgres.wire import messages as m
from proxy.engines.postgres.wire.responses import (
    BIND,
    CLOSE,
    DESCRIBE,
    DROP,
    DROP_ALL,
    EXECUTE,
    PARSE,
    QUERY,
    SYNC,
    SYNTH,
    ResponseTracker,
    Slot,
)

ROW_DESC = m.message(b"T", b"\x00\x01a\x00" + b"\x00" * 18)
DATA_ROW = m.message(b"D", b"\x00\x01\x00\x00\x00\x011")
SELECT_1 = m.message(b"C", b"SELECT 1\x00")
Z_IDLE = m.ready_for_query(b"I")
Z_TX = m.ready_for_query(b"T")
ERROR = m.error_response("42601", "syntax error")


def test_simple_query_passes_through_and_goes_idle() -> None:
    t = ResponseTracker()
    t.push(Slot(QUERY))
    stream = ROW_DESC + DATA_ROW + SELECT_1 + Z_IDLE
    assert t.feed(stream) == stream
    assert t.idle


def test_transaction_status_is_tracked() -> None:
    t = ResponseTracker()
    t.push(Slot(QUERY))
    t.feed(m.message(b"C", b"BEGIN\x00") + Z_TX)
    assert t.quiet and not t.idle and t.status == b"T"


def test_bytes_split_anywhere_give_the_same_output() -> None:
    stream = ROW_DESC + DATA_ROW * 3 + SELECT_1 + Z_IDLE
    for cut in range(1, len(stream)):
        t = ResponseTracker()
        t.push(Slot(QUERY))
        assert t.feed(stream[:cut]) + t.feed(stream[cut:]) == stream
        assert t.idle


def test_hidden_query_response_is_dropped_entirely() -> None:
    t = ResponseTracker()
    t.push(Slot(QUERY, DROP_ALL))
    t.push(Slot(QUERY))
    hidden = m.message(b"C", b"SET\x00") + m.parameter_status("TimeZone", "UTC") + Z_IDLE
    visible = ROW_DESC + DATA_ROW + SELECT_1 + Z_IDLE
    assert t.feed(hidden + visible) == visible
    assert t.parameters == [(b"TimeZone", b"UTC")]
    assert t.idle


def test_injected_parse_complete_is_dropped_but_its_error_passes() -> None:
    t = ResponseTracker()
    t.push(Slot(PARSE, DROP, b"s1"))
    t.push(Slot(BIND))
    t.push(Slot(EXECUTE))
    t.push(Slot(SYNC))
    ok = m.PARSE_COMPLETE + m.BIND_COMPLETE + DATA_ROW + SELECT_1 + Z_IDLE
    assert t.feed(ok) == ok[len(m.PARSE_COMPLETE) :]
    assert t.idle

    t.push(Slot(PARSE, DROP, b"s2"))
    t.push(Slot(BIND))
    t.push(Slot(EXECUTE))
    t.push(Slot(SYNC))
    assert t.feed(ERROR + Z_IDLE) == ERROR + Z_IDLE
    assert t.failed_statements == [b"s2"]
    assert t.idle


def test_synthesized_response_waits_for_earlier_responses() -> None:
    t = ResponseTracker()
    t.push(Slot(BIND))
    assert t.push(Slot(SYNTH, payload=m.PARSE_COMPLETE)) == b""
    t.push(Slot(DESCRIBE))
    t.push(Slot(SYNC))
    out = t.feed(m.BIND_COMPLETE + m.message(b"n") + Z_IDLE)
    assert out == m.BIND_COMPLETE + m.PARSE_COMPLETE + m.message(b"n") + Z_IDLE


def test_synthesized_response_with_nothing_pending_is_returned_at_once() -> None:
    t = ResponseTracker()
    assert t.push(Slot(SYNTH, payload=m.CLOSE_COMPLETE)) == m.CLOSE_COMPLETE


def test_error_skips_slots_until_sync_including_synthetic_ones() -> None:
    t = ResponseTracker()
    t.push(Slot(PARSE, payload=b"s1"))
    t.push(Slot(SYNTH, payload=m.CLOSE_COMPLETE))
    t.push(Slot(BIND))
    t.push(Slot(SYNC))
    assert t.feed(ERROR + Z_IDLE) == ERROR + Z_IDLE
    assert t.failed_statements == [b"s1"]
    assert t.idle


def test_error_before_sync_was_sent_discards_later_slots() -> None:
    t = ResponseTracker()
    t.push(Slot(BIND))
    assert t.feed(ERROR) == ERROR
    t.push(Slot(EXECUTE))  # server skips these: no response will come
    t.push(Slot(PARSE, payload=b"x"))
    t.push(Slot(SYNC))
    assert t.failed_statements == [b"x"]
    assert t.feed(Z_IDLE) == Z_IDLE
    assert t.idle


def test_large_data_row_streams_without_buffering() -> None:
    t = ResponseTracker()
    t.push(Slot(QUERY))
    big = m.message(b"D", b"\x00\x01" + (1_000_000).to_bytes(4, "big") + b"x" * 1_000_000)
    first = t.feed(big[:70_000])
    assert first == big[:70_000]  # forwarded before the message is complete
    rest = t.feed(big[70_000:] + SELECT_1 + Z_IDLE)
    assert first + rest == big + SELECT_1 + Z_IDLE
    assert t.idle


def test_close_complete_and_notices_in_extended_flow() -> None:
    t = ResponseTracker()
    t.push(Slot(CLOSE))
    t.push(Slot(SYNC))
    notice = m.notice_response("hello")
    stream = notice + m.CLOSE_COMPLETE + Z_IDLE
    assert t.feed(stream) == stream
    assert t.idle


@given(st.lists(st.integers(min_value=1, max_value=40), min_size=1, max_size=20))
def test_any_chunking_of_a_pipeline_forwards_every_byte(cuts: list[int]) -> None:
    t = ResponseTracker()
    for _ in range(3):
        t.push(Slot(PARSE))
        t.push(Slot(BIND))
        t.push(Slot(EXECUTE))
        t.push(Slot(SYNC))
    stream = (m.PARSE_COMPLETE + m.BIND_COMPLETE + DATA_ROW + SELECT_1 + Z_IDLE) * 3
    out = b""
    pos = 0
    for cut in cuts:
        out += t.feed(stream[pos : pos + cut])
        pos += cut
    out += t.feed(stream[pos:])
    assert out == stream
    assert t.idle


def test_capture_slot_keeps_rows_and_hides_the_response() -> None:
    from proxy.engines.postgres.wire.responses import CAPTURE

    t = ResponseTracker()
    t.push(Slot(QUERY, CAPTURE))
    t.push(Slot(QUERY))
    lsn_row = m.message(b"D", b"\x00\x01\x00\x00\x00\x090/3000060")
    hidden = ROW_DESC + lsn_row + SELECT_1 + Z_IDLE
    visible = ROW_DESC + DATA_ROW + SELECT_1 + Z_IDLE
    assert t.feed(hidden + visible) == visible
    assert t.captured == [b"\x00\x01\x00\x00\x00\x090/3000060"]


def test_an_unsolicited_fatal_is_dropped_and_marks_the_connection_terminated() -> None:
    # A dying server (e.g. the postmaster of a primary killed with -9) sends FATAL right after the
    # ReadyForQuery that ended the client's transaction: it belongs to no client request.
    fatal = m.error_response("57P01", "terminating connection due to unexpected postmaster exit", "FATAL")
    t = ResponseTracker()
    t.push(Slot(QUERY))
    stream = SELECT_1 + Z_IDLE
    assert t.feed(stream + fatal) == stream
    assert t.terminated and t.idle
    t = ResponseTracker()
    assert t.feed(fatal) == b"" and t.terminated


def _notification(pid: int, channel: bytes = b"ch", payload: bytes = b"hi") -> bytes:
    return m.message(b"A", pid.to_bytes(4, "big") + channel + b"\x00" + payload + b"\x00")


def test_notification_pids_of_the_proxys_backends_become_their_clients_pids() -> None:
    """A NOTIFY from one of the proxy's backends carries the pid its client was given, wherever the stream
    is cut; a backend the proxy does not own (or one with no client yet) keeps its pid."""
    listener, sender, unused = ResponseTracker(), ResponseTracker(), ResponseTracker()
    peers = {b"\x00\x00\x00\x07": listener, b"\x00\x00\x00\x08": sender, b"\x00\x00\x00\x09": unused}
    for tracker, client in ((listener, 1007), (sender, 1008)):
        tracker.peers = peers
        tracker.client_pid = client.to_bytes(4, "big")
    stream = _notification(7) + _notification(8) + _notification(9) + _notification(42)
    expected = _notification(1007) + _notification(1008) + _notification(9) + _notification(42)
    for cut in range(len(stream) + 1):
        assert listener.feed(stream[:cut]) + listener.feed(stream[cut:]) == expected
