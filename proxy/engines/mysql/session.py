"""One MySQL / MariaDB client: commands relayed on route → borrow → release, and the state that follows them.

Every client command is one packet (or a run of 16 MiB packets, command_framing.py) with
sequence id 0; the session reads the command byte, keeps the state that must follow the client
from server to server (schema, SET variables: session_vars.py; LAST_INSERT_ID(); prepared
statements: prepared_flow.py over statements.py), answers what needs no server (COM_PING,
COM_QUIT, COM_STMT_CLOSE, COM_RESET_CONNECTION, KILL: local_replies.py, kill.py), and forwards the
rest. Responses are followed by the server connection's ResponseTracker; the server goes back to
its pool when the tracker is idle (no response outstanding, no SERVER_STATUS_IN_TRANS).

Kept here is the hot path — data_received → _client_data → _forward, and server_data — with what
it calls on every command. The login (greeting, password, admission, the held OK) is in
login_flow.py, COM_CHANGE_USER in change_user.py.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from typing import TYPE_CHECKING, Any

from ...config import EndpointConfig
from ...core.session import (
    AUTH,
    LOGIN,
    READY,
    RYW_FALLBACK_SECONDS,
    STARTUP,
    ClientSessionCore,
    by_statement_stem,
)
from ...errors import ProtocolViolation, ProxyError, ServerUnavailable
from ...pool.pool import Pool
from ...routing.classify import Route
from . import change_user, kill, login_flow
from .cache_flow import MysqlSessionCache
from .client_login import ClientLogin
from .command_framing import CommandTooLarge, command_end, incomplete_length, joined_payload
from .errors import error_payload
from .infile import relay_infile
from .local_replies import answer_locally, fail_batch
from .prepared_flow import close_statement, statement_command, sync_insert_id, take_prepared
from .probe import gtid_position
from .replay import MysqlReplay
from .server import MysqlServerConnection
from .session_state import (
    EMPTY,
    LAST_INSERT_ID_PIN,
    MysqlSessionEffects,
    SetVariable,
    might_change_session,
    session_effects,
)
from .session_vars import TrackedState, replay, variable_key
from .statements import ClientStatements, ServerStatements
from .wire.codes import MAX_PACKET_PAYLOAD, Command, ErrorCode, Status
from .wire.messages import decode_text_row, encode_err
from .wire.packets import encode_packets
from .wire.responses import PASS, RENAME, SYNTH, Slot

if TYPE_CHECKING:
    from ...core.cluster import Cluster
    from .engine import MysqlClusterState

log = logging.getLogger("dbproxy.client")

_MAX = MAX_PACKET_PAYLOAD
_STATEMENT_COMMANDS = frozenset((Command.STMT_EXECUTE, Command.STMT_SEND_LONG_DATA, Command.STMT_RESET,
                                 Command.STMT_FETCH))
_REFUSED_COMMANDS = frozenset((Command.BINLOG_DUMP, Command.BINLOG_DUMP_GTID, Command.REGISTER_SLAVE,
                               Command.TABLE_DUMP, Command.CONNECT_OUT, Command.SHUTDOWN, Command.DAEMON,
                               Command.CONNECT, Command.DELAYED_INSERT, Command.STMT_BULK_EXECUTE))
_QUERY_SLOT = Slot(Command.QUERY)
_PROCESSLIST_SLOT = Slot(Command.QUERY, RENAME)
_SETS_INSERT_ID = re.compile(rb"last_insert_id\s*\(\s*[^\s)]")   # LAST_INSERT_ID(expr)
_S, _H = frozenset(b"sS"), frozenset(b"hH")   # a COM_QUERY starting "sh" may be a SHOW PROCESSLIST


# Remembered per statement stem: point lookups that differ only in a trailing number share one verdict.
_PLAIN_STEMS: dict[bytes, bool] = {}
_might_change = by_statement_stem(might_change_session, _PLAIN_STEMS)


class MysqlClientSession(ClientSessionCore):
    """A MySQL client connection on one endpoint of one cluster; see the module docstring."""

    _login_machine: ClientLogin | None = None
    _held_ok: tuple[int, bytes] | None = None   # the login's OK, sent once the database is known good
    changing_user = False        # COM_CHANGE_USER: the proxy is authenticating the new user
    change_buf = b""             # a partial packet of that exchange
    _change_after = False        # COM_CHANGE_USER waits for the attached server to go quiet
    _long_data = False           # COM_STMT_SEND_LONG_DATA sent: keep the server until the execute
    _infile_skip = 0             # LOAD DATA LOCAL: 0 not in a file, else 1 + bytes of a file packet still to relay
    _infile_buf = b""            # a partial file-packet header
    _awaiting_prepare = 0        # client statement id being re-prepared on the attached server
    _schema_check: tuple[int, str] | None = None   # (tracker errors before, schema) of a USE in flight
    _sets_check: tuple[int, list[SetVariable]] | None = None   # (tracker errors before, SETs) in flight
    # With an incomplete command in _pending: the length _pending must reach before it can be
    # complete (so a large command is not copied and scanned again for every chunk; 0: unknown).
    _need = 0
    _insert_id = 0        # the client's LAST_INSERT_ID(): the id of its last insert (from the OK packets)
    _reprepare = b""      # the COM_STMT_PREPARE prepared_flow.statement_command wants sent before the command it holds
    killed_thread = 0     # the server thread another user's KILL CONNECTION was sent for (kill.py)
    _gtid_asked = False   # read_your_writes: the hidden SELECT @@last_gtid is in flight
    _gtid_again = False   # ... and client commands were sent after it (ask once more when they end)
    _replay: MysqlReplay | None = None   # failover.replay (transaction pooling)
    server: MysqlServerConnection | None
    server_pool: Pool[MysqlServerConnection] | None
    cluster: Cluster[MysqlServerConnection]

    def __init__(self, app: Any, cluster: Cluster[MysqlServerConnection], endpoint: EndpointConfig) -> None:
        super().__init__(app, cluster, endpoint)
        self.shared: MysqlClusterState = cluster.engine_state
        self.capabilities = 0
        self.charset = 45
        self.state_vars = TrackedState()
        self.prepared = ClientStatements()
        self._buf = b""
        self._cache: MysqlSessionCache | None = (self.shared.cache_session(cluster) if cluster.cache is not None
                                                  else None)
        if cluster.config.failover.replay and not self.session_mode and self._cache is None:
            self._replay = MysqlReplay(self)

    # ---- asyncio.Protocol -------------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        if self.state == STARTUP:   # not refused by an allowlist
            login_flow.greet(self)

    def connection_lost(self, exc: Exception | None) -> None:
        super().connection_lost(exc)
        if self._cache is not None:
            self._cache.gone()   # a miss in flight would keep its key waiting for it

    def data_received(self, data: bytes) -> None:
        try:
            if self.state == READY:
                self._client_data(data)
            elif self.state == STARTUP or self.state == AUTH:
                login_flow.receive(self, data)
            elif self.state == LOGIN:
                self._pending += data
        except ProxyError as exc:
            self._client_error(exc)

    def _tls_established(self, tls: Any) -> bool:
        if self._login_machine is not None:
            self._login_machine.tls_established()   # the full handshake response follows, inside TLS
        return True

    def _client_error(self, exc: ProxyError) -> None:
        """A client's command the proxy cannot take (wherever it was read: data_received, or the
        pending bytes handed on when a server is attached or a statement re-prepared)."""
        if isinstance(exc, CommandTooLarge):
            login_flow.refuse_too_large(self, exc)
        else:
            self.fail(exc)

    def _attach(self, server: MysqlServerConnection, pool: Pool[MysqlServerConnection] | None) -> None:
        try:
            super()._attach(server, pool)
        except ProxyError as exc:
            self._client_error(exc)

    def _lost_before_login(self) -> None:
        if self.state in (STARTUP, AUTH) and self._buf:
            log.info("client %s: disconnected in the middle of its login (%d bytes)", self.peer, len(self._buf))

    # ---- errors -----------------------------------------------------------------------------------

    def error_bytes(self, exc: ProxyError, fatal: bool = False) -> bytes:
        seq = 2 if self.state in (STARTUP, AUTH) else 1
        return encode_packets(error_payload(exc), seq)[0]

    def _login_timeout_words(self) -> bytes:
        return encode_packets(encode_err(ErrorCode.HANDSHAKE, "Bad handshake: login timeout"), 2)[0]

    # ---- login (login_flow.py) ----------------------------------------------------------------------

    def login_machine(self) -> ClientLogin:
        assert self._login_machine is not None
        return self._login_machine

    # ---- client → server --------------------------------------------------------------------------

    def _client_data(self, data: bytes) -> None:
        self.last_activity = time.monotonic()
        if self.changing_user:
            data = change_user.receive(self, data)
            if not data:
                return
        if self._infile_skip or (self.server is not None and self.server.tracker.infile is not None):
            data = relay_infile(self, data)
            if not data:
                return
        if self._held or self._awaiting_prepare or self._borrow_task is not None:
            self._pending += data
            return
        if self._pending:
            self._pending += data
            if len(self._pending) < self._need:
                return   # still incomplete
            data = bytes(self._pending)
            self._pending.clear()
            self._need = 0
        if self._cache is not None and self._cache.client_data(self, data):
            return   # answered from the query cache, or held behind its lookup (cache_flow.py)
        server = self.server
        if server is None:
            data = answer_locally(self, data)
            if not data:
                return
            if command_end(data, 0) > len(data):
                self._keep_incomplete(data, 0)
                return
            server = self._take_idle_now(data) if self._broken is None else None
            if server is None:
                self._pending += data
                self._need_server()
                return
        self._forward(data, server)

    def _keep_incomplete(self, data: bytes, pos: int) -> None:
        """Keep the incomplete command at data[pos:] in _pending, and how long it is at least."""
        self._pending += data[pos:] if pos else data
        self._need = incomplete_length(data, pos)

    def _status(self) -> int:
        change = self.state_vars.variables.get("autocommit")
        value = (change.value or "1").strip("'\"").lower() if change is not None else "1"
        return 0 if value in ("0", "off", "false") else Status.AUTOCOMMIT

    def _forward(self, data: bytes, server: MysqlServerConnection) -> None:
        """Forward the complete commands in data to server, rewriting where the pooler must."""
        if self._replay is not None:
            self._replay.sent(data)
        tracker = server.tracker
        if self._gtid_asked:
            self._gtid_again = True
        size = len(data)
        pos = start = 0
        out: list[bytes] = []
        while size - pos >= 5:
            end = command_end(data, pos)
            if end > size:
                break
            command = data[pos + 4]
            if command == Command.QUERY:
                self.queries += 1
                sql = data[pos + 5:end] if end - pos < _MAX + 4 else joined_payload(data, pos, end)[1:]
                if self._on_replica and self._must_leave_replica(sql, server):
                    break
                if self.statement_audit is not None:
                    self.statement_audit(self, sql)
                effects = session_effects(sql.decode("utf-8", "replace")) if _might_change(sql) else EMPTY
                if effects is not EMPTY:
                    outcome = self._apply_effects(effects, server, sql)
                    if outcome is not None:   # a KILL: answered by the proxy, or rewritten for the server
                        out.append(data[start:pos])
                        start = end
                        self._push_kill(outcome, out)
                        pos = end
                        continue
                    if effects.uses_last_insert_id:
                        before = sync_insert_id(self, server)
                        if before:
                            out.append(data[start:pos])
                            out.append(before)
                            start = pos
                if len(sql) > 1 and sql[1] in _H and sql[0] in _S and kill.PROCESSLIST.match(sql):
                    tracker.rename = kill.thread_names(self, server.address)
                    tracker.push(_PROCESSLIST_SLOT)
                else:
                    tracker.push(_QUERY_SLOT)
            elif command in _STATEMENT_COMMANDS:
                replacement = statement_command(
                    self, data[pos + 4:end] if end - pos < _MAX + 4 else joined_payload(data, pos, end), server)
                if replacement is None:   # waiting for a re-prepare: the rest stays pending
                    out.append(data[start:pos])
                    out.append(self._reprepare)   # after what came before it, as its slot is
                    self._reprepare = b""
                    self._pending += data[pos:]
                    pos = start = size
                    break
                out.append(data[start:pos])
                out.append(replacement)
                start = end
            elif command == Command.STMT_PREPARE:
                sql = data[pos + 5:end] if end - pos < _MAX + 4 else joined_payload(data, pos, end)[1:]
                if self.prepared_tap is not None:   # a recording or a mirror: its executions are taken instead
                    self.prepared_tap.prepare(sql)
                elif self.statement_audit is not None:
                    self.statement_audit(self, sql)
                client_id = self.prepared.new_id(sql)
                tracker.push(Slot(Command.STMT_PREPARE, PASS, stmt_id=client_id))
            elif command == Command.STMT_CLOSE:
                close_statement(self.prepared, data[pos + 4:end])
                out.append(data[start:pos])
                start = end
            elif command == Command.QUIT:
                out.append(data[start:pos])
                self._flush(server, out)
                self.close("client sent COM_QUIT")
                return
            elif command == Command.INIT_DB:
                self._schema_check = (tracker.errors, data[pos + 5:end].decode("utf-8", "replace"))
                tracker.push(Slot(command))
            elif command == Command.RESET_CONNECTION:
                self._reset_state()
                server.variables.clear()
                server.insert_id = 0
                server.statements = ServerStatements(self.cluster.config.pool.max_prepared_statements)
                self._unpin(server)
                tracker.push(Slot(command))
            elif command == Command.SET_OPTION:
                self.state_vars.multi_statements = data[pos + 5:pos + 7] == b"\x00\x00"
                server.multi_statements = self.state_vars.multi_statements
                tracker.push(Slot(command))
            elif command == Command.PROCESS_KILL and end - pos >= 9:   # COM_PROCESS_KILL: a KILL CONNECTION
                out.append(data[start:pos])
                start = end
                self._push_kill(kill.kill(self, "connection", int.from_bytes(data[pos + 5:pos + 9], "little"), server),
                                out)
            elif command == Command.CHANGE_USER:   # after the server goes back (see server_data)
                self._change_after = True
                self._pending += data[pos:]
                pos = start = size
                break
            elif command in _REFUSED_COMMANDS:
                out.append(data[start:pos])
                start = end
                name = Command(command).name if command in Command._value2member_map_ else str(command)
                due = tracker.push(Slot(command, SYNTH, encode_packets(encode_err(
                    ErrorCode.UNKNOWN_COM, f"COM_{name} is not supported through dbproxy"), 1)[0]))
                if due:
                    self.write(due)
            else:
                tracker.push(Slot(command))
            pos = end
        if pos < size:
            self._keep_incomplete(data, pos)
        if start == 0 and pos == size and not out:
            server.write(data)
        else:
            out.append(data[start:pos])
            self._flush(server, out)
        if self._change_after and tracker.quiet:
            self._change_user_now()

    def _push_kill(self, outcome: kill.Outcome | None, out: list[bytes]) -> None:
        """A KILL's outcome (kill.kill) in its turn: the proxy's reply, or the server's KILL to send."""
        assert self.server is not None and outcome is not None   # with a server attached there is one
        if outcome.forward:
            out.append(outcome.forward)
            self.server.tracker.push(_QUERY_SLOT)
            return
        due = self.server.tracker.push(Slot(Command.QUERY, SYNTH, outcome.reply))
        if due:
            self.write(due)

    @staticmethod
    def _flush(server: MysqlServerConnection, out: list[bytes]) -> None:
        payload = b"".join(out)
        if payload:
            server.write(payload)

    # ---- session state ----------------------------------------------------------------------------

    def _apply_effects(self, effects: MysqlSessionEffects, server: MysqlServerConnection,
                       sql: bytes = b"") -> kill.Outcome | None:
        """Track what a statement does to the session; returns a KILL's outcome (the proxy answers it)."""
        target = effects.kill
        if target is not None and target.target is not None and target.kind in ("connection", "query"):
            return kill.kill(self, target.kind, target.target, server)
        if effects.sets:
            # The server has them as soon as it runs the text (as far as the proxy can tell: a later reset
            # of a variable it never took is harmless); the client only once the text succeeded.
            for change in effects.sets:
                server.variables[variable_key(change.name)] = change
            if self._sets_check is None:
                self._sets_check = (server.tracker.errors, list(effects.sets))
            else:
                self._sets_check[1].extend(effects.sets)
        if effects.schema is not None:
            self._schema_check = (server.tracker.errors, effects.schema)
        if effects.pin_reason:
            self.pin(effects.pin_reason, server)
        elif effects.uses_last_insert_id and _SETS_INSERT_ID.search(sql.lower()):
            self.pin(LAST_INSERT_ID_PIN, server)   # LAST_INSERT_ID(expr) sets it where no OK packet tells
        return None

    def _reset_state(self) -> None:
        """COM_RESET_CONNECTION: as a server does, keeps the current schema (and the multi-statements switch)."""
        self.state_vars.reset(self.state_vars.schema)
        self._insert_id = 0
        self._sets_check = None
        self.prepared.clear()
        self._long_data = False

    def _unpin(self, server: MysqlServerConnection) -> None:
        if self.pinned is not None:
            log.info("client %s unpinned: COM_RESET_CONNECTION", self.peer)
            self.pinned = None
            server.pinned_reason = None

    def _attached(self, server: MysqlServerConnection) -> None:
        self._need = 0   # the core hands _pending over whole
        self.killed_thread = 0
        server.tracker.last_insert_id = 0   # an id of the previous owner is not this client's
        if self._replay is not None:
            self._replay.begin(self._last_route == "primary" and self.pinned is None)
        state = self.state_vars
        if (not state.variables and not server.variables and state.multi_statements == server.multi_statements
                and (not state.schema or state.schema == server.schema)):
            return   # the common case: nothing to replay
        commands = replay(self.state_vars, server.schema, server.variables, server.multi_statements, self.charset,
                          server.server_version)
        if not commands:
            return
        for command, body in commands:
            server.run_hidden(command, body)
        server.schema = self.state_vars.schema or server.schema
        server.variables = dict(self.state_vars.variables)
        server.multi_statements = self.state_vars.multi_statements

    def _must_leave_replica(self, sql: bytes, server: MysqlServerConnection) -> bool:
        """A statement for the primary while this split client is on a replica: hold it (SPEC §3.3)."""
        if self._first_checked:
            self._first_checked = False
            return False
        if self.pinned is not None or self.session_mode or server.tracker.in_transaction:
            return False
        verdict = self.cluster.classifier.classify(sql.decode("utf-8", "replace"))
        if verdict.route is Route.REPLICA:
            return False
        self._held = True
        return True

    def _first_statement(self, data: bytes | bytearray) -> bytes | None:
        if len(data) < 5:
            return None
        end = 4 + (data[0] | data[1] << 8 | data[2] << 16)
        if end > len(data):
            return None
        command = data[4]
        if command == Command.QUERY:
            return bytes(data[5:end])
        if command == Command.STMT_EXECUTE and end >= 9:
            statement = self.prepared.by_id.get(int.from_bytes(data[5:9], "little"))
            return statement.sql if statement is not None else None
        return None

    def _starts_with_quit(self) -> bool:
        return len(self._pending) >= 5 and self._pending[4] == Command.QUIT

    # ---- server → client --------------------------------------------------------------------------

    def _change_user_now(self) -> None:
        """The attached server is quiet: give it back (reset), then authenticate the COM_CHANGE_USER."""
        self._change_after = False
        self._give_back_server()
        pending = bytes(self._pending)
        self._pending.clear()
        try:   # called from server_data, where nothing else would catch it
            self._client_data(pending)
        except ProxyError as exc:
            self._client_error(exc)

    def server_data(self, server: MysqlServerConnection, data: bytes) -> None:
        if self._cache is not None and self._cache.server_data(self, server, data):
            return   # held until the query cache has invalidated what the client wrote
        if self._replay is not None:
            data = self._replay.relayed(data, server)
            if server is not self.server:
                return
        if data:
            self.write(data)
        tracker = server.tracker
        if self._change_after and tracker.quiet:
            self._change_user_now()
            return
        if tracker.last_insert_id:   # an OK with an insert id: the client's LAST_INSERT_ID() now
            self._insert_id = server.insert_id = tracker.last_insert_id
            tracker.last_insert_id = 0
        if tracker.prepared or tracker.failed_prepares:
            take_prepared(self, server)
            if not self._awaiting_prepare and self._pending:
                pending = bytes(self._pending)
                self._pending.clear()
                self._need = 0
                try:
                    self._forward(pending, server)
                except ProxyError as exc:
                    self._client_error(exc)
                    return
        if self._schema_check is not None and not tracker.slots:
            errors, schema = self._schema_check
            self._schema_check = None
            if tracker.errors == errors:
                self.state_vars.schema = server.schema = schema
                if not self.database:
                    # Logged in without a database: from now on its pool is that of the schema (a
                    # server connection cannot go back to none, see _release).
                    self.database = schema
        if self._sets_check is not None and not tracker.slots:
            errors, changes = self._sets_check
            self._sets_check = None
            if tracker.errors == errors:
                for change in changes:
                    self.state_vars.set(change)
        if tracker.terminated:
            return   # the connection is done: server_lost follows
        if (tracker.idle and not self._long_data and not self._awaiting_prepare and self.pinned is None
                and not self.session_mode):
            if self._read_your_writes and self._commit_position(server):
                return   # asking the primary for the GTID of the client's commit first
            self._release()
        elif self._held and not tracker.slots and not tracker.in_transaction:
            self._release()

    def _commit_position(self, server: MysqlServerConnection) -> bool:
        """read_your_writes (split endpoints): after a transaction on the primary, the GTID of the
        client's last commit (@@last_gtid) becomes its min_position; True while that is being asked."""
        if self._gtid_asked:
            self._gtid_asked = False
            rows = server.tracker.captured
            try:
                values = decode_text_row(rows[0]) if rows else []
                position = gtid_position(values[0].decode("ascii")) if values and values[0] is not None else None
            except (ValueError, ProtocolViolation, UnicodeDecodeError):
                position = None
            server.tracker.captured.clear()
            if position is not None:
                self._wrote_at(position)
            if not self._gtid_again:
                return False
        if self._last_route != "primary" or self._last_session_only:
            return False   # nothing committed on the primary (a plain SET, USE): no position to wait for
        # Until the position is known, fail safe: this client reads from the primary for a while.
        self._primary_until = time.monotonic() + RYW_FALLBACK_SECONDS
        self._gtid_asked, self._gtid_again = True, False
        server.run_capture("SELECT @@last_gtid")
        return True

    def _release(self) -> None:
        server = self.server
        assert server is not None
        if self._replay is not None:
            self._replay.end()
        if server.schema and not server.database:
            # A USE on a connection opened without a database: no command takes it back to none.
            server.close("USE on a connection without a database")
        super()._release()

    def server_lost(self, server: MysqlServerConnection, reason: str) -> None:
        """The server connection died under this client: error for work in flight, keep the client."""
        tracker = server.tracker
        waiting = [s for s in tracker.slots if s.action == PASS]
        in_transaction = tracker.in_transaction
        if self._cache is not None:
            self._cache.lost()
        self._detach_lost(server, reason)
        if tracker.mid_packet:   # the client has half a packet: nothing can follow it but the end
            self.close(f"server connection lost in the middle of a packet: {reason}")
            return
        if self.killed_thread and self.killed_thread == server.pid:
            self.close_with_error("killed", kill.ShutDownByKill("Connection was killed"))
            return
        self._sets_check = self._schema_check = None
        self._long_data = False
        self._awaiting_prepare = 0
        self._gtid_asked = False
        err: ProxyError = ServerUnavailable(f"Lost connection to server {server.address} during query: {reason}")
        if self._replay is not None and self.pinned is None:
            replayed = self._replay.lost(server, err)   # None: taken care of (replayed on the new writer)
            if replayed is None:
                return
            err = replayed
        self._fail_in_flight(bool(waiting), in_transaction, err)
        if self.pinned is not None or self.session_mode:
            self.close(f"pinned server connection lost: {reason}", b"")
            return
        if self._pending:
            self._need_server()

    def _fail_in_flight(self, waiting: bool, in_transaction: bool, err: ProxyError) -> None:
        """The server connection is gone: err for the command in flight, or for the transaction's next one."""
        if waiting:
            self.write(encode_packets(error_payload(err), 1)[0])
        elif in_transaction:
            self._broken = ServerUnavailable(f"the transaction was aborted because the server connection was lost "
                                             f"({err.message})")

    def _fail_batch(self, err: ProxyError, first_batch_only: bool = False) -> None:
        """No server for the pending commands: answer each with err (local_replies.fail_batch)."""
        fail_batch(self, err, first_batch_only)

    # ---- giving the server back -------------------------------------------------------------------

    def _give_back_server(self) -> None:
        server = self.server
        if server is not None and self.server_pool is not None and self._work_in_flight(server) and not server.closed:
            # The core closes it; a server does not notice that before the statement ends, so it
            # would run on (holding its locks) for no one: interrupt it.
            log.info("client %s gone with a statement in flight on %s: KILL QUERY %d", self.peer, server.address,
                     server.pid)
            self.app.spawn(self.cluster.engine.cancel(server))
        super()._give_back_server()

    def _work_in_flight(self, server: MysqlServerConnection) -> bool:
        return not server.tracker.quiet or self._awaiting_prepare != 0

    def _return_server(self, server: MysqlServerConnection, pool: Pool[MysqlServerConnection]) -> None:
        if server.schema and not server.database:
            pool.discard(server)   # see _release
            return
        if not (server.tracker.in_transaction or self.pinned is not None or self.session_mode or self._long_data):
            pool.release(server)
            return
        from .reset import reset_then_release

        reset_then_release(server, pool)

