"""Configuration of a DTLS connection or endpoint.

:class:`DTLSConfiguration` is frozen; the one run-time mutable piece is the
:class:`ServerCertificates` store it may point at, so a server can add a
certificate for a new server name while running (SNI).
"""

from __future__ import annotations

import datetime
import ssl
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from enum import IntEnum
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.utils import CryptographyDeprecationWarning

from .errors import LocalProtocolError
from .sessions import Session
from .sessions13 import Session13
from .suites import TLS13_SUITES, CipherSuite, NamedGroup, SrtpProfile

__all__ = [
    "DEFAULT_CIPHER_SUITES",
    "DEFAULT_GROUPS",
    "DEFAULT_MTU_BYTES",
    "DEFAULT_VERSIONS",
    "IMPLEMENTED_VERSIONS",
    "CertificatePrivateKey",
    "DTLSConfiguration",
    "DTLSVersion",
    "ServerCertificates",
    "VerifyCallback",
    "load_certificate_chain",
    "load_private_key",
    "system_ca_certificates",
]

DEFAULT_MTU_BYTES = 1200
SECOND_NS = 1_000_000_000
DEFAULT_HANDSHAKE_TIMEOUT_NS = 60 * SECOND_NS
MIN_HANDSHAKE_TIMEOUT_NS = 2 * SECOND_NS
MAX_HANDSHAKE_TIMEOUT_NS = 120 * SECOND_NS
INITIAL_RETRANSMIT_NS = 1 * SECOND_NS
MAX_RETRANSMIT_NS = 60 * SECOND_NS
MAX_RETRANSMISSIONS = 6
APPLICATION_QUEUE_DATAGRAMS = 256
REPLAY_WINDOW_RECORDS = 64
MIN_REPLAY_WINDOW_RECORDS = 32
MAX_REPLAY_WINDOW_RECORDS = 1 << 16
MIN_MTU_BYTES = 256


class DTLSVersion(IntEnum):
    """A DTLS protocol version, by its wire value (versions count downwards on the wire)."""

    DTLS_1_2 = 0xFEFD
    DTLS_1_3 = 0xFEFC

    @property
    def label(self) -> str:
        """The name OpenSSL prints for it: ``DTLSv1.2``, ``DTLSv1.3``."""
        return "DTLSv1.2" if self is DTLSVersion.DTLS_1_2 else "DTLSv1.3"


# What this build can negotiate.  By default both, 1.3 preferred (a 1.2-only peer still works).
IMPLEMENTED_VERSIONS: tuple[DTLSVersion, ...] = (DTLSVersion.DTLS_1_3, DTLSVersion.DTLS_1_2)
DEFAULT_VERSIONS: tuple[DTLSVersion, ...] = (DTLSVersion.DTLS_1_3, DTLSVersion.DTLS_1_2)

DEFAULT_CIPHER_SUITES: tuple[CipherSuite, ...] = (
    CipherSuite.TLS_AES_128_GCM_SHA256,
    CipherSuite.TLS_CHACHA20_POLY1305_SHA256,
    CipherSuite.TLS_AES_256_GCM_SHA384,
    CipherSuite.TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
    CipherSuite.TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256,
    CipherSuite.TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384,
    CipherSuite.TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256,
    CipherSuite.TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256,
    CipherSuite.TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384,
    CipherSuite.TLS_ECDHE_PSK_WITH_CHACHA20_POLY1305_SHA256,
    CipherSuite.TLS_PSK_WITH_AES_128_GCM_SHA256,
)
DEFAULT_GROUPS: tuple[NamedGroup, ...] = (
    NamedGroup.x25519,
    NamedGroup.secp256r1,
    NamedGroup.secp384r1,
)

CertificatePrivateKey = ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey | ed25519.Ed25519PrivateKey
# (peer chain leaf first, validation errors) -> accept?
VerifyCallback = Callable[[tuple[x509.Certificate, ...], tuple[str, ...]], bool]
# PSK identity -> key, or None when unknown.
PskLookup = Callable[[bytes], bytes | None]


