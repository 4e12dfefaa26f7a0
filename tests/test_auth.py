"""SCRAM-SHA-256 and md5 auth (vs. RFC 7677 and an independent implementation) and the server login.

The exchange classes take raw nonce bytes and base64 them, so the RFC 7677 example (whose server
nonce part "%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0" is not base64 of anything) cannot be replayed through
them byte for byte. Instead the reference below is checked against the RFC vector, and the
proxy's classes are checked against the reference, using the RFC's password, salt, iteration
count and (on the server side, which accepts any client nonce) the RFC's client-first-message.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import struct

import pytest

from proxy.engines.postgres.server_login import ServerLogin
from proxy.engines.postgres.wire import messages as m
from proxy.engines.postgres.wire.auth import (
    ScramClientExchange,
    ScramServerExchange,
    ScramVerifier,
    md5_password,
)
from proxy.engines.postgres.wire.framing import MessageReader, StartupMessage, parse_startup_packet
from proxy.errors import AuthenticationFailed, ProtocolViolation, ServerConnectFailed

# RFC 7677 section 3.
RFC_PASSWORD = "pencil"
RFC_CLIENT_NONCE = "rOprNGfwEbeRWgbNEkqO"
RFC_SERVER_NONCE_PART = "%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0"
RFC_SALT_B64 = "W22ZaJ0SNY7soEsUEjb6gQ=="
RFC_ITERATIONS = 4096
RFC_CLIENT_FIRST = f"n,,n=user,r={RFC_CLIENT_NONCE}"
RFC_NONCE = RFC_CLIENT_NONCE + RFC_SERVER_NONCE_PART
RFC_SERVER_FIRST = f"r={RFC_NONCE},s={RFC_SALT_B64},i={RFC_ITERATIONS}"
RFC_CLIENT_FINAL_WITHOUT_PROOF = f"c=biws,r={RFC_NONCE}"
RFC_PROOF = "dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ="
RFC_SERVER_SIGNATURE = "6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4="

NONCE_BYTES = bytes(range(18))
NONCE_B64 = base64.b64encode(NONCE_BYTES).decode()


# ---- an independent SCRAM-SHA-256, straight from RFC 5802 section 3 ----------------------------

def _hmac(key: bytes, msg: str | bytes) -> bytes:
    return hmac.new(key, msg.encode() if isinstance(msg, str) else msg, hashlib.sha256).digest()


def reference_scram(password: str, salt_b64: str, iterations: int, client_first_bare: str,
                    server_first: str, client_final_without_proof: str) -> tuple[str, str]:
    """(ClientProof, ServerSignature), both base64."""
    salted = hashlib.pbkdf2_hmac("sha256", password.encode(), base64.b64decode(salt_b64), iterations)
    client_key = _hmac(salted, "Client Key")
    stored_key = hashlib.sha256(client_key).digest()
    auth_message = f"{client_first_bare},{server_first},{client_final_without_proof}"
    client_signature = _hmac(stored_key, auth_message)
    proof = bytes(a ^ b for a, b in zip(client_key, client_signature, strict=True))
    server_signature = _hmac(_hmac(salted, "Server Key"), auth_message)
    return base64.b64encode(proof).decode(), base64.b64encode(server_signature).decode()


def attrs(message: bytes) -> dict[str, str]:
    return dict((part[0], part[2:]) for part in message.decode().split(","))


def test_reference_implementation_reproduces_rfc7677() -> None:
    proof, signature = reference_scram(RFC_PASSWORD, RFC_SALT_B64, RFC_ITERATIONS, RFC_CLIENT_FIRST[3:],
                                       RFC_SERVER_FIRST, RFC_CLIENT_FINAL_WITHOUT_PROOF)
    assert (proof, signature) == (RFC_PROOF, RFC_SERVER_SIGNATURE)


def test_verifier_keys_match_rfc_password_and_salt() -> None:
    v = ScramVerifier.from_password(RFC_PASSWORD, base64.b64decode(RFC_SALT_B64), RFC_ITERATIONS)
    salted = hashlib.pbkdf2_hmac("sha256", b"pencil", base64.b64decode(RFC_SALT_B64), 4096)
    assert v.salt == base64.b64decode(RFC_SALT_B64) and v.iterations == 4096
    assert v.stored_key == hashlib.sha256(_hmac(salted, "Client Key")).digest()
    assert v.server_key == _hmac(salted, "Server Key")


def test_verifier_defaults_to_random_16_byte_salt_and_4096_iterations() -> None:
    a, b = ScramVerifier.from_password("pw", iterations=1), ScramVerifier.from_password("pw", iterations=1)
    assert len(a.salt) == 16 and a.salt != b.salt and a.stored_key != b.stored_key
    assert ScramVerifier.from_password("pw", b"salt").iterations == 4096


# ---- the proxy as SCRAM server (client-facing) -------------------------------------------------

@pytest.fixture(scope="module")
def rfc_verifier() -> ScramVerifier:
    return ScramVerifier.from_password(RFC_PASSWORD, base64.b64decode(RFC_SALT_B64), RFC_ITERATIONS)


def test_server_exchange_accepts_the_rfc_client(rfc_verifier: ScramVerifier) -> None:
    server = ScramServerExchange(rfc_verifier, nonce=NONCE_BYTES)
    server_first = server.server_first(RFC_CLIENT_FIRST.encode())
    # The server nonce part is base64(nonce bytes): a textual nonce like the RFC's cannot be injected.
    assert server_first.decode() == f"r={RFC_CLIENT_NONCE}{NONCE_B64},s={RFC_SALT_B64},i=4096"
    without_proof = f"c=biws,r={RFC_CLIENT_NONCE}{NONCE_B64}"
    proof, signature = reference_scram(RFC_PASSWORD, RFC_SALT_B64, RFC_ITERATIONS, RFC_CLIENT_FIRST[3:],
                                       server_first.decode(), without_proof)
    assert server.server_final(f"{without_proof},p={proof}".encode()) == f"v={signature}".encode()


def test_server_exchange_accepts_gs2_y_flag_and_authzid(rfc_verifier: ScramVerifier) -> None:
    # "y": the client supports channel binding but thinks the server does not; c= is then "eSws".
    server = ScramServerExchange(rfc_verifier, nonce=NONCE_BYTES)
    server_first = server.server_first(b"y,,n=,r=abc").decode()
    without_proof = f"c=eSws,r=abc{NONCE_B64}"
    proof, signature = reference_scram(RFC_PASSWORD, RFC_SALT_B64, RFC_ITERATIONS, "n=,r=abc",
                                       server_first, without_proof)
    assert server.server_final(f"{without_proof},p={proof}".encode()) == f"v={signature}".encode()


def test_server_exchange_random_nonce_is_fresh(rfc_verifier: ScramVerifier) -> None:
    a = attrs(ScramServerExchange(rfc_verifier).server_first(b"n,,n=,r=abc"))["r"]
    b = attrs(ScramServerExchange(rfc_verifier).server_first(b"n,,n=,r=abc"))["r"]
    assert a.startswith("abc") and b.startswith("abc") and a != b and len(a) == 3 + 24


def _client_final(password: str, server: ScramServerExchange, client_first_bare: str = "n=,r=abc",
                  nonce_override: str | None = None) -> bytes:
    server_first = server.server_first(f"n,,{client_first_bare}".encode()).decode()
    nonce = nonce_override or attrs(server_first.encode())["r"]
    without_proof = f"c=biws,r={nonce}"
    proof, _ = reference_scram(password, RFC_SALT_B64, RFC_ITERATIONS, client_first_bare, server_first,
                               without_proof)
    return f"{without_proof},p={proof}".encode()


def test_server_exchange_wrong_password_fails(rfc_verifier: ScramVerifier) -> None:
    server = ScramServerExchange(rfc_verifier, nonce=NONCE_BYTES)
    final = _client_final("pencil2", server)
    with pytest.raises(AuthenticationFailed, match="password authentication failed") as exc:
        server.server_final(final)
    assert exc.value.sqlstate == "28P01"


def test_server_exchange_tampered_nonce_fails(rfc_verifier: ScramVerifier) -> None:
    server = ScramServerExchange(rfc_verifier, nonce=NONCE_BYTES)
    # A proof that is correct for the tampered nonce still does not match this exchange's nonce.
    final = _client_final(RFC_PASSWORD, server, nonce_override=f"abc{NONCE_B64}x")
    with pytest.raises(AuthenticationFailed, match="nonce"):
        server.server_final(final)


def test_server_exchange_proof_for_another_exchange_fails(rfc_verifier: ScramVerifier) -> None:
    first = ScramServerExchange(rfc_verifier, nonce=NONCE_BYTES)
    replayed = _client_final(RFC_PASSWORD, first)
    second = ScramServerExchange(rfc_verifier, nonce=b"other nonce bytes!")
    second.server_first(b"n,,n=,r=abc")
    with pytest.raises(AuthenticationFailed):
        second.server_final(replayed)


@pytest.mark.parametrize("final", [
    b"c=biws,r=abc",                           # no proof
    b"c=biws,p=AAAA",                          # no nonce
    b"c=biws,r=RNONCE,p=not base64!",          # proof not base64
    b"c=biws,r=RNONCE,p=AAAA",                 # proof of the wrong length
    b"c=biws,r=RNONCE,p=" + base64.b64encode(bytes(32)),   # right length, wrong value
])
def test_server_exchange_malformed_final_fails(rfc_verifier: ScramVerifier, final: bytes) -> None:
    server = ScramServerExchange(rfc_verifier, nonce=NONCE_BYTES)
    server.server_first(b"n,,n=,r=abc")
    with pytest.raises(AuthenticationFailed):
        server.server_final(final.replace(b"RNONCE", f"abc{NONCE_B64}".encode()))


def test_server_exchange_refuses_channel_binding(rfc_verifier: ScramVerifier) -> None:
    with pytest.raises(AuthenticationFailed, match="channel binding"):
        ScramServerExchange(rfc_verifier).server_first(b"p=tls-server-end-point,,n=,r=abc")


@pytest.mark.parametrize(("first", "match"), [
    (b"x,,n=,r=abc", "GS2 header"),
    (b"n,,n=,s=abc", "missing nonce"),
    (b"n,,n=,r=", "missing nonce"),
    (b"n,", "malformed"),
    (b"\xff\xfe", "malformed"),
])
def test_server_exchange_malformed_first_is_a_protocol_violation(rfc_verifier: ScramVerifier, first: bytes,
                                                                 match: str) -> None:
    with pytest.raises(ProtocolViolation, match=match):
        ScramServerExchange(rfc_verifier).server_first(first)


# ---- the proxy as SCRAM client (server-facing) -------------------------------------------------

def test_client_exchange_matches_reference() -> None:
    client = ScramClientExchange(RFC_PASSWORD, nonce=NONCE_BYTES)
    # PostgreSQL clients send an empty user name: the server uses the startup packet's.
    assert client.client_first() == f"n,,n=,r={NONCE_B64}".encode()
    server_first = f"r={NONCE_B64}{RFC_SERVER_NONCE_PART},s={RFC_SALT_B64},i={RFC_ITERATIONS}"
    final = client.client_final(server_first.encode())
    without_proof = f"c=biws,r={NONCE_B64}{RFC_SERVER_NONCE_PART}"
    proof, signature = reference_scram(RFC_PASSWORD, RFC_SALT_B64, RFC_ITERATIONS, f"n=,r={NONCE_B64}",
                                       server_first, without_proof)
    assert final == f"{without_proof},p={proof}".encode()
    client.verify_server_final(f"v={signature}".encode())   # does not raise


def test_client_exchange_refuses_a_wrong_server_signature() -> None:
    client = ScramClientExchange(RFC_PASSWORD, nonce=NONCE_BYTES)
    client.client_final(f"r={NONCE_B64}srv,s={RFC_SALT_B64},i=4096".encode())
    with pytest.raises(ServerConnectFailed, match="signature"):
        client.verify_server_final(b"v=" + base64.b64encode(bytes(32)))
    with pytest.raises(ServerConnectFailed, match="signature"):
        client.verify_server_final(b"e=invalid-proof")


@pytest.mark.parametrize("server_first", [
    "r=someoneelse,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096",       # nonce does not extend ours
    "r=NONCEsrv,i=4096",                                       # no salt
    "r=NONCEsrv,s=W22ZaJ0SNY7soEsUEjb6gQ==",                   # no iteration count
    "r=NONCEsrv,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=many",            # iteration count not a number
])
def test_client_exchange_refuses_an_invalid_challenge(server_first: str) -> None:
    client = ScramClientExchange("pw", nonce=NONCE_BYTES)
    with pytest.raises(ServerConnectFailed, match="invalid SCRAM challenge"):
        client.client_final(server_first.replace("NONCE", NONCE_B64).encode())


def test_client_exchange_refuses_server_final_before_its_challenge() -> None:
    client = ScramClientExchange("pw", nonce=NONCE_BYTES)
    client.client_first()
    with pytest.raises(ServerConnectFailed):
        client.verify_server_final(b"v=")


@pytest.mark.parametrize("password", ["pencil", "", "pässwörd with spaces"])
def test_client_and_server_exchanges_agree(password: str) -> None:
    verifier = ScramVerifier.from_password(password, iterations=64)
    client = ScramClientExchange(password)
    server = ScramServerExchange(verifier)
    final = client.client_final(server.server_first(client.client_first()))
    client.verify_server_final(server.server_final(final))


def test_client_and_server_exchanges_disagree_on_wrong_password() -> None:
    server = ScramServerExchange(ScramVerifier.from_password("right", iterations=64))
    client = ScramClientExchange("wrong")
    final = client.client_final(server.server_first(client.client_first()))
    with pytest.raises(AuthenticationFailed):
        server.server_final(final)


# ---- md5 ---------------------------------------------------------------------------------------

def test_md5_password_known_vector() -> None:
    # Computed independently: md5 of the hex md5("secret" || "postgres") followed by the salt.
    salt = b"\x01\x02\x03\x04"
    inner = hashlib.md5(b"secretpostgres").hexdigest()
    assert inner == "53f48b7c4b76a86ce72276c5755f217d"   # what pg_authid stores after the "md5" prefix
    assert hashlib.md5(inner.encode() + salt).hexdigest() == "bb41a296aab6baccb36ff243a562abff"
    assert md5_password("postgres", "secret", salt) == b"md5bb41a296aab6baccb36ff243a562abff"


def test_md5_password_depends_on_salt_user_and_password() -> None:
    base = md5_password("postgres", "secret", b"\x01\x02\x03\x04")
    assert md5_password("postgres", "secret", b"\x01\x02\x03\x05") != base
    assert md5_password("postgre", "secret", b"\x01\x02\x03\x04") != base
    assert md5_password("postgres", "secreT", b"\x01\x02\x03\x04") != base
    assert md5_password("bob", "pässwörd", b"\xff\x00\x10\x7f") == b"md5" + hashlib.md5(
        hashlib.md5("pässwördbob".encode()).hexdigest().encode() + b"\xff\x00\x10\x7f").hexdigest().encode()


# ---- ServerLogin: the proxy logging in to a server, driven with server bytes -------------------

def feed(login: ServerLogin, server_bytes: bytes) -> bytes:
    """Frame server_bytes, pass each message to login, return everything it sends back."""
    reader = MessageReader()
    reader.feed(server_bytes)
    out = b""
    while (msg := reader.next()) is not None:
        out += login.receive(*msg)
    return out


def one_message(data: bytes) -> tuple[int, bytes]:
    reader = MessageReader()
    reader.feed(data)
    msg = reader.next()
    assert msg is not None and reader.buffered == 0
    return msg


WELCOME = (m.parameter_status("server_version", "16.4") + m.parameter_status("TimeZone", "UTC")
           + m.backend_key_data(4242, 0xCAFEBABE) + m.notice_response("hello") + m.ready_for_query())


def test_login_startup_packet() -> None:
    login = ServerLogin("bob", None, "app", {"application_name": "dbproxy"})
    packet = login.startup()
    assert packet == m.startup_message({"user": "bob", "database": "app", "application_name": "dbproxy"})
    event, used = parse_startup_packet(packet)
    assert used == len(packet)
    assert event == StartupMessage(m.PROTOCOL_V3, {"user": "bob", "database": "app", "application_name": "dbproxy"})


def test_login_trust() -> None:
    login = ServerLogin("bob", None, "app")
    assert feed(login, m.auth_ok()) == b""
    assert not login.done
    assert feed(login, WELCOME) == b""
    assert login.done
    assert login.parameters == {"server_version": "16.4", "TimeZone": "UTC"}
    assert (login.backend_pid, login.backend_key) == (4242, 0xCAFEBABE)


def test_login_cleartext() -> None:
    login = ServerLogin("bob", "s3cret", "app")
    assert feed(login, m.auth_request(m.AUTH_CLEARTEXT)) == b"p\x00\x00\x00\x0bs3cret\x00"
    feed(login, m.auth_ok() + WELCOME)
    assert login.done


def test_login_md5() -> None:
    login = ServerLogin("postgres", "secret", "app")
    reply = feed(login, m.auth_md5(b"\x01\x02\x03\x04"))
    assert reply == b"p\x00\x00\x00\x28md5bb41a296aab6baccb36ff243a562abff\x00"
    feed(login, m.auth_ok() + WELCOME)
    assert login.done


@pytest.mark.parametrize("request_bytes", [
    m.auth_request(m.AUTH_CLEARTEXT), m.auth_md5(b"salt"), m.auth_sasl(["SCRAM-SHA-256"])])
def test_login_without_a_password_fails_clearly(request_bytes: bytes) -> None:
    with pytest.raises(ServerConnectFailed, match="no server password is configured"):
        feed(ServerLogin("bob", None, "app"), request_bytes)


def _scram_login(login_password: str, server_password: str) -> tuple[ServerLogin, ScramServerExchange, bytes]:
    """Run the SASL exchange up to the client-final message; returns (login, server side, client-final)."""
    login = ServerLogin("bob", login_password, "app")
    server = ScramServerExchange(ScramVerifier.from_password(server_password, iterations=64))
    kind, body = one_message(feed(login, m.auth_sasl(["SCRAM-SHA-256-PLUS", "SCRAM-SHA-256"])))
    assert kind == ord("p")
    mechanism, pos = m.read_cstr(body, 0)
    assert mechanism == b"SCRAM-SHA-256"
    (length,) = struct.unpack_from("!i", body, pos)
    client_first = body[pos + 4:]
    assert length == len(client_first) and client_first.startswith(b"n,,n=,r=")
    kind, client_final = one_message(feed(login, m.auth_sasl_continue(server.server_first(client_first))))
    assert kind == ord("p") and client_final.startswith(b"c=biws,r=")
    return login, server, client_final


def test_login_scram() -> None:
    login, server, client_final = _scram_login("scrampass", "scrampass")
    assert feed(login, m.auth_sasl_final(server.server_final(client_final))) == b""
    assert not login.done
    feed(login, m.auth_ok() + WELCOME)
    assert login.done and login.backend_pid == 4242


def test_login_scram_wrong_password_is_refused_by_the_server() -> None:
    _, server, client_final = _scram_login("wrong", "scrampass")
    with pytest.raises(AuthenticationFailed):
        server.server_final(client_final)


def test_login_scram_refuses_a_server_that_cannot_prove_the_password() -> None:
    login, _, _ = _scram_login("scrampass", "scrampass")
    forged = b"v=" + base64.b64encode(bytes(32))   # an impostor that does not know the password
    with pytest.raises(ServerConnectFailed, match="signature"):
        feed(login, m.auth_sasl_final(forged))


def test_login_scram_refuses_final_without_challenge() -> None:
    login = ServerLogin("bob", "scrampass", "app")
    feed(login, m.auth_sasl(["SCRAM-SHA-256"]))
    with pytest.raises(ServerConnectFailed):
        feed(login, m.auth_sasl_final(b"v="))


def test_login_refuses_sasl_without_scram_sha_256() -> None:
    with pytest.raises(ServerConnectFailed, match="unsupported SASL mechanisms"):
        feed(ServerLogin("bob", "pw", "app"), m.auth_sasl(["SCRAM-SHA-256-PLUS"]))


@pytest.mark.parametrize("code", [2, 7, 8, 9, 99])   # KerberosV5, GSS, GSSContinue, SSPI, unknown
def test_login_refuses_unsupported_methods(code: int) -> None:
    with pytest.raises(ServerConnectFailed, match=f"unsupported authentication method {code}"):
        feed(ServerLogin("bob", "pw", "app"), m.auth_request(code))


@pytest.mark.parametrize("code", [m.AUTH_SASL_CONTINUE, m.AUTH_SASL_FINAL])
def test_login_refuses_sasl_steps_out_of_order(code: int) -> None:
    with pytest.raises(ServerConnectFailed, match="unsupported authentication method"):
        feed(ServerLogin("bob", "pw", "app"), m.auth_request(code, b"r=x"))


def test_login_error_carries_the_server_sqlstate() -> None:
    login = ServerLogin("bob", "pw", "app")
    error = m.error_response("28P01", 'password authentication failed for user "bob"', severity="FATAL")
    with pytest.raises(ServerConnectFailed) as exc:
        feed(login, m.auth_request(m.AUTH_CLEARTEXT) + error)
    assert exc.value.sqlstate == "28P01"
    assert 'password authentication failed for user "bob"' in exc.value.message
    assert not login.done


def test_login_error_after_authentication() -> None:
    error = m.error_response("3D000", 'database "nope" does not exist', severity="FATAL")
    with pytest.raises(ServerConnectFailed) as exc:
        feed(ServerLogin("bob", None, "nope"), m.auth_ok() + error)
    assert exc.value.sqlstate == "3D000"
