"""Test helpers for the DTLS suite: certificates made at test time and a pair driver on netsim."""

from __future__ import annotations

import datetime
import ipaddress
from collections.abc import Callable
from dataclasses import dataclass, field

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from netsim import MS, Address, LinkConditions, Network

from dtls.config import CertificatePrivateKey, DTLSConfiguration, DTLSVersion
from dtls.connection import DTLSConnection
from dtls.suites import OPENSSL_SUITE_NAMES, TLS13_SUITES, CipherSuite, NamedGroup

SECOND_NS = 1_000_000_000
CLIENT_ADDRESS = ("10.0.0.1", 5000)
SERVER_ADDRESS = ("10.0.0.2", 4433)


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def make_key(kind: str) -> CertificatePrivateKey:
    """kind: 'p256' | 'p384' | 'rsa'."""
    if kind == "p256":
        return ec.generate_private_key(ec.SECP256R1())
    if kind == "p384":
        return ec.generate_private_key(ec.SECP384R1())
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@dataclass
class Pki:
    """A CA and certificates it issued (leaf first chains)."""

    ca_key: CertificatePrivateKey
    ca_certificate: x509.Certificate
    leaves: dict[str, tuple[tuple[x509.Certificate, ...], CertificatePrivateKey]] = field(
        default_factory=dict
    )

    def issue(
        self,
        name: str,
        kind: str = "p256",
        *,
        client: bool = False,
        not_after_days: int = 30,
        sans: tuple[str, ...] = (),
    ) -> tuple[tuple[x509.Certificate, ...], CertificatePrivateKey]:
        key = make_key(kind)
        now = datetime.datetime.now(datetime.UTC)
        alt_names: list[x509.GeneralName] = []
        for entry in (name, *sans):
            try:
                alt_names.append(x509.IPAddress(ipaddress.ip_address(entry)))
            except ValueError:
                alt_names.append(x509.DNSName(entry))
        builder = (
            x509.CertificateBuilder()
            .subject_name(_name(name))
            .issuer_name(self.ca_certificate.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(days=1))
            .not_valid_after(now + datetime.timedelta(days=not_after_days))
            .add_extension(x509.SubjectAlternativeName(alt_names), critical=False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(
                x509.ExtendedKeyUsage(
                    [ExtendedKeyUsageOID.CLIENT_AUTH if client else ExtendedKeyUsageOID.SERVER_AUTH]
                ),
                critical=False,
            )
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(
                    self.ca_key.public_key()  # type: ignore[arg-type]
                ),
                critical=False,
            )
            .add_extension(
                x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False
            )
        )
        certificate = builder.sign(self.ca_key, hashes.SHA256())  # type: ignore[arg-type]
        chain = (certificate,)
        self.leaves[name] = (chain, key)
        return chain, key


def make_pki(kind: str = "p256") -> Pki:
    key = make_key(kind)
    now = datetime.datetime.now(datetime.UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(_name("dtls test CA"))
        .issuer_name(_name("dtls test CA"))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=365))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())  # type: ignore[arg-type]
    )
    return Pki(ca_key=key, ca_certificate=certificate)


def pem_chain(chain: tuple[x509.Certificate, ...]) -> bytes:
    return b"".join(c.public_bytes(serialization.Encoding.PEM) for c in chain)


