"""What the admin console and the HTTP service may see of the running process (no import of app.py).

`ProxyApp` satisfies this protocol; admin/ and http/ are written against it, so the process
module imports them and nothing imports back up.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any, Protocol

from ..audit import AuditLog
from ..config import Config
from ..faults.injector import FaultInjector
from ..metrics import Metrics
from ..recording.recorder import Recorder
from .cluster import Cluster
from .session import ClientSessionCore
from .users import UserDirectory

if TYPE_CHECKING:
    from ..workers.control import WorkerSet


class AppView(Protocol):
    config: Config
    users: UserDirectory
    metrics: Metrics
    clusters: dict[str, Cluster[Any]]
    sessions: set[ClientSessionCore]
    started_at: float
    stopping: asyncio.Event
    draining: bool

    audit: AuditLog | None
    faults: FaultInjector
    recording: Recorder | None
    workers: WorkerSet | None   # the control process of [server] workers = N: views gathered from every worker

    async def reload(self) -> list[str]: ...

    def screen_service(self, service: str, peername: object) -> bool: ...
