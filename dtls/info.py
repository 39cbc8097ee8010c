"""What a handshake negotiated: filled in as it goes, read through the connection.

:class:`Negotiated` is the live, mutable record a handshake (1.2 today, 1.3
next) writes into; the connection facade reads it.  :meth:`Negotiated.snapshot`
freezes it into a :class:`ConnectionInfo` for callers that want one value to
log, print or compare (the CLI's ``--json`` output is built from it).
"""

from __future__ import annotations

from dataclasses import dataclass

from cryptography import x509

from .config import DTLSVersion
from .sessions import Session
from .sessions13 import Session13
from .suites import CipherSuite, NamedGroup, SrtpProfile

__all__ = ["ConnectionInfo", "Negotiated"]


@dataclass(frozen=True, slots=True, kw_only=True)
class ConnectionInfo:
    """A snapshot of one connection's negotiated parameters."""

    version: DTLSVersion | None
    cipher_suite: CipherSuite | None
    group: NamedGroup | None
    alpn_protocol: str | None
    srtp_profile: SrtpProfile | None
    server_name: str | None
    session_resumed: bool
    extended_master_secret: bool
    connection_id: bytes
    peer_connection_id: bytes
    psk_identity: bytes | None
    peer_certificates: tuple[x509.Certificate, ...]
    early_data_accepted: bool = False

    @property
    def version_name(self) -> str | None:
        """``DTLSv1.2`` / ``DTLSv1.3``, as OpenSSL prints it; None before the ServerHello."""
        return None if self.version is None else self.version.label


class Negotiated:
    """Mutable negotiation state shared by a handshake and its connection."""

    __slots__ = (
        "alpn_protocol",
        "cipher_suite",
        "client_random",
        "early_data_accepted",
        "extended_master_secret",
        "group",
        "peer_certificate_errors",
        "peer_certificates",
        "psk_identity",
        "server_name",
        "server_random",
        "session",
        "session_id",
        "session_resumed",
        "srtp_profile",
        "version",
    )

    def __init__(self, *, server_name: str | None = None) -> None:
        self.version: DTLSVersion | None = None
        self.cipher_suite: CipherSuite | None = None
        self.group: NamedGroup | None = None
        self.client_random = b""
        self.server_random = b""
        self.session_id = b""
        self.extended_master_secret = False
        self.alpn_protocol: str | None = None
        self.srtp_profile: SrtpProfile | None = None
        self.server_name = server_name
        self.peer_certificates: tuple[x509.Certificate, ...] = ()
        self.peer_certificate_errors: tuple[str, ...] = ()
        self.psk_identity: bytes | None = None
        self.session: Session | Session13 | None = None
        self.session_resumed = False
        self.early_data_accepted = False

    def snapshot(self, *, connection_id: bytes, peer_connection_id: bytes) -> ConnectionInfo:
        """Freeze the current values (the connection ids live in the record layer)."""
        return ConnectionInfo(
            version=self.version,
            cipher_suite=self.cipher_suite,
            group=self.group,
            alpn_protocol=self.alpn_protocol,
            srtp_profile=self.srtp_profile,
            server_name=self.server_name,
            session_resumed=self.session_resumed,
            extended_master_secret=self.extended_master_secret,
            connection_id=connection_id,
            peer_connection_id=peer_connection_id,
            psk_identity=self.psk_identity,
            peer_certificates=self.peer_certificates,
            early_data_accepted=self.early_data_accepted,
        )
