"""Tests of qotp.send: queues, packet choice, in-flight registry, retransmission, flow control."""

from __future__ import annotations

import random
import struct
import zlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from netsim import MS, SECOND, Address, LinkConditions, Network

from qotp.errors import LocalProtocolError
from qotp.recv import IN_ORDER_RESERVE_BYTES, InsertResult, ReceiveBuffer
from qotp.send import (
    MAX_SEND_ATTEMPTS,
    SEND_BUFFER_BYTES,
    OutgoingPacket,
    RetryLimitExceeded,
    SendBuffer,
)

RTO = 200 * MS
#: A Data packet at MTU 1400: 9 bytes header + connection id, 22 bytes SN + MAC.
BUDGET = 1400 - 31
DATA = bytes(range(256)) * 100


def send(
    buffer: SendBuffer, now: int, *, budget: int = BUDGET, ack_offset: int | None = None
) -> OutgoingPacket:
    packet = buffer.next_packet(now, budget=budget, rto_ns=RTO, ack_offset=ack_offset)
    assert packet is not None
    return packet


def test_write_accepts_up_to_capacity_and_acks_free_space() -> None:
    buffer = SendBuffer(capacity=1000)
    assert buffer.write(1, DATA[:600]) == 600
    assert buffer.write(2, DATA[:600]) == 400
    assert buffer.write(3, b"x") == 0
    assert buffer.free_space == 0
    packet = send(buffer, 0)
    assert buffer.free_space == 0  # in flight still counts
    result = buffer.on_ack(packet.stream_id, packet.offset, len(packet.data), 10 * MS)
    assert result.acked and result.length == 600
    assert buffer.free_space == 600
    assert buffer.write(3, b"") == 0


def test_default_capacity_is_16_mib() -> None:
    assert SEND_BUFFER_BYTES == 16 * 1024 * 1024
    assert SendBuffer().capacity == SEND_BUFFER_BYTES


def test_writes_are_not_affected_by_later_changes_to_the_callers_buffer() -> None:
    buffer = SendBuffer()
    scratch = bytearray(b"abcdef")
    buffer.write(1, scratch)
    scratch[:] = b"zzzzzz"
    assert bytes(send(buffer, 0).data) == b"abcdef"


def test_bad_use_raises_local_protocol_error() -> None:
    buffer = SendBuffer()
    with pytest.raises(LocalProtocolError):
        buffer.write(2**32, b"x")
    buffer.close(1)
    with pytest.raises(LocalProtocolError):
        buffer.write(1, b"x")
    with pytest.raises(LocalProtocolError):
        SendBuffer(capacity=0)


def test_packets_fill_the_budget_minus_the_header() -> None:
    buffer = SendBuffer()
    buffer.write(5, DATA[:5000])
    first = send(buffer, 0)
    assert (first.stream_id, first.offset, len(first.data)) == (5, 0, BUDGET - 8)
    with_ack = send(buffer, 0, ack_offset=0)
    assert (with_ack.offset, len(with_ack.data)) == (BUDGET - 8, BUDGET - 18)
    extended_ack = send(buffer, 0, ack_offset=0x1000000)
    assert len(extended_ack.data) == BUDGET - 24
    assert first.attempt == 1 and not first.is_close and not first.is_ping
    rest = bytes(send(buffer, 0).data)
    assert bytes(first.data) + bytes(with_ack.data) + bytes(extended_ack.data) + rest == DATA[:5000]
    assert buffer.next_packet(0, budget=BUDGET, rto_ns=RTO) is None


def test_offsets_above_24_bits_use_the_larger_header() -> None:
    buffer = SendBuffer(capacity=0x1000000 + 5000, initial_peer_window=1 << 30)
    payload = bytes(0x1000000 + 1000)
    assert buffer.write(1, payload) == len(payload)
    offset = 0
    while offset <= 0xFFFFFF:
        packet = send(buffer, 0, budget=min(60000, 8 + 0x1000001 - offset))
        assert packet.offset == offset
        offset = packet.offset + len(packet.data)
    last = send(buffer, 0, budget=30)
    assert last.offset > 0xFFFFFF
    assert len(last.data) == 30 - 11


