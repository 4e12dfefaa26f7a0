"""Configuration: TOML file -> frozen, validated dataclasses; masked display; diff(old, new) for reload."""

from __future__ import annotations

import difflib
import os
import re
import tomllib
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from proxy.cache.settings import CacheRule, CacheSettings
from proxy.core.admission import parse_network
from proxy.durations import parse_duration, parse_size
from proxy.tokens import TokenSettings

__all__ = [
    "Address",
    "ClusterConfig",
    "Config",
    "ConfigError",
    "DatabaseSettings",
    "EndpointConfig",
    "FailoverSettings",
    "HealthSettings",
    "PoolSettings",
    "ServerSettings",
    "TlsSettings",
    "TokenSettings",
    "User",
    "load_config",
    "parse_config",
    "parse_duration",
    "parse_size",
]

ENGINES = ("postgres", "mysql")
CLIENT_AUTH_METHODS: dict[str, tuple[str, ...]] = {
    "postgres": ("scram-sha-256", "md5", "trust"),
    "mysql": ("mysql_native_password", "caching_sha2_password"),
}
DEFAULT_CLIENT_AUTH = {"postgres": "scram-sha-256", "mysql": "mysql_native_password"}
POOL_MODES = ("session", "transaction")
FAILOVER_MODES = ("follow", "promote")
ENDPOINT_ROLES = ("writer", "reader", "split", "custom")
ENDPOINT_KINDS = ("reader", "any")
CLIENT_TLS_MODES = ("disable", "prefer", "require")
SERVER_TLS_MODES = ("disable", "prefer", "require", "verify-ca", "verify-full")
TLS_VERSIONS = ("1.2", "1.3")
LOG_FORMATS = ("text", "json")
LOG_LEVELS = ("debug", "info", "warning", "error")
AUDIT_STATEMENTS = ("none", "ddl", "writes", "all")
MASK = "********"

# Cluster and endpoint names appear in TOML keys, metric labels and admin commands: keep them plain.
_NAME_RE = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_-]*")
_WILDCARD_HOSTS = frozenset({"0.0.0.0", "::"})


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
    """replication_user/password (MySQL): what a rejoined old primary replicates with (see failover.md)."""

    mode: str = "follow"
    promote_after: float = 3.0
    borrow_timeout: float = 30.0
    replication_user: str | None = None
    replication_password: str | None = None


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


@dataclass(frozen=True)
class DatabaseSettings:
    """[clusters.<name>.databases.<database>]: limits for clients of one database name (0 = no limit)."""

    name: str
    max_client_connections: int = 0


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


# --------------------------------------------------------------------------- loading


def load_config(path: str) -> Config:
    """Read and validate a config file, resolving password_env/password_file; raises ConfigError."""
    try:
        text = Path(path).read_bytes().decode("utf-8")
    except OSError as exc:
        raise ConfigError([f"config error: {path}: cannot read file: {exc.strerror or exc}"]) from None
    except UnicodeDecodeError as exc:
        raise ConfigError([f"config error: {path}: file is not UTF-8 (byte {exc.start})"]) from None
    return parse_config(text, path)


def parse_config(text: str, path: str = "<string>", env: Mapping[str, str] | None = None) -> Config:
    """Validate TOML text; relative file paths are resolved against the config file's directory."""
    problems = _Problems(path)
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        problems.add(*_syntax_problem(str(exc), text))
        raise ConfigError(problems.lines) from None
    base_dir = Path.cwd() if path.startswith("<") else Path(path).resolve().parent
    context = _Context(problems, os.environ if env is None else env, base_dir)
    config = _build_config(data, path, context)
    if problems.lines:
        raise ConfigError(problems.lines)
    return config


