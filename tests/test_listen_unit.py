"""Sans-IO parts of LISTEN in transaction pooling: statement parsing and replies (listen_sql), the channel
registry and its delivery policy (listen_registry), the NOTIFY pid of a backend that changed clients
(responses.ResponseTracker), the batch-failure replies (failed_work.fail_pending). Byte vectors and Hypothesis."""

from __future__ import annotations

import struct

from hypothesis import given
from hypothesis import strategies as st

from proxy.engines.postgres.failed_work import fail_pending
from proxy.engines.postgres.listen_registry import ChannelRegistry, Subscriber
from proxy.engines.postgres.listen_sql import (
    LISTEN,
    UNLISTEN,
    UNLISTEN_ALL,
    ListenCommand,
    TransactionOutcome,
    listen_commands,
    may_be_listen,
    take_batch,
)
from proxy.engines.postgres.session_state import session_effects
from proxy.engines.postgres.wire.responses import QUERY, ResponseTracker, Slot
from proxy.errors import ProxyError


def msg(kind: bytes, body: bytes = b"") -> bytes:
    return kind + struct.pack("!I", len(body) + 4) + body


def q(sql: str) -> bytes:
    return msg(b"Q", sql.encode() + b"\x00")


def parse(sql: str, name: bytes = b"") -> bytes:
    return msg(b"P", name + b"\x00" + sql.encode() + b"\x00\x00\x00")


def bind(statement: bytes = b"", portal: bytes = b"") -> bytes:
    return msg(b"B", portal + b"\x00" + statement + b"\x00\x00\x00\x00\x00\x00\x00")


SYNC, FLUSH = msg(b"S"), msg(b"H")
EXECUTE = msg(b"E", b"\x00\x00\x00\x00\x00")
DESCRIBE_PORTAL = msg(b"D", b"P\x00")
Z_I, Z_T, Z_E = msg(b"Z", b"I"), msg(b"Z", b"T"), msg(b"Z", b"E")
C_LISTEN, C_UNLISTEN = msg(b"C", b"LISTEN\x00"), msg(b"C", b"UNLISTEN\x00")
PARSE_COMPLETE, BIND_COMPLETE, CLOSE_COMPLETE, NO_DATA = msg(b"1"), msg(b"2"), msg(b"3"), msg(b"n")
NO_PARAMETERS = msg(b"t", b"\x00\x00")


# ---- listen_sql -------------------------------------------------------------------------------------

def test_channel_names_are_read_as_the_server_reads_them() -> None:
    assert listen_commands("LISTEN Foo") == (ListenCommand(LISTEN, b"foo"),)
    assert listen_commands('listen "Foo"') == (ListenCommand(LISTEN, b"Foo"),)
    assert listen_commands('LISTEN "a""b"') == (ListenCommand(LISTEN, b'a"b'),)
    assert listen_commands("LISTEN ÉCOLE") == (ListenCommand(LISTEN, "École".encode()),)   # ASCII folding only
    assert listen_commands("LISTEN " + "x" * 70) == (ListenCommand(LISTEN, b"x" * 63),)
    assert listen_commands('LISTEN "' + "é" * 40 + '"') == (ListenCommand(LISTEN, ("é" * 31).encode()),)  # 62 bytes
    assert listen_commands('LISTEN U&"d\\0061t"') == (ListenCommand(LISTEN, b"dat"),)
    assert listen_commands("UNLISTEN *; unlisten b; LISTEN c;") == (
        ListenCommand(UNLISTEN_ALL), ListenCommand(UNLISTEN, b"b"), ListenCommand(LISTEN, b"c"))
    for other in ("LISTEN a; SELECT 1", "NOTIFY a", "SELECT 1", "LISTEN", "LISTEN 'a'", "", "LISTEN a\x00"):
        assert listen_commands(other) is None, other


def test_the_cheap_check_skips_spaces_and_comments() -> None:
    for text in (b"LISTEN a", b"  unlisten *", b"/* hi */ listen a", b"-- x\nLISTEN a", b"\tListen a"):
        assert may_be_listen(text), text
    for text in (b"SELECT 1", b"listener", b"NOTIFY a", b"", b"(listen a)"):
        assert not may_be_listen(text), text


def test_a_simple_query_is_answered_with_the_status_of_the_transaction() -> None:
    batch = take_batch(q("LISTEN a") + q("UNLISTEN *; LISTEN b") + q("SELECT 1"), b"I")
    assert batch is not None
    assert batch.consumed == len(q("LISTEN a") + q("UNLISTEN *; LISTEN b"))
    assert batch.commands == (ListenCommand(LISTEN, b"a"), ListenCommand(UNLISTEN_ALL), ListenCommand(LISTEN, b"b"))
    assert batch.reply == C_LISTEN + Z_I + C_UNLISTEN + C_LISTEN + Z_I
    in_block = take_batch(q("LISTEN a"), b"T")
    assert in_block is not None and in_block.reply == C_LISTEN + Z_T
    failed = take_batch(q("LISTEN a"), b"E")
    assert failed is not None and failed.commands == ()
    assert b"C25P02\x00" in failed.reply and failed.reply.endswith(Z_E)
    assert take_batch(q("SELECT 1") + q("LISTEN a"), b"I") is None   # only leading messages
    assert take_batch(q("LISTEN a")[:-1], b"I") is None               # incomplete


