"""Flights: packing and fragmentation to the MTU, retransmission timers, repeats, ACKs."""

from __future__ import annotations

from dtls import handshake as hs
from dtls.flights import Flights
from dtls.protection import RecordProtection
from dtls.reassembly import HandshakeReassembler
from dtls.record_layer import RecordLayer
from dtls.records import ContentType
from dtls.suites import AeadKind

SECOND_NS = 1_000_000_000


def _flights(mtu: int = 300, retransmissions: int = 3) -> tuple[Flights, list[bytes]]:
    outgoing: list[bytes] = []
    flights = Flights(
        RecordLayer(),
        outgoing,
        mtu=mtu,
        initial_retransmit_ns=SECOND_NS,
        max_retransmit_ns=4 * SECOND_NS,
        max_retransmissions=retransmissions,
    )
    return flights, outgoing


def _messages(datagrams: list[bytes]) -> list[tuple[int, int, bytes]]:
    """Reassemble what the datagrams carry: (type, message_seq, body) in order."""
    reader = RecordLayer()
    reassembler = HandshakeReassembler()
    out = []
    for datagram in datagrams:
        records, junk = reader.split(datagram)
        assert junk == 0
        for record in records:
            for fragment in hs.decode_handshake_fragments(record.payload):
                reassembler.add(fragment)
        for message in reassembler.pop_ready():
            out.append((message.msg_type, message.message_seq, message.body))
    return out


def test_small_messages_share_a_datagram_and_large_ones_are_fragmented() -> None:
    flights, outgoing = _flights(mtu=300)
    flights.begin()
    bodies = [b"a" * 40, b"b" * 1000, b"", b"c" * 10]
    for index, body in enumerate(bodies):
        flights.add_handshake(index + 1, body)
    flights.send(0, expects_reply=True)
    assert all(len(datagram) <= 300 for datagram in outgoing)
    assert len(outgoing) == 5  # 1000 bytes need four 275-byte fragments; the rest packs in
    assert _messages(outgoing) == [(i + 1, i, body) for i, body in enumerate(bodies)]
    assert flights.next_message_seq == 4


def test_retransmission_timer_doubles_caps_and_gives_up() -> None:
    flights, outgoing = _flights(retransmissions=3)
    flights.begin()
    flights.add_handshake(1, b"hello")
    flights.send(0, expects_reply=True)
    assert flights.retransmit_deadline == SECOND_NS
    deadlines = []
    now = 0
    while flights.retransmit_deadline is not None:
        now = flights.retransmit_deadline
        if not flights.on_timer(now):
            break
        deadlines.append(flights.retransmit_deadline - now)
    assert deadlines == [2 * SECOND_NS, 4 * SECOND_NS, 4 * SECOND_NS]
    assert len(outgoing) == 4  # the flight and three retransmissions
    record_numbers = {int.from_bytes(datagram[5:11], "big") for datagram in outgoing}
    assert record_numbers == {0, 1, 2, 3}  # every resend has fresh record numbers


def test_last_flight_waits_for_the_peer_to_repeat() -> None:
    flights, outgoing = _flights()
    flights.begin()
    flights.add_handshake(20, b"finished")
    flights.send(0, expects_reply=False)
    assert flights.retransmit_deadline is None and len(outgoing) == 1
    flights.new_datagram()
    flights.resend_on_peer_repeat(established=True)
    flights.resend_on_peer_repeat(established=True)  # once per received datagram
    assert len(outgoing) == 2
    flights.new_datagram()
    flights.resend_on_peer_repeat(established=True)
    assert len(outgoing) == 3


def test_a_side_whose_flight_expects_a_reply_does_not_answer_repeats_once_established() -> None:
    flights, outgoing = _flights()
    flights.begin()
    flights.add_handshake(16, b"key exchange")
    flights.send(0, expects_reply=True)
    flights.new_datagram()
    flights.resend_on_peer_repeat(established=True)
    assert len(outgoing) == 1
    flights.resend_on_peer_repeat(established=False)
    assert len(outgoing) == 2


def test_acknowledged_fragments_are_not_resent_and_a_complete_ack_stops_the_timer() -> None:
    flights, outgoing = _flights(mtu=210)
    flights.begin()
    flights.add_handshake(11, bytes(range(256)) * 2)  # 512 bytes: three 185-byte fragments
    flights.add_handshake(14, b"")
    flights.send(0, expects_reply=True)
    sent = [int.from_bytes(datagram[5:11], "big") for datagram in outgoing]
    assert sent == [0, 1, 2]  # fragments 1 and 2, then fragment 3 with the empty message
    records = RecordLayer().split(outgoing[2])[0]
    assert [r.sequence_number for r in records] == [2, 3]
    assert flights.sent_record(0, 1) is not None and flights.sent_record(0, 99) is None
    assert not flights.acknowledge([(0, 0), (0, 3), (0, 99)])
    outgoing.clear()
    assert flights.on_timer(SECOND_NS)
    resent = [
        hs.decode_handshake_fragments(record.payload)[0]
        for datagram in outgoing
        for record in RecordLayer().split(datagram)[0]
    ]
    assert [(f.msg_type, f.fragment_offset, len(f.body)) for f in resent] == [
        (11, 185, 185),
        (11, 370, 142),
    ]
    assert flights.acknowledge([(0, 4), (0, 5)])
    assert flights.acknowledged and flights.retransmit_deadline is None


def test_change_cipher_spec_and_epoch_switch_inside_a_flight() -> None:
    records = RecordLayer()
    outgoing: list[bytes] = []
    flights = Flights(
        records,
        outgoing,
        mtu=1200,
        initial_retransmit_ns=SECOND_NS,
        max_retransmit_ns=SECOND_NS,
        max_retransmissions=1,
    )
    flights.begin()
    flights.add_handshake(16, b"x" * 10)
    flights.add_record(ContentType.change_cipher_spec, b"\x01")
    records.prepare_write(RecordProtection(AeadKind.AES_128_GCM, bytes(16), bytes(4), 1))
    records.activate_write()
    flights.add_handshake(20, b"f" * 12)
    flights.send(0, expects_reply=True)
    (datagram,) = outgoing
    parsed, _ = RecordLayer().split(datagram)
    assert [(r.content_type, r.epoch) for r in parsed] == [(22, 0), (20, 0), (22, 1)]