def _syntax_problem(message: str, text: str) -> tuple[str, str]:
    match = re.search(r"\s*\(at line (\d+), column (\d+)\)$", message)
    if match is None:
        return "end of file" if "end of document" in message else "syntax", f"invalid TOML: {message}"
    line, column = int(match[1]), int(match[2])
    what = f"invalid TOML: {message[: match.start()]}"
    lines = text.splitlines()
    if line <= len(lines) and lines[line - 1][column - 1 : column] == ";":
        what += " (TOML has no ';' separator: put each key = value on its own line)"
    return f"line {line}, column {column}", what


class _Problems:
    def __init__(self, path: str) -> None:
        self.path = path
        self.lines: list[str] = []

    def add(self, key: str, what: str) -> None:
        self.lines.append(f"config error: {self.path}: {key}: {what}")


@dataclass
class _Context:
    problems: _Problems
    env: Mapping[str, str]
    base_dir: Path

    def resolve(self, name: str) -> Path:
        return self.base_dir / Path(name).expanduser()


def _toml_type(value: object) -> str:
    if isinstance(value, bool):
        return f"boolean {str(value).lower()}"
    if isinstance(value, int | float):
        return f"{'integer' if isinstance(value, int) else 'float'} {value}"
    if isinstance(value, str):
        return f'string "{value}"'
    if isinstance(value, list):
        return "an array"
    if isinstance(value, dict):
        return "a table"
    return f"a date/time {value}"


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


