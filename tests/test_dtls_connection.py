"""Our client against our server, in memory, over a seeded simulated link."""

from __future__ import annotations

import dataclasses

import pytest
from dtls_helpers import (
    CLIENT_ADDRESS,
    DTLS_1_2_ONLY,
    SECOND_NS,
    SERVER_ADDRESS,
    configs,
    lossy,
    make_pki,
    run_pair,
)

from dtls.config import DTLSConfiguration
from dtls.connection import DTLSConnection, HandshakeState
from dtls.errors import AlertDescription, LocalProtocolError
from dtls.events import (
    ApplicationDataReceived,
    ConnectionTerminated,
    HandshakeCompleted,
    PeerClosedWrite,
)
from dtls.suites import CipherSuite, NamedGroup, SrtpProfile

CERT_SUITES = [
    (CipherSuite.TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256, "p256"),
    (CipherSuite.TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384, "p384"),
    (CipherSuite.TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256, "p256"),
    (CipherSuite.TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256, "rsa"),
    (CipherSuite.TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384, "rsa"),
    (CipherSuite.TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256, "rsa"),
]


def _events(connection: DTLSConnection) -> list[object]:
    out = []
    while (event := connection.next_event()) is not None:
        out.append(event)
    return out


def _pair(
    client_config: DTLSConfiguration, server_config: DTLSConfiguration
) -> tuple[DTLSConnection, DTLSConnection]:
    return (
        DTLSConnection(client_config, address=SERVER_ADDRESS),
        DTLSConnection(server_config, address=CLIENT_ADDRESS),
    )


def _exchange(sender: DTLSConnection, receiver: DTLSConnection, data: bytes, now: int) -> bytes:
    sender.send(data)
    source = CLIENT_ADDRESS if sender.is_client else SERVER_ADDRESS
    for datagram, _ in sender.datagrams_to_send(now):
        receiver.receive_datagram(datagram, source, now)
    received = receiver.receive()
    assert received is not None
    return received


@pytest.mark.parametrize(("suite", "kind"), CERT_SUITES)
@pytest.mark.parametrize("group", list(NamedGroup))
def test_full_handshake_every_suite_and_group(
    suite: CipherSuite, kind: str, group: NamedGroup
) -> None:
    # The client must also name an ECDSA certificate's curve (RFC 8422 5.1); the server's
    # single configured group then decides the ECDHE group.
    certificate_curve = {"p256": NamedGroup.secp256r1, "p384": NamedGroup.secp384r1}.get(kind)
    client_groups = tuple(dict.fromkeys((group, certificate_curve or group)))
    client_config, server_config, _ = configs(kind, cipher_suites=(suite,), groups=client_groups)
    server_config = dataclasses.replace(server_config, groups=(group,))
    client, server = _pair(client_config, server_config)
    now = run_pair(client, server)
    assert client.is_established and server.is_established
    assert client.cipher_suite is suite and server.cipher_suite is suite
    assert server.info.group is group and client.info.group is group
    assert client.negotiated_version == "DTLSv1.2"
    assert client.extended_master_secret and server.extended_master_secret
    assert _exchange(client, server, b"ping", now) == b"ping"
    assert _exchange(server, client, b"pong" * 300, now) == b"pong" * 300
    assert client.export_keying_material("EXPERIMENTAL x", b"ctx", 40) == (
        server.export_keying_material("EXPERIMENTAL x", b"ctx", 40)
    )
    assert client.channel_binding() == server.channel_binding()
    assert client.channel_binding("tls-unique") == server.channel_binding("tls-unique")
    assert client.client_random == server.client_random
    assert client.server_random == server.server_random
    assert [type(e) for e in _events(client)] == [HandshakeCompleted, ApplicationDataReceived]


