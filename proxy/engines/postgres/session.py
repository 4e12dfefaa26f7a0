"""One PostgreSQL client's relay: framed messages on the core's route → borrow → release (the login: login.py)."""

from __future__ import annotations

import logging
import re
import struct
import time
from typing import TYPE_CHECKING, Any

from ...config import EndpointConfig
from ...core.session import (
    AUTH,
    CLOSED,
    LOGIN,
    READY,
    STARTUP,
)
from ...errors import ProtocolViolation, ProxyError, ServerUnavailable
from ...pool.pool import Pool
from .cache_flow import SessionCache
from .failed_work import fail_pending, in_flight_replies
from .listen_flow import ListenFlow, hold_ready, may_take, sync_marker, take_listen
from .listen_sql import listen_only
from .login import PgLoginSession
from .plain_select import effect_free, plain_select
from .positions import request_position
from .replay import PgReplay
from .reset import reset_then_release
from .rewrite import StatementRewriter
from .server import ServerConnection
from .session_state import session_effects
from .split_hold import SplitHold, statement_text
from .statements import ParseMessage, decode_parse, unnamed_bind
from .wire import messages as m
from .wire.framing import MAX_CLIENT_MESSAGE
from .wire.responses import (
    BIND,
    CLOSE,
    DESCRIBE,
    DROP,
    EXECUTE,
    PARSE,
    QUERY,
    SYNC,
    ResponseTracker,
    Slot,
)

if TYPE_CHECKING:
    from ...core.cluster import Cluster

log = logging.getLogger("dbproxy.client")

_U32 = struct.Struct("!I")
_LISTEN_FIRST = b"lLuU \t\r\n/-("   # how a Query that may be a LISTEN starts (listen_flow.may_take)
_STARTUP, _AUTH, _LOGIN, _READY, _CLOSED = STARTUP, AUTH, LOGIN, READY, CLOSED


# Statements after which a statement's description (columns, types) may differ.
_DDL = re.compile(rb"(?:^|;)\s*(?:alter|drop|create)\s", re.IGNORECASE)


_NO_NAMES: list[str] = []   # never changed: replaced, not appended to
_STREAM_COPY_DATA = 0x64  # CopyData may stream through before it is complete
# Slots are immutable once made: share one per kind for plain pass-through responses.
_QUERY_SLOT, _SYNC_SLOT, _EXECUTE_SLOT = Slot(QUERY), Slot(SYNC), Slot(EXECUTE)
_BIND_SLOT, _DESCRIBE_SLOT, _CLOSE_SLOT, _PARSE_SLOT = Slot(BIND), Slot(DESCRIBE), Slot(CLOSE), Slot(PARSE)
_HIDDEN_PARSE_SLOT = Slot(PARSE, DROP)   # its ParseComplete is not the client's (an error is)
_HIDDEN_CLOSE_SLOT = Slot(CLOSE, DROP)
_CLOSE_UNNAMED = m.message(b"C", b"S\x00")


