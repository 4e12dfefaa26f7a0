"""PostgreSQL statement classification for split endpoints: may this SQL text run on a replica? (SPEC §3.3)

`Classifier.classify(sql)` parses the text with PostgreSQL's own parser (pglast's JSON output,
~20x faster than building pglast's Python AST) and looks at every node: a scan of the JSON text
for the common single SELECT, a full walk of the decoded tree otherwise.  Verdicts are cached
by exact text.  The rule is "when in doubt, primary": a misrouted write is a bug, a misrouted
read only a missed optimization.

Routes for a standalone occurrence of the text (the session decides what happens inside an
explicit transaction; `neutral` statements leave that decision alone):

- REPLICA: SELECT / VALUES / TABLE / SHOW, whose every function call is a known read-only
  built-in or listed in `read_only_functions`; EXPLAIN without ANALYZE (planning never
  executes; checked on a hot standby: even EXPLAIN DELETE works there); EXPLAIN ANALYZE of such
  a read; BEGIN/START TRANSACTION READ ONLY and SET TRANSACTION READ ONLY (`begins_read_only`),
  unless SERIALIZABLE, which a hot standby refuses;
  COMMIT / ROLLBACK / END / ABORT / SAVEPOINT / RELEASE / ROLLBACK TO (`neutral`); empty text
  (`neutral`, reason "empty": the server only answers EmptyQueryResponse).
- PRIMARY: everything else: DML (also inside CTEs), DDL, SELECT ... FOR UPDATE/SHARE anywhere,
  SELECT INTO, CREATE TABLE AS, COPY in either direction (COPY TO is a read, but stays on the
  primary in this version), LOCK, CALL, DO, SET/RESET, LISTEN/NOTIFY, PREPARE/EXECUTE,
  cursors, VACUUM/ANALYZE, BEGIN without READ ONLY, calls to functions not known read-only
  (user functions, `nextval`, `pg_advisory_lock`, `set_config`, `txid_current`, ...), and text
  the parser rejects (reason "unparsable").
- A multi-statement text goes to a replica only if every statement may.
- A comment hint `/* dbproxy:route=primary|replica */` (or `-- dbproxy:route=...`) anywhere in
  the text overrides the route (reason "hint"), even a replica hint on a write: it is the
  user's explicit choice, and the replica will reject the write itself.  The structural flags
  (begins_transaction, ...) still describe the text.

Known blind spots (a write there fails on the replica with PostgreSQL's own "cannot execute ...
in a read-only transaction"): functions called indirectly (through views, user-defined
operators or casts), and a user function that overloads or shadows a built-in's name.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterable
from dataclasses import replace
from typing import Any

from pglast import parser

from ...routing.classify import EMPTY, SELECT, UNPARSABLE, Classification, Route, combine
from ...routing.hints import route_hint
from .functions import has_side_effects, is_read_only_builtin

# Longer texts (bulk INSERTs, generated reports) are classified every time instead of being kept
# in the cache: 10,000 entries of at most 8 KiB each bound the cache at ~80 MB.
MAX_CACHED_SQL_LENGTH = 8192

Node = dict[str, Any]


class ReadOnlyFunctions:
    """Decides whether a function call may run on a replica.

    Built-ins (unqualified or `pg_catalog.`) come from `pg_functions`; known side-effecting
    built-ins can never be overridden.  Configured names: a bare entry ("f") matches `f()` and
    `anyschema.f()`; a qualified entry ("s.f") matches only `s.f()`, because an unqualified call
    could resolve to another schema's function.
    """

    __slots__ = ("_bare", "_qualified")

    def __init__(self, names: Iterable[str] = ()) -> None:
        self._bare: set[str] = set()
        self._qualified: set[str] = set()
        for raw in names:
            name = raw.strip()
            target = self._qualified if "." in name else self._bare
            target.update((name, name.lower()))

    def blocker(self, parts: list[str]) -> str | None:
        """None if a call to the function named by `parts` is read-only, else the reason it is not."""
        name = parts[-1]
        builtin_scope = len(parts) == 1 or (len(parts) == 2 and parts[0] == "pg_catalog")
        if builtin_scope and has_side_effects(name):
            return f"volatile function {name}"
        if builtin_scope and is_read_only_builtin(name):
            return None
        if name in self._bare or (len(parts) > 1 and ".".join(parts) in self._qualified):
            return None
        return f"unknown function {'.'.join(parts)}"


_LOCK_STRENGTH = {
    "LCS_FORKEYSHARE": "for key share",
    "LCS_FORSHARE": "for share",
    "LCS_FORNOKEYUPDATE": "for no key update",
    "LCS_FORUPDATE": "for update",
}
_DML = frozenset({"InsertStmt", "UpdateStmt", "DeleteStmt", "MergeStmt"})
_READ_BLOCKERS = _DML | {"FuncCall", "lockingClause", "intoClause"}


def _function_parts(funccall: Node) -> list[str]:
    return [part.get("String", {}).get("sval", "?") for part in funccall.get("funcname", ())]


def _blocker_for(key: str, value: Any, functions: ReadOnlyFunctions) -> str | None:
    if key == "FuncCall":
        return functions.blocker(_function_parts(value))
    if key in _DML:
        return "dml in cte"
    if key == "lockingClause":
        strengths = [item.get("LockingClause", {}).get("strength") for item in value]
        return _LOCK_STRENGTH.get(strengths[0] if strengths else "", "for update")
    return "select into"  # intoClause


def read_blocker(tree: Any, functions: ReadOnlyFunctions) -> str | None:
    """Why the parsed read `tree` may not run on a replica, or None if it may.

    Visits every node, so a FOR UPDATE in a subquery, a DML CTE or a function call anywhere
    is found.
    """
    stack: list[Any] = [tree]
    while stack:
        item = stack.pop()
        if type(item) is dict:
            for key, value in item.items():
                if key in _READ_BLOCKERS:
                    reason = _blocker_for(key, value, functions)
                    if reason is not None:
                        return reason
                if type(value) is dict or type(value) is list:
                    stack.append(value)
        elif type(item) is list:
            stack.extend(item)
    return None


def _const_int(node: Any) -> int | None:
    """The integer of an A_Const (`{"ival": {}}` is 0: the JSON output omits default values)."""
    if not isinstance(node, dict):
        return None
    const = node.get("A_Const")
    if not isinstance(const, dict) or "ival" not in const:
        return None
    return int(const["ival"].get("ival", 0))


def _transaction_mode(options: list[Node]) -> tuple[bool, bool]:
    """(read only, serializable) from BEGIN / SET TRANSACTION options.

    Read only means READ ONLY and never READ WRITE.  A hot standby refuses serializable
    transactions ("cannot use serializable mode in a hot standby"), so a serializable read-only
    transaction stays on the primary.
    """
    read_only: list[int | None] = []
    serializable = False
    for item in options:
        elem = item.get("DefElem", {})
        if elem.get("defname") == "transaction_read_only":
            read_only.append(_const_int(elem.get("arg")))
        elif elem.get("defname") == "transaction_isolation":
            level = elem.get("arg", {}).get("A_Const", {}).get("sval", {}).get("sval", "")
            serializable = level.lower() not in ("read committed", "read uncommitted", "repeatable read")
    return bool(read_only) and all(value == 1 for value in read_only), serializable


def _explain_analyzes(options: list[Node]) -> bool:
    for item in options:
        elem = item.get("DefElem", {})
        if elem.get("defname") != "analyze":
            continue
        arg = elem.get("arg")
        if arg is None:
            return True
        text = arg.get("String", {}).get("sval")
        if text is not None:
            return text.lower() not in ("false", "off", "no", "0")
        if "Integer" in arg:
            return bool(arg["Integer"].get("ival", 0))
        if "Boolean" in arg:
            return bool(arg["Boolean"].get("boolval", False))
        return True
    return False


def _select(body: Node, functions: ReadOnlyFunctions) -> Classification:
    reason = read_blocker(body, functions)
    if reason is None:
        return SELECT
    return Classification(Route.PRIMARY, reason)


def _explain(body: Node, functions: ReadOnlyFunctions) -> Classification:
    query = body.get("query", {})
    if "ExecuteStmt" in query:  # the prepared statement lives on one server (and pins the client)
        return Classification(Route.PRIMARY, "explain execute")
    if not _explain_analyzes(body.get("options", [])):
        return Classification(Route.REPLICA, "explain")
    inner = classify_statement(query, functions)
    if inner.route is Route.REPLICA:
        return Classification(Route.REPLICA, "explain analyze")
    return Classification(Route.PRIMARY, f"explain analyze {inner.reason}")


_TRANSACTION_CONTROL = {
    "TRANS_STMT_COMMIT": Classification(Route.REPLICA, "commit", ends_transaction=True, neutral=True),
    "TRANS_STMT_ROLLBACK": Classification(Route.REPLICA, "rollback", ends_transaction=True, neutral=True),
    "TRANS_STMT_SAVEPOINT": Classification(Route.REPLICA, "savepoint", neutral=True),
    "TRANS_STMT_RELEASE": Classification(Route.REPLICA, "release savepoint", neutral=True),
    "TRANS_STMT_ROLLBACK_TO": Classification(Route.REPLICA, "rollback to savepoint", neutral=True),
    "TRANS_STMT_PREPARE": Classification(Route.PRIMARY, "prepare transaction", ends_transaction=True),
    "TRANS_STMT_COMMIT_PREPARED": Classification(Route.PRIMARY, "commit prepared"),
    "TRANS_STMT_ROLLBACK_PREPARED": Classification(Route.PRIMARY, "rollback prepared"),
}
BEGIN = Classification(Route.PRIMARY, "begin", begins_transaction=True)
BEGIN_SERIALIZABLE_READ_ONLY = Classification(Route.PRIMARY, "begin serializable", begins_transaction=True)
BEGIN_READ_ONLY = Classification(
    Route.REPLICA, "begin read only", begins_read_only=True, begins_transaction=True
)


def _transaction(body: Node, functions: ReadOnlyFunctions) -> Classification:
    kind = body.get("kind", "")
    if kind in ("TRANS_STMT_BEGIN", "TRANS_STMT_START"):
        read_only, serializable = _transaction_mode(body.get("options", []))
        if read_only and serializable:
            return BEGIN_SERIALIZABLE_READ_ONLY
        return BEGIN_READ_ONLY if read_only else BEGIN
    control = _TRANSACTION_CONTROL.get(kind, UNPARSABLE)
    if body.get("chain"):
        return replace(control, reason=f"{control.reason} and chain")
    return control


def _variable_set(body: Node, functions: ReadOnlyFunctions) -> Classification:
    if body.get("kind") == "VAR_SET_MULTI" and body.get("name") == "TRANSACTION":
        read_only, serializable = _transaction_mode(body.get("args", []))
        if read_only and not serializable:
            return Classification(Route.REPLICA, "set transaction read only", begins_read_only=True)
        return Classification(
            Route.PRIMARY, "set transaction serializable" if serializable else "set transaction"
        )
    return Classification(Route.PRIMARY, "set")


def _vacuum(body: Node, functions: ReadOnlyFunctions) -> Classification:
    return Classification(Route.PRIMARY, "vacuum" if body.get("is_vacuumcmd") else "analyze")


_HANDLERS: dict[str, Callable[[Node, ReadOnlyFunctions], Classification]] = {
    "SelectStmt": _select,
    "ExplainStmt": _explain,
    "TransactionStmt": _transaction,
    "VariableSetStmt": _variable_set,
    "VacuumStmt": _vacuum,
}
_FIXED = {
    "VariableShowStmt": Classification(Route.REPLICA, "show"),
    **{kind: Classification(Route.PRIMARY, "dml") for kind in _DML},
    "CopyStmt": Classification(Route.PRIMARY, "copy"),
    "LockStmt": Classification(Route.PRIMARY, "lock"),
    "CallStmt": Classification(Route.PRIMARY, "call"),
    "DoStmt": Classification(Route.PRIMARY, "do"),
    "ListenStmt": Classification(Route.PRIMARY, "listen"),
    "UnlistenStmt": Classification(Route.PRIMARY, "unlisten"),
    "NotifyStmt": Classification(Route.PRIMARY, "notify"),
    "PrepareStmt": Classification(Route.PRIMARY, "prepare"),
    "ExecuteStmt": Classification(Route.PRIMARY, "execute"),
    "DeallocateStmt": Classification(Route.PRIMARY, "deallocate"),
    "DeclareCursorStmt": Classification(Route.PRIMARY, "declare cursor"),
    "FetchStmt": Classification(Route.PRIMARY, "fetch"),
    "ClosePortalStmt": Classification(Route.PRIMARY, "close cursor"),
    "CreateTableAsStmt": Classification(Route.PRIMARY, "create table as"),
    "DiscardStmt": Classification(Route.PRIMARY, "discard"),
    "LoadStmt": Classification(Route.PRIMARY, "load"),
    "CheckPointStmt": Classification(Route.PRIMARY, "checkpoint"),
    "ConstraintsSetStmt": Classification(Route.PRIMARY, "set constraints"),
}
DDL = Classification(Route.PRIMARY, "ddl")


def classify_statement(node: Node, functions: ReadOnlyFunctions) -> Classification:
    """Classify one parsed statement (`{"SelectStmt": {...}}`)."""
    for kind, body in node.items():
        handler = _HANDLERS.get(kind)
        if handler is not None:
            return handler(body, functions)
        return _FIXED.get(kind, DDL)
    return UNPARSABLE


# The commonest transaction-control texts, answered without parsing.
_TRIVIAL = {
    "begin": BEGIN,
    "begin transaction": BEGIN,
    "begin work": BEGIN,
    "start transaction": BEGIN,
    "begin read only": BEGIN_READ_ONLY,
    "begin transaction read only": BEGIN_READ_ONLY,
    "start transaction read only": BEGIN_READ_ONLY,
    "commit": _TRANSACTION_CONTROL["TRANS_STMT_COMMIT"],
    "end": _TRANSACTION_CONTROL["TRANS_STMT_COMMIT"],
    "rollback": _TRANSACTION_CONTROL["TRANS_STMT_ROLLBACK"],
    "abort": _TRANSACTION_CONTROL["TRANS_STMT_ROLLBACK"],
}


# Fast path over pglast's JSON text, for the common single-statement case (json.loads and a
# node walk cost more than the parse itself).  Searching the JSON text is exact: inside a JSON
# string every '"' is escaped, so `"FuncCall":` can only be a node key, never text from a
# literal or identifier.  Anything the fast path is unsure about goes to the full walk.
_SINGLE_STATEMENT = re.compile(r'\{"version":\d+,"stmts":\[\{"stmt":\{"(\w+)":')
_STATEMENT_SEPARATOR = '},{"stmt":'
_READ_BLOCKER_KEYS = tuple(f'"{key}":' for key in sorted(_READ_BLOCKERS - {"FuncCall"}))
# A lockingClause, intoClause or DML node needs one of these keywords in the SQL text (keywords are
# single ASCII tokens), and the SQL text is several times shorter than its JSON tree.
_READ_BLOCKER_WORDS = ("for", "into", "update", "delete", "insert", "merge")
_FUNCCALL_KEY = '"FuncCall":'
_FUNCNAME = re.compile(r'"FuncCall":\{"funcname":\[((?:\{"String":\{"sval":"(?:[^"\\]|\\.)*"\}\},?)*)\]')
_SVAL = re.compile(r'"sval":"((?:[^"\\]|\\.)*)"')


def _json_string(raw: str) -> str:
    return str(json.loads(f'"{raw}"')) if "\\" in raw else raw


def _scan_single(tree: str, sql: str, functions: ReadOnlyFunctions) -> Classification | None:
    """Classify a one-statement parse tree from its JSON text, or None if the full walk is needed."""
    match = _SINGLE_STATEMENT.match(tree)
    if match is None or _STATEMENT_SEPARATOR in tree:
        return None
    kind = match.group(1)
    if kind != "SelectStmt":
        return None if kind in _HANDLERS else _FIXED.get(kind, DDL)
    lowered = sql.lower()
    if any(word in lowered for word in _READ_BLOCKER_WORDS) and any(
        key in tree for key in _READ_BLOCKER_KEYS
    ):
        return None
    calls = tree.count(_FUNCCALL_KEY)
    if calls == 0:
        return SELECT
    names = _FUNCNAME.findall(tree)
    if len(names) != calls:
        return None
    for name in names:
        reason = functions.blocker([_json_string(part) for part in _SVAL.findall(name)])
        if reason is not None:
            return Classification(Route.PRIMARY, reason)
    return SELECT


def classify_tree(tree: str, sql: str, functions: ReadOnlyFunctions, fast: bool = True) -> Classification:
    """Classify pglast's JSON parse tree of the text `sql` (`fast=False` forces the full node walk)."""
    if fast:
        scanned = _scan_single(tree, sql, functions)
        if scanned is not None:
            return scanned
    statements = json.loads(tree).get("stmts", [])
    if not statements:
        return EMPTY
    return combine([classify_statement(item.get("stmt", {}), functions) for item in statements])


