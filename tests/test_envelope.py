"""Envelope (double encryption, five message types) against the reference vectors."""

from __future__ import annotations

from typing import Any

import pytest
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305
from hypothesis import given, settings
from hypothesis import strategies as st
from vectors import load, payload_from_decoded

from qotp.envelope import (
    DEFAULT_MTU,
    MAX_EPOCH,
    MAX_SEQUENCE_NUMBER,
    MIN_PACKET_SIZE,
    SMALL_PAYLOAD_BYTES,
    EnvelopeHeader,
    MessageType,
    PacketCipher,
    SequenceCounter,
    connection_id_from_public_key,
    decode_envelope_header,
    encode_init_snd,
    open_packet,
    seal_data,
    seal_init_crypto_rcv,
    seal_init_crypto_snd,
    seal_init_rcv,
)
from qotp.errors import DecodeError, DecryptError, LocalProtocolError, SequenceSpaceExhausted
from qotp.keys import KeyPair
from qotp.payload import decode_payload

VECTORS = load()
CRYPTO = VECTORS["crypto"]
KEYS = CRYPTO["keys"]
SECRETS = CRYPTO["shared_secrets"]

INITIATOR_EPHEMERAL = KeyPair.from_hex(KEYS["initiator_ephemeral_private"])
INITIATOR_IDENTITY = KeyPair.from_hex(KEYS["initiator_identity_private"])
RESPONDER_EPHEMERAL = KeyPair.from_hex(KEYS["responder_ephemeral_private"])
RESPONDER_IDENTITY = KeyPair.from_hex(KEYS["responder_identity_private"])
EPHEMERAL_SECRET = bytes.fromhex(SECRETS["ephemeral_ephemeral"]["value"])
IDENTITY_SECRET = bytes.fromhex(SECRETS["initiator_ephemeral_responder_identity"]["value"])
CONNECTION_ID = connection_id_from_public_key(INITIATOR_EPHEMERAL.public_key)


def by_name(section: list[dict[str, Any]], name: str) -> dict[str, Any]:
    return next(case for case in section if case["name"] == name)


def test_key_vectors() -> None:
    assert INITIATOR_EPHEMERAL.public_hex == KEYS["initiator_ephemeral_public"]
    assert INITIATOR_IDENTITY.public_hex == KEYS["initiator_identity_public"]
    assert RESPONDER_EPHEMERAL.public_hex == KEYS["responder_ephemeral_public"]
    assert RESPONDER_IDENTITY.public_hex == KEYS["responder_identity_public"]


def test_shared_secrets_are_raw_x25519() -> None:
    assert INITIATOR_EPHEMERAL.exchange(RESPONDER_EPHEMERAL.public_key) == EPHEMERAL_SECRET
    assert RESPONDER_EPHEMERAL.exchange(INITIATOR_EPHEMERAL.public_key) == EPHEMERAL_SECRET
    assert INITIATOR_EPHEMERAL.exchange(RESPONDER_IDENTITY.public_key) == IDENTITY_SECRET
    assert RESPONDER_IDENTITY.exchange(INITIATOR_EPHEMERAL.public_key) == IDENTITY_SECRET


def test_connection_id_is_initiator_ephemeral_prefix() -> None:
    assert CONNECTION_ID == by_name(CRYPTO["handshake"], "InitSnd")["connId"]


# -- handshake messages -----------------------------------------------------


def test_init_snd_vector() -> None:
    case = by_name(CRYPTO["handshake"], "InitSnd")
    packet = encode_init_snd(
        INITIATOR_EPHEMERAL.public_key, INITIATOR_IDENTITY.public_key, mtu=case["mtu"]
    )
    assert packet.hex() == case["packet"]
    header = decode_envelope_header(packet)
    assert header.message_type is MessageType.INIT_SND
    assert header.connection_id == case["connId"]
    assert header.ephemeral_public_key == bytes.fromhex(
        case["decrypt"]["result_initiator_ephemeral_public"]
    )
    assert header.identity_public_key == bytes.fromhex(
        case["decrypt"]["result_initiator_identity_public"]
    )
    with pytest.raises(DecodeError):
        decode_envelope_header(packet[:-1])


