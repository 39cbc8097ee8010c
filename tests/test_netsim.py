"""Tests of tests/netsim.py: QOTP endpoints over the seeded simulated network (loss,
reordering, duplication, corruption), then the link model itself, driven by toy endpoints
whose every datagram can be accounted for.
"""

from __future__ import annotations

import struct
import zlib

import pytest
from enginepair import run_alone
from netsim import (
    MS,
    SECOND,
    Address,
    LinkConditions,
    LinkStatistics,
    Network,
    SimulationStalled,
)
from transfer import Transfer as SharedTransfer

from qotp.endpoint import QotpEndpoint
from qotp.events import TerminationReason

MB = 1 << 20


class Transfer(SharedTransfer):
    """The shared driver bound to its network; the server leaves its halves open."""

    def __init__(self, network: Network, client: QotpEndpoint, server: QotpEndpoint,
                 streams: int, size: int, *, zero_rtt: bool = False) -> None:  # fmt: skip
        key = server.public_key if zero_rtt else None
        super().__init__(
            client, server, network.b_address, streams, size, peer_public_key=key, close=False
        )
        self.network = network


def run_transfer(conditions: LinkConditions, *, streams: int, size: int, seed: int,
                 zero_rtt: bool = False, limit_s: int = 900) -> Transfer:  # fmt: skip
    client, server = QotpEndpoint(), QotpEndpoint()
    network = Network(client, server, a_to_b=conditions, b_to_a=conditions, seed=seed)
    transfer = Transfer(network, client, server, streams, size, zero_rtt=zero_rtt)
    network.run_until(transfer.done, on_step=transfer.step, limit_ns=limit_s * SECOND)
    transfer.verify()
    return transfer


@pytest.mark.parametrize("loss", [0.0, 0.05, 0.20])
def test_32_mb_over_8_streams_arrives_bit_exact(loss: float) -> None:
    conditions = LinkConditions(
        delay_ns=5 * MS, jitter_ns=2 * MS, loss=loss, duplicate=0.02,
        bandwidth_bytes_per_s=200 * MB, queue_bytes=4 * MB,
    )  # fmt: skip
    transfer = run_transfer(conditions, streams=8, size=4 * MB, seed=7)
    stats = transfer.network.statistics("a")
    if loss:
        assert stats.lost > 0 and transfer.connection.statistics().retransmitted_packets > 0
    assert stats.duplicated > 0


@pytest.mark.parametrize("seed", [4, 7, 10])
def test_a_lossy_tail_does_not_end_a_live_connection(seed: int) -> None:
    """With 20 % loss each way, some packet of a few thousand meets six failed round
    trips in a row while the peer keeps acknowledging others.  Those fast resends must
    neither count towards the retry limit (the connection used to end once the rest
    of the transfer was done: these seeds did) nor stretch its timer."""
    conditions = LinkConditions(
        delay_ns=5 * MS, jitter_ns=2 * MS, loss=0.2, duplicate=0.02, corrupt=0.005,
        bandwidth_bytes_per_s=100 * MB, queue_bytes=4 * MB,
    )  # fmt: skip
    client, server = QotpEndpoint(), QotpEndpoint()
    network = Network(client, server, a_to_b=conditions, b_to_a=conditions, seed=seed)
    transfer = Transfer(network, client, server, 4, MB)
    connection = transfer.connection

    def everything_acknowledged() -> bool:
        return transfer.done() and connection.send_buffer.buffered_bytes == 0

    network.run_until(everything_acknowledged, on_step=transfer.step, limit_ns=60 * SECOND)
    transfer.verify()
    assert not connection.is_terminated
    assert network.now < 5 * SECOND


def test_corruption_is_dropped_not_delivered() -> None:
    conditions = LinkConditions(delay_ns=2 * MS, corrupt=0.05, jitter_ns=1 * MS)
    transfer = run_transfer(conditions, streams=2, size=MB, seed=3)
    assert transfer.network.statistics("a").corrupted > 0
    server = transfer.server.connections[transfer.connection.connection_id]
    assert server.dropped_datagrams > 0


