"""Row-scoped invalidation without a database: the counters (scopes.py) on the memory backend and on
a private redis-server, a model check of random reads and writes (Hypothesis), the point-read and
row-write shapes found in pglast trees, Bind parameters, and the catalog snapshot's verdicts."""

from __future__ import annotations

import asyncio
import shutil
from collections.abc import Iterator

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from redis_helpers import RedisServer

from deploy.pgcluster import HOST
from proxy.cache.backends import Backend, MemoryBackend
from proxy.cache.catalog import CatalogSnapshot
from proxy.cache.redis_backend import RedisBackend
from proxy.cache.scopes import ALL_TABLES, Point, RowWrite
from proxy.cache.settings import CacheSettings
from proxy.engines.postgres.cache_catalog import relations_from_rows
from proxy.engines.postgres.cache_points import Values, bind_parameter, canonical_int
from proxy.engines.postgres.cache_tables import CacheFacts
from proxy.engines.postgres.classify import PgClassifier


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def by_id(value: int) -> Point:
    return Point("t", "id", str(value))


def update_by(column: str, value: int) -> RowWrite:
    return RowWrite("t", (column,), (Point("t", column, str(value)),))


async def cached(backend: Backend, key: str, tables: tuple[str, ...], point: Point | None, value: bytes) -> bytes:
    """The backend's entry for key, or `value` stored under it (as a miss would)."""
    found = await backend.lookup(key, tables, point)
    if found.value is not None:
        return found.value
    await backend.store(key, value, tables, point, found.versions, 60.0)
    return value


async def check_row_scopes(backend: Backend) -> None:
    one, two = by_id(1), by_id(2)
    assert await cached(backend, "one", ("t",), one, b"1a") == b"1a"
    assert await cached(backend, "two", ("t",), two, b"2a") == b"2a"
    assert await cached(backend, "all", ("t",), None, b"all-a") == b"all-a"
    assert await cached(backend, "one", ("t",), one, b"1b") == b"1a"              # a hit
    await backend.invalidate((), [update_by("id", 2)])                             # UPDATE t ... WHERE id = 2
    assert await cached(backend, "one", ("t",), one, b"1b") == b"1a"              # still valid
    assert await cached(backend, "two", ("t",), two, b"2b") == b"2b"              # invalidated
    assert await cached(backend, "all", ("t",), None, b"all-b") == b"all-b"       # a whole-table read: too
    await backend.invalidate((), [update_by("email", 7)])                          # another column: any row
    assert await cached(backend, "one", ("t",), one, b"1c") == b"1c"
    assert await cached(backend, "two", ("t",), two, b"2c") == b"2c"
    insert = RowWrite("t", ("id", "email"), (by_id(3), Point("t", "email", "9")))
    await backend.invalidate((), [insert])                                         # INSERT (id, email) VALUES (3, 9)
    assert await cached(backend, "one", ("t",), one, b"1d") == b"1c"
    assert await cached(backend, "three", ("t",), by_id(3), b"3") == b"3"
    await backend.invalidate(("t",))                                               # table-wide
    assert await cached(backend, "one", ("t",), one, b"1e") == b"1e"
    await backend.invalidate(("other",))
    assert await cached(backend, "one", ("t",), one, b"1f") == b"1e"
    await backend.invalidate((ALL_TABLES,))
    assert await cached(backend, "one", ("t",), one, b"1g") == b"1g"
    found = await backend.lookup("late", ("t",), one)                              # a miss, then a write of its row
    await backend.invalidate((), [update_by("id", 1)])
    await backend.store("late", b"old", ("t",), one, found.versions, 60.0)
    assert (await backend.lookup("late", ("t",), one)).value is None


async def test_row_scopes_on_the_memory_backend() -> None:
    await check_row_scopes(MemoryBackend(1 << 20, Clock()))


@pytest.fixture(scope="module")
def redis_port(tmp_path_factory: pytest.TempPathFactory) -> Iterator[int]:
    if shutil.which("redis-server") is None:
        pytest.skip("redis-server is not installed")
    server = RedisServer(tmp_path_factory.mktemp("redis-rows"))
    server.start()
    yield server.port
    server.stop()


