"""Engine cost per packet: the sans-IO sender and receiver in one process, no sockets.

The asyncio benchmark (bench_transport.py) measures what users see; this one
isolates the protocol work, so that an optimisation of the engine shows up
without socket and scheduling noise.  Both endpoints run on the real clock
(pacing and BBR behave as on a link with zero delay); every call into each
side is timed separately (thread CPU time, so other load on the machine
matters less), and the report says which side is the bottleneck.

Baseline, in the same run: one ChaCha20-Poly1305 seal plus one open of a
1400-byte payload, i.e. the floor that the AEAD alone costs per packet.

``--crypto`` runs the same transport over DTLS 1.2 record protection instead of
QOTP's native envelope (PSK suites, so no certificates are needed), for
comparing the two crypto layers under the one transport.

Run: ``.venv/bin/python benchmarks/bench_engine.py [--megabytes N] [--crypto all]
[--profile side]``.
"""

from __future__ import annotations

import argparse
import cProfile
import os
import pstats
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305  # noqa: E402

from dtls.config import DTLSConfiguration  # noqa: E402
from dtls.suites import CipherSuite  # noqa: E402
from qotp.dtls_protection import DtlsCryptoLayer  # noqa: E402
from qotp.endpoint import QotpEndpoint  # noqa: E402

CLIENT = ("192.0.2.1", 1111)
SERVER = ("192.0.2.2", 2222)


def _aead_floor_ns(rounds: int = 20000) -> float:
    aead = ChaCha20Poly1305(os.urandom(32))
    nonce = bytes(12)
    plaintext = os.urandom(1400)
    start = time.thread_time_ns()
    for _ in range(rounds):
        aead.decrypt(nonce, aead.encrypt(nonce, plaintext, b"h"), b"h")
    return (time.thread_time_ns() - start) / rounds


CRYPTO_LAYERS = {
    "native": None,
    "dtls-psk-aes128gcm": CipherSuite.TLS_PSK_WITH_AES_128_GCM_SHA256,
    "dtls-ecdhe-psk-chacha20": CipherSuite.TLS_ECDHE_PSK_WITH_CHACHA20_POLY1305_SHA256,
}


def _endpoints(crypto: str) -> tuple[QotpEndpoint, QotpEndpoint]:
    suite = CRYPTO_LAYERS[crypto]
    if suite is None:
        return QotpEndpoint(), QotpEndpoint()
    psk = bytes(range(32))
    client_config = DTLSConfiguration(cipher_suites=(suite,), psk=psk, psk_identity=b"bench")
    server_config = DTLSConfiguration(is_client=False, cipher_suites=(suite,), psk=psk)
    return (
        QotpEndpoint(crypto=DtlsCryptoLayer(client=client_config)),
        QotpEndpoint(crypto=DtlsCryptoLayer(server=server_config)),
    )


def run(total_bytes: int, profile: str | None, crypto: str = "native") -> dict[str, float]:
    clock = time.perf_counter_ns
    cpu = time.thread_time_ns
    client, server = _endpoints(crypto)
    spent = {"client": 0, "server": 0}
    profiler = cProfile.Profile() if profile else None
    peer_key = server.public_key if crypto == "native" else None
    connection = client.connect(SERVER, now=clock(), peer_public_key=peer_key)
    chunk = os.urandom(1 << 16)
    written = 0
    received = 0
    server_connection = None

    @contextmanager
    def side(name: str) -> Iterator[None]:
        """Charge the enclosed work to one side's CPU time (and its profile)."""
        active = profiler if profile == name else None
        if active is not None:
            active.enable()
        before = cpu()
        yield
        spent[name] += cpu() - before
        if active is not None:
            active.disable()

    start = clock()
    while received < total_bytes:
        with side("client"):
            now = clock()
            while written < total_bytes and connection.send_space() >= len(chunk):
                connection.send_stream_data(0, chunk, now=now)
                written += len(chunk)
            client.mark_ready(connection)
            client.handle_timer(now)
            to_server = client.datagrams_to_send(now)
            while client.next_event() is not None:
                pass
        with side("server"):
            now = clock()
            for datagram, _address in to_server:
                server.receive_datagram(datagram, CLIENT, now)
            if server_connection is None and server.connections:
                server_connection = next(iter(server.connections.values()))
            if server_connection is not None:
                while server_connection.readable(0):
                    received += len(server_connection.read(0, now=now))
            server.handle_timer(now)
            to_client = server.datagrams_to_send(now)
            while server.next_event() is not None:
                pass
        with side("client"):
            now = clock()
            for datagram, _address in to_client:
                client.receive_datagram(datagram, SERVER, now)
    elapsed = clock() - start
    packets = connection.statistics().datagrams_sent
    if profiler:
        pstats.Stats(profiler).sort_stats("tottime").print_stats(30)
    return {
        "packets": packets,
        "client_ns_per_packet": spent["client"] / packets,
        "server_ns_per_packet": spent["server"] / packets,
        "mb_s_if_client_bound": total_bytes / (spent["client"] / 1e9) / 1e6,
        "elapsed_s": elapsed / 1e9,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--megabytes", type=int, default=30)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--profile", choices=("client", "server"))
    parser.add_argument(
        "--crypto", choices=(*CRYPTO_LAYERS, "all"), default="native",
        help="the crypto layer under the transport (default: QOTP's native envelope)",
    )  # fmt: skip
    arguments, _ = parser.parse_known_args()  # ./run.sh bench passes every bench its flags
    floor = _aead_floor_ns()
    print(f"baseline: AEAD seal+open of 1400 B: {floor / 1000:.2f} us")
    layers = list(CRYPTO_LAYERS) if arguments.crypto == "all" else [arguments.crypto]
    for crypto in layers:
        for _ in range(1 if arguments.profile else arguments.repeats):
            result = run(arguments.megabytes * 1_000_000, arguments.profile, crypto)
            print(
                f"{crypto}: {result['packets']} packets:"
                f" sender {result['client_ns_per_packet'] / 1000:.2f} us"
                f" ({result['client_ns_per_packet'] / floor:.1f}x baseline),"
                f" receiver {result['server_ns_per_packet'] / 1000:.2f} us"
                f" ({result['server_ns_per_packet'] / floor:.1f}x baseline);"
                f" sender-bound rate {result['mb_s_if_client_bound']:.1f} MB/s"
            )


if __name__ == "__main__":
    main()
