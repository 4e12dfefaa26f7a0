"""Background tasks of the cache flows (both engines) and the mirror: held strongly until done (the loop
holds tasks weakly), failures logged; a catalog wait that is itself cancelled does not relay on."""

from __future__ import annotations

import asyncio
import gc
import logging
from types import SimpleNamespace
from typing import Any

import pytest

from proxy.core.session import READY
from proxy.core.tasks import TaskSet
from proxy.engines.mysql.cache_flow import MysqlSessionCache
from proxy.engines.postgres.cache_flow import SessionCache


class FakeSession:
    state = READY
    transport = object()

    def __init__(self) -> None:
        self.fed: list[bytes] = []
        self.waits = TaskSet()

    def _client_data(self, data: bytes) -> None:
        self.fed.append(data)


async def test_a_task_set_keeps_a_task_nobody_else_references_until_it_is_done() -> None:
    tasks = TaskSet()
    gate = asyncio.get_running_loop().create_future()
    finished: list[str] = []

    async def waits(future: asyncio.Future[None]) -> None:
        await future
        finished.append("done")

    tasks.start(waits(gate))
    await asyncio.sleep(0)
    gc.collect()
    assert len(tasks) == 1
    gate.set_result(None)
    await asyncio.sleep(0.01)
    assert finished == ["done"] and len(tasks) == 0


async def test_a_task_set_logs_a_task_that_failed_and_cancels_on_request(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, "dbproxy")
    tasks = TaskSet()

    async def fails() -> None:
        raise RuntimeError("lost in the background")

    tasks.start(fails())
    never = tasks.start(asyncio.sleep(60))
    await asyncio.sleep(0.01)
    assert any(r.levelno == logging.ERROR and r.exc_info and str(r.exc_info[1]) == "lost in the background"
               for r in caplog.records)
    tasks.cancel()
    await asyncio.sleep(0.01)
    assert never.cancelled() and len(tasks) == 0


def flows() -> list[Any]:
    return [SessionCache(None, None),  # type: ignore[arg-type]
            MysqlSessionCache(None, None, None)]  # type: ignore[arg-type]


@pytest.mark.parametrize("which", [0, 1], ids=["postgres", "mysql"])
async def test_a_cancelled_catalog_wait_is_cancelled_and_relays_nothing(which: int) -> None:
    flow, session = flows()[which], FakeSession()
    reading = asyncio.get_running_loop().create_task(asyncio.sleep(60))
    flow.waiting = bytearray()
    waiter = flow.tasks.start(flow._after_catalog(session, b"Q-held", reading))
    await asyncio.sleep(0.01)
    waiter.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiter
    assert session.fed == [] and not reading.cancelled()
    reading.cancel()


@pytest.mark.parametrize("which", [0, 1], ids=["postgres", "mysql"])
async def test_a_cancelled_catalog_read_relays_the_held_statement(which: int) -> None:
    flow, session = flows()[which], FakeSession()
    reading = asyncio.get_running_loop().create_task(asyncio.sleep(60))
    flow.waiting = bytearray()
    waiter = flow.tasks.start(flow._after_catalog(session, b"Q-held", reading))
    await asyncio.sleep(0.01)
    flow.waiting += b"Q-next"
    reading.cancel()
    await asyncio.wait_for(waiter, 1)
    assert session.fed == [b"Q-held", b"Q-next"] and flow.waiting is None


async def test_a_client_that_goes_cancels_its_catalog_wait() -> None:
    reading = asyncio.get_running_loop().create_task(asyncio.sleep(60))
    catalog = SimpleNamespace(snapshot=lambda database, now: None, reading=lambda database: reading)
    flow = SessionCache(SimpleNamespace(clock=lambda: 0.0), SimpleNamespace(catalog=catalog))  # type: ignore[arg-type]
    session = FakeSession()
    session.database = "app"
    assert flow._hold_for_catalog(session, b"Q-held")  # type: ignore[arg-type]
    assert len(session.waits) == 1 and len(flow.tasks) == 0
    await asyncio.sleep(0.01)
    session.waits.cancel()              # what connection_lost does
    await asyncio.sleep(0.01)
    assert len(session.waits) == 0 and session.fed == [] and not reading.cancelled()
    reading.cancel()
