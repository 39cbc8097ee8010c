"""Native protection: the handshake state machine behind the crypto seam."""

from __future__ import annotations

import pytest
from vectors import load

from qotp.envelope import MessageType, decode_envelope_header
from qotp.errors import DecodeError, DecryptError
from qotp.keys import KeyPair
from qotp.native import HANDSHAKE_MAX_SENDS, NativeCryptoLayer, NativeProtection, Role
from qotp.payload import Ack, Payload, PayloadKind, decode_payload, encode_payload
from qotp.protection import FirstPacket

VECTORS = load()
MS = 1_000_000
ADDRESS = ("192.0.2.1", 1111)


def ping(stream_id: int = 0) -> bytes:
    return encode_payload(Payload(PayloadKind.PING, stream_id, 0))


def data(text: bytes) -> bytes:
    return encode_payload(Payload(PayloadKind.DATA, 0, 0, text))


def message_type(datagram: bytes) -> MessageType:
    return decode_envelope_header(datagram, mtu=0).message_type


def test_in_band_handshake() -> None:
    server = NativeCryptoLayer(KeyPair.generate())
    client_identity = KeyPair.generate()
    client = NativeProtection.dial(client_identity, now=0)
    assert not client.can_carry_payload
    (init_snd,) = client.datagrams_to_send(0)
    assert message_type(init_snd) is MessageType.INIT_SND and len(init_snd) == 1400
    assert server.route(init_snd, ADDRESS) == client.connection_id
    assert server.route(init_snd, ("198.51.100.1", 7)) == client.connection_id  # no address part
    assert server.local_identity == server.identity.public_key
    assert server.classify(init_snd, client.connection_id, 0) is FirstPacket.NEW_HANDSHAKE
    assert server.datagrams_to_send(0) == [] and not client.datagrams_pending

    # The first packet is answered without a connection: InitRcv acknowledges it
    # (the reference reads InitSnd as a PING on stream 0 at offset 0) and carries a
    # PING, so that the initiator's next packet completes the handshake.
    assert server.accept(init_snd, ADDRESS, 0) is None
    assert server.classify(init_snd, client.connection_id, 0) is FirstPacket.CONTINUATION
    ((reply, destination),) = server.datagrams_to_send(0)
    assert destination == ADDRESS and message_type(reply) is MessageType.INIT_RCV
    payload = client.open(reply, 0)
    assert payload is not None
    assert decode_payload(payload) == Payload(
        PayloadKind.PING,
        0,
        0,
        b"",
        Ack(0, 0, 0, decode_payload(payload).ack.receive_window),  # type: ignore[union-attr]
    )
    assert client.handshake_complete and client.can_carry_payload
    assert client.peer_identity == server.identity.public_key

    datagram = client.seal(data(b"hello"), 0)
    assert message_type(datagram) is MessageType.DATA
    responder = server.accept(datagram, ADDRESS, 0)
    assert responder is not None and responder.role is Role.RESPONDER
    assert responder.peer_identity == client_identity.public_key
    assert responder.handshake_complete and responder.proven_address == ADDRESS
    payload = responder.open(datagram, 0)
    assert payload is not None and decode_payload(payload).data == b"hello"
    assert responder.take_early_payload() is None
    assert message_type(responder.seal(ping(), 0)) is MessageType.DATA
    assert server.classify(datagram, client.connection_id, 0) is FirstPacket.NONE  # completed


