"""Peer certificate validation, with errors that say what to fix.

Path building and policy are ``cryptography.x509.verification``'s (RFC 5280
with the CA/B Forum profile); this module adds two things around it.

*Pinned leaves.*  A plain ``openssl req -x509`` certificate asserts
basicConstraints CA:TRUE and usually has no subjectAltName, so the strict
profile refuses it as a leaf even when it is exactly the trust anchor the user
gave.  OpenSSL, GnuTLS, pion and Mbed TLS accept it.  We accept a leaf that is
byte-for-byte one of the configured trust anchors, after checking what still
means something for a pinned certificate: the validity period, and (for a
server) the name, against its subjectAltName or, when it has none, its common
name.  Any other chain gets the full validation.

*Readable errors.*  The verifier's messages ("candidates exhausted: invalid
extension: 2.5.29.15") are turned into sentences naming the certificate, the
problem and what to try; the original text follows in brackets.
"""

from __future__ import annotations

import datetime
import ipaddress
import re

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509 import verification
from cryptography.x509.oid import NameOID

from .config import DTLSConfiguration

__all__ = ["peer_chain_verdict", "validate_chain"]

_EXTENSION_NAMES = {
    "2.5.29.14": "subjectKeyIdentifier",
    "2.5.29.15": "keyUsage",
    "2.5.29.17": "subjectAltName",
    "2.5.29.19": "basicConstraints",
    "2.5.29.30": "nameConstraints",
    "2.5.29.32": "certificatePolicies",
    "2.5.29.35": "authorityKeyIdentifier",
    "2.5.29.37": "extendedKeyUsage",
}
_ENCOUNTERED = re.compile(r"\s*\(encountered processing .*\)$", re.DOTALL)
_TRUST_HINT = "give it as a trust anchor (ca_certificates, --cafile)"


def validate_chain(
    chain: tuple[x509.Certificate, ...],
    trust_anchors: tuple[x509.Certificate, ...] | None,
    *,
    server_name: str | None,
    as_server: bool,
    at: datetime.datetime | None = None,
) -> tuple[str, ...]:
    """Validation errors of a peer chain (empty tuple: valid).

    ``as_server`` means the chain is a *server's* chain: it is checked for the
    server-auth usage and, when ``server_name`` is given, for that DNS name or
    IP address.  ``at`` is the validation time; None means now (wall clock).
    """
    if not chain:
        return ("the peer sent no certificate",)
    if not trust_anchors:
        return ("no trust anchors configured: give the CA (or the peer's own certificate)",)
    when = at if at is not None else datetime.datetime.now(datetime.UTC)
    leaf = chain[0]
    if _is_pinned(leaf, trust_anchors):
        return _check_pinned(leaf, server_name if as_server else None, when)
    try:
        store = verification.Store(list(trust_anchors))
        builder = verification.PolicyBuilder().store(store).time(when)
        intermediates = list(chain[1:])
        if as_server:
            if server_name is None:
                return ("no server name to check the certificate against",)
            builder.build_server_verifier(_subject(server_name)).verify(leaf, intermediates)
        else:
            builder.build_client_verifier().verify(leaf, intermediates)
    except verification.VerificationError as error:
        try:
            return (_explain(str(error), chain, trust_anchors, server_name, as_server, when),)
        except (ValueError, TypeError, UnsupportedAlgorithm):
            return (f"the certificate of {_who(leaf)} does not validate: {error}",)
    except (ValueError, TypeError, UnsupportedAlgorithm) as error:
        return (f"cannot validate the certificate of {_who(leaf)}: {error}",)
    return ()


def _subject(server_name: str) -> x509.verification.Subject:
    try:
        return x509.IPAddress(ipaddress.ip_address(server_name))
    except ValueError:
        return x509.DNSName(server_name)


def _der(certificate: x509.Certificate) -> bytes:
    return certificate.public_bytes(Encoding.DER)


def _is_pinned(leaf: x509.Certificate, anchors: tuple[x509.Certificate, ...]) -> bool:
    """The leaf is byte-for-byte one of the trust anchors."""
    leaf_der = _der(leaf)
    return any(_der(anchor) == leaf_der for anchor in anchors)


def _check_pinned(
    leaf: x509.Certificate, server_name: str | None, when: datetime.datetime
) -> tuple[str, ...]:
    period = _period_error(leaf, when)
    if period is not None:
        return (period,)
    if server_name is None:
        return ()
    names = _names(leaf)
    if _name_matches(server_name, names):
        return ()
    return (
        f"the trusted certificate of {_who(leaf)} is for {_list(names)}, not {server_name!r}: "
        "connect by one of those names, or set the server name (--servername) to one",
    )


def _names(certificate: x509.Certificate) -> list[str]:
    """Names a certificate is for: its subjectAltName entries, else its common name."""
    try:
        san = certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except (x509.ExtensionNotFound, ValueError):
        return [
            str(attribute.value)
            for attribute in certificate.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
        ]
    names: list[str] = list(san.get_values_for_type(x509.DNSName))
    names += [str(address) for address in san.get_values_for_type(x509.IPAddress)]
    return names


def _name_matches(server_name: str, names: list[str]) -> bool:
    wanted = server_name.lower().rstrip(".")
    try:
        wanted_ip: ipaddress.IPv4Address | ipaddress.IPv6Address | None = ipaddress.ip_address(
            wanted
        )
    except ValueError:
        wanted_ip = None
    for name in names:
        candidate = name.lower().rstrip(".")
        if wanted_ip is not None:
            try:
                if ipaddress.ip_address(candidate) == wanted_ip:
                    return True
            except ValueError:
                pass
            continue
        if candidate == wanted:
            return True
        # RFC 6125 6.4.3: one wildcard, the whole left-most label.
        if candidate.startswith("*.") and "." in wanted:
            if wanted.split(".", 1)[1] == candidate[2:]:
                return True
    return False