def test_budget_smaller_than_a_header_sends_nothing() -> None:
    buffer = SendBuffer()
    buffer.write(1, b"abc")
    assert buffer.next_packet(0, budget=8, rto_ns=RTO) is None
    assert buffer.next_packet(0, budget=17, rto_ns=RTO, ack_offset=0) is None
    assert bytes(send(buffer, 0, budget=9).data) == b"a"


def test_streams_are_served_round_robin() -> None:
    buffer = SendBuffer()
    buffer.write(1, DATA[:3000])
    buffer.write(2, DATA[:3000])
    buffer.write(3, DATA[:100])
    order = [send(buffer, 0).stream_id for _ in range(6)]
    assert order == [1, 2, 3, 1, 2, 1]


def test_ack_frees_space_and_gives_an_rtt_sample() -> None:
    buffer = SendBuffer()
    buffer.write(1, DATA[:100])
    packet = send(buffer, 5 * MS)
    assert buffer.bytes_in_flight == 100
    result = buffer.on_ack(1, 0, 100, 45 * MS, peer_window=5000)
    assert result.acked
    assert result.rtt_sample_ns == 40 * MS
    assert result.attempts == 1
    assert result.delivered_bytes == 100
    assert result.delivery_interval_ns == 40 * MS
    assert buffer.bytes_in_flight == 0
    assert buffer.buffered_bytes == 0
    assert buffer.peer_window == 5000
    duplicate = buffer.on_ack(1, 0, 100, 50 * MS, peer_window=7000)
    assert not duplicate.acked and duplicate.stream_id == 1
    assert buffer.peer_window == 7000
    assert packet.attempt == 1


def test_retransmission_backs_off_exponentially_and_gives_up_after_six_sends() -> None:
    buffer = SendBuffer()
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
    buffer = SendBuffer()
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
    buffer = SendBuffer()
    buffer.write(1, DATA[:10])
    send(buffer, 0)
    assert buffer.next_packet(99 * MS, budget=BUDGET, rto_ns=100 * MS) is None
    packet = buffer.next_packet(100 * MS, budget=BUDGET, rto_ns=100 * MS)
    assert packet is not None and packet.attempt == 2
    result = buffer.on_ack(1, 0, 10, 150 * MS)
    assert result.acked and result.rtt_sample_ns is None and result.attempts == 2


def test_retransmissions_go_first_earliest_deadline_first_across_streams() -> None:
    buffer = SendBuffer()
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
    buffer = SendBuffer()
    buffer.write(1, DATA[:3000])
    send(buffer, 0)
    second = send(buffer, 10 * MS)
    buffer.write(2, DATA[:3000])
    assert send(buffer, 20 * MS).attempt == 1  # searched, nothing due: cached
    buffer.on_ack(1, second.offset, len(second.data), 20 * MS, loss_delay_ns=5 * MS)
    again = send(buffer, 20 * MS)
    assert (again.stream_id, again.offset, again.attempt) == (1, 0, 2)
    # An RTO of zero makes a packet due the moment it is sent: no caching then.
    zero = SendBuffer()
    zero.write(1, DATA[:10])
    zero.next_packet(0, budget=BUDGET, rto_ns=0)
    resent = zero.next_packet(0, budget=BUDGET, rto_ns=0)
    assert resent is not None and resent.attempt == 2


def test_retransmission_that_no_longer_fits_is_split() -> None:
    buffer = SendBuffer()
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
    buffer = SendBuffer()
    buffer.write(1, DATA[:100])
    buffer.close(1)
    packet = send(buffer, 0)
    assert packet.is_close
    head = send(buffer, RTO, budget=8 + 60)
    assert (len(head.data), head.is_close) == (60, False)
    tail = send(buffer, RTO, budget=8 + 60)
    assert (tail.offset, len(tail.data), tail.is_close) == (60, 40, True)


def test_ping_is_acked_but_never_retransmitted() -> None:
    buffer = SendBuffer()
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


def test_close_flag_rides_on_the_last_data_packet() -> None:
    buffer = SendBuffer()
    buffer.write(1, DATA[:2000])
    assert buffer.close(1) == 2000
    assert buffer.close(1) == 2000
    assert buffer.close_offset(1) == 2000
    first = send(buffer, 0)
    last = send(buffer, 0)
    assert not first.is_close
    assert last.is_close and last.offset + len(last.data) == 2000
    assert buffer.next_packet(0, budget=BUDGET, rto_ns=RTO) is None
    assert not buffer.on_ack(1, last.offset, len(last.data), MS).send_finished
    assert buffer.on_ack(1, 0, len(first.data), MS).send_finished
    assert buffer.is_send_finished(1)


