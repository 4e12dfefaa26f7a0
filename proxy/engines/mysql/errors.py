"""The proxy's own refusals as MySQL errors: each neutral error kind gets its errno and SQLSTATE."""

from __future__ import annotations

from ...errors import (
    AuthenticationFailed,
    BorrowTimeout,
    OutcomeUnknown,
    ProtocolViolation,
    ProxyError,
    ServerConnectFailed,
    ServerUnavailable,
    ShuttingDown,
    TooManyConnections,
    TooManyUserConnections,
    UnknownDatabase,
)
from .wire.codes import ERROR_SQLSTATE, ErrorCode
from .wire.messages import encode_err

# Most specific first (BorrowTimeout and ServerConnectFailed are ServerUnavailables).
_ERRNO: tuple[tuple[type[ProxyError], int], ...] = (
    (AuthenticationFailed, ErrorCode.ACCESS_DENIED),
    (TooManyUserConnections, ErrorCode.TOO_MANY_USER_CONNECTIONS),
    (TooManyConnections, ErrorCode.CON_COUNT),
    (UnknownDatabase, ErrorCode.BAD_DB),
    (ProtocolViolation, ErrorCode.HANDSHAKE),
    (ShuttingDown, ErrorCode.SERVER_SHUTDOWN),
    (BorrowTimeout, ErrorCode.CON_COUNT),
    (ServerConnectFailed, ErrorCode.CR_SERVER_LOST),
    (ServerUnavailable, ErrorCode.CR_SERVER_LOST),
)
# A plain ProxyError carries a PostgreSQL-style SQLSTATE; these map to MySQL numbers.
_BY_SQLSTATE = {
    "57P01": ErrorCode.CONNECTION_KILLED,
    "08P01": ErrorCode.NET_PACKETS_OUT_OF_ORDER,
    "0A000": ErrorCode.UNKNOWN_COM,
}


class ServerRefusal(ProxyError):
    """A server's own refusal handed to the client as the server worded it (errno, SQLSTATE, message)."""

    def __init__(self, errno: int, sqlstate: str, message: str) -> None:
        super().__init__(message, sqlstate)
        self.errno = errno


def errno_of(exc: ProxyError) -> tuple[int, str]:
    """(errno, SQLSTATE) for a proxy error; a server's own refusal keeps its number."""
    errno = getattr(exc, "errno", None)
    if isinstance(errno, int):
        return errno, exc.sqlstate if len(exc.sqlstate) == 5 else "HY000"
    if isinstance(exc, OutcomeUnknown):   # a COMMIT in flight on a lost server: 2013 as MySQL says, and 08007
        return ErrorCode.CR_SERVER_LOST, "08007"
    for kind, code in _ERRNO:
        if isinstance(exc, kind):
            return code, ERROR_SQLSTATE.get(code, "HY000")
    code = _BY_SQLSTATE.get(exc.sqlstate, 0)
    if code:
        return code, ERROR_SQLSTATE.get(code, "HY000")
    return 1105, "HY000"   # ER_UNKNOWN_ERROR


def error_payload(exc: ProxyError) -> bytes:
    """An ERR packet payload (no header) for exc."""
    errno, sqlstate = errno_of(exc)
    return encode_err(errno, exc.message, sqlstate)
