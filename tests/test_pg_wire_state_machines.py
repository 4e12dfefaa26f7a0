"""Hypothesis state machines of the PostgreSQL codecs: client-side framing, the server-side ResponseTracker,
the StatementRewriter (with answer_alone) and the split hold, against models of what each must do.

Every machine feeds bytes cut at random points; the properties: any chunking gives what one chunk
gives, the forwarded bytes are exactly the model's, slots and buffers end empty, memory stays bounded,
and malformed input raises only ProtocolViolation (ResponseTracker: nothing at all).
"""

from __future__ import annotations

import struct
from collections import OrderedDict

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)

from proxy.engines.postgres.classify import PgClassifier
from proxy.engines.postgres.rewrite import StatementRewriter
from proxy.engines.postgres.split_hold import HIDDEN_SYNC, SplitHold
from proxy.engines.postgres.startup import startup_request
from proxy.engines.postgres.statements import StatementNames, decode_parse
from proxy.engines.postgres.wire import messages as m
from proxy.engines.postgres.wire import responses as r
from proxy.engines.postgres.wire.framing import (
    CancelRequest,
    GSSENCRequest,
    MessageReader,
    SSLRequest,
    StartupMessage,
    parse_startup_packet,
)
from proxy.errors import ProtocolViolation

MACHINE = settings(max_examples=60, stateful_step_count=30, deadline=None,
                   suppress_health_check=[HealthCheck.too_slow])

# ------------------------------------------------------------------------------ client side: framing


class MessageReaderMachine(RuleBasedStateMachine):
    """Typed messages written, fed in arbitrary pieces, read back in order; a bad header is refused."""

    def __init__(self) -> None:
        super().__init__()
        self.reader = MessageReader(max_length=70_000)
        self.unsent = b""
        self.sent_messages: list[tuple[int, bytes]] = []
        self.read: list[tuple[int, bytes]] = []
        self.fed = 0
        self.consumed = 0

    @rule(kind=st.integers(0x20, 0x7E), body=st.binary(max_size=300) | st.integers(60_000, 69_996).map(bytes))
    def write(self, kind: int, body: bytes) -> None:
        self.unsent += m.message(bytes((kind,)), body)
        self.sent_messages.append((kind, body))

    @precondition(lambda self: self.unsent)
    @rule(cut=st.integers(1, 80_000))
    def feed(self, cut: int) -> None:
        chunk, self.unsent = self.unsent[:cut], self.unsent[cut:]
        self.reader.feed(chunk)
        self.fed += len(chunk)

    @rule()
    def drain(self) -> None:
        while (msg := self.reader.next()) is not None:
            self.read.append(msg)
            self.consumed += 5 + len(msg[1])
        assert self.read == self.sent_messages[:len(self.read)]

    @rule(length=st.sampled_from([0, 1, 3, 70_001, 2**31, 2**32 - 1]))
    def garbage_header(self, length: int) -> None:
        self.drain()
        if self.reader.buffered or self.unsent:
            return   # the bad header would not be at a message boundary
        self.reader.feed(b"Q" + struct.pack("!I", length))
        with pytest.raises(ProtocolViolation):
            self.reader.next()
        # The connection is closed; a new client starts from scratch.
        self.reader = MessageReader(max_length=70_000)
        self.sent_messages, self.read = [], []
        self.fed = self.consumed = 0

    @rule()
    def take_rest(self) -> None:
        rest = self.reader.take_rest()
        assert len(rest) == self.fed - self.consumed
        # What was taken is given back to a fresh reader: nothing is lost or duplicated.
        self.reader = MessageReader(max_length=70_000)
        self.reader.feed(rest)

    @invariant()
    def bounded(self) -> None:
        assert self.reader.buffered == self.fed - self.consumed
        # Consumed bytes are compacted away once past 64 KiB (each moved at most once).
        assert self.reader._pos <= 65536 + 70_000


def test_message_reader_machine() -> None:
    run_state_machine_as_test(MessageReaderMachine, settings=MACHINE)


