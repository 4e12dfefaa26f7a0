"""Sans-IO encoder for the admin console's answers: tables as RowDescription/DataRow/CommandComplete."""

from __future__ import annotations

import struct
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from ..engines.postgres.wire import messages as m

# Column kinds and the PostgreSQL type each is announced as (oid, typlen): clients such as psql
# right-align numbers, and drivers decode the text values into the matching Python types.
KINDS: dict[str, tuple[int, int]] = {
    "text": (25, -1),
    "int": (20, 8),
    "float": (701, 8),
    "bool": (16, 1),
}

_I16 = struct.Struct("!h")
_I32 = struct.Struct("!i")
_FIELD = struct.Struct("!ihihih")   # table oid, column number, type oid, typlen, typmod, format


@dataclass(frozen=True)
class Column:
    name: str
    kind: str = "text"


@dataclass
class Table:
    """A result set: named, typed columns and rows of plain Python values (None is NULL)."""

    columns: tuple[Column, ...]
    rows: list[tuple[Any, ...]] = field(default_factory=list)

    @classmethod
    def of(cls, spec: Sequence[tuple[str, str] | str], rows: Iterable[Sequence[Any]] = ()) -> Table:
        """Table.of([("cluster", "text"), ("idle", "int")], rows); a bare name is a text column."""
        columns = tuple(Column(c) if isinstance(c, str) else Column(*c) for c in spec)
        return cls(columns, [tuple(r) for r in rows])

    @property
    def names(self) -> list[str]:
        return [c.name for c in self.columns]

    def as_dicts(self) -> list[dict[str, Any]]:
        names = self.names
        return [dict(zip(names, row, strict=True)) for row in self.rows]


def text_value(value: Any) -> bytes | None:
    """The text-format encoding of one value, as PostgreSQL would send it."""
    if value is None:
        return None
    if isinstance(value, bool):
        return b"t" if value else b"f"
    if isinstance(value, float):
        return repr(value).encode() if value == value else b"NaN"
    return str(value).encode()


def row_description(columns: Sequence[Column]) -> bytes:
    parts = [_I16.pack(len(columns))]
    for column in columns:
        oid, typlen = KINDS[column.kind]
        parts.append(m.cstr(column.name) + _FIELD.pack(0, 0, oid, typlen, -1, 0))
    return m.message(b"T", b"".join(parts))


def data_row(values: Sequence[Any]) -> bytes:
    parts = [_I16.pack(len(values))]
    for value in values:
        encoded = text_value(value)
        if encoded is None:
            parts.append(_I32.pack(-1))
        else:
            parts.append(_I32.pack(len(encoded)) + encoded)
    return m.message(b"D", b"".join(parts))


def command_complete(tag: str) -> bytes:
    return m.message(b"C", m.cstr(tag))


def encode_table(table: Table, tag: str = "SHOW") -> bytes:
    """RowDescription, one DataRow per row, CommandComplete (without ReadyForQuery)."""
    out = [row_description(table.columns)]
    out.extend(data_row(row) for row in table.rows)
    out.append(command_complete(tag))
    return b"".join(out)


EMPTY_QUERY_RESPONSE = m.message(b"I")
