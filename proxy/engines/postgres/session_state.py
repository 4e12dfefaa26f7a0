"""SQL-level session state in a query text: SETs to replay elsewhere, and what pins a client (pooling).

`session_effects(sql)` runs on every simple query and Parse on the transaction-pooling hot path.
A cheap check on the lower-cased text (statement-leading keywords after `;`, whitespace and
comments; a few words anywhere) answers the shared `EMPTY` for ordinary statements without
parsing or caching them.  Only a text that might change session state is parsed (pglast) and its
verdict cached by exact text.

What is found, per statement in text order:

- `sets`: session-level `SET [SESSION] name = value | TO value | TO DEFAULT`, `RESET name`,
  `RESET ALL` (name "all", value None), `SET TIME ZONE` (name "timezone"), `SET NAMES`
  ("client_encoding"), `SET SCHEMA` ("search_path"), `SET XML OPTION` ("xmloption"),
  `SET SESSION CHARACTERISTICS AS TRANSACTION ...` (as the equivalent `default_transaction_*`
  settings) and `set_config('name', 'value', false)` with constant arguments.  Each value is the
  SQL text that reproduces the setting with `SET name TO <value>` (`SetCommand.to_sql()`).
  Not tracked: `SET LOCAL`, `SET TRANSACTION`, `SET CONSTRAINTS`, `transaction_*` settings
  (all transaction-scoped).
- `reread`: names of settings that `set_config('name', <not a constant>, false)` sets (asyncpg's
  `set_config('jit', $1, false)` after a type introspection): the value is known only once the
  statement ran, so the proxy reads it back (`current_setting`) when the transaction ends, then replays
  it like a SET, instead of pinning the client.
- `pin_reason`, the first of: "temp table" (CREATE TEMP TABLE / SEQUENCE / VIEW, CREATE TABLE
  pg_temp.x, SELECT ... INTO TEMP, CREATE TEMP TABLE AS), "advisory lock" (session-level
  pg_advisory_lock[_shared] / pg_try_advisory_lock[_shared]; the _xact_ variants end with the
  transaction), "listen", "with hold cursor", "sql prepare", "set role" (SET ROLE, SET SESSION
  AUTHORIZATION), "load", "set time zone interval" (SET TIME ZONE INTERVAL '...': no plain value
  replays it), "set_config" (a session-level set_config whose name or scope is not a constant, or of
  role, a transaction_* or a list-valued setting), "do block" (a
  DO block whose code mentions SET, temporary objects, advisory locks, LISTEN, ...), and
  "unparsable" (a text that looked stateful but that the parser rejects: it may be newer syntax
  than the parser knows, so keep the client where its state is).
- `discard_all`: the text ran DISCARD ALL.  `sets` then holds only what the text set after its
  last DISCARD ALL: forget the client's settings first, then apply `sets`.
- `notifies`: the text sends notifications (NOTIFY, pg_notify()), so a transaction pooler must keep
  the server connection until its listening connections have them (listener.py's sync marker).
- `deallocate_all`: the text ran DEALLOCATE [PREPARE] ALL (psycopg sends it after a ROLLBACK):
  every prepared statement of the server connection is gone, the proxy's own ones included.

Effects describe what the text does if it succeeds; a SET undone by a failed or rolled-back
transaction is still reported (ParameterStatus from the server corrects reported settings).
"""

from __future__ import annotations

import functools
import json
import re
from dataclasses import dataclass
from typing import Any

from pglast import parser
from pglast.keywords import COL_NAME_KEYWORDS, RESERVED_KEYWORDS, TYPE_FUNC_NAME_KEYWORDS

# Texts longer than this are analysed every time rather than cached (see classify.py).
MAX_CACHED_SQL_LENGTH = 8192
CACHE_SIZE = 4096

Node = dict[str, Any]


@dataclass(frozen=True, slots=True)
class SetCommand:
    """One session-level setting change: `value` None means RESET (name "all": RESET ALL)."""

    name: str
    value: str | None

    def to_sql(self) -> str:
        """The statement that replays this change on another server connection."""
        if self.value is None:
            return "RESET ALL" if self.name == "all" else f"RESET {quote_name(self.name)}"
        return f"SET {quote_name(self.name)} TO {self.value}"


@dataclass(frozen=True, slots=True)
class SessionEffects:
    """What a query text does to session state; see the module docstring."""

    sets: tuple[SetCommand, ...] = ()
    pin_reason: str | None = None
    discard_all: bool = False
    deallocate_all: bool = False
    database_gone: str | None = None   # DROP DATABASE x / ALTER DATABASE x RENAME: x (its pools must let go)
    reread: tuple[str, ...] = ()   # set by set_config() to a value only the server knows: read it back
    notifies: bool = False   # NOTIFY or pg_notify(): the proxy's listening connections must see it before reuse


