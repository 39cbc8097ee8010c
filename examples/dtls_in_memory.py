"""A DTLS client and server talking in memory through the sans-IO API.

Run: python examples/dtls_in_memory.py
Shows the driving loop every adapter implements: feed datagrams, pass ``now``,
send what ``datagrams_to_send`` returns, honour ``get_timer``.
"""

from __future__ import annotations

import datetime

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from dtls import DTLSConfiguration, DTLSConnection


def self_signed(name: str) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    """A throwaway certificate for the demo."""
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = datetime.datetime.now(datetime.UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(name)]), critical=False)
        .sign(key, hashes.SHA256())
    )
    return certificate, key


def main() -> None:
    certificate, key = self_signed("demo.test")
    server = DTLSConnection(
        DTLSConfiguration(is_client=False, certificate_chain=(certificate,), private_key=key),
        address="client",
    )
    client = DTLSConnection(
        DTLSConfiguration(is_client=True, verify_peer=False, alpn_protocols=("demo",)),
        address="server",
    )
    now = 0
    client.start_handshake(now)
    client.send(b"hello over DTLS")
    for _ in range(10):
        for datagram, _ in client.datagrams_to_send(now):
            server.receive_datagram(datagram, "client", now)
        for datagram, _ in server.datagrams_to_send(now):
            client.receive_datagram(datagram, "server", now)
        now += 1_000_000
    print("cipher suite:", client.cipher_suite_name)
    print("server received:", server.receive())
    print("exporter:", client.export_keying_material("EXPERIMENTAL-demo", None, 16).hex())


if __name__ == "__main__":
    main()
