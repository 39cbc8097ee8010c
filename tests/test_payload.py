"""Payload codec against the reference vectors, plus properties."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from vectors import load, payload_from_decoded, payload_from_input

from qotp.errors import DecodeError, LocalProtocolError
from qotp.payload import (
    ACK_ONLY_SIZE_24,
    MAX_OFFSET_24,
    MAX_OFFSET_48,
    Ack,
    Payload,
    PayloadKind,
    decode_ack_repeat,
    decode_payload,
    decode_receive_window,
    encode_ack_repeat,
    encode_payload,
    encode_receive_window,
    needs_extended_offsets,
    payload_header_size,
)

VECTORS = load()


@pytest.mark.parametrize("case", VECTORS["rcv_window"]["decode"], ids=lambda c: str(c["encoded"]))
def test_receive_window_decode(case: dict[str, Any]) -> None:
    assert decode_receive_window(case["encoded"]) == case["bytes"]


@pytest.mark.parametrize("case", VECTORS["rcv_window"]["encode"], ids=lambda c: str(c["bytes"]))
def test_receive_window_encode(case: dict[str, Any]) -> None:
    assert encode_receive_window(case["bytes"]) == case["encoded"]
    assert decode_receive_window(case["encoded"]) == case["decoded_bytes"]


def test_receive_window_covers_all_256_codes() -> None:
    assert len(VECTORS["rcv_window"]["decode"]) == 256


@given(st.integers(min_value=0, max_value=2**64))
def test_receive_window_encode_is_floor(nbytes: int) -> None:
    code = encode_receive_window(nbytes)
    assert 0 <= code <= 255
    if nbytes >= 256:
        assert decode_receive_window(code) <= nbytes
        if code < 255:
            assert decode_receive_window(code + 1) > nbytes


@pytest.mark.parametrize("case", VECTORS["payload"], ids=lambda c: c["name"])
def test_payload_vector_encode(case: dict[str, Any]) -> None:
    encoded = encode_payload(payload_from_input(case["input"]))
    assert encoded.hex() == case["encoded"]
    assert len(encoded) == case["encoded_len"]


@pytest.mark.parametrize("case", VECTORS["payload"], ids=lambda c: c["name"])
def test_payload_vector_decode(case: dict[str, Any]) -> None:
    decoded = decode_payload(bytes.fromhex(case["encoded"]))
    assert decoded == payload_from_decoded(case["decoded"])


@pytest.mark.parametrize("case", VECTORS["payload_decode_edges"], ids=lambda c: c["name"])
def test_payload_decode_edges(case: dict[str, Any]) -> None:
    raw = bytes.fromhex(case["input"])
    if case["outcome"] == "error":
        with pytest.raises(DecodeError):
            decode_payload(raw)
    else:
        assert decode_payload(raw) == payload_from_decoded(case["decoded"])


def test_ack_only_and_ping_are_distinct_kinds() -> None:
    ack = Ack(1, 10, 5, 16384)
    ack_only = encode_payload(Payload(PayloadKind.ACK_ONLY, ack=ack))
    ping = encode_payload(Payload(PayloadKind.PING, 2, 3, ack=ack))
    assert decode_payload(ack_only).kind is PayloadKind.ACK_ONLY
    assert decode_payload(ping).kind is PayloadKind.PING
    assert len(ack_only) == 11 and len(ping) == 18


@pytest.mark.parametrize(
    "payload",
    [
        Payload(PayloadKind.ACK_ONLY),
        Payload(PayloadKind.ACK_ONLY, ack=Ack(0, 0, 0, 0), is_close=True),
        Payload(PayloadKind.ACK_ONLY, data=b"x", ack=Ack(0, 0, 0, 0)),
        Payload(PayloadKind.PING, data=b"x"),
        Payload(PayloadKind.PING, is_close=True),
        Payload(PayloadKind.DATA),
        Payload(PayloadKind.DATA, stream_id=2**32, data=b"x"),
        Payload(PayloadKind.DATA, stream_offset=2**48, data=b"x"),
        Payload(PayloadKind.DATA, data=b"x", ack=Ack(0, 2**48, 0, 0)),
        Payload(PayloadKind.DATA, data=b"x", ack=Ack(0, 0, 2**16, 0)),
    ],
)
def test_encode_rejects_what_the_wire_cannot_say(payload: Payload) -> None:
    with pytest.raises(LocalProtocolError):
        encode_payload(payload)


acks = st.none() | st.builds(
    Ack,
    st.integers(0, 2**32 - 1),
    st.integers(0, MAX_OFFSET_48),
    st.integers(0, 2**16 - 1),
    st.sampled_from([decode_receive_window(code) for code in range(256)]),
)


@st.composite
def payloads(draw: st.DrawFn) -> Payload:
    ack = draw(acks)
    kinds = [PayloadKind.DATA, PayloadKind.PING] + ([PayloadKind.ACK_ONLY] if ack else [])
    kind = draw(st.sampled_from(kinds))
    if kind is PayloadKind.ACK_ONLY:
        return Payload(kind, ack=ack)
    is_close = draw(st.booleans()) if kind is PayloadKind.DATA else False
    data = draw(st.binary(min_size=0 if is_close or kind is PayloadKind.PING else 1, max_size=64))
    if kind is PayloadKind.PING:
        data = b""
    offset = draw(st.integers(0, 0xFFFFFF) | st.integers(0, MAX_OFFSET_48))
    return Payload(kind, draw(st.integers(0, 2**32 - 1)), offset, data, ack, is_close)


@given(payloads())
def test_payload_round_trip(payload: Payload) -> None:
    encoded = encode_payload(payload)
    assert decode_payload(encoded) == payload
    extended = bool(encoded[0] & 0x80)
    size = payload_header_size(
        has_ack=payload.ack is not None, kind=payload.kind, extended=extended
    )
    assert len(encoded) == size + len(payload.data)


@given(st.binary(max_size=80))
def test_decode_arbitrary_bytes_raises_only_decode_error(raw: bytes) -> None:
    try:
        decode_payload(raw)
    except DecodeError:
        pass


@given(payloads(), st.data())
def test_decode_mutated_payload_raises_only_decode_error(
    payload: Payload, data: st.DataObject
) -> None:
    encoded = bytearray(encode_payload(payload))
    position = data.draw(st.integers(0, len(encoded) - 1))
    encoded[position] ^= data.draw(st.integers(1, 255))
    cut = data.draw(st.integers(0, len(encoded)))
    try:
        decode_payload(bytes(encoded[:cut]))
    except DecodeError:
        pass


# --------------------------------------------------------------------------
# The fast paths against a plain reference codec
# --------------------------------------------------------------------------
#
# qotp.payload takes straight-line paths for the common shapes and builds the
# decoded objects without their __init__.  The functions below are the layout
# written out field by field, with the ordinary constructors; the hot code must
# agree with them on every input, errors included.


def reference_encode(payload: Payload) -> bytes:
    """The wire layout, one field at a time (module docstring of qotp.payload)."""
    kind, ack, data, is_close = payload.kind, payload.ack, payload.data, payload.is_close
    if kind is PayloadKind.ACK_ONLY and (ack is None or is_close or data):
        raise LocalProtocolError("not an expressible ACK-only payload")
    if kind is PayloadKind.PING and (data or is_close):
        raise LocalProtocolError("not an expressible PING")
    if kind is PayloadKind.DATA and not (data or is_close):
        raise LocalProtocolError("not an expressible DATA")
    has_stream = kind is not PayloadKind.ACK_ONLY
    fields_to_check = []
    if has_stream:
        fields_to_check += [(payload.stream_id, 2**32), (payload.stream_offset, 2**48)]
    if ack is not None:
        fields_to_check += [(ack.stream_id, 2**32), (ack.offset, 2**48), (ack.length, 2**16)]
    if any(not 0 <= value < limit for value, limit in fields_to_check):
        raise LocalProtocolError("field out of range")
    extended = (has_stream and payload.stream_offset >= 2**24) or (
        ack is not None and ack.offset >= 2**24
    )
    offset_size = 6 if extended else 3
    type_bits = (0 if ack is not None else 1) + (2 if is_close else 0)
    out = bytearray([type_bits << 5 | (0x80 if extended else 0)])
    if ack is not None:
        out += ack.stream_id.to_bytes(4, "little")
        out += ack.offset.to_bytes(offset_size, "little")
        out += ack.length.to_bytes(2, "little")
        out.append(encode_receive_window(ack.receive_window))
    if has_stream:
        out += payload.stream_id.to_bytes(4, "little")
        out += payload.stream_offset.to_bytes(offset_size, "little")
        out += data
    return bytes(out)


def reference_decode(raw: bytes) -> Payload:
    """The reference decoder's length rules, one field at a time."""
    if len(raw) < 8:
        raise DecodeError("too short")
    header = raw[0]
    if header & 0x1F:
        raise DecodeError("bad version")
    type_bits = header >> 5 & 3
    offset_size = 6 if header & 0x80 else 3
    is_close = type_bits >= 2
    position = 1
    ack = None
    if type_bits in (0, 2):
        if len(raw) < 1 + 4 + offset_size + 2 + 1:
            raise DecodeError("too short for the ACK")
        ack = Ack(
            int.from_bytes(raw[1:5], "little"),
            int.from_bytes(raw[5 : 5 + offset_size], "little"),
            int.from_bytes(raw[5 + offset_size : 7 + offset_size], "little"),
            decode_receive_window(raw[7 + offset_size]),
        )
        position = 8 + offset_size
        if len(raw) < 18:
            return Payload(PayloadKind.ACK_ONLY, 0, 0, b"", ack, is_close)
    if len(raw) < position + 4 + offset_size:
        raise DecodeError("too short for the stream header")
    stream_id = int.from_bytes(raw[position : position + 4], "little")
    offset = int.from_bytes(raw[position + 4 : position + 4 + offset_size], "little")
    data = raw[position + 4 + offset_size :]
    kind = PayloadKind.DATA if data or is_close else PayloadKind.PING
    return Payload(kind, stream_id, offset, data, ack, is_close)


