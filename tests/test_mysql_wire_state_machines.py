"""Hypothesis state machines of the MySQL codecs: packet framing (the 16 MiB split, at a small size),
the server-side ResponseTracker, and the client login (handshake, auth switch) against models.

Properties: payloads round-trip through any chunking, the forwarded bytes are exactly the model's,
slots end empty with the right status, buffers stay bounded, and malformed input raises only
ProtocolViolation (ResponseTracker and ClientLogin: nothing at all).
"""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)

from proxy.engines.mysql import auth
from proxy.engines.mysql.client_login import ClientLogin
from proxy.engines.mysql.wire import messages as m
from proxy.engines.mysql.wire import packets
from proxy.engines.mysql.wire.codes import MAX_PACKET_PAYLOAD, Capability, Command, Status
from proxy.engines.mysql.wire.handshake import AuthSwitchRequest, HandshakeResponse41, auth_switch_scramble
from proxy.engines.mysql.wire.packets import PacketReader, encode_packets
from proxy.engines.mysql.wire.responses import CAPTURE, DROP_ALL, PASS, SYNTH, ResponseTracker, Slot
from proxy.errors import ProtocolViolation

MACHINE = settings(max_examples=60, stateful_step_count=30, deadline=None,
                   suppress_health_check=[HealthCheck.too_slow])
SMALL_MAX = 7   # the 16 MiB split, scaled down: payloads of 7+ bytes span several packets

# ------------------------------------------------------------------------------ framing


