"""The Redis backend: entries and per-table version counters shared by every dbproxy using one Redis.

A lookup is one pipelined round trip: GET of the entry and MGET of the cluster's generation and of
the version counter of each table the statement reads. An entry holds the versions it was stored
under; it is served only while they are still current, so an invalidation is one INCR per table
written (one round trip) and never a scan. Every call is bounded by `timeout`; past it, or on any
error, BackendDown (the caller bypasses the cache).
"""

from __future__ import annotations

import asyncio
import struct
from collections.abc import Sequence
from typing import Any

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from .backends import ALL_TABLES, BackendDown, Found, Versions

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
    """Entries under `dbproxy:<cluster>:e:<key>`, versions under `dbproxy:<cluster>:v:<table>`."""

    def __init__(self, url: str, cluster: str, timeout: float) -> None:
        self.url = url
        self.timeout = timeout
        self.client: Any = aioredis.from_url(url, socket_timeout=timeout, socket_connect_timeout=timeout,
                                             retry_on_timeout=False, health_check_interval=0)
        prefix = f"dbproxy:{cluster}:"
        self._entry_prefix = prefix + "e:"
        self._version_prefix = prefix + "v:"
        self._generation = prefix + "gen"
        self.stored = 0   # entries this process stored (Redis holds those of every dbproxy)
        self.stored_bytes = 0

    async def _bounded(self, work: Any) -> Any:
        try:
            return await asyncio.wait_for(work, self.timeout)
        except (TimeoutError, RedisError, OSError, ConnectionError) as exc:
            raise BackendDown(f"redis {self.url}: {type(exc).__name__}: {exc}".rstrip(": ")) from exc

    def _version_keys(self, tables: Sequence[str]) -> list[str]:
        return [self._generation, *(self._version_prefix + t for t in tables)]

    async def lookup(self, key: str, tables: Sequence[str]) -> Found:
        pipe = self.client.pipeline(transaction=False)
        pipe.get(self._entry_prefix + key)
        pipe.mget(self._version_keys(tables))
        raw, counters = await self._bounded(pipe.execute())
        versions = tuple(int(v) if v is not None else 0 for v in counters)
        if raw is None:
            return Found(None, versions)
        try:
            stored_versions, value = decode_entry(raw)
        except struct.error:
            return Found(None, versions)
        return Found(value if stored_versions == versions else None, versions)

    async def store(self, key: str, value: bytes, tables: Sequence[str], versions: Versions, ttl: float) -> None:
        await self._bounded(self.client.set(self._entry_prefix + key, encode_entry(versions, value),
                                            px=max(1, int(ttl * 1000))))
        self.stored += 1
        self.stored_bytes += len(value)

    async def invalidate(self, tables: Sequence[str]) -> None:
        pipe = self.client.pipeline(transaction=False)
        for table in tables:
            pipe.incr(self._generation if table == ALL_TABLES else self._version_prefix + table)
        await self._bounded(pipe.execute())

    async def flush(self) -> None:
        await self._bounded(self.client.incr(self._generation))

    def usage(self) -> tuple[int, int]:
        return self.stored, self.stored_bytes

    async def close(self) -> None:
        try:
            await asyncio.wait_for(self.client.aclose(), 1.0)
        except (TimeoutError, RedisError, OSError):
            pass