class _Table:
    """A TOML table being read: typed getters record problems (and return a default) instead of raising."""

    def __init__(self, data: Mapping[str, Any], key: str, problems: _Problems, known: Iterable[str]) -> None:
        self.data = data
        self.key = key
        self.problems = problems
        self.known = tuple(known)
        for name in data:
            if name not in self.known:
                hint = difflib.get_close_matches(name, self.known, n=1)
                self.problems.add(
                    self.path(name), "unknown key" + (f" (did you mean {hint[0]}?)" if hint else "")
                )

    def path(self, name: str) -> str:
        return f"{self.key}.{name}" if self.key else name

    def problem(self, name: str | None, what: str) -> None:
        self.problems.add(self.key if name is None else self.path(name), what)

    def _get(self, name: str, accept: Callable[[Any], bool], expected: str, required: bool = False) -> Any:
        if name not in self.data:
            if required:
                self.problem(name, "required key is missing")
            return None
        value = self.data[name]
        if not accept(value):
            self.problem(name, f"expected {expected}, got {_toml_type(value)}")
            return None
        return value

    def optional_text(self, name: str, *, required: bool = False) -> str | None:
        value: str | None = self._get(name, lambda v: isinstance(v, str), "a string", required)
        if value == "" and required:
            self.problem(name, "must not be empty")
            return None
        return value

    def text(self, name: str, default: str, *, required: bool = False) -> str:
        value = self.optional_text(name, required=required)
        return default if value is None else value

    def choice(
        self, name: str, choices: tuple[str, ...], default: str, *, required: bool = False, note: str = ""
    ) -> str:
        value = self.optional_text(name, required=required)
        if value is None:
            return default
        if value not in choices:
            hint = difflib.get_close_matches(value, choices, n=1)
            self.problem(
                name,
                f'invalid value "{value}": expected one of {" | ".join(choices)}{note}'
                + (f' (did you mean "{hint[0]}"?)' if hint else ""),
            )
            return default
        return value

    def integer(self, name: str, default: int, *, minimum: int = 0) -> int:
        value: int | None = self._get(name, _is_int, "an integer")
        if value is None:
            return default
        if value < minimum:
            self.problem(name, f"must be at least {minimum} (got {value})")
            return default
        return value

    def optional_boolean(self, name: str) -> bool | None:
        value: bool | None = self._get(name, lambda v: isinstance(v, bool), "true or false")
        return value

    def boolean(self, name: str, default: bool) -> bool:
        value = self.optional_boolean(name)
        return default if value is None else value

    def duration(self, name: str, default: float, *, positive: bool = False) -> float:
        text: str | None = self._get(
            name, lambda v: isinstance(v, str), 'a duration string with a unit (e.g. "500ms", "2s", "5m")'
        )
        if text is None:
            return default
        try:
            seconds = parse_duration(text)
        except ValueError as exc:
            self.problem(name, str(exc))
            return default
        if positive and seconds <= 0:
            self.problem(name, "must be greater than zero")
            return default
        return seconds

    def address(self, name: str, *, required: bool = False) -> Address | None:
        text = self.optional_text(name, required=required)
        return None if text is None else self._parse_address(self.path(name), text)

    def address_list(self, name: str, *, required: bool = False) -> tuple[Address, ...] | None:
        items: list[Any] | None = self._get(
            name, lambda v: isinstance(v, list), 'an array of "host:port" strings', required
        )
        if items is None:
            return None
        addresses: list[Address] = []
        for index, item in enumerate(items):
            key = f"{self.path(name)}[{index}]"
            if not isinstance(item, str):
                self.problems.add(key, f'expected a "host:port" string, got {_toml_type(item)}')
                continue
            address = self._parse_address(key, item)
            if address in addresses:
                self.problems.add(key, f"{address} is listed twice")
            elif address is not None:
                addresses.append(address)
        return tuple(addresses)

    def _parse_address(self, key: str, text: str) -> Address | None:
        try:
            return Address.parse(text)
        except ValueError as exc:
            self.problems.add(key, str(exc))
            return None

    def network_list(self, name: str) -> tuple[str, ...]:
        """An allowlist: CIDR strings, normalized; each bad entry is a problem with its index."""
        items: list[Any] | None = self._get(name, lambda v: isinstance(v, list), 'an array of CIDR strings')
        networks: list[str] = []
        for index, item in enumerate(items or ()):
            key = f"{self.path(name)}[{index}]"
            if not isinstance(item, str):
                self.problems.add(key, f'expected a CIDR string such as "10.0.0.0/8", got {_toml_type(item)}')
                continue
            try:
                networks.append(parse_network(item))
            except ValueError as exc:
                self.problems.add(key, str(exc))
        if items == []:
            self.problem(name, "must not be empty (leave it out to accept every address)")
        return tuple(networks)

    def text_list(self, name: str) -> tuple[str, ...]:
        items: list[Any] | None = self._get(
            name, lambda v: isinstance(v, list) and all(isinstance(i, str) for i in v), "an array of strings"
        )
        return tuple(items or ())

    def table(self, name: str, known: Iterable[str]) -> _Table:
        value: dict[str, Any] | None = self._get(name, lambda v: isinstance(v, dict), "a table")
        return _Table(value or {}, self.path(name), self.problems, known)

    def table_list(self, name: str, known: Iterable[str], *, header: str) -> list[_Table] | None:
        items: list[Any] | None = self._get(
            name,
            lambda v: isinstance(v, list) and all(isinstance(i, dict) for i in v),
            f"an array of tables ({header})",
        )
        if items is None:
            return None
        return [_Table(item, f"{self.path(name)}[{i}]", self.problems, known) for i, item in enumerate(items)]


# --------------------------------------------------------------------------- building


_SERVER_KEYS = ("admin_listen", "http_listen", "log_format", "log_level", "shutdown_timeout",
                "client_login_timeout", "admin_allow", "http_allow", "audit_log", "audit_statements",
                "client_connect_rate", "client_connect_burst", "tokens")
_USER_KEYS = (
    "name",
    "password",
    "password_env",
    "password_file",
    "server_user",
    "server_password",
    "server_password_env",
    "server_password_file",
    "admin",
    "max_client_connections",
    "auth",
)
_CLUSTER_KEYS = (
    "cache",
    "engine",
    "instances",
    "client_auth",
    "tls",
    "server_tls",
    "health",
    "failover",
    "pool",
    "endpoints",
    "read_only_functions",
    "allow_local_infile",
    "databases",
)
_TLS_KEYS = ("mode", "cert", "key", "ca", "client_cert", "min_version")
_HEALTH_KEYS = (
    "interval",
    "timeout",
    "failure_threshold",
    "max_replica_lag",
    "user",
    "password",
    "password_env",
    "password_file",
    "database",
)
_FAILOVER_KEYS = ("mode", "promote_after", "borrow_timeout", "replication_user", "replication_password",
                  "replication_password_env", "replication_password_file")
