"""Transaction replay's sans-IO parts with bytes (no servers): the record, the result digest, the decision.

core/replay.py (TransactionRecord, ResultDigest, decide), engines/postgres/replay_wire.py (client
framing into units, the backend-message digest, unit traits) and the MySQL command record and traits
(engines/mysql/replay.py).
"""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from proxy.core.replay import MISMATCH, RECORD, VERIFY, TransactionRecord, UnitTraits, Verdict, decide
from proxy.engines.mysql.errors import errno_of
from proxy.engines.mysql.replay import command_traits, record_commands
from proxy.engines.mysql.wire.codes import Command, Status
from proxy.engines.postgres.replay_wire import PgResultDigest, record_messages, unit_traits
from proxy.engines.postgres.wire import messages as m
from proxy.errors import OutcomeUnknown, ServerUnavailable


def row(*values: bytes) -> bytes:
    body = len(values).to_bytes(2, "big") + b"".join(len(v).to_bytes(4, "big") + v for v in values)
    return m.message(b"D", body)


def select_result(*values: bytes, status: bytes = b"T") -> bytes:
    return (m.message(b"T", b"\x00\x01x\x00" + b"\x00" * 18) + b"".join(row(v) for v in values)
            + m.message(b"C", b"SELECT %d\x00" % len(values)) + m.ready_for_query(status))


def parse(name: bytes, sql: bytes) -> bytes:
    return m.message(b"P", name + b"\x00" + sql + b"\x00\x00\x00")


def bind(statement: bytes) -> bytes:
    return m.message(b"B", b"\x00" + statement + b"\x00\x00\x00\x00\x00\x00\x00")


EXECUTE = m.message(b"E", b"\x00\x00\x00\x00\x00")
NOTICE = m.notice_response("there is already a transaction in progress")
STATUS = m.parameter_status("TimeZone", "UTC")
NOTIFY = m.message(b"A", b"\x00\x00\x00\x07ch\x00payload\x00")


def feed_in_pieces(digest: PgResultDigest, data: bytes, cuts: list[int]) -> bytes:
    out, last = [], 0
    for cut in sorted({c % (len(data) + 1) for c in cuts}) + [len(data)]:
        out.append(digest.feed(data[last:cut]))
        last = cut
    return b"".join(out)


# ---- the record ----------------------------------------------------------------------------------


def test_units_end_at_query_sync_and_function_call_and_an_extended_batch_stays_open() -> None:
    record = TransactionRecord(1 << 20, 100)
    batch = m.query("BEGIN") + parse(b"", b"INSERT INTO t VALUES (1)") + bind(b"") + EXECUTE + m.sync()
    record_messages(batch + parse(b"s1", b"SELECT 1"), record)
    assert record.units == [m.query("BEGIN"), parse(b"", b"INSERT INTO t VALUES (1)") + bind(b"") + EXECUTE + m.sync()]
    assert bytes(record.open_unit) == parse(b"s1", b"SELECT 1")
    assert record.replay_bytes() == batch + parse(b"s1", b"SELECT 1")
    assert record.size == len(record.replay_bytes())


def test_an_incomplete_message_at_the_end_is_not_recorded_it_comes_again_with_the_rest() -> None:
    record = TransactionRecord(1 << 20, 100)
    whole = m.query("SELECT 2")
    record_messages(m.query("SELECT 1") + whole[:4], record)
    assert record.units == [m.query("SELECT 1")] and not record.open_unit


def test_past_either_bound_or_with_copy_data_the_transaction_is_not_replayable() -> None:
    small = TransactionRecord(40, 100)
    record_messages(m.query("INSERT INTO t VALUES (1)") * 2, small)
    assert small.refused == "more than 40 bytes of statements" and not small.units and small.size == 0
    record_messages(m.query("SELECT 1"), small)
    assert not small.units   # nothing more is kept
    few = TransactionRecord(1 << 20, 2)
    record_messages(m.query("SELECT 1") * 3, few)
    assert few.refused == "more than 2 statements"
    copy = TransactionRecord(1 << 20, 100)
    record_messages(m.query("COPY t FROM STDIN") + m.message(b"d", b"1\n"), copy)
    assert copy.refused == "COPY from the client"
    assert decide(copy, 0, 0, True, lambda _u: UnitTraits()) is Verdict.NOT_REPLAYABLE