def _period_error(certificate: x509.Certificate, when: datetime.datetime) -> str | None:
    not_before = certificate.not_valid_before_utc
    not_after = certificate.not_valid_after_utc
    if when < not_before:
        return (
            f"the certificate of {_who(certificate)} is not valid before "
            f"{not_before:%Y-%m-%d %H:%M} UTC (now {when:%Y-%m-%d %H:%M}): check the clocks"
        )
    if when > not_after:
        return (
            f"the certificate of {_who(certificate)} expired on {not_after:%Y-%m-%d %H:%M} UTC: "
            "renew it"
        )
    return None


def _issued_by_an_anchor(
    certificate: x509.Certificate, anchors: tuple[x509.Certificate, ...]
) -> bool:
    """Whether an anchor is the certificate itself or signed it (names alone can collide)."""
    for anchor in anchors:
        if _der(anchor) == _der(certificate):
            return True
        if anchor.subject != certificate.issuer:
            continue
        try:
            certificate.verify_directly_issued_by(anchor)
        except (InvalidSignature, ValueError, TypeError, UnsupportedAlgorithm):
            continue
        return True
    return False


def _who(certificate: x509.Certificate) -> str:
    try:
        text = certificate.subject.rfc4514_string()
    except ValueError:
        text = ""
    return repr(text or "(empty subject)")


def _list(names: list[str]) -> str:
    return ", ".join(repr(name) for name in names) if names else "no name at all"


def _explain(
    raw: str,
    chain: tuple[x509.Certificate, ...],
    anchors: tuple[x509.Certificate, ...],
    server_name: str | None,
    as_server: bool,
    when: datetime.datetime,
) -> str:
    """A sentence for a verifier error: which certificate, what is wrong, what to try."""
    leaf = chain[0]
    detail = _ENCOUNTERED.sub("", raw).removeprefix("validation failed: ")
    for oid, name in _EXTENSION_NAMES.items():
        detail = detail.replace(oid, name)
    role = "server" if as_server else "client"
    for certificate in chain:
        period = _period_error(certificate, when)
        if period is not None:
            return period
    self_signed = leaf.issuer == leaf.subject
    if "basicConstraints.cA must not be asserted" in raw:
        if self_signed:
            return (
                f"the {role}'s certificate {_who(leaf)} is self-signed and is not one of the "
                f"trust anchors: {_TRUST_HINT} [{detail}]"
            )
        return (
            f"the {role}'s certificate {_who(leaf)} is a CA certificate (basicConstraints "
            f"CA:TRUE), which may be a leaf only when it is itself a trust anchor [{detail}]"
        )
    if "no subjectAltName" in raw:
        return (
            f"the {role}'s certificate {_who(leaf)} has no subjectAltName, where the host name "
            "must be (openssl req ... -addext subjectAltName=DNS:NAME), or give exactly this "
            f"certificate as a trust anchor (ca_certificates, --cafile) [{detail}]"
        )
    if "no matching subjectAltName" in raw:
        return (
            f"the {role}'s certificate {_who(leaf)} is for {_list(_names(leaf))}, not "
            f"{server_name!r}: connect by one of those names or set --servername [{detail}]"
        )
    if "EKU" in raw or "extendedKeyUsage" in detail:
        return (
            f"the {role}'s certificate {_who(leaf)} does not allow TLS {role} authentication "
            f"(extendedKeyUsage) [{detail}]"
        )
    if "keyUsage" in detail:
        return (
            f"the {role}'s certificate {_who(leaf)} has a keyUsage that does not allow what "
            f"the handshake needs (digitalSignature) [{detail}]"
        )
    top = chain[-1]
    if not _issued_by_an_anchor(top, anchors):
        if self_signed:
            return (
                f"the {role}'s certificate {_who(leaf)} is self-signed and is not one of the "
                f"trust anchors: {_TRUST_HINT} [{detail}]"
            )
        return (
            f"no trust anchor issued the {role}'s certificate {_who(top)} (issuer "
            f"{top.issuer.rfc4514_string()!r}): give that CA as a trust anchor "
            f"(ca_certificates, --cafile) [{detail}]"
        )
    return f"the {role}'s certificate {_who(leaf)} does not validate: {detail}"


def peer_chain_verdict(
    configuration: DTLSConfiguration, chain: tuple[x509.Certificate, ...], *, as_server: bool
) -> tuple[tuple[str, ...], str | None]:
    """(validation errors, why we refuse the chain or None) under a configuration's rules.

    ``verify_peer=False`` without a callback accepts anything unchecked; a
    ``verify_callback`` gets the chain and the errors and decides; otherwise
    any error refuses.  ``as_server``: the chain is a server's (name checked).
    Both DTLS 1.2 and 1.3 handshakes decide this way.
    """
    if not configuration.verify_peer and configuration.verify_callback is None:
        return (), None
    errors = validate_chain(
        chain,
        configuration.ca_certificates,
        server_name=configuration.server_name,
        as_server=as_server,
        at=configuration.certificate_validation_time,
    )
    if configuration.verify_callback is not None:
        accepted = configuration.verify_callback(chain, errors)
        return errors, None if accepted else "rejected by verify callback"
    return errors, "; ".join(errors) if errors else None
