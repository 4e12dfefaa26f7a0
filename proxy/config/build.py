"""Building a Config from parsed TOML: each section's keys, defaults and cross-checks."""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import fields, replace
from typing import Any

from proxy.cache.settings import CacheRule, CacheSettings
from proxy.durations import parse_size

from .model import (
    AUDIT_STATEMENTS,
    CLIENT_AUTH_METHODS,
    CLIENT_TLS_MODES,
    CROSS_ZONE_MODES,
    DEFAULT_CLIENT_AUTH,
    DEFAULT_PLACEMENT,
    ENDPOINT_KINDS,
    ENDPOINT_ROLES,
    ENGINES,
    FAILOVER_MODES,
    LOG_FORMATS,
    LOG_LEVELS,
    POOL_MODES,
    SERVER_TLS_MODES,
    TLS_VERSIONS,
    Address,
    ClusterConfig,
    Config,
    DatabaseSettings,
    EndpointConfig,
    FailoverSettings,
    HealthSettings,
    MirrorSettings,
    Placement,
    PoolSettings,
    ServerSettings,
    TlsSettings,
    User,
)
from .patroni import PATRONI_KEYS, patroni_credentials, patroni_urls
from .placement import read_discovery, read_instances, read_locality
from .reader import Context, Problems, Table, is_int, read_secret, toml_type
from .urls import cache_backend_problem

_NAME_RE = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_-]*")
_WILDCARD_HOSTS = frozenset({"0.0.0.0", "::"})
_SERVER_KEYS = ("admin_listen", "http_listen", "log_format", "log_level", "shutdown_timeout",
                "client_login_timeout", "admin_allow", "http_allow", "audit_log", "audit_statements",
                "client_connect_rate", "client_connect_burst", "tokens", "zone", "region",
                "faults", "workers", "record_parameters")
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
    "mirror",
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
    "discover",
    "discovery",
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
                  "replication_password_env", "replication_password_file", "allow_cross_region",
                  "replay", "replay_timeout", "replay_max_bytes",
                  "replay_max_statements", *PATRONI_KEYS)
_ENDPOINT_KEYS = ("name", "listen", "role", "instances", "exclude", "kind", "read_your_writes", "tls", "allow",
                  "cross_zone")


def _field_names(cls: type) -> tuple[str, ...]:
    return tuple(f.name for f in fields(cls))


def build_config(data: Mapping[str, Any], path: str, context: Context) -> Config:
    root = Table(data, "", context.problems, ("server", "users", "clusters"))
    server = _build_server(root.table("server", _SERVER_KEYS), context)
    users, passwordless = _build_users(root, context, tokens_given=isinstance(root.data.get("server"), dict)
                                       and "tokens" in root.data["server"])
    clusters = _with_probe_logins(_build_clusters(root, context), users)
    clusters = tuple(replace(c, locality=server.locality) for c in clusters)
    _check_listen_conflicts(server, clusters, context.problems)
    _check_mirrors(clusters, context.problems)
    _check_cache_workers(server, clusters, context.problems)
    _check_passwords(users, passwordless, clusters, context.problems)
    return Config(path=path, server=server, users=users, clusters=clusters)


def _build_server(t: Table, context: Context) -> ServerSettings:
    from .token_logins import TOKEN_KEYS, build_tokens

    audit_log = t.optional_text("audit_log", required="audit_log" in t.data)
    if audit_log is not None and audit_log != "stderr":
        audit_log = str(context.resolve(audit_log))
    locality = read_locality(t)
    return ServerSettings(
        zone=locality.zone,
        region=locality.region,
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
        faults=t.boolean("faults", False),
        record_parameters=t.boolean("record_parameters", False),
        workers=_workers(t, faults=t.data.get("faults") is True),
    )


MAX_WORKERS = 64