@pytest.mark.parametrize(
    "suite",
    [
        CipherSuite.TLS_PSK_WITH_AES_128_GCM_SHA256,
        CipherSuite.TLS_ECDHE_PSK_WITH_CHACHA20_POLY1305_SHA256,
    ],
)
def test_psk_suites(suite: CipherSuite) -> None:
    key = bytes(range(16))
    client, server = _pair(
        DTLSConfiguration(is_client=True, psk=key, psk_identity=b"device-7"),
        DTLSConfiguration(
            is_client=False,
            psk_identity_hint=b"hint",
            psk_lookup=lambda identity: key if identity == b"device-7" else None,
            cipher_suites=(suite,),
        ),
    )
    now = run_pair(client, server)
    assert client.is_established and server.is_established
    assert server.psk_identity == b"device-7"
    assert _exchange(client, server, b"sensor", now) == b"sensor"


def test_psk_unknown_identity_fails_with_alert() -> None:
    client, server = _pair(
        DTLSConfiguration(is_client=True, psk=b"k" * 16, psk_identity=b"who"),
        DTLSConfiguration(is_client=False, psk_lookup=lambda identity: None),
    )
    run_pair(client, server)
    (event,) = [e for e in _events(client) if isinstance(e, ConnectionTerminated)]
    assert event.alert is AlertDescription.unknown_psk_identity and event.alert_received


def test_wrong_psk_is_no_retransmission_ping_pong() -> None:
    """The server cannot decrypt the Finished of a client with the wrong PSK.  Its
    retransmissions (flight 4) make the client repeat flight 5; the server used to
    answer the repeated ClientKeyExchange with flight 4 again, and the two peers
    ping-ponged at wire speed (thousands of datagrams a second) until a timeout.
    Only timers drive the exchange now: a handful of datagrams per side."""
    sent = {"a": 0, "b": 0}

    def count(sender: str, datagram: bytes, destination: object) -> None:
        sent[sender] += 1

    common = {"versions": DTLS_1_2_ONLY, "handshake_timeout_ns": 10 * SECOND_NS}
    client, server = _pair(
        DTLSConfiguration(is_client=True, psk=b"k" * 16, psk_identity=b"who", **common),
        DTLSConfiguration(is_client=False, psk=b"x" * 16, psk_identity=b"who", **common),
    )
    run_pair(client, server, until_ns=12 * SECOND_NS, tap=count)
    assert not client.is_established and not server.is_established
    assert sent["a"] + sent["b"] < 40, sent
    # No alert says why (DTLS drops what does not decrypt); the timeout reason does.
    assert server.terminated_reason is not None
    assert "did not decrypt: the keys differ, a wrong PSK?" in server.terminated_reason


@pytest.mark.parametrize("seed", range(8))
def test_handshake_over_lossy_link(seed: int) -> None:
    client_config, server_config, _ = configs()
    client, server = _pair(client_config, server_config)
    now = run_pair(client, server, link=lossy(loss=0.25, duplicate=0.1, reorder=0.3), seed=seed)
    assert client.is_established and server.is_established, (
        client.terminated_reason,
        server.terminated_reason,
    )
    assert now < 60 * SECOND_NS


@pytest.mark.parametrize("seed", range(4))
def test_small_mtu_fragments_and_reassembles_with_loss(seed: int) -> None:
    client_config, server_config, _ = configs("rsa", mtu=256)
    server_config = dataclasses.replace(server_config, mtu=256)
    client, server = _pair(client_config, server_config)
    run_pair(client, server, link=lossy(loss=0.1, reorder=0.3, duplicate=0.1), seed=seed)
    assert client.is_established and server.is_established


