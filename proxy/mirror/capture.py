"""Which client transactions go to the mirror, sans-IO: sampling, reads_only, and assembling a transaction.

Fed with every statement of one client session, in order, with whether it starts a transaction
(no transaction was open on its server) and a uniform draw in [0, 1) made by the caller (a seeded
RNG in tests). A transaction is sampled when its draw is below `sample`. A single-statement
(autocommit) transaction is handed back at once; an explicit one (BEGIN / START TRANSACTION) is
collected up to its COMMIT / END and handed back whole (a ROLLBACK drops it). With reads_only, a
transaction with any statement that is not a read (`is_read`) is not mirrored.
"""

from __future__ import annotations

import re
from collections.abc import Callable

_BEGIN = re.compile(r"\s*(?:begin|start\s+transaction)\b", re.IGNORECASE)
_END = re.compile(r"\s*(?:commit|end|rollback|abort)\b(?!\s+to\b)", re.IGNORECASE)
_ROLLBACK = re.compile(r"\s*(?:rollback|abort)\b", re.IGNORECASE)
MAX_STATEMENTS = 1000   # a longer transaction is not mirrored (the capture would hold it all)


def is_transaction_control(sql: str) -> bool:
    return bool(_BEGIN.match(sql) or _END.match(sql))


class TransactionCapture:
    """One client session's transaction on its way to the mirror; see the module docstring."""

    def __init__(self, sample: float, reads_only: bool, is_read: Callable[[str], bool]) -> None:
        self.sample = sample
        self.reads_only = reads_only
        self.is_read = is_read
        self.current: list[str] | None = None   # the sampled explicit transaction being collected

    def statement(self, sql: str, starts_transaction: bool, draw: float) -> list[str] | None:
        """The complete transaction to mirror now, if this statement completes a sampled one."""
        if starts_transaction:
            self.current = None
            if draw >= self.sample:
                return None
            if _BEGIN.match(sql):
                self.current = [sql]
                return None
            if self.reads_only and not self.is_read(sql):
                return None
            return [sql]
        current = self.current
        if current is None:
            return None
        if _END.match(sql):
            self.current = None
            return None if _ROLLBACK.match(sql) else [*current, sql]
        if (self.reads_only and not self.is_read(sql)) or len(current) >= MAX_STATEMENTS:
            self.current = None
            return None
        current.append(sql)
        return None
