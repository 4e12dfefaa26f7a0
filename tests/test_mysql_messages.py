"""Byte-vector and property tests of MySQL payloads: lenenc, OK/ERR/EOF, result sets, statement commands.

Vectors marked "MariaDB 10.11" were captured from the real server.
"""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from proxy.engines.mysql.wire import messages as m
from proxy.engines.mysql.wire.codes import (
    EOF_HEADER,
    UTF8MB4_GENERAL_CI,
    Capability,
    ColumnType,
    Command,
    CursorType,
    ErrorCode,
    SessionTrack,
    SetOption,
    Status,
)
from proxy.engines.mysql.wire.packets import PacketReader
from proxy.engines.mysql.wire.responses import ResponseTracker, Slot
from proxy.errors import ProtocolViolation

TRACK = Capability.PROTOCOL_41 | Capability.SESSION_TRACK
PLAIN = Capability.PROTOCOL_41

# ----------------------------------------------------------------------------- lenenc


@pytest.mark.parametrize(("value", "encoded"), [
    (0, b"\x00"),
    (250, b"\xfa"),
    (251, b"\xfc\xfb\x00"),
    (0xFFFF, b"\xfc\xff\xff"),
    (0x10000, b"\xfd\x00\x00\x01"),
    (0xFFFFFF, b"\xfd\xff\xff\xff"),
    (0x1000000, b"\xfe\x00\x00\x00\x01\x00\x00\x00\x00"),
    (2**64 - 1, b"\xfe" + b"\xff" * 8),
])
def test_lenenc_int_vectors(value: int, encoded: bytes) -> None:
    assert m.lenenc_int(value) == encoded
    assert m.read_lenenc_int(b"?" + encoded + b"!", 1) == (value, 1 + len(encoded))


def test_lenenc_null_and_invalid_prefixes() -> None:
    assert m.read_lenenc_int(b"\xfb", 0) == (None, 1)
    assert m.read_lenenc_bytes(b"\xfbrest", 0) == (None, 1)
    with pytest.raises(ProtocolViolation, match="0xFF"):
        m.read_lenenc_int(b"\xff", 0)
    for truncated in (b"", b"\xfc\x01", b"\xfd\x01\x02", b"\xfe\x01\x02\x03\x04\x05\x06\x07"):
        with pytest.raises(ProtocolViolation, match="truncated"):
            m.read_lenenc_int(truncated, 0)
    with pytest.raises(ProtocolViolation, match="truncated"):
        m.read_lenenc_bytes(b"\x05abc", 0)
    with pytest.raises(ValueError):
        m.lenenc_int(-1)


@given(st.integers(0, 2**64 - 1))
def test_lenenc_int_round_trip(value: int) -> None:
    encoded = m.lenenc_int(value)
    assert m.read_lenenc_int(encoded, 0) == (value, len(encoded))


@given(st.binary(max_size=70000))
def test_lenenc_bytes_round_trip(value: bytes) -> None:
    encoded = m.lenenc_bytes(value)
    assert m.read_lenenc_bytes(encoded + b"tail", 0) == (value, len(encoded))


# ----------------------------------------------------------------------------- OK


def test_ok_plain_mariadb() -> None:
    ok = m.decode_ok(b"\x00\x00\x00\x03\x00\x00\x00", PLAIN)          # MariaDB 10.11: BEGIN
    assert ok == m.OkPacket(0, 0, Status.IN_TRANS | Status.AUTOCOMMIT, 0)


def test_ok_info_is_length_encoded_even_without_session_track() -> None:
    payload = b"\x00\x03\x00\x02\x00\x00\x00(Rows matched: 3  Changed: 3  Warnings: 0"   # MariaDB 10.11
    for caps in (PLAIN, TRACK):
        ok = m.decode_ok(payload, caps)
        assert ok.affected_rows == 3 and ok.info == b"Rows matched: 3  Changed: 3  Warnings: 0"


def test_ok_with_big_lenenc_counts() -> None:
    payload = b"\x00\xfd\x01\x00\x01\xfc\x10\x27\x02\x00\x05\x00"
    ok = m.decode_ok(payload, PLAIN)
    assert (ok.affected_rows, ok.last_insert_id, ok.status, ok.warnings) == (0x010001, 10000, 2, 5)


