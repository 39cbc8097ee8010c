"""Tests of qotp.connection: stream limits, tombstones and memory per stream, end to end.

Both endpoints run on a virtual clock (``enginepair`` without loss, ``netsim``
with it); no test here depends on wall-clock time.
"""

from __future__ import annotations

import gc
import random
import tracemalloc

import pytest
from enginepair import SERVER_ADDRESS, EnginePair
from netsim import MS, SECOND, LinkConditions, Network
from wiretap import KeyLogDecryptor

from qotp.config import QotpConfiguration
from qotp.connection import Connection
from qotp.endpoint import QotpEndpoint
from qotp.envelope import MessageType, sealed_overhead
from qotp.errors import LocalProtocolError
from qotp.events import StreamClosed, StreamOpened
from qotp.payload import ACK_ONLY_SIZE_24, Payload, PayloadKind
from qotp.recv import STREAM_TOMBSTONE_LIFETIME_NS


def server_connection(endpoint: QotpEndpoint) -> Connection | None:
    return next(iter(endpoint.connections.values()), None)


def closed_ids(events: list[object]) -> list[int]:
    return [event.stream_id for event in events if isinstance(event, StreamClosed)]


def opened_ids(events: list[object]) -> list[int]:
    return [event.stream_id for event in events if isinstance(event, StreamOpened)]


def drain_events(endpoint: QotpEndpoint) -> list[object]:
    events: list[object] = []
    while (event := endpoint.next_event()) is not None:
        events.append(event)
    return events


class ReadAndCloseServer:
    """Server application: reads every stream the peer opened to its end, then closes its side.

    With ``netsim`` it collects the endpoint's events; under ``EnginePair`` the
    pair does (``pair.events``).
    """

    def __init__(self, endpoint: QotpEndpoint) -> None:
        self.endpoint = endpoint
        self.received: dict[int, bytearray] = {}
        self.events: list[object] = []
        self.most_open = 0

    def step(self, now: int) -> None:
        endpoint = self.endpoint
        self.events += drain_events(endpoint)
        connection = server_connection(endpoint)
        if connection is None:
            return
        self.most_open = max(self.most_open, connection.streams.peer_count)
        for stream_id in connection.streams.ids():
            chunk = connection.read(stream_id, now=now)
            if chunk:
                self.received.setdefault(stream_id, bytearray()).extend(chunk)
            if connection.at_eof(stream_id):
                connection.close_stream(stream_id, now=now)
            endpoint.mark_ready(connection)


def test_peer_streams_beyond_the_limit_are_refused_until_slots_free_over_a_lossy_path() -> None:
    """40 streams against a limit of 4, with loss, reordering and duplicates.

    Each stream is one packet (data and CLOSE): the refused packets then never
    hold up the streams that are open. (With many multi-packet streams beyond
    the limit, refused packets can fill the sender's congestion window and starve
    the open streams; see ``QotpConfiguration.max_streams``.)
    """
    client = QotpEndpoint()
    server = QotpEndpoint(configuration=QotpConfiguration(max_streams=4))
    conditions = LinkConditions(delay_ns=10 * MS, jitter_ns=4 * MS, loss=0.05, duplicate=0.02)
    network = Network(client, server, a_to_b=conditions, b_to_a=conditions, seed=7)
    connection = client.connect(network.b_address, now=0)
    rng = random.Random(1)
    payloads = {stream_id: rng.randbytes(rng.randrange(1, 1200)) for stream_id in range(40)}
    for stream_id, data in payloads.items():
        assert connection.send_stream_data(stream_id, data, end_stream=True, now=0) == len(data)
    client.mark_ready(connection)
    app = ReadAndCloseServer(server)
    client_events: list[object] = []

    def step(now: int) -> None:
        app.step(now)
        while (event := client.next_event()) is not None:
            client_events.append(event)

    network.run_until(lambda: sorted(closed_ids(client_events)) == list(payloads), on_step=step)
    # Every byte arrived, exactly once, on a stream announced once.
    assert {stream_id: bytes(data) for stream_id, data in app.received.items()} == payloads
    assert sorted(opened_ids(app.events)) == list(payloads)
    assert app.most_open == 4
    peer = server_connection(server)
    assert peer is not None
    assert peer.refused_stream_packets > 0
    assert peer.statistics().refused_stream_packets == peer.refused_stream_packets
    assert connection.statistics().retransmitted_packets > 0


