"""The TLS server end of an accepted client connection, between its socket transport and its session.

`TlsConnection` takes over a plain-text connection at the moment its protocol asks for TLS
(PostgreSQL SSLRequest, MySQL CLIENT_SSL) or finds a TLS ClientHello where a startup packet should
be (PostgreSQL 17 direct TLS). It is the socket's protocol from then on (the session's bytes are
decrypted and handed to `session.data_received`) and the session's transport (its writes are
encrypted). Unlike `loop.start_tls`, it accepts bytes already read past the upgrade request: a
MySQL client sends its ClientHello right behind the SSL request, and a direct-TLS client sends it
first. The ssl module's memory BIOs do the TLS; this class only moves bytes.
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Callable
from typing import Any, Protocol

# Decrypted bytes are read into one reusable buffer (the event loop is single-threaded and each read
# is copied out at once) instead of a fresh bytes object of the read size for every ssl.read call.
_BUFFER = bytearray(64 * 1024)
_VIEW = memoryview(_BUFFER)


class TlsSession(Protocol):
    """What TlsConnection needs of the session above it (an asyncio.Protocol with a transport)."""

    transport: Any

    def data_received(self, data: bytes) -> None: ...

    def connection_lost(self, exc: Exception | None) -> None: ...

    def pause_writing(self) -> None: ...

    def resume_writing(self) -> None: ...


# Told of the handshake's end: (the connection, None) when it succeeded, (None, why) when it failed.
# Returns False when it closed the connection (e.g. no ALPN on a direct-TLS connection).
Established = Callable[["TlsConnection | None", "str | None"], bool]


class TlsConnection(asyncio.Protocol):
    """See the module docstring; also an asyncio transport for the session."""

    def __init__(self, raw: Any, session: TlsSession, context: ssl.SSLContext, established: Established,
                 already_read: bytes = b"") -> None:
        self._raw = raw
        self._session = session
        self._incoming = ssl.MemoryBIO()
        self._outgoing = ssl.MemoryBIO()
        self._ssl = context.wrap_bio(self._incoming, self._outgoing, server_side=True)
        self._established = established
        self._handshaking = True
        self._closing = False
        raw.set_protocol(self)
        session.transport = self
        if already_read:
            self.data_received(already_read)

    # ---- what the handshake settled -------------------------------------------------------------

    @property
    def version(self) -> str:
        return self._ssl.version() or "?"

    @property
    def alpn(self) -> str | None:
        return self._ssl.selected_alpn_protocol()

    @property
    def peer_certificate(self) -> dict[str, Any] | None:
        return self._ssl.getpeercert() or None

    # ---- the socket's protocol --------------------------------------------------------------------

    def data_received(self, data: bytes) -> None:
        if self._closing:
            return
        self._incoming.write(data)
        if self._handshaking:
            try:
                self._ssl.do_handshake()
            except ssl.SSLWantReadError:
                self._flush()
                return
            except (ssl.SSLError, OSError) as exc:
                self._flush()
                self._closing = True
                self._raw.close()
                self._established(None, getattr(exc, "reason", None) or str(exc))
                return
            self._handshaking = False
            self._flush()
            if not self._established(self, None):
                return
        chunks: list[bytes] = []
        tls, incoming = self._ssl, self._incoming
        while True:
            try:
                n: int = tls.read(len(_BUFFER), _BUFFER)  # type: ignore[assignment]  # an int with a buffer
            except ssl.SSLWantReadError:
                break
            except ssl.SSLZeroReturnError:   # the client's close_notify
                self.close()
                break
            except ssl.SSLError:
                self._closing = True
                self._raw.close()
                return
            if not n:
                break
            chunks.append(bytes(_VIEW[:n]))
            # The common case (one whole record per read): done without a read that raises SSLWantReadError.
            if not incoming.pending and not tls.pending():
                break
        if self._outgoing.pending:
            self._raw.write(self._outgoing.read())
        if chunks:
            self._session.data_received(chunks[0] if len(chunks) == 1 else b"".join(chunks))

    def eof_received(self) -> bool:
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self._closing = True
        self._session.connection_lost(exc)

    def pause_writing(self) -> None:
        self._session.pause_writing()

    def resume_writing(self) -> None:
        self._session.resume_writing()

    # ---- the session's transport ------------------------------------------------------------------

    def write(self, data: bytes | bytearray | memoryview) -> None:
        if self._closing:
            return
        try:
            self._ssl.write(data)
        except ssl.SSLError:
            self._closing = True
            self._raw.close()
            return
        self._flush()

    def _flush(self) -> None:
        if self._outgoing.pending:
            self._raw.write(self._outgoing.read())

    def close(self) -> None:
        if self._closing:
            return
        self._closing = True
        if not self._handshaking:
            try:
                self._ssl.unwrap()   # queues close_notify; the client's is not waited for
            except ssl.SSLError:
                pass
            self._flush()
        self._raw.close()

    def abort(self) -> None:
        self._closing = True
        self._raw.abort()

    def is_closing(self) -> bool:
        return self._closing or self._raw.is_closing()

    def pause_reading(self) -> None:
        self._raw.pause_reading()

    def resume_reading(self) -> None:
        self._raw.resume_reading()

    def get_write_buffer_size(self) -> int:
        return int(self._raw.get_write_buffer_size())

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        if name == "ssl_object":
            return self._ssl
        if name == "peercert":
            return self._ssl.getpeercert()
        return self._raw.get_extra_info(name, default)
