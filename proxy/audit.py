"""The audit log (SPEC §10): JSON lines for login attempts, refusals, disconnects, admin commands, statements.

`[server] audit_log = "path" | "stderr"` turns it on; `audit_statements = "none" | "ddl" | "writes"
| "all"` adds client statements (their text, at most STATEMENT_TEXT_LIMIT bytes; never bind
parameters). No line ever carries a password, token or verifier: login lines name the user and the
auth method only, and the string literals of statements that set a password (PASSWORD '…',
IDENTIFIED BY '…') are masked before they are written.

Lines are buffered and written at most FLUSH_INTERVAL later (and on close): a write per line would
be a syscall per login. Every line has "time" (UTC, ms) and "event"; the rest depends on it:

- login:      client, cluster, endpoint, user, database, auth_method, tls, outcome (success | failure), reason
- refused:    client, cluster, endpoint, reason (allowlist | rate), dropped (refusals not written since the last)
- disconnect: client, cluster, endpoint, user, database, connection_id, reason, seconds, transactions
- admin:      client, user, command, outcome (ok | error), reason
- statement:  client, cluster, endpoint, user, database, connection_id, kind (ddl | write | read | unknown), text
"""

from __future__ import annotations

import asyncio
import json
import re
import sys
import time
from typing import TYPE_CHECKING, Any, TextIO

from .routing.classify import Classification, Route

if TYPE_CHECKING:
    from .core.session import ClientSessionCore

STATEMENT_TEXT_LIMIT = 4096
FLUSH_INTERVAL = 0.05
MAX_BUFFERED_LINES = 256
# Which statement kinds each audit_statements setting writes ("unknown": cannot tell, so written).
AUDITED_KINDS: dict[str, frozenset[str]] = {
    "none": frozenset(),
    "ddl": frozenset({"ddl", "unknown"}),
    "writes": frozenset({"ddl", "write", "unknown"}),
    "all": frozenset({"ddl", "write", "read", "unknown"}),
}
# Classifier reasons (both engines) of statements that go to the primary but change no data.
_SESSION_ONLY = frozenset({"begin", "begin serializable", "set", "set transaction", "discard", "listen", "unlisten",
                           "use", "deallocate", "fetch", "close cursor", "commit", "rollback"})
_DDL_REASONS = frozenset({"ddl", "create table as"})
# A statement that may carry a password: its string literals are masked.
_SECRET_WORDS = re.compile(rb"password|identified|secret|token", re.IGNORECASE)
_LITERALS = re.compile(rb"'(?:[^'\\]|\\.|'')*'?|\"(?:[^\"\\]|\\.|\"\")*\"?|\$(\w*)\$.*?(?:\$\1\$|$)",
                       re.DOTALL)


def statement_kind(verdict: Classification, sql: bytes) -> str:
    """"ddl", "write", "read" or "unknown" for the audit, from the split classifier's verdict.

    Hinted texts (the hint hides the statement's own reason), unparsable ones and texts of several
    statements that go to the primary for another reason than DDL are "unknown": every setting but
    "none" writes them.
    """
    reason = verdict.reason
    if reason in _DDL_REASONS:
        return "ddl"
    if reason in ("hint", "unparsable") or (verdict.route is Route.PRIMARY and b";" in sql.rstrip(b"; \t\r\n")):
        return "unknown"
    if verdict.route is Route.REPLICA or verdict.neutral or reason in _SESSION_ONLY or reason.startswith("show"):
        return "read"
    return "write"


def mask_secrets(sql: bytes) -> bytes:
    """The statement with every string literal masked if it may set a password (audit log, recordings)."""
    return _LITERALS.sub(b"'***'", sql) if _SECRET_WORDS.search(sql) else sql


def masked_text(sql: bytes, limit: int = STATEMENT_TEXT_LIMIT) -> tuple[str, bool]:
    """The statement as the audit writes it: secrets' literals masked, cut at `limit` bytes; (text, truncated)."""
    sql = mask_secrets(sql)
    truncated = len(sql) > limit
    if truncated:
        sql = sql[:limit]
    return sql.decode("utf-8", "ignore" if truncated else "replace"), truncated


def _stamp(now: float) -> str:
    second = int(now)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second)) + f".{int((now - second) * 1000):03d}Z"


