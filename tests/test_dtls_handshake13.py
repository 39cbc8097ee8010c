"""DTLS 1.3 through the connection facade, in memory: every feature, both roles, lossy links."""

from __future__ import annotations

import dataclasses

import pytest
from dtls_helpers import (
    CLIENT_ADDRESS,
    DTLS_1_2_ONLY,
    DTLS_1_3_ONLY,
    SECOND_NS,
    SERVER_ADDRESS,
    configs,
    lossy,
    run_pair,
)
from netsim import LinkConditions

from dtls.config import DEFAULT_VERSIONS, DTLSConfiguration, DTLSVersion
from dtls.connection import DTLSConnection, HandshakeState, ServerContext
from dtls.errors import AlertDescription, LocalProtocolError
from dtls.events import ConnectionTerminated, Event, HandshakeCompleted, PeerClosedWrite
from dtls.sessions13 import Session13
from dtls.suites import CipherSuite, NamedGroup, SrtpProfile

TLS13 = [
    CipherSuite.TLS_AES_128_GCM_SHA256,
    CipherSuite.TLS_AES_256_GCM_SHA384,
    CipherSuite.TLS_CHACHA20_POLY1305_SHA256,
]


def _pair(
    client_config: DTLSConfiguration,
    server_config: DTLSConfiguration,
    context: ServerContext | None = None,
) -> tuple[DTLSConnection, DTLSConnection]:
    return (
        DTLSConnection(client_config, address=SERVER_ADDRESS),
        DTLSConnection(server_config, address=CLIENT_ADDRESS, server_context=context),
    )


def _settled(
    client_config: DTLSConfiguration,
    server_config: DTLSConfiguration,
    *,
    link: LinkConditions | None = None,
    seed: int = 1,
    context: ServerContext | None = None,
    start_ns: int = 0,
) -> tuple[DTLSConnection, DTLSConnection, int]:
    """A handshake run until nothing is left to send (tickets and ACKs delivered)."""
    client, server = _pair(client_config, server_config, context)
    now = run_pair(
        client, server, link=link, seed=seed, stop_when_established=False, start_ns=start_ns
    )
    return client, server, now


def _exchange(sender: DTLSConnection, receiver: DTLSConnection, data: bytes, now: int) -> bytes:
    source = CLIENT_ADDRESS if sender.is_client else SERVER_ADDRESS
    sender.send(data)
    for datagram, _ in sender.datagrams_to_send(now):
        receiver.receive_datagram(datagram, source, now)
    received = receiver.receive()
    assert received is not None
    return received


def _pump(a: DTLSConnection, b: DTLSConnection, now: int) -> None:
    """Deliver everything both sides have to send, until both are quiet."""
    for _ in range(20):
        moved = False
        for sender, receiver in ((a, b), (b, a)):
            source = CLIENT_ADDRESS if sender.is_client else SERVER_ADDRESS
            for datagram, _ in sender.datagrams_to_send(now):
                moved = True
                receiver.receive_datagram(datagram, source, now)
        if not moved:
            return


def _events(connection: DTLSConnection) -> list[Event]:
    events = []
    while (event := connection.next_event()) is not None:
        events.append(event)
    return events


@pytest.mark.parametrize("suite", TLS13)
@pytest.mark.parametrize("group", list(NamedGroup))
def test_full_handshake_every_suite_and_group(suite: CipherSuite, group: NamedGroup) -> None:
    client_config, server_config, _ = configs(
        versions=DTLS_1_3_ONLY, cipher_suites=(suite,), groups=(group,)
    )
    client, server, now = _settled(client_config, server_config)
    assert client.is_established and server.is_established
    for side in (client, server):
        assert side.negotiated_version == "DTLSv1.3"
        assert side.cipher_suite is suite and side.info.group == group
    assert _exchange(client, server, b"ping", now) == b"ping"
    assert _exchange(server, client, b"pong", now) == b"pong"
    (completed,) = [e for e in _events(client) if isinstance(e, HandshakeCompleted)]
    assert completed.cipher_suite == suite.name