@pytest.mark.parametrize("name", ["InitRcv_ackonly", "InitRcv_ack_and_data"])
def test_init_rcv_vector(name: str) -> None:
    case = by_name(CRYPTO["handshake"], name)
    payload = bytes.fromhex(case["payload"])
    packet = seal_init_rcv(
        PacketCipher(RESPONDER_EPHEMERAL.exchange(INITIATOR_EPHEMERAL.public_key)),
        connection_id=case["connId"],
        ephemeral_public_key=RESPONDER_EPHEMERAL.public_key,
        identity_public_key=RESPONDER_IDENTITY.public_key,
        sequence_number=case["snCrypto"],
        epoch=case["epoch"],
        payload=payload,
    )
    assert packet.hex() == case["packet"]
    # The initiator opens it with its ephemeral key and the key found in the packet.
    header = decode_envelope_header(packet)
    assert header.message_type is MessageType.INIT_RCV
    assert header.identity_public_key == RESPONDER_IDENTITY.public_key
    assert header.ephemeral_public_key is not None
    cipher = PacketCipher(INITIATOR_EPHEMERAL.exchange(header.ephemeral_public_key))
    opened = open_packet(packet, header, cipher)
    assert (opened.sequence_number, opened.epoch) == (
        case["decrypt"]["sn"],
        case["decrypt"]["epoch"],
    )
    assert opened.payload == payload


@pytest.mark.parametrize("name", ["InitCryptoSnd_data", "InitCryptoSnd_stream5_no_user_data"])
def test_init_crypto_snd_vector(name: str) -> None:
    case = by_name(CRYPTO["handshake"], name)
    payload = bytes.fromhex(case["payload"])
    packet = seal_init_crypto_snd(
        PacketCipher(INITIATOR_EPHEMERAL.exchange(RESPONDER_IDENTITY.public_key)),
        ephemeral_public_key=INITIATOR_EPHEMERAL.public_key,
        identity_public_key=INITIATOR_IDENTITY.public_key,
        sequence_number=case["snCrypto"],
        epoch=case["epoch"],
        payload=payload,
        mtu=case["mtu"],
    )
    assert packet.hex() == case["packet"]
    assert (
        int.from_bytes(bytes.fromhex(case["plaintext_encrypted_part"][:4]), "little")
        == case["fill_len"]
    )
    header = decode_envelope_header(packet, mtu=case["mtu"])
    assert header.message_type is MessageType.INIT_CRYPTO_SND
    assert header.ephemeral_public_key is not None
    cipher = PacketCipher(RESPONDER_IDENTITY.exchange(header.ephemeral_public_key))
    opened = open_packet(packet, header, cipher)
    assert opened.payload == payload
    assert (opened.sequence_number, opened.epoch) == (
        case["decrypt"]["sn"],
        case["decrypt"]["epoch"],
    )


def test_init_crypto_rcv_vector() -> None:
    case = by_name(CRYPTO["handshake"], "InitCryptoRcv")
    payload = bytes.fromhex(case["payload"])
    packet = seal_init_crypto_rcv(
        PacketCipher(EPHEMERAL_SECRET),
        connection_id=case["connId"],
        ephemeral_public_key=RESPONDER_EPHEMERAL.public_key,
        sequence_number=case["snCrypto"],
        epoch=case["epoch"],
        payload=payload,
    )
    assert packet.hex() == case["packet"]
    header = decode_envelope_header(packet)
    assert header.message_type is MessageType.INIT_CRYPTO_RCV
    assert header.ephemeral_public_key is not None
    opened = open_packet(
        packet, header, PacketCipher(INITIATOR_EPHEMERAL.exchange(header.ephemeral_public_key))
    )
    assert opened.payload == payload