class AuditLog:
    """Writes audit lines to a file (appended) or stderr; see the module docstring.

    The file is opened by open() and again by reopen() on reload (log rotation: the old file is
    closed after its lines are written).
    """

    def __init__(self, target: str, statements: str = "none", clock: Any = time.time) -> None:
        self.target = target
        self.statements = statements
        self.kinds = AUDITED_KINDS[statements]
        self.clock = clock
        self._stream: TextIO | None = None
        self._lines: list[str] = []
        self._timer: asyncio.TimerHandle | None = None

    def open(self) -> None:
        """Open the target (raises OSError when the file cannot be opened for appending)."""
        self._stream = sys.stderr if self.target == "stderr" else open(  # noqa: SIM115 - kept open
            self.target, "a", encoding="utf-8")

    def reopen(self, target: str, statements: str) -> None:
        """Reload: write what is buffered, then switch to `target` (re-opened even when unchanged)."""
        self.flush()
        old, old_target = self._stream, self.target
        self.target = target
        try:
            self.open()
        except OSError:
            self._stream, self.target = old, old_target
            raise
        if old is not None and old is not sys.stderr and old is not self._stream:
            old.close()
        self.statements = statements
        self.kinds = AUDITED_KINDS[statements]

    # ---- events -----------------------------------------------------------------------------------

    def login(self, session: ClientSessionCore, outcome: str, reason: str = "") -> None:
        self.write({"event": "login", **_who(session), "auth_method": session.auth_method(),
                    "tls": getattr(session, "tls_version", None), "outcome": outcome, "reason": reason})

    def disconnect(self, session: ClientSessionCore, reason: str, now: float) -> None:
        self.write({"event": "disconnect", **_who(session), "connection_id": session.pid, "reason": reason,
                    "seconds": round(now - session.connected_at, 3), "transactions": session.transactions})

    def refused(self, client: str, cluster: str, endpoint: str, reason: str, dropped: int) -> None:
        self.write({"event": "refused", "client": client, "cluster": cluster, "endpoint": endpoint,
                    "reason": reason, "dropped": dropped})

    def admin_login(self, client: str, user: str, outcome: str, reason: str = "") -> None:
        self.write({"event": "login", "client": client, "cluster": "", "endpoint": "admin", "user": user,
                    "database": "dbproxy", "auth_method": "password", "tls": None, "outcome": outcome,
                    "reason": reason})

    def admin_command(self, client: str, user: str, command: str, outcome: str, reason: str = "") -> None:
        text, _ = masked_text(command.encode(), STATEMENT_TEXT_LIMIT)
        self.write({"event": "admin", "client": client, "user": user, "command": text, "outcome": outcome,
                    "reason": reason})

    def statement(self, session: ClientSessionCore, sql: bytes) -> None:
        """A client statement (simple query, Parse, COM_QUERY, COM_STMT_PREPARE), if its kind is audited."""
        kind = statement_kind(session.cluster.classifier.classify(sql.decode("utf-8", "replace")), sql)
        if kind not in self.kinds:
            return
        text, truncated = masked_text(sql)
        entry = {"event": "statement", **_who(session), "connection_id": session.pid, "kind": kind, "text": text}
        if truncated:
            entry["truncated"] = True
        self.write(entry)

    # ---- writing ----------------------------------------------------------------------------------

    def write(self, entry: dict[str, Any]) -> None:
        self._lines.append(json.dumps({"time": _stamp(self.clock()), **entry}, ensure_ascii=False))
        if len(self._lines) >= MAX_BUFFERED_LINES:
            self.flush()
        elif self._timer is None:
            try:
                loop = asyncio.get_running_loop()
            except RuntimeError:
                self.flush()
                return
            self._timer = loop.call_later(FLUSH_INTERVAL, self._flush_from_timer)

    def _flush_from_timer(self) -> None:
        self._timer = None
        self.flush()

    def flush(self) -> None:
        if not self._lines or self._stream is None:
            return
        text = "\n".join(self._lines) + "\n"
        self._lines.clear()
        try:
            self._stream.write(text)
            self._stream.flush()
        except (OSError, ValueError):   # disk full, file closed: the lines are lost, the proxy carries on
            pass

    def close(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self.flush()
        if self._stream is not None and self._stream is not sys.stderr:
            self._stream.close()
        self._stream = None


def _who(session: ClientSessionCore) -> dict[str, Any]:
    return {"client": session.peer, "cluster": session.cluster.name, "endpoint": session.endpoint.name,
            "user": session.user_name, "database": session.database}