def _workers(t: Table, faults: bool) -> int:
    """[server] workers: a number of data-plane processes (1 = one process, no split), or "auto" (one per CPU).
    Fault injection (faults = true) keeps its faults in one process: it needs workers = 1."""
    value = t.data.get("workers", 1)
    if value == "auto":
        workers = max(1, len(os.sched_getaffinity(0)))
    elif not is_int(value) or not 1 <= value <= MAX_WORKERS:
        t.problem("workers", f'must be a number from 1 to {MAX_WORKERS} or "auto" (got {toml_type(value)})')
        return 1
    else:
        workers = int(value)
    if faults and workers > 1:
        t.problem("faults", f"fault injection needs workers = 1 (workers = {workers}): the faults live in one process")
    return workers


def _build_users(root: Table, context: Context, *, tokens_given: bool) -> tuple[tuple[User, ...], list[int]]:
    """Return the users and the indexes of users that have no password (and no error about it yet)."""
    from .token_logins import USER_AUTH, check_user_auth

    tables = root.table_list("users", _USER_KEYS, header="[[users]]")
    if not tables:
        if tables is not None or "users" not in root.data:
            root.problem("users", "at least one [[users]] entry is required")
        return (), []
    users: list[User] = []
    passwordless: list[int] = []
    for index, t in enumerate(tables):
        name = t.text("name", "", required=True)
        password, password_ok = read_secret(t, "password", context)
        server_password, server_ok = read_secret(t, "server_password", context)
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


def _build_clusters(root: Table, context: Context) -> tuple[ClusterConfig, ...]:
    value = root.data.get("clusters")
    if value is None:
        root.problem("clusters", "at least one cluster is required ([clusters.<name>])")
        return ()
    if not isinstance(value, dict):
        root.problem("clusters", f"expected a table of clusters ([clusters.<name>]), got {toml_type(value)}")
        return ()
    if not value:
        root.problem("clusters", "at least one cluster is required ([clusters.<name>])")
    clusters: list[ClusterConfig] = []
    for name, body in value.items():
        key = f"clusters.{name}"
        if not isinstance(body, dict):
            context.problems.add(key, f"expected a table, got {toml_type(body)}")
            continue
        if not _NAME_RE.fullmatch(name):
            context.problems.add(key, "cluster names may only contain letters, digits, '_' and '-'")
        clusters.append(_build_cluster(name, Table(body, key, context.problems, _CLUSTER_KEYS), context))
    return tuple(clusters)


def _build_cluster(name: str, t: Table, context: Context) -> ClusterConfig:
    engine = t.choice("engine", ENGINES, "", required=True)
    every_method = tuple(m for methods in CLIENT_AUTH_METHODS.values() for m in methods)
    auth_methods = CLIENT_AUTH_METHODS.get(engine, every_method)  # unknown engine: don't pile on errors
    instances, placements = read_instances(t)
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
        failover=_build_failover(t.table("failover", _FAILOVER_KEYS), context, engine),
        pool=_build_pool(t.table("pool", _field_names(PoolSettings))),
        endpoints=_build_endpoints(t, instances, context, placements),
        read_only_functions=tuple(f.strip().lower() for f in t.text_list("read_only_functions")),
        allow_local_infile=t.boolean("allow_local_infile", False),
        databases=_build_databases(t),
        cache=_build_cache(t.table("cache", _CACHE_KEYS), context) if "cache" in t.data else None,
        placements=placements,
        discovery=read_discovery(t),
        mirror=_build_mirror(t.table("mirror", _MIRROR_KEYS)) if "mirror" in t.data else None,
    )


_MIRROR_KEYS = ("cluster", "sample", "reads_only", "compare")


def _build_mirror(t: Table) -> MirrorSettings | None:
    """mirror = { cluster = "shadow", sample = 0.1, reads_only = true, compare = false } (SPEC §13)."""
    target = t.optional_text("cluster", required=True)
    reads_only = t.boolean("reads_only", True)
    compare = t.boolean("compare", False)
    if compare and not reads_only:
        t.problem("compare", "compare = true needs reads_only = true (each read also runs on the primary)")
    if target is None:
        return None
    return MirrorSettings(cluster=target, sample=t.fraction("sample", 1.0), reads_only=reads_only, compare=compare)


