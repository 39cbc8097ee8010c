"""The DTLS 1.3 equivalents of the hostile handshakes of issue 9, one test (or more) each.

Each case must end in a counted drop or a clean ``ConnectionTerminated`` with
the right alert; nothing escapes ``receive_datagram``.
"""

from __future__ import annotations

import dataclasses
import datetime

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import dsa, ec
from cryptography.x509.oid import NameOID
from dtls_helpers import (
    CLIENT_ADDRESS,
    DTLS_1_3_ONLY,
    SECOND_NS,
    SERVER_ADDRESS,
    configs,
    run_pair,
)
from test_dtls_hostile_handshakes import _spoofed  # one epoch-0 record with a made-up fragment

from dtls import handshake as hs
from dtls import keyschedule13
from dtls.config import DTLSConfiguration
from dtls.connection import DTLSConnection, HandshakeState
from dtls.errors import AlertDescription, AlertError
from dtls.events import ConnectionTerminated, Event
from dtls.handshake13 import certificate_verify_input, sign13, verify_signature13
from dtls.reassembly import MAX_HANDSHAKE_MESSAGE_BYTES, MAX_MESSAGES_AHEAD
from dtls.records import DTLS_1_2, encode_record_header
from dtls.suites import SignatureScheme, SrtpProfile


def _pair(**client_options: object) -> tuple[DTLSConnection, DTLSConnection]:
    client_config, server_config, _ = configs(versions=DTLS_1_3_ONLY, **client_options)
    return (
        DTLSConnection(client_config, address=SERVER_ADDRESS),
        DTLSConnection(server_config, address=CLIENT_ADDRESS),
    )


def _ended(connection: DTLSConnection) -> ConnectionTerminated:
    events: list[Event] = []
    while (event := connection.next_event()) is not None:
        events.append(event)
    (ended,) = [e for e in events if isinstance(e, ConnectionTerminated)]
    return ended


def _through_retry(client: DTLSConnection, server: DTLSConnection) -> None:
    """ClientHello, HelloRetryRequest: the second hello is queued at the client, not sent."""
    client.start_handshake(0)
    for datagram, _ in client.datagrams_to_send(0):
        server.receive_datagram(datagram, CLIENT_ADDRESS, 0)
    for datagram, _ in server.datagrams_to_send(0):
        client.receive_datagram(datagram, SERVER_ADDRESS, 0)


# -- an exception must never escape: a certificate with a key we cannot use ---------------


def _dsa_certificate() -> x509.Certificate:
    key = dsa.generate_private_key(2048)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "server.test")])
    now = datetime.datetime.now(datetime.UTC)
    return (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(1)
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .sign(key, hashes.SHA256())
    )


def test_a_certificate_with_an_unusable_key_is_an_alert_not_an_exception() -> None:
    certificate = _dsa_certificate()
    with pytest.raises(AlertError) as raised:
        verify_signature13(certificate, SignatureScheme.ecdsa_secp256r1_sha256, b"sig", b"data")
    assert raised.value.description is AlertDescription.illegal_parameter


def test_client_that_accepts_any_chain_still_refuses_a_dsa_leaf() -> None:
    """verify_peer=False (or an accept-all callback) was the path that let it escape in 1.2."""
    client_config, server_config, _ = configs(versions=DTLS_1_3_ONLY)
    server_config = dataclasses.replace(
        server_config, certificate_chain=(_dsa_certificate(),)
    )  # signs with its EC key, presents a DSA certificate
    for client_side in (
        dataclasses.replace(client_config, verify_peer=False),
        dataclasses.replace(client_config, verify_callback=lambda chain, errors: True),
    ):
        client = DTLSConnection(client_side, address=SERVER_ADDRESS)
        server = DTLSConnection(server_config, address=CLIENT_ADDRESS)
        run_pair(client, server)
        assert client.state is HandshakeState.CLOSED
        assert _ended(client).alert is AlertDescription.illegal_parameter