class ServerCertificates:
    """Server certificates keyed by server name (SNI), with a default.

    Mutable on purpose: ``add()`` may be called while the server runs.
    """

    def __init__(self) -> None:
        self._by_name: dict[str, tuple[tuple[x509.Certificate, ...], CertificatePrivateKey]] = {}
        self._default: tuple[tuple[x509.Certificate, ...], CertificatePrivateKey] | None = None

    def add(
        self,
        chain: tuple[x509.Certificate, ...] | list[x509.Certificate],
        private_key: CertificatePrivateKey,
        server_name: str | None = None,
    ) -> None:
        """Add a certificate chain for ``server_name`` (None: the default one)."""
        if not chain:
            raise LocalProtocolError("empty certificate chain")
        entry = (tuple(chain), private_key)
        if server_name is None:
            self._default = entry
        else:
            self._by_name[server_name.lower()] = entry
            if self._default is None:
                self._default = entry

    def select(
        self, server_name: str | None
    ) -> tuple[tuple[x509.Certificate, ...], CertificatePrivateKey] | None:
        """The chain for a server name, falling back to the default."""
        if server_name is not None:
            found = self._by_name.get(server_name.lower())
            if found is not None:
                return found
        return self._default

    def all_entries(self) -> list[tuple[tuple[x509.Certificate, ...], CertificatePrivateKey]]:
        """Every chain, default first (used to pick one matching a cipher suite)."""
        entries = [self._default] if self._default is not None else []
        entries.extend(entry for entry in self._by_name.values() if entry is not self._default)
        return entries