def test_bare_close_when_nothing_is_queued() -> None:
    buffer = SendBuffer()
    buffer.write(1, DATA[:10])
    send(buffer, 0)
    buffer.close(1)
    close = send(buffer, 0)
    assert (close.offset, bytes(close.data)) == (10, b"")
    assert close.is_close and not close.is_ping
    assert buffer.next_packet(0, budget=BUDGET, rto_ns=RTO) is None
    # A bare CLOSE is retransmitted like data (after the data, sent first).
    assert send(buffer, RTO).offset == 0
    again = send(buffer, RTO)
    assert again.is_close and again.attempt == 2
    assert not buffer.on_ack(1, 10, 0, RTO + MS).send_finished
    assert buffer.on_ack(1, 0, 10, RTO + MS).send_finished


def test_close_of_an_unused_stream_sends_a_bare_close_at_zero() -> None:
    buffer = SendBuffer()
    assert buffer.close(4) == 0
    close = send(buffer, 0)
    assert (close.stream_id, close.offset, close.is_close) == (4, 0, True)
    assert buffer.on_ack(4, 0, 0, MS).send_finished


def test_bare_close_waits_for_a_ping_with_the_same_key() -> None:
    buffer = SendBuffer()
    buffer.queue_ping(1)
    send(buffer, 0)
    buffer.close(1)
    assert buffer.next_packet(0, budget=BUDGET, rto_ns=RTO) is None
    assert buffer.has_new_work()
    buffer.on_ack(1, 0, 0, MS)
    assert send(buffer, MS).is_close


def test_peer_window_limits_new_data() -> None:
    buffer = SendBuffer(initial_peer_window=3000)
    buffer.write(1, DATA[:10000])
    sizes = [len(send(buffer, 0).data) for _ in range(3)]
    assert sizes == [BUDGET - 8, BUDGET - 8, 3000 - 2 * (BUDGET - 8)]
    assert buffer.bytes_in_flight == 3000
    assert buffer.next_packet(0, budget=BUDGET, rto_ns=RTO) is None
    assert not buffer.has_new_work()
    buffer.on_ack(1, 0, BUDGET - 8, MS, peer_window=3000)
    assert buffer.has_new_work()
    assert len(send(buffer, MS).data) == BUDGET - 8


def test_zero_window_is_probed_with_a_ping_once_per_rto() -> None:
    buffer = SendBuffer()
    buffer.write(1, DATA[:3000])
    first = send(buffer, 0)
    buffer.on_ack(1, 0, len(first.data), MS, peer_window=0)
    assert buffer.next_deadline(RTO) == 0
    probe = send(buffer, MS)
    assert probe.is_ping and probe.offset == len(first.data)
    assert buffer.next_packet(MS, budget=BUDGET, rto_ns=RTO) is None
    # The probe is lost: it expires, and the next probe waits for the RTO.
    assert buffer.next_deadline(RTO) == MS + RTO
    assert buffer.next_packet(MS + RTO, budget=BUDGET, rto_ns=RTO) is not None
    assert buffer.lost_pings == 1
    buffer.on_ack(1, len(first.data), 0, MS + RTO + 5, peer_window=100_000)
    data = send(buffer, MS + RTO + 10)
    assert not data.is_ping and data.offset == len(first.data)


def test_allow_new_false_sends_only_retransmissions() -> None:
    buffer = SendBuffer()
    buffer.write(1, DATA[:10])
    send(buffer, 0)
    buffer.write(1, DATA[10:20])
    assert buffer.next_packet(RTO, budget=BUDGET, rto_ns=RTO, allow_new=False) is not None
    assert buffer.next_packet(RTO, budget=BUDGET, rto_ns=RTO, allow_new=False) is None
    assert send(buffer, RTO).offset == 10


