"""The configuration model: frozen dataclasses of every setting, the allowed values, ConfigError."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from proxy.cache.settings import CacheSettings
from proxy.tokens import TokenSettings

ENGINES = ("postgres", "mysql")
CLIENT_AUTH_METHODS: dict[str, tuple[str, ...]] = {
    "postgres": ("scram-sha-256", "md5", "trust"),
    "mysql": ("mysql_native_password", "caching_sha2_password"),
}
DEFAULT_CLIENT_AUTH = {"postgres": "scram-sha-256", "mysql": "mysql_native_password"}
POOL_MODES = ("session", "transaction")
FAILOVER_MODES = ("follow", "promote", "patroni")
ENDPOINT_ROLES = ("writer", "reader", "split", "custom")
ENDPOINT_KINDS = ("reader", "any")
CROSS_ZONE_MODES = ("prefer-local", "balanced")
MAX_PROMOTION_TIER = 15   # Aurora's range: 0 (first) .. 15 (last)
MAX_WEIGHT = 1000
CLIENT_TLS_MODES = ("disable", "prefer", "require")
SERVER_TLS_MODES = ("disable", "prefer", "require", "verify-ca", "verify-full")
TLS_VERSIONS = ("1.2", "1.3")
LOG_FORMATS = ("text", "json")
LOG_LEVELS = ("debug", "info", "warning", "error")
AUDIT_STATEMENTS = ("none", "ddl", "writes", "all")
MASK = "********"

# Cluster and endpoint names appear in TOML keys, metric labels and admin commands: keep them plain.


# --------------------------------------------------------------------------- the model


@dataclass(frozen=True, order=True)
class Address:
    """A TCP address; IPv6 hosts are written "[::1]:5432"."""

    host: str
    port: int

    def __str__(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"

    @classmethod
    def parse(cls, text: str) -> Address:
        """Parse "host:port" or "[v6]:port"; raises ValueError with a message meant for the user."""
        text = text.strip()
        if text.startswith("["):
            host, sep, port = text[1:].partition("]:")
        else:
            host, sep, port = text.rpartition(":")
            if ":" in host:
                raise ValueError(f'invalid address "{text}": write IPv6 addresses as "[addr]:port"')
        if not sep or not host or any(c.isspace() for c in host):
            raise ValueError(f'invalid address "{text}": expected "host:port"')
        if not port.isdigit() or not 1 <= int(port) <= 65535:
            raise ValueError(f'invalid address "{text}": port must be a number from 1 to 65535')
        return cls(host, int(port))


@dataclass(frozen=True)
class TlsSettings:
    """TLS towards clients (modes disable|prefer|require) or servers (also verify-ca, verify-full); paths are
    absolute. client_cert = "verify" (client side, needs ca): clients must present a certificate signed by ca."""

    mode: str = "disable"
    cert: str | None = None
    key: str | None = None
    ca: str | None = None
    client_cert: str = "none"
    min_version: str = "1.2"


@dataclass(frozen=True)
class ServerSettings:
    """Process-wide settings from [server]; shutdown_timeout bounds the graceful drain on SIGTERM,
    client_login_timeout the time a client has to finish startup and authentication."""

    admin_listen: Address | None
    http_listen: Address | None
    log_format: str
    log_level: str
    shutdown_timeout: float = 30.0
    client_login_timeout: float = 15.0
    # SPEC §10 (README "Security"): allowlists of the admin console and the HTTP service (CIDRs,
    # empty = everyone), the audit log ("stderr" or an absolute path; None = off) and the
    # per-client-address connect rate (new connections per second, 0 = no limit; burst 0 = rate).
    admin_allow: tuple[str, ...] = ()
    http_allow: tuple[str, ...] = ()
    audit_log: str | None = None
    audit_statements: str = "none"
    client_connect_rate: int = 0
    client_connect_burst: int = 0
    tokens: TokenSettings | None = None   # [server.tokens]: token logins (SPEC §10)
    zone: str = ""      # where this dbproxy runs (README "Availability zones, tiers and discovery")
    region: str = ""
    faults: bool = False   # SPEC §13: FAULT ADD / POST /faults accepted only when true
    record_parameters: bool = False   # SPEC §13: RECORD START writes the values of prepared executions
    workers: int = 1   # data-plane processes beside the control process ("auto": one per CPU); 1 = no split

    @property
    def locality(self) -> Locality:
        return Locality(self.zone, self.region)


@dataclass(frozen=True)
class Locality:
    """Where something runs: an availability zone and its region ("" = unknown)."""

    zone: str = ""
    region: str = ""


@dataclass(frozen=True)
class Placement:
    """What the configuration says about one instance besides its address (instances given as tables).

    promotion_tier: 0 is promoted first, 15 last (Aurora's tiers). weight: its share of reads among
    equally near replicas. standby: a Multi-AZ standby, never read from, the first promotion choice.
    discovered: added by replica discovery, not by the configuration.
    """

    zone: str = ""
    region: str = ""
    promotion_tier: int = 1
    weight: int = 1
    standby: bool = False
    discovered: bool = False

    @property
    def locality(self) -> Locality:
        return Locality(self.zone, self.region)


DEFAULT_PLACEMENT = Placement()


@dataclass(frozen=True)
class DiscoverySettings:
    """Replica discovery (cluster `discover = true`, table [clusters.<name>.discovery]).

    Every `interval` the writer is asked for its replicas; one it no longer reports for `grace` is
    dropped. port: PostgreSQL replicas whose application_name is not "host:port" are taken as
    client_addr:port (0: skipped). zone/region/promotion_tier: the placement of discovered replicas.
    """

    enabled: bool = False
    interval: float = 2.0
    grace: float = 30.0
    port: int = 0
    zone: str = ""
    region: str = ""
    promotion_tier: int = 15

    def placement(self) -> Placement:
        return Placement(self.zone, self.region, self.promotion_tier, discovered=True)


@dataclass(frozen=True)
class User:
    """A client login and the credentials the proxy uses towards the databases on its behalf.

    auth: "password" (the cluster's client_auth), "token" (a signed token sent as a cleartext password
    over TLS, see proxy.tokens) or "password_or_token".
    """

    name: str
    password: str | None = field(repr=False)
    server_user: str
    server_password: str | None = field(repr=False)
    admin: bool = False
    max_client_connections: int = 0   # logged-in client connections of this user, whole proxy (0 = no limit)
    auth: str = "password"


@dataclass(frozen=True)
class HealthSettings:
    """Probing of the cluster's instances; max_replica_lag 0 = no lag limit.

    user/password/database: the probe connections' login. parse_config fills in the first [[users]]
    entry's server_user/server_password when user is not given (None only in a bare HealthSettings()).
    tls: the cluster's server_tls (filled in by parse_config): probes and failover actions use it too.
    """

    interval: float = 0.5
    timeout: float = 1.0
    failure_threshold: int = 3
    max_replica_lag: float = 10.0
    user: str | None = None
    password: str | None = None
    database: str = "postgres"
    tls: TlsSettings = TlsSettings()


@dataclass(frozen=True)
class FailoverSettings:
    """replication_user/password (MySQL): what a rejoined old primary replicates with (see failover.md).

    patroni (mode "patroni"): the members' REST API base URLs ("http(s)://host:8008"); patroni_user/
    patroni_password: HTTP basic auth (Patroni's restapi.authentication); patroni_ca: the CA file that
    signs https APIs' certificates (None: the system's CAs).
    replay: transactions in flight when the writer's connection dies are replayed on the new writer
    (core/replay.py), bounded per transaction by replay_max_bytes of client messages and
    replay_max_statements statements, and in time by replay_timeout (waiting for the new writer
    and replaying there).
    """

    mode: str = "follow"
    promote_after: float = 3.0
    borrow_timeout: float = 30.0
    replication_user: str | None = None
    replication_password: str | None = field(default=None, repr=False)
    patroni: tuple[str, ...] = ()
    patroni_user: str | None = None
    patroni_password: str | None = field(default=None, repr=False)
    patroni_ca: str | None = None
    allow_cross_region: bool = False   # promote mode: a replica of another region may be promoted
    replay: bool = False
    replay_timeout: float = 10.0
    replay_max_bytes: int = 1024 * 1024
    replay_max_statements: int = 1000


@dataclass(frozen=True)
class PoolSettings:
    """Pool limits; max_prepared_statements caps the prepared-statement cache of one server connection."""

    mode: str = "transaction"
    max_server_connections: int = 20
    min_idle: int = 0
    idle_timeout: float = 300.0
    max_lifetime: float = 3600.0
    connect_timeout: float = 2.0
    max_client_connections: int = 10000
    client_idle_timeout: float = 0.0
    init_query: str = ""
    prepared_statements: bool = True
    max_prepared_statements: int = 1000
    notification_queue: int = 1000   # PostgreSQL LISTEN in transaction pooling: notifications waiting per client


@dataclass(frozen=True)
class EndpointConfig:
    """A listening endpoint; instances/exclude/kind only for role custom, read_your_writes only for split."""

    name: str
    listen: Address
    role: str
    instances: tuple[Address, ...] = ()
    exclude: tuple[Address, ...] = ()
    kind: str = "reader"
    read_your_writes: bool = False
    tls: TlsSettings | None = None   # overrides the cluster's tls for this endpoint
    allow: tuple[str, ...] = ()   # client networks (normalized CIDRs); empty = every address
    cross_zone: str = "prefer-local"   # reader/split/custom: nearest replicas first, or all alike


@dataclass(frozen=True)
class DatabaseSettings:
    """[clusters.<name>.databases.<database>]: limits for clients of one database name (0 = no limit)."""

    name: str
    max_client_connections: int = 0


@dataclass(frozen=True)
class MirrorSettings:
    """A cluster's `mirror = { ... }` (SPEC §13): copies of sampled transactions sent to another cluster."""

    cluster: str
    sample: float = 1.0
    reads_only: bool = True
    compare: bool = False   # row count and digest of each read, shadow against primary (reads_only only)


@dataclass(frozen=True)
class ClusterConfig:
    """One database cluster; read_only_functions are lower-cased function names."""

    name: str
    engine: str
    instances: tuple[Address, ...]
    client_auth: str
    tls: TlsSettings
    server_tls: TlsSettings
    health: HealthSettings
    failover: FailoverSettings
    pool: PoolSettings
    endpoints: tuple[EndpointConfig, ...]
    read_only_functions: tuple[str, ...] = ()
    allow_local_infile: bool = False   # mysql: let LOAD DATA LOCAL INFILE through (SPEC §12)
    databases: tuple[DatabaseSettings, ...] = ()
    cache: CacheSettings | None = None   # [clusters.<name>.cache] (SPEC §11); None: no query cache
    # Instances given as tables (zone, region, promotion_tier, weight, standby); others: DEFAULT_PLACEMENT.
    placements: Mapping[Address, Placement] = field(default_factory=dict)
    locality: Locality = Locality()   # [server] zone/region, copied here so routing sees it
    discovery: DiscoverySettings = DiscoverySettings()
    mirror: MirrorSettings | None = None   # SPEC §13 traffic mirroring; None: off

    def placement(self, address: Address) -> Placement:
        """The configured placement of an instance (the defaults when it was given as a string)."""
        return self.placements.get(address, DEFAULT_PLACEMENT)

    def database_limit(self, database: str) -> int:
        """max_client_connections of clients of `database` (0 = no limit)."""
        for settings in self.databases:
            if settings.name == database:
                return settings.max_client_connections
        return 0


@dataclass(frozen=True)
class Config:
    path: str
    server: ServerSettings
    users: tuple[User, ...]
    clusters: tuple[ClusterConfig, ...]

    def user(self, name: str) -> User | None:
        return next((user for user in self.users if user.name == name), None)

    def cluster(self, name: str) -> ClusterConfig | None:
        return next((cluster for cluster in self.clusters if cluster.name == name), None)


class ConfigError(Exception):
    """Bad configuration; problems are complete lines "config error: <file>: <key.path>: <what is wrong>"."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("\n".join(problems))
        self.problems = problems