_ENDPOINT_KEYS = ("name", "listen", "role", "instances", "exclude", "kind", "read_your_writes", "tls", "allow")


def _field_names(cls: type) -> tuple[str, ...]:
    return tuple(f.name for f in fields(cls))


def _build_config(data: Mapping[str, Any], path: str, context: _Context) -> Config:
    root = _Table(data, "", context.problems, ("server", "users", "clusters"))
    server = _build_server(root.table("server", _SERVER_KEYS), context)
    users, passwordless = _build_users(root, context, tokens_given=isinstance(root.data.get("server"), dict)
                                       and "tokens" in root.data["server"])
    clusters = _with_probe_logins(_build_clusters(root, context), users)
    _check_listen_conflicts(server, clusters, context.problems)
    _check_passwords(users, passwordless, clusters, context.problems)
    return Config(path=path, server=server, users=users, clusters=clusters)


def _build_server(t: _Table, context: _Context) -> ServerSettings:
    from .config_tokens import TOKEN_KEYS, build_tokens  # (imports this module)

    audit_log = t.optional_text("audit_log", required="audit_log" in t.data)
    if audit_log is not None and audit_log != "stderr":
        audit_log = str(context.resolve(audit_log))
    return ServerSettings(
        admin_listen=t.address("admin_listen"),
        http_listen=t.address("http_listen"),
        log_format=t.choice("log_format", LOG_FORMATS, "text"),
        log_level=t.choice("log_level", LOG_LEVELS, "info"),
        shutdown_timeout=t.duration("shutdown_timeout", 30.0),
        client_login_timeout=t.duration("client_login_timeout", 15.0, positive=True),
        admin_allow=t.network_list("admin_allow"),
        http_allow=t.network_list("http_allow"),
        audit_log=audit_log,
        audit_statements=t.choice("audit_statements", AUDIT_STATEMENTS, "none"),
        client_connect_rate=t.integer("client_connect_rate", 0),
        client_connect_burst=t.integer("client_connect_burst", 0),
        tokens=build_tokens(t.table("tokens", TOKEN_KEYS), context) if "tokens" in t.data else None,
    )


def _build_users(root: _Table, context: _Context, *, tokens_given: bool) -> tuple[tuple[User, ...], list[int]]:
    """Return the users and the indexes of users that have no password (and no error about it yet)."""
    from .config_tokens import USER_AUTH, check_user_auth  # (imports this module)

    tables = root.table_list("users", _USER_KEYS, header="[[users]]")
    if not tables:
        if tables is not None or "users" not in root.data:
            root.problem("users", "at least one [[users]] entry is required")
        return (), []
    users: list[User] = []
    passwordless: list[int] = []
    for index, t in enumerate(tables):
        name = t.text("name", "", required=True)
        password, password_ok = _secret(t, "password", context)
        server_password, server_ok = _secret(t, "server_password", context)
        auth = t.choice("auth", USER_AUTH, "password")
        if password is None and password_ok and auth != "token":
            passwordless.append(index)
        if server_password is None and server_ok:
            server_password = password  # "default = the same"
        if name and any(user.name == name for user in users):
            t.problem("name", f'duplicate user "{name}"')
        user = User(
            name=name,
            password=password,
            server_user=t.text("server_user", name),
            server_password=server_password,
            admin=t.boolean("admin", False),
            max_client_connections=t.integer("max_client_connections", 0),
            auth=auth,
        )
        check_user_auth(user, t, tokens_given)
        users.append(user)
    return tuple(users), passwordless


