"""Sans-IO login of a MySQL client by the proxy (the proxy plays the server), and COM_CHANGE_USER.

Send `greeting()` with sequence id 0, then feed each client packet to `receive(seq, payload)` and
send the (seq, payload) pairs it returns, in order. The login ends with `done` (an OK was
returned) or `failed` (an ERR was returned: send it, then close). A client's mistakes never
raise: they end in an ERR whose text names no secret, and `failed_reason` says why for the log.

Flow: greeting → [SSLRequest → `wants_tls`; the shell upgrades and calls `tls_established()`] →
HandshakeResponse41 → [AuthSwitchRequest when the client used another plugin] → verification →
OK. caching_sha2_password answers a valid token with AuthMoreData 0x03 + OK; full authentication
(`force_full_auth`, or later token checks) asks 0x04 and takes the cleartext over TLS, or an
RSA-encrypted password after handing out the proxy's public key (request 0x02).

Token users (`user_auth(name)` is "token" or "password_or_token", SPEC §10) send their token as a
cleartext password: the machine switches them to mysql_clear_password, over TLS only unless
`plaintext_tokens`, and `check_cleartext` decides. A password_or_token user whose scramble answer
matches the password is let in at once; otherwise (over TLS) it is switched to mysql_clear_password too.
"""

from __future__ import annotations

from collections.abc import Callable
from enum import Enum, auto

from ...errors import ProtocolViolation
from . import auth
from .auth import MysqlVerifiers
from .wire.codes import UTF8MB4_GENERAL_CI, Capability, ErrorCode, Status
from .wire.handshake import (
    AuthSwitchRequest,
    ChangeUser,
    HandshakeResponse41,
    HandshakeV10,
    encode_auth_more_data,
    is_ssl_request,
)
from .wire.messages import encode_err, encode_ok

CLIENT_AUTH_METHODS = (auth.CACHING_SHA2_PASSWORD, auth.NATIVE_PASSWORD)
# What the login itself relies on; ORed into whatever the shell offers.
LOGIN_CAPABILITIES = Capability.PROTOCOL_41 | Capability.SECURE_CONNECTION | Capability.PLUGIN_AUTH

Packets = list[tuple[int, bytes]]
UserLookup = Callable[[str], MysqlVerifiers | None]
# True: let the client in; False or a reason (for the log): refuse it like a wrong password.
CleartextCheck = Callable[[str, bytes, MysqlVerifiers | None], "bool | str"]
UserAuth = Callable[[str], str]


class _State(Enum):
    GREETING = auto()          # greeting() not called yet
    RESPONSE = auto()          # waiting for HandshakeResponse41 (or SSLRequest)
    SWITCHED = auto()          # sent AuthSwitchRequest, waiting for the plugin's answer
    FULL_AUTH = auto()         # sent 0x04, waiting for cleartext / 0x02 / RSA ciphertext
    RSA = auto()               # sent the public key, waiting for the RSA ciphertext
    DONE = auto()
    FAILED = auto()


def _default_cleartext_check(user: str, password: bytes, verifiers: MysqlVerifiers | None) -> bool:
    return verifiers is not None and auth.verify_cleartext(verifiers, password)


def _password_only(user: str) -> str:
    return "password"


