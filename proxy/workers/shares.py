"""How per-proxy limits are split across N workers (pure): each worker gets its share in its own config.

A limit L becomes L // N in every worker plus one more in the first L % N workers, so the shares add
up to L exactly. Where a share of 0 would mean "no limit" (max_client_connections) or "never"
(max_server_connections), a worker gets at least 1: below N the proxy-wide limit is N, not L.
min_idle shares may be 0. The connect rate per address is divided (a float rate, burst at least 1):
the kernel spreads connections from one address over the workers by port, so the sum is kept.
"""

from __future__ import annotations

from dataclasses import replace

from ..config import ClusterConfig, Config, User


def share(total: int, index: int, count: int, at_least: int = 1) -> int:
    """Worker `index`'s part of `total` (0 = unlimited stays 0)."""
    if total <= 0:
        return total
    part = total // count + (1 if index < total % count else 0)
    return max(at_least, part)


def worker_config(config: Config, index: int, count: int) -> Config:
    """The config worker `index` of `count` runs: its shares of the limits, no admin console or HTTP
    service (the control process has them)."""
    server = replace(config.server, admin_listen=None, http_listen=None)
    users = tuple(_user_share(u, index, count) for u in config.users)
    clusters = tuple(_cluster_share(c, index, count) for c in config.clusters)
    return replace(config, server=server, users=users, clusters=clusters)


def connect_rate_share(rate: int, burst: int, count: int) -> tuple[float, int]:
    """(rate per second, burst) of one worker for [server] client_connect_rate / client_connect_burst."""
    return rate / count, max(1, -(-(burst or rate) // count))


def _user_share(user: User, index: int, count: int) -> User:
    if not user.max_client_connections:
        return user
    return replace(user, max_client_connections=share(user.max_client_connections, index, count))


def _cluster_share(cluster: ClusterConfig, index: int, count: int) -> ClusterConfig:
    pool = cluster.pool
    pool = replace(pool, max_server_connections=share(pool.max_server_connections, index, count),
                   min_idle=share(pool.min_idle, index, count, at_least=0),
                   max_client_connections=share(pool.max_client_connections, index, count))
    databases = tuple(replace(d, max_client_connections=share(d.max_client_connections, index, count))
                      for d in cluster.databases)
    return replace(cluster, pool=pool, databases=databases)
