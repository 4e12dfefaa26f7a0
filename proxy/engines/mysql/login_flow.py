"""A MySQL client's way in and its refusal: greeting, login packets, admission, held OK, too-large drain.

The proxy greets the client itself (its own connection id, scramble and auth plugin) and lets the
session's `ClientLogin` check the password against the verifiers derived at config load. Once the
login machine is done the client is admitted (or refused: too many clients), the session takes
the client's database, capabilities and charset, and the login's OK is held until the (user,
database) is known to exist — the first client of a pair proves it with one server login
(`first_login`) — then `welcome` sends it and hands on what the client sent meanwhile.

A command over the size limit (command_framing.CommandTooLarge) gets ER_NET_PACKET_TOO_LARGE,
after which the client is read and dropped for DRAIN_SECONDS and closed (`refuse_too_large`).
Functions of the session, as change_user.py and kill.py are.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING, Any

from ...core import token_login
from ...core.session import AUTH, LOGIN, READY, STARTUP
from ...errors import ProtocolViolation, ProxyError, UnknownDatabase
from ...logs import ConnectionLog
from .auth import verify_cleartext
from .client_login import ClientLogin
from .command_framing import CommandTooLarge, speaks_postgres
from .errors import ServerRefusal, errno_of, error_payload
from .server import VARIANT_CAPABILITIES, Variant
from .server_login import MysqlServerRefused
from .wire.codes import Capability, ErrorCode
from .wire.messages import encode_err
from .wire.packets import encode_packets

if TYPE_CHECKING:
    from .session import MysqlClientSession

log = logging.getLogger("dbproxy.client")
connections_log = ConnectionLog()

# The capabilities the proxy's greeting offers (LOCAL_FILES too with allow_local_infile).
_OFFERED = (Capability.LONG_PASSWORD | Capability.FOUND_ROWS | Capability.LONG_FLAG | Capability.CONNECT_WITH_DB
            | Capability.NO_SCHEMA | Capability.IGNORE_SPACE | Capability.PROTOCOL_41 | Capability.INTERACTIVE
            | Capability.IGNORE_SIGPIPE | Capability.TRANSACTIONS | Capability.SECURE_CONNECTION
            | Capability.MULTI_STATEMENTS | Capability.MULTI_RESULTS | Capability.PS_MULTI_RESULTS
            | Capability.PLUGIN_AUTH | Capability.CONNECT_ATTRS | Capability.PLUGIN_AUTH_LENENC_CLIENT_DATA
            | Capability.DEPRECATE_EOF)
# A client refused for an oversized command: its bytes are read and dropped this long, then it is closed.
DRAINING = 100   # the session state meanwhile (data_received drops everything)
DRAIN_SECONDS = 1.0
# The largest login packet a client may send.
_MAX_LOGIN_PACKET = 64 * 1024


def greet(session: MysqlClientSession) -> None:
    """The client connected: its connection id and cancel key, the login machine, the greeting.

    A connection over client_connect_rate gets ER_CON_COUNT_ERROR in place of the greeting, as a
    server at max_connections answers."""
    if session.refusal is not None:
        session.close(session.refusal.message, encode_packets(error_payload(session.refusal), 0)[0])
        return
    session.pid, session.key = session.app.register_cancel_key(session)
    host = session.peer.rsplit(":", 1)[0]
    offered = _OFFERED | (Capability.LOCAL_FILES if session.cluster.config.allow_local_infile else 0)
    if session.tls_context() is not None:
        offered |= Capability.SSL
    app = session.app

    def verifiers(name: str) -> Any:
        login = app.users.get(name)
        return login.secrets.get("mysql") if login is not None else None

    def user_auth(name: str) -> str:
        login = app.users.get(name)
        return login.user.auth if login is not None else "password"

    def check_cleartext(name: str, password: bytes, verifiers: Any) -> bool | str:
        """mysql_clear_password (and caching_sha2 full authentication over TLS): tokens for token users."""
        login = app.users.get(name)
        if login is None or login.user.auth == "password":
            return verifiers is not None and verify_cleartext(verifiers, password)
        return token_login.check_cleartext(session, login.user, password) or True

    login = session._login_machine = ClientLogin(
        session.cluster.config.client_auth, session.pid, session.shared.server_version, offered, verifiers, host,
        require_tls=session.tls_settings.mode == "require", check_cleartext=check_cleartext, user_auth=user_auth,
        plaintext_tokens=app.tokens.allow_plaintext)
    session.write(encode_packets(login.greeting(), 0)[0])


def receive(session: MysqlClientSession, data: bytes) -> None:
    """Client bytes during the login (states STARTUP and AUTH): packets for the login machine."""
    buf = session._buf + data if session._buf else data
    if session.state == STARTUP and not session._buf and speaks_postgres(buf):
        raise ProtocolViolation("this endpoint speaks the MySQL protocol; the client sent a PostgreSQL startup")
    machine = session._login_machine
    assert machine is not None
    pos = 0
    while len(buf) - pos >= 4:
        length = int.from_bytes(buf[pos:pos + 3], "little")
        if length >= _MAX_LOGIN_PACKET:
            raise ProtocolViolation(f"login packet of {length} bytes is too large")
        end = pos + 4 + length
        if end > len(buf):
            break
        seq, payload = buf[pos + 3], bytes(buf[pos + 4:end])
        pos = end
        session.state = AUTH
        replies = machine.receive(seq, payload)
        if machine.wants_tls:
            context = session.tls_context()
            if context is None:   # offered at greeting, but the certificate went bad since
                session.close("TLS requested", encode_packets(encode_err(
                    ErrorCode.SECURE_TRANSPORT_REQUIRED, "TLS is not available on this dbproxy endpoint"), seq + 1)[0])
                return
            session._buf = b""
            session.start_tls(context, bytes(buf[pos:]))   # the ClientHello may follow in the same read
            return
        if machine.failed:
            session.auth_failed(machine.user, machine.database or "")
            log.info("client %s: login failed: %s", session.peer, machine.failed_reason)
            session.close(machine.failed_reason, b"".join(encode_packets(p, s)[0] for s, p in replies))
            return
        if machine.done:
            session._buf = b""
            _logged_in(session, replies, buf[pos:])
            return
        session.write(b"".join(encode_packets(p, s)[0] for s, p in replies))
    session._buf = bytes(buf[pos:])
    if len(session._buf) > _MAX_LOGIN_PACKET + 4:
        raise ProtocolViolation("login packet too large")


def _logged_in(session: MysqlClientSession, replies: list[tuple[int, bytes]], rest: bytes) -> None:
    """The password is right: admit the client, take its settings, hold the OK (the last reply)."""
    machine = session._login_machine
    assert machine is not None
    session.state = LOGIN
    try:
        login = session.admit(machine.user, f"Access denied for user '{machine.user}'")
        session.database = machine.database or ""
        session.claim_limits()
    except ProxyError as exc:   # too many clients: the ERR takes the OK's place (and sequence id)
        *before, (seq, _) = replies
        log.info("client %s: %s", session.peer, exc.message)
        session.close(exc.message, b"".join(encode_packets(p, s)[0] for s, p in before)
                      + encode_packets(error_payload(exc), seq)[0])
        return
    session.database = machine.database or ""
    session.capabilities = machine.capabilities
    session.charset = machine.charset
    session.app_name = machine.attributes.get("program_name", "")
    session.state_vars.schema = session.database
    # LOCAL_FILES towards servers only with allow_local_infile: otherwise the server refuses
    # LOAD DATA LOCAL itself (ERROR 1148).
    wanted = VARIANT_CAPABILITIES | (Capability.LOCAL_FILES if session.cluster.config.allow_local_infile else 0)
    capabilities = session.capabilities & wanted
    if session.capabilities & Capability.MULTI_STATEMENTS:
        capabilities |= Capability.MULTI_RESULTS   # as a server implies it for multi-statement clients
    session.pool_variant = Variant(capabilities, session.charset)
    session.state_vars.multi_statements = bool(session.capabilities & Capability.MULTI_STATEMENTS)
    if rest:
        session._pending += rest
    *before, ok = replies
    if before:
        session.write(b"".join(encode_packets(p, s)[0] for s, p in before))
    session._held_ok = ok
    check_database(session, login)


def check_database(session: MysqlClientSession, login: Any) -> None:
    """Send the held OK once the (user, database) is known to exist (one server login the first time)."""
    key = (login.user.server_user, session.database)
    if key in session.shared.known_databases:
        welcome(session)
    else:
        session._borrow_task = asyncio.get_running_loop().create_task(first_login(session, key))


async def first_login(session: MysqlClientSession, key: tuple[str, str]) -> None:
    """First client of a (user, database): a server connection proves the database exists."""
    assert session.login is not None and session._held_ok is not None
    try:
        conn, pool = await session.cluster.borrow(session.endpoint, "primary", session.login.user, session.database,
                                                  None, session.pool_variant)
    except ProxyError as exc:
        session._borrow_task = None
        seq = session._held_ok[0]
        if isinstance(exc, MysqlServerRefused) and exc.errno in (ErrorCode.BAD_DB, ErrorCode.DBACCESS_DENIED):
            # What the server would have told the client itself (1044 when the user may not see
            # whether the database exists).
            exc = UnknownDatabase(f"Unknown database '{session.database}'") if exc.errno == ErrorCode.BAD_DB \
                else ServerRefusal(exc.errno, exc.sqlstate, exc.server_message)
        log.info("client %s: %s", session.peer, exc.message)
        errno, _ = errno_of(exc)
        if 2000 <= errno < 3000:
            # A client error number (2013: lost connection) in the answer to the login makes
            # Connector/C (the mariadb CLI) report ERROR 2027 "Received malformed packet" instead of
            # the message: at login the proxy says ER_UNKNOWN_ERROR with its own words.
            payload = encode_err(ErrorCode.UNKNOWN_ERROR, exc.message, "HY000")
        else:
            payload = error_payload(exc)
        session.close(exc.message, encode_packets(payload, seq)[0])
        return
    session._borrow_task = None
    session.shared.known_databases.add(key)
    session.shared.server_version = conn.server_version or session.shared.server_version
    pool.release(conn)
    if session.state == LOGIN:
        welcome(session)


def welcome(session: MysqlClientSession) -> None:
    """Send the held OK: the client is READY; what it sent meanwhile is handled now."""
    assert session.login is not None and session._held_ok is not None
    seq, ok = session._held_ok
    session._held_ok = None
    session.write(encode_packets(ok, seq)[0])
    session.state = READY
    session.logged_in()
    connections_log.info("client %s connected: user=%s database=%s endpoint=%s/%s", session.peer,
                         session.login.user.name, session.database, session.cluster.name, session.endpoint.name)
    if session._pending:
        data = bytes(session._pending)
        session._pending.clear()
        try:
            session._client_data(data)
        except ProxyError as exc:
            session._client_error(exc)


def refuse_too_large(session: MysqlClientSession, exc: CommandTooLarge) -> None:
    """ER_NET_PACKET_TOO_LARGE, then close; what the client is still sending is read and dropped
    meanwhile, so that it reads the error instead of a connection reset."""
    log.warning("client %s: %s", session.peer, exc.message)
    session._close_reason = exc.message
    session._pending.clear()
    session._need = 0
    session._give_back_server()
    session.write(encode_packets(error_payload(exc), exc.seq)[0])
    session.state = DRAINING   # data_received drops everything from now on
    asyncio.get_running_loop().call_later(DRAIN_SECONDS, session.close, exc.message)