@pytest.mark.parametrize("kind", ["rsa", "p384"])
def test_rsa_and_p384_certificates_sign_with_the_1_3_schemes(kind: str) -> None:
    client_config, server_config, _ = configs(kind, versions=DTLS_1_3_ONLY)
    client, server, _ = _settled(client_config, server_config)
    assert client.is_established and client.peer_certificates


def test_version_negotiation_prefers_1_3_and_falls_back_to_1_2_both_ways() -> None:
    both = DEFAULT_VERSIONS
    cases = [
        (both, both, "DTLSv1.3"),
        (both, DTLS_1_2_ONLY, "DTLSv1.2"),  # a 1.2-only server
        (DTLS_1_2_ONLY, both, "DTLSv1.2"),  # a 1.2-only client
        (DTLS_1_3_ONLY, both, "DTLSv1.3"),
        (both, DTLS_1_3_ONLY, "DTLSv1.3"),
    ]
    for client_versions, server_versions, expected in cases:
        client_config, server_config, _ = configs(versions=client_versions)
        server_config = dataclasses.replace(server_config, versions=server_versions)
        client, server, now = _settled(client_config, server_config)
        assert client.negotiated_version == server.negotiated_version == expected
        assert _exchange(client, server, b"data", now) == b"data"


def test_server_preference_order_decides_between_shared_versions() -> None:
    client_config, server_config, _ = configs(versions=DEFAULT_VERSIONS)
    server_config = dataclasses.replace(server_config, versions=tuple(reversed(DEFAULT_VERSIONS)))
    client, server, _ = _settled(client_config, server_config)
    assert client.negotiated_version == "DTLSv1.2"


@pytest.mark.parametrize(
    ("client_versions", "server_versions"),
    [(DTLS_1_3_ONLY, DTLS_1_2_ONLY), (DTLS_1_2_ONLY, DTLS_1_3_ONLY)],
)
def test_pinned_versions_without_overlap_fail_with_protocol_version(
    client_versions: tuple[object, ...], server_versions: tuple[object, ...]
) -> None:
    client_config, server_config, _ = configs(versions=client_versions)  # type: ignore[arg-type]
    server_config = dataclasses.replace(server_config, versions=server_versions)  # type: ignore[arg-type]
    client, server, _ = _settled(client_config, server_config)
    assert client.state is HandshakeState.CLOSED and server.state is HandshakeState.CLOSED
    alerts = [
        e.alert for c in (client, server) for e in _events(c) if isinstance(e, ConnectionTerminated)
    ]
    assert AlertDescription.protocol_version in alerts


def test_a_1_2_answer_with_the_downgrade_sentinel_is_refused() -> None:
    """RFC 8446 4.1.3: a 1.3-capable server marks a 1.2 ServerHello; the client sees the attack."""
    client_config, server_config, _ = configs(versions=DEFAULT_VERSIONS)
    client, server = _pair(client_config, server_config)
    client.start_handshake(0)
    ((hello, _),) = client.datagrams_to_send(0)
    # An attacker strips 1.3 from the hello (here: a server that speaks 1.2 to this client
    # although it could do 1.3, because the hello it saw offered only 1.2).
    downgraded_server = DTLSConnection(
        dataclasses.replace(server_config, cookie_exchange=False), address=CLIENT_ADDRESS
    )
    from dtls.handshake13_client import DOWNGRADE_SENTINEL_12

    stripped = DTLSConnection(
        dataclasses.replace(client_config, versions=DTLS_1_2_ONLY), address=SERVER_ADDRESS
    )
    stripped.start_handshake(0)
    for datagram, _ in stripped.datagrams_to_send(0):
        downgraded_server.receive_datagram(datagram, CLIENT_ADDRESS, 0)
    answer = [d for d, _ in downgraded_server.datagrams_to_send(0)]
    assert any(DOWNGRADE_SENTINEL_12 in datagram for datagram in answer)
    # Our 1.3 client, given that 1.2 ServerHello, refuses it.
    for datagram in answer:
        client.receive_datagram(datagram, SERVER_ADDRESS, 0)
    assert client.state is HandshakeState.CLOSED
    (ended,) = [e for e in _events(client) if isinstance(e, ConnectionTerminated)]
    assert ended.alert in (AlertDescription.illegal_parameter, AlertDescription.unexpected_message)


