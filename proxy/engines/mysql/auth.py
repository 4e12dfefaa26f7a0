"""MySQL / MariaDB password algorithms: native, caching_sha2 (with RSA), client_ed25519, cleartext.

Client-facing checks use `MysqlVerifiers`, derived once at config load (`derive_verifiers`): the
proxy never keeps a client user's password, only what a server stores (SHA1(SHA1(pw)) and
SHA256(SHA256(pw))). Both verifiers let the proxy check a scramble response *and* a cleartext
password, so caching_sha2's fast path always succeeds for configured users.

Server-facing functions take the password itself, which the proxy needs to log in to servers.
Every function here is pure (no I/O) except `new_scramble` (os.urandom) and the lazily generated
process-wide RSA key pair.
"""

from __future__ import annotations

import functools
import hashlib
import hmac
import os
from dataclasses import dataclass, field

from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa

SCRAMBLE_LENGTH = 20          # native and caching_sha2 scrambles
ED25519_SCRAMBLE_LENGTH = 32  # MariaDB's client_ed25519 challenge
RSA_KEY_BITS = 2048

NATIVE_PASSWORD = "mysql_native_password"
CACHING_SHA2_PASSWORD = "caching_sha2_password"
CLEAR_PASSWORD = "mysql_clear_password"
ED25519 = "client_ed25519"

# caching_sha2_password's one-byte messages inside AuthMoreData (server) or a bare packet (client).
SHA2_REQUEST_PUBLIC_KEY = 0x02
SHA2_FAST_AUTH_SUCCESS = 0x03
SHA2_PERFORM_FULL_AUTH = 0x04


def _sha1(data: bytes) -> bytes:
    return hashlib.sha1(data).digest()


def _sha256(data: bytes) -> bytes:
    return hashlib.sha256(data).digest()


def _xor(a: bytes, b: bytes) -> bytes:
    return (int.from_bytes(a, "big") ^ int.from_bytes(b, "big")).to_bytes(len(a), "big")


def new_scramble(length: int = SCRAMBLE_LENGTH) -> bytes:
    """Random challenge bytes as servers make them: 7-bit, never NUL and never '$'."""
    out = bytearray(os.urandom(length))
    for i, byte in enumerate(out):
        byte &= 0x7F
        if byte in (0x00, 0x24):      # NUL would end a C string, '$' starts crypt-style hashes
            byte += 1
        out[i] = byte
    return bytes(out)


# --------------------------------------------------------------------------- verifiers


@dataclass(frozen=True)
class MysqlVerifiers:
    """What a server stores for one password; enough to check any client login, never the password."""

    native: bytes = field(repr=False)        # SHA1(SHA1(pw)), 20 bytes (mysql_native_password)
    sha2: bytes = field(repr=False)          # SHA256(SHA256(pw)), 32 bytes (caching_sha2 cache entry)


def derive_verifiers(password: str) -> MysqlVerifiers:
    """Both verifiers of a password; call once per user at config load."""
    raw = password.encode()
    return MysqlVerifiers(native=_sha1(_sha1(raw)), sha2=_sha256(_sha256(raw)))


_EMPTY = derive_verifiers("")


def has_empty_password(verifiers: MysqlVerifiers) -> bool:
    """True for a user whose password is "": such clients send an empty auth response."""
    return hmac.compare_digest(verifiers.native, _EMPTY.native)


# --------------------------------------------------------------------------- mysql_native_password


def native_password_token(password: bytes, scramble: bytes) -> bytes:
    """The client's response: SHA1(pw) XOR SHA1(scramble + SHA1(SHA1(pw))); b"" for no password."""
    if not password:
        return b""
    stage1 = _sha1(password)
    return _xor(stage1, _sha1(scramble[:SCRAMBLE_LENGTH] + _sha1(stage1)))


def verify_native_password(verifier: bytes, scramble: bytes, token: bytes) -> bool:
    """Check a native token from SHA1(SHA1(pw)) alone: recover SHA1(pw) and hash it again."""
    if len(token) != 20 or len(verifier) != 20:
        return False
    stage1 = _xor(token, _sha1(scramble[:SCRAMBLE_LENGTH] + verifier))
    return hmac.compare_digest(_sha1(stage1), verifier)


# --------------------------------------------------------------------------- caching_sha2_password


def caching_sha2_token(password: bytes, scramble: bytes) -> bytes:
    """Fast-path response: SHA256(pw) XOR SHA256(SHA256(SHA256(pw)) + scramble); b"" for none."""
    if not password:
        return b""
    stage1 = _sha256(password)
    return _xor(stage1, _sha256(_sha256(stage1) + scramble[:SCRAMBLE_LENGTH]))


