"""The PostgreSQL `Engine` adapter: what the core asks of PostgreSQL, in one place."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

from ...config import Address, FailoverSettings, HealthSettings, PoolSettings, TlsSettings
from ...config.model import DiscoverySettings
from .cache_catalog import catalog_reader
from .cache_tables import CacheFacts
from .classify import PgClassifier
from .listener import ListenerHub
from .positions import PositionReader
from .server import ServerConnection, open_server_connection
from .statements import StatementNames
from .wire import messages as m
from .wire.auth import ScramVerifier

if TYPE_CHECKING:
    from ...topology import FailoverActions, Probe, ProbeFactory
    from ...topology.discovery import ReplicaLister

log = logging.getLogger("dbproxy")
_NO_TLS = TlsSettings()


@dataclass
class PgClusterState:
    """What the PostgreSQL sessions of one cluster share."""

    statement_names: StatementNames = field(default_factory=StatementNames)
    # Server parameters per (server user, database), learnt from the first server connection.
    welcome: dict[tuple[str, str], dict[str, str]] = field(default_factory=dict)
    # Encoded login replies per (id of a welcome dict above, startup packet): see session._welcome_bytes.
    welcome_messages: dict[tuple[int, bytes], bytes] = field(default_factory=dict)
    # read_your_writes: reads the primary's WAL position after writes (made by the first one).
    positions: PositionReader | None = None

    # The query cache's facts about statement texts and the catalog (made for clusters with a cache).
    cache_facts: CacheFacts | None = None
    # LISTEN in transaction pooling: one listening connection per (server user, database) (listener.py).
    listen_hubs: dict[tuple[str, str], ListenerHub] = field(default_factory=dict)

    def listener_hub(self, cluster: Any, user: Any, database: str) -> ListenerHub:
        key = (user.server_user, database)
        hub = self.listen_hubs.get(key)
        if hub is None:
            hub = self.listen_hubs[key] = ListenerHub(cluster, user.name, user.server_user, database,
                                                      cluster.config.pool.notification_queue)
        return hub

    def listen_view(self) -> list[dict[str, Any]]:
        """The listening connections as SHOW LISTENERS, /status and /metrics show them."""
        return [hub.view() for hub in self.listen_hubs.values()]

    def close(self) -> None:
        if self.positions is not None:
            self.positions.close()
            self.positions = None
        if self.cache_facts is not None:
            self.cache_facts.catalog.close()
        for hub in self.listen_hubs.values():
            hub.close()
        self.listen_hubs.clear()

    def facts_for_cache(self, cluster: Any) -> CacheFacts:
        if self.cache_facts is None:
            self.cache_facts = CacheFacts(cluster.classifier, catalog_reader(cluster), cluster.config.cache)
        return self.cache_facts


class PostgresEngine:
    """See proxy.engines.base.Engine."""

    name: ClassVar[str] = "postgres"
    default_port: ClassVar[int] = 5432

    def derive_secret(self, password: str) -> ScramVerifier:
        return ScramVerifier.from_password(password)

    def client_session(self, app: Any, cluster: Any, endpoint: Any) -> asyncio.Protocol:
        from .session import PgClientSession

        return PgClientSession(app, cluster, endpoint)

    async def connect(self, address: Address, user: str, password: str | None, database: str,
                      settings: PoolSettings, variant: Any = None, tls: TlsSettings | None = None) -> ServerConnection:
        return await open_server_connection(address, user, password, database, settings.connect_timeout,
                                            settings.init_query, tls or _NO_TLS)

    def classifier(self, read_only_functions: Sequence[str]) -> PgClassifier:
        return PgClassifier(read_only_functions)

    def probe_factory(self) -> ProbeFactory:
        return _pg_probe

    def failover_actions(self, health: HealthSettings, failover: FailoverSettings) -> FailoverActions:
        from .failover import PgFailoverActions

        return PgFailoverActions.from_health(health)

    def replica_lister(self, health: HealthSettings, discovery: DiscoverySettings) -> ReplicaLister:
        from .discovery import PgReplicaLister

        return PgReplicaLister.from_settings(health, discovery)

    def default_pool(self, user: str) -> tuple[str, Any] | None:
        # A client naming no database gets the one named like its user (libpq and the server
        # default so, and so does startup.py); PostgreSQL pools have no login variant.
        return user, None

    def cluster_state(self) -> PgClusterState:
        return PgClusterState()

    async def cancel(self, server: ServerConnection) -> None:
        host, port = server.address.host, server.address.port
        try:
            reader, writer = await asyncio.wait_for(asyncio.open_connection(host, port), 5)
            try:
                writer.write(m.cancel_request(server.pid, server.key))
                await writer.drain()
                # The server closes the connection once it has signalled the backend: wait for that, so
                # the client's own cancel connection closes after it too (see PgClientSession).
                await asyncio.wait_for(reader.read(), 5)
            finally:
                writer.close()
        except (TimeoutError, OSError) as exc:
            log.warning("could not forward cancel request to %s:%d: %s", host, port, exc)


def _pg_probe(address: Address, health: HealthSettings) -> Probe:
    from .probe import PgProbe

    return PgProbe(address, health.user or "postgres", health.password, health.database, health.tls)


ENGINE = PostgresEngine()