def _check_cache_workers(server: ServerSettings, clusters: tuple[ClusterConfig, ...], problems: Problems) -> None:
    """A memory cache lives in one process: with workers, a write through one worker would leave the
    entries another worker holds stale (SPEC §11 wants them gone before the writer sees its commit)."""
    if server.workers < 2:
        return
    for cluster in clusters:
        if cluster.cache is not None and cluster.cache.backend == "memory":
            problems.add(f"clusters.{cluster.name}.cache.backend",
                         f'"memory" keeps entries in each process: with workers = {server.workers} a write through '
                         "one worker would not invalidate another's; use a Redis backend (shared by the workers) "
                         "or workers = 1")


def _check_mirrors(clusters: tuple[ClusterConfig, ...], problems: Problems) -> None:
    by_name = {c.name: c for c in clusters}
    for cluster in clusters:
        if cluster.mirror is None:
            continue
        key = f"clusters.{cluster.name}.mirror.cluster"
        target = by_name.get(cluster.mirror.cluster)
        if target is None:
            problems.add(key, f'no cluster named "{cluster.mirror.cluster}" (clusters: {", ".join(by_name)})')
        elif target is cluster:
            problems.add(key, "a cluster cannot mirror to itself")
        elif target.engine != cluster.engine:
            problems.add(key, f'cluster "{target.name}" uses engine {target.engine}, this one {cluster.engine}')


_CACHE_KEYS = ("backend", "max_memory", "max_entry", "default_ttl", "rules", "write_functions", "username",
               "password", "password_env", "password_file", "tls_ca_file")


def _build_cache(t: Table, context: Context) -> CacheSettings:
    """[clusters.<name>.cache]: the query-result cache (SPEC §11)."""
    backend = t.text("backend", "memory")
    if problem := cache_backend_problem(backend):
        t.problem("backend", problem)
    password, _ = read_secret(t, "password", context)
    ca_file = t.optional_text("tls_ca_file")
    if ca_file is not None:
        if not backend.startswith("rediss://"):
            t.problem("tls_ca_file", "needs a rediss:// backend (Redis over TLS)")
        ca_file = str(context.resolve(ca_file))
    if backend == "memory":
        for key in ("username", "password", "password_env", "password_file"):
            if key in t.data:
                t.problem(key, "only for a Redis backend")
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
                         default_ttl=t.duration("default_ttl", 0.0), rules=tuple(rules),
                         write_functions=_write_functions(t), username=t.optional_text("username"),
                         password=password, tls_ca_file=ca_file)


def _write_functions(t: Table) -> tuple[tuple[str, tuple[str, ...]], ...]:
    """write_functions = { name = ["table", ...] }: the tables a function's call writes."""
    raw = t.data.get("write_functions")
    if raw is None:
        return ()
    if not isinstance(raw, dict):
        t.problem("write_functions", f'expected a table of function = ["table", ...], got {toml_type(raw)}')
        return ()
    out = []
    for name, tables in raw.items():
        if not isinstance(tables, list) or not tables or not all(isinstance(x, str) and x for x in tables):
            t.problem(f"write_functions.{name}", "expected a non-empty array of table names")
            continue
        out.append((name.lower(), tuple(tables)))
    return tuple(out)


def _build_databases(cluster: Table) -> tuple[DatabaseSettings, ...]:
    """[clusters.<name>.databases.<database>] tables: limits by database name."""
    value = cluster.data.get("databases")
    if value is None:
        return ()
    if not isinstance(value, dict):
        cluster.problem("databases", f"expected a table of databases ([{cluster.path('databases')}.<name>]), "
                                     f"got {toml_type(value)}")
        return ()
    databases = []
    for name, body in value.items():
        key = f"{cluster.path('databases')}.{name}"
        if not isinstance(body, dict):
            cluster.problems.add(key, f"expected a table, got {toml_type(body)}")
            continue
        t = Table(body, key, cluster.problems, ("max_client_connections",))
        databases.append(DatabaseSettings(name, t.integer("max_client_connections", 0)))
    return tuple(databases)


def _build_tls(t: Table, modes: tuple[str, ...], context: Context, *, client_side: bool) -> TlsSettings:
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
        from proxy.tls.contexts import check  # (imports proxy.config)

        problem = check(settings, client_side)
        if problem:
            t.problem(None, problem)
    return settings


def _readable_path(t: Table, name: str, context: Context) -> str | None:
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