def test_stateless_hello_retry_then_stateful_retry_for_a_group() -> None:
    client_config, server_config, _ = configs(
        versions=DTLS_1_3_ONLY, groups=(NamedGroup.x25519, NamedGroup.secp384r1)
    )
    # The server only takes P-384: the client's x25519 share forces a retry for the group.
    for cookie_exchange in (True, False):
        server = dataclasses.replace(
            server_config, groups=(NamedGroup.secp384r1,), cookie_exchange=cookie_exchange
        )
        client, server_connection, now = _settled(client_config, server)
        assert client.info.group == NamedGroup.secp384r1
        assert _exchange(client, server_connection, b"after retry", now) == b"after retry"


def test_endpoint_keeps_nothing_before_the_cookie_and_does_not_amplify() -> None:
    from dtls.endpoint import DTLSEndpoint

    client_config, server_config, _ = configs(versions=DTLS_1_3_ONLY)
    endpoint = DTLSEndpoint(server_config)
    for index in range(50):
        client = DTLSConnection(client_config, address=SERVER_ADDRESS)
        client.start_handshake(0)
        ((hello, _),) = client.datagrams_to_send(0)
        endpoint.receive_datagram(hello, ("198.51.100.7", index), 0)
        ((retry, _),) = endpoint.datagrams_to_send(0)
        assert len(retry) < len(hello)  # a HelloRetryRequest is smaller than the hello
    assert endpoint.connections == {} and endpoint.get_timer() is None
    # A client that returns the cookie gets a connection; one from another address does not.
    client = DTLSConnection(client_config, address=SERVER_ADDRESS)
    client.start_handshake(0)
    ((hello, _),) = client.datagrams_to_send(0)
    endpoint.receive_datagram(hello, ("192.0.2.1", 1), 0)
    ((retry, _),) = endpoint.datagrams_to_send(0)
    client.receive_datagram(retry, SERVER_ADDRESS, 0)
    ((second, _),) = client.datagrams_to_send(0)
    endpoint.receive_datagram(second, ("192.0.2.99", 1), 0)  # cookie bound to 192.0.2.1
    assert endpoint.connections == {}
    endpoint.datagrams_to_send(0)
    endpoint.receive_datagram(second, ("192.0.2.1", 1), 0)
    assert len(endpoint.connections) == 1


def test_mutual_authentication_and_a_missing_client_certificate() -> None:
    client_config, server_config, pki = configs(versions=DTLS_1_3_ONLY)
    chain, key = pki.issue("client.test", "p256", client=True)
    server_config = dataclasses.replace(
        server_config, require_client_certificate=True, ca_certificates=(pki.ca_certificate,)
    )
    with_certificate = dataclasses.replace(client_config, certificate_chain=chain, private_key=key)
    client, server, _ = _settled(with_certificate, server_config)
    assert server.is_established and server.peer_certificates[0] == chain[0]
    client, server, _ = _settled(client_config, server_config)
    assert server.state is HandshakeState.CLOSED
    (ended,) = [e for e in _events(client) if isinstance(e, ConnectionTerminated)]
    assert ended.alert is AlertDescription.certificate_required and ended.alert_received
    optional = dataclasses.replace(
        server_config, require_client_certificate=False, request_client_certificate=True
    )
    client, server, _ = _settled(client_config, optional)
    assert server.is_established and server.peer_certificates == ()


