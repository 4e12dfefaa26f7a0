"""A MySQL client's movable session state, and the hidden commands that put it on a server connection.

Sans-IO. What moves (SPEC §12): the current schema (COM_INIT_DB, USE), the character set
(SET NAMES / CHARACTER SET; the handshake charset is the pool variant's), the COM_SET_OPTION
multi-statements switch, and plain `SET [SESSION] var = literal` (autocommit, sql_mode,
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
    multi_statements: bool | None = None   # COM_SET_OPTION; None: as the handshake capabilities say

    def set(self, change: SetVariable) -> None:
        self.variables[variable_key(change.name)] = change

    def reset(self, schema: str) -> None:
        """COM_RESET_CONNECTION: back to the login defaults."""
        self.schema = schema
        self.variables.clear()
        self.multi_statements = None


def replay(client: TrackedState, server_schema: str, server_variables: dict[str, SetVariable],
           server_multi_statements: bool | None, charset_id: int = 45) -> list[tuple[int, bytes]]:
    """(command, body) pairs that make a server connection's session state the client's."""
    commands: list[tuple[int, bytes]] = []
    if client.schema and client.schema != server_schema:
        commands.append((Command.INIT_DB, client.schema.encode()))
    wanted = client.variables
    statements = [change.to_sql() for key, change in wanted.items() if server_variables.get(key) != change]
    for key in server_variables:
        if key not in wanted:
            default = SetVariable(NAMES, handshake_names(charset_id)) if key == NAMES else SetVariable(key, None)
            statements.append(default.to_sql())
    commands.extend((Command.QUERY, sql.encode()) for sql in statements)
    if client.multi_statements is not None and client.multi_statements != server_multi_statements:
        commands.append((Command.SET_OPTION, b"\x00\x00" if client.multi_statements else b"\x01\x00"))
    return commands