def test_discard_stream_frees_everything_of_that_stream() -> None:
    buffer = SendBuffer()
    buffer.write(1, DATA[:3000])
    buffer.write(2, DATA[:50])
    send(buffer, 0)
    send(buffer, 0)
    assert buffer.discard_stream(1) == 3000
    assert buffer.buffered_bytes == 50
    assert buffer.bytes_in_flight == 50
    assert buffer.next_packet(RTO, budget=BUDGET, rto_ns=RTO) is not None
    assert buffer.discard_stream(1) == 0
    assert buffer.queued_bytes(1) == 0


def test_data_spanning_several_writes_is_joined_once() -> None:
    buffer = SendBuffer()
    for index in range(100):
        buffer.write(1, bytes([index]) * 7)
    assert buffer.queued_bytes(1) == 700
    packet = send(buffer, 0, budget=8 + 50)
    assert bytes(packet.data) == b"".join(bytes([i]) * 7 for i in range(8))[:50]


class Pipe:
    """One direction of a lossy transport built only from SendBuffer and ReceiveBuffer."""

    def __init__(
        self, rng: random.Random, send_capacity: int, recv_capacity: int, initial_window: int
    ) -> None:
        self.rng = rng
        self.sender = SendBuffer(
            capacity=send_capacity, initial_peer_window=initial_window, max_attempts=60
        )
        self.receiver = ReceiveBuffer(capacity=recv_capacity)
        self.in_transit: list[OutgoingPacket] = []
        self.acks_in_transit: list[tuple[int, int, int, int]] = []
        self.now = 0

    def step(self, loss: float, budget: int) -> None:
        self.now += MS
        ack = self.receiver.pop_ack()
        packet = self.sender.next_packet(
            self.now, budget=budget, rto_ns=20 * MS, ack_offset=None if ack is None else 0
        )
        if ack is not None:
            self.acks_in_transit.append((*ack, self.receiver.window))
        if packet is not None:
            self.in_transit.append(packet)
            if self.rng.random() < loss / 2:
                self.in_transit.append(packet)  # duplicated
        self.rng.shuffle(self.in_transit)
        self.rng.shuffle(self.acks_in_transit)
        for item in self.in_transit[: self.rng.randint(0, 3)]:
            self.in_transit.remove(item)
            if self.rng.random() >= loss:
                result = self.receiver.insert(
                    item.stream_id,
                    item.offset,
                    bytes(item.data),
                    is_close=item.is_close,
                    now=self.now,
                )
                assert isinstance(result, InsertResult)
        for ack_item in self.acks_in_transit[: self.rng.randint(0, 3)]:
            self.acks_in_transit.remove(ack_item)
            if self.rng.random() >= loss:
                stream_id, offset, length, window = ack_item
                self.sender.on_ack(stream_id, offset, length, self.now, peer_window=window)
        if not (self.in_transit or self.acks_in_transit or self.receiver.pending_acks) and (
            not self.sender.has_new_work()
        ):
            # Nothing moves until the next retransmission: jump the clock there.
            deadline = self.sender.next_deadline(20 * MS)
            if deadline is not None and deadline > self.now + MS:
                self.now = deadline - MS


