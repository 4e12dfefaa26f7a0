"""The MySQL / MariaDB `Engine` adapter: what the core asks of MySQL, in one place.

Topology probes (probe.py) and failover actions (failover.py) plug into the engine-neutral
topology package, as PostgreSQL's do.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

from ...config import Address, FailoverSettings, HealthSettings, PoolSettings, TlsSettings
from ...config.model import DiscoverySettings
from ...errors import ProxyError
from .auth import MysqlVerifiers, derive_verifiers
from .classify import MysqlClassifier
from .server import MysqlServerConnection, Variant, open_server_connection, run_query
from .wire.codes import UTF8MB4_GENERAL_CI, Capability, ErrorCode

if TYPE_CHECKING:
    from ...topology import FailoverActions, Probe, ProbeFactory
    from ...topology.discovery import ReplicaLister

log = logging.getLogger("dbproxy")
_NO_TLS = TlsSettings()
_DEFAULT_VARIANT = Variant(int(Capability.MULTI_RESULTS | Capability.PS_MULTI_RESULTS | Capability.TRANSACTIONS
                               | Capability.LONG_PASSWORD), UTF8MB4_GENERAL_CI)


@dataclass
class MysqlClusterState:
    """What the MySQL sessions of one cluster share."""

    # (server user, database) pairs a server connection has accepted: later logins skip the check.
    known_databases: set[tuple[str, str]] = field(default_factory=set)
    # The version clients are greeted with: the servers' own once one was seen (clients choose their
    # collation and SQL by it). MariaDB's "5.5.5-" prefix tells MySQL clients it is not a MySQL 5.5.
    server_version: str = "5.5.5-10.11.0-MariaDB-dbproxy"
    # The query cache's facts and catalog (made for clusters with a cache, by the first session).
    cache_parts: tuple[Any, Any] | None = None

    def cache_session(self, cluster: Any) -> Any:
        """A client's part of the query cache (mysql.cache_flow), its shared pieces made once."""
        from ...cache.catalog import CatalogReader
        from .cache_catalog import catalog_reader
        from .cache_facts import MysqlCacheFacts
        from .cache_flow import MysqlSessionCache

        if self.cache_parts is None:
            self.cache_parts = (MysqlCacheFacts(cluster.classifier), catalog_reader(cluster))
        facts, catalog = self.cache_parts
        assert isinstance(catalog, CatalogReader)
        return MysqlSessionCache(cluster.cache, facts, catalog)

    def close(self) -> None:
        if self.cache_parts is not None:
            self.cache_parts[1].close()


class MysqlEngine:
    """See proxy.engines.base.Engine."""

    name: ClassVar[str] = "mysql"
    default_port: ClassVar[int] = 3306

    def derive_secret(self, password: str) -> MysqlVerifiers:
        return derive_verifiers(password)

    def client_session(self, app: Any, cluster: Any, endpoint: Any) -> asyncio.Protocol:
        from .session import MysqlClientSession

        return MysqlClientSession(app, cluster, endpoint)

    async def connect(self, address: Address, user: str, password: str | None, database: str,
                      settings: PoolSettings, variant: Any = None, tls: TlsSettings | None = None,
                      ) -> MysqlServerConnection:
        return await open_server_connection(address, user, password, database, variant or _DEFAULT_VARIANT,
                                            settings.connect_timeout, settings.init_query,
                                            settings.max_prepared_statements, tls or _NO_TLS)

    def classifier(self, read_only_functions: Sequence[str]) -> MysqlClassifier:
        return MysqlClassifier(read_only_functions)

    def probe_factory(self) -> ProbeFactory | None:
        return _mysql_probe

    def failover_actions(self, health: HealthSettings, failover: FailoverSettings) -> FailoverActions | None:
        from .failover import MysqlFailoverActions

        return MysqlFailoverActions.from_settings(health, failover)

    def replica_lister(self, health: HealthSettings, discovery: DiscoverySettings) -> ReplicaLister:
        from .discovery import MysqlReplicaLister

        return MysqlReplicaLister.from_settings(health, discovery)

    def default_pool(self, user: str) -> tuple[str, Any] | None:
        # Not knowable ahead: a MySQL pool is keyed by the client's login variant (capabilities,
        # character set), and a client naming no database gets none, not one named like its user.
        return None

    def cluster_state(self) -> MysqlClusterState:
        return MysqlClusterState()

    async def cancel(self, server: MysqlServerConnection) -> None:
        """KILL QUERY <server thread> from a second connection of the same server user (and server_tls)."""
        try:
            conn = await open_server_connection(server.address, server.user, server.password, "",
                                                _DEFAULT_VARIANT, 5.0, tls=server.tls)
        except ProxyError as exc:
            log.warning("could not forward KILL QUERY to %s: %s", server.address, exc.message)
            return
        try:
            # ER_NO_SUCH_THREAD: the statement ended (and the connection with it) meanwhile.
            await run_query(conn, f"KILL QUERY {int(server.pid)}", 5.0, expected=(ErrorCode.NO_SUCH_THREAD,))
        except ProxyError as exc:
            log.warning("KILL QUERY %d on %s failed: %s", server.pid, server.address, exc.message)
        finally:
            conn.close()


def _mysql_probe(address: Address, health: HealthSettings) -> Probe:
    from .probe import MysqlProbe

    return MysqlProbe(address, health.user or "root", health.password, health.tls)


ENGINE = MysqlEngine()