def test_the_named_statements_a_transaction_redefines_are_reported_and_deallocate_is_not_replayable() -> None:
    record = TransactionRecord(1 << 20, 100)
    touched: list[bytes] = []
    close = m.message(b"C", b"Ss1\x00")
    record_messages(parse(b"s1", b"SELECT 1") + parse(b"", b"SELECT 2") + close + m.message(b"C", b"Pportal\x00")
                    + m.message(b"P", b"bad") + m.sync(), record, touched)
    assert touched == [b"s1", b"s1"] and len(record.units) == 1
    record_messages(m.query("DEALLOCATE s1"), record, touched)
    assert record.refused == "DEALLOCATE / DISCARD"


def test_settle_drops_the_units_that_ended_outside_a_transaction() -> None:
    record = TransactionRecord(1 << 20, 100)
    record_messages(m.query("INSERT 1") + m.query("BEGIN") + m.query("INSERT 2"), record)
    record.settle(1)
    assert record.units == [m.query("BEGIN"), m.query("INSERT 2")] and record.first == 1
    assert record.size == len(m.query("BEGIN") + m.query("INSERT 2"))
    record.settle(1)   # again: nothing more
    assert len(record.units) == 2
    record.settle(3)
    assert not record.units and record.size == 0 and record.first == 3
    record.clear()   # the next transaction counts from 0 again
    assert record.first == 0


# ---- the decision --------------------------------------------------------------------------------


def traits_by_text(unit: bytes) -> UnitTraits:
    return unit_traits(unit, lambda _body: None, lambda sql: sql.lower().startswith((b"select", b"begin")))


def record_of(*queries: str) -> TransactionRecord:
    record = TransactionRecord(1 << 20, 100)
    record_messages(b"".join(m.query(q) for q in queries), record)
    return record


def test_decide() -> None:
    # inside BEGIN: the INSERT in flight is replayed (nothing can have committed)
    assert decide(record_of("BEGIN", "INSERT INTO t VALUES (1)"), 0, 1, True, traits_by_text) is Verdict.REPLAY
    # BEGIN and the INSERT in flight together: replayed too
    assert decide(record_of("BEGIN", "INSERT INTO t VALUES (1)"), 0, 0, False, traits_by_text) is Verdict.REPLAY
    # a COMMIT in flight: unknown
    assert decide(record_of("BEGIN", "INSERT 1", "COMMIT"), 0, 2, True, traits_by_text) is Verdict.UNKNOWN
    assert decide(record_of("BEGIN; INSERT INTO t VALUES (1); END"), 0, 0, False, traits_by_text) is Verdict.UNKNOWN
    # an autocommit write in flight: unknown; an autocommit read: replayed
    assert decide(record_of("INSERT INTO t VALUES (1)"), 0, 0, False, traits_by_text) is Verdict.UNKNOWN
    assert decide(record_of("SELECT 1"), 0, 0, False, traits_by_text) is Verdict.REPLAY
    # idle in a transaction, nothing in flight: replayed (the next statement finds it there)
    assert decide(record_of("BEGIN", "INSERT 1"), 0, 2, True, traits_by_text) is Verdict.REPLAY
    # everything answered and settled: nothing to do
    assert decide(record_of("INSERT INTO t VALUES (1)"), 1, 1, False, traits_by_text) is Verdict.NOTHING
    # a ROLLBACK ends the block: an autocommit write after it in the same pipeline is unknown
    assert decide(record_of("BEGIN", "ROLLBACK", "INSERT 3"), 0, 0, False, traits_by_text) is Verdict.UNKNOWN


def test_unit_traits_of_extended_batches_resolve_named_statements() -> None:
    named = {b"s_commit": b"COMMIT", b"s_read": b"SELECT 1"}

    def query_of(body: bytes) -> bytes | None:
        return named.get(body[1:body.index(b"\x00", 1)])

    def reads(sql: bytes) -> bool:
        return sql.startswith(b"SELECT")

    assert unit_traits(bind(b"s_commit") + EXECUTE + m.sync(), query_of, reads).commits
    read = unit_traits(bind(b"s_read") + EXECUTE + m.sync(), query_of, reads)
    assert read.reads_only and not read.commits
    assert not unit_traits(bind(b"unknown") + EXECUTE + m.sync(), query_of, reads).reads_only
    unnamed = unit_traits(parse(b"", b"SELECT 2") + bind(b"") + EXECUTE + m.sync(), query_of, reads)
    assert unnamed.reads_only
    assert unit_traits(m.query("begin isolation level serializable"), query_of, reads).begins
    assert not unit_traits(m.query("ROLLBACK TO SAVEPOINT a"), query_of, reads).ends
    assert unit_traits(m.query("rollback"), query_of, reads).ends


