"""A do-nothing asyncio + uvloop TCP relay: the floor of any proxy written in Python, as the benchmarks' extra column.

Each client connection gets its own connection to the target, and bytes are copied both ways as
they arrive (Protocol callbacks, no parsing, no pooling, write-buffer backpressure only). It is what
dbproxy would cost if it did nothing but forward: the gap between this and HAProxy is the price of
the interpreter and the event loop, the gap between this and dbproxy is dbproxy's own work.

    python -m bench.python_relay LISTEN_HOST LISTEN_PORT TARGET_HOST TARGET_PORT
"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

from bench.procs import Service

REPO_ROOT = Path(__file__).resolve().parent.parent

HIGH_WATER = 256 * 1024


class _Side(asyncio.Protocol):
    """One end of a relayed pair; what it reads is written to its peer."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.peer: _Side | None = None
        self.early: list[bytes] = []   # bytes read before the peer was connected

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport   # type: ignore[assignment]  # uvloop's TCPTransport is not an asyncio.Transport
        self.transport.set_write_buffer_limits(HIGH_WATER)  # type: ignore[union-attr]

    def data_received(self, data: bytes) -> None:
        peer = self.peer
        if peer is None or peer.transport is None:
            self.early.append(data)
            return
        peer.transport.write(data)

    def connection_lost(self, exc: Exception | None) -> None:
        peer = self.peer
        if peer is not None and peer.transport is not None:
            peer.transport.close()

    def pause_writing(self) -> None:
        if self.peer is not None and self.peer.transport is not None:
            self.peer.transport.pause_reading()

    def resume_writing(self) -> None:
        if self.peer is not None and self.peer.transport is not None:
            self.peer.transport.resume_reading()


class _Client(_Side):
    def __init__(self, target: tuple[str, int]) -> None:
        super().__init__()
        self.target = target

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        asyncio.get_running_loop().create_task(self._connect())

    async def _connect(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            _, server = await loop.create_connection(_Side, *self.target)
        except OSError:
            if self.transport is not None:
                self.transport.close()
            return
        server.peer, self.peer = self, server
        assert server.transport is not None
        for side, other in ((self, server), (server, self)):   # what either read before the pair was made
            for data in side.early:
                assert other.transport is not None
                other.transport.write(data)
            side.early.clear()
        if self.transport is None or self.transport.is_closing():
            server.transport.close()


async def _serve(listen_host: str, listen_port: int, target: tuple[str, int]) -> None:
    server = await asyncio.get_running_loop().create_server(lambda: _Client(target), listen_host, listen_port,
                                                            backlog=1024)
    async with server:
        await server.serve_forever()


def start_relay(workdir: Path, listen_host: str, listen_port: int, target_host: str, target_port: int) -> Service:
    """Start the relay as its own process and wait until its port accepts connections."""
    workdir.mkdir(parents=True, exist_ok=True)
    argv = [sys.executable, "-m", "bench.python_relay", listen_host, str(listen_port), target_host, str(target_port)]
    service = Service("python-relay", argv, workdir / "relay.log", cwd=REPO_ROOT)
    service.start()
    service.wait_ready(listen_host, listen_port)
    return service


def main(argv: list[str]) -> None:
    import uvloop

    listen_host, listen_port, target_host, target_port = argv
    uvloop.run(_serve(listen_host, int(listen_port), (target_host, int(target_port))))


if __name__ == "__main__":
    main(sys.argv[1:])