def _secret(t: _Table, prefix: str, context: _Context) -> tuple[str | None, bool]:
    """Read `prefix`, `prefix_env` or `prefix_file`; returns (secret or None, False if a problem was recorded)."""
    given = [key for key in (prefix, f"{prefix}_env", f"{prefix}_file") if key in t.data]
    if not given:
        return None, True
    if len(given) > 1:
        t.problem(None, f"give only one of {', '.join(given)}")
        return None, False
    key = given[0]
    text = t.optional_text(key)
    if text is None:  # not a string: already reported
        return None, False
    if key.endswith("_file"):
        return _read_secret_file(t, key, context.resolve(text))
    if key.endswith("_env"):
        value = context.env.get(text)
        if value:
            return value, True
        t.problem(key, f"environment variable {text} is {'empty' if value == '' else 'not set'}")
        return None, False
    if text:
        return text, True
    t.problem(key, "must not be empty (leave it out for trust authentication)")
    return None, False


def _read_secret_file(t: _Table, key: str, path: Path) -> tuple[str | None, bool]:
    try:
        secret = path.read_text(encoding="utf-8").rstrip("\r\n")
    except OSError as exc:
        t.problem(key, f"cannot read {path}: {exc.strerror or exc}")
        return None, False
    except UnicodeDecodeError:
        t.problem(key, f"{path} is not UTF-8 text")
        return None, False
    if not secret:
        t.problem(key, f"{path} is empty")
        return None, False
    return secret, True


def _build_clusters(root: _Table, context: _Context) -> tuple[ClusterConfig, ...]:
    value = root.data.get("clusters")
    if value is None:
        root.problem("clusters", "at least one cluster is required ([clusters.<name>])")
        return ()
    if not isinstance(value, dict):
        root.problem("clusters", f"expected a table of clusters ([clusters.<name>]), got {_toml_type(value)}")
        return ()
    if not value:
        root.problem("clusters", "at least one cluster is required ([clusters.<name>])")
    clusters: list[ClusterConfig] = []
    for name, body in value.items():
        key = f"clusters.{name}"
        if not isinstance(body, dict):
            context.problems.add(key, f"expected a table, got {_toml_type(body)}")
            continue
        if not _NAME_RE.fullmatch(name):
            context.problems.add(key, "cluster names may only contain letters, digits, '_' and '-'")
        clusters.append(_build_cluster(name, _Table(body, key, context.problems, _CLUSTER_KEYS), context))
    return tuple(clusters)


def _build_cluster(name: str, t: _Table, context: _Context) -> ClusterConfig:
    engine = t.choice("engine", ENGINES, "", required=True)
    every_method = tuple(m for methods in CLIENT_AUTH_METHODS.values() for m in methods)
    auth_methods = CLIENT_AUTH_METHODS.get(engine, every_method)  # unknown engine: don't pile on errors
    instances = t.address_list("instances", required=True)
    if instances == () and not t.data["instances"]:
        t.problem("instances", "at least one instance is required")
    instances = instances or ()
    server_tls = _build_tls(t.table("server_tls", _TLS_KEYS), SERVER_TLS_MODES, context, client_side=False)
    return ClusterConfig(
        name=name,
        engine=engine,
        instances=instances,
        client_auth=t.choice(
            "client_auth",
            auth_methods,
            DEFAULT_CLIENT_AUTH.get(engine, ""),
            note=f' for engine = "{engine}"' if engine else "",
        ),
        tls=_build_tls(t.table("tls", _TLS_KEYS), CLIENT_TLS_MODES, context, client_side=True),
        server_tls=server_tls,
        health=replace(_build_health(t.table("health", _HEALTH_KEYS), context, "" if engine == "mysql" else "postgres"),
                       tls=server_tls),
        failover=_build_failover(t.table("failover", _FAILOVER_KEYS), context),
        pool=_build_pool(t.table("pool", _field_names(PoolSettings))),
        endpoints=_build_endpoints(t, instances, context),
        read_only_functions=tuple(f.strip().lower() for f in t.text_list("read_only_functions")),
        allow_local_infile=t.boolean("allow_local_infile", False),
        databases=_build_databases(t),
        cache=_build_cache(t.table("cache", _CACHE_KEYS)) if "cache" in t.data else None,
    )


