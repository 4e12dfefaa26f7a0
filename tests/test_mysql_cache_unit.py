"""The MySQL side of the query cache without a server: which result sets may be stored (byte
vectors from the wire encoders), and which tables a text reads and writes (against a catalog)."""

from __future__ import annotations

import pytest

from proxy.cache.catalog import CatalogSnapshot, Relation
from proxy.cache.scopes import ALL_TABLES
from proxy.engines.mysql.cache_catalog import relations_from_rows
from proxy.engines.mysql.cache_facts import MysqlCacheFacts
from proxy.engines.mysql.cache_flow import storable
from proxy.engines.mysql.classify import MysqlClassifier
from proxy.engines.mysql.wire.codes import Capability, Status
from proxy.engines.mysql.wire.messages import encode_end_of_rows, encode_err, encode_ok, encode_result_set
from proxy.engines.mysql.wire.packets import encode_packets

EOF_CAPS = int(Capability.PROTOCOL_41)
OK_CAPS = int(Capability.PROTOCOL_41 | Capability.DEPRECATE_EOF)


@pytest.mark.parametrize("caps", [EOF_CAPS, OK_CAPS])
def test_storable_result_sets(caps: int) -> None:
    deprecate = bool(caps & Capability.DEPRECATE_EOF)
    good = encode_result_set(["id", "v"], [(1, "a"), (2, None)], caps)
    assert storable(good, deprecate)
    assert storable(encode_result_set(["id"], [], caps), deprecate)                   # no rows
    assert not storable(encode_result_set(["id"], [(1,)], caps, Status.AUTOCOMMIT | Status.IN_TRANS), deprecate)
    assert not storable(encode_result_set(["id"], [(1,)], caps, Status.AUTOCOMMIT | Status.MORE_RESULTS_EXISTS),
                        deprecate)
    assert not storable(good[:-3], deprecate)                                           # cut short
    assert not storable(encode_packets(encode_ok(caps), 1)[0], deprecate)              # an OK, not rows
    assert not storable(encode_packets(encode_err(1054, "Unknown column"), 1)[0], deprecate)
    whole = encode_result_set(["id"], [(1,)], caps)
    end = encode_packets(encode_end_of_rows(caps, Status.AUTOCOMMIT), 0)[0]
    assert whole.endswith(end[4:])
    err = encode_packets(encode_err(1317, "interrupted"), 4)[0]
    assert not storable(whole[:-len(end)] + err, deprecate)                             # an error after rows


def test_the_catalog_rows() -> None:
    relations = relations_from_rows([{"name": "Items", "kind": "BASE TABLE", "writes": "0"},
                                     {"name": "v", "kind": "VIEW", "writes": "0"},
                                     {"name": "t", "kind": "BASE TABLE", "writes": "1"},
                                     {"name": "t", "kind": "BASE TABLE", "writes": "0"}])
    assert relations["items"] == Relation(False, False) and relations["v"].opaque
    assert relations["t"].writes_elsewhere


CATALOG = CatalogSnapshot({"items": Relation(False, False), "other": Relation(False, False),
                           "v": Relation(True, False), "trig": Relation(False, True)}, 0.0)


@pytest.mark.parametrize("sql, cacheable, tables", [
    ("SELECT v FROM items WHERE id = 1", True, ("items",)),
    ("SELECT * FROM items i JOIN other o ON o.id = i.id", True, ("items", "other")),
    ("SELECT * FROM app.items AS i, `other`", True, ("items", "other")),
    ("SELECT * FROM items WHERE id IN (SELECT id FROM other)", True, ("items", "other")),
    ("SELECT * FROM (SELECT * FROM items) x", True, ("items",)),
    ("SELECT * FROM v", False, ()),
    ("SELECT * FROM nowhere", False, ()),
    ("SELECT NOW() FROM items", False, ()),
    ("SELECT * FROM items FOR UPDATE", False, ()),
    ("SELECT * FROM items; SELECT 1", False, ()),
    ("SELECT id INTO @x FROM items", False, ()),
])
def test_reads(sql: str, cacheable: bool, tables: tuple[str, ...]) -> None:
    facts = MysqlCacheFacts(MysqlClassifier()).read(sql, CATALOG)
    assert facts.cacheable == cacheable, facts
    assert facts.tables == tables
    assert not MysqlCacheFacts(MysqlClassifier()).read("SELECT v FROM items", None).cacheable   # no catalog yet


