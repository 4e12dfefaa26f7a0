"""COM_CHANGE_USER on a logged-in MySQL client: the proxy authenticates the new user itself (SPEC §12).

The client's server connection (if any) goes back first — reset, since it was logged in as the
old user — then the session's login machine checks the new credentials (one AuthSwitch round may
follow), and the session starts over as the new user and database: its tracked state, prepared
statements and pin are gone, as on a server.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ...core.session import LOGIN
from ...errors import ProxyError
from . import login_flow
from .errors import error_payload
from .server import Variant
from .wire.codes import Capability
from .wire.packets import encode_packets

if TYPE_CHECKING:
    from .session import MysqlClientSession


def start(session: MysqlClientSession, payload: bytes) -> None:
    """The client sent COM_CHANGE_USER (no server attached now)."""
    machine = session.login_machine()
    session.changing_user = True
    finish(session, machine.change_user(payload))


def receive(session: MysqlClientSession, data: bytes) -> bytes:
    """Client packets of an AuthSwitch round; returns bytes after the exchange ended."""
    machine = session.login_machine()
    buf = session.change_buf + data
    pos = 0
    while session.changing_user and len(buf) - pos >= 4:
        length = int.from_bytes(buf[pos:pos + 3], "little")
        end = pos + 4 + length
        if end > len(buf):
            break
        seq, payload = buf[pos + 3], bytes(buf[pos + 4:end])
        pos = end
        finish(session, machine.receive(seq, payload))
    if session.changing_user:
        session.change_buf = bytes(buf[pos:])
        return b""
    session.change_buf = b""
    return bytes(buf[pos:])


def finish(session: MysqlClientSession, replies: list[tuple[int, bytes]]) -> None:
    machine = session.login_machine()
    if machine.failed:
        session.changing_user = False
        session.auth_failed()
        session.close(f"COM_CHANGE_USER failed: {machine.failed_reason}",
                      b"".join(encode_packets(p, s)[0] for s, p in replies))
        return
    if not machine.done:
        session.write(b"".join(encode_packets(p, s)[0] for s, p in replies))
        return
    session.changing_user = False
    if session._counted:
        session.cluster.clients -= 1
        session._counted = False
    try:
        login = session.admit(machine.user, f"Access denied for user '{machine.user}'")
    except ProxyError as exc:
        *before, (seq, _) = replies
        session.close(exc.message, b"".join(encode_packets(p, s)[0] for s, p in before)
                      + encode_packets(error_payload(exc), seq)[0])
        return
    start_over(session, machine.database or "", machine.charset)
    *before, ok = replies
    if before:
        session.write(b"".join(encode_packets(p, s)[0] for s, p in before))
    session._held_ok = ok
    session.state = LOGIN
    login_flow.check_database(session, login)


def start_over(session: MysqlClientSession, database: str, charset: int) -> None:
    """COM_CHANGE_USER succeeded: a new user and database, nothing kept from before."""
    session.database = database
    session.charset = charset
    session.state_vars.reset(database)
    session.state_vars.multi_statements = bool(session.capabilities & Capability.MULTI_STATEMENTS)
    session.prepared.clear()
    session.pinned = None
    session._insert_id = 0
    session._long_data = False
    session.pool_variant = Variant(session.pool_variant.capabilities, charset)
