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
