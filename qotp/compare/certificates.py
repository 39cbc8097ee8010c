"""Throw-away credentials for a comparison run: one self-signed certificate and one PSK.

Every certificate-based transport (TLS, QUIC, QOTP over DTLS) authenticates
with the same P-256 server certificate, so that no row pays for a bigger key
than another.  A throw-away CA issues it for ``localhost``; clients trust that
CA only (strict validators, ours included, refuse a CA certificate as a
server's own).
"""

from __future__ import annotations

import datetime
import ipaddress
import os
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

__all__ = ["Credentials", "make_credentials"]

SERVER_NAME = "localhost"
"""The name every client verifies the server certificate against."""
PSK_IDENTITY = b"qotp-compare"


@dataclass(frozen=True, slots=True, kw_only=True)
class Credentials:
    """Files and secrets both sides of a comparison share."""

    ca_file: Path
    """The trust anchor clients verify the server with."""
    certificate_file: Path
    """The server's certificate (leaf)."""
    key_file: Path
    psk: bytes
    psk_identity: bytes = PSK_IDENTITY


def _certificate(
    subject: str,
    public_key: ec.EllipticCurvePublicKey,
    issuer: str,
    signing_key: ec.EllipticCurvePrivateKey,
    *,
    is_ca: bool,
) -> x509.Certificate:
    now = datetime.datetime.now(datetime.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)]))
        .issuer_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, issuer)]))
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=is_ca, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=not is_ca,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=is_ca,
                crl_sign=is_ca,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False)
    )
    if is_ca:
        return builder.sign(signing_key, hashes.SHA256())
    addresses = [ipaddress.ip_address("127.0.0.1"), ipaddress.ip_address("::1")]
    builder = (
        builder.add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName(SERVER_NAME), *(x509.IPAddress(address) for address in addresses)]
            ),
            critical=False,
        )
        .add_extension(
            x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), critical=False
        )
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(signing_key.public_key()),
            critical=False,
        )
    )
    return builder.sign(signing_key, hashes.SHA256())


def make_credentials(directory: Path) -> Credentials:
    """Write a fresh CA, server certificate and key into ``directory``; draw a PSK."""
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = _certificate("qotp compare CA", ca_key.public_key(), "qotp compare CA", ca_key, is_ca=True)
    key = ec.generate_private_key(ec.SECP256R1())
    certificate = _certificate(
        SERVER_NAME, key.public_key(), "qotp compare CA", ca_key, is_ca=False
    )
    directory.mkdir(parents=True, exist_ok=True)
    ca_file = directory / "ca.pem"
    certificate_file = directory / "cert.pem"
    key_file = directory / "key.pem"
    ca_file.write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    certificate_file.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    key_file.chmod(0o600)
    return Credentials(
        ca_file=ca_file, certificate_file=certificate_file, key_file=key_file, psk=os.urandom(32)
    )
