"""Sending mirrored transactions to the shadow cluster: the statement hook, a bounded queue, workers, comparisons.

`Mirror` is made per source cluster with `mirror = {...}`. Its `statement` hook (on the sessions'
statement hook, see recording/recorder.statement_hook) and its prepared-execution sinks (`execution`
for PostgreSQL's Parse/Bind/Execute, `mysql_execution` for COM_STMT_EXECUTE, on the sessions'
prepared tap, see recorder.install_hooks) feed capture.py and put each complete sampled
transaction on a bounded queue with put_nowait: the client's path never waits, and when the queue
is full the transaction is dropped and counted (dbproxy_mirror_dropped_total{reason}). WORKERS
tasks replay queued transactions on the shadow's writer as the session's server user
(recording/clients.py: statement texts as simple queries, PostgreSQL prepared executions as
Parse/Bind/Execute with the client's formats and values, MySQL ones as their text with the values
inlined; the values are decoded there, not on the client's path), each step bounded by
STEP_TIMEOUT; a shadow that is slow, down or has no writer makes its work dropped and counted,
never an error for a client (a dead one for DOWN_PAUSE at a time without queueing, so a dead shadow
costs the relay little). With compare = true (reads only) each statement is also read from the
primary and the row count and a digest of the rows are compared; mismatches are counted and
logged with the statement.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import random
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ..config import Address, MirrorSettings
from ..core.stems import by_statement_stem
from ..core.tasks import TaskSet
from ..recording.clients import Client, connect
from ..recording.mysql_prepared import MysqlBound
from ..recording.pg_prepared import Bound
from ..recording.plan import with_literals
from ..routing.classify import Route
from .capture import TransactionCapture, is_transaction_control

if TYPE_CHECKING:
    from ..core.cluster import Cluster
    from ..core.session import ClientSessionCore
    from ..metrics import Metrics

log = logging.getLogger("dbproxy.mirror")

QUEUE_SIZE = 1000
WORKERS = 4
STEP_TIMEOUT = 5.0
DOWN_PAUSE = 1.0   # after the shadow had no writer or refused a connection: drop at once for this long
PREPARED_LIMIT = 256   # named statements per shadow connection (more texts: parsed unnamed each time)


_Step = str | Bound | MysqlBound   # a statement text, a PostgreSQL prepared execution, a MySQL one


class _Unmirrorable(Exception):
    """A prepared execution whose values do not decode: the primary refused it, or they are not known."""


@dataclass(frozen=True)
class _Work:
    user: str
    password: str | None
    database: str
    statements: list[_Step]


class Mirror:
    """See the module docstring."""

    def __init__(self, source: Cluster[Any], shadow: Cluster[Any], settings: MirrorSettings, metrics: Metrics,
                 rng: random.Random | None = None) -> None:
        self.source = source
        self.shadow = shadow
        self.settings = settings
        self.metrics = metrics
        self.rng = rng or random.Random()
        self.queue: asyncio.Queue[_Work] = asyncio.Queue(QUEUE_SIZE)
        self._captures: dict[int, TransactionCapture[_Step]] = {}
        self._tasks: list[asyncio.Task[None]] = []
        self._closing = TaskSet()               # shadow connections being closed
        # Read verdicts per statement stem (texts differing only in trailing digits share one).
        self._is_read = by_statement_stem(self._classify_read, {})
        self._down_until = 0.0   # monotonic: the shadow looked dead; its work is dropped until then
        self.sent = self.mismatches = 0
        self.dropped: dict[str, int] = {}
        self._dropped_counters: dict[str, Any] = {}   # the metric's child per reason (labels() costs per call)
        self._texts: dict[bytes, str] = {}            # prepared statements' texts, decoded once
        self._read_texts: dict[str, bool] = {}        # ... and their read verdicts, by the decoded text

    # ---- the client side (never waits) ------------------------------------------------------

    def _classify_read(self, sql: bytes) -> bool:
        verdict = self.source.classifier.classify(sql.decode("utf-8", "replace"))
        return verdict.route is Route.REPLICA and not verdict.ends_transaction

    def statement(self, session: ClientSessionCore, sql: bytes) -> None:
        """The statement hook: a statement text the client sent."""
        self._take(session, sql.decode("utf-8", "replace"), None)

    def execution(self, session: ClientSessionCore, bound: Bound) -> None:
        """The prepared tap's sink (PostgreSQL): an Execute of a bound portal (its values decoded by the worker)."""
        query = bound.query
        if query is None:   # prepared before the tap was installed: its text is not known here
            self._lost(session)
            return
        self._take(session, self._decoded(query), bound)

    def mysql_execution(self, session: ClientSessionCore, bound: MysqlBound) -> None:
        """The prepared tap's sink (MySQL): a COM_STMT_EXECUTE (its values decoded and inlined by the worker)."""
        if bound.long_data:   # values sent as long data: not in the execute
            self._lost(session)
        else:
            self._take(session, self._decoded(bound.sql), bound)

    def _decoded(self, query: bytes) -> str:
        text = self._texts.get(query)
        if text is None:
            if len(self._texts) >= 4096:
                self._texts.clear()
                self._read_texts.clear()
            text = self._texts[query] = query.decode("utf-8", "replace")
            self._read_texts[text] = self._is_read(query)
        return text

    def _capture(self, session: ClientSessionCore) -> TransactionCapture[_Step]:
        capture = self._captures.get(session.pid)
        if capture is None:
            capture = self._captures[session.pid] = TransactionCapture(
                self.settings.sample, self.settings.reads_only, self._text_is_read)
        return capture

    def _text_is_read(self, text: str) -> bool:
        """A prepared text's verdict from _decoded (no encoding, no stem), else the statement stem's."""
        verdict = self._read_texts.get(text)
        return self._is_read(text.encode()) if verdict is None else verdict

    def _lost(self, session: ClientSessionCore) -> None:
        server = session.server
        if self._capture(session).lost(server is None or not server.in_transaction, self.rng.random()):
            self._drop("unmirrorable")

    def _take(self, session: ClientSessionCore, sql: str, step: _Step | None) -> None:
        server = session.server
        done = self._capture(session).statement(sql, server is None or not server.in_transaction, self.rng.random(),
                                                step)
        if done is None or session.login is None:
            return
        if self._down_until and time.monotonic() < self._down_until:
            self._drop("shadow_down")
            return
        user = session.login.user
        try:
            self.queue.put_nowait(_Work(user.server_user, user.server_password, session.database, done))
        except asyncio.QueueFull:
            self._drop("queue_full")

    def closed(self, session: ClientSessionCore) -> None:
        self._captures.pop(session.pid, None)

    def _drop(self, reason: str, count: int = 1) -> None:
        self.dropped[reason] = self.dropped.get(reason, 0) + count
        counter = self._dropped_counters.get(reason)
        if counter is None:
            counter = self._dropped_counters[reason] = self.metrics.mirror_dropped.labels(self.source.name, reason)
        counter.inc(count)

    # ---- the shadow side --------------------------------------------------------------------

    def start(self) -> None:
        loop = asyncio.get_running_loop()
        self._tasks = [loop.create_task(self._worker()) for _ in range(WORKERS)]
        log.info("cluster %s: mirroring %g of its %s to cluster %s%s", self.source.name, self.settings.sample,
                 "read transactions" if self.settings.reads_only else "transactions", self.shadow.name,
                 " (comparing results)" if self.settings.compare else "")

    def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        self._tasks = []
        left = self.queue.qsize()
        if left:
            self._drop("stopped", left)

    async def _worker(self) -> None:
        clients: dict[tuple[str, Address, str, str], Client] = {}
        try:
            while True:
                work = await self.queue.get()
                try:
                    await asyncio.wait_for(self._send(work, clients), STEP_TIMEOUT * (1 + len(work.statements)))
                except _Unmirrorable:   # maybe mid-transaction on the shadow: its connections go
                    self._forget(clients)
                    self._drop("unmirrorable")
                except TimeoutError:   # a slow shadow: pause too
                    self._forget(clients)
                    self._drop("timeout")
                    self._down_until = time.monotonic() + DOWN_PAUSE
                except OSError as exc:   # no writer, refused, unreachable: pause
                    self._forget(clients)
                    self._drop("shadow_down")
                    self._down_until = time.monotonic() + DOWN_PAUSE
                    log.debug("cluster %s: shadow %s down: %s", self.source.name, self.shadow.name, exc)
                except Exception as exc:  # noqa: BLE001 - whatever the shadow says, the client never hears of it
                    self._forget(clients)
                    self._drop("error")
                    log.debug("cluster %s: mirrored transaction dropped: %s", self.source.name, exc)
                else:
                    self._down_until = 0.0
                    self.sent += 1
                    self.metrics.mirror_sent.labels(self.source.name).inc()
        finally:
            self._forget(clients)

    def _forget(self, clients: dict[tuple[str, Address, str, str], Client]) -> None:
        for client in clients.values():
            self._closing.start(_close_quietly(client))   # held until done (also after stop)
        clients.clear()

    async def _client(self, clients: dict[tuple[str, Address, str, str], Client], side: str, cluster: Cluster[Any],
                      work: _Work) -> Client:
        target = cluster.choose_target(cluster.config.endpoints[0], "primary", None)
        if target is None:
            raise ConnectionError(f"cluster {cluster.name} has no writer")
        key = (side, target, work.user, work.database)
        client = clients.get(key)
        if client is None:
            client = clients[key] = await connect(cluster.config.engine, target, work.user, work.password,
                                                  work.database, timeout=STEP_TIMEOUT, prepared_limit=PREPARED_LIMIT)
        return client

    async def _send(self, work: _Work, clients: dict[tuple[str, Address, str, str], Client]) -> None:
        shadow = await self._client(clients, "shadow", self.shadow, work)
        if not self.settings.compare:
            for step in work.statements:
                await _rows(shadow, step)
            return
        primary = await self._client(clients, "primary", self.source, work)
        for step in work.statements:
            sql = _text(step)
            if is_transaction_control(sql):
                continue
            theirs, ours = await _rows(shadow, step), await _rows(primary, step)
            if len(theirs) != len(ours) or _digest(theirs) != _digest(ours):
                self.mismatches += 1
                self.metrics.mirror_mismatches.labels(self.source.name).inc()
                log.warning("cluster %s: mirror mismatch on cluster %s: %d row(s) vs %d on the primary for: %s",
                            self.source.name, self.shadow.name, len(theirs), len(ours), sql[:500])


