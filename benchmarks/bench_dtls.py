"""DTLS benchmarks: full handshakes per second and bulk throughput, ours vs pyOpenSSL.

Run: ./run.sh bench   (or: python benchmarks/bench_dtls.py [--handshakes N] [--records N])
Both sides of each pair live in this process and talk through memory, so the
numbers are CPU cost per handshake / per record, client and server together.
The pyOpenSSL baseline is measured in the same run (best of --repeats
interleaved runs on each side); ratios are printed.
"""

from __future__ import annotations

import argparse
import datetime
import time
from collections.abc import Callable

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from dtls import CipherSuite, DTLSConfiguration, DTLSConnection, NamedGroup

PAYLOAD_BYTES = 1200 - 13 - 8 - 16  # one AES-GCM record fills a 1200-byte datagram


def certificate() -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "bench.test")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(1)
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .sign(key, hashes.SHA256())
    )
    return cert, key


def our_pair(
    cert: x509.Certificate, key: ec.EllipticCurvePrivateKey
) -> tuple[DTLSConnection, DTLSConnection]:
    suite = (CipherSuite.TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,)
    groups = (NamedGroup.x25519,)
    # The client names P-256 too: it is the ECDSA certificate's curve (RFC 8422 5.1).
    client = DTLSConnection(
        DTLSConfiguration(
            is_client=True,
            verify_peer=False,
            cipher_suites=suite,
            groups=(NamedGroup.x25519, NamedGroup.secp256r1),
        ),
        address="server",
    )
    server = DTLSConnection(
        DTLSConfiguration(
            is_client=False,
            certificate_chain=(cert,),
            private_key=key,
            cipher_suites=suite,
            groups=groups,
        ),
        address="client",
    )
    client.start_handshake(0)
    for _ in range(10):
        if client.is_established and server.is_established:
            return client, server
        for datagram, _ in client.datagrams_to_send(0):
            server.receive_datagram(datagram, "client", 0)
        for datagram, _ in server.datagrams_to_send(0):
            client.receive_datagram(datagram, "server", 0)
    raise RuntimeError(f"handshake failed: {client.terminated_reason or server.terminated_reason}")


def openssl_pair(cert: x509.Certificate, key: ec.EllipticCurvePrivateKey) -> tuple[object, object]:
    from OpenSSL import SSL

    def context(server: bool) -> SSL.Context:
        ctx = SSL.Context(SSL.DTLS_METHOD)
        ctx.set_options(SSL.OP_NO_QUERY_MTU | SSL.OP_NO_TICKET)
        ctx.set_cipher_list(b"ECDHE-ECDSA-AES128-GCM-SHA256")
        if server:
            ctx.use_certificate(cert)  # type: ignore[arg-type]
            ctx.use_privatekey(key)  # type: ignore[arg-type]
        return ctx

    client = SSL.Connection(context(False), None)
    server = SSL.Connection(context(True), None)
    for connection in (client, server):
        connection.set_ciphertext_mtu(1200)
    client.set_connect_state()
    server.set_accept_state()

    def step(connection: SSL.Connection) -> bool:
        try:
            connection.do_handshake()
            return True
        except SSL.WantReadError:
            return False

    done = [False, False]
    for _ in range(20):
        if all(done):
            return client, server
        done[0] = step(client)
        move(client, server)
        done[1] = step(server)
        move(server, client)
    raise RuntimeError("pyOpenSSL handshake did not finish")


def move(source: object, destination: object) -> None:
    from OpenSSL import SSL

    while True:
        try:
            data = source.bio_read(65536)  # type: ignore[attr-defined]
        except SSL.WantReadError:
            return
        destination.bio_write(data)  # type: ignore[attr-defined]


def bench_handshakes(count: int) -> tuple[float, float | None]:
    cert, key = certificate()
    start = time.perf_counter()
    for _ in range(count):
        our_pair(cert, key)
    ours = count / (time.perf_counter() - start)
    try:
        import OpenSSL  # noqa: F401
    except ImportError:
        return ours, None
    start = time.perf_counter()
    for _ in range(count):
        openssl_pair(cert, key)
    theirs = count / (time.perf_counter() - start)
    return ours, theirs


def bench_throughput(records: int) -> tuple[float, float | None]:
    cert, key = certificate()
    payload = b"x" * PAYLOAD_BYTES
    client, server = our_pair(cert, key)
    start = time.perf_counter()
    received = 0
    for _ in range(records):
        client.send(payload)
        for datagram, _ in client.datagrams_to_send(0):
            server.receive_datagram(datagram, "client", 0)
        data = server.receive()
        received += len(data or b"")
    ours = received / (time.perf_counter() - start) / 1e6
    try:
        from OpenSSL import SSL
    except ImportError:
        return ours, None
    openssl_client, openssl_server = openssl_pair(cert, key)
    start = time.perf_counter()
    received = 0
    for _ in range(records):
        openssl_client.send(payload)  # type: ignore[attr-defined]
        move(openssl_client, openssl_server)
        try:
            received += len(openssl_server.recv(65536))  # type: ignore[attr-defined]
        except SSL.WantReadError:
            pass
    theirs = received / (time.perf_counter() - start) / 1e6
    return ours, theirs


def best_of(
    repeats: int, measure: Callable[[int], tuple[float, float | None]], size: int
) -> tuple[float, float | None]:
    """Best rate of each side over ``repeats`` interleaved runs (shared machines are noisy)."""
    ours_best = 0.0
    theirs_best: float | None = None
    for _ in range(repeats):
        ours, theirs = measure(size)
        ours_best = max(ours_best, ours)
        if theirs is not None:
            theirs_best = max(theirs_best or 0.0, theirs)
    return ours_best, theirs_best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--handshakes", type=int, default=50)
    parser.add_argument("--records", type=int, default=20000)
    parser.add_argument("--repeats", type=int, default=3)
    arguments, _ = parser.parse_known_args()  # ./run.sh bench passes every bench its flags
    ours, theirs = best_of(arguments.repeats, bench_handshakes, arguments.handshakes)
    line = f"dtls handshakes/s (client+server, ECDHE-ECDSA P-256, x25519): ours {ours:8.1f}"
    if theirs:
        line += f"  pyOpenSSL {theirs:8.1f}  ratio {ours / theirs:.3f}"
    print(line)
    ours, theirs = best_of(arguments.repeats, bench_throughput, arguments.records)
    line = (
        f"dtls bulk MB/s (AES-128-GCM, {PAYLOAD_BYTES}-byte records, seal+open): ours {ours:7.1f}"
    )
    if theirs:
        line += f"  pyOpenSSL {theirs:7.1f}  ratio {ours / theirs:.3f}"
    print(line)


if __name__ == "__main__":
    main()