@pytest.mark.parametrize("zero_rtt", [False, True])
def test_handshake_packets_lost(zero_rtt: bool) -> None:
    # Drop the first two datagrams in each direction: the first packet and the first
    # replies are lost and the handshake still completes (six tries in all).
    client, server = QotpEndpoint(), QotpEndpoint()
    network = Network(client, server, a_to_b=LinkConditions(delay_ns=20 * MS), seed=1)
    dropped = {"a": 0, "b": 0}

    def first_two(sender: str, datagram: bytes) -> bool:
        dropped[sender] += 1
        return dropped[sender] <= 2

    network.drop = first_two
    transfer = Transfer(network, client, server, 2, 100_000, zero_rtt=zero_rtt)
    network.run_until(transfer.done, on_step=transfer.step, limit_ns=60 * SECOND)
    transfer.verify()
    assert transfer.connection.is_established
    assert network.statistics("a").lost == network.statistics("b").lost == 2


def test_peer_that_vanishes_ends_the_connection() -> None:
    client, server = QotpEndpoint(), QotpEndpoint()
    network = Network(client, server, a_to_b=LinkConditions(delay_ns=10 * MS), seed=2)
    transfer = Transfer(network, client, server, 1, 10 * MB)
    network.run_until(lambda: len(transfer.received[0]) > MB, on_step=transfer.step)
    network.b_alive = False  # the server disappears mid-transfer
    network.run_until(
        lambda: transfer.connection.is_terminated,
        on_step=transfer.step,
        limit_ns=network.now + 120 * SECOND,
    )
    assert transfer.connection.is_terminated


def test_same_seed_same_run() -> None:
    conditions = LinkConditions(delay_ns=3 * MS, jitter_ns=3 * MS, loss=0.1, duplicate=0.05)
    first = run_transfer(conditions, streams=2, size=300_000, seed=11)
    second = run_transfer(conditions, streams=2, size=300_000, seed=11)
    assert first.network.now == second.network.now
    assert first.network.statistics("a") == second.network.statistics("a")


def test_terminated_event_reason_for_vanished_peer() -> None:
    client = QotpEndpoint()
    connection = client.connect(("10.0.0.2", 2000), now=0)
    connection.send_stream_data(0, b"x" * 10_000, now=0)
    _sends, ended, _now = run_alone(client, limit_ns=60 * SECOND)
    assert connection.is_terminated
    assert ended and ended[0].reason is TerminationReason.HANDSHAKE_FAILED
    assert "no reply" in ended[0].detail


# -- the link model itself, with toy endpoints ----------------------------------------

SENDER: Address = ("10.0.0.1", 1000)
RECEIVER: Address = ("10.0.0.2", 2000)
#: CRC-32 of the rest, then a sequence number (u32).
TOY_HEADER = struct.Struct("<II")
PAYLOAD = bytes((i * 7 + 3) % 256 for i in range(20_000))


def frame(sequence: int, payload: bytes) -> bytes:
    body = struct.pack("<I", sequence) + payload
    return struct.pack("<I", zlib.crc32(body)) + body


def unframe(data: bytes) -> tuple[int, bytes] | None:
    if len(data) < TOY_HEADER.size:
        return None
    checksum, sequence = TOY_HEADER.unpack_from(data)
    if zlib.crc32(data[4:]) != checksum:
        return None
    return sequence, data[TOY_HEADER.size :]


class StopAndWaitSender:
    """Sends ``data`` in chunks, one at a time, resending each after ``rto_ns``."""

    def __init__(self, data: bytes, *, chunk: int = 500, rto_ns: int = 50 * MS) -> None:
        self.chunks = [data[i : i + chunk] for i in range(0, len(data), chunk)]
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

    def receive_datagram(self, data: bytes, address: Address, now: int) -> None:
        parsed = unframe(data)
        if parsed is None:
            self.corrupt_acks += 1
        elif parsed[0] == self.next_index:
            self.next_index += 1
            self.deadline = None
            self.pending_send = not self.done

    def datagrams_to_send(self, now: int) -> list[tuple[bytes, Address]]:
        if not self.pending_send:
            return []
        self.pending_send = False
        self.deadline = now + self.rto_ns
        self.transmissions += 1
        return [(frame(self.next_index, self.chunks[self.next_index]), RECEIVER)]

    def get_timer(self) -> int | None:
        return self.deadline

    def handle_timer(self, now: int) -> None:
        self.timer_calls += 1
        if self.deadline is not None and now >= self.deadline:
            self.deadline = None
            self.pending_send = True