def test_zero_rtt_handshake() -> None:
    server = NativeCryptoLayer(KeyPair.generate())
    client = NativeProtection.dial(
        KeyPair.generate(), peer_public_key=server.identity.public_key, now=0
    )
    assert client.can_carry_payload and not client.handshake_complete
    first = client.seal(data(b"early"), 0)
    assert message_type(first) is MessageType.INIT_CRYPTO_SND and len(first) == 1400
    assert client.datagrams_to_send(0) == []  # the transport's packet already is the hello

    assert server.accept(first, ADDRESS, 0) is None  # held until the initiator answers
    ((reply, _),) = server.datagrams_to_send(0)
    assert message_type(reply) is MessageType.INIT_CRYPTO_RCV
    answer = client.open(reply, 0)
    assert answer is not None
    decoded = decode_payload(answer)
    assert decoded.kind is PayloadKind.PING and decoded.ack is not None
    assert decoded.ack[:3] == (0, 0, 5)  # the early data is acknowledged
    assert client.handshake_complete
    datagram = client.seal(ping(), 0)
    assert message_type(datagram) is MessageType.DATA
    responder = server.accept(datagram, ADDRESS, 0)
    assert responder is not None and responder.open(datagram, 0) is not None
    early = responder.take_early_payload()
    assert early is not None and not early.replayable
    assert decode_payload(early.payload).data == b"early"
    key_log = client.key_log_lines()
    assert [line.split()[0] for line in key_log] == ["QOTP_SHARED_SECRET_ID", "QOTP_SHARED_SECRET"]
    assert key_log[0].split()[1] == f"{client.connection_id:x}"
    assert sorted(line.split()[0] for line in responder.key_log_lines()) == sorted(
        line.split()[0] for line in key_log
    )


def test_zero_rtt_forged_first_packet_creates_nothing() -> None:
    server = NativeCryptoLayer(KeyPair.generate())
    other = KeyPair.generate()
    client = NativeProtection.dial(KeyPair.generate(), peer_public_key=other.public_key, now=0)
    with pytest.raises(DecryptError):
        server.accept(client.seal(data(b"x"), 0), ADDRESS, 0)


def test_data_of_unknown_connection_is_not_accepted() -> None:
    server = NativeCryptoLayer(KeyPair.generate())
    packet = bytes.fromhex(VECTORS["crypto"]["data"][0]["packet"])
    assert server.accept(packet, ADDRESS, 0) is None


def test_repeated_init_snd_is_answered_with_the_same_reply() -> None:
    server = NativeCryptoLayer(KeyPair.generate())
    client = NativeProtection.dial(KeyPair.generate(), now=0)
    (init_snd,) = client.datagrams_to_send(0)
    assert server.accept(init_snd, ADDRESS, 0) is None
    assert server.accept(init_snd, ("198.51.100.1", 7), 1) is None  # from elsewhere, too
    (first, _), (second, destination) = server.datagrams_to_send(1)
    assert first == second and destination == ("198.51.100.1", 7)
    assert len(server.handshakes) == 1
    # Another key under the same connection id (its first 8 bytes): refused.
    other = bytearray(init_snd)
    other[20] ^= 1
    assert server.route(bytes(other), ADDRESS) == client.connection_id
    with pytest.raises(DecryptError):
        server.accept(bytes(other), ADDRESS, 0)


def test_unanswered_init_snd_schedule_and_failure() -> None:
    client = NativeProtection.dial(KeyPair.generate(), now=0)
    sends = []
    now = 0
    while client.failure is None and now < 20_000 * MS:
        if client.datagrams_to_send(now):
            sends.append(now // MS)
        timer = client.get_timer()
        if timer is None:
            break
        now = max(now + MS, timer)
    assert sends == [0, 200, 600, 1400, 3000, 6200]
    assert len(sends) == HANDSHAKE_MAX_SENDS
    assert client.failure is not None


def test_reply_to_another_dial_is_rejected() -> None:
    server = NativeCryptoLayer(KeyPair.generate())
    client = NativeProtection.dial(KeyPair.generate(), now=0)
    (init_snd,) = client.datagrams_to_send(0)
    server.accept(init_snd, ADDRESS, 0)
    ((reply, _),) = server.datagrams_to_send(0)
    stranger = NativeProtection.dial(KeyPair.generate(), now=0)
    with pytest.raises((DecodeError, DecryptError)):
        stranger.open(reply, 0)
