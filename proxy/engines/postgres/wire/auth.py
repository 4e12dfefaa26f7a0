"""PostgreSQL authentication, sans-IO: SCRAM-SHA-256 and md5 for both sides of the proxy.

Client-facing SCRAM uses a verifier derived once at config load (`ScramVerifier.from_password`),
so a login never runs PBKDF2 on the proxy side. Server-facing SCRAM caches the salted password
per (password, salt, iterations), so new server connections do not pay PBKDF2 either.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import hmac
import os
from dataclasses import dataclass

from ....errors import AuthenticationFailed, ProtocolViolation, ServerConnectFailed

try:   # CPython's own md5: for 36 bytes it is about twice as fast as OpenSSL's (no EVP context set-up)
    from _md5 import md5 as _md5
except ImportError:  # pragma: no cover - other Pythons
    _md5 = hashlib.md5

SCRAM_ITERATIONS = 4096


def _hmac(key: bytes, msg: bytes) -> bytes:
    return hmac.new(key, msg, hashlib.sha256).digest()


def _h(data: bytes) -> bytes:
    return hashlib.sha256(data).digest()


def _xor(a: bytes, b: bytes) -> bytes:
    return bytes(x ^ y for x, y in zip(a, b, strict=True))


def md5_password(user: str, password: str, salt: bytes) -> bytes:
    """The md5 response to AuthenticationMD5Password: 'md5' + md5(md5(password + user) + salt)."""
    return b"md5" + _md5(_md5_secret(user, password) + salt).hexdigest().encode()


@functools.lru_cache(maxsize=1024)
def _md5_secret(user: str, password: str) -> bytes:
    """md5(password + user) in hex: what pg_authid stores, the same for every login of a user."""
    return hashlib.md5((password + user).encode()).hexdigest().encode()


@dataclass(frozen=True)
class ScramVerifier:
    """What a server stores for SCRAM-SHA-256: salt, iterations, StoredKey, ServerKey."""

    salt: bytes
    iterations: int
    stored_key: bytes
    server_key: bytes

    @classmethod
    def from_password(cls, password: str, salt: bytes | None = None,
                      iterations: int = SCRAM_ITERATIONS) -> ScramVerifier:
        salt = salt if salt is not None else os.urandom(16)
        salted = hashlib.pbkdf2_hmac("sha256", password.encode(), salt, iterations)
        return cls(salt, iterations, _h(_hmac(salted, b"Client Key")), _hmac(salted, b"Server Key"))


def _attributes(text: str) -> dict[str, str]:
    attrs: dict[str, str] = {}
    for part in text.split(","):
        if len(part) >= 2 and part[1] == "=":
            attrs[part[0]] = part[2:]
    return attrs


class ScramServerExchange:
    """The proxy's side of a client's SCRAM-SHA-256 login (RFC 5802/7677), with channel binding
    (SCRAM-SHA-256-PLUS, tls-server-end-point, RFC 5929) when `channel_binding` holds the TLS
    connection's binding data.

    `plus`: the client chose SCRAM-SHA-256-PLUS (then its GS2 header must bind the channel)."""

    def __init__(self, verifier: ScramVerifier, nonce: bytes | None = None, channel_binding: bytes | None = None,
                 plus: bool = False) -> None:
        self.verifier = verifier
        self._server_nonce = base64.b64encode(nonce or os.urandom(18)).decode()
        self._client_first_bare = ""
        self._server_first = ""
        self._nonce = ""
        self._channel_binding = channel_binding
        self._plus = plus
        self._expected_c = ""

    def server_first(self, client_first: bytes) -> bytes:
        """Consume client-first-message, return server-first-message."""
        try:
            text = client_first.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise ProtocolViolation("malformed SCRAM message") from exc
        parts = text.split(",", 2)
        if len(parts) != 3 or not (parts[0] in ("n", "y") or parts[0].startswith("p=")):
            raise ProtocolViolation("malformed SCRAM message: bad GS2 header")
        flag = parts[0]
        if flag.startswith("p="):
            if flag != "p=tls-server-end-point" or self._channel_binding is None or not self._plus:
                raise AuthenticationFailed(f"SCRAM channel binding {flag[2:]!r} is not offered here")
            binding = self._channel_binding
        elif self._plus:
            raise AuthenticationFailed("SCRAM-SHA-256-PLUS without channel binding")
        elif flag == "y" and self._channel_binding is not None:
            # The client could bind the channel and believes the server cannot, while it can: a downgrade.
            raise AuthenticationFailed("SCRAM channel binding downgrade refused")
        else:
            binding = b""
        gs2_header = f"{parts[0]},{parts[1]},"
        self._expected_c = base64.b64encode(gs2_header.encode() + binding).decode()
        self._client_first_bare = parts[2]
        client_nonce = _attributes(self._client_first_bare).get("r")
        if not client_nonce:
            raise ProtocolViolation("malformed SCRAM message: missing nonce")
        self._nonce = client_nonce + self._server_nonce
        salt = base64.b64encode(self.verifier.salt).decode()
        self._server_first = f"r={self._nonce},s={salt},i={self.verifier.iterations}"
        return self._server_first.encode()

    def server_final(self, client_final: bytes) -> bytes:
        """Verify client-final-message; return server-final-message or raise AuthenticationFailed."""
        text = client_final.decode("utf-8", "replace")
        attrs = _attributes(text)
        if attrs.get("r") != self._nonce or "p" not in attrs:
            raise AuthenticationFailed("SCRAM nonce or proof missing")
        if not hmac.compare_digest(attrs.get("c", ""), self._expected_c):
            raise AuthenticationFailed("SCRAM channel binding does not match")
        if ",p=" not in text:   # RFC 5802: the proof is the last attribute
            raise ProtocolViolation("malformed SCRAM message: the proof must come last")
        without_proof = text[: text.rindex(",p=")]
        auth_message = f"{self._client_first_bare},{self._server_first},{without_proof}".encode()
        try:
            proof = base64.b64decode(attrs["p"], validate=True)
        except ValueError as exc:
            raise AuthenticationFailed("malformed SCRAM proof") from exc
        signature = _hmac(self.verifier.stored_key, auth_message)
        if len(proof) != len(signature):
            raise AuthenticationFailed("password authentication failed")
        client_key = _xor(proof, signature)
        if not hmac.compare_digest(_h(client_key), self.verifier.stored_key):
            raise AuthenticationFailed("password authentication failed")
        server_signature = _hmac(self.verifier.server_key, auth_message)
        return b"v=" + base64.b64encode(server_signature)


@functools.lru_cache(maxsize=256)
def _salted_password(password: str, salt: bytes, iterations: int) -> bytes:
    return hashlib.pbkdf2_hmac("sha256", password.encode(), salt, iterations)


class ScramClientExchange:
    """The proxy's side of a SCRAM-SHA-256 login to a database server."""

    def __init__(self, password: str, nonce: bytes | None = None) -> None:
        self.password = password
        self._client_nonce = base64.b64encode(nonce or os.urandom(18)).decode()
        self._client_first_bare = f"n=,r={self._client_nonce}"
        self._server_signature = b""

    def client_first(self) -> bytes:
        return ("n,," + self._client_first_bare).encode()

    def client_final(self, server_first: bytes) -> bytes:
        text = server_first.decode()
        attrs = _attributes(text)
        nonce, salt, iterations = attrs.get("r", ""), attrs.get("s", ""), attrs.get("i", "")
        if not nonce.startswith(self._client_nonce) or not salt or not iterations.isdigit():
            raise ServerConnectFailed("server sent an invalid SCRAM challenge")
        salted = _salted_password(self.password, base64.b64decode(salt), int(iterations))
        client_key = _hmac(salted, b"Client Key")
        without_proof = f"c=biws,r={nonce}"
        auth_message = f"{self._client_first_bare},{text},{without_proof}".encode()
        proof = _xor(client_key, _hmac(_h(client_key), auth_message))
        self._server_signature = _hmac(_hmac(salted, b"Server Key"), auth_message)
        return f"{without_proof},p={base64.b64encode(proof).decode()}".encode()

    def verify_server_final(self, server_final: bytes) -> None:
        attrs = _attributes(server_final.decode("utf-8", "replace"))
        if not self._server_signature or "v" not in attrs or base64.b64decode(attrs["v"]) != self._server_signature:
            raise ServerConnectFailed("server's SCRAM signature did not verify")
