"""TLS towards a PostgreSQL server (server_tls, SPEC §10): an SSLRequest, the server's 'S' or 'N', the handshake.

For the proxy's pooled connections (an asyncio protocol: `open_transport`) and for probes and
failover actions (streams: `open_stream`). Modes as libpq's sslmode: prefer continues in plain text
after 'N', require and verify-* refuse; verify-ca checks the certificate against ca, verify-full
also the host name (the instance's address as configured).
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Callable
from typing import TypeVar

from ...config import Address, TlsSettings
from ...errors import ServerConnectFailed
from ...tls.servers import context as _context
from ...tls.servers import handshake_failed as _failed
from ...tls.servers import hostname as _hostname
from ...tls.servers import refused as _refused
from .wire import messages as m

P = TypeVar("P", bound=asyncio.Protocol)
_SSL_REQUEST = m.ssl_request()


class _Negotiation(asyncio.Protocol):
    """Sends the SSLRequest and waits for the server's one-byte answer."""

    def __init__(self) -> None:
        self.answer: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        transport.write(_SSL_REQUEST)  # type: ignore[attr-defined]

    def data_received(self, data: bytes) -> None:
        if not self.answer.done():
            self.answer.set_result(data)

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.answer.done():
            self.answer.set_exception(ConnectionResetError("server closed the connection after an SSLRequest"))


async def open_transport(address: Address, factory: Callable[[], P], tls: TlsSettings) -> P:
    """Connect, negotiate TLS as tls says, and hand the connection to factory()'s protocol."""
    loop = asyncio.get_running_loop()
    context = _context(address, tls)
    if context is None:
        _, protocol = await loop.create_connection(factory, address.host, address.port)
        return protocol
    transport, negotiation = await loop.create_connection(_Negotiation, address.host, address.port)
    try:
        answer = await negotiation.answer
    except BaseException:
        transport.close()
        raise
    protocol = factory()
    if answer == b"S":
        try:
            secure = await loop.start_tls(transport, protocol, context, server_hostname=_hostname(address, context))
        except ssl.SSLError as exc:
            transport.close()
            raise _failed(address, exc) from exc
        assert secure is not None
        protocol.connection_made(secure)
    elif answer == b"N" and tls.mode == "prefer":
        transport.set_protocol(protocol)
        protocol.connection_made(transport)
    else:
        transport.close()
        if answer == b"N":
            raise _refused(address, tls)
        raise ServerConnectFailed(f"{address}: unexpected answer to an SSLRequest: {answer[:16]!r}")
    return protocol


async def open_stream(address: Address, tls: TlsSettings) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """Like open_transport, for a stream reader/writer pair."""
    reader, writer = await asyncio.open_connection(address.host, address.port)
    context = _context(address, tls)
    if context is None:
        return reader, writer
    try:
        writer.write(_SSL_REQUEST)
        answer = await reader.readexactly(1)
        if answer == b"S":
            await writer.start_tls(context, server_hostname=_hostname(address, context))
        elif answer != b"N" or tls.mode != "prefer":
            raise _refused(address, tls) if answer == b"N" else ServerConnectFailed(
                f"{address}: unexpected answer to an SSLRequest: {answer!r}")
    except ssl.SSLError as exc:
        writer.close()
        raise _failed(address, exc) from exc
    except BaseException:
        writer.close()
        raise
    return reader, writer
