"""LISTEN / UNLISTEN in one transaction-pooling client's relay: answered by the proxy, notifications delivered.

Transaction pooling only (session pooling keeps LISTEN on the client's own server connection).
PgClientSession hands a batch that starts with LISTEN / UNLISTEN messages (listen_sql.take_batch)
to `take_listen` when the client has no server connection or its server connection has answered
everything sent so far (a LISTEN further into a batch is held until then: session._forward). Then:

- outside a transaction block: the channels are registered for the client at once (UNLISTEN: the
  channels go at once); a LISTEN of a channel the cluster's listening connection does not listen
  on yet is answered once that connection has LISTENed there (listener.ListenerHub.ensure), so a
  NOTIFY sent after the client saw "LISTEN" always reaches it. Bytes the client sends meanwhile
  wait here and are handled after the reply, in order;
- inside a transaction block (ReadyForQuery T): the commands are staged and the channels held on
  the listening connection; they take effect when the transaction commits and are dropped when
  it rolls back (listen_sql.TransactionOutcome reads the server's replies until the transaction
  ends), as in PostgreSQL. In a failed transaction (E) the server's 25P02 error is given.

Notifications for the client's channels are written when the client can take them: when it has
no server connection or its server connection is idle and outside a transaction, and its socket
is not backed up (asyncio's pause_writing). Otherwise they wait in the client's queue (bounded:
pool.notification_queue); a client whose queue overflows is disconnected with a FATAL 53400
saying why (listen_registry). Delivery is checked again whenever the client's transaction ends,
its server connection goes idle, or its socket drains.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING

from ...core.session import READY
from ...errors import ProxyError
from .listen_registry import Subscriber
from .listen_sql import LISTEN, UNLISTEN, UNLISTEN_ALL, ListenCommand, TransactionOutcome, take_batch
from .listener import MarkerWait
from .wire import messages as m

if TYPE_CHECKING:
    from .listener import ListenerHub
    from .server import ServerConnection
    from .session import PgClientSession

log = logging.getLogger("dbproxy.listen")
_QUERY, _PARSE = 0x51, 0x50
_READY_IDLE = m.ready_for_query(b"I")
_ABOUT_STATEMENTS = frozenset(b"BDC")   # Bind, Describe, Close
_FIRST = frozenset(b"lLuU \t\r\n/-(")   # how a LISTEN text may start (listen_sql.may_be_listen)


def may_take(data: bytes, flow: ListenFlow | None) -> bool:
    """Cheap: the client's bytes start with a Query or a Parse whose text may be a LISTEN, or a message
    about a LISTEN statement the client prepared earlier."""
    if len(data) < 7:
        return False
    kind = data[0]
    if kind == _QUERY:
        return data[5] in _FIRST
    if kind == _PARSE:
        name_end = data.find(b"\x00", 5)
        return 0 <= name_end < len(data) - 1 and data[name_end + 1] in _FIRST
    return kind in _ABOUT_STATEMENTS and flow is not None and bool(flow.statements)


def take_listen(session: PgClientSession, data: bytes) -> bool:
    """Answer the LISTEN / UNLISTEN messages `data` starts with (True), else False (nothing done)."""
    server = session.server
    status = server.tracker.status if server is not None else b"I"
    flow = session._listen
    statements = flow.statements if flow is not None else {}
    batch = take_batch(data, status, statements)
    if batch is None:
        return False
    if flow is None:
        flow = session._listen = ListenFlow(session)
        flow.statements = statements
    session.queries += 1
    flow.answer(batch.commands, batch.reply, status, data[batch.consumed:])
    return True


def _marker_hubs(session: PgClientSession, server: ServerConnection) -> list[ListenerHub]:
    return [hub for hub in session.shared.listen_hubs.values()
            if hub.database == session.database and hub.syncing and hub.address == server.address]


def hold_ready(session: PgClientSession, server: ServerConnection, data: bytes) -> bool:
    """A listening client's transaction that sent notifications just ended (`data` ends with its
    ReadyForQuery): True if that ReadyForQuery waits for the sync marker, so that the client's own
    notifications reach it first, as PostgreSQL sends them before the ReadyForQuery. Its later bytes
    wait meanwhile (`_held`)."""
    flow = session._listen
    if (flow is None or not flow.sub.channels or not server.tracker.idle or session.pinned is not None
            or session.unsynced or not data.endswith(_READY_IDLE) or not _marker_hubs(session, server)):
        return False
    session._ready_held = session._held = True
    return True


def sync_marker(session: PgClientSession, server: ServerConnection) -> bool:
    """A transaction that sent notifications ended on `server`: True while it must stay with this client
    until the listening connections of its database have them (listener.py: the sync marker)."""
    if session._notified == 2:
        return True
    session._notified = 0
    hubs = _marker_hubs(session, server)
    if not hubs:
        return False

    def done() -> None:
        if session._ready_held:
            session._ready_held = False
            flow = session._listen
            own = flow.hub.registry.take(flow.sub) if flow is not None else b""
            session.write(own + _READY_IDLE)
            if session._pending:
                session._notified = 0
                session._resume_listen()   # what the client sent meanwhile
                return
            session._held = False
        if session._notified == 2:
            session._notified = 0
            if session.server is server:
                session._listen_answered()

    wait = MarkerWait(hubs, done)
    server.run_hidden(f"NOTIFY \"dbproxy.sync\", '{wait.token.decode()}'")
    session._notified = 2
    return True


class ListenFlow:
    """One client's channels, its staged LISTENs and its notification queue; see the module docstring."""

    def __init__(self, session: PgClientSession) -> None:
        self.session = session
        assert session.login is not None
        self.hub: ListenerHub = session.shared.listener_hub(session.cluster, session.login.user, session.database)
        self.sub = Subscriber(self)
        self.statements: dict[bytes, tuple[ListenCommand, ...]] = {}   # its prepared LISTEN statements
        self.waiting: bytearray | None = None   # client bytes that came while a reply waited for the hub
        self.staged: list[ListenCommand] = []   # inside the client's transaction block
        self.outcome: TransactionOutcome | None = None
        self.writes_paused = False

    # ---- answering ------------------------------------------------------------------------------

    def answer(self, commands: tuple[ListenCommand, ...], reply: bytes, status: bytes, rest: bytes) -> None:
        registry = self.hub.registry
        listens = frozenset(c.channel for c in commands if c.kind == LISTEN)
        if status == b"T":
            for channel in listens:
                registry.reserve(channel)
            self.staged += commands
            if self.outcome is None:
                self.outcome = TransactionOutcome()
            added: frozenset[bytes] = frozenset()
        else:
            added = listens - self.sub.channels
            self._apply(commands)
        if listens and not registry.ready(listens):
            self.waiting = bytearray(rest)
            asyncio.get_running_loop().create_task(self._wait(listens, added, reply, status, commands))
            return
        self._replied(reply, rest)

    async def _wait(self, channels: frozenset[bytes], added: frozenset[bytes], reply: bytes, status: bytes,
                    commands: tuple[ListenCommand, ...]) -> None:
        session = self.session
        try:
            await self.hub.ensure(channels)
        except ProxyError as exc:
            log.info("client %s: LISTEN failed: %s", session.peer, exc.message)
            self._undo(added, status, commands)
            syncs = reply.count(b"Z\x00\x00\x00\x05")
            reply = m.error_response(exc.sqlstate, exc.message) + m.ready_for_query(status) * max(syncs, 1)
        rest, self.waiting = bytes(self.waiting or b""), None
        if session.state != READY:
            return
        self._replied(reply, rest)

    def _undo(self, added: frozenset[bytes], status: bytes, commands: tuple[ListenCommand, ...]) -> None:
        """A LISTEN that could not be confirmed takes no effect."""
        registry = self.hub.registry
        for channel in added:
            registry.unlisten(self.sub, channel)
        if status == b"T":
            for command in commands:
                if command in self.staged:
                    self.staged.remove(command)
                    if command.kind == LISTEN:
                        registry.release(command.channel)
        self.hub.changed()

    def _replied(self, reply: bytes, rest: bytes) -> None:
        session = self.session
        session.write(reply)
        self.deliver()
        if rest:
            session._client_data(rest)
        else:
            session._listen_answered()

    def _apply(self, commands: list[ListenCommand] | tuple[ListenCommand, ...]) -> None:
        registry, sub = self.hub.registry, self.sub
        unlistened = False
        for command in commands:
            if command.kind == LISTEN:
                registry.listen(sub, command.channel)
            elif command.kind == UNLISTEN:
                registry.unlisten(sub, command.channel)
                unlistened = True
            elif command.kind == UNLISTEN_ALL:
                registry.unlisten_all(sub)
                unlistened = True
        if unlistened:
            self.hub.changed()

    # ---- the client's transaction ---------------------------------------------------------------

    def server_data(self, data: bytes, idle: bool) -> None:
        """Server bytes for the client while LISTENs are staged; `idle`: its transaction is over."""
        outcome = self.outcome
        if outcome is None:
            return
        outcome.feed(data)
        if idle:
            self._end_transaction(outcome.committed)

    def server_gone(self) -> None:
        """The client's server connection died: its transaction is gone, and the LISTENs staged in it."""
        if self.outcome is not None:
            self._end_transaction(False)

    def _end_transaction(self, committed: bool) -> None:
        staged, self.staged, self.outcome = self.staged, [], None
        if committed:
            self._apply(staged)
        registry = self.hub.registry
        for command in staged:
            if command.kind == LISTEN:
                registry.release(command.channel)
        self.hub.changed()

    # ---- delivery -------------------------------------------------------------------------------

    def deliver(self) -> None:
        """Write the queued notifications if the client can take them now."""
        sub = self.sub
        if not sub.queue or self.writes_paused or self.waiting is not None:
            return
        session = self.session
        if session.state != READY:
            return
        server = session.server
        if server is not None and (not server.tracker.idle or session.unsynced or self.outcome is not None):
            return
        session.write(self.hub.registry.take(sub))

    def overflowed(self) -> None:
        session = self.session
        limit = self.hub.registry.queue_limit
        log.warning("client %s: disconnected: %d notifications waited for it to read them (notification_queue)",
                    session.peer, limit)
        error = m.error_response(
            "53400", f"dbproxy: this connection did not read its notifications: {limit} were waiting "
            "(pool.notification_queue); the connection is closed", "FATAL")
        session.close("notification queue full", error)
        if self.writes_paused and session.transport is not None:
            session.transport.abort()   # it does not read: the error cannot reach it anyway

    def close(self) -> None:
        """The client is gone."""
        registry = self.hub.registry
        registry.drop_queue(self.sub, "client_gone")
        registry.unlisten_all(self.sub)
        for command in self.staged:
            if command.kind == LISTEN:
                registry.release(command.channel)
        self.staged = []
        self.outcome = None
        self.hub.changed()
