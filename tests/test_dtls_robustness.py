"""Hostile input: garbage and mutated records and handshake messages.

Whatever arrives, nothing but counted drops or a clean ``ConnectionTerminated``
may come out: no exception escapes ``receive_datagram``, other peers on the
endpoint carry on, and memory stays bounded.
"""

from __future__ import annotations

import random

import pytest
from dtls_helpers import CLIENT_ADDRESS, DTLS_1_3_ONLY, SERVER_ADDRESS, configs, run_pair
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dtls.connection import DTLSConnection, HandshakeState
from dtls.endpoint import DTLSEndpoint
from dtls.records import DTLS_1_2, ContentType, encode_record_header  # noqa: F401

CLIENT_CONFIG, SERVER_CONFIG, _ = configs()


def _client_flights() -> list[bytes]:
    """Every datagram a genuine client sends in a full handshake with cookie exchange."""
    client = DTLSConnection(CLIENT_CONFIG, address=SERVER_ADDRESS)
    server = DTLSConnection(SERVER_CONFIG, address=CLIENT_ADDRESS)
    client.start_handshake(0)
    sent: list[bytes] = []
    for _ in range(6):
        for datagram, _ in client.datagrams_to_send(0):
            sent.append(datagram)
            server.receive_datagram(datagram, CLIENT_ADDRESS, 0)
        for datagram, _ in server.datagrams_to_send(0):
            client.receive_datagram(datagram, SERVER_ADDRESS, 0)
    assert client.is_established
    return sent


CLIENT_DATAGRAMS = _client_flights()


def _mutate(data: bytes, rng: random.Random) -> bytes:
    mutable = bytearray(data)
    for _ in range(rng.randrange(1, 4)):
        choice = rng.random()
        position = rng.randrange(len(mutable)) if mutable else 0
        if choice < 0.5 and mutable:
            mutable[position] = rng.randrange(256)
        elif choice < 0.7:
            del mutable[position:]
        elif choice < 0.85:
            mutable[position:position] = bytes(rng.randrange(256) for _ in range(rng.randrange(8)))
        elif mutable:
            del mutable[position : position + rng.randrange(1, 20)]
    return bytes(mutable)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.integers(min_value=0, max_value=2**32), st.integers(min_value=0, max_value=10))
def test_mutated_handshake_datagrams_only_drop_or_terminate(seed: int, index: int) -> None:
    rng = random.Random(seed)
    server = DTLSConnection(SERVER_CONFIG, address=CLIENT_ADDRESS)
    datagrams = list(CLIENT_DATAGRAMS)
    victim = index % len(datagrams)
    datagrams[victim] = _mutate(datagrams[victim], rng)
    for datagram in datagrams:
        server.receive_datagram(datagram, CLIENT_ADDRESS, 0)
        server.datagrams_to_send(0)
        if server.get_timer() is not None:
            server.handle_timer(server.get_timer() or 0)
    assert server.state in set(HandshakeState)
    while server.next_event() is not None:
        pass


@settings(max_examples=200, deadline=None)
@given(st.lists(st.binary(max_size=200), max_size=10))
def test_random_datagrams_into_established_connection(datagrams: list[bytes]) -> None:
    client = DTLSConnection(CLIENT_CONFIG, address=SERVER_ADDRESS)
    server = DTLSConnection(SERVER_CONFIG, address=CLIENT_ADDRESS)
    now = run_pair(client, server)
    for datagram in datagrams:
        server.receive_datagram(datagram, CLIENT_ADDRESS, now)
    # Unauthenticated bytes cannot touch an established connection.
    assert server.is_established
    client.send(b"after the noise")
    for datagram, _ in client.datagrams_to_send(now):
        server.receive_datagram(datagram, CLIENT_ADDRESS, now)
    assert server.receive() == b"after the noise"


