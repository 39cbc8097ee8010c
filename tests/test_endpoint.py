"""Endpoint and connection behaviour over an ideal virtual link."""

from __future__ import annotations

import hashlib
import os

import pytest
from enginepair import SERVER_ADDRESS, EnginePair

from qotp.config import QotpConfiguration, ZeroRttPolicy
from qotp.connection import Connection, EarlyData
from qotp.endpoint import QotpEndpoint
from qotp.events import (
    ConnectionEstablished,
    ConnectionTerminated,
    PeerAddressChanged,
    StreamClosed,
    StreamOpened,
)
from qotp.keys import KeyPair

SECOND = 1_000_000_000


def server_connection(pair: EnginePair) -> Connection:
    (connection,) = pair.server.connections.values()
    return connection


def transfer(pair: EnginePair, client: Connection, payloads: dict[int, bytes]) -> dict[int, bytes]:
    """Write every stream fully (closing it), read everything on the server side."""
    offsets = dict.fromkeys(payloads, 0)
    received: dict[int, bytearray] = {stream_id: bytearray() for stream_id in payloads}

    def progress() -> bool:
        for stream_id, data in payloads.items():
            if offsets[stream_id] < len(data):
                offsets[stream_id] += client.send_stream_data(
                    stream_id, data[offsets[stream_id] :], now=pair.now
                )
                if offsets[stream_id] == len(data):
                    client.close_stream(stream_id, now=pair.now)
                pair.client.mark_ready(client)
        server = pair.server.connections.get(client.connection_id)
        if server is not None:
            for stream_id in payloads:
                chunk = server.read(stream_id, now=pair.now)
                if chunk:
                    received[stream_id].extend(chunk)
                    pair.server.mark_ready(server)
        return all(len(received[k]) == len(v) for k, v in payloads.items())

    pair.run_until(progress)
    return {stream_id: bytes(data) for stream_id, data in received.items()}


@pytest.mark.parametrize("zero_rtt", [False, True])
def test_handshake_and_multi_stream_transfer(zero_rtt: bool) -> None:
    pair = EnginePair()
    key = pair.server.public_key if zero_rtt else None
    client = pair.client.connect(SERVER_ADDRESS, now=0, peer_public_key=key)
    payloads = {stream_id: os.urandom(50_000 + 977 * stream_id) for stream_id in range(5)}
    assert transfer(pair, client, payloads) == payloads
    established = [e for e in pair.events["client"] if isinstance(e, ConnectionEstablished)]
    assert established and established[0].peer_public_key == pair.server.public_key
    opened = {e.stream_id for e in pair.events["server"] if isinstance(e, StreamOpened)}
    assert opened == set(payloads)


def test_zero_rtt_data_rides_in_the_first_packet() -> None:
    pair = EnginePair()
    client = pair.client.connect(SERVER_ADDRESS, now=0, peer_public_key=pair.server.public_key)
    client.send_stream_data(7, b"early bird", now=0)
    first = pair.client.datagrams_to_send(0)
    assert len(first) == 1 and len(first[0][0]) == 1400
    pair.server.receive_datagram(first[0][0], pair.client_address, 0)
    # Held until the initiator answers the reply (ZeroRttPolicy.DEFER): no connection yet.
    assert not pair.server.connections and len(pair.server.crypto.handshakes) == 1
    pair.run_until(lambda: bool(pair.server.connections))
    server = server_connection(pair)
    assert server.read(7, now=pair.now) == b"early bird"
    assert server.early_data == [EarlyData(stream_id=7, offset=0, length=10, replayable=False)]


def test_zero_rtt_data_at_once_is_marked_replayable() -> None:
    accepting = QotpEndpoint(configuration=QotpConfiguration(zero_rtt=ZeroRttPolicy.ACCEPT))
    pair = EnginePair(server=accepting)
    client = pair.client.connect(SERVER_ADDRESS, now=0, peer_public_key=pair.server.public_key)
    client.send_stream_data(7, b"early bird", now=0)
    (first,) = pair.client.datagrams_to_send(0)
    pair.server.receive_datagram(first[0], pair.client_address, 0)
    server = server_connection(pair)
    assert server.read(7, now=0) == b"early bird"
    assert server.early_data == [EarlyData(stream_id=7, offset=0, length=10, replayable=True)]
    assert not server.path.validated  # replies held to 3x what came, until the first Data
    pair.run_until(lambda: client.is_established and server.path.validated)


