"""KILL and SHOW PROCESSLIST on a MySQL client: the proxy's connection ids stand for server threads (SPEC §12).

A client knows its connection by the id in the proxy's handshake, not by the thread id of whichever
server connection runs its statements. So:

- `KILL [QUERY | CONNECTION] n` (and COM_PROCESS_KILL) with a proxy id n is answered by the proxy
  when the target is a connection of the same proxy user: KILL QUERY interrupts the statement the
  target runs now (from a second server connection), KILL CONNECTION closes the target.
- A connection of another proxy user may be killed only if the server allows it (SUPER / CONNECTION
  ADMIN): while the target has a server connection on the same instance, the statement goes to the
  server as `KILL [QUERY] <thread>`, and the server decides (when that thread then dies, a KILL
  CONNECTION closes the client too); otherwise it is ERROR 1095.
- `SHOW [FULL] PROCESSLIST` goes to the server, and its `Id` column is rewritten so that the
  threads serving proxy clients show those clients' proxy ids (ResponseTracker action RENAME).
"""

from __future__ import annotations

import logging
import re
from typing import TYPE_CHECKING, NamedTuple

from ...config import Address
from ...errors import ProxyError
from .wire.codes import ErrorCode
from .wire.messages import encode_err, encode_ok
from .wire.packets import encode_packets

if TYPE_CHECKING:
    from .server import MysqlServerConnection
    from .session import MysqlClientSession

log = logging.getLogger("dbproxy.client")

PROCESSLIST = re.compile(rb"\s*show\s+(?:full\s+)?processlist\s*;?\s*\Z", re.IGNORECASE)
_KINDS = ("connection", "query")


class ShutDownByKill(ProxyError):
    """KILL CONNECTION of this client by another connection."""

    sqlstate = "70100"
    errno = ErrorCode.CONNECTION_KILLED


class Outcome(NamedTuple):
    """What becomes of a KILL: the proxy's reply to the client, or a command for the attached server."""

    reply: bytes = b""     # whole packets for the client
    forward: bytes = b""   # a COM_QUERY packet to send the server instead (whose answer the client gets)


def kill(session: MysqlClientSession, what: str, target_id: int,
         server: MysqlServerConnection | None = None) -> Outcome | None:
    """`KILL what target_id` from session. With server None (no server connection attached), a kill
    the server must judge returns None: the caller borrows one and asks again."""
    target = session.app.client_by_id(target_id)
    assert session.login is not None
    from .session import MysqlClientSession

    if target is None or not isinstance(target, MysqlClientSession) or target.login is None:
        return _error(ErrorCode.NO_SUCH_THREAD, f"Unknown thread id: {target_id}")
    if target.login.user.name != session.login.user.name:
        thread = target.server
        if thread is None or thread.closed:
            return _error(ErrorCode.KILL_DENIED,
                          f"You are not owner of thread {target_id} (through dbproxy another user's "
                          "connection can be killed only while it runs a statement)")
        if server is None:
            return None
        if server.address != thread.address:
            return _error(ErrorCode.KILL_DENIED,
                          f"You are not owner of thread {target_id} (it runs on another instance)")
        log.info("client %s: KILL %s %d (thread %d on %s, the server decides)", session.peer, what, target_id,
                 thread.pid, thread.address)
        if what == "query":
            verb = b"KILL QUERY"
        else:
            verb = b"KILL CONNECTION"
            target.killed_thread = thread.pid   # if that thread dies now, the client goes with it
        return Outcome(forward=encode_packets(b"\x03%s %d" % (verb, thread.pid), 0)[0])
    log.info("client %s: KILL %s %d", session.peer, what, target_id)
    if what == "query":
        if target.server is not None:
            session.app.spawn(session.cluster.engine.cancel(target.server))
    else:
        target.close_with_error("killed", ShutDownByKill("Connection was killed"))
    return Outcome(encode_packets(encode_ok(session.capabilities, status=session._status()), 1)[0])


def local_kill(session: MysqlClientSession, sql: bytes) -> bytes | None:
    """The reply to a COM_QUERY `KILL [QUERY | CONNECTION] n` with no server attached (None: not one,
    or one the server must judge)."""
    if sql[:4].lower() != b"kill":
        return None
    from .session_state import session_effects

    target = session_effects(sql.decode("utf-8", "replace")).kill
    if target is None or target.target is None or target.kind not in _KINDS:
        return None
    outcome = kill(session, target.kind, target.target)
    if outcome is None:
        return None
    session.queries += 1
    return outcome.reply


def thread_names(session: MysqlClientSession, address: Address) -> dict[int, int]:
    """Server thread id → proxy connection id, for the server connections on `address` serving clients now."""
    names: dict[int, int] = {}
    for client in session.app.sessions:
        server = client.server
        if server is not None and server.address == address and server.pid:
            names[server.pid] = client.pid
    return names


def _error(errno: int, message: str) -> Outcome:
    return Outcome(encode_packets(encode_err(errno, message), 1)[0])