def pem_key(key: CertificatePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def lossy(*, loss: float = 0.0, duplicate: float = 0.0, reorder: float = 0.0) -> LinkConditions:
    """The DTLS suite's lossy link: 10 ms each way; a reordered datagram waits 0-30 ms more."""
    return LinkConditions(
        delay_ns=10 * MS,
        loss=loss,
        duplicate=duplicate,
        reorder=reorder,
        reorder_delay_ns=0,
        reorder_spread_ns=30 * MS,
    )


def run_pair(
    client: DTLSConnection,
    server: DTLSConnection,
    *,
    link: LinkConditions | None = None,
    seed: int = 1,
    until_ns: int = 120 * SECOND_NS,
    stop_when_established: bool = True,
    start_ns: int = 0,
    tap: Callable[[str, bytes, Address], None] | None = None,
) -> int:
    """Drive a client and a server over the simulated network until both are established.

    With ``stop_when_established=False``, until nothing is left to send and no timer
    is set (tickets and ACKs delivered), or both closed.  The client is at
    CLIENT_ADDRESS ("a"), the server at SERVER_ADDRESS ("b"); ``link`` applies both
    ways.  Returns the virtual time reached (at most ``until_ns``).
    """
    network = Network(
        client,
        server,
        a_address=CLIENT_ADDRESS,
        b_address=SERVER_ADDRESS,
        a_to_b=link,
        seed=seed,
    )
    network.now = start_ns
    network.tap = tap
    client.start_handshake(start_ns)

    def settled() -> bool:
        if stop_when_established and client.is_established and server.is_established:
            return True
        return client.state.value == "closed" and server.state.value == "closed"

    network.run_until_quiet(limit_ns=until_ns, until=settled)
    return network.now


DTLS_1_2_ONLY = (DTLSVersion.DTLS_1_2,)
DTLS_1_3_ONLY = (DTLSVersion.DTLS_1_3,)


def configs(
    kind: str = "p256",
    *,
    versions: tuple[DTLSVersion, ...] = DTLS_1_2_ONLY,
    **client_options: object,
) -> tuple[DTLSConfiguration, DTLSConfiguration, Pki]:
    """A client and a server configuration with a fresh PKI.

    Both speak ``versions``: DTLS 1.2 alone by default, because the tests that
    use this helper without saying otherwise exercise the 1.2 machines (the
    library's own default offers 1.3 first); 1.3 tests pass ``versions``.
    """
    pki = make_pki()
    chain, key = pki.issue("server.test", kind)
    server = DTLSConfiguration(
        is_client=False, certificate_chain=chain, private_key=key, versions=versions
    )
    options: dict[str, object] = {"server_name": "server.test", "versions": versions}
    options.update(client_options)
    client = DTLSConfiguration(
        is_client=True,
        ca_certificates=(pki.ca_certificate,),
        **options,  # type: ignore[arg-type]
    )
    return client, server, pki


# -- OpenSSL's names for what we negotiate (the interop tests) ------------------------

OPENSSL_CIPHER = OPENSSL_SUITE_NAMES
#: The DTLS 1.2 suites authenticated by a certificate (all but the PSK ones).
CERT_SUITES = [
    suite
    for suite in OPENSSL_CIPHER
    if "PSK" not in suite.name and suite not in TLS13_SUITES  # OpenSSL has no DTLS 1.3
]
#: Names OpenSSL takes in a group list (``-groups``, ``set1_groups_list``).
OPENSSL_GROUP = {
    NamedGroup.x25519: "X25519",
    NamedGroup.secp256r1: "P-256",
    NamedGroup.secp384r1: "P-384",
}
#: Names OpenSSL reports for a negotiated group ("Shared groups:", SSL_get0_group_name).
OPENSSL_GROUP_REPORTED = {
    NamedGroup.x25519: "x25519",
    NamedGroup.secp256r1: "secp256r1",
    NamedGroup.secp384r1: "secp384r1",
}


def certificate_kind(suite: CipherSuite, group: NamedGroup) -> str:
    """The key kind ('rsa', 'p256', 'p384') of a server certificate for ``suite`` and ``group``."""
    if "RSA" in suite.name:
        return "rsa"
    return "p384" if group == NamedGroup.secp384r1 else "p256"


def openssl_groups(suite: CipherSuite, group: NamedGroup) -> str:
    """OpenSSL's group list offering ``group`` with ``suite``.

    With an ECDSA suite and X25519 it adds P-256: OpenSSL insists that the
    certificate's curve is among the groups in play.
    """
    name = OPENSSL_GROUP[group]
    if "ECDSA" in suite.name and group == NamedGroup.x25519:
        name += ":P-256"
    return name


def trace_states(connection: DTLSConnection) -> list[str]:
    """Record the handshake state machine's state after every message it takes."""
    machine = connection._handshake
    seen: list[str] = [machine.state_name]
    original = machine.handle_message

    def spy(message: object, now: int) -> None:
        original(message, now)  # type: ignore[arg-type]
        seen.append(machine.state_name)

    machine.handle_message = spy  # type: ignore[method-assign]
    return seen


def reachable(table: dict[object, dict[int, frozenset[object]]], start: object) -> set[object]:
    """States reachable from ``start`` in a transition table."""
    seen = {start}
    stack = [start]
    while stack:
        for targets in table[stack.pop()].values():
            for state in targets:
                if state not in seen:
                    seen.add(state)
                    stack.append(state)
    return seen