def test_external_psk_and_unknown_identity() -> None:
    key = bytes(range(16))
    client_config = DTLSConfiguration(versions=DTLS_1_3_ONLY, psk=key, psk_identity=b"device-7")
    server_config = DTLSConfiguration(
        is_client=False,
        versions=DTLS_1_3_ONLY,
        psk_lookup=lambda identity: key if identity == b"device-7" else None,
    )
    client, server, now = _settled(client_config, server_config)
    assert server.psk_identity == b"device-7" and client.peer_certificates == ()
    assert _exchange(client, server, b"sensor", now) == b"sensor"
    stranger = dataclasses.replace(client_config, psk_identity=b"nobody")
    client, server, _ = _settled(stranger, server_config)
    (ended,) = [e for e in _events(client) if isinstance(e, ConnectionTerminated)]
    assert ended.alert is AlertDescription.unknown_psk_identity
    wrong_key = dataclasses.replace(client_config, psk=b"x" * 16)
    client, server, _ = _settled(wrong_key, server_config)
    (ended,) = [e for e in _events(client) if isinstance(e, ConnectionTerminated)]
    assert ended.alert is AlertDescription.decrypt_error  # the binder does not verify


@pytest.mark.parametrize("stateless_tickets", [True, False])
def test_resumption_with_a_ticket(stateless_tickets: bool) -> None:
    client_config, server_config, _ = configs(versions=DTLS_1_3_ONLY, alpn_protocols=("x",))
    server_config = dataclasses.replace(
        server_config, alpn_protocols=("x",), session_tickets=stateless_tickets
    )
    context = ServerContext()
    client, server, now = _settled(client_config, server_config, context=context)
    session = client.session
    assert isinstance(session, Session13) and not client.session_resumed
    assert Session13.from_bytes(session.to_bytes()) == session
    resumed = dataclasses.replace(client_config, session=session)
    client2, server2, now = _settled(resumed, server_config, context=context, start_ns=now)
    assert client2.session_resumed and server2.session_resumed
    assert client2.peer_certificates == client.peer_certificates
    assert client2.alpn_protocol == "x"
    assert _exchange(client2, server2, b"again", now) == b"again"
    if not stateless_tickets:
        # A cached ticket is good for one resumption: a second use is a full handshake.
        client3, _, _ = _settled(resumed, server_config, context=context, start_ns=now)
        assert client3.is_established and not client3.session_resumed


def test_early_data_is_delivered_once_and_a_replay_gets_none() -> None:
    client_config, server_config, _ = configs(versions=DTLS_1_3_ONLY)
    server_config = dataclasses.replace(server_config, max_early_data=1000)
    context = ServerContext()
    client, _, now = _settled(client_config, server_config, context=context)
    early = dataclasses.replace(client_config, session=client.session, early_data=True)
    client2, server2 = _pair(early, server_config, context)
    client2.send(b"zero round trips")
    client2.start_handshake(now)
    hello_datagrams = [d for d, _ in client2.datagrams_to_send(now)]
    for datagram in hello_datagrams:
        server2.receive_datagram(datagram, CLIENT_ADDRESS, now)
    # The early data is readable before the handshake even completes.
    assert server2.receive() == b"zero round trips" and not server2.is_established
    _pump(client2, server2, now)
    assert client2.is_established and client2.early_data_accepted
    assert server2.receive() is None  # not sent a second time after the handshake
    # An attacker replays the same datagrams to a new connection: no early data.
    replay_target = DTLSConnection(server_config, address=("10.9.9.9", 1), server_context=context)
    for datagram in hello_datagrams:
        replay_target.receive_datagram(datagram, ("10.9.9.9", 1), now + SECOND_NS)
    assert replay_target.receive() is None
    assert context.early_data_guard.refused_replays >= 1


