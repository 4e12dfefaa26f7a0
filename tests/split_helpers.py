"""Helpers of the split-endpoint tests (test_split_endpoint.py, test_split_read_your_writes.py): the proxy's
config and start, waiting for replicas, per-test databases, and a small simple-query protocol client."""

from __future__ import annotations

import asyncio
import struct
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from conftest import ProxyProcess
from e2e_helpers import EndpointSpec, routing_config, wait_until

from deploy.pgcluster import HOST, PgCluster
from proxy.engines.postgres.wire.messages import parse_data_row

INTERVAL_MS = 100
PORT_SQL = "SELECT inet_server_port()"


# ------------------------------------------------------------------------------ configuration


def split_endpoint(name: str, read_your_writes: bool | None = None) -> EndpointSpec:
    extra = "" if read_your_writes is None else f"read_your_writes = {'true' if read_your_writes else 'false'}\n"
    return EndpointSpec(name, "split", extra=extra)


def config_text(pg: PgCluster, endpoints: Iterable[EndpointSpec], *, max_lag: str = "10s",
                read_only_functions: Iterable[str] = (), log_level: str = "info") -> str:
    return routing_config(pg.instance_addrs(), endpoints, interval_ms=INTERVAL_MS, pool_size=8, max_lag=max_lag,
                          read_only_functions=read_only_functions, log_level=log_level)


def wait_instances_up(proxy: ProxyProcess, pg: PgCluster, timeout: float = 20.0) -> None:
    """Every instance probed healthy: before that, reads on a split endpoint fall back to the primary."""
    for address in pg.instance_addrs():
        wait_until(lambda a=address: f"instance {a} unknown -> up" in proxy.log_text(),  # type: ignore[misc]
                   timeout=timeout, interval=0.02, what=f"instance {address} up in the proxy log")


def start_proxy(factory: Callable[..., ProxyProcess], pg: PgCluster, endpoints: list[EndpointSpec],
                **config: object) -> ProxyProcess:
    proxy = factory(config_text(pg, endpoints, **config))  # type: ignore[arg-type]
    wait_instances_up(proxy, pg)
    return proxy


# ------------------------------------------------------------------------------ servers


def wait_replayed(pg: PgCluster, replicas: Iterable[int] = (1, 2), timeout: float = 20.0) -> None:
    """Wait until the replicas have replayed everything the primary has written so far."""
    target = pg.sql(0, "SELECT pg_current_wal_insert_lsn()")
    for i in replicas:
        wait_until(lambda i=i: pg.sql(i, f"SELECT pg_last_wal_replay_lsn() >= '{target}'") == "t",  # type: ignore[misc]
                   timeout=timeout, interval=0.05, what=f"node{i} replayed {target}")


def create_database(pg: PgCluster, name: str, setup_sql: str = "") -> None:
    """A fresh database owned by app (on every instance once replayed), with setup_sql run as app."""
    pg.sql(0, f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
    pg.sql(0, f"CREATE DATABASE {name} OWNER app")
    if setup_sql:
        pg.sql(0, setup_sql, user="app", db=name)
    wait_replayed(pg)


def drop_database(pg: PgCluster, name: str) -> None:
    pg.sql(0, f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


def where(port: int, pg: PgCluster) -> str:
    """"primary" or "replica" for a server port (the shared cluster keeps instance 0 the primary)."""
    if port == pg.ports[0]:
        return "primary"
    if port in pg.ports[1:]:
        return "replica"
    return f"unknown port {port}"


# ------------------------------------------------------------------------------ a simple-query client


def _message(kind: bytes, body: bytes) -> bytes:
    return kind + struct.pack("!I", len(body) + 4) + body


@dataclass
class Reply:
    """What the server (through the proxy) answered to one Query message."""

    rows: list[list[str | None]] = field(default_factory=list)
    copy_data: list[bytes] = field(default_factory=list)
    error: dict[str, str] | None = None
    status: str = ""

    @property
    def value(self) -> str | None:
        """First column of the last row (of the last statement of a multi-statement query)."""
        return self.rows[-1][0] if self.rows else None


class SimpleClient:
    """A PostgreSQL client speaking only the simple-query protocol (trust authentication)."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer

    @classmethod
    async def connect(cls, port: int, database: str, user: str = "app") -> SimpleClient:
        reader, writer = await asyncio.open_connection(HOST, port)
        body = struct.pack("!I", 196608) + b"".join(
            k.encode() + b"\0" + v.encode() + b"\0" for k, v in (("user", user), ("database", database))) + b"\0"
        writer.write(struct.pack("!I", len(body) + 4) + body)
        client = cls(reader, writer)
        reply = await client._reply()
        assert reply.error is None, f"login failed: {reply.error}"
        return client

    async def _next(self) -> tuple[bytes, bytes]:
        header = await asyncio.wait_for(self.reader.readexactly(5), 20)
        (length,) = struct.unpack_from("!I", header, 1)
        return header[:1], await asyncio.wait_for(self.reader.readexactly(length - 4), 20)

    async def _reply(self) -> Reply:
        reply = Reply()
        while True:
            kind, body = await self._next()
            if kind == b"D":
                reply.rows.append(parse_data_row(body))
            elif kind == b"d":
                reply.copy_data.append(body)
            elif kind == b"E" and reply.error is None:
                reply.error = {chr(p[0]): p[1:].decode(errors="replace") for p in body.split(b"\0") if p}
            elif kind == b"Z":
                reply.status = body.decode()
                return reply

    async def query(self, sql: str) -> Reply:
        self.writer.write(_message(b"Q", sql.encode() + b"\0"))
        return await self._reply()

    async def pipeline(self, *sqls: str) -> list[Reply]:
        """Send several Query messages at once, then read their replies."""
        self.writer.write(b"".join(_message(b"Q", sql.encode() + b"\0") for sql in sqls))
        return [await self._reply() for _ in sqls]

    async def close(self) -> None:
        self.writer.write(_message(b"X", b""))
        self.writer.close()
        try:
            await self.writer.wait_closed()
        except OSError:
            pass
