"""Runtime state of one configured cluster: its pools, its clients, and where endpoints send work."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

from .config import Address, ClusterConfig, EndpointConfig, User
from .errors import ServerUnavailable
from .pool.pool import Pool
from .protocol.postgres.statements import StatementNames
from .routing.classify import Classifier
from .transport.pg_server import ServerConnection, open_server_connection

log = logging.getLogger("dbproxy.cluster")

PoolKey = tuple[Address, str, str]   # (instance, server user, database)


class Cluster:
    """Pools per (instance, user, database), endpoint targets, pause/resume, client accounting."""

    def __init__(self, config: ClusterConfig) -> None:
        self.config = config
        self.name = config.name
        self.pools: dict[PoolKey, Pool[ServerConnection]] = {}
        self.statement_names = StatementNames()
        self.classifier = Classifier(config.read_only_functions)
        self.welcome: dict[tuple[str, str], dict[str, str]] = {}
        self.clients = 0
        self._resumed = asyncio.Event()
        self._resumed.set()
        # Where each endpoint role may send work; replaced by the topology layer when present.
        self.choose_target: Callable[[EndpointConfig, str], Address | None] = self._first_instance

    # ---- targets ----------------------------------------------------------------------------

    def _first_instance(self, endpoint: EndpointConfig, route: str) -> Address | None:
        if endpoint.role == "custom" and endpoint.instances:
            return endpoint.instances[0]
        return self.config.instances[0] if self.config.instances else None

    # ---- pools ------------------------------------------------------------------------------

    def pool(self, instance: Address, user: User, database: str) -> Pool[ServerConnection]:
        key = (instance, user.server_user, database)
        pool = self.pools.get(key)
        if pool is None:
            settings = self.config.pool

            async def connect() -> ServerConnection:
                return await open_server_connection(
                    instance, user.server_user, user.server_password, database,
                    settings.connect_timeout, settings.init_query)

            pool = Pool(f"{self.name}/{instance}/{user.server_user}/{database}", connect,
                        settings.max_server_connections, settings.min_idle, settings.idle_timeout,
                        settings.max_lifetime)
            self.pools[key] = pool
        return pool

    def take_idle(self, endpoint: EndpointConfig, route: str, user: User,
                  database: str) -> ServerConnection | None:
        """A ready server connection without waiting, if one is idle right now (the fast path)."""
        if not self._resumed.is_set():
            return None
        target = self.choose_target(endpoint, route)
        if target is None:
            return None
        pool = self.pool(target, user, database)
        conn = pool._take_idle()
        if conn is not None:
            pool.in_use.add(conn)
            pool.borrows += 1
        return conn

    async def borrow(self, endpoint: EndpointConfig, route: str, user: User,
                     database: str) -> tuple[ServerConnection, Pool[ServerConnection]]:
        """A server connection for the endpoint; waits (bounded) for a target, for resume, for a slot."""
        deadline = time.monotonic() + self.config.failover.borrow_timeout
        while True:
            if not self._resumed.is_set():
                await self._wait_until(self._resumed.wait(), deadline, "is paused")
            target = self.choose_target(endpoint, route)
            if target is not None:
                break
            if time.monotonic() >= deadline:
                raise ServerUnavailable(
                    f"cluster {self.name!r} has no available {_role_word(endpoint)} "
                    f"(waited {self.config.failover.borrow_timeout:g}s)")
            await asyncio.sleep(0.05)
        pool = self.pool(target, user, database)
        remaining = max(0.001, deadline - time.monotonic())
        conn = await pool.borrow(remaining)
        return conn, pool

    async def _wait_until(self, aw: object, deadline: float, what: str) -> None:
        try:
            await asyncio.wait_for(aw, max(0.0, deadline - time.monotonic()))  # type: ignore[arg-type]
        except TimeoutError as exc:
            raise ServerUnavailable(f"cluster {self.name!r} {what}") from exc

    def pool_of(self, conn: ServerConnection) -> Pool[ServerConnection] | None:
        return self.pools.get((conn.address, conn.user, conn.database))

    # ---- admin ------------------------------------------------------------------------------

    def pause(self) -> None:
        self._resumed.clear()

    def resume(self) -> None:
        self._resumed.set()

    @property
    def paused(self) -> bool:
        return not self._resumed.is_set()

    def maintain(self) -> None:
        for pool in self.pools.values():
            pool.maintain()

    def close(self) -> None:
        for pool in self.pools.values():
            pool.close()


def _role_word(endpoint: EndpointConfig) -> str:
    return {"writer": "writer (primary)", "reader": "reader", "split": "instance",
            "custom": "instance"}.get(endpoint.role, "instance")