def test_rejected_early_data_is_sent_again_after_the_handshake() -> None:
    client_config, server_config, _ = configs(versions=DTLS_1_3_ONLY)
    context = ServerContext()
    allowing = dataclasses.replace(server_config, max_early_data=1000)
    client, _, now = _settled(client_config, allowing, context=context)
    early = dataclasses.replace(client_config, session=client.session, early_data=True)
    # The server changed its mind: it takes no early data now.
    client2, server2 = _pair(early, server_config, context)
    client2.send(b"later then")
    run_pair(client2, server2, stop_when_established=False, start_ns=now)
    assert client2.is_established and not client2.early_data_accepted
    assert server2.receive() == b"later then"


def test_key_update_both_ways_and_automatically_before_the_limit() -> None:
    client_config, server_config, _ = configs(versions=DTLS_1_3_ONLY, key_update_records=50)
    server_config = dataclasses.replace(server_config, key_update_records=50)
    client, server, now = _settled(client_config, server_config)
    client.update_keys(now, request_peer=True)
    _pump(client, server, now)
    assert client.key_updates == (1, 1) and server.key_updates == (1, 1)
    assert _exchange(client, server, b"epoch 4", now) == b"epoch 4"
    assert _exchange(server, client, b"epoch 4 too", now) == b"epoch 4 too"
    for index in range(200):
        assert _exchange(client, server, b"%d" % index, now) == b"%d" % index
        _pump(client, server, now)
    sent, received = client.key_updates
    assert sent >= 4 and server.key_updates[1] == sent  # one per 50 records, every one seen
    assert _exchange(server, client, b"still fine", now) == b"still fine"


def test_connection_ids_request_new_ones_and_move() -> None:
    client_config, server_config, _ = configs(versions=DTLS_1_3_ONLY, connection_id=b"\x07")
    server_config = dataclasses.replace(server_config, connection_id=b"\x10\x20\x30\x40")
    client, server, now = _settled(client_config, server_config)
    assert client.peer_connection_id == b"\x10\x20\x30\x40"
    assert server.peer_connection_id == b"\x07"
    client.send(b"from a new port")
    ((datagram, _),) = client.datagrams_to_send(now)
    assert datagram[0] & 0b1111_0000 == 0b0011_0000  # unified header with the C bit
    assert datagram[1:5] == b"\x10\x20\x30\x40"
    server.receive_datagram(datagram, ("10.0.0.1", 6000), now)
    assert server.receive() == b"from a new port" and server.address == ("10.0.0.1", 6000)
    client.request_connection_ids(2, now)
    _pump(client, server, now)
    spares = client.spare_connection_ids
    assert len(spares) == 2 and all(len(cid) == 4 for cid in spares)
    assert set(server.issued_connection_ids) == set(spares)
    new_id = client.use_spare_connection_id()
    client.send(b"with the new id")
    ((datagram, _),) = client.datagrams_to_send(now)
    assert datagram[1:5] == new_id
    server.offer_connection_ids(1, now, immediate=True)
    _pump(client, server, now)
    assert client.peer_connection_id not in (new_id, b"\x10\x20\x30\x40")
    assert client.peer_connection_id in server.issued_connection_ids


@pytest.mark.parametrize("seed", range(6))
def test_lossy_reordering_link_completes_with_acknowledgements(seed: int) -> None:
    client_config, server_config, pki = configs(versions=DTLS_1_3_ONLY, mtu=300)
    chain, key = pki.issue("client.test", "rsa", client=True)
    client_config = dataclasses.replace(client_config, certificate_chain=chain, private_key=key)
    server_config = dataclasses.replace(
        server_config,
        mtu=300,
        require_client_certificate=True,
        ca_certificates=(pki.ca_certificate,),
    )
    link = lossy(loss=0.25, duplicate=0.1, reorder=0.3)
    client, server, now = _settled(client_config, server_config, link=link, seed=seed)
    assert client.is_established and server.is_established
    assert isinstance(client.session, Session13)  # the ticket got through as well
    assert client.get_timer() is None and server.get_timer() is None  # all acknowledged


