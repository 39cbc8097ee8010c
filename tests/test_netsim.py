"""Tests of tests/netsim.py, driven by toy sans-IO endpoints defined here.

The toys are a stop-and-wait sender (one chunk in flight, CRC-checked, resent
on a timer) and a receiver that ACKs every valid chunk, plus a blaster that
sends everything at once for the bandwidth tests. They prove the simulator
before the real engine exists.
"""

from __future__ import annotations

import struct
import zlib

import pytest
from netsim import (
    NS_PER_SECOND,
    Addr,
    LinkConfig,
    Network,
    SimulationStalled,
)

MS = 1_000_000
SENDER: Addr = ("10.0.0.1", 1000)
RECEIVER: Addr = ("10.0.0.2", 2000)
#: sequence number (u32) and CRC-32 of the rest.
HEADER = struct.Struct("<II")


def frame(sequence: int, payload: bytes) -> bytes:
    body = struct.pack("<I", sequence) + payload
    return struct.pack("<I", zlib.crc32(body)) + body


def unframe(data: bytes) -> tuple[int, bytes] | None:
    if len(data) < HEADER.size:
        return None
    (checksum,) = struct.unpack_from("<I", data)
    body = data[4:]
    if zlib.crc32(body) != checksum:
        return None
    (sequence,) = struct.unpack_from("<I", body)
    return sequence, body[4:]


class StopAndWaitSender:
    """Sends ``data`` in chunks, one at a time, resending each after ``rto_ns``."""

    def __init__(self, data: bytes, peer: Addr, *, chunk: int = 500, rto_ns: int = 50 * MS):
        self.chunks = [data[i : i + chunk] for i in range(0, len(data), chunk)]
        self.peer = peer
        self.rto_ns = rto_ns
        self.next_index = 0
        self.deadline: int | None = None
        self.pending_send = bool(self.chunks)
        self.transmissions = 0
        self.timer_calls = 0
        self.corrupt_acks = 0

    @property
    def done(self) -> bool:
        return self.next_index == len(self.chunks)

    def receive_datagram(self, data: bytes, addr: Addr, now: int) -> None:
        parsed = unframe(data)
        if parsed is None:
            self.corrupt_acks += 1
            return
        sequence, _ = parsed
        if sequence == self.next_index:
            self.next_index += 1
            self.deadline = None
            self.pending_send = not self.done

    def datagrams_to_send(self, now: int) -> list[tuple[bytes, Addr]]:
        if not self.pending_send:
            return []
        self.pending_send = False
        self.deadline = now + self.rto_ns
        self.transmissions += 1
        return [(frame(self.next_index, self.chunks[self.next_index]), self.peer)]

    def get_timer(self) -> int | None:
        return self.deadline

    def handle_timer(self, now: int) -> None:
        self.timer_calls += 1
        if self.deadline is not None and now >= self.deadline:
            self.deadline = None
            self.pending_send = True


class Receiver:
    """ACKs every valid chunk; keeps the ones that arrive in order."""

    def __init__(self) -> None:
        self.received = bytearray()
        self.expected = 0
        self.acks: list[tuple[bytes, Addr]] = []
        self.corrupt = 0
        self.duplicates = 0
        self.sources: list[Addr] = []
        self.arrivals: list[int] = []

    def receive_datagram(self, data: bytes, addr: Addr, now: int) -> None:
        self.arrivals.append(now)
        parsed = unframe(data)
        if parsed is None:
            self.corrupt += 1
            return
        sequence, payload = parsed
        if addr not in self.sources:
            self.sources.append(addr)
        if sequence == self.expected:
            self.received += payload
            self.expected += 1
        else:
            self.duplicates += 1
        self.acks.append((frame(sequence, b""), addr))

    def datagrams_to_send(self, now: int) -> list[tuple[bytes, Addr]]:
        acks, self.acks = self.acks, []
        return acks

    def get_timer(self) -> int | None:
        return None

    def handle_timer(self, now: int) -> None:
        pass


class Blaster:
    """Sends ``count`` datagrams of ``size`` bytes at the first chance."""

    def __init__(self, peer: Addr, count: int, size: int) -> None:
        self.batch = [(frame(i, bytes(size - HEADER.size)), peer) for i in range(count)]

    def receive_datagram(self, data: bytes, addr: Addr, now: int) -> None:
        pass

    def datagrams_to_send(self, now: int) -> list[tuple[bytes, Addr]]:
        batch, self.batch = self.batch, []
        return batch

    def get_timer(self) -> int | None:
        return None

    def handle_timer(self, now: int) -> None:
        pass