class Receiver:
    """ACKs every valid datagram to wherever it came from; keeps the chunks in order."""

    def __init__(self) -> None:
        self.received = bytearray()
        self.expected = 0
        self.acks: list[tuple[bytes, Address]] = []
        self.corrupt = 0
        self.sources: list[Address] = []
        self.arrivals: list[int] = []

    def receive_datagram(self, data: bytes, address: Address, now: int) -> None:
        self.arrivals.append(now)
        parsed = unframe(data)
        if parsed is None:
            self.corrupt += 1
            return
        sequence, payload = parsed
        if address not in self.sources:
            self.sources.append(address)
        if sequence == self.expected:
            self.received += payload
            self.expected += 1
        self.acks.append((frame(sequence, b""), address))

    def datagrams_to_send(self, now: int) -> list[tuple[bytes, Address]]:
        acks, self.acks = self.acks, []
        return acks

    def get_timer(self) -> int | None:
        return None

    def handle_timer(self, now: int) -> None:
        pass


class Blaster(Receiver):
    """Sends ``count`` datagrams of ``size`` bytes at the first chance, then nothing."""

    def __init__(self, count: int, size: int) -> None:
        super().__init__()
        self.acks = [(frame(i, bytes(size - TOY_HEADER.size)), RECEIVER) for i in range(count)]

    def receive_datagram(self, data: bytes, address: Address, now: int) -> None:
        pass  # the ACKs


def toy_network(
    sender: Receiver | StopAndWaitSender,
    receiver: Receiver,
    conditions: LinkConditions,
    *,
    seed: int = 1,
) -> Network:
    """``sender`` at SENDER ("a"), ``receiver`` at RECEIVER ("b"), the same conditions both ways."""
    return Network(
        sender, receiver, a_address=SENDER, b_address=RECEIVER, a_to_b=conditions, seed=seed
    )


def stop_and_wait(
    conditions: LinkConditions, seed: int
) -> tuple[Network, StopAndWaitSender, Receiver]:
    sender, receiver = StopAndWaitSender(PAYLOAD), Receiver()
    network = toy_network(sender, receiver, conditions, seed=seed)
    network.run_until(lambda: sender.done)
    return network, sender, receiver


def test_clean_link_takes_one_round_trip_per_chunk() -> None:
    network, sender, receiver = stop_and_wait(LinkConditions(delay_ns=10 * MS), 1)
    assert bytes(receiver.received) == PAYLOAD
    assert sender.transmissions == 40
    assert network.now == 40 * 20 * MS
    assert network.statistics("a") == network.statistics("b")
    assert network.total_statistics() == LinkStatistics(sent=80, delivered=80)


@pytest.mark.parametrize("loss", [0.05, 0.2, 0.5])
def test_hostile_link_still_delivers_bit_exact(loss: float) -> None:
    conditions = LinkConditions(
        delay_ns=10 * MS, jitter_ns=5 * MS, loss=loss, duplicate=0.1,
        reorder=0.1, reorder_delay_ns=30 * MS, corrupt=0.05,
    )  # fmt: skip
    network, sender, receiver = stop_and_wait(conditions, 7)
    assert bytes(receiver.received) == PAYLOAD
    stats = network.total_statistics()
    assert stats.lost > 0 and stats.duplicated > 0 and stats.reordered > 0
    assert stats.corrupted > 0
    assert receiver.corrupt + sender.corrupt_acks > 0
    # Every datagram is accounted for: the receiver ACKs each valid arrival.
    assert stats.sent == sender.transmissions + len(receiver.arrivals) - receiver.corrupt
    assert stats.sent - stats.lost + stats.duplicated == stats.delivered + network.in_flight


def test_same_seed_same_run_other_seed_other_run() -> None:
    conditions = LinkConditions(
        delay_ns=3 * MS, jitter_ns=2 * MS, loss=0.2, duplicate=0.1, corrupt=0.05
    )
    first, _, first_receiver = stop_and_wait(conditions, 42)
    second, _, second_receiver = stop_and_wait(conditions, 42)
    other, _, _ = stop_and_wait(conditions, 43)
    assert first.now == second.now
    assert first.total_statistics() == second.total_statistics()
    assert first_receiver.arrivals == second_receiver.arrivals
    assert (other.now, other.total_statistics()) != (first.now, first.total_statistics())


def test_clock_jumps_to_timers_instead_of_ticking() -> None:
    sender = StopAndWaitSender(b"x" * 10, rto_ns=10 * SECOND)
    network = toy_network(sender, Receiver(), LinkConditions(loss=1.0))
    network.run_until(lambda: network.now >= 3600 * SECOND, limit_ns=3600 * SECOND)
    assert network.now == 3600 * SECOND
    assert sender.timer_calls == 360
    assert sender.transmissions == 361  # the first send and one per timer
    with pytest.raises(AssertionError, match="not met within 3601 s"):
        network.run_until(lambda: sender.done, limit_ns=3601 * SECOND)