_names = st.text(st.characters(min_codepoint=0x21, max_codepoint=0x2FF), min_size=1, max_size=12)
_values = st.text(st.characters(min_codepoint=0x20, max_codepoint=0x2FF, blacklist_characters="\x00"), max_size=20)
_startup_packets = st.one_of(
    st.builds(lambda params: m.startup_message({"user": "u", **params}), st.dictionaries(_names, _values, max_size=5)),
    st.just(m.ssl_request()),
    st.just(struct.pack("!ii", 8, 80877104)),
    st.builds(m.cancel_request, st.integers(-(2**31), 2**31 - 1), st.integers(0, 2**32 - 1)),
)


@settings(max_examples=150, deadline=None)
@given(st.lists(_startup_packets, min_size=1, max_size=4), st.data())
def test_startup_packets_parse_the_same_at_every_prefix(packets: list[bytes], data: st.DataObject) -> None:
    """A prefix of a valid packet asks for more bytes (never an error); the whole gives the event."""
    stream = b"".join(packets)
    events = []
    pos = 0
    while pos < len(stream):
        cut = data.draw(st.integers(pos, len(stream)), label="cut")
        event, used = parse_startup_packet(stream[pos:cut])
        if event is None:
            assert used == 0
            event, used = parse_startup_packet(stream[pos:])
        assert event is not None
        events.append(event)
        pos += used
    assert len(events) == len(packets)
    for event, packet in zip(events, packets, strict=True):
        expected = {m.ssl_request(): SSLRequest, struct.pack("!ii", 8, 80877104): GSSENCRequest}.get(packet)
        if expected is not None:
            assert isinstance(event, expected)
        elif len(packet) == 16 and packet[4:8] == struct.pack("!i", 80877102):
            assert isinstance(event, CancelRequest)
        else:
            assert isinstance(event, StartupMessage) and event.params["user"] == "u"
            assert m.startup_message(event.params) == packet   # round trip
            assert startup_request(packet, event.params).user == "u"


# ------------------------------------------------------------------------------ server side: ResponseTracker


def _row(size: int) -> bytes:
    return m.message(b"D", b"\x00\x01" + struct.pack("!i", size) + b"r" * size)


ROW_DESCRIPTION = m.message(b"T", b"\x00\x01a\x00" + bytes(18))
NOTICE = m.notice_response("hello")


def _ready(status: bytes) -> bytes:
    return m.ready_for_query(status)


