"""Byte-vector tests of the MySQL response tracker: every response shape, split at every byte boundary.

Each case is a stream of server packets for some pushed slots; it is fed whole, in every
two-chunk split and byte by byte, and must give the same forwarded bytes and the same state.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from proxy.engines.mysql.wire import messages as m
from proxy.engines.mysql.wire.codes import (
    MAX_PACKET_PAYLOAD,
    Capability,
    Command,
    ErrorCode,
    SessionTrack,
    Status,
)
from proxy.engines.mysql.wire.packets import encode_packet, encode_packets
from proxy.engines.mysql.wire.responses import (
    CAPTURE,
    DROP_ALL,
    PASS,
    RENAME,
    SYNTH,
    Prepared,
    ResponseTracker,
    Slot,
)

P41 = Capability.PROTOCOL_41
DEP = P41 | Capability.DEPRECATE_EOF
TRACK = P41 | Capability.SESSION_TRACK
BOTH = DEP | Capability.SESSION_TRACK
AC = Status.AUTOCOMMIT
MORE = Status.MORE_RESULTS_EXISTS
IN_TRANS = Status.IN_TRANS
MAX = MAX_PACKET_PAYLOAD


def packets(*payloads: bytes, seq: int = 1) -> bytes:
    """Payloads framed with consecutive sequence ids (one response)."""
    out = []
    for payload in payloads:
        data, seq = encode_packets(payload, seq)
        out.append(data)
    return b"".join(out)


def col(name: str) -> bytes:
    return m.encode_column_definition(m.Column(name))


def ok(status: int = AC, affected: int = 0, insert_id: int = 0, caps: int = P41, state: bytes = b"") -> bytes:
    return m.encode_ok(caps, affected, insert_id, status, session_state=state)


def end(caps: int, status: int = AC) -> bytes:
    """End of rows: EOF, or OK-as-EOF with DEPRECATE_EOF."""
    return m.encode_end_of_rows(caps, status)


def err(errno: int = 1146, message: str = "Table 'test.nope' doesn't exist") -> bytes:
    return m.encode_err(errno, message, "42S02")


def text_result(caps: int, names: Sequence[str], rows: Sequence[Sequence[m.TextValue]], status: int = AC) -> list[bytes]:
    out = [m.lenenc_int(len(names))] + [col(n) for n in names]
    if not caps & Capability.DEPRECATE_EOF:
        out.append(m.encode_eof(0, status))
    out += [m.encode_text_row(r) for r in rows]
    out.append(end(caps, status))
    return out


def binary_row(*ints: int) -> bytes:
    return b"\x00" + bytes((len(ints) + 9) // 8) + b"".join(i.to_bytes(8, "little") for i in ints)


def snapshot(t: ResponseTracker) -> tuple[object, ...]:
    return (t.status, t.warnings, t.affected_rows, t.last_insert_id, list(t.changes), list(t.prepared),
            list(t.failed_prepares), list(t.captured), t.errors, t.last_error, t.infile, t.infile_reply,
            t.auth_request, t.terminated, t.violation, t.seq, t.idle, t.quiet, len(t.slots))


def make(caps: int, slots: Sequence[Slot], allow_local_infile: bool = True,
         rename: dict[int, int] | None = None) -> tuple[ResponseTracker, bytes]:
    t = ResponseTracker(caps)
    t.allow_local_infile = allow_local_infile
    t.rename = dict(rename or {})
    early = b"".join(t.push(Slot(s.command, s.action, s.payload, s.stmt_id)) for s in slots)
    return t, early


def feed_chunks(t: ResponseTracker, chunks: Sequence[bytes]) -> bytes:
    return b"".join(t.feed(c) for c in chunks)


@dataclass
class Case:
    name: str
    caps: int
    slots: list[Slot]
    stream: bytes
    expected: bytes | None = None            # None: the stream itself
    check: Callable[[ResponseTracker], None] = field(default=lambda t: None)
    allow_local_infile: bool = True
    rename: dict[int, int] = field(default_factory=dict)


def run_everywhere(case: Case) -> ResponseTracker:
    """Feed the case whole, in all 2-chunk splits and byte by byte; all must agree."""
    stream = case.stream
    expected = stream if case.expected is None else case.expected
    t, early = make(case.caps, case.slots, case.allow_local_infile, case.rename)
    assert early + t.feed(stream) == expected, case.name
    case.check(t)
    reference = snapshot(t)
    for cut in range(1, len(stream)):
        t2, early = make(case.caps, case.slots, case.allow_local_infile, case.rename)
        assert early + feed_chunks(t2, [stream[:cut], stream[cut:]]) == expected, (case.name, cut)
        assert snapshot(t2) == reference, (case.name, cut)
    t3, early = make(case.caps, case.slots, case.allow_local_infile, case.rename)
    assert early + feed_chunks(t3, [stream[i:i + 1] for i in range(len(stream))]) == expected
    assert snapshot(t3) == reference
    return t


def idle_after(t: ResponseTracker) -> None:
    assert t.idle and t.quiet and not t.terminated


def has(**expected: object) -> Callable[[ResponseTracker], None]:
    """A check of tracker attributes (no idleness asserted)."""
    def check(t: ResponseTracker) -> None:
        for name, value in expected.items():
            assert getattr(t, name) == value, name
    return check


def idle_with(**expected: object) -> Callable[[ResponseTracker], None]:
    """A check that the tracker is idle and has these attribute values."""
    def check(t: ResponseTracker) -> None:
        idle_after(t)
        has(**expected)(t)
    return check


# ----------------------------------------------------------------------------- the cases

CASES: list[Case] = []


def case(name: str, caps: int, slots: list[Slot], stream: bytes, expected: bytes | None = None,
         check: Callable[[ResponseTracker], None] = idle_after, allow_local_infile: bool = True,
         rename: dict[int, int] | None = None) -> None:
    CASES.append(Case(name, caps, slots, stream, expected, check, allow_local_infile, dict(rename or {})))


Q = Command.QUERY


def _check_ok_insert(t: ResponseTracker) -> None:
    idle_after(t)
    assert (t.affected_rows, t.last_insert_id, t.seq) == (3, 77, 2)


case("query OK", P41, [Slot(Q)], packets(ok(AC, 3, 77)), check=_check_ok_insert)
case("an insert id survives a later OK without one (as LAST_INSERT_ID() does)", P41, [Slot(Q), Slot(Q)],
     packets(ok(AC, 1, 42)) + packets(ok(AC, 0, 0)), check=idle_with(last_insert_id=42, affected_rows=0))


def _check_err(t: ResponseTracker) -> None:
    idle_after(t)
    assert t.errors == 1 and m.decode_err(t.last_error).errno == 1146


case("query ERR", P41, [Slot(Q)], packets(err()), check=_check_err)

for caps in (P41, DEP):
    case(f"text result set {caps:#x}", caps, [Slot(Q)],
         packets(*text_result(caps, ["a", "b"], [(1, "x"), (None, ""), (2, "y" * 300)])))


def _check_multi(t: ResponseTracker) -> None:
    idle_after(t)
    assert t.errors == 1 and t.affected_rows == 2


for caps in (P41, DEP):
    # SELECT 1; UPDATE ...; SELECT 2; SELECT * FROM nope; SELECT 3 (never runs)
    case(f"multi-statement with an error {caps:#x}", caps, [Slot(Q)],
         packets(*text_result(caps, ["1"], [(1,)], AC | MORE), ok(AC | MORE, 2),
                 *text_result(caps, ["2"], [(2,)], AC | MORE), err()), check=_check_multi)
    # CALL p(): two result sets and the final OK of the CALL itself
    case(f"CALL {caps:#x}", caps, [Slot(Q)],
         packets(*text_result(caps, ["1"], [(1,)], AC | MORE), *text_result(caps, ["2"], [(2,)], AC | MORE), ok(AC)))
    # ERR in the middle of the rows (e.g. a killed query)
    case(f"ERR after rows {caps:#x}", caps, [Slot(Q)],
         packets(b"\x01", col("a"), *([] if caps & Capability.DEPRECATE_EOF else [m.encode_eof()]),
                 m.encode_text_row([1]), err(1317, "Query execution was interrupted")),
         check=idle_with(errors=1))


def _check_begin(t: ResponseTracker) -> None:
    assert t.in_transaction and t.quiet and not t.idle


case("BEGIN", P41, [Slot(Q)], packets(ok(AC | IN_TRANS)), check=_check_begin)
case("BEGIN then COMMIT", P41, [Slot(Q), Slot(Q)], packets(ok(AC | IN_TRANS)) + packets(ok(AC)))


def _check_infile(t: ResponseTracker) -> None:
    assert t.infile == b"/tmp/x.csv" and len(t.slots) == 1 and not t.quiet and t.seq == 2


case("LOCAL INFILE request", P41, [Slot(Q)], packets(b"\xfb/tmp/x.csv"), check=_check_infile)


def _check_infile_done(t: ResponseTracker) -> None:
    idle_after(t)
    assert t.infile is None and t.affected_rows == 2


# The client sent the file as packets 2, 3 (and the empty packet 4): the server's OK is packet 5.
case("LOCAL INFILE answered", P41, [Slot(Q)], packets(b"\xfb/tmp/x.csv") + packets(ok(AC, 2), seq=5),
     check=_check_infile_done)

REFUSAL = encode_packet(m.encode_err(ErrorCode.NOT_ALLOWED_COMMAND,
                                     "LOAD DATA LOCAL INFILE is not allowed through this proxy "
                                     "(allow_local_infile = false)"), 6)


def _check_refused(t: ResponseTracker) -> None:
    idle_after(t)
    assert t.infile is None and t.infile_reply == encode_packet(b"", 7) and t.affected_rows == 0


for caps in (P41, DEP):
    first = text_result(caps, ["1"], [(1,)], AC | MORE)
    assert len(first) in (5, 4)
    head = packets(*first)
    n = len(first)
    request = packets(b"\xfb/tmp/x.csv", seq=n + 1)
    rest = packets(ok(AC | MORE), *text_result(caps, ["2"], [(2,)]), seq=n + 3)
    case(f"LOCAL INFILE refused mid multi-statement {caps:#x}", caps, [Slot(Q)], head + request + rest,
         expected=head + encode_packet(REFUSAL[4:], n + 1),
         check=idle_with(infile_reply=encode_packet(b"", n + 2)), allow_local_infile=False)
case("LOCAL INFILE refused", P41, [Slot(Q)], packets(b"\xfb/tmp/x.csv", seq=6) + packets(ok(AC), seq=8),
     expected=REFUSAL, check=_check_refused, allow_local_infile=False)
case("LOCAL INFILE in a hidden command", P41, [Slot(Q, DROP_ALL), Slot(Command.PING)],
     packets(b"\xfbf", seq=6) + packets(ok(AC), seq=8) + packets(ok(AC)), expected=packets(ok(AC)),
     check=idle_with(infile_reply=encode_packet(b"", 7), infile=None))

PREP = Command.STMT_PREPARE


def prepare_response(caps: int, stmt: int, params: int, columns: int) -> list[bytes]:
    out = [m.encode_prepare_ok(stmt, columns, params)]
    for group in (params, columns):
        out += [col("?")] * group
        if group and not caps & Capability.DEPRECATE_EOF:
            out.append(m.encode_eof())
    return out


for caps in (P41, DEP):
    for params, columns in ((2, 3), (0, 2), (1, 0), (0, 0)):
        response = prepare_response(caps, 9, params, columns)
        rewritten = [m.with_statement_id(response[0], 1000)] + response[1:]
        case(f"PREPARE {params}/{columns} rewritten {caps:#x}", caps, [Slot(PREP, stmt_id=1000)],
             packets(*response), expected=packets(*rewritten),
             check=idle_with(prepared=[Prepared(9, params, columns, 1000)]))
    case(f"PREPARE kept id {caps:#x}", caps, [Slot(PREP)], packets(*prepare_response(caps, 9, 1, 1)),
         check=idle_with(prepared=[Prepared(9, 1, 1, 9)]))
    case(f"PREPARE hidden then PING {caps:#x}", caps, [Slot(PREP, DROP_ALL, stmt_id=5), Slot(Command.PING)],
         packets(*prepare_response(caps, 9, 1, 2)) + packets(ok()), expected=packets(ok()),
         check=idle_with(prepared=[Prepared(9, 1, 2, 5)]))


def _check_prepare_failed(t: ResponseTracker) -> None:
    idle_after(t)
    assert t.failed_prepares == [1000] and t.prepared == [] and t.errors == 1


case("PREPARE ERR", P41, [Slot(PREP, stmt_id=1000)], packets(err(1064, "syntax")), check=_check_prepare_failed)

EXE = Command.STMT_EXECUTE
FETCH = Command.STMT_FETCH
CURSOR = Status.CURSOR_EXISTS

for caps in (P41, DEP):
    defs = [b"\x02", col("a"), col("b")]
    eof_cols = [] if caps & Capability.DEPRECATE_EOF else [m.encode_eof()]
    case(f"EXECUTE binary rows {caps:#x}", caps, [Slot(EXE)],
         packets(*defs, *eof_cols, binary_row(1, 2), binary_row(3, 4), end(caps)))
    case(f"EXECUTE OK {caps:#x}", caps, [Slot(EXE)], packets(ok(AC, 1, 5)))
    # A cursor: the column definitions end with CURSOR_EXISTS (an OK-as-EOF with DEPRECATE_EOF); no rows.
    cursor_open = packets(*defs, end(caps, AC | CURSOR))
    case(f"EXECUTE with cursor then FETCHes {caps:#x}", caps, [Slot(EXE), Slot(FETCH), Slot(FETCH), Slot(FETCH)],
         cursor_open + packets(binary_row(1, 2), binary_row(3, 4), end(caps, AC | CURSOR))
         + packets(binary_row(5, 6), end(caps, AC | CURSOR | Status.LAST_ROW_SENT))
         + packets(m.encode_err(1421, "The statement (1) has no open cursor", "HY000")),
         check=idle_with(errors=1, status=AC | CURSOR | Status.LAST_ROW_SENT))
    # PS_MULTI_RESULTS: CALL through COM_STMT_EXECUTE
    case(f"EXECUTE CALL {caps:#x}", caps, [Slot(EXE)],
         packets(b"\x01", col("1"), *eof_cols, binary_row(1), end(caps, AC | MORE),
                 b"\x01", col("2"), *eof_cols, binary_row(2), end(caps, AC | MORE), ok(AC)))


def _check_no_response(t: ResponseTracker) -> None:
    idle_after(t)
    assert t.seq == 2


case("CLOSE and SEND_LONG_DATA have no response", P41,
     [Slot(Command.STMT_SEND_LONG_DATA), Slot(Command.STMT_CLOSE), Slot(Command.PING)], packets(ok()),
     check=_check_no_response)

for command in (Command.STMT_RESET, Command.PING, Command.INIT_DB, Command.RESET_CONNECTION,
                Command.PROCESS_KILL, Command.REFRESH):
    case(f"{command.name} OK", TRACK, [Slot(command)], packets(ok(AC)))
    case(f"{command.name} ERR", TRACK, [Slot(command)], packets(err(1049, "Unknown database")),
         check=idle_with(errors=1))


def _check_schema(t: ResponseTracker) -> None:
    idle_after(t)
    assert t.changes == [m.StateChange(SessionTrack.SCHEMA, b"", b"app")]


case("INIT_DB tracks the schema", TRACK, [Slot(Command.INIT_DB)],
     packets(ok(AC, caps=TRACK, state=m.encode_session_state([m.StateChange(SessionTrack.SCHEMA, b"", b"app")]))),
     check=_check_schema)

for caps in (P41, DEP):
    case(f"SET_OPTION {caps:#x}", caps, [Slot(Command.SET_OPTION)], packets(end(caps)))
    case(f"FIELD_LIST {caps:#x}", caps, [Slot(Command.FIELD_LIST)],
         packets(col("a") + b"\x010", col("b") + b"\xfb", end(caps)))
    case(f"FIELD_LIST ERR {caps:#x}", caps, [Slot(Command.FIELD_LIST)], packets(err()),
         check=idle_with(errors=1))
case("STATISTICS", P41, [Slot(Command.STATISTICS)], packets(b"Uptime: 1009  Threads: 1  Questions: 37"))
case("QUIT", P41, [Slot(Command.QUIT)], b"", check=idle_after)

SWITCH = b"\xfemysql_native_password\x00VB(ANDH|Z.u%TX>m)$wL\x00"


def _check_auth_pending(t: ResponseTracker) -> None:
    assert t.auth_request == SWITCH and len(t.slots) == 1 and t.seq == 2


case("CHANGE_USER auth switch pending", P41, [Slot(Command.CHANGE_USER)], packets(SWITCH), check=_check_auth_pending)
case("CHANGE_USER auth switch, more data, OK", P41, [Slot(Command.CHANGE_USER)],
     packets(SWITCH) + packets(b"\x01\x03", ok(AC), seq=3),
     check=idle_with(auth_request=None, seq=5))
case("CHANGE_USER refused", P41, [Slot(Command.CHANGE_USER)], packets(err(1045, "Access denied")),
     check=idle_with(errors=1))


def _check_unsolicited(t: ResponseTracker) -> None:
    assert t.terminated and not t.idle and t.errors == 1 and t.violation == ""
    assert m.decode_err(t.last_error).errno == ErrorCode.CONNECTION_KILLED


case("unsolicited ERR is dropped", P41, [],
     packets(m.encode_err(ErrorCode.CONNECTION_KILLED, "Connection was killed")) + packets(ok()),
     expected=b"", check=_check_unsolicited)
case("answer then unsolicited ERR", P41, [Slot(Command.PING)],
     packets(ok()) + packets(m.encode_err(ErrorCode.SERVER_SHUTDOWN, "Server shutdown in progress"), seq=0),
     expected=packets(ok()), check=has(terminated=True, quiet=True, idle=False, errors=1))


def _check_violation(t: ResponseTracker) -> None:
    assert t.terminated and "OK is due" in t.violation and len(t.slots) == 1 and t.seq == 2


case("garbage where OK is due", P41, [Slot(Command.PING)], packets(b"\x05garbage") + packets(ok()),
     expected=b"", check=_check_violation)
case("garbage with nothing outstanding", P41, [], packets(b"\x00\x00\x00\x02\x00\x00\x00"), expected=b"",
     check=has(terminated=True, violation="0x00 packet with no command outstanding", errors=0))
case("EOF where a result starts", P41, [Slot(Q)], packets(m.encode_eof()), expected=b"",
     check=has(terminated=True, violation="0xfe packet where a result starts"))


def _check_hidden(t: ResponseTracker) -> None:
    idle_after(t)
    assert t.changes == [m.StateChange(SessionTrack.SYSTEM_VARIABLES, b"time_zone", b"UTC")]
    assert t.affected_rows == 0   # the hidden command's OK does not count as the client's


SET_TZ = ok(AC, 1, caps=TRACK, state=m.encode_session_state([m.StateChange(SessionTrack.SYSTEM_VARIABLES,
                                                                            b"time_zone", b"UTC")]))
for caps in (TRACK, BOTH):
    visible = packets(*text_result(caps, ["1"], [(1,)]))
    case(f"hidden SET then a query {caps:#x}", caps, [Slot(Q, DROP_ALL), Slot(Q)], packets(SET_TZ) + visible,
         expected=visible, check=_check_hidden)
    case(f"hidden failing SET then a query {caps:#x}", caps, [Slot(Q, DROP_ALL), Slot(Q)], packets(err()) + visible,
         expected=visible, check=idle_with(errors=1))
    case(f"a query then hidden reset {caps:#x}", caps, [Slot(Q), Slot(Command.RESET_CONNECTION, DROP_ALL)],
         visible + packets(ok()), expected=visible)


def _check_captured(t: ResponseTracker) -> None:
    idle_after(t)
    assert [m.decode_text_row(r) for r in t.captured] == [[b"READ-COMMITTED", b"STRICT"], [None, b"x"]]


for caps in (P41, DEP):
    probe = packets(*text_result(caps, ["@@tx_isolation", "@@sql_mode"], [("READ-COMMITTED", "STRICT"), (None, "x")]))
    case(f"CAPTURE keeps rows {caps:#x}", caps, [Slot(Q, CAPTURE), Slot(Command.PING)], probe + packets(ok()),
         expected=packets(ok()), check=_check_captured)

# SHOW PROCESSLIST: thread ids of connections serving proxy clients become those clients' ids.
THREADS = {12: 1048577, 7: 99}
for caps in (P41, DEP):
    names = ["Id", "User", "Info"]
    listed = [(12, "app", "SHOW PROCESSLIST"), (13, "root", None), (7, "x" * 300, "a\x00b")]
    shown = [(1048577, "app", "SHOW PROCESSLIST"), (13, "root", None), (99, "x" * 300, "a\x00b")]
    case(f"RENAME rewrites the first column of rows {caps:#x}", caps, [Slot(Q, RENAME), Slot(Command.PING)],
         packets(*text_result(caps, names, listed)) + packets(ok()),
         expected=packets(*text_result(caps, names, shown)) + packets(ok()), check=idle_after, rename=THREADS)
    case(f"RENAME leaves other results alone {caps:#x}", caps, [Slot(Q, RENAME)],
         packets(*text_result(caps, ["Id"], [(None,), ("abc",), (14,)])), check=idle_after, rename=THREADS)
    case(f"RENAME of an error or OK {caps:#x}", caps, [Slot(Q, RENAME), Slot(Q, RENAME)],
         packets(err()) + packets(ok()), check=has(errors=1), rename=THREADS)

SYNTH_OK = packets(ok(AC, 5))
for caps in (P41, DEP):
    visible = packets(*text_result(caps, ["1"], [(1,)]))
    case(f"SYNTH after a PASS response {caps:#x}", caps, [Slot(Q), Slot(Q, SYNTH, SYNTH_OK), Slot(Q)],
         visible + visible, expected=visible + SYNTH_OK + visible)
    case(f"SYNTH after a hidden response {caps:#x}", caps,
         [Slot(Q, DROP_ALL), Slot(Q, SYNTH, SYNTH_OK), Slot(Q, SYNTH, b"second")], packets(SET_TZ),
         expected=SYNTH_OK + b"second")
case("SYNTH first is answered at push", P41, [Slot(Q, SYNTH, SYNTH_OK), Slot(Command.PING)], packets(ok()),
     expected=SYNTH_OK + packets(ok()))


def _check_seq_mid_response(t: ResponseTracker) -> None:
    assert t.seq == 4 and not t.quiet and len(t.slots) == 1


case("sequence id for an answer mid-response", P41, [Slot(Q)], packets(b"\x01", col("a"), m.encode_eof()),
     check=_check_seq_mid_response)


@pytest.mark.parametrize("c", CASES, ids=[c.name for c in CASES])
def test_response_shape(c: Case) -> None:
    run_everywhere(c)


# ----------------------------------------------------------------------------- streaming


def test_everything_forwarded_returns_the_input_object() -> None:
    t = ResponseTracker(P41)
    t.push(Slot(Q))
    data = packets(*text_result(P41, ["a"], [(1,), (2,)]))
    assert t.feed(data) is data


def test_push_returns_nothing_for_a_normal_slot_and_tracks_begin_commit() -> None:
    t = ResponseTracker(P41)
    assert t.push(Slot(Q)) == b""
    t.feed(packets(ok(AC | IN_TRANS)))
    assert t.in_transaction and t.quiet and not t.idle
    t.push(Slot(Q))
    t.feed(packets(ok(AC)))
    assert not t.in_transaction and t.idle


def big_row_response(caps: int, size: int) -> tuple[bytes, bytes]:
    """A one-column result whose single row holds `size` bytes: (stream, row payload)."""
    row = m.lenenc_bytes(b"r" * size)
    head = [b"\x01", col("big")] + ([] if caps & Capability.DEPRECATE_EOF else [m.encode_eof()])
    stream = packets(*head) + encode_packets(row, len(head) + 1)[0]
    stream += packets(end(caps), seq=encode_packets(row, len(head) + 1)[1])
    return stream, row


@pytest.mark.parametrize("caps", [P41, DEP])
@pytest.mark.parametrize("size", [MAX - 4, 16 * 1024 * 1024 + 5, 2 * MAX])
def test_rows_of_16_mib_and_more_stream_through(caps: int, size: int) -> None:
    # MAX - 4: a payload of exactly 0xFFFFFF (then an empty packet); the others start with 0xFE
    # (an 8-byte length) in a packet of 0xFFFFFF bytes, which is not an EOF.
    stream, row = big_row_response(caps, size)
    t = ResponseTracker(caps)
    t.push(Slot(Q))
    out = []
    step = 1 << 20
    for i in range(0, len(stream), step - 3):
        out.append(t.feed(stream[i:i + step - 3]))
        assert t.buffered < 64     # never holds the row
    assert b"".join(out) == stream
    idle_after(t)


@pytest.mark.parametrize("action", [DROP_ALL, CAPTURE])
def test_big_rows_of_hidden_commands(action: int) -> None:
    stream, row = big_row_response(DEP, MAX + 10)
    t = ResponseTracker(DEP)
    t.push(Slot(Q, action))
    t.push(Slot(Command.PING))
    tail = packets(ok())
    out = b"".join(t.feed(stream[i:i + 999_999]) for i in range(0, len(stream), 999_999)) + t.feed(tail)
    assert out == tail
    idle_after(t)
    assert t.captured == ([row] if action == CAPTURE else [])


def test_a_row_packet_split_inside_its_header() -> None:
    stream, _ = big_row_response(P41, 100_000)
    for cut in range(len(stream) - 100_010, len(stream) - 99_990):
        t = ResponseTracker(P41)
        t.push(Slot(Q))
        assert t.feed(stream[:cut]) + t.feed(stream[cut:]) == stream
        idle_after(t)


# ----------------------------------------------------------------------------- properties


def _pipeline(caps: int) -> tuple[list[Slot], bytes, bytes]:
    """A pipeline of mixed slots: (slots, server stream, expected forwarded bytes)."""
    rs = packets(*text_result(caps, ["a", "b"], [(1, "x" * 40), (None, "y")]))
    multi = packets(*text_result(caps, ["1"], [(1,)], AC | MORE), ok(AC | MORE, 1), err())
    prep = prepare_response(caps, 3, 1, 2)
    slots = [Slot(Q, DROP_ALL), Slot(Q), Slot(Q, SYNTH, b"<synth>"), Slot(PREP, stmt_id=77), Slot(Q),
             Slot(Command.STMT_CLOSE), Slot(Q, CAPTURE), Slot(Command.PING)]
    stream = packets(SET_TZ) + rs + packets(*prep) + multi + rs + packets(ok())
    expected = rs + b"<synth>" + packets(m.with_statement_id(prep[0], 77), *prep[1:]) + multi + packets(ok())
    return slots, stream, expected


@settings(max_examples=150, deadline=None)
@given(caps=st.sampled_from([TRACK, BOTH]), cuts=st.lists(st.integers(0, 2000), max_size=12))
def test_random_chunking_of_a_pipeline_gives_the_same_bytes(caps: int, cuts: list[int]) -> None:
    slots, stream, expected = _pipeline(caps)
    points = sorted({c % (len(stream) + 1) for c in cuts} | {0, len(stream)})
    t, early = make(caps, slots)
    out = early + b"".join(t.feed(stream[a:b]) for a, b in zip(points, points[1:], strict=False))
    assert out == expected
    idle_after(t)
    assert t.prepared == [Prepared(3, 1, 2, 77)] and t.errors == 1 and len(t.captured) == 2


@pytest.mark.parametrize("caps", [P41, DEP])
def test_a_continuation_that_looks_like_an_eof_is_row_data(caps: int) -> None:
    # Two columns: the packet boundary at 0xFFFFFF falls inside the second one, so the continuation
    # packet is 4 bytes of 0xFE: an EOF (or OK-as-EOF) by its looks.
    head = [b"\x02", col("a"), col("b")] + ([] if caps & Capability.DEPRECATE_EOF else [m.encode_eof()])
    row = m.lenenc_bytes(b"a" * (MAX - 10)) + m.lenenc_bytes(b"\xfe" * 9)
    framed, next_seq = encode_packets(row, len(head) + 1)
    assert framed[-8:-5] == b"\x04\x00\x00" and framed[-4:] == b"\xfe" * 4
    stream = packets(*head) + framed + packets(end(caps), seq=next_seq)
    t = ResponseTracker(caps)
    t.push(Slot(Q))
    t.push(Slot(Command.PING))
    tail = packets(ok())
    half = len(stream) // 2
    assert t.feed(stream[:half]) + t.feed(stream[half:] + tail) == stream + tail
    idle_after(t)


def test_one_slot_object_can_be_pushed_again_and_again() -> None:
    # The session pushes a shared Slot(QUERY); a refused LOCAL INFILE must not change it.
    shared = Slot(Q)
    t = ResponseTracker(P41)
    t.allow_local_infile = False
    t.push(shared)
    t.push(shared)
    t.push(shared)
    first = packets(b"\xfbf") + packets(ok(AC, 9), seq=3)
    visible = packets(ok(AC, 1)) + packets(ok(AC, 2))
    assert t.feed(first + visible) == encode_packet(REFUSAL[4:], 1) + visible
    assert shared.action == PASS and t.affected_rows == 2
    idle_after(t)


@pytest.mark.parametrize(("payload", "reason"), [
    (b"\x00", "truncated"),                                           # an OK without its fields
    (b"\x00\xfc\x01", "truncated"),                                   # a two-byte count cut short
    (b"\x00\x00\x00\x02\x40\x00\x00\x00\x05\x00\x09x", "truncated"),  # session state longer than the packet
])
def test_a_malformed_ok_terminates_instead_of_raising(payload: bytes, reason: str) -> None:
    t = ResponseTracker(TRACK)
    t.push(Slot(Command.PING))
    assert t.feed(packets(payload) + packets(ok())) == b""
    assert t.terminated and reason in t.violation and len(t.slots) == 1
    assert t.feed(packets(ok())) == b""                               # and stays so