def verify_caching_sha2(verifier: bytes, scramble: bytes, token: bytes) -> bool:
    """Check a fast-path token from SHA256(SHA256(pw)) alone (what the server's cache holds)."""
    if len(token) != 32 or len(verifier) != 32:
        return False
    stage1 = _xor(token, _sha256(verifier + scramble[:SCRAMBLE_LENGTH]))
    return hmac.compare_digest(_sha256(stage1), verifier)


def verify_cleartext(verifiers: MysqlVerifiers, password: bytes) -> bool:
    """Check a cleartext password (full auth, mysql_clear_password) against the stored verifier."""
    return hmac.compare_digest(_sha256(_sha256(password)), verifiers.sha2)


def clear_password_payload(password: bytes) -> bytes:
    """What mysql_clear_password and caching_sha2 full auth over TLS send: the password + NUL."""
    return password + b"\x00"


def _xor_cyclic(data: bytes, scramble: bytes) -> bytes:
    key = scramble[:SCRAMBLE_LENGTH]
    if not key:
        raise ValueError("empty scramble")
    return bytes(byte ^ key[i % len(key)] for i, byte in enumerate(data))


_OAEP = padding.OAEP(mgf=padding.MGF1(algorithm=hashes.SHA1()), algorithm=hashes.SHA1(), label=None)


def rsa_encrypt_password(password: bytes, scramble: bytes, public_key_pem: bytes) -> bytes:
    """Full auth without TLS: RSA-OAEP(SHA-1) of (password + NUL) XOR the scramble, repeated."""
    try:
        key = serialization.load_pem_public_key(public_key_pem)
    except (ValueError, TypeError, UnsupportedAlgorithm) as exc:
        raise ValueError("the server's public key is not a PEM public key") from exc
    if not isinstance(key, rsa.RSAPublicKey):
        raise ValueError("the server's public key is not an RSA key")
    return key.encrypt(_xor_cyclic(password + b"\x00", scramble), _OAEP)


def rsa_decrypt_password(ciphertext: bytes, scramble: bytes,
                         private_key: rsa.RSAPrivateKey | None = None) -> bytes | None:
    """The password a client encrypted with `rsa_encrypt_password`, or None if it does not decrypt."""
    key = private_key if private_key is not None else proxy_rsa_key()
    try:
        plain = _xor_cyclic(key.decrypt(ciphertext, _OAEP), scramble)
    except ValueError:
        return None
    return plain[:-1] if plain.endswith(b"\x00") else plain


@functools.cache
def proxy_rsa_key() -> rsa.RSAPrivateKey:
    """The proxy's RSA key pair for caching_sha2 full auth; generated on first use (~0.1 s)."""
    return rsa.generate_private_key(public_exponent=65537, key_size=RSA_KEY_BITS)


@functools.cache
def proxy_public_key_pem() -> bytes:
    """The proxy's public key as servers send it on request 0x02 (PEM SubjectPublicKeyInfo)."""
    return proxy_rsa_key().public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)


# --------------------------------------------------------------------------- MariaDB client_ed25519


def _ed25519_secret(password: bytes) -> tuple[bytes, bytes]:
    """MariaDB's key derivation: SHA-512(password) is the expanded secret (scalar, nonce prefix).

    Standard Ed25519 hashes a 32-byte seed; MariaDB hashes the whole password instead, so the
    usual seed-based signing APIs cannot be used and the signature is assembled from primitives.
    """
    digest = hashlib.sha512(password).digest()
    scalar = bytearray(digest[:32])
    scalar[0] &= 248      # clamp as RFC 8032 5.1.5 does
    scalar[31] &= 127
    scalar[31] |= 64
    return bytes(scalar), digest[32:]


def ed25519_public_key(password: bytes) -> bytes:
    """The 32-byte public key MariaDB stores (base64, without padding) for a password."""
    from nacl import bindings

    scalar, _ = _ed25519_secret(password)
    return bindings.crypto_scalarmult_ed25519_base_noclamp(scalar)


def ed25519_token(password: bytes, scramble: bytes) -> bytes:
    """The client_ed25519 response: an Ed25519 signature (R || S) of the server's 32-byte scramble."""
    from nacl import bindings

    scalar, prefix = _ed25519_secret(password)
    public = bindings.crypto_scalarmult_ed25519_base_noclamp(scalar)
    nonce = bindings.crypto_core_ed25519_scalar_reduce(hashlib.sha512(prefix + scramble).digest())
    commitment = bindings.crypto_scalarmult_ed25519_base_noclamp(nonce)
    challenge = bindings.crypto_core_ed25519_scalar_reduce(
        hashlib.sha512(commitment + public + scramble).digest())
    s = bindings.crypto_core_ed25519_scalar_add(
        bindings.crypto_core_ed25519_scalar_mul(challenge, scalar), nonce)
    return commitment + s