EMPTY = SessionEffects()

# ---- the cheap check -----------------------------------------------------------------------------

# A statement start that might change session state: after whitespace and non-nested comments,
# one of the keywords, or a nested comment ("/* /* */ */"), which is left for the parser so that
# nesting can never hide a statement.
_STATEFUL_KEYWORDS = ("set", "reset", "listen", "declare", "prepare", "load", "discard", "do", "deallocate",
                      "drop", "alter")   # the last two for DROP / RENAME of a database (rare DDL)
_STATEFUL_START = re.compile(
    r"(?:\s|/\*(?:[^*/]|\*(?!/)|/(?!\*))*\*/|--[^\n\r]*)*"
    r"(?:/\*|(?:" + "|".join(_STATEFUL_KEYWORDS) + r")\b)"
)
_TEMP_WORD = re.compile(r"temp(?:orary)?\b|pg_temp")


def _stateful_statement_at(lowered: str, position: int) -> bool:
    if lowered[position : position + 1].isalpha():  # the usual case: no leading space or comment
        return (
            lowered.startswith(_STATEFUL_KEYWORDS, position)
            and _STATEFUL_START.match(lowered, position) is not None
        )
    return _STATEFUL_START.match(lowered, position) is not None


def might_change_session(sql: str) -> bool:
    """Cheap and conservative: False only if `sql` certainly has no session effects."""
    lowered = sql.lower()
    if "advisory" in lowered or "set_config" in lowered or "notify" in lowered:
        return True
    if "temp" in lowered and _TEMP_WORD.search(lowered):
        return True
    if _stateful_statement_at(lowered, 0):
        return True
    position = lowered.find(";") + 1
    while position:
        if _stateful_statement_at(lowered, position):
            return True
        position = lowered.find(";", position) + 1
    return False


def session_effects(sql: str) -> SessionEffects:
    """The session effects of a simple-query or Parse text (`EMPTY` for ordinary statements)."""
    if not might_change_session(sql):
        return EMPTY
    if len(sql) > MAX_CACHED_SQL_LENGTH:
        return analyze(sql)
    return _cached_analyze(sql)


# ---- rendering values ------------------------------------------------------------------------------

_QUOTED_KEYWORDS = (
    frozenset(RESERVED_KEYWORDS) | frozenset(TYPE_FUNC_NAME_KEYWORDS) | frozenset(COL_NAME_KEYWORDS)
)
_PLAIN_IDENTIFIER = re.compile(r"[a-z_][a-z0-9_$]*")
# Settings whose list elements PostgreSQL quotes as identifiers (GUC_LIST_QUOTE).
_LIST_QUOTE = frozenset(
    {
        "search_path",
        "temp_tablespaces",
        "session_preload_libraries",
        "local_preload_libraries",
        "shared_preload_libraries",
    }
)
_TRUE_WORDS = frozenset({"t", "true", "on", "yes", "y", "1"})
_FALSE_WORDS = frozenset({"f", "false", "off", "no", "n", "0"})


def quote_identifier(name: str) -> str:
    """PostgreSQL's quote_identifier(): quote unless a plain lower-case non-keyword."""
    if _PLAIN_IDENTIFIER.fullmatch(name) and name not in _QUOTED_KEYWORDS:
        return name
    return '"' + name.replace('"', '""') + '"'


def quote_name(name: str) -> str:
    """A setting name for SET/RESET: dotted parts quoted as needed."""
    return ".".join(quote_identifier(part) for part in name.split("."))


def quote_literal(value: str) -> str:
    """A string literal that reads back as `value` whatever standard_conforming_strings says."""
    if "\\" in value:
        return "E'" + value.replace("\\", "\\\\").replace("'", "''") + "'"
    return "'" + value.replace("'", "''") + "'"


def _constant(node: Any) -> str | int | float | bool | None:
    """The value of an A_Const node (the JSON omits defaults: `{"ival": {}}` is 0)."""
    const = node.get("A_Const") if isinstance(node, dict) else None
    if not isinstance(const, dict):
        return None
    if "sval" in const:
        return str(const["sval"].get("sval", ""))
    if "ival" in const:
        return int(const["ival"].get("ival", 0))
    if "fval" in const:
        return float(const["fval"].get("fval", "0"))
    if "boolval" in const:
        return bool(const["boolval"].get("boolval", False))
    return None


