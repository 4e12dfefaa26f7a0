"""The query cache in one PostgreSQL client's relay (SPEC §11): answer cached simple Queries and prepared
reads (cache_batch), store the responses of misses, and invalidate the tables a client's writes wrote before it sees the
ReadyForQuery that ends its transaction. Made only for clusters with a [cache] section."""

from __future__ import annotations

import asyncio
import logging
import struct
from collections.abc import Iterable
from typing import TYPE_CHECKING

from ...cache.catalog import CatalogSnapshot
from ...cache.front import QueryCache, Ticket
from ...cache.keys import key_prefix, statement_key
from ...cache.policy import CachePlan, plan
from ...cache.scopes import Point, RowWrite
from ...core.session import READY
from ...core.tasks import TaskSet
from .cache_batch import (
    MAX_REMEMBERED,
    MAX_REMEMBERED_SIZE,
    ExtendedBatch,
    RememberedBatch,
    RememberedWrite,
    extended_batch,
    storable_extended,
)
from .cache_points import Values
from .cache_tables import CacheFacts, Written
from .statements import ParseMessage, bind_statement, decode_parse
from .wire import messages as m

if TYPE_CHECKING:
    from .server import ServerConnection
    from .session import PgClientSession

log = logging.getLogger("dbproxy.cache")
_U32 = struct.Struct("!I")
_READY_IDLE = m.ready_for_query(b"I")
_SYNC = m.sync()
# The session settings that change a result's bytes (names as GucState keeps them: lower case).
RESULT_SETTINGS = ("search_path", "timezone", "datestyle", "intervalstyle", "client_encoding",
                   "standard_conforming_strings", "extra_float_digits", "bytea_output", "lc_monetary",
                   "lc_numeric", "lc_time", "role", "session_authorization", "row_security", "xmloption",
                   "default_text_search_config", "enable_seqscan")
# A cached response holds only these messages: RowDescription, DataRow, CommandComplete.
_STORABLE = frozenset(b"TDC")
_MAX_STATEMENTS = 1000   # client statement names remembered (Bind → text, parameter types)
_KEYS_PER_BATCH = 8      # keys a remembered batch keeps (one per key prefix: database, user, settings)
CATALOG_WAIT = 0.5       # a database's first statements wait this long at most for its catalog


def storable(response: bytes) -> bool:
    """True if `response` is whole RowDescription/DataRow/CommandComplete messages and nothing else."""
    pos, size = 0, len(response)
    while pos < size:
        if size - pos < 5 or response[pos] not in _STORABLE:
            return False
        pos += 1 + _U32.unpack_from(response, pos + 1)[0]
    return pos == size and size > 0


