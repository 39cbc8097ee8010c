"""QOTP endpoints over the seeded simulated network: loss, reordering, duplication, corruption."""

from __future__ import annotations

import hashlib
import random

import pytest
from netsim import MS, SECOND, LinkConditions, Network

from qotp.connection import Connection
from qotp.endpoint import QotpEndpoint
from qotp.events import ConnectionTerminated

MB = 1 << 20


def stream_payload(stream_id: int, size: int) -> bytes:
    return random.Random(stream_id).randbytes(size)


class Transfer:
    """Client writes ``size`` bytes on each of ``streams`` streams and closes; server reads."""

    def __init__(self, network: Network, client: QotpEndpoint, server: QotpEndpoint,
                 streams: int, size: int, *, zero_rtt: bool = False) -> None:  # fmt: skip
        self.network = network
        self.client = client
        self.server = server
        self.payloads = {stream_id: stream_payload(stream_id, size) for stream_id in range(streams)}
        self.offsets = dict.fromkeys(self.payloads, 0)
        self.received = {stream_id: bytearray() for stream_id in self.payloads}
        key = server.public_key if zero_rtt else None
        self.connection: Connection = client.connect(network.b_address, now=0, peer_public_key=key)

    def step(self, now: int) -> None:
        connection = self.connection
        if not connection.is_terminated:
            for stream_id, data in self.payloads.items():
                offset = self.offsets[stream_id]
                if offset < len(data):
                    written = connection.send_stream_data(
                        stream_id, data[offset : offset + 256 * 1024], now=now
                    )
                    self.offsets[stream_id] = offset + written
                    if self.offsets[stream_id] == len(data):
                        connection.close_stream(stream_id, now=now)
                    self.client.mark_ready(connection)
        server = self.server.connections.get(connection.connection_id)
        if server is not None:
            for stream_id in self.payloads:
                chunk = server.read(stream_id)
                if chunk:
                    self.received[stream_id].extend(chunk)
                    self.server.mark_ready(server)
        for endpoint in (self.client, self.server):
            while endpoint.next_event() is not None:
                pass

    def done(self) -> bool:
        return all(len(self.received[k]) == len(v) for k, v in self.payloads.items())

    def verify(self) -> None:
        for stream_id, data in self.payloads.items():
            assert (
                hashlib.sha256(self.received[stream_id]).digest() == hashlib.sha256(data).digest()
            )


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
    original = network._transmit

    def lossy(sender: str, datagram: bytes) -> None:
        if dropped[sender] < 2:
            dropped[sender] += 1
            return
        original(sender, datagram)

    network._transmit = lossy  # type: ignore[method-assign]
    transfer = Transfer(network, client, server, 2, 100_000, zero_rtt=zero_rtt)
    network.run_until(transfer.done, on_step=transfer.step, limit_ns=60 * SECOND)
    transfer.verify()
    assert transfer.connection.is_established


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
    now = 0
    reasons = []
    while now < 60 * SECOND and not connection.is_terminated:
        client.datagrams_to_send(now)
        while (event := client.next_event()) is not None:
            if isinstance(event, ConnectionTerminated):
                reasons.append(event.reason)
        timer = client.get_timer()
        if timer is None:
            break
        now = max(now + 1, timer)
        client.handle_timer(now)
    client.datagrams_to_send(now)
    while (event := client.next_event()) is not None:
        if isinstance(event, ConnectionTerminated):
            reasons.append(event.reason)
    assert reasons and "handshake" in reasons[0]