def _render_value(name: str, args: list[Node]) -> str | None:
    """The SQL after `SET name TO` that gives the same setting, or None if no constant does."""
    parts: list[str] = []
    for arg in args:
        const = arg.get("A_Const") if isinstance(arg, dict) else None
        if not isinstance(const, dict):
            return None
        if "sval" in const:
            text = str(const["sval"].get("sval", ""))
            parts.append(quote_identifier(text) if name in _LIST_QUOTE and text else quote_literal(text))
        elif "ival" in const:
            parts.append(str(int(const["ival"].get("ival", 0))))
        elif "fval" in const:
            parts.append(str(const["fval"].get("fval", "0")))
        elif "boolval" in const:
            parts.append("true" if const["boolval"].get("boolval") else "false")
        else:
            return None
    return ", ".join(parts) if parts else None


# ---- analysis ------------------------------------------------------------------------------------


class _Effects:
    """Accumulates effects statement by statement."""

    def __init__(self) -> None:
        self.sets: list[SetCommand] = []
        self.pin_reason: str | None = None
        self.discard_all = False
        self.deallocate_all = False
        self.database_gone: str | None = None
        self.reread: list[str] = []
        self.notifies = False

    def pin(self, reason: str) -> None:
        if self.pin_reason is None:
            self.pin_reason = reason

    def result(self) -> SessionEffects:
        if (not self.sets and self.pin_reason is None and not self.discard_all and not self.deallocate_all
                and self.database_gone is None and not self.reread and not self.notifies):
            return EMPTY
        return SessionEffects(tuple(self.sets), self.pin_reason, self.discard_all, self.deallocate_all,
                              self.database_gone, tuple(self.reread), self.notifies)


_SESSION_CHARACTERISTICS = {
    "transaction_isolation": "default_transaction_isolation",
    "transaction_read_only": "default_transaction_read_only",
    "transaction_deferrable": "default_transaction_deferrable",
}


def _session_characteristics(args: list[Node], effects: _Effects) -> None:
    for item in args:
        elem = item.get("DefElem", {})
        name = _SESSION_CHARACTERISTICS.get(elem.get("defname", ""))
        value = _constant(elem.get("arg"))
        if name is None or value is None:
            effects.pin("set session characteristics")
        elif isinstance(value, str):
            effects.sets.append(SetCommand(name, quote_literal(value)))
        else:
            effects.sets.append(SetCommand(name, "on" if value else "off"))


def _variable_set(body: Node, effects: _Effects) -> None:
    kind = body.get("kind", "")
    name = str(body.get("name", "")).lower()
    if body.get("is_local") or kind == "VAR_SET_CURRENT":
        return
    if kind == "VAR_SET_MULTI":
        if name == "session characteristics":
            _session_characteristics(body.get("args", []), effects)
        return  # SET TRANSACTION ..., SET TRANSACTION SNAPSHOT: this transaction only
    if kind == "VAR_RESET_ALL":
        effects.sets.append(SetCommand("all", None))
        return
    if name in ("role", "session_authorization"):
        value = _render_value(name, body.get("args", []))
        if kind == "VAR_SET_VALUE" and value != "'none'":
            effects.pin("set role")
        return
    if name.startswith("transaction_"):
        return
    if kind in ("VAR_SET_DEFAULT", "VAR_RESET"):
        effects.sets.append(SetCommand(name, None))
        return
    value = _render_value(name, body.get("args", []))
    if value is None:
        effects.pin("set time zone interval" if name == "timezone" else "set")
    else:
        effects.sets.append(SetCommand(name, value))


# A DO block's body is a string the proxy does not parse: pin if it looks like it changes the session.
_STATEFUL_CODE = re.compile(
    r"\b(?:set|reset|listen|load|prepare|temp|temporary|set_config|pg_advisory_lock\w*|pg_try_advisory_lock\w*)\b"
    r"|pg_temp|with\s+hold",
    re.IGNORECASE,
)
_SESSION_ADVISORY_LOCKS = frozenset(
    {
        "pg_advisory_lock",
        "pg_advisory_lock_shared",
        "pg_try_advisory_lock",
        "pg_try_advisory_lock_shared",
    }
)
_CREATE_TARGETS = {"CreateStmt": "relation", "CreateSeqStmt": "sequence", "ViewStmt": "view"}


def _is_temporary(rangevar: Any) -> bool:
    if not isinstance(rangevar, dict):
        return False
    return rangevar.get("relpersistence") == "t" or str(rangevar.get("schemaname", "")).startswith("pg_temp")


