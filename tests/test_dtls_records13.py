"""DTLS 1.3 records: unified header framing, record-number masks, protection, reconstruction."""

from __future__ import annotations

import os

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dtls.errors import DecryptError
from dtls.keyschedule13 import traffic_keys
from dtls.protection13 import RecordNumberCipher, RecordProtection13
from dtls.records13 import (
    CiphertextRecord,
    PlaintextRecord,
    decode_datagram13,
    encode_plaintext_record,
    reconstruct_sequence_number,
    resolve_epoch,
)
from dtls.suites import AeadKind


def test_record_number_masks_match_the_quic_header_protection_vectors() -> None:
    """RFC 9147 4.2.3 computes the mask as QUIC header protection does (RFC 9001 A.2, A.5)."""
    aes = RecordNumberCipher(
        AeadKind.AES_128_GCM, bytes.fromhex("9f50449e04a0e810283a1e9933adedd2")
    )
    assert aes.mask(bytes.fromhex("d1b1c98dd7689fb8ec11d242b123dc9b"))[:5].hex() == "437b9aec36"
    chacha = RecordNumberCipher(
        AeadKind.CHACHA20_POLY1305,
        bytes.fromhex("25a282b9e82f06f21f488917a4fc8f1b73573685608597d0efcb076b0ab7a7a4"),
    )
    assert chacha.mask(bytes.fromhex("5e5cd55c41f69080575d7999c25a5bfb"))[:5].hex() == "aefefe7d03"


def _pair(kind: AeadKind, epoch: int = 3) -> tuple[RecordProtection13, RecordProtection13]:
    key_bytes = 16 if kind is AeadKind.AES_128_GCM else 32
    keys = traffic_keys("sha256", os.urandom(32), key_bytes)
    return RecordProtection13(kind, keys, epoch), RecordProtection13(kind, keys, epoch)


@pytest.mark.parametrize("kind", list(AeadKind))
@pytest.mark.parametrize("cid", [b"", b"\x01\x02\x03\x04"])
def test_seal_then_open(kind: AeadKind, cid: bytes) -> None:
    writer, reader = _pair(kind)
    datagram = b"".join(
        writer.seal(23, sequence, b"data %d" % sequence, cid, padding=sequence % 3)
        for sequence in (0, 1, 70000)
    )
    records, leftover = decode_datagram13(datagram, len(cid))
    assert leftover == 0 and len(records) == 3
    expected_next = 0
    for record, sequence in zip(records, (0, 1, 70000), strict=True):
        assert isinstance(record, CiphertextRecord)
        assert record.connection_id == cid and record.epoch_bits == 3
        low, aad = reader.unmask_sequence(record)
        full = reconstruct_sequence_number(low, 16, expected_next)
        assert full == sequence if sequence < 65536 else full == sequence - 65536
        if sequence == 70000:
            full = reconstruct_sequence_number(low, 16, 69990)
            assert full == 70000
        assert reader.open(aad, full, record.encrypted_record) == (23, b"data %d" % sequence)
        expected_next = full + 1


def test_sequence_numbers_are_masked_on_the_wire() -> None:
    writer, _ = _pair(AeadKind.AES_128_GCM)
    # One sequence number under different ciphertexts shows as different bytes.
    different = {writer.seal(23, 5, bytes([i]) * 20)[1:3] for i in range(8)}
    assert len(different) > 1


def test_tampering_fails_authentication() -> None:
    writer, reader = _pair(AeadKind.CHACHA20_POLY1305)
    record = bytearray(writer.seal(22, 7, b"finished"))
    record[-1] ^= 1
    (parsed,), _ = decode_datagram13(bytes(record))
    assert isinstance(parsed, CiphertextRecord)
    low, aad = reader.unmask_sequence(parsed)
    with pytest.raises(DecryptError):
        reader.open(aad, low, parsed.encrypted_record)
    assert reader.tag_failures == 1


def test_plaintext_and_ciphertext_records_share_a_datagram() -> None:
    writer, _ = _pair(AeadKind.AES_256_GCM, epoch=2)
    datagram = encode_plaintext_record(22, 0xFEFD, 0, 4, b"server hello") + writer.seal(
        22, 0, b"ee"
    )
    records, leftover = decode_datagram13(datagram)
    assert leftover == 0
    assert isinstance(records[0], PlaintextRecord) and records[0].payload == b"server hello"
    assert isinstance(records[1], CiphertextRecord) and records[1].epoch_bits == 2


def test_a_cid_record_we_did_not_ask_for_stops_the_parse() -> None:
    writer, _ = _pair(AeadKind.AES_128_GCM)
    records, leftover = decode_datagram13(writer.seal(23, 0, b"x", b"\x09"), cid_length=0)
    assert records == [] and leftover > 0


@pytest.mark.parametrize(
    ("low", "bits", "expected", "full"),
    [
        (5, 8, 0, 5),
        (0xFF, 8, 0x100, 0xFF),
        (0x01, 8, 0x1FF, 0x201),
        (0xFFFF, 16, 0, 0xFFFF),  # nothing below zero: stays at the only candidate
        (0x0002, 16, 0x1FFFE, 0x20002),
        (0xFFFE, 16, 0x20001, 0x1FFFE),
    ],
)
def test_sequence_reconstruction(low: int, bits: int, expected: int, full: int) -> None:
    assert reconstruct_sequence_number(low, bits, expected) == full


def test_epoch_resolution_picks_the_newest_matching_epoch() -> None:
    assert resolve_epoch(2, [0, 2, 3]) == 2
    assert resolve_epoch(1, [0, 2, 3, 5]) == 5
    # No readable epoch has those bits: the next one that has them (a record before its keys).
    assert resolve_epoch(2, [0]) == 2
    assert resolve_epoch(0, [0, 2, 3]) == 4
    assert resolve_epoch(1, [0, 2, 3]) == 5


@settings(max_examples=300)
@given(st.binary(max_size=300), st.sampled_from([0, 1, 4, 8]))
def test_decode_never_raises(data: bytes, cid_length: int) -> None:
    records, leftover = decode_datagram13(data, cid_length)
    assert 0 <= leftover <= len(data)
    for record in records:
        if isinstance(record, CiphertextRecord):
            assert len(record.encrypted_record) >= 16
            assert len(record.connection_id) == (cid_length if record.header[0] & 0x10 else 0)