@settings(max_examples=100, deadline=None)
@given(
    seed=st.integers(0, 2**32),
    writes=st.lists(
        st.tuples(st.integers(0, 3), st.integers(1, 5000), st.booleans()), min_size=1, max_size=12
    ),
    loss=st.sampled_from([0.0, 0.1, 0.3]),
    budget=st.integers(20, 1400),
    send_capacity=st.integers(200, 20_000),
    recv_capacity=st.integers(300, 20_000),
    honest_initial_window=st.booleans(),
)
def test_random_writes_losses_and_acks_never_corrupt_data(
    seed: int,
    writes: list[tuple[int, int, bool]],
    loss: float,
    budget: int,
    send_capacity: int,
    recv_capacity: int,
    honest_initial_window: bool,
) -> None:
    rng = random.Random(seed)
    # Without an honest initial window the sender overshoots a small receiver at first.
    initial_window = recv_capacity if honest_initial_window else 16 * 1024 * 1024
    pipe = Pipe(rng, send_capacity, recv_capacity, initial_window)
    written: dict[int, bytearray] = {}
    pending: dict[int, bytes] = {}
    closed: set[int] = set()
    for stream_id, size, close in writes:
        if stream_id in closed:
            continue
        pending[stream_id] = pending.get(stream_id, b"") + rng.randbytes(size)
        if close:
            closed.add(stream_id)
    received: dict[int, bytearray] = {stream_id: bytearray() for stream_id in pending}
    close_requested: set[int] = set()
    for _ in range(60_000):
        for stream_id, data in list(pending.items()):
            if data:
                accepted = pipe.sender.write(stream_id, data)
                written.setdefault(stream_id, bytearray()).extend(data[:accepted])
                pending[stream_id] = data[accepted:]
            elif stream_id in closed and stream_id not in close_requested:
                pipe.sender.close(stream_id)
                close_requested.add(stream_id)
        pipe.step(loss, budget)
        for stream_id in received:
            received[stream_id] += pipe.receiver.read(stream_id, rng.randint(0, 5000))
        assert 0 <= pipe.sender.buffered_bytes <= send_capacity
        assert 0 <= pipe.receiver.buffered_bytes <= recv_capacity + IN_ORDER_RESERVE_BYTES
        assert pipe.sender.bytes_in_flight <= pipe.sender.buffered_bytes
        done = all(not data for data in pending.values()) and all(
            len(received[stream_id]) == len(written.get(stream_id, b"")) for stream_id in received
        )
        if done and all(pipe.receiver.at_eof(stream_id) for stream_id in closed):
            break
    else:
        raise AssertionError("transfer did not complete")
    for stream_id, sent_data in written.items():
        assert bytes(received[stream_id]) == bytes(sent_data)
    for stream_id in closed:
        assert pipe.receiver.close_offset(stream_id) == len(written.get(stream_id, b""))


# -- the buffers as a whole transport over the simulated network ---------------------

#: Mini wire format for these tests only: CRC-32, flags, then ACK and/or data fields.
MINI_HEADER = struct.Struct("<IB")
MINI_ACK = struct.Struct("<IQHQ")  # stream, offset, length, window
MINI_DATA = struct.Struct("<IQ")  # stream, offset
FLAG_ACK, FLAG_DATA, FLAG_CLOSE = 1, 2, 4
LEFT_ADDRESS: Address = ("10.0.0.1", 1)
RIGHT_ADDRESS: Address = ("10.0.0.2", 2)


class MiniTransport:
    """SendBuffer + ReceiveBuffer behind the sans-IO driving surface, nothing else.

    No congestion control: at most ``burst`` packets per millisecond. The timer is
    the send buffer's retransmission deadline.
    """

    def __init__(self, peer: Address, *, rto_ns: int = 50 * MS, burst: int = 32) -> None:
        self.peer = peer
        self.rto_ns = rto_ns
        self.burst = burst
        self.sender = SendBuffer()
        self.receiver = ReceiveBuffer()
        self.now = 0
        self.failed: Exception | None = None
        self.dropped_corrupt = 0

    def receive_datagram(self, data: bytes, addr: Address, now: int) -> None:
        self.now = now
        if len(data) < MINI_HEADER.size:
            self.dropped_corrupt += 1
            return
        checksum, flags = MINI_HEADER.unpack_from(data)
        if zlib.crc32(data[4:]) != checksum:
            self.dropped_corrupt += 1
            return
        position = MINI_HEADER.size
        if flags & FLAG_ACK:
            stream_id, offset, length, window = MINI_ACK.unpack_from(data, position)
            position += MINI_ACK.size
            self.sender.on_ack(stream_id, offset, length, now, peer_window=window)
        if flags & FLAG_DATA:
            stream_id, offset = MINI_DATA.unpack_from(data, position)
            position += MINI_DATA.size
            self.receiver.insert(
                stream_id, offset, data[position:], is_close=bool(flags & FLAG_CLOSE), now=now
            )

    def datagrams_to_send(self, now: int) -> list[tuple[bytes, Address]]:
        self.now = now
        out: list[tuple[bytes, Address]] = []
        if self.failed is not None:
            return out
        while len(out) < self.burst:
            ack = self.receiver.pop_ack()
            try:
                packet = self.sender.next_packet(
                    now,
                    budget=1200,
                    rto_ns=self.rto_ns,
                    ack_offset=None if ack is None else ack[1],
                )
            except RetryLimitExceeded as error:
                self.failed = error
                return out
            if ack is None and packet is None:
                break
            flags = 0
            body = bytearray(1)
            if ack is not None:
                flags |= FLAG_ACK
                body += MINI_ACK.pack(*ack, self.receiver.window)
            if packet is not None:
                flags |= FLAG_DATA | (FLAG_CLOSE if packet.is_close else 0)
                body += MINI_DATA.pack(packet.stream_id, packet.offset)
                body += packet.data
            body[0] = flags
            out.append((struct.pack("<I", zlib.crc32(body)) + bytes(body), self.peer))
        return out

    def get_timer(self) -> int | None:
        if self.failed is not None:
            return None
        if self.sender.has_new_work() or self.receiver.pending_acks:
            return self.now + MS
        return self.sender.next_deadline(self.rto_ns)

    def handle_timer(self, now: int) -> None:
        self.now = now  # the next datagrams_to_send call does the work


