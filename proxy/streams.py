"""Stream servers (admin console, HTTP) whose connections are screened before any byte is read or written."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

Accept = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]
Screen = Callable[[object], bool]   # peername -> accept?

_LIMIT = 2 ** 16   # asyncio.start_server's default StreamReader limit


class _ScreenedStreamProtocol(asyncio.StreamReaderProtocol):
    """asyncio's stream protocol, but a connection the screen refuses is closed in connection_made."""

    def __init__(self, screen: Screen, accept: Accept, limit: int) -> None:
        super().__init__(asyncio.StreamReader(limit=limit), accept)
        self._screen = screen
        self._refused = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        if not self._screen(transport.get_extra_info("peername")):
            self._refused = True
            transport.close()
            return
        super().connection_made(transport)

    def data_received(self, data: bytes) -> None:
        if not self._refused:
            super().data_received(data)

    def eof_received(self) -> bool:
        return False if self._refused else bool(super().eof_received())


async def start_screened_server(accept: Accept, host: str, port: int, screen: Screen,
                                limit: int = _LIMIT) -> asyncio.Server:
    """asyncio.start_server(accept, host, port, limit=limit), each connection first passed through `screen`."""
    loop = asyncio.get_running_loop()
    return await loop.create_server(lambda: _ScreenedStreamProtocol(screen, accept, limit), host, port,
                                    reuse_address=True)