class PgClientSession(PgLoginSession):
    """A PostgreSQL client connection on one endpoint of one cluster; see the module docstring."""

    # Defaults of what most connections never change or read only at login and close (see the core).
    _split_hold: SplitHold | None = None   # made by the first statement checked on a replica (split)
    _capture_names: list[str] = _NO_NAMES
    _positions_pending = 0   # read_your_writes: write positions requested and not known yet
    server: ServerConnection | None
    server_pool: Pool[ServerConnection] | None
    cluster: Cluster[ServerConnection]
    # Made by the first Parse when transaction pooling rewrites prepared statements (most short
    # connections never prepare one); until then no client statement is known.
    rewriter: StatementRewriter | None = None
    _copy_skip = 0
    unsynced = False
    _discard_until_sync = False
    _capturing = False
    _tx_set_names: set[str] | None = None   # made by the first SET inside a transaction
    _schema_changing = False   # DDL sent, its transaction not ended yet
    _unnamed: bytes | None = None   # transaction pooling: the client's last unnamed Parse message
    _cache: SessionCache | None = None   # the query cache's part of the relay (clusters with a cache only)
    _replay: PgReplay | None = None   # failover.replay (transaction pooling, clusters without a cache)
    _listen: ListenFlow | None = None   # made by the first LISTEN answered by the proxy (transaction pooling)
    _listen_held = False   # a LISTEN waits (with what follows) until the server has answered what came before
    _notified = 0   # 1: this transaction sent notifications; 2: waiting for the listening connections' sync marker
    _ready_held = False   # its ReadyForQuery waits for that marker (a listening client's own notifications first)

    def __init__(self, app: Any, cluster: Cluster[ServerConnection], endpoint: EndpointConfig) -> None:
        super().__init__(app, cluster, endpoint)
        self._rewrites = not self.session_mode and cluster.config.pool.prepared_statements
        self._listens = not self.session_mode
        if cluster.cache is not None:
            self._cache = SessionCache(cluster.cache, self.shared.facts_for_cache(cluster))
        elif cluster.config.failover.replay and not self.session_mode:
            self._replay = PgReplay(self)

    # ---- asyncio.Protocol -----------------------------------------------------------------------

    def data_received(self, data: bytes) -> None:
        try:
            if self.state == _READY:
                self._client_data(data)
            elif self.state == _STARTUP:
                self._startup_data(data)
            elif self.state == _AUTH:
                self._auth_data(data)
            elif self.state == _LOGIN:
                self._pending += data
        except ProxyError as exc:
            self.fail(exc)

    def connection_lost(self, exc: Exception | None) -> None:
        super().connection_lost(exc)
        if self._cache is not None:
            self._cache.gone()
        if self._listen is not None:
            self._listen.close()

    def pause_writing(self) -> None:
        super().pause_writing()
        if self._listen is not None:
            self._listen.writes_paused = True

    def resume_writing(self) -> None:
        super().resume_writing()
        if self._listen is not None:
            self._listen.writes_paused = False
            self._listen.deliver()

    def _lost_before_login(self) -> None:
        if self.state == _STARTUP and self._startup_buf:   # SPEC §9: a half-sent startup gets a log line
            log.info("client %s: disconnected with an incomplete startup packet (%d bytes)",
                     self.peer, len(self._startup_buf))

    # ---- errors -----------------------------------------------------------------------------------

    def error_bytes(self, exc: ProxyError, fatal: bool = False) -> bytes:
        return m.error_response(exc.sqlstate, exc.message, "FATAL" if fatal else "ERROR")

    def _login_timeout_words(self) -> bytes:
        return m.error_response("08P01", "login timeout", "FATAL") if self.state == _AUTH else b""

    # ---- relay: client → server ----------------------------------------------------------------

    def _client_data(self, data: bytes) -> None:
        self.last_activity = time.monotonic()
        listen = self._listen
        if listen is not None and listen.waiting is not None:
            listen.waiting += data   # behind a LISTEN whose reply waits for the listening connection
            return
        if self._cache is not None and self._cache.client_data(self, data):
            return
        server = self.server
        if (self._listens and data and (data[0] == 0x50 or listen is not None or data[5:6] in _LISTEN_FIRST)
                and may_take(data, listen) and not self._pending and not self._held and not self.unsynced
                and not self._copy_skip and not self._discard_until_sync and self._borrow_task is None
                and (server is None or server.tracker.quiet) and take_listen(self, data)):
            return
        if server is None:
            if (not self._pending and self._borrow_task is None and len(data) >= 5 and data[0] != 0x58
                    and self._broken is None and not self._discard_until_sync):
                if ((data[0] == 0x50 and data[5:6] != b"\x00" or data[0] == 0x44) and self._rewrites
                        and self.statement_audit is None and self._answer_alone(data)):
                    return
                server = self._take_idle_now(data)   # the fast path: an idle server attached now
                if server is None:
                    self._pending += data
                    self._need_server()
                    return
            else:
                self._pending += data
                self._need_server()
                return
        if self._held:
            self._pending += data
            return
        if self._copy_skip:
            n = min(self._copy_skip, len(data))
            server.write(data[:n])
            self._copy_skip -= n
            data = data[n:]
            if not data:
                return
        if self._pending:
            self._pending += data
            if not self._has_complete_message():
                return
            data = bytes(self._pending)
            self._pending.clear()
        self._forward(data, server)

    def _has_complete_message(self) -> bool:
        buf = self._pending
        if len(buf) < 5:
            return False
        length = _U32.unpack_from(buf, 1)[0]
        if length < 4 or length > MAX_CLIENT_MESSAGE:   # refused now, not after buffering up to 4 GB of it
            raise ProtocolViolation(f"invalid message length {length}")
        end = 1 + length
        return len(buf) >= end or (buf[0] == _STREAM_COPY_DATA and self.server is not None)

    def _starts_with_quit(self) -> bool:
        return self._pending[0] == 0x58   # 'X' Terminate before any work

    def _discarding(self) -> bool:
        return self._discard_until_sync

    def _first_statement(self, data: bytes | bytearray) -> bytes | None:
        if len(data) < 5:
            return None
        end = 1 + _U32.unpack_from(data, 1)[0]
        if len(data) < end:
            return None
        return statement_text(data[0], bytes(data[5:end]), self.rewriter)

    def _attach(self, server: ServerConnection, pool: Pool[ServerConnection] | None) -> None:
        try:
            super()._attach(server, pool)
        except ProxyError as exc:   # in the pending bytes it hands on, from server_data or a borrow task
            self.fail(exc)

    def _attached(self, server: ServerConnection) -> None:
        server.tracker.client_pid = self._pid_bytes   # its own NOTIFYs carry the pid it was given
        replay = self.gucs.replay_sql(server.gucs)
        if replay:
            server.run_hidden(replay)
            server.gucs = dict(self.gucs.client)
        if self._replay is not None:
            self._replay.begin(self._last_route == "primary" and self.pinned is None)

    def _forward(self, data: bytes, server: ServerConnection) -> None:
        """Forward complete client messages in data to server, rewriting where the pooler must."""
        if self._replay is not None:
            self._replay.sent(data)
        tracker = server.tracker
        size = len(data)
        pos = start = 0
        out: list[bytes] = []
        hidden_sync = b""
        while size - pos >= 5:
            kind = data[pos]
            length = _U32.unpack_from(data, pos + 1)[0]
            end = pos + 1 + length
            if length < 4 or length > MAX_CLIENT_MESSAGE:
                raise ProtocolViolation(f"invalid message length {length}")
            if end > size:
                if kind == _STREAM_COPY_DATA:
                    self._copy_skip = end - size
                    pos = size
                break
            if self._on_replica and kind in (0x51, 0x50, 0x42):
                held = self._must_leave_replica(kind, data[pos + 5:end], server)
                if held is not None:
                    hidden_sync = held
                    break
            if kind == 0x51:  # Query
                self.queries += 1
                sql = data[pos + 5:end - 1]
                rewriter = self.rewriter
                if rewriter is not None and rewriter.statements and sql[:1] in b"Dd" and rewriter.deallocate(
                        sql, tracker):
                    out.append(data[start:pos])   # answered by the proxy
                    start = end
                elif rewriter is not None and rewriter.statements and sql.lstrip()[:1] in b"Ee" and (
                        executed := rewriter.execute(sql, server.prepared, tracker)) is not None:
                    if self.statement_audit is not None:
                        self.statement_audit(self, sql)
                    out.append(data[start:pos])   # EXECUTE of a protocol-level statement: its server name
                    out.append(executed)
                    start = end
                    server.unnamed = None
                    self._unnamed = None
                else:
                    if self.statement_audit is not None:
                        self.statement_audit(self, sql)
                    if self._statement_effects(sql, server, not (self.unsynced or self._discard_until_sync)):
                        # a LISTEN the proxy answers: held until the server has answered what came before
                        self.queries -= 1   # counted when it is answered
                        out.append(data[start:pos])
                        self._pending += data[pos:]
                        self._held = self._listen_held = True
                        self._flush_to_server(server, out)
                        if tracker.quiet:
                            self._resume_listen()
                        return
                    tracker.push(_QUERY_SLOT)
                    server.unnamed = None   # a simple Query drops the unnamed statement (the client's too)
                    if self._unnamed is not None:
                        self._unnamed = None
            elif kind == 0x53:  # Sync
                tracker.push(_SYNC_SLOT)
                self.unsynced = False
            elif kind == 0x45:  # Execute
                self.queries += 1
                tracker.push(_EXECUTE_SLOT)
                self.unsynced = True
                if self.prepared_tap is not None:
                    self.prepared_tap.execute(data[pos + 5:end])
            elif kind == 0x42:  # Bind
                self.unsynced = True
                if server.unnamed is not self._unnamed and unnamed_bind(data, pos + 5, end):
                    out.append(data[start:pos])   # prepared on another backend, or dropped here since
                    out.append(self._reparse_unnamed(server))
                    start = pos
                replacement = (self.rewriter.bind(data[pos + 5:end], server.prepared, tracker)
                               if self.rewriter is not None else None)
                if replacement is not None:   # its slot is pushed
                    out.append(data[start:pos])
                    out.append(replacement)
                    start = end
                else:
                    tracker.push(_BIND_SLOT)
                if self.prepared_tap is not None:   # a recording or a mirror
                    self.prepared_tap.bind(data[pos + 5:end])
            elif kind == 0x50:  # Parse
                self.unsynced = True
                out.append(data[start:pos])
                out.append(self._parse(data[pos + 5:end], server))
                start = end
            elif kind == 0x44:  # Describe
                self.unsynced = True
                if server.unnamed is not self._unnamed and data[pos + 5:end] == b"S\x00":
                    out.append(data[start:pos])
                    out.append(self._reparse_unnamed(server))
                    start = pos
                replacement = (self.rewriter.describe(data[pos + 5:end], server.prepared, tracker)
                               if self.rewriter is not None else None)
                if replacement is not None:   # its slot is pushed
                    out.append(data[start:pos])
                    out.append(replacement)
                    start = end
                else:
                    tracker.push(_DESCRIBE_SLOT)
            elif kind == 0x43:  # Close
                self.unsynced = True
                if self.prepared_tap is not None:
                    self.prepared_tap.close(data[pos + 5:end])
                if self.rewriter is not None and self.rewriter.close(data[pos + 5:end], tracker):
                    out.append(data[start:pos])
                    start = end
                else:
                    tracker.push(_CLOSE_SLOT)
            elif kind == 0x48:  # Flush
                self.unsynced = True
            elif kind == 0x64 or kind == 0x63 or kind == 0x66:  # CopyData / CopyDone / CopyFail
                pass
            elif kind == 0x46:  # FunctionCall
                tracker.push(_QUERY_SLOT)
            elif kind == 0x58:  # Terminate: not forwarded; the server stays in the pool
                out.append(data[start:pos])
                start = pos = end
                self._flush_to_server(server, out)
                self._flush_replies()
                self.close("client sent Terminate")
                return
            else:
                raise ProtocolViolation(f"invalid frontend message type {kind}")
            pos = end
        if pos < size:
            self._pending += data[pos:]
        if self.rewriter is not None and self.rewriter.to_client:
            self._flush_replies()
        if not out and pos == size:   # nothing rewritten (a re-Parse may go before the first message)
            server.write(data)
        else:
            out.append(data[start:pos])
            if hidden_sync:
                out.append(hidden_sync)   # ends the batch that stays on the replica (see split_hold)
            self._flush_to_server(server, out)

    def _flush_replies(self) -> None:
        """Replies the rewriter synthesized whose turn had come (before any server reply)."""
        if self.rewriter is not None:
            replies = self.rewriter.take_replies()
            if replies and self._replay is not None:
                replies = self._replay.relayed(replies, self.server)
            if replies:
                self.write(replies)

    @staticmethod
    def _flush_to_server(server: ServerConnection, out: list[bytes]) -> None:
        payload = b"".join(out)
        if payload:
            server.write(payload)

    # ---- session state and prepared statements -------------------------------------------------

    def _statement_effects(self, sql: bytes, server: ServerConnection, may_hold: bool = False) -> bool:
        """Apply what sql does to session state; True if it is a LISTEN the proxy answers (may_hold:
        a simple Query at a batch boundary), held by the caller instead of sent."""
        if plain_select(sql):
            return False
        if _DDL.search(sql):   # a statement's parameter or result types may change: fresh server-side names
            self.shared.statement_names.schema_changed()
            self._schema_changing = True   # and again once it is committed (see server_data)
        effects = session_effects(sql.decode("utf-8", "replace"))
        if effects.discard_all:
            self.gucs.clear(server)
        if effects.discard_all or effects.deallocate_all:
            if self.rewriter is not None:
                self.rewriter.statements.clear()
            server.prepared.clear()
        if effects.sets:
            self.gucs.apply(effects.sets, server)
            tracker = server.tracker
            if tracker.status != b"I" or tracker.slots or b";" in sql:
                # Maybe inside a transaction that may roll back: re-read the real values after it.
                if self._tx_set_names is None:
                    self._tx_set_names = set()
                self._tx_set_names.update(c.name.lower() for c in effects.sets if c.value is not None)
        if effects.reread:
            if self._tx_set_names is None:
                self._tx_set_names = set()
            self._tx_set_names.update(effects.reread)
        if effects.pin_reason:
            if effects.pin_reason == "listen" and may_hold and self._listens and listen_only(sql) is not None:
                return True
            self.pin(effects.pin_reason, server)
        if effects.notifies and self._notified == 0:
            self._notified = 1
        if effects.database_gone is not None:
            # The server refuses while other sessions use it: the pool's idle ones are such sessions.
            pools, idle = self.cluster.retire_pools(effects.database_gone)
            log.info("client %s: %s drops or renames database %s: %d idle server connection(s) in %d pool(s) "
                     "closed first", self.peer, self.cluster.name, effects.database_gone, idle, pools)
        return False

    def _parse(self, body: bytes, server: ServerConnection) -> bytes:
        parse = decode_parse(body)
        if self.prepared_tap is not None:   # the recording and mirror have its text from here (and the audit log)
            self.prepared_tap.parse(parse.name, parse.query, parse.tail)
        elif self.statement_audit is not None:
            self.statement_audit(self, parse.query)
        self._statement_effects(parse.query, server)
        if not parse.name or not self._rewrites:
            server.tracker.push(_PARSE_SLOT)
            message = m.message(b"P", body)
            if self._rewrites:   # kept: a later batch may bind it on another backend (see _reparse_unnamed)
                self._unnamed = server.unnamed = message
            return message
        return (self.rewriter or self._new_rewriter()).parse(parse, body, server.prepared, server.tracker)

    def _reparse_unnamed(self, server: ServerConnection) -> bytes:
        """Transaction pooling: the client binds (or describes) the unnamed statement it parsed in an
        earlier batch, and this backend does not hold it (another one did, or a simple Query dropped it
        since: another client's, or the proxy's own between transactions). Its Parse goes first; the
        ParseComplete is dropped. Without it the Bind would fail ("unnamed prepared statement does not
        exist", asyncpg with statement_cache_size=0 or an uncacheable query) or run another client's.
        A client that has no unnamed statement (a simple Query of its own dropped it) but lands on
        another client's: that one is closed first, so the Bind fails as it would directly."""
        message = self._unnamed
        server.unnamed = message
        if message is None:
            server.tracker.push(_HIDDEN_CLOSE_SLOT)
            return _CLOSE_UNNAMED
        server.tracker.push(_HIDDEN_PARSE_SLOT)
        return message

    def _new_rewriter(self) -> StatementRewriter:
        assert self.login is not None
        self.rewriter = StatementRewriter(self.shared.statement_names, self.cluster.config.pool.max_prepared_statements,
                                          (self.login.user.server_user, self.database))
        return self.rewriter

    def adopt_statement(self, parse: ParseMessage) -> None:
        """The query cache answered this Parse (see rewrite.StatementRewriter.adopt; an unnamed one is parsed
        where the client next binds it, see _reparse_unnamed)."""
        if not parse.name:
            if self._rewrites:
                self._unnamed = parse.encode(b"")
            return
        (self.rewriter or self._new_rewriter()).adopt(parse)

    def _answer_alone(self, data: bytes) -> bool:
        """Transaction pooling without a server: answer a batch of Parse/Describe/Close/Sync of known
        statements here (see rewrite.StatementRewriter.answer_alone); False if it needs a server."""
        rewriter = self.rewriter or self._new_rewriter()
        answered = rewriter.answer_alone(data, effect_free, "search_path" not in self.gucs.client)
        if answered is None:
            return False
        replies, self.unsynced = answered
        self.write(replies)
        return True

    # ---- relay: server → client ----------------------------------------------------------------

    def server_data(self, server: ServerConnection, data: bytes) -> None:
        if self._cache is not None and self._cache.server_data(self, server, data):
            return
        if self._replay is not None:
            data = self._replay.relayed(data, server)
            if server is not self.server:
                return
        if self._notified == 1 and self._listen is not None and hold_ready(self, server, data):
            data = data[:-6]   # its ReadyForQuery follows its own notifications (listen_flow.hold_ready)
        if data:
            self.write(data)
        tracker = server.tracker
        if tracker.parameters:
            self.gucs.reported(tracker.parameters, server)
            tracker.parameters.clear()
        if tracker.news:
            assert self.login is not None
            self.shared.statement_names.take_news(tracker.news, (self.login.user.server_user, self.database),
                                                  self.peer)
        if tracker.failed_statements:
            for name in tracker.failed_statements:
                server.prepared.pop(name, None)
            tracker.failed_statements.clear()
        if self._schema_changing and tracker.idle:
            # Statements prepared by others while the DDL ran saw the old schema: fresh names once more.
            self._schema_changing = False
            self.shared.statement_names.schema_changed()
        listen = self._listen
        if listen is not None:
            if listen.outcome is not None:
                listen.server_data(data, tracker.idle)
            if self._listen_held and tracker.quiet:
                self._resume_listen()
                return
        self._listen_answered()

    def _listen_answered(self) -> None:
        """The server has answered (or the proxy answered a LISTEN): release it if the client is done."""
        server = self.server
        if server is not None:
            tracker = server.tracker
            if (tracker.idle and not self.unsynced and not self._copy_skip and self.pinned is None
                    and not self.session_mode):
                if self._replay is not None:
                    self._replay.end()
                if ((self._capturing or self._tx_set_names or self._read_your_writes or self._notified)
                        and self._after_transaction(server)):
                    return
                self._release()
        if self._listen is not None:
            self._listen.deliver()

    def _resume_listen(self) -> None:
        """The server answered what came before a held LISTEN: handle it (and what follows) now."""
        self._held = self._listen_held = False
        data = bytes(self._pending)
        self._pending.clear()
        self._client_data(data)

    def _after_transaction(self, server: ServerConnection) -> bool:
        """Hidden follow-up before release; True while it runs (the server is kept until then).

        - read_your_writes: the WAL position after a transaction on the primary;
        - settings SET inside a transaction: their real values now (a ROLLBACK undoes a SET).
        """
        if self._capturing:
            self._capturing = False
            self.gucs.use_captured(self._capture_names, server.tracker.captured, server)
            return False
        if self._notified and sync_marker(self, server):
            return True   # kept until the listening connections have this transaction's notifications
        if self._read_your_writes and self._last_route == "primary":
            request_position(self)   # read_your_writes: off the client's path
        if not self._tx_set_names:
            return False
        self._capture_names = sorted(self._tx_set_names)
        self._tx_set_names = None
        self._capturing = True
        server.run_capture("SELECT " + ", ".join(f"current_setting({m.quote_literal(name)}, true)"
                                                 for name in self._capture_names))
        return True

    def _must_leave_replica(self, kind: int, body: bytes, server: ServerConnection) -> bytes | None:
        """This split client is on a replica: None if the message may run there, else it is held
        with what follows until the replica is released (see split_hold); then the bytes _forward
        sends after the messages before it (a hidden Sync, or b"")."""
        if self._first_checked:
            self._first_checked = False  # the statement _route() just classified
            return None
        split = self._split_hold
        if split is None:
            split = self._split_hold = SplitHold(self.cluster.classifier)
        sent = split.hold(kind, body, server.tracker, self.rewriter, self.unsynced,
                          self.pinned is not None or self.session_mode)
        if sent is not None:
            self._held = True
            self.unsynced = False
        return sent

    def server_lost(self, server: ServerConnection, reason: str) -> None:
        """The server connection died under this client: error for work in flight, keep the client."""
        tracker = server.tracker
        if self._cache is not None:
            self._cache.lost()
        if self._ready_held:
            self._ready_held = self._held = False
            self.write(m.ready_for_query(b"I"))
            tracker.slots.clear()   # only the proxy's marker was outstanding
        self._detach_lost(server, reason)
        if self._listen is not None:
            self._listen.server_gone()
        if self._listen_held:
            self._held = self._listen_held = False
        self._notified = 0
        if tracker.mid_message:   # the client has half a message: nothing can follow it but the end
            self.close(f"server connection lost in the middle of a message: {reason}")
            return
        if (self.pinned is not None or self.session_mode) and (tracker.farewell or tracker.farewell_forwarded):
            # Its backend is gone with its session state: the client hears the server's own last words
            # (FATAL 57P01 terminating connection due to administrator command...), as directly, and goes.
            self.close(f"pinned server connection lost: {reason}", tracker.farewell)
            return
        err: ProxyError = ServerUnavailable(f"server connection to {server.address} lost: {reason}")
        if self._replay is not None and self.pinned is None:
            replayed = self._replay.lost(server, err)   # None: taken care of (replayed on the new writer)
            if replayed is None:
                return
            err = replayed
        self._fail_in_flight(tracker, err)
        if self.pinned is not None or self.session_mode:
            self.close(f"pinned server connection lost: {reason}", m.error_response("08006", err.message, "FATAL"))
            return
        if self._pending:
            self._need_server()

    def _fail_in_flight(self, tracker: ResponseTracker, err: ProxyError) -> None:
        """The server connection whose responses tracker followed is gone: err for the work in flight."""
        replies, discard = in_flight_replies(tracker.slots, self.unsynced, err)
        if replies:
            self.write(replies)
            self._discard_until_sync = self._discard_until_sync or discard
        elif tracker.status != b"I":
            self._broken = ServerUnavailable(f"the transaction was aborted because the {err.message}")
        self.unsynced = False
        self._copy_skip = 0
        self._capturing = False

    def _fail_batch(self, err: ProxyError, first_batch_only: bool = False) -> None:
        """No server for the client's pending messages: answer them with err, as a server would
        (failed_work.fail_pending; first_batch_only: the rest may run normally)."""
        data = bytes(self._pending)
        self._pending.clear()
        replies, pos, self._discard_until_sync, terminate = fail_pending(data, err, self._discard_until_sync,
                                                                         first_batch_only)
        if terminate:
            self.close("client sent Terminate")
            return
        self._pending += data[pos:]
        self.write(replies)

    # ---- giving the server back ----------------------------------------------------------------

    def _work_in_flight(self, server: ServerConnection) -> bool:
        return not server.tracker.quiet or self.unsynced or bool(self._copy_skip)

    def _finish_own_work(self, server: ServerConnection, pool: Pool[ServerConnection]) -> bool:
        """The client left while the proxy re-read settings SET inside its transaction, or sent its LISTEN
        sync marker: let that finish and pool the connection instead of closing it."""
        if (not (self._capturing or self._notified == 2) or self.unsynced or self._copy_skip
                or len(server.tracker.slots) != 1):
            return False
        self._capturing = False
        reset_then_release(server, pool, [])   # no statements: pooled once the hidden query's reply is in
        return True

    def _return_server(self, server: ServerConnection, pool: Pool[ServerConnection]) -> None:
        cleanup: list[str] = []
        if server.tracker.status != b"I":
            cleanup.append("ROLLBACK")
        if self.pinned is not None or self.session_mode:
            cleanup.append("DISCARD ALL")
        if not cleanup:
            pool.release(server)
            return
        reset_then_release(server, pool, cleanup)
