"""The Redis backend: entries and version counters (scopes.py) shared by every dbproxy using one Redis.

A lookup is one command, one round trip: MGET of the entry and of the counters the statement depends
on (the cluster's generation, each table read, and a point read's column and row counters). An entry
holds the versions it was stored under; it is served only while they are still current, so an
invalidation is one MULTI/EXEC of INCRBYs (and of SETs of fresh row values, which expire after
ROW_TTL) and never a scan; MULTI makes a row write's table and column counters move together for
every reader. Every call is bounded by `timeout`; past it, or on any error, BackendDown (the caller
bypasses the cache).
"""

from __future__ import annotations

import asyncio
import secrets
import struct
from collections.abc import Sequence
from typing import Any

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from .backends import BackendDown, Found
from .scopes import GENERATION, ROW_TTL, Point, RowWrite, Versions, increments, read_counters, versions

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
        self.url = url   # never holds a password (the config refuses one in it)
        self.timeout = timeout
        options: dict[str, Any] = {"username": username, "password": password}
        if url.startswith("rediss://") and ca_file is not None:
            options["ssl_ca_certs"] = ca_file
        self.client: Any = aioredis.from_url(url, socket_timeout=timeout, socket_connect_timeout=timeout,
                                             retry_on_timeout=False, health_check_interval=0, **options)
        prefix = f"dbproxy:{cluster}:"
        self._entry_prefix = prefix + "e:"
        self._version_prefix = prefix + "v:"
        self._generation = self._version_prefix + GENERATION
        self.stored = 0   # entries this process stored (Redis holds those of every dbproxy)
        self.stored_bytes = 0

    async def _bounded(self, work: Any) -> Any:
        try:
            return await asyncio.wait_for(work, self.timeout)
        except (TimeoutError, RedisError, OSError, ConnectionError) as exc:
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
