"""What changed between two configurations, for reload (SIGHUP / RELOAD)."""

from __future__ import annotations

from dataclasses import dataclass, fields

from .model import Address, ClusterConfig, Config


@dataclass(frozen=True)
class ClusterDiff:
    """What changed inside a cluster present in both configs."""

    name: str
    instances_added: tuple[Address, ...] = ()
    instances_removed: tuple[Address, ...] = ()
    endpoints_added: tuple[str, ...] = ()
    endpoints_removed: tuple[str, ...] = ()
    endpoints_changed: tuple[str, ...] = ()
    client_auth_changed: bool = False
    tls_changed: bool = False
    server_tls_changed: bool = False
    health_changed: bool = False
    failover_changed: bool = False
    pool_changed: bool = False
    read_only_functions_changed: bool = False
    databases_changed: bool = False
    placements_changed: bool = False    # zone, region, promotion_tier, weight or standby of an instance
    discovery_changed: bool = False

    @property
    def changed(self) -> bool:
        return any(getattr(self, f.name) for f in fields(self) if f.name != "name")


@dataclass(frozen=True)
class ConfigDiff:
    """Differences between two configs; requires_restart names settings a reload cannot apply."""

    clusters_added: tuple[str, ...] = ()
    clusters_removed: tuple[str, ...] = ()
    clusters_changed: tuple[ClusterDiff, ...] = ()
    users_added: tuple[str, ...] = ()
    users_removed: tuple[str, ...] = ()
    users_changed: tuple[str, ...] = ()
    server_changed: bool = False
    requires_restart: tuple[str, ...] = ()

    @property
    def empty(self) -> bool:
        return not any(getattr(self, f.name) for f in fields(self))


def diff(old: Config, new: Config) -> ConfigDiff:
    """Compare two configs for a reload. Only the order of instances/endpoints changing counts as no change.

    Listener changes of [server] and a cluster's engine cannot be applied live and are listed in
    requires_restart (as "server.admin_listen", "clusters.<name>.engine", ...).
    """
    old_clusters = {c.name: c for c in old.clusters}
    new_clusters = {c.name: c for c in new.clusters}
    old_users = {u.name: u for u in old.users}
    new_users = {u.name: u for u in new.users}
    restart = [
        f"server.{name}"
        for name in ("admin_listen", "http_listen", "workers")
        if getattr(old.server, name) != getattr(new.server, name)
    ]
    changed: list[ClusterDiff] = []
    for name in old_clusters.keys() & new_clusters.keys():
        if old_clusters[name].engine != new_clusters[name].engine:
            restart.append(f"clusters.{name}.engine")
        cluster_diff = _diff_cluster(old_clusters[name], new_clusters[name])
        if cluster_diff.changed:
            changed.append(cluster_diff)
    return ConfigDiff(
        clusters_added=tuple(n for n in new_clusters if n not in old_clusters),
        clusters_removed=tuple(n for n in old_clusters if n not in new_clusters),
        clusters_changed=tuple(sorted(changed, key=lambda d: d.name)),
        users_added=tuple(n for n in new_users if n not in old_users),
        users_removed=tuple(n for n in old_users if n not in new_users),
        users_changed=tuple(n for n in new_users if n in old_users and old_users[n] != new_users[n]),
        server_changed=old.server != new.server,
        requires_restart=tuple(restart),
    )


def _diff_cluster(old: ClusterConfig, new: ClusterConfig) -> ClusterDiff:
    old_endpoints = {e.name: e for e in old.endpoints}
    new_endpoints = {e.name: e for e in new.endpoints}
    return ClusterDiff(
        name=new.name,
        instances_added=tuple(a for a in new.instances if a not in old.instances),
        instances_removed=tuple(a for a in old.instances if a not in new.instances),
        endpoints_added=tuple(n for n in new_endpoints if n not in old_endpoints),
        endpoints_removed=tuple(n for n in old_endpoints if n not in new_endpoints),
        endpoints_changed=tuple(
            n for n in new_endpoints if n in old_endpoints and old_endpoints[n] != new_endpoints[n]
        ),
        client_auth_changed=old.client_auth != new.client_auth,
        tls_changed=old.tls != new.tls,
        server_tls_changed=old.server_tls != new.server_tls,
        health_changed=old.health != new.health,
        failover_changed=old.failover != new.failover,
        pool_changed=old.pool != new.pool,
        read_only_functions_changed=set(old.read_only_functions) != set(new.read_only_functions),
        databases_changed=old.databases != new.databases,
        placements_changed=dict(old.placements) != dict(new.placements),
        discovery_changed=old.discovery != new.discovery,
    )