class SessionCache:
    """One client's view of its cluster's cache; every method is called by PgClientSession."""

    def __init__(self, cache: QueryCache, facts: CacheFacts) -> None:
        self.cache = cache
        self.facts = facts
        self.dirty: set[str] = set()        # tables written (table-wide) since the last invalidation
        self.dirty_rows: set[RowWrite] = set()   # ... and row-scoped writes
        self.ddl = False                         # ... and whether the catalog changed
        self._settings: dict[str, str] | None = None   # the session settings _prefix was made for
        self._prefix = b""
        self.statements: dict[bytes, tuple[bytes, bytes]] = {}   # client statement → (text, parameter types)
        # prepared texts → (catalog snapshot, parameter types, plan): a statement's plan is computed once per catalog
        self._plans: dict[bytes, tuple[CatalogSnapshot | None, bytes, CachePlan | None]] = {}
        # ... and what a prepared text writes (Bind of a write), for the same catalog snapshot
        self._writes: dict[str, tuple[CatalogSnapshot | None, Written]] = {}
        self.capture: list[bytes] | None = None  # the response of the miss being run
        self.capture_extended = False            # ... to an extended batch (see cache_batch)
        self.captured = 0
        self.ticket: Ticket | None = None
        self.miss: bytes | None = None           # ... its bytes, until its first answer bytes (see client_data)
        self.waiting: bytearray | None = None    # client bytes that arrived during a lookup/invalidation
        self.held: list[bytes] | None = None     # server bytes held until an invalidation is done
        self.passing = False
        self.resuming = False
        self._tail = b""                         # an incomplete message header/body between reads
        self._skip = 0                           # bytes of a message not looked at (CopyData...)
        self.database = ""                       # the client's database (known once it is logged in)
        self.catalog_waited = False              # data being fed again after a wait for the catalog
        self.tasks = TaskSet()                   # lookups and invalidations in flight (run to the end)

    # ---- client → server ------------------------------------------------------------------------

    def client_data(self, session: PgClientSession, data: bytes) -> bool:
        """True if `data` was taken here (answered from the cache, or queued behind a lookup)."""
        if self.passing:
            self.passing = False
            return False
        if self.waiting is not None:
            self.waiting += data
            return True
        if self.ticket is not None:
            if data == self.miss:   # the miss itself, fed again once the server it waited for is attached
                self.miss = None
                return False
            self._abandon()   # the client sent more before the miss's answer: not stored
        self.database = session.database
        if not self._tail and not self._skip:
            first = data[0]
            if first in b"QBP" and self._hold_for_catalog(session, data):
                return True
            if (first == 0x51 and len(data) >= 6 and _U32.unpack_from(data, 1)[0] + 1 == len(data)
                    and self._idle(session)):
                return self._query(session, data)
            if (first == 0x42 or first == 0x50) and data.endswith(_SYNC) and self._idle(session):
                remembered = self.facts.batches.get(data) if first == 0x42 else None
                if remembered is not None:
                    if isinstance(remembered, RememberedWrite):
                        if self._remembered_write(remembered):
                            return False
                    else:
                        taken = self._remembered(session, data, remembered)
                        if taken is not None:
                            return taken
                batch = extended_batch(data)
                if batch is not None:
                    taken = self._extended(session, data, batch)
                    if taken is not None:
                        return taken
                    if batch.parse is None and len(data) <= MAX_REMEMBERED_SIZE:
                        self._bound_write(data, batch)
                        return False
        self._scan(data)
        return False

    def _bound_write(self, data: bytes, batch: ExtendedBatch) -> None:
        """_scan() of a batch that only binds a statement that is not a cached read (a write, mostly),
        remembered (per cluster) with what it writes, as _remembered_write() finds it again."""
        known = self.statements.get(batch.statement)
        if known is None:
            return   # not a statement of this client's seen here: nothing to note (as _scan)
        snapshot = self.facts.catalog.snapshot(self.database, self.cache.clock())
        tables, rows, ddl = self._written_by(known[0].decode("utf-8", "replace"), snapshot, batch.bound, known[1])
        self._note_written(tables, rows, ddl)
        if not ddl:
            self._remember_batch(data, RememberedWrite(batch.statement, known, snapshot, self.cache.settings, tables,
                                                       rows))

    def _remembered_write(self, write: RememberedWrite) -> bool:
        """_bound_write() of bytes seen before (True), if the statement, catalog and settings are still the same."""
        if (self.statements.get(write.statement) != write.known or write.settings is not self.cache.settings
                or write.snapshot is not self.facts.catalog.snapshot(self.database, self.cache.clock())):
            return False
        self._note_written(write.tables, write.rows, False)
        return True

    def _remember_batch(self, data: bytes, entry: RememberedBatch | RememberedWrite) -> None:
        batches = self.facts.batches
        if len(batches) >= MAX_REMEMBERED:
            batches.clear()
        batches[data] = entry

    def _note_written(self, tables: Iterable[str], rows: Iterable[RowWrite], ddl: bool) -> None:
        """What a client's statement wrote, invalidated before the ReadyForQuery that ends its transaction."""
        self.dirty.update(tables)
        self.dirty_rows.update(rows)
        if ddl:
            self.ddl = True

    def _hold_for_catalog(self, session: PgClientSession, data: bytes) -> bool:
        """The first statements of a database wait (bounded) for its catalog, which says what may be
        cached and what writes invalidate; True: `data` is held and fed again once it is read."""
        if self.catalog_waited:
            return False
        catalog = self.facts.catalog
        if catalog.snapshot(session.database, self.cache.clock()) is not None:
            return False
        reading = catalog.reading(session.database)
        if reading is None:
            return False
        self.waiting = bytearray()
        session.waits.start(self._after_catalog(session, data, reading))   # cancelled if the client goes
        return True

    async def _after_catalog(self, session: PgClientSession, data: bytes, reading: asyncio.Task[None]) -> None:
        try:
            await asyncio.wait_for(asyncio.shield(reading), CATALOG_WAIT)
        except asyncio.CancelledError:
            if not reading.cancelled():
                raise            # this task itself is cancelled: do not relay on
        except Exception:        # TimeoutError, or the read failed: relay without the catalog
            pass
        waiting, self.waiting = self.waiting or bytearray(), None
        if session.state != READY or session.transport is None:
            return
        self.catalog_waited = True   # once per session and read: a failed read is not waited for again
        try:
            session._client_data(data)
        finally:
            self.catalog_waited = False
        if waiting:
            session._client_data(bytes(waiting))

    def _idle(self, session: PgClientSession) -> bool:
        server = session.server
        if session._pending or session._held or session.unsynced or session._broken is not None:
            return False
        return server is None or (server.tracker.status == b"I" and server.tracker.quiet)

    def _scan(self, data: bytes) -> None:
        """Note the tables the Query and Bind messages in `data` write (Parse: remember the text)."""
        buf = self._tail + data if self._tail else data
        pos, size = 0, len(buf)
        if self._skip:
            pos = min(self._skip, size)
            self._skip -= pos
        while size - pos >= 5:
            kind = buf[pos]
            end = pos + 1 + _U32.unpack_from(buf, pos + 1)[0]
            if kind not in b"QPBC":
                if end > size:
                    self._skip = end - size
                    pos = size
                    break
                pos = end
                continue
            if end > size:
                break
            body = buf[pos + 5:end]
            if kind == 0x51:
                self._wrote(body[:-1].decode("utf-8", "replace"))
            elif kind == 0x50:
                self._remember(decode_parse(body))
            elif kind == 0x42:
                start, stop = bind_statement(body)
                known = self.statements.get(body[start:stop])
                if known is not None:
                    self._wrote(known[0].decode("utf-8", "replace"), body[stop + 1:], known[1])
            elif len(body) >= 2 and body[0] == 0x53 and body[-1] == 0:   # Close of a statement
                self.statements.pop(body[1:-1], None)
            pos = end
        self._tail = buf[pos:] if pos < size else b""

    def _remember(self, parse: ParseMessage) -> None:
        if len(self.statements) >= _MAX_STATEMENTS:
            self.statements.clear()
        self.statements[parse.name] = (parse.query, parse.tail)

    def _wrote(self, sql: str, bound: bytes | None = None, types: bytes = b"") -> None:
        self._note_written(*self._written_by(sql, self.facts.catalog.snapshot(self.database, self.cache.clock()),
                                             bound, types))

    def _written_by(self, sql: str, snapshot: CatalogSnapshot | None, bound: bytes | None = None,
                    types: bytes = b"") -> tuple[tuple[str, ...], tuple[RowWrite, ...], bool]:
        """What `sql` (with a Bind's values) writes under `snapshot`: the tables written table-wide,
        the rows written (row-scoped), and whether it changes the catalog."""
        facts = self.facts
        if bound is None:
            written = facts.written(sql, snapshot)
        else:   # a prepared statement: the same text comes back, what it writes is known for this catalog
            known = self._writes.get(sql)
            if known is not None and known[0] is snapshot:
                written = known[1]
            else:
                written = facts.written(sql, snapshot)
                if len(self._writes) >= _MAX_STATEMENTS:
                    self._writes.clear()
                self._writes[sql] = (snapshot, written)
        if not written.rows:
            return written.tables, (), written.ddl
        tables, rows = set(written.tables), []
        values = Values(sql, bound, types)
        for template in written.rows:
            row = values.rows(template)
            if row is None:
                tables.add(template.table)   # a value not known (binary, NULL...): table-wide
            else:
                rows.append(row)
        return tuple(tables), tuple(rows), written.ddl

    def _key(self, session: PgClientSession, statement: bytes, parameters: bytes = b"") -> str:
        return statement_key(self._key_prefix(session), statement, parameters)

    def _key_prefix(self, session: PgClientSession) -> bytes:
        """The key_prefix() of the session's current settings (made again when they change)."""
        client = session.gucs.client
        if client != self._settings:
            login = session.login
            assert login is not None
            self._settings = dict(client)
            self._prefix = key_prefix(session.cluster.name, session.database, login.user.server_user,
                                      ((name, client.get(name)) for name in RESULT_SETTINGS))
        return self._prefix

    def _query(self, session: PgClientSession, data: bytes) -> bool:
        sql = data[5:-1].decode("utf-8", "replace")
        facts = self.facts
        chosen = plan(sql, facts.read(sql, facts.catalog.snapshot(session.database, self.cache.clock())), False,
                      self.cache.settings)
        if chosen is None:
            self._wrote(sql)
            return False
        point = Values(sql).point(chosen.point) if chosen.point is not None else None
        return self._look(session, data, self._key(session, data), chosen.tables, chosen.ttl, point)

    def _extended(self, session: PgClientSession, data: bytes, batch: ExtendedBatch) -> bool | None:
        """A prepared read: looked up as _query does (True/False); None: not a cacheable one (scan it)."""
        parse = batch.parse
        if parse is not None:
            if parse.name and not session._rewrites:
                return None   # a named Parse must reach the client's own server (session pooling)
            text, tail = parse.query, parse.tail
        else:
            known = self._statement(session, batch.statement)
            if known is None:
                return None
            text, tail = known
        snapshot = self.facts.catalog.snapshot(session.database, self.cache.clock())
        known_plan = self._plans.get(text)
        if known_plan is not None and known_plan[0] is snapshot and known_plan[1] == tail:
            chosen = known_plan[2]   # the same text under the same catalog: the same plan (no parse, no regex)
        else:
            sql = text.decode("utf-8", "replace")
            chosen = plan(sql, self.facts.read(sql, snapshot), False, self.cache.settings)
            if len(self._plans) >= _MAX_STATEMENTS:
                self._plans.clear()
            self._plans[text] = (snapshot, tail, chosen)
        if chosen is None:
            return None
        if parse is not None:
            self._remember(parse)
        source = chosen.point
        point = (Values("" if source.param else text.decode("utf-8", "replace"), batch.bound, tail).point(source)
                 if source is not None else None)
        parameters = batch.key_parameters(tail)
        if parse is None and len(data) <= MAX_REMEMBERED_SIZE:
            self._remember_batch(data, RememberedBatch(batch.statement, (text, tail), snapshot, self.cache.settings,
                                                       chosen, point, parameters, {}))
        return self._look(session, data, self._key(session, text, parameters), chosen.tables, chosen.ttl, point,
                          parse)

    def _remembered(self, session: PgClientSession, data: bytes, batch: RememberedBatch) -> bool | None:
        """_extended() of bytes seen before, if what they were read under still holds; None: decode them."""
        if (self._statement(session, batch.statement) != batch.known or batch.settings is not self.cache.settings
                or batch.snapshot is not self.facts.catalog.snapshot(session.database, self.cache.clock())):
            return None
        prefix = self._key_prefix(session)
        keys = batch.keys   # the key is a function of the prefix, the text and the parameters
        key = keys.get(prefix)
        if key is None:
            if len(keys) >= _KEYS_PER_BATCH:
                keys.clear()
            key = keys[prefix] = statement_key(prefix, batch.known[0], batch.parameters)
        chosen = batch.plan
        return self._look(session, data, key, chosen.tables, chosen.ttl, batch.point, None)

    def _statement(self, session: PgClientSession, name: bytes) -> tuple[bytes, bytes] | None:
        """(text, parameter types) of the client's named statement `name`, None if not known for sure."""
        if not name:
            return None   # the unnamed statement of an earlier batch: left to the server
        if session._rewrites:
            rewriter = session.rewriter
            statement = rewriter.statements.get(name) if rewriter is not None else None
            return (statement.source.query, statement.source.tail) if statement is not None else None
        return self.statements.get(name)

    def _look(self, session: PgClientSession, data: bytes, key: str, tables: tuple[str, ...], ttl: float,
              point: Point | None, parse: ParseMessage | None | bool = False) -> bool:
        """Look `key` up: a hit answered now (True), a miss forwarded with its response captured
        (False), or a wait for the backend with the client's bytes held (True). `parse`: False for a
        simple Query, else the extended batch's Parse (or None)."""
        now = self.cache.lookup_now(key, tables, ttl, point)
        if now is not None:
            return self._answer(session, data, now[0], now[1], parse)
        self.waiting = bytearray()
        self.tasks.start(self._lookup(session, data, key, tables, ttl, point, parse))
        return True

    async def _lookup(self, session: PgClientSession, data: bytes, key: str, tables: tuple[str, ...],
                      ttl: float, point: Point | None, parse: ParseMessage | None | bool) -> None:
        try:
            value, ticket = await self.cache.lookup(key, tables, ttl, point)
        except Exception:   # never an error to the client: run the query
            log.exception("cache lookup failed")
            value, ticket = None, None
        waiting, self.waiting = self.waiting or bytearray(), None
        if session.state != READY or session.transport is None:
            if ticket is not None:
                self.cache.complete(ticket, None)
            return
        if not self._answer(session, data, value, ticket, parse):
            self.passing = True
            session._client_data(data)
        if waiting:
            session._client_data(bytes(waiting))

    def _answer(self, session: PgClientSession, data: bytes, value: bytes | None, ticket: Ticket | None,
                parse: ParseMessage | None | bool) -> bool:
        """A hit: write it (True). A miss: capture the response it will get (False: forward data). A miss
        with no server yet waits for one in session._pending, and _attach feeds `data` here again."""
        if value is not None:
            session.queries += 1
            if parse is False:
                session.write(value + _READY_IDLE)
                return True
            if isinstance(parse, ParseMessage):
                session.adopt_statement(parse)   # later Binds of it find it (transaction pooling)
                value = m.PARSE_COMPLETE + value
            session.write(value + _READY_IDLE)
            return True
        if ticket is not None:
            self.ticket = ticket
            self.miss = data
            self.capture = []
            self.captured = 0
            self.capture_extended = parse is not False
        return False

    def _abandon(self) -> None:
        ticket, self.ticket, self.capture, self.miss = self.ticket, None, None, None
        if ticket is not None:
            self.cache.complete(ticket, None)

    # ---- server → client ------------------------------------------------------------------------

    def server_data(self, session: PgClientSession, server: ServerConnection, data: bytes) -> bool:
        """True if `data` is held here (it reaches the client after the invalidation it waits for)."""
        if self.resuming:
            self.resuming = False
            return False
        if self.capture is not None:
            self._captured(server, data)
        if self.held is not None:
            self.held.append(data)
            return True
        if (self.dirty or self.dirty_rows or self.ddl) and (server.tracker.idle or b"Z\x00\x00\x00\x05I" in data):
            tables, rows = sorted(self.dirty), list(self.dirty_rows)
            if self.ddl:
                self.facts.catalog.stale()   # read again: nothing of the changed catalog is cached meanwhile
            if server.tracker.idle:
                self.dirty.clear()
                self.dirty_rows.clear()
                self.ddl = False
            if not tables and not rows or self.cache.invalidate_now(tables, rows):
                return False
            self.held = [data]
            self.tasks.start(self._invalidate(session, server, tables, rows))
            return True
        return False

    def _captured(self, server: ServerConnection, data: bytes) -> None:
        assert self.capture is not None
        if data:
            self.miss = None
        self.captured += len(data)
        if self.captured > self.cache.settings.max_entry + 6:
            self._abandon()
            return
        self.capture.append(data)
        if not server.tracker.idle:
            return
        response, self.capture, self.miss = b"".join(self.capture), None, None
        ticket, self.ticket = self.ticket, None
        assert ticket is not None
        value = response[:-6] if response.endswith(_READY_IDLE) else b""
        if self.capture_extended:
            self.cache.complete(ticket, storable_extended(value) if value else None)
        else:
            self.cache.complete(ticket, value if storable(value) else None)

    async def _invalidate(self, session: PgClientSession, server: ServerConnection, tables: list[str],
                          rows: list[RowWrite]) -> None:
        try:
            await self.cache.invalidate(tables, rows)
        except Exception:
            log.exception("cache invalidation failed")
        held, self.held = self.held or [], None
        if session.server is not server:
            for chunk in held:   # the server went away meanwhile: its last words still reach the client
                if chunk:
                    session.write(chunk)
            return
        self.resuming = True
        session.server_data(server, b"".join(held))

    def gone(self) -> None:
        """The client went: its miss in flight (waiting for a server, or running) stores nothing, and the
        identical misses of other clients no longer wait for it (stampede control)."""
        self._abandon()

    def lost(self) -> None:
        """The server connection died: the miss in flight stores nothing."""
        self._abandon()
        self.held = None
