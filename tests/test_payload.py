"""Payload codec against the reference vectors, plus properties."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from vectors import load, payload_from_decoded, payload_from_input

from qotp.errors import DecodeError, LocalProtocolError
from qotp.payload import (
    MAX_OFFSET_48,
    Ack,
    Payload,
    PayloadKind,
    decode_payload,
    decode_receive_window,
    encode_payload,
    encode_receive_window,
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
