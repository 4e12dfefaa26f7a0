"""Transaction-mode rewriting of one client's named prepared statements (Parse/Bind/Describe/Close, DEALLOCATE).

Sans-IO: a `StatementRewriter` belongs to one client and works on message bodies, the target
server connection's prepared-statement cache (an ordered set of server-side names, least recently
used first) and its `ResponseTracker`. Each method returns the bytes to send to the server in
place of the client's message (b"" when the proxy answers it itself); answers the proxy makes are
pushed to the tracker as SYNTH slots, and any that are due at once are collected in `to_client`,
which the session writes and empties after each batch.

- Parse of a named statement: the client's name maps to a proxy-wide name (one per query text and
  parameter types, see statements.StatementNames); if the server already has it, ParseComplete is
  synthesized instead of sending it again.
- Bind / Describe of a known statement: rewritten to the server name, re-preparing it first (its
  ParseComplete dropped) when this server connection lacks it.
- Close of a named statement, SQL `DEALLOCATE name`: answered here; the server copy stays cached.
- A full cache evicts the least recently used statement with a Close whose reply is dropped.
"""

from __future__ import annotations

import re
from collections import OrderedDict

from .statements import (
    ClientStatement,
    ParseMessage,
    StatementNames,
    bind_statement,
    close_statement,
    describe_statement,
    rewrite_bind,
    target_name,
)
from .wire import messages as m
from .wire.responses import CLOSE, DROP, PARSE, SYNTH, ResponseTracker, Slot

_DEALLOCATE_RE = re.compile(rb'\s*deallocate\s+(?:prepare\s+)?(?:"((?:[^"]|"")+)"|([A-Za-z_][A-Za-z0-9_$]*))\s*;?\s*$',
                            re.IGNORECASE)
_PARSE_SLOT = Slot(PARSE)
_STATEMENT = 0x53   # 'S' in Describe / Close


class StatementRewriter:
    """One client's named statements and their server-side names; see the module docstring."""

    __slots__ = ("statements", "names", "limit", "to_client")

    def __init__(self, names: StatementNames, limit: int) -> None:
        self.statements: dict[bytes, ClientStatement] = {}   # client name -> statement
        self.names = names
        self.limit = limit            # max_prepared_statements per server connection
        self.to_client: list[bytes] = []

    def take_replies(self) -> bytes:
        """Synthesized replies that were due at once (write them to the client now)."""
        out = b"".join(self.to_client)
        self.to_client.clear()
        return out

    def _synthesize(self, tracker: ResponseTracker, reply: bytes) -> None:
        due = tracker.push(Slot(SYNTH, payload=reply))
        if due:
            self.to_client.append(due)

    def forget_all(self, prepared: OrderedDict[bytes, None]) -> None:
        """DISCARD ALL / DEALLOCATE ALL: the client's statements and the server's copies are gone."""
        self.statements.clear()
        prepared.clear()

    def query_of(self, bind_body: bytes) -> bytes | None:
        """The text of the named statement a Bind runs (None for unnamed or unknown ones)."""
        start, stop = bind_statement(bind_body)
        statement = self.statements.get(bind_body[start:stop]) if start != stop else None
        return statement.query if statement is not None else None

    def parse(self, parse: ParseMessage, body: bytes, prepared: OrderedDict[bytes, None],
              tracker: ResponseTracker) -> bytes:
        if not parse.name:
            tracker.push(_PARSE_SLOT)
            return m.message(b"P", body)
        name = self.names.name_for(parse)
        message = parse.encode(name)
        self.statements[parse.name] = ClientStatement(name, message, parse.query)
        if name in prepared:
            prepared.move_to_end(name)
            self._synthesize(tracker, m.PARSE_COMPLETE)
            return b""
        evicted = self._remember(name, prepared, tracker)
        tracker.push(Slot(PARSE, payload=name))
        return evicted + message

    def bind(self, body: bytes, prepared: OrderedDict[bytes, None], tracker: ResponseTracker) -> bytes | None:
        """The Bind to send instead (None: forward the client's own)."""
        start, end = bind_statement(body)
        if start == end:
            return None
        ensured = self._ensure(body[start:end], prepared, tracker)
        if ensured is None:
            return None
        prefix, server_name = ensured
        return prefix + rewrite_bind(body, start, end, server_name)

    def describe(self, body: bytes, prepared: OrderedDict[bytes, None], tracker: ResponseTracker) -> bytes | None:
        kind, name = target_name(body)
        if kind != _STATEMENT or not name:
            return None
        ensured = self._ensure(name, prepared, tracker)
        if ensured is None:
            return None
        prefix, server_name = ensured
        return prefix + describe_statement(server_name)

    def close(self, body: bytes, tracker: ResponseTracker) -> bool:
        """Answer Close of a named statement here (True); the server copy stays cached."""
        kind, name = target_name(body)
        if kind != _STATEMENT or not name:
            return False
        self.statements.pop(name, None)
        self._synthesize(tracker, m.CLOSE_COMPLETE)
        return True

    def deallocate(self, sql: bytes, tracker: ResponseTracker) -> bool:
        """SQL `DEALLOCATE name` of a protocol-level statement (libpq < 17 does that): answered here."""
        match = _DEALLOCATE_RE.match(sql)
        if match is None:
            return False
        quoted, plain = match.group(1), match.group(2)
        name = quoted.replace(b'""', b'"') if quoted else plain.lower()
        if plain and name == b"all":
            return False
        if name not in self.statements:
            return False
        del self.statements[name]
        self._synthesize(tracker, m.message(b"C", b"DEALLOCATE\x00") + m.ready_for_query(tracker.status))
        return True

    def _remember(self, name: bytes, prepared: OrderedDict[bytes, None], tracker: ResponseTracker) -> bytes:
        """Record name as prepared on the server; returns a Close for the least recently used if full."""
        prepared[name] = None
        if len(prepared) <= self.limit:
            return b""
        oldest, _ = prepared.popitem(last=False)
        tracker.push(Slot(CLOSE, DROP))
        return close_statement(oldest)

    def _ensure(self, name: bytes, prepared: OrderedDict[bytes, None],
                tracker: ResponseTracker) -> tuple[bytes, bytes] | None:
        """(bytes to send first, server name) for a client statement, re-preparing it if needed."""
        statement = self.statements.get(name)
        if statement is None:
            return None
        server_name = statement.server_name
        if server_name in prepared:
            prepared.move_to_end(server_name)
            return b"", server_name
        evicted = self._remember(server_name, prepared, tracker)
        tracker.push(Slot(PARSE, DROP, server_name))
        return evicted + statement.parse, server_name
