"""The rendezvous server, sans-IO: registration, introductions, relaying and its bounds."""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from qotp.keys import KeyPair
from qotp.protection import Address
from qotp.rendezvous.messages import (
    ChallengeMessage,
    ConnectMessage,
    ErrorCode,
    ErrorMessage,
    IntroAckMessage,
    IntroduceMessage,
    RegisteredMessage,
    RegisterMessage,
    RelayBindMessage,
    RelayBoundMessage,
    RendezvousMessage,
    decode_message,
    encode_message,
)
from qotp.rendezvous.registration import prove_registration
from qotp.rendezvous.server import (
    SECOND_NS,
    RelayClosed,
    RendezvousConfiguration,
    RendezvousServer,
)

ALICE_AT: Address = ("203.0.113.10", 40001)
BOB_AT: Address = ("198.51.100.20", 50002)


def new_server(**options: int) -> RendezvousServer:
    configuration = RendezvousConfiguration(**options)  # type: ignore[arg-type]
    return RendezvousServer(configuration=configuration, now=0)


def exchange(
    server: RendezvousServer, message: RendezvousMessage, source: Address, now: int = 0
) -> list[tuple[RendezvousMessage, Address]]:
    server.receive_datagram(encode_message(message), source, now)
    return [(decode_message(data), address) for data, address in server.datagrams_to_send(now)]


def register(
    server: RendezvousServer, name: str, identity: KeyPair, source: Address, now: int = 0
) -> list[tuple[RendezvousMessage, Address]]:
    [(challenge, _)] = exchange(
        server, RegisterMessage(name=name, public_key=identity.public_key), source, now
    )
    assert isinstance(challenge, ChallengeMessage)
    proof = prove_registration(identity, challenge.server_key, challenge.cookie, name)
    message = RegisterMessage(
        name=name, public_key=identity.public_key, cookie=challenge.cookie, proof=proof
    )
    return exchange(server, message, source, now)


def data_packet(connection_id: int, size: int = 60) -> bytes:
    """Something shaped like a QOTP Data packet: type byte, connection id, sealed bytes."""
    return bytes([4 << 5]) + connection_id.to_bytes(8, "little") + bytes(size - 9)


def test_registration_needs_the_cookie_and_the_key() -> None:
    server = new_server()
    alice = KeyPair.generate()
    [(reply, to)] = register(server, "alice", alice, ALICE_AT)
    assert to == ALICE_AT
    assert isinstance(reply, RegisteredMessage) and reply.observed_address == ALICE_AT
    # A cookie is bound to the address: replaying it from elsewhere only gets a challenge.
    [(challenge, _)] = exchange(
        server, RegisterMessage(name="mallory", public_key=alice.public_key), ALICE_AT
    )
    assert isinstance(challenge, ChallengeMessage)
    forged = RegisterMessage(
        name="alice", public_key=alice.public_key, cookie=challenge.cookie, proof=bytes(32)
    )
    assert exchange(server, forged, BOB_AT) and server.statistics()["registrations"] == 1
    # Holding the cookie without the private key gets nothing.
    squatter = RegisterMessage(
        name="eve", public_key=alice.public_key, cookie=challenge.cookie, proof=bytes(32)
    )
    assert exchange(server, squatter, ALICE_AT) == []
    assert server.drops["bad registration proof"] == 1


def test_a_name_belongs_to_its_key_until_it_expires() -> None:
    server = new_server()
    register(server, "alice", KeyPair.generate(), ALICE_AT)
    [(reply, _)] = register(server, "alice", KeyPair.generate(), BOB_AT, now=SECOND_NS)
    assert isinstance(reply, ErrorMessage) and reply.code is ErrorCode.NAME_TAKEN
    later = 60 * SECOND_NS
    server.handle_timer(later)
    [(reply, _)] = register(server, "alice", KeyPair.generate(), BOB_AT, now=later)
    assert isinstance(reply, RegisteredMessage)


def test_a_roaming_peer_keeps_its_name() -> None:
    server = new_server()
    alice = KeyPair.generate()
    register(server, "alice", alice, ALICE_AT)
    [(reply, to)] = register(server, "alice", alice, ("192.0.2.99", 1234), now=SECOND_NS)
    assert isinstance(reply, RegisteredMessage) and to == ("192.0.2.99", 1234)


def test_both_peers_are_introduced_at_once_and_agree_on_the_dialer() -> None:
    server = new_server()
    alice, bob = KeyPair.generate(), KeyPair.generate()
    register(server, "alice", alice, ALICE_AT)
    register(server, "bob", bob, BOB_AT)
    replies = exchange(server, ConnectMessage(request=1, name="bob"), ALICE_AT)
    assert sorted(address for _, address in replies) == sorted([ALICE_AT, BOB_AT])
    by_address = {address: message for message, address in replies}
    to_alice, to_bob = by_address[ALICE_AT], by_address[BOB_AT]
    assert isinstance(to_alice, IntroduceMessage) and isinstance(to_bob, IntroduceMessage)
    assert to_alice.name == "bob" and to_alice.address == BOB_AT
    assert to_alice.public_key == bob.public_key and to_bob.public_key == alice.public_key
    assert to_alice.dialer != to_bob.dialer
    assert to_alice.dialer == (alice.public_key < bob.public_key)
    # Bob asking for Alice at the same time gets the same introduction, not a second one.
    again = exchange(server, ConnectMessage(request=9, name="alice"), BOB_AT)
    assert {message.token for message, _ in again if isinstance(message, IntroduceMessage)} == {
        to_alice.token
    }
    assert server.statistics()["introductions"] == 1
    # Unacknowledged introductions are resent; acknowledged ones are not.
    exchange(server, IntroAckMessage(token=to_alice.token), ALICE_AT)
    deadline = server.get_timer()
    assert deadline is not None and deadline <= SECOND_NS
    server.handle_timer(deadline)
    resent = server.datagrams_to_send(deadline)
    assert [address for _, address in resent] == [BOB_AT]


