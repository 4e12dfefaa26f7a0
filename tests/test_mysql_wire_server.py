"""The MySQL codec against the real MariaDB 10.11 at 127.0.0.1:3306 (root, empty password, database `test`).

A tiny blocking client built from the codec logs in (a minimal HandshakeV10 / HandshakeResponse41
of its own), sends real commands and feeds every byte it reads to a ResponseTracker; each test
checks the tracker's state and that what it forwards is exactly what was read. Every module runs
twice: with DEPRECATE_EOF + SESSION_TRACK, and with neither.
"""

from __future__ import annotations

import os
import socket
import struct
import time
from collections.abc import Callable, Iterator

import pytest

from proxy.engines.mysql.wire import messages as m
from proxy.engines.mysql.wire.codes import (
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
from proxy.engines.mysql.wire.packets import PacketReader, encode_packet, encode_packets
from proxy.engines.mysql.wire.responses import CAPTURE, DROP_ALL, PASS, Prepared, ResponseTracker, Slot

HOST, PORT = "127.0.0.1", 3306
BASE = (Capability.LONG_PASSWORD | Capability.PROTOCOL_41 | Capability.SECURE_CONNECTION | Capability.PLUGIN_AUTH
        | Capability.MULTI_STATEMENTS | Capability.MULTI_RESULTS | Capability.PS_MULTI_RESULTS
        | Capability.TRANSACTIONS | Capability.CONNECT_WITH_DB | Capability.LOCAL_FILES)
MODERN = BASE | Capability.DEPRECATE_EOF | Capability.SESSION_TRACK
BIG_PACKET = 64 * 1024 * 1024


def _server_up() -> bool:
    try:
        socket.create_connection((HOST, PORT), timeout=2).close()
    except OSError:
        return False
    return True


pytestmark = pytest.mark.skipif(not _server_up(), reason=f"no MariaDB at {HOST}:{PORT}")


def payloads(data: bytes) -> list[tuple[int, bytes]]:
    """The (seq, payload) list of a byte stream (an independent check of what was forwarded)."""
    reader = PacketReader(max_payload=BIG_PACKET)
    reader.feed(data)
    out = []
    while (item := reader.next()) is not None:
        out.append(item)
    assert reader.buffered == 0
    return out


def results(data: bytes, caps: int, binary: bool = False) -> list[tuple[str, object]]:
    """An independent reading of whole responses: [("rows", rows) | ("ok", OkPacket) | ("err", ErrPacket)]."""
    packets = [p for _, p in payloads(data)]
    out: list[tuple[str, object]] = []
    i = 0
    while i < len(packets):
        first = packets[i]
        i += 1
        if first[0] == 0xFF:
            out.append(("err", m.decode_err(first)))
            break
        if first[0] == 0x00:
            ok = m.decode_ok(first, caps)
            out.append(("ok", ok))
        else:
            count = m.read_lenenc_int(first, 0)[0] or 0
            i += count + (0 if caps & Capability.DEPRECATE_EOF else 1)
            rows: list[object] = []
            while not (packets[i][0] in (0xFE, 0xFF) and len(packets[i]) < 0xFFFFFF):
                rows.append(packets[i] if binary else m.decode_text_row(packets[i]))
                i += 1
            out.append(("rows", rows))
            last = packets[i]
            i += 1
            if last[0] == 0xFF:
                out.append(("err", m.decode_err(last)))
                break
            ok = m.decode_ok(last, caps) if len(last) >= 7 else m.OkPacket(0, 0, m.decode_eof(last).status, 0)
        if not ok.status & Status.MORE_RESULTS_EXISTS:
            break
    assert i == len(packets), "bytes after the end of the response"
    return out


class Client:
    """A blocking MySQL client from the codec: a minimal login, then commands through a ResponseTracker."""

    def __init__(self, wanted: int, database: bytes = b"test") -> None:
        self.sock = socket.create_connection((HOST, PORT), timeout=15)
        self.reader = PacketReader(max_payload=BIG_PACKET)
        seq, greeting = self._read_payload()
        server_caps, status = self._parse_handshake(greeting)
        self.caps = wanted & server_caps
        login = struct.pack("<IIB23x", self.caps, BIG_PACKET, UTF8MB4_GENERAL_CI) + b"root\x00" + b"\x00"
        login += database + b"\x00" + b"mysql_native_password\x00"
        self.sock.sendall(encode_packet(login, seq + 1))
        seq, reply = self._read_payload()
        if reply[0] == 0xFE:                         # AuthSwitchRequest: the empty password again
            self.sock.sendall(encode_packet(b"", seq + 1))
            seq, reply = self._read_payload()
        assert reply[0] == 0x00, m.decode_err(reply)
        assert self.reader.buffered == 0
        self.tracker = ResponseTracker(self.caps, status)
        self.connection_id = self.value("SELECT CONNECTION_ID()")

    @staticmethod
    def _parse_handshake(greeting: bytes) -> tuple[int, int]:
        assert greeting[0] == 10, "HandshakeV10"
        pos = greeting.index(b"\x00", 1) + 1 + 4 + 8 + 1       # server version, thread id, scramble 1, filler
        low, _charset, status, high = struct.unpack_from("<HBHH", greeting, pos)
        return low | high << 16, status

    def _read_payload(self) -> tuple[int, bytes]:
        while (item := self.reader.next()) is None:
            data = self.sock.recv(65536)
            assert data, "server closed the connection"
            self.reader.feed(data)
        return item

    def close(self) -> None:
        self.sock.close()

    # ------------------------------------------------------------------ commands

    def send(self, payload: bytes, slot: Slot | None = None) -> None:
        """Send one command (seq 0), pushing its slot first."""
        self.tracker.push(slot or Slot(payload[0]))
        self.sock.sendall(encode_packet(payload, 0))

    def collect(self, until: Callable[[ResponseTracker], bool] | None = None,
                on_feed: Callable[[ResponseTracker], None] | None = None) -> tuple[bytes, bytes]:
        """Read and feed the tracker until `until` (default: quiet): (bytes read, bytes forwarded)."""
        done = until or (lambda t: t.quiet)
        raw = bytearray()
        out = []
        while not done(self.tracker):
            data = self.sock.recv(1 << 20)
            assert data, "server closed the connection"
            raw += data
            out.append(self.tracker.feed(data))
            if on_feed is not None:
                on_feed(self.tracker)
        return bytes(raw), b"".join(out)

    def run(self, payload: bytes, slot: Slot | None = None) -> bytes:
        """One PASS command: the forwarded bytes, which must equal the bytes read."""
        self.send(payload, slot)
        raw, out = self.collect()
        assert out == raw
        return out

    def query(self, sql: str) -> bytes:
        return self.run(m.encode_command(Command.QUERY, sql.encode()))

    def value(self, sql: str) -> bytes | None:
        """The first column of the first row of a one-result query."""
        [(kind, rows)] = results(self.query(sql), self.caps)
        assert kind == "rows" and isinstance(rows, list)
        return rows[0][0]

    def nothing_more(self, wait: float = 0.2) -> None:
        """No byte arrives beyond what the tracker took as the end of the responses."""
        self.sock.settimeout(wait)
        try:
            with pytest.raises(TimeoutError):
                self.sock.recv(1)
        finally:
            self.sock.settimeout(15)

    def in_sync(self) -> None:
        """The stream is exactly at a command boundary: a PING gets a bare OK with seq 1."""
        out = self.run(b"\x0e")
        assert len(payloads(out)) == 1 and out[3] == 1 and out[4] == 0
        self.nothing_more(0.05)
        assert self.tracker.idle


@pytest.fixture(params=[MODERN, BASE], ids=["deprecate_eof+session_track", "classic"])
def caps(request: pytest.FixtureRequest) -> int:
    return int(request.param)


@pytest.fixture
def client(caps: int) -> Iterator[Client]:
    c = Client(caps)
    if caps == MODERN:
        assert c.caps & Capability.DEPRECATE_EOF and c.caps & Capability.SESSION_TRACK
    yield c
    c.close()


@pytest.fixture
def admin() -> Iterator[Client]:
    c = Client(BASE)
    yield c
    c.close()


def deprecate_eof(c: Client) -> bool:
    return bool(c.caps & Capability.DEPRECATE_EOF)


def execute_with_int(statement_id: int, value: int, flags: int = CursorType.NO_CURSOR) -> bytes:
    """COM_STMT_EXECUTE with one LONGLONG parameter."""
    return (struct.pack("<BIBI", Command.STMT_EXECUTE, statement_id, flags, 1) + b"\x00" + b"\x01"
            + bytes((ColumnType.LONGLONG, 0)) + struct.pack("<q", value))


def binary_rows(response: bytes) -> list[bytes]:
    return [p for _, p in payloads(response) if p[:1] == b"\x00" and len(p) > 1]


# ----------------------------------------------------------------------------- text protocol


def test_multi_statement_with_an_error_in_the_middle(client: Client) -> None:
    out = client.query("SELECT 1; SELECT 'two', NULL; DO 0; SELECT * FROM no_such_table_xyz; SELECT 4")
    got = results(out, client.caps)
    assert [kind for kind, _ in got] == ["rows", "rows", "ok", "err"]
    assert got[0][1] == [[b"1"]] and got[1][1] == [[b"two", None]]
    err = got[3][1]
    assert isinstance(err, m.ErrPacket) and (err.errno, err.sqlstate) == (1146, "42S02")
    assert client.tracker.idle and client.tracker.errors == 1
    client.in_sync()


def test_several_result_sets_and_oks_chain_on_more_results(client: Client) -> None:
    client.query("CREATE TEMPORARY TABLE t_chain (a INT AUTO_INCREMENT PRIMARY KEY, b INT)")
    out = client.query("INSERT INTO t_chain (b) VALUES (1), (2); SELECT COUNT(*) FROM t_chain; "
                       "UPDATE t_chain SET b = b + 1")
    got = results(out, client.caps)
    assert [kind for kind, _ in got] == ["ok", "rows", "ok"] and got[1][1] == [[b"2"]]
    ok = got[2][1]
    assert isinstance(ok, m.OkPacket) and ok.affected_rows == 2 and not ok.status & Status.MORE_RESULTS_EXISTS
    assert client.tracker.affected_rows == 2 and client.tracker.idle
    client.in_sync()


def test_begin_sets_in_trans_and_commit_clears_it(client: Client) -> None:
    client.query("CREATE TEMPORARY TABLE t_tx (id INT AUTO_INCREMENT PRIMARY KEY, v INT)")
    client.query("BEGIN")
    t = client.tracker
    assert t.in_transaction and t.quiet and not t.idle
    client.query("INSERT INTO t_tx (v) VALUES (10), (20)")
    assert (t.affected_rows, t.last_insert_id, t.in_transaction) == (2, 1, True)
    if client.caps & Capability.SESSION_TRACK:
        assert m.StateChange(SessionTrack.SYSTEM_VARIABLES, b"autocommit", b"ON") not in t.changes
    client.query("COMMIT")
    assert not t.in_transaction and t.idle and t.status & Status.AUTOCOMMIT
    client.in_sync()


def test_session_track_reports_set_and_schema(client: Client) -> None:
    t = client.tracker
    t.changes.clear()
    client.query("SET time_zone = '+04:00'")
    client.run(m.encode_command(Command.INIT_DB, b"mysql"))
    client.query("USE test")
    if client.caps & Capability.SESSION_TRACK:
        assert t.changes == [m.StateChange(SessionTrack.SYSTEM_VARIABLES, b"time_zone", b"+04:00"),
                             m.StateChange(SessionTrack.SCHEMA, b"", b"mysql"),
                             m.StateChange(SessionTrack.SCHEMA, b"", b"test")]
    else:
        assert t.changes == []
    assert t.idle


def test_kill_query_ends_a_result_with_an_err_after_the_definitions(client: Client, admin: Client) -> None:
    client.send(m.encode_command(Command.QUERY, b"SELECT SLEEP(10)"))
    time.sleep(0.3)
    admin.query(f"KILL QUERY {int(client.connection_id or 0)}")
    raw, out = client.collect()
    assert out == raw
    assert m.decode_err(payloads(out)[-1][1]).errno == ErrorCode.QUERY_INTERRUPTED
    assert client.tracker.idle and client.tracker.errors == 1
    client.in_sync()


def test_a_killed_connection_just_closes(client: Client, admin: Client) -> None:
    admin.run(m.encode_command(Command.PROCESS_KILL, struct.pack("<I", int(client.connection_id or 0))))
    client.sock.settimeout(5)
    assert client.sock.recv(100) == b""          # MariaDB sends nothing to an idle connection it kills
    assert client.tracker.idle and not client.tracker.terminated


# ----------------------------------------------------------------------------- prepared statements


def test_prepare_execute_close(client: Client) -> None:
    client.query("CREATE TEMPORARY TABLE t_ps (a INT, b VARCHAR(10))")
    client.query("INSERT INTO t_ps VALUES (1, 'x'), (2, 'y'), (3, NULL)")
    t = client.tracker
    client.send(m.encode_stmt_prepare(b"SELECT a, b FROM t_ps WHERE a > ? ORDER BY a"),
                Slot(Command.STMT_PREPARE, stmt_id=4242))
    raw, out = client.collect()
    assert len(t.prepared) == 1
    server_id = t.prepared[0].statement_id
    assert t.prepared == [Prepared(server_id, 1, 2, 4242)]
    assert m.decode_prepare_ok(payloads(out)[0][1]) == m.PrepareOk(4242, 2, 1, 0)
    assert out == raw[:5] + struct.pack("<I", 4242) + raw[9:]         # only the statement id differs
    assert len(payloads(out)) == (3 if deprecate_eof(client) else 5) + 1
    t.prepared.clear()

    out = client.run(execute_with_int(server_id, 1))
    rows = binary_rows(out)
    assert len(rows) == 2 and rows[0][-1:] == b"y"
    assert t.idle

    client.send(m.encode_stmt_command(Command.STMT_CLOSE, server_id))     # no response at all
    assert not t.slots and t.idle
    client.nothing_more()
    client.in_sync()
    out = client.run(execute_with_int(server_id, 1))
    assert m.decode_err(payloads(out)[0][1]).errno == ErrorCode.UNKNOWN_STMT_HANDLER
    client.in_sync()


def test_prepare_error_is_recorded(client: Client) -> None:
    client.send(m.encode_stmt_prepare(b"SELEKT"), Slot(Command.STMT_PREPARE, stmt_id=7))
    raw, out = client.collect()
    assert out == raw and client.tracker.failed_prepares == [7] and not client.tracker.prepared
    client.in_sync()


def test_cursor_fetch(client: Client) -> None:
    client.query("CREATE TEMPORARY TABLE t_cur (a INT)")
    client.query("INSERT INTO t_cur VALUES (1), (2), (3)")
    t = client.tracker
    client.send(m.encode_stmt_prepare(b"SELECT a FROM t_cur WHERE a >= ? ORDER BY a"))
    client.collect()
    server_id = t.prepared.pop().statement_id

    out = client.run(execute_with_int(server_id, 0, CursorType.READ_ONLY))
    assert binary_rows(out) == []                     # the cursor is open: rows come on COM_STMT_FETCH
    assert t.status & Status.CURSOR_EXISTS and t.idle
    client.nothing_more()

    out = client.run(m.encode_stmt_fetch(server_id, 2))
    assert len(binary_rows(out)) == 2 and not t.status & Status.LAST_ROW_SENT
    out = client.run(m.encode_stmt_fetch(server_id, 2))
    assert len(binary_rows(out)) == 1 and t.status & Status.LAST_ROW_SENT
    client.run(m.encode_stmt_command(Command.STMT_RESET, server_id))
    out = client.run(m.encode_stmt_fetch(server_id, 2))
    assert payloads(out)[0][1][0] == 0xFF and t.errors == 1
    client.in_sync()


def test_stored_procedure_results_through_execute(client: Client) -> None:
    name = f"p_wire_{os.getpid()}"
    client.query(f"CREATE OR REPLACE PROCEDURE {name}() BEGIN SELECT 1; SELECT 2, 3; END")
    try:
        client.send(m.encode_stmt_prepare(f"CALL {name}()".encode()))
        client.collect()
        server_id = client.tracker.prepared.pop().statement_id
        out = client.run(struct.pack("<BIBI", Command.STMT_EXECUTE, server_id, 0, 1))
        got = results(out, client.caps, binary=True)
        assert [kind for kind, _ in got] == ["rows", "rows", "ok"]
        assert got[0][1] == [b"\x00\x00\x01\x00\x00\x00"]          # binary row: 0x00, null bitmap, INT 1
        assert client.tracker.idle
        client.in_sync()
    finally:
        client.query(f"DROP PROCEDURE IF EXISTS {name}")


# ----------------------------------------------------------------------------- other commands


def test_ping_init_db_field_list_statistics(client: Client) -> None:
    t = client.tracker
    client.in_sync()
    out = client.run(m.encode_command(Command.INIT_DB, b"test"))
    assert m.decode_ok(payloads(out)[0][1], client.caps).affected_rows == 0
    out = client.run(m.encode_command(Command.INIT_DB, b"no_such_db_xyz"))
    assert m.decode_err(payloads(out)[0][1]).errno == ErrorCode.BAD_DB and t.errors == 1

    client.query("CREATE TEMPORARY TABLE t_fields (a INT DEFAULT 0, b TEXT)")
    out = client.run(m.encode_command(Command.FIELD_LIST, b"t_fields\x00"))
    packets = payloads(out)
    assert [m.decode_column_definition(p).name for _, p in packets[:-1]] == ["a", "b"]
    assert packets[-1][1][0] == 0xFE
    out = client.run(m.encode_command(Command.FIELD_LIST, b"no_such_table_xyz\x00"))
    assert payloads(out)[0][1][0] == 0xFF

    out = client.run(m.encode_command(Command.STATISTICS))
    assert payloads(out)[0][1].startswith(b"Uptime:")
    assert t.idle
    client.in_sync()


def test_set_option_switches_multi_statements(client: Client) -> None:
    out = client.run(m.encode_command(Command.SET_OPTION, struct.pack("<H", SetOption.MULTI_STATEMENTS_OFF)))
    assert payloads(out)[0][1][0] == 0xFE and len(payloads(out)) == 1
    assert [kind for kind, _ in results(client.query("SELECT 1; SELECT 2"), client.caps)] == ["err"]
    client.run(m.encode_command(Command.SET_OPTION, struct.pack("<H", SetOption.MULTI_STATEMENTS_ON)))
    got = results(client.query("SELECT 1; DO 0"), client.caps)
    assert [kind for kind, _ in got] == ["rows", "ok"] and got[0][1] == [[b"1"]]
    client.in_sync()


def test_reset_connection_ends_the_transaction(client: Client) -> None:
    client.query("BEGIN")
    client.query("SET @x = 5")
    assert client.tracker.in_transaction
    client.run(m.encode_command(Command.RESET_CONNECTION))
    assert client.tracker.idle and not client.tracker.in_transaction
    assert client.value("SELECT @x") is None
    client.in_sync()


def test_change_user_reports_the_auth_switch(client: Client) -> None:
    t = client.tracker
    body = b"root\x00" + b"\x00" + b"test\x00" + struct.pack("<H", UTF8MB4_GENERAL_CI) + b"mysql_native_password\x00"
    client.send(m.encode_command(Command.CHANGE_USER, body))
    raw, out = client.collect(until=lambda t: t.auth_request is not None or t.quiet)
    assert out == raw
    if t.auth_request is not None:                       # MariaDB asks for a fresh scramble
        assert t.auth_request.startswith(b"\xfemysql_native_password\x00") and len(t.slots) == 1
        client.sock.sendall(encode_packet(b"", t.seq))
        raw, out = client.collect()
        assert out == raw and payloads(out)[0][1][0] == 0x00
    assert t.idle and t.auth_request is None
    client.in_sync()


# ----------------------------------------------------------------------------- big rows


@pytest.fixture
def big_packets(admin: Client) -> Iterator[None]:
    old = admin.value("SELECT @@GLOBAL.max_allowed_packet")
    admin.query(f"SET GLOBAL max_allowed_packet = {BIG_PACKET}")
    try:
        yield
    finally:
        admin.query(f"SET GLOBAL max_allowed_packet = {int(old or 16777216)}")


@pytest.mark.parametrize("size", [0xFFFFFF - 4, 17 * 1024 * 1024])
def test_rows_bigger_than_16_mib_stream_through(caps: int, big_packets: None, size: int) -> None:
    # 0xFFFFFF - 4: a row payload of exactly 0xFFFFFF bytes (an empty packet follows); 17 MiB: a
    # payload split in two whose first packet starts with 0xFE (an 8-byte length), not an EOF.
    client = Client(caps)
    try:
        held = []
        client.send(m.encode_command(Command.QUERY, f"SELECT REPEAT('x', {size}), 'after'".encode()))
        raw, out = client.collect(on_feed=lambda t: held.append(t.buffered))
        assert out == raw and max(held) < 64             # streamed, never held
        packets = payloads(out)
        rows = [m.decode_text_row(p) for _, p in packets if len(p) > 1000]
        assert len(rows) == 1 and len(rows[0][0] or b"") == size and rows[0][1] == b"after"
        assert client.tracker.idle
        client.in_sync()
    finally:
        client.close()


# ----------------------------------------------------------------------------- LOCAL INFILE


def test_local_infile_request_is_detected_and_answered(client: Client) -> None:
    client.query("CREATE TEMPORARY TABLE t_load (a INT, b VARCHAR(10))")
    t = client.tracker
    client.send(m.encode_command(Command.QUERY, b"LOAD DATA LOCAL INFILE '/tmp/wire.csv' INTO TABLE t_load"))
    raw, out = client.collect(until=lambda t: t.infile is not None)
    assert out == raw and payloads(out) == [(1, b"\xfb/tmp/wire.csv")] and t.infile == b"/tmp/wire.csv"
    assert not t.quiet
    data, seq = encode_packets(b"1\tx\n2\ty\n", t.seq)
    client.sock.sendall(data + encode_packet(b"", seq))
    raw, out = client.collect()
    assert out == raw and t.infile is None and t.affected_rows == 2 and t.idle
    assert client.value("SELECT COUNT(*) FROM t_load") == b"2"
    client.in_sync()


def test_local_infile_refused_by_the_proxy(client: Client) -> None:
    client.query("CREATE TEMPORARY TABLE t_load2 (a INT)")
    t = client.tracker
    t.allow_local_infile = False
    client.send(m.encode_command(Command.QUERY, b"LOAD DATA LOCAL INFILE '/etc/passwd' INTO TABLE t_load2"))
    raw, out = client.collect(until=lambda t: bool(t.infile_reply))
    assert payloads(raw) == [(1, b"\xfb/etc/passwd")]
    assert payloads(out) == [(1, m.encode_err(ErrorCode.NOT_ALLOWED_COMMAND, payloads(out)[0][1][9:].decode()))]
    assert m.decode_err(payloads(out)[0][1]).errno == ErrorCode.NOT_ALLOWED_COMMAND
    client.sock.sendall(t.take_infile_reply())            # the empty file; the server's OK goes nowhere
    raw, out = client.collect()
    assert out == b"" and raw[4] == 0x00 and t.idle
    assert client.value("SELECT COUNT(*) FROM t_load2") == b"0"
    client.in_sync()


# ----------------------------------------------------------------------------- hidden commands


def test_hidden_command_pipelined_with_a_visible_one(client: Client) -> None:
    t = client.tracker
    direct = client.query("SELECT 1, 'x'")
    t.changes.clear()
    hidden = m.encode_command(Command.QUERY, b"SET time_zone = '+05:00'")
    visible = m.encode_command(Command.QUERY, b"SELECT 1, 'x'")
    t.push(Slot(Command.QUERY, DROP_ALL))
    t.push(Slot(Command.QUERY, PASS))
    client.sock.sendall(encode_packet(hidden, 0) + encode_packet(visible, 0))     # one write, back to back
    raw, out = client.collect()
    assert out == direct and len(raw) > len(direct)
    if client.caps & Capability.SESSION_TRACK:
        assert t.changes == [m.StateChange(SessionTrack.SYSTEM_VARIABLES, b"time_zone", b"+05:00")]
    assert t.idle

    # A failing hidden command, and a probe whose rows are kept, around a visible one.
    t.push(Slot(Command.QUERY, DROP_ALL))
    t.push(Slot(Command.QUERY, PASS))
    t.push(Slot(Command.QUERY, CAPTURE))
    client.sock.sendall(encode_packet(m.encode_command(Command.QUERY, b"SELECT * FROM no_such_table_xyz"), 0)
                        + encode_packet(visible, 0)
                        + encode_packet(m.encode_command(Command.QUERY, b"SELECT @@time_zone, NULL"), 0))
    raw, out = client.collect()
    assert out == direct and t.errors == 1
    assert [m.decode_text_row(r) for r in t.captured] == [[b"+05:00", None]]
    client.in_sync()