@pytest.mark.parametrize("loss", [0.0, 0.05, 0.2])
def test_buffers_carry_streams_both_ways_over_a_hostile_network(loss: float) -> None:
    left = MiniTransport(RIGHT_ADDRESS)
    right = MiniTransport(LEFT_ADDRESS)
    conditions = LinkConditions(
        delay_ns=10 * MS,
        jitter_ns=2 * MS,
        loss=loss,
        duplicate=0.05,
        reorder=0.05,
        corrupt=0.02,
        bandwidth_bytes_per_s=20_000_000,
        queue_bytes=400_000,
    )
    network = Network(
        left,
        right,
        a_address=LEFT_ADDRESS,
        b_address=RIGHT_ADDRESS,
        a_to_b=conditions,
        seed=int(loss * 100) + 1,
    )
    rng = random.Random(7)
    streams = {stream_id: rng.randbytes(400_000 + stream_id * 7_000) for stream_id in range(4)}
    for stream_id, data in streams.items():
        assert left.sender.write(stream_id, data) == len(data)
        left.sender.close(stream_id)
        assert right.sender.write(stream_id + 100, data[:20_000]) == 20_000
        right.sender.close(stream_id + 100)
    received: dict[int, bytearray] = {stream_id: bytearray() for stream_id in streams}
    received_left: dict[int, bytearray] = {stream_id + 100: bytearray() for stream_id in streams}

    def finished() -> bool:
        for stream_id in streams:
            received[stream_id] += right.receiver.read(stream_id)
            received_left[stream_id + 100] += left.receiver.read(stream_id + 100)
        return (
            all(right.receiver.at_eof(stream_id) for stream_id in streams)
            and all(left.receiver.at_eof(stream_id + 100) for stream_id in streams)
            and all(left.sender.is_send_finished(stream_id) for stream_id in streams)
        )

    network.run_until(
        lambda: finished() or left.failed is not None or right.failed is not None,
        limit_ns=120 * SECOND,
    )
    assert left.failed is None and right.failed is None, (left.failed, right.failed)
    for stream_id, data in streams.items():
        assert bytes(received[stream_id]) == data
        assert bytes(received_left[stream_id + 100]) == data[:20_000]
    assert left.sender.buffered_bytes == 0
    statistics = network.total_statistics()
    assert statistics.corrupted > 0 and left.dropped_corrupt + right.dropped_corrupt > 0
    if loss:
        assert left.sender.retransmitted_packets > 0
        assert statistics.lost > 0


def test_vanished_peer_ends_in_the_retry_limit() -> None:
    left = MiniTransport(RIGHT_ADDRESS, rto_ns=200 * MS)
    right = MiniTransport(LEFT_ADDRESS)
    network = Network(
        left,
        right,
        a_address=LEFT_ADDRESS,
        b_address=RIGHT_ADDRESS,
        a_to_b=LinkConditions(delay_ns=10 * MS),
        seed=3,
    )
    left.sender.write(1, DATA[:5000])
    network.run_until(lambda: left.sender.buffered_bytes == 0, limit_ns=SECOND)
    network.b_alive = False
    start = network.now
    left.sender.write(1, DATA[:100])
    network.run_until(lambda: left.failed is not None, limit_ns=start + 60 * SECOND)
    assert isinstance(left.failed, RetryLimitExceeded)
    # Six sends at 0, 0.2, 0.6, 1.4, 3.0, 6.2 s; the last one's backoff ends at 12.6 s.
    assert network.now - start == pytest.approx(12.6 * SECOND, rel=0.01)
    assert network.statistics("a").undelivered == MAX_SEND_ATTEMPTS