# ---- the digest ----------------------------------------------------------------------------------


def test_the_digest_relays_everything_and_counts_units_settling_at_idle() -> None:
    digest = PgResultDigest()
    stream = m.ready_for_query(b"T") + select_result(b"1") + select_result(b"2", status=b"I") + select_result(b"3")
    assert digest.feed(stream) is stream
    assert digest.answered == 4 and digest.settled == 3
    assert digest.length == len(select_result(b"3"))


def test_a_replay_with_the_same_results_is_checked_then_relays_only_what_is_new() -> None:
    seen = m.ready_for_query(b"T") + select_result(b"1", b"2")
    digest = PgResultDigest()
    digest.feed(NOTICE + seen)
    digest.expect()
    assert digest.mode == VERIFY
    new = select_result(b"42")
    # another server: notices and parameter reports may differ; they do not count
    assert digest.feed(STATUS + seen[:7]) == b""
    assert digest.feed(seen[7:] + NOTIFY + new) == NOTIFY + new
    assert digest.mode == RECORD and digest.answered == 3


def test_a_replay_whose_results_differ_is_a_mismatch_and_relays_nothing() -> None:
    digest = PgResultDigest()
    digest.feed(m.ready_for_query(b"T") + select_result(b"1"))
    digest.expect()
    assert digest.feed(m.ready_for_query(b"T") + select_result(b"2") + select_result(b"3")) == b""
    assert digest.mode == MISMATCH


def test_nothing_seen_is_checked_at_once() -> None:
    digest = PgResultDigest()
    digest.expect()
    assert digest.mode == RECORD


@settings(max_examples=200, deadline=None)
@given(values=st.lists(st.binary(max_size=300), min_size=1, max_size=6),
       cuts=st.lists(st.integers(min_value=0, max_value=5000), max_size=8),
       cuts2=st.lists(st.integers(min_value=0, max_value=5000), max_size=8),
       split=st.integers(min_value=0, max_value=5))
def test_any_chunking_gives_the_same_digest_and_the_replay_relays_exactly_the_rest(
        values: list[bytes], cuts: list[int], cuts2: list[int], split: int) -> None:
    results = [select_result(v) for v in values]
    split = min(split, len(results))
    seen, rest = b"".join(results[:split]), b"".join(results[split:])
    whole, pieces = PgResultDigest(), PgResultDigest()
    whole.feed(seen)
    assert feed_in_pieces(pieces, seen, cuts) == seen
    assert (whole.length, whole.answered, whole._hash.digest()) == (pieces.length, pieces.answered,
                                                                       pieces._hash.digest())
    pieces.expect()
    # a notice before the prefix is dropped with it while the prefix is checked (nothing to check: relayed)
    assert feed_in_pieces(pieces, NOTICE + seen + rest, cuts2) == (b"" if seen else NOTICE) + rest
    assert pieces.mode == RECORD and pieces.answered == len(values)


@settings(max_examples=200, deadline=None)
@given(parts=st.lists(st.tuples(st.binary(max_size=200), st.sampled_from([b"", NOTICE, STATUS, NOTIFY]),
                                st.sampled_from([b"T", b"I", b"E"])), min_size=1, max_size=6),
       cuts=st.lists(st.integers(min_value=0, max_value=3000), max_size=10))
def test_uncounted_messages_and_transaction_ends_are_framed_alike_in_any_chunking(
        parts: list[tuple[bytes, bytes, bytes]], cuts: list[int]) -> None:
    stream = b"".join(noise + select_result(value, status=status) + noise for value, noise, status in parts)
    whole, pieces, bare = PgResultDigest(), PgResultDigest(), PgResultDigest()
    assert whole.feed(stream) is stream
    assert feed_in_pieces(pieces, stream, cuts) == stream
    bare.feed(b"".join(select_result(value, status=status) for value, _noise, status in parts))
    for d in (pieces, bare):   # the uncounted messages change nothing
        assert (d.length, d.answered, d.settled, d._hash.digest()) == (
            whole.length, whole.answered, whole.settled, whole._hash.digest())
    assert whole.answered == len(parts)
    assert whole.settled == max((i + 1 for i, (_v, _n, s) in enumerate(parts) if s == b"I"), default=0)


