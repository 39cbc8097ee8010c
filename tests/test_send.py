"""Tests of qotp.send: queues, packet choice, flow control, window probes; lossy pipes."""

from __future__ import annotations

import random
import struct
import zlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from netsim import MS, SECOND, Address, LinkConditions, Network
from sender import Sender

from qotp.errors import LocalProtocolError
from qotp.recovery import MAX_SEND_ATTEMPTS, RetryLimitExceeded
from qotp.recv import IN_ORDER_RESERVE_BYTES, InsertResult, ReceiveBuffer
from qotp.send import SEND_BUFFER_BYTES, OutgoingPacket, SendBuffer

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


def test_write_accepts_up_to_capacity_and_acks_free_space() -> None:
    buffer = Sender(capacity=1000)
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
    buffer = Sender()
    scratch = bytearray(b"abcdef")
    buffer.write(1, scratch)
    scratch[:] = b"zzzzzz"
    assert bytes(send(buffer, 0).data) == b"abcdef"


def test_bad_use_raises_local_protocol_error() -> None:
    buffer = Sender()
    with pytest.raises(LocalProtocolError):
        buffer.write(2**32, b"x")
    buffer.close(1)
    with pytest.raises(LocalProtocolError):
        buffer.write(1, b"x")
    with pytest.raises(LocalProtocolError):
        SendBuffer(capacity=0)


def test_packets_fill_the_budget_minus_the_header() -> None:
    buffer = Sender()
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
    buffer = Sender(capacity=0x1000000 + 5000, initial_peer_window=1 << 30)
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
    buffer = Sender()
    buffer.write(1, b"abc")
    assert buffer.next_packet(0, budget=8, rto_ns=RTO) is None
    assert buffer.next_packet(0, budget=17, rto_ns=RTO, ack_offset=0) is None
    assert bytes(send(buffer, 0, budget=9).data) == b"a"


def test_streams_are_served_round_robin() -> None:
    buffer = Sender()
    buffer.write(1, DATA[:3000])
    buffer.write(2, DATA[:3000])
    buffer.write(3, DATA[:100])
    order = [send(buffer, 0).stream_id for _ in range(6)]
    assert order == [1, 2, 3, 1, 2, 1]


def test_close_flag_rides_on_the_last_data_packet() -> None:
    buffer = Sender()
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
    buffer = Sender()
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
    buffer = Sender()
    assert buffer.close(4) == 0
    close = send(buffer, 0)
    assert (close.stream_id, close.offset, close.is_close) == (4, 0, True)
    assert buffer.on_ack(4, 0, 0, MS).send_finished


def test_bare_close_waits_for_a_ping_with_the_same_key() -> None:
    buffer = Sender()
    buffer.queue_ping(1)
    send(buffer, 0)
    buffer.close(1)
    assert buffer.next_packet(0, budget=BUDGET, rto_ns=RTO) is None
    assert buffer.has_new_work()
    buffer.on_ack(1, 0, 0, MS)
    assert send(buffer, MS).is_close


def test_peer_window_limits_new_data() -> None:
    buffer = Sender(initial_peer_window=3000)
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
    buffer = Sender()
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


def test_discard_stream_frees_everything_of_that_stream() -> None:
    buffer = Sender()
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
    buffer = Sender()
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
        self.sender = Sender(
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
        self.sender = Sender()
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