def test_small_mtu_fragments_every_flight() -> None:
    client_config, server_config, _ = configs("rsa", versions=DTLS_1_3_ONLY, mtu=256)
    server_config = dataclasses.replace(server_config, mtu=256)
    client, server = _pair(client_config, server_config)
    sizes: list[int] = []
    run_pair(
        client,
        server,
        stop_when_established=False,
        tap=lambda sender, datagram, destination: sizes.append(len(datagram)),
    )
    assert client.is_established and max(sizes) <= 256 and len(sizes) > 8


def test_alpn_sni_srtp_and_exporters() -> None:
    client_config, server_config, _ = configs(
        versions=DTLS_1_3_ONLY,
        alpn_protocols=("a", "b"),
        srtp_profiles=(SrtpProfile.SRTP_AEAD_AES_128_GCM,),
    )
    server_config = dataclasses.replace(
        server_config,
        alpn_protocols=("b",),
        srtp_profiles=(SrtpProfile.SRTP_AES128_CM_SHA1_80, SrtpProfile.SRTP_AEAD_AES_128_GCM),
    )
    client, server, _ = _settled(client_config, server_config)
    assert client.alpn_protocol == server.alpn_protocol == "b"
    assert server.server_name == "server.test"
    assert client.srtp_profile is server.srtp_profile is SrtpProfile.SRTP_AEAD_AES_128_GCM
    keying = client.export_keying_material("EXTRACTOR-dtls_srtp", None, 60)
    assert keying == server.export_keying_material("EXTRACTOR-dtls_srtp", None, 60)
    assert client.channel_binding() == server.channel_binding()
    with pytest.raises(LocalProtocolError):
        client.channel_binding("tls-unique")
    lines = client.key_log_lines()
    assert [line.split()[0] for line in lines] == [
        "CLIENT_HANDSHAKE_TRAFFIC_SECRET",
        "SERVER_HANDSHAKE_TRAFFIC_SECRET",
        "CLIENT_TRAFFIC_SECRET_0",
        "SERVER_TRAFFIC_SECRET_0",
        "EXPORTER_SECRET",
    ]
    assert lines == server.key_log_lines()


def test_alpn_mismatch_is_fatal() -> None:
    client_config, server_config, _ = configs(versions=DTLS_1_3_ONLY, alpn_protocols=("a",))
    server_config = dataclasses.replace(server_config, alpn_protocols=("b",))
    client, server, _ = _settled(client_config, server_config)
    (ended,) = [e for e in _events(client) if isinstance(e, ConnectionTerminated)]
    assert ended.alert is AlertDescription.no_application_protocol


def test_close_notify_and_half_close() -> None:
    client_config, server_config, _ = configs(versions=DTLS_1_3_ONLY)
    client, server, now = _settled(client_config, server_config)
    client.shutdown(read=False, write=True)
    _pump(client, server, now)
    assert any(isinstance(e, PeerClosedWrite) for e in _events(server))
    assert _exchange(server, client, b"last words", now) == b"last words"
    server.close()
    _pump(client, server, now)
    assert client.state is HandshakeState.CLOSED and server.state is HandshakeState.CLOSED


def test_info_reports_the_version_and_1_3_commands_need_1_3() -> None:
    client_config, server_config, _ = configs(versions=DTLS_1_2_ONLY)
    client, _, now = _settled(client_config, server_config)
    assert client.info.version_name == "DTLSv1.2"
    with pytest.raises(LocalProtocolError):
        client.update_keys(now)
    assert client.key_updates == (0, 0)


