"""The query cache without a database: policy (rules, hints, TTLs), keys, the memory backend with a
fake clock, stampede control, and the Redis backend against a server that stops answering."""

from __future__ import annotations

import asyncio
import time

import pytest

from proxy.cache.backends import ALL_TABLES, BackendDown, MemoryBackend
from proxy.cache.front import DOWN_AFTER, QueryCache
from proxy.cache.keys import cache_key
from proxy.cache.policy import OFF, ReadFacts, hint_ttl, plan
from proxy.cache.redis_backend import RedisBackend
from proxy.cache.settings import CacheRule, CacheSettings
from proxy.config import ConfigError, parse_config
from proxy.engines.postgres.cache_flow import storable
from proxy.engines.postgres.wire import messages as m

READ = ReadFacts(True, "select", ("items",))
RULES = CacheSettings(rules=(CacheRule("^SELECT .* FROM items", 30.0), CacheRule("^SELECT .* FROM v", 5.0, ("t",))))


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.mark.parametrize("sql, expected", [
    ("/* dbproxy:cache ttl=10s */ SELECT 1", 10.0),
    ("SELECT 1 /* dbproxy:cache ttl = 500ms */", 0.5),
    ("/* dbproxy:cache off */ SELECT 1", OFF),
    ("/* dbproxy:cache ttl=10 */ SELECT 1", None),   # no unit: ignored
    ("SELECT 1", None),
])
def test_hint_ttl(sql: str, expected: float | None) -> None:
    assert hint_ttl(sql) == expected


def test_plan_by_rule_hint_default_and_transaction() -> None:
    assert plan("SELECT a FROM items WHERE id = 1", READ, False, RULES).ttl == 30.0  # type: ignore[union-attr]
    assert plan("/* dbproxy:cache ttl=2s */ SELECT a FROM items", READ, False, RULES).ttl == 2.0  # type: ignore[union-attr]
    assert plan("/* dbproxy:cache off */ SELECT a FROM items", READ, False, RULES) is None
    assert plan("SELECT a FROM items", READ, True, RULES) is None
    assert plan("SELECT a FROM other", READ, False, RULES) is None
    assert plan("SELECT a FROM other", READ, False, CacheSettings(default_ttl=3.0)).ttl == 3.0  # type: ignore[union-attr]
    assert plan("SELECT now() FROM items", ReadFacts(False, "volatile function now"), False, RULES) is None
    # a view: only through a rule that names its tables
    assert plan("SELECT * FROM v", ReadFacts(False, "view"), False, RULES).tables == ("t",)  # type: ignore[union-attr]
    assert plan("/* dbproxy:cache ttl=2s */ SELECT * FROM w", ReadFacts(False, "view"), False, RULES) is None


def test_keys_differ_by_every_input() -> None:
    base = ("main", "app", "app", [("search_path", "public"), ("timezone", "UTC")], b"SELECT 1", b"")
    keys = {cache_key(*base)}  # type: ignore[arg-type]
    for i, other in enumerate([("x",), ("x",), ("x",), ([("search_path", "s1"), ("timezone", "UTC")],),
                               ([("search_path", "public"), ("timezone", "Japan")],), (b"SELECT 2",), (b"\x01",)]):
        args = list(base)
        args[[0, 1, 2, 3, 3, 4, 5][i]] = other[0]
        keys.add(cache_key(*args))  # type: ignore[arg-type]
    assert len(keys) == 8


async def test_memory_ttl_with_a_fake_clock() -> None:
    clock = Clock()
    backend = MemoryBackend(1 << 20, clock)
    found = await backend.lookup("k", ("t",), None)
    assert found.value is None
    await backend.store("k", b"rows", ("t",), None, found.versions, 10.0)
    assert (await backend.lookup("k", ("t",), None)).value == b"rows"
    clock.now += 9.9
    assert (await backend.lookup("k", ("t",), None)).value == b"rows"
    clock.now += 0.2
    assert (await backend.lookup("k", ("t",), None)).value is None
    assert backend.usage() == (0, 0)


async def test_memory_invalidation_by_table_and_a_store_after_a_write() -> None:
    backend = MemoryBackend(1 << 20, Clock())
    miss = await backend.lookup("k", ("t", "u"), None)
    await backend.invalidate(("u",))          # a write committed while the miss ran
    await backend.store("k", b"old", ("t", "u"), None, miss.versions, 10.0)
    assert (await backend.lookup("k", ("t", "u"), None)).value is None
    miss = await backend.lookup("k", ("t", "u"), None)
    await backend.store("k", b"new", ("t", "u"), None, miss.versions, 10.0)
    await backend.invalidate(("other",))
    assert (await backend.lookup("k", ("t", "u"), None)).value == b"new"
    await backend.invalidate((ALL_TABLES,))
    assert (await backend.lookup("k", ("t", "u"), None)).value is None


