"""The resolved configuration as plain data with every secret masked (check-config, SHOW CONFIG)."""

from __future__ import annotations

from dataclasses import asdict, fields
from typing import Any

from proxy.cache.settings import CacheSettings
from proxy.durations import format_duration

from .model import (
    MASK,
    Address,
    ClusterConfig,
    Config,
    DiscoverySettings,
    EndpointConfig,
    FailoverSettings,
    HealthSettings,
    PoolSettings,
    TlsSettings,
    TokenSettings,
)
from .urls import shown_url


def to_display(config: Config) -> dict[str, Any]:
    """The resolved config as plain TOML-shaped data, secrets masked; absent optional values are left out."""
    return {
        "server": _drop_none(
            {
                "admin_listen": _str_or_none(config.server.admin_listen),
                "http_listen": _str_or_none(config.server.http_listen),
                "log_format": config.server.log_format,
                "log_level": config.server.log_level,
                "shutdown_timeout": format_duration(config.server.shutdown_timeout),
                "client_login_timeout": format_duration(config.server.client_login_timeout),
                "admin_allow": list(config.server.admin_allow) or None,
                "http_allow": list(config.server.http_allow) or None,
                "audit_log": config.server.audit_log,
                "audit_statements": config.server.audit_statements,
                "client_connect_rate": config.server.client_connect_rate,
                "client_connect_burst": config.server.client_connect_burst,
                "tokens": _tokens_display(config.server.tokens),
                "zone": config.server.zone or None,
                "region": config.server.region or None,
                "faults": config.server.faults,
                "record_parameters": config.server.record_parameters,
                "workers": config.server.workers,
            }
        ),
        "users": [
            _drop_none(
                {
                    "name": user.name,
                    "password": _mask(user.password),
                    "server_user": user.server_user,
                    "server_password": _mask(user.server_password),
                    "admin": user.admin,
                    "max_client_connections": user.max_client_connections or None,
                    "auth": None if user.auth == "password" else user.auth,
                }
            )
            for user in config.users
        ],
        "clusters": {cluster.name: _cluster_display(cluster) for cluster in config.clusters},
    }


def _cluster_display(cluster: ClusterConfig) -> dict[str, Any]:
    return {
        "engine": cluster.engine,
        "instances": [_instance_display(cluster, a) for a in cluster.instances],
        "client_auth": cluster.client_auth,
        "read_only_functions": list(cluster.read_only_functions),
        "tls": _tls_display(cluster.tls, client_side=True),
        "server_tls": _tls_display(cluster.server_tls, client_side=False),
        "health": {k: v for k, v in _settings_display(cluster.health).items() if k != "tls"},   # = server_tls
        "failover": _settings_display(cluster.failover),
        "pool": _settings_display(cluster.pool),
        "endpoints": [_endpoint_display(e) for e in cluster.endpoints],
        **({"databases": {d.name: {"max_client_connections": d.max_client_connections} for d in cluster.databases}}
           if cluster.databases else {}),
        **({"discover": True, "discovery": _discovery_display(cluster.discovery)} if cluster.discovery.enabled
           else {}),
        **({"cache": _cache_display(cluster.cache)} if cluster.cache is not None else {}),
    }


def _instance_display(cluster: ClusterConfig, address: Address) -> str | dict[str, Any]:
    """A string, or a table as written when the instance has a placement."""
    placement = cluster.placements.get(address)
    if placement is None:
        return str(address)
    shown: dict[str, Any] = {"address": str(address)}
    shown.update({k: v for k, v in asdict(placement).items() if k != "discovered" and v not in ("", None)})
    return shown


def _discovery_display(discovery: DiscoverySettings) -> dict[str, Any]:
    shown = {k: v for k, v in asdict(discovery).items() if k != "enabled" and v not in ("", None)}
    return {k: format_duration(v) if k in ("interval", "grace") else v for k, v in shown.items()}



def _cache_display(cache: CacheSettings) -> dict[str, Any]:
    """[cache] as configured; the Redis password masked."""
    return _drop_none({
        "backend": shown_url(cache.backend), "max_memory": cache.max_memory, "max_entry": cache.max_entry,
        "default_ttl": format_duration(cache.default_ttl),
        "rules": [{"match": r.match, "ttl": format_duration(r.ttl), **({"tables": list(r.tables)} if r.tables else {})}
                  for r in cache.rules],
        "write_functions": {name: list(tables) for name, tables in cache.write_functions} or None,
        "username": cache.username, "password": _mask(cache.password), "tls_ca_file": cache.tls_ca_file,
    })


_DURATION_FIELDS = frozenset(
    {
        "interval",
        "timeout",
        "max_replica_lag",
        "promote_after",
        "borrow_timeout",
        "replay_timeout",
        "idle_timeout",
        "max_lifetime",
        "connect_timeout",
        "client_idle_timeout",
    }
)


def _settings_display(
    settings: TlsSettings | HealthSettings | FailoverSettings | PoolSettings,
) -> dict[str, Any]:
    values = {f.name: getattr(settings, f.name) for f in fields(settings)}
    if values.get("patroni") is not None:
        values["patroni"] = list(values["patroni"]) or None
    for key in ("password", "replication_password", "patroni_password"):
        if key in values:
            values[key] = _mask(values[key])
    return _drop_none({k: format_duration(v) if k in _DURATION_FIELDS else v for k, v in values.items()})


def _endpoint_display(endpoint: EndpointConfig) -> dict[str, Any]:
    shown: dict[str, Any] = {"name": endpoint.name, "listen": str(endpoint.listen), "role": endpoint.role}
    if endpoint.role == "custom":
        if endpoint.instances:
            shown["instances"] = [str(a) for a in endpoint.instances]
        else:
            shown["exclude"] = [str(a) for a in endpoint.exclude]
        shown["kind"] = endpoint.kind
    if endpoint.role == "split":
        shown["read_your_writes"] = endpoint.read_your_writes
    if endpoint.cross_zone != "prefer-local":
        shown["cross_zone"] = endpoint.cross_zone
    if endpoint.allow:
        shown["allow"] = list(endpoint.allow)
    if endpoint.tls is not None:
        shown["tls"] = _tls_display(endpoint.tls, client_side=True)
    return shown


def _tls_display(settings: TlsSettings, client_side: bool) -> dict[str, Any]:
    """Only what is set: the mode alone while TLS is off."""
    shown = _settings_display(settings)
    if settings.mode == "disable":
        return {"mode": "disable"}
    if not client_side or settings.client_cert == "none":
        shown.pop("client_cert", None)
    if settings.min_version == "1.2":
        shown.pop("min_version", None)
    return shown


def _tokens_display(tokens: TokenSettings | None) -> dict[str, Any] | None:
    """Where the secrets come from (variable names, file paths), never the secrets."""
    if tokens is None:
        return None
    shown: dict[str, Any] = {}
    for key, source in tokens.sources:
        if key.startswith("previous_"):
            shown.setdefault(key, []).append(source)
        else:
            shown[key] = source
    shown.update(max_ttl=format_duration(tokens.max_ttl), rotation_grace=format_duration(tokens.rotation_grace),
                 allow_plaintext_tokens=tokens.allow_plaintext_tokens)
    return shown


def _mask(secret: str | None) -> str | None:
    return None if secret is None else MASK


def _str_or_none(value: object | None) -> str | None:
    return None if value is None else str(value)


def _drop_none(values: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in values.items() if v is not None}