class ClientLogin:
    """One client's login state machine (also used again for each COM_CHANGE_USER).

    `tls` means a secure transport (TLS, or a Unix socket): cleartext passwords are accepted only
    then. `lookup_user(name)` returns the user's verifiers or None; `check_cleartext(user,
    password, verifiers)` decides cleartext passwords (default: the verifiers), the hook for tokens.
    """

    def __init__(self, method: str, connection_id: int, server_version: str, capabilities_offered: int,
                 lookup_user: UserLookup, peer_host: str, *, charset: int = UTF8MB4_GENERAL_CI,
                 tls: bool = False, require_tls: bool = False, force_full_auth: bool = False,
                 check_cleartext: CleartextCheck | None = None, scramble: bytes | None = None,
                 user_auth: UserAuth | None = None, plaintext_tokens: bool = False) -> None:
        if method not in CLIENT_AUTH_METHODS:
            raise ValueError(f"unsupported MySQL client auth method {method!r}")
        self.method = method
        self.connection_id = connection_id
        self.server_version = server_version
        self.offered = capabilities_offered | LOGIN_CAPABILITIES
        self.peer_host = peer_host
        self.server_charset = charset
        self.tls = tls
        self.require_tls = require_tls
        self.force_full_auth = force_full_auth
        self._lookup = lookup_user
        self._check_cleartext = check_cleartext or _default_cleartext_check
        self._user_auth = user_auth or _password_only
        self.plaintext_tokens = plaintext_tokens
        self._switched_to = method
        self._greeting_scramble = scramble if scramble is not None else auth.new_scramble()
        self._scramble = self._greeting_scramble
        self._state = _State.GREETING
        self._expect_seq = 1
        self._changing_user = False
        self._password_used = False
        self.wants_tls = False
        self.done = False
        self.failed = False
        self.failed_reason = ""
        self.user = ""
        self.database: str | None = None
        self.capabilities = 0
        self.charset = charset
        self.max_packet = 0
        self.attributes: dict[str, str] = {}
        self.client_plugin = ""

    # ------------------------------------------------------------------ driving

    def greeting(self) -> bytes:
        """The HandshakeV10 to send with sequence id 0."""
        self._state = _State.RESPONSE
        return HandshakeV10(self.server_version, self.connection_id, self._greeting_scramble,
                            self.offered, self.server_charset, Status.AUTOCOMMIT, self.method).encode()

    def tls_established(self) -> None:
        """The shell finished the TLS handshake the client asked for; the full response follows."""
        self.tls = True
        self.wants_tls = False

    def receive(self, seq: int, payload: bytes) -> Packets:
        """One client packet during login; returns the packets to send back."""
        if self._state in (_State.GREETING, _State.DONE, _State.FAILED):
            raise ProtocolViolation(f"login packet received in state {self._state.name}")
        if self.wants_tls:
            raise ProtocolViolation("login packet received before the TLS upgrade finished")
        if seq != self._expect_seq:
            return self._fail(seq + 1, ErrorCode.NET_PACKETS_OUT_OF_ORDER, "Got packets out of order",
                              f"packet sequence id {seq}, expected {self._expect_seq}")
        reply = seq + 1
        if self._state is _State.RESPONSE:
            return self._on_response(reply, payload)
        if self._state is _State.SWITCHED:
            self._password_used = bool(payload)
            if self._switched_to == auth.CLEAR_PASSWORD:
                return self._finish_cleartext(reply, _strip_nul(payload))
            return self._verify(reply, self.method, payload)
        if self._state is _State.FULL_AUTH:
            return self._on_full_auth(reply, payload)
        return self._on_rsa(reply, payload)

    def change_user(self, payload: bytes) -> Packets:
        """A COM_CHANGE_USER (sequence id 0) from a logged-in client: re-authenticate it."""
        if self._state is not _State.DONE:
            raise ProtocolViolation("COM_CHANGE_USER before the login finished")
        self.done = False
        self._changing_user = True
        try:
            packet = ChangeUser.decode(payload, self.capabilities)
        except ProtocolViolation as exc:
            return self._fail(1, ErrorCode.HANDSHAKE, "Bad handshake", f"malformed COM_CHANGE_USER: {exc}")
        self.user = packet.user
        self.database = packet.database or None
        if packet.charset is not None:
            self.charset = packet.charset
        self.attributes = packet.attributes
        self.client_plugin = packet.auth_plugin or auth.NATIVE_PASSWORD
        self._password_used = bool(packet.auth_response)
        kind = self._user_auth(self.user)
        if kind != "password" and (kind == "token" or self._tokens_usable()):
            return self._token_login(1, kind, packet.auth_response)
        fast = not (self.force_full_auth and self.method == auth.CACHING_SHA2_PASSWORD)
        verifiers = self._lookup(self.user) if self.client_plugin == self.method and fast else None
        if verifiers is not None:
            # Clients compute this against the greeting's scramble (some against the last switch's).
            for scramble in dict.fromkeys((self._greeting_scramble, self._scramble)):
                if self._token_ok(self.method, verifiers, scramble, packet.auth_response):
                    return self._accept(1, self.method)
        return self._switch(1)      # another plugin, or no match: one fresh round settles it

    # ------------------------------------------------------------------ states

    def _on_response(self, reply: int, payload: bytes) -> Packets:
        if is_ssl_request(payload):
            if not self.offered & Capability.SSL or self.tls or self.wants_tls:
                return self._fail(reply, ErrorCode.HANDSHAKE, "Bad handshake", "unexpected SSL request")
            self.wants_tls = True
            self._expect_seq = reply
            return []
        if len(payload) >= 4 and not int.from_bytes(payload[:4], "little") & Capability.PROTOCOL_41:
            return self._fail(reply, ErrorCode.HANDSHAKE, "Bad handshake: client does not support the 4.1 "
                              "protocol", "client does not support the 4.1 protocol", pre_41=True)
        try:
            response = HandshakeResponse41.decode(payload)
        except ProtocolViolation as exc:
            return self._fail(reply, ErrorCode.HANDSHAKE, "Bad handshake",
                              f"malformed handshake response: {exc}")
        self.capabilities = response.capabilities & self.offered
        self.user = response.user
        self.database = response.database or None
        self.charset = response.charset
        self.max_packet = response.max_packet
        self.attributes = response.attributes
        self._password_used = bool(response.auth_response)
        if self.require_tls and not self.tls:
            return self._fail(reply, ErrorCode.SECURE_TRANSPORT_REQUIRED,
                              "Connections using insecure transport are prohibited by this proxy",
                              "TLS required")
        if not self.capabilities & Capability.PLUGIN_AUTH:
            # Pre-plugin clients always answer with a native token, and cannot be switched.
            self.client_plugin = auth.NATIVE_PASSWORD
            return self._verify(reply, auth.NATIVE_PASSWORD, response.auth_response)
        self.client_plugin = response.auth_plugin or auth.NATIVE_PASSWORD
        kind = self._user_auth(self.user)
        if kind != "password" and (kind == "token" or self._tokens_usable()):
            return self._token_login(reply, kind, response.auth_response)
        if self.client_plugin == self.method:
            return self._verify(reply, self.method, response.auth_response)
        if self.client_plugin == auth.CLEAR_PASSWORD and self.tls:
            return self._finish_cleartext(reply, _strip_nul(response.auth_response))
        return self._switch(reply)

    def _switch(self, reply: int, plugin: str | None = None) -> Packets:
        self._state = _State.SWITCHED
        self._expect_seq = reply + 1
        self.client_plugin = self._switched_to = plugin or self.method
        if self.client_plugin == auth.CLEAR_PASSWORD:
            return [(reply, AuthSwitchRequest(auth.CLEAR_PASSWORD, b"").encode())]
        self._scramble = auth.new_scramble()
        return [(reply, AuthSwitchRequest(self.method, self._scramble + b"\x00").encode())]

    # ------------------------------------------------------------------ token logins

    def _tokens_usable(self) -> bool:
        return self.tls or self.plaintext_tokens

    def _token_login(self, reply: int, kind: str, response: bytes) -> Packets:
        """A token (or password_or_token) user's first answer: take a cleartext one, else switch to
        mysql_clear_password (a matching password answer lets a password_or_token user in at once)."""
        if not self._tokens_usable():
            return self._deny(reply, "token login over plain text refused (allow_plaintext_tokens = false)")
        if self.client_plugin == auth.CLEAR_PASSWORD:
            return self._finish_cleartext(reply, _strip_nul(response))
        if kind == "password_or_token" and self.client_plugin == self.method and response and not (
                self.force_full_auth and self.method == auth.CACHING_SHA2_PASSWORD):
            verifiers = self._lookup(self.user)
            scrambles = dict.fromkeys((self._scramble, self._greeting_scramble))
            if verifiers is not None and any(self._token_ok(self.method, verifiers, s, response) for s in scrambles):
                return self._accept(reply, self.method)
        if not self.capabilities & Capability.PLUGIN_AUTH:
            return self._deny(reply, "token login needs a client that can switch to mysql_clear_password")
        return self._switch(reply, auth.CLEAR_PASSWORD)

    def _verify(self, reply: int, plugin: str, token: bytes) -> Packets:
        verifiers = self._lookup(self.user)
        if plugin == auth.CACHING_SHA2_PASSWORD and self.force_full_auth:
            return self._ask_full_auth(reply)
        if verifiers is None:
            return self._deny(reply, "unknown user")
        if not self._token_ok(plugin, verifiers, self._scramble, token):
            return self._deny(reply, "wrong password")
        return self._accept(reply, plugin)

    def _accept(self, reply: int, plugin: str) -> Packets:
        if plugin == auth.CACHING_SHA2_PASSWORD:     # "fast auth success", then the OK
            return [(reply, encode_auth_more_data(bytes((auth.SHA2_FAST_AUTH_SUCCESS,)))),
                    *self._succeed(reply + 1)]
        return self._succeed(reply)

    @staticmethod
    def _token_ok(plugin: str, verifiers: MysqlVerifiers, scramble: bytes, token: bytes) -> bool:
        if not token:
            return auth.has_empty_password(verifiers)
        if plugin == auth.CACHING_SHA2_PASSWORD:
            return auth.verify_caching_sha2(verifiers.sha2, scramble, token)
        return auth.verify_native_password(verifiers.native, scramble, token)

    def _ask_full_auth(self, reply: int) -> Packets:
        self._state = _State.FULL_AUTH
        self._expect_seq = reply + 1
        return [(reply, encode_auth_more_data(bytes((auth.SHA2_PERFORM_FULL_AUTH,))))]

    def _on_full_auth(self, reply: int, payload: bytes) -> Packets:
        if payload == bytes((auth.SHA2_REQUEST_PUBLIC_KEY,)):
            self._state = _State.RSA
            self._expect_seq = reply + 1
            return [(reply, encode_auth_more_data(auth.proxy_public_key_pem()))]
        if self.tls:
            return self._finish_cleartext(reply, _strip_nul(payload))
        return self._on_rsa(reply, payload)   # a client that already had the proxy's key

    def _on_rsa(self, reply: int, payload: bytes) -> Packets:
        password = auth.rsa_decrypt_password(payload, self._scramble)
        if password is None:
            self._password_used = bool(payload)
            if payload.endswith(b"\x00") and len(payload) != auth.RSA_KEY_BITS // 8:
                return self._deny(reply, "client sent a cleartext password without TLS")
            return self._deny(reply, "RSA-encrypted password did not decrypt")
        return self._finish_cleartext(reply, password)

    def _finish_cleartext(self, reply: int, password: bytes) -> Packets:
        self._password_used = bool(password)
        verifiers = self._lookup(self.user)
        verdict = self._check_cleartext(self.user, password, verifiers)
        if verdict is not True:
            reason = verdict if isinstance(verdict, str) and verdict else (
                "unknown user" if verifiers is None else "wrong password")
            return self._deny(reply, reason)
        return self._succeed(reply)

    # ------------------------------------------------------------------ outcomes

    def _succeed(self, reply: int) -> Packets:
        self._state = _State.DONE
        self._changing_user = False
        self.done = True
        return [(reply, encode_ok(self.capabilities, status=Status.AUTOCOMMIT))]

    def _deny(self, reply: int, reason: str) -> Packets:
        using = "YES" if self._password_used else "NO"
        user = self.user[:128]
        what = "change user" if self._changing_user else "login"
        return self._fail(reply, ErrorCode.ACCESS_DENIED,
                          f"Access denied for user '{user}'@'{self.peer_host}' (using password: {using})",
                          f"{what} refused: {reason}")

    def _fail(self, reply: int, errno: int, message: str, reason: str, pre_41: bool = False) -> Packets:
        self._state = _State.FAILED
        self.failed = True
        self.done = False
        self.failed_reason = reason
        err = encode_err(errno, message)
        if pre_41:          # no '#' + SQLSTATE for a client that does not speak 4.1
            err = err[:3] + err[9:]
        return [(reply, err)]


def _strip_nul(data: bytes) -> bytes:
    return data[:-1] if data.endswith(b"\x00") else data
