"""Sans-IO authentication of a client by the proxy: trust, md5, SCRAM-SHA-256 or cleartext (no I/O, no clock).

Cleartext ("password", AuthenticationCleartextPassword) is what token logins use (SPEC §10): the
session asks for it only over TLS (or with allow_plaintext_tokens) and decides with `check_cleartext`.
"""

from __future__ import annotations

import os
import struct
from collections.abc import Callable

from ...errors import AuthenticationFailed, ProtocolViolation
from .wire import messages as m
from .wire.auth import ScramServerExchange, ScramVerifier, md5_password

_salt_pool = b""
_salt_used = 0


def _random_salt() -> bytes:
    """4 bytes from the OS's random source, read 4 KiB at a time (one syscall per 1,024 md5 logins)."""
    global _salt_pool, _salt_used
    if _salt_used + 4 > len(_salt_pool):
        _salt_pool, _salt_used = os.urandom(4096), 0
    _salt_used += 4
    return _salt_pool[_salt_used - 4:_salt_used]


# Decides a cleartext password: None to let the client in, else why not (for the server log only).
CleartextCheck = Callable[[bytes], "str | None"]


class ClientAuthentication:
    """Send what start() returns, feed each password message ('p' body) to receive(); done when `done`.

    Every failure raises AuthenticationFailed with PostgreSQL's own wording (no hint of which part
    was wrong), or ProtocolViolation for malformed messages; `failed_reason` then says why, for the log.
    Method "password" (cleartext) needs `check_cleartext`.
    """

    def __init__(self, method: str, user: str, password: str | None, verifier: ScramVerifier | None,
                 salt: bytes | None = None, channel_binding: bytes | None = None,
                 check_cleartext: CleartextCheck | None = None) -> None:
        """`channel_binding`: the TLS connection's tls-server-end-point data (SCRAM-SHA-256-PLUS is then offered);
        `check_cleartext`: decides method "password" (token logins)."""
        self.method = method
        self._channel_binding = channel_binding
        self._check_cleartext = check_cleartext
        self.failed_reason = ""
        self.user = user
        self._password = password
        self._verifier = verifier
        self._salt = salt
        self._scram: ScramServerExchange | None = None
        self._scram_started = False
        self.done = False

    def _refuse(self, reason: str = "wrong password") -> AuthenticationFailed:
        self.failed_reason = reason
        return AuthenticationFailed(f'password authentication failed for user "{self.user}"')

    def start(self) -> bytes:
        """The first authentication request to send (b"" and done for trust)."""
        if self.method == "trust":
            self.done = True
            return b""
        if self.method == "password":
            if self._check_cleartext is None:
                raise self._refuse("no cleartext check")
            return m.auth_request(3)   # AuthenticationCleartextPassword
        if self.method == "md5":
            if self._password is None:
                raise self._refuse()
            if self._salt is None:
                self._salt = _random_salt()
            return m.auth_md5(self._salt)
        if self._verifier is None:
            raise self._refuse()
        self._scram = ScramServerExchange(self._verifier, channel_binding=self._channel_binding)
        if self._channel_binding is not None:
            return m.auth_sasl(["SCRAM-SHA-256-PLUS", "SCRAM-SHA-256"])
        return m.auth_sasl(["SCRAM-SHA-256"])

    def receive(self, body: bytes) -> bytes:
        """One password message from the client; returns the reply to send."""
        if self.done:
            raise ProtocolViolation("unexpected password message after authentication")
        if self.method == "password":
            assert self._check_cleartext is not None
            secret = body[:-1] if body.endswith(b"\x00") else body
            reason = self._check_cleartext(secret)
            if reason is not None:
                raise self._refuse(reason)
            self.done = True
            return b""
        if self._scram is None:
            if body.rstrip(b"\x00") != md5_password(self.user, self._password or "", self._salt or b""):
                raise self._refuse()
            self.done = True
            return b""
        try:
            if not self._scram_started:
                self._scram_started = True
                mechanism, pos = m.read_cstr(body, 0)
                if mechanism == b"SCRAM-SHA-256-PLUS" and self._channel_binding is not None:
                    self._scram = ScramServerExchange(self._scram.verifier, channel_binding=self._channel_binding,
                                                      plus=True)
                elif mechanism != b"SCRAM-SHA-256":
                    raise AuthenticationFailed(
                        f"unsupported SASL mechanism {mechanism.decode(errors='replace')}")
                (length,) = struct.unpack_from("!i", body, pos)
                data = body[pos + 4:pos + 4 + length] if length >= 0 else b""
                return m.auth_sasl_continue(self._scram.server_first(data))
            reply = m.auth_sasl_final(self._scram.server_final(body))
        except AuthenticationFailed as exc:
            raise self._refuse() from exc
        except (ValueError, struct.error) as exc:
            raise ProtocolViolation("malformed SASL message") from exc
        self.done = True
        return reply