def test_a_refused_packet_is_not_acknowledged_and_leaves_no_state() -> None:
    pair = EnginePair(server=QotpEndpoint(configuration=QotpConfiguration(max_streams=1)))
    client = pair.client.connect(SERVER_ADDRESS, now=0)
    client.send_stream_data(1, b"first", now=0)
    pair.client.mark_ready(client)
    pair.run_until(lambda: (server := server_connection(pair.server)) is not None
                   and server.readable(1) == 5 and not server.receive_buffer.pending_acks
                   and not client.send_buffer.bytes_in_flight)  # fmt: skip
    server = server_connection(pair.server)
    assert server is not None
    client.send_stream_data(2, b"second", end_stream=True, now=pair.now)
    pair.client.mark_ready(client)
    (datagram,) = pair.client.datagrams_to_send(pair.now)
    pair.server.receive_datagram(datagram[0], pair.client_address, pair.now)
    assert server.refused_stream_packets == 1
    assert server.receive_buffer.pending_acks == 0
    assert 2 not in server.streams and not server.receive_buffer.has_stream(2)
    assert 2 not in opened_ids(pair.events["server"]) + opened_ids(drain_events(pair.server))
    # Stream 1 finishes: its slot frees and the client's retransmission gets in.
    assert server.read(1, now=pair.now) == b"first"
    client.close_stream(1, now=pair.now)
    server.close_stream(1, now=pair.now)
    pair.client.mark_ready(client)
    pair.server.mark_ready(server)
    pair.run_until(lambda: server.readable(2) == 6)
    assert 1 in closed_ids(pair.events["server"])
    assert server.read(2, now=pair.now) == b"second" and server.at_eof(2)
    assert client.statistics().retransmitted_packets >= 1


def test_local_streams_beyond_the_limit_raise_and_finished_ids_are_not_reused() -> None:
    pair = EnginePair(client=QotpEndpoint(configuration=QotpConfiguration(max_streams=2)))
    client = pair.client.connect(SERVER_ADDRESS, now=0)
    client.send_stream_data(1, b"a", end_stream=True, now=0)
    client.send_stream_data(2, b"b", end_stream=True, now=0)
    with pytest.raises(LocalProtocolError, match="max_streams"):
        client.send_stream_data(3, b"c", now=0)
    with pytest.raises(LocalProtocolError, match="max_streams"):
        client.close_stream(3, now=0)
    assert 3 not in client.streams and client.streams.local_count == 2
    pair.client.mark_ready(client)
    pair.run_until(lambda: (server := server_connection(pair.server)) is not None
                   and server.readable(1) == 1)  # fmt: skip
    server = server_connection(pair.server)
    assert server is not None
    assert server.read(1, now=pair.now) == b"a" and server.at_eof(1)
    server.send_stream_data(1, b"reply", end_stream=True, now=pair.now)
    pair.server.mark_ready(server)
    pair.run_until(lambda: client.at_eof(1) or client.readable(1) == 5)
    assert client.read(1, now=pair.now) == b"reply"
    pair.client.mark_ready(client)  # reading finished the stream: collect its events
    pair.run_until(lambda: 1 in closed_ids(pair.events["client"]))
    # A slot is free again; the finished id is not (the peer keeps a tombstone).
    client.send_stream_data(3, b"c", now=pair.now)
    with pytest.raises(LocalProtocolError, match="reused"):
        client.send_stream_data(1, b"again", now=pair.now)
    client.close_stream(1, now=pair.now)  # closing a finished stream again: nothing
    assert 1 not in client.streams and client.at_eof(1)
    # The server's reply did not make our own stream look opened by the peer.
    assert 1 not in opened_ids(pair.events["client"])


def test_late_retransmission_of_a_finished_stream_is_acknowledged_not_delivered() -> None:
    pair = EnginePair()
    client = pair.client.connect(SERVER_ADDRESS, now=0)
    pair.run_until(lambda: client.is_established and server_connection(pair.server) is not None)
    server = server_connection(pair.server)
    assert server is not None

    def deliver(sender: QotpEndpoint, receiver: QotpEndpoint, source: tuple[str, int]) -> int:
        datagrams = sender.datagrams_to_send(pair.now)
        for datagram, _address in datagrams:
            receiver.receive_datagram(datagram, source, pair.now)
        return len(datagrams)

    client.send_stream_data(5, b"once", end_stream=True, now=pair.now)
    pair.client.mark_ready(client)
    assert deliver(pair.client, pair.server, pair.client_address) == 1
    assert server.read(5, now=pair.now) == b"once" and server.at_eof(5)
    # The server's ACK for it is lost ...
    assert len(pair.server.datagrams_to_send(pair.now)) == 1
    # ... and the server finishes the stream before the client retransmits.
    server.close_stream(5, now=pair.now)
    pair.server.mark_ready(server)
    assert deliver(pair.server, pair.client, SERVER_ADDRESS) == 1
    pair.client.mark_ready(client)
    assert deliver(pair.client, pair.server, pair.client_address) == 1  # the CLOSE's ACK
    events = drain_events(pair.server)
    assert opened_ids(events) == [5] and closed_ids(events) == [5]
    assert client.send_buffer.bytes_in_flight == 4
    duplicates = server.receive_buffer.duplicate_packets
    pair.run_until(lambda: 5 in closed_ids(pair.events["client"]))
    assert client.statistics().retransmitted_packets == 1
    assert server.receive_buffer.duplicate_packets == duplicates + 1
    assert not opened_ids(pair.events["server"]) and not closed_ids(pair.events["server"])
    assert 5 not in server.streams and not server.readable(5) and server.at_eof(5)


