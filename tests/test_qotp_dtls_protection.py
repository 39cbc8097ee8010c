"""The QOTP transport over DTLS record protection (qotp.dtls_protection).

Everything above the seam (streams, ACKs, BBR, flow control, FIN/ACK close)
is the same code as over the native envelope; here it runs over DTLS 1.2
between sans-IO endpoints (enginepair, netsim) and once over real sockets.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import random
import re
from collections.abc import Callable
from pathlib import Path

import pytest
from dtls_helpers import configs
from enginepair import CLIENT_ADDRESS, SERVER_ADDRESS, EnginePair, run_alone
from netsim import MS, SECOND, LinkConditions, Network
from transfer import Transfer

from dtls.config import DTLSConfiguration, DTLSVersion
from dtls.suites import TLS13_SUITES, CipherSuite
from qotp.asyncio import listen
from qotp.config import QotpConfiguration
from qotp.dtls_protection import (
    MAX_RECORD_PLAINTEXT_BYTES,
    DtlsCryptoLayer,
    DtlsProtection,
    subject_public_key_info,
)
from qotp.endpoint import QotpEndpoint
from qotp.errors import LocalProtocolError
from qotp.events import (
    ConnectionEstablished,
    ConnectionTerminated,
    PeerAddressChanged,
    TerminationReason,
)
from qotp.keys import KeyPair

MB = 1 << 20
PSK = bytes(range(32))
AES_128_GCM = CipherSuite.TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256
CHACHA20 = CipherSuite.TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256
PSK_AES_128_GCM = CipherSuite.TLS_PSK_WITH_AES_128_GCM_SHA256
DTLS13_AES_128_GCM = CipherSuite.TLS_AES_128_GCM_SHA256
DTLS13_CHACHA20 = CipherSuite.TLS_CHACHA20_POLY1305_SHA256


def layers(
    *,
    suite: CipherSuite = AES_128_GCM,
    connection_id_bytes: int = 0,
    psk: bool = False,
    **client_options: object,
) -> tuple[DtlsCryptoLayer, DtlsCryptoLayer]:
    """A client and a server layer; PSK suites get a PSK, the others a test PKI.

    A DTLS 1.3 suite makes both sides speak DTLS 1.3 only (``psk``: with a PSK
    and no certificates), any other suite DTLS 1.2 only.
    """
    versions = (DTLSVersion.DTLS_1_3,) if suite in TLS13_SUITES else (DTLSVersion.DTLS_1_2,)
    if suite is PSK_AES_128_GCM or psk:
        client_config = DTLSConfiguration(
            cipher_suites=(suite,),
            psk=PSK,
            psk_identity=b"client-1",
            versions=versions,
            **client_options,  # type: ignore[arg-type]
        )
        server_config = DTLSConfiguration(
            is_client=False, cipher_suites=(suite,), psk=PSK, versions=versions
        )
    else:
        client_config, server_config, _ = configs(
            cipher_suites=(suite,), versions=versions, **client_options
        )
    return (
        DtlsCryptoLayer(client=client_config, connection_id_bytes=connection_id_bytes),
        DtlsCryptoLayer(server=server_config, connection_id_bytes=connection_id_bytes),
    )


def endpoints(
    configuration: QotpConfiguration | None = None, **options: object
) -> tuple[QotpEndpoint, QotpEndpoint]:
    client_layer, server_layer = layers(**options)  # type: ignore[arg-type]
    return (
        QotpEndpoint(crypto=client_layer, configuration=configuration),
        QotpEndpoint(crypto=server_layer, configuration=configuration),
    )


def run_pair(pair: EnginePair, transfer: Transfer, until: Callable[[], bool] | None = None) -> None:
    """Drive an EnginePair until the transfer is done (or ``until()`` holds)."""
    transfer.events = pair.events  # the pair collects the endpoints' events itself

    def progress() -> bool:
        transfer.step(pair.now)
        return until() if until is not None else transfer.done()

    pair.run_until(progress)


def run_over_network(
    conditions: LinkConditions, *, streams: int, size: int, seed: int, **options: object
) -> tuple[Transfer, Network]:
    client, server = endpoints(**options)
    network = Network(client, server, a_to_b=conditions, b_to_a=conditions, seed=seed)
    transfer = Transfer(client, server, network.b_address, streams, size)
    network.run_until(transfer.done, on_step=transfer.step, limit_ns=600 * SECOND)
    transfer.verify()
    return transfer, network


# -- the whole transport over DTLS ----------------------------------------------


@pytest.mark.parametrize(
    ("suite", "loss", "connection_id_bytes", "psk"),
    [
        (AES_128_GCM, 0.0, 0, False),
        (CHACHA20, 0.05, 0, False),
        (AES_128_GCM, 0.20, 8, False),
        (PSK_AES_128_GCM, 0.05, 4, True),
        (DTLS13_AES_128_GCM, 0.05, 0, False),
        (DTLS13_CHACHA20, 0.20, 8, False),
        (DTLS13_AES_128_GCM, 0.05, 4, True),
    ],
)
def test_streams_over_lossy_reordering_link_bit_exact_and_closed(
    suite: CipherSuite, loss: float, connection_id_bytes: int, psk: bool
) -> None:
    conditions = LinkConditions(
        delay_ns=5 * MS, jitter_ns=2 * MS, loss=loss, duplicate=0.02, corrupt=0.005,
        bandwidth_bytes_per_s=100 * MB, queue_bytes=4 * MB,
    )  # fmt: skip
    transfer, network = run_over_network(
        conditions,
        streams=4,
        size=MB,
        seed=5,
        suite=suite,
        connection_id_bytes=connection_id_bytes,
        psk=psk,
    )
    connection = transfer.connection
    protection = connection.protection
    assert isinstance(protection, DtlsProtection)
    assert protection.dtls.cipher_suite is suite
    assert protection.dtls.negotiated_version == (
        "DTLSv1.3" if suite in TLS13_SUITES else "DTLSv1.2"
    )
    if connection_id_bytes:
        assert len(protection.dtls.peer_connection_id) == connection_id_bytes
    if loss:
        assert network.statistics("a").lost > 0
        assert connection.statistics().retransmitted_packets > 0
    assert network.statistics("a").corrupted > 0
    server = transfer.server_connection
    assert server is not None and server.dropped_datagrams > 0  # corrupted and duplicated
    assert not len(connection.streams) and not len(server.streams)
    # Closing the connection ends both sides cleanly (no streams left to finish).
    connection.close(now=network.now)
    server.close(now=network.now)
    assert connection.is_terminated and server.is_terminated
    transfer.client.mark_ready(connection)
    transfer.server.mark_ready(server)
    transfer.step(network.now)
    for side in ("client", "server"):
        (ended,) = [e for e in transfer.events[side] if isinstance(e, ConnectionTerminated)]
        assert ended.reason is TerminationReason.CLOSED and not ended.error


def test_eight_megabytes_over_eight_streams() -> None:
    conditions = LinkConditions(
        delay_ns=10 * MS, jitter_ns=3 * MS, loss=0.02, bandwidth_bytes_per_s=50 * MB
    )
    transfer, _ = run_over_network(conditions, streams=8, size=MB, seed=9)
    stats = transfer.connection.statistics()
    assert stats.bytes_sent == 8 * MB
    assert stats.congestion_state  # BBR ran over DTLS like over the native envelope


@pytest.mark.parametrize(
    "lost",
    [
        {"a": {0, 1}, "b": {0, 1}},  # ClientHello twice and HelloVerifyRequest, ServerHello
        {"b": {2}},  # the server's Finished flight
        {"a": {2}},  # the client's key exchange and Finished flight
        {"a": {0, 1, 2}, "b": {1, 2}},
    ],
)
@pytest.mark.parametrize("suite", [AES_128_GCM, DTLS13_AES_128_GCM])
def test_lost_handshake_flights_are_retransmitted(
    lost: dict[str, set[int]], suite: CipherSuite
) -> None:
    client, server = endpoints(suite=suite)
    network = Network(client, server, a_to_b=LinkConditions(delay_ns=20 * MS), seed=1)
    counts = {"a": 0, "b": 0}

    def lossy(sender: str, datagram: bytes) -> bool:
        index = counts[sender]
        counts[sender] += 1
        return index in lost.get(sender, set())

    network.drop = lossy
    transfer = Transfer(client, server, network.b_address, 2, 100_000)
    network.run_until(transfer.done, on_step=transfer.step, limit_ns=60 * SECOND)
    transfer.verify()
    assert transfer.connection.is_established
    if suite not in TLS13_SUITES:
        assert network.now > SECOND  # DTLS 1.2's retransmission timer (1 s) had to fire
    # DTLS 1.3 often repairs sooner: an ACK of the part of a flight that arrived (after a
    # quarter of the retransmission interval) makes the peer resend only what is missing.


def test_payload_budget_fills_datagrams_to_the_mtu_and_no_further() -> None:
    configuration = QotpConfiguration(mtu=1200)
    # DTLS 1.2: 13-byte header (+ 8-byte GCM nonce), tag; CID records add the id and a type byte.
    # DTLS 1.3: 5-byte unified header, inner type byte, tag; a CID adds only its own length.
    for suite, overhead in (
        (AES_128_GCM, 37),
        (CHACHA20, 29),
        (DTLS13_AES_128_GCM, 22),
        (DTLS13_CHACHA20, 22),
    ):
        for connection_id_bytes in (0, 6):
            client, server = endpoints(
                configuration, suite=suite, connection_id_bytes=connection_id_bytes
            )
            pair = EnginePair(client, server)
            sizes: list[int] = []

            def measure(side: str, datagram: bytes, sizes: list[int] = sizes) -> bool:
                sizes.append(len(datagram))
                return False

            pair.drop = measure
            transfer = Transfer(client, server, SERVER_ADDRESS, 1, 200_000)
            run_pair(pair, transfer)
            protection = transfer.connection.protection
            extra = connection_id_bytes + (
                1 if connection_id_bytes and suite not in TLS13_SUITES else 0
            )
            assert protection.payload_budget(1200) == 1200 - overhead - extra
            assert max(sizes) == 1200 and sizes.count(1200) > 100  # full data packets
            assert protection.payload_budget(100_000) == MAX_RECORD_PLAINTEXT_BYTES


# -- hostile and broken input --------------------------------------------------------


def test_tampered_datagram_is_dropped_and_counted_and_the_connection_lives() -> None:
    client, server = endpoints()
    pair = EnginePair(client, server)
    sent = {"client": 0}

    def tamper(side: str, datagram: bytes) -> bool:
        if side == "client":
            sent["client"] += 1
            if sent["client"] == 40:  # a data packet well after the handshake
                flipped = bytearray(datagram)
                flipped[len(flipped) // 2] ^= 0x40
                pair.in_flight.append((pair.now + 1, "client", bytes(flipped), CLIENT_ADDRESS))
        return False

    pair.drop = tamper
    transfer = Transfer(client, server, SERVER_ADDRESS, 2, 300_000)
    run_pair(pair, transfer)
    transfer.verify()
    server_connection = transfer.server_connection
    assert server_connection is not None and not server_connection.is_terminated
    assert server.drops["unauthenticated"] == 1
    assert server_connection.dropped_datagrams == 1


def test_arbitrary_bytes_only_become_counted_drops() -> None:
    client, server = endpoints()
    pair = EnginePair(client, server)
    transfer = Transfer(client, server, SERVER_ADDRESS, 1, 50_000)
    run_pair(pair, transfer)
    rng = random.Random(3)
    junk = [rng.randbytes(rng.randrange(0, 1500)) for _ in range(300)]
    junk += [
        bytes((kind,)) + rng.randbytes(rng.randrange(12, 200)) for kind in (20, 21, 22, 23, 25)
    ]
    before = sum(server.drops.values())
    for index, datagram in enumerate(junk):
        source = CLIENT_ADDRESS if index % 2 else ("198.51.100.1", index)
        server.receive_datagram(datagram, source, pair.now)
        client.receive_datagram(datagram, SERVER_ADDRESS, pair.now)
    assert sum(server.drops.values()) == before + len(junk)
    assert len(server.connections) == 1
    # The connection still works afterwards.
    assert not transfer.connection.is_terminated
    transfer.connection.send_stream_data(9, b"still alive", end_stream=True, now=pair.now)
    client.mark_ready(transfer.connection)
    server_connection = transfer.server_connection
    assert server_connection is not None
    pair.run_until(lambda: server_connection.readable(9) == 11)


def test_no_connection_before_the_cookie() -> None:
    client_layer, server_layer = layers()
    server = QotpEndpoint(crypto=server_layer)
    for index in range(50):
        client = QotpEndpoint(crypto=layers()[0])
        client.connect(SERVER_ADDRESS, now=0)
        ((hello, _),) = client.datagrams_to_send(0)
        server.receive_datagram(hello, ("198.51.100.7", index), 0)
    assert server.connections == {}
    assert server_layer.hello_verify_requests_sent == 50
    replies = server.datagrams_to_send(0)
    assert len(replies) == 50 and all(len(datagram) < 100 for datagram, _ in replies)
    assert server.get_timer() is None


def test_untrusted_certificate_fails_the_handshake_on_both_sides() -> None:
    client_config, _, _ = configs()
    _, server_config, _ = configs()  # another CA
    client = QotpEndpoint(crypto=DtlsCryptoLayer(client=client_config))
    server = QotpEndpoint(crypto=DtlsCryptoLayer(server=server_config))
    pair = EnginePair(client, server)
    connection = client.connect(SERVER_ADDRESS, now=0)
    pair.run_until(lambda: connection.is_terminated and not server.connections)
    (ended,) = [e for e in pair.events["client"] if isinstance(e, ConnectionTerminated)]
    assert ended.error and ended.reason is TerminationReason.HANDSHAKE_FAILED
    assert "bad_certificate" in ended.detail
    assert not any(isinstance(e, ConnectionEstablished) for e in pair.events["server"])


# -- identity, routing, key log --------------------------------------------------------


def test_peer_identity_is_the_certificate_key_and_can_be_pinned() -> None:
    client, server = endpoints()
    pair = EnginePair(client, server)
    transfer = Transfer(client, server, SERVER_ADDRESS, 1, 1000, peer_public_key=server.public_key)
    run_pair(pair, transfer)
    (established,) = [e for e in transfer.events["client"] if isinstance(e, ConnectionEstablished)]
    assert established.peer_public_key == server.public_key
    protection = transfer.connection.protection
    assert isinstance(protection, DtlsProtection)
    assert server.public_key == subject_public_key_info(protection.dtls.peer_certificates[0])
    (at_server,) = [e for e in transfer.events["server"] if isinstance(e, ConnectionEstablished)]
    assert at_server.peer_public_key is None  # the client showed no certificate


def test_pinned_identity_mismatch_ends_both_sides() -> None:
    client, server = endpoints()
    pair = EnginePair(client, server)
    wrong = subject_public_key_info(configs()[1].certificate_chain[0])
    connection = client.connect(SERVER_ADDRESS, now=0, peer_public_key=wrong)
    pair.run_until(
        lambda: (
            connection.is_terminated
            and any(isinstance(e, ConnectionTerminated) for e in pair.events["server"])
        )
    )
    (ended,) = [e for e in pair.events["client"] if isinstance(e, ConnectionTerminated)]
    assert "identity differs" in ended.detail
    assert not any(isinstance(e, ConnectionEstablished) for e in pair.events["client"])


def test_psk_has_no_identity_key() -> None:
    client, server = endpoints(suite=PSK_AES_128_GCM)
    with pytest.raises(LocalProtocolError):
        _ = server.public_key
    pair = EnginePair(client, server)
    transfer = Transfer(client, server, SERVER_ADDRESS, 1, 10_000)
    run_pair(pair, transfer)
    assert transfer.connection.protection.peer_identity is None


def test_connection_id_lets_the_client_move() -> None:
    client, server = endpoints(connection_id_bytes=8)
    pair = EnginePair(client, server)
    transfer = Transfer(client, server, SERVER_ADDRESS, 1, 400_000)
    run_pair(pair, transfer, until=lambda: len(transfer.received[0]) > 100_000)
    pair.client_address = ("203.0.113.9", 9999)  # NAT rebinding mid-transfer
    run_pair(pair, transfer)
    transfer.verify()
    moved = [e for e in transfer.events["server"] if isinstance(e, PeerAddressChanged)]
    assert moved and moved[-1].new_address == ("203.0.113.9", 9999)


def test_without_connection_id_a_moved_client_is_a_stranger() -> None:
    client, server = endpoints()
    pair = EnginePair(client, server)
    transfer = Transfer(client, server, SERVER_ADDRESS, 1, 400_000)
    run_pair(pair, transfer, until=lambda: len(transfer.received[0]) > 100_000)
    pair.client_address = ("203.0.113.9", 9999)
    for _ in range(20):
        transfer.step(pair.now)
        pair.step()
    assert server.drops["unknown connection"] > 1
    assert not any(isinstance(e, PeerAddressChanged) for e in transfer.events["server"])


def test_client_that_lost_its_state_replaces_its_old_connection() -> None:
    client_layer, server_layer = layers()
    server = QotpEndpoint(crypto=server_layer)
    pair = EnginePair(QotpEndpoint(crypto=client_layer), server)
    first = Transfer(pair.client, server, SERVER_ADDRESS, 1, 10_000)
    run_pair(pair, first)
    old_id = first.connection.connection_id
    # Same address, new process: a fresh client layer dials again.
    pair.client = QotpEndpoint(crypto=DtlsCryptoLayer(client=client_layer.client_configuration))
    second = Transfer(pair.client, server, SERVER_ADDRESS, 1, 10_000)
    run_pair(pair, second)
    second.verify()
    assert second.connection.connection_id != old_id
    old = server.connections[old_id]
    assert isinstance(old.protection, DtlsProtection)
    assert not old.protection.can_carry_payload and "replaced" in (old.protection.failure or "")
    # It ends on its next timer (here: its idle timeout, nothing else is pending).
    pair.run_until(lambda: old_id not in server.connections)
    (ended,) = [e for e in pair.events["server"] if isinstance(e, ConnectionTerminated)]
    assert ended.connection_id == old_id


def test_both_sides_log_the_same_key_line() -> None:
    client_layer, server_layer = layers()
    lines: dict[str, list[str]] = {"client": [], "server": []}
    client = QotpEndpoint(crypto=client_layer, key_log=lines["client"].append)
    server = QotpEndpoint(crypto=server_layer, key_log=lines["server"].append)
    pair = EnginePair(client, server)
    transfer = Transfer(client, server, SERVER_ADDRESS, 1, 1000)
    run_pair(pair, transfer)
    assert len(lines["client"]) == 1 and lines["client"] == lines["server"]
    assert re.fullmatch(r"CLIENT_RANDOM [0-9a-f]{64} [0-9a-f]{96}\n", lines["client"][0])


def test_layer_and_endpoint_misuse() -> None:
    client_layer, server_layer = layers()
    with pytest.raises(LocalProtocolError):
        DtlsCryptoLayer()
    with pytest.raises(LocalProtocolError):
        QotpEndpoint(crypto=client_layer, identity=KeyPair.generate())
    with pytest.raises(LocalProtocolError):
        server_layer.dial(SERVER_ADDRESS, now=0)  # no client configuration
    client_layer.dial(SERVER_ADDRESS, now=0)
    with pytest.raises(LocalProtocolError):
        client_layer.dial(SERVER_ADDRESS, now=0)  # one connection per address
    assert client_layer.accept(b"\x16" + bytes(40), CLIENT_ADDRESS, 0) is None  # not a server


def test_dtls_package_does_not_import_qotp() -> None:
    root = Path(__file__).resolve().parent.parent / "dtls"
    for path in root.rglob("*.py"):
        source = path.read_text()
        assert not re.search(r"^\s*(from|import)\s+qotp\b", source, re.MULTILINE), path


# -- asyncio over real loopback sockets ----------------------------------------------


def test_asyncio_api_over_dtls_on_loopback() -> None:
    client_layer, server_layer = layers()
    payloads = {stream_id: os.urandom(300_000 + stream_id) for stream_id in (1, 2)}

    async def main() -> None:
        async with (
            await listen("127.0.0.1", 0, crypto=server_layer) as server,
            await listen("127.0.0.1", 0, crypto=client_layer) as client,
        ):

            async def serve() -> None:
                connection = await server.accept()
                for _ in payloads:
                    stream = await connection.accept_stream()
                    data = await stream.read()
                    stream.write(hashlib.sha256(data).digest())
                    stream.close()

            task = asyncio.create_task(serve())
            connection = await client.dial(server.local_address, timeout=None)
            assert connection.peer_public_key == server.public_key
            streams = {stream_id: connection.stream(stream_id) for stream_id in payloads}
            for stream_id, stream in streams.items():
                stream.write(payloads[stream_id])
                stream.close()
            for stream_id, stream in streams.items():
                assert await stream.read() == hashlib.sha256(payloads[stream_id]).digest()
            await task
            protection = connection.engine.protection
            assert isinstance(protection, DtlsProtection) and protection.dtls.is_established

    asyncio.run(main())


def test_dtls_configuration_is_not_mutated_by_the_layer() -> None:
    client_config, server_config, _ = configs()
    layer = DtlsCryptoLayer(server=server_config, client=client_config)
    assert server_config.server_certificates is None  # the caller's object is untouched
    assert layer.server_configuration is not None
    assert layer.server_configuration.replay_window_records == 4096
    assert client_config.replay_window_records == 64


def test_dial_nobody_answers_ends_on_the_dtls_handshake_timeout() -> None:
    client_config, _, _ = configs(handshake_timeout_ns=5 * SECOND)
    client = QotpEndpoint(crypto=DtlsCryptoLayer(client=client_config))
    connection = client.connect(SERVER_ADDRESS, now=0)
    sends, ended, now = run_alone(client, limit_ns=60 * SECOND)
    assert connection.is_terminated
    # DTLS flight retransmission: 1 s, doubling.
    assert [send // MS for send in sends] == [0, 1000, 3000]
    assert [event.reason for event in ended] == [TerminationReason.HANDSHAKE_FAILED]
    assert ended[0].detail == "DTLS: handshake timeout"
    assert now == 5 * SECOND and not client.connections


def test_a_failed_handshake_sends_its_alert_so_the_peer_learns_why_at_once() -> None:
    """The connection ends on the failure, yet the protection's alert still leaves."""
    client_config, _, _ = configs()
    _, server_config, _ = configs()  # another CA: the client refuses the certificate
    client = QotpEndpoint(crypto=DtlsCryptoLayer(client=client_config))
    server = QotpEndpoint(crypto=DtlsCryptoLayer(server=server_config))
    pair = EnginePair(client, server)
    client.connect(SERVER_ADDRESS, now=0)
    pair.run_until(lambda: any(isinstance(e, ConnectionTerminated) for e in pair.events["server"]))
    (ended,) = [e for e in pair.events["server"] if isinstance(e, ConnectionTerminated)]
    assert ended.reason is TerminationReason.HANDSHAKE_FAILED
    assert "bad_certificate: received from peer" in ended.detail
    assert pair.now < SECOND  # the alert, not a timeout

    # A DTLS 1.3 server with only a PSK answers a certificate client with an alert.
    client_config, _, _ = configs(versions=(DTLSVersion.DTLS_1_3,))
    psk_only = DTLSConfiguration(is_client=False, psk=PSK, versions=(DTLSVersion.DTLS_1_3,))
    client = QotpEndpoint(crypto=DtlsCryptoLayer(client=client_config))
    server = QotpEndpoint(crypto=DtlsCryptoLayer(server=psk_only))
    pair = EnginePair(client, server)
    connection = client.connect(SERVER_ADDRESS, now=0)
    pair.run_until(lambda: connection.is_terminated)
    (ended,) = [e for e in pair.events["client"] if isinstance(e, ConnectionTerminated)]
    assert "handshake_failure: received from peer" in ended.detail
    assert connection.handshake_datagrams_received > 0
    assert pair.now < SECOND
