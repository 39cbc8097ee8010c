"""Tests of qotp.handshakes and the endpoint's handling of first packets under a flood."""

from __future__ import annotations

import os

from enginepair import SERVER_ADDRESS, EnginePair

from qotp.config import QotpConfiguration
from qotp.endpoint import MAX_HANDSHAKE_WAIT_NS, QotpEndpoint
from qotp.events import ConnectionEstablished
from qotp.handshakes import (
    HANDSHAKE_ENTRY_OVERHEAD_BYTES,
    PENDING_HANDSHAKE_LIFETIME_NS,
    HandshakeTable,
    PendingHandshake,
    RecentIds,
)
from qotp.native import NativeCryptoLayer

MS = 1_000_000
FLOODER = ("198.51.100.66", 6666)
PADDING = bytes(1400 - 65)


def entry(connection_id: int, now: int = 0, early: bytes | None = None) -> PendingHandshake:
    return PendingHandshake(
        connection_id=connection_id,
        initiator_ephemeral=bytes(32),
        initiator_identity=bytes(32),
        responder_ephemeral_private=bytes(32),
        secret=bytes(32),
        reply=bytes(100),
        address=("192.0.2.1", 1),
        now=now,
        early_payload=early,
    )


def flood_packet() -> bytes:
    """An InitSnd with fresh random keys, as a flood sends it."""
    return b"\x00" + os.urandom(64) + PADDING


def events_of(endpoint: QotpEndpoint) -> list[object]:
    events = []
    while (event := endpoint.next_event()) is not None:
        events.append(event)
    return events


def test_the_table_is_capped_in_count_and_evicts_the_oldest() -> None:
    table = HandshakeTable(max_entries=3, max_bytes=1 << 20)
    for connection_id in range(5):
        table.add(entry(connection_id), now=connection_id)
    assert len(table) == 3 and table.evicted == 2
    assert 0 not in table and 1 not in table and all(i in table for i in (2, 3, 4))


def test_the_table_is_capped_in_bytes_counting_early_data() -> None:
    size = HANDSHAKE_ENTRY_OVERHEAD_BYTES + 100 + 1300
    table = HandshakeTable(max_entries=1000, max_bytes=3 * size)
    for connection_id in range(10):
        table.add(entry(connection_id, early=bytes(1300)), now=0)
    assert len(table) == 3 and table.size_bytes == 3 * size
    assert table.pop(9) is not None and table.size_bytes == 2 * size


def test_entries_expire_after_the_initiators_whole_retry_schedule() -> None:
    table = HandshakeTable(max_entries=10, max_bytes=1 << 20)
    table.add(entry(1, now=0), now=0)
    assert table.get(1, PENDING_HANDSHAKE_LIFETIME_NS) is not None
    assert table.get(1, PENDING_HANDSHAKE_LIFETIME_NS + 1) is None
    assert table.expired == 1 and table.size_bytes == 0


def test_recent_ids_keep_between_one_and_two_generations() -> None:
    recent = RecentIds(100)
    for value in range(1000):
        recent.add(value)
    assert len(recent) <= 200
    assert 999 in recent and 900 in recent and 0 not in recent


def test_a_lone_first_packet_makes_nothing_the_application_sees() -> None:
    pair = EnginePair()
    client = pair.client.connect(SERVER_ADDRESS, now=0)
    ((init_snd, _),) = pair.client.datagrams_to_send(0)
    pair.server.receive_datagram(init_snd, pair.client_address, 0)
    pair.server.receive_datagram(init_snd, pair.client_address, 1)  # and its repeat
    assert not pair.server.connections and not events_of(pair.server)
    assert pair.server.handshakes_in_progress == 1
    replies = pair.server.datagrams_to_send(1)
    assert len(replies) == 2 and replies[0] == replies[1]  # the same reply, resent
    # The initiator's first Data packet proves it: only now does the server see it.
    for reply, _address in replies:
        pair.client.receive_datagram(reply, SERVER_ADDRESS, 2)
    for datagram, _address in pair.client.datagrams_to_send(2):
        pair.server.receive_datagram(datagram, pair.client_address, 3)
    assert client.connection_id in pair.server.connections
    (established,) = [e for e in events_of(pair.server) if isinstance(e, ConnectionEstablished)]
    assert established.address == pair.client_address and not established.is_initiator
    assert pair.server.handshakes_in_progress == 0


