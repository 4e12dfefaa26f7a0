"""MySQL / MariaDB password algorithms: known answers computed independently, verifiers, RSA, ed25519."""

from __future__ import annotations

import base64
import hashlib

import pytest

from proxy.engines.mysql import auth

SCRAMBLE = bytes(range(0x21, 0x21 + 20))      # 20 printable bytes, as servers send


def _xor(a: bytes, b: bytes) -> bytes:
    return bytes(x ^ y for x, y in zip(a, b, strict=True))


def _sha1(b: bytes) -> bytes:
    return hashlib.sha1(b).digest()


def _sha256(b: bytes) -> bytes:
    return hashlib.sha256(b).digest()


# ----------------------------------------------------------------------------- native


def test_native_token_known_answer() -> None:
    pw = b"native-pw"
    expected = _xor(_sha1(pw), _sha1(SCRAMBLE + _sha1(_sha1(pw))))
    assert auth.native_password_token(pw, SCRAMBLE) == expected
    assert auth.native_password_token(b"", SCRAMBLE) == b""


def test_native_verifier_is_what_mariadb_stores() -> None:
    # SELECT PASSWORD('native-pw') on MariaDB 10.11
    assert "*" + auth.derive_verifiers("native-pw").native.hex().upper() == \
        "*FF48E68563F59169DF2C2F820BAC747E1DA6A5D2"


def test_native_verify_from_verifier_only() -> None:
    v = auth.derive_verifiers("native-pw")
    token = auth.native_password_token(b"native-pw", SCRAMBLE)
    assert auth.verify_native_password(v.native, SCRAMBLE, token)
    assert not auth.verify_native_password(v.native, SCRAMBLE, auth.native_password_token(b"other", SCRAMBLE))
    assert not auth.verify_native_password(v.native, bytes(20), token)          # other scramble
    assert not auth.verify_native_password(v.native, SCRAMBLE, token[:19])      # wrong length
    assert not auth.verify_native_password(v.native, SCRAMBLE, b"")


# ----------------------------------------------------------------------------- caching_sha2


def test_caching_sha2_token_known_answer() -> None:
    pw = b"sha2-pw"
    expected = _xor(_sha256(pw), _sha256(_sha256(_sha256(pw)) + SCRAMBLE))
    assert auth.caching_sha2_token(pw, SCRAMBLE) == expected
    assert auth.caching_sha2_token(b"", SCRAMBLE) == b""


def test_caching_sha2_verify_from_verifier_only() -> None:
    v = auth.derive_verifiers("sha2-pw")
    assert v.sha2 == _sha256(_sha256(b"sha2-pw"))
    token = auth.caching_sha2_token(b"sha2-pw", SCRAMBLE)
    assert auth.verify_caching_sha2(v.sha2, SCRAMBLE, token)
    assert not auth.verify_caching_sha2(v.sha2, SCRAMBLE, auth.caching_sha2_token(b"sha2-px", SCRAMBLE))
    assert not auth.verify_caching_sha2(v.sha2, SCRAMBLE[::-1], token)
    assert not auth.verify_caching_sha2(v.sha2, SCRAMBLE, token + b"x")


def test_cleartext_verification_and_payload() -> None:
    v = auth.derive_verifiers("pässwörd")
    assert auth.verify_cleartext(v, "pässwörd".encode())
    assert not auth.verify_cleartext(v, b"password")
    assert auth.clear_password_payload(b"abc") == b"abc\x00"


def test_verifiers_hold_no_password_and_hide_in_repr() -> None:
    v = auth.derive_verifiers("secret-pw")
    assert v == auth.derive_verifiers("secret-pw")
    assert "secret" not in repr(v) and v.native.hex() not in repr(v) and v.sha2.hex() not in repr(v)
    assert not auth.has_empty_password(v)
    assert auth.has_empty_password(auth.derive_verifiers(""))


def test_scramble_is_20_bytes_without_nul_or_dollar() -> None:
    seen = set()
    for _ in range(500):
        s = auth.new_scramble()
        assert len(s) == 20 and b"\x00" not in s and b"$" not in s and max(s) < 0x80
        seen.add(s)
    assert len(seen) == 500
    assert len(auth.new_scramble(32)) == 32


# ----------------------------------------------------------------------------- RSA full auth


def test_rsa_round_trip_with_the_proxy_key() -> None:
    pem = auth.proxy_public_key_pem()
    assert pem.startswith(b"-----BEGIN PUBLIC KEY-----")
    assert auth.proxy_rsa_key().key_size == 2048
    cipher = auth.rsa_encrypt_password(b"a long password, longer than the scramble", SCRAMBLE, pem)
    assert len(cipher) == 256
    assert auth.rsa_decrypt_password(cipher, SCRAMBLE) == b"a long password, longer than the scramble"
    assert auth.rsa_decrypt_password(cipher, bytes(20)) != b"a long password, longer than the scramble"
    assert auth.rsa_decrypt_password(b"garbage", SCRAMBLE) is None
    assert auth.rsa_decrypt_password(bytes(256), SCRAMBLE) is None


def test_rsa_plaintext_is_password_nul_xor_scramble() -> None:
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import padding

    cipher = auth.rsa_encrypt_password(b"pw", SCRAMBLE, auth.proxy_public_key_pem())
    plain = auth.proxy_rsa_key().decrypt(cipher, padding.OAEP(
        mgf=padding.MGF1(algorithm=hashes.SHA1()), algorithm=hashes.SHA1(), label=None))
    assert plain == _xor(b"pw\x00", SCRAMBLE[:3])


def test_rsa_rejects_a_bad_public_key() -> None:
    with pytest.raises(ValueError):
        auth.rsa_encrypt_password(b"pw", SCRAMBLE, b"not a key")


# ----------------------------------------------------------------------------- ed25519


ED_SCRAMBLE = bytes(range(32))


def test_ed25519_public_key_is_what_mariadb_stores() -> None:
    # SHOW CREATE USER after IDENTIFIED VIA ed25519 USING PASSWORD('ed-pw') on MariaDB 10.11
    stored = "24FjORYwAV6wiJLDpFI0doShISjOdPNUg1WR7eRAgqA"
    assert base64.b64encode(auth.ed25519_public_key(b"ed-pw")).decode().rstrip("=") == stored


def test_ed25519_signature_verifies_with_the_stored_public_key() -> None:
    from nacl.bindings import crypto_sign_open
    from nacl.exceptions import BadSignatureError

    public = auth.ed25519_public_key(b"ed-pw")
    sig = auth.ed25519_token(b"ed-pw", ED_SCRAMBLE)
    assert len(sig) == 64
    assert crypto_sign_open(sig + ED_SCRAMBLE, public) == ED_SCRAMBLE
    with pytest.raises(BadSignatureError):
        crypto_sign_open(sig + ED_SCRAMBLE[::-1], public)
    with pytest.raises(BadSignatureError):
        crypto_sign_open(auth.ed25519_token(b"ed-px", ED_SCRAMBLE) + ED_SCRAMBLE, public)


def test_ed25519_equals_standard_signing_for_a_32_byte_password() -> None:
    # For a 32-byte password MariaDB's derivation (SHA-512 of the password) is RFC 8032's seed expansion.
    from nacl.signing import SigningKey

    pw = b"0123456789abcdef0123456789abcdef"
    key = SigningKey(pw)
    assert auth.ed25519_public_key(pw) == bytes(key.verify_key)
    assert auth.ed25519_token(pw, ED_SCRAMBLE) == key.sign(ED_SCRAMBLE).signature
