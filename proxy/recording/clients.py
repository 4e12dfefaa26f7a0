"""The database clients that dbproxy replay and the traffic mirror drive: asyncpg for PostgreSQL, aiomysql for MySQL.

Both come with the `replay` extra (pip install 'dbproxy[replay]'); they are imported when first used.
`run` executes a statement text as a client sent it (PostgreSQL: the simple query protocol);
`fetch` returns its rows (for the mirror's comparisons).
"""

from __future__ import annotations

from typing import Any, Protocol

from ..config import Address


class Client(Protocol):
    async def run(self, sql: str) -> None: ...

    async def fetch(self, sql: str) -> list[tuple[Any, ...]]: ...

    async def close(self) -> None: ...


class _PgClient:
    def __init__(self, conn: Any) -> None:
        self.conn = conn

    async def run(self, sql: str) -> None:
        await self.conn.execute(sql)   # no arguments: the simple query protocol, as recorded

    async def fetch(self, sql: str) -> list[tuple[Any, ...]]:
        return [tuple(row) for row in await self.conn.fetch(sql)]

    async def close(self) -> None:
        await self.conn.close()


class _MysqlClient:
    def __init__(self, conn: Any) -> None:
        self.conn = conn

    async def run(self, sql: str) -> None:
        await self.fetch(sql)

    async def fetch(self, sql: str) -> list[tuple[Any, ...]]:
        async with self.conn.cursor() as cursor:
            await cursor.execute(sql)
            return list(await cursor.fetchall())

    async def close(self) -> None:
        self.conn.close()


async def connect(engine: str, target: Address, user: str, password: str | None, database: str,
                  timeout: float = 10.0) -> Client:
    if engine == "mysql":
        import aiomysql

        return _MysqlClient(await aiomysql.connect(host=target.host, port=target.port, user=user,
                                                   password=password or "", db=database or None, autocommit=True,
                                                   connect_timeout=timeout))
    import asyncpg

    return _PgClient(await asyncpg.connect(host=target.host, port=target.port, user=user, password=password,
                                           database=database, ssl=False, timeout=timeout))
