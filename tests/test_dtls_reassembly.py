"""Handshake reassembly: out of order, overlapping, duplicate, bounded."""

from __future__ import annotations

import random

import pytest

from dtls import handshake as hs
from dtls.errors import DecodeError
from dtls.reassembly import (
    MAX_BUFFERED_BYTES,
    MAX_HANDSHAKE_MESSAGE_BYTES,
    MAX_MESSAGES_AHEAD,
    MAX_VARIANTS_PER_MESSAGE,
    HandshakeReassembler,
)


def _fragments(seq: int, body: bytes, size: int) -> list[hs.HandshakeFragment]:
    message = hs.encode_handshake(hs.HandshakeType.certificate, seq, body)
    return [hs.decode_handshake_fragment(f)[0] for f in hs.fragment_handshake(message, size)]


def test_shuffled_duplicated_fragments_reassemble() -> None:
    body = bytes(random.Random(1).randrange(256) for _ in range(5000))
    fragments = _fragments(0, body, 333) * 2
    random.Random(2).shuffle(fragments)
    reassembler = HandshakeReassembler()
    ready = []
    for fragment in fragments:
        reassembler.add(fragment)
        ready += reassembler.pop_ready()
    assert len(ready) == 1
    assert ready[0].body == body
    assert reassembler.buffered_bytes() == 0


def test_overlapping_fragments() -> None:
    body = bytes(range(200))
    reassembler = HandshakeReassembler()
    for start, end in ((50, 120), (0, 60), (100, 200)):
        reassembler.add(
            hs.HandshakeFragment(
                msg_type=11, length=200, message_seq=0, fragment_offset=start, body=body[start:end]
            )
        )
    (message,) = reassembler.pop_ready()
    assert message.body == body


def test_messages_released_in_order() -> None:
    reassembler = HandshakeReassembler()
    for fragment in _fragments(1, b"second", 100):
        reassembler.add(fragment)
    assert reassembler.pop_ready() == []
    for fragment in _fragments(0, b"first", 100):
        reassembler.add(fragment)
    assert [m.body for m in reassembler.pop_ready()] == [b"first", b"second"]
    assert reassembler.next_seq == 2


def test_bounds() -> None:
    reassembler = HandshakeReassembler()
    too_far = _fragments(MAX_MESSAGES_AHEAD, b"x", 100)[0]
    assert not reassembler.add(too_far)
    huge = hs.HandshakeFragment(
        msg_type=11,
        length=MAX_HANDSHAKE_MESSAGE_BYTES + 1,
        message_seq=0,
        fragment_offset=0,
        body=b"x",
    )
    with pytest.raises(DecodeError):
        reassembler.add(huge)


def _fragment(
    seq: int, offset: int, body: bytes, length: int, msg_type: int = 11
) -> hs.HandshakeFragment:
    return hs.HandshakeFragment(
        msg_type=msg_type, length=length, message_seq=seq, fragment_offset=offset, body=body
    )


def test_a_first_fragment_does_not_pin_type_and_length() -> None:
    # Issue 9: a spoofed first fragment used to fix the message's type and length, so the
    # genuine fragments "contradicted" it and were dropped for good.
    body = bytes(range(256)) * 4
    reassembler = HandshakeReassembler()
    assert reassembler.add(_fragment(0, 0, b"spoof", 9999))
    assert reassembler.add(_fragment(0, 0, b"spoof", 1024, msg_type=12))
    for fragment in _fragments(0, body, 300):
        assert reassembler.add(fragment)
    assert reassembler.variant_count(0) == 3
    (message,) = reassembler.pop_ready()
    assert (message.msg_type, message.body) == (hs.HandshakeType.certificate, body)
    assert reassembler.buffered_bytes() == 0 and reassembler.variant_count(0) == 0


def test_variants_are_bounded_and_the_stalest_goes() -> None:
    reassembler = HandshakeReassembler()
    genuine = _fragments(0, b"g" * 500, 200)
    reassembler.add(genuine[0])
    for length in range(1000, 1000 + 3 * MAX_VARIANTS_PER_MESSAGE):
        reassembler.add(_fragment(0, 0, b"s", length))
        reassembler.add(genuine[1])  # the genuine message keeps growing, so it stays
    assert reassembler.variant_count(0) == MAX_VARIANTS_PER_MESSAGE
    reassembler.add(genuine[2])
    assert [m.body for m in reassembler.pop_ready()] == [b"g" * 500]


def test_memory_is_the_bytes_received_not_the_length_claimed() -> None:
    reassembler = HandshakeReassembler()
    for seq in range(MAX_MESSAGES_AHEAD):
        assert reassembler.add(_fragment(seq, 7, b"x", MAX_HANDSHAKE_MESSAGE_BYTES))
    assert reassembler.buffered_bytes() == MAX_MESSAGES_AHEAD
    # Overlapping data is stored once.
    assert not reassembler.add(_fragment(0, 7, b"x", MAX_HANDSHAKE_MESSAGE_BYTES))
    assert reassembler.add(_fragment(0, 0, b"y" * 20, MAX_HANDSHAKE_MESSAGE_BYTES))
    assert reassembler.buffered_bytes() == MAX_MESSAGES_AHEAD + 19


def test_partial_later_messages_cannot_use_up_the_buffer() -> None:
    # Issue 9: partial messages a few steps ahead could take the whole budget, and the
    # message the handshake waited for found no room.
    reassembler = HandshakeReassembler()
    chunk = b"z" * 16000
    for seq in range(1, MAX_MESSAGES_AHEAD):
        for offset in range(0, MAX_HANDSHAKE_MESSAGE_BYTES - len(chunk), len(chunk)):
            reassembler.add(_fragment(seq, offset, chunk, MAX_HANDSHAKE_MESSAGE_BYTES))
    assert reassembler.buffered_bytes() <= MAX_BUFFERED_BYTES
    assert reassembler.buffered_bytes() > MAX_BUFFERED_BYTES - len(chunk)
    body = bytes(range(256)) * 200
    for fragment in _fragments(0, body, 1000):
        assert reassembler.add(fragment)
    assert reassembler.buffered_bytes() <= MAX_BUFFERED_BYTES
    (message,) = reassembler.pop_ready()
    assert message.body == body


def test_empty_messages_and_empty_fragments() -> None:
    reassembler = HandshakeReassembler()
    assert reassembler.add(_fragment(0, 0, b"", 0, msg_type=14))
    assert not reassembler.add(_fragment(1, 5, b"", 10))
    assert reassembler.variant_count(1) == 0
    assert [(m.msg_type, m.body) for m in reassembler.pop_ready()] == [(14, b"")]


def test_total_buffered_bytes_bounded() -> None:
    reassembler = HandshakeReassembler()
    chunk = bytes(16000)
    for seq in range(MAX_MESSAGES_AHEAD):
        for offset in range(0, MAX_HANDSHAKE_MESSAGE_BYTES, len(chunk)):
            piece = chunk[: MAX_HANDSHAKE_MESSAGE_BYTES - offset]
            reassembler.add(_fragment(seq, offset, piece, MAX_HANDSHAKE_MESSAGE_BYTES + 0))
        assert reassembler.buffered_bytes() <= MAX_BUFFERED_BYTES
