"""The record layer: epochs, replay windows, open-then-accept, parking, sealing, packing."""

from __future__ import annotations

import os

import pytest

from dtls.protection import RecordProtection
from dtls.record_layer import MAX_PARKED_RECORDS, RecordLayer
from dtls.records import DTLS_1_0, ContentType, encode_record_header
from dtls.suites import AeadKind


def _protection(epoch: int = 1, kind: AeadKind = AeadKind.AES_128_GCM) -> RecordProtection:
    key = bytes(32 if kind is AeadKind.CHACHA20_POLY1305 else 16)
    iv = bytes(12 if kind is AeadKind.CHACHA20_POLY1305 else 4)
    return RecordProtection(kind, key, iv, epoch)


def _pair() -> tuple[RecordLayer, RecordLayer]:
    sender, receiver = RecordLayer(), RecordLayer()
    sender.prepare_write(_protection())
    sender.activate_write()
    receiver.install_read(_protection())
    return sender, receiver


def test_seal_open_accept_round_trip() -> None:
    sender, receiver = _pair()
    datagram = sender.seal(ContentType.application_data, 1, b"hello")
    (record,), junk = receiver.split(datagram)
    assert junk == 0
    opened = receiver.open(record, "peer")
    assert opened is not None and opened.protected
    assert (opened.content_type, opened.payload, opened.epoch) == (23, b"hello", 1)
    assert receiver.accept(opened)  # the newest of its epoch
    (again,), _ = receiver.split(datagram)
    assert receiver.open(again, "peer") is None  # replay, once accepted
    assert receiver.dropped_records == 1


def test_a_record_is_not_spent_until_accepted() -> None:
    # The epoch-0 rule: a spoofed record that the handshake did not take must not burn the
    # number of the genuine record that carries it later.
    receiver = RecordLayer()
    spoofed = encode_record_header(ContentType.handshake, DTLS_1_0, 0, 7, 3) + b"abc"
    genuine = encode_record_header(ContentType.handshake, DTLS_1_0, 0, 7, 3) + b"xyz"
    (record,), _ = receiver.split(spoofed)
    assert receiver.open(record, "peer") is not None  # not accepted: the window stays put
    (record,), _ = receiver.split(genuine)
    opened = receiver.open(record, "peer")
    assert opened is not None and opened.payload == b"xyz"
    receiver.accept(opened)
    (record,), _ = receiver.split(genuine)
    assert receiver.open(record, "peer") is None


def test_forged_record_dropped_and_window_untouched() -> None:
    sender, receiver = _pair()
    datagram = bytearray(sender.seal(ContentType.application_data, 1, b"hello"))
    datagram[-1] ^= 1
    (record,), _ = receiver.split(bytes(datagram))
    assert receiver.open(record, "peer") is None
    assert receiver.dropped_records == 1
    assert receiver.open_application_fast(sender.seal(ContentType.application_data, 1, b"x")) == (
        b"x"
    )


def test_records_of_the_next_epoch_are_parked_then_released() -> None:
    sender, receiver = RecordLayer(), RecordLayer()
    sender.prepare_write(_protection())
    sender.activate_write()
    datagrams = [sender.seal(ContentType.handshake, 1, bytes([index])) for index in range(20)]
    for datagram in datagrams:
        (record,), _ = receiver.split(datagram)
        assert receiver.open(record, "peer") is None
    assert receiver.parked_count == MAX_PARKED_RECORDS
    assert receiver.dropped_records == 20 - MAX_PARKED_RECORDS
    assert not receiver.has_parked()  # no keys yet
    receiver.install_read(_protection())
    assert receiver.has_parked()
    parked = receiver.take_parked()
    payloads = [opened.payload for record, _ in parked if (opened := receiver.open(record, "p"))]
    assert payloads == [bytes([index]) for index in range(MAX_PARKED_RECORDS)]
    # Two epochs ahead is never parked.
    (far,), _ = RecordLayer().split(encode_record_header(22, 0xFEFD, 3, 0, 1) + b"x")
    assert receiver.open(far, "peer") is None and receiver.parked_count == 0


def test_several_records_per_datagram() -> None:
    sender, receiver = _pair()
    datagram = b"".join(
        sender.seal(ContentType.application_data, 1, bytes([index]) * 10) for index in range(3)
    )
    records, junk = receiver.split(datagram + b"\x17\xfe")
    assert junk == 2
    payloads = []
    for record in records:
        opened = receiver.open(record, "peer")
        assert opened is not None
        receiver.accept(opened)
        payloads.append(opened.payload)
    assert payloads == [bytes([index]) * 10 for index in range(3)]


@pytest.mark.parametrize(
    ("kind", "overhead"), [(AeadKind.AES_128_GCM, 37), (AeadKind.CHACHA20_POLY1305, 29)]
)
def test_overhead_per_epoch_and_connection_id(kind: AeadKind, overhead: int) -> None:
    layer = RecordLayer()
    assert layer.overhead() == 13
    layer.prepare_write(_protection(kind=kind))
    layer.activate_write()
    assert layer.overhead() == overhead and layer.overhead(0) == 13
    layer.peer_connection_id = b"\x01\x02\x03\x04"
    assert layer.overhead() == overhead + 5
    sealed = layer.seal_application(os.urandom(100))
    assert len(sealed) == 100 + overhead + 5


def test_fast_paths_match_the_general_ones() -> None:
    sender, receiver = _pair()
    fast = sender.seal_application(b"bulk")
    general = sender.seal(ContentType.application_data, 1, b"bulk")
    assert len(fast) == len(general) and fast[:3] == general[:3]
    assert receiver.open_application_fast(fast) == b"bulk"
    assert receiver.open_application_fast(fast) is None  # replay
    assert receiver.open_application_fast(b"\x17" + fast[1:3] + b"\x00\x09" + fast[5:]) is False


def test_numbering_continues_and_never_goes_back() -> None:
    layer = RecordLayer()
    layer.continue_numbering(0, 5)
    layer.continue_numbering(0, 2)
    assert layer.next_sequence_number(0) == 5
    sealed = layer.seal(ContentType.handshake, 0, b"x")
    assert int.from_bytes(sealed[5:11], "big") == 5
    assert layer.next_sequence_number(0) == 6


def test_restarted_read_window_takes_old_numbers_again() -> None:
    receiver = RecordLayer()
    datagram = encode_record_header(ContentType.handshake, DTLS_1_0, 0, 1, 1) + b"x"
    (record,), _ = receiver.split(datagram)
    opened = receiver.open(record, "peer")
    assert opened is not None
    receiver.accept(opened)
    assert receiver.open(record, "peer") is None
    receiver.restart_read_window(0)
    assert receiver.open(record, "peer") is not None
