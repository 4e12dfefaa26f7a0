"""A do-nothing asyncio + uvloop TCP relay: the floor of any proxy written in Python, as the benchmarks' extra column.

Each client connection gets its own connection to the target, and bytes are copied both ways as
they arrive (Protocol callbacks, no parsing, no pooling, write-buffer backpressure only). It is what
dbproxy would cost if it did nothing but forward: the gap between this and HAProxy is the price of
the interpreter and the event loop, the gap between this and dbproxy is dbproxy's own work.

    python -m bench.python_relay LISTEN_HOST LISTEN_PORT TARGET_HOST TARGET_PORT [CERT KEY]

With CERT and KEY it also ends TLS for PostgreSQL clients, as a pooler with client TLS does: it answers
the client's SSLRequest with 'S', takes the TLS handshake (`loop.start_tls`, the ssl module) and relays
the decrypted bytes to the server in plain text (bench/tls.py's floor).
"""

from __future__ import annotations

import asyncio
import ssl
import sys
from pathlib import Path

from bench.procs import Service

REPO_ROOT = Path(__file__).resolve().parent.parent

HIGH_WATER = 256 * 1024
SSL_REQUEST = b"\x00\x00\x00\x08\x04\xd2\x16\x2f"


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
    def __init__(self, target: tuple[str, int], tls: ssl.SSLContext | None = None) -> None:
        super().__init__()
        self.target = target
        self.tls = tls          # end TLS first (PostgreSQL SSLRequest), then relay the plain text
        self.first = b""        # the start of the stream while the SSLRequest is not complete

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        asyncio.get_running_loop().create_task(self._connect())

    def data_received(self, data: bytes) -> None:
        if self.tls is None:
            super().data_received(data)
            return
        self.first += data
        if len(self.first) < len(SSL_REQUEST):
            return
        if not self.first.startswith(SSL_REQUEST) and self.transport is not None:
            self.transport.close()   # this relay serves TLS clients only
            return
        context, self.tls = self.tls, None
        rest, self.first = self.first[len(SSL_REQUEST):], b""
        assert self.transport is not None and not rest   # libpq waits for the answer
        self.transport.write(b"S")
        asyncio.get_running_loop().create_task(self._upgrade(context))

    async def _upgrade(self, context: ssl.SSLContext) -> None:
        raw = self.transport
        try:
            self.transport = await asyncio.get_running_loop().start_tls(raw, self, context,  # type: ignore[arg-type]
                                                                        server_side=True)
        except (OSError, ssl.SSLError):
            if raw is not None:
                raw.close()

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


async def _serve(listen_host: str, listen_port: int, target: tuple[str, int],
                 tls: ssl.SSLContext | None = None) -> None:
    server = await asyncio.get_running_loop().create_server(lambda: _Client(target, tls), listen_host, listen_port,
                                                            backlog=1024)
    async with server:
        await server.serve_forever()


def start_relay(workdir: Path, listen_host: str, listen_port: int, target_host: str, target_port: int,
                tls: tuple[Path, Path] | None = None) -> Service:
    """Start the relay as its own process and wait until its port accepts connections; `tls`: (cert, key)."""
    workdir.mkdir(parents=True, exist_ok=True)
    argv = [sys.executable, "-m", "bench.python_relay", listen_host, str(listen_port), target_host, str(target_port),
            *(str(path) for path in tls or ())]
    service = Service("python-relay", argv, workdir / "relay.log", cwd=REPO_ROOT)
    service.start()
    service.wait_ready(listen_host, listen_port)
    return service


def main(argv: list[str]) -> None:
    import uvloop

    listen_host, listen_port, target_host, target_port, *tls_files = argv
    context = None
    if tls_files:   # as dbproxy's client contexts (proxy/tls/contexts.py): defaults, no session tickets
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(*tls_files)
        context.num_tickets = 0
    uvloop.run(_serve(listen_host, int(listen_port), (target_host, int(target_port)), context))


if __name__ == "__main__":
    main(sys.argv[1:])
