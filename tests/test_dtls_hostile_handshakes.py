"""Regression tests for what the negative-test pass of issue 9 found, one test (or more) each.

Each hostile case must end in a counted drop or a clean ``ConnectionTerminated``
with the right alert; nothing escapes ``receive_datagram``.
"""

from __future__ import annotations

import dataclasses
import hmac

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from dtls_helpers import CLIENT_ADDRESS, SECOND_NS, SERVER_ADDRESS, configs, make_pki, run_pair
from hypothesis import given, settings
from hypothesis import strategies as st

from dtls import handshake as hs
from dtls import handshake12
from dtls.config import DTLSConfiguration
from dtls.connection import DTLSConnection, HandshakeState
from dtls.errors import AlertDescription, AlertError
from dtls.events import ConnectionTerminated
from dtls.handshake import HandshakeType
from dtls.handshake12_client import ClientHandshake12
from dtls.handshake12_server import ServerHandshake12
from dtls.primitives import verify_signature
from dtls.reassembly import MAX_HANDSHAKE_MESSAGE_BYTES, MAX_MESSAGES_AHEAD
from dtls.records import DTLS_1_2, ContentType, encode_record_header
from dtls.suites import CipherSuite, SrtpProfile


def _pair() -> tuple[DTLSConnection, DTLSConnection]:
    client_config, server_config, _ = configs()
    return (
        DTLSConnection(client_config, address=SERVER_ADDRESS),
        DTLSConnection(server_config, address=CLIENT_ADDRESS),
    )


def _spoofed(
    msg_type: int, message_seq: int, length: int, offset: int, body: bytes, record_seq: int
) -> bytes:
    """An epoch-0 record with one made-up handshake fragment."""
    fragment = hs.encode_handshake_fragment(msg_type, length, message_seq, offset, body)
    header = encode_record_header(ContentType.handshake, DTLS_1_2, 0, record_seq, len(fragment))
    return header + fragment


def _to_cookie_exchange_done(client: DTLSConnection, server: DTLSConnection) -> None:
    """Hello, HelloVerifyRequest: the client's hello with the cookie is queued, not sent."""
    client.start_handshake(0)
    for datagram, _ in client.datagrams_to_send(0):
        server.receive_datagram(datagram, CLIENT_ADDRESS, 0)
    for datagram, _ in server.datagrams_to_send(0):
        client.receive_datagram(datagram, SERVER_ADDRESS, 0)


# -- one spoofed epoch-0 datagram must not stall a handshake ----------------------------


def test_spoofed_record_far_ahead_does_not_move_the_epoch0_window() -> None:
    # Before: the window was marked for the spoofed record number (2^40) before the record
    # was dropped, so every genuine epoch-0 record after it was "left of the window".
    client, server = _pair()
    _to_cookie_exchange_done(client, server)
    client.receive_datagram(
        _spoofed(HandshakeType.server_hello, 1, 70, 0, b"\x00" * 10, 2**40), SERVER_ADDRESS, 0
    )
    now = run_pair(client, server)
    assert client.is_established and server.is_established
    assert now < SECOND_NS  # no retransmission was needed


def test_spoofed_first_fragment_does_not_pin_the_message() -> None:
    # Before: the spoofed fragment fixed type and length of message_seq 1, so the genuine
    # ServerHello "contradicted" it and was dropped, every time it was resent.
    client, server = _pair()
    _to_cookie_exchange_done(client, server)
    for record_seq, msg_type in enumerate((HandshakeType.server_hello, HandshakeType.certificate)):
        spoof = _spoofed(msg_type, 1, 5000, 100, b"\x00" * 50, record_seq + 1)
        client.receive_datagram(spoof, SERVER_ADDRESS, 0)
    now = run_pair(client, server)
    assert client.is_established and now < SECOND_NS


def test_partial_later_messages_cannot_take_the_reassembly_buffer() -> None:
    # The server waits for the client's Certificate/ClientKeyExchange flight; a spoofer fills
    # the messages after it with partial junk.  The genuine flight must still get through.
    client, server = _pair()
    _to_cookie_exchange_done(client, server)
    for datagram, _ in client.datagrams_to_send(0):  # hello with cookie
        server.receive_datagram(datagram, CLIENT_ADDRESS, 0)
    record_seq = 100
    chunk = b"j" * 1000
    for ahead in range(1, MAX_MESSAGES_AHEAD):
        for offset in range(0, 60_000, len(chunk)):
            record_seq += 1
            junk = _spoofed(11, 2 + ahead, MAX_HANDSHAKE_MESSAGE_BYTES, offset, chunk, record_seq)
            server.receive_datagram(junk, CLIENT_ADDRESS, 0)
    now = run_pair(client, server)
    assert client.is_established and server.is_established
    assert now < SECOND_NS


