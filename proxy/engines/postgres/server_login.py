"""Sans-IO login of the proxy to a PostgreSQL server: startup, authentication, parameters, key data."""

from __future__ import annotations

import struct

from ...errors import ServerConnectFailed
from .wire import messages as m
from .wire.auth import ScramClientExchange, md5_password


class ServerLogin:
    """Feed server messages with receive(); send what it returns; done once ReadyForQuery arrives."""

    def __init__(self, user: str, password: str | None, database: str,
                 params: dict[str, str] | None = None) -> None:
        self.user = user
        self.password = password
        self.database = database
        self.extra_params = dict(params or {})
        self.parameters: dict[str, str] = {}
        self.backend_pid = 0
        self.backend_key = 0
        self.done = False
        self._scram: ScramClientExchange | None = None

    def startup(self) -> bytes:
        params = {"user": self.user, "database": self.database, **self.extra_params}
        return m.startup_message(params)

    def _need_password(self, method: str) -> str:
        if self.password is None:
            raise ServerConnectFailed(
                f"server requested {method} authentication for user {self.user!r} but no "
                "server password is configured")
        return self.password

    def receive(self, kind: int, body: bytes) -> bytes:
        """Process one server message; returns bytes to send back (possibly empty)."""
        if kind == 0x52:  # 'R'
            return self._auth(body)
        if kind == 0x53:  # 'S'
            name, value = m.parse_parameter_status(body)
            self.parameters[name] = value
        elif kind == 0x4B:  # 'K'
            self.backend_pid, self.backend_key = struct.unpack_from("!iI", body, 0)
        elif kind == 0x5A:  # 'Z'
            self.done = True
        elif kind == 0x45:  # 'E'
            err = m.parse_error_fields(body)
            raise ServerConnectFailed(f"server refused login: {err.message}", err.code)
        # 'N' notices and anything else during login are ignored.
        return b""

    def _auth(self, body: bytes) -> bytes:
        (code,) = struct.unpack_from("!i", body, 0)
        payload = body[4:]
        if code == m.AUTH_OK:
            return b""
        if code == m.AUTH_CLEARTEXT:
            return m.password_message(m.cstr(self._need_password("cleartext")))
        if code == m.AUTH_MD5:
            return m.password_message(m.cstr(md5_password(self.user, self._need_password("md5"), payload[:4])))
        if code == m.AUTH_SASL:
            mechanisms = [x.decode() for x in payload.split(b"\x00") if x]
            if "SCRAM-SHA-256" not in mechanisms:
                raise ServerConnectFailed(f"server offers unsupported SASL mechanisms {mechanisms}")
            self._scram = ScramClientExchange(self._need_password("SCRAM-SHA-256"))
            return m.sasl_initial_response("SCRAM-SHA-256", self._scram.client_first())
        if code == m.AUTH_SASL_CONTINUE and self._scram is not None:
            return m.password_message(self._scram.client_final(payload))
        if code == m.AUTH_SASL_FINAL and self._scram is not None:
            self._scram.verify_server_final(payload)
            return b""
        raise ServerConnectFailed(f"server requested unsupported authentication method {code}")