def test_a_fatal_answer_is_held_back_from_the_client_with_everything_after_it() -> None:
    digest = PgResultDigest()
    fatal = m.error_response("57P01", "terminating connection due to unexpected postmaster exit", "FATAL")
    seen = m.ready_for_query(b"T") + select_result(b"1")
    assert digest.feed(seen + fatal) == seen
    assert digest.held == fatal and digest.length == len(seen)
    assert digest.feed(b"more") == b"" and digest.held == fatal + b"more"
    plain = PgResultDigest()   # an ERROR is an answer like any other
    error = m.error_response("23505", "duplicate key value")
    assert plain.feed(error + m.ready_for_query(b"E")) == error + m.ready_for_query(b"E") and not plain.held


# ---- MySQL ---------------------------------------------------------------------------------------


def command(code: int, payload: bytes = b"") -> bytes:
    body = bytes((code,)) + payload
    return len(body).to_bytes(3, "little") + b"\x00" + body


def mysql_reads(sql: bytes) -> bool:
    return sql.lower().startswith(b"select")


def test_mysql_commands_are_units_and_only_plain_queries_are_replayable() -> None:
    record = TransactionRecord(1 << 20, 100)
    queries = command(Command.QUERY, b"BEGIN") + command(Command.QUERY, b"SELECT 1")
    record_commands(queries + command(Command.QUERY, b"SEL")[:6], record, pipelined=False)   # the last one: incomplete
    assert record.units == [command(Command.QUERY, b"BEGIN"), command(Command.QUERY, b"SELECT 1")]
    record_commands(command(Command.STMT_PREPARE, b"SELECT ?"), record, pipelined=False)
    assert record.refused == "COM_STMT_PREPARE"
    killing = TransactionRecord(1 << 20, 100)
    record_commands(command(Command.QUERY, b" KILL QUERY 12"), killing, pipelined=False)
    assert killing.refused == "KILL"
    piped = TransactionRecord(1 << 20, 100)
    record_commands(command(Command.QUERY, b"SELECT 2"), piped, pipelined=True)
    assert piped.refused == "a command sent before the previous one was answered"


def test_mysql_statements_that_may_commit_are_never_replayed_in_flight() -> None:
    in_tx, autocommit = Status.IN_TRANS | Status.AUTOCOMMIT, Status.AUTOCOMMIT

    def traits(sql: bytes, status: int) -> UnitTraits:
        return command_traits(command(Command.QUERY, sql), status, mysql_reads)

    for sql in (b"COMMIT", b"commit work", b"XA COMMIT 'x'", b"CREATE TABLE t (id int)", b"LOCK TABLES t WRITE",
                b"SET autocommit = 1", b"INSERT INTO t VALUES (1); COMMIT", b"CALL p()"):
        assert traits(sql, in_tx).commits, sql
    assert traits(b"BEGIN", in_tx).commits   # BEGIN inside a transaction commits it
    assert traits(b"START TRANSACTION", autocommit).begins
    assert not traits(b"INSERT INTO t VALUES (1)", in_tx).commits
    assert not traits(b"INSERT INTO t VALUES (1)", autocommit).reads_only
    assert traits(b"INSERT INTO t VALUES (1)", 0).begins   # autocommit off: it opens a transaction
    assert traits(b"SELECT 1", autocommit).reads_only
    assert traits(b"ROLLBACK", in_tx).ends and not traits(b"ROLLBACK TO SAVEPOINT a", in_tx).ends
    assert command_traits(command(Command.PING), autocommit, mysql_reads) == UnitTraits()
    record = TransactionRecord(1 << 20, 100)
    record_commands(command(Command.QUERY, b"INSERT INTO t VALUES (1)"), record, pipelined=False)
    assert decide(record, 0, 0, False, lambda unit: command_traits(unit, autocommit, mysql_reads)) is Verdict.UNKNOWN
    assert decide(record, 0, 0, True, lambda unit: command_traits(unit, in_tx, mysql_reads)) is Verdict.REPLAY


def test_an_unknown_outcome_is_errno_2013_with_sqlstate_08007_for_mysql_clients() -> None:
    assert errno_of(OutcomeUnknown("transaction resolution unknown: ...")) == (2013, "08007")
    assert errno_of(ServerUnavailable("lost")) == (2013, "HY000")