@settings(max_examples=200, deadline=None)
@given(
    st.integers(min_value=0, max_value=255),
    st.integers(min_value=0, max_value=3),
    st.integers(min_value=0, max_value=2**48 - 1),
    st.binary(max_size=120),
)
def test_forged_records_into_established_connection(
    content_type: int, epoch: int, sequence: int, payload: bytes
) -> None:
    client = DTLSConnection(CLIENT_CONFIG, address=SERVER_ADDRESS)
    server = DTLSConnection(SERVER_CONFIG, address=CLIENT_ADDRESS)
    now = run_pair(client, server)
    forged = encode_record_header(content_type, DTLS_1_2, epoch, sequence, len(payload)) + payload
    server.receive_datagram(forged, CLIENT_ADDRESS, now)
    # Not even plaintext epoch-0 alerts or handshake junk may end a protected session.
    assert server.is_established


@pytest.mark.parametrize("version", ["1.2", "1.3"])
def test_endpoint_survives_a_mutation_storm_and_serves_others(version: str) -> None:
    if version == "1.3":
        client_config, server_config = CLIENT_CONFIG_13, SERVER_CONFIG_13
        base_datagrams = CLIENT_DATAGRAMS_13
    else:
        client_config, server_config, base_datagrams = (
            CLIENT_CONFIG,
            SERVER_CONFIG,
            CLIENT_DATAGRAMS,
        )
    endpoint = DTLSEndpoint(server_config, connection_id_bytes=4)
    rng = random.Random(11)
    for round_number in range(400):
        source = ("203.0.113.5", rng.randrange(1, 50))
        base = base_datagrams[rng.randrange(len(base_datagrams))]
        endpoint.receive_datagram(_mutate(base, rng), source, round_number)
        endpoint.datagrams_to_send(round_number)
        if (timer := endpoint.get_timer()) is not None and timer <= round_number:
            endpoint.handle_timer(round_number)
    assert endpoint.internal_errors == 0
    # A well-behaved client still gets through the same endpoint.
    client = DTLSConnection(client_config, address=SERVER_ADDRESS)
    client.start_handshake(1000)
    for _ in range(6):
        for datagram, _ in client.datagrams_to_send(1000):
            endpoint.receive_datagram(datagram, ("198.51.100.1", 1), 1000)
        for datagram, _ in endpoint.datagrams_to_send(1000):
            client.receive_datagram(datagram, SERVER_ADDRESS, 1000)
    assert client.is_established and client.negotiated_version == f"DTLSv{version}"


def test_half_open_handshakes_have_bounded_memory() -> None:
    """Cookie-verified clients that then send huge fragmented junk cannot grow the server."""
    from dtls.reassembly import MAX_BUFFERED_BYTES

    endpoint = DTLSEndpoint(SERVER_CONFIG)
    for peer in range(20):
        address = ("192.0.2.77", peer)
        client = DTLSConnection(CLIENT_CONFIG, address=SERVER_ADDRESS)
        client.start_handshake(0)
        for _ in range(2):
            for datagram, _ in client.datagrams_to_send(0):
                endpoint.receive_datagram(datagram, address, 0)
            for datagram, _ in endpoint.datagrams_to_send(0):
                client.receive_datagram(datagram, SERVER_ADDRESS, 0)
        for seq in range(2, 40):
            body = (
                bytes((11,))
                + (60000).to_bytes(3, "big")
                + seq.to_bytes(2, "big")
                + (0).to_bytes(3, "big")
                + (100).to_bytes(3, "big")
                + b"j" * 100
            )
            junk = encode_record_header(ContentType.handshake, DTLS_1_2, 0, 100 + seq, len(body))
            endpoint.receive_datagram(junk + body, address, 0)
    assert len(endpoint.connections) == 20
    for connection in endpoint.connections.values():
        assert connection._reassembler.buffered_bytes() <= MAX_BUFFERED_BYTES
        assert connection.parked_records <= 16


# -- the same for DTLS 1.3 (unified headers, record-number encryption, ACKs) --------------

CLIENT_CONFIG_13, SERVER_CONFIG_13, _ = configs(versions=DTLS_1_3_ONLY)