class PacketReaderMachine(RuleBasedStateMachine):
    """Payloads framed (split at SMALL_MAX), fed in arbitrary pieces, reassembled in order."""

    def __init__(self) -> None:
        super().__init__()
        self._new_reader()

    def _new_reader(self) -> None:
        self.reader = PacketReader(max_payload=100)
        self.unsent = b""
        self.sent: list[tuple[int, bytes, int]] = []   # (first seq, payload, next seq)
        self.read = 0
        self.fed = self.consumed = 0

    @rule(payload=st.binary(max_size=40) | st.integers(0, 6).map(lambda k: bytes(SMALL_MAX * k)),
          seq=st.integers(0, 255))
    def write(self, payload: bytes, seq: int) -> None:
        data, next_seq = encode_packets(payload, seq)
        if len(payload) >= SMALL_MAX:
            assert len(data) == len(payload) + 4 * (len(payload) // SMALL_MAX + 1)
        self.unsent += data
        self.sent.append((seq, payload, next_seq))

    @precondition(lambda self: self.unsent)
    @rule(cut=st.integers(1, 60))
    def feed(self, cut: int) -> None:
        chunk, self.unsent = self.unsent[:cut], self.unsent[cut:]
        self.reader.feed(chunk)
        self.fed += len(chunk)

    @rule()
    def drain(self) -> None:
        while (got := self.reader.next()) is not None:
            seq, payload, next_seq = self.sent[self.read]
            assert got == (seq, payload)
            assert self.reader.next_seq == next_seq
            self.read += 1
            self.consumed += len(encode_packets(payload, seq)[0])

    @rule(seq=st.integers(0, 255), skip=st.integers(2, 255))
    def out_of_order(self, seq: int, skip: int) -> None:
        """A split payload whose second packet skips sequence ids: refused."""
        self.drain()
        if self.reader.buffered or self.unsent:
            return
        self.reader.feed(packets.packet_header(SMALL_MAX, seq) + bytes(SMALL_MAX)
                         + packets.packet_header(1, seq + skip) + b"x")
        with pytest.raises(ProtocolViolation):
            self.reader.next()
        self._new_reader()

    @rule(extra=st.integers(1, 30))
    def too_large(self, extra: int) -> None:
        """Over max_payload: refused from the headers, before the last of its bytes arrive."""
        self.drain()
        if self.reader.buffered or self.unsent:
            return
        self.reader.feed(encode_packets(bytes(100 + extra), 0)[0][:-2])
        with pytest.raises(ProtocolViolation):
            self.reader.next()
        self._new_reader()

    @invariant()
    def bounded(self) -> None:
        assert self.reader.buffered == self.fed - self.consumed
        assert self.reader._pos <= 65536 + 200


def test_packet_reader_machine(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(packets, "MAX_PACKET_PAYLOAD", SMALL_MAX)
    run_state_machine_as_test(PacketReaderMachine, settings=MACHINE)


def test_a_real_16_mib_payload_round_trips_in_pieces() -> None:
    payload = bytes(range(256)) * (MAX_PACKET_PAYLOAD // 256 + 2)   # just over 0xFFFFFF
    data, next_seq = encode_packets(payload, 250)
    reader = PacketReader()
    for pos in range(0, len(data), 3_000_000):
        reader.feed(data[pos:pos + 3_000_000])
    assert reader.next() == (250, payload) and reader.next_seq == next_seq == 252


# ------------------------------------------------------------------------------ ResponseTracker

P41 = int(Capability.PROTOCOL_41)
AC = int(Status.AUTOCOMMIT)


def _col(name: str) -> bytes:
    return m.encode_column_definition(m.Column(name))


class MysqlResponseTrackerMachine(RuleBasedStateMachine):
    """Commands push slots, the server's responses arrive in random pieces; the model says what the
    client must get and what the tracker learns (status, prepared statements, captured rows)."""

    @initialize(deprecate_eof=st.booleans(), session_track=st.booleans())
    def start(self, deprecate_eof: bool, session_track: bool) -> None:
        self.caps = P41 | (Capability.DEPRECATE_EOF if deprecate_eof else 0) | (
            Capability.SESSION_TRACK if session_track else 0)
        self.tracker = ResponseTracker(self.caps)
        self.server = b""
        self.expected = b""
        self.out = b""
        self.status = AC
        self.captured: list[bytes] = []
        self.prepared: list[tuple[int, int]] = []

    def _response(self, payloads: list[bytes], action: int) -> None:
        data = b""
        seq = 1
        for payload in payloads:
            framed, seq = encode_packets(payload, seq)
            data += framed
        self.server += data
        if action == PASS:
            self.expected += data

    def _push(self, slot: Slot) -> None:
        self.out += self.tracker.push(slot)

    @rule(action=st.sampled_from([PASS, DROP_ALL]), in_trans=st.booleans(), affected=st.integers(0, 300))
    def ok_command(self, action: int, in_trans: bool, affected: int) -> None:
        self.status = AC | (Status.IN_TRANS if in_trans else 0)
        self._push(Slot(Command.QUERY, action))
        self._response([m.encode_ok(self.caps, affected, 0, self.status)], action)

    @rule(action=st.sampled_from([PASS, DROP_ALL]))
    def error(self, action: int) -> None:
        self._push(Slot(Command.QUERY, action))
        self._response([m.encode_err(1146, "Table 'app.nope' doesn't exist", "42S02")], action)

    @rule(action=st.sampled_from([PASS, DROP_ALL, CAPTURE]), columns=st.integers(1, 3),
          rows=st.lists(st.integers(0, 2000), max_size=4), more=st.booleans())
    def result_set(self, action: int, columns: int, rows: list[int], more: bool) -> None:
        self._push(Slot(Command.QUERY, action))
        payloads: list[bytes] = []
        sets = 2 if more else 1
        for i in range(sets):
            status = self.status | (Status.MORE_RESULTS_EXISTS if i < sets - 1 else 0)
            payloads += [m.lenenc_int(columns)] + [_col(f"c{n}") for n in range(columns)]
            if not self.caps & Capability.DEPRECATE_EOF:
                payloads.append(m.encode_eof(0, self.status))
            row_payloads = [m.encode_text_row([b"v" * size] * columns) for size in rows]
            payloads += row_payloads
            if action == CAPTURE:
                self.captured += row_payloads
            payloads.append(m.encode_end_of_rows(self.caps, status))
        self._response(payloads, action)

    @rule(params=st.integers(0, 2), columns=st.integers(0, 2), server_id=st.integers(1, 1000),
          client_id=st.integers(1, 1000))
    def prepare(self, params: int, columns: int, server_id: int, client_id: int) -> None:
        self._push(Slot(Command.STMT_PREPARE, PASS, stmt_id=client_id))
        payloads = [m.encode_prepare_ok(server_id, columns, params)]
        for count in (params, columns):
            if count:
                payloads += [_col("?") for _ in range(count)]
                if not self.caps & Capability.DEPRECATE_EOF:
                    payloads.append(m.encode_eof(0, self.status))
        framed = b""
        seq = 1
        for payload in payloads:
            data, seq = encode_packets(payload, seq)
            framed += data
        self.server += framed
        # The client sees its own statement id in the PREPARE_OK (bytes 5..8 of the first packet).
        self.expected += framed[:5] + client_id.to_bytes(4, "little") + framed[9:]
        self.prepared.append((server_id, client_id))

    @rule(payload=st.binary(min_size=1, max_size=12))
    def synthesized(self, payload: bytes) -> None:
        framed = encode_packets(payload, 1)[0]
        self._push(Slot(Command.QUERY, SYNTH, framed))
        self.expected += framed

    @rule()
    def no_response_commands(self) -> None:
        for command in (Command.STMT_CLOSE, Command.STMT_SEND_LONG_DATA):
            self._push(Slot(command))

    @precondition(lambda self: self.server)
    @rule(cut=st.integers(1, 3000))
    def deliver(self, cut: int) -> None:
        chunk, self.server = self.server[:cut], self.server[cut:]
        self.out += self.tracker.feed(chunk)
        assert self.expected.startswith(self.out)
        assert not self.tracker.terminated, self.tracker.violation

    @invariant()
    def bounded(self) -> None:
        if hasattr(self, "tracker"):
            assert self.tracker.buffered <= 3 * 2003 + 8   # a header, a control packet, or one captured row

    def teardown(self) -> None:
        if not hasattr(self, "tracker"):
            return
        t = self.tracker
        self.out += t.feed(self.server)
        assert not t.terminated, t.violation
        assert self.out == self.expected
        assert not t.slots and t.quiet and t.status == self.status
        assert t.captured == self.captured
        assert [(p.statement_id, p.client_id) for p in t.prepared] == self.prepared


def test_mysql_response_tracker_machine() -> None:
    run_state_machine_as_test(MysqlResponseTrackerMachine, settings=MACHINE)


@settings(max_examples=3, deadline=None)
@given(cut=st.integers(200_000, 6_000_000), action=st.sampled_from([PASS, DROP_ALL]))
def test_a_row_split_at_16_mib_streams_through(cut: int, action: int) -> None:
    caps = P41 | Capability.DEPRECATE_EOF
    row = m.encode_text_row([b"x" * (MAX_PACKET_PAYLOAD + 100)])
    payloads = [m.lenenc_int(1), _col("c"), row, m.encode_end_of_rows(caps, AC)]
    stream = b""
    seq = 1
    for payload in payloads:
        data, seq = encode_packets(payload, seq)
        stream += data
    tracker = ResponseTracker(caps)
    tracker.push(Slot(Command.QUERY, action))
    out = [tracker.feed(stream[pos:pos + cut]) for pos in range(0, len(stream), cut)]
    assert tracker.buffered < 1000 and not tracker.slots and not tracker.terminated
    assert sum(map(len, out)) == (len(stream) if action == PASS else 0)


@settings(max_examples=300, deadline=None)
@given(commands=st.lists(st.sampled_from([Command.QUERY, Command.STMT_PREPARE, Command.STMT_EXECUTE, Command.PING,
                                          Command.FIELD_LIST, Command.STMT_FETCH, Command.CHANGE_USER,
                                          Command.STATISTICS]), max_size=4),
       stream=st.lists(st.builds(lambda p, s: encode_packets(p, s)[0], st.binary(max_size=20), st.integers(0, 255))
                       | st.binary(max_size=6), max_size=8).map(b"".join),
       deprecate_eof=st.booleans(), data=st.data())
def test_mysql_response_tracker_never_raises(commands: list[int], stream: bytes, deprecate_eof: bool,
                                             data: st.DataObject) -> None:
    caps = P41 | (Capability.DEPRECATE_EOF if deprecate_eof else 0) | Capability.SESSION_TRACK
    results = []
    for whole in (True, False):
        tracker = ResponseTracker(caps)
        for command in commands:
            tracker.push(Slot(command))
        out = b""
        if whole:
            out = tracker.feed(stream)
        else:
            pos = 0
            while pos < len(stream):
                cut = data.draw(st.integers(pos + 1, len(stream)))
                out += tracker.feed(stream[pos:cut])
                pos = cut
        results.append((out, tracker.terminated, tracker.status, len(tracker.slots)))
    assert results[0] == results[1]


# ------------------------------------------------------------------------------ client login

SCRAMBLE = b"abcdefghijklmnopqrst"
PASSWORD = b"app-pass"
_VERIFIERS = auth.derive_verifiers(PASSWORD.decode())


def _token(plugin: str, password: bytes, scramble: bytes) -> bytes:
    if plugin == auth.CACHING_SHA2_PASSWORD:
        return auth.caching_sha2_token(password, scramble)
    if plugin == auth.CLEAR_PASSWORD:
        return password + b"\x00"
    return auth.native_password_token(password, scramble)


@settings(max_examples=120, deadline=None)
@given(method=st.sampled_from([auth.NATIVE_PASSWORD, auth.CACHING_SHA2_PASSWORD]),
       client_plugin=st.sampled_from([auth.NATIVE_PASSWORD, auth.CACHING_SHA2_PASSWORD, auth.CLEAR_PASSWORD]),
       user=st.sampled_from(["app", "nobody"]), right=st.booleans(), tls=st.booleans(),
       attributes=st.dictionaries(st.text(min_size=1, max_size=5), st.text(max_size=5), max_size=3))
def test_login_model(method: str, client_plugin: str, user: str, right: bool, tls: bool,
                     attributes: dict[str, str]) -> None:
    """A client as libmariadb behaves (answers an auth switch with the plugin asked for): logged in
    exactly when the user exists and the password is right; every reply has the next sequence id."""
    login = ClientLogin(method, 5, "10.11-dbproxy", 0, lambda name: _VERIFIERS if name == "app" else None,
                        "127.0.0.1", tls=tls, scramble=SCRAMBLE)
    login.greeting()
    password = PASSWORD if right else b"wrong"
    caps = int(Capability.PROTOCOL_41 | Capability.SECURE_CONNECTION | Capability.PLUGIN_AUTH
               | Capability.CONNECT_ATTRS | Capability.CONNECT_WITH_DB)
    response = HandshakeResponse41(caps, user=user, auth_response=_token(client_plugin, password, SCRAMBLE),
                                   database="app", auth_plugin=client_plugin, attributes=attributes)
    assert HandshakeResponse41.decode(response.encode()) == response   # round trip
    seq, payload = 1, response.encode()
    for _ in range(4):
        replies = login.receive(seq, payload)
        assert replies and [s for s, _ in replies] == list(range(seq + 1, seq + 1 + len(replies)))
        if login.done or login.failed:
            break
        last_seq, last = replies[-1]
        if last[0] == 0xFE:   # AuthSwitchRequest: answer with the plugin asked for
            switch = AuthSwitchRequest.decode(last)
            payload = _token(switch.plugin, password, auth_switch_scramble(switch.data, 20))
        else:                 # caching_sha2 full authentication: cleartext over TLS
            payload = password + b"\x00"
        seq = last_seq + 1
    assert login.done == (user == "app" and right), (login.failed_reason, login.done)
    assert login.failed != login.done
    if login.done:
        assert login.user == "app" and login.database == "app"


@settings(max_examples=300, deadline=None)
@given(packets_=st.lists(st.binary(max_size=120), min_size=1, max_size=4), tls=st.booleans())
def test_login_never_raises_on_garbage(packets_: list[bytes], tls: bool) -> None:
    login = ClientLogin(auth.CACHING_SHA2_PASSWORD, 5, "10.11-dbproxy", int(Capability.SSL),
                        lambda name: _VERIFIERS if name == "app" else None, "127.0.0.1", tls=tls)
    login.greeting()
    seq = 1
    for payload in packets_:
        if login.done or login.failed or login.wants_tls:
            break
        replies = login.receive(seq, payload)
        seq = replies[-1][0] + 1 if replies else seq