@pytest.mark.parametrize("sql, tables, ddl", [
    ("UPDATE items SET v = 1 WHERE id = 2", ("items",), False),
    ("UPDATE items i JOIN other o ON i.id = o.id SET i.v = o.v", ("items", "other"), False),
    ("DELETE FROM items WHERE id = 1", ("items",), False),
    ("INSERT INTO items (id) VALUES (1)", ("items",), False),
    ("INSERT IGNORE INTO app.items SELECT * FROM other", ("items",), False),
    ("REPLACE items SET id = 1", ("items",), False),
    ("TRUNCATE TABLE items", ("items",), False),
    ("LOAD DATA INFILE '/x' INTO TABLE items", ("items",), False),
    ("UPDATE trig SET a = 1", (ALL_TABLES,), False),          # a trigger may write anything
    ("UPDATE v SET a = 1", (ALL_TABLES,), False),             # a view's base tables
    ("INSERT INTO nowhere VALUES (1)", (ALL_TABLES,), False),
    ("SELECT myfunc(1)", (ALL_TABLES,), False),
    ("CREATE TABLE x (a int)", (ALL_TABLES,), True),
    ("CALL p()", (ALL_TABLES,), True),
    ("BEGIN", (), False),
    ("SET @a = 1", (), False),
    ("SELECT 1", (), False),
])
def test_writes(sql: str, tables: tuple[str, ...], ddl: bool) -> None:
    written = MysqlCacheFacts(MysqlClassifier()).written(sql, CATALOG)
    assert written.tables == tables and written.ddl == ddl


class _Clocked:
    @staticmethod
    def clock() -> float:
        return 0.0


class _Catalog:
    @staticmethod
    def snapshot(database: str, now: float) -> CatalogSnapshot:
        return CATALOG


def test_a_multi_packet_query_is_taken_to_write_every_table() -> None:
    from proxy.engines.mysql.cache_flow import MysqlSessionCache
    flow = MysqlSessionCache(_Clocked(), MysqlCacheFacts(MysqlClassifier()), _Catalog())  # type: ignore[arg-type]
    small = encode_packets(b"\x03SELECT v FROM items")[0]
    flow._scan(None, small)  # type: ignore[arg-type]
    assert flow.dirty == set() and not flow.ddl
    sql = b"UPDATE items SET v = '" + b"x" * 0xFFFFFF + b"'"
    big = encode_packets(b"\x03" + sql)[0]
    assert len(big) > 0xFFFFFF + 8 and big[:3] == b"\xff\xff\xff"   # two packets
    flow._scan(None, big + small)  # type: ignore[arg-type]
    assert ALL_TABLES in flow.dirty and flow.ddl
    assert flow.hold_all   # more commands after the write: held until the batch is answered


def test_a_multi_packet_query_is_noted_from_its_first_chunk() -> None:
    from proxy.engines.mysql.cache_flow import MysqlSessionCache
    flow = MysqlSessionCache(_Clocked(), MysqlCacheFacts(MysqlClassifier()), _Catalog())  # type: ignore[arg-type]
    big = encode_packets(b"\x03DELETE FROM items WHERE v = '" + b"x" * 0xFFFFFF + b"'")[0]
    flow._scan(None, big[:65536])  # type: ignore[arg-type]   # in a transaction: relayed as it arrives
    assert ALL_TABLES in flow.dirty and flow.ddl


# ---- COM_STMT_EXECUTE: key material and binary result sets (cache_replies) ----------------------------

LONGLONG, STRING, UNSIGNED = b"\x08\x00", b"\xfe\x00", b"\x08\x80"


def _execute(statement_id: int, flags: int = 0, iterations: int = 1, tail: bytes = b"") -> bytes:
    return b"\x17" + statement_id.to_bytes(4, "little") + bytes((flags,)) + iterations.to_bytes(4, "little") + tail


SEVEN_AB = (7).to_bytes(8, "little") + b"\x02ab"   # values of (7, 'ab'): LONGLONG, then a length-encoded string


def test_execute_key_is_the_bitmap_the_types_in_force_and_the_values() -> None:
    from proxy.engines.mysql.cache_replies import execute_key
    typed = _execute(5, tail=b"\x00" + b"\x01" + LONGLONG + STRING + SEVEN_AB)
    key = execute_key(typed, 2, b"")
    assert key is not None and key.types == LONGLONG + STRING
    assert key.parameters == b"\x02\x00" + b"\x00" + LONGLONG + STRING + SEVEN_AB
    # Another client's id for the same text, and the types left out (the ones bound last are in force): the same key.
    untyped = execute_key(_execute(9, tail=b"\x00" + b"\x00" + SEVEN_AB), 2, LONGLONG + STRING)
    assert untyped is not None and untyped.types is None and untyped.parameters == key.parameters
    assert execute_key(_execute(9, tail=b"\x00\x00" + SEVEN_AB), 2, b"") is None   # no types known: the server's error
    others = [
        _execute(5, tail=b"\x00\x01" + LONGLONG + STRING + (8).to_bytes(8, "little") + b"\x02ab"),   # another value
        _execute(5, tail=b"\x00\x01" + UNSIGNED + STRING + SEVEN_AB),                                 # unsigned
        _execute(5, tail=b"\x00\x01" + STRING + STRING + b"\x017" + b"\x02ab"),                      # '7', a string
        _execute(5, tail=b"\x01\x01" + LONGLONG + STRING + b"\x02ab"),                               # NULL, 'ab'
    ]
    keys = {key.parameters}
    for payload in others:
        other = execute_key(payload, 2, b"")
        assert other is not None
        keys.add(other.parameters)
    assert len(keys) == 1 + len(others)


