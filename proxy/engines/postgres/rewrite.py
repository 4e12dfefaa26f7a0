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
- Parse of a name the client already has (and a server accepted): "prepared statement ... already
  exists" (42P05), as the server says it; a Parse that fails on the server stands for it (REPLACE slot),
  so the server skips to Sync and aborts a transaction block as it would.
- SQL `EXECUTE name [(...)]` of a protocol-level statement: run under its server-side name (prepared
  first where the server lacks it).
- A full cache evicts the least recently used statement with a Close whose reply is dropped.
- Without a server (`answer_alone`): a batch of only Parse / Describe / Close of statements and
  Sync / Flush, whose Parses some server connection of the same (user, database) already accepted
  (`StatementNames.confirmed`) and whose Describes the proxy has seen answered, is answered by the
  proxy; the statements are prepared where they are next bound. This is what keeps a client that
  prepares synchronously while others hold every server connection (pgbench -M prepared, -j < -c)
  from waiting for one, and saves a round trip per prepare.
- A statement whose plan the server invalidated (`StatementNames.retired`) moves to a fresh
  server-side name on the client's next Bind, so the next try works.
"""

from __future__ import annotations

import re
import struct
from collections import OrderedDict
from collections.abc import Callable

from .statements import (
    ClientStatement,
    ParseMessage,
    Scope,
    StatementNames,
    bind_statement,
    close_statement,
    decode_parse,
    describe_statement,
    rewrite_bind,
    target_name,
)
from .wire import messages as m
from .wire.responses import CLOSE, DROP, PARSE, QUERY, REPLACE, SYNTH, ResponseTracker, Slot

_DEALLOCATE_RE = re.compile(rb'\s*deallocate\s+(?:prepare\s+)?(?:"((?:[^"]|"")+)"|([A-Za-z_][A-Za-z0-9_$]*))\s*;?\s*$',
                            re.IGNORECASE)
_EXECUTE_RE = re.compile(rb'(\s*execute\s+)(?:"((?:[^"]|"")+)"|([A-Za-z_][A-Za-z0-9_$]*))(?=\s*(?:\(|;|$))',
                         re.IGNORECASE)
_PARSE_SLOT = Slot(PARSE)
# Fails on every server (a syntax error) without touching the unnamed statement: stands for a Parse refused here.
_FAILING_PARSE = m.message(b"P", b"dbproxy_refused\x00dbproxy refused this Parse\x00\x00\x00")
_STATEMENT = 0x53   # 'S' in Describe / Close
_U32 = struct.Struct("!I")
_READY_IDLE = m.ready_for_query(b"I")


class StatementRewriter:
    """One client's named statements and their server-side names; see the module docstring."""

    __slots__ = ("statements", "names", "limit", "scope", "to_client", "replaying")

    def __init__(self, names: StatementNames, limit: int, scope: Scope = ("", "")) -> None:
        self.statements: dict[bytes, ClientStatement] = {}   # client name -> statement
        self.names = names
        self.limit = limit            # max_prepared_statements per server connection
        self.scope = scope            # (server user, database) of this client's server connections
        self.replaying = False        # failover.replay re-sends the transaction's messages (no 42P05 then)
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
        known = self.statements.get(parse.name)
        if known is not None and not self.replaying and (known.server_name, self.scope) in self.names.confirmed:
            quoted = parse.name.decode("utf-8", "replace")
            tracker.push(Slot(PARSE, REPLACE, m.error_response("42P05", f'prepared statement "{quoted}" already exists')))
            return _FAILING_PARSE
        name = self.names.name_for(parse)
        statement = self.statements[parse.name] = ClientStatement.of(parse, name)
        if name in prepared:
            prepared.move_to_end(name)
            self._synthesize(tracker, m.PARSE_COMPLETE)
            return b""
        evicted = self._remember(name, prepared, tracker)
        tracker.push(Slot(PARSE, payload=name))
        return evicted + statement.parse

    def adopt(self, parse: ParseMessage) -> None:
        """A Parse the proxy answered itself (a query-cache hit): the statement is prepared where it is next bound."""
        self.statements[parse.name] = ClientStatement.of(parse, self.names.name_for(parse))

    def bind(self, body: bytes, prepared: OrderedDict[bytes, None], tracker: ResponseTracker) -> bytes | None:
        """The Bind to send instead, its reply's slot pushed (None: forward the client's own)."""
        start, end = bind_statement(body)
        if start == end:
            return None
        statement = self._current(body[start:end])
        if statement is None:
            return None
        prefix = self._ensure(statement, prepared, tracker)
        tracker.push(statement.bind_slot)
        return prefix + rewrite_bind(body, start, end, statement.server_name)

    def describe(self, body: bytes, prepared: OrderedDict[bytes, None], tracker: ResponseTracker) -> bytes | None:
        """The Describe to send instead, its reply's slot pushed (None: forward the client's own)."""
        kind, name = target_name(body)
        if kind != _STATEMENT or not name:
            return None
        statement = self._current(name)
        if statement is None:
            return None
        prefix = self._ensure(statement, prepared, tracker)
        tracker.push(statement.describe_slot)
        return prefix + describe_statement(statement.server_name)

    def answer_alone(self, data: bytes, effect_free: Callable[[bytes], bool],
                     may_describe: bool) -> tuple[bytes, bool] | None:
        """The replies to a client batch answered without a server (module docstring), and whether
        messages follow its last Sync (the batch stays open); None if it needs a server (nothing changed).

        `effect_free(query)`: the statement changes no session state. `may_describe`: the client's
        settings do not change what a statement's description is (no search_path of its own)."""
        names, scope = self.names, self.scope
        statements = dict(self.statements)
        replies: list[bytes] = []
        size, pos, kind = len(data), 0, 0
        while pos < size:
            if size - pos < 5:
                return None
            kind = data[pos]
            end = pos + 1 + _U32.unpack_from(data, pos + 1)[0]
            if end > size or end - pos < 5:
                return None
            body = data[pos + 5:end]
            pos = end
            if kind == 0x50:   # Parse
                parse = decode_parse(body)
                if not parse.name:
                    return None
                name = names.name_for(parse)
                if ((name, scope) not in names.confirmed or not effect_free(parse.query)
                        or parse.name in statements):   # a name it has: the server path says "already exists"
                    return None
                statements[parse.name] = ClientStatement.of(parse, name)
                replies.append(m.PARSE_COMPLETE)
            elif kind == 0x44:   # Describe
                target, client_name = target_name(body)
                statement = statements.get(client_name)
                if target != _STATEMENT or statement is None or not may_describe:
                    return None
                reply = names.descriptions.get((statement.server_name, scope))
                if reply is None:
                    return None
                replies.append(reply)
            elif kind == 0x43:   # Close
                target, client_name = target_name(body)
                if target != _STATEMENT:
                    return None
                statements.pop(client_name, None)
                replies.append(m.CLOSE_COMPLETE)
            elif kind == 0x53:   # Sync
                replies.append(_READY_IDLE)
            elif kind != 0x48:   # anything but Flush needs a server
                return None
        self.statements = statements
        return b"".join(replies), kind != 0x53

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

    def execute(self, sql: bytes, prepared: OrderedDict[bytes, None], tracker: ResponseTracker) -> bytes | None:
        """SQL `EXECUTE name ...` of one of the client's protocol-level statements: the bytes to send instead
        (its Parse first where this server lacks it, then the Query under the server-side name), the
        Query's slot pushed; None if it is not one (forward the client's own)."""
        match = _EXECUTE_RE.match(sql)
        if match is None:
            return None
        quoted, plain = match.group(2), match.group(3)
        statement = self._current(quoted.replace(b'""', b'"') if quoted else plain.lower())
        if statement is None:
            return None
        prefix = self._ensure(statement, prepared, tracker)
        tracker.push(Slot(QUERY))
        return prefix + m.message(b"Q", match.group(1) + statement.server_name + sql[match.end():] + b"\x00")

    def _remember(self, name: bytes, prepared: OrderedDict[bytes, None], tracker: ResponseTracker) -> bytes:
        """Record name as prepared on the server; returns a Close for the least recently used if full."""
        prepared[name] = None
        if len(prepared) <= self.limit:
            return b""
        oldest, _ = prepared.popitem(last=False)
        tracker.push(Slot(CLOSE, DROP))
        return close_statement(oldest)

    def _current(self, name: bytes) -> ClientStatement | None:
        """The client's statement `name`, moved to a fresh server name if its old one retired."""
        statement = self.statements.get(name)
        if statement is not None and self.names.retired and statement.server_name in self.names.retired:
            source = statement.source
            statement = self.statements[name] = ClientStatement.of(source, self.names.name_for(source))
        return statement

    def _ensure(self, statement: ClientStatement, prepared: OrderedDict[bytes, None],
                tracker: ResponseTracker) -> bytes:
        """The bytes to send before using a client statement: b"", or its Parse where the server lacks it."""
        server_name = statement.server_name
        if server_name in prepared:
            prepared.move_to_end(server_name)
            return b""
        evicted = self._remember(server_name, prepared, tracker)
        tracker.push(Slot(PARSE, DROP, server_name))
        return evicted + statement.parse