@pytest.mark.parametrize(("payload", "changes"), [
    (b"\x00\x00\x00\x02@\x00\x00\x00\x13\x00\x11\ttime_zone\x06+01:00",            # MariaDB 10.11: SET
     [m.StateChange(SessionTrack.SYSTEM_VARIABLES, b"time_zone", b"+01:00")]),
    (b"\x00\x00\x00\x02@\x00\x00\x00\x08\x01\x06\x05mysql",                         # MariaDB 10.11: USE
     [m.StateChange(SessionTrack.SCHEMA, b"", b"mysql")]),
    (b"\x00\x00\x00\x03@\x00\x00\x00 \x05\t\x08T_______\x04\x13\x12START TRANSACTION;",   # MariaDB: BEGIN
     [m.StateChange(SessionTrack.TRANSACTION_STATE, b"", b"T_______"),
      m.StateChange(SessionTrack.TRANSACTION_CHARACTERISTICS, b"", b"START TRANSACTION;")]),
    (b"\x00\x00\x00\x02@\x00\x00\x00\x11\x02\x011\x05\t\x08________\x04\x01\x00",   # MariaDB 10.11: SET ...
     [m.StateChange(SessionTrack.STATE_CHANGE, b"", b"1"),
      m.StateChange(SessionTrack.TRANSACTION_STATE, b"", b"________"),
      m.StateChange(SessionTrack.TRANSACTION_CHARACTERISTICS, b"", b"")]),
])
def test_ok_session_state_records(payload: bytes, changes: list[m.StateChange]) -> None:
    ok = m.decode_ok(payload, TRACK)
    assert ok.status & Status.SESSION_STATE_CHANGED
    assert list(ok.changes) == changes
    assert m.decode_ok(payload, PLAIN).changes == ()   # not negotiated: not read


def test_session_state_gtids_and_several_variables_in_one_record() -> None:
    gtid = b"3E11FA47-71CA-11E1-9E33-C80AA9429562:1-5"
    data = bytes((SessionTrack.GTIDS,)) + m.lenenc_bytes(b"\x00" + m.lenenc_bytes(gtid))
    data += bytes((SessionTrack.SYSTEM_VARIABLES,)) + m.lenenc_bytes(
        m.lenenc_bytes(b"autocommit") + m.lenenc_bytes(b"OFF") + m.lenenc_bytes(b"sql_mode") + m.lenenc_bytes(b""))
    data += b"\x63" + m.lenenc_bytes(b"future")
    assert m.decode_session_state(data) == [
        m.StateChange(SessionTrack.GTIDS, b"", gtid),
        m.StateChange(SessionTrack.SYSTEM_VARIABLES, b"autocommit", b"OFF"),
        m.StateChange(SessionTrack.SYSTEM_VARIABLES, b"sql_mode", b""),
        m.StateChange(0x63, b"", b"future"),
    ]
    with pytest.raises(ProtocolViolation):
        m.decode_session_state(b"\x01\x05\x09abc")


def test_ok_encode_round_trips() -> None:
    changes = [m.StateChange(SessionTrack.SYSTEM_VARIABLES, b"time_zone", b"UTC"),
               m.StateChange(SessionTrack.SCHEMA, b"", b"app"),
               m.StateChange(SessionTrack.GTIDS, b"", b"0-1-42"),
               m.StateChange(SessionTrack.STATE_CHANGE, b"", b"1")]
    payload = m.encode_ok(TRACK, 7, 300, Status.AUTOCOMMIT, 1, b"info", m.encode_session_state(changes))
    ok = m.decode_ok(payload, TRACK)
    assert ok == m.OkPacket(7, 300, Status.AUTOCOMMIT | Status.SESSION_STATE_CHANGED, 1, b"info", tuple(changes))
    assert m.encode_ok(PLAIN) == b"\x00\x00\x00\x02\x00\x00\x00"
    assert m.encode_ok(PLAIN, session_state=b"ignored") == b"\x00\x00\x00\x02\x00\x00\x00"
    as_eof = m.encode_ok(PLAIN | Capability.DEPRECATE_EOF, status=0x22, header=EOF_HEADER)
    assert as_eof == b"\xfe\x00\x00\x22\x00\x00\x00"                    # the shape MariaDB sends
    assert m.decode_ok(as_eof, PLAIN).status == 0x22


@pytest.mark.parametrize("payload", [b"", b"\x05\x00\x00\x02\x00\x00\x00", b"\x00\x00\x00\x02\x00", b"\x00\xfb\x00\x00\x00\x00\x00"])
def test_bad_ok_is_refused(payload: bytes) -> None:
    with pytest.raises(ProtocolViolation):
        m.decode_ok(payload, PLAIN)


