"""PostgreSQL replica discovery: the physical replicas streaming from a primary (pg_stat_replication).

pg_stat_replication does not say on which port a replica accepts connections, so its address is
taken, in this order, from
1. its application_name, when that is an address "host:port" (set in the replica's
   primary_conninfo, e.g. `application_name='10.0.1.7:5432'`) whose host is the address the replica
   connected from (client_addr): that address. A walsender naming another host is ignored: any role
   with REPLICATION may set application_name, and must not be able to point reads elsewhere;
2. otherwise its client_addr and the configured `discovery.port` (all replicas listen on one
   port), when that is set; a replica connected over a Unix socket has no client_addr and is skipped.
Logical replication walsenders (connected to a database) and base backups are never replicas.
The health user needs pg_monitor (or superuser) to see other sessions' client_addr.
"""

from __future__ import annotations

from ...config import Address, HealthSettings
from ...config.model import DiscoverySettings
from .failover import PgFailoverActions
from .sql import PgSqlConnection

REPLICAS_SQL = """\
SELECT r.application_name, host(r.client_addr)
FROM pg_stat_replication r JOIN pg_stat_activity a ON a.pid = r.pid
WHERE a.datname IS NULL AND r.state IS DISTINCT FROM 'backup'"""


def replica_address(application_name: str | None, client_addr: str | None, port: int) -> Address | None:
    """Where a replica seen in pg_stat_replication accepts connections (see the module docstring)."""
    if application_name:
        try:
            named = Address.parse(application_name)
        except ValueError:
            pass
        else:
            return named if client_addr is not None and named.host == client_addr else None
    if port and client_addr:
        return Address(client_addr, port)
    return None


class PgReplicaLister:
    """The PostgreSQL adapter of discovery.ReplicaLister."""

    def __init__(self, actions: PgFailoverActions, port: int) -> None:
        self.actions = actions
        self.port = port

    @classmethod
    def from_settings(cls, health: HealthSettings, discovery: DiscoverySettings) -> PgReplicaLister:
        return cls(PgFailoverActions.from_health(health), discovery.port)

    async def list_replicas(self, primary: Address, timeout: float) -> list[Address]:
        async def run(conn: PgSqlConnection) -> list[Address]:
            rows = await conn.query(REPLICAS_SQL)
            found = (replica_address(row[0], row[1], self.port) for row in rows)
            return list(dict.fromkeys(a for a in found if a is not None and a != primary))

        return await self.actions.run(primary, run, timeout)