@dataclass(frozen=True, slots=True, kw_only=True)
class DTLSConfiguration:
    """Everything that shapes a handshake; one instance may serve many connections."""

    is_client: bool = True
    # Versions we accept, most preferred first (pin one version by giving only it).
    versions: tuple[DTLSVersion, ...] = DEFAULT_VERSIONS
    certificate_chain: tuple[x509.Certificate, ...] = ()
    private_key: CertificatePrivateKey | None = None
    server_certificates: ServerCertificates | None = None
    ca_certificates: tuple[x509.Certificate, ...] | None = None
    verify_peer: bool = True
    verify_callback: VerifyCallback | None = None
    certificate_validation_time: datetime.datetime | None = None  # None: now
    server_name: str | None = None
    request_client_certificate: bool = False
    require_client_certificate: bool = False
    cipher_suites: tuple[CipherSuite, ...] = DEFAULT_CIPHER_SUITES
    groups: tuple[NamedGroup, ...] = DEFAULT_GROUPS
    alpn_protocols: tuple[str, ...] = ()
    srtp_profiles: tuple[SrtpProfile, ...] = ()
    psk: bytes | None = None
    # Client: the identity sent with ``psk``.  Server with a fixed ``psk``: the identity a
    # client must send (unknown_psk_identity otherwise); left empty, any identity is taken
    # and ``connection.psk_identity`` is only what the client claimed.  ``psk_lookup``
    # (identity -> key or None) replaces both for servers with several keys.
    psk_identity: bytes = b""
    psk_identity_hint: bytes = b""
    psk_lookup: PskLookup | None = None
    mtu: int = DEFAULT_MTU_BYTES
    handshake_timeout_ns: int = DEFAULT_HANDSHAKE_TIMEOUT_NS
    initial_retransmit_ns: int = INITIAL_RETRANSMIT_NS
    max_retransmit_ns: int = MAX_RETRANSMIT_NS
    max_retransmissions: int = MAX_RETRANSMISSIONS
    require_extended_master_secret: bool = False
    cookie_exchange: bool = True
    connection_id: bytes | None = None
    session_tickets: bool = True
    session: Session | Session13 | None = None
    # DTLS 1.3: send data queued before the handshake as 0-RTT early data when the session
    # allows it (client); the most early data to accept per connection, 0 = none (server).
    early_data: bool = False
    max_early_data: int = 0
    # DTLS 1.3: KeyUpdate after this many records under one key (None: 2^23; AEAD limits).
    key_update_records: int | None = None
    require_close_notify: bool = True
    idle_timeout_ns: int | None = None
    application_queue_datagrams: int = APPLICATION_QUEUE_DATAGRAMS
    replay_window_records: int = REPLAY_WINDOW_RECORDS

    def __post_init__(self) -> None:
        if not self.versions or len(set(self.versions)) != len(self.versions):
            raise LocalProtocolError("versions must name at least one version, each once")
        for version in self.versions:
            if version not in IMPLEMENTED_VERSIONS:
                known = version in DTLSVersion.__members__.values()
                name = DTLSVersion(version).label if known else f"version {version:#06x}"
                raise LocalProtocolError(f"{name} is not implemented yet")
        if not MIN_HANDSHAKE_TIMEOUT_NS <= self.handshake_timeout_ns <= MAX_HANDSHAKE_TIMEOUT_NS:
            raise LocalProtocolError("handshake timeout must be between 2 and 120 seconds")
        has_13_suite = any(suite in TLS13_SUITES for suite in self.cipher_suites)
        has_12_suite = any(suite not in TLS13_SUITES for suite in self.cipher_suites)
        if not has_13_suite and not (DTLSVersion.DTLS_1_2 in self.versions and has_12_suite):
            raise LocalProtocolError(
                "no cipher suite for the allowed versions: DTLS 1.3 needs a TLS_AES_* or "
                "TLS_CHACHA20_* suite, DTLS 1.2 one of the others"
            )
        if not has_12_suite and DTLSVersion.DTLS_1_3 not in self.versions:
            raise LocalProtocolError("DTLS 1.2 needs a DTLS 1.2 cipher suite")
        if not 0 <= self.max_early_data <= 0xFFFFFFFF:
            raise LocalProtocolError("max_early_data must fit 32 bits")
        if self.key_update_records is not None and self.key_update_records < 1:
            raise LocalProtocolError("key_update_records must be positive")
        if self.mtu < MIN_MTU_BYTES:
            raise LocalProtocolError(f"mtu must be at least {MIN_MTU_BYTES} bytes")
        if self.idle_timeout_ns is not None and self.idle_timeout_ns <= 0:
            raise LocalProtocolError("idle timeout must be positive")
        if not MIN_REPLAY_WINDOW_RECORDS <= self.replay_window_records <= MAX_REPLAY_WINDOW_RECORDS:
            raise LocalProtocolError("replay window must hold 32 to 65536 records")
        if self.connection_id is not None and len(self.connection_id) > 255:
            raise LocalProtocolError("connection id longer than 255 bytes")
        if (self.certificate_chain == ()) != (self.private_key is None):
            raise LocalProtocolError("certificate_chain and private_key go together")

    def certificates(self) -> ServerCertificates:
        """The server certificate store, built from the plain fields when none was given."""
        if self.server_certificates is not None:
            return self.server_certificates
        store = ServerCertificates()
        if self.private_key is not None:
            store.add(self.certificate_chain, self.private_key)
        return store


def load_certificate_chain(pem: bytes) -> tuple[x509.Certificate, ...]:
    """PEM (one or more certificates, leaf first) to a chain."""
    return tuple(x509.load_pem_x509_certificates(pem))


def load_private_key(pem: bytes, password: bytes | None = None) -> CertificatePrivateKey:
    """PEM private key; only key types usable for DTLS 1.2 signatures are accepted."""
    key = serialization.load_pem_private_key(pem, password)
    if not isinstance(
        key, ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey | ed25519.Ed25519PrivateKey
    ):
        raise LocalProtocolError("unsupported private key type")
    return key


def system_ca_certificates() -> tuple[x509.Certificate, ...]:
    """The platform's trust store (OpenSSL's default CA file), for ``ca_certificates``.

    Reads a file, so call it once when building a configuration, not per handshake.
    Returns an empty tuple when no store can be found.
    """
    paths = ssl.get_default_verify_paths()
    for candidate in (paths.cafile, paths.openssl_cafile):
        if candidate and Path(candidate).is_file():
            try:
                with warnings.catch_warnings():
                    # Some stores carry old roots with odd serial numbers; they still load.
                    warnings.simplefilter("ignore", CryptographyDeprecationWarning)
                    return tuple(x509.load_pem_x509_certificates(Path(candidate).read_bytes()))
            except ValueError:
                continue
    return ()
