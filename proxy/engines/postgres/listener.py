"""The proxy's listening server connection per (cluster, server user, database): LISTENs for its clients, fans notifications out.

In transaction pooling a client's LISTEN does not pin it (listen_flow.py answers it): a
`ListenerHub` keeps one server connection of its own on the cluster's writer that LISTENs on every
channel some client listens on (listen_registry.ChannelRegistry decides what to send) and hands each
NotificationResponse to the clients listening on its channel. Its task

- connects to the current writer (the cluster's server credentials of the user that made it, the
  cluster's server_tls), retrying with backoff while there is none or it refuses;
- LISTENs there on every channel wanted (again after every reconnect) and UNLISTENs the ones no
  client wants any more, one batch at a time;
- follows the writer: when the topology names another writer (failover: follow or promote,
  switchover) or the connection dies, it reconnects and LISTENs again. Notifications sent while no
  connection listened (during a failover) are lost: PostgreSQL does not replicate them.

The NotificationResponse bytes are the server connection's tracker output, so their pid is already
the one clients must see (responses.ResponseTracker: a NOTIFY from one of the proxy's backends
carries the pid the proxy gave the client that backend serves). For that pid to be the sender's, a
server connection whose transaction sent notifications goes to no other client before every
listening connection of its database has them: the session then sends a sync marker on it
(`NOTIFY "dbproxy.sync", '<token>'`, committed after the client's transaction, so delivered after its
notifications: PostgreSQL delivers in commit order) and keeps it until each hub has seen the marker
(`MarkerWait`; at most MARKER_TIMEOUT).
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from ...config import Address
from ...errors import ServerConnectFailed, ServerUnavailable
from .listen_registry import ChannelRegistry, Subscriber
from .server import ServerConnection, open_server_connection
from .wire import messages as m
from .wire.framing import MessageReader
from .wire.responses import QUERY, Slot

if TYPE_CHECKING:
    from ...core.cluster import Cluster

log = logging.getLogger("dbproxy.listen")
_CHECK_EVERY = 0.5   # seconds between checks of the writer while nothing else wakes the task
_MAX_BACKOFF = 2.0
SYNC_CHANNEL = b"dbproxy.sync"
MARKER_TIMEOUT = 1.0   # seconds a server connection waits at most for its sync marker
_tokens = itertools.count(1)


class MarkerWait:
    """One sync marker awaited at several hubs: `done()` once each has seen it (or gave up)."""

    def __init__(self, hubs: list[ListenerHub], done: Callable[[], None]) -> None:
        self.token = str(next(_tokens)).encode()
        self.left = set(hubs)
        self._done: Callable[[], None] | None = done
        for hub in hubs:
            hub._markers[self.token] = self
        self._timer = asyncio.get_running_loop().call_later(MARKER_TIMEOUT, self.expire)

    def seen(self, hub: ListenerHub) -> None:
        self.left.discard(hub)
        if not self.left:
            self.expire()

    def expire(self) -> None:
        for hub in self.left:
            hub._markers.pop(self.token, None)
        self.left.clear()
        self._timer.cancel()
        done, self._done = self._done, None
        if done is not None:
            done()


class ListenerHub:
    """See the module docstring. `user_name`: the proxy user whose server credentials it logs in with."""

    def __init__(self, cluster: Cluster[Any], user_name: str, server_user: str, database: str,
                 queue_limit: int) -> None:
        self.cluster = cluster
        self.user_name = user_name
        self.server_user = server_user
        self.database = database
        self.registry = ChannelRegistry(queue_limit)
        self.conn: ServerConnection | None = None
        self.state = "connecting"   # connecting | up | down (no writer, or it refused)
        self.since = time.time()
        self.connects = 0
        self.last_error = ""
        self._closed = False
        self._wake = asyncio.Event()
        self._waiters: list[tuple[frozenset[bytes], asyncio.Future[None]]] = []
        self._reader = MessageReader(max_length=1 << 20)
        self._batch_failed = False
        self._markers: dict[bytes, MarkerWait] = {}
        self.registry.reserve(SYNC_CHANNEL)   # always listened on (see the module docstring)
        monitor = cluster.monitor
        if monitor is not None:
            monitor.snapshot_listeners.append(self._snapshot)
        self._task = asyncio.get_running_loop().create_task(self._run())

    # ---- what sessions ask ----------------------------------------------------------------------

    async def ensure(self, channels: frozenset[bytes]) -> None:
        """Return once the server connection listens on every channel (raises ServerUnavailable after
        the cluster's borrow_timeout, as a transaction waiting for a writer does)."""
        if self.registry.ready(channels):
            return
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        entry = (channels, future)
        self._waiters.append(entry)
        self._wake.set()
        timeout = self.cluster.config.failover.borrow_timeout
        try:
            await asyncio.wait_for(future, timeout)
        except TimeoutError as exc:
            raise ServerUnavailable(
                f"cluster {self.cluster.name!r}: the listening connection to the writer is not up "
                f"(waited {timeout:g}s){': ' + self.last_error if self.last_error else ''}") from exc
        finally:
            if entry in self._waiters:
                self._waiters.remove(entry)

    @property
    def address(self) -> Address | None:
        """The instance its connection is on (the writer), None while it has none."""
        return self.conn.address if self.conn is not None else None

    @property
    def syncing(self) -> bool:
        """Its connection listens on the sync marker channel now."""
        return self.state == "up" and SYNC_CHANNEL in self.registry.confirmed

    def changed(self) -> None:
        """Clients stopped listening somewhere: UNLISTEN what nobody wants (soon)."""
        self._wake.set()

    def close(self) -> None:
        self._closed = True
        self._task.cancel()
        monitor = self.cluster.monitor
        if monitor is not None and self._snapshot in monitor.snapshot_listeners:
            monitor.snapshot_listeners.remove(self._snapshot)
        if self.conn is not None:
            self.conn.close("dbproxy is closing the listening connection")

    def view(self) -> dict[str, Any]:
        """What SHOW LISTENERS, /status and /metrics show of it."""
        registry = self.registry
        return {"user": self.server_user, "database": self.database,
                "instance": str(self.conn.address) if self.conn is not None and self.state == "up" else None,
                "state": self.state, "since": self.since, "channels": len(registry.confirmed - {SYNC_CHANNEL}),
                "listening_clients": registry.listening_clients, "received": registry.received,
                "delivered": registry.delivered, "dropped": dict(registry.dropped),
                "disconnected": registry.disconnected, "connects": self.connects,
                "server_pid": self.conn.pid if self.conn is not None and self.state == "up" else None,
                "last_error": self.last_error}

    # ---- the task -------------------------------------------------------------------------------

    def _writer(self) -> Address | None:
        topology = self.cluster.topology
        return topology.writer if topology is not None else self.cluster.config.instances[0]

    def _snapshot(self, snapshot: object) -> None:
        if self.conn is not None and self._writer() != self.conn.address:
            self._wake.set()

    def _set_state(self, state: str) -> None:
        if state != self.state:
            self.state, self.since = state, time.time()

    async def _run(self) -> None:
        backoff = 0.1
        while not self._closed:
            address = self._writer()
            if address is None:
                self._set_state("down")
                self.last_error = "no writer"
                await self._sleep(0.25)
                continue
            try:
                conn = await self._connect(address)
            except ServerConnectFailed as exc:
                self._set_state("down")
                self.last_error = exc.message
                log.warning("cluster %s: the listening connection for %s/%s could not connect to %s: %s",
                            self.cluster.name, self.server_user, self.database, address, exc.message)
                await self._sleep(backoff)
                backoff = min(backoff * 2, _MAX_BACKOFF)
                continue
            backoff = 0.1
            await self._serve(conn)

    async def _sleep(self, seconds: float) -> None:
        self._wake.clear()
        try:
            await asyncio.wait_for(self._wake.wait(), seconds)
        except TimeoutError:
            pass

    async def _connect(self, address: Address) -> ServerConnection:
        user = self.cluster.current_user(self.user_name)
        if user is None:
            raise ServerConnectFailed(f"user {self.user_name!r} is no longer configured")
        pool = self.cluster.config.pool
        conn = await open_server_connection(address, user.server_user, user.server_password, self.database,
                                            pool.connect_timeout, "", self.cluster.config.server_tls)
        conn.owner = self
        self._reader = MessageReader(max_length=1 << 20)
        self.conn = conn
        self.connects += 1
        self.last_error = ""
        self._set_state("up")
        log.info("cluster %s: listening connection for %s/%s up on %s (server pid %d)", self.cluster.name,
                 self.server_user, self.database, address, conn.pid)
        return conn

    async def _serve(self, conn: ServerConnection) -> None:
        """LISTEN / UNLISTEN batches on `conn` until it dies or the writer moves."""
        registry = self.registry
        try:
            while not conn.closed and not self._closed:
                if self._writer() != conn.address:
                    log.info("cluster %s: the writer moved from %s: the listening connection for %s/%s follows",
                             self.cluster.name, conn.address, self.server_user, self.database)
                    conn.close("the writer moved")
                    break
                batch = registry.next_batch()
                if batch is not None:
                    self._send(conn, *batch)
                await self._sleep(_CHECK_EVERY)
        finally:
            if not conn.closed:
                conn.close()
            conn.owner = None
            self.conn = None
            registry.server_lost()
            if not self._closed:
                self._set_state("connecting")

    def _send(self, conn: ServerConnection, listen: frozenset[bytes], unlisten: frozenset[bytes]) -> None:
        statements = [f"LISTEN {m.quote_ident(c.decode('utf-8', 'replace'))}" for c in sorted(listen)]
        statements += [f"UNLISTEN {m.quote_ident(c.decode('utf-8', 'replace'))}" for c in sorted(unlisten)]
        self._batch_failed = False
        conn.tracker.push(Slot(QUERY))
        conn.write(m.query("; ".join(statements)))

    # ---- the server connection's owner (server.ServerOwner) ---------------------------------------

    def server_data(self, server: ServerConnection, data: bytes) -> None:
        server.tracker.parameters.clear()
        reader = self._reader
        reader.feed(data)
        ready: dict[Subscriber, None] = {}   # written once per read: a transaction's notifications arrive together
        while True:
            message = reader.next()
            if message is None:
                break
            kind, body = message
            if kind == 0x41:   # NotificationResponse: pid, channel, payload
                self._notification(body, ready)
            elif kind == 0x5A:   # ReadyForQuery: the batch is done
                self.registry.batch_done(not self._batch_failed)
                if self._batch_failed:
                    server.close("a LISTEN batch failed")   # start over on a fresh connection
                self._resolve()
                self._wake.set()
            elif kind == 0x45:
                self._batch_failed = True
                self.last_error = str(m.parse_error_fields(body))
                log.warning("cluster %s: LISTEN on the listening connection for %s/%s failed: %s",
                            self.cluster.name, self.server_user, self.database, self.last_error)
        for sub in ready:
            sub.owner.deliver()

    def _notification(self, body: bytes, ready: dict[Subscriber, None]) -> None:
        end = body.find(b"\x00", 4)
        if end < 0:
            return
        if body[4:end] == SYNC_CHANNEL:
            wait = self._markers.pop(body[end + 1:-1], None)
            if wait is not None:
                wait.seen(self)
            return
        queued, overflowed = self.registry.deliver(body[4:end], m.message(b"A", body))
        for sub in queued:
            ready[sub] = None
        for sub in overflowed:
            sub.owner.overflowed()

    def _resolve(self) -> None:
        for channels, future in list(self._waiters):
            if not future.done() and self.registry.ready(channels):
                future.set_result(None)

    def server_lost(self, server: ServerConnection, reason: str) -> None:
        if not self._closed:
            log.warning("cluster %s: the listening connection for %s/%s to %s was lost: %s", self.cluster.name,
                        self.server_user, self.database, server.address, reason)
        self.last_error = reason
        for wait in list(self._markers.values()):
            wait.seen(self)   # it will not come here
        self._markers.clear()
        self._wake.set()

    def server_pause_writing(self) -> None:
        pass

    def server_resume_writing(self) -> None:
        pass
