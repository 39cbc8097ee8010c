"""The QOTP transport over DTLS record protection (1.3 or 1.2): the second crypto layer.

Our own design (there is no reference for it); SPEC.md "QOTP transport over
DTLS" is the normative summary.  The :mod:`dtls` package does all of DTLS:
this module only adapts its sans-IO :class:`~dtls.connection.DTLSConnection`
to the seam in :mod:`qotp.protection` (``dtls`` never imports ``qotp``).

* **Handshake.**  A full DTLS handshake (1.3 preferred, 1.2 when the peer
  or the configuration says so; certificates or PSK, cookie exchange or
  HelloRetryRequest, retransmitted flights and 1.3 ACKs) runs inside
  :class:`DtlsProtection`: its
  flights leave through ``datagrams_to_send``, its retransmission timer
  through ``get_timer``/``handle_timer``.  ``can_carry_payload`` and
  ``handshake_complete`` both become true when the DTLS connection is
  established on this side: application data may then flow and both sides
  hold the final keys (the client has the server's Finished; the server has
  the client's).  The transport sends nothing before that.
* **Payloads.**  Each encoded QOTP transport payload is exactly one DTLS
  ``application_data`` record, and each record travels alone in its
  datagram.  ``payload_budget(mtu)`` is ``mtu`` minus the negotiated record overhead
  (DTLS 1.3: 5-byte unified header, inner type byte, 16-byte tag, plus the
  connection id; 1.2: 13-byte header, 8-byte explicit nonce for AES-GCM,
  16-byte tag, CID length + 1 with an RFC 9146 connection id), capped at 2^14.
* **Receiving.**  ``open`` returns the record's plaintext, or None for a
  datagram that only served the handshake.  Once established, a datagram the
  DTLS layer dropped (failed authentication, replay, garbage) raises
  :class:`~qotp.errors.DecryptError`, which the transport counts and drops.
* **Routing.**  By source address, or by the connection id of a 1.3
  unified-header record or a 1.2 ``tls12_cid`` record when the layer hands
  out connection ids
  (``connection_id_bytes``).  A server answers a ClientHello without a valid
  cookie statelessly (HelloRetryRequest or HelloVerifyRequest from
  :meth:`DtlsCryptoLayer.datagrams_to_send`)
  and creates a connection only for one with a valid cookie.  One connection
  per peer address; a new ClientHello from the address of an established
  connection starts a new one (a client that lost its state, RFC 6347 4.2.8).
* **Connection id (QOTP's).**  The last eight bytes of the ClientHello random,
  read as a little-endian u64: both sides know it, as with native QOTP.
* **Identity.**  ``peer_identity`` is the DER SubjectPublicKeyInfo of the
  peer's certificate (None for PSK or a client without certificate); dialing
  with ``peer_identity`` pins it.
"""

from __future__ import annotations

import dataclasses
import logging
import os

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from dtls.config import DTLSConfiguration
from dtls.connection import DTLSConnection, ServerContext
from dtls.endpoint import check_client_hello, starts_with_initial_hello
from dtls.events import ConnectionTerminated, HandshakeCompleted, PeerClosedWrite
from dtls.records13 import is_unified_header
from qotp.errors import DecodeError, DecryptError, LocalProtocolError
from qotp.protection import Address, EarlyPayload, FirstPacket, Protection

__all__ = [
    "MAX_RECORD_PLAINTEXT_BYTES",
    "REPLAY_WINDOW_RECORDS",
    "DtlsCryptoLayer",
    "DtlsProtection",
    "connection_id_from_random",
    "subject_public_key_info",
]

logger = logging.getLogger(__name__)

MAX_RECORD_PLAINTEXT_BYTES = 16384
"""A DTLS record carries at most 2^14 plaintext bytes (RFC 5246 6.2.1)."""
REPLAY_WINDOW_RECORDS = 4096
"""Anti-replay window of the layer's connections (DTLS default: 64; RFC 6347 4.1.2.6
lets a receiver choose a larger one)."""
_MIN_RECORD_BYTES = 13  # a 1.2 header; a 1.3 record is at least 5 + 16 bytes
_CID_OFFSET = 11  # type(1) version(2) epoch(2) sequence(6)
_UNIFIED_CID_BIT = 0x10
_HANDSHAKE = 22
_TLS12_CID = 25


def connection_id_from_random(client_random: bytes) -> int:
    """QOTP's connection id of a DTLS connection: the last 8 bytes of the ClientHello random."""
    return int.from_bytes(client_random[24:32], "little")


def subject_public_key_info(certificate: x509.Certificate) -> bytes:
    """The DER SubjectPublicKeyInfo of a certificate: what ``peer_identity`` reports."""
    return certificate.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )


