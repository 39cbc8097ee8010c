"""QOTP's transport (streams, ACKs, BBR, flow control, FIN/ACK) over DTLS 1.2 on loopback.

Run: python examples/qotp_over_dtls.py [--megabytes 4] [--streams 2] [--connection-id]

The server holds a throwaway certificate from a throwaway CA; the client
trusts the CA, checks the server name, and pins the server's key.  The client
sends each stream's bytes and closes it; the server answers each stream with
the SHA-256 of what it read, and the client checks it.  The only difference
from QOTP's native crypto is the ``crypto=`` argument of ``listen``.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import hashlib
import os
import sys
import time
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from dtls import DTLSConfiguration  # noqa: E402
from qotp.asyncio import QotpConnection, QotpListener, listen  # noqa: E402
from qotp.dtls_protection import DtlsCryptoLayer, DtlsProtection  # noqa: E402


def make_certificates(
    name: str,
) -> tuple[x509.Certificate, x509.Certificate, ec.EllipticCurvePrivateKey]:
    """A throwaway CA and a server certificate it signed, for the demo."""
    now = datetime.datetime.now(datetime.UTC)

    def build(
        subject: str, issuer: str, public_key: ec.EllipticCurvePublicKey, is_ca: bool,
        issuer_key: ec.EllipticCurvePublicKey,
    ) -> x509.CertificateBuilder:  # fmt: skip
        builder = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)]))
            .issuer_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, issuer)]))
            .public_key(public_key)
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=is_ca, path_length=None), critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer_key), critical=False
            )
        )
        if is_ca:
            return builder.add_extension(
                x509.KeyUsage(
                    digital_signature=True, content_commitment=False, key_encipherment=False,
                    data_encipherment=False, key_agreement=False, key_cert_sign=True,
                    crl_sign=True, encipher_only=False, decipher_only=False,
                ),
                critical=True,
            )  # fmt: skip
        return builder.add_extension(
            x509.SubjectAlternativeName([x509.DNSName(subject)]), critical=False
        ).add_extension(
            x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), critical=False
        )

    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_public = ca_key.public_key()
    ca = build("demo CA", "demo CA", ca_public, True, ca_public).sign(ca_key, hashes.SHA256())
    key = ec.generate_private_key(ec.SECP256R1())
    leaf = build(name, "demo CA", key.public_key(), False, ca_public).sign(ca_key, hashes.SHA256())
    return ca, leaf, key


async def serve(listener: QotpListener, streams: int) -> None:
    """Answer each stream with the SHA-256 of everything read from it."""
    connection = await listener.accept()

    async def answer() -> None:
        stream = await connection.accept_stream()
        data = await stream.read()  # up to the client's FIN
        stream.write(hashlib.sha256(data).digest())
        stream.close()

    await asyncio.gather(*(answer() for _ in range(streams)))


async def send(connection: QotpConnection, payloads: dict[int, bytes]) -> None:
    async def one(stream_id: int) -> None:
        stream = connection.stream(stream_id)
        stream.write(payloads[stream_id])
        stream.close()
        await stream.drain()
        digest = await stream.read()
        if digest != hashlib.sha256(payloads[stream_id]).digest():
            raise SystemExit(f"stream {stream_id}: SHA-256 mismatch")

    await asyncio.gather(*(one(stream_id) for stream_id in payloads))


async def main(megabytes: float, streams: int, connection_id: bool) -> None:
    ca, certificate, key = make_certificates("qotp.test")
    server_layer = DtlsCryptoLayer(
        server=DTLSConfiguration(
            is_client=False, certificate_chain=(certificate,), private_key=key
        ),
        connection_id_bytes=8 if connection_id else 0,
    )
    client_layer = DtlsCryptoLayer(
        client=DTLSConfiguration(ca_certificates=(ca,), server_name="qotp.test"),
        connection_id_bytes=8 if connection_id else 0,
    )
    size = int(megabytes * 1_000_000) // streams
    payloads = {stream_id: os.urandom(size) for stream_id in range(1, streams + 1)}
    async with (
        await listen("127.0.0.1", 0, crypto=server_layer) as server,
        await listen("127.0.0.1", 0, crypto=client_layer) as client,
    ):
        server_task = asyncio.create_task(serve(server, streams))
        start = time.perf_counter()
        connection = await client.dial(server.local_address, peer_public_key=server.public_key)
        handshake_s = time.perf_counter() - start
        await send(connection, payloads)
        elapsed = time.perf_counter() - start
        await server_task
        protection = connection.engine.protection
        assert isinstance(protection, DtlsProtection)
        suite = protection.dtls.cipher_suite_name
        total = size * streams
        print(
            f"QOTP over DTLS ({suite}): {total / 1e6:.1f} MB on {streams} streams, "
            f"SHA-256 verified, handshake {handshake_s * 1e3:.0f} ms, "
            f"{total / elapsed / 1e6:.1f} MB/s"
        )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--megabytes", type=float, default=4.0)
    parser.add_argument("--streams", type=int, default=2)
    parser.add_argument("--connection-id", action="store_true", help="use RFC 9146 CIDs")
    arguments = parser.parse_args()
    asyncio.run(main(arguments.megabytes, arguments.streams, arguments.connection_id))