_CACHE_KEYS = ("backend", "max_memory", "max_entry", "default_ttl", "rules")


def _build_cache(t: _Table) -> CacheSettings:
    """[clusters.<name>.cache]: the query-result cache (SPEC §11)."""
    backend = t.text("backend", "memory")
    if backend != "memory" and not backend.startswith(("redis://", "rediss://", "unix://")):
        t.problem("backend", f'invalid value "{backend}": expected "memory" or a redis://host:port/db URL')
    sizes = {}
    for name, default in (("max_memory", 256 * 1024**2), ("max_entry", 1024**2)):
        text = t.optional_text(name)
        try:
            sizes[name] = parse_size(text) if text is not None else default
        except ValueError as exc:
            t.problem(name, str(exc))
            sizes[name] = default
    rules: list[CacheRule] = []
    for rule in t.table_list("rules", ("match", "ttl", "tables"), header="{ match, ttl }") or []:
        match = rule.optional_text("match", required=True)
        ttl = rule.duration("ttl", 0.0, positive=True)
        if match is None:
            continue
        try:
            rules.append(CacheRule(match, ttl, rule.text_list("tables")))
        except re.error as exc:
            rule.problem("match", f"invalid regular expression: {exc}")
    return CacheSettings(backend=backend, max_memory=sizes["max_memory"], max_entry=sizes["max_entry"],
                         default_ttl=t.duration("default_ttl", 0.0), rules=tuple(rules))


def _build_databases(cluster: _Table) -> tuple[DatabaseSettings, ...]:
    """[clusters.<name>.databases.<database>] tables: limits by database name."""
    value = cluster.data.get("databases")
    if value is None:
        return ()
    if not isinstance(value, dict):
        cluster.problem("databases", f"expected a table of databases ([{cluster.path('databases')}.<name>]), "
                                     f"got {_toml_type(value)}")
        return ()
    databases = []
    for name, body in value.items():
        key = f"{cluster.path('databases')}.{name}"
        if not isinstance(body, dict):
            cluster.problems.add(key, f"expected a table, got {_toml_type(body)}")
            continue
        t = _Table(body, key, cluster.problems, ("max_client_connections",))
        databases.append(DatabaseSettings(name, t.integer("max_client_connections", 0)))
    return tuple(databases)


def _build_tls(t: _Table, modes: tuple[str, ...], context: _Context, *, client_side: bool) -> TlsSettings:
    problems_before = len(context.problems.lines)
    mode = t.choice("mode", modes, "disable")
    cert, key, ca = (_readable_path(t, name, context) for name in ("cert", "key", "ca"))
    if client_side and mode != "disable" and not (t.data.get("cert") and t.data.get("key")):
        t.problem(None, f'mode "{mode}" needs cert and key (the proxy\'s certificate and private key)')
    elif ("cert" in t.data) != ("key" in t.data):
        t.problem(None, "cert and key must be given together")
    client_cert = "none"
    if client_side:
        client_cert = t.choice("client_cert", ("none", "verify"), "none")
        if client_cert == "verify" and not ca:
            t.problem("client_cert", 'client_cert = "verify" needs ca (the CA that signs client certificates)')
    elif "client_cert" in t.data:
        t.problem("client_cert", "only valid for tls (towards clients); server_tls uses cert and key")
    if mode.startswith("verify") and not ca:
        t.problem("ca", f'mode "{mode}" needs ca (the CA that signs the servers\' certificates)')
    min_version = t.choice("min_version", TLS_VERSIONS, "1.2")
    settings = TlsSettings(mode=mode, cert=cert, key=key, ca=ca, client_cert=client_cert, min_version=min_version)
    complete = (cert and key) if client_side else (ca or not mode.startswith("verify"))
    if mode != "disable" and complete and len(context.problems.lines) == problems_before:
        from .tls.contexts import check  # (imports this module)

        problem = check(settings, client_side)
        if problem:
            t.problem(None, problem)
    return settings


