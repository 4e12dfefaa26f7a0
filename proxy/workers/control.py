"""The control process of [server] workers = N: spawns and restarts the workers, owns the topology probes,
failover, the admin console and HTTP, and shows the whole proxy by gathering from every worker.

The control process holds the clusters' monitors and failover coordinators but no client listener and
no server connection. Every published topology snapshot goes to every worker; admin commands that
read or change client-side state run in every worker and their answers are merged (merge.py);
/metrics and /status add the workers' series and documents to the control process's own.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from prometheus_client.metrics_core import Metric

from ..admin import views
from ..admin.commands import AdminError, Done, Result
from ..admin.resultset import Table
from ..app import ProxyApp
from ..config import Address, ClusterConfig, Config, EndpointConfig
from ..core.cluster import Cluster
from ..http.server import Response
from ..topology import TopologySnapshot
from .channel import Hello, Notice
from .link import Link, LinkError
from .merge import TABLE_MERGES, merge_families, merge_status, merge_tables
from .shares import worker_config
from .template import ForkedProcess, Template

log = logging.getLogger("dbproxy.workers")

READY_TIMEOUT = 30.0      # a new worker imports, reads its config and listens within this
RESTART_BACKOFF = 1.0     # a worker that dies within CRASH_LOOP seconds of starting is restarted this much later
CRASH_LOOP = 5.0
REQUEST_TIMEOUT = 10.0
# Admin commands that change client-side state: run in every worker (and here), answers merged.
FAN_OUT = frozenset({"PAUSE", "RESUME", "RECONNECT", "FLUSH CACHE", "KILL CLIENT"})
ANY_ONE = frozenset({"KILL CLIENT"})
# Admin commands that need one process (their state lives with the sessions): refused with workers.
SINGLE_PROCESS_ONLY = {"RECORD": "RECORD needs [server] workers = 1: every worker's sessions would write one file"}   # one worker has the client: done if one of them did it


@dataclass
class _Worker:
    index: int
    process: asyncio.subprocess.Process | ForkedProcess | None = None
    link: Link | None = None
    ready: asyncio.Event = field(default_factory=asyncio.Event)
    started_at: float = 0.0
    restarts: int = 0


class WorkerSet:
    """The control process's workers: spawn, restart, send to all, gather from all."""

    def __init__(self, app: ControlApp, count: int, template: Template | None = None) -> None:
        self.app = app
        self.count = count
        self.template = template
        self.workers = [_Worker(i) for i in range(count)]
        self.stopping = False
        self._tasks: set[asyncio.Task[Any]] = set()

    # ---- processes ------------------------------------------------------------------------------

    async def start(self) -> None:
        """Start every worker; returns once all listen (raises OSError if one could not start)."""
        for worker in self.workers:
            await self._spawn(worker)
        deadline = time.monotonic() + READY_TIMEOUT
        for worker in self.workers:
            try:
                await asyncio.wait_for(worker.ready.wait(), max(0.1, deadline - time.monotonic()))
            except TimeoutError:
                raise OSError(f"worker {worker.index} did not start within {READY_TIMEOUT:g}s") from None
            if worker.process is None or worker.process.returncode is not None:
                raise OSError(f"worker {worker.index} exited at start (see its log lines above)")

    async def _spawn(self, worker: _Worker) -> None:
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        worker.ready = asyncio.Event()
        worker.started_at = time.monotonic()
        try:
            worker.process = await self._start_process(theirs)
        finally:
            theirs.close()
        def on_notice(message: Any) -> None:
            self._on_notice(worker, message)

        worker.link = link = await Link.open(ours, f"worker {worker.index}", self._refuse, on_notice)
        app = self.app
        snapshots = self._snapshots()
        paused = frozenset(name for name, c in app.clusters.items() if c.paused)
        link.send(Hello(worker.index, self.count, worker_config(app.config, worker.index, self.count), snapshots,
                        paused))
        self._spawn_task(self._watch(worker, worker.process))

    async def _start_process(self, channel: socket.socket) -> asyncio.subprocess.Process | ForkedProcess:
        """Forked from the template (sharing its preloaded code), or, without one, a fresh interpreter."""
        if self.template is not None:
            try:
                return ForkedProcess(self.template.spawn(channel))
            except OSError as exc:
                log.warning("%s; workers start as fresh interpreters from now on", exc)
                self.template = None
        return await asyncio.create_subprocess_exec(
            sys.executable, "-m", "proxy.workers.worker", "--fd", str(channel.fileno()),
            pass_fds=(channel.fileno(),), env=os.environ.copy())

    def _snapshots(self) -> dict[str, TopologySnapshot]:
        return {name: c.topology for name, c in self.app.clusters.items() if c.topology is not None}

    async def _watch(self, worker: _Worker, process: asyncio.subprocess.Process | ForkedProcess) -> None:
        code = await process.wait()
        if worker.link is not None:
            worker.link.close()
            worker.link = None
        worker.ready.set()   # wakes start() if it died before it was ready
        if self.stopping:
            return
        log.warning("worker %d (pid %d) exited with code %s; restarting it (its clients were disconnected)",
                    worker.index, process.pid, code)
        if time.monotonic() - worker.started_at < CRASH_LOOP:
            await asyncio.sleep(RESTART_BACKOFF)
        if not self.stopping:
            worker.restarts += 1
            await self._spawn(worker)

    def _spawn_task(self, coro: Awaitable[Any]) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def drain(self, timeout: float) -> None:
        """Every worker drains (bounded by timeout) and exits; the ones still running then are killed."""
        self.stopping = True
        for worker in self.workers:
            if worker.link is not None:
                worker.link.notify("drain", timeout)
        processes = [w.process for w in self.workers if w.process is not None and w.process.returncode is None]
        if processes:
            _, late = await asyncio.wait([asyncio.ensure_future(p.wait()) for p in processes], timeout=timeout + 5.0)
            for process in processes:
                if process.returncode is None:
                    log.warning("worker pid %d did not stop in time: killed", process.pid)
                    process.kill()
            if late:
                await asyncio.wait(late, timeout=2.0)
        for task in self._tasks:
            task.cancel()
        if self.template is not None:
            self.template.close()
            self.template = None

    # ---- messages ---------------------------------------------------------------------------------

    async def _refuse(self, kind: str, payload: Any) -> Any:
        raise ValueError(f"the control process takes no request {kind!r}")

    def _on_notice(self, worker: _Worker, message: Any) -> None:
        if not isinstance(message, Notice):
            return
        if message.kind == "ready":
            worker.ready.set()
        elif message.kind == "probe_now":
            name, address = message.payload
            cluster = self.app.clusters.get(name)
            if cluster is not None and cluster.monitor is not None:
                cluster.monitor.probe_now(address)
        elif message.kind == "cancel":
            for other in self.workers:
                if other is not worker and other.link is not None:
                    other.link.notify("cancel", message.payload)

    def notify_all(self, kind: str, payload: Any = None) -> None:
        for worker in self.workers:
            if worker.link is not None:
                worker.link.notify(kind, payload)

    async def gather(self, kind: str, payload: Any = None, *, per_worker: Callable[[int], Any] | None = None,
                     timeout: float = REQUEST_TIMEOUT) -> list[Any]:
        """Each live worker's answer (workers that are restarting or fail to answer are left out, logged)."""
        live = [w for w in self.workers if w.link is not None and w.ready.is_set()]

        async def ask(worker: _Worker) -> Any:
            assert worker.link is not None
            return await worker.link.request(kind, per_worker(worker.index) if per_worker else payload, timeout)

        answers = await asyncio.gather(*(ask(w) for w in live), return_exceptions=True)
        out = []
        for worker, answer in zip(live, answers, strict=True):
            if isinstance(answer, LinkError):
                log.warning("worker %d: %s", worker.index, answer)
            elif isinstance(answer, BaseException):
                raise answer
            else:
                out.append(answer)
        return out

    # ---- what the admin console and HTTP see -------------------------------------------------------

    async def execute(self, name: str, statement: str, local: Callable[[], Awaitable[Result]]) -> Result:
        """An admin command: merged SHOW tables, fanned-out changes, or (the rest) the control process's own."""
        if name in SINGLE_PROCESS_ONLY:
            raise AdminError("0A000", SINGLE_PROCESS_ONLY[name])
        merge = TABLE_MERGES.get(name)
        if merge is not None:
            own = await local()
            tables = [r for r in await self.gather("admin", statement) if isinstance(r, Table)]
            assert isinstance(own, Table)
            if merge.with_control:
                tables.insert(0, own)
            return merge_tables(merge, tables or [Table(own.columns, [])])
        if name not in FAN_OUT:
            return await local()
        results: list[Result | AdminError] = []
        local_task = asyncio.ensure_future(local())
        answers = await self.gather("admin", statement, timeout=self.app.config.server.shutdown_timeout + 5.0)
        try:
            results.append(await local_task)
        except AdminError as exc:
            results.append(exc)
        for answer in answers:
            results.append(AdminError(*answer[1:]) if isinstance(answer, tuple) else answer)
        return _merge_done(name, results)

    async def metrics(self) -> bytes:
        families: list[list[Metric]] = [list(self.app.metrics.registry.collect())]
        families += await self.gather("metrics")
        return generate_latest(_Families(merge_families(families)))

    async def status(self) -> dict[str, Any]:
        return merge_status(views.status(self.app), await self.gather("status"))

    async def respond(self, path: str) -> Response | None:
        """/metrics and /status of the whole proxy (None: the route is the control process's own)."""
        if path == "/metrics":
            return Response(200, await self.metrics(), CONTENT_TYPE_LATEST)
        if path == "/status":
            import json
            return Response(200, json.dumps(await self.status(), indent=1).encode() + b"\n", "application/json")
        return None

    async def apply_config(self, config: Config) -> list[str]:
        """A reloaded config: each worker applies its share; their problems (a port that will not open)."""
        problems: list[str] = []
        snapshots = self._snapshots()   # for clusters the reload added: their workers start with the topology
        for answer in await self.gather("config", per_worker=lambda i: (worker_config(config, i, self.count),
                                                                         snapshots)):
            problems += [p for p in answer if p not in problems]
        return problems