def _build_health(t: Table, context: Context, database: str) -> HealthSettings:
    """`database`: the probes' default database (PostgreSQL "postgres"; MySQL probes use none)."""
    return HealthSettings(
        interval=t.duration("interval", 0.5, positive=True),
        timeout=t.duration("timeout", 1.0, positive=True),
        failure_threshold=t.integer("failure_threshold", 3, minimum=1),
        max_replica_lag=t.duration("max_replica_lag", 10.0),
        user=t.optional_text("user", required="user" in t.data),
        password=read_secret(t, "password", context)[0],
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


def _build_failover(t: Table, context: Context, engine: str) -> FailoverSettings:
    mode = t.choice("mode", FAILOVER_MODES, "follow")
    patroni_user, patroni_password = patroni_credentials(t, context)
    return FailoverSettings(
        mode=mode,
        promote_after=t.duration("promote_after", 3.0),
        borrow_timeout=t.duration("borrow_timeout", 30.0),
        replication_user=t.optional_text("replication_user", required="replication_user" in t.data),
        replication_password=read_secret(t, "replication_password", context)[0],
        patroni=patroni_urls(t, mode, engine),
        patroni_user=patroni_user,
        patroni_password=patroni_password,
        patroni_ca=_readable_path(t, "patroni_ca", context),
        allow_cross_region=t.boolean("allow_cross_region", False),
        replay=t.boolean("replay", False),
        replay_timeout=t.duration("replay_timeout", 10.0, positive=True),
        replay_max_bytes=t.integer("replay_max_bytes", 1024 * 1024, minimum=1),
        replay_max_statements=t.integer("replay_max_statements", 1000, minimum=1),
    )


def _build_pool(t: Table) -> PoolSettings:
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
        notification_queue=t.integer("notification_queue", 1000, minimum=1),
    )
    if pool.min_idle > pool.max_server_connections:
        t.problem(
            "min_idle",
            f"must not exceed max_server_connections ({pool.min_idle} > {pool.max_server_connections})",
        )
    return pool


def _build_endpoints(cluster: Table, instances: tuple[Address, ...], context: Context,
                     placements: Mapping[Address, Placement]) -> tuple[EndpointConfig, ...]:
    header = f"[[{cluster.path('endpoints')}]]"
    tables = cluster.table_list("endpoints", _ENDPOINT_KEYS, header=header)
    if not tables:
        if tables is not None or "endpoints" not in cluster.data:
            cluster.problem("endpoints", f"at least one endpoint is required ({header})")
        return ()
    endpoints: list[EndpointConfig] = []
    for t in tables:
        endpoint = _build_endpoint(t, instances, context)
        if endpoint.role == "custom":
            _check_no_standby(t, endpoint, placements)
        if endpoint.name and any(e.name == endpoint.name for e in endpoints):
            t.problem("name", f'duplicate endpoint name "{endpoint.name}" in this cluster')
        endpoints.append(endpoint)
    return tuple(endpoints)


_NO_ADDRESS = Address("", 0)  # placeholder for a missing/invalid listen address; never in a returned Config


def _build_endpoint(t: Table, cluster_instances: tuple[Address, ...], context: Context) -> EndpointConfig:
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
    cross_zone = "prefer-local"
    if role in ("reader", "split", "custom"):
        cross_zone = t.choice("cross_zone", CROSS_ZONE_MODES, "prefer-local")
    elif role and "cross_zone" in t.data:
        t.problem("cross_zone", f'only valid for reader, split and custom endpoints (this one has role = "{role}")')
    return EndpointConfig(
        cross_zone=cross_zone,
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


def _check_no_standby(t: Table, endpoint: EndpointConfig, placements: Mapping[Address, Placement]) -> None:
    for address in endpoint.instances:
        if placements.get(address, DEFAULT_PLACEMENT).standby:
            t.problem("instances", f"{address} is a standby (standby = true): it never serves reads")


def _check_custom_members(
    t: Table,
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
    server: ServerSettings, clusters: tuple[ClusterConfig, ...], problems: Problems
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
    users: tuple[User, ...], passwordless: list[int], clusters: tuple[ClusterConfig, ...], problems: Problems
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