def _set_config(args: list[Node], effects: _Effects) -> None:
    if len(args) != 3:
        effects.pin("set_config")
        return
    name, value, is_local = (_constant(arg) for arg in args)
    if isinstance(is_local, str):
        is_local = (
            True if is_local.lower() in _TRUE_WORDS else False if is_local.lower() in _FALSE_WORDS else None
        )
    if is_local is True:
        return
    if is_local is not False or not isinstance(name, str):
        effects.pin("set_config")
        return
    name = name.lower()
    if name in ("role", "session_authorization"):
        effects.pin("set role")
    elif name in _LIST_QUOTE or name.startswith("transaction_") or not name:
        effects.pin("set_config")
    elif isinstance(value, str):
        effects.sets.append(SetCommand(name, quote_literal(value)))
    else:   # a parameter or an expression: what it set is read back after the transaction
        effects.reread.append(name)


def _function_call(call: Node, effects: _Effects) -> None:
    parts = [part.get("String", {}).get("sval", "") for part in call.get("funcname", ())]
    if len(parts) > 2 or (len(parts) == 2 and parts[0] != "pg_catalog"):
        return
    if parts[-1] in _SESSION_ADVISORY_LOCKS:
        effects.pin("advisory lock")
    elif parts[-1] == "pg_notify":
        effects.notifies = True
    elif parts[-1] == "set_config":
        _set_config(call.get("args", []), effects)


def _walk(tree: Node, effects: _Effects) -> None:
    """Function calls and temporary-object creation anywhere in one statement."""
    stack: list[Any] = [tree]
    while stack:
        item = stack.pop()
        if type(item) is list:
            stack.extend(reversed(item))
            continue
        if type(item) is not dict:
            continue
        for key, value in item.items():
            if key == "FuncCall":
                _function_call(value, effects)
            elif key in _CREATE_TARGETS and _is_temporary(value.get(_CREATE_TARGETS[key])):
                effects.pin("temp table")
            elif key == "CreateTableAsStmt" and _is_temporary(value.get("into", {}).get("rel")):
                effects.pin("temp table")
            elif key == "intoClause" and _is_temporary(value.get("rel")):
                effects.pin("temp table")
        stack.extend(
            reversed([value for value in item.values() if type(value) is dict or type(value) is list])
        )


def _statement(node: Node, effects: _Effects) -> None:
    for kind, body in node.items():
        if kind == "VariableSetStmt":
            _variable_set(body, effects)
        elif kind == "ListenStmt":
            effects.pin("listen")
        elif kind == "NotifyStmt":
            effects.notifies = True
        elif kind == "DeclareCursorStmt" and int(body.get("options", 0)) & 0x20:  # CURSOR_OPT_HOLD
            effects.pin("with hold cursor")
        elif kind == "PrepareStmt":
            effects.pin("sql prepare")
        elif kind == "LoadStmt":
            effects.pin("load")
        elif kind == "DoStmt" and any(
            _STATEFUL_CODE.search(
                str(item.get("DefElem", {}).get("arg", {}).get("String", {}).get("sval", ""))
            )
            for item in body.get("args", [])
        ):
            effects.pin("do block")
        elif kind == "DiscardStmt" and body.get("target") == "DISCARD_ALL":
            effects.discard_all = True
            effects.sets.clear()
        elif kind == "DeallocateStmt" and body.get("isall"):
            effects.deallocate_all = True
        elif kind == "DropdbStmt" and body.get("dbname"):
            effects.database_gone = str(body["dbname"])
        elif kind == "RenameStmt" and body.get("renameType") == "OBJECT_DATABASE" and body.get("subname"):
            effects.database_gone = str(body["subname"])
        _walk(node, effects)


def analyze(sql: str) -> SessionEffects:
    """Parse `sql` and collect its session effects (no cheap check, no cache)."""
    if "\x00" in sql:
        return SessionEffects(pin_reason="unparsable")
    try:
        statements = json.loads(parser.parse_sql_json(sql)).get("stmts", [])
    except (parser.ParseError, ValueError, RecursionError):
        return SessionEffects(pin_reason="unparsable")
    effects = _Effects()
    for item in statements:
        _statement(item.get("stmt", {}), effects)
    return effects.result()


_cached_analyze = functools.lru_cache(maxsize=CACHE_SIZE)(analyze)


def cache_info() -> functools._CacheInfo:
    """Hits, misses and size of the parsed-text cache (ordinary statements never reach it)."""
    return _cached_analyze.cache_info()