def _merge_done(name: str, results: list[Result | AdminError]) -> Result:
    done = [r for r in results if isinstance(r, Done)]
    errors = [r for r in results if isinstance(r, AdminError)]
    if name in ANY_ONE:
        if done:
            return done[0]
        raise errors[0]
    if errors:
        raise errors[0]
    notices = list(dict.fromkeys(d.notice for d in done if d.notice))
    return Done(done[0].tag, "; ".join(notices) if notices else None)


class _Families:
    def __init__(self, families: list[Metric]) -> None:
        self._families = families

    def collect(self) -> list[Metric]:
        return self._families


class ControlCluster(Cluster[Any]):
    """The control process's cluster: topology and failover here, traffic in the workers.

    A switchover pauses and resumes every worker's cluster, and waits for the transactions
    running on the old writer in every worker (polled from its first in_flight call until resume).
    """

    def __init__(self, config: ClusterConfig, app: ControlApp) -> None:
        super().__init__(config, app._configured_user, app._configured_users)
        self._app = app
        self._in_flight: dict[Address, int] | None = None
        self._poll: asyncio.Task[None] | None = None
        if self.monitor is not None:
            self.monitor.snapshot_listeners.append(self._publish)

    def _publish(self, snapshot: TopologySnapshot) -> None:
        if self._app.workers is not None:
            self._app.workers.notify_all("topology", (self.name, snapshot))

    def pause(self) -> None:
        super().pause()
        if self._app.workers is not None:
            self._app.workers.notify_all("pause", self.name)

    def resume(self) -> None:
        super().resume()
        if self._app.workers is not None:
            self._app.workers.notify_all("resume", self.name)
        if self._poll is not None:
            self._poll.cancel()
            self._poll = None

    async def _poll_in_flight(self, workers: WorkerSet) -> None:
        while True:
            instances = list(self.config.instances)
            answers = await workers.gather("in_flight", (self.name, instances), timeout=2.0)
            self._in_flight = {a: sum(answer[i] for answer in answers) for i, a in enumerate(instances)}
            await asyncio.sleep(0.005)

    def in_flight(self, instance: Address) -> int:
        """Polled by a switchover while paused: the workers are asked every 5 ms from the first call on
        (until resume); until their first answers the instance counts as busy."""
        workers = self._app.workers
        if self._poll is None and workers is not None:
            self._in_flight = None
            self._poll = asyncio.ensure_future(self._poll_in_flight(workers))
        if self._in_flight is None:
            return 1
        return self._in_flight.get(instance, 0)

    def close_pinned(self, instance: Address, reason: str) -> int:
        if self._app.workers is not None:
            self._app.workers.notify_all("close_pinned", (self.name, instance, reason))
        return 0   # counted and logged by each worker

    def maintain(self) -> None:
        pass   # no pools here: the workers keep theirs