def _classify_unhinted(sql: str, functions: ReadOnlyFunctions) -> Classification:
    if len(sql) < 40:
        trivial = _TRIVIAL.get(" ".join(sql.lower().replace(";", " ").split()))
        if trivial is not None and sql.count(";") <= 1:
            return trivial
    if "\x00" in sql:  # the wire protocol cannot carry it; the parser would stop there
        return UNPARSABLE
    try:
        return classify_tree(parser.parse_sql_json(sql), sql, functions)
    except (parser.ParseError, ValueError, RecursionError):
        return UNPARSABLE


def classify_sql(sql: str, functions: ReadOnlyFunctions) -> Classification:
    """Classify `sql` without caching: the statements' verdict, then any comment hint on top."""
    result = _classify_unhinted(sql, functions)
    hint = route_hint(sql)
    if hint is None:
        return result
    return replace(result, route=Route(hint), reason="hint", neutral=False)


# Literals never change a route, so texts that differ only in them share one verdict: this is
# what makes `pgbench -M simple` (a new `aid` in every statement) cheap. Only texts where the
# regex below cannot be fooled take this path: no comments (hints live there; a quote inside a
# comment would pair up wrongly), no backslashes (E'' escapes), no dollar quotes or parameters,
# no quoted identifiers (which may contain a quote).
# (Starts with a character class so the regex engine can skip ahead quickly; a number counts only
# when no word character precedes it, so t1 or f2() stay as they are.)
_LITERAL = re.compile(r"[\d'](?:(?<=')(?:[^']|'')*'|(?<![\w$]\d)\d*(?:\.\d+)?(?:[eE][-+]?\d+)?)")


