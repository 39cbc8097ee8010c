"""Tests of qotp.recovery: ACK matching, RTT samples, retransmission, splits, retry limit."""

from __future__ import annotations

from netsim import MS
from sender import Sender

from qotp.recovery import MAX_SEND_ATTEMPTS, RetryLimitExceeded
from qotp.send import OutgoingPacket

RTO = 200 * MS
#: A Data packet at MTU 1400: 9 bytes header + connection id, 22 bytes SN + MAC.
BUDGET = 1400 - 31
DATA = bytes(range(256)) * 100


def send(
    buffer: Sender, now: int, *, budget: int = BUDGET, ack_offset: int | None = None
) -> OutgoingPacket:
    packet = buffer.next_packet(now, budget=budget, rto_ns=RTO, ack_offset=ack_offset)
    assert packet is not None
    return packet


def test_ack_frees_space_and_gives_an_rtt_sample() -> None:
    buffer = Sender()
    buffer.write(1, DATA[:100])
    packet = send(buffer, 5 * MS)
    assert buffer.bytes_in_flight == 100
    result = buffer.on_ack(1, 0, 100, 45 * MS, peer_window=5000)
    assert result.acked
    assert result.rtt_sample_ns == 40 * MS
    assert result.attempts == 1
    assert buffer.bytes_in_flight == 0
    assert buffer.buffered_bytes == 0
    assert buffer.peer_window == 5000
    duplicate = buffer.on_ack(1, 0, 100, 50 * MS, peer_window=7000)
    assert not duplicate.acked and duplicate.stream_id == 1
    assert buffer.peer_window == 7000
    assert packet.attempt == 1


