"""Certificate validation: pinned self-signed leaves, and errors that say what to fix."""

from __future__ import annotations

import datetime

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from dtls_helpers import make_pki

from dtls.validation import validate_chain

NOW = datetime.datetime.now(datetime.UTC)


def _self_signed(
    common_name: str = "localhost",
    *,
    ca: bool = True,
    sans: tuple[str, ...] = (),
    days: int = 30,
) -> x509.Certificate:
    """What ``openssl req -x509 -subj /CN=localhost`` makes: CA:TRUE, no SAN by default."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    builder = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(NOW - datetime.timedelta(days=1))
        .not_valid_after(NOW + datetime.timedelta(days=days))
    )
    if ca:
        builder = builder.add_extension(x509.BasicConstraints(ca=True, path_length=None), True)
    if sans:
        builder = builder.add_extension(
            x509.SubjectAlternativeName([x509.DNSName(s) for s in sans]), False
        )
    return builder.sign(key, hashes.SHA256())


def test_a_leaf_that_is_a_trust_anchor_byte_for_byte_is_accepted() -> None:
    certificate = _self_signed()
    other = _self_signed()
    assert (
        validate_chain(
            (certificate,), (other, certificate), server_name="localhost", as_server=True
        )
        == ()
    )
    assert validate_chain((certificate,), (certificate,), server_name=None, as_server=False) == ()
    with_san = _self_signed("x", sans=("a.test", "*.b.test"))
    for name in ("a.test", "c.b.test", "A.TEST."):
        assert validate_chain((with_san,), (with_san,), server_name=name, as_server=True) == ()


def test_a_pinned_leaf_is_still_checked_for_name_and_time() -> None:
    certificate = _self_signed()
    (error,) = validate_chain(
        (certificate,), (certificate,), server_name="127.0.0.1", as_server=True
    )
    assert "is for 'localhost', not '127.0.0.1'" in error and "--servername" in error
    expired = _self_signed(days=-1)
    (error,) = validate_chain((expired,), (expired,), server_name="localhost", as_server=True)
    assert "expired on" in error
    with_san = _self_signed("localhost", sans=("other.test",))
    (error,) = validate_chain((with_san,), (with_san,), server_name="localhost", as_server=True)
    assert "is for 'other.test', not 'localhost'" in error


def test_a_self_signed_leaf_that_is_not_an_anchor_says_so() -> None:
    certificate = _self_signed(sans=("localhost",))
    (error,) = validate_chain(
        (certificate,), (_self_signed(),), server_name="localhost", as_server=True
    )
    assert "self-signed and is not one of the trust anchors" in error
    assert "--cafile" in error


@pytest.mark.parametrize(
    ("case", "expected"),
    [
        ("wrong name", "is for 'server.test', not 'other.test'"),
        ("unknown issuer", "no trust anchor issued"),
        ("expired", "expired on"),
        ("client certificate", "does not allow TLS server authentication"),
    ],
)
def test_errors_name_the_problem_and_what_to_try(case: str, expected: str) -> None:
    pki = make_pki()
    anchors = (pki.ca_certificate,)
    name = "server.test"
    if case == "wrong name":
        chain, _ = pki.issue("server.test")
        name = "other.test"
    elif case == "unknown issuer":
        chain, _ = make_pki().issue("server.test")
    elif case == "expired":
        chain, _ = pki.issue("server.test", not_after_days=-1)
    else:
        chain, _ = pki.issue("server.test", client=True)
    (error,) = validate_chain(chain, anchors, server_name=name, as_server=True)
    assert expected in error
    assert "2.5.29." not in error and "encountered processing" not in error


def test_no_anchors_and_no_chain() -> None:
    certificate = _self_signed()
    assert (
        "no trust anchors"
        in validate_chain((certificate,), None, server_name="x", as_server=True)[0]
    )
    assert validate_chain((), (certificate,), server_name="x", as_server=True)
