"""Rendezvous codec: round trips; arbitrary bytes raise only RendezvousDecodeError."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from qotp.envelope import MessageType
from qotp.rendezvous.messages import (
    MAGIC,
    ChallengeMessage,
    ConnectMessage,
    ErrorCode,
    ErrorMessage,
    IntroAckMessage,
    IntroduceMessage,
    PunchAckMessage,
    PunchMessage,
    RegisteredMessage,
    RegisterMessage,
    RelayBindMessage,
    RelayBoundMessage,
    RendezvousDecodeError,
    RendezvousMessage,
    check_name,
    decode_message,
    encode_message,
    is_rendezvous_datagram,
)

TOKEN = bytes(range(16))
EXAMPLES: list[RendezvousMessage] = [
    RegisterMessage(name="alice", public_key=b"k" * 32),
    RegisterMessage(name="bö b", public_key=b"k" * 32, cookie=b"c" * 16, proof=b"p" * 32),
    ChallengeMessage(server_key=b"s" * 32, cookie=b"c" * 16),
    RegisteredMessage(observed_address=("203.0.113.7", 40000), keepalive_s=15),
    RegisteredMessage(observed_address=("2001:db8::1", 1), keepalive_s=1),
    ConnectMessage(request=7, name="bob"),
    IntroduceMessage(
        token=TOKEN, dialer=True, public_key=b"k" * 32, address=("198.51.100.1", 9), name="b"
    ),
    IntroAckMessage(token=TOKEN),
    ErrorMessage(request=3, code=ErrorCode.UNKNOWN_PEER, text="no peer named x"),
    PunchMessage(token=TOKEN),
    PunchAckMessage(token=TOKEN),
    RelayBindMessage(token=TOKEN, connection_id=(1 << 64) - 1),
    RelayBoundMessage(token=TOKEN, connection_id=42),
]


@pytest.mark.parametrize("message", EXAMPLES, ids=lambda m: type(m).__name__)
def test_round_trip(message: RendezvousMessage) -> None:
    datagram = encode_message(message)
    assert is_rendezvous_datagram(datagram)
    assert decode_message(datagram) == message


def test_no_qotp_packet_looks_like_ours() -> None:
    for message_type in MessageType:
        first_byte = bytes([message_type << 5])  # version 0, the only one QOTP has
        assert not is_rendezvous_datagram(first_byte + MAGIC[1:] + bytes(40))
    assert MAGIC[0] & 0x1F != 0


@pytest.mark.parametrize("name", ["", " x", "x ", "a\nb", "x" * 65])
def test_bad_names_are_refused(name: str) -> None:
    with pytest.raises(ValueError):
        check_name(name)


def test_truncated_and_trailing_bytes_are_refused() -> None:
    datagram = encode_message(ConnectMessage(request=1, name="bob"))
    with pytest.raises(RendezvousDecodeError):
        decode_message(datagram[:-1])
    with pytest.raises(RendezvousDecodeError):
        decode_message(datagram + b"x")


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.integers(0, 15), st.binary(max_size=120))
def test_arbitrary_bodies_raise_only_decode_errors(kind: int, body: bytes) -> None:
    try:
        decode_message(MAGIC + bytes([kind]) + body)
    except RendezvousDecodeError:
        pass
