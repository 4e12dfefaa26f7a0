"""Byte-level tests of the proxy authenticating a client: trust, md5, SCRAM-SHA-256."""

from __future__ import annotations

import struct

import pytest
import scramp

from proxy.engines.postgres.client_auth import ClientAuthentication
from proxy.engines.postgres.wire import messages as m
from proxy.engines.postgres.wire.auth import ScramClientExchange, ScramVerifier, md5_password
from proxy.errors import AuthenticationFailed, ProtocolViolation

SALT = b"\x01\x02\x03\x04"


def test_trust_is_done_at_once() -> None:
    auth = ClientAuthentication("trust", "app", None, None)
    assert auth.start() == b"" and auth.done


def test_md5_right_and_wrong_password() -> None:
    auth = ClientAuthentication("md5", "app", "secret", None, salt=SALT)
    assert auth.start() == b"R\x00\x00\x00\x0c\x00\x00\x00\x05" + SALT
    assert auth.receive(md5_password("app", "secret", SALT) + b"\x00") == b"" and auth.done

    wrong = ClientAuthentication("md5", "app", "secret", None, salt=SALT)
    wrong.start()
    with pytest.raises(AuthenticationFailed, match='password authentication failed for user "app"'):
        wrong.receive(md5_password("app", "guess", SALT) + b"\x00")
    assert not wrong.done


def test_md5_without_a_configured_password_is_refused() -> None:
    with pytest.raises(AuthenticationFailed):
        ClientAuthentication("md5", "app", None, None).start()


def _sasl_payload(reply: bytes) -> bytes:
    assert reply[:1] == b"R"
    return reply[9:]


def _scram_login(client_password: str) -> ClientAuthentication:
    auth = ClientAuthentication("scram-sha-256", "app", None, ScramVerifier.from_password("secret"))
    assert auth.start() == m.auth_sasl(["SCRAM-SHA-256"])
    client = ScramClientExchange(client_password)
    first = client.client_first()
    challenge = auth.receive(m.cstr("SCRAM-SHA-256") + struct.pack("!i", len(first)) + first)
    assert challenge[5:9] == struct.pack("!i", m.AUTH_SASL_CONTINUE)
    final = auth.receive(client.client_final(_sasl_payload(challenge)))
    assert final[5:9] == struct.pack("!i", m.AUTH_SASL_FINAL)
    client.verify_server_final(_sasl_payload(final))   # the proxy proves it knows the verifier too
    return auth


def test_scram_round_trip_with_a_real_client_exchange() -> None:
    assert _scram_login("secret").done


def test_scram_wrong_password_is_refused_with_postgres_wording() -> None:
    with pytest.raises(AuthenticationFailed, match='password authentication failed for user "app"'):
        _scram_login("guess")


def test_scram_other_mechanism_and_garbage() -> None:
    auth = ClientAuthentication("scram-sha-256", "app", None, ScramVerifier.from_password("secret"))
    auth.start()
    with pytest.raises(AuthenticationFailed):
        auth.receive(m.cstr("SCRAM-SHA-256-PLUS") + struct.pack("!i", 3) + b"p=x")
    garbage = ClientAuthentication("scram-sha-256", "app", None, ScramVerifier.from_password("secret"))
    garbage.start()
    with pytest.raises(ProtocolViolation):
        garbage.receive(b"no terminator")


def test_a_password_message_after_success_is_a_protocol_violation() -> None:
    auth = ClientAuthentication("trust", "app", None, None)
    auth.start()
    with pytest.raises(ProtocolViolation):
        auth.receive(b"x\x00")


BINDING = bytes(range(32))   # a stand-in for the hash of the proxy's certificate


def _plus_login(client_binding: bytes, mechanism: str = "SCRAM-SHA-256-PLUS") -> ClientAuthentication:
    """SCRAM over TLS with scramp as the client (another implementation than the proxy's own)."""
    auth = ClientAuthentication("scram-sha-256", "app", None, ScramVerifier.from_password("secret"),
                                channel_binding=BINDING)
    assert auth.start() == m.auth_sasl(["SCRAM-SHA-256-PLUS", "SCRAM-SHA-256"])
    binding = ("tls-server-end-point", client_binding) if mechanism.endswith("PLUS") else None
    client = scramp.ScramClient([mechanism], "app", "secret", channel_binding=binding)
    first = client.get_client_first().encode()
    challenge = auth.receive(m.cstr(mechanism) + struct.pack("!i", len(first)) + first)
    client.set_server_first(_sasl_payload(challenge).decode())
    final = auth.receive(client.get_client_final().encode())
    client.set_server_final(_sasl_payload(final).decode())
    return auth


def test_scram_sha_256_plus_binds_the_tls_channel() -> None:
    assert _plus_login(BINDING).done
    # Another channel's binding data (a man in the middle terminating TLS) is refused.
    with pytest.raises(AuthenticationFailed):
        _plus_login(bytes(32))
    # Plain SCRAM-SHA-256 over TLS stays allowed (libpq's channel_binding=prefer falls back to it).
    assert _plus_login(BINDING, "SCRAM-SHA-256").done


def test_scram_channel_binding_downgrade_and_misuse_are_refused() -> None:
    verifier = ScramVerifier.from_password("secret")
    downgrade = ClientAuthentication("scram-sha-256", "app", None, verifier, channel_binding=BINDING)
    downgrade.start()
    with pytest.raises(AuthenticationFailed):   # 'y': "I could bind, I think you cannot" while the proxy can
        downgrade.receive(m.cstr("SCRAM-SHA-256") + struct.pack("!i", 14) + b"y,,n=,r=abcdef")
    plain = ClientAuthentication("scram-sha-256", "app", None, verifier)   # no TLS: PLUS is not offered
    plain.start()
    with pytest.raises(AuthenticationFailed):
        plain.receive(m.cstr("SCRAM-SHA-256") + struct.pack("!i", 35) + b"p=tls-server-end-point,,n=,r=abcdef")
