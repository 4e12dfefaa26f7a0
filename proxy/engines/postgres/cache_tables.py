"""What the query cache needs to know of a PostgreSQL text (SPEC §11): may its result be cached,
which tables it reads, which tables it writes. From pglast's JSON tree, cached per literal shape."""

from __future__ import annotations

import json
import re

from pglast import parser

from ...cache.backends import ALL_TABLES
from ...cache.policy import ReadFacts
from ...routing.classify import Classification, Route
from .classify import MAX_CACHED_SQL_LENGTH, PgClassifier, literal_shape

_STATEMENT_KIND = re.compile(r'"stmt":\{"(\w+)":')
_RELNAME = re.compile(r'"relname":"((?:[^"\\]|\\.)*)"')
_FUNCNAME = re.compile(r'"FuncCall":\{"funcname":\[((?:\{"String":\{"sval":"(?:[^"\\]|\\.)*"\}\},?)*)\]')
_SVAL = re.compile(r'"sval":"((?:[^"\\]|\\.)*)"')
_TIME_VALUE = re.compile(r'"SQLValueFunction":\{"op":"SVFOP_(?:CURRENT_DATE|CURRENT_TIME|LOCALTIME)')
_ROUTE_HINT = re.compile(r"(?:/\*\s*dbproxy:route=\w+\s*\*/|--\s*dbproxy:route=\w+[^\n]*)", re.IGNORECASE)

# Read-only built-ins (the split classifier lets them run on a replica) whose result is not a
# function of the data and the keyed settings: time, randomness, the backend or server they run on.
VOLATILE_FOR_CACHE = frozenset({
    "now", "clock_timestamp", "statement_timestamp", "transaction_timestamp", "timeofday", "age",
    "random", "random_normal", "setseed", "gen_random_uuid", "uuid_generate_v4", "current_setting",
    "txid_current_snapshot", "txid_current_if_assigned", "pg_current_snapshot", "inet_client_addr",
    "inet_client_port", "inet_server_addr", "inet_server_port", "version",
})
# Statements that write no table (or whose writes are the server's own business).
_NO_WRITE = frozenset({
    "SelectStmt", "VariableSetStmt", "VariableShowStmt", "TransactionStmt", "ListenStmt", "UnlistenStmt",
    "NotifyStmt", "PrepareStmt", "DeallocateStmt", "DeclareCursorStmt", "FetchStmt", "ClosePortalStmt",
    "DiscardStmt", "LockStmt", "VacuumStmt", "CheckPointStmt", "ConstraintsSetStmt", "LoadStmt",
})
# Statements that write the tables they name.
_WRITES_NAMED = frozenset({"InsertStmt", "UpdateStmt", "DeleteStmt", "MergeStmt", "TruncateStmt",
                           "AlterTableStmt", "IndexStmt", "ClusterStmt", "ReindexStmt", "RefreshMatViewStmt"})
_KEPT = 10000


def _unescape(raw: str) -> str:
    return str(json.loads(f'"{raw}"')) if "\\" in raw else raw


class _Tree:
    """The parts of one parse tree the cache looks at."""

    __slots__ = ("kinds", "relations", "functions", "time_value", "copy_from", "dml_inside")

    def __init__(self, tree: str) -> None:
        self.kinds = _STATEMENT_KIND.findall(tree)
        self.relations = tuple(sorted({_unescape(r) for r in _RELNAME.findall(tree)}))
        self.functions = [[_unescape(p) for p in _SVAL.findall(f)] for f in _FUNCNAME.findall(tree)]
        self.time_value = _TIME_VALUE.search(tree) is not None
        self.copy_from = '"is_from":true' in tree
        self.dml_inside = any(f'"{k}":' in tree for k in ("InsertStmt", "UpdateStmt", "DeleteStmt", "MergeStmt"))


class CacheFacts:
    """Per cluster: read facts and written tables of texts, remembered by literal shape (bounded)."""

    def __init__(self, classifier: PgClassifier) -> None:
        self.classifier = classifier
        self._trees: dict[str, _Tree | None] = {}

    def _tree(self, sql: str) -> _Tree | None:
        shape = literal_shape(sql) if len(sql) <= MAX_CACHED_SQL_LENGTH else None
        memo = shape if shape is not None else (sql if len(sql) <= MAX_CACHED_SQL_LENGTH else None)
        if memo is not None and memo in self._trees:
            return self._trees[memo]
        try:
            tree: _Tree | None = _Tree(parser.parse_sql_json(sql)) if "\x00" not in sql else None
        except (parser.ParseError, ValueError, RecursionError):
            tree = None
        if memo is not None:
            if len(self._trees) >= _KEPT:
                self._trees.clear()
            self._trees[memo] = tree
        return tree

    def read(self, sql: str, verdict: Classification | None = None) -> ReadFacts:
        """Whether the result of `sql` run alone may be cached, and the tables it reads."""
        if verdict is None:
            verdict = self.classifier.classify(sql)
        if verdict.reason == "hint":
            verdict = self.classifier.classify(_ROUTE_HINT.sub(" ", sql))
        if verdict.route is not Route.REPLICA or verdict.reason != "select":
            return ReadFacts(False, verdict.reason)
        tree = self._tree(sql)
        if tree is None or tree.kinds != ["SelectStmt"]:
            return ReadFacts(False, "not one select")
        if tree.time_value:
            return ReadFacts(False, "volatile current time")
        for parts in tree.functions:
            if parts and (parts[-1].lower() in VOLATILE_FOR_CACHE or parts[-1].startswith("pg_")):
                return ReadFacts(False, f"volatile function {parts[-1]}")
        if any(r.startswith("pg_") or r.startswith("information_schema") for r in tree.relations):
            return ReadFacts(False, "catalog")
        return ReadFacts(True, "select", tree.relations)

    def written(self, sql: str) -> tuple[str, ...]:
        """The tables `sql` may write (ALL_TABLES when it cannot be known); () for none."""
        tree = self._tree(sql)
        if tree is None:
            return ()
        written: set[str] = set()
        for kind in tree.kinds:
            if kind in _NO_WRITE:
                if kind == "SelectStmt" and tree.dml_inside:
                    written.update(tree.relations)
                continue
            if kind in _WRITES_NAMED or kind == "ExplainStmt" and tree.dml_inside or kind == "CopyStmt":
                if kind != "CopyStmt" or tree.copy_from:
                    written.update(tree.relations)
                continue
            return (ALL_TABLES,)   # DDL, CALL, DO, EXECUTE ...: everything cached for the cluster goes
        return tuple(sorted(written))
