"""DTLS benchmarks: handshakes per second and bulk throughput, DTLS 1.3 and 1.2 vs pyOpenSSL.

Run: ./run.sh bench   (or: python benchmarks/bench_dtls.py [--handshakes N] [--records N])
Both sides of each pair live in this process and talk through memory, so the
numbers are CPU cost per handshake / per record, client and server together.
Three rows in the same run: our DTLS 1.3, our DTLS 1.2, and pyOpenSSL's DTLS
1.2 (OpenSSL has no DTLS 1.3) as the baseline; best of --repeats interleaved
runs each, with ratios to the baseline.  Our handshakes include the stateless
address check (HelloRetryRequest / HelloVerifyRequest) a server does by
default, and 1.3's server also issues a ticket; pyOpenSSL runs without
cookies.  Bulk rows use the same payload size for all three.
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
from dtls.config import DTLSVersion

PAYLOAD_BYTES = 1200 - 13 - 8 - 16  # one DTLS 1.2 AES-GCM record fills a 1200-byte datagram
OURS_13 = "ours DTLS 1.3"
OURS_12 = "ours DTLS 1.2"
BASELINE = "pyOpenSSL DTLS 1.2"
SUITES = {
    OURS_13: CipherSuite.TLS_AES_128_GCM_SHA256,
    OURS_12: CipherSuite.TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
}
VERSIONS = {OURS_13: DTLSVersion.DTLS_1_3, OURS_12: DTLSVersion.DTLS_1_2}


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
    cert: x509.Certificate, key: ec.EllipticCurvePrivateKey, row: str = OURS_12
) -> tuple[DTLSConnection, DTLSConnection]:
    suite = (SUITES[row],)
    versions = (VERSIONS[row],)
    groups = (NamedGroup.x25519,)
    # The client names P-256 too: it is the ECDSA certificate's curve (RFC 8422 5.1).
    client = DTLSConnection(
        DTLSConfiguration(
            is_client=True,
            verify_peer=False,
            cipher_suites=suite,
            groups=(NamedGroup.x25519, NamedGroup.secp256r1),
            versions=versions,
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
            versions=versions,
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


Rates = dict[str, float | None]


def _pyopenssl_available() -> bool:
    try:
        import OpenSSL  # noqa: F401
    except ImportError:
        return False
    return True


def bench_handshakes(count: int) -> Rates:
    """Full handshakes per second (client and server together) for each row."""
    cert, key = certificate()
    rates: Rates = {}
    for row in (OURS_13, OURS_12):
        start = time.perf_counter()
        for _ in range(count):
            our_pair(cert, key, row)
        rates[row] = count / (time.perf_counter() - start)
    rates[BASELINE] = None
    if _pyopenssl_available():
        start = time.perf_counter()
        for _ in range(count):
            openssl_pair(cert, key)
        rates[BASELINE] = count / (time.perf_counter() - start)
    return rates


def bench_throughput(records: int) -> Rates:
    """Bulk MB/s of application payload (seal on one side, open on the other) for each row."""
    cert, key = certificate()
    payload = b"x" * PAYLOAD_BYTES
    rates: Rates = {}
    for row in (OURS_13, OURS_12):
        client, server = our_pair(cert, key, row)
        for datagram, _ in server.datagrams_to_send(0):  # a 1.3 ticket: not part of the bulk
            client.receive_datagram(datagram, "server", 0)
        start = time.perf_counter()
        received = 0
        for _ in range(records):
            client.send(payload)
            for datagram, _ in client.datagrams_to_send(0):
                server.receive_datagram(datagram, "client", 0)
            data = server.receive()
            received += len(data or b"")
        rates[row] = received / (time.perf_counter() - start) / 1e6
    rates[BASELINE] = None
    if not _pyopenssl_available():
        return rates
    from OpenSSL import SSL

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
    rates[BASELINE] = received / (time.perf_counter() - start) / 1e6
    return rates


def best_of(repeats: int, measure: Callable[[int], Rates], size: int) -> Rates:
    """Best rate of each row over ``repeats`` interleaved runs (shared machines are noisy)."""
    best: Rates = {}
    for _ in range(repeats):
        for row, rate in measure(size).items():
            if rate is not None:
                best[row] = max(best.get(row) or 0.0, rate)
            else:
                best.setdefault(row, None)
    return best


def report(title: str, unit: str, rates: Rates) -> None:
    """One line per row, with its ratio to the pyOpenSSL baseline."""
    print(title)
    baseline = rates.get(BASELINE)
    for row, rate in rates.items():
        if rate is None:
            print(f"  {row:20s} unavailable (no pyOpenSSL)")
            continue
        ratio = f"  ratio {rate / baseline:.3f}" if baseline else ""
        print(f"  {row:20s} {rate:9.1f} {unit}{ratio}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--handshakes", type=int, default=50)
    parser.add_argument("--records", type=int, default=20000)
    parser.add_argument("--repeats", type=int, default=3)
    arguments, _ = parser.parse_known_args()  # ./run.sh bench passes every bench its flags
    report(
        "dtls handshakes (client+server, ECDSA P-256 certificate, x25519; AES-128-GCM suites):",
        "handshakes/s",
        best_of(arguments.repeats, bench_handshakes, arguments.handshakes),
    )
    report(
        f"dtls bulk (AES-128-GCM, {PAYLOAD_BYTES}-byte payloads, seal+open):",
        "MB/s",
        best_of(arguments.repeats, bench_throughput, arguments.records),
    )


if __name__ == "__main__":
    main()