PAYLOAD = bytes((i * 7 + 3) % 256 for i in range(20_000))


def transfer(
    seed: int, config: LinkConfig, data: bytes = PAYLOAD
) -> tuple[Network, StopAndWaitSender, Receiver, bool]:
    network = Network(seed=seed, default_link=config)
    sender = StopAndWaitSender(data, RECEIVER)
    receiver = Receiver()
    network.add(sender, SENDER)
    network.add(receiver, RECEIVER)
    finished = network.run_until(lambda: sender.done, 600 * NS_PER_SECOND)
    return network, sender, receiver, finished


def test_clean_link_takes_one_round_trip_per_chunk() -> None:
    network, sender, receiver, finished = transfer(1, LinkConfig(delay_ns=10 * MS))
    assert finished
    assert bytes(receiver.received) == PAYLOAD
    assert sender.transmissions == 40
    assert network.now == 40 * 20 * MS
    stats = network.stats
    assert stats.sent == 80 and stats.delivered == 80
    assert stats.dropped == stats.duplicated == stats.corrupted == 0


@pytest.mark.parametrize("loss", [0.05, 0.2, 0.5])
def test_hostile_link_still_delivers_bit_exact(loss: float) -> None:
    config = LinkConfig(
        delay_ns=10 * MS,
        jitter_ns=5 * MS,
        loss=loss,
        duplicate=0.1,
        reorder=0.1,
        reorder_delay_ns=30 * MS,
        corrupt=0.05,
    )
    network, sender, receiver, finished = transfer(7, config)
    assert finished
    assert bytes(receiver.received) == PAYLOAD
    stats = network.stats
    assert stats.dropped > 0 and stats.duplicated > 0 and stats.reordered > 0
    assert stats.corrupted > 0
    assert receiver.corrupt + sender.corrupt_acks > 0
    assert stats.sent == sender.transmissions + len(receiver.arrivals) - receiver.corrupt
    assert stats.sent - stats.dropped + stats.duplicated == stats.delivered


def test_same_seed_same_run_other_seed_other_run() -> None:
    config = LinkConfig(delay_ns=3 * MS, jitter_ns=2 * MS, loss=0.2, duplicate=0.1, corrupt=0.05)
    first = transfer(42, config)
    second = transfer(42, config)
    other = transfer(43, config)
    assert first[0].now == second[0].now
    assert first[0].stats == second[0].stats
    assert first[2].arrivals == second[2].arrivals
    assert (other[0].now, other[0].stats) != (first[0].now, first[0].stats)


def test_clock_jumps_to_timers_instead_of_ticking() -> None:
    network = Network(seed=1, default_link=LinkConfig(loss=1.0))
    sender = StopAndWaitSender(b"x" * 10, RECEIVER, rto_ns=10 * NS_PER_SECOND)
    network.add(sender, SENDER)
    network.add(Receiver(), RECEIVER)
    assert not network.run_until(lambda: sender.done, 3600 * NS_PER_SECOND)
    assert network.now == 3600 * NS_PER_SECOND
    assert sender.timer_calls == 360
    assert sender.transmissions == 361  # the first send and one per timer


def test_run_until_returns_at_once_when_the_predicate_holds() -> None:
    network = Network(seed=1, start_ns=5)
    assert network.run_until(lambda: True, NS_PER_SECOND)
    assert network.now == 5


def test_idle_network_jumps_to_the_limit() -> None:
    network = Network(seed=1)
    network.run_for(2 * NS_PER_SECOND)
    assert network.now == 2 * NS_PER_SECOND


def test_bandwidth_limit_serialises_datagrams() -> None:
    network = Network(
        seed=1, default_link=LinkConfig(delay_ns=10 * MS, bandwidth_bytes_per_s=1_000_000)
    )
    receiver = Receiver()
    network.add(Blaster(RECEIVER, 100, 1000), SENDER)
    network.add(receiver, RECEIVER)
    network.run_for(NS_PER_SECOND)
    assert len(receiver.arrivals) == 100
    # 1000 bytes at 1 MB/s take 1 ms each: the last leaves after 100 ms.
    assert receiver.arrivals[0] == 11 * MS
    assert receiver.arrivals[-1] == 110 * MS
    assert receiver.arrivals == sorted(receiver.arrivals)


