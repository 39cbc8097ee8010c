"""Handshake reassembly: out of order, overlapping, duplicate, bounded."""

from __future__ import annotations

import random

import pytest

from dtls import handshake as hs
from dtls.errors import DecodeError
from dtls.reassembly import MAX_HANDSHAKE_MESSAGE_BYTES, MAX_MESSAGES_AHEAD, HandshakeReassembler


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


def test_contradicting_fragment_rejected() -> None:
    reassembler = HandshakeReassembler()
    reassembler.add(
        hs.HandshakeFragment(msg_type=11, length=10, message_seq=0, fragment_offset=0, body=b"ab")
    )
    with pytest.raises(DecodeError):
        reassembler.add(
            hs.HandshakeFragment(
                msg_type=12, length=10, message_seq=0, fragment_offset=2, body=b"c"
            )
        )


def test_total_buffered_bytes_bounded() -> None:
    from dtls.reassembly import MAX_BUFFERED_BYTES

    reassembler = HandshakeReassembler()
    accepted = 0
    for seq in range(MAX_MESSAGES_AHEAD):
        fragment = hs.HandshakeFragment(
            msg_type=11,
            length=MAX_HANDSHAKE_MESSAGE_BYTES,
            message_seq=seq,
            fragment_offset=0,
            body=b"x",
        )
        try:
            reassembler.add(fragment)
            accepted += 1
        except DecodeError:
            pass
    assert reassembler.buffered_bytes() <= MAX_BUFFERED_BYTES
    assert accepted == MAX_BUFFERED_BYTES // MAX_HANDSHAKE_MESSAGE_BYTES