def test_run_until_returns_at_once_when_the_condition_holds() -> None:
    sender = StopAndWaitSender(PAYLOAD)
    network = toy_network(sender, Receiver(), LinkConditions())
    network.run_until(lambda: True)
    assert network.now == 0
    assert sender.transmissions == 1 and network.in_flight == 1  # it did send first


def test_idle_network_is_an_error_not_a_hang() -> None:
    network = toy_network(Receiver(), Receiver(), LinkConditions())
    with pytest.raises(AssertionError, match="nothing left to do"):
        network.run_until(lambda: False)


def test_bandwidth_limit_serialises_datagrams() -> None:
    receiver = Receiver()
    conditions = LinkConditions(delay_ns=10 * MS, bandwidth_bytes_per_s=1_000_000)
    network = toy_network(Blaster(100, 1000), receiver, conditions)
    network.run_until(lambda: len(receiver.arrivals) == 100)
    # 1000 bytes at 1 MB/s take 1 ms each: the last leaves after 100 ms.
    assert receiver.arrivals[0] == 11 * MS
    assert receiver.arrivals[-1] == 110 * MS
    assert receiver.arrivals == sorted(receiver.arrivals)


def test_queue_limit_drops_the_tail() -> None:
    receiver = Receiver()
    conditions = LinkConditions(delay_ns=MS, bandwidth_bytes_per_s=1_000_000, queue_bytes=10_000)
    network = toy_network(Blaster(100, 1000), receiver, conditions)
    network.run_until(lambda: network.in_flight == 0)
    # One datagram on the wire and ten (10,000 bytes) waiting behind it; the rest is dropped.
    assert network.statistics("a").queue_dropped == 89
    assert len(receiver.arrivals) == 11


def test_mtu_drops_large_datagrams() -> None:
    receiver = Receiver()
    network = toy_network(Blaster(3, 1300), receiver, LinkConditions(mtu=1200))
    network.run_until(lambda: network.in_flight == 0)
    assert network.statistics("a").mtu_dropped == 3
    assert receiver.arrivals == []


def test_jitter_reorders() -> None:
    receiver = Receiver()
    conditions = LinkConditions(delay_ns=MS, jitter_ns=5 * MS)
    network = toy_network(Blaster(50, 100), receiver, conditions, seed=3)
    network.run_until(lambda: len(receiver.arrivals) == 50)
    assert receiver.expected < 50  # some arrived out of order
    assert all(MS <= arrival < 6 * MS for arrival in receiver.arrivals)


def test_reorder_holds_some_datagrams_back() -> None:
    receiver = Receiver()
    conditions = LinkConditions(delay_ns=MS, reorder=0.2, reorder_delay_ns=10 * MS)
    network = toy_network(Blaster(50, 100), receiver, conditions, seed=3)
    network.run_until(lambda: len(receiver.arrivals) == 50)
    held_back = receiver.arrivals.count(11 * MS)
    assert held_back == network.statistics("a").reordered > 0
    assert receiver.arrivals.count(MS) == 50 - held_back
    assert receiver.expected < 50


def test_each_direction_has_its_own_conditions() -> None:
    sender, receiver = StopAndWaitSender(b"y" * 100), Receiver()
    network = Network(sender, receiver, a_address=SENDER, b_address=RECEIVER,
                      a_to_b=LinkConditions(delay_ns=30 * MS),
                      b_to_a=LinkConditions(delay_ns=10 * MS))  # fmt: skip
    network.run_until(lambda: sender.done)
    assert receiver.arrivals == [30 * MS]
    assert network.now == 40 * MS


def test_vanished_peer_loses_everything_until_it_returns() -> None:
    sender, receiver = StopAndWaitSender(PAYLOAD), Receiver()
    network = toy_network(sender, receiver, LinkConditions(delay_ns=5 * MS))
    network.run_until(lambda: sender.next_index >= 5)
    network.b_alive = False
    network.run_until(lambda: network.now >= 5 * SECOND)
    assert sender.next_index in (5, 6)  # an ACK may have been on its way
    assert network.statistics("a").undelivered > 0
    network.b_alive = True
    network.run_until(lambda: sender.done)
    assert bytes(receiver.received) == PAYLOAD


