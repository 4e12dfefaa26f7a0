"""Sans-IO login of the proxy to a MySQL / MariaDB server (the proxy plays the client).

Feed every server packet, from the greeting (sequence id 0) on, to `receive(seq, payload)`; send
the (seq, payload) pairs it returns. `done` once the server's OK arrived; an ERR raises
`MysqlServerRefused` with the server's errno, SQLSTATE and message.

TLS (server_tls, `tls_mode`): when the greeting offers CLIENT_SSL and the mode is not disable, the
greeting's answer is the 32-byte SSL request (sequence id 1) and `awaiting_tls` is set: the caller
negotiates TLS, then sends what `tls_established()` returns (the full handshake response, sequence
id 2) inside it. A server without CLIENT_SSL: prefer continues in plain text, require and verify-*
raise `TlsRefused`. Plugins: mysql_native_password,
caching_sha2_password (fast path; full authentication over TLS or with the server's RSA key),
MariaDB's client_ed25519, and mysql_clear_password (only over TLS or when explicitly allowed).
"""

from __future__ import annotations

from ...errors import ProtocolViolation, ServerConnectFailed
from . import auth
from .wire.codes import (
    AUTH_MORE_DATA_HEADER,
    EOF_HEADER,
    ERR_HEADER,
    OK_HEADER,
    UTF8MB4_GENERAL_CI,
    Capability,
)
from .wire.handshake import (
    AuthSwitchRequest,
    HandshakeResponse41,
    HandshakeV10,
    auth_switch_scramble,
)
from .wire.messages import decode_err, decode_ok

# Always asked for; COMPRESS never is (not supported here), SSL only as tls_mode says.
REQUIRED_CAPABILITIES = Capability.PROTOCOL_41 | Capability.SECURE_CONNECTION | Capability.PLUGIN_AUTH
_NEVER = Capability.COMPRESS | Capability.SSL | Capability.ZSTD_COMPRESSION

Packets = list[tuple[int, bytes]]


class MysqlServerRefused(ServerConnectFailed):
    """The server answered the login with an ERR packet."""

    def __init__(self, errno: int, sqlstate: str, server_message: str) -> None:
        super().__init__(f"server refused login: ERROR {errno} ({sqlstate}): {server_message}", sqlstate)
        self.errno = errno
        self.server_message = server_message


class TlsRefused(ServerConnectFailed):
    """server_tls needs TLS and the server's greeting does not offer CLIENT_SSL."""


