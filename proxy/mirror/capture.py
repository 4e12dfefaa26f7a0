"""Which client transactions go to the mirror, sans-IO: sampling, reads_only, and assembling a transaction.

Fed with every statement of one client session, in order, with whether it starts a transaction
(no transaction was open on its server) and a uniform draw in [0, 1) made by the caller (a seeded
RNG in tests). A transaction is sampled when its draw is below `sample`. A single-statement
(autocommit) transaction is handed back at once; an explicit one (BEGIN / START TRANSACTION) is
collected up to its COMMIT / END and handed back whole (a ROLLBACK drops it). With reads_only, a
transaction with any statement that is not a read (`is_read`) is not mirrored.

Each statement comes with its text (what is classified and matched as BEGIN / COMMIT) and the step
the mirror will run for it (the text itself by default; a prepared execution with its values for
the sender). A statement the mirror cannot run (a prepared execution whose text or values it does
not know) is `lost`: it loses the transaction it is part of.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Generic, TypeVar, cast

_BEGIN = re.compile(r"\s*(?:begin|start\s+transaction)\b", re.IGNORECASE)
_END = re.compile(r"\s*(?:commit|end|rollback|abort)\b(?!\s+to\b)", re.IGNORECASE)
_ROLLBACK = re.compile(r"\s*(?:rollback|abort)\b", re.IGNORECASE)
MAX_STATEMENTS = 1000   # a longer transaction is not mirrored (the capture would hold it all)


S = TypeVar("S")


def is_transaction_control(sql: str) -> bool:
    return bool(_BEGIN.match(sql) or _END.match(sql))


class TransactionCapture(Generic[S]):
    """One client session's transaction on its way to the mirror (its steps of type S); see the module docstring."""

    def __init__(self, sample: float, reads_only: bool, is_read: Callable[[str], bool]) -> None:
        self.sample = sample
        self.reads_only = reads_only
        self.is_read = is_read
        self.current: list[S] | None = None   # the sampled explicit transaction being collected

    def statement(self, sql: str, starts_transaction: bool, draw: float, step: S | None = None) -> list[S] | None:
        """The complete transaction to mirror now (its steps), if this statement completes a sampled one."""
        item = cast(S, sql) if step is None else step
        if starts_transaction:
            self.current = None
            if draw >= self.sample:
                return None
            if _BEGIN.match(sql):
                self.current = [item]
                return None
            if self.reads_only and not self.is_read(sql):
                return None
            return [item]
        current = self.current
        if current is None:
            return None
        if _END.match(sql):
            self.current = None
            return None if _ROLLBACK.match(sql) else [*current, item]
        if (self.reads_only and not self.is_read(sql)) or len(current) >= MAX_STATEMENTS:
            self.current = None
            return None
        current.append(item)
        return None

    def lost(self, starts_transaction: bool, draw: float) -> bool:
        """A statement the mirror cannot run: True if it loses a sampled transaction (then not mirrored)."""
        if starts_transaction:
            self.current = None
            return draw < self.sample
        if self.current is None:
            return False
        self.current = None
        return True
