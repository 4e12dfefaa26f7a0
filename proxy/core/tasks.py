"""Background tasks held strongly: the event loop keeps only weak references to its tasks, so a task
whose result is discarded can be garbage-collected mid-await (leaving, say, a client's held bytes
never relayed). `TaskSet` keeps each task until it finishes and logs one that ends with an exception."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Coroutine
from typing import Any

log = logging.getLogger("dbproxy")


class TaskSet:
    """Tasks started for one owner (a session's cache, a mirror), each referenced until done."""

    __slots__ = ("_tasks",)

    def __init__(self) -> None:
        self._tasks: set[asyncio.Task[Any]] = set()

    def __len__(self) -> int:
        return len(self._tasks)

    def start(self, coro: Coroutine[Any, Any, Any]) -> asyncio.Task[Any]:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._done)
        return task

    def _done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and (exc := task.exception()) is not None:
            log.error("background task %s failed", task.get_coro(), exc_info=exc)

    def cancel(self) -> None:
        for task in list(self._tasks):
            task.cancel()