def edges(*values: int) -> st.SearchStrategy[int]:
    return st.sampled_from(values)


any_stream_ids = edges(-1, 0, 1, 2**32 - 1, 2**32) | st.integers(0, 2**32 - 1)
any_offsets = edges(-1, 0, 0xFFFFFF, 0x1000000, MAX_OFFSET_48, MAX_OFFSET_48 + 1) | st.integers(
    0, MAX_OFFSET_48
)
any_lengths = edges(-1, 0, 1350, 0xFFFF, 0x10000) | st.integers(0, 0xFFFF)
any_windows = edges(-1, 0, 1, 255, 256, 257, 2**20, 2**40) | st.integers(0, 2**64)
any_acks = st.none() | st.builds(Ack, any_stream_ids, any_offsets, any_lengths, any_windows)
any_payloads = st.builds(
    Payload,
    st.sampled_from(PayloadKind),
    any_stream_ids,
    any_offsets,
    st.binary(max_size=40),
    any_acks,
    st.booleans(),
)


@given(any_payloads)
def test_encode_matches_reference(payload: Payload) -> None:
    try:
        expected = reference_encode(payload)
    except LocalProtocolError:
        with pytest.raises(LocalProtocolError):
            encode_payload(payload)
        return
    assert encode_payload(payload) == expected


