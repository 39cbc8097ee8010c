"""AEAD record protection: nonces per RFC 5288 / RFC 7905, CID records per RFC 9146."""

from __future__ import annotations

import pytest
from cryptography.hazmat.primitives.ciphers.aead import AESGCM, ChaCha20Poly1305

from dtls.errors import DecryptError
from dtls.protection import RecordProtection
from dtls.records import DTLS_1_2, ContentType, decode_datagram
from dtls.suites import AeadKind

KEYS = {
    AeadKind.AES_128_GCM: (bytes(range(16)), bytes(range(4))),
    AeadKind.AES_256_GCM: (bytes(range(32)), bytes(range(4))),
    AeadKind.CHACHA20_POLY1305: (bytes(range(32)), bytes(range(12))),
}


@pytest.mark.parametrize("kind", list(AeadKind))
@pytest.mark.parametrize("cid", [b"", b"\x01\x02\x03"])
def test_seal_open_round_trip(kind: AeadKind, cid: bytes) -> None:
    key, iv = KEYS[kind]
    sender = RecordProtection(kind, key, iv, epoch=1)
    receiver = RecordProtection(kind, key, iv, epoch=1)
    wire = sender.seal(ContentType.application_data, DTLS_1_2, 42, b"payload", cid)
    (record,), junk = decode_datagram(wire, len(cid))
    assert junk == 0
    assert record.sequence_number == 42
    assert receiver.open(record) == (ContentType.application_data, b"payload")
    assert len(wire) == 13 + len(cid) + len(b"payload") + (1 if cid else 0) + sender.overhead


def test_gcm_nonce_is_salt_plus_explicit_epoch_and_sequence() -> None:
    key, salt = KEYS[AeadKind.AES_128_GCM]
    wire = RecordProtection(AeadKind.AES_128_GCM, key, salt, epoch=1).seal(
        ContentType.application_data, DTLS_1_2, 5, b"hi"
    )
    explicit = wire[13:21]
    assert explicit == bytes.fromhex("0001000000000005")
    aad = explicit + bytes((23,)) + DTLS_1_2.to_bytes(2, "big") + (2).to_bytes(2, "big")
    assert AESGCM(key).decrypt(salt + explicit, wire[21:], aad) == b"hi"


def test_chacha_nonce_is_iv_xor_sequence() -> None:
    key, iv = KEYS[AeadKind.CHACHA20_POLY1305]
    wire = RecordProtection(AeadKind.CHACHA20_POLY1305, key, iv, epoch=1).seal(
        ContentType.application_data, DTLS_1_2, 5, b"hi"
    )
    sequence = bytes.fromhex("0001000000000005")
    nonce = bytes(a ^ b for a, b in zip(iv, bytes(4) + sequence, strict=True))
    aad = sequence + bytes((23,)) + DTLS_1_2.to_bytes(2, "big") + (2).to_bytes(2, "big")
    assert ChaCha20Poly1305(key).decrypt(nonce, wire[13:], aad) == b"hi"


@pytest.mark.parametrize("kind", list(AeadKind))
def test_tampering_raises_decrypt_error(kind: AeadKind) -> None:
    key, iv = KEYS[kind]
    protection = RecordProtection(kind, key, iv, epoch=1)
    wire = bytearray(protection.seal(ContentType.application_data, DTLS_1_2, 1, b"secret"))
    for position in (3, 10, len(wire) - 1):  # epoch, sequence, tag
        mutated = bytearray(wire)
        mutated[position] ^= 0x40
        (record,), _ = decode_datagram(bytes(mutated))
        with pytest.raises(DecryptError):
            protection.open(record)


def test_short_record_raises_decrypt_error() -> None:
    key, iv = KEYS[AeadKind.AES_128_GCM]
    protection = RecordProtection(AeadKind.AES_128_GCM, key, iv, epoch=1)
    (record,), _ = decode_datagram(bytes.fromhex("17fefd00010000000000010003") + b"abc")
    with pytest.raises(DecryptError):
        protection.open(record)


@pytest.mark.parametrize("kind", list(AeadKind))
def test_seal_plain_matches_seal(kind: AeadKind) -> None:
    key, iv = KEYS[kind]
    protection = RecordProtection(kind, key, iv, epoch=3)
    assert protection.seal_plain(23, 99, b"same bytes") == protection.seal(
        23, DTLS_1_2, 99, b"same bytes"
    )