class ControlApp(ProxyApp):
    """The control process's ProxyApp: clusters' topology and failover, admin and HTTP, no client listener."""

    def __init__(self, config: Config, template: Template | None = None) -> None:
        super().__init__(config)
        self.workers = WorkerSet(self, config.server.workers, template)

    def _new_cluster(self, config: ClusterConfig) -> Cluster[Any]:
        return ControlCluster(config, self)

    async def start(self) -> None:
        if self.audit is not None:
            self.audit.open()
        for cluster in self.clusters.values():
            await cluster.start(self.metrics)
        assert self.workers is not None
        await self.workers.start()
        log.info("%d workers listening", self.workers.count)
        self._spawn(self._maintenance())
        await self._start_services()

    async def _listen(self, cluster: Cluster, endpoint: EndpointConfig) -> None:
        pass   # the workers listen

    async def reload(self) -> list[str]:
        before = self.config
        problems = await super().reload()
        if self.config is not before and self.workers is not None:
            problems += [p for p in await self.workers.apply_config(self.config) if p not in problems]
        return problems

    async def drain(self) -> None:
        self.draining = True
        log.info("draining: the workers close their listeners and wait for transactions to finish")
        for service in self.extra_services:
            service.close()
        if self.workers is not None:
            await self.workers.drain(self.config.server.shutdown_timeout)
        for cluster in self.clusters.values():
            cluster.close()
        for task in self._tasks:
            task.cancel()
        await asyncio.sleep(0)
        if self.audit is not None:
            self.audit.close()

