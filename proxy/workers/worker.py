"""A worker process: listeners on the shared ports (SO_REUSEPORT), client sessions and its share of the pools.

Started by the control process as `python -m proxy.workers.worker --fd N` with one end of a
socketpair; it gets its config (its share of the limits), the topology and every command from
there, and exits when the channel closes (the control process is gone) or on "drain".
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import logging
import signal
import socket
from collections.abc import Callable, Sequence
from typing import Any

from ..admin import commands, views
from ..admin.commands import AdminError
from ..app import ProxyApp
from ..config import Address, ClusterConfig, Config
from ..core.admission import ConnectRateLimiter
from ..core.cluster import Cluster
from ..logs import setup_logging
from ..topology import FailoverCoordinator, InstanceState, TopologyMonitor, TopologySnapshot
from ..topology.patroni_watch import PatroniWatcher
from .channel import Hello, Notice
from .link import Link
from .remote_topology import RemoteTopology
from .shares import connect_rate_share

log = logging.getLogger("dbproxy.workers")


class WorkerApp(ProxyApp):
    """A ProxyApp serving clients on shared ports, its topology and commands from the control process."""

    def __init__(self, hello: Hello, link: Link) -> None:
        self.index, self.count = hello.index, hello.count
        self.link = link
        self._snapshots: dict[str, TopologySnapshot] = dict(hello.snapshots)
        super().__init__(hello.config)
        self.reuse_port = True
        # Client ids (pids) and server connection ids stay apart across workers: each worker takes
        # the numbers equal to its index modulo the count, so SHOW CLIENTS / SERVERS merge without clashes.
        self._pid_step = self.count
        self._next_pid = self._next_pid // self.count * self.count + self.index
        _space_server_ids(self.index, self.count)
        self._set_connect_rate(hello.config)
        for name in hello.paused:
            if name in self.clusters:
                self.clusters[name].pause()

    def _new_cluster(self, config: ClusterConfig) -> Cluster[Any]:
        return WorkerCluster(config, self)

    def _set_connect_rate(self, config: Config) -> None:
        settings = config.server
        if settings.client_connect_rate:
            rate, burst = connect_rate_share(settings.client_connect_rate, settings.client_connect_burst, self.count)
            self.connect_rate = ConnectRateLimiter(rate, burst)

    async def apply_config(self, new: Config) -> list[str]:
        problems = await super().apply_config(new)
        self._set_connect_rate(new)
        return problems

    def _ask_probe(self, cluster: str, address: Address) -> None:
        self.link.notify("probe_now", (cluster, address))

    def cancel(self, pid: int, key: int, done: Callable[[], None] | None = None) -> None:
        """A CancelRequest for a client of another worker (the kernel chose this one) goes through the
        control process to every worker."""
        if pid in self._by_pid:
            super().cancel(pid, key, done)
            return
        self.link.notify("cancel", (pid, key))
        if done is not None:
            done()

    # ---- from the control process --------------------------------------------------------------

    def on_notice(self, notice: Notice) -> None:
        if notice.kind == "topology":
            name, snapshot = notice.payload
            cluster = self.clusters.get(name)
            if cluster is not None and isinstance(cluster.monitor, RemoteTopology):
                cluster.monitor.apply(snapshot)
        elif notice.kind in ("pause", "resume"):
            cluster = self.clusters.get(notice.payload)
            if cluster is not None:
                cluster.pause() if notice.kind == "pause" else cluster.resume()
        elif notice.kind == "close_pinned":
            name, address, reason = notice.payload
            cluster = self.clusters.get(name)
            if cluster is not None:
                cluster.close_pinned(address, reason)
        elif notice.kind == "cancel":
            pid, key = notice.payload
            if pid in self._by_pid:
                super().cancel(pid, key)
        elif notice.kind == "drain":
            if notice.payload is not None:
                self.config = _with_shutdown_timeout(self.config, notice.payload)
            self.stopping.set()

    async def on_request(self, kind: str, payload: Any) -> Any:
        if kind == "admin":
            try:
                return await commands.execute(self, payload)
            except AdminError as exc:
                return ("error", exc.sqlstate, exc.message, exc.hint)
        if kind == "metrics":
            return list(self.metrics.registry.collect())
        if kind == "status":
            return views.status(self)
        if kind == "config":
            config, snapshots = payload
            self._snapshots.update(snapshots)
            return await self.apply_config(config)
        if kind == "in_flight":
            name, instances = payload
            cluster = self.clusters.get(name)
            return [cluster.in_flight(a) if cluster is not None else 0 for a in instances]
        raise ValueError(f"unknown request {kind!r}")


class WorkerCluster(Cluster[Any]):
    """A worker's cluster: pools and routing here; its topology is the control process's snapshots
    (RemoteTopology), and failover and Patroni are the control process's alone."""

    def __init__(self, config: ClusterConfig, app: WorkerApp) -> None:
        self._app = app   # before Cluster.__init__, which makes the monitor
        super().__init__(config, app._configured_user, app._configured_users)

    def _make_monitor(self, config: ClusterConfig) -> TopologyMonitor | None:
        if self.engine.probe_factory() is None:
            return None
        snapshot = self._app._snapshots.get(config.name) or TopologySnapshot(
            config.name, tuple(InstanceState(a) for a in config.instances))
        return RemoteTopology(config.name, snapshot, config.health, self._app._ask_probe,
                              on_writer_change=self._writer_changed)

    def _make_failover(self, config: ClusterConfig) -> FailoverCoordinator | None:
        return None

    def _make_patroni(self, config: ClusterConfig) -> PatroniWatcher | None:
        return None


