"""What the proxy answers a MySQL client itself: commands that need no server, errors when it can get none.

`answer_locally` answers the leading commands that need no server — COM_PING, COM_QUIT,
COM_STMT_CLOSE, COM_RESET_CONNECTION, COM_STMT_RESET, KILL of a proxy connection id — and starts
a COM_CHANGE_USER (change_user.py); the rest go to a server. `fail_batch` answers each pending
command with the error that no server could be had, as a server would have answered it.
Functions of the session, as change_user.py and kill.py are.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ...errors import ProxyError
from . import change_user, kill
from .command_framing import NO_RESPONSE, command_end
from .errors import error_payload
from .prepared_flow import close_statement
from .wire.codes import Command
from .wire.messages import encode_ok
from .wire.packets import encode_packets

if TYPE_CHECKING:
    from .session import MysqlClientSession

_K = frozenset(b"kK")   # a COM_QUERY starting with one of these may be a KILL the proxy answers itself


def answer_locally(session: MysqlClientSession, data: bytes) -> bytes:
    """With no server attached: answer the leading commands that need none; returns the rest."""
    if len(data) > 5 and data[4] == Command.QUERY and data[5] not in _K:
        return data   # the common case: a query that is not KILL
    pos = 0
    size = len(data)
    out: list[bytes] = []
    while size - pos >= 5:
        end = command_end(data, pos)
        if end > size:
            break
        command = data[pos + 4]
        if command == Command.PING:
            out.append(encode_packets(encode_ok(session.capabilities, status=session._status()), 1)[0])
        elif command == Command.QUIT:
            session.write(b"".join(out))
            session.close("client sent COM_QUIT")
            return b""
        elif command == Command.STMT_CLOSE:
            close_statement(session.prepared, data[pos + 4:end])
        elif command == Command.RESET_CONNECTION and session.pinned is None and not session.session_mode:
            session._reset_state()
            out.append(encode_packets(encode_ok(session.capabilities, status=session._status()), 1)[0])
        elif command == Command.STMT_RESET and not session._long_data:
            out.append(encode_packets(encode_ok(session.capabilities, status=session._status()), 1)[0])
        elif command == Command.PROCESS_KILL and end - pos >= 9:
            outcome = kill.kill(session, "connection", int.from_bytes(data[pos + 5:pos + 9], "little"))
            if outcome is None:
                break   # the server must judge it
            out.append(outcome.reply)
        elif command == Command.CHANGE_USER:
            if out:
                session.write(b"".join(out))
            session._pending += data[end:]
            change_user.start(session, data[pos + 4:end])
            return b""
        elif command == Command.QUERY and end - pos > 9 and data[pos + 5] in _K:
            # KILL needs no server connection: it must work while the pool is exhausted too.
            reply = kill.local_kill(session, data[pos + 5:end])
            if reply is None:
                break
            out.append(reply)
        else:
            break
        pos = end
    if out:
        session.write(b"".join(out))
    return data[pos:] if pos else data


def fail_batch(session: MysqlClientSession, err: ProxyError, first_batch_only: bool = False) -> None:
    """No server for the pending commands: answer each with err, as a server would."""
    data = bytes(session._pending)
    session._pending.clear()
    session._need = 0
    out: list[bytes] = []
    pos = 0
    while len(data) - pos >= 5:
        end = command_end(data, pos)
        if end > len(data):
            break
        command = data[pos + 4]
        pos = end
        if command == Command.QUIT:
            session.write(b"".join(out))
            session.close("client sent COM_QUIT")
            return
        if command not in NO_RESPONSE:
            out.append(encode_packets(error_payload(err), 1)[0])
            if first_batch_only:
                break
    session._pending += data[pos:]
    session.write(b"".join(out))
