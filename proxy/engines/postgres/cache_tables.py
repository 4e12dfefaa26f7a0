"""What the query cache needs to know of a PostgreSQL text (SPEC §11): may its result be cached,
which tables (or rows: cache_points) it reads, which it writes. From pglast's JSON tree, cached per
literal shape, judged against the database's catalog snapshot (cache_catalog): views and the like are
cached only through a rule naming their tables, writes to tables with triggers or rules invalidate
everything."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

from pglast import parser

from ...cache.catalog import CatalogReader, CatalogSnapshot
from ...cache.policy import ReadFacts
from ...cache.scopes import ALL_TABLES
from ...cache.settings import CacheSettings
from ...routing.classify import Classification, Route
from .cache_batch import RememberedBatch, RememberedWrite
from .cache_points import RowTemplate, select_point, write_rows
from .classify import MAX_CACHED_SQL_LENGTH, PgClassifier, literal_shape
from .functions import is_read_only_builtin

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


@dataclass(frozen=True, slots=True)
class Written:
    """What a text writes: tables written table-wide (ALL_TABLES: everything), the row-scoped writes
    (their values still to be read from the text or Bind), and whether it changes the catalog."""

    tables: tuple[str, ...] = ()
    rows: tuple[RowTemplate, ...] = ()
    ddl: bool = False


NOTHING = Written()
EVERYTHING = Written((ALL_TABLES,))


class _Tree:
    """The parts of one parse tree the cache looks at."""

    __slots__ = ("kinds", "relations", "functions", "time_value", "copy_from", "cascade", "dml_inside", "point", "rows")

    def __init__(self, tree: str, sql: str) -> None:
        self.kinds = _STATEMENT_KIND.findall(tree)
        self.relations = tuple(sorted({_unescape(r) for r in _RELNAME.findall(tree)}))
        self.functions = [[_unescape(p) for p in _SVAL.findall(f)] for f in _FUNCNAME.findall(tree)]
        self.time_value = _TIME_VALUE.search(tree) is not None
        self.copy_from = '"is_from":true' in tree
        self.cascade = '"DROP_CASCADE"' in tree
        self.dml_inside = any(f'"{k}":' in tree for k in ("InsertStmt", "UpdateStmt", "DeleteStmt", "MergeStmt"))
        self.point = None
        self.rows: tuple[RowTemplate | None, ...] = ()
        if '"SubLink"' in tree or '"withClause"' in tree:
            return
        statements: list[dict[str, Any]] = [s.get("stmt", {}) for s in json.loads(tree).get("stmts", [])]
        if self.kinds == ["SelectStmt"] and len(statements) == 1:
            self.point = select_point(statements[0]["SelectStmt"], sql)
        elif len(self.kinds) == len(statements):
            self.rows = tuple(write_rows(kind, s[kind], sql) if kind in s else None
                              for kind, s in zip(self.kinds, statements, strict=True))


class CacheFacts:
    """Per cluster: read facts and written tables of texts, remembered by literal shape (bounded)."""

    def __init__(self, classifier: PgClassifier, catalog: CatalogReader, settings: CacheSettings | None = None) -> None:
        self.classifier = classifier
        self.catalog = catalog
        self.write_functions = dict(settings.write_functions) if settings is not None else {}
        self._trees: dict[str, _Tree | None] = {}
        # Bind..Sync bytes seen before → what the cache made of them: a read's plan, a write's rows (cache_flow).
        self.batches: dict[bytes, RememberedBatch | RememberedWrite] = {}

    def _tree(self, sql: str) -> _Tree | None:
        shape = literal_shape(sql) if len(sql) <= MAX_CACHED_SQL_LENGTH else None
        memo = shape if shape is not None else (sql if len(sql) <= MAX_CACHED_SQL_LENGTH else None)
        if memo is not None and memo in self._trees:
            return self._trees[memo]
        try:
            tree: _Tree | None = _Tree(parser.parse_sql_json(sql), sql) if "\x00" not in sql else None
        except (parser.ParseError, ValueError, RecursionError):
            tree = None
        if memo is not None:
            if len(self._trees) >= _KEPT:
                self._trees.clear()
            self._trees[memo] = tree
        return tree

    def read(self, sql: str, catalog: CatalogSnapshot | None, verdict: Classification | None = None) -> ReadFacts:
        """Whether the result of `sql` run alone may be cached, the tables it reads and its point."""
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
        if catalog is None:
            return ReadFacts(False, "catalog not read yet")
        for parts in tree.functions:   # a configured read-only function: what it reads is not seen
            builtin = (len(parts) == 1 or len(parts) == 2 and parts[0] == "pg_catalog") and is_read_only_builtin(
                parts[-1].lower())
            if parts and not builtin:
                return ReadFacts(False, "view")
        point = tree.point
        for name in tree.relations:
            relation = catalog.get(name)
            if relation is None or relation.opaque:
                return ReadFacts(False, "view")
            if point is not None and name == point.table and point.column not in relation.int_columns:
                point = None
        return ReadFacts(True, "select", tree.relations, point)

    def written(self, sql: str, catalog: CatalogSnapshot | None) -> Written:
        """What `sql` may write (EVERYTHING when it cannot be known); NOTHING for none."""
        tree = self._tree(sql)
        if tree is None:
            return NOTHING
        tables: set[str] = set()
        rows: list[RowTemplate] = []
        ddl = False
        for i, kind in enumerate(tree.kinds):
            if kind in _NO_WRITE:
                if kind == "SelectStmt" and tree.dml_inside:
                    tables.update(tree.relations)
                continue
            if kind == "TruncateStmt" and tree.cascade:
                return Written((ALL_TABLES,), (), ddl)
            if kind in _WRITES_NAMED or kind == "ExplainStmt" and tree.dml_inside or kind == "CopyStmt":
                if kind != "CopyStmt" or tree.copy_from:
                    template = tree.rows[i] if i < len(tree.rows) else None
                    if template is not None and len(tree.relations) == 1:
                        rows.append(template)
                    else:
                        tables.update(tree.relations)
                ddl = ddl or kind == "AlterTableStmt"
                continue
            return Written((ALL_TABLES,), (), True)   # DDL, CALL, DO, EXECUTE ...: everything cached goes
        functions = self._function_writes(tree)
        if functions is None:
            return EVERYTHING
        tables.update(functions)
        if not tables and not rows:
            return Written((), (), ddl)
        return self._checked(tables, rows, catalog, ddl)

    def _function_writes(self, tree: _Tree) -> set[str] | None:
        """Tables the functions a statement calls may write: () for read-only ones, those listed in
        write_functions for a listed one, None (anything) for any other user function."""
        out: set[str] = set()
        blocker = self.classifier.functions.blocker
        for parts in tree.functions:
            reason = blocker(parts) if parts else None
            if reason is None or reason.startswith("volatile function"):
                continue   # read-only, or a built-in whose side effect is no table's (nextval, locks...)
            listed = self.write_functions.get(parts[-1].lower())
            if listed is None:
                return None
            out.update(listed)
        return out

    def _checked(self, tables: set[str], rows: list[RowTemplate], catalog: CatalogSnapshot | None,
                 ddl: bool) -> Written:
        """Against the catalog: writes to views or tables with triggers/rules, or unknown ones, write
        anything; row-scoped writes keep only the integer columns (else they are table-wide)."""
        if catalog is None:
            return Written((ALL_TABLES,), (), ddl)
        kept: list[RowTemplate] = []
        for name in tables | {r.table for r in rows}:
            relation = catalog.get(name)
            if relation is None or relation.writes_elsewhere or relation.opaque:
                return Written((ALL_TABLES,), (), ddl)
        for row in rows:
            relation = catalog.get(row.table)
            assert relation is not None
            columns = tuple(c for c in row.columns if c in relation.int_columns)
            if not columns and len(row.columns) == 1:
                tables.add(row.table)   # UPDATE/DELETE by a column that is not row-scoped
                continue
            kept.append(RowTemplate(row.table, columns, tuple(v for v in row.values if v.column in columns)))
        kept = [r for r in kept if r.table not in tables]
        return Written(tuple(sorted(tables)), tuple(kept), ddl)
