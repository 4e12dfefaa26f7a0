"""Transaction replay on failover (failover.replay): the asyncio flow for one client, written once for both engines.

The session calls `begin()` when a server is attached for a transaction on the writer, `sent()`
with each client batch it forwards, `relayed()` with each reply it writes to the client, `end()`
when the transaction is over, and `lost()` when the server connection dies. On a loss that can
be replayed, the client keeps its place: its later messages wait in the session's buffer while
this waits (at most failover.replay_timeout) for a writer, sends the recorded units there through
the session's own forwarding (its session state was replayed on attach, its prepared statements
are prepared again where they are used), and relays nothing until the replayed results are known
to hash to what the client already saw. Then the rest — the answer to what was in flight — is
relayed as if nothing happened. Otherwise the client gets the error it would have had.

An engine subclass says how its client messages are recorded (`_record`), what a unit is
(`_traits`), what the server told of the transaction (`_in_transaction`, `_client_saw_fatal`),
what to reset in the session before a replay and what to write when one fails (`_suspend`,
`_fail`). The session provides `_held`, `_pending`, `_borrow_task`, `_attached`, `_forward` and
`_client_data` (core/session.py and the engine's session).
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from ..errors import OutcomeUnknown, ProxyError
from .replay import MISMATCH, RECORD, ResultDigest, TransactionRecord, UnitTraits, Verdict, decide
from .session import READY

log = logging.getLogger("dbproxy.client")

IDLE, RECORDING, REPLAYING = range(3)


class ReplayFlow:
    """One client's transaction record and replay; see the module docstring."""

    def __init__(self, session: Any, digest: ResultDigest) -> None:
        self.session = session
        settings = session.cluster.config.failover
        self.timeout = settings.replay_timeout
        self.record = TransactionRecord(settings.replay_max_bytes, settings.replay_max_statements)
        self.digest = digest
        self.state = IDLE
        self._lost: Any = None   # the dead server's response tracker: what was in flight
        self._error: ProxyError | None = None
        self._timer: asyncio.TimerHandle | None = None

    # ---- what an engine provides ------------------------------------------------------------

    def _record(self, data: bytes) -> None:
        """Add the complete client messages at the start of data to self.record."""
        raise NotImplementedError

    def _traits(self, unit: bytes) -> UnitTraits:
        raise NotImplementedError

    def _answered(self, tracker: Any) -> tuple[int, int]:
        """Units answered up to the last transaction end, and in all (see core.replay.decide)."""
        return self.digest.settled, self.digest.answered

    def _in_transaction(self, tracker: Any) -> bool:
        """The last transaction status the server reported says the client is inside a transaction."""
        raise NotImplementedError

    def _client_saw_fatal(self, tracker: Any) -> bool:
        """The server's own fatal error already reached the client (nothing to hide any more)."""
        return False

    def _keep_state(self) -> None:
        """A transaction begins: remember the client's session state (settings, schema) as it is now."""

    def _restore_state(self) -> None:
        """Before a replay: the session state back to what it was when the transaction began, so that
        the new server starts from there (the replayed statements change it again, in order)."""

    def _replaying(self, on: bool) -> None:
        """Around re-sending the record: the engine may relax checks the original messages already passed."""

    def _unhold(self, relay: bool) -> None:
        """Bytes the digest kept from the client (a server's fatal answer): relay them now, or drop them."""

    def _suspend(self) -> None:
        """A replay begins: reset what the session keeps of the dead connection's work in flight."""

    def _fail(self, tracker: Any, err: ProxyError) -> None:
        """The replay did not work: the session answers the work in flight on tracker with err."""
        raise NotImplementedError

    # ---- recording --------------------------------------------------------------------------

    def begin(self, on_writer: bool) -> None:
        """A server was attached for a new transaction."""
        if self.state == REPLAYING:
            return
        self.record.clear()
        self.digest.restart()
        self.state = RECORDING if on_writer else IDLE
        if on_writer:
            self._keep_state()

    def end(self) -> None:
        """The transaction is over (its server goes back)."""
        if self.state == RECORDING:
            self.state = IDLE
            self.record.clear()

    def sent(self, data: bytes) -> None:
        if self.state == RECORDING:
            record = self.record
            if self.digest.settled > record.first:
                record.settle(self.digest.settled)
            self._record(data)

    def relayed(self, data: bytes, server: Any) -> bytes:
        """Bytes on their way to the client: hashed; while a replay is checked, what may go on."""
        if self.state == IDLE or not data:
            return data
        digest = self.digest
        checking = digest.mode != RECORD
        out = digest.feed(data)
        if not checking:
            return out
        if digest.mode == MISMATCH:
            self._give_up("mismatched", "the replayed results differ from what the client saw")
            return b""
        if digest.mode == RECORD:
            self._verified()
        elif server.tracker.quiet:
            self._give_up("mismatched", "the replayed results ended before what the client saw")
            return b""
        return out

    # ---- the loss ---------------------------------------------------------------------------

    def lost(self, server: Any, err: ProxyError) -> ProxyError | None:
        """The server died under the client: the error its work in flight gets, or None when this
        takes care of the client (a replay began, or one in progress failed)."""
        session = self.session
        if self.state == REPLAYING:   # the replay's own connection: nothing of it reached the client yet
            if self.digest.mode == MISMATCH:
                self._give_up("mismatched", "the replayed results differ from what the client saw")
            else:
                log.info("client %s: the connection for the replay to %s was lost (%s): trying again",
                         session.peer, server.address, err.message)
                self.digest.again()
                session._held = False
                session._borrow_task = asyncio.get_running_loop().create_task(self._run(first=False))
            return None
        if self.state != RECORDING:
            return err
        self.state = IDLE
        tracker = server.tracker
        digest = self.digest
        settled, answered = self._answered(tracker)
        verdict = decide(self.record, settled, answered, self._in_transaction(tracker), self._traits)
        metrics, cluster = session.app.metrics, session.cluster.name
        if verdict is Verdict.REPLAY and self._client_saw_fatal(tracker):
            verdict = Verdict.NOT_REPLAYABLE
        self._unhold(verdict is Verdict.NOTHING or verdict is Verdict.NOT_REPLAYABLE)
        if verdict is Verdict.NOTHING:
            return err
        if verdict is Verdict.UNKNOWN:
            metrics.replay(cluster, "unknown_outcome")
            log.info("client %s: a COMMIT or an autocommit write was in flight on %s: its outcome is unknown",
                     session.peer, server.address)
            return OutcomeUnknown(f"transaction resolution unknown: the server connection to {server.address} "
                                  "was lost while a COMMIT (or a statement outside a transaction block that may "
                                  "write) was in flight; it may or may not have taken effect")
        if verdict is Verdict.NOT_REPLAYABLE:
            metrics.replay(cluster, "not_replayable")
            log.info("client %s: transaction not replayed: %s", session.peer,
                     self.record.refused or "the server's fatal error reached the client")
            return err
        metrics.replay(cluster, "attempted")
        self.state = REPLAYING
        self._lost, self._error = tracker, err
        self._suspend()
        session._broken = None
        digest.expect()
        loop = asyncio.get_running_loop()
        self._timer = loop.call_later(self.timeout, self._timed_out)
        session._borrow_task = loop.create_task(self._run())
        return None

    async def _run(self, first: bool = True) -> None:
        session = self.session
        login = session.login
        assert login is not None
        if first:
            # After two more probes (the second one began after the loss): a killed primary refuses
            # connections by then, its pooled connections are known closed, and none of its backends
            # still being killed (kill -9 of every process takes a while) runs the replay.
            cluster = session.cluster
            for _ in range(2):
                await cluster.next_snapshot(min(self.timeout / 4, 2 * cluster.config.health.interval + 0.1))
        try:
            conn, pool = await session.cluster.borrow(session.endpoint, "primary", login.user, session.database,
                                                      None, session.pool_variant)
        except ProxyError as exc:
            session._borrow_task = None
            self._give_up("failed", f"no writer: {exc.message}")
            return
        session._borrow_task = None
        if self.state != REPLAYING or session.state != READY:
            pool.release(conn)
            return
        session.server, session.server_pool = conn, pool
        conn.owner = session
        session._held = True   # the client's later messages wait until the replay is checked
        self._restore_state()
        session._attached(conn)
        audit, session.statement_audit = session.statement_audit, None
        tap, session.prepared_tap = session.prepared_tap, None   # a replayed transaction is not recorded twice
        self._replaying(True)
        try:
            session._forward(self.record.replay_bytes(), conn)
        except ProxyError as exc:
            self._give_up("failed", exc.message)
            return
        finally:
            session.statement_audit = audit
            session.prepared_tap = tap
            self._replaying(False)
        log.info("client %s: replaying %d statement(s) of its transaction on %s", session.peer,
                 len(self.record.units) + (1 if self.record.open_unit else 0), conn.address)
        if self.digest.mode == RECORD:   # the client had seen nothing of it yet
            self._verified()

    def _timed_out(self) -> None:
        self._timer = None
        if self.state == REPLAYING:
            self._give_up("failed", f"no replay within failover.replay_timeout ({self.timeout:g}s)")

    def _verified(self) -> None:
        session = self.session
        self.state = RECORDING
        self._lost = self._error = None
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        session.app.metrics.replay(session.cluster.name, "succeeded")
        log.info("client %s: transaction replayed on %s: the results matched", session.peer,
                 session.server.address if session.server is not None else "?")
        asyncio.get_running_loop().call_soon(self._resume)

    def _resume(self) -> None:
        """After the replayed prefix: what the client sent meanwhile goes on (after the relay in progress)."""
        session = self.session
        if session.server is not None and session._held and self.state != REPLAYING:
            session._held = False
            if session._pending and session.state == READY:
                session._client_data(b"")

    def _give_up(self, outcome: str, why: str) -> None:
        """The replay did not work: the client gets the error it would have had."""
        session = self.session
        self.state = IDLE
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if session._borrow_task is not None:
            session._borrow_task.cancel()
            session._borrow_task = None
        server, pool = session.server, session.server_pool
        if server is not None:   # the replay's connection: what ran there goes with it (rolled back)
            session.server = session.server_pool = None
            server.owner = None
            if pool is not None:
                pool.discard(server)
            else:
                server.close()
        session._held = False
        session.app.metrics.replay(session.cluster.name, outcome)
        log.info("client %s: transaction not replayed: %s", session.peer, why)
        tracker, err = self._lost, self._error
        self._lost = self._error = None
        if tracker is None or err is None or session.state != READY:
            return
        self._fail(tracker, err)
        if session._pending:
            session._need_server()