# ----------------------------------------------------------------------------- ERR, EOF


def test_err_with_sqlstate_mariadb() -> None:
    err = m.decode_err(b"\xffz\x04#42S02Table 'test.nonexist' doesn't exist")   # MariaDB 10.11
    assert err == m.ErrPacket(1146, "42S02", "Table 'test.nonexist' doesn't exist")


def test_err_pre_41_form_without_sqlstate() -> None:
    assert m.decode_err(b"\xff\x10\x04Too many connections") == m.ErrPacket(1040, "HY000", "Too many connections")
    assert m.decode_err(b"\xff\x10\x04") == m.ErrPacket(1040, "HY000", "")
    with pytest.raises(ProtocolViolation):
        m.decode_err(b"\xff\x10")
    with pytest.raises(ProtocolViolation):
        m.decode_err(b"\x00\x10\x04")


def test_err_encode_takes_the_errno_sqlstate() -> None:
    payload = m.encode_err(ErrorCode.NOT_ALLOWED_COMMAND, "refused ü")
    assert payload == b"\xff\x7c\x04#42000refused \xc3\xbc"
    assert m.decode_err(payload) == m.ErrPacket(1148, "42000", "refused ü")
    assert m.decode_err(m.encode_err(9999, "x")).sqlstate == "HY000"
    assert m.decode_err(m.encode_err(1064, "x", "42000")).sqlstate == "42000"
    with pytest.raises(ValueError):
        m.encode_err(1064, "x", "420")


def test_eof() -> None:
    assert m.decode_eof(b"\xfe\x00\x00\x02\x00") == m.EofPacket(0, Status.AUTOCOMMIT)   # MariaDB 10.11
    assert m.encode_eof(3, 0x42) == b"\xfe\x03\x00\x42\x00"
    assert m.decode_eof(m.encode_eof(3, 0x42)) == m.EofPacket(3, 0x42)
    with pytest.raises(ProtocolViolation):
        m.decode_eof(b"\xfe\x00")
    assert m.encode_end_of_rows(PLAIN, 0x22) == b"\xfe\x00\x00\x22\x00"
    assert m.encode_end_of_rows(PLAIN | Capability.DEPRECATE_EOF, 0x22) == b"\xfe\x00\x00\x22\x00\x00\x00"


# ----------------------------------------------------------------------------- result sets


def test_column_definition_decodes_mariadb_field_list_bytes() -> None:
    # COM_FIELD_LIST answer of MariaDB 10.11 (a default value follows the fixed fields).
    payload = b"\x03def\x04test\x05t_exp\x05t_exp\x01a\x01a\x0c?\x00\x0b\x00\x00\x00\x03\x03P\x00\x00\x00\x010"
    column = m.decode_column_definition(payload)
    assert column == m.Column("a", ColumnType.LONG, 63, 11, 0x5003, 0, "t_exp", "test")
    with pytest.raises(ProtocolViolation):
        m.decode_column_definition(payload[:25])


def test_column_definition_round_trip() -> None:
    column = m.Column("naïve", ColumnType.LONGLONG, 63, 20, 0x21, 0, "t", "db")
    assert m.decode_column_definition(m.encode_column_definition(column)) == column


def test_text_rows() -> None:
    payload = m.encode_text_row([b"raw", "é", 42, 1.5, None, True, ""])
    assert payload == b"\x03raw\x02\xc3\xa9\x0242\x031.5\xfb\x011\x00"
    assert m.decode_text_row(payload) == [b"raw", "é".encode(), b"42", b"1.5", None, b"1", b""]
    assert m.decode_text_row(m.encode_text_row(["x" * 300])) == [b"x" * 300]


