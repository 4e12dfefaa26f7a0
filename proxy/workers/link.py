"""The asyncio side of one control <-> worker channel: requests with replies, one-way notices."""

from __future__ import annotations

import asyncio
import logging
import socket
from collections.abc import Awaitable, Callable
from typing import Any, cast

from .channel import ChannelError, FrameDecoder, Notice, Reply, Request, encode

log = logging.getLogger("dbproxy.workers")

RequestHandler = Callable[[str, Any], Awaitable[Any]]
NoticeHandler = Callable[[Any], None]   # a Notice, or another message (Hello) as it came


class LinkError(Exception):
    """A request failed: the other side answered with an error, went away or did not answer in time."""


class Link(asyncio.Protocol):
    """One end of a socketpair; see the module docstring. `lost` is set once the other end is gone."""

    def __init__(self, name: str, on_request: RequestHandler, on_notice: NoticeHandler) -> None:
        self.name = name
        self._on_request = on_request
        self._on_notice = on_notice
        self._decoder = FrameDecoder()
        self._transport: asyncio.Transport | None = None
        self._pending: dict[int, asyncio.Future[Any]] = {}
        self._next_id = 0
        self._tasks: set[asyncio.Task[None]] = set()
        self.lost = asyncio.Event()

    @classmethod
    async def open(cls, sock: socket.socket, name: str, on_request: RequestHandler,
                   on_notice: NoticeHandler) -> Link:
        link = cls(name, on_request, on_notice)
        await asyncio.get_running_loop().create_unix_connection(lambda: link, sock=sock)
        return link

    # ---- asyncio.Protocol ------------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)   # uvloop's transports are not subclasses

    def data_received(self, data: bytes) -> None:
        try:
            messages = self._decoder.feed(data)
        except ChannelError as exc:
            log.error("%s: %s; closing the channel", self.name, exc)
            self.close()
            return
        for message in messages:
            if isinstance(message, Reply):
                future = self._pending.pop(message.id, None)
                if future is not None and not future.done():
                    if message.ok:
                        future.set_result(message.value)
                    else:
                        future.set_exception(LinkError(str(message.value)))
            elif isinstance(message, Request):
                task = asyncio.get_running_loop().create_task(self._answer(message))
                self._tasks.add(task)
                task.add_done_callback(self._tasks.discard)
            else:
                self._on_notice(message)

    def connection_lost(self, exc: Exception | None) -> None:
        self._transport = None
        for future in self._pending.values():
            if not future.done():
                future.set_exception(LinkError(f"{self.name} went away"))
        self._pending.clear()
        self.lost.set()

    # ---- sending ----------------------------------------------------------------------------------

    def send(self, message: object) -> bool:
        """Send any message; False when the other end is gone."""
        if self._transport is None or self._transport.is_closing():
            return False
        self._transport.write(encode(message))
        return True

    def notify(self, kind: str, payload: Any = None) -> bool:
        return self.send(Notice(kind, payload))

    async def request(self, kind: str, payload: Any = None, timeout: float = 10.0) -> Any:
        """Ask the other side; its handler's return value, or LinkError."""
        self._next_id += 1
        request_id = self._next_id
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._pending[request_id] = future
        if not self.send(Request(request_id, kind, payload)):
            self._pending.pop(request_id, None)
            raise LinkError(f"{self.name} is not connected")
        try:
            return await asyncio.wait_for(future, timeout)
        except TimeoutError:
            raise LinkError(f"{self.name} did not answer {kind} within {timeout:g}s") from None
        finally:
            self._pending.pop(request_id, None)

    async def _answer(self, request: Request) -> None:
        try:
            value = await self._on_request(request.kind, request.payload)
        except Exception as exc:  # noqa: BLE001 - the failure goes back to the asker as text
            log.exception("%s: request %s failed", self.name, request.kind)
            self.send(Reply(request.id, False, f"{type(exc).__name__}: {exc}"))
            return
        self.send(Reply(request.id, True, value))

    def close(self) -> None:
        if self._transport is not None:
            self._transport.close()
