"""Transaction replay on failover (failover.replay), the engine-neutral sans-IO part: what is recorded, what is decided.

While a client's transaction runs on the writer, the engine feeds this module two streams:

- the client's messages as sent, split into *units* (a unit ends where the server reports the
  transaction status: a PostgreSQL Query or Sync, a MySQL command): `TransactionRecord`, bounded
  by `max_bytes` of messages and `max_units` units (past the bound the transaction is not
  replayable, and nothing more is kept);
- the result bytes relayed to the client: `ResultDigest` hashes the parts that do not depend on
  timing (the engine says which: PostgreSQL leaves out ParameterStatus, NoticeResponse and
  NotificationResponse) and counts the units answered. When a unit ends outside a transaction the
  record starts over: what came before is settled (committed, rolled back or answered) and must
  never run again.

When the server connection dies, `decide()` says what happens: nothing to do, not replayable, the
outcome is unknown (a COMMIT or an autocommit write was in flight: it may have taken effect), or
replay. A replay sends the recorded units to the new writer; the digest then checks that the first
`length` bytes of the replayed results hash to what the client saw (`ResultDigest.expect`) and
only after that are results relayed again. No I/O and no clock here.
"""

from __future__ import annotations

import enum
import hashlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass


class Verdict(enum.Enum):
    NOTHING = "nothing"                 # no unit of this transaction is left to answer or to keep
    NOT_REPLAYABLE = "not_replayable"   # past the bounds, COPY, ...: the client gets the error
    UNKNOWN = "unknown_outcome"         # a COMMIT / autocommit write in flight: 08007-style error
    REPLAY = "replay"


# What the engine says of one unit not yet answered (see decide()).
@dataclass(frozen=True, slots=True)
class UnitTraits:
    commits: bool = False     # contains COMMIT / END / PREPARE TRANSACTION (or a MySQL equivalent)
    begins: bool = False      # starts a transaction block (BEGIN / START TRANSACTION)
    ends: bool = False        # ends one without committing (ROLLBACK)
    reads_only: bool = True   # every statement in it only reads (no write, no volatile function)


class TransactionRecord:
    """The units of the current transaction that a replay would send again; see the module docstring."""

    __slots__ = ("units", "open_unit", "size", "first", "max_bytes", "max_units", "refused")

    def __init__(self, max_bytes: int, max_units: int) -> None:
        self.max_bytes = max_bytes
        self.max_units = max_units
        self.units: list[bytes] = []      # complete units, oldest first
        self.open_unit = bytearray()      # messages after the last unit end (an extended batch without Sync)
        self.size = 0                     # bytes in units and open_unit
        self.first = 0                    # index (since the record began) of units[0]
        self.refused = ""                 # why this transaction is not replayable ("" while it is)

    def clear(self) -> None:
        if not self.size and not self.first and not self.refused and not self.units:
            return
        self.units.clear()
        self.open_unit.clear()
        self.size = self.first = 0
        self.refused = ""

    def refuse(self, reason: str) -> None:
        """The transaction cannot be replayed (COPY, ...): keep nothing more."""
        if not self.refused:
            self.refused = reason
        self.units.clear()
        self.open_unit.clear()
        self.size = 0

    def add(self, messages: bytes | memoryview, ends_unit: bool) -> None:
        """Client messages as sent; ends_unit: the last one ends a unit (the server answers it with the
        transaction status) and no other one in them does."""
        if self.refused:
            return
        self.size += len(messages)
        if ends_unit:
            if self.open_unit:
                self.open_unit += messages
                self.units.append(bytes(self.open_unit))
                self.open_unit.clear()
            else:
                self.units.append(bytes(messages))
        else:
            self.open_unit += messages
        if self.size > self.max_bytes:
            self.refuse(f"more than {self.max_bytes} bytes of statements")
        elif len(self.units) > self.max_units:
            self.refuse(f"more than {self.max_units} statements")

    def settle(self, answered: int) -> None:
        """The first `answered` units (counted since the record began) ended outside a transaction:
        drop them (and, when the last one was answered, the messages after it too are a new start)."""
        drop = min(answered - self.first, len(self.units))
        if drop <= 0:
            return
        for unit in self.units[:drop]:
            self.size -= len(unit)
        del self.units[:drop]
        self.first += drop

    def replay_bytes(self) -> bytes:
        """Every kept message, in order: what a replay sends."""
        return b"".join(self.units) + bytes(self.open_unit)