def test_a_flood_of_first_packets_creates_no_connection_and_bounded_state() -> None:
    config = QotpConfiguration(max_pending_handshakes=64)
    server = QotpEndpoint(configuration=config)
    for index in range(300):
        server.receive_datagram(flood_packet(), (FLOODER[0], 1024 + index), index * MS)
    assert not server.connections and not events_of(server)
    crypto = server.crypto
    assert isinstance(crypto, NativeCryptoLayer)
    assert len(crypto.handshakes) == 64 and crypto.handshakes.evicted == 300 - 64
    assert crypto.handshakes.size_bytes <= 64 * (HANDSHAKE_ENTRY_OVERHEAD_BYTES + 200)
    assert len(server.datagrams_to_send(300 * MS)) == 300  # one small reply each, no more


def test_a_legitimate_handshake_completes_amid_a_flood() -> None:
    config = QotpConfiguration(max_pending_handshakes=256)
    pair = EnginePair(server=QotpEndpoint(configuration=config))
    client = pair.client.connect(SERVER_ADDRESS, now=0)
    ((init_snd, _),) = pair.client.datagrams_to_send(0)
    pair.server.receive_datagram(init_snd, pair.client_address, 0)
    for index in range(200):  # fewer than the table holds arrive before the answer
        pair.server.receive_datagram(flood_packet(), (FLOODER[0], 2000 + index), MS)
    reply = next(d for d, a in pair.server.datagrams_to_send(MS) if a == pair.client_address)
    pair.client.receive_datagram(reply, SERVER_ADDRESS, 2 * MS)
    client.send_stream_data(1, b"still here", end_stream=True, now=2 * MS)
    pair.client.mark_ready(client)
    for datagram, _address in pair.client.datagrams_to_send(2 * MS):
        pair.server.receive_datagram(datagram, pair.client_address, 3 * MS)
    server = pair.server.connections[client.connection_id]
    assert server.read(1, now=3 * MS) == b"still here"
    assert len(pair.server.connections) == 1


def test_under_overload_established_traffic_and_repeated_first_packets_go_first() -> None:
    pair = EnginePair()
    established = pair.client.connect(SERVER_ADDRESS, now=0)
    pair.run_until(lambda: established.connection_id in pair.server.connections)
    server_side = pair.server.connections[established.connection_id]
    established.send_stream_data(1, b"data", now=pair.now)
    pair.client.mark_ready(established)
    ((data_packet, _),) = pair.client.datagrams_to_send(pair.now)

    stranger = QotpEndpoint()
    newcomer = stranger.connect(SERVER_ADDRESS, now=pair.now)
    ((first, _),) = stranger.datagrams_to_send(pair.now)
    newcomer_address = ("203.0.113.5", 5555)
    server = pair.server
    batch = [(flood_packet(), (FLOODER[0], 3000 + i)) for i in range(100)]
    batch.insert(50, (first, newcomer_address))
    batch.append((data_packet, pair.client_address))
    server.receive_datagrams(batch, pair.now)
    # The established connection's packet was acted on at once, whatever waits.
    assert server_side.read(1, now=pair.now) == b"data"
    assert server.handshake_backlog == 101
    server.process_handshakes(pair.now, 3)  # too little time for everyone...
    server.shed_handshakes()  # ...the rest is shed, and remembered
    assert server.drops["handshake overload"] == 98
    assert newcomer.connection_id not in server.crypto.handshakes  # type: ignore[attr-defined]

    # 200 ms later the newcomer repeats its first packet (the same key), in a new flood.
    later = pair.now + 200 * MS
    stranger.handle_timer(later)
    (repeat,) = [d for d, _ in stranger.datagrams_to_send(later) if d[0] == 0]
    batch = [(flood_packet(), (FLOODER[0], 4000 + i)) for i in range(100)]
    batch.insert(70, (repeat, newcomer_address))
    server.receive_datagrams(batch, later)
    server.process_handshakes(later, 1)  # room for a single one: the repeat
    server.shed_handshakes()
    assert newcomer.connection_id in server.crypto.handshakes  # type: ignore[attr-defined]


