"""What a cached result depends on and what a write changes (row-scoped invalidation); pure, no I/O.

Counters, kept by the backend (so every dbproxy sharing a Redis sees the same ones):
- `gen`: the cluster's generation (FLUSH CACHE, writes whose tables are unknown: everything goes);
- `t <table>` (W): bumped by every write to the table;
- `c <table> <column>` (K): bumped by every row-scoped write whose rows are named by that column;
- `r <table> <column> <value>`: set to a fresh unique value by a row-scoped write of those rows.

A result that reads whole tables depends on (gen, W of each). A point read, `... WHERE col = v` on
one table, depends on (gen, W - K(col), r(col, v)): W - K(col) moves with every write to the table
that does not name its rows by `col` (a table-wide write, or a row write by another column, which may
have changed the row that `col = v` finds), and r(col, v) with every write that does. A row-scoped
write bumps W and K(col) together (atomically), so it leaves W - K(col) of point reads by the same
column unchanged and invalidates only the reads of the values it names.

Row counters hold unique values (never reused), so one that is dropped (bounded memory, or its
Redis expiry) reads as 0 again without reviving an old entry: an entry stored under 0 is older than
the first write of that row, which lived at most ROW_TTL, and entries never outlive ROW_TTL.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

# Invalidating this pseudo-table bumps the generation: every entry of the cluster goes.
ALL_TABLES = "\x00all"
GENERATION = "gen"
# Row counters expire (Redis) after this long; no entry lives longer (its TTL is capped to it).
ROW_TTL = 24 * 3600.0
Versions = tuple[int, ...]


@dataclass(frozen=True, slots=True)
class Point:
    """The rows a point read reads, or a row-scoped write writes: `column = value` in `table`
    (value canonical: two spellings of one value in the column's type give the same string)."""

    table: str
    column: str
    value: str


@dataclass(frozen=True, slots=True)
class RowWrite:
    """A write to `table` whose changed rows are exactly those named by `points` (all of that table)
    and, for every column in `columns`, no other row with a value of that column changed. UPDATE or
    DELETE `WHERE col = v`: columns = (col,), points = (col = v); INSERT of literal rows: every
    column given a value in every row, and a point per (column, value)."""

    table: str
    columns: tuple[str, ...]
    points: tuple[Point, ...]


# Names are joined with NUL, which no PostgreSQL or MySQL identifier holds: no two counters share a name.
def table_counter(table: str) -> str:
    return "t\x00" + table


def column_counter(table: str, column: str) -> str:
    return f"c\x00{table}\x00{column}"


def row_counter(point: Point) -> str:
    return f"r\x00{point.table}\x00{point.column}\x00{point.value}"


def read_counters(tables: Sequence[str], point: Point | None) -> list[str]:
    """The counters a result depends on, in the order versions() expects them."""
    names = [GENERATION]
    for table in tables:
        names.append(table_counter(table))
        if point is not None and table == point.table:
            names.append(column_counter(table, point.column))
            names.append(row_counter(point))
    return names


def versions(tables: Sequence[str], point: Point | None, values: Sequence[int]) -> Versions:
    """The version vector of a result from the values of read_counters(tables, point)."""
    if point is None:
        return tuple(values)
    out = [values[0]]
    i = 1
    for table in tables:
        if table == point.table:
            out.append(values[i] - values[i + 1])
            out.append(values[i + 2])
            i += 3
        else:
            out.append(values[i])
            i += 1
    return tuple(out)


@dataclass(frozen=True, slots=True)
class Increments:
    """What one invalidation does: counters to add to, and row counters to set to fresh values."""

    add: dict[str, int]
    rows: tuple[str, ...]


def increments(tables: Iterable[str], rows: Iterable[RowWrite]) -> Increments:
    """The counter changes of table-wide writes to `tables` (ALL_TABLES: the generation) and of `rows`."""
    add: dict[str, int] = {}
    fresh: set[str] = set()
    for table in tables:
        name = GENERATION if table == ALL_TABLES else table_counter(table)
        add[name] = add.get(name, 0) + 1
    for row in rows:
        name = table_counter(row.table)
        add[name] = add.get(name, 0) + 1
        for column in row.columns:
            name = column_counter(row.table, column)
            add[name] = add.get(name, 0) + 1
        fresh.update(row_counter(p) for p in row.points)
    return Increments(add, tuple(sorted(fresh)))


def written_tables(tables: Iterable[str], rows: Iterable[RowWrite]) -> set[str]:
    """Every table a write set touches (ALL_TABLES included as such)."""
    out = set(tables)
    out.update(r.table for r in rows)
    return out