class ResponseTrackerMachine(RuleBasedStateMachine):
    """Client messages push slots, the server's answers arrive in random pieces; the model says what
    the client must get (forwarded, dropped, synthesized in its turn) and what the tracker records."""

    def __init__(self) -> None:
        super().__init__()
        self.tracker = r.ResponseTracker()
        self.server = b""              # server bytes not fed yet
        self.expected = b""            # everything the client must get, in order
        self.out = b""                 # what it got
        self.status = b"I"             # the model's last ReadyForQuery status
        self.captured: list[bytes] = []
        self.parameters: list[tuple[bytes, bytes]] = []
        self.failed: list[bytes] = []
        self.open_batch = False        # an extended batch failed, its Sync not sent yet

    def _push(self, slot: r.Slot) -> None:
        self.out += self.tracker.push(slot)

    @precondition(lambda self: not self.open_batch)
    @rule(action=st.sampled_from([r.PASS, r.DROP_ALL, r.CAPTURE]), rows=st.lists(st.integers(0, 3000), max_size=3),
          status=st.sampled_from([b"I", b"T"]), notice=st.booleans(), parameter=st.booleans())
    def simple_query(self, action: int, rows: list[int], status: bytes, notice: bool, parameter: bool) -> None:
        self._push(r.Slot(r.QUERY, action))
        body = ROW_DESCRIPTION + (NOTICE if notice else b"") + b"".join(_row(n) for n in rows)
        if parameter:
            body += m.parameter_status("application_name", "x")
            self.parameters.append((b"application_name", b"x"))
        response = body + m.message(b"C", b"SELECT 1\x00") + _ready(status)
        self.server += response
        if action == r.PASS:
            self.expected += response
        elif action == r.CAPTURE:
            self.captured += [_row(n)[5:] for n in rows]
        self.status = status

    @precondition(lambda self: not self.open_batch)
    @rule(rows=st.lists(st.integers(0, 3000), max_size=3), hidden_parse=st.booleans(), named=st.booleans())
    def extended_batch(self, rows: list[int], hidden_parse: bool, named: bool) -> None:
        name = b"dbproxy_9" if named else b""
        response = b""
        if hidden_parse:   # a Parse the proxy injects (re-prepare): its ParseComplete is dropped
            self._push(r.Slot(r.PARSE, r.DROP, b"dbproxy_7"))
            self.server += m.PARSE_COMPLETE
        self._push(r.Slot(r.PARSE, r.PASS, name))
        self._push(r.Slot(r.BIND, r.PASS, name))
        self._push(r.Slot(r.DESCRIBE))
        self._push(r.Slot(r.EXECUTE))
        self._push(r.Slot(r.SYNC))
        response = (m.PARSE_COMPLETE + m.BIND_COMPLETE + ROW_DESCRIPTION + b"".join(_row(n) for n in rows)
                    + m.message(b"C", b"SELECT 1\x00") + _ready(self.status))
        self.server += response
        self.expected += response

    @precondition(lambda self: not self.open_batch)
    @rule(synced=st.booleans())
    def failing_batch(self, synced: bool) -> None:
        """Parse fails: the server skips Bind/Execute; the tracker must skip their slots until Sync."""
        self._push(r.Slot(r.PARSE, r.PASS, b"dbproxy_8"))
        error = m.error_response("42601", "syntax error")
        self.server += error
        self.expected += error
        self.failed.append(b"dbproxy_8")
        if synced:
            self._end_batch()
        else:
            self.open_batch = True

    @precondition(lambda self: self.open_batch and not self.server)
    @rule()
    def late_sync(self) -> None:
        """Bind / Execute / Sync pushed after the error already arrived (pipelined client, slow network)."""
        self._end_batch()
        self.open_batch = False

    def _end_batch(self) -> None:
        self._push(r.Slot(r.BIND, r.PASS, b"dbproxy_8"))
        self._push(r.Slot(r.EXECUTE))
        self._push(r.Slot(r.SYNC))
        self.server += _ready(self.status)
        self.expected += _ready(self.status)

    @precondition(lambda self: not self.open_batch)
    @rule(payload=st.binary(min_size=1, max_size=20))
    def synthesized(self, payload: bytes) -> None:
        """An answer the proxy gives itself: due after every response before it."""
        self._push(r.Slot(r.SYNTH, payload=payload))
        self.expected += payload

    @precondition(lambda self: not self.open_batch)
    @rule()
    def hidden_set(self) -> None:
        """SET replay the proxy injects: nothing of it reaches the client, errors included."""
        self._push(r.Slot(r.QUERY, r.DROP_ALL))
        self.server += m.error_response("22023", "bad value") + _ready(self.status)

    @precondition(lambda self: self.server)
    @rule(cut=st.integers(1, 4000))
    def deliver(self, cut: int) -> None:
        chunk, self.server = self.server[:cut], self.server[cut:]
        self.out += self.tracker.feed(chunk)
        assert self.expected.startswith(self.out)

    @invariant()
    def buffers_bounded(self) -> None:
        # Only a header or a small control message is held back; rows stream through.
        assert len(self.tracker._buf) < 5 or self.tracker._buf[:1] in (b"Z", b"E", b"S", b"1", b"2", b"3", b"C",
                                                                      b"T", b"n", b"D")
        assert len(self.tracker._buf) <= 3100

    def teardown(self) -> None:
        self.out += self.tracker.feed(self.server)
        self.server = b""
        assert self.out == self.expected
        t = self.tracker
        if not self.open_batch:
            assert not t.slots and t.quiet and t.status == self.status and not t._aborted
            assert t.idle == (self.status == b"I")
        assert t.captured == self.captured
        assert t.parameters == self.parameters
        assert t.failed_statements == self.failed
        assert not t.terminated


def test_response_tracker_machine() -> None:
    run_state_machine_as_test(ResponseTrackerMachine, settings=MACHINE)