def _text(step: _Step) -> str:
    if isinstance(step, str):
        return step
    if isinstance(step, MysqlBound):
        return step.sql.decode("utf-8", "replace")
    return (step.query or b"").decode("utf-8", "replace")


async def _rows(client: Client, step: _Step) -> list[tuple[Any, ...]]:
    """Run one step on a client: its rows (_Unmirrorable when its values do not decode)."""
    if isinstance(step, str):
        return await client.fetch(step)
    if isinstance(step, MysqlBound):
        values = step.values()
        if values is None:
            raise _Unmirrorable(step.sql[:200])
        return await client.fetch(with_literals(step.sql.decode("utf-8", "replace"), values))
    execution = step.execution()
    if execution is None or execution.query is None:   # a malformed Bind: the primary refused it too
        raise _Unmirrorable(step.query)
    return await client.execute(execution.query, execution.types, execution.formats, execution.values,
                                execution.result_formats)


def _digest(rows: list[tuple[Any, ...]]) -> str:
    digest = hashlib.sha256()
    for row in rows:
        digest.update(repr(row).encode())
    return digest.hexdigest()


async def _close_quietly(client: Client) -> None:
    try:
        await client.close()
    except Exception:  # noqa: BLE001 - a connection to a dead shadow may fail to close
        pass


def make_mirrors(clusters: dict[str, Cluster[Any]], metrics: Metrics) -> None:
    """(Re)make every cluster's mirror from its config: old ones stop, new ones start."""
    for cluster in clusters.values():
        if cluster.mirror is not None:
            cluster.mirror.stop()
            cluster.mirror = None
        settings = cluster.config.mirror
        shadow = clusters.get(settings.cluster) if settings is not None else None
        if settings is None or shadow is None:
            continue
        cluster.mirror = Mirror(cluster, shadow, settings, metrics)
        cluster.mirror.start()
