"""Point reads and row-scoped writes in a PostgreSQL parse tree (SPEC §11, row-scoped invalidation).

From pglast's JSON tree (as a dict): a SELECT of one table whose WHERE has a top-level conjunct
`col = <literal | $n>` is a point read of `col`; an UPDATE or DELETE of one table `WHERE col = ...`
(no FROM/USING, no WITH, an UPDATE not assigning `col`) writes only the rows `col` names; an INSERT
of VALUES rows (no ON CONFLICT, no WITH) writes the rows of the columns given a literal or a
parameter in every row. Where the value sits is a `PointSource` (literal number / parameter number);
the value itself is read from each text or Bind (`literal_values`, `bind_parameter`) and
canonicalized as an integer (`canonical_int`): only columns of an integer type are row-scoped (the
catalog says which), so '05', ' 5' and 5 name one row. Pure, no I/O.
"""

from __future__ import annotations

import re
import struct
from dataclasses import dataclass
from typing import Any

from ...cache.policy import PointSource
from ...cache.scopes import Point, RowWrite
from .classify import _LITERAL

_U32 = struct.Struct("!I")
_I16 = struct.Struct("!h")
_I32 = struct.Struct("!i")
_INT_TYPES = frozenset({"int2", "int4", "int8", "smallint", "integer", "bigint", "int"})
_INT_OIDS = frozenset({0, 20, 21, 23})          # unspecified, int8, int2, int4
_INT_TEXT = re.compile(r"\s*[+-]?[0-9]{1,19}\s*")
_SELECT_KEYS = frozenset({"targetList", "fromClause", "whereClause", "groupClause", "havingClause", "sortClause",
                          "limitOption", "op", "limitCount", "limitOffset", "distinctClause", "windowClause"})
_UPDATE_KEYS = frozenset({"relation", "targetList", "whereClause", "returningList"})
_DELETE_KEYS = frozenset({"relation", "whereClause", "returningList"})
_INSERT_KEYS = frozenset({"relation", "cols", "selectStmt", "override", "returningList"})


@dataclass(frozen=True, slots=True)
class RowTemplate:
    """A row-scoped write before its values are known: `columns` name its rows exactly, and
    `values` says where each (column, row) value is."""

    table: str
    columns: tuple[str, ...]
    values: tuple[PointSource, ...]


def literal_starts(sql: str) -> list[int] | None:
    """Offsets of the literals of `sql` in literal order (None: a tree's byte offsets would not match)."""
    if not sql.isascii():
        return None
    return [m.start() for m in _LITERAL.finditer(sql)]


def literal_values(sql: str) -> list[str]:
    """The literals of `sql` in the order literal_starts() numbers them (strings unquoted)."""
    out = []
    for m in _LITERAL.finditer(sql):
        text = m.group()
        out.append(text[1:-1].replace("''", "'") if text[0] == "'" else text)
    return out


def canonical_int(text: str) -> str | None:
    """The integer `text` spells as PostgreSQL's integer input reads it, or None if it is not one."""
    return str(int(text)) if _INT_TEXT.fullmatch(text) else None


def bind_parameter(bound: bytes, number: int, types: bytes) -> str | None:
    """Parameter `number` (1-based) of a Bind (`bound`: its body after the statement name) as a
    canonical integer, or None (NULL, malformed, binary of a type not known to be an integer).
    `types`: the statement's Parse tail (int16 count, then the parameter type OIDs)."""
    try:
        (nfmt,) = _I16.unpack_from(bound, 0)
        pos = 2 + 2 * nfmt
        if nfmt > 0 and len(bound) < pos:
            return None
        (count,) = _I16.unpack_from(bound, pos)
        pos += 2
        if not 1 <= number <= count:
            return None
        for i in range(count):
            (size,) = _I32.unpack_from(bound, pos)
            pos += 4
            if i == number - 1:
                if size < 0 or pos + size > len(bound):
                    return None
                value = bound[pos:pos + size]
                # One format code applies to all parameters; else parameter i's own (none given: text).
                fmt = _I16.unpack_from(bound, 2)[0] if nfmt == 1 else (_I16.unpack_from(bound, 2 + 2 * i)[0]
                                                                        if nfmt > i else 0)
                if fmt == 0:
                    return canonical_int(value.decode("ascii", "replace"))
                (ntypes,) = _I16.unpack_from(types, 0) if len(types) >= 2 else (0,)
                oid = _U32.unpack_from(types, 2 + 4 * i)[0] if i < ntypes else 0
                if oid in _INT_OIDS and size in (2, 4, 8):
                    return str(int.from_bytes(value, "big", signed=True))
                return None
            pos += max(size, 0)
    except struct.error:
        return None
    return None


def _value_source(node: dict[str, Any], table: str, column: str, starts: list[int] | None) -> PointSource | None:
    if "TypeCast" in node:
        cast = node["TypeCast"]
        names = cast.get("typeName", {}).get("names", [])
        if not names or names[-1].get("String", {}).get("sval") not in _INT_TYPES or cast.get("typeName", {}).get(
                "arrayBounds"):
            return None
        node = cast.get("arg", {})
    if "ParamRef" in node:
        number = node["ParamRef"].get("number", 0)
        return PointSource(table, column, param=number) if number > 0 else None
    const = node.get("A_Const")
    if const is None or starts is None or const.get("isnull") or "boolval" in const:
        return None
    location = const.get("location", -1)
    try:
        return PointSource(table, column, literal=starts.index(location))
    except ValueError:
        return None