async def test_row_scopes_on_redis(redis_port: int) -> None:
    backend = RedisBackend(f"redis://{HOST}:{redis_port}/0", "rows", 1.0)
    try:
        assert await backend.connect()
        await check_row_scopes(backend)
    finally:
        await backend.close()


async def test_the_memory_backend_drops_row_counters_beyond_its_bound(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("proxy.cache.backends.MAX_ROW_COUNTERS", 10)
    backend = MemoryBackend(1 << 20, Clock())
    assert await cached(backend, "one", ("t",), by_id(1), b"1a") == b"1a"
    await backend.invalidate((), [update_by("id", 1)])
    assert await cached(backend, "one", ("t",), by_id(1), b"1b") == b"1b"
    for i in range(100, 120):   # counters of other rows: the bound is passed and the counters go
        await backend.invalidate((), [update_by("id", i)])
    assert len(backend._rows) <= 10
    assert await cached(backend, "one", ("t",), by_id(1), b"1c") == b"1c"   # never the old entry again


# Operations of the model check: a read by id or by email of value v, or a write.
_op = st.one_of(
    st.tuples(st.just("read"), st.sampled_from(["id", "email", "all"]), st.integers(0, 3)),
    st.tuples(st.just("update"), st.sampled_from(["id", "email", "table"]), st.integers(0, 3)),
    st.tuples(st.just("insert"), st.integers(0, 3), st.integers(0, 3)),
)


@settings(max_examples=150, deadline=None)
@given(st.lists(_op, max_size=40))
def test_cached_reads_always_match_the_table(ops: list[tuple[str, object, int]]) -> None:
    """Rows (id, email, n); reads go through the memory backend with their scopes; every read answers
    what a read of the current rows would."""
    rows: list[list[int]] = [[0, 0, 0], [1, 1, 0]]
    backend = MemoryBackend(1 << 20, Clock())

    def result(column: str, value: int) -> bytes:
        index = {"id": 0, "email": 1}.get(column)
        return repr(sorted(tuple(r) for r in rows if index is None or r[index] == value)).encode()

    async def run() -> None:
        for op in ops:
            if op[0] == "read":
                _, column, value = op
                assert isinstance(column, str)
                point = None if column == "all" else Point("t", column, str(value))
                key = f"{column}={value if point else ''}"
                assert await cached(backend, key, ("t",), point, result(column, value)) == result(column, value)
            elif op[0] == "update":   # n += 1 where column = value (table: every row)
                _, column, value = op
                index = {"id": 0, "email": 1}.get(str(column))
                for r in rows:
                    if index is None or r[index] == value:
                        r[2] += 1
                if index is None:
                    await backend.invalidate(("t",))
                else:
                    await backend.invalidate((), [update_by(str(column), value)])
            else:
                _, ident, email = op
                assert isinstance(ident, int)
                rows.append([ident, email, 0])
                await backend.invalidate((), [RowWrite("t", ("id", "email"), (by_id(ident), Point("t", "email",
                                                                                                   str(email))))])

    asyncio.run(run())


# ------------------------------------------------------------------------------ texts and Binds

SNAPSHOT = CatalogSnapshot(relations_from_rows([
    ["accounts", "r", "false", "false", "false", '["id", "branch"]'],
    ["orders", "r", "false", "false", "false", "[]"],
    ["logged", "r", "false", "false", "true", '["id"]'],                  # has a writing trigger
    ["totals", "v", "false", "false", "false", '["id"]'],                 # a view
    ["parted", "p", "false", "true", "false", '["id"]'],
    ["dup", "r", "false", "false", "false", '["id", "x"]'],
    ["dup", "r", "false", "false", "false", '["id"]'],                     # the same name in another schema
    ["tmp", "r", "true", "false", "false", '["id"]'],                      # some session's temporary table
]), 0.0)


def facts() -> CacheFacts:
    settings = CacheSettings(write_functions=(("add_order", ("orders",)),))
    return CacheFacts(PgClassifier(read_only_functions=["report"]), None, settings)  # type: ignore[arg-type]


@pytest.mark.parametrize("sql, point", [
    ("SELECT v FROM accounts WHERE id = 5", Point("accounts", "id", "5")),
    ("SELECT v FROM accounts WHERE id = '05'", Point("accounts", "id", "5")),
    ("SELECT v FROM accounts a WHERE a.id = 7 AND v > 'x' ORDER BY v LIMIT 3", Point("accounts", "id", "7")),
    ("SELECT count(*) FROM accounts WHERE 9 = branch", Point("accounts", "branch", "9")),
    ("SELECT v FROM accounts WHERE v = 'x'", None),                      # v is not an integer column
    ("SELECT v FROM accounts WHERE id = 5 OR id = 6", None),
    ("SELECT v FROM accounts WHERE id > 5", None),
    ("SELECT v FROM accounts WHERE id = 5.0", None),
    ("SELECT v FROM accounts WHERE id = (SELECT 5)", None),
    ("SELECT v FROM accounts, dup WHERE accounts.id = 5", None),
    ("SELECT v FROM dup WHERE x = 5", None),                              # x is an integer in one dup only
])
def test_point_reads(sql: str, point: Point | None) -> None:
    read = facts().read(sql, SNAPSHOT)
    assert read.cacheable, read
    got = Values(sql).point(read.point) if read.point is not None else None
    assert got == point


@pytest.mark.parametrize("sql, reason", [
    ("SELECT * FROM totals", "view"),
    ("SELECT * FROM parted WHERE id = 1", "view"),
    ("SELECT * FROM tmp", "view"),
    ("SELECT * FROM nowhere", "view"),                                    # not in the catalog
    ("SELECT * FROM report(1)", "view"),                                  # a read-only user function
    ("SELECT report(id) FROM accounts", "view"),
])
def test_what_the_parser_cannot_see_through_is_a_view(sql: str, reason: str) -> None:
    assert facts().read(sql, SNAPSHOT).reason == reason
    assert not facts().read("SELECT v FROM accounts", None).cacheable   # no catalog yet: nothing


@pytest.mark.parametrize("sql, bound, tables, rows", [
    ("UPDATE accounts SET v = 'x' WHERE id = 5", None, (), [RowWrite("accounts", ("id",), (Point("accounts", "id",
                                                                                                   "5"),))]),
    ("DELETE FROM accounts WHERE id = $1", b"\x00\x00\x00\x01\x00\x00\x00\x0212\x00\x00", (),
     [RowWrite("accounts", ("id",), (Point("accounts", "id", "12"),))]),
    ("UPDATE accounts SET id = 6 WHERE id = 5", None, ("accounts",), []),          # assigns the key column
    ("UPDATE accounts SET v = 'x' WHERE v = 'y'", None, ("accounts",), []),
    ("UPDATE accounts SET v = 'x' WHERE id = $1", b"\x00\x00\x00\x01\xff\xff\xff\xff\x00\x00", ("accounts",), []),
    ("INSERT INTO accounts (id, branch, v) VALUES (1, 2, 'a'), (3, DEFAULT, 'b')", None, (),
     [RowWrite("accounts", ("id",), (Point("accounts", "id", "1"), Point("accounts", "id", "3")))]),
    ("INSERT INTO accounts VALUES (1, 2)", None, ("accounts",), []),               # columns not named
    ("INSERT INTO accounts (id) VALUES (1) ON CONFLICT DO NOTHING", None, ("accounts",), []),
    ("UPDATE logged SET v = 1 WHERE id = 1", None, (ALL_TABLES,), []),              # a trigger may write anything
    ("UPDATE totals SET v = 1", None, (ALL_TABLES,), []),                           # a view's base tables
    ("DELETE FROM nowhere WHERE id = 1", None, (ALL_TABLES,), []),
    ("TRUNCATE accounts CASCADE", None, (ALL_TABLES,), []),
    ("SELECT add_order(1)", None, ("orders",), []),                                 # write_functions
    ("SELECT other_function(1)", None, (ALL_TABLES,), []),
    ("SELECT nextval('s')", None, (), []),
])
def test_written_tables_and_rows(sql: str, bound: bytes | None, tables: tuple[str, ...],
                                 rows: list[RowWrite]) -> None:
    written = facts().written(sql, SNAPSHOT)
    values = Values(sql, bound)
    resolved = [values.rows(t) for t in written.rows]
    got_tables = set(written.tables) | {t.table for t, r in zip(written.rows, resolved, strict=True) if r is None}
    assert got_tables == set(tables)
    assert [r for r in resolved if r is not None] == rows
    assert facts().written("UPDATE accounts SET v = 1 WHERE id = 1", None).tables == (ALL_TABLES,)   # no catalog


def test_ddl_changes_the_catalog() -> None:
    assert facts().written("ALTER TABLE accounts ADD COLUMN w int", SNAPSHOT).ddl
    assert facts().written("CREATE VIEW w AS SELECT 1", SNAPSHOT).ddl
    assert not facts().written("UPDATE accounts SET v = 1 WHERE id = 1", SNAPSHOT).ddl


def test_canonical_integers_and_bind_parameters() -> None:
    assert [canonical_int(t) for t in ("5", " 05 ", "+5", "-0", "5.0", "1e3", "0x10", "", "٣")] == [
        "5", "5", "5", "0", None, None, None, None, None]
    text = b"\x00\x00\x00\x02\x00\x00\x00\x01a\x00\x00\x00\x0242\x00\x00"
    assert bind_parameter(text, 2, b"") == "42" and bind_parameter(text, 1, b"") is None
    assert bind_parameter(text, 3, b"") is None
    binary = b"\x00\x01\x00\x01\x00\x01\x00\x00\x00\x04\xff\xff\xff\xfe\x00\x00"
    assert bind_parameter(binary, 1, b"\x00\x01\x00\x00\x00\x17") == "-2"        # int4
    assert bind_parameter(binary, 1, b"\x00\x01\x00\x00\x02\xbc") is None         # float4 (700)
    assert bind_parameter(b"\x00\x00\x00\x01\x00\x00\x00\x09", 1, b"") is None   # truncated


def test_the_catalog_merges_names_of_several_schemas_carefully() -> None:
    dup = SNAPSHOT.get("dup")
    assert dup is not None and dup.int_columns == {"id"} and not dup.opaque
    assert SNAPSHOT.get("logged").writes_elsewhere   # type: ignore[union-attr]
    assert SNAPSHOT.get("tmp").opaque   # type: ignore[union-attr]


async def test_the_catalog_reader_with_a_fake_clock() -> None:
    from proxy.cache.catalog import MAX_AGE, RETRY_AFTER, CatalogReader, Relation

    clock = Clock()
    calls: list[str] = []
    failing = [False]

    async def fetch(database: str) -> dict[str, Relation]:
        calls.append(database)
        if failing[0]:
            raise OSError("refused")
        return {"t": Relation(False, False)}

    reader = CatalogReader("main", fetch, clock, (OSError,))
    assert reader.snapshot("app", clock()) is None and reader.reading("app") is not None
    await asyncio.sleep(0)
    first = reader.snapshot("app", clock())
    assert first is not None and first.get("t") is not None and calls == ["app"]
    clock.now += MAX_AGE - 1
    assert reader.snapshot("app", clock()) is first and calls == ["app"]       # fresh enough: no read
    reader.stale()                                                              # DDL through the proxy
    assert reader.snapshot("app", clock()) is None                              # not used until read again
    await asyncio.sleep(0)
    assert reader.snapshot("app", clock()) is not None and len(calls) == 2
    clock.now += MAX_AGE
    failing[0] = True
    old = reader.snapshot("app", clock())                                       # too old: read again...
    await asyncio.sleep(0)
    assert old is not None and len(calls) == 3                                  # (failed: the old one stays)
    assert reader.snapshot("app", clock()) is not None and len(calls) == 3      # no retry before RETRY_AFTER
    clock.now += RETRY_AFTER
    reader.snapshot("app", clock())
    await asyncio.sleep(0)
    assert len(calls) == 4
    reader.close()
