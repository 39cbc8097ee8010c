"""Byte-exact vectors for the DTLS wire format (tests/vectors/dtls-records.json)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from dtls.connection import encode_hello_verify_datagram
from dtls.keyschedule import prf
from dtls.protection import RecordProtection
from dtls.records import DTLS_1_2, decode_datagram
from dtls.suites import AeadKind

VECTORS = json.loads(
    (Path(__file__).resolve().parent / "vectors" / "dtls-records.json").read_text()
)


def test_prf_vector() -> None:
    vector = VECTORS["prf_sha256"]
    output = prf(
        "sha256",
        bytes.fromhex(vector["secret"]),
        bytes.fromhex(vector["label"]),
        bytes.fromhex(vector["seed"]),
        len(vector["output"]) // 2,
    )
    assert output.hex() == vector["output"]


def test_hello_verify_request_vector() -> None:
    vector = VECTORS["hello_verify_request"]
    datagram = encode_hello_verify_datagram(
        bytes.fromhex(vector["cookie"]),
        message_seq=vector["message_seq"],
        record_sequence=vector["record_sequence"],
    )
    assert datagram.hex() == vector["datagram"]
    assert datagram[1:3] == b"\xfe\xff"  # record version DTLS 1.0, as RFC 6347 4.2.1 asks


@pytest.mark.parametrize("vector", VECTORS["records"], ids=lambda v: v["name"])
def test_record_vectors(vector: dict[str, object]) -> None:
    kind = AeadKind(vector["aead"])
    key = bytes.fromhex(str(vector["key"]))
    iv = bytes.fromhex(str(vector["fixed_iv"]))
    cid = bytes.fromhex(str(vector["connection_id"]))
    protection = RecordProtection(kind, key, iv, epoch=int(str(vector["epoch"])))
    plaintext = bytes.fromhex(str(vector["plaintext"]))
    record = protection.seal(
        int(str(vector["content_type"])),
        DTLS_1_2,
        int(str(vector["sequence_number"])),
        plaintext,
        cid,
    )
    assert record.hex() == vector["record"]
    (parsed,), junk = decode_datagram(record, len(cid))
    assert junk == 0
    assert protection.open(parsed) == (vector["content_type"], plaintext)
