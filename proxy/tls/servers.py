"""What both engines' server_tls code shares: the context for one instance, its server_hostname, clear errors.

A failed handshake becomes one ServerConnectFailed whose message names the instance and, for a
certificate that does not verify, OpenSSL's reason and the settings to look at; the probe that
meets it marks the instance down with that message (one log line).
"""

from __future__ import annotations

import ssl

from ..config import Address, TlsSettings
from ..errors import ServerConnectFailed
from . import contexts


def context(address: Address, tls: TlsSettings) -> ssl.SSLContext | None:
    """The client-side context towards `address` (None: TLS disabled); ServerConnectFailed if the CA or
    the client certificate cannot be loaded (changed on disk since the config was loaded)."""
    try:
        return contexts.for_servers(tls)
    except (ssl.SSLError, OSError, ValueError) as exc:
        raise ServerConnectFailed(f"{address}: server_tls: cannot load the CA or client certificate: {exc}") from exc


def hostname(address: Address, context: ssl.SSLContext) -> str | None:
    """server_hostname for the handshake: the instance's host as configured when verify-full checks it."""
    return address.host if context.check_hostname else None


def refused(address: Address, tls: TlsSettings, why: str = "the server does not accept TLS") -> ServerConnectFailed:
    """The server has no TLS and the mode needs it (require, verify-ca, verify-full)."""
    return ServerConnectFailed(f"{address}: {why}, and server_tls mode = \"{tls.mode}\" needs it")


def handshake_failed(address: Address, exc: BaseException) -> ServerConnectFailed:
    """The TLS handshake failed (a certificate that does not verify, no common protocol, a reset)."""
    if isinstance(exc, ssl.SSLCertVerificationError):
        detail = f"certificate verify failed: {exc.verify_message} (server_tls ca, mode)"
    elif isinstance(exc, ssl.SSLError):
        detail = exc.reason or str(exc)
    else:
        detail = str(exc) or type(exc).__name__
    return ServerConnectFailed(f"{address}: TLS handshake with the server failed: {detail}")
