"""Interop with OpenSSL through pyOpenSSL, in memory, in both directions."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest

SSL = pytest.importorskip("OpenSSL.SSL", reason="pyOpenSSL is not installed")

from dtls_helpers import (  # noqa: E402
    CERT_SUITES,
    OPENSSL_CIPHER,
    OPENSSL_GROUP_REPORTED,
    Pki,
    certificate_kind,
    make_pki,
    openssl_groups,
)
from dtls_openssl import (  # noqa: E402
    OPENSSL_ADDRESS,
    drain_openssl,
    make_context,
    make_openssl,
    openssl_group,
    openssl_session_reused,
    pump,
)

from dtls.config import DTLSConfiguration  # noqa: E402
from dtls.connection import DTLSConnection, HandshakeState  # noqa: E402
from dtls.events import PeerClosedWrite  # noqa: E402
from dtls.suites import CipherSuite, NamedGroup, SrtpProfile  # noqa: E402


@pytest.fixture(scope="module")
def pki() -> Pki:
    authority = make_pki()
    for kind in ("p256", "p384", "rsa"):
        authority.issue(f"{kind}.server.test", kind)
    authority.issue("client.test", "p256", client=True)
    return authority


def _server_credentials(pki: Pki, suite: CipherSuite, group: NamedGroup) -> tuple[Any, Any]:
    return pki.leaves[f"{certificate_kind(suite, group)}.server.test"]


def _pair_in_roles(
    our_role: str,
    chain: Any,
    key: Any,
    *,
    openssl_options: dict[str, Any] | None = None,
    our_options: dict[str, Any] | None = None,
) -> tuple[DTLSConnection, Any]:
    """Ours in ``our_role`` and OpenSSL in the other; the server holds ``chain`` and ``key``.

    Our client does not verify the server. Returns (ours, theirs).
    """
    is_server = our_role == "server"
    theirs = make_openssl(
        make_context(
            server=not is_server,
            chain=() if is_server else chain,
            key=None if is_server else key,
            **(openssl_options or {}),
        ),
        server=not is_server,
    )
    if is_server:
        config = DTLSConfiguration(
            is_client=False, certificate_chain=chain, private_key=key, **(our_options or {})
        )
    else:
        config = DTLSConfiguration(is_client=True, verify_peer=False, **(our_options or {}))
    return DTLSConnection(config, address=OPENSSL_ADDRESS), theirs


def _roundtrip(ours: DTLSConnection, theirs: Any, now: int) -> None:
    ours.send(b"from python")
    for datagram, _ in ours.datagrams_to_send(now):
        theirs.bio_write(datagram)
    assert theirs.recv(2000) == b"from python"
    theirs.send(b"from openssl" * 50)
    ours.receive_datagram(drain_openssl(theirs), OPENSSL_ADDRESS, now)
    assert ours.receive() == b"from openssl" * 50


@pytest.mark.parametrize("suite", CERT_SUITES)
@pytest.mark.parametrize("group", list(NamedGroup))
def test_our_client_openssl_server(pki: Pki, suite: CipherSuite, group: NamedGroup) -> None:
    chain, key = _server_credentials(pki, suite, group)
    theirs = make_openssl(
        make_context(
            server=True,
            chain=chain,
            key=key,
            ciphers=OPENSSL_CIPHER[suite],
            groups=openssl_groups(suite, group),
        ),
        server=True,
    )
    ours = DTLSConnection(
        DTLSConfiguration(
            is_client=True,
            ca_certificates=(pki.ca_certificate,),
            server_name=chain[0].subject.rfc4514_string().split("=")[1],
        ),
        address=OPENSSL_ADDRESS,
    )
    now = pump(ours, theirs)
    assert ours.is_established, ours.terminated_reason
    assert ours.cipher_suite is suite
    assert openssl_group(theirs) == OPENSSL_GROUP_REPORTED[group]
    _roundtrip(ours, theirs, now)
    assert ours.export_keying_material("EXPERIMENTAL-interop", b"ctx", 48) == (
        theirs.export_keying_material(b"EXPERIMENTAL-interop", 48, b"ctx")
    )


@pytest.mark.parametrize("suite", CERT_SUITES)
@pytest.mark.parametrize("group", list(NamedGroup))
def test_openssl_client_our_server(pki: Pki, suite: CipherSuite, group: NamedGroup) -> None:
    chain, key = _server_credentials(pki, suite, group)
    theirs = make_openssl(
        make_context(
            server=False, ciphers=OPENSSL_CIPHER[suite], groups=openssl_groups(suite, group)
        ),
        server=False,
    )
    ours = DTLSConnection(
        DTLSConfiguration(is_client=False, certificate_chain=chain, private_key=key),
        address=OPENSSL_ADDRESS,
    )
    now = pump(ours, theirs)
    assert ours.is_established, ours.terminated_reason
    assert ours.cipher_suite is suite
    assert openssl_group(theirs) == OPENSSL_GROUP_REPORTED[group]
    assert ours.extended_master_secret
    _roundtrip(ours, theirs, now)
    assert ours.export_keying_material("EXPERIMENTAL-interop", None, 32) == (
        theirs.export_keying_material(b"EXPERIMENTAL-interop", 32)
    )


@pytest.mark.parametrize("our_role", ["client", "server"])
def test_alpn_and_srtp_exported_keys_equal(pki: Pki, our_role: str) -> None:
    chain, key = pki.leaves["p256.server.test"]
    ours, theirs = _pair_in_roles(
        our_role,
        chain,
        key,
        openssl_options={
            "alpn": [b"h2", b"webrtc"],
            "srtp": b"SRTP_AEAD_AES_128_GCM:SRTP_AES128_CM_SHA1_80",
        },
        our_options={
            "alpn_protocols": ("webrtc",),
            "srtp_profiles": (SrtpProfile.SRTP_AES128_CM_SHA1_80,),
        },
    )
    pump(ours, theirs)
    assert ours.is_established, ours.terminated_reason
    assert ours.alpn_protocol == "webrtc"
    assert theirs.get_alpn_proto_negotiated() == b"webrtc"
    assert ours.srtp_profile is SrtpProfile.SRTP_AES128_CM_SHA1_80
    assert theirs.get_selected_srtp_profile() == b"SRTP_AES128_CM_SHA1_80"
    assert ours.export_keying_material("EXTRACTOR-dtls_srtp", None, 60) == (
        theirs.export_keying_material(b"EXTRACTOR-dtls_srtp", 60)
    )


@pytest.mark.parametrize("our_role", ["client", "server"])
def test_small_mtu_fragmentation(pki: Pki, our_role: str) -> None:
    chain, key = pki.leaves["rsa.server.test"]
    ours, theirs = _pair_in_roles(our_role, chain, key, our_options={"mtu": 300})
    theirs.set_ciphertext_mtu(300)
    sizes: list[int] = []

    def record_size(index: int, datagram: bytes) -> bool:
        sizes.append(len(datagram))
        return False

    now = pump(ours, theirs, drop_ours=record_size)
    assert ours.is_established, ours.terminated_reason
    assert max(sizes) <= 300
    if our_role == "server":
        assert len(sizes) > 4  # our RSA certificate flight went out in pieces
    _roundtrip(ours, theirs, now)


@pytest.mark.parametrize("our_role", ["client", "server"])
def test_mutual_authentication(pki: Pki, our_role: str) -> None:
    server_chain, server_key = pki.leaves["p256.server.test"]
    client_chain, client_key = pki.leaves["client.test"]
    from dtls_helpers import pem_chain

    ca_pem = pem_chain((pki.ca_certificate,))
    if our_role == "client":
        theirs = make_openssl(
            make_context(
                server=True, chain=server_chain, key=server_key, ca_pem=ca_pem, verify_peer=True
            ),
            server=True,
        )
        config = DTLSConfiguration(
            is_client=True,
            ca_certificates=(pki.ca_certificate,),
            server_name="p256.server.test",
            certificate_chain=client_chain,
            private_key=client_key,
        )
    else:
        theirs = make_openssl(
            make_context(
                server=False, chain=client_chain, key=client_key, ca_pem=ca_pem, verify_peer=True
            ),
            server=False,
        )
        theirs.set_tlsext_host_name(b"p256.server.test")
        config = DTLSConfiguration(
            is_client=False,
            certificate_chain=server_chain,
            private_key=server_key,
            require_client_certificate=True,
            ca_certificates=(pki.ca_certificate,),
        )
    ours = DTLSConnection(config, address=OPENSSL_ADDRESS)
    now = pump(ours, theirs)
    assert ours.is_established, ours.terminated_reason
    if our_role == "server":
        assert ours.peer_certificates[0] == client_chain[0]
    else:
        assert theirs.get_peer_certificate() is not None
    _roundtrip(ours, theirs, now)


def test_our_client_resumes_openssl_session(pki: Pki) -> None:
    chain, key = pki.leaves["p256.server.test"]
    context = make_context(server=True, chain=chain, key=key)
    context.set_session_id(b"dtls-interop")
    context.set_session_cache_mode(SSL.SESS_CACHE_SERVER)
    config = DTLSConfiguration(is_client=True, verify_peer=False, session_tickets=False)
    first = DTLSConnection(config, address=OPENSSL_ADDRESS)
    first_theirs = make_openssl(context, server=True)
    pump(first, first_theirs)
    assert first.is_established and first.session is not None
    # OpenSSL forgets sessions of connections freed without a shutdown (ssl_clear_bad_session).
    first_theirs.shutdown()
    second = DTLSConnection(
        dataclasses.replace(config, session=first.session), address=OPENSSL_ADDRESS
    )
    theirs = make_openssl(context, server=True)
    now = pump(second, theirs)
    assert second.is_established and second.session_resumed
    assert openssl_session_reused(theirs)
    _roundtrip(second, theirs, now)


def test_openssl_client_resumes_our_session(pki: Pki) -> None:
    from dtls.connection import ServerContext

    chain, key = pki.leaves["p256.server.test"]
    shared = ServerContext()
    config = DTLSConfiguration(is_client=False, certificate_chain=chain, private_key=key)
    context = make_context(server=False)
    first_theirs = make_openssl(context, server=False)
    pump(DTLSConnection(config, address=OPENSSL_ADDRESS, server_context=shared), first_theirs)
    session = first_theirs.get_session()
    theirs = make_openssl(context, server=False)
    theirs.set_session(session)
    ours = DTLSConnection(config, address=OPENSSL_ADDRESS, server_context=shared)
    now = pump(ours, theirs)
    assert ours.is_established and ours.session_resumed
    assert openssl_session_reused(theirs)
    _roundtrip(ours, theirs, now)


def test_close_notify_both_directions(pki: Pki) -> None:
    chain, key = pki.leaves["p256.server.test"]
    theirs = make_openssl(make_context(server=True, chain=chain, key=key), server=True)
    ours = DTLSConnection(
        DTLSConfiguration(is_client=True, verify_peer=False), address=OPENSSL_ADDRESS
    )
    now = pump(ours, theirs)
    theirs.shutdown()
    ours.receive_datagram(drain_openssl(theirs), OPENSSL_ADDRESS, now)
    events = []
    while (event := ours.next_event()) is not None:
        events.append(event)
    assert any(isinstance(e, PeerClosedWrite) for e in events)
    ours.close()
    for datagram, _ in ours.datagrams_to_send(now):
        theirs.bio_write(datagram)
    with pytest.raises(SSL.ZeroReturnError):
        theirs.recv(100)
    assert ours.state is HandshakeState.CLOSED


@pytest.mark.parametrize("our_role", ["client", "server"])
def test_whole_flights_dropped(pki: Pki, our_role: str) -> None:
    """Our flights vanish twice; our timers (virtual time) bring the handshake home."""
    chain, key = pki.leaves["p256.server.test"]
    ours, theirs = _pair_in_roles(our_role, chain, key)
    dropped: list[int] = []
    # As a server our first datagram is the stateless HelloVerifyRequest, which only the
    # client's (wall-clock) timer could repeat; drop the flight after it instead.
    victims = {2, 3} if our_role == "server" else {1, 2}

    def drop_first_flights(index: int, datagram: bytes) -> bool:
        if index in victims:
            dropped.append(index)
            return True
        return False

    now = pump(ours, theirs, drop_ours=drop_first_flights)
    assert dropped == sorted(victims)
    assert ours.is_established, ours.terminated_reason
    _roundtrip(ours, theirs, now)


def test_openssl_final_flight_dropped_is_resent(pki: Pki) -> None:
    """OpenSSL (server) sends CCS+Finished last; lose it once and our retransmission recovers it."""
    chain, key = pki.leaves["p256.server.test"]
    theirs = make_openssl(make_context(server=True, chain=chain, key=key), server=True)
    ours = DTLSConnection(
        DTLSConfiguration(is_client=True, verify_peer=False), address=OPENSSL_ADDRESS
    )
    state = {"dropped": False}

    def drop_final(index: int, data: bytes) -> bool:
        if not state["dropped"] and theirs.get_state_string().startswith(
            b"SSL negotiation finished"
        ):
            state["dropped"] = True
            return True
        return False

    now = pump(ours, theirs, drop_theirs=drop_final)
    assert state["dropped"]
    assert ours.is_established, ours.terminated_reason
    _roundtrip(ours, theirs, now)