def _column(node: dict[str, Any], names: frozenset[str]) -> str | None:
    ref = node.get("ColumnRef")
    if ref is None:
        return None
    fields = [f.get("String", {}).get("sval") for f in ref.get("fields", [])]
    if len(fields) == 1 or (len(fields) == 2 and fields[0] in names):
        return fields[-1]
    return None


def _equality(where: dict[str, Any] | None, table: str, names: frozenset[str],
              starts: list[int] | None) -> PointSource | None:
    """The first top-level conjunct `col = value` of `where` (either way round)."""
    if not where:
        return None
    if "BoolExpr" in where:
        expr = where["BoolExpr"]
        if expr.get("boolop") != "AND_EXPR":
            return None
        for arg in expr.get("args", []):
            found = _equality(arg, table, names, starts) if "A_Expr" in arg else None
            if found is not None:
                return found
        return None
    expr = where.get("A_Expr")
    if expr is None or expr.get("kind") != "AEXPR_OP" or [n.get("String", {}).get("sval") for n in
                                                         expr.get("name", [])] != ["="]:
        return None
    left, right = expr.get("lexpr", {}), expr.get("rexpr", {})
    for col_side, value_side in ((left, right), (right, left)):
        column = _column(col_side, names)
        if column is not None:
            return _value_source(value_side, table, column, starts)
    return None


def _relation(node: dict[str, Any]) -> tuple[str, frozenset[str]] | None:
    rv = node.get("RangeVar") if "RangeVar" in node else node
    if not rv or "relname" not in rv:
        return None
    alias = rv.get("alias", {}).get("aliasname")
    return rv["relname"], frozenset({alias} if alias else {rv["relname"]})


def select_point(stmt: dict[str, Any], sql: str) -> PointSource | None:
    """The point a one-table SELECT reads (see the module docstring), or None."""
    if set(stmt) - _SELECT_KEYS or stmt.get("op", "SETOP_NONE") != "SETOP_NONE":
        return None
    tables = stmt.get("fromClause", [])
    if len(tables) != 1 or "RangeVar" not in tables[0]:
        return None
    relation = _relation(tables[0])
    if relation is None:
        return None
    return _equality(stmt.get("whereClause"), relation[0], relation[1], literal_starts(sql))


def write_rows(kind: str, stmt: dict[str, Any], sql: str) -> RowTemplate | None:
    """The rows an UPDATE / DELETE / INSERT writes, when they can be named (see the module docstring)."""
    keys = {"UpdateStmt": _UPDATE_KEYS, "DeleteStmt": _DELETE_KEYS, "InsertStmt": _INSERT_KEYS}.get(kind)
    if keys is None or set(stmt) - keys:
        return None
    relation = _relation(stmt.get("relation", {}))
    if relation is None:
        return None
    table, names = relation
    starts = literal_starts(sql)
    if kind != "InsertStmt":
        point = _equality(stmt.get("whereClause"), table, names, starts)
        if point is None:
            return None
        assigned = {t.get("ResTarget", {}).get("name") for t in stmt.get("targetList", [])}
        return None if point.column in assigned else RowTemplate(table, (point.column,), (point,))
    select = stmt.get("selectStmt", {}).get("SelectStmt", {})
    if set(select) - {"valuesLists", "limitOption", "op"} or not select.get("valuesLists"):
        return None
    columns = [t.get("ResTarget", {}).get("name") for t in stmt.get("cols", [])]
    rows = [row.get("List", {}).get("items", []) for row in select["valuesLists"]]
    if not columns or any(len(row) != len(columns) for row in rows):
        return None
    named: list[str] = []
    values: list[PointSource] = []
    for i, column in enumerate(columns):
        sources = [_value_source(row[i], table, column, starts) for row in rows]
        if all(s is not None for s in sources):
            named.append(column)
            values.extend(s for s in sources if s is not None)
    return RowTemplate(table, tuple(named), tuple(values))


class Values:
    """The values of one text or Bind for PointSources: its literals (read once, on first need) and
    its Bind parameters (`bound`: the Bind body after the statement name; `types`: the Parse tail)."""

    __slots__ = ("sql", "bound", "types", "_literals")

    def __init__(self, sql: str, bound: bytes | None = None, types: bytes = b"") -> None:
        self.sql = sql
        self.bound = bound
        self.types = types
        self._literals: list[str] | None = None

    def of(self, source: PointSource) -> str | None:
        """The canonical integer value at `source`, or None."""
        if source.param:
            return bind_parameter(self.bound, source.param, self.types) if self.bound is not None else None
        if self._literals is None:
            self._literals = literal_values(self.sql)
        literals = self._literals
        return canonical_int(literals[source.literal]) if 0 <= source.literal < len(literals) else None

    def point(self, source: PointSource) -> Point | None:
        value = self.of(source)
        return Point(source.table, source.column, value) if value is not None else None

    def rows(self, template: RowTemplate) -> RowWrite | None:
        """The row write of `template` with these values (None: a value is not known: table-wide)."""
        points = []
        for source in template.values:
            point = self.point(source)
            if point is None:
                return None
            points.append(point)
        return RowWrite(template.table, template.columns, tuple(points))