def assert_decodes_like_reference(raw: bytes) -> None:
    try:
        expected = reference_decode(raw)
    except DecodeError:
        for buffer in (raw, bytearray(raw), memoryview(raw)):
            with pytest.raises(DecodeError):
                decode_payload(buffer)
        return
    for buffer in (raw, bytearray(raw), memoryview(raw)):
        decoded = decode_payload(buffer)
        assert decoded == expected
        assert type(decoded.data) is bytes


# Every type with both offset widths; the fast paths key on these headers.
VERSION_0_HEADERS = [type_bits << 5 | extended for type_bits in range(4) for extended in (0, 0x80)]


def test_decode_length_rules_match_reference_for_every_size() -> None:
    """Each version-0 header at every length around the thresholds (8, 11, 14, 18, 24)."""
    for header in VERSION_0_HEADERS:
        for size in range(0, 32):
            assert_decodes_like_reference(bytes([header]) + bytes(range(251, 251 - size, -1)))


@settings(max_examples=300)
@given(
    st.sampled_from(VERSION_0_HEADERS) | st.integers(0, 255),
    st.integers(0, 40).flatmap(lambda size: st.binary(min_size=size, max_size=size)),
)
def test_decode_matches_reference(header: int, tail: bytes) -> None:
    assert_decodes_like_reference(bytes([header]) + tail)


def test_decoded_objects_are_ordinary_frozen_dataclasses() -> None:
    ack = Ack(7, 0x123456, 1350, 16384)
    original = Payload(PayloadKind.DATA, 3, 0x654321, b"abc", ack)
    decoded = decode_payload(encode_payload(original))
    assert type(decoded) is Payload and type(decoded.ack) is Ack
    assert decoded == original and hash(decoded) == hash(original)
    assert repr(decoded) == repr(original)
    with pytest.raises(AttributeError):
        decoded.stream_id = 4  # type: ignore[misc]
    with pytest.raises(AttributeError):
        decoded.ack.offset = 4  # type: ignore[misc, union-attr]