# -- every verifier raises only our own errors --------------------------------------------


def _unknown_algorithm_certificate() -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    """A certificate whose key algorithm OID nobody knows (the EC key made up otherwise)."""
    pki = make_pki()
    (certificate, *_), key = pki.issue("server.test")
    der = certificate.public_bytes(serialization.Encoding.DER)
    id_ec_public_key = bytes.fromhex("06072a8648ce3d0201")
    assert der.count(id_ec_public_key) == 1
    patched = der.replace(id_ec_public_key, bytes.fromhex("06072a8648ce3d027f"))
    assert isinstance(key, ec.EllipticCurvePrivateKey)
    return x509.load_der_x509_certificate(patched), key


def _terminated(connection: DTLSConnection) -> ConnectionTerminated:
    events = []
    while (event := connection.next_event()) is not None:
        events.append(event)
    (terminated,) = [e for e in events if isinstance(e, ConnectionTerminated)]
    return terminated


@pytest.mark.parametrize("trust", ["verify_peer=False", "accept-all callback"])
def test_server_certificate_with_an_unknown_key_algorithm(trust: str) -> None:
    # Before: UnsupportedAlgorithm escaped receive_datagram from verify_signature.
    certificate, key = _unknown_algorithm_certificate()
    client_config, server_config, _ = configs()
    server_config = dataclasses.replace(
        server_config, certificate_chain=(certificate,), private_key=key
    )
    if trust == "verify_peer=False":
        client_config = dataclasses.replace(client_config, verify_peer=False)
    else:
        client_config = dataclasses.replace(client_config, verify_callback=lambda *_: True)
    client = DTLSConnection(client_config, address=SERVER_ADDRESS)
    server = DTLSConnection(server_config, address=CLIENT_ADDRESS)
    run_pair(client, server)
    terminated = _terminated(client)
    assert terminated.alert is AlertDescription.unsupported_certificate
    assert "unsupported key algorithm" in terminated.reason
    assert server.state is HandshakeState.CLOSED


def test_client_certificate_with_an_unknown_key_algorithm() -> None:
    certificate, key = _unknown_algorithm_certificate()
    client_config, server_config, pki = configs()
    client_config = dataclasses.replace(
        client_config, certificate_chain=(certificate,), private_key=key
    )
    server_config = dataclasses.replace(
        server_config,
        require_client_certificate=True,
        ca_certificates=(pki.ca_certificate,),
        verify_callback=lambda *_: True,
    )
    client = DTLSConnection(client_config, address=SERVER_ADDRESS)
    server = DTLSConnection(server_config, address=CLIENT_ADDRESS)
    run_pair(client, server)
    assert _terminated(server).alert is AlertDescription.unsupported_certificate


@settings(max_examples=60, deadline=None)
@given(
    st.sampled_from(["unknown", "p256", "rsa"]),
    st.integers(min_value=0, max_value=0xFFFF),
    st.binary(max_size=300),
)
def test_verify_signature_raises_only_alerts(kind: str, scheme: int, signature: bytes) -> None:
    if kind == "unknown":
        certificate = _unknown_algorithm_certificate()[0]
    else:
        (certificate, *_), _ = make_pki().issue("x.test", kind)
    with pytest.raises(AlertError):
        verify_signature(certificate, scheme, signature, b"signed data")


# -- the certificate's key must fit the suite (RFC 8422 5.3) -------------------------------