def test_an_unnamed_extended_group_up_to_its_sync() -> None:
    group = parse("LISTEN ext") + bind() + DESCRIBE_PORTAL + EXECUTE + SYNC
    batch = take_batch(group + q("SELECT 1"), b"I")
    assert batch is not None and batch.consumed == len(group)
    assert batch.commands == (ListenCommand(LISTEN, b"ext"),)
    assert batch.reply == PARSE_COMPLETE + BIND_COMPLETE + NO_DATA + C_LISTEN + Z_I
    assert take_batch(group[:-len(SYNC)], b"I") is None                      # no Sync yet
    assert take_batch(parse("LISTEN a; LISTEN b") + SYNC, b"I") is None       # not one statement
    assert take_batch(parse("LISTEN a") + bind() + parse("SELECT 1") + SYNC, b"I") is None
    failed = take_batch(group, b"E")
    assert failed is not None and failed.commands == () and failed.reply.endswith(Z_E)
    assert failed.reply.count(b"C25P02\x00") == 1


def test_named_statements_asyncpg_and_psycopg_style() -> None:
    statements: dict[bytes, tuple[ListenCommand, ...]] = {}
    name = b"__asyncpg_stmt_1__"
    prepare = parse('LISTEN "fanout"', name) + msg(b"D", b"S" + name + b"\x00") + FLUSH   # asyncpg: no Sync
    batch = take_batch(prepare, b"I", statements)
    assert batch is not None and batch.consumed == len(prepare) and batch.commands == ()
    assert batch.reply == PARSE_COMPLETE + NO_PARAMETERS + NO_DATA
    assert statements == {name: (ListenCommand(LISTEN, b"fanout"),)}
    run = bind(name) + EXECUTE + SYNC
    batch = take_batch(run, b"I", statements)
    assert batch is not None and batch.commands == (ListenCommand(LISTEN, b"fanout"),)
    assert batch.reply == BIND_COMPLETE + C_LISTEN + Z_I
    assert take_batch(bind(b"other") + EXECUTE + SYNC, b"I", statements) is None   # not a LISTEN statement
    close = msg(b"C", b"S" + name + b"\x00") + SYNC
    batch = take_batch(close, b"I", statements)
    assert batch is not None and batch.reply == CLOSE_COMPLETE + Z_I and statements == {}
    unnamed = {b"": (ListenCommand(LISTEN, b"x"),)}
    take_batch(parse("LISTEN y") + SYNC, b"I", unnamed)
    assert unnamed == {}   # the unnamed statement does not outlive its group


@given(st.binary(max_size=300), st.sampled_from([b"I", b"T", b"E"]))
def test_take_batch_never_raises_on_garbage(data: bytes, status: bytes) -> None:
    statements: dict[bytes, tuple[ListenCommand, ...]] = {}
    batch = take_batch(data, status, statements)
    assert batch is None or 0 < batch.consumed <= len(data)


@given(st.lists(st.sampled_from([q("LISTEN a"), q("UNLISTEN *"), parse("LISTEN b") + bind() + EXECUTE + SYNC,
                                 q("SELECT 1")]), max_size=6), st.integers(min_value=0, max_value=40))
def test_take_batch_consumes_whole_messages_only(parts: list[bytes], cut: int) -> None:
    data = b"".join(parts)
    data = data[:len(data) - cut] if cut < len(data) else data
    batch = take_batch(data, b"I")
    if batch is not None:
        boundaries = {sum(len(p) for p in parts[:i]) for i in range(len(parts) + 1)}
        assert batch.consumed in boundaries


def test_transaction_outcome_reads_the_last_tag() -> None:
    commit = msg(b"C", b"COMMIT\x00") + Z_I
    outcome = TransactionOutcome()
    big_row = msg(b"D", b"\x00\x01" + struct.pack("!I", 5000) + b"x" * 5000)
    stream = msg(b"C", b"SELECT 1") + big_row + commit
    for i in range(0, len(stream), 7):   # in pieces, cutting every message somewhere
        outcome.feed(stream[i:i + 7])
    assert outcome.committed
    rolled = TransactionOutcome()
    rolled.feed(msg(b"C", b"ROLLBACK\x00") + Z_I)
    assert not rolled.committed
    failed = TransactionOutcome()
    failed.feed(msg(b"C", b"COMMIT\x00") + msg(b"E", b"SERROR\x00C40001\x00\x00") + Z_I)
    assert not failed.committed
    prepared = TransactionOutcome()
    prepared.feed(msg(b"C", b"PREPARE TRANSACTION\x00") + Z_I)
    assert not prepared.committed