@pytest.mark.parametrize("case", CRYPTO["handshake"], ids=lambda c: c["name"])
def test_handshake_vector_parts(case: dict[str, Any]) -> None:
    packet = bytes.fromhex(case["packet"])
    parts = case["parts"]
    aad = bytes.fromhex(parts["cleartext_header_aad"])
    assert packet.startswith(aad)
    assert decode_envelope_header(packet).header_size == len(aad)
    if parts["encrypted_sn"] is not None:
        assert packet[len(aad) : len(aad) + 6].hex() == parts["encrypted_sn"]
        assert packet[len(aad) + 6 :].hex() == parts["sealed_payload_with_mac"]


# -- Data -------------------------------------------------------------------


@pytest.mark.parametrize("case", CRYPTO["data"], ids=lambda c: c["name"])
def test_data_vector(case: dict[str, Any]) -> None:
    cipher = PacketCipher(bytes.fromhex(case["shared_secret"]))
    payload = bytes.fromhex(case["payload"])
    packet = seal_data(
        cipher,
        connection_id=case["connId"],
        sequence_number=case["snCrypto"],
        epoch=case["epoch"],
        sent_by_initiator=case["isSender"],
        payload=payload,
    )
    assert packet.hex() == case["packet"]
    header = decode_envelope_header(packet)
    assert header == EnvelopeHeader(MessageType.DATA, case["connId"], 9)
    decrypt = case["decrypt"]
    opened = open_packet(
        packet,
        header,
        cipher,
        epoch=decrypt["receiver_epoch"],
        sent_by_initiator=not decrypt["receiver_isSender"],
    )
    assert opened.payload == payload
    assert (opened.sequence_number, opened.epoch) == (decrypt["result_sn"], decrypt["result_epoch"])
    assert decode_payload(opened.payload) == payload_from_decoded(
        {**case["payload_fields"], "userDataIsNil": False}
    )


def test_epoch_128_aliases_epoch_0() -> None:
    """The direction flag overwrites epoch bit 7, so epochs 0 and 128 collide (SPEC.md)."""
    epoch_0 = by_name(CRYPTO["data"], "Data_isSender_true_sn_1_epoch_0")
    epoch_128 = by_name(CRYPTO["data"], "Data_isSender_true_sn_1_epoch_128")
    assert epoch_0["packet"] == epoch_128["packet"]


@pytest.mark.parametrize("case", CRYPTO["epoch_window"], ids=lambda c: c["name"])
def test_epoch_window(case: dict[str, Any]) -> None:
    packet = bytes.fromhex(case["packet"])
    header = decode_envelope_header(packet)
    cipher = PacketCipher(EPHEMERAL_SECRET)
    if case["expected"] == "reject":
        with pytest.raises(DecryptError):
            open_packet(
                packet, header, cipher, epoch=case["receiver_epoch"], sent_by_initiator=True
            )
        return
    opened = open_packet(
        packet, header, cipher, epoch=case["receiver_epoch"], sent_by_initiator=True
    )
    assert opened.epoch == case["result_epoch"]
    assert opened.sequence_number == case["snCrypto"]
    # The receiver keeps the larger of its epoch and the packet's.
    assert max(case["receiver_epoch"], opened.epoch) == case["receiver_epoch_after"]


# -- negative cases ---------------------------------------------------------


def _open_as_receiver(case: dict[str, Any]) -> None:
    packet = bytes.fromhex(case["packet"])
    receiver = case["receiver"]
    header = decode_envelope_header(packet, mtu=receiver.get("mtu", DEFAULT_MTU))
    if header.message_type is MessageType.INIT_SND:
        return
    if header.message_type is MessageType.DATA:
        if header.connection_id != receiver["connId"]:
            raise DecodeError("unknown connection")  # what the endpoint does: drop
        cipher = PacketCipher(EPHEMERAL_SECRET)
        open_packet(
            packet,
            header,
            cipher,
            epoch=receiver["epoch"],
            sent_by_initiator=not receiver["isSender"],
        )
        return
    assert header.ephemeral_public_key is not None
    if header.message_type is MessageType.INIT_CRYPTO_SND:
        secret = RESPONDER_IDENTITY.exchange(header.ephemeral_public_key)
    else:
        secret = INITIATOR_EPHEMERAL.exchange(header.ephemeral_public_key)
    open_packet(packet, header, PacketCipher(secret))