def _timer_gaps(configuration: DTLSConfiguration) -> tuple[list[int], DTLSConnection]:
    client = DTLSConnection(configuration, address=SERVER_ADDRESS)
    client.start_handshake(0)
    assert len(client.datagrams_to_send(0)) == 1
    deadlines = []
    sent = 0
    while (timer := client.get_timer()) is not None:
        deadlines.append(timer)
        client.handle_timer(timer)
        sent += len(client.datagrams_to_send(timer))
    gaps = [b - a for a, b in zip([0, *deadlines], deadlines, strict=False)]
    return [g // SECOND_NS for g in gaps], client


def test_retransmission_schedule_doubles_and_gives_up() -> None:
    client_config, _, _ = configs()
    # 1, 2, 4, 8, 16, 32 s, then the 60 s cap meets the 120 s overall deadline (63 + 57).
    gaps, client = _timer_gaps(
        dataclasses.replace(client_config, handshake_timeout_ns=120 * SECOND_NS)
    )
    assert gaps == [1, 2, 4, 8, 16, 32, 57]
    assert client.terminated_reason == "handshake timeout"
    gaps, client = _timer_gaps(
        dataclasses.replace(
            client_config, handshake_timeout_ns=120 * SECOND_NS, max_retransmissions=2
        )
    )
    assert gaps == [1, 2, 4]
    assert client.terminated_reason == "handshake timeout: retransmissions exhausted"
    # The 60 s cap itself.
    gaps, _ = _timer_gaps(
        dataclasses.replace(
            client_config,
            handshake_timeout_ns=120 * SECOND_NS,
            initial_retransmit_ns=20 * SECOND_NS,
        )
    )
    assert gaps[:4] == [20, 40, 60, 0] or gaps[:3] == [20, 40, 60]


def test_overall_handshake_timeout() -> None:
    client_config, _, _ = configs()
    client = DTLSConnection(
        dataclasses.replace(client_config, handshake_timeout_ns=5 * SECOND_NS),
        address=SERVER_ADDRESS,
    )
    client.start_handshake(0)
    while (timer := client.get_timer()) is not None:
        client.handle_timer(timer)
    assert client.state is HandshakeState.CLOSED
    assert client.terminated_reason == "handshake timeout"


def test_handshake_timeout_bounds_validated() -> None:
    with pytest.raises(LocalProtocolError):
        DTLSConfiguration(handshake_timeout_ns=SECOND_NS)
    with pytest.raises(LocalProtocolError):
        DTLSConfiguration(handshake_timeout_ns=121 * SECOND_NS)


def test_lost_final_flight_is_resent_when_peer_repeats() -> None:
    client_config, server_config, _ = configs()
    client, server = _pair(client_config, server_config)
    client.start_handshake(0)
    now = 0
    # Manual pump, dropping the server's last flight (CCS + Finished) once.
    dropped = False
    for _ in range(20):
        for datagram, _ in client.datagrams_to_send(now):
            server.receive_datagram(datagram, CLIENT_ADDRESS, now)
        out = server.datagrams_to_send(now)
        if server.is_established and not dropped:
            dropped = True
            out = []
        for datagram, _ in out:
            client.receive_datagram(datagram, SERVER_ADDRESS, now)
        if client.is_established:
            break
        timer = client.get_timer()
        if timer is not None and not out:
            now = timer
            client.handle_timer(now)
    assert dropped and client.is_established


def test_close_notify_both_ways() -> None:
    client_config, server_config, _ = configs()
    client, server = _pair(client_config, server_config)
    now = run_pair(client, server)
    _events(client), _events(server)
    client.shutdown(read=False, write=True)
    with pytest.raises(LocalProtocolError):
        client.send(b"late")
    for datagram, _ in client.datagrams_to_send(now):
        server.receive_datagram(datagram, CLIENT_ADDRESS, now)
    assert [type(e) for e in _events(server)] == [PeerClosedWrite]
    assert _exchange(server, client, b"still flowing", now) == b"still flowing"
    server.close()
    for datagram, _ in server.datagrams_to_send(now):
        client.receive_datagram(datagram, SERVER_ADDRESS, now)
    assert client.state is HandshakeState.CLOSED and server.state is HandshakeState.CLOSED


def test_alpn_and_srtp_and_exporter() -> None:
    client_config, server_config, _ = configs(
        alpn_protocols=("webrtc", "h2"),
        srtp_profiles=(SrtpProfile.SRTP_AEAD_AES_128_GCM, SrtpProfile.SRTP_AES128_CM_SHA1_80),
    )
    server_config = dataclasses.replace(
        server_config,
        alpn_protocols=("h2", "webrtc"),
        srtp_profiles=(SrtpProfile.SRTP_AES128_CM_SHA1_80,),
    )
    client, server = _pair(client_config, server_config)
    run_pair(client, server)
    assert client.alpn_protocol == server.alpn_protocol == "h2"
    assert client.srtp_profile is server.srtp_profile is SrtpProfile.SRTP_AES128_CM_SHA1_80
    assert client.export_keying_material("EXTRACTOR-dtls_srtp", None, 60) == (
        server.export_keying_material("EXTRACTOR-dtls_srtp", None, 60)
    )


def test_alpn_mismatch_is_fatal() -> None:
    client_config, server_config, _ = configs(alpn_protocols=("a",))
    server_config = dataclasses.replace(server_config, alpn_protocols=("b",))
    client, server = _pair(client_config, server_config)
    run_pair(client, server)
    assert server.state is HandshakeState.CLOSED
    (event,) = [e for e in _events(client) if isinstance(e, ConnectionTerminated)]
    assert event.alert is AlertDescription.no_application_protocol


def test_wrong_server_name_rejected_and_callback_can_accept() -> None:
    client_config, server_config, _ = configs(server_name="other.test")
    client, server = _pair(client_config, server_config)
    run_pair(client, server)
    assert client.state is HandshakeState.CLOSED
    (event,) = [e for e in _events(server) if isinstance(e, ConnectionTerminated)]
    assert event.alert is AlertDescription.bad_certificate

    seen: list[tuple[str, ...]] = []

    def accept(chain: object, errors: tuple[str, ...]) -> bool:
        seen.append(errors)
        return True

    client, server = _pair(
        dataclasses.replace(client_config, verify_callback=accept), server_config
    )
    run_pair(client, server)
    assert client.is_established
    assert seen and seen[0]  # the callback saw the name mismatch


def test_accept_any_certificate() -> None:
    _, server_config, _ = configs()
    client, server = _pair(DTLSConfiguration(is_client=True, verify_peer=False), server_config)
    run_pair(client, server)
    assert client.is_established
    assert client.peer_certificates


def test_mutual_authentication() -> None:
    client_config, server_config, pki = configs()
    chain, key = pki.issue("client.test", "rsa", client=True)
    client_config = dataclasses.replace(client_config, certificate_chain=chain, private_key=key)
    server_config = dataclasses.replace(
        server_config,
        require_client_certificate=True,
        ca_certificates=(pki.ca_certificate,),
    )
    client, server = _pair(client_config, server_config)
    run_pair(client, server)
    assert client.is_established and server.is_established
    assert server.peer_certificates == chain


def test_client_certificate_required() -> None:
    client_config, server_config, pki = configs()
    server_config = dataclasses.replace(
        server_config, require_client_certificate=True, ca_certificates=(pki.ca_certificate,)
    )
    client, server = _pair(client_config, server_config)
    run_pair(client, server)
    assert server.state is HandshakeState.CLOSED and client.state is HandshakeState.CLOSED


@pytest.mark.parametrize("tickets", [True, False])
def test_resumption(tickets: bool) -> None:
    client_config, server_config, _ = configs(session_tickets=tickets, alpn_protocols=("x",))
    server_config = dataclasses.replace(
        server_config, session_tickets=tickets, alpn_protocols=("x",)
    )
    client, server = _pair(client_config, server_config)
    run_pair(client, server)
    session = client.session
    assert session is not None and (bool(session.ticket) is tickets)
    context = server.server_context
    resumed_client = DTLSConnection(
        dataclasses.replace(client_config, session=session), address=SERVER_ADDRESS
    )
    resumed_server = DTLSConnection(server_config, address=CLIENT_ADDRESS, server_context=context)
    now = run_pair(resumed_client, resumed_server, link=lossy(loss=0.2), seed=3)
    assert resumed_client.is_established and resumed_server.is_established
    assert resumed_client.session_resumed and resumed_server.session_resumed
    assert resumed_client.peer_certificates == client.peer_certificates
    assert _exchange(resumed_client, resumed_server, b"again", now) == b"again"


def test_connection_id_lets_client_move() -> None:
    client_config, server_config, _ = configs(connection_id=b"")
    server_config = dataclasses.replace(server_config, connection_id=b"\x10\x20\x30\x40")
    client, server = _pair(client_config, server_config)
    now = run_pair(client, server)
    assert client.peer_connection_id == b"\x10\x20\x30\x40"
    assert server.local_connection_id == b"\x10\x20\x30\x40"
    client.send(b"from a new port")
    ((datagram, _),) = client.datagrams_to_send(now)
    assert datagram[0] == 25  # tls12_cid
    server.receive_datagram(datagram, ("10.0.0.1", 6000), now)
    assert server.receive() == b"from a new port"
    assert server.address == ("10.0.0.1", 6000)


def test_renegotiation_refused() -> None:
    client_config, server_config, _ = configs()
    client, server = _pair(client_config, server_config)
    now = run_pair(client, server)
    # A fresh ClientHello, protected under the current epoch, arriving after the handshake.
    flights = client._flights
    flights.begin()
    flights.next_message_seq = 10
    flights.add_handshake(1, b"\x00" * 40)
    flights.emit()
    for datagram, _ in client.datagrams_to_send(now):
        server.receive_datagram(datagram, CLIENT_ADDRESS, now)
    ((alert_datagram, _),) = server.datagrams_to_send(now)
    client.receive_datagram(alert_datagram, SERVER_ADDRESS, now)
    assert server.is_established and client.is_established


def test_application_queue_bounded() -> None:
    client_config, server_config, _ = configs()
    client, server = _pair(client_config, server_config)
    now = run_pair(client, server)
    for index in range(300):
        client.send(index.to_bytes(2, "big"))
    for datagram, _ in client.datagrams_to_send(now):
        server.receive_datagram(datagram, CLIENT_ADDRESS, now)
    assert server.pending() == 256
    assert server.dropped_application_datagrams == 44
    assert server.receive() == b"\x00\x00"


def test_data_sent_before_handshake_is_flushed_after() -> None:
    client_config, server_config, _ = configs()
    client, server = _pair(client_config, server_config)
    client.send(b"early")
    run_pair(client, server, stop_when_established=False)
    assert server.receive() == b"early"


def test_replayed_application_record_dropped() -> None:
    client_config, server_config, _ = configs()
    client, server = _pair(client_config, server_config)
    now = run_pair(client, server)
    client.send(b"once")
    ((datagram, _),) = client.datagrams_to_send(now)
    server.receive_datagram(datagram, CLIENT_ADDRESS, now)
    server.receive_datagram(datagram, CLIENT_ADDRESS, now)
    assert server.pending() == 1
    assert server.dropped_records >= 1


def test_pki_helper_makes_distinct_cas() -> None:
    assert make_pki().ca_certificate != make_pki().ca_certificate


def test_finished_peers_do_not_ping_pong_on_duplicates() -> None:
    client_config, server_config, _ = configs()
    client, server = _pair(client_config, server_config)
    client.start_handshake(0)
    server_final: list[bytes] = []
    for _ in range(6):
        for datagram, _ in client.datagrams_to_send(0):
            server.receive_datagram(datagram, CLIENT_ADDRESS, 0)
        out = [d for d, _ in server.datagrams_to_send(0)]
        if server.is_established and not server_final:
            server_final = out
        for datagram in out:
            client.receive_datagram(datagram, SERVER_ADDRESS, 0)
    assert client.is_established and server.is_established and server_final
    # A late retransmission of the server's final flight (fresh record numbers, as after a
    # spurious repeat): the finished client must stay quiet, or the two would ping-pong.
    server._flights.emit()
    for datagram, _ in server.datagrams_to_send(0):
        client.receive_datagram(datagram, SERVER_ADDRESS, 0)
    assert client.datagrams_to_send(0) == []


def test_optional_client_certificate_may_be_absent() -> None:
    client_config, server_config, pki = configs()
    server_config = dataclasses.replace(
        server_config, request_client_certificate=True, ca_certificates=(pki.ca_certificate,)
    )
    client, server = _pair(client_config, server_config)
    run_pair(client, server)
    assert client.is_established and server.is_established
    assert server.peer_certificates == ()


def test_client_certificate_from_unknown_ca_rejected() -> None:
    client_config, server_config, pki = configs()
    stranger = make_pki()
    chain, key = stranger.issue("client.test", "p256", client=True)
    client_config = dataclasses.replace(client_config, certificate_chain=chain, private_key=key)
    server_config = dataclasses.replace(
        server_config, require_client_certificate=True, ca_certificates=(pki.ca_certificate,)
    )
    client, server = _pair(client_config, server_config)
    run_pair(client, server)
    assert server.state is HandshakeState.CLOSED
    (event,) = [e for e in _events(client) if isinstance(e, ConnectionTerminated)]
    assert event.alert is AlertDescription.bad_certificate and event.alert_received


def test_key_log_line_matches_on_both_sides() -> None:
    client_config, server_config, _ = configs()
    client, server = _pair(client_config, server_config)
    assert client.key_log_line() is None
    run_pair(client, server)
    line = client.key_log_line()
    assert line is not None and line == server.key_log_line()
    label, random_hex, secret_hex = line.split()
    assert label == "CLIENT_RANDOM" and bytes.fromhex(random_hex) == client.client_random
    assert len(bytes.fromhex(secret_hex)) == 48


def test_server_skips_ecdsa_certificate_whose_curve_client_did_not_name() -> None:
    from dtls.config import ServerCertificates

    client_config, server_config, pki = configs(
        "p384", groups=(NamedGroup.x25519, NamedGroup.secp256r1)
    )
    rsa_chain, rsa_key = pki.issue("server.test", "rsa")
    store = ServerCertificates()
    store.add(server_config.certificate_chain, server_config.private_key)  # type: ignore[arg-type]
    store.add(rsa_chain, rsa_key, "server.test")
    server_config = dataclasses.replace(
        server_config, certificate_chain=(), private_key=None, server_certificates=store
    )
    client, server = _pair(client_config, server_config)
    run_pair(client, server)
    assert client.is_established
    assert client.cipher_suite is not None and "RSA" in client.cipher_suite.name


@pytest.mark.parametrize("seed", range(6))
def test_mutual_auth_small_mtu_heavy_reordering(seed: int) -> None:
    """A Finished parked before its keys must not overtake the CertificateVerify."""
    client_config, server_config, pki = configs("rsa", mtu=300)
    chain, key = pki.issue("client.test", "rsa", client=True)
    client_config = dataclasses.replace(client_config, certificate_chain=chain, private_key=key)
    server_config = dataclasses.replace(
        server_config,
        mtu=300,
        require_client_certificate=True,
        ca_certificates=(pki.ca_certificate,),
    )
    client, server = _pair(client_config, server_config)
    run_pair(client, server, link=lossy(loss=0.1, duplicate=0.2, reorder=0.5), seed=seed)
    assert client.is_established and server.is_established, (
        client.terminated_reason,
        server.terminated_reason,
    )


@pytest.mark.parametrize(
    ("suite", "kind"),
    [
        (CipherSuite.TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256, "p256"),
        (CipherSuite.TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256, "rsa"),
    ],
)
def test_max_application_payload_fills_the_mtu_exactly(suite: CipherSuite, kind: str) -> None:
    client_config, server_config, _ = configs(kind, cipher_suites=(suite,), mtu=500)
    client, server = _pair(client_config, server_config)
    now = run_pair(client, server)
    client.send(b"z" * client.max_application_payload)
    ((datagram, _),) = client.datagrams_to_send(now)
    assert len(datagram) == 500


def test_unauthenticated_noise_does_not_keep_an_idle_session_alive() -> None:
    client_config, server_config, _ = configs()
    server_config = dataclasses.replace(server_config, idle_timeout_ns=10 * SECOND_NS)
    client, server = _pair(client_config, server_config)
    now = run_pair(client, server)
    deadline = server.get_timer()
    assert deadline is not None
    server.receive_datagram(b"\x17\xfe\xfd" + bytes(40), CLIENT_ADDRESS, now + 5 * SECOND_NS)
    assert server.get_timer() == deadline
    client.send(b"real traffic")
    for datagram, _ in client.datagrams_to_send(now):
        server.receive_datagram(datagram, CLIENT_ADDRESS, now + 6 * SECOND_NS)
    assert server.get_timer() == now + 16 * SECOND_NS


def test_delayed_older_cid_record_does_not_move_peer_back() -> None:
    client_config, server_config, _ = configs(connection_id=b"")
    server_config = dataclasses.replace(server_config, connection_id=b"\x0a\x0b")
    client, server = _pair(client_config, server_config)
    now = run_pair(client, server)
    client.send(b"old")
    ((older, _),) = client.datagrams_to_send(now)
    client.send(b"new")
    ((newer, _),) = client.datagrams_to_send(now)
    server.receive_datagram(newer, ("10.0.0.1", 7000), now)
    server.receive_datagram(older, CLIENT_ADDRESS, now)  # late copy from the old address
    assert server.address == ("10.0.0.1", 7000)
    assert server.receive() == b"new" and server.receive() == b"old"


@pytest.mark.parametrize("seed", range(12))
def test_random_feature_combinations_over_a_lossy_link(seed: int) -> None:
    """PSK / mutual auth / CID / tickets / MTU mixed at random, then a resumption."""
    import random

    from dtls.connection import ServerContext

    rng = random.Random(seed)
    kind = rng.choice(["p256", "rsa"])
    client_config, server_config, pki = configs(kind)
    mtu = rng.choice([256, 576, 1200])
    tickets = rng.random() < 0.5
    use_cid = rng.random() < 0.5
    client_config = dataclasses.replace(
        client_config,
        mtu=mtu,
        session_tickets=tickets,
        alpn_protocols=("a", "b"),
        connection_id=b"\x01\x02" if use_cid else None,
    )
    server_config = dataclasses.replace(
        server_config,
        mtu=mtu,
        session_tickets=tickets,
        alpn_protocols=("b",),
        connection_id=bytes(rng.randrange(1, 9)) if use_cid else None,
    )
    if rng.random() < 0.25:
        client_config = dataclasses.replace(client_config, psk=b"k" * 16, psk_identity=b"id")
        server_config = dataclasses.replace(server_config, psk_lookup=lambda identity: b"k" * 16)
    elif rng.random() < 0.5:
        chain, key = pki.issue("client.test", "p256", client=True)
        client_config = dataclasses.replace(client_config, certificate_chain=chain, private_key=key)
        server_config = dataclasses.replace(
            server_config, require_client_certificate=True, ca_certificates=(pki.ca_certificate,)
        )
    context = ServerContext()
    link = lossy(loss=0.05, duplicate=0.2, reorder=0.4)
    client = DTLSConnection(client_config, address=SERVER_ADDRESS)
    server = DTLSConnection(server_config, address=CLIENT_ADDRESS, server_context=context)
    run_pair(client, server, link=link, seed=seed, stop_when_established=False)
    assert client.is_established and server.is_established
    assert client.alpn_protocol == "b"
    resumed_client = DTLSConnection(
        dataclasses.replace(client_config, session=client.session), address=SERVER_ADDRESS
    )
    resumed_server = DTLSConnection(server_config, address=CLIENT_ADDRESS, server_context=context)
    # Another seed: the resumption meets other losses than the first handshake did.
    run_pair(
        resumed_client, resumed_server, link=link, seed=seed + 100, stop_when_established=False
    )
    assert resumed_client.session_resumed and resumed_server.is_established


def test_send_before_handshake_starts_nothing_until_handshake_called() -> None:
    client_config, _, _ = configs()
    client = DTLSConnection(client_config, address=SERVER_ADDRESS)
    client.send(b"queued")
    assert client.datagrams_to_send(0) == []
    client.handshake(0)
    assert len(client.datagrams_to_send(0)) == 1


def test_certificate_validation_time_is_configurable() -> None:
    import datetime

    client_config, server_config, _ = configs()
    # A year from now the 30-day test certificate has expired.
    later = datetime.datetime.now(datetime.UTC) + datetime.timedelta(days=365)
    client, server = _pair(
        dataclasses.replace(client_config, certificate_validation_time=later), server_config
    )
    run_pair(client, server)
    assert client.state is HandshakeState.CLOSED
    assert "bad_certificate" in (client.terminated_reason or "")


@pytest.mark.parametrize(
    ("suite", "overhead"),
    [
        (CipherSuite.TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256, 37),
        (CipherSuite.TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256, 29),
    ],
)
@pytest.mark.parametrize("cid", [False, True])
def test_seal_and_open_one_record_without_queues(
    suite: CipherSuite, overhead: int, cid: bool
) -> None:
    client_config, server_config, _ = configs(
        cipher_suites=(suite,), connection_id=b"\x01\x02" if cid else None
    )
    if cid:
        server_config = dataclasses.replace(server_config, connection_id=b"\x0a\x0b\x0c")
    client, server = _pair(client_config, server_config)
    assert client.record_overhead == 13  # plaintext epoch 0
    with pytest.raises(LocalProtocolError):
        client.seal_application_data(b"too early")
    now = run_pair(client, server)
    _events(client)
    _events(server)
    assert client.record_overhead == overhead + (3 + 1 if cid else 0)
    assert server.record_overhead == overhead + (2 + 1 if cid else 0)
    record = client.seal_application_data(b"x" * 100)
    assert len(record) == 100 + client.record_overhead
    assert client.datagrams_to_send(now) == []  # nothing was queued
    assert server.open_datagram(record, CLIENT_ADDRESS, now) == [b"x" * 100]
    assert server.pending() == 0 and _events(server) == []
    # Replayed or tampered records come back empty and are counted.
    dropped = server.dropped_records
    assert server.open_datagram(record, CLIENT_ADDRESS, now) == []
    tampered = record[:-1] + bytes((record[-1] ^ 1,))
    assert server.open_datagram(tampered, CLIENT_ADDRESS, now) == []
    assert server.dropped_records == dropped + 2
    # Two records in one datagram come back in order; receive_datagram still queues.
    both = server.seal_application_data(b"one") + server.seal_application_data(b"two")
    assert client.open_datagram(both, SERVER_ADDRESS, now) == [b"one", b"two"]
    client.receive_datagram(server.seal_application_data(b"queued"), SERVER_ADDRESS, now)
    assert client.receive() == b"queued"


def test_wide_replay_window_accepts_records_reordered_far() -> None:
    client_config, server_config, _ = configs()
    server_config = dataclasses.replace(server_config, replay_window_records=512)
    client, server = _pair(client_config, server_config)
    now = run_pair(client, server)
    records = [client.seal_application_data(index.to_bytes(2, "big")) for index in range(300)]
    assert server.open_datagram(records[-1], CLIENT_ADDRESS, now) == [(299).to_bytes(2, "big")]
    assert server.open_datagram(records[0], CLIENT_ADDRESS, now) == [b"\x00\x00"]
    # The default window (64) would have dropped it as too old.
    narrow = dataclasses.replace(server_config, replay_window_records=64)
    client, server = _pair(client_config, narrow)
    now = run_pair(client, server)
    records = [client.seal_application_data(index.to_bytes(2, "big")) for index in range(300)]
    server.open_datagram(records[-1], CLIENT_ADDRESS, now)
    assert server.open_datagram(records[0], CLIENT_ADDRESS, now) == []