def _readable_path(t: _Table, name: str, context: _Context) -> str | None:
    text = t.optional_text(name)
    if text is None:
        return None
    path = context.resolve(text)
    try:
        with path.open("rb"):
            pass
    except OSError as exc:
        t.problem(name, f"cannot read {path}: {exc.strerror or exc}")
    return str(path)


def _build_health(t: _Table, context: _Context, database: str) -> HealthSettings:
    """`database`: the probes' default database (PostgreSQL "postgres"; MySQL probes use none)."""
    return HealthSettings(
        interval=t.duration("interval", 0.5, positive=True),
        timeout=t.duration("timeout", 1.0, positive=True),
        failure_threshold=t.integer("failure_threshold", 3, minimum=1),
        max_replica_lag=t.duration("max_replica_lag", 10.0),
        user=t.optional_text("user", required="user" in t.data),
        password=_secret(t, "password", context)[0],
        database=t.text("database", database, required="database" in t.data),
    )


def _with_probe_logins(clusters: tuple[ClusterConfig, ...], users: tuple[User, ...]) -> tuple[ClusterConfig, ...]:
    """Probes log in as the first user's server credentials unless [clusters.<name>.health] says otherwise."""
    if not users:
        return clusters
    first = users[0]
    return tuple(
        c if c.health.user is not None
        else replace(c, health=replace(c.health, user=first.server_user,
                                       password=c.health.password or first.server_password))
        for c in clusters
    )


def _build_failover(t: _Table, context: _Context) -> FailoverSettings:
    return FailoverSettings(
        mode=t.choice("mode", FAILOVER_MODES, "follow"),
        promote_after=t.duration("promote_after", 3.0),
        borrow_timeout=t.duration("borrow_timeout", 30.0),
        replication_user=t.optional_text("replication_user", required="replication_user" in t.data),
        replication_password=_secret(t, "replication_password", context)[0],
    )


def _build_pool(t: _Table) -> PoolSettings:
    pool = PoolSettings(
        mode=t.choice("mode", POOL_MODES, "transaction"),
        max_server_connections=t.integer("max_server_connections", 20, minimum=1),
        min_idle=t.integer("min_idle", 0),
        idle_timeout=t.duration("idle_timeout", 300.0),
        max_lifetime=t.duration("max_lifetime", 3600.0),
        connect_timeout=t.duration("connect_timeout", 2.0, positive=True),
        max_client_connections=t.integer("max_client_connections", 10000, minimum=1),
        client_idle_timeout=t.duration("client_idle_timeout", 0.0),
        init_query=t.text("init_query", ""),
        prepared_statements=t.boolean("prepared_statements", True),
        max_prepared_statements=t.integer("max_prepared_statements", 1000, minimum=1),
    )
    if pool.min_idle > pool.max_server_connections:
        t.problem(
            "min_idle",
            f"must not exceed max_server_connections ({pool.min_idle} > {pool.max_server_connections})",
        )
    return pool


def _build_endpoints(cluster: _Table, instances: tuple[Address, ...], context: _Context) -> tuple[EndpointConfig, ...]:
    header = f"[[{cluster.path('endpoints')}]]"
    tables = cluster.table_list("endpoints", _ENDPOINT_KEYS, header=header)
    if not tables:
        if tables is not None or "endpoints" not in cluster.data:
            cluster.problem("endpoints", f"at least one endpoint is required ({header})")
        return ()
    endpoints: list[EndpointConfig] = []
    for t in tables:
        endpoint = _build_endpoint(t, instances, context)
        if endpoint.name and any(e.name == endpoint.name for e in endpoints):
            t.problem("name", f'duplicate endpoint name "{endpoint.name}" in this cluster')
        endpoints.append(endpoint)
    return tuple(endpoints)


_NO_ADDRESS = Address("", 0)  # placeholder for a missing/invalid listen address; never in a returned Config


