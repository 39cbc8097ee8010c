"""File-transfer messages: round trips, and hostile bytes become TransferProtocolError only."""

from __future__ import annotations

import json

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from qotp.transfer.messages import (
    MAX_FRAME_BYTES,
    Data,
    End,
    FileHeader,
    Hello,
    Message,
    Offer,
    Proof,
    Refuse,
    Result,
    TransferProtocolError,
    Welcome,
    decode_message,
    encode_message,
    frame_length,
)

EXAMPLES: list[Message] = [
    Hello(nonce=bytes(range(16)), files=3, total_bytes=12345),
    Welcome(nonce=bytes(16), proof=bytes(range(32))),
    Refuse(reason="not allowed"),
    Proof(proof=bytes(32)),
    FileHeader(path="a/b c/ü.txt", size=10, mtime_ns=1_700_000_000_000_000_000, executable=True),
    FileHeader(path="x", size=0),
    Offer(have=0, chunk_bytes=1 << 20, digests=()),
    Offer(have=(1 << 20) + 5, chunk_bytes=1 << 20, digests=(bytes(32), b"\x01" * 32)),
    Data(offset=7),
    End(sha256=b"\xaa" * 32),
    Result(ok=True, sha256=b"\x01" * 32),
    Result(ok=False, error="SHA-256 mismatch"),
]


@pytest.mark.parametrize("message", EXAMPLES, ids=lambda m: type(m).__name__)
def test_round_trip(message: Message) -> None:
    frame = encode_message(message)
    assert frame_length(frame[:4]) == len(frame) - 4
    assert decode_message(frame[4:]) == message


def test_offer_ranges_cover_what_is_held() -> None:
    offer = Offer(have=(2 << 20) + 1, chunk_bytes=1 << 20, digests=(bytes(32),) * 3)
    assert offer.ranges() == [(0, 1 << 20), (1 << 20, 2 << 20), (2 << 20, (2 << 20) + 1)]


@pytest.mark.parametrize(
    "fields",
    [
        {"type": "file", "path": "a", "size": -1},
        {"type": "file", "path": "a", "size": True},
        {"type": "file", "path": 5, "size": 1},
        {"type": "file", "path": "a", "size": 1, "executable": "yes"},
        {"type": "offer", "have": 10, "chunk_bytes": 1 << 20, "digests": ""},
        {"type": "offer", "have": 0, "chunk_bytes": 1, "digests": ""},
        {"type": "offer", "have": 0, "chunk_bytes": 1 << 20, "digests": "zz"},
        {"type": "hello", "version": 1, "nonce": "00", "files": 1, "total_bytes": 1},
        {"type": "end", "sha256": "00" * 31},
        {"type": "data"},
        {"type": "nope"},
        [1, 2],
        "text",
    ],
)
def test_malformed_fields_are_refused(fields: object) -> None:
    with pytest.raises(TransferProtocolError):
        decode_message(json.dumps(fields).encode())


def test_oversized_frames_are_refused_before_reading_them() -> None:
    with pytest.raises(TransferProtocolError):
        frame_length((MAX_FRAME_BYTES + 1).to_bytes(4, "little"))


FUZZ = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@FUZZ
@given(st.binary(max_size=300))
def test_arbitrary_bytes_only_raise_protocol_errors(body: bytes) -> None:
    try:
        decode_message(body)
    except TransferProtocolError:
        pass


@FUZZ
@given(
    st.dictionaries(
        st.sampled_from(["type", "path", "size", "have", "chunk_bytes", "digests", "ok", "nonce"]),
        st.one_of(st.integers(), st.text(max_size=20), st.booleans(), st.none()),
    )
)
def test_arbitrary_objects_only_raise_protocol_errors(fields: dict[str, object]) -> None:
    try:
        decode_message(json.dumps(fields).encode())
    except TransferProtocolError:
        pass
