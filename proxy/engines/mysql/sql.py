"""Small SQL conversations on the proxy's own MySQL connections (probes, failover actions): rows by column name."""

from __future__ import annotations

from ...config import Address, TlsSettings
from ...errors import ProxyError
from .server import MysqlServerConnection, Variant, open_server_connection, wait_quiet
from .wire.codes import UTF8MB4_GENERAL_CI, Capability
from .wire.messages import decode_column_definition, decode_err, decode_text_row

Row = dict[str, str | None]
ADMIN_VARIANT = Variant(int(Capability.MULTI_RESULTS | Capability.TRANSACTIONS | Capability.LONG_PASSWORD),
                        UTF8MB4_GENERAL_CI)


class QueryFailed(ProxyError):
    """The server answered a statement with an ERR (the connection is still usable)."""

    def __init__(self, errno: int, sqlstate: str, message: str) -> None:
        super().__init__(f"ERROR {errno} ({sqlstate}): {message}")
        self.errno = errno
        self.server_message = message


async def connect(address: Address, user: str, password: str | None, timeout: float,
                  tls: TlsSettings | None = None) -> MysqlServerConnection:
    """A connection without a database, for the proxy's own statements (TLS as the cluster's server_tls)."""
    return await open_server_connection(address, user, password, "", ADMIN_VARIANT, timeout,
                                        tls=tls or TlsSettings())


async def query(conn: MysqlServerConnection, sql: str, timeout: float) -> list[Row]:
    """The rows of one statement, each a dict by column name (values as text, NULL as None)."""
    tracker = conn.tracker
    errors = tracker.errors
    conn.run_capture(sql)
    await wait_quiet(conn, sql, timeout)
    if tracker.errors != errors:
        err = decode_err(tracker.last_error)
        raise QueryFailed(err.errno, err.sqlstate, err.message)
    names = [decode_column_definition(c).name for c in tracker.captured_columns]
    rows = [dict(zip(names, (None if v is None else v.decode("utf-8", "replace") for v in decode_text_row(r)),
                     strict=False)) for r in tracker.captured]
    tracker.captured.clear()
    tracker.captured_columns.clear()
    return rows


async def execute(conn: MysqlServerConnection, sql: str, timeout: float) -> None:
    """Run one statement that returns no rows worth keeping (QueryFailed on an ERR)."""
    await query(conn, sql, timeout)


def is_mysql(conn: MysqlServerConnection) -> bool:
    """MySQL rather than MariaDB (from the server's handshake version)."""
    return "mariadb" not in conn.server_version.lower()


def literal(value: str) -> str:
    """A MySQL string literal (backslashes and quotes escaped)."""
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"
