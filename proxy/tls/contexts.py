"""SSL contexts from `TlsSettings`, towards clients (the proxy is the TLS server) and towards database servers.

Contexts are cached per settings and per the certificate and key files' modification times, so a
renewed certificate is used by the next connection that negotiates TLS (a reload, or no reload at
all); `check()` builds one at config load so a bad certificate is a config error, not a failed
handshake later.
"""

from __future__ import annotations

import os
import ssl
from collections.abc import Sequence

from ..config import TlsSettings

_VERSIONS = {"1.2": ssl.TLSVersion.TLSv1_2, "1.3": ssl.TLSVersion.TLSv1_3}
_cache: dict[tuple[object, ...], ssl.SSLContext] = {}


def _stamp(path: str | None) -> tuple[int, int]:
    if path is None:
        return (0, 0)
    try:
        st = os.stat(path)
    except OSError:
        return (0, 0)
    return (st.st_mtime_ns, st.st_size)


def for_clients(settings: TlsSettings, alpn: Sequence[str] = ()) -> ssl.SSLContext | None:
    """The context a client's TLS handshake uses (None: TLS disabled). Raises ssl.SSLError / OSError."""
    if settings.mode == "disable":
        return None
    key = ("client", settings, tuple(alpn), _stamp(settings.cert), _stamp(settings.key), _stamp(settings.ca))
    context = _cache.get(key)
    if context is None:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.minimum_version = _VERSIONS[settings.min_version]
        assert settings.cert is not None and settings.key is not None
        context.load_cert_chain(settings.cert, settings.key)
        # No TLS 1.3 session tickets: libpq and the MySQL clients never resume a session, and OpenSSL
        # otherwise makes and encrypts two tickets per handshake (part of each pgbench -C connection).
        context.num_tickets = 0
        if settings.client_cert == "verify":
            context.verify_mode = ssl.CERT_REQUIRED
            context.load_verify_locations(settings.ca)
        if alpn:
            context.set_alpn_protocols(list(alpn))
        _remember(key, context)
    return context


def for_servers(settings: TlsSettings) -> ssl.SSLContext | None:
    """The context for connections to database servers (None: disabled). prefer/require do not verify
    the server's certificate (as libpq's sslmode of the same names); verify-ca checks it against ca,
    verify-full also checks the host name. Raises ssl.SSLError / OSError."""
    if settings.mode == "disable":
        return None
    key = ("server", settings, _stamp(settings.cert), _stamp(settings.key), _stamp(settings.ca))
    context = _cache.get(key)
    if context is None:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        context.minimum_version = _VERSIONS[settings.min_version]
        if settings.mode.startswith("verify"):
            context.load_verify_locations(settings.ca)
            context.check_hostname = settings.mode == "verify-full"
            context.verify_mode = ssl.CERT_REQUIRED
        else:
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
        if settings.cert and settings.key:
            context.load_cert_chain(settings.cert, settings.key)
        _remember(key, context)
    return context


_end_points: dict[tuple[object, ...], bytes] = {}


def server_end_point(settings: TlsSettings) -> bytes | None:
    """SCRAM channel binding data of type tls-server-end-point (RFC 5929): the hash of the proxy's own
    certificate (SHA-256 unless its signature uses a stronger hash). None if it cannot be read."""
    if settings.cert is None:
        return None
    key = (settings.cert, _stamp(settings.cert))
    found = _end_points.get(key)
    if found is None:
        from cryptography import x509
        from cryptography.hazmat.primitives import hashes, serialization

        try:
            with open(settings.cert, "rb") as f:
                cert = x509.load_pem_x509_certificate(f.read())
        except (OSError, ValueError):
            return None
        algorithm = cert.signature_hash_algorithm
        if algorithm is None or isinstance(algorithm, hashes.MD5 | hashes.SHA1):
            algorithm = hashes.SHA256()
        digest = hashes.Hash(algorithm)
        digest.update(cert.public_bytes(serialization.Encoding.DER))
        found = _end_points[key] = digest.finalize()
    return found


def _remember(key: tuple[object, ...], context: ssl.SSLContext) -> None:
    if len(_cache) > 64:   # old certificate generations
        _cache.clear()
    _cache[key] = context


def check(settings: TlsSettings, client_side: bool) -> str | None:
    """Why these settings cannot make a context (None: they can)."""
    try:
        if client_side:
            for_clients(settings)
        else:
            for_servers(settings)
    except (ssl.SSLError, OSError, ValueError, TypeError) as exc:
        return f"cannot load the certificate, key or CA: {exc}"
    return None