def test_a_repeated_first_packet_is_answered_however_long_it_waited() -> None:
    # A burst of legitimate initiators repeats together; a repeat shed again for its
    # age would fail them all after six sends (3,000 dials at once: 60 % failed).
    pair = EnginePair()
    stranger = QotpEndpoint()
    newcomer = stranger.connect(SERVER_ADDRESS, now=0)
    ((first, _),) = stranger.datagrams_to_send(0)
    address = ("203.0.113.5", 5555)
    server = pair.server
    server.receive_datagrams([(first, address)], 0)
    server.shed_handshakes()
    stranger.handle_timer(200 * MS)
    (repeat,) = [d for d, _ in stranger.datagrams_to_send(200 * MS) if d[0] == 0]
    fresh = [(flood_packet(), (FLOODER[0], 7000 + i)) for i in range(10)]
    server.receive_datagrams([(repeat, address), *fresh], 200 * MS)
    assert server.process_handshakes(200 * MS + MAX_HANDSHAKE_WAIT_NS + 1, 1) == 0
    assert newcomer.connection_id in server.crypto.handshakes  # type: ignore[attr-defined]
    assert server.drops["handshake overload"] == 1 + 10  # the first copy, and the strangers


def test_a_copy_that_waited_while_another_completed_the_handshake_starts_no_new_one() -> None:
    # A second handshake would answer with other keys, which the initiator must refuse.
    pair = EnginePair()
    client = pair.client.connect(SERVER_ADDRESS, now=0)
    ((first, _),) = pair.client.datagrams_to_send(0)
    server = pair.server
    server.receive_datagrams([(first, pair.client_address)], 0)
    server.shed_handshakes()
    server.receive_datagrams([(first, pair.client_address)], 1)  # a repeat: to the backlog
    server.receive_datagrams([(first, pair.client_address)], 1)  # and another
    server.process_handshakes(1, 1)
    pair.run_until(lambda: client.connection_id in server.connections)
    assert server.process_handshakes(pair.now, 10) == 0
    assert server.drops["late first packet"] == 1
    assert server.handshakes_in_progress == 0 and not client.dropped_datagrams


def test_peers_that_completed_a_handshake_go_before_strangers() -> None:
    pair = EnginePair()
    first = pair.client.connect(SERVER_ADDRESS, now=0)
    pair.run_until(lambda: first.connection_id in pair.server.connections)
    again = pair.client.connect(SERVER_ADDRESS, now=pair.now)  # the same identity key
    ((init_snd, _),) = [(d, a) for d, a in pair.client.datagrams_to_send(pair.now) if d[0] == 0]
    server = pair.server
    batch = [(flood_packet(), (FLOODER[0], 5000 + i)) for i in range(50)]
    batch.insert(10, (init_snd, pair.client_address))
    server.receive_datagrams(batch, pair.now)
    server.process_handshakes(pair.now, 1)
    server.shed_handshakes()
    assert again.connection_id in server.crypto.handshakes  # type: ignore[attr-defined]


def test_forged_data_for_a_pending_handshake_is_dropped_and_the_handshake_survives() -> None:
    pair = EnginePair()
    client = pair.client.connect(SERVER_ADDRESS, now=0)
    ((init_snd, _),) = pair.client.datagrams_to_send(0)
    pair.server.receive_datagram(init_snd, pair.client_address, 0)
    forged = b"\x80" + client.connection_id.to_bytes(8, "little") + os.urandom(80)
    pair.server.receive_datagram(forged, FLOODER, 1)
    assert pair.server.drops["bad first packet"] == 1
    assert not pair.server.connections and pair.server.handshakes_in_progress == 1
    pair.run_until(lambda: client.connection_id in pair.server.connections)