def test_a_stream_id_is_usable_again_once_its_tombstone_expired() -> None:
    long_idle = QotpConfiguration(idle_timeout_ns=10 * 60 * SECOND)
    pair = EnginePair(QotpEndpoint(configuration=long_idle), QotpEndpoint(configuration=long_idle))
    client = pair.client.connect(SERVER_ADDRESS, now=0)
    app = ReadAndCloseServer(pair.server)

    def finished(stream_id: int, count: int) -> bool:
        app.step(pair.now)
        return closed_ids(pair.events["client"]).count(stream_id) == count

    client.send_stream_data(7, b"first life", end_stream=True, now=0)
    pair.client.mark_ready(client)
    pair.run_until(lambda: finished(7, 1) and 7 in closed_ids(pair.events["server"]))
    with pytest.raises(LocalProtocolError):
        client.send_stream_data(7, b"too early", now=pair.now)
    # Nothing is going on; move the clock past the tombstones' longest life.
    pair.now += STREAM_TOMBSTONE_LIFETIME_NS + STREAM_TOMBSTONE_LIFETIME_NS // 8 + 1
    client.send_stream_data(7, b"second life", end_stream=True, now=pair.now)
    pair.client.mark_ready(client)
    pair.run_until(lambda: finished(7, 2), limit_ns=pair.now + 60 * SECOND)
    assert bytes(app.received[7]) == b"first lifesecond life"
    assert opened_ids(pair.events["server"]) == [7, 7]


def test_at_the_tombstone_cap_new_peer_streams_wait_rather_than_tombstones_go() -> None:
    long_idle = QotpConfiguration(idle_timeout_ns=10 * 60 * SECOND)
    capped = QotpConfiguration(idle_timeout_ns=10 * 60 * SECOND, max_stream_tombstones=2)
    pair = EnginePair(QotpEndpoint(configuration=long_idle), QotpEndpoint(configuration=capped))
    client = pair.client.connect(SERVER_ADDRESS, now=0)
    app = ReadAndCloseServer(pair.server)

    def finished(*stream_ids: int) -> bool:
        app.step(pair.now)
        closed = closed_ids(pair.events["server"])
        return all(stream_id in closed for stream_id in stream_ids)

    for stream_id in (0, 10):  # not consecutive: two tombstone entries
        client.send_stream_data(stream_id, b"early", end_stream=True, now=0)
    pair.client.mark_ready(client)
    pair.run_until(lambda: finished(0, 10))
    server = server_connection(pair.server)
    assert server is not None
    client.send_stream_data(20, b"late", end_stream=True, now=pair.now)
    pair.client.mark_ready(client)
    pair.run_until(lambda: server.refused_stream_packets >= 2)
    assert 20 not in server.streams
    assert server.receive_buffer.is_finished(0) and server.receive_buffer.is_finished(10)
    # Once the tombstones expired, the retransmission gets in.
    pair.now += STREAM_TOMBSTONE_LIFETIME_NS + STREAM_TOMBSTONE_LIFETIME_NS // 8
    pair.run_until(lambda: finished(20), limit_ns=pair.now + 120 * SECOND)
    assert bytes(app.received[20]) == b"late"


def test_finished_streams_cost_little_memory() -> None:
    """Streams opened and finished leave a few bytes each (tombstones), not objects.

    Through both connections, after a warm-up that sizes tables and caches;
    the receive-buffer tests measure 10 000 streams without the transport's cost.
    """
    pair = EnginePair()
    client = pair.client.connect(SERVER_ADDRESS, now=0)
    app = ReadAndCloseServer(pair.server)
    next_id = 0

    def run_streams(count: int, batch: int = 500) -> None:
        nonlocal next_id
        for start in range(next_id, next_id + count, batch):
            for stream_id in range(start, start + batch):
                client.send_stream_data(stream_id, b"x", end_stream=True, now=pair.now)
            pair.client.mark_ready(client)

            def done() -> bool:
                app.step(pair.now)
                server = server_connection(pair.server)
                return not len(client.streams) and server is not None and not len(server.streams)

            pair.run_until(done)
            pair.events = {"client": [], "server": []}
            app.received.clear()
        next_id += count

    run_streams(1000)  # warm up: tables, caches, the first tombstones
    gc.collect()
    tracemalloc.start()
    try:
        # Tables replaced while tracing count in full (their predecessors were not
        # traced), so the measurement starts after one more round.
        run_streams(1000)
        gc.collect()
        before = tracemalloc.get_traced_memory()[0]
        run_streams(3000)
        gc.collect()
        growth = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    # About 8 bytes per stream for both ends together (tombstones: u32 in
    # arrays). Before the bound: ~250 (two sets of ints per side, kept forever);
    # an open stream costs ~2 KB.
    assert growth < 3000 * 20, growth


