"""The query cache in one MySQL client's relay (SPEC §11): answer cached COM_QUERY SELECTs and
COM_STMT_EXECUTEs of prepared SELECTs, store the text / binary result sets of misses (cache_replies),
and invalidate the tables a client's writes wrote before it sees the OK that ends its transaction
(autocommit: the statement's; else COMMIT's). Made only for clusters with a [cache] section; the
shared layer (proxy/cache) does the rest.

A read is looked up only when it is the one command of a client read, outside a transaction, with
autocommit on and the session not pinned; it is keyed by cluster, schema, server user, the client's
capability flags and handshake character set, every variable it SET (sql_mode, time_zone, NAMES,
...), and the text. An execute is keyed by the same, the command (binary and text results never share
an entry), its prepared text and its parameters (cache_replies.execute_key: the NULL bitmap, the types
in force, the values); one with a cursor, or after COM_STMT_SEND_LONG_DATA, is not looked up. The
plan of a prepared text (cacheable? which tables? what it writes) is made once per catalog snapshot.
The writes executes run are seen by their prepared text and invalidate as text writes do.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING

from ...cache.front import QueryCache, Ticket
from ...cache.keys import key_prefix, statement_key
from ...cache.policy import CachePlan, plan
from ...cache.scopes import ALL_TABLES
from ...core.session import READY
from ...core.tasks import TaskSet
from .cache_facts import MysqlCacheFacts, Written
from .cache_replies import execute_key, storable, storable_binary
from .command_framing import command_end
from .wire.codes import Command, Status

if TYPE_CHECKING:
    from ...cache.catalog import CatalogReader, CatalogSnapshot
    from .server import MysqlServerConnection
    from .session import MysqlClientSession
    from .statements import ClientStatement

log = logging.getLogger("dbproxy.cache")
_MAX_PACKET = 0xFFFFFF
CATALOG_WAIT = 0.5
_MAX_STATEMENTS = 1000   # prepared texts whose plan / writes are remembered
_EXECUTE = bytes((Command.STMT_EXECUTE,))


class MysqlSessionCache:
    """One client's view of its cluster's cache; every method is called by MysqlClientSession."""

    def __init__(self, cache: QueryCache, facts: MysqlCacheFacts, catalog: CatalogReader) -> None:
        self.cache = cache
        self.facts = facts
        self.catalog = catalog
        self.dirty: set[str] = set()          # tables written since the last invalidation
        self.ddl = False
        # A write sent with more commands after it (pipelined, or a multi-statement text): its OK comes
        # before the response ends, so everything is held until it does (then invalidated, then sent).
        self.hold_all = False
        self.ticket: Ticket | None = None
        self.capture: list[bytes] | None = None
        self.capture_binary = False             # ... of a COM_STMT_EXECUTE
        self.miss: bytes | None = None          # ... the command, until its first answer bytes (see client_data)
        self.captured = 0
        self.waiting: bytearray | None = None   # client bytes that arrived during a lookup / catalog read
        self.held: list[bytes] | None = None    # server bytes held until an invalidation is done
        self.passing = False
        self.resuming = False
        self.catalog_waited = False
        self.tasks = TaskSet()                   # lookups and invalidations in flight (run to the end)
        self._settings: tuple[object, ...] | None = None
        self._prefix = b""
        # prepared texts -> (the catalog snapshot, the plan / what the text writes under it)
        self._plans: dict[bytes, tuple[CatalogSnapshot | None, CachePlan | None]] = {}
        self._writes: dict[bytes, tuple[CatalogSnapshot | None, Written]] = {}

    # ---- client → server ------------------------------------------------------------------------

    def client_data(self, session: MysqlClientSession, data: bytes) -> bool:
        """True if `data` was taken here (answered from the cache, or held behind a lookup)."""
        if self.passing:
            self.passing = False
            return False
        if self.waiting is not None:
            self.waiting += data
            return True
        if self.ticket is not None:
            if data == self.miss:   # the miss itself, handed on again once a server is attached
                self.miss = None
                return False
            self._abandon()   # more before the miss's answer: not stored
        single = (len(data) >= 5 and (data[4] == Command.QUERY or data[4] == Command.STMT_EXECUTE) and data[3] == 0
                  and int.from_bytes(data[:3], "little") + 4 == len(data) and len(data) - 4 < _MAX_PACKET)
        if single and not self.catalog_waited and self._hold_for_catalog(session, data):
            return True
        if single and self._idle(session):
            if data[4] == Command.QUERY:
                return self._query(session, data)
            taken = self._execute(session, data)
            if taken is not None:
                return taken
        self._scan(session, data)
        return False

    def _idle(self, session: MysqlClientSession) -> bool:
        server = session.server
        if (session._pending or session._held or session.pinned is not None or session.changing_user
                or session._long_data or session._awaiting_prepare):
            return False
        if not session._status() & Status.AUTOCOMMIT:
            return False
        return server is None or server.tracker.idle

    def _hold_for_catalog(self, session: MysqlClientSession, data: bytes) -> bool:
        if self.catalog.snapshot("", self.cache.clock()) is not None:
            return False
        reading = self.catalog.reading("")
        if reading is None:
            return False
        self.waiting = bytearray()
        session.waits.start(self._after_catalog(session, data, reading))   # cancelled if the client goes
        return True

    async def _after_catalog(self, session: MysqlClientSession, data: bytes, reading: asyncio.Task[None]) -> None:
        try:
            await asyncio.wait_for(asyncio.shield(reading), CATALOG_WAIT)
        except asyncio.CancelledError:
            if not reading.cancelled():
                raise            # this task itself is cancelled: do not relay on
        except Exception:        # TimeoutError, or the read failed: relay without the catalog
            pass
        self._resume_client(session, data, catalog=True)

    def _resume_client(self, session: MysqlClientSession, data: bytes | None, catalog: bool = False) -> None:
        waiting, self.waiting = self.waiting or bytearray(), None
        if session.state != READY or session.transport is None:
            return
        if data is not None:
            self.catalog_waited = catalog
            try:
                session._client_data(data)
            finally:
                self.catalog_waited = False
        if waiting:
            session._client_data(bytes(waiting))

    def _scan(self, session: MysqlClientSession, data: bytes) -> None:
        """Note the tables the complete COM_QUERY / COM_STMT_EXECUTE commands in `data` write."""
        pos, size = 0, len(data)
        commands = 0
        wrote = False
        while size - pos >= 5:
            try:
                end = command_end(data, pos)
            except Exception:   # too large: the session refuses it
                return
            command = data[pos + 4]
            if command == Command.QUERY and data[pos:pos + 3] == b"\xff\xff\xff":
                # A multi-packet text (16 MiB or more) is not parsed: it may write anything. Noted from
                # its first header, also while the rest is still to come (relayed as it arrives).
                self.dirty.add(ALL_TABLES)
                self.ddl = wrote = True
            if end > size:
                return
            commands += 1
            if command == Command.QUERY and end - pos - 4 < _MAX_PACKET:
                wrote = self._wrote(data[pos + 5:end].decode("utf-8", "replace")) or wrote
            elif command == Command.STMT_EXECUTE and end - pos >= 9:
                statement = session.prepared.by_id.get(int.from_bytes(data[pos + 5:pos + 9], "little"))
                if statement is not None:
                    wrote = self._wrote_prepared(statement.sql) or wrote
            pos = end
        if wrote and commands > 1:
            self.hold_all = True

    def _wrote(self, sql: str, written: Written | None = None) -> bool:
        """Note what `sql` writes (`written`: already known); True if it writes something."""
        if written is None:
            written = self.facts.written(sql, self.catalog.snapshot("", self.cache.clock()))
        self.dirty.update(written.tables)
        if written.ddl:
            self.ddl = True
        if written.tables and ";" in sql:
            self.hold_all = True   # (a multi-statement text; a ";" in a literal only holds more than needed)
        return bool(written.tables)

    def _wrote_prepared(self, sql: bytes) -> bool:
        """_wrote() of a prepared text (one statement), which is not read again while the catalog is the same."""
        snapshot = self.catalog.snapshot("", self.cache.clock())
        known = self._writes.get(sql)
        if known is not None and known[0] is snapshot:
            return self._wrote("", known[1])
        written = self.facts.written(sql.decode("utf-8", "replace"), snapshot)
        if len(self._writes) >= _MAX_STATEMENTS:
            self._writes.clear()
        self._writes[sql] = (snapshot, written)
        return self._wrote("", written)

    def _key(self, session: MysqlClientSession, statement: bytes, parameters: bytes = b"") -> str:
        state = session.state_vars
        variables = tuple(sorted((name, change.value) for name, change in state.variables.items()))
        settings = (state.schema, session.capabilities, session.charset, variables)
        if settings != self._settings:
            login = session.login
            assert login is not None
            self._settings = settings
            self._prefix = key_prefix(session.cluster.name, state.schema, login.user.server_user,
                                      [("capabilities", str(session.capabilities)), ("charset", str(session.charset)),
                                       *variables])
        return statement_key(self._prefix, statement, parameters)

    def _query(self, session: MysqlClientSession, data: bytes) -> bool:
        sql = data[5:].decode("utf-8", "replace")
        chosen = plan(sql, self.facts.read(sql, self.catalog.snapshot("", self.cache.clock())), False,
                      self.cache.settings)
        if chosen is None:
            self._wrote(sql)
            return False
        return self._look(session, data, self._key(session, data[4:]), chosen)

    def _execute(self, session: MysqlClientSession, data: bytes) -> bool | None:
        """A COM_STMT_EXECUTE: looked up as _query does (True / False); None: not one of a cacheable read."""
        statement = session.prepared.by_id.get(int.from_bytes(data[5:9], "little")) if len(data) >= 14 else None
        if statement is None:
            return None
        keyed = execute_key(data[4:], statement.num_params, statement.types)
        if keyed is None:
            return None
        chosen = self._prepared_plan(statement.sql)
        if chosen is None:
            return None
        if keyed.types is not None:
            statement.types = keyed.types   # as execute_payload keeps them, for executes that send none
        return self._look(session, data, self._key(session, _EXECUTE + statement.sql, keyed.parameters), chosen,
                          statement)

    def _prepared_plan(self, sql: bytes) -> CachePlan | None:
        """The plan of a prepared text: made once per catalog snapshot."""
        snapshot = self.catalog.snapshot("", self.cache.clock())
        known = self._plans.get(sql)
        if known is not None and known[0] is snapshot:
            return known[1]
        text = sql.decode("utf-8", "replace")
        chosen = plan(text, self.facts.read(text, snapshot), False, self.cache.settings)
        if len(self._plans) >= _MAX_STATEMENTS:
            self._plans.clear()
        self._plans[sql] = (snapshot, chosen)
        return chosen

    def _look(self, session: MysqlClientSession, data: bytes, key: str, chosen: CachePlan,
              statement: ClientStatement | None = None) -> bool:
        """Look `key` up: a hit answered now (True), a miss forwarded with its response captured (False),
        or a wait for the backend with the client's bytes held (True). `statement`: an execute's."""
        now = self.cache.lookup_now(key, chosen.tables, chosen.ttl)
        if now is not None:
            return self._answer(session, now[0], now[1], data, statement)
        self.waiting = bytearray()
        self.tasks.start(self._lookup(session, data, key, chosen.tables, chosen.ttl, statement))
        return True

    async def _lookup(self, session: MysqlClientSession, data: bytes, key: str, tables: tuple[str, ...],
                      ttl: float, statement: ClientStatement | None) -> None:
        try:
            value, ticket = await self.cache.lookup(key, tables, ttl)
        except Exception:   # never an error to the client: run the query
            log.exception("cache lookup failed")
            value, ticket = None, None
        if session.state != READY or session.transport is None:
            if ticket is not None:
                self.cache.complete(ticket, None)
            self.waiting = None
            return
        if self._answer(session, value, ticket, data, statement):
            self._resume_client(session, None)
        else:
            self.passing = True
            self._resume_client(session, data)

    def _answer(self, session: MysqlClientSession, value: bytes | None, ticket: Ticket | None, data: bytes,
                statement: ClientStatement | None) -> bool:
        """A hit: write it (True). A miss: capture the response it will get (False: forward the data)."""
        if value is not None:
            session.queries += 1
            session.write(value)   # framed from sequence id 1, as every reply is (cache_replies)
            return True
        if ticket is not None:
            self.ticket, self.capture, self.captured = ticket, [], 0
            self.capture_binary = statement is not None
            self.miss = data
        return False

    def _abandon(self) -> None:
        ticket, self.ticket, self.capture, self.miss = self.ticket, None, None, None
        if ticket is not None:
            self.cache.complete(ticket, None)

    # ---- server → client ------------------------------------------------------------------------

    def server_data(self, session: MysqlClientSession, server: MysqlServerConnection, data: bytes) -> bool:
        """True if `data` is held here (it reaches the client after the invalidation it waits for)."""
        if self.resuming:
            self.resuming = False
            return False
        tracker = server.tracker
        if self.capture is not None:
            self._captured(session, server, data)
        if self.held is not None:
            self.held.append(data)
            if self.hold_all and tracker.quiet:   # the held batch is answered: invalidate, then send it
                self.hold_all = False
                self._invalidate_then_send(session, server)
            return True
        if self.hold_all and not tracker.quiet:
            self.held = [data]
            return True
        self.hold_all = False
        if (self.dirty or self.ddl) and tracker.quiet and not tracker.in_transaction:
            tables = self._take_dirty()
            if not tables or self.cache.invalidate_now(tables):
                return False
            self.held = [data]
            self.tasks.start(self._invalidate(session, server, tables))
            return True
        return False

    def _take_dirty(self) -> list[str]:
        tables, self.dirty = sorted(self.dirty), set()
        if self.ddl:
            self.ddl = False
            self.catalog.stale()
        return tables

    def _invalidate_then_send(self, session: MysqlClientSession, server: MysqlServerConnection) -> None:
        tables = self._take_dirty() if not server.tracker.in_transaction else []
        if not tables or self.cache.invalidate_now(tables):
            self._send_held(session, server)
        else:
            self.tasks.start(self._invalidate(session, server, tables))

    def _send_held(self, session: MysqlClientSession, server: MysqlServerConnection) -> None:
        held, self.held = self.held or [], None
        if session.server is not server:
            for chunk in held:   # the server went away meanwhile: its last words still reach the client
                if chunk:
                    session.write(chunk)
            return
        self.resuming = True
        session.server_data(server, b"".join(held))

    def _captured(self, session: MysqlClientSession, server: MysqlServerConnection, data: bytes) -> None:
        assert self.capture is not None
        if data:
            self.miss = None
        self.captured += len(data)
        if self.captured > self.cache.settings.max_entry:
            self._abandon()
            return
        self.capture.append(data)
        if not server.tracker.quiet or session._awaiting_prepare:
            return   # (the execute waits for its statement to be prepared on this server connection first)
        response, self.capture, self.miss = b"".join(self.capture), None, None
        ticket, self.ticket = self.ticket, None
        assert ticket is not None
        deprecate_eof = bool(session.capabilities & (1 << 24))
        fits = storable_binary if self.capture_binary else storable
        self.cache.complete(ticket, response if fits(response, deprecate_eof) else None)

    async def _invalidate(self, session: MysqlClientSession, server: MysqlServerConnection, tables: list[str]) -> None:
        try:
            await self.cache.invalidate(tables)
        except Exception:
            log.exception("cache invalidation failed")
        self._send_held(session, server)

    def gone(self) -> None:
        """The client went: its miss in flight (waiting for a server connection, or running) stores
        nothing, and the identical misses of other clients no longer wait for it (stampede control)."""
        self._abandon()

    def lost(self) -> None:
        """The server connection died: the miss in flight stores nothing."""
        self._abandon()
        self.held = None
