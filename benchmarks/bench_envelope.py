"""Sealing + opening one 1400-byte Data packet, against bare ChaCha20-Poly1305.

The baseline is measured in the same run: ``cryptography``'s ChaCha20Poly1305
encrypting and decrypting 1400 bytes.  Target: ratio at most 2.0.

"Ours" is the path a connection takes per packet: seal with its cached Data
header, then on the other side route by connection id and open (both
encryption layers, epoch check included).

Run: ``./run.sh bench`` (or ``.venv/bin/python benchmarks/bench_envelope.py``).
"""

from __future__ import annotations

import os
import statistics
import timeit
from collections.abc import Callable

from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305

from qotp.envelope import (
    MessageType,
    PacketCipher,
    data_connection_id,
    data_header,
    header_size,
    sealed_overhead,
)

PACKET_SIZE = 1400
TARGET_RATIO = 2.0


def _best_per_call(function: Callable[[], None], number: int, repeat: int = 7) -> float:
    return min(timeit.repeat(function, number=number, repeat=repeat)) / number


def main() -> None:
    key = os.urandom(32)
    aead = ChaCha20Poly1305(key)
    nonce = bytes(12)
    plain_1400 = os.urandom(PACKET_SIZE)
    associated = os.urandom(9)

    def baseline() -> None:
        aead.decrypt(nonce, aead.encrypt(nonce, plain_1400, associated), associated)

    sender = PacketCipher(key)
    receiver = PacketCipher(key)
    connection_id = 0x1122334455667788
    header = data_header(connection_id)
    data_header_size = header_size(MessageType.DATA)
    payload = os.urandom(PACKET_SIZE - sealed_overhead(MessageType.DATA))
    counter = iter(range(1 << 40))

    def seal_and_open() -> None:
        packet = sender.seal(header, next(counter), 0, True, payload)
        if data_connection_id(packet) != connection_id:
            raise AssertionError("routing failed")
        opened = receiver.open(packet, data_header_size, 0, True)
        if len(packet) != PACKET_SIZE or len(opened.payload) != len(payload):
            raise AssertionError("round trip failed")

    number = 20000
    ratios = []
    for _ in range(3):
        base = _best_per_call(baseline, number)
        ours = _best_per_call(seal_and_open, number)
        ratios.append(ours / base)
    ratio = statistics.median(ratios)
    print(
        f"envelope: seal+open 1400-byte Data packet {ours * 1e6:.2f} us; "
        f"bare ChaCha20-Poly1305 encrypt+decrypt 1400 B {base * 1e6:.2f} us; "
        f"ratio {ratio:.2f} (target <= {TARGET_RATIO}) "
        f"{'OK' if ratio <= TARGET_RATIO else 'ABOVE TARGET'}"
    )


if __name__ == "__main__":
    main()
