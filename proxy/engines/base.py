"""What an engine gives the core: the `Engine` adapter and the `ServerLink` a pool hands out."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, ClassVar, Protocol

from ..config import Address, FailoverSettings, HealthSettings, PoolSettings, TlsSettings
from ..config.model import DiscoverySettings
from ..routing.classify import Classifier

if TYPE_CHECKING:
    from ..topology import FailoverActions, ProbeFactory
    from ..topology.discovery import ReplicaLister


class ServerLink(Protocol):
    """One server connection as the core, the pools and the admin views see it."""

    id: int
    address: Address
    user: str
    database: str
    created_at: float
    last_used: float
    generation: int
    owner: Any
    pid: int                      # the server's backend pid / thread id
    pinned_reason: str | None

    @property
    def closed(self) -> bool: ...

    @property
    def idle(self) -> bool:
        """No response outstanding and outside a transaction: may go back to the pool."""

    @property
    def in_transaction(self) -> bool: ...

    @property
    def transaction_status(self) -> str:
        """One letter for SHOW SERVERS: I (idle), T (in a transaction), E (failed transaction)."""

    def close(self, reason: str = "") -> None: ...

    def pause_reading(self) -> None: ...

    def resume_reading(self) -> None: ...


class Engine(Protocol):
    """An engine adapter: everything that differs per wire protocol, and nothing more."""

    name: ClassVar[str]
    default_port: ClassVar[int]

    def derive_secret(self, password: str) -> object:
        """What client authentication needs precomputed from a configured password (once, at load)."""

    def client_session(self, app: Any, cluster: Any, endpoint: Any) -> asyncio.Protocol:
        """A new client connection's protocol object on one endpoint."""

    async def connect(self, address: Address, user: str, password: str | None, database: str,
                      settings: PoolSettings, variant: Any = None, tls: TlsSettings | None = None) -> ServerLink:
        """Open and log in one server connection, TLS as the cluster's server_tls says (raises
        errors.ServerConnectFailed)."""

    def classifier(self, read_only_functions: Sequence[str]) -> Classifier: ...

    def probe_factory(self) -> ProbeFactory | None:
        """Topology probes, or None while the engine has no probe adapter (routing stays static)."""

    def failover_actions(self, health: HealthSettings, failover: FailoverSettings) -> FailoverActions | None: ...

    def replica_lister(self, health: HealthSettings, discovery: DiscoverySettings) -> ReplicaLister | None:
        """Asks a primary which replicas stream from it (replica discovery), or None: not supported."""

    def default_pool(self, user: str) -> tuple[str, Any] | None:
        """The (database, variant) of the pool a configured user gets before any client came (SHOW
        POOLS lists it after the first probe), or None when the engine cannot know it ahead."""

    def cluster_state(self) -> object:
        """Per-cluster caches the engine's sessions share (login replies, statement names)."""

    async def cancel(self, server: ServerLink) -> None:
        """Interrupt what `server` is running (PostgreSQL CancelRequest, MySQL KILL QUERY)."""
