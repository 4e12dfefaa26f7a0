"""Runtime state of one configured cluster: its pools, its clients, and where endpoints send work."""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Callable, Collection, Hashable, Iterable
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from ..cache.front import QueryCache
from ..config import Address, ClusterConfig, EndpointConfig, User
from ..engines import ServerLink, get_engine
from ..errors import PoolRerouted, ServerConnectFailed, ServerUnavailable
from ..metrics import Metrics
from ..pool.pool import Pool, SharedLimit
from ..topology import (
    FailoverCoordinator,
    SwitchoverRefused,
    SwitchoverResult,
    TopologyMonitor,
    TopologySnapshot,
)
from ..topology.discovery import ReplicaDiscovery
from ..topology.lease import holder_name
from ..topology.patroni_watch import PatroniWatcher
from ..topology.select import RefusedConnections, choose, targets

if TYPE_CHECKING:
    from ..faults.injector import FaultInjector
    from ..mirror.sender import Mirror

log = logging.getLogger("dbproxy.cluster")

PoolKey = tuple[Address, str, str, Hashable]   # (instance, proxy user, database, engine variant)
C = TypeVar("C", bound=ServerLink)   # the engine's server connection class   # (instance, server user, database)

# A connect failure with one of these says "this instance is unavailable", not "this login is wrong":
# the borrow tries another target instead of failing the client.
_INSTANCE_UNAVAILABLE = frozenset({"08001", "08006", "57P01", "57P02", "57P03"})
# A borrower waiting for a target looks again on every new topology snapshot, and at least this often.
RETARGET_INTERVAL = 0.25


