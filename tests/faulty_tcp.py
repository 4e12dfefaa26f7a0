"""A fault-injecting TCP relay for tests: sits between dbproxy and a database on loopback and breaks things.

Modelled on asyncpg's tests/test_adversity.py proxy and PgBouncer's drop_traffic tests. The relay
runs its own asyncio loop in a thread, so synchronous clients (PyMySQL, psycopg) and asyncio ones
(asyncpg, on the test's loop) can both be used while it runs.

    relay = FaultyTcpProxy("127.0.0.1", pg_port).start()
    relay.arm(Fault("reset", trigger=b"pg_sleep"))   # RST both sides once a client sends "pg_sleep"
    ...
    relay.drop_all()                                   # RST every connection now
    relay.stop()

Faults (`Fault.kind`), applied to a connection once its client→server bytes contain `trigger`
(every connection opened from then on when trigger is None):

- "reset":     abort both sides with RST (SO_LINGER 0) — a crash of the server or a middlebox;
- "close":     close both sides with FIN after what is already relayed;
- "cut":       relay `after` more bytes in `direction`, then RST: a reset in the middle of a message;
- "blackhole": relay nothing more in either direction, keep both sockets open (a dead route);
- "delay":     hold each chunk `delay` seconds before relaying it (a slow network; no loss).

A fault fires on at most `times` connections (None: on every matching one). `record` keeps every
connection's bytes per direction (for seed corpora of real client traffic).
"""

from __future__ import annotations

import asyncio
import socket
import struct
import threading
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any, Literal

FaultKind = Literal["reset", "close", "cut", "blackhole", "delay"]
Direction = Literal["to_server", "to_client"]
_LINGER_RST = struct.pack("ii", 1, 0)


@dataclass
class Fault:
    """What to break (see the module docstring)."""

    kind: FaultKind
    trigger: bytes | None = None
    direction: Direction = "to_client"
    after: int = 0                 # "cut": bytes still relayed in `direction` before the reset
    delay: float = 0.0             # "delay": seconds per chunk
    times: int | None = 1          # connections it fires on (None: all)
    fired: int = 0


@dataclass
class Link:
    """One relayed connection: the client side (from dbproxy) and the server side."""

    client: asyncio.StreamWriter
    server: asyncio.StreamWriter
    fault: Fault | None = None
    seen: bytes = b""                              # client→server bytes (the tail matched against triggers)
    left: int = 0                                  # "cut": bytes still to relay
    closed: bool = False
    blackholed: bool = False
    recorded: dict[str, bytearray] = field(default_factory=lambda: {"to_server": bytearray(),
                                                                     "to_client": bytearray()})