def test_a_cookie_only_retry_repeats_the_same_key_share() -> None:
    """RFC 8446 4.1.2: only a HelloRetryRequest naming a group changes the key shares."""
    from dtls import handshake as hs
    from dtls.messages13 import ExtensionType13

    def key_shares(datagram: bytes) -> bytes:
        hello = hs.decode_client_hello(hs.decode_handshake_fragment(datagram[13:])[0].body)
        share = hs.find_extension(hello.extensions, ExtensionType13.key_share)
        assert share is not None
        return share

    client_config, server_config, _ = configs(versions=DTLS_1_3_ONLY)
    client, server = _pair(client_config, server_config)
    client.start_handshake(0)
    ((first, _),) = client.datagrams_to_send(0)
    server.receive_datagram(first, CLIENT_ADDRESS, 0)
    for datagram, _ in server.datagrams_to_send(0):
        client.receive_datagram(datagram, SERVER_ADDRESS, 0)
    ((second, _),) = client.datagrams_to_send(0)
    assert key_shares(second) == key_shares(first)


def test_endpoint_connect_sends_early_data() -> None:
    from dtls.endpoint import DTLSEndpoint

    client_config, server_config, _ = configs(versions=DTLS_1_3_ONLY)
    server_config = dataclasses.replace(server_config, max_early_data=100)
    context = ServerContext()
    first, _, now = _settled(client_config, server_config, context=context)
    server = DTLSEndpoint(server_config, server_context=context)
    client = DTLSEndpoint(
        dataclasses.replace(client_config, session=first.session, early_data=True)
    )
    connection = client.connect(SERVER_ADDRESS, now, early_data=[b"0-rtt"])
    for datagram, _ in client.datagrams_to_send(now):
        server.receive_datagram(datagram, CLIENT_ADDRESS, now)
    (early,) = server.connections.values()
    assert early.receive() == b"0-rtt" and not early.is_established
    for _ in range(4):
        for datagram, _ in server.datagrams_to_send(now):
            client.receive_datagram(datagram, SERVER_ADDRESS, now)
        for datagram, _ in client.datagrams_to_send(now):
            server.receive_datagram(datagram, CLIENT_ADDRESS, now)
    assert connection.is_established and connection.early_data_accepted


@pytest.mark.parametrize("versions", [DTLS_1_3_ONLY, DTLS_1_2_ONLY], ids=["1.3", "1.2"])
def test_no_common_kind_of_authentication_is_a_handshake_failure_both_sides_read(
    versions: tuple[DTLSVersion, ...],
) -> None:
    """RFC 8446 4.1.1 and RFC 5246 7.4.1.3: nothing to agree on is a handshake_failure alert.

    A certificate client and a PSK-only server: the 1.3 server used to fail after its
    ServerHello, so its alert went out under handshake keys the client did not have yet
    (the client saw silence).  A PSK client and a certificate server: the 1.3 client says
    the server did not take its PSK, rather than that the certificate is bad.
    """
    certificate_client, certificate_server, _ = configs(versions=versions)
    psk_server = DTLSConfiguration(is_client=False, versions=versions, psk=bytes(16))
    client, server, now = _settled(certificate_client, psk_server)
    (ended,) = [e for e in _events(client) if isinstance(e, ConnectionTerminated)]
    assert ended.alert is AlertDescription.handshake_failure and ended.alert_received
    assert now < SECOND_NS  # an answer, not the handshake timeout
    (failed,) = [e for e in _events(server) if isinstance(e, ConnectionTerminated)]
    assert "we have no certificate" in failed.reason

    psk_client = DTLSConfiguration(versions=versions, psk=bytes(16), psk_identity=b"me")
    client, server, now = _settled(psk_client, certificate_server)
    (ended,) = [e for e in _events(client) if isinstance(e, ConnectionTerminated)]
    (failed,) = [e for e in _events(server) if isinstance(e, ConnectionTerminated)]
    assert ended.alert is failed.alert is AlertDescription.handshake_failure
    assert now < SECOND_NS
    if versions == DTLS_1_3_ONLY:  # 1.3 lets the server choose a certificate instead
        assert "the server did not take our PSK" in ended.reason and failed.alert_received
    else:  # a 1.2 PSK client offers only PSK suites
        assert "the client offers only PSK suites and we have no PSK" in failed.reason