async def test_max_memory_is_respected_under_a_flood_of_distinct_queries() -> None:
    backend = MemoryBackend(64 * 1024, Clock())
    for i in range(5000):
        key = f"key-{i}"
        miss = await backend.lookup(key, ("t",), None)
        await backend.store(key, b"x" * (i % 700), ("t",), None, miss.versions, 60.0)
        assert backend.bytes <= 64 * 1024
    entries, size = backend.usage()
    assert 0 < entries < 5000 and size <= 64 * 1024 and backend.evictions > 0
    assert (await backend.lookup("key-4999", ("t",), None)).value is not None   # the newest stays
    assert (await backend.lookup("key-0", ("t",), None)).value is None          # the oldest went first


async def test_identical_misses_wait_for_the_one_that_runs() -> None:
    cache = QueryCache("main", CacheSettings(), MemoryBackend(1 << 20, Clock()))
    value, ticket = await cache.lookup("k", ("t",), 10.0)
    assert value is None and ticket is not None
    followers = [asyncio.create_task(cache.lookup("k", ("t",), 10.0)) for _ in range(5)]
    await asyncio.sleep(0.01)
    assert not any(f.done() for f in followers)
    cache.complete(ticket, b"rows")
    assert [await f for f in followers] == [(b"rows", None)] * 5
    assert cache.requests == {"hit": 5, "miss": 1, "bypass": 0}


async def test_a_write_releases_waiting_misses_without_the_old_rows() -> None:
    cache = QueryCache("main", CacheSettings(), MemoryBackend(1 << 20, Clock()))
    _, ticket = await cache.lookup("k", ("t",), 10.0)
    assert ticket is not None
    follower = asyncio.create_task(cache.lookup("k", ("t",), 10.0))
    await asyncio.sleep(0)
    await cache.invalidate(("t",))
    assert await follower == (None, None)
    cache.complete(ticket, b"old")
    assert (await cache.lookup("k", ("t",), 10.0))[0] is None


async def _silent_server() -> tuple[asyncio.Server, int]:
    """Accepts connections and never answers (a Redis that hangs)."""
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read(1 << 20)
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            writer.close()
    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    return server, server.sockets[0].getsockname()[1]


async def test_a_redis_that_stops_answering_is_bypassed_within_the_bound() -> None:
    server, port = await _silent_server()
    try:
        settings = CacheSettings(backend=f"redis://127.0.0.1:{port}/0", redis_timeout=0.02)
        cache = QueryCache("main", settings, RedisBackend(settings.backend, "main", 0.02))
        started = time.monotonic()
        assert await cache.lookup("k", ("t",), 10.0) == (None, None)
        await cache.invalidate(("t",))
        assert cache.up   # one slow answer: that call bypassed, the backend not down yet
        for _ in range(DOWN_AFTER - 1):
            await cache.invalidate(("t",))
        assert time.monotonic() - started < 0.5   # each call within its bound
        assert not cache.up and cache.requests["bypass"] == 1
        started = time.monotonic()
        for _ in range(100):   # bypassed at once until the retry
            assert await cache.lookup("k", ("t",), 10.0) == (None, None)
        assert time.monotonic() - started < 0.1
        await cache.close()
    finally:
        server.close()


def test_storable_responses() -> None:
    rows = m.message(b"T", b"\x00\x00") + m.message(b"D", b"\x00\x00") + m.message(b"C", b"SELECT 1\x00")
    assert storable(rows)
    assert not storable(rows + m.error_response("22012", "division by zero"))
    assert not storable(b"")


def test_config_cache_section() -> None:
    base = """
[[users]]
name = "app"
password = "secret"
[clusters.main]
engine = "postgres"
instances = ["127.0.0.1:5432"]
[[clusters.main.endpoints]]
name = "w"
listen = "127.0.0.1:16432"
role = "writer"
"""
    config = parse_config(base + """
[clusters.main.cache]
backend = "redis://127.0.0.1:6379/0"
max_memory = "16MB"
max_entry = "64KB"
default_ttl = "5s"
rules = [ { match = "^SELECT .* FROM products", ttl = "30s" } ]
""")
    cache = config.clusters[0].cache
    assert cache is not None and cache.max_memory == 16 << 20 and cache.max_entry == 64 << 10
    assert cache.default_ttl == 5.0 and cache.rules[0].ttl == 30.0
    assert parse_config(base).clusters[0].cache is None
    with pytest.raises(ConfigError) as err:
        parse_config(base + '[clusters.main.cache]\nbackend = "memcached"\nmax_memory = "lots"\n'
                     'rules = [ { match = "(", ttl = "1s" }, { ttl = "1s" } ]\nmaxentry = "1MB"\n')
    text = str(err.value)
    for part in ("cache.backend", "cache.max_memory", "cache.rules[0].match", "cache.rules[1].match", "maxentry"):
        assert part in text, text