def test_rebinding_changes_the_source_and_strands_the_old_address() -> None:
    sender, receiver = StopAndWaitSender(PAYLOAD[:2000]), Receiver()
    network = toy_network(sender, receiver, LinkConditions(delay_ns=5 * MS))
    network.run_until(lambda: sender.next_index >= 2)
    # Chunk 2 has just left from the old address; the receiver ACKs it there, in vain.
    new_address = ("192.0.2.7", 4444)
    network.a_address = new_address
    network.run_until(lambda: sender.done)
    assert receiver.sources == [SENDER, new_address]
    assert bytes(receiver.received) == PAYLOAD[:2000]
    assert network.statistics("b").undelivered == 1
    assert sender.transmissions == 5  # four chunks, chunk 2 twice


def test_drop_hook_loses_chosen_datagrams() -> None:
    sender, receiver = StopAndWaitSender(PAYLOAD[:1500]), Receiver()
    network = toy_network(sender, receiver, LinkConditions())
    network.drop = lambda side, datagram: (
        side == "a" and unframe(datagram) == (1, PAYLOAD[500:1000])
    )
    with pytest.raises(AssertionError, match="not met"):
        network.run_until(lambda: sender.done, limit_ns=10 * SECOND)
    assert sender.next_index == 1
    network.drop = None
    network.run_until(lambda: sender.done, limit_ns=20 * SECOND)
    assert bytes(receiver.received) == PAYLOAD[:1500]


def test_a_timer_that_never_advances_is_reported() -> None:
    class Stuck(Receiver):
        def get_timer(self) -> int | None:
            return 0

    network = toy_network(Stuck(), Receiver(), LinkConditions())
    with pytest.raises(SimulationStalled):
        network.run_until(lambda: False)


def test_reorder_spread_varies_the_hold_back() -> None:
    receiver = Receiver()
    conditions = LinkConditions(
        delay_ns=MS, reorder=0.5, reorder_delay_ns=0, reorder_spread_ns=30 * MS
    )
    network = toy_network(Blaster(50, 100), receiver, conditions, seed=3)
    network.run_until(lambda: len(receiver.arrivals) == 50)
    held_back = [arrival for arrival in receiver.arrivals if arrival != MS]
    assert all(MS < arrival < 31 * MS for arrival in held_back)
    assert len(set(held_back)) > 5  # not one fixed hold-back
    assert network.statistics("a").reordered >= len(held_back)


def test_many_endpoints_route_by_address() -> None:
    """The DTLS endpoint tests' shape: one server, several clients, each on its own link."""
    first = StopAndWaitSender(PAYLOAD[:3000])
    second = StopAndWaitSender(PAYLOAD[3000:5000])
    receiver = Receiver()
    network = Network(seed=5)
    network.add("receiver", receiver, RECEIVER, LinkConditions(delay_ns=2 * MS))
    network.add("first", first, ("10.0.0.11", 1), LinkConditions(delay_ns=5 * MS, loss=0.3))
    network.add("second", second, ("10.0.0.12", 2), LinkConditions(delay_ns=7 * MS))
    network.run_until(lambda: first.done and second.done, limit_ns=60 * SECOND)
    assert receiver.sources == [("10.0.0.11", 1), ("10.0.0.12", 2)]
    assert network.statistics("first").lost > 0 and network.statistics("second").lost == 0
    assert network.statistics("receiver").delivered == len(first.chunks) + len(second.chunks)
    # An address no node holds swallows what is sent to it.
    network.inject("first", frame(0, b"x"), source=("10.0.0.11", 1), delay_ns=0,
                   destination=("10.9.9.9", 9))  # fmt: skip
    network.run_until_quiet(limit_ns=network.now + SECOND)
    assert network.statistics("first").undelivered == 1


def test_run_until_quiet_returns_when_idle_or_at_the_limit() -> None:
    sender, receiver = StopAndWaitSender(PAYLOAD[:1000]), Receiver()
    network = toy_network(sender, receiver, LinkConditions(delay_ns=5 * MS))
    network.run_until_quiet(limit_ns=12 * MS)  # the first round trip ends at 10 ms
    assert network.now <= 12 * MS and sender.next_index == 1
    network.run_until_quiet(limit_ns=SECOND)
    assert sender.done and network.in_flight == 0 and network.now == 20 * MS