@pytest.mark.parametrize(
    ("suite", "kind", "sent"),
    [
        (CipherSuite.TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256, "rsa", "RSA"),
        (CipherSuite.TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256, "p256", "ECDSA"),
    ],
)
def test_certificate_key_must_fit_the_suite(
    monkeypatch: pytest.MonkeyPatch, suite: CipherSuite, kind: str, sent: str
) -> None:
    client_config, server_config, _ = configs(kind, cipher_suites=(suite,), verify_peer=False)
    entry = (server_config.certificate_chain, server_config.private_key)

    def lying_choice(self: ServerHandshake12, hello: object, groups: object) -> CipherSuite:
        self._selected_certificate = entry  # type: ignore[assignment]
        return suite

    monkeypatch.setattr(ServerHandshake12, "_choose_suite", lying_choice)
    client = DTLSConnection(client_config, address=SERVER_ADDRESS)
    server = DTLSConnection(server_config, address=CLIENT_ADDRESS)
    run_pair(client, server)
    terminated = _terminated(client)
    assert terminated.alert is AlertDescription.unsupported_certificate
    assert f"the server sent an {sent} one" in terminated.reason


# -- client_version must be a DTLS version --------------------------------------------------


def test_server_refuses_tls_client_version(monkeypatch: pytest.MonkeyPatch) -> None:
    first_hello = ClientHandshake12._first_hello

    def tls_version(self: ClientHandshake12) -> hs.ClientHello:
        return dataclasses.replace(first_hello(self), client_version=0x0303)

    monkeypatch.setattr(ClientHandshake12, "_first_hello", tls_version)
    client, server = _pair()
    run_pair(client, server)
    terminated = _terminated(server)
    assert terminated.alert is AlertDescription.protocol_version
    assert "0x0303" in terminated.reason


# -- an SRTP MKI we never offered -------------------------------------------------------


def test_client_aborts_on_an_srtp_mki_it_did_not_offer(monkeypatch: pytest.MonkeyPatch) -> None:
    profile = SrtpProfile.SRTP_AES128_CM_SHA1_80
    client_config, server_config, _ = configs(srtp_profiles=(profile,))
    server_config = dataclasses.replace(server_config, srtp_profiles=(profile,))
    encode = hs.encode_use_srtp

    def with_mki(profiles: list[int] | tuple[int, ...], mki: bytes = b"") -> bytes:
        # The server answers with a list; the client offers the configured tuple.
        return encode(profiles, b"\x01\x02" if isinstance(profiles, list) else mki)

    monkeypatch.setattr(hs, "encode_use_srtp", with_mki)
    client = DTLSConnection(client_config, address=SERVER_ADDRESS)
    server = DTLSConnection(server_config, address=CLIENT_ADDRESS)
    run_pair(client, server)
    terminated = _terminated(client)
    assert terminated.alert is AlertDescription.illegal_parameter
    assert "MKI" in terminated.reason


# -- Finished in constant time ----------------------------------------------------------


def test_finished_is_compared_with_compare_digest(monkeypatch: pytest.MonkeyPatch) -> None:
    compared: list[tuple[bytes, bytes]] = []
    real = hmac.compare_digest

    def spy(a: bytes, b: bytes) -> bool:
        compared.append((a, b))
        return real(a, b)

    monkeypatch.setattr(handshake12.hmac, "compare_digest", spy)
    client, server = _pair()
    run_pair(client, server)
    assert client.is_established and server.is_established
    finished = [pair for pair in compared if len(pair[0]) == 12]
    assert len(finished) == 2  # each side checked the other's verify_data once


# -- a server with a fixed psk and the identity -------------------------------------------


@pytest.mark.parametrize(
    ("server_identity", "client_identity", "accepted"),
    [(b"device-7", b"device-7", True), (b"device-7", b"device-8", False), (b"", b"anyone", True)],
)
def test_fixed_psk_server_and_the_identity(
    server_identity: bytes, client_identity: bytes, accepted: bool
) -> None:
    suite = (CipherSuite.TLS_PSK_WITH_AES_128_GCM_SHA256,)
    client_config = DTLSConfiguration(
        psk=b"k" * 16, psk_identity=client_identity, cipher_suites=suite
    )
    server_config = DTLSConfiguration(
        is_client=False, psk=b"k" * 16, psk_identity=server_identity, cipher_suites=suite
    )
    client = DTLSConnection(client_config, address=SERVER_ADDRESS)
    server = DTLSConnection(server_config, address=CLIENT_ADDRESS)
    run_pair(client, server)
    assert server.is_established is accepted
    if accepted:
        assert server.psk_identity == client_identity
    else:
        assert _terminated(server).alert is AlertDescription.unknown_psk_identity