@pytest.mark.parametrize("case", CRYPTO["negative"], ids=lambda c: c["name"])
def test_negative_vectors_rejected_with_our_errors(case: dict[str, Any]) -> None:
    assert case["expected"] == "reject"
    with pytest.raises((DecodeError, DecryptError)):
        _open_as_receiver(case)


def test_fill_length_past_the_end_is_a_decode_error() -> None:
    case = by_name(CRYPTO["negative"], "initcryptosnd_authentic_but_fill_len_0xffff_out_of_range")
    with pytest.raises(DecodeError, match="fill length"):
        _open_as_receiver(case)


# -- flows ------------------------------------------------------------------


@pytest.mark.parametrize("flow", ["in_band", "zero_rtt"])
def test_flow_packets_open_to_their_payloads(flow: str) -> None:
    """Every packet of the reference's recorded conversations opens with our code."""
    for packet_case in VECTORS["flows"][flow]["packets"]:
        packet = bytes.fromhex(packet_case["packet"])
        header = decode_envelope_header(packet)
        assert header.connection_id == VECTORS["flows"][flow]["connId"]
        if header.message_type is MessageType.INIT_SND:
            assert packet_case["payload"] is None
            continue
        if header.message_type is MessageType.INIT_CRYPTO_SND:
            cipher = PacketCipher(IDENTITY_SECRET)
        else:
            cipher = PacketCipher(EPHEMERAL_SECRET)
        opened = open_packet(
            packet, header, cipher, sent_by_initiator=packet_case["from"] == "initiator"
        )
        assert opened.sequence_number == packet_case["snCrypto"]
        assert opened.payload.hex() == packet_case["payload"]
        assert decode_payload(opened.payload) == payload_from_decoded(
            packet_case["payload_decoded"]
        )


# -- sequence numbers -------------------------------------------------------


def test_sequence_counter_rolls_into_epoch() -> None:
    counter = SequenceCounter(MAX_SEQUENCE_NUMBER - 1, 3)
    assert counter.take() == (MAX_SEQUENCE_NUMBER - 1, 3)
    assert counter.take() == (MAX_SEQUENCE_NUMBER, 3)
    assert counter.take() == (0, 4)


def test_sequence_counter_refuses_to_pass_2_to_the_95() -> None:
    counter = SequenceCounter(MAX_SEQUENCE_NUMBER - 1, MAX_EPOCH)
    assert counter.take() == (MAX_SEQUENCE_NUMBER - 1, MAX_EPOCH)
    with pytest.raises(SequenceSpaceExhausted):
        counter.take()
    with pytest.raises(SequenceSpaceExhausted):
        counter.take()


def test_sealing_rejects_payloads_that_cannot_be_sent() -> None:
    cipher = PacketCipher(EPHEMERAL_SECRET)
    with pytest.raises(LocalProtocolError):
        seal_data(
            cipher,
            connection_id=1,
            sequence_number=0,
            epoch=0,
            sent_by_initiator=True,
            payload=b"short",
        )
    with pytest.raises(LocalProtocolError):
        seal_init_crypto_snd(
            cipher,
            ephemeral_public_key=bytes(32),
            identity_public_key=bytes(32),
            sequence_number=0,
            epoch=0,
            payload=bytes(DEFAULT_MTU),
        )


# -- properties -------------------------------------------------------------

sequence_numbers = st.integers(0, MAX_SEQUENCE_NUMBER)
epochs = st.integers(0, 200)