def test_queue_limit_drops_the_tail() -> None:
    config = LinkConfig(delay_ns=MS, bandwidth_bytes_per_s=1_000_000, queue_limit_bytes=10_000)
    network = Network(seed=1, default_link=config)
    receiver = Receiver()
    network.add(Blaster(RECEIVER, 100, 1000), SENDER)
    network.add(receiver, RECEIVER)
    network.run_for(NS_PER_SECOND)
    stats = network.link_stats(SENDER, RECEIVER)
    # Ten datagrams fit in the queue (the one on the wire included).
    assert stats.dropped_queue == 90
    assert len(receiver.arrivals) == 10


def test_mtu_drops_large_datagrams() -> None:
    network = Network(seed=1, default_link=LinkConfig(mtu=1200))
    receiver = Receiver()
    network.add(Blaster(RECEIVER, 3, 1300), SENDER)
    network.add(receiver, RECEIVER)
    network.run_for(NS_PER_SECOND)
    assert network.stats.dropped_mtu == 3
    assert receiver.arrivals == []


def test_jitter_reorders() -> None:
    network = Network(seed=3, default_link=LinkConfig(delay_ns=MS, jitter_ns=5 * MS))
    receiver = Receiver()
    network.add(Blaster(RECEIVER, 50, 100), SENDER)
    network.add(receiver, RECEIVER)
    network.run_for(NS_PER_SECOND)
    assert receiver.expected < 50  # some arrived out of order
    assert len(receiver.arrivals) == 50


def test_per_link_configuration_and_asymmetry() -> None:
    network = Network(seed=1)
    network.set_link(SENDER, RECEIVER, LinkConfig(delay_ns=30 * MS), symmetric=False)
    network.set_link(RECEIVER, SENDER, LinkConfig(delay_ns=10 * MS), symmetric=False)
    sender = StopAndWaitSender(b"y" * 100, RECEIVER)
    receiver = Receiver()
    network.add(sender, SENDER)
    network.add(receiver, RECEIVER)
    assert network.run_until(lambda: sender.done, NS_PER_SECOND)
    assert receiver.arrivals == [30 * MS]
    assert network.now == 40 * MS


def test_vanishing_peer_is_a_blackhole() -> None:
    network = Network(seed=1, default_link=LinkConfig(delay_ns=5 * MS))
    sender = StopAndWaitSender(PAYLOAD, RECEIVER)
    receiver = Receiver()
    network.add(sender, SENDER)
    network.add(receiver, RECEIVER)
    network.run_until(lambda: sender.next_index >= 5, NS_PER_SECOND)
    network.blackhole(RECEIVER)
    assert not network.run_until(lambda: sender.done, 5 * NS_PER_SECOND)
    assert sender.next_index in (5, 6)
    assert network.stats.dropped_blackhole > 0
    network.blackhole(RECEIVER, enabled=False)
    assert network.run_until(lambda: sender.done, 60 * NS_PER_SECOND)
    assert bytes(receiver.received) == PAYLOAD


def test_rebinding_changes_the_source_address() -> None:
    network = Network(seed=1, default_link=LinkConfig(delay_ns=5 * MS))
    sender = StopAndWaitSender(PAYLOAD[:2000], RECEIVER)
    receiver = Receiver()
    network.add(sender, SENDER)
    network.add(receiver, RECEIVER)
    network.run_until(lambda: sender.next_index >= 2, NS_PER_SECOND)
    new_address = ("192.0.2.7", 4444)
    network.rebind(SENDER, new_address)
    assert network.run_until(lambda: sender.done, 10 * NS_PER_SECOND)
    assert receiver.sources == [SENDER, new_address]
    assert bytes(receiver.received) == PAYLOAD[:2000]


def test_datagrams_to_unknown_addresses_are_counted() -> None:
    network = Network(seed=1)
    network.add(Blaster(("203.0.113.1", 9), 4, 100), SENDER)
    network.run_for(NS_PER_SECOND)
    assert network.stats.dropped_unroutable == 4


def test_a_timer_that_never_advances_is_reported() -> None:
    class Stuck(Receiver):
        def get_timer(self) -> int | None:
            return 0

    network = Network(seed=1)
    network.add(Stuck(), SENDER)
    with pytest.raises(SimulationStalled):
        network.run_for(NS_PER_SECOND)


def test_trace_records_each_datagrams_fate() -> None:
    network = Network(seed=2, default_link=LinkConfig(loss=0.5), trace=True)
    network.add(Blaster(RECEIVER, 20, 50), SENDER)
    network.add(Receiver(), RECEIVER)
    network.run_for(NS_PER_SECOND)
    assert network.trace is not None
    fates = [entry.fate for entry in network.trace]
    assert len(fates) == network.stats.sent  # the blaster's 20 and the receiver's ACKs
    assert fates.count("lost") == network.stats.dropped