def decide(record: TransactionRecord, settled: int, answered: int, in_transaction: bool,
           traits: Callable[[bytes], UnitTraits]) -> Verdict:
    """What to do for a transaction whose server connection died.

    settled, answered: units answered up to the last transaction end, and in all (counted since the
    record began, see ResultDigest); in_transaction: the last
    status the client was told says it is inside a transaction block; traits(unit) describes a unit
    not yet answered. A unit still in flight that commits, or that runs outside a transaction block
    and may write, has an unknown outcome; anything else is replayed (reads in autocommit too: a
    read changes nothing, whether it ran or not)."""
    record.settle(settled)
    if record.refused:
        return Verdict.NOT_REPLAYABLE
    pending: Sequence[bytes] = record.units[answered - record.first:] if answered >= record.first else record.units
    open_unit = bytes(record.open_unit)
    if not in_transaction and not pending and not open_unit:
        return Verdict.NOTHING
    inside = in_transaction
    for unit in [*pending, open_unit] if open_unit else pending:
        t = traits(unit)
        if t.commits:
            return Verdict.UNKNOWN
        if t.begins:
            inside = True
        elif not inside and not t.reads_only:
            return Verdict.UNKNOWN
        if t.ends:
            inside = False
    return Verdict.REPLAY


# ResultDigest modes.
RECORD, VERIFY, MISMATCH = 0, 1, 2


class ResultDigest:
    """A hash of the result bytes relayed to the client since the record last started over.

    An engine subclass frames its server protocol in `feed(data) -> bytes to relay` and calls
    `_take()` for each run of bytes that counts, `_answered(idle)` at each end of a unit. After
    `expect()`, the first `length` bytes taken are checked against the recorded hash instead of
    being relayed (`mode` becomes RECORD again when they match, MISMATCH when they do not)."""

    __slots__ = ("_hash", "length", "answered", "settled", "mode", "_want", "_want_length", "_seen")

    def __init__(self) -> None:
        self._hash = hashlib.blake2b(digest_size=16)
        self.length = 0       # bytes hashed since the record started over
        self.answered = 0     # units answered since the record began
        self.settled = 0      # units answered up to the last one that ended outside a transaction
        self.mode = RECORD
        self._want = b""
        self._want_length = 0
        self._seen = 0

    def restart(self) -> None:
        self._hash = hashlib.blake2b(digest_size=16)
        self.length = self.answered = self.settled = 0
        self.mode = RECORD

    def expect(self) -> None:
        """A replay begins: the next `length` bytes must hash to what the client saw."""
        self._want, self._want_length = self._hash.digest(), self.length
        self._hash = hashlib.blake2b(digest_size=16)
        self._seen = 0
        self.mode = VERIFY
        if self._want_length == 0:
            self._verified()

    def again(self) -> None:
        """The replay's own connection was lost before the check was done: check the next one from the start."""
        if self.mode != RECORD:
            self._hash = hashlib.blake2b(digest_size=16)
            self._seen = 0
            self.mode = VERIFY

    @property
    def verifying(self) -> bool:
        return self.mode == VERIFY

    def fail(self) -> None:
        """The replay cannot match (its results ended before reaching what the client saw)."""
        self.mode = MISMATCH

    def feed(self, data: bytes) -> bytes:
        """Hash data as it is (every byte counts; an engine subclass frames its protocol instead);
        returns the bytes to relay."""
        skipped = self._take(data)
        if self.mode != RECORD:
            return b""
        return data[skipped:] if skipped else data

    def _take(self, run: bytes | memoryview) -> int:
        """Hash a run of counted bytes; in VERIFY mode returns how many of them were the replayed
        prefix (not to be relayed), else 0."""
        if self.mode == RECORD:
            self._hash.update(run)
            self.length += len(run)
            return 0
        if self.mode == MISMATCH:
            return len(run)
        need = self._want_length - self._seen
        part = run[:need] if len(run) > need else run
        self._hash.update(part)
        self._seen += len(part)
        if self._seen == self._want_length:
            if self._hash.digest() != self._want:
                self.mode = MISMATCH
                return len(run)
            self._verified()
            if len(part) < len(run):
                self._hash.update(run[len(part):])
                self.length += len(run) - len(part)
        return len(part)

    def _verified(self) -> None:
        self.mode = RECORD
        self.length = self._want_length

    def _answered(self, idle: bool) -> None:
        """A unit's answer ended (its transaction status relayed); idle: outside a transaction."""
        if self.mode != RECORD:
            return
        self.answered += 1
        if idle:
            self.settled = self.answered
            self._hash = hashlib.blake2b(digest_size=16)
            self.length = 0