class DtlsProtection:
    """One connection's DTLS association (implements :class:`qotp.protection.Protection`)."""

    __slots__ = (
        "_address",
        "_closed_by_peer",
        "_established",
        "_expected_peer_identity",
        "_failure",
        "_key_log",
        "_key_logged",
        "_outgoing",
        "_peer_identity",
        "connection_id",
        "dtls",
        "extra_records_dropped",
    )

    def __init__(
        self,
        dtls: DTLSConnection,
        *,
        address: Address,
        connection_id: int,
        expected_peer_identity: bytes | None = None,
    ) -> None:
        self.dtls = dtls
        """The DTLS connection underneath (cipher suite, certificates, exporter...)."""
        self.connection_id = connection_id
        self.extra_records_dropped = 0
        """Application records beyond the first in one datagram (our peers never send any)."""
        self._address = address
        self._established = False
        self._failure: str | None = None
        self._closed_by_peer = False
        self._peer_identity: bytes | None = None
        self._expected_peer_identity = expected_peer_identity
        self._outgoing: list[bytes] = []
        self._key_log: list[str] = []
        self._key_logged = 0  # key-log lines handed out so far

    @property
    def address(self) -> Address:
        """The address the association was made with (its routing key without a CID)."""
        return self._address

    # -- Protection interface -----------------------------------------------

    @property
    def handshake_complete(self) -> bool:
        """The DTLS handshake finished on this side (client: server Finished verified)."""
        return self._established

    @property
    def can_carry_payload(self) -> bool:
        """Application data may be sent: established, not failed, not closed underneath."""
        return self._established and self._failure is None and self.dtls.is_established

    @property
    def failure(self) -> str | None:
        """Why the association ended (handshake failure, alert, close_notify, pin mismatch)."""
        return self._failure

    @property
    def closed_by_peer(self) -> bool:
        """The peer sent close_notify before anything else went wrong."""
        return self._closed_by_peer

    @property
    def proven_address(self) -> Address:
        """The address dialed, or the one the client echoed our cookie from."""
        return self._address

    @property
    def early_data_replayable(self) -> bool:
        """Always False: this layer sends no early data (no DTLS 1.3 0-RTT)."""
        return False

    def take_early_payload(self) -> EarlyPayload | None:
        """Always None: this layer sends no early data (no DTLS 1.3 0-RTT)."""
        return None

    @property
    def peer_identity(self) -> bytes | None:
        """DER SubjectPublicKeyInfo of the peer's certificate (None: PSK, or no certificate)."""
        return self._peer_identity

    @property
    def datagrams_pending(self) -> bool:
        """A flight (or alert) answering the last datagram waits to be sent."""
        return bool(self._outgoing)

    def payload_budget(self, mtu: int) -> int:
        """``mtu`` minus the negotiated record overhead, at most one record's worth."""
        return min(mtu - self.dtls.record_overhead, MAX_RECORD_PLAINTEXT_BYTES)

    def seal(self, payload: bytes, now: int) -> bytes:
        """One ``application_data`` record holding the payload; the record is the datagram."""
        return self.dtls.seal_application_data(payload)

    def open(self, datagram: bytes, now: int) -> bytes | None:
        """The plaintext of the datagram's application record, or None for handshake traffic."""
        dtls = self.dtls
        dropped = dtls.dropped_records
        received = dtls.open_datagram(datagram, self._address, now)
        if received:
            if len(received) > 1:
                self.extra_records_dropped += len(received) - 1
            return received[0]
        was_established = self._established
        self._update(now)
        if was_established and dtls.dropped_records != dropped:
            raise DecryptError("DTLS dropped the record (authentication, replay or framing)")
        return None

    def datagrams_to_send(self, now: int) -> list[bytes]:
        """Handshake flights, retransmissions and alerts of the DTLS connection."""
        self._update(now)
        outgoing, self._outgoing = self._outgoing, []
        return outgoing

    def get_timer(self) -> int | None:
        """The DTLS retransmission / handshake deadline (None once established)."""
        return self.dtls.get_timer()

    def handle_timer(self, now: int) -> None:
        """Let DTLS retransmit its flight or give up."""
        self.dtls.handle_timer(now)
        self._update(now)

    def key_log_lines(self) -> list[str]:
        """NSS key-log lines as secrets appear (1.2: ``CLIENT_RANDOM``; 1.3: traffic secrets)."""
        lines, self._key_log = self._key_log, []
        return lines

    def replaced(self) -> None:
        """A new association from the same peer address took over; this one must end."""
        if self._failure is None:
            self._failure = "replaced by a new handshake from the same address"
        self.dtls.abort("replaced")

    # -- internals ------------------------------------------------------------

    def _update(self, now: int) -> None:
        """Take the DTLS connection's datagrams and events into our state."""
        dtls = self.dtls
        for datagram, _address in dtls.datagrams_to_send(now):
            self._outgoing.append(datagram)
        while (event := dtls.next_event()) is not None:
            if isinstance(event, HandshakeCompleted):
                self._on_handshake_completed(now)
            elif isinstance(event, ConnectionTerminated):
                if self._failure is None:
                    self._failure = f"DTLS: {event.reason}"
            elif isinstance(event, PeerClosedWrite) and self._failure is None:
                self._failure = "DTLS: the peer closed the association"
                self._closed_by_peer = True
        lines = dtls.key_log_lines()
        if len(lines) > self._key_logged:
            self._key_log.extend(line + "\n" for line in lines[self._key_logged :])
            self._key_logged = len(lines)

    def _on_handshake_completed(self, now: int) -> None:
        certificates = self.dtls.peer_certificates
        identity = subject_public_key_info(certificates[0]) if certificates else None
        self._peer_identity = identity
        expected = self._expected_peer_identity
        if expected is not None and identity != expected:
            self._failure = "the peer's identity differs from the one dialed"
            self.dtls.close()  # close_notify: the peer's transport ends at once
            for datagram, _address in self.dtls.datagrams_to_send(now):
                self._outgoing.append(datagram)
            return
        self._established = True