def test_notify_marks_a_text_as_sending_notifications() -> None:
    assert session_effects("NOTIFY a").notifies
    assert session_effects("select pg_notify('a', 'b')").notifies
    assert session_effects("SELECT 1; NOTIFY a, 'x'").notifies
    assert not session_effects("SELECT 'notify'").notifies
    assert session_effects("LISTEN a").pin_reason == "listen"   # a LISTEN the proxy does not answer pins


# ---- listen_registry ------------------------------------------------------------------------------

def test_the_server_connection_follows_what_clients_want() -> None:
    registry = ChannelRegistry(queue_limit=3)
    a, b = Subscriber(), Subscriber()
    registry.listen(a, b"x")
    registry.listen(b, b"x")
    registry.reserve(b"staged")
    assert not registry.ready([b"x"])
    batch = registry.next_batch()
    assert batch == (frozenset({b"x", b"staged"}), frozenset())
    assert registry.next_batch() is None   # one batch at a time
    registry.batch_done(ok=True)
    assert registry.ready([b"x", b"staged"])
    registry.unlisten(a, b"x")
    registry.release(b"staged")
    assert registry.next_batch() == (frozenset(), frozenset({b"staged"}))
    assert not registry.ready([b"staged"])   # an UNLISTEN of it is in flight
    registry.batch_done(ok=True)
    registry.unlisten_all(b)
    assert registry.listeners == {}
    registry.server_lost()
    assert registry.confirmed == set() and registry.next_batch() is None
    registry.listen(a, b"y")
    assert registry.next_batch() == (frozenset({b"y"}), frozenset())
    registry.batch_done(ok=False)   # an error: nothing confirmed, sent again next time
    assert registry.next_batch() == (frozenset({b"y"}), frozenset())


def test_delivery_queues_per_subscriber_and_disconnects_on_overflow() -> None:
    registry = ChannelRegistry(queue_limit=2)
    fast, slow, elsewhere = Subscriber(), Subscriber(), Subscriber()
    for sub in (fast, slow):
        registry.listen(sub, b"c")
    registry.listen(elsewhere, b"d")
    for n in range(2):
        queued, overflowed = registry.deliver(b"c", b"N%d" % n)
        assert set(queued) == {fast, slow} and overflowed == []
        assert registry.take(fast) == b"N%d" % n   # fast reads at once
    queued, overflowed = registry.deliver(b"c", b"N2")   # slow has 2 waiting: full
    assert queued == [fast] and overflowed == [slow] and slow.overflowed and not slow.queue
    assert registry.deliver(b"c", b"N3") == ([fast], [])   # an overflowed subscriber gets nothing more
    assert registry.take(fast) == b"N2N3"
    assert registry.deliver(b"nobody", b"x") == ([], [])
    assert registry.delivered == 4 and registry.received == 5 and registry.disconnected == 1
    assert registry.dropped == {"client_queue_full": 4, "no_listener": 1}
    registry.deliver(b"d", b"left")
    registry.drop_queue(elsewhere, "client_gone")
    assert registry.dropped["client_gone"] == 1


# ---- the pid of a NOTIFY from one of the proxy's backends -----------------------------------------

def notification(pid: int, channel: bytes = b"c") -> bytes:
    return msg(b"A", struct.pack("!I", pid) + channel + b"\x00payload\x00")


def test_a_notify_from_a_backend_that_changed_clients_carries_its_senders_pid() -> None:
    sender, listener = ResponseTracker(), ResponseTracker()
    peers = {b"\x00\x00\x00\x07": sender}
    sender.peers = listener.peers = peers
    sender.client_pid = b"\x00\x00\x00\x0a"             # client 10 attached
    sender.push(Slot(QUERY))
    sender.feed(msg(b"C", b"NOTIFY\x00") + Z_I)          # its NOTIFY committed at this ReadyForQuery
    sender.client_pid = b"\x00\x00\x00\x0b"             # the backend went to client 11, which sent nothing yet
    assert listener.feed(notification(7)) == notification(10)
    sender.push(Slot(QUERY))                              # client 11's statement in flight: its own
    assert listener.feed(notification(7)) == notification(11)
    assert listener.feed(notification(99)) == notification(99)   # not a backend of the proxy's


# ---- failed_work.fail_pending ---------------------------------------------------------------------

GONE = ProxyError("gone", "08006")


def test_fail_batch_answers_as_a_server_would() -> None:
    data = q("SELECT 1") + parse("SELECT 2") + bind() + EXECUTE + SYNC + q("SELECT 3")
    reply, consumed, discarding, terminate = fail_pending(data, GONE, False, first_batch_only=False)
    assert consumed == len(data) and not discarding and not terminate
    assert reply.count(b"C08006\x00") == 3 and reply.count(Z_I) == 3
    reply, consumed, _, _ = fail_pending(data, GONE, False, first_batch_only=True)
    assert consumed == len(q("SELECT 1")) and reply.count(Z_I) == 1
    reply, _, discarding, _ = fail_pending(parse("SELECT 1") + bind(), GONE, False, first_batch_only=False)
    assert discarding and reply.count(b"C08006\x00") == 1
    assert fail_pending(msg(b"X"), GONE, False, False)[3]