def test_retransmission_backs_off_exponentially_and_gives_up_after_six_sends() -> None:
    buffer = Sender()
    buffer.write(1, DATA[:10])
    send(buffer, 0)
    send_times: list[int] = [0]
    now = 0
    while True:
        deadline = buffer.next_deadline(RTO)
        assert deadline is not None
        assert buffer.next_packet(deadline - 1, budget=BUDGET, rto_ns=RTO) is None
        now = deadline
        try:
            packet = buffer.next_packet(now, budget=BUDGET, rto_ns=RTO)
        except RetryLimitExceeded as error:
            assert error.key == (1, 0, 10)
            assert error.attempts == MAX_SEND_ATTEMPTS
            break
        assert packet is not None and packet.offset == 0 and bytes(packet.data) == DATA[:10]
        send_times.append(now)
    assert [t // MS for t in send_times] == [0, 200, 600, 1400, 3000, 6200]
    assert now // MS == 12600
    assert buffer.retransmitted_packets == 5


def test_unlucky_packet_is_not_fatal_while_the_peer_acks_others() -> None:
    buffer = Sender()
    buffer.write(1, DATA[:10])
    send(buffer, 0)
    buffer.write(2, DATA[:10])
    send(buffer, 0)
    now = 0
    for _ in range(MAX_SEND_ATTEMPTS - 1):  # both resent five times
        deadline = buffer.next_deadline(RTO)
        assert deadline is not None
        now = deadline
        assert send(buffer, now).stream_id == 1
        assert send(buffer, now).stream_id == 2
    assert now == 6200 * MS
    assert buffer.on_ack(2, 0, 10, now + MS).acked
    # Stream 1's packet used all its sends, but the peer is alive: it goes again,
    # at the longest backoff, counted from the latest ACK (RFC 6298 5.3)...
    assert buffer.next_deadline(RTO) == (6201 + 6400) * MS
    again = send(buffer, 12601 * MS)
    assert (again.stream_id, again.attempt) == (1, MAX_SEND_ATTEMPTS)
    # ...and since the peer answered after its previous send, the backoff starts over:
    # the end needs six sends in a row into silence.
    sends = [12601]
    while True:
        deadline = buffer.next_deadline(RTO)
        assert deadline is not None
        try:
            send(buffer, deadline)
        except RetryLimitExceeded as error:
            assert error.key == (1, 0, 10)
            break
        sends.append(deadline // MS)
    assert sends == [12601, 12801, 13201, 14001, 15601, 18801]
    assert deadline // MS == 25201


def test_retransmitted_packets_give_no_rtt_sample_and_the_rto_is_the_callers() -> None:
    buffer = Sender()
    buffer.write(1, DATA[:10])
    send(buffer, 0)
    assert buffer.next_packet(99 * MS, budget=BUDGET, rto_ns=100 * MS) is None
    packet = buffer.next_packet(100 * MS, budget=BUDGET, rto_ns=100 * MS)
    assert packet is not None and packet.attempt == 2
    result = buffer.on_ack(1, 0, 10, 150 * MS)
    assert result.acked and result.rtt_sample_ns is None and result.attempts == 2


def test_retransmissions_go_first_earliest_deadline_first_across_streams() -> None:
    buffer = Sender()
    buffer.write(1, DATA[:10])
    buffer.write(2, DATA[:10])
    send(buffer, 0)  # stream 1 at 0
    send(buffer, 50 * MS)  # stream 2 at 50 ms
    buffer.write(3, DATA[:10])
    first = send(buffer, 300 * MS)
    second = send(buffer, 300 * MS)
    third = send(buffer, 300 * MS)
    assert [(p.stream_id, p.attempt) for p in (first, second, third)] == [(1, 2), (2, 2), (3, 1)]
    # Stream 1 now waits 400 ms, stream 3 (sent once, at 300 ms) only 200 ms.
    assert buffer.next_deadline(RTO) == 500 * MS
    assert send(buffer, 500 * MS).stream_id == 3


def test_a_loss_found_between_sends_at_one_instant_still_goes_first() -> None:
    """Within one instant the buffer skips the deadline search after a miss (nothing
    can fall due at the instant it was sent), but a loss an ACK reveals is not missed."""
    buffer = Sender()
    buffer.write(1, DATA[:3000])
    send(buffer, 0)
    second = send(buffer, 10 * MS)
    buffer.write(2, DATA[:3000])
    assert send(buffer, 20 * MS).attempt == 1  # searched, nothing due: cached
    buffer.on_ack(1, second.offset, len(second.data), 20 * MS, loss_delay_ns=5 * MS)
    again = send(buffer, 20 * MS)
    assert (again.stream_id, again.offset, again.attempt) == (1, 0, 2)
    # An RTO of zero makes a packet due the moment it is sent: no caching then.
    zero = Sender()
    zero.write(1, DATA[:10])
    zero.next_packet(0, budget=BUDGET, rto_ns=0)
    resent = zero.next_packet(0, budget=BUDGET, rto_ns=0)
    assert resent is not None and resent.attempt == 2


def test_retransmission_that_no_longer_fits_is_split() -> None:
    buffer = Sender()
    buffer.write(1, DATA[:2000])
    buffer.close(1)
    original = send(buffer, 0)
    tail_original = send(buffer, 0)
    assert len(original.data) == BUDGET - 8 and tail_original.is_close
    # Now an ACK rides along: 10 more header bytes.
    head = send(buffer, RTO, ack_offset=0)
    assert (head.offset, len(head.data), head.attempt) == (0, BUDGET - 18, 2)
    assert not head.is_close
    rest = send(buffer, RTO, ack_offset=0)
    assert (rest.offset, len(rest.data), rest.attempt) == (BUDGET - 18, 10, 2)
    assert not rest.is_close
    last = send(buffer, RTO, ack_offset=0)
    assert last.is_close and last.offset == BUDGET - 8
    assert buffer.split_packets == 1
    assert buffer.bytes_in_flight == 2000
    # The peer's ACK for the original key matches nothing any more.
    assert not buffer.on_ack(1, 0, BUDGET - 8, RTO).acked
    assert buffer.on_ack(1, 0, BUDGET - 18, RTO).acked
    assert buffer.on_ack(1, BUDGET - 18, 10, RTO).acked
    finished = buffer.on_ack(1, BUDGET - 8, 2000 - (BUDGET - 8), RTO)
    assert finished.acked and finished.is_close and finished.send_finished
    assert buffer.buffered_bytes == 0 and buffer.bytes_in_flight == 0


def test_split_tail_keeps_the_close_flag_and_stays_due() -> None:
    buffer = Sender()
    buffer.write(1, DATA[:100])
    buffer.close(1)
    packet = send(buffer, 0)
    assert packet.is_close
    head = send(buffer, RTO, budget=8 + 60)
    assert (len(head.data), head.is_close) == (60, False)
    tail = send(buffer, RTO, budget=8 + 60)
    assert (tail.offset, len(tail.data), tail.is_close) == (60, 40, True)


def test_ping_is_acked_but_never_retransmitted() -> None:
    buffer = Sender()
    buffer.write(1, DATA[:10])
    send(buffer, 0)
    buffer.queue_ping(1)
    ping = send(buffer, 0)
    assert (ping.offset, bytes(ping.data), ping.is_ping) == (10, b"", True)
    assert buffer.in_flight_packets == 2
    result = buffer.on_ack(1, 10, 0, 30 * MS)
    assert result.acked and result.is_ping and result.rtt_sample_ns == 30 * MS
    buffer.queue_ping(1)
    send(buffer, 40 * MS)
    # Both the data packet and the ping are due at 240 ms; only the data is resent.
    again = send(buffer, 240 * MS)
    assert again.offset == 0 and again.attempt == 2
    assert buffer.next_packet(240 * MS, budget=BUDGET, rto_ns=RTO) is None
    assert buffer.lost_pings == 1


def test_allow_new_false_sends_only_retransmissions() -> None:
    buffer = Sender()
    buffer.write(1, DATA[:10])
    send(buffer, 0)
    buffer.write(1, DATA[10:20])
    assert buffer.next_packet(RTO, budget=BUDGET, rto_ns=RTO, allow_new=False) is not None
    assert buffer.next_packet(RTO, budget=BUDGET, rto_ns=RTO, allow_new=False) is None
    assert send(buffer, RTO).offset == 10


def test_suspects_are_resent_oldest_first_unless_acknowledged_meanwhile() -> None:
    buffer = Sender()
    buffer.write(1, DATA[:3000])
    first = send(buffer, 1 * MS)
    second = send(buffer, 2 * MS)
    third = send(buffer, 3 * MS)
    recovery = buffer.recovery
    assert recovery.suspect_sent_between(2 * MS, 3 * MS) == 2
    assert recovery.suspects_pending == 2
    assert recovery.next_deadline(RTO) == 0
    buffer.on_ack(1, third.offset, len(third.data), 4 * MS)
    resent = send(buffer, 5 * MS)
    assert (resent.offset, resent.attempt) == (second.offset, 2)
    # Nothing else is due: the third was acknowledged, the first never suspected.
    assert buffer.next_packet(5 * MS, budget=BUDGET, rto_ns=RTO) is None
    assert recovery.suspects_pending == 0
    assert first.attempt == 1


def test_cleared_suspects_stay_in_flight_on_their_timers() -> None:
    buffer = Sender()
    buffer.write(1, DATA[:1000])
    send(buffer, 1 * MS)
    recovery = buffer.recovery
    recovery.suspect_sent_between(0, 10 * MS)
    recovery.clear_suspects()
    assert buffer.next_packet(5 * MS, budget=BUDGET, rto_ns=RTO) is None
    assert recovery.next_deadline(RTO) == 1 * MS + RTO


def test_frozen_estimates_ignore_acks_but_still_free_and_detect() -> None:
    buffer = Sender()
    buffer.write(1, DATA[:3000])
    first = send(buffer, 0)
    second = send(buffer, 1 * MS)
    recovery = buffer.recovery
    recovery.estimates_frozen = True
    window = buffer.buffer.peer_window
    recovery.on_ack_received(1, second.offset, len(second.data), window, 900 * MS)
    recovery.flush_ack_event()
    assert recovery.rtt.srtt_ns == 0  # a sample of the peer's ACK queue, not of the path
    assert buffer.bytes_in_flight == len(first.data)  # the second packet was freed
    # The first packet, sent before an acknowledged one and long ago, is lost.
    assert send(buffer, 900 * MS).attempt == 2
    recovery.estimates_frozen = False
    third = send(buffer, 901 * MS)
    recovery.on_ack_received(1, third.offset, len(third.data), window, 903 * MS)
    recovery.flush_ack_event()
    assert recovery.rtt.srtt_ns == 2 * MS