# -- the key must fit the CertificateVerify scheme (1.3 has no key type in the suite) -------


@pytest.mark.parametrize(
    ("key_kind", "scheme"),
    [
        ("rsa", SignatureScheme.ecdsa_secp256r1_sha256),
        ("p256", SignatureScheme.ecdsa_secp384r1_sha384),  # the scheme names the curve
        ("p256", SignatureScheme.rsa_pss_rsae_sha256),
        ("rsa", SignatureScheme.rsa_pkcs1_sha256),  # PKCS#1 signatures are gone in 1.3
    ],
)
def test_certificate_verify_with_a_scheme_that_does_not_fit_the_key(
    key_kind: str, scheme: SignatureScheme
) -> None:
    _, _, pki = configs(versions=DTLS_1_3_ONLY)
    (certificate,), key = pki.issue("server.test", key_kind)
    content = certificate_verify_input(from_server=True, messages_hash=bytes(32))
    if isinstance(key, ec.EllipticCurvePrivateKey):
        signature = sign13(key, SignatureScheme.ecdsa_secp256r1_sha256, content)
    else:
        signature = sign13(key, SignatureScheme.rsa_pss_rsae_sha256, content)
    with pytest.raises(AlertError) as raised:
        verify_signature13(certificate, scheme, signature, content)
    assert raised.value.description is AlertDescription.illegal_parameter


# -- the server must not take a TLS version ---------------------------------------------------


def test_server_refuses_a_tls_legacy_version_in_a_1_3_hello() -> None:
    client, server = _pair()
    client.start_handshake(0)
    ((datagram, _),) = client.datagrams_to_send(0)
    # legacy_version sits right after the record (13) and handshake (12) headers.
    forged = datagram[:25] + b"\x03\x03" + datagram[27:]
    server_config = dataclasses.replace(server.configuration, cookie_exchange=False)
    server = DTLSConnection(server_config, address=CLIENT_ADDRESS)
    server.receive_datagram(forged, CLIENT_ADDRESS, 0)
    assert server.state is HandshakeState.CLOSED
    assert _ended(server).alert is AlertDescription.illegal_parameter


# -- an SRTP MKI we never offered --------------------------------------------------------------


def test_client_refuses_an_srtp_mki_it_never_offered(monkeypatch: pytest.MonkeyPatch) -> None:
    import dtls.handshake13_server as server_module

    real = hs.encode_use_srtp
    monkeypatch.setattr(
        server_module.hs, "encode_use_srtp", lambda profiles, mki=b"": real(profiles, b"\x01")
    )
    profiles = (SrtpProfile.SRTP_AES128_CM_SHA1_80,)
    client_config, server_config, _ = configs(versions=DTLS_1_3_ONLY, srtp_profiles=profiles)
    server_config = dataclasses.replace(server_config, srtp_profiles=profiles)
    client = DTLSConnection(client_config, address=SERVER_ADDRESS)
    server = DTLSConnection(server_config, address=CLIENT_ADDRESS)
    run_pair(client, server)
    assert client.state is HandshakeState.CLOSED
    assert _ended(client).alert is AlertDescription.illegal_parameter


# -- Finished and binders are compared in constant time ----------------------------------------


