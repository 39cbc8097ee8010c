"""Regenerate tests/vectors/dtls-records.json (run: python tests/dtls_make_vectors.py).

These pin our wire format byte for byte.  The AEAD layouts they exercise were
checked against OpenSSL by the interop tests (GCM and ChaCha20 records); the
RFC 9146 connection-id layout follows RFC 9146 section 5 (OpenSSL 3.0 has no
CID support to compare with).  The PRF vector is the widely used TLS 1.2
SHA-256 PRF test vector.
"""

from __future__ import annotations

import json
from pathlib import Path

from dtls.connection import encode_hello_verify_datagram
from dtls.keyschedule import prf
from dtls.protection import RecordProtection
from dtls.records import DTLS_1_2, ContentType
from dtls.suites import AeadKind

OUT = Path(__file__).resolve().parent / "vectors" / "dtls-records.json"


def build() -> dict[str, object]:
    records = []
    cases = [
        ("aes128gcm", AeadKind.AES_128_GCM, bytes(range(16)), bytes.fromhex("a0a1a2a3"), b""),
        ("aes256gcm", AeadKind.AES_256_GCM, bytes(range(32)), bytes.fromhex("b0b1b2b3"), b""),
        (
            "chacha20poly1305",
            AeadKind.CHACHA20_POLY1305,
            bytes(range(32)),
            bytes.fromhex("c0c1c2c3c4c5c6c7c8c9cacb"),
            b"",
        ),
        (
            "aes128gcm_cid",
            AeadKind.AES_128_GCM,
            bytes(range(16)),
            bytes.fromhex("a0a1a2a3"),
            bytes.fromhex("deadbeef"),
        ),
        (
            "chacha20poly1305_cid",
            AeadKind.CHACHA20_POLY1305,
            bytes(range(32)),
            bytes.fromhex("c0c1c2c3c4c5c6c7c8c9cacb"),
            bytes.fromhex("0102"),
        ),
    ]
    for name, kind, key, iv, cid in cases:
        protection = RecordProtection(kind, key, iv, epoch=1)
        plaintext = b"dtls record vector"
        record = protection.seal(
            ContentType.application_data, DTLS_1_2, 0x0102_0304_0506, plaintext, cid
        )
        records.append(
            {
                "name": name,
                "aead": kind.value,
                "key": key.hex(),
                "fixed_iv": iv.hex(),
                "epoch": 1,
                "sequence_number": 0x0102_0304_0506,
                "content_type": 23,
                "connection_id": cid.hex(),
                "plaintext": plaintext.hex(),
                "record": record.hex(),
            }
        )
    return {
        "prf_sha256": {
            "source": "TLS 1.2 PRF (SHA-256) test vector circulated on the IETF TLS list",
            "secret": "9bbe436ba940f017b17652849a71db35",
            "label": b"test label".hex(),
            "seed": "a0ba9f936cda311827a6f796ffd5198c",
            "output": prf(
                "sha256",
                bytes.fromhex("9bbe436ba940f017b17652849a71db35"),
                b"test label",
                bytes.fromhex("a0ba9f936cda311827a6f796ffd5198c"),
                100,
            ).hex(),
        },
        "hello_verify_request": {
            "note": "RFC 6347 4.2.1: version field FE FF; message_seq and record number copied",
            "cookie": bytes(range(32)).hex(),
            "message_seq": 0,
            "record_sequence": 7,
            "datagram": encode_hello_verify_datagram(
                bytes(range(32)), message_seq=0, record_sequence=7
            ).hex(),
        },
        "records": records,
    }


if __name__ == "__main__":
    OUT.write_text(json.dumps(build(), indent=1) + "\n")
    print(f"wrote {OUT}")