def test_stream_header_sizes_match_the_reference() -> None:
    assert payload_header_size(has_ack=False, kind=PayloadKind.DATA, extended=False) == 8
    assert payload_header_size(has_ack=False, kind=PayloadKind.DATA, extended=True) == 11
    assert payload_header_size(has_ack=True, kind=PayloadKind.DATA, extended=False) == 18
    assert payload_header_size(has_ack=True, kind=PayloadKind.DATA, extended=True) == 24
    assert not needs_extended_offsets(0xFFFFFF, 0xFFFFFF)
    assert needs_extended_offsets(0x1000000, None)
    assert needs_extended_offsets(0, 0x1000000)
    assert not needs_extended_offsets(0, None)


# -- ACK repeats (our extension in the bytes the reference ignores) ---------------------

REFERENCE_IGNORES_SIX_TRAILING_BYTES = next(
    case
    for case in VECTORS["payload_decode_edges"]
    if case["name"] == "ackonly_with_6_trailing_bytes_17_total_trailing_ignored"
)


@pytest.mark.parametrize(
    ("ack_offset", "offset", "length", "size"),
    [
        (2722, 1361, 1361, 3),  # the packet just before: 3 bytes
        (2722, 0, 1361, 6),  # any packet below 16 MiB: 6 bytes
        (MAX_OFFSET_24 + 10, MAX_OFFSET_24 + 10 - 1361, 1361, 3),  # 48-bit: adjacent only
        (MAX_OFFSET_24 + 10, 0, 1361, 0),
        (50, 50, 0, 3),  # a bare CLOSE or PING at the same offset
    ],
)
def test_ack_repeat_round_trip(ack_offset: int, offset: int, length: int, size: int) -> None:
    ack = Ack(7, ack_offset, 1361, 1 << 24)
    ack_only = encode_payload(Payload(PayloadKind.ACK_ONLY, ack=ack))
    trailer = encode_ack_repeat(ack_offset, offset, length)
    assert len(trailer) == size
    raw = ack_only + trailer
    # What the reference (and our decoder) reads: the same ACK-only payload.
    assert len(raw) < 18
    assert decode_payload(raw) == decode_payload(ack_only)
    assert decode_ack_repeat(raw, ack_offset) == ((offset, length) if size else None)
    assert decode_ack_repeat(ack_only, ack_offset) is None


def test_the_reference_ignores_what_an_ack_repeat_adds() -> None:
    """The reference's own decoder (its vector) drops six trailing bytes of an ACK-only
    payload: the most an ACK repeat adds."""
    raw = bytes.fromhex(REFERENCE_IGNORES_SIX_TRAILING_BYTES["input"])
    assert len(raw) == ACK_ONLY_SIZE_24 + 6
    expected = payload_from_decoded(REFERENCE_IGNORES_SIX_TRAILING_BYTES["decoded"])
    assert expected.kind is PayloadKind.ACK_ONLY
    assert decode_payload(raw[:ACK_ONLY_SIZE_24] + encode_ack_repeat(4000, 0, 1361)) == (
        decode_payload(raw)
    )


def test_ack_repeat_tags_and_lengths_must_match() -> None:
    ack_only = encode_payload(Payload(PayloadKind.ACK_ONLY, ack=Ack(1, 3000, 100, 0)))
    adjacent = encode_ack_repeat(3000, 2900, 100)
    assert decode_ack_repeat(ack_only + bytes([adjacent[0] ^ 1]) + adjacent[1:], 3000) is None
    assert decode_ack_repeat(ack_only + adjacent[:2], 3000) is None
    # A repeat naming more bytes than lie before the ACK names nothing.
    assert decode_ack_repeat(ack_only + encode_ack_repeat(3000, 2900, 100), 50) is None
    with pytest.raises(LocalProtocolError):
        encode_ack_repeat(3000, 0, 1 << 16)


@given(st.binary(min_size=1, max_size=40), st.integers(0, MAX_OFFSET_48))
def test_decode_ack_repeat_never_raises(raw: bytes, ack_offset: int) -> None:
    result = decode_ack_repeat(raw, ack_offset)
    assert result is None or (result[0] >= 0 and 0 <= result[1] < 1 << 16)