_server_messages = st.one_of(
    st.builds(lambda k, b: m.message(bytes((k,)), b), st.sampled_from(b"ZESDTCn123stNAIcdGHW"), st.binary(max_size=12)),
    st.builds(lambda k, n: bytes((k,)) + struct.pack("!I", n), st.sampled_from(b"ZESD"), st.integers(0, 2**32 - 1)),
    st.binary(max_size=8),
)


@settings(max_examples=300, deadline=None)
@given(slots=st.lists(st.tuples(st.sampled_from([r.QUERY, r.SYNC, r.PARSE, r.BIND, r.CLOSE, r.DESCRIBE, r.EXECUTE,
                                                 r.SYNTH]),
                                st.sampled_from([r.PASS, r.DROP, r.DROP_ALL, r.CAPTURE]), st.binary(max_size=3)),
                      max_size=6),
       stream=st.lists(_server_messages, max_size=10).map(b"".join), data=st.data())
def test_response_tracker_never_raises_on_garbage(slots: list[tuple[int, int, bytes]], stream: bytes,
                                                  data: st.DataObject) -> None:
    """Whatever a (broken) server sends, feed() raises nothing and chunking does not change the outcome."""
    outcomes = []
    for attempt in range(2):
        tracker = r.ResponseTracker()
        out = b"".join(tracker.push(r.Slot(kind, action, payload)) for kind, action, payload in slots)
        if attempt == 0:
            out += tracker.feed(stream)
        else:
            pos = 0
            while pos < len(stream):
                cut = data.draw(st.integers(pos + 1, len(stream)))
                out += tracker.feed(stream[pos:cut])
                pos = cut
        outcomes.append((out, tracker.status, len(tracker.slots), tracker.terminated, tracker.captured))
    assert outcomes[0] == outcomes[1]


# ------------------------------------------------------------------------------ StatementRewriter


SCOPE = ("app", "app")
QUERIES = [b"SELECT $1", b"SELECT 2", b"INSERT INTO t VALUES ($1)", b"SELECT * FROM t"]


def _describe_reply(server_name: bytes) -> bytes:
    return m.message(b"t", b"\x00\x00") + m.message(b"T", b"\x00\x01" + server_name + b"\x00" + bytes(18))


class FakeServer:
    """A PostgreSQL server's prepared statements and its replies to the messages the proxy sends it."""

    def __init__(self) -> None:
        self.prepared: dict[bytes, bytes] = {}   # server name -> query
        self.reader = MessageReader()

    def receive(self, data: bytes) -> bytes:
        self.reader.feed(data)
        out = b""
        while (msg := self.reader.next()) is not None:
            kind, body = msg
            if kind == 0x50:   # Parse
                parse = decode_parse(body)
                if parse.name:
                    assert parse.name not in self.prepared, "Parse of a statement the server already has"
                    self.prepared[parse.name] = parse.query
                out += m.PARSE_COMPLETE
            elif kind == 0x42:   # Bind
                name = body[body.index(b"\x00") + 1:body.index(b"\x00", body.index(b"\x00") + 1)]
                assert not name or name in self.prepared, f"Bind of {name!r} the server does not have"
                out += m.BIND_COMPLETE
            elif kind == 0x44:   # Describe
                name = body[1:-1]
                assert body[:1] == b"P" or name in self.prepared, f"Describe of {name!r} the server does not have"
                out += _describe_reply(name) if body[:1] == b"S" else m.message(b"n")
            elif kind == 0x43:   # Close
                self.prepared.pop(body[1:-1], None)
                out += m.CLOSE_COMPLETE
            elif kind == 0x53:   # Sync
                out += _ready(b"I")
        return out