def test_half_close_both_directions_and_stream_removal() -> None:
    pair = EnginePair()
    client = pair.client.connect(SERVER_ADDRESS, now=0)
    client.send_stream_data(1, b"request", end_stream=True, now=0)
    pair.client.mark_ready(client)
    pair.run_until(
        lambda: bool(pair.server.connections) and server_connection(pair).readable(1) == 7
    )
    server = server_connection(pair)
    assert server.read(1, now=pair.now) == b"request"
    assert server.at_eof(1)
    # The server may still answer on its half.
    server.send_stream_data(1, b"response", end_stream=True, now=pair.now)
    pair.server.mark_ready(server)
    pair.run_until(lambda: client.readable(1) == 8 or client.at_eof(1))
    assert client.read(1, now=pair.now) == b"response"
    pair.run_until(
        lambda: (
            any(isinstance(e, StreamClosed) for e in pair.events["client"])
            and any(isinstance(e, StreamClosed) for e in pair.events["server"])
        )
    )
    assert not len(client.streams) and not len(server.streams)


def test_garbage_is_dropped_and_counted_and_others_carry_on() -> None:
    pair = EnginePair()
    client = pair.client.connect(SERVER_ADDRESS, now=0)
    payloads = {0: os.urandom(20_000)}
    for junk in (
        b"",
        b"\x00",
        os.urandom(38),
        os.urandom(39),
        b"\x80" + os.urandom(100),
        os.urandom(1400),
    ):
        pair.server.receive_datagram(junk, ("198.51.100.9", 9), 0)
    assert sum(pair.server.drops.values()) == 6
    assert transfer(pair, client, payloads) == payloads
    # Garbage for the live connection id is unauthenticated: dropped, connection fine.
    connection_id = client.connection_id.to_bytes(8, "little")
    pair.server.receive_datagram(
        b"\x80" + connection_id + os.urandom(60), ("198.51.100.9", 9), pair.now
    )
    assert pair.server.drops["unauthenticated"] == 1
    assert server_connection(pair).address == pair.client_address


def test_nat_rebinding_moves_replies_to_the_new_address() -> None:
    pair = EnginePair()
    client = pair.client.connect(SERVER_ADDRESS, now=0)
    transfer(pair, client, {0: b"x" * 5000})
    pair.client_address = ("203.0.113.7", 4444)
    result = transfer(pair, client, {2: os.urandom(30_000)})
    assert len(result[2]) == 30_000
    moved = [e for e in pair.events["server"] if isinstance(e, PeerAddressChanged)]
    assert moved and moved[-1].new_address == ("203.0.113.7", 4444)
    assert server_connection(pair).address == ("203.0.113.7", 4444)


def test_idle_timeout_ends_both_sides() -> None:
    pair = EnginePair()
    client = pair.client.connect(SERVER_ADDRESS, now=0)
    transfer(pair, client, {0: b"ping"})
    start = pair.now
    pair.run_until(
        lambda: (
            any(isinstance(e, ConnectionTerminated) for e in pair.events["client"])
            and any(isinstance(e, ConnectionTerminated) for e in pair.events["server"])
        )
    )
    assert 30 * SECOND <= pair.now - start <= 31 * SECOND
    assert not pair.client.connections and not pair.server.connections