def _build_endpoint(t: _Table, cluster_instances: tuple[Address, ...], context: _Context) -> EndpointConfig:
    name = t.text("name", "", required=True)
    if name and not _NAME_RE.fullmatch(name):
        t.problem("name", "endpoint names may only contain letters, digits, '_' and '-'")
    listen = t.address("listen", required=True) or _NO_ADDRESS
    role = t.choice("role", ENDPOINT_ROLES, "", required=True)
    instances = t.address_list("instances")
    exclude = t.address_list("exclude")
    kind = "reader"
    if role == "custom":
        _check_custom_members(t, instances, exclude, cluster_instances)
        kind = t.choice("kind", ENDPOINT_KINDS, "reader")
    elif role:
        for key in ("instances", "exclude", "kind"):
            if key in t.data:
                t.problem(key, f'only valid for role = "custom" (this endpoint has role = "{role}")')
    read_your_writes = False
    if role == "split":
        read_your_writes = t.boolean("read_your_writes", True)   # SPEC §3.4: on unless turned off
    elif role and "read_your_writes" in t.data:
        t.problem("read_your_writes", f'only valid for role = "split" (this endpoint has role = "{role}")')
    return EndpointConfig(
        name=name,
        listen=listen,
        role=role,
        instances=instances or (),
        exclude=exclude or (),
        kind=kind,
        read_your_writes=read_your_writes,
        tls=(_build_tls(t.table("tls", _TLS_KEYS), CLIENT_TLS_MODES, context, client_side=True)
             if "tls" in t.data else None),
        allow=t.network_list("allow"),
    )


def _check_custom_members(
    t: _Table,
    instances: tuple[Address, ...] | None,
    exclude: tuple[Address, ...] | None,
    cluster_instances: tuple[Address, ...],
) -> None:
    if ("instances" in t.data) == ("exclude" in t.data):
        t.problem(None, "a custom endpoint needs exactly one of instances or exclude")
        return
    for key, members in (("instances", instances), ("exclude", exclude)):
        for address in members or ():
            if cluster_instances and address not in cluster_instances:
                t.problem(key, f"{address} is not one of the cluster's instances")
    if instances == () and not t.data["instances"]:
        t.problem("instances", "must not be empty (list at least one instance, or use exclude)")
    if cluster_instances and exclude and set(cluster_instances) <= set(exclude):
        t.problem("exclude", "excludes every instance of the cluster")


def _check_listen_conflicts(
    server: ServerSettings, clusters: tuple[ClusterConfig, ...], problems: _Problems
) -> None:
    listeners: list[tuple[str, Address | None]] = [
        ("server.admin_listen", server.admin_listen),
        ("server.http_listen", server.http_listen),
    ]
    for cluster in clusters:
        for index, endpoint in enumerate(cluster.endpoints):
            listeners.append((f"clusters.{cluster.name}.endpoints[{index}].listen", endpoint.listen))
    seen: list[tuple[str, Address]] = []
    for key, address in listeners:
        if address is None or address == _NO_ADDRESS:
            continue
        clash = next((other_key for other_key, other in seen if _same_socket(address, other)), None)
        if clash is not None:
            problems.add(key, f"{address} is already used by {clash}")
        seen.append((key, address))


def _same_socket(a: Address, b: Address) -> bool:
    return a.port == b.port and (a.host == b.host or a.host in _WILDCARD_HOSTS or b.host in _WILDCARD_HOSTS)


def _check_passwords(
    users: tuple[User, ...], passwordless: list[int], clusters: tuple[ClusterConfig, ...], problems: _Problems
) -> None:
    needing = [c for c in clusters if c.client_auth and c.client_auth != "trust"]
    if not needing:
        return
    cluster = needing[0]
    for index in passwordless:
        problems.add(
            f"users[{index}]",
            f'user "{users[index].name}" has no password (password, password_env or password_file), '
            f'but cluster "{cluster.name}" uses client_auth = "{cluster.client_auth}"',
        )