class DtlsCryptoLayer:
    """Per-endpoint DTLS: routing by address or connection id, stateless cookies, dials.

    ``server`` configures the connections peers open to us (certificates or a
    PSK; None: accept nothing), ``client`` the ones we dial (trust anchors,
    server name, PSK; None: no dialing).  Their ``is_client`` flags are set to
    fit.  ``connection_id_bytes`` > 0 asks every peer for an RFC 9146
    connection id of that length, so records route by it whatever address
    they come from.  ``replay_window_records`` replaces the configurations'
    anti-replay window: a transport reorders far more than 64 records at
    speed, and records older than the window would be dropped as replays.
    The handshake's datagrams use the DTLS configuration's ``mtu``; the
    transport's payloads use the transport's.
    """

    def __init__(
        self,
        *,
        server: DTLSConfiguration | None = None,
        client: DTLSConfiguration | None = None,
        connection_id_bytes: int = 0,
        replay_window_records: int = REPLAY_WINDOW_RECORDS,
        server_context: ServerContext | None = None,
    ) -> None:
        if server is None and client is None:
            raise LocalProtocolError("give a server configuration, a client one, or both")
        if not 0 <= connection_id_bytes <= 255:
            raise LocalProtocolError("connection_id_bytes must be 0..255")
        if server is not None:
            # One certificate store for all connections (built once, not per handshake).
            server = dataclasses.replace(
                server,
                is_client=False,
                server_certificates=server.certificates(),
                replay_window_records=replay_window_records,
            )
        if client is not None:
            client = dataclasses.replace(
                client, is_client=True, replay_window_records=replay_window_records
            )
        self.server_configuration = server
        self.client_configuration = client
        self.connection_id_bytes = connection_id_bytes
        self.server_context = server_context or ServerContext()
        self.hello_verify_requests_sent = 0
        self._by_id: dict[int, DtlsProtection] = {}
        self._by_address: dict[Address, DtlsProtection] = {}
        self._by_cid: dict[bytes, DtlsProtection] = {}
        self._outgoing: list[tuple[bytes, Address]] = []
        self._local_identity = _local_identity(server, client)

    @property
    def local_identity(self) -> bytes | None:
        """DER SubjectPublicKeyInfo of our (default) certificate, or None (PSK only)."""
        return self._local_identity

    def route(self, datagram: bytes, address: Address) -> int | None:
        """The connection of a record's connection id (1.3 or 1.2), else of the address."""
        if len(datagram) < _MIN_RECORD_BYTES:
            raise DecodeError("shorter than any DTLS record")
        cid_bytes = self.connection_id_bytes
        first = datagram[0]
        if cid_bytes and first == _TLS12_CID:
            found = self._by_cid.get(datagram[_CID_OFFSET : _CID_OFFSET + cid_bytes])
            if found is not None:
                return found.connection_id
        elif cid_bytes and is_unified_header(first) and first & _UNIFIED_CID_BIT:
            found = self._by_cid.get(datagram[1 : 1 + cid_bytes])
            if found is not None:
                return found.connection_id
        protection = self._by_address.get(address)
        if protection is None:
            return None
        if (
            datagram[0] == _HANDSHAKE
            and protection.handshake_complete
            and not protection.dtls.is_client
            and starts_with_initial_hello(datagram)
        ):
            # RFC 6347 4.2.8: a client that lost its state says hello again; accept()
            # checks the cookie and drops late copies of the old hello.
            return None
        return protection.connection_id

    def classify(self, datagram: bytes, connection_id: int | None, now: int) -> FirstPacket:
        """Handshake records may start or continue an association (cheaply: cookies)."""
        if datagram and datagram[0] == _HANDSHAKE:
            return FirstPacket.CONTINUATION
        return FirstPacket.NONE

    def accept(self, datagram: bytes, address: Address, now: int) -> DtlsProtection | None:
        """A server connection for a ClientHello with a valid cookie; otherwise None.

        A hello without one gets a HelloVerifyRequest (no state is kept).
        """
        config = self.server_configuration
        if config is None:
            return None
        existing = self._by_address.get(address)
        if existing is not None and existing.dtls.is_client:
            # We dialed that address: its datagrams are not new clients.
            raise DecodeError("a handshake record from a server we dialed, for no association")
        check = check_client_hello(
            datagram,
            address,
            now,
            self.server_context.cookies,
            cookie_exchange=config.cookie_exchange,
            stale_random=None if existing is None else existing.dtls.client_random,
            configuration=config,
            server_context=self.server_context,
        )
        if check.reply is not None:
            self._outgoing.append((check.reply, address))
            self.hello_verify_requests_sent += 1
            return None
        if check.hello is None:
            raise DecodeError("not a ClientHello that could start an association")
        connection_id = connection_id_from_random(check.hello.random)
        if connection_id in self._by_id:
            raise DecodeError("a ClientHello repeating a live association's random")
        if self.connection_id_bytes:
            config = dataclasses.replace(config, connection_id=self._fresh_cid())
        dtls = DTLSConnection(
            config, address=address, peer_id=connection_id, server_context=self.server_context
        )
        protection = DtlsProtection(dtls, address=address, connection_id=connection_id)
        if existing is not None:
            # The client lost its state and proved its address again: the old association
            # is dead; its transport ends on its next timer (at the latest, idle timeout).
            existing.replaced()
        self._register(protection)
        return protection

    def dial(
        self, address: Address, *, now: int, peer_identity: bytes | None = None
    ) -> DtlsProtection:
        """Start a client handshake with ``address``; ``peer_identity`` pins the server's key."""
        config = self.client_configuration
        if config is None:
            raise LocalProtocolError("this crypto layer has no client configuration")
        if address in self._by_address:
            raise LocalProtocolError(f"already connected to {address!r} (routing is by address)")
        if self.connection_id_bytes and config.connection_id is None:
            config = dataclasses.replace(config, connection_id=self._fresh_cid())
        dtls = DTLSConnection(config, address=address, server_context=self.server_context)
        dtls.start_handshake(now)
        connection_id = connection_id_from_random(dtls.client_random)
        if connection_id in self._by_id:
            raise LocalProtocolError("connection id collision; dial again")
        dtls.peer_id = connection_id
        protection = DtlsProtection(
            dtls, address=address, connection_id=connection_id, expected_peer_identity=peer_identity
        )
        protection._update(now)  # the ClientHello
        self._register(protection)
        return protection

    def datagrams_to_send(self, now: int) -> list[tuple[bytes, Address]]:
        """HelloVerifyRequests answered without keeping state."""
        outgoing, self._outgoing = self._outgoing, []
        return outgoing

    def forget(self, protection: Protection) -> None:
        """Drop the routes of a connection the endpoint no longer has."""
        if not isinstance(protection, DtlsProtection):
            return
        if self._by_id.get(protection.connection_id) is protection:
            del self._by_id[protection.connection_id]
        if self._by_address.get(protection.address) is protection:
            del self._by_address[protection.address]
        cid = protection.dtls.configuration.connection_id
        if cid and self._by_cid.get(cid) is protection:
            del self._by_cid[cid]

    # -- internals ------------------------------------------------------------

    def _register(self, protection: DtlsProtection) -> None:
        self._by_id[protection.connection_id] = protection
        self._by_address[protection.address] = protection
        cid = protection.dtls.configuration.connection_id
        if cid and len(cid) == self.connection_id_bytes:
            self._by_cid[cid] = protection

    def _fresh_cid(self) -> bytes:
        while True:
            cid = os.urandom(self.connection_id_bytes)
            if cid not in self._by_cid:
                return cid


def _local_identity(
    server: DTLSConfiguration | None, client: DTLSConfiguration | None
) -> bytes | None:
    if server is not None:
        default = server.certificates().select(None)
        if default is not None:
            return subject_public_key_info(default[0][0])
    if client is not None and client.certificate_chain:
        return subject_public_key_info(client.certificate_chain[0])
    return None
