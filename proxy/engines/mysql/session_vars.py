"""A MySQL client's movable session state, and the hidden commands that put it on a server connection.

Sans-IO. What moves (SPEC §12): the current schema (COM_INIT_DB, USE), the character set
(SET NAMES / CHARACTER SET; the handshake charset is the pool variant's), the multi-statements
switch (CLIENT_MULTI_STATEMENTS at the client's handshake, then COM_SET_OPTION: server connections
log in without it), and plain `SET [SESSION] var = literal` (autocommit, sql_mode,
time_zone, transaction_isolation, ...). The client side is a `TrackedState`; each server
connection carries the state applied to it (`schema`, `variables`); `replay()` says what to run
so the server matches the client: a COM_INIT_DB and one SET per differing variable, usually nothing.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from .session_state import CHARACTER_SET, NAMES, SetVariable
from .wire.codes import Command

_CHARSET_KEYS = (NAMES, CHARACTER_SET)
_ALIASES = {"tx_isolation": "transaction_isolation", "tx_read_only": "transaction_read_only"}
# MariaDB before 11.1 knows only the tx_ names; MySQL 8 only the transaction_ ones.
_LEGACY_NAMES = {"transaction_isolation": "tx_isolation", "transaction_read_only": "tx_read_only"}

# Handshake collation ids -> what SET NAMES puts back (the common ones; others fall back to utf8mb4).
_COLLATIONS = {
    8: "latin1 COLLATE latin1_swedish_ci", 33: "utf8mb3 COLLATE utf8mb3_general_ci",
    45: "utf8mb4 COLLATE utf8mb4_general_ci", 46: "utf8mb4 COLLATE utf8mb4_bin",
    63: "binary", 83: "utf8mb3 COLLATE utf8mb3_bin", 192: "utf8mb3 COLLATE utf8mb3_unicode_ci",
    224: "utf8mb4 COLLATE utf8mb4_unicode_ci", 255: "utf8mb4 COLLATE utf8mb4_0900_ai_ci",
}


def handshake_names(collation_id: int) -> str:
    """The SET NAMES argument equal to a handshake's character set."""
    return _COLLATIONS.get(collation_id, "utf8mb4")


def variable_key(name: str) -> str:
    name = name.lower()
    return NAMES if name in _CHARSET_KEYS else _ALIASES.get(name, name)


@dataclass
class TrackedState:
    """The session state a client has set: the latest change per variable."""

    schema: str = ""
    variables: dict[str, SetVariable] = field(default_factory=dict)
    multi_statements: bool = False   # CLIENT_MULTI_STATEMENTS at the handshake, then COM_SET_OPTION

    def set(self, change: SetVariable) -> None:
        self.variables[variable_key(change.name)] = change

    def reset(self, schema: str) -> None:
        """COM_RESET_CONNECTION: back to the login defaults (the server keeps COM_SET_OPTION's switch)."""
        self.schema = schema
        self.variables.clear()


def legacy_transaction_names(server_version: str) -> bool:
    """The server knows tx_isolation / tx_read_only but not transaction_isolation / _read_only
    (MariaDB before 11.1)."""
    if "mariadb" not in server_version.lower():
        return False
    version = server_version.removeprefix("5.5.5-")
    try:
        major, minor = (int(part) for part in version.split("-", 1)[0].split(".")[:2])
    except ValueError:
        return True
    return (major, minor) < (11, 1)


def _default(key: str, charset_id: int, server_version: str) -> SetVariable:
    """The change that puts variable `key` back to its default on a server connection."""
    if key == NAMES:
        return SetVariable(NAMES, handshake_names(charset_id))
    if key in _LEGACY_NAMES and legacy_transaction_names(server_version):
        return SetVariable(_LEGACY_NAMES[key], None)
    return SetVariable(key, None)


def replay(client: TrackedState, server_schema: str, server_variables: dict[str, SetVariable],
           server_multi_statements: bool, charset_id: int = 45,
           server_version: str = "") -> list[tuple[int, bytes]]:
    """(command, body) pairs that make a server connection's session state the client's."""
    commands: list[tuple[int, bytes]] = []
    if client.schema and client.schema != server_schema:
        commands.append((Command.INIT_DB, client.schema.encode()))
    wanted = client.variables
    statements = [change.to_sql() for key, change in wanted.items() if server_variables.get(key) != change]
    for key in server_variables:
        if key not in wanted:
            statements.append(_default(key, charset_id, server_version).to_sql())
    commands.extend((Command.QUERY, sql.encode()) for sql in statements)
    if client.multi_statements != server_multi_statements:
        commands.append((Command.SET_OPTION, b"\x00\x00" if client.multi_statements else b"\x01\x00"))
    return commands
