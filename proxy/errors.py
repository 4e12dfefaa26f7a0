"""One exception tree for client-visible failures; each error knows its SQLSTATE."""

from __future__ import annotations


class ProxyError(Exception):
    """A failure that is reported to a client as a protocol error."""

    sqlstate = "XX000"
    severity = "ERROR"

    def __init__(self, message: str, sqlstate: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        if sqlstate is not None:
            self.sqlstate = sqlstate


class ProtocolViolation(ProxyError):
    """The client sent bytes that are not valid protocol."""

    sqlstate = "08P01"
    severity = "FATAL"


class AuthenticationFailed(ProxyError):
    """Wrong password or unknown user."""

    sqlstate = "28P01"
    severity = "FATAL"


class TooManyConnections(ProxyError):
    """max_client_connections reached."""

    sqlstate = "53300"
    severity = "FATAL"


class TooManyUserConnections(TooManyConnections):
    """A user's max_client_connections reached (MySQL: ER_TOO_MANY_USER_CONNECTIONS)."""


class UnknownDatabase(ProxyError):
    """The client asked for a database the proxy does not serve."""

    sqlstate = "3D000"
    severity = "FATAL"


class ServerUnavailable(ProxyError):
    """No server connection could be obtained (no writer, pool timeout, connect failure)."""

    sqlstate = "08006"


class OutcomeUnknown(ServerUnavailable):
    """The server connection died while a COMMIT (or an autocommit write) was in flight: it may or may
    not have taken effect, so it is not replayed (failover.replay)."""

    sqlstate = "08007"


class BorrowTimeout(ServerUnavailable):
    """Waited borrow_timeout for a server connection."""

    sqlstate = "53300"


class ServerConnectFailed(ServerUnavailable):
    """Opening or authenticating a server connection failed."""

    sqlstate = "08001"


class PoolRerouted(ServerConnectFailed):
    """A queued borrower of a pool whose instance stopped being the writer: borrow again (new route)."""


class ShuttingDown(ProxyError):
    """The proxy is shutting down."""

    sqlstate = "57P01"
    severity = "FATAL"


class InjectedFault(ProxyError):
    """An error produced by fault injection (SPEC §13): its SQLSTATE, and its errno for MySQL clients."""

    def __init__(self, message: str, sqlstate: str, errno: int) -> None:
        super().__init__(message, sqlstate)
        self.errno = errno