class ServerLogin:
    """One server connection's login; `receive` each packet until `done`."""

    def __init__(self, user: str, password: str | None, database: str | None = None,
                 wanted_capabilities: int = 0, charset: int = UTF8MB4_GENERAL_CI,
                 attributes: dict[str, str] | None = None, *, tls: bool = False,
                 allow_cleartext: bool = False, server_public_key: bytes | None = None,
                 max_packet: int = 0xFFFFFF, tls_mode: str = "disable") -> None:
        self.user = user
        self._password = (password or "").encode()
        self.database = database or None
        self.wanted = wanted_capabilities
        self.charset = charset
        self.attributes = dict(attributes or {})
        self.tls = tls             # the connection is encrypted (set by tls_established)
        self.tls_mode = tls_mode   # server_tls mode: disable | prefer | require | verify-ca | verify-full
        self.awaiting_tls = False  # the SSL request went out: negotiate TLS, then tls_established()
        self._response = b""       # the handshake response that waits for TLS
        self.allow_cleartext = allow_cleartext
        self.server_public_key = server_public_key     # PEM; learnt on request when None
        self.max_packet = max_packet
        self.done = False
        self.connection_id = 0
        self.server_version = ""
        self.server_capabilities = 0
        self.mariadb_capabilities = 0
        self.capabilities = 0
        self.status = 0
        self.plugin = ""
        self._greeted = False
        self._scramble = b""
        self._expect_seq = 0
        self._awaiting_key = False

    def receive(self, seq: int, payload: bytes) -> Packets:
        """One server packet; returns what to send back (possibly nothing)."""
        if self.awaiting_tls:
            raise ServerConnectFailed("server sent a packet instead of starting the TLS handshake")
        if self.done:
            raise ServerConnectFailed("server sent a packet after the login finished")
        if seq != self._expect_seq:
            raise ServerConnectFailed(f"server packet out of order (sequence id {seq}, "
                                      f"expected {self._expect_seq})")
        if not payload:
            raise ServerConnectFailed("server sent an empty packet during login")
        try:
            if payload[0] == ERR_HEADER:
                err = decode_err(payload)
                raise MysqlServerRefused(err.errno, err.sqlstate, err.message)
            if not self._greeted:
                return self._on_greeting(payload)
            kind = payload[0]
            if kind == OK_HEADER:
                self.status = decode_ok(payload, self.capabilities).status
                self.done = True
                return []
            if kind == EOF_HEADER:
                return self._on_switch(seq + 1, AuthSwitchRequest.decode(payload))
            if kind == AUTH_MORE_DATA_HEADER:
                return self._on_more_data(seq + 1, payload[1:])
        except ProtocolViolation as exc:
            raise ServerConnectFailed(f"server sent a malformed login packet: {exc.message}") from exc
        raise ServerConnectFailed(f"server sent an unexpected login packet (header 0x{payload[0]:02x})")

    # ------------------------------------------------------------------ steps

    def _on_greeting(self, payload: bytes) -> Packets:
        greeting = HandshakeV10.decode(payload)
        self._greeted = True
        self.connection_id = greeting.connection_id
        self.server_version = greeting.server_version
        self.server_capabilities = greeting.capabilities
        self.mariadb_capabilities = greeting.mariadb_capabilities
        missing = REQUIRED_CAPABILITIES & ~greeting.capabilities
        if missing:
            raise ServerConnectFailed(f"server lacks required capabilities {Capability(missing)!r}")
        wanted = (self.wanted | REQUIRED_CAPABILITIES) & ~_NEVER
        if self.database:
            wanted |= Capability.CONNECT_WITH_DB
        else:
            wanted &= ~Capability.CONNECT_WITH_DB
        if self.attributes:
            wanted |= Capability.CONNECT_ATTRS
        self.capabilities = wanted & greeting.capabilities
        self._scramble = greeting.scramble[:auth.SCRAMBLE_LENGTH]
        self.plugin = greeting.auth_plugin if greeting.auth_plugin in (
            auth.NATIVE_PASSWORD, auth.CACHING_SHA2_PASSWORD) else auth.NATIVE_PASSWORD
        if self.tls_mode != "disable":
            if greeting.capabilities & Capability.SSL:
                self.capabilities |= Capability.SSL
            elif self.tls_mode != "prefer":
                raise TlsRefused(f"the server does not offer TLS (no CLIENT_SSL in its handshake), and "
                                 f"server_tls mode = \"{self.tls_mode}\" needs it")
        response = HandshakeResponse41(
            self.capabilities, self.max_packet, self.charset, self.user,
            self._first_response(self.plugin), self.database, self.plugin,
            self.attributes if self.capabilities & Capability.CONNECT_ATTRS else {})
        if self.capabilities & Capability.SSL:
            self.awaiting_tls = True
            self._response = response.encode()
            return [(1, response.encode_ssl_request())]
        self._expect_seq = 2
        return [(1, response.encode())]

    def tls_established(self) -> Packets:
        """TLS is up: the handshake response (the same capabilities, CLIENT_SSL among them) goes inside it."""
        if not self.awaiting_tls:
            raise ServerConnectFailed("TLS established without an SSL request")
        self.awaiting_tls = False
        self.tls = True
        response, self._response = self._response, b""
        self._expect_seq = 3
        return [(2, response)]

    def _first_response(self, plugin: str) -> bytes:
        if plugin == auth.CACHING_SHA2_PASSWORD:
            return auth.caching_sha2_token(self._password, self._scramble)
        return auth.native_password_token(self._password, self._scramble)

    def _on_switch(self, reply: int, switch: AuthSwitchRequest) -> Packets:
        self.plugin = switch.plugin
        if switch.plugin == auth.NATIVE_PASSWORD:
            self._scramble = auth_switch_scramble(switch.data, auth.SCRAMBLE_LENGTH)
            data = auth.native_password_token(self._password, self._scramble)
        elif switch.plugin == auth.CACHING_SHA2_PASSWORD:
            self._scramble = auth_switch_scramble(switch.data, auth.SCRAMBLE_LENGTH)
            data = auth.caching_sha2_token(self._password, self._scramble)
        elif switch.plugin == auth.ED25519:
            scramble = auth_switch_scramble(switch.data, auth.ED25519_SCRAMBLE_LENGTH)
            if len(scramble) != auth.ED25519_SCRAMBLE_LENGTH:
                raise ServerConnectFailed("server sent a client_ed25519 challenge of the wrong length")
            data = auth.ed25519_token(self._password, scramble)
        elif switch.plugin == auth.CLEAR_PASSWORD:
            data = self._cleartext("mysql_clear_password")
        else:
            raise ServerConnectFailed(f"server asked for unsupported auth plugin {switch.plugin!r} "
                                      f"for user {self.user!r}")
        return self._send(reply, data)

    def _on_more_data(self, reply: int, data: bytes) -> Packets:
        if self.plugin != auth.CACHING_SHA2_PASSWORD:
            raise ServerConnectFailed(f"server sent unexpected auth data for plugin {self.plugin!r}")
        if self._awaiting_key:
            self._awaiting_key = False
            self.server_public_key = data
            return self._send(reply, self._rsa_encrypted(data))
        if data == bytes((auth.SHA2_FAST_AUTH_SUCCESS,)):
            self._expect_seq = reply    # the OK follows with the next sequence id
            return []
        if data != bytes((auth.SHA2_PERFORM_FULL_AUTH,)):
            raise ServerConnectFailed("server sent an unknown caching_sha2_password status")
        if self.tls:
            return self._send(reply, auth.clear_password_payload(self._password))
        if self.server_public_key is not None:
            return self._send(reply, self._rsa_encrypted(self.server_public_key))
        self._awaiting_key = True
        return self._send(reply, bytes((auth.SHA2_REQUEST_PUBLIC_KEY,)))

    def _rsa_encrypted(self, pem: bytes) -> bytes:
        try:
            return auth.rsa_encrypt_password(self._password, self._scramble, pem)
        except ValueError as exc:
            raise ServerConnectFailed(f"server sent an unusable RSA public key: {exc}") from exc

    def _cleartext(self, what: str) -> bytes:
        if not (self.tls or self.allow_cleartext):
            raise ServerConnectFailed(f"server asked for {what} for user {self.user!r} over a "
                                      "connection without TLS (refused: it would expose the password)")
        return auth.clear_password_payload(self._password)

    def _send(self, reply: int, data: bytes) -> Packets:
        self._expect_seq = reply + 1
        return [(reply, data)]