# ------------------------------------------------------------------------------ extended batches


def test_extended_batches_answered_are_simple_complete_ones() -> None:
    from proxy.engines.postgres.cache_batch import extended_batch, storable_extended
    from proxy.engines.postgres.wire.messages import message

    parse = message(b"P", b"s1\x00SELECT v FROM t WHERE id = $1\x00\x00\x00")
    bind = message(b"B", b"\x00s1\x00\x00\x00\x00\x01\x00\x00\x00\x011\x00\x00")
    describe, execute, sync = message(b"D", b"P\x00"), message(b"E", b"\x00\x00\x00\x00\x00"), message(b"S")
    batch = extended_batch(parse + bind + describe + execute + sync)
    assert batch is not None and batch.parse is not None and batch.statement == b"s1" and batch.described
    other = extended_batch(bind.replace(b"\x011", b"\x012") + execute + sync)
    assert other is not None and other.parse is None and not other.described
    assert batch.key_parameters(b"") != other.key_parameters(b"")
    assert extended_batch(bind + execute) is None                          # no Sync: not complete
    assert extended_batch(bind + execute + execute + sync) is None         # two Executes
    assert extended_batch(bind + message(b"D", b"Pother\x00") + execute + sync) is None
    assert extended_batch(message(b"P", b"s2\x00SELECT 1\x00\x00\x00") + bind + execute + sync) is None
    complete, row, done = message(b"2"), message(b"D", b"\x00\x01\x00\x00\x00\x01a"), message(b"C", b"SELECT 1\x00")
    assert storable_extended(message(b"1") + complete + row + done) == complete + row + done
    assert storable_extended(complete + row + message(b"s")) == complete + row + message(b"s")
    assert storable_extended(complete + message(b"E", b"SERROR\x00\x00")) is None
    assert storable_extended(row + done) is None


class _FlakyBackend(MemoryBackend):
    """A memory backend behind the async interface whose invalidations fail `fails` times."""

    def __init__(self, fails: int) -> None:
        super().__init__(1 << 20, Clock())
        self.fails = fails
        self.sent: list[tuple[str, ...]] = []

    async def invalidate(self, tables, rows=()):  # type: ignore[no-untyped-def]
        if self.fails > 0:
            self.fails -= 1
            raise BackendDown("slow")
        self.sent.append(tuple(tables))
        self.invalidate_now(tables, rows)


async def test_a_lost_invalidation_is_sent_again_and_nothing_is_served_meanwhile(
        monkeypatch: pytest.MonkeyPatch) -> None:
    from proxy.cache import front

    monkeypatch.setattr(front, "RESEND_DELAYS", (0.01, 0.01, 0.01))
    backend = _FlakyBackend(fails=2)
    cache = QueryCache("main", CacheSettings(), backend)
    cache._memory = None   # take the async path, as with Redis
    _, ticket = await cache.lookup("k", ("t",), 10.0)
    assert ticket is not None
    cache.complete(ticket, b"old")
    await asyncio.sleep(0.01)
    assert (await cache.lookup("k", ("t",), 10.0))[0] == b"old"
    await cache.invalidate(("t",))                              # fails: sent again in the background
    assert await cache.lookup("k", ("t",), 10.0) == (None, None)   # bypassed while it is unsent
    await asyncio.sleep(0.1)
    assert backend.sent == [("t",)]                             # the second resend got through
    assert (await cache.lookup("k", ("t",), 10.0))[0] is None   # and the entry is gone
    never = _FlakyBackend(fails=100)
    cache = QueryCache("main", CacheSettings(), never)
    cache._memory = None
    await cache.invalidate(("t",))
    await asyncio.sleep(0.1)
    never.fails = 0
    assert await cache.lookup("k", ("t",), 10.0) == (None, cache._inflight["k"])   # a miss after the flush
    assert never.sent == [(ALL_TABLES,)]                       # the generation was bumped first
    await cache.close()
