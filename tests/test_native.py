"""Native protection: the handshake state machine behind the crypto seam."""

from __future__ import annotations

import pytest
from vectors import load

from qotp.envelope import MessageType, decode_envelope_header
from qotp.errors import DecodeError, DecryptError
from qotp.keys import KeyPair
from qotp.native import HANDSHAKE_MAX_SENDS, NativeCryptoLayer, NativeProtection, Role
from qotp.payload import Payload, PayloadKind, decode_payload, encode_payload

VECTORS = load()
KEYS = VECTORS["crypto"]["keys"]
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
    assert server.datagrams_to_send(0) == [] and not client.datagrams_pending

    responder = server.accept(init_snd, ADDRESS, 0)
    assert responder is not None and responder.role is Role.RESPONDER
    # The InitSnd reads as a PING on stream 0 at offset 0 (the reference's behaviour).
    first = responder.open(init_snd, 0)
    assert first is not None and decode_payload(first) == Payload(PayloadKind.PING, 0, 0)
    assert responder.peer_identity == client_identity.public_key

    reply = responder.seal(data(b"hi"), 0)
    assert message_type(reply) is MessageType.INIT_RCV
    payload = client.open(reply, 0)
    assert payload is not None and decode_payload(payload).data == b"hi"
    assert client.handshake_complete and client.can_carry_payload
    assert client.peer_identity == server.identity.public_key

    datagram = client.seal(data(b"hello"), 0)
    assert message_type(datagram) is MessageType.DATA
    assert not responder.handshake_complete
    payload = responder.open(datagram, 0)
    assert payload is not None and decode_payload(payload).data == b"hello"
    assert responder.handshake_complete
    assert message_type(responder.seal(ping(), 0)) is MessageType.DATA


def test_zero_rtt_handshake() -> None:
    server = NativeCryptoLayer(KeyPair.generate())
    client = NativeProtection.dial(
        KeyPair.generate(), peer_public_key=server.identity.public_key, now=0
    )
    assert client.can_carry_payload and not client.handshake_complete
    first = client.seal(data(b"early"), 0)
    assert message_type(first) is MessageType.INIT_CRYPTO_SND and len(first) == 1400
    assert client.datagrams_to_send(0) == []  # the transport's packet already is the hello

    responder = server.accept(first, ADDRESS, 0)
    assert responder is not None
    payload = responder.open(first, 0)
    assert payload is not None and decode_payload(payload).data == b"early"
    reply = responder.seal(data(b"late"), 0)
    assert message_type(reply) is MessageType.INIT_CRYPTO_RCV
    client.open(reply, 0)
    assert client.handshake_complete
    assert message_type(client.seal(ping(), 0)) is MessageType.DATA
    key_log = client.key_log_lines()
    assert [line.split()[0] for line in key_log] == ["QOTP_SHARED_SECRET_ID", "QOTP_SHARED_SECRET"]
    assert key_log[0].split()[1] == f"{client.connection_id:x}"


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


def test_repeated_init_snd_is_acknowledged_again() -> None:
    server = NativeCryptoLayer(KeyPair.generate())
    client = NativeProtection.dial(KeyPair.generate(), now=0)
    (init_snd,) = client.datagrams_to_send(0)
    responder = server.accept(init_snd, ADDRESS, 0)
    assert responder is not None
    assert responder.open(init_snd, 0) == responder.open(init_snd, 0)
    impostor = NativeProtection.dial(
        KeyPair.generate(), ephemeral=KeyPair.from_hex(KEYS["responder_ephemeral_private"]), now=0
    )
    (other,) = impostor.datagrams_to_send(0)
    with pytest.raises((DecodeError, DecryptError)):
        responder.open(other, 0)


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
    responder = server.accept(init_snd, ADDRESS, 0)
    assert responder is not None
    responder.open(init_snd, 0)
    reply = responder.seal(ping(), 0)
    stranger = NativeProtection.dial(KeyPair.generate(), now=0)
    with pytest.raises((DecodeError, DecryptError)):
        stranger.open(reply, 0)