def test_unanswered_dial_fails_like_the_reference() -> None:
    endpoint = QotpEndpoint()
    endpoint.connect(SERVER_ADDRESS, now=0)
    sends = []
    now = 0
    events = []
    while now < 20 * SECOND:
        if endpoint.datagrams_to_send(now):
            sends.append(now // 1_000_000)
        while (event := endpoint.next_event()) is not None:
            events.append(event)
        timer = endpoint.get_timer()
        if timer is None:
            break
        now = max(timer, now + 1)
        endpoint.handle_timer(now)
    assert sends == [0, 200, 600, 1400, 3000, 6200]
    assert isinstance(events[-1], ConnectionTerminated) and events[-1].error


def test_contradicting_data_ends_only_that_connection() -> None:
    server = QotpEndpoint()
    pair_a = EnginePair(server=server)
    pair_b = EnginePair(server=server)
    pair_b.client_address = ("192.0.2.50", 5050)
    a = pair_a.client.connect(SERVER_ADDRESS, now=0)
    b = pair_b.client.connect(SERVER_ADDRESS, now=0)
    transfer(pair_a, a, {0: b"a" * 3000})
    pair_b.now = pair_a.now
    transfer(pair_b, b, {0: b"b" * 3000})
    victim = server.connections[a.connection_id]
    # Unread data on stream 3, then a "retransmission" of it with other bytes,
    # forged through a's own protection (so it authenticates).
    a.send_stream_data(3, b"genuine " * 100, now=pair_a.now)
    pair_a.client.mark_ready(a)
    pair_a.run_until(lambda: victim.readable(3) == 800)
    from qotp.payload import Payload, PayloadKind, encode_payload

    lie = a.protection.seal(encode_payload(Payload(PayloadKind.DATA, 3, 0, b"X" * 100)), pair_a.now)
    server.receive_datagram(lie, pair_a.client_address, pair_a.now)
    assert victim.is_terminated
    assert b.connection_id in server.connections
    events = []
    while (event := server.next_event()) is not None:
        events.append(event)
    assert any(isinstance(e, ConnectionTerminated) and e.error for e in events)


def test_key_log_lines() -> None:
    lines: list[str] = []
    pair = EnginePair(
        client=QotpEndpoint(key_log=lines.append), server=QotpEndpoint(identity=KeyPair.generate())
    )
    client = pair.client.connect(SERVER_ADDRESS, now=0, peer_public_key=pair.server.public_key)
    transfer(pair, client, {0: b"hello"})
    pair.run_until(lambda: client.is_established)
    pair.step()
    labels = [line.split()[0] for line in lines]
    assert labels == ["QOTP_SHARED_SECRET_ID", "QOTP_SHARED_SECRET"]
    assert all(line.split()[1] == f"{client.connection_id:x}" for line in lines)


def test_statistics_and_large_transfer_integrity() -> None:
    pair = EnginePair()
    client = pair.client.connect(SERVER_ADDRESS, now=0)
    data = os.urandom(3_000_000)
    result = transfer(pair, client, {0: data})
    assert hashlib.sha256(result[0]).digest() == hashlib.sha256(data).digest()
    stats = client.statistics()
    assert stats.bytes_sent == len(data) and stats.retransmitted_packets == 0
    assert stats.smoothed_rtt_ns > 0


def test_zero_rtt_waits_briefly_for_data_then_sends_one_first_packet() -> None:
    """Data written just after a 0-RTT dial rides in the one first packet."""
    pair = EnginePair()
    client = pair.client.connect(SERVER_ADDRESS, now=0, peer_public_key=pair.server.public_key)
    assert pair.client.datagrams_to_send(0) == []  # grace period: no bare hello yet
    client.send_stream_data(0, b"x" * 1032, now=0)
    pair.client.mark_ready(client)
    (first,) = pair.client.datagrams_to_send(0)
    assert first[0][0] >> 5 == 2  # InitCryptoSnd
    assert pair.client.datagrams_to_send(10_000_000) == []  # nothing more before the reply


def test_zero_rtt_without_data_sends_a_hello_after_the_grace_period() -> None:
    pair = EnginePair()
    client = pair.client.connect(SERVER_ADDRESS, now=0, peer_public_key=pair.server.public_key)
    pair.run_until(lambda: client.is_established)
    assert pair.now < 100_000_000


def test_more_to_send_says_when_a_burst_left_acks_behind() -> None:
    """A burst of arrivals queues more ACKs than one call sends; no timer covers the rest,
    so the endpoint says so (the asyncio adapter then flushes again on its next turn)."""
    server = QotpEndpoint(configuration=QotpConfiguration(max_datagrams_per_call=4))
    pair = EnginePair(server=server)
    client = pair.client.connect(SERVER_ADDRESS, now=0)
    pair.run_until(lambda: client.is_established)
    client.send_stream_data(0, os.urandom(10 * 1300), now=pair.now)
    pair.client.mark_ready(client)
    burst = [datagram for datagram, _ in pair.client.datagrams_to_send(pair.now)]
    assert len(burst) >= 10
    for datagram in burst:
        server.receive_datagram(datagram, pair.client_address, pair.now)
    sent = []
    while True:
        out = server.datagrams_to_send(pair.now)
        sent.extend(out)
        assert len(out) <= 4
        if not server.more_to_send:
            break
    assert len(sent) == len(burst)  # one ACK each, none left waiting for a stimulus
    assert server.datagrams_to_send(pair.now) == []


def test_the_later_closer_gets_its_close_acknowledged() -> None:
    """Both sides close; the CLOSE that ends the first one is still acknowledged.

    Without that last ACK the side that closed later resent its CLOSE into an
    endpoint that had forgotten the connection, until its retry limit.
    """
    pair = EnginePair()
    client = pair.client.connect(SERVER_ADDRESS, now=0)
    client.send_stream_data(0, b"request", end_stream=True, now=0)
    pair.run_until(lambda: bool(pair.server.connections))
    server = next(iter(pair.server.connections.values()))
    pair.run_until(lambda: server.at_eof(0) or server.readable(0) > 0)
    server.read(0, now=pair.now)
    client.close(now=pair.now)  # waits for the server's side of stream 0
    server.close(now=pair.now)  # its CLOSE ends the client's connection
    pair.server.mark_ready(server)
    pair.run_until(lambda: client.is_terminated and server.is_terminated)
    reasons = {
        side: [e.reason.value for e in events if isinstance(e, ConnectionTerminated)]
        for side, events in pair.events.items()
    }
    assert reasons == {"client": ["closed"], "server": ["closed"]}
    assert not pair.client.connections and not pair.server.connections
