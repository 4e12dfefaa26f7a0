"""The Redis backend: entries and version counters (scopes.py) shared by every dbproxy using one Redis.

A lookup is one command, one round trip: MGET of the entry and of the counters the statement depends
on (the cluster's generation, each table read, and a point read's column and row counters). An entry
holds the versions it was stored under; it is served only while they are still current, so an
invalidation is one MULTI/EXEC of INCRBYs (and of SETs of fresh row values, which expire after
ROW_TTL) and never a scan; MULTI makes a row write's table and column counters move together for
every reader. Every call is bounded by `timeout`; past it, or on any error, BackendDown (the caller
bypasses the cache).

Connections (TCP, TLS, AUTH) are made ahead, not within a call's bound: a pool of POOL_SIZE
connections is opened by a warm-up (CONNECT_TIMEOUT each, WARM_TIMEOUT in all) before the first call and again after a
failure; until it is done calls raise BackendConnecting. More concurrent calls than POOL_SIZE wait
for a free connection (within their bound) rather than open another.
"""

from __future__ import annotations

import asyncio
import secrets
import struct
from collections.abc import Sequence
from typing import Any

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from ..config.urls import shown_url
from .backends import BackendConnecting, BackendDown, Found
from .scopes import GENERATION, ROW_TTL, Point, RowWrite, Versions, increments, read_counters, versions

POOL_SIZE = 8
WARM_TIMEOUT = 10.0   # the warm-up of the whole pool (a TLS connection costs ~50-100 ms of CPU here)
CONNECT_TIMEOUT = 3.0
_COUNT = struct.Struct("!H")
_VERSION = struct.Struct("!q")


def encode_entry(versions: Versions, value: bytes) -> bytes:
    return _COUNT.pack(len(versions)) + b"".join(_VERSION.pack(v) for v in versions) + value


def decode_entry(raw: bytes) -> tuple[Versions, bytes]:
    (count,) = _COUNT.unpack_from(raw, 0)
    end = 2 + 8 * count
    versions = tuple(_VERSION.unpack_from(raw, 2 + 8 * i)[0] for i in range(count))
    return versions, raw[end:]


class RedisBackend:
    """Entries under `dbproxy:<cluster>:e:<key>`, counters under `dbproxy:<cluster>:v:<counter>`."""

    def __init__(self, url: str, cluster: str, timeout: float, *, username: str | None = None,
                 password: str | None = None, ca_file: str | None = None) -> None:
        self.url = shown_url(url)   # for messages (last_error, logs): no userinfo, no query
        self.timeout = timeout
        options: dict[str, Any] = {"username": username, "password": password}
        if url.startswith("rediss://") and ca_file is not None:
            options["ssl_ca_certs"] = ca_file
        pool = aioredis.BlockingConnectionPool.from_url(
            url, max_connections=POOL_SIZE, timeout=None, socket_timeout=CONNECT_TIMEOUT,
            socket_connect_timeout=CONNECT_TIMEOUT, retry_on_timeout=False, health_check_interval=0, **options)
        self.client: Any = aioredis.Redis(connection_pool=pool)
        self._ready = False
        self._warming: asyncio.Task[None] | None = None
        self._warm_failed = ""   # why the last warm-up failed ("": none did)
        prefix = f"dbproxy:{cluster}:"
        self._entry_prefix = prefix + "e:"
        self._version_prefix = prefix + "v:"
        self._generation = self._version_prefix + GENERATION
        self.stored = 0   # entries this process stored (Redis holds those of every dbproxy)
        self.stored_bytes = 0

    def warm(self) -> None:
        """Open the pool's connections in the background (once at a time)."""
        if self._warming is None and not self._ready:
            self._warming = asyncio.get_running_loop().create_task(self._warm())

    async def connect(self) -> bool:
        """Warm the pool now and wait for it; True if it is ready (else see the BackendDown of a call)."""
        self.warm()
        if self._warming is not None:
            await asyncio.shield(self._warming)
        return self._ready

    async def _warm(self) -> None:
        try:
            await asyncio.wait_for(asyncio.gather(*(self.client.ping() for _ in range(POOL_SIZE))),
                                   WARM_TIMEOUT)
            self._ready = True
            self._warm_failed = ""
        except (TimeoutError, RedisError, OSError, ConnectionError) as exc:
            self._warm_failed = f"{type(exc).__name__}: {exc}".rstrip(": ")
        finally:
            self._warming = None

    async def _bounded(self, work: Any, *, waiting: bool = False) -> Any:
        """`work` within the bound; `waiting` (invalidations): tried even while the pool is being made."""
        if not self._ready and not waiting:
            work.close()
            self.warm()
            if self._warm_failed:
                raise BackendDown(f"redis {self.url}: cannot connect: {self._warm_failed}")
            raise BackendConnecting(f"redis {self.url}: connecting")
        try:
            async with asyncio.timeout(self.timeout):   # (no task of its own, unlike wait_for)
                return await work
        except (TimeoutError, RedisError, OSError, ConnectionError) as exc:
            self._ready = False   # connections may be gone: made again ahead of the next calls
            raise BackendDown(f"redis {self.url}: {type(exc).__name__}: {exc}".rstrip(": ")) from exc

    async def lookup(self, key: str, tables: Sequence[str], point: Point | None) -> Found:
        prefix = self._version_prefix
        names = [self._entry_prefix + key, *(prefix + n for n in read_counters(tables, point))]
        raw, *counters = await self._bounded(self.client.mget(names))
        current = versions(tables, point, [int(v) if v is not None else 0 for v in counters])
        if raw is None:
            return Found(None, current)
        try:
            stored_versions, value = decode_entry(raw)
        except struct.error:
            return Found(None, current)
        return Found(value if stored_versions == current else None, current)

    async def store(self, key: str, value: bytes, tables: Sequence[str], point: Point | None, versions: Versions,
                    ttl: float) -> None:
        await self._bounded(self.client.set(self._entry_prefix + key, encode_entry(versions, value),
                                            px=max(1, int(min(ttl, ROW_TTL) * 1000))))
        self.stored += 1
        self.stored_bytes += len(value)

    async def invalidate(self, tables: Sequence[str], rows: Sequence[RowWrite] = ()) -> None:
        change = increments(tables, rows)
        prefix = self._version_prefix
        pipe = self.client.pipeline(transaction=bool(rows))
        for name, n in change.add.items():
            pipe.incrby(prefix + name, n)
        expiry = int(ROW_TTL * 1000)
        for name in change.rows:
            pipe.set(prefix + name, secrets.randbits(62) + 1, px=expiry)
        await self._bounded(pipe.execute(), waiting=True)

    async def flush(self) -> None:
        await self._bounded(self.client.incr(self._generation), waiting=True)

    def usage(self) -> tuple[int, int]:
        return self.stored, self.stored_bytes

    async def close(self) -> None:
        if self._warming is not None:
            self._warming.cancel()
        try:
            await asyncio.wait_for(self.client.aclose(), 1.0)
        except (TimeoutError, RedisError, OSError):
            pass
