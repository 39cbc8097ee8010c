"""0-RTT data: deferred until the initiator proves itself, replays refused, policies honoured."""

from __future__ import annotations

from enginepair import SERVER_ADDRESS, EnginePair

from qotp.config import QotpConfiguration, ZeroRttPolicy
from qotp.connection import EarlyData
from qotp.endpoint import QotpEndpoint
from qotp.envelope import PacketCipher, seal_init_crypto_snd
from qotp.events import ConnectionEstablished, StreamDataAvailable
from qotp.keys import KeyPair
from qotp.replay import STRIKE_GENERATION_CAPACITY, STRIKE_WINDOW_NS, StrikeRegister

SECOND = 1_000_000_000
ATTACKER = ("198.51.100.66", 6666)
ORDER = b"transfer $100 to bob"


def events_of(endpoint: QotpEndpoint) -> list[object]:
    events = []
    while (event := endpoint.next_event()) is not None:
        events.append(event)
    return events


def zero_rtt_order(pair: EnginePair) -> tuple[bytes, int]:
    """The client dials with 0-RTT, its order in the first packet; (that packet, the id)."""
    client = pair.client.connect(
        SERVER_ADDRESS, now=pair.now, peer_public_key=pair.server.public_key
    )
    client.send_stream_data(1, ORDER, end_stream=True, now=pair.now)
    ((first, _),) = pair.client.datagrams_to_send(pair.now)
    pair.server.receive_datagram(first, pair.client_address, pair.now)
    return first, client.connection_id


def deliveries(server: QotpEndpoint, events: list[object]) -> list[bytes]:
    """What the server application reads from every stream that became readable."""
    out = []
    for event in events:
        if isinstance(event, StreamDataAvailable):
            connection = server.connections.get(event.connection_id)
            if connection is not None:
                data = connection.read(event.stream_id, now=0)
                if data:
                    out.append(data)
    return out


def test_a_replayed_0rtt_first_packet_delivers_nothing() -> None:
    """The original order is delivered once; the same first packet replayed after the
    connection ended, from elsewhere, is refused (strike register) and creates nothing;
    even a server that forgot everything (restarted, same key) never completes it."""
    identity = KeyPair.generate()
    pair = EnginePair(server=QotpEndpoint(identity=identity))
    first, connection_id = zero_rtt_order(pair)
    pair.run_until(lambda: connection_id in pair.server.connections)
    assert deliveries(pair.server, pair.events["server"] + events_of(pair.server)) == [ORDER]
    pair.server.connections[connection_id].abort(now=pair.now)
    pair.run_until(lambda: connection_id not in pair.server.connections)
    events_of(pair.server)

    pair.server.receive_datagram(first, ATTACKER, pair.now + SECOND)
    assert pair.server.drops["0-RTT replay"] == 1
    assert not pair.server.connections and pair.server.handshakes_in_progress == 0
    assert not events_of(pair.server) and not pair.server.datagrams_to_send(pair.now + SECOND)

    # Beyond any window: a server with the same identity and no memory at all.
    restarted = QotpEndpoint(identity=identity)
    restarted.receive_datagram(first, ATTACKER, 0)
    assert restarted.handshakes_in_progress == 1  # answered, held...
    for now in range(1, 40):  # ...but the replayer cannot send the Data packet that completes
        restarted.handle_timer(now * SECOND)
        restarted.datagrams_to_send(now * SECOND)
    assert not restarted.connections and not events_of(restarted)


def test_under_accept_the_order_arrives_at_once_marked_replayable_and_only_once() -> None:
    accepting = QotpConfiguration(zero_rtt=ZeroRttPolicy.ACCEPT)
    pair = EnginePair(server=QotpEndpoint(configuration=accepting))
    first, connection_id = zero_rtt_order(pair)
    server = pair.server.connections[connection_id]
    assert isinstance(events_of(pair.server)[0], ConnectionEstablished)
    assert server.read(1, now=0) == ORDER
    assert server.early_data == [
        EarlyData(stream_id=1, offset=0, length=len(ORDER), replayable=True)
    ]
    for source in (pair.client_address, ATTACKER):  # a copy routes to the live connection
        pair.server.receive_datagram(first, source, pair.now)
    assert server.readable(1) == 0 and pair.server.drops["replayed"] == 2
    server.abort(now=pair.now)
    pair.run_until(lambda: connection_id not in pair.server.connections)
    pair.server.receive_datagram(first, ATTACKER, pair.now + SECOND)  # within the window
    assert pair.server.drops["0-RTT replay"] == 1 and not pair.server.connections


def test_under_refuse_the_data_comes_again_as_ordinary_data() -> None:
    refusing = QotpConfiguration(zero_rtt=ZeroRttPolicy.REFUSE)
    pair = EnginePair(server=QotpEndpoint(configuration=refusing))
    _first, connection_id = zero_rtt_order(pair)
    pair.run_until(
        lambda: (
            connection_id in pair.server.connections
            and pair.server.connections[connection_id].readable(1) == len(ORDER)
        )
    )
    server = pair.server.connections[connection_id]
    assert server.read(1, now=pair.now) == ORDER and server.early_data == []


def test_a_bad_0rtt_payload_creates_nothing_and_is_counted() -> None:
    server = QotpEndpoint()
    ephemeral = KeyPair.generate()
    cipher = PacketCipher(ephemeral.exchange(server.public_key))
    bad = seal_init_crypto_snd(
        cipher,
        ephemeral_public_key=ephemeral.public_key,
        identity_public_key=KeyPair.generate().public_key,
        sequence_number=0,
        epoch=0,
        payload=b"\x1f" * 20,  # authentic, but no transport payload (unknown version)
    )
    server.receive_datagram(bad, ATTACKER, 0)
    assert server.drops["bad 0-RTT payload"] == 1
    assert not server.connections and server.handshakes_in_progress == 0
    assert not server.datagrams_to_send(0)


def test_strike_register_remembers_for_the_window_then_forgets() -> None:
    register = StrikeRegister(0)
    key = bytes(range(32))
    assert not register.seen(key, 0)
    register.add(key, 0)
    assert register.seen(key, 1) and register.seen(key, STRIKE_WINDOW_NS)
    assert register.seen(key, 2 * STRIKE_WINDOW_NS - 1)  # the previous generation
    assert not register.seen(key, 3 * STRIKE_WINDOW_NS)


def test_strike_register_under_a_flood_of_fresh_keys() -> None:
    register = StrikeRegister(0)
    keys = [index.to_bytes(32, "little") for index in range(STRIKE_GENERATION_CAPACITY + 10)]
    for key in keys:
        register.add(key, 0)
    # A full generation rotated early: the last 65,536 keys at least are still known.
    assert all(register.seen(key, 0) for key in keys[-1000:])
    strangers = [(index + 10**9).to_bytes(32, "little") for index in range(3000)]
    assert sum(register.seen(key, 0) for key in strangers) == 0  # 2.2e-7 each
