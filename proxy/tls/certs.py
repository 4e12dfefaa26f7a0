"""Certificates for trying TLS out and for tests: a private CA, a server certificate, a client certificate.

`dbproxy gen-cert DIR` writes ca.pem / ca-key.pem, server.pem / server-key.pem (for localhost,
127.0.0.1, ::1 and this host's name, plus any extra names) and client.pem / client-key.pem (for
client-certificate verification; its CN is the user name given). Not for production: use your own
PKI there.
"""

from __future__ import annotations

import datetime
import ipaddress
import os
import secrets
import socket
from collections.abc import Sequence
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

Key = ec.EllipticCurvePrivateKey


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "dbproxy test CA"),
                      x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _builder(subject: str, issuer: x509.Name, public: ec.EllipticCurvePublicKey, days: int) -> x509.CertificateBuilder:
    now = datetime.datetime.now(datetime.UTC)
    return (x509.CertificateBuilder().subject_name(_name(subject)).issuer_name(issuer).public_key(public)
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + datetime.timedelta(days=days)))


def _write(path: Path, data: bytes, private: bool = False) -> None:
    path.write_bytes(data)
    if private:
        os.chmod(path, 0o600)


def _key_pem(key: Key) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def generate(directory: str | Path, names: Sequence[str] = (), client_user: str = "app", days: int = 365) -> Path:
    """Write the CA, server and client certificates and keys into directory (made if missing)."""
    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_common_name = f"dbproxy test CA {secrets.token_hex(4)}"   # each CA its own name: no mix-ups in trust stores
    ca_name = _name(ca_common_name)
    ca = (_builder(ca_common_name, ca_name, ca_key.public_key(), days)
          .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
          .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                       content_commitment=False, key_encipherment=False, data_encipherment=False,
                                       key_agreement=False, encipher_only=False, decipher_only=False), critical=True)
          .sign(ca_key, hashes.SHA256()))
    _write(out / "ca.pem", ca.public_bytes(serialization.Encoding.PEM))
    _write(out / "ca-key.pem", _key_pem(ca_key), private=True)

    dns = list(dict.fromkeys(["localhost", socket.gethostname(), *[n for n in names if not _is_ip(n)]]))
    ips = list(dict.fromkeys(["127.0.0.1", "::1", *[n for n in names if _is_ip(n)]]))
    alt = [x509.DNSName(n) for n in dns] + [x509.IPAddress(ipaddress.ip_address(n)) for n in ips]
    server_key = ec.generate_private_key(ec.SECP256R1())
    server = (_builder("localhost", ca_name, server_key.public_key(), days)
              .add_extension(x509.SubjectAlternativeName(alt), critical=False)
              .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
              .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
              .sign(ca_key, hashes.SHA256()))
    _write(out / "server.pem", server.public_bytes(serialization.Encoding.PEM))
    _write(out / "server-key.pem", _key_pem(server_key), private=True)

    client_key = ec.generate_private_key(ec.SECP256R1())
    client = (_builder(client_user, ca_name, client_key.public_key(), days)
              .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
              .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
              .sign(ca_key, hashes.SHA256()))
    _write(out / "client.pem", client.public_bytes(serialization.Encoding.PEM))
    _write(out / "client-key.pem", _key_pem(client_key), private=True)
    return out


def _is_ip(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True