class StatementRewriterMachine(RuleBasedStateMachine):
    """A client's named statements rewritten onto changing server connections (transaction pooling).

    The client must see exactly the replies a server of its own would have sent, and every server
    must only ever be asked to bind statements it has, under names that run the client's text."""

    def __init__(self) -> None:
        super().__init__()
        self.names = StatementNames()
        self.rewriter = StatementRewriter(self.names, limit=3, scope=SCOPE)
        self.servers = [FakeServer(), FakeServer()]
        self.caches: list[OrderedDict[bytes, None]] = [OrderedDict(), OrderedDict()]
        self.trackers = [r.ResponseTracker(), r.ResponseTracker()]
        self.current = 0
        self.client_statements: dict[bytes, bytes] = {}   # client name -> query, as the client sees it
        self.batch: list[tuple[int, bytes]] = []
        self.expected = b""

    def _send(self, kind: int, body: bytes) -> None:
        """One client message through the rewriter, as PgClientSession._forward does."""
        i = self.current
        prepared, tracker, rw = self.caches[i], self.trackers[i], self.rewriter
        if kind == 0x50:
            sent = rw.parse(decode_parse(body), body, prepared, tracker)
        elif kind == 0x42:
            sent = rw.bind(body, prepared, tracker)
            if sent is None:
                tracker.push(r.Slot(r.BIND))
                sent = m.message(b"B", body)
        elif kind == 0x44:
            sent = rw.describe(body, prepared, tracker)
            if sent is None:
                tracker.push(r.Slot(r.DESCRIBE))
                sent = m.message(b"D", body)
        elif kind == 0x43:
            sent = b"" if rw.close(body, tracker) else m.message(b"C", body)
            if sent:
                tracker.push(r.Slot(r.CLOSE))
        else:
            tracker.push(r.Slot(r.SYNC))
            sent = m.sync()
        self.out += rw.take_replies()
        self.out += tracker.feed(self.servers[i].receive(sent))
        self.out += rw.take_replies()
        for news, name, data in tracker.news:   # what the session learns (PgClientSession._statement_news)
            if news == r.PARSED:
                self.names.confirm(name, SCOPE)
            elif news == r.DESCRIBED:
                self.names.describe(name, SCOPE, data)
        tracker.news.clear()
        assert len(prepared) <= 3
        assert set(prepared) <= set(self.servers[i].prepared) | set(prepared)

    out = b""

    @rule(name=st.sampled_from([b"s1", b"s2", b"s3", b"s4", b"s5"]), query=st.sampled_from(QUERIES))
    def parse(self, name: bytes, query: bytes) -> None:
        if name in self.client_statements:
            self.close(name)   # a Parse of a name the client has fails (42P05), on a server as here
        self.client_statements[name] = query
        self._send(0x50, name + b"\x00" + query + b"\x00\x00\x00")
        self.expected += m.PARSE_COMPLETE

    @rule(name=st.sampled_from([b"s1", b"s2", b"s3", b"s4", b"s5"]))
    def bind(self, name: bytes) -> None:
        if name not in self.client_statements:
            return   # the server's own error would be right; not modelled here
        self._send(0x42, b"\x00" + name + b"\x00\x00\x00\x00\x00\x00\x00")
        self.expected += m.BIND_COMPLETE
        server_name = self.rewriter.statements[name].server_name
        assert self.servers[self.current].prepared[server_name] == self.client_statements[name]
        event(f"bind on server {self.current}")

    @rule(name=st.sampled_from([b"s1", b"s2", b"s3", b"s4", b"s5"]))
    def move_then_bind(self, name: bytes) -> None:
        """The next transaction on the other server connection, which may lack the statement."""
        self.sync_and_move(1 - self.current)
        self.bind(name)

    @rule(name=st.sampled_from([b"s1", b"s2", b"s3"]))
    def describe(self, name: bytes) -> None:
        if name not in self.client_statements:
            return
        self._send(0x44, b"S" + name + b"\x00")
        self.expected += _describe_reply(self.rewriter.statements[name].server_name)

    @rule(name=st.sampled_from([b"s1", b"s2", b"s3", b"s4", b"s5"]))
    def close(self, name: bytes) -> None:
        self.client_statements.pop(name, None)
        self._send(0x43, b"S" + name + b"\x00")
        self.expected += m.CLOSE_COMPLETE

    @rule(to=st.sampled_from([1, 0]))
    def sync_and_move(self, to: int) -> None:
        """Sync ends the transaction: the next one may run on the other server connection."""
        self._send(0x53, b"")
        self.expected += _ready(b"I")
        self.current = to

    @rule(names=st.lists(st.sampled_from([b"s1", b"s2", b"s3"]), min_size=1, max_size=3), describe=st.booleans())
    def answered_alone(self, names: list[bytes], describe: bool) -> None:
        """A prepare-only batch while no server is attached: answered by the proxy when all is known."""
        names = [name for name in dict.fromkeys(names) if name not in self.client_statements]   # (42P05)
        if not names:
            return
        data = b""
        replies = b""
        for name in names:
            query = self.client_statements.get(name, QUERIES[0])
            data += m.message(b"P", name + b"\x00" + query + b"\x00\x00\x00")
            replies += m.PARSE_COMPLETE
            if describe:
                data += m.message(b"D", b"S" + name + b"\x00")
        data += m.sync()
        before = dict(self.rewriter.statements)
        answer = self.rewriter.answer_alone(data, lambda _q: True, may_describe=True)
        if answer is None:
            assert self.rewriter.statements == before   # nothing changed
            return
        reply, still_open = answer
        event("answered without a server")
        assert not still_open and reply.endswith(_ready(b"I"))
        for name in names:
            self.client_statements[name] = self.client_statements.get(name, QUERIES[0])
            server_name = self.rewriter.statements[name].server_name
            assert (server_name, SCOPE) in self.names.confirmed
        expected = b""
        for name in names:
            expected += m.PARSE_COMPLETE
            if describe:
                expected += _describe_reply(self.rewriter.statements[name].server_name)
        assert reply == expected + _ready(b"I")

    def teardown(self) -> None:
        assert self.out == self.expected
        for tracker in self.trackers:
            assert not tracker.slots and not tracker.failed_statements


