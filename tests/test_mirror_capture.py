"""Which transactions the mirror takes (proxy/mirror/capture.py): sampling draws, autocommit statements, explicit
transactions collected to their COMMIT, ROLLBACK dropped, reads_only."""

from __future__ import annotations

import random

from proxy.mirror.capture import TransactionCapture


def is_read(sql: str) -> bool:
    return sql.lower().startswith("select")


def test_autocommit_statements_by_draw() -> None:
    capture = TransactionCapture(0.5, reads_only=False, is_read=is_read)
    assert capture.statement("INSERT 1", True, 0.2) == ["INSERT 1"]
    assert capture.statement("INSERT 2", True, 0.7) is None


def test_explicit_transactions_go_whole_and_rollbacks_not_at_all() -> None:
    capture = TransactionCapture(1.0, reads_only=False, is_read=is_read)
    assert capture.statement("BEGIN", True, 0.0) is None
    assert capture.statement("UPDATE a", False, 0.9) is None
    assert capture.statement("commit;", False, 0.9) == ["BEGIN", "UPDATE a", "commit;"]
    assert capture.statement("start transaction", True, 0.0) is None
    assert capture.statement("INSERT b", False, 0.0) is None
    assert capture.statement("ROLLBACK TO SAVEPOINT s", False, 0.0) is None   # not the end
    assert capture.statement("ROLLBACK", False, 0.0) is None
    assert capture.statement("SELECT after", False, 0.0) is None   # nothing open any more


def test_reads_only() -> None:
    capture = TransactionCapture(1.0, reads_only=True, is_read=is_read)
    assert capture.statement("SELECT 1", True, 0.0) == ["SELECT 1"]
    assert capture.statement("DELETE x", True, 0.0) is None
    capture.statement("BEGIN", True, 0.0)
    capture.statement("SELECT 2", False, 0.0)
    capture.statement("UPDATE y", False, 0.0)
    assert capture.statement("COMMIT", False, 0.0) is None


def test_sample_rate_with_a_seeded_rng() -> None:
    capture = TransactionCapture(0.1, reads_only=False, is_read=is_read)
    rng = random.Random(11)
    taken = sum(capture.statement("INSERT", True, rng.random()) is not None for _ in range(10000))
    assert abs(taken - 1000) <= 4 * (10000 * 0.1 * 0.9) ** 0.5


def test_steps_ride_with_their_texts_and_lost_statements_lose_their_transaction() -> None:
    """Prepared executions: the text is classified, the step (here a tuple) is what is handed back; a statement
    the mirror cannot run (prepared before it started) loses a sampled transaction, and only a sampled one."""
    capture: TransactionCapture[object] = TransactionCapture(1.0, reads_only=True, is_read=is_read)
    assert capture.statement("SELECT $1", True, 0.0, ("SELECT $1", b"7")) == [("SELECT $1", b"7")]
    assert capture.statement("BEGIN", True, 0.0, ("BEGIN",)) is None
    assert capture.statement("SELECT $1", False, 0.0, ("SELECT $1", b"8")) is None
    assert capture.statement("COMMIT", False, 0.0) == [("BEGIN",), ("SELECT $1", b"8"), "COMMIT"]
    assert capture.statement("UPDATE t SET v = $1", True, 0.0, ("UPDATE", b"1")) is None   # reads_only
    assert capture.lost(True, 0.5)           # an autocommit statement of a sampled draw
    capture.statement("BEGIN", True, 0.0)
    assert capture.lost(False, 0.9)          # inside the sampled transaction: it goes
    assert capture.statement("COMMIT", False, 0.0) is None
    assert not capture.lost(False, 0.0)      # no transaction being collected
    sampled = TransactionCapture[str](0.1, reads_only=False, is_read=is_read)
    assert not sampled.lost(True, 0.5)       # not sampled anyway: nothing lost