def test_an_ack_a_retransmission_has_no_room_for_goes_in_the_next_datagram() -> None:
    """A packet first sent without an ACK is resent whole, without one (qotp.recovery);
    the ACK it displaced is not lost: it leaves in the next datagram of the same flush."""
    decryptor = KeyLogDecryptor()
    pair = EnginePair(server=QotpEndpoint(key_log=decryptor.add_line))
    client = pair.client.connect(SERVER_ADDRESS, now=0)
    client.send_stream_data(0, b"hello", now=0)
    pair.client.mark_ready(client)

    received = bytearray()

    def quiet() -> bool:
        server = server_connection(pair.server)
        if server is None:
            return False
        received.extend(server.read(0, now=pair.now))
        return (
            received == b"hello"
            and not client.recovery.in_flight
            and not server.receive_buffer.pending_acks
        )

    pair.run_until(quiet)
    server = server_connection(pair.server)
    assert server is not None

    def sent_by_server(now: int) -> list[Payload]:
        datagrams = pair.server.datagrams_to_send(now)
        payloads = [decryptor.payload(d, from_initiator=False) for d, _address in datagrams]
        assert all(payload is not None for payload in payloads)
        return payloads  # type: ignore[return-value]

    # A full packet with nothing to acknowledge: lost.
    server.send_stream_data(1, bytes(range(256)) * 6, now=pair.now)
    pair.server.mark_ready(server)
    (lost, rest) = sent_by_server(pair.now)
    assert lost.ack is None and len(lost.data) == 1361 and rest.stream_offset == 1361
    # The client sends data: the server owes it an ACK when the lost packet's timer expires.
    client.send_stream_data(0, b"more", now=pair.now)
    pair.client.mark_ready(client)
    for datagram, _address in pair.client.datagrams_to_send(pair.now):
        pair.server.receive_datagram(datagram, pair.client_address, pair.now)
    due = server.get_timer()
    assert due is not None
    pair.server.handle_timer(due)
    resent, then = sent_by_server(due)[:2]
    assert (resent.stream_offset, len(resent.data), resent.ack) == (0, 1361, None)
    assert then.ack is not None and then.ack[:3] == (0, 5, 4)


@pytest.mark.parametrize("repeats", [True, False])
def test_a_lost_ack_only_datagram_costs_no_retransmission_with_ack_repeats(repeats: bool) -> None:
    """The next ACK-only payload acknowledges the lost one's packet again (qotp.payload,
    ACK repeats); without repeats the sender must resend a packet that had arrived."""
    decryptor = KeyLogDecryptor()
    configuration = QotpConfiguration(ack_repeats=repeats)
    pair = EnginePair(server=QotpEndpoint(configuration=configuration, key_log=decryptor.add_line))
    client = pair.client.connect(SERVER_ADDRESS, now=0)
    client.send_stream_data(0, b"hello", now=0)
    pair.client.mark_ready(client)
    pair.run_until(
        lambda: server_connection(pair.server) is not None and not client.recovery.in_flight
    )
    server = server_connection(pair.server)
    assert server is not None
    lost: list[bytes] = []
    sizes: list[int] = []

    def drop(side: str, datagram: bytes) -> bool:
        payload = decryptor.payload(datagram, from_initiator=False) if side == "server" else None
        if payload is None or payload.kind is not PayloadKind.ACK_ONLY:
            return False
        sizes.append(len(datagram))
        if lost:
            return False
        lost.append(datagram)
        return True

    pair.drop = drop
    client.send_stream_data(0, bytes(range(256)) * 16, now=pair.now)
    pair.client.mark_ready(client)
    pair.run_until(lambda: client.send_buffer.buffered_bytes == 0)
    assert lost
    assert client.statistics().retransmitted_packets == (0 if repeats else 1)
    assert client.acks_repeated == (1 if repeats else 0)
    # Three bytes more than the reference's ACK-only datagrams (the adjacent form), or none.
    reference_size = sealed_overhead(MessageType.DATA) + ACK_ONLY_SIZE_24
    assert set(sizes) == {reference_size + 3 if repeats else reference_size}