def test_statement_rewriter_machine() -> None:
    run_state_machine_as_test(StatementRewriterMachine, settings=MACHINE)


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=60))
def test_answer_alone_garbage_changes_nothing(data: bytes) -> None:
    rewriter = StatementRewriter(StatementNames(), 10, SCOPE)
    try:
        answer = rewriter.answer_alone(data, lambda _q: True, True)
    except ProtocolViolation:
        return
    if answer is None:
        assert rewriter.statements == {}


# ------------------------------------------------------------------------------ split hold

READS = [b"SELECT 1", b"SELECT a FROM t", b"SHOW search_path"]
WRITES = [b"INSERT INTO t VALUES (1)", b"UPDATE t SET a = 1", b"CREATE TABLE x (a int)", b"SELECT nextval('s')"]


@settings(max_examples=200, deadline=None)
@given(kind=st.sampled_from([0x51, 0x50]), write=st.booleans(), which=st.integers(0, 3),
       status=st.sampled_from([b"I", b"T", b"E"]), unsynced=st.booleans(), keeps=st.booleans())
def test_split_hold_model(kind: int, write: bool, which: int, status: bytes, unsynced: bool, keeps: bool) -> None:
    """Held exactly when a write, outside a transaction, on a client that may leave; the hidden Sync
    only when a batch is open, and its ReadyForQuery never reaches the client."""
    sql = WRITES[which] if write else READS[which % 3]
    body = sql + b"\x00" if kind == 0x51 else b"\x00" + sql + b"\x00\x00\x00"
    tracker = r.ResponseTracker()
    tracker.status = status
    held = SplitHold(PgClassifier(())).hold(kind, body, tracker, None, unsynced, keeps)
    if not write or keeps or status != b"I":
        assert held is None and not tracker.slots
        return
    if not unsynced:
        assert held == b"" and not tracker.slots
        return
    assert held == HIDDEN_SYNC
    assert tracker.feed(_ready(b"I")) == b"" and not tracker.slots


def test_a_ready_for_query_without_its_status_byte_reads_nothing_past_itself() -> None:
    """Found by the garbage test above: a malformed ReadyForQuery (length 4, no status) must not take the
    next message's first byte as its status when both arrive in one read (and not when they arrive apart)."""
    stream = b"Z\x00\x00\x00\x04Z\x00\x00\x00\x04"
    whole, split = r.ResponseTracker(), r.ResponseTracker()
    for tracker in (whole, split):
        tracker.push(r.Slot(r.QUERY))
    out_whole = whole.feed(stream)
    out_split = split.feed(stream[:5]) + split.feed(stream[5:])
    assert (out_whole, whole.status, len(whole.slots)) == (out_split, split.status, len(split.slots))
    assert whole.status == b""