@pytest.mark.parametrize("caps", [PLAIN, PLAIN | Capability.DEPRECATE_EOF])
def test_result_set_is_what_the_tracker_follows(caps: int) -> None:
    data = m.encode_result_set(["pool", m.Column("n", ColumnType.LONGLONG)], [("main", 3), ("other", None)], caps,
                               status=Status.AUTOCOMMIT | Status.IN_TRANS)
    tracker = ResponseTracker(caps)
    tracker.push(Slot(Command.QUERY))
    assert tracker.feed(data) == data
    assert tracker.quiet and tracker.in_transaction and not tracker.terminated
    reader = PacketReader()
    reader.feed(data)
    packets = []
    while (item := reader.next()) is not None:
        packets.append(item)
    assert [seq for seq, _ in packets] == list(range(1, len(packets) + 1))
    assert packets[0][1] == b"\x02"
    assert m.decode_column_definition(packets[1][1]).name == "pool"
    assert m.decode_column_definition(packets[2][1]).type == ColumnType.LONGLONG
    rows = packets[3:-1] if caps & Capability.DEPRECATE_EOF else packets[4:-1]
    assert [m.decode_text_row(p) for _, p in rows] == [[b"main", b"3"], [b"other", None]]
    with pytest.raises(ValueError):
        m.encode_result_set(["a"], [(1, 2)], caps)


def test_local_infile_request() -> None:
    assert m.decode_local_infile_request(b"\xfb/tmp/x.csv") == b"/tmp/x.csv"   # MariaDB 10.11
    assert m.encode_local_infile_request(b"f") == b"\xfbf"
    with pytest.raises(ProtocolViolation):
        m.decode_local_infile_request(b"\x00")


# ----------------------------------------------------------------------------- statements


def test_prepare_ok_mariadb() -> None:
    payload = b"\x00\x01\x00\x00\x00\x02\x00\x01\x00\x00\x00\x00"   # MariaDB 10.11: 2 columns, 1 param
    assert m.decode_prepare_ok(payload) == m.PrepareOk(1, 2, 1, 0)
    assert m.encode_prepare_ok(1, 2, 1) == payload
    rewritten = m.with_statement_id(payload, 0xDEADBEEF)
    assert m.decode_prepare_ok(rewritten) == m.PrepareOk(0xDEADBEEF, 2, 1, 0)
    assert m.statement_id(rewritten) == 0xDEADBEEF
    with pytest.raises(ProtocolViolation):
        m.decode_prepare_ok(payload[:11])
    with pytest.raises(ProtocolViolation):
        m.decode_prepare_ok(b"\xff" + payload[1:])


@pytest.mark.parametrize("payload", [
    m.encode_stmt_execute(7, CursorType.READ_ONLY),
    m.encode_stmt_command(Command.STMT_CLOSE, 7),
    m.encode_stmt_command(Command.STMT_RESET, 7),
    m.encode_stmt_fetch(7, 100),
    bytes((Command.STMT_SEND_LONG_DATA,)) + (7).to_bytes(4, "little") + b"\x00\x00long data",
])
def test_statement_id_of_statement_commands(payload: bytes) -> None:
    assert m.statement_id(payload) == 7
    other = m.with_statement_id(payload, 123456)
    assert m.statement_id(other) == 123456
    assert other[0] == payload[0] and other[5:] == payload[5:] and len(other) == len(payload)


def test_statement_command_encodings() -> None:
    assert m.encode_stmt_execute(1) == b"\x17\x01\x00\x00\x00\x00\x01\x00\x00\x00"
    assert m.encode_stmt_fetch(1, 2) == b"\x1c\x01\x00\x00\x00\x02\x00\x00\x00"
    assert m.encode_stmt_command(Command.STMT_CLOSE, 1) == b"\x19\x01\x00\x00\x00"
    assert m.encode_stmt_prepare(b"SELECT ?") == b"\x16SELECT ?"
    with pytest.raises(ProtocolViolation):
        m.statement_id(b"\x17\x01\x00")
    with pytest.raises(ProtocolViolation):
        m.with_statement_id(b"\x17", 1)


def test_command_fields() -> None:
    assert m.query_text(m.encode_command(Command.QUERY, "SELECT 'é'".encode())) == "SELECT 'é'"
    weird = m.query_text(b"\x03SELECT '\xff'")
    assert weird.encode("utf-8", "surrogateescape") == b"SELECT '\xff'"      # lossless
    assert m.query_text(b"\x03SELECT '\xe9'", "latin-1") == "SELECT 'é'"
    assert m.init_db_schema(b"\x02app") == "app"
    assert m.kill_thread_id(b"\x0c\x2a\x00\x00\x00") == 42
    assert m.set_option_value(b"\x1b\x01\x00") == SetOption.MULTI_STATEMENTS_OFF
    with pytest.raises(ProtocolViolation):
        m.kill_thread_id(b"\x0c\x2a")
    with pytest.raises(ProtocolViolation):
        m.set_option_value(b"\x1b")
    assert UTF8MB4_GENERAL_CI == 45