def _space_server_ids(index: int, count: int) -> None:
    from ..engines.mysql import server as mysql_server
    from ..engines.postgres import server as postgres_server

    postgres_server._ids = itertools.count(index + 1, count)
    mysql_server._ids = itertools.count(index + 1, count)


def _with_shutdown_timeout(config: Config, seconds: float) -> Config:
    from dataclasses import replace
    return replace(config, server=replace(config.server, shutdown_timeout=seconds))


class _Process:
    """The channel's handlers before and after the WorkerApp exists (notices wait for it)."""

    def __init__(self) -> None:
        self.app: WorkerApp | None = None
        self.hello: asyncio.Future[Hello] = asyncio.get_running_loop().create_future()
        self.early: list[Notice] = []

    def on_notice(self, message: Any) -> None:
        if isinstance(message, Hello):
            if not self.hello.done():
                self.hello.set_result(message)
        elif self.app is None:
            self.early.append(message)
        else:
            self.app.on_notice(message)

    async def on_request(self, kind: str, payload: Any) -> Any:
        if self.app is None:
            raise RuntimeError("worker still starting")
        return await self.app.on_request(kind, payload)


async def serve_worker(sock: socket.socket) -> int:
    process = _Process()
    link = await Link.open(sock, "control process", process.on_request, process.on_notice)
    done, _ = await asyncio.wait((process.hello, asyncio.ensure_future(link.lost.wait())),
                                 return_when=asyncio.FIRST_COMPLETED)
    if not process.hello.done():
        return 1
    hello = process.hello.result()
    settings = hello.config.server
    setup_logging(settings.log_format, settings.log_level)
    app = process.app = WorkerApp(hello, link)
    for notice in process.early:
        app.on_notice(notice)
    try:
        await app.start()
    except OSError as exc:
        log.error("worker %d could not start: %s", hello.index, exc)
        return 1
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, app.stopping.set)
    link.notify("ready", hello.index)
    log.info("worker %d of %d ready (pid %d)", hello.index, hello.count, _pid())
    lost = asyncio.ensure_future(link.lost.wait())
    stopping = asyncio.ensure_future(app.stopping.wait())
    await asyncio.wait((lost, stopping), return_when=asyncio.FIRST_COMPLETED)
    if lost.done():
        log.warning("worker %d: the control process is gone; draining", hello.index)
    await app.drain()
    lost.cancel()
    stopping.cancel()
    return 0


def _pid() -> int:
    import os
    return os.getpid()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m proxy.workers.worker",
                                     description="a dbproxy worker process (started by the control process)")
    parser.add_argument("--fd", type=int, required=True, help="the inherited socketpair end")
    args = parser.parse_args(argv)
    # Ctrl-C reaches the whole process group and SIGHUP is the control process's to relay:
    # a worker stops or reloads when the control process tells it to.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    sock = socket.socket(fileno=args.fd)
    import uvloop
    try:
        return uvloop.run(serve_worker(sock))
    except Exception:
        log.exception("dbproxy worker failed")
        return 1


if __name__ == "__main__":
    raise SystemExit(main())