def _flights_13() -> tuple[list[bytes], list[bytes]]:
    """Every datagram a genuine 1.3 client and server send (HRR, flights, ACK, ticket)."""
    client = DTLSConnection(CLIENT_CONFIG_13, address=SERVER_ADDRESS)
    server = DTLSConnection(SERVER_CONFIG_13, address=CLIENT_ADDRESS)
    client.start_handshake(0)
    from_client: list[bytes] = []
    from_server: list[bytes] = []
    for _ in range(6):
        for datagram, _ in client.datagrams_to_send(0):
            from_client.append(datagram)
            server.receive_datagram(datagram, CLIENT_ADDRESS, 0)
        for datagram, _ in server.datagrams_to_send(0):
            from_server.append(datagram)
            client.receive_datagram(datagram, SERVER_ADDRESS, 0)
    assert client.is_established and server.is_established
    return from_client, from_server


CLIENT_DATAGRAMS_13, SERVER_DATAGRAMS_13 = _flights_13()


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.integers(min_value=0, max_value=2**32),
    st.integers(min_value=0, max_value=10),
    st.booleans(),
)
def test_13_mutated_handshake_datagrams_only_drop_or_terminate(
    seed: int, index: int, to_server: bool
) -> None:
    rng = random.Random(seed)
    client = DTLSConnection(CLIENT_CONFIG_13, address=SERVER_ADDRESS)
    server = DTLSConnection(SERVER_CONFIG_13, address=CLIENT_ADDRESS)
    client.start_handshake(0)
    mutated = False
    for _ in range(6):
        for sender, receiver, source in (
            (client, server, CLIENT_ADDRESS),
            (server, client, SERVER_ADDRESS),
        ):
            for datagram, _ in sender.datagrams_to_send(0):
                if not mutated and (sender is client) == to_server and rng.random() < 0.5:
                    datagram = _mutate(datagram, rng)
                    mutated = True
                receiver.receive_datagram(datagram, source, 0)
    for connection in (client, server):
        assert connection.state in set(HandshakeState)
        if (timer := connection.get_timer()) is not None:
            connection.handle_timer(timer)
        while connection.next_event() is not None:
            pass


@settings(max_examples=150, deadline=None)
@given(st.lists(st.binary(max_size=200), max_size=10), st.booleans())
def test_13_random_datagrams_into_established_connection(
    datagrams: list[bytes], unified: bool
) -> None:
    client = DTLSConnection(CLIENT_CONFIG_13, address=SERVER_ADDRESS)
    server = DTLSConnection(SERVER_CONFIG_13, address=CLIENT_ADDRESS)
    now = run_pair(client, server, stop_when_established=False)
    for datagram in datagrams:
        if unified and datagram:
            datagram = bytes((0x20 | datagram[0] & 0x1F,)) + datagram[1:]  # a 1.3 header
        server.receive_datagram(datagram, CLIENT_ADDRESS, now)
        client.receive_datagram(datagram, SERVER_ADDRESS, now)
    assert server.is_established and client.is_established
    client.send(b"after the noise")
    for datagram, _ in client.datagrams_to_send(now):
        server.receive_datagram(datagram, CLIENT_ADDRESS, now)
    assert server.receive() == b"after the noise"


@settings(max_examples=150, deadline=None)
@given(
    st.integers(min_value=0, max_value=0x1F),
    st.binary(min_size=0, max_size=8),
    st.binary(min_size=16, max_size=120),
    st.sampled_from([20, 21, 22, 23, 26]),
)
def test_13_forged_records_into_established_connection(
    flags: int, header_rest: bytes, payload: bytes, plaintext_type: int
) -> None:
    client = DTLSConnection(CLIENT_CONFIG_13, address=SERVER_ADDRESS)
    server = DTLSConnection(SERVER_CONFIG_13, address=CLIENT_ADDRESS)
    now = run_pair(client, server, stop_when_established=False)
    dropped = server.dropped_records
    forged_unified = bytes((0x20 | flags,)) + header_rest + payload
    forged_plain = encode_record_header(plaintext_type, DTLS_1_2, 0, 7, len(payload)) + payload
    for forged in (forged_unified, forged_plain):
        server.receive_datagram(forged, CLIENT_ADDRESS, now)
    # Not a plaintext alert, ACK or handshake junk, nor a forged ciphertext: nothing ends it.
    assert server.is_established and server.dropped_records > dropped
    assert server.get_timer() is None  # and nothing forged stopped or started a timer