@settings(max_examples=60)
@given(
    sequence_numbers,
    epochs,
    st.booleans(),
    st.binary(min_size=8, max_size=300),
    st.integers(0, 2**64 - 1),
)
def test_data_round_trip(
    sn: int, epoch: int, initiator: bool, payload: bytes, connection_id: int
) -> None:
    cipher = PacketCipher(EPHEMERAL_SECRET)
    packet = seal_data(
        cipher,
        connection_id=connection_id,
        sequence_number=sn,
        epoch=epoch,
        sent_by_initiator=initiator,
        payload=payload,
    )
    header = decode_envelope_header(packet)
    assert header.connection_id == connection_id
    opened = open_packet(packet, header, cipher, epoch=epoch, sent_by_initiator=initiator)
    assert (opened.sequence_number, opened.payload) == (sn, payload)
    assert opened.epoch == epoch
    with pytest.raises(DecryptError):
        open_packet(packet, header, cipher, epoch=epoch, sent_by_initiator=not initiator)


@settings(max_examples=30)
@given(sequence_numbers, st.binary(min_size=8, max_size=1000))
def test_init_crypto_snd_round_trip(sn: int, payload: bytes) -> None:
    cipher = PacketCipher(IDENTITY_SECRET)
    packet = seal_init_crypto_snd(
        cipher,
        ephemeral_public_key=INITIATOR_EPHEMERAL.public_key,
        identity_public_key=INITIATOR_IDENTITY.public_key,
        sequence_number=sn,
        epoch=0,
        payload=payload,
    )
    assert len(packet) == DEFAULT_MTU
    opened = open_packet(packet, decode_envelope_header(packet), cipher)
    assert (opened.sequence_number, opened.payload) == (sn, payload)


def _any_open(packet: bytes) -> None:
    try:
        header = decode_envelope_header(packet)
        if header.message_type is MessageType.INIT_SND:
            return
        if header.message_type is MessageType.INIT_CRYPTO_SND:
            cipher = PacketCipher(IDENTITY_SECRET)
        else:
            cipher = PacketCipher(EPHEMERAL_SECRET)
        opened = open_packet(packet, header, cipher, epoch=1, sent_by_initiator=True)
        decode_payload(opened.payload)
    except (DecodeError, DecryptError):
        pass


@settings(max_examples=300)
@given(st.binary(max_size=1500))
def test_arbitrary_bytes_raise_only_our_errors(raw: bytes) -> None:
    _any_open(raw)


ALL_VECTOR_PACKETS = [bytes.fromhex(c["packet"]) for c in CRYPTO["handshake"] + CRYPTO["data"]]


@settings(max_examples=300)
@given(st.sampled_from(ALL_VECTOR_PACKETS), st.data())
def test_mutated_packets_raise_only_our_errors(packet: bytes, data: st.DataObject) -> None:
    mutated = bytearray(packet)
    for _ in range(data.draw(st.integers(1, 4))):
        position = data.draw(st.integers(0, len(mutated) - 1))
        mutated[position] = data.draw(st.integers(0, 255))
    cut = data.draw(st.integers(MIN_PACKET_SIZE - 2, len(mutated)))
    _any_open(bytes(mutated[:cut]))


@pytest.mark.parametrize("size", [8, 100, SMALL_PAYLOAD_BYTES - 1, SMALL_PAYLOAD_BYTES, 1300])
def test_small_and_large_payload_paths_seal_the_same_bytes(size: int) -> None:
    """libsodium (small payloads) and cryptography (large) are two routes to one AEAD."""
    key = bytes(range(32))
    cipher = PacketCipher(key)
    header = bytes([0x80]) + bytes(range(8))
    payload = bytes((index * 7) & 0xFF for index in range(size))
    packet = cipher.seal(header, 5, 3, True, payload)
    nonce = (3 | (5 << 48) | 0x80).to_bytes(12, "little")
    assert packet[len(header) + 6 :] == ChaCha20Poly1305(key).encrypt(nonce, payload, header)
    assert cipher.open(packet, len(header), 3, True).payload == payload
    # Either route rejects a flipped bit, in the tag or in the ciphertext.
    for position in (len(packet) - 1, len(header) + 6):
        tampered = bytearray(packet)
        tampered[position] ^= 0x01
        with pytest.raises(DecryptError):
            cipher.open(bytes(tampered), len(header), 3, True)