def literal_shape(sql: str) -> str | None:
    """sql with every literal replaced by '?', or None when that would not be safe."""
    if "/*" in sql or "--" in sql or "\\" in sql or "$" in sql or '"' in sql:
        return None
    return _LITERAL.sub("?", sql)


class PgClassifier:
    """Classifies SQL texts for a split endpoint, caching verdicts by exact text and by literal shape.

    Both caches are bounded (each is emptied when it reaches cache_size). `hits` / `misses`
    count lookups (texts longer than MAX_CACHED_SQL_LENGTH are never cached and count as misses).
    """

    def __init__(self, read_only_functions: Iterable[str] = (), cache_size: int = 10000) -> None:
        if cache_size < 0:
            raise ValueError("cache_size must be >= 0")
        self.functions = ReadOnlyFunctions(read_only_functions)
        self.cache_size = cache_size
        self._exact: dict[str, Classification] = {}
        self._shapes: dict[str, Classification] = {}
        self._hits = 0
        self._misses = 0

    def classify(self, sql: str) -> Classification:
        """The verdict for one simple-query or Parse text."""
        verdict = self._exact.get(sql)
        if verdict is not None:
            self._hits += 1
            return verdict
        if len(sql) > MAX_CACHED_SQL_LENGTH or not self.cache_size:
            self._misses += 1
            return classify_sql(sql, self.functions)
        shape = literal_shape(sql)
        verdict = self._shapes.get(shape) if shape is not None else None
        if verdict is not None:
            self._hits += 1   # (not remembered by exact text: such texts rarely come back)
            return verdict
        self._misses += 1
        verdict = classify_sql(sql, self.functions)
        if shape is not None:
            self._remember(self._shapes, shape, verdict)
        self._remember(self._exact, sql, verdict)
        return verdict

    def _remember(self, cache: dict[str, Classification], key: str, verdict: Classification) -> None:
        if len(cache) >= self.cache_size:
            cache.clear()
        cache[key] = verdict

    @property
    def hits(self) -> int:
        return self._hits

    @property
    def misses(self) -> int:
        return self._misses

    @property
    def cached_entries(self) -> int:
        return len(self._exact)

    def clear_cache(self) -> None:
        self._exact.clear()
        self._shapes.clear()
        self._hits = self._misses = 0
