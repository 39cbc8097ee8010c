"""ECDHE shares, handshake signatures and chain validation wrappers."""

from __future__ import annotations

import pytest
from dtls_helpers import make_key, make_pki

from dtls.errors import AlertDescription, AlertError
from dtls.primitives import (
    KeyShare,
    choose_signature_scheme,
    load_peer_chain,
    sign,
    validate_chain,
    verify_signature,
)
from dtls.suites import NamedGroup, SignatureScheme


@pytest.mark.parametrize("group", list(NamedGroup))
def test_key_shares_agree(group: NamedGroup) -> None:
    ours, theirs = KeyShare(group), KeyShare(group)
    assert ours.exchange(theirs.public_bytes) == theirs.exchange(ours.public_bytes)


@pytest.mark.parametrize("group", list(NamedGroup))
@pytest.mark.parametrize("bad", [b"", b"\x04" + b"\x00" * 64, b"\x02" * 33, b"\xff" * 97])
def test_bad_peer_points_are_illegal_parameter(group: NamedGroup, bad: bytes) -> None:
    with pytest.raises(AlertError) as caught:
        KeyShare(group).exchange(bad)
    assert caught.value.description is AlertDescription.illegal_parameter


@pytest.mark.parametrize("kind", ["p256", "p384", "rsa"])
def test_sign_and_verify_with_every_offered_scheme(kind: str) -> None:
    pki = make_pki()
    chain, key = pki.issue("signer.test", kind)
    schemes = [s for s in SignatureScheme if s is not SignatureScheme.ed25519]
    scheme = choose_signature_scheme(key, schemes)
    signature = sign(key, scheme, b"transcript")
    verify_signature(chain[0], scheme, signature, b"transcript")
    with pytest.raises(AlertError) as caught:
        verify_signature(chain[0], scheme, signature, b"tampered")
    assert caught.value.description is AlertDescription.decrypt_error


def test_scheme_must_match_key_type() -> None:
    pki = make_pki()
    chain, key = pki.issue("signer.test", "p256")
    signature = sign(key, SignatureScheme.ecdsa_secp256r1_sha256, b"x")
    with pytest.raises(AlertError):
        verify_signature(chain[0], SignatureScheme.rsa_pkcs1_sha256, signature, b"x")
    with pytest.raises(AlertError):
        verify_signature(chain[0], 0x9999, signature, b"x")


def test_no_common_scheme_is_handshake_failure() -> None:
    with pytest.raises(AlertError) as caught:
        choose_signature_scheme(make_key("rsa"), [SignatureScheme.ecdsa_secp256r1_sha256])
    assert caught.value.description is AlertDescription.handshake_failure


def test_validate_chain_reports_errors() -> None:
    pki = make_pki()
    chain, _ = pki.issue("host.test", "p256", sans=("192.0.2.5",))
    anchors = (pki.ca_certificate,)
    assert validate_chain(chain, anchors, server_name="host.test", as_server=True) == ()
    assert validate_chain(chain, anchors, server_name="192.0.2.5", as_server=True) == ()
    assert validate_chain(chain, anchors, server_name="other.test", as_server=True)
    assert validate_chain(
        chain, (make_pki().ca_certificate,), server_name="host.test", as_server=True
    )
    assert validate_chain(chain, None, server_name="host.test", as_server=True)
    expired_chain, _ = pki.issue("old.test", "p256", not_after_days=-1)
    assert validate_chain(expired_chain, anchors, server_name="old.test", as_server=True)
    client_chain, _ = pki.issue("client.test", "p256", client=True)
    assert validate_chain(client_chain, anchors, server_name=None, as_server=False) == ()


def test_garbage_certificate_is_bad_certificate() -> None:
    with pytest.raises(AlertError) as caught:
        load_peer_chain([b"not a certificate"])
    assert caught.value.description is AlertDescription.bad_certificate