class FaultyTcpProxy:
    """A TCP relay on 127.0.0.1 with faults to arm; see the module docstring."""

    def __init__(self, target_host: str, target_port: int, *, record: bool = False) -> None:
        self.target = (target_host, target_port)
        self.record = record
        self.port = 0
        self.links: list[Link] = []
        self.faults: list[Fault] = []
        self.accepted = 0
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="faulty-tcp", daemon=True)
        self._server: asyncio.base_events.Server | None = None
        self._lock = threading.Lock()

    # ------------------------------------------------------------------ control (any thread)

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self) -> FaultyTcpProxy:
        self._thread.start()
        self._call(self._listen()).result(10)
        return self

    def stop(self) -> None:
        if not self._thread.is_alive():
            return
        self._call(self._shutdown()).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._loop.close()

    def arm(self, fault: Fault) -> Fault:
        """Arm a fault; returns it (its `fired` counts the connections it broke)."""
        with self._lock:
            self.faults.append(fault)
        return fault

    def clear(self) -> None:
        """Disarm every fault and let blackholed or delayed connections be (they stay as they are)."""
        with self._lock:
            self.faults.clear()

    def drop_all(self, reset: bool = True) -> int:
        """Break every open connection now (RST, or FIN with reset=False); returns how many."""
        return int(self._call(self._drop_all(reset)).result(10))

    def open_links(self) -> int:
        return sum(not link.closed for link in self.links)

    def recordings(self) -> list[dict[str, bytes]]:
        """Per connection, the bytes relayed in each direction (record=True)."""
        return [{d: bytes(b) for d, b in link.recorded.items()} for link in self.links]

    def _call(self, coro: Any) -> Future[Any]:
        return asyncio.run_coroutine_threadsafe(coro, self._loop)

    # ------------------------------------------------------------------ the relay (its own loop)

    async def _listen(self) -> None:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]

    async def _shutdown(self) -> None:
        if self._server is not None:
            self._server.close()
        await self._drop_all(True)

    async def _drop_all(self, reset: bool) -> int:
        count = 0
        for link in list(self.links):
            if not link.closed:
                count += 1
                self._break(link, reset)
        return count

    async def _accept(self, client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter) -> None:
        self.accepted += 1
        try:
            server_reader, server_writer = await asyncio.open_connection(*self.target)
        except OSError:
            _abort(client_writer)
            return
        link = Link(client_writer, server_writer)
        self.links.append(link)
        self._match(link, b"")
        await asyncio.gather(self._pump(link, client_reader, server_writer, "to_server"),
                             self._pump(link, server_reader, client_writer, "to_client"),
                             return_exceptions=True)

    def _match(self, link: Link, data: bytes) -> None:
        """Arm the first fault whose trigger the connection's client bytes now contain."""
        if link.fault is not None:
            return
        link.seen = (link.seen + data)[-4096:]
        with self._lock:
            for fault in self.faults:
                if fault.times is not None and fault.fired >= fault.times:
                    continue
                if fault.trigger is None and data:
                    continue   # trigger-less faults take connections as they open
                if fault.trigger is not None and fault.trigger not in link.seen:
                    continue
                fault.fired += 1
                link.fault, link.left = fault, fault.after
                break
        fault = link.fault
        if fault is None:
            return
        if fault.kind == "blackhole":
            link.blackholed = True
        elif fault.kind in ("reset", "close") and fault.trigger is None:
            self._break(link, fault.kind == "reset")

    async def _pump(self, link: Link, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                    direction: Direction) -> None:
        try:
            while not link.closed:
                data = await reader.read(65536)
                if not data:
                    break
                if direction == "to_server":
                    had_fault = link.fault is not None
                    self._match(link, data)
                    if not had_fault and link.fault is not None and link.fault.kind in ("reset", "close"):
                        # Triggered by this very chunk: it never reaches the server.
                        self._break(link, link.fault.kind == "reset")
                        return
                if link.blackholed:
                    continue   # swallowed; the sockets stay open
                fault = link.fault
                if fault is not None and fault.kind == "delay":
                    await asyncio.sleep(fault.delay)
                if fault is not None and fault.kind == "cut" and fault.direction == direction:
                    if len(data) >= link.left:
                        self._write(link, writer, data[:link.left], direction)
                        await _drain(writer)
                        self._break(link, True)
                        return
                    link.left -= len(data)
                self._write(link, writer, data, direction)
                await _drain(writer)
        except (ConnectionError, OSError):
            pass
        finally:
            if not link.closed and not link.blackholed:
                self._break(link, False)

    def _write(self, link: Link, writer: asyncio.StreamWriter, data: bytes, direction: Direction) -> None:
        if self.record:
            link.recorded[direction] += data
        if data:
            writer.write(data)

    def _break(self, link: Link, reset: bool) -> None:
        link.closed = True
        for writer in (link.client, link.server):
            if reset:
                _abort(writer)
            else:
                writer.close()


def _abort(writer: asyncio.StreamWriter) -> None:
    """Close with RST: SO_LINGER 0, then close without flushing."""
    sock = writer.get_extra_info("socket")
    if sock is not None:
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _LINGER_RST)
        except OSError:
            pass
    writer.transport.abort()


async def _drain(writer: asyncio.StreamWriter) -> None:
    try:
        await writer.drain()
    except (ConnectionError, OSError):
        pass