def test_finished_and_binders_use_a_constant_time_comparison(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    calls: list[int] = []
    real = keyschedule13.std_hmac.compare_digest

    def spy(a: bytes, b: bytes) -> bool:
        calls.append(len(a))
        return real(a, b)

    monkeypatch.setattr(keyschedule13.std_hmac, "compare_digest", spy)
    key = bytes(16)
    client = DTLSConnection(
        DTLSConfiguration(versions=DTLS_1_3_ONLY, psk=key, psk_identity=b"id"),
        address=SERVER_ADDRESS,
    )
    server = DTLSConnection(
        DTLSConfiguration(is_client=False, versions=DTLS_1_3_ONLY, psk=key, psk_identity=b"id"),
        address=CLIENT_ADDRESS,
    )
    run_pair(client, server)
    assert client.is_established
    assert len(calls) >= 3  # the binder, the server's Finished, the client's Finished


# -- a fixed PSK identity is checked ---------------------------------------------------------


def test_server_with_a_fixed_psk_and_identity_refuses_other_identities() -> None:
    key = bytes(range(16))
    server_config = DTLSConfiguration(
        is_client=False, versions=DTLS_1_3_ONLY, psk=key, psk_identity=b"device-1"
    )
    client_config = DTLSConfiguration(versions=DTLS_1_3_ONLY, psk=key, psk_identity=b"device-2")
    client = DTLSConnection(client_config, address=SERVER_ADDRESS)
    server = DTLSConnection(server_config, address=CLIENT_ADDRESS)
    run_pair(client, server)
    assert _ended(client).alert is AlertDescription.unknown_psk_identity


# -- one spoofed epoch-0 datagram must not stall a handshake ---------------------------------


def test_spoofed_record_far_ahead_does_not_move_the_epoch0_window() -> None:
    client, server = _pair()
    _through_retry(client, server)
    client.receive_datagram(
        _spoofed(hs.HandshakeType.server_hello, 1, 70, 0, b"\x00" * 10, 2**40), SERVER_ADDRESS, 0
    )
    now = run_pair(client, server)
    assert client.is_established and server.is_established
    assert now < SECOND_NS  # no retransmission was needed


def test_spoofed_first_fragment_does_not_pin_the_server_hello() -> None:
    client, server = _pair()
    _through_retry(client, server)
    for record_seq, msg_type in enumerate((hs.HandshakeType.server_hello, 8)):
        spoof = _spoofed(msg_type, 1, 5000, 100, b"\x00" * 50, record_seq + 1)
        client.receive_datagram(spoof, SERVER_ADDRESS, 0)
    now = run_pair(client, server)
    assert client.is_established and now < SECOND_NS


def test_plaintext_junk_for_protected_messages_cannot_take_the_reassembly_buffer() -> None:
    # The server waits for the client's (encrypted) final flight; a spoofer sends plaintext
    # fragments of the messages after it.  1.3 takes no such message in epoch 0 at all.
    client, server = _pair()
    _through_retry(client, server)
    for datagram, _ in client.datagrams_to_send(0):  # the second hello
        server.receive_datagram(datagram, CLIENT_ADDRESS, 0)
    dropped = server.dropped_records
    record_seq = 100
    chunk = b"j" * 1000
    for ahead in range(1, MAX_MESSAGES_AHEAD):
        for offset in range(0, 20_000, len(chunk)):
            record_seq += 1
            junk = _spoofed(11, 2 + ahead, MAX_HANDSHAKE_MESSAGE_BYTES, offset, chunk, record_seq)
            server.receive_datagram(junk, CLIENT_ADDRESS, 0)
    assert server.dropped_records > dropped
    now = run_pair(client, server)
    assert client.is_established and server.is_established and now < SECOND_NS


def test_spoofed_plaintext_acks_cannot_stop_a_retransmission() -> None:
    client, server = _pair()
    _through_retry(client, server)
    for datagram, _ in client.datagrams_to_send(0):
        server.receive_datagram(datagram, CLIENT_ADDRESS, 0)
    server.datagrams_to_send(0)  # the server's flight is lost
    deadline = server.get_timer()
    # An ACK "for everything" in plaintext, as an off-path attacker could send it.
    ack = (16).to_bytes(2, "big") + (2).to_bytes(8, "big") + (0).to_bytes(8, "big")
    forged = encode_record_header(26, DTLS_1_2, 0, 9, len(ack)) + ack
    server.receive_datagram(forged, CLIENT_ADDRESS, 0)
    assert server.get_timer() == deadline
    server.handle_timer(deadline or 0)
    assert server.datagrams_to_send(deadline or 0)  # retransmitted all the same
