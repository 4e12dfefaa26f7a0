"""The database clients that dbproxy replay and the traffic mirror drive: pg_client.py for PostgreSQL, aiomysql for MySQL.

aiomysql comes with the `replay` extra (pip install 'dbproxy[replay]'); it is imported when first used.
`run` executes a statement text as a client sent it (PostgreSQL: the simple query protocol);
`execute` a prepared execution (PostgreSQL: recorded or mirrored) and returns its rows; `fetch` returns
rows (both for the mirror's comparisons).
"""

from __future__ import annotations

from typing import Any, Protocol

from ..config import Address
from .pg_client import connect_pg


class Client(Protocol):
    async def run(self, sql: str) -> None: ...

    async def execute(self, query: bytes, types: tuple[int, ...], formats: tuple[int, ...],
                      values: tuple[bytes | None, ...], result_formats: tuple[int, ...]) -> list[tuple[Any, ...]]: ...

    async def fetch(self, sql: str) -> list[tuple[Any, ...]]: ...

    async def close(self) -> None: ...


class _MysqlClient:
    def __init__(self, conn: Any) -> None:
        self.conn = conn

    async def run(self, sql: str) -> None:
        await self.fetch(sql)

    async def execute(self, query: bytes, types: tuple[int, ...], formats: tuple[int, ...],
                      values: tuple[bytes | None, ...], result_formats: tuple[int, ...]) -> list[tuple[Any, ...]]:
        raise NotImplementedError("MySQL prepared executions run as texts with their values inlined")

    async def fetch(self, sql: str) -> list[tuple[Any, ...]]:
        async with self.conn.cursor() as cursor:
            await cursor.execute(sql)
            return list(await cursor.fetchall())

    async def close(self) -> None:
        self.conn.close()


async def connect(engine: str, target: Address, user: str, password: str | None, database: str,
                  timeout: float = 10.0, prepared_limit: int | None = None) -> Client:
    if engine == "mysql":
        import aiomysql

        return _MysqlClient(await aiomysql.connect(host=target.host, port=target.port, user=user,
                                                   password=password or "", db=database or None, autocommit=True,
                                                   connect_timeout=timeout))
    return await connect_pg(target.host, target.port, user, password, database, timeout, prepared_limit)