def test_refusals() -> None:
    server = new_server()
    [(reply, _)] = exchange(server, ConnectMessage(request=5, name="bob"), ALICE_AT)
    assert isinstance(reply, ErrorMessage) and reply.code is ErrorCode.NOT_REGISTERED
    register(server, "alice", KeyPair.generate(), ALICE_AT)
    [(reply, _)] = exchange(server, ConnectMessage(request=6, name="bob"), ALICE_AT)
    assert isinstance(reply, ErrorMessage) and reply.code is ErrorCode.UNKNOWN_PEER
    assert reply.request == 6


def introduced_pair(server: RendezvousServer) -> bytes:
    register(server, "alice", KeyPair.generate(), ALICE_AT)
    register(server, "bob", KeyPair.generate(), BOB_AT)
    replies = exchange(server, ConnectMessage(request=1, name="bob"), ALICE_AT)
    token = replies[0][0]
    assert isinstance(token, IntroduceMessage)
    return token.token


def test_the_relay_forwards_by_connection_id_between_the_pair_only() -> None:
    server = new_server()
    token = introduced_pair(server)
    [(bound, _)] = exchange(server, RelayBindMessage(token=token, connection_id=77), ALICE_AT)
    assert bound == RelayBoundMessage(token=token, connection_id=77)
    packet = data_packet(77)
    server.receive_datagram(packet, ALICE_AT, 1)
    server.receive_datagram(packet, BOB_AT, 2)
    assert server.datagrams_to_send(2) == [(packet, BOB_AT), (packet, ALICE_AT)]
    server.receive_datagram(packet, ("192.0.2.1", 1), 3)  # a stranger
    server.receive_datagram(data_packet(78), ALICE_AT, 4)  # not bound
    server.receive_datagram(b"\x80short", ALICE_AT, 5)  # not even QOTP
    assert server.datagrams_to_send(5) == []
    stats = server.statistics()
    assert stats["relayed_datagrams"] == 2 and stats["relayed_bytes"] == 2 * len(packet)
    assert stats["dropped_relay_from_unknown_address"] == 1
    assert stats["dropped_relay_not_bound"] == 1 and stats["dropped_undecodable"] == 1


def test_relaying_is_bounded_per_peer_and_in_total() -> None:
    server = new_server(
        relay_bytes_per_s_per_peer=10_000, relay_burst_bytes=1_000, max_relays_per_peer=1
    )
    token = introduced_pair(server)
    exchange(server, RelayBindMessage(token=token, connection_id=1), ALICE_AT)
    [(refused, _)] = exchange(server, RelayBindMessage(token=token, connection_id=2), ALICE_AT)
    assert isinstance(refused, ErrorMessage) and refused.code is ErrorCode.RELAY_REFUSED
    for _ in range(10):  # 10 x 500 bytes at one instant: the 1000-byte burst passes two
        server.receive_datagram(data_packet(1, 500), ALICE_AT, 0)
    assert len(server.datagrams_to_send(0)) == 2
    # A tenth of a second refills 1000 bytes at 10 kB/s.
    for _ in range(10):
        server.receive_datagram(data_packet(1, 500), ALICE_AT, SECOND_NS // 10)
    assert len(server.datagrams_to_send(SECOND_NS // 10)) == 2
    assert server.drops["relay rate"] == 16


def test_idle_relays_close_with_what_they_carried() -> None:
    server = new_server(relay_idle_ns=5 * SECOND_NS)
    token = introduced_pair(server)
    exchange(server, RelayBindMessage(token=token, connection_id=5), ALICE_AT)
    server.receive_datagram(data_packet(5), ALICE_AT, 0)
    for second in range(1, 8):
        server.handle_timer(second * SECOND_NS)
    events = []
    while (event := server.next_event()) is not None:
        events.append(event)
    closed = [event for event in events if isinstance(event, RelayClosed)]
    assert closed == [RelayClosed(connection_id=5, peers=("alice", "bob"), datagrams=1, bytes=60)]
    assert server.statistics()["relays"] == 0


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.binary(max_size=80), max_size=10))
def test_arbitrary_datagrams_never_raise(datagrams: list[bytes]) -> None:
    server = new_server()
    introduced_pair(server)
    for index, data in enumerate(datagrams):
        server.receive_datagram(b"QRV1" + data if index % 2 else data, ALICE_AT, index)
        server.datagrams_to_send(index)
