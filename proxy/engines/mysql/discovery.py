"""MariaDB / MySQL replica discovery: the replicas registered with a primary (`SHOW SLAVE HOSTS`).

A replica is listed with the host and port it reports: set `report_host` (and `report_port` when
it is not the server's own port) on every replica; one without report_host has no usable address
and is skipped. MySQL 8 spells it `SHOW REPLICAS`. The health user needs REPLICATION MASTER ADMIN
(MariaDB >= 10.5.2) or REPLICATION SLAVE.
"""

from __future__ import annotations

from ...config import Address, FailoverSettings, HealthSettings
from ...config.model import DiscoverySettings
from . import sql
from .failover import STATEMENT_TIMEOUT, MysqlFailoverActions
from .server import MysqlServerConnection


def replica_address(row: dict[str, str | None]) -> Address | None:
    """The address of one SHOW SLAVE HOSTS / SHOW REPLICAS row (None without a reported host)."""
    host = row.get("Host") or ""
    port = row.get("Port") or ""
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        return None
    try:
        return Address.parse(f"[{host}]:{port}" if ":" in host else f"{host}:{port}")
    except ValueError:
        return None


class MysqlReplicaLister:
    """The MySQL adapter of discovery.ReplicaLister."""

    def __init__(self, actions: MysqlFailoverActions) -> None:
        self.actions = actions

    @classmethod
    def from_settings(cls, health: HealthSettings, discovery: DiscoverySettings) -> MysqlReplicaLister:
        return cls(MysqlFailoverActions.from_settings(health, FailoverSettings()))

    async def list_replicas(self, primary: Address, timeout: float) -> list[Address]:
        async def run(conn: MysqlServerConnection) -> list[Address]:
            rows = await sql.query(conn, "SHOW REPLICAS" if sql.is_mysql(conn) else "SHOW SLAVE HOSTS",
                                   min(timeout, STATEMENT_TIMEOUT))
            found = (replica_address(row) for row in rows)
            return list(dict.fromkeys(a for a in found if a is not None and a != primary))

        return await self.actions.run(primary, run, timeout)