def test_execute_key_refuses_cursors_and_odd_executes() -> None:
    from proxy.engines.mysql.cache_replies import execute_key
    tail = b"\x00\x01" + LONGLONG + STRING + SEVEN_AB
    assert execute_key(_execute(5, tail=tail), 2, b"") is not None
    assert execute_key(_execute(5, flags=1, tail=tail), 2, b"") is None        # CURSOR_TYPE_READ_ONLY
    assert execute_key(_execute(5, flags=4, tail=tail), 2, b"") is None        # scrollable
    assert execute_key(_execute(5, iterations=2, tail=tail), 2, b"") is None
    assert execute_key(_execute(5, tail=b"\x00\x01" + LONGLONG), 2, b"") is None   # types cut short
    assert execute_key(_execute(5, tail=b"\x00"), 2, b"") is None                  # no new-params-bound flag
    assert execute_key(_execute(5, tail=b"\x00\x02" + tail[2:]), 2, b"") is None   # not a flag
    assert execute_key(_execute(5)[:9], 0, b"") is None
    assert execute_key(b"\x03" + _execute(5)[1:], 0, b"") is None                  # not an execute
    none = execute_key(_execute(5), 0, b"")
    assert none is not None and none.parameters == b"\x00\x00" and none.types is None


def _binary_result(caps: int, rows: list[bytes], status: int = Status.AUTOCOMMIT, first_seq: int = 1,
                   warnings: int = 0) -> bytes:
    """A binary result set of one LONGLONG column `id` (rows are the values, 8 bytes each)."""
    from proxy.engines.mysql.wire.messages import Column, encode_column_definition, encode_eof
    out = []
    data, seq = encode_packets(b"\x01", first_seq)
    out.append(data)
    data, seq = encode_packets(encode_column_definition(Column("id", 8)), seq)
    out.append(data)
    if not caps & Capability.DEPRECATE_EOF:
        data, seq = encode_packets(encode_eof(0, status), seq)
        out.append(data)
    for value in rows:
        data, seq = encode_packets(b"\x00\x00" + value, seq)   # header, NULL bitmap (1 column: 1 byte), value
        out.append(data)
    out.append(encode_packets(encode_end_of_rows(caps, status, warnings), seq)[0])
    return b"".join(out)


@pytest.mark.parametrize("caps", [EOF_CAPS, OK_CAPS])
def test_storable_binary_result_sets(caps: int) -> None:
    from proxy.engines.mysql.cache_replies import storable_binary
    deprecate = bool(caps & Capability.DEPRECATE_EOF)
    one = [(1).to_bytes(8, "little")]
    assert storable_binary(_binary_result(caps, one), deprecate)
    assert storable_binary(_binary_result(caps, []), deprecate)
    many = _binary_result(caps, [n.to_bytes(8, "little") for n in range(300)])   # sequence ids wrap at 256
    assert storable_binary(many, deprecate)
    assert not storable_binary(_binary_result(caps, one, first_seq=2), deprecate)   # not framed from 1
    assert not storable_binary(_binary_result(caps, one, first_seq=0), deprecate)
    assert not storable_binary(_binary_result(caps, one, Status.AUTOCOMMIT | Status.IN_TRANS), deprecate)
    assert not storable_binary(_binary_result(caps, one, Status.AUTOCOMMIT | Status.CURSOR_EXISTS), deprecate)
    assert not storable_binary(_binary_result(caps, one, warnings=1), deprecate)
    assert not storable_binary(_binary_result(caps, one)[:-2], deprecate)
    text = encode_result_set(["id"], [(1,)], caps)
    assert storable(text, deprecate) and not storable_binary(text, deprecate)    # text rows are not binary rows
    whole = _binary_result(caps, one)
    end = encode_packets(encode_end_of_rows(caps, Status.AUTOCOMMIT), 0)[0]
    assert not storable_binary(whole[:-len(end)] + encode_packets(encode_err(1317, "interrupted"), 5)[0], deprecate)
    assert not storable_binary(encode_packets(encode_ok(caps), 1)[0], deprecate)