class Cluster(Generic[C]):
    """Pools per (instance, user, database), endpoint targets, pause/resume, client accounting.

    Engine-neutral: the engine adapter (config `engine`) opens server connections, classifies
    statements, probes instances and carries out failover; its sessions keep what they share in
    `engine_state`.
    """

    def __init__(self, config: ClusterConfig,
                 current_user: Callable[[str], User | None] = lambda name: None,
                 configured_users: Callable[[], Iterable[User]] = tuple) -> None:
        self.config = config
        self.current_user = current_user   # the configured user by name, as of the last reload
        self.configured_users = configured_users   # every configured user, as of the last reload
        self.name = config.name
        self.engine = get_engine(config.engine)
        self.engine_state: Any = self.engine.cluster_state()
        self.pools: dict[PoolKey, Pool[C]] = {}
        # The pools of configured users, kept while empty (see open_configured_pools).
        self._configured: frozenset[PoolKey] = frozenset()
        self._limits: dict[tuple[Address, str, str], SharedLimit] = {}   # per (instance, user, database)
        # read_your_writes: the latest write position of each proxy user's clients (split endpoints).
        self.write_positions: dict[str, int] = {}
        # ...and the users whose latest write position could not be read (a client left while the
        # proxy was reading it): their reads go to the primary until this time.monotonic().
        self.write_unknown_until: dict[str, float] = {}
        # ...and the users with writes whose position is still being read (PostgreSQL: positions.py).
        self.writes_pending: dict[str, int] = {}
        self.classifier = self.engine.classifier(config.read_only_functions)
        # The query-result cache (SPEC §11), None unless [clusters.<name>.cache] is configured.
        self.cache: QueryCache | None = QueryCache(config.name, config.cache) if config.cache is not None else None
        self.clients = 0
        self.removed = False   # dropped from the config by a reload; kept while clients remain
        self.borrowing = 0   # clients waiting in borrow() for resume, a target, a slot or a new connection
        self._resumed = asyncio.Event()
        self._resumed.set()
        self._pools_by_instance: dict[Address, list[Pool[C]]] = {}
        self._rng = random.Random()
        self._refused = RefusedConnections(time.monotonic)
        # Set (and replaced) whenever the monitor publishes a snapshot: borrowers waiting for a
        # target (no writer during a failover, no usable instance) wake up on it.
        self._next_snapshot = asyncio.Event()
        # Fault injection (SPEC §13): the process's injector while it holds faults, else None.
        self.faults: FaultInjector | None = None
        self.mirror: Mirror | None = None   # mirror = {...} (SPEC §13), made by ProxyApp
        self.monitor = self._make_monitor(config)
        if self.monitor is not None:
            self.monitor.snapshot_listeners.append(self._snapshot_published)
            self.monitor.blackholed = self._blackholed
        self.failover = self._make_failover(config)
        # Failover mode "patroni": Patroni's REST API says who the writer may be (None otherwise).
        self.patroni = self._make_patroni(config)
        self.discovery = self._make_discovery(config)
        # Server connections handed out by pools no longer tracked, per instance (see handouts()).
        self.retired_handouts: dict[Address, int] = {}
        # Where each endpoint role may send work: the topology layer, or the first instance for
        # engines without a probe adapter yet.
        self.choose_target: Callable[[EndpointConfig, str, int | None], Address | None] = (
            self._first_instance if self.monitor is None else self._route)

    # ---- topology ---------------------------------------------------------------------------

    def _make_monitor(self, config: ClusterConfig) -> TopologyMonitor | None:
        factory = self.engine.probe_factory()
        if factory is None:
            return None
        return TopologyMonitor(config.name, config.instances, config.health, factory,
                               on_writer_change=self._writer_changed, placements=config.placements)

    def _make_discovery(self, config: ClusterConfig) -> ReplicaDiscovery | None:
        if self.monitor is None or not config.discovery.enabled:
            return None
        lister = self.engine.replica_lister(config.health, config.discovery)
        if lister is None:
            return None
        return ReplicaDiscovery(self.monitor, config.discovery, lister, lambda: self.config.instances,
                                self._drain_instance)

    def _make_failover(self, config: ClusterConfig) -> FailoverCoordinator | None:
        actions = self.engine.failover_actions(config.health, config.failover)
        if self.monitor is None or actions is None:
            return None
        return FailoverCoordinator(self.monitor, config.failover, actions, holder=holder_name(config))

    def _make_patroni(self, config: ClusterConfig) -> PatroniWatcher | None:
        if self.monitor is None or config.failover.mode != "patroni":
            return None
        return PatroniWatcher(self.monitor, config.failover, config.health)

    def _apply_patroni(self, old: ClusterConfig) -> None:
        """After a reload: a new watcher when mode "patroni" or its settings changed, none without it."""
        if self.monitor is None or _patroni_settings(old) == _patroni_settings(self.config):
            return
        if self.patroni is not None:
            self.patroni.stop()
        if self.config.failover.mode != "patroni":
            self.monitor.set_authority(None)
        self.patroni = self._make_patroni(self.config)
        if self.patroni is not None:
            self.patroni.start()

    @property
    def topology(self) -> TopologySnapshot | None:
        """The latest topology snapshot (None for engines without a probe adapter)."""
        return None if self.monitor is None else self.monitor.snapshot

    async def start(self, metrics: Metrics | None = None) -> None:
        """Start probing; returns once every instance was probed once (bounded by health.timeout)."""
        if self.monitor is not None:
            self.monitor.metrics = metrics
            self.monitor.start()
            if self.patroni is not None:
                self.patroni.start()
                await self.patroni.first_answer(self.config.health.timeout * 2 + 0.5)
            await self.monitor.wait_probed(self.config.health.timeout + 0.5)
        if self.discovery is not None:
            self.discovery.start()
        self.open_configured_pools()
        if self.failover is not None:
            self.failover.start()

    def apply_instances(self, old: ClusterConfig | None = None) -> None:
        """After a reload replaced self.config (`old` before): probe new instances, stop routing to and drain
        removed ones, follow Patroni per the new settings."""
        if self.monitor is None:
            return
        self.monitor.set_health(self.config.health)
        if old is not None:
            self._apply_patroni(old)
        if self.failover is not None:
            actions = self.engine.failover_actions(self.config.health, self.config.failover)
            if actions is not None:
                self.failover.actions = actions
            self.failover.settings = self.config.failover
            self.failover.check_privileges_soon()
        self._apply_discovery()
        discovered = self.discovery.discovered if self.discovery is not None else frozenset()
        for address in self.config.instances:
            self.monitor.add_instance(address, self.config.placement(address))
            self.monitor.set_placement(address, self.config.placement(address))
        for address in self.monitor.snapshot.addresses:
            if address not in self.config.instances and address not in discovered:
                self.monitor.remove_instance(address)
                self._drain_instance(address)

    def _apply_discovery(self) -> None:
        """A reload changed the discovery settings: restart it (turned off: discovered replicas leave)."""
        settings = self.config.discovery
        if self.discovery is not None and self.discovery.settings == settings:
            return
        if self.discovery is not None:
            self.discovery.stop()
            if not settings.enabled:
                for address in self.discovery.discovered - set(self.config.instances):
                    self.monitor.remove_instance(address)   # type: ignore[union-attr]
                    self._drain_instance(address)
                self.discovery = None
                return
            self.discovery.settings = settings
            self.discovery.start()
            return
        self.discovery = self._make_discovery(self.config)
        if self.discovery is not None:
            self.discovery.start()

    def _drain_instance(self, address: Address) -> None:
        """Stop using an instance that left the topology (removed by a reload, or dropped by discovery)."""
        log.info("cluster %s: draining pools of removed instance %s", self.name, address)
        for pool in self._pools_by_instance.get(address, ()):
            pool.close()

    def _writer_changed(self, old: Address | None, new: Address | None) -> None:
        # Both instances changed role: retire their pooled connections (borrowed ones on release).
        for address in (old, new):
            if address is not None and self._pools_by_instance.get(address):
                log.info("cluster %s: expiring pooled connections of %s (role changed)", self.name, address)
                for pool in self._pools_by_instance[address]:
                    pool.expire()
        # Clients queued for the old writer's connections would wait for ones that never come back
        # (it died) or that are no longer the writer: they borrow again, routed to the new topology.
        if old is not None:
            queued = sum(pool.reroute_waiters(f"{old} is no longer the writer")
                         for pool in self._pools_by_instance.get(old, ()))
            if queued:
                log.info("cluster %s: %d queued borrows of %s routed again", self.name, queued, old)

    def _route(self, endpoint: EndpointConfig, route: str, min_position: int | None = None) -> Address | None:
        assert self.monitor is not None
        snapshot = self.monitor.snapshot
        if endpoint.role == "writer" and not self._refused and self.faults is None:
            return snapshot.writer   # the usual case, without choose()'s generality
        return choose(snapshot, endpoint, route, self.outstanding, self._rng, self._unusable(snapshot), min_position,
                      self.config.locality)

    def _unusable(self, snapshot: TopologySnapshot) -> Collection[Address]:
        """Instances routing skips now: those that just refused a connection, and blackholed ones."""
        refused = self._refused.current(snapshot)
        if self.faults is None:
            return refused
        dead = self.faults.avoided(self.name, snapshot.addresses)
        return frozenset(refused) | dead if dead else refused

    def _blackholed(self, instance: Address) -> str | None:
        """Before each probe of `instance`: the failure to report instead if it is blackholed (SPEC §13)."""
        return None if self.faults is None else self.faults.probe_blackholed(self.name, instance)

    def _snapshot_published(self, snapshot: TopologySnapshot) -> None:
        published, self._next_snapshot = self._next_snapshot, asyncio.Event()
        published.set()

    async def next_snapshot(self, timeout: float) -> None:
        """Wait (at most timeout seconds) until the monitor publishes its next topology snapshot."""
        try:
            await asyncio.wait_for(self._next_snapshot.wait(), timeout)
        except TimeoutError:
            pass

    def outstanding(self, instance: Address) -> int:
        """Server connections borrowed (or being opened) on an instance, over all its pools."""
        pools = self._pools_by_instance.get(instance)
        if not pools:
            return 0
        if len(pools) == 1:   # the usual case: one (user, database) per instance
            return len(pools[0].in_use) + pools[0].opening
        return sum(len(p.in_use) + p.opening for p in pools)

    def _connect_refused(self, instance: Address, exc: ServerConnectFailed) -> bool:
        """Note an instance that refused a connection; True if the borrow should try another target."""
        if self.monitor is None or exc.sqlstate not in _INSTANCE_UNAVAILABLE:
            return False
        health = self.config.health
        log.info("cluster %s: %s refused a connection (%s); routing around it", self.name, instance, exc.message)
        self._refused.add(instance, health.interval * health.failure_threshold + health.timeout)
        self.monitor.probe_now(instance)
        return True

    # ---- targets ----------------------------------------------------------------------------

    def _first_instance(self, endpoint: EndpointConfig, route: str,
                        min_position: int | None = None) -> Address | None:
        """Static routing for engines without a probe adapter: the primary is the first instance,
        replica work goes to the least busy of the others (the first one when there are no others)."""
        instances = endpoint.instances if endpoint.role == "custom" and endpoint.instances else self.config.instances
        if not instances:
            return None
        if route == "primary" and endpoint.role != "custom":
            return instances[0]
        candidates = instances[1:] if endpoint.role != "custom" and len(instances) > 1 else instances
        if len(candidates) == 1:
            return candidates[0]
        least = min(self.outstanding(a) for a in candidates)
        return self._rng.choice([a for a in candidates if self.outstanding(a) == least])

    def endpoint_targets(self, endpoint: EndpointConfig) -> list[Address]:
        """Every instance the endpoint may send work to right now, by any route."""
        snapshot = self.topology
        if snapshot is not None:
            return targets(snapshot, endpoint)
        target = self.choose_target(endpoint, "primary", None)   # static routing: one fixed instance
        return [target] if target is not None else []

    # ---- pools ------------------------------------------------------------------------------

    def configured_pool_keys(self) -> frozenset[PoolKey]:
        """The pools operators expect before any client came (PgBouncer lists its configured ones):
        every non-admin configured user with the engine's default database (PostgreSQL: the user's
        name), on every instance some endpoint may send work to now. None for engines whose pool
        key depends on the client's login (MySQL)."""
        instances = dict.fromkeys(a for e in self.config.endpoints for a in self.endpoint_targets(e))
        keys: list[PoolKey] = []
        for user in self.configured_users():
            pool = None if user.admin else self.engine.default_pool(user.name)
            if pool is not None:
                keys += [(instance, user.name, *pool) for instance in instances]
        return frozenset(keys)

    def open_configured_pools(self) -> None:
        """Make the configured pools that are missing (empty: min_idle, if set, fills them in
        maintain); after the first probe and on every maintenance tick, so they follow the topology
        and reloads. Pools of configured users outside it go away once empty, as any other."""
        self._configured = self.configured_pool_keys()
        for key in self._configured:
            existing = self.pools.get(key)
            user = self.current_user(key[1])
            if (existing is None or existing.closed) and user is not None:
                self.pool(key[0], user, key[2], key[3])


    def pool(self, instance: Address, user: User, database: str, variant: Hashable = None) -> Pool[C]:
        # Keyed by the proxy user, not the server user: a pool's connections were opened with its
        # creator's server credentials, which another proxy user must not ride on.
        # `variant`: what the engine fixes at login and a client must match (MySQL: capabilities, charset).
        key = (instance, user.name, database, variant)
        pool = self.pools.get(key)
        if pool is None or pool.closed:
            settings = self.config.pool

            async def connect() -> C:
                # Reloaded settings and credentials (a rotated server_password) apply to new connections.
                current = self.config.pool
                login = self.current_user(user.name) or user
                conn: C = await self.engine.connect(  # type: ignore[assignment]
                    instance, login.server_user, login.server_password, database, current, variant,
                    self.config.server_tls)
                return conn

            # The variants of one (instance, user, database) share max_server_connections (SPEC §2).
            shared = self._limits.get(key[:3])
            if shared is None:
                shared = self._limits[key[:3]] = SharedLimit(settings.max_server_connections)
            pool = Pool(f"{self.name}/{instance}/{user.name}/{database}", connect,
                        settings.max_server_connections, settings.min_idle, settings.idle_timeout,
                        settings.max_lifetime, shared=shared)
            self._track_pool(key, pool)
        return pool

    def note_write(self, user: str, position: int) -> None:
        """A client of `user` wrote up to `position`: that user's later reads need a replica this far."""
        if position > self.write_positions.get(user, -1):
            self.write_positions[user] = position

    def write_pending(self, user: str) -> None:
        """A client of `user` committed a write whose position is being read: its reads go to the primary."""
        self.writes_pending[user] = self.writes_pending.get(user, 0) + 1

    def write_settled(self, user: str, position: int | None, unknown_seconds: float) -> None:
        """The position of a pending write of `user` is known (None: could not be read; the user's reads
        go to the primary for `unknown_seconds`)."""
        left = self.writes_pending.get(user, 1) - 1
        if left > 0:
            self.writes_pending[user] = left
        else:
            self.writes_pending.pop(user, None)
        if position is None:
            self.note_unknown_write(user, unknown_seconds)
        else:
            self.note_write(user, position)

    def note_unknown_write(self, user: str, seconds: float) -> None:
        """A client of `user` may have written at a position nobody read: that user's reads go to
        the primary for `seconds` (the fail-safe a single client already applies to itself)."""
        self.write_unknown_until[user] = time.monotonic() + seconds

    def retire_pools(self, database: str | None = None) -> tuple[int, int]:
        """Retire the pools (of one database, or all) on every instance: idle connections close now,
        borrowed ones when given back. Returns (pools, idle connections closed)."""
        pools = [pool for (_, _, name, _), pool in self.pools.items() if database is None or name == database]
        idle = sum(len(pool.idle) for pool in pools)
        for pool in pools:
            pool.expire()
        return len(pools), idle

    def _track_pool(self, key: PoolKey, pool: Pool[C]) -> None:
        old = self.pools.get(key)
        if old is not None:
            self._forget_pool(key[0], old)
        self._pools_by_instance.setdefault(key[0], []).append(pool)
        self.pools[key] = pool

    def handouts(self) -> dict[Address, int]:
        """Server connections handed out per instance since start (dbproxy_zone_requests_total): the
        pools' own counts (attributes, off the hot path's hashing) plus those of pools already gone."""
        counts = dict(self.retired_handouts)
        for instance, pools in self._pools_by_instance.items():
            counts[instance] = counts.get(instance, 0) + sum(pool.handed_out for pool in pools)
        return counts

    def _forget_pool(self, instance: Address, pool: Pool[C]) -> None:
        same_instance = self._pools_by_instance.get(instance, [])
        if pool in same_instance:
            same_instance.remove(pool)
            if pool.handed_out:
                self.retired_handouts[instance] = self.retired_handouts.get(instance, 0) + pool.handed_out
        if not same_instance:
            self._pools_by_instance.pop(instance, None)

    def take_idle(self, endpoint: EndpointConfig, route: str, user: User, database: str,
                  min_position: int | None = None, variant: Hashable = None) -> tuple[C, Pool[C]] | None:
        """A ready server connection without waiting, if one is idle right now (the fast path)."""
        if not self._resumed.is_set():
            return None
        target = self.choose_target(endpoint, route, min_position)
        if target is None:
            return None
        pool = self.pools.get((target, user.name, database, variant))   # self.pool() without its call
        if pool is None or pool.closed:
            pool = self.pool(target, user, database, variant)
        conn = pool._take_idle()
        if conn is None:
            return None
        pool.in_use.add(conn)
        pool.borrows += 1
        pool.handed_out += 1
        return conn, pool

    def park(self, endpoint: EndpointConfig, route: str, user: User, database: str,
             min_position: int | None = None, variant: Hashable = None) -> tuple[asyncio.Future[C], Pool[C]] | None:
        """Queue for the target's pool without a task (Pool.park) when that is all borrow() would do:
        the cluster is not paused, a target is chosen and its pool has to wait. Else None: borrow()."""
        if not self._resumed.is_set():
            return None
        target = self.choose_target(endpoint, route, min_position)
        if target is None:
            return None
        pool = self.pools.get((target, user.name, database, variant))
        if pool is None or pool.closed:
            return None
        fut = pool.park(max(0.001, self.config.failover.borrow_timeout))
        if fut is None:
            return None
        self.borrowing += 1
        fut.add_done_callback(self._parked_done)
        return fut, pool

    def _parked_done(self, fut: asyncio.Future[Any]) -> None:
        self.borrowing -= 1

    async def borrow(self, endpoint: EndpointConfig, route: str, user: User, database: str,
                     min_position: int | None = None, variant: Hashable = None) -> tuple[C, Pool[C]]:
        """A server connection for the endpoint; waits (bounded) for a target, for resume, for a slot."""
        self.borrowing += 1
        try:
            return await self._borrow(endpoint, route, user, database, min_position, variant)
        finally:
            self.borrowing -= 1

    async def _borrow(self, endpoint: EndpointConfig, route: str, user: User, database: str,
                      min_position: int | None, variant: Hashable) -> tuple[C, Pool[C]]:
        deadline = time.monotonic() + self.config.failover.borrow_timeout
        while True:
            target = await self._wait_for_target(endpoint, route, deadline, min_position)
            pool = self.pool(target, user, database, variant)
            try:
                conn = await pool.borrow(max(0.001, deadline - time.monotonic()))
            except PoolRerouted:
                continue   # the target stopped being the writer while this borrow queued: route again
            except ServerConnectFailed as exc:
                if time.monotonic() >= deadline or not self._connect_refused(target, exc):
                    raise
                continue
            pool.handed_out += 1
            return conn, pool

    async def _wait_for_target(self, endpoint: EndpointConfig, route: str, deadline: float,
                               min_position: int | None = None) -> Address:
        while True:
            if not self._resumed.is_set():
                await self._wait_until(self._resumed.wait(), deadline, "is paused")
            target = self.choose_target(endpoint, route, min_position)
            if target is not None:
                return target
            now = time.monotonic()
            if now >= deadline:
                raise ServerUnavailable(
                    f"cluster {self.name!r} has no available {_role_word(endpoint)} "
                    f"(waited {self.config.failover.borrow_timeout:g}s)")
            # Look again when the topology changes; at least every RETARGET_INTERVAL too, for what
            # changes without a new snapshot (an instance that refused a connection is avoided
            # only for a while).
            try:
                await asyncio.wait_for(self._next_snapshot.wait(), min(RETARGET_INTERVAL, deadline - now))
            except TimeoutError:
                pass

    async def _wait_until(self, aw: object, deadline: float, what: str) -> None:
        try:
            await asyncio.wait_for(aw, max(0.0, deadline - time.monotonic()))  # type: ignore[arg-type]
        except TimeoutError as exc:
            raise ServerUnavailable(f"cluster {self.name!r} {what}") from exc

    # ---- admin ------------------------------------------------------------------------------

    def pause(self) -> None:
        self._resumed.clear()

    def resume(self) -> None:
        self._resumed.set()

    @property
    def paused(self) -> bool:
        return not self._resumed.is_set()

    def maintain(self) -> None:
        self.open_configured_pools()
        for key, pool in list(self.pools.items()):
            if pool.closed:
                if pool.size == 0:   # a drained pool of a removed instance
                    del self.pools[key]
                    self._forget_pool(key[0], pool)
                continue
            if pool.size == 0 and pool.min_idle == 0 and not pool.waiters and key not in self._configured:
                # Unused (or a database name that does not exist): made again on demand.
                del self.pools[key]
                self._forget_pool(key[0], pool)
                continue
            pool.maintain()

    # ---- planned switchover -----------------------------------------------------------------

    async def switchover(self, target: Address | None) -> SwitchoverResult:
        """Admin FAILOVER: move the writer to `target` (or the most advanced replica) with new
        transactions paused meanwhile; see FailoverCoordinator.switchover. Raises SwitchoverRefused
        or topology.ActionFailed."""
        if self.patroni is not None:    # mode "patroni": Patroni switches over, dbproxy follows
            return await self.patroni.switchover(target, self)
        if self.failover is None:
            raise SwitchoverRefused(f"cluster {self.name}: switchover is not supported for engine "
                                    f"{self.config.engine} yet")
        return await self.failover.switchover(target, self)

    def in_flight(self, instance: Address) -> int:
        """Work that may still reach `instance`: borrowers queued at or connecting to its pools, and
        borrowed connections in a transaction or not yet attached to their client."""
        count = 0
        for pool in self._pools_by_instance.get(instance, ()):
            count += pool.waiting() + pool.opening
            count += sum(1 for conn in pool.in_use if conn.owner is None or not conn.idle)
        return count

    def close_pinned(self, instance: Address, reason: str) -> int:
        """Close the borrowed server connections to `instance` (pinned or session-mode clients, who
        are then disconnected: their session state lived there); returns how many."""
        conns = [conn for pool in self._pools_by_instance.get(instance, ()) for conn in pool.in_use]
        for conn in conns:
            conn.close(reason)
        return len(conns)

    def close(self) -> None:
        if self.patroni is not None:
            self.patroni.stop()
        if self.discovery is not None:
            self.discovery.stop()
        if self.mirror is not None:
            self.mirror.stop()
        if self.failover is not None:
            self.failover.close()
        if self.monitor is not None:
            self.monitor.stop()
        for pool in self.pools.values():
            pool.close()
        close_state = getattr(self.engine_state, "close", None)
        if close_state is not None:
            close_state()   # the engine's own connections (PostgreSQL: the read_your_writes position reader)
        if self.cache is not None:
            cache, self.cache = self.cache, None
            try:
                asyncio.get_running_loop().create_task(cache.close())
            except RuntimeError:
                pass


def _role_word(endpoint: EndpointConfig) -> str:
    return {"writer": "writer (primary)", "reader": "reader", "split": "instance",
            "custom": "instance"}.get(endpoint.role, "instance")


def _patroni_settings(config: ClusterConfig) -> tuple[object, ...]:
    """What a PatroniWatcher is made from (a reload changing none of it keeps the watcher)."""
    f, h = config.failover, config.health
    return (f.mode, f.patroni, f.patroni_user, f.patroni_password, f.patroni_ca, h.interval, h.timeout)
