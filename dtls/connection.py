"""One DTLS 1.2 association with one peer, sans-IO.

Theory of operation
-------------------
Bytes come in through ``receive_datagram(data, addr, now)`` and leave through
``datagrams_to_send(now)``; time only moves through ``handle_timer(now)``.

*Records.*  Each epoch has its own read protection and replay window.  Records
of an epoch we have no keys for yet (the peer's Finished overtaking its
ChangeCipherSpec) are parked, a few at most, and replayed once the keys exist.
Records that fail authentication are dropped silently (RFC 6347 4.1.2.7) and
counted in ``dropped_records``.

*Handshake.*  Fragments go through a :class:`HandshakeReassembler`, which
hands out whole messages strictly in ``message_seq`` order, so the state
machine below sees a TLS-like message stream.  The transcript holds each
message in its unfragmented DTLS form (12-byte header with offset 0), without
the first ClientHello and the HelloVerifyRequest (RFC 6347 4.2.6).

*Flights.*  Everything we send during the handshake belongs to the current
flight (RFC 6347 4.2.4).  A flight that expects an answer arms the retransmit
timer: 1 s, doubling up to 60 s, at most 6 times; the overall handshake
deadline (default 60 s) bounds everything.  The last flight of a handshake is
kept and resent whenever the peer repeats its own previous flight (a message
with an old ``message_seq`` arrives).

Client states (full):  START -> WAIT_HELLO (HelloVerifyRequest loops here)
-> WAIT_SERVER_DONE -> WAIT_FINISHED -> ESTABLISHED.  Abbreviated (session id
or ticket): WAIT_HELLO -> WAIT_FINISHED -> ESTABLISHED (we send the last flight).
Server states: WAIT_HELLO -> WAIT_CLIENT_FLIGHT -> ESTABLISHED, or abbreviated
WAIT_HELLO -> WAIT_FINISHED -> ESTABLISHED.
"""

from __future__ import annotations

import logging
import os
import struct
from collections import deque
from collections.abc import Hashable
from dataclasses import dataclass
from enum import Enum

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

from . import handshake as hs
from .config import CertificatePrivateKey, DTLSConfiguration
from .cookie import CookieGenerator
from .errors import (
    AlertDescription,
    AlertError,
    AlertLevel,
    DecodeError,
    DecryptError,
    LocalProtocolError,
)
from .events import (
    ApplicationDataReceived,
    ConnectionTerminated,
    Event,
    HandshakeCompleted,
    PeerClosedWrite,
)
from .handshake import ExtensionType, HandshakeType
from .keyschedule import (
    derive_key_block,
    derive_master_secret,
    export_keying_material,
    finished_verify_data,
    transcript_hash,
)
from .primitives import (
    SUPPORTED_SIGNATURE_SCHEMES,
    KeyShare,
    choose_signature_scheme,
    load_peer_chain,
    sign,
    validate_chain,
    verify_signature,
)
from .protection import RecordProtection
from .reassembly import HandshakeMessage, HandshakeReassembler
from .records import (
    DTLS_1_0,
    DTLS_1_2,
    MAX_SEQUENCE_NUMBER,
    RECORD_HEADER_BYTES,
    ContentType,
    Record,
    ReplayWindow,
    decode_datagram,
    encode_record_header,
)
from .sessions import Session, SessionCache, TicketKeys
from .suites import (
    SUITE_PARAMETERS,
    CipherSuite,
    KeyExchange,
    NamedGroup,
    SrtpProfile,
    SuiteParameters,
)

__all__ = ["Address", "DTLSConnection", "HandshakeState", "ServerContext"]

logger = logging.getLogger(__name__)

# Curves of ECDSA certificates as supported_groups values (RFC 8422 5.1.1).
_CURVE_GROUPS = {"secp256r1": 23, "secp384r1": 24, "secp521r1": 25}
_RECORD_HEADER = struct.Struct("!BHHHIH")  # type, version, epoch, seq_hi16, seq_lo32, length

Address = Hashable
MAX_PARKED_RECORDS = 16
MAX_HELLO_VERIFY_REQUESTS = 4
TICKET_LIFETIME_HINT_SECONDS = 7200
RENEGOTIATION_SCSV = 0x00FF
CURVE_TYPE_NAMED = 3
EXPORTER_CHANNEL_BINDING_LABEL = b"EXPORTER-Channel-Binding"
# RFC 5705 4: labels the TLS key schedule itself uses may not be exported.
_RESERVED_EXPORTER_LABELS = (
    b"client finished",
    b"server finished",
    b"master secret",
    b"extended master secret",
    b"key expansion",
)


class HandshakeState(Enum):
    """Where the handshake stands (see the module docstring)."""

    CLIENT_START = "client start"
    CLIENT_WAIT_HELLO = "client wait hello"
    CLIENT_WAIT_SERVER_DONE = "client wait server hello done"
    CLIENT_WAIT_FINISHED = "client wait finished"
    SERVER_WAIT_HELLO = "server wait client hello"
    SERVER_WAIT_CLIENT_FLIGHT = "server wait client flight"
    SERVER_WAIT_FINISHED = "server wait finished"
    ESTABLISHED = "established"
    CLOSED = "closed"


class ServerContext:
    """State a server shares across its connections: cookies, session cache, ticket key."""

    def __init__(self) -> None:
        self.cookies = CookieGenerator()
        self.session_cache = SessionCache()
        self.ticket_keys = TicketKeys()


@dataclass(slots=True)
class _FlightItem:
    content_type: int
    epoch: int
    data: bytes


def _u16_list_or_none(extensions: hs.Extensions, ext_type: int) -> list[int] | None:
    body = hs.find_extension(extensions, ext_type)
    return None if body is None else hs.decode_uint16_list(body)


class DTLSConnection:
    """A DTLS 1.2 client or server connection with one peer."""

    def __init__(
        self,
        configuration: DTLSConfiguration,
        *,
        address: Address = None,
        peer_id: int = 0,
        server_context: ServerContext | None = None,
    ) -> None:
        self.configuration = configuration
        self.address = address
        self.peer_id = peer_id
        self.is_client = configuration.is_client
        self._server_context = server_context if server_context is not None else ServerContext()
        self._state = (
            HandshakeState.CLIENT_START if self.is_client else HandshakeState.SERVER_WAIT_HELLO
        )
        # record layer
        self._read: dict[int, RecordProtection | None] = {0: None}
        self._replay: dict[int, ReplayWindow] = {0: ReplayWindow()}
        self._write: dict[int, RecordProtection | None] = {0: None}
        self._write_epoch = 0
        self._send_sequence: dict[int, int] = {0: 0}
        self._parked: list[tuple[Record, Address]] = []
        self._pending_read: RecordProtection | None = None
        self._pending_write: RecordProtection | None = None
        self.local_connection_id: bytes = configuration.connection_id or b""
        self.peer_connection_id: bytes = b""
        # handshake
        self._reassembler = HandshakeReassembler()
        self._send_message_seq = 0
        self._transcript = bytearray()
        self._flight: list[_FlightItem] = []
        self._flight_expects_reply = False
        self._retransmit_deadline: int | None = None
        self._retransmit_interval_ns = configuration.initial_retransmit_ns
        self._retransmissions = 0
        self._handshake_deadline: int | None = None
        self._resent_this_datagram = False
        self._hello_verify_count = 0
        self._client_hello: hs.ClientHello | None = None
        self._key_share: KeyShare | None = None
        self._peer_key_share: tuple[NamedGroup, bytes] | None = None
        self._psk_identity_hint = b""
        self._server_certificate_seen = False
        self._server_key_exchange_seen = False
        self._certificate_requested: hs.CertificateRequest | None = None
        self._client_certificate_sent = False
        self._expect_certificate_verify = False
        self._expect_client_certificate = False
        self._client_key_exchange_seen = False
        self._expect_new_session_ticket = False
        self._issue_ticket = False
        self._resuming = False
        self._offered_session_id = b""
        self._current_record_sequence = 0
        self._last_receive_ns = 0
        self._selected_certificate: (
            tuple[tuple[x509.Certificate, ...], CertificatePrivateKey] | None
        ) = None
        # negotiated
        self.cipher_suite: CipherSuite | None = None
        self._suite: SuiteParameters | None = None
        self.client_random = b""
        self.server_random = b""
        self.session_id = b""
        self._master_secret = b""
        self.extended_master_secret = False
        self.alpn_protocol: str | None = None
        self.srtp_profile: SrtpProfile | None = None
        self.server_name: str | None = configuration.server_name if self.is_client else None
        self.peer_certificates: tuple[x509.Certificate, ...] = ()
        self.peer_certificate_errors: tuple[str, ...] = ()
        self.psk_identity: bytes | None = None
        self.session: Session | None = None
        self.session_resumed = False
        self._client_finished = b""
        self._new_ticket = b""
        # application side
        self._outgoing: list[bytes] = []
        self._events: deque[Event] = deque()
        self._application_queue: deque[bytes] = deque()
        self._pending_send: list[bytes] = []
        self._direct_receive: list[bytes] | None = None  # set while open_datagram runs
        self._write_closed = False
        self._read_closed = False
        self.peer_closed = False
        self.terminated_reason: str | None = None
        self.dropped_records = 0
        self.dropped_application_datagrams = 0

    # ------------------------------------------------------------------ public surface

    @property
    def state(self) -> HandshakeState:
        """Current handshake state."""
        return self._state

    @property
    def is_established(self) -> bool:
        """True once the handshake completed (and until the connection is closed)."""
        return self._state is HandshakeState.ESTABLISHED

    @property
    def negotiated_version(self) -> str | None:
        """``"DTLSv1.2"`` once a ServerHello was exchanged."""
        return "DTLSv1.2" if self.cipher_suite is not None else None

    @property
    def cipher_suite_name(self) -> str | None:
        """IANA name of the negotiated cipher suite."""
        return None if self.cipher_suite is None else self.cipher_suite.name

    @property
    def max_application_payload(self) -> int:
        """Largest datagram ``send()`` can protect without exceeding the configured MTU.

        Larger ones (up to 2^14 bytes) are still sent, as one record the IP layer fragments.
        """
        epoch = self._write_epoch
        overhead = self._record_overhead(epoch) if epoch else RECORD_HEADER_BYTES + 24
        return max(0, self.configuration.mtu - overhead)

    @property
    def record_overhead(self) -> int:
        """Bytes one protected record adds to its plaintext in the current write epoch.

        Header, explicit nonce, AEAD tag and (RFC 9146) the connection id with its
        inner content-type byte: 37 for AES-GCM, 29 for ChaCha20-Poly1305, plus
        ``len(cid) + 1`` with a peer connection id.  Before the handshake it is the
        plaintext header alone.
        """
        return self._record_overhead(self._write_epoch)

    def start_handshake(self, now: int) -> None:
        """Client: send the first ClientHello.  Servers wait for one; calling this is harmless."""
        if not self.is_client or self._state is not HandshakeState.CLIENT_START:
            return
        self._handshake_deadline = now + self.configuration.handshake_timeout_ns
        self._send_client_hello(cookie=b"", now=now)
        self._state = HandshakeState.CLIENT_WAIT_HELLO

    def handshake(self, now: int) -> None:
        """Explicit handshake start (the same as :meth:`start_handshake`).

        Optional: ``send()`` before the handshake queues data, and a server needs
        nothing but the client's datagrams.  Completion is the ``HandshakeCompleted``
        event (the asyncio adapter's ``await handshake()`` waits for it).
        """
        self.start_handshake(now)

    def receive_datagram(self, data: bytes, addr: Address, now: int) -> None:
        """Process one datagram from the peer; never raises for bad input."""
        if self._state is HandshakeState.CLOSED:
            return
        if self._handshake_deadline is None and self._state is HandshakeState.SERVER_WAIT_HELLO:
            self._handshake_deadline = now + self.configuration.handshake_timeout_ns
        if (
            self._state is HandshakeState.ESTABLISHED
            and not self.local_connection_id
            and len(data) > RECORD_HEADER_BYTES
            and data[0] == ContentType.application_data
            and self._receive_application_fast(data, now)
        ):
            return
        records, junk = decode_datagram(data, len(self.local_connection_id))
        if junk:
            self.dropped_records += 1
        self._resent_this_datagram = False
        for record in records:
            if self._is_closed():
                break
            self._handle_record(record, addr, now)
        while self._parked and not self._is_closed() and self._parked[0][0].epoch in self._read:
            parked, self._parked = self._parked, []
            for record, source in parked:
                if not self._is_closed():
                    self._handle_record(record, source, now)

    def open_datagram(self, data: bytes, addr: Address, now: int) -> list[bytes]:
        """Process one datagram like :meth:`receive_datagram`; return its application data.

        The application records the datagram carried come back here, in order,
        instead of going to the receive queue (no ``ApplicationDataReceived``).
        For callers that hand each datagram's payload straight to a protocol of
        their own; handshake, alerts and timers work exactly as with
        :meth:`receive_datagram`, and it never raises for bad input either.
        """
        received: list[bytes] = []
        self._direct_receive = received
        try:
            self.receive_datagram(data, addr, now)
        finally:
            self._direct_receive = None
        return received

    def _receive_application_fast(self, data: bytes, now: int) -> bool:
        """One protected application-data record filling the datagram: the bulk case.

        Returns False to fall back to the general path (anything unusual).
        """
        _, version, epoch, sequence_hi, sequence_lo, length = _RECORD_HEADER.unpack_from(data)
        if length != len(data) - RECORD_HEADER_BYTES or version >> 8 != 0xFE:
            return False
        protection = self._read.get(epoch)
        if protection is None:
            return False
        sequence_number = (sequence_hi << 32) | sequence_lo
        window = self._replay[epoch]
        if not window.is_fresh(sequence_number):
            self.dropped_records += 1
            return True
        try:
            plaintext = protection.open_plain(
                ContentType.application_data,
                version,
                epoch,
                sequence_number,
                data[RECORD_HEADER_BYTES:],
            )
        except DecryptError:
            self.dropped_records += 1
            return True
        window.mark(sequence_number)
        self._last_receive_ns = now
        self._handle_application_data(plaintext, epoch)
        return True

    def datagrams_to_send(self, now: int) -> list[tuple[bytes, Address]]:
        """Datagrams to put on the wire now, with their destination."""
        out = [(datagram, self.address) for datagram in self._outgoing]
        self._outgoing = []
        return out

    def get_timer(self) -> int | None:
        """Absolute deadline (ns) at which ``handle_timer`` must be called, or None."""
        if self._state is HandshakeState.ESTABLISHED:
            idle = self.configuration.idle_timeout_ns
            return None if idle is None else self._last_receive_ns + idle
        if self._state is HandshakeState.CLOSED:
            return None
        candidates = [t for t in (self._retransmit_deadline, self._handshake_deadline) if t]
        return min(candidates) if candidates else None

    def handle_timer(self, now: int) -> None:
        """Retransmit the flight or give up, as the deadlines say."""
        if self._state is HandshakeState.ESTABLISHED:
            idle = self.configuration.idle_timeout_ns
            if idle is not None and now >= self._last_receive_ns + idle:
                self._terminate("idle timeout")
            return
        if self._state is HandshakeState.CLOSED:
            return
        if self._handshake_deadline is not None and now >= self._handshake_deadline:
            self._terminate("handshake timeout")
            return
        if self._retransmit_deadline is not None and now >= self._retransmit_deadline:
            if self._retransmissions >= self.configuration.max_retransmissions:
                self._terminate("handshake timeout: retransmissions exhausted")
                return
            self._retransmissions += 1
            self._retransmit_interval_ns = min(
                2 * self._retransmit_interval_ns, self.configuration.max_retransmit_ns
            )
            logger.debug("retransmitting flight (%d)", self._retransmissions)
            self._emit_flight()
            self._retransmit_deadline = now + self._retransmit_interval_ns

    def next_event(self) -> Event | None:
        """Pop the next event, or None."""
        return self._events.popleft() if self._events else None

    def send(self, data: bytes) -> None:
        """Queue one application datagram (sent right away once established)."""
        if self._write_closed or self._state is HandshakeState.CLOSED:
            raise LocalProtocolError("connection is closed for writing")
        if len(data) > 16384:
            raise LocalProtocolError("application datagram larger than 2^14 bytes")
        if self._state is not HandshakeState.ESTABLISHED:
            if len(self._pending_send) >= self.configuration.application_queue_datagrams:
                raise LocalProtocolError("too much data queued before the handshake finished")
            self._pending_send.append(bytes(data))
            return
        self._outgoing.append(self.seal_application_data(data))

    def seal_application_data(self, data: bytes) -> bytes:
        """Protect one application datagram as one record and return it, queueing nothing.

        For callers that schedule their own datagrams (a transport carrying one
        packet per record): the record goes wherever the caller sends it.  Only
        once established; :meth:`send` is the queueing form.
        """
        if self._state is not HandshakeState.ESTABLISHED or self._write_closed:
            raise LocalProtocolError("application data needs an established, writable connection")
        if len(data) > 16384:
            raise LocalProtocolError("application datagram larger than 2^14 bytes")
        epoch = self._write_epoch
        protection = self._write[epoch]
        if protection is None or self.peer_connection_id:
            return self._seal(ContentType.application_data, epoch, data)
        sequence_number = self._send_sequence[epoch]
        if sequence_number > MAX_SEQUENCE_NUMBER:
            raise LocalProtocolError("sequence numbers of this epoch are used up")
        self._send_sequence[epoch] = sequence_number + 1
        return protection.seal_plain(ContentType.application_data, sequence_number, data)

    def receive(self) -> bytes | None:
        """Next received application datagram, or None when the queue is empty."""
        return self._application_queue.popleft() if self._application_queue else None

    def pending(self) -> int:
        """Number of received application datagrams waiting in the queue."""
        return len(self._application_queue)

    def close(self) -> None:
        """Send close_notify (if the handshake finished) and stop."""
        self.shutdown(read=True, write=True)

    def shutdown(self, *, read: bool, write: bool) -> None:
        """Close one or both directions; closing the write side sends close_notify."""
        if write and not self._write_closed:
            self._write_closed = True
            if self._state is HandshakeState.ESTABLISHED:
                self._send_alert(AlertLevel.WARNING, AlertDescription.close_notify)
        if read:
            self._read_closed = True
        if self._state is not HandshakeState.ESTABLISHED or (
            self._write_closed and (self._read_closed or self.peer_closed)
        ):
            self._terminate("closed")

    def key_log_line(self) -> str | None:
        """NSS key-log line (``CLIENT_RANDOM <random> <master secret>``) for Wireshark.

        None until the master secret exists.  Anyone holding it can decrypt the
        session: write it only where the user asked for it (SSLKEYLOGFILE).
        """
        if not self._master_secret:
            return None
        return f"CLIENT_RANDOM {self.client_random.hex()} {self._master_secret.hex()}"

    def abort(self, reason: str = "aborted") -> None:
        """End the connection at once, sending nothing (no close_notify)."""
        self._terminate(reason)

    def export_keying_material(
        self, label: bytes | str, context: bytes | None, length: int
    ) -> bytes:
        """RFC 5705 exporter (for DTLS-SRTP use label ``EXTRACTOR-dtls_srtp``, no context)."""
        if not self._master_secret or self._suite is None:
            raise LocalProtocolError("no keys to export before the handshake completes")
        label_bytes = label.encode() if isinstance(label, str) else label
        if label_bytes in _RESERVED_EXPORTER_LABELS:
            raise LocalProtocolError("that label is reserved by the TLS key schedule")
        return export_keying_material(
            self._suite.hash_name,
            self._master_secret,
            client_random=self.client_random,
            server_random=self.server_random,
            label=label_bytes,
            context=context,
            length=length,
        )

    def channel_binding(self, binding_type: str = "tls-exporter") -> bytes:
        """Channel binding data: ``tls-exporter`` (RFC 9266) or ``tls-unique`` (RFC 5929)."""
        if binding_type == "tls-exporter":
            return self.export_keying_material(EXPORTER_CHANNEL_BINDING_LABEL, b"", 32)
        if binding_type == "tls-unique":
            if not self._client_finished:
                raise LocalProtocolError("no Finished message yet")
            return self._client_finished
        raise LocalProtocolError(f"unknown channel binding {binding_type!r}")

    def _is_closed(self) -> bool:
        return self._state is HandshakeState.CLOSED

    # ------------------------------------------------------------------ record layer

    def _handle_record(self, record: Record, addr: Address, now: int) -> None:
        epoch = record.epoch
        if epoch not in self._read:
            if epoch == max(self._read) + 1 and len(self._parked) < MAX_PARKED_RECORDS:
                self._parked.append((record, addr))
            else:
                self.dropped_records += 1
            return
        window = self._replay[epoch]
        if not window.is_fresh(record.sequence_number):
            self.dropped_records += 1
            return
        protection = self._read[epoch]
        if protection is None:
            if record.content_type == ContentType.tls12_cid:
                self.dropped_records += 1
                return
            content_type, payload = record.content_type, record.payload
        else:
            try:
                content_type, payload = protection.open(record)
            except DecryptError:
                self.dropped_records += 1
                return
        window.mark(record.sequence_number)
        self._current_record_sequence = record.sequence_number
        if protection is not None or self._state is not HandshakeState.ESTABLISHED:
            self._last_receive_ns = now  # only authenticated traffic keeps a session alive
        if (
            protection is not None
            and addr != self.address
            and self.local_connection_id
            and window.highest == record.sequence_number
        ):
            # RFC 9146 6: an authenticated CID record from a new address moves the peer,
            # but only the newest one (a delayed older record must not move it back).
            logger.debug("peer %d moved from %r to %r", self.peer_id, self.address, addr)
            self.address = addr
        if (
            protection is None
            and self._state is HandshakeState.ESTABLISHED
            and (content_type != ContentType.handshake)
        ):
            # After the handshake, plaintext records other than a repeated handshake flight
            # are unauthenticated noise: they may not touch the protected session.
            self.dropped_records += 1
            return
        try:
            if content_type == ContentType.handshake:
                self._handle_handshake_record(payload, epoch, now)
            elif content_type == ContentType.application_data:
                self._handle_application_data(payload, epoch)
            elif content_type == ContentType.alert:
                self._handle_alert(payload)
            elif content_type == ContentType.change_cipher_spec:
                # Keys switch on our own schedule (section 2 of SPEC-DTLS.md), so the record
                # carries no decision; a malformed one is only counted.
                if payload != b"\x01":
                    self.dropped_records += 1
            else:
                self.dropped_records += 1
        except AlertError as error:
            self._fail(error)
        except DecodeError as error:
            self._fail(AlertError(AlertDescription.decode_error, str(error)))

    def _seal(self, content_type: int, epoch: int, payload: bytes) -> bytes:
        sequence_number = self._send_sequence[epoch]
        if sequence_number > MAX_SEQUENCE_NUMBER:
            raise LocalProtocolError("sequence numbers of this epoch are used up")
        self._send_sequence[epoch] = sequence_number + 1
        protection = self._write[epoch]
        if protection is None:
            version = DTLS_1_0 if (self.is_client and self.cipher_suite is None) else DTLS_1_2
            return (
                encode_record_header(content_type, version, epoch, sequence_number, len(payload))
                + payload
            )
        return protection.seal(
            content_type, DTLS_1_2, sequence_number, payload, self.peer_connection_id
        )

    def _record_overhead(self, epoch: int) -> int:
        protection = self._write.get(epoch)
        if protection is None:
            return RECORD_HEADER_BYTES
        extra = len(self.peer_connection_id) + 1 if self.peer_connection_id else 0
        return RECORD_HEADER_BYTES + protection.overhead + extra

    def _install_read_keys(self, now: int) -> None:
        assert self._pending_read is not None
        epoch = self._pending_read.epoch
        self._read[epoch] = self._pending_read
        self._replay[epoch] = ReplayWindow(self.configuration.replay_window_records)
        # Parked records are replayed by receive_datagram once the current datagram is done,
        # never from inside message processing: a parked Finished must not overtake messages
        # that the reassembler already released to the loop that is running now.

    def _activate_write_keys(self) -> None:
        assert self._pending_write is not None
        epoch = self._pending_write.epoch
        self._write[epoch] = self._pending_write
        self._send_sequence[epoch] = 0
        self._write_epoch = epoch

    # ------------------------------------------------------------------ flights

    def _new_flight(self) -> None:
        self._flight = []

    def _queue_handshake(self, msg_type: HandshakeType, body: bytes) -> None:
        message = hs.encode_handshake(msg_type, self._send_message_seq, body)
        self._send_message_seq += 1
        self._transcript += message
        self._flight.append(_FlightItem(ContentType.handshake, self._write_epoch, message))

    def _queue_change_cipher_spec(self) -> None:
        self._flight.append(_FlightItem(ContentType.change_cipher_spec, self._write_epoch, b"\x01"))
        self._activate_write_keys()

    def _send_flight(self, now: int, *, expects_reply: bool) -> None:
        self._flight_expects_reply = expects_reply
        self._retransmissions = 0
        self._retransmit_interval_ns = self.configuration.initial_retransmit_ns
        self._retransmit_deadline = now + self._retransmit_interval_ns if expects_reply else None
        self._emit_flight()

    def _emit_flight(self) -> None:
        mtu = self.configuration.mtu
        records: list[bytes] = []
        for item in self._flight:
            if item.content_type == ContentType.handshake:
                room = mtu - self._record_overhead(item.epoch) - hs.HANDSHAKE_HEADER_BYTES
                for fragment in hs.fragment_handshake(item.data, max(room, 16)):
                    records.append(self._seal(ContentType.handshake, item.epoch, fragment))
            else:
                records.append(self._seal(item.content_type, item.epoch, item.data))
        datagram = b""
        for record in records:
            if datagram and len(datagram) + len(record) > mtu:
                self._outgoing.append(datagram)
                datagram = b""
            datagram += record
        if datagram:
            self._outgoing.append(datagram)

    def _resend_on_peer_repeat(self) -> None:
        # RFC 6347 4.2.4: a repeated peer flight means our answer was lost; send it again.
        # Once established, only the side that sent the handshake's last flight answers:
        # the other side answering too would make two finished peers ping-pong forever.
        if self._state is HandshakeState.ESTABLISHED and self._flight_expects_reply:
            return
        if self._flight and not self._resent_this_datagram:
            self._resent_this_datagram = True
            logger.debug("peer repeated its flight; resending ours")
            self._emit_flight()

    # ------------------------------------------------------------------ alerts and closing

    def _send_alert(self, level: AlertLevel, description: AlertDescription) -> None:
        self._outgoing.append(
            self._seal(ContentType.alert, self._write_epoch, bytes((level, description)))
        )

    def _fail(self, error: AlertError) -> None:
        logger.debug("connection %d failed: %s", self.peer_id, error)
        if not error.received and self._state is not HandshakeState.CLOSED:
            self._send_alert(AlertLevel.FATAL, error.description)
        self._terminate(str(error), alert=error.description, alert_received=error.received)

    def _terminate(
        self, reason: str, *, alert: AlertDescription | None = None, alert_received: bool = False
    ) -> None:
        if self._state is HandshakeState.CLOSED:
            return
        self._state = HandshakeState.CLOSED
        self.terminated_reason = reason
        self._retransmit_deadline = None
        self._handshake_deadline = None
        self._events.append(
            ConnectionTerminated(
                peer=self.peer_id, reason=reason, alert=alert, alert_received=alert_received
            )
        )

    def _handle_alert(self, payload: bytes) -> None:
        if len(payload) != 2:
            raise AlertError(AlertDescription.decode_error, "bad alert")
        level, description_value = payload[0], payload[1]
        try:
            description = AlertDescription(description_value)
        except ValueError:
            description = AlertDescription.internal_error
        if description == AlertDescription.close_notify:
            if self._state is not HandshakeState.ESTABLISHED:
                self._terminate("peer closed during handshake", alert=description)
                return
            if not self.peer_closed:
                self.peer_closed = True
                self._events.append(PeerClosedWrite(peer=self.peer_id))
            if self._write_closed:
                self._terminate("closed")
            return
        if level == AlertLevel.FATAL or self._state is not HandshakeState.ESTABLISHED:
            raise AlertError(description, "received from peer", received=True)
        logger.debug("warning alert from peer: %s", description.name)

    def _handle_application_data(self, payload: bytes, epoch: int) -> None:
        if epoch == 0 or self._state is not HandshakeState.ESTABLISHED:
            self.dropped_records += 1
            return
        if self._read_closed or self.peer_closed:
            return
        direct = self._direct_receive
        if direct is not None:
            direct.append(payload)
            return
        if len(self._application_queue) >= self.configuration.application_queue_datagrams:
            self.dropped_application_datagrams += 1
            return
        self._application_queue.append(payload)
        if len(self._application_queue) == 1:
            self._events.append(ApplicationDataReceived(peer=self.peer_id))

    # ------------------------------------------------------------------ handshake dispatch

    def _handle_handshake_record(self, payload: bytes, epoch: int, now: int) -> None:
        try:
            fragments = hs.decode_handshake_fragments(payload)
        except DecodeError:
            self.dropped_records += 1  # framing is not authenticated in epoch 0: just drop
            return
        for fragment in fragments:
            if self._state is HandshakeState.CLOSED:
                return
            if (
                self._state is HandshakeState.SERVER_WAIT_HELLO
                and fragment.msg_type == HandshakeType.client_hello
                and fragment.message_seq != self._reassembler.next_seq
            ):
                # Before the cookie checks out we keep no handshake state: take the hello's
                # numbering as it comes (a repeat after a lost HelloVerifyRequest, or the
                # second hello when an endpoint did the stateless exchange for us).
                self._reassembler = HandshakeReassembler(fragment.message_seq)
            if fragment.message_seq < self._reassembler.next_seq:
                self._resend_on_peer_repeat()
                continue
            if self._state is HandshakeState.ESTABLISHED:
                # A new handshake after ours finished: renegotiation, which we refuse.
                if fragment.msg_type in (HandshakeType.client_hello, HandshakeType.hello_request):
                    self._send_alert(AlertLevel.WARNING, AlertDescription.no_renegotiation)
                continue
            is_finished = fragment.msg_type == HandshakeType.finished
            if is_finished != (epoch > 0):
                self.dropped_records += 1  # Finished must be protected, nothing else may be
                continue
            try:
                if not self._reassembler.add(fragment):
                    continue
            except DecodeError:
                # Contradicts earlier fragments or exceeds our bounds: drop this one only.
                self.dropped_records += 1
                continue
            for message in self._reassembler.pop_ready():
                if self._is_closed():
                    return
                self._handle_message(message, now)

    def _handle_message(self, message: HandshakeMessage, now: int) -> None:
        msg_type = message.msg_type
        state = self._state
        # The retransmit timer keeps running until we send our next flight or finish: if
        # part of the peer's flight is lost, our repeat makes the peer send it all again.
        transcript_before = bytes(self._transcript)
        if msg_type not in (HandshakeType.hello_verify_request,):
            self._transcript += hs.encode_handshake(msg_type, message.message_seq, message.body)
        if state is HandshakeState.CLIENT_WAIT_HELLO:
            if msg_type == HandshakeType.hello_verify_request:
                self._client_handle_hello_verify(message.body, now)
            elif msg_type == HandshakeType.server_hello:
                self._client_handle_server_hello(message.body, now)
            else:
                raise AlertError(AlertDescription.unexpected_message, f"{msg_type} before hello")
        elif state is HandshakeState.CLIENT_WAIT_SERVER_DONE:
            self._client_handle_server_flight(msg_type, message.body, now)
        elif state is HandshakeState.CLIENT_WAIT_FINISHED:
            if msg_type == HandshakeType.new_session_ticket and self._expect_new_session_ticket:
                ticket = hs.decode_new_session_ticket(message.body)
                self._new_ticket = ticket.ticket
                self._expect_new_session_ticket = False
            elif msg_type == HandshakeType.finished:
                self._check_finished(message.body, transcript_before, from_client=False)
                if self._resuming:
                    self._new_flight()
                    self._queue_change_cipher_spec()
                    self._queue_finished()
                    self._send_flight(now, expects_reply=False)
                self._complete_handshake()
            else:
                raise AlertError(AlertDescription.unexpected_message, "expected Finished")
        elif state is HandshakeState.SERVER_WAIT_HELLO:
            if msg_type != HandshakeType.client_hello:
                raise AlertError(AlertDescription.unexpected_message, "expected ClientHello")
            self._server_handle_client_hello(message, now)
        elif state is HandshakeState.SERVER_WAIT_CLIENT_FLIGHT:
            self._server_handle_client_flight(msg_type, message.body, transcript_before, now)
        elif state is HandshakeState.SERVER_WAIT_FINISHED:
            if msg_type != HandshakeType.finished:
                raise AlertError(AlertDescription.unexpected_message, "expected Finished")
            self._check_finished(message.body, transcript_before, from_client=True)
            self._complete_handshake()
        else:
            raise AlertError(AlertDescription.unexpected_message, "handshake message out of place")

    # ------------------------------------------------------------------ client side

    def _offered_suites(self) -> list[CipherSuite]:
        """With a PSK configured we offer only PSK suites, otherwise only certificate ones."""
        has_psk = self.configuration.psk is not None
        return [
            suite
            for suite in self.configuration.cipher_suites
            if (SUITE_PARAMETERS[suite].key_exchange in (KeyExchange.PSK, KeyExchange.ECDHE_PSK))
            == has_psk
        ]

    def _send_client_hello(self, *, cookie: bytes, now: int) -> None:
        config = self.configuration
        if self._client_hello is None:
            self.client_random = os.urandom(32)
            session_id = b""
            extensions: hs.Extensions = []
            if config.server_name and not _is_ip_address(config.server_name):
                extensions.append(
                    (ExtensionType.server_name, hs.encode_server_name(config.server_name))
                )
            extensions += [
                (ExtensionType.supported_groups, hs.encode_uint16_list(list(config.groups))),
                (ExtensionType.ec_point_formats, hs.encode_opaque8(b"\x00")),
                (
                    ExtensionType.signature_algorithms,
                    hs.encode_uint16_list(list(SUPPORTED_SIGNATURE_SCHEMES)),
                ),
                (ExtensionType.extended_master_secret, b""),
                (ExtensionType.renegotiation_info, hs.encode_opaque8(b"")),
            ]
            if config.alpn_protocols:
                extensions.append(
                    (
                        ExtensionType.application_layer_protocol_negotiation,
                        hs.encode_alpn(config.alpn_protocols),
                    )
                )
            if config.srtp_profiles:
                extensions.append(
                    (ExtensionType.use_srtp, hs.encode_use_srtp(config.srtp_profiles))
                )
            if config.connection_id is not None:
                extensions.append(
                    (ExtensionType.connection_id, hs.encode_opaque8(config.connection_id))
                )
            session = config.session
            if config.session_tickets:
                ticket = session.ticket if session is not None else b""
                extensions.append((ExtensionType.session_ticket, ticket))
            if session is not None:
                session_id = session.session_id or os.urandom(32)
            self._offered_session_id = session_id
            self._client_hello = hs.ClientHello(
                client_version=DTLS_1_2,
                random=self.client_random,
                session_id=session_id,
                cookie=b"",
                cipher_suites=[int(suite) for suite in self._offered_suites()],
                compression_methods=b"\x00",
                extensions=extensions,
            )
        hello = hs.ClientHello(
            client_version=self._client_hello.client_version,
            random=self._client_hello.random,
            session_id=self._client_hello.session_id,
            cookie=cookie,
            cipher_suites=self._client_hello.cipher_suites,
            compression_methods=self._client_hello.compression_methods,
            extensions=self._client_hello.extensions,
        )
        self._transcript = bytearray()
        self._new_flight()
        self._queue_handshake(HandshakeType.client_hello, hs.encode_client_hello(hello))
        self._send_flight(now, expects_reply=True)

    def _client_handle_hello_verify(self, body: bytes, now: int) -> None:
        request = hs.decode_hello_verify_request(body)
        self._hello_verify_count += 1
        if self._hello_verify_count > MAX_HELLO_VERIFY_REQUESTS:
            raise AlertError(AlertDescription.unexpected_message, "too many HelloVerifyRequests")
        # Some servers restart epoch-0 record numbers after the stateless exchange.
        self._replay[0] = ReplayWindow()
        self._send_client_hello(cookie=request.cookie, now=now)

    def _client_handle_server_hello(self, body: bytes, now: int) -> None:
        config = self.configuration
        hello = hs.decode_server_hello(body)
        if hello.server_version != DTLS_1_2:
            raise AlertError(AlertDescription.protocol_version, "server did not pick DTLS 1.2")
        assert self._client_hello is not None
        if hello.cipher_suite not in self._client_hello.cipher_suites:
            raise AlertError(AlertDescription.illegal_parameter, "suite we did not offer")
        if hello.compression_method != 0:
            raise AlertError(AlertDescription.illegal_parameter, "compression")
        offered = {ext_type for ext_type, _ in self._client_hello.extensions}
        for ext_type, _ in hello.extensions:
            if ext_type not in offered:
                raise AlertError(AlertDescription.unsupported_extension, f"extension {ext_type}")
        self.cipher_suite = CipherSuite(hello.cipher_suite)
        self._suite = SUITE_PARAMETERS[self.cipher_suite]
        self.server_random = hello.random
        self.session_id = hello.session_id
        extensions = hello.extensions
        renegotiation = hs.find_extension(extensions, ExtensionType.renegotiation_info)
        if renegotiation is not None and hs.decode_opaque8(renegotiation) != b"":
            raise AlertError(AlertDescription.handshake_failure, "bad renegotiation_info")
        self.extended_master_secret = (
            hs.find_extension(extensions, ExtensionType.extended_master_secret) is not None
        )
        if config.require_extended_master_secret and not self.extended_master_secret:
            raise AlertError(AlertDescription.handshake_failure, "extended master secret needed")
        alpn = hs.find_extension(extensions, ExtensionType.application_layer_protocol_negotiation)
        if alpn is not None:
            names = hs.decode_alpn(alpn)
            if len(names) != 1 or names[0] not in config.alpn_protocols:
                raise AlertError(AlertDescription.illegal_parameter, "bad ALPN answer")
            self.alpn_protocol = names[0]
        srtp = hs.find_extension(extensions, ExtensionType.use_srtp)
        if srtp is not None:
            profiles, _ = hs.decode_use_srtp(srtp)
            if len(profiles) != 1 or profiles[0] not in config.srtp_profiles:
                raise AlertError(AlertDescription.illegal_parameter, "bad use_srtp answer")
            self.srtp_profile = SrtpProfile(profiles[0])
        cid = hs.find_extension(extensions, ExtensionType.connection_id)
        if cid is not None:
            self.peer_connection_id = hs.decode_opaque8(cid)
        else:
            self.local_connection_id = b""
        self._expect_new_session_ticket = (
            hs.find_extension(extensions, ExtensionType.session_ticket) is not None
        )
        session = config.session
        if (
            session is not None
            and hello.session_id
            and hello.session_id == self._offered_session_id
        ):
            if session.cipher_suite != hello.cipher_suite:
                raise AlertError(AlertDescription.illegal_parameter, "resumed with another suite")
            if session.extended_master_secret != self.extended_master_secret:
                raise AlertError(AlertDescription.handshake_failure, "EMS mismatch on resumption")
            self._resuming = True
            self.session_resumed = True
            self._master_secret = session.master_secret
            self.peer_certificates = tuple(
                x509.load_der_x509_certificate(der) for der in session.peer_certificates
            )
            if self.alpn_protocol is None:
                self.alpn_protocol = session.alpn_protocol
            self._derive_keys(now)
            self._state = HandshakeState.CLIENT_WAIT_FINISHED
            return
        self._state = HandshakeState.CLIENT_WAIT_SERVER_DONE

    def _client_handle_server_flight(self, msg_type: int, body: bytes, now: int) -> None:
        assert self._suite is not None
        key_exchange = self._suite.key_exchange
        uses_certificate = key_exchange in (KeyExchange.ECDHE_ECDSA, KeyExchange.ECDHE_RSA)
        if msg_type == HandshakeType.certificate:
            if not uses_certificate or self._server_certificate_seen:
                raise AlertError(AlertDescription.unexpected_message, "unexpected Certificate")
            self._server_certificate_seen = True
            chain = load_peer_chain(hs.decode_certificate(body).certificates)
            if not chain:
                raise AlertError(AlertDescription.bad_certificate, "empty server certificate")
            self._check_peer_chain(chain, as_server=True)
        elif msg_type == HandshakeType.server_key_exchange:
            if self._server_key_exchange_seen or (
                uses_certificate and not self._server_certificate_seen
            ):
                raise AlertError(
                    AlertDescription.unexpected_message, "unexpected ServerKeyExchange"
                )
            self._server_key_exchange_seen = True
            self._client_read_server_key_exchange(body)
        elif msg_type == HandshakeType.certificate_request:
            if not uses_certificate or not self._server_key_exchange_seen:
                raise AlertError(
                    AlertDescription.unexpected_message, "unexpected CertificateRequest"
                )
            self._certificate_requested = hs.decode_certificate_request(body)
        elif msg_type == HandshakeType.server_hello_done:
            if body:
                raise AlertError(AlertDescription.decode_error, "ServerHelloDone with a body")
            needs_ske = key_exchange is not KeyExchange.PSK
            if (uses_certificate and not self._server_certificate_seen) or (
                needs_ske and not self._server_key_exchange_seen
            ):
                raise AlertError(AlertDescription.unexpected_message, "server flight incomplete")
            self._client_send_key_exchange_flight(now)
        else:
            raise AlertError(AlertDescription.unexpected_message, f"message {msg_type} in flight")

    def _client_read_server_key_exchange(self, body: bytes) -> None:
        assert self._suite is not None
        key_exchange = self._suite.key_exchange
        reader = hs.Reader(body)
        if key_exchange in (KeyExchange.PSK, KeyExchange.ECDHE_PSK):
            self._psk_identity_hint = reader.vector(2)
            if key_exchange is KeyExchange.PSK:
                reader.finish()
                return
        params_start = len(body) - reader.remaining()
        if reader.uint(1) != CURVE_TYPE_NAMED:
            raise AlertError(AlertDescription.illegal_parameter, "only named curves")
        group_value = reader.uint(2)
        if group_value not in self.configuration.groups:
            raise AlertError(AlertDescription.illegal_parameter, "group we did not offer")
        public = reader.vector(1, minimum=1)
        params = body[params_start : len(body) - reader.remaining()]
        self._peer_key_share = (NamedGroup(group_value), public)
        if key_exchange is KeyExchange.ECDHE_PSK:
            reader.finish()
            return
        scheme = reader.uint(2)
        signature = reader.vector(2)
        reader.finish()
        verify_signature(
            self.peer_certificates[0],
            scheme,
            signature,
            self.client_random + self.server_random + params,
        )

    def _client_send_key_exchange_flight(self, now: int) -> None:
        assert self._suite is not None
        config = self.configuration
        key_exchange = self._suite.key_exchange
        self._new_flight()
        signing_key: CertificatePrivateKey | None = None
        if self._certificate_requested is not None:
            chain: tuple[x509.Certificate, ...] = ()
            if config.private_key is not None and config.certificate_chain:
                chain = config.certificate_chain
                signing_key = config.private_key
            self._queue_handshake(
                HandshakeType.certificate,
                hs.encode_certificate(hs.Certificate(certificates=[_der(c) for c in chain])),
            )
        premaster, exchange_body = self._client_premaster(key_exchange)
        self._queue_handshake(HandshakeType.client_key_exchange, exchange_body)
        self._derive_master_secret(premaster, now)
        if signing_key is not None and self._certificate_requested is not None:
            scheme = choose_signature_scheme(
                signing_key, self._certificate_requested.signature_schemes
            )
            signature = sign(signing_key, scheme, bytes(self._transcript))
            self._queue_handshake(
                HandshakeType.certificate_verify,
                scheme.to_bytes(2, "big") + len(signature).to_bytes(2, "big") + signature,
            )
        self._queue_change_cipher_spec()
        self._queue_finished()
        self._send_flight(now, expects_reply=True)
        self._state = HandshakeState.CLIENT_WAIT_FINISHED

    def _client_premaster(self, key_exchange: KeyExchange) -> tuple[bytes, bytes]:
        config = self.configuration
        shared = b""
        public = b""
        if key_exchange is not KeyExchange.PSK:
            if self._peer_key_share is None:
                raise AlertError(AlertDescription.handshake_failure, "no server key share")
            group, peer_public = self._peer_key_share
            share = KeyShare(group)
            shared = share.exchange(peer_public)
            public = share.public_bytes
        if key_exchange in (KeyExchange.ECDHE_ECDSA, KeyExchange.ECDHE_RSA):
            return shared, bytes((len(public),)) + public
        if config.psk is None:
            raise AlertError(AlertDescription.handshake_failure, "PSK suite without a PSK")
        identity = config.psk_identity
        self.psk_identity = identity
        identity_field = len(identity).to_bytes(2, "big") + identity
        if key_exchange is KeyExchange.PSK:
            return _psk_premaster(bytes(len(config.psk)), config.psk), identity_field
        return _psk_premaster(shared, config.psk), identity_field + bytes((len(public),)) + public

    # ------------------------------------------------------------------ server side

    def _server_handle_client_hello(self, message: HandshakeMessage, now: int) -> None:
        hello = hs.decode_client_hello(message.body)
        config = self.configuration
        if config.cookie_exchange and not self._server_context.cookies.verify(
            self.address, hello, now
        ):
            # Stateless answer: forget this hello, keep waiting for one with our cookie.
            cookie = self._server_context.cookies.make(self.address, hello, now)
            self._outgoing.append(
                encode_hello_verify_datagram(
                    cookie, message_seq=message.message_seq, record_sequence=0
                )
            )
            self._transcript = bytearray()
            return
        if hello.client_version > DTLS_1_2:  # DTLS versions count downwards: FEFF is 1.0
            raise AlertError(AlertDescription.protocol_version, "client does not offer DTLS 1.2")
        if 0 not in hello.compression_methods:
            raise AlertError(AlertDescription.illegal_parameter, "no null compression")
        self._send_message_seq = message.message_seq
        # RFC 6347 4.2.1: continue the record numbering of the hello, so our flight does not
        # look like a replay of the stateless HelloVerifyRequest (which reused that number).
        self._send_sequence[0] = max(self._send_sequence[0], self._current_record_sequence)
        self.client_random = hello.random
        self.server_random = os.urandom(32)
        extensions = hello.extensions
        name_body = hs.find_extension(extensions, ExtensionType.server_name)
        self.server_name = hs.decode_server_name(name_body) if name_body is not None else None
        renegotiation = hs.find_extension(extensions, ExtensionType.renegotiation_info)
        if renegotiation is not None and hs.decode_opaque8(renegotiation) != b"":
            raise AlertError(AlertDescription.handshake_failure, "renegotiation_info not empty")
        secure_renegotiation = (
            renegotiation is not None or RENEGOTIATION_SCSV in hello.cipher_suites
        )
        self.extended_master_secret = (
            hs.find_extension(extensions, ExtensionType.extended_master_secret) is not None
        )
        if config.require_extended_master_secret and not self.extended_master_secret:
            raise AlertError(AlertDescription.handshake_failure, "extended master secret needed")
        groups = _u16_list_or_none(extensions, ExtensionType.supported_groups)
        schemes = _u16_list_or_none(extensions, ExtensionType.signature_algorithms)
        reply: hs.Extensions = []
        if secure_renegotiation:
            reply.append((ExtensionType.renegotiation_info, hs.encode_opaque8(b"")))
        if self.extended_master_secret:
            reply.append((ExtensionType.extended_master_secret, b""))
        alpn_body = hs.find_extension(
            extensions, ExtensionType.application_layer_protocol_negotiation
        )
        if alpn_body is not None and config.alpn_protocols:
            offered_protocols = hs.decode_alpn(alpn_body)
            chosen = next((p for p in config.alpn_protocols if p in offered_protocols), None)
            if chosen is None:
                raise AlertError(AlertDescription.no_application_protocol, "no common ALPN")
            self.alpn_protocol = chosen
            reply.append(
                (ExtensionType.application_layer_protocol_negotiation, hs.encode_alpn([chosen]))
            )
        srtp_body = hs.find_extension(extensions, ExtensionType.use_srtp)
        if srtp_body is not None and config.srtp_profiles:
            offered_profiles, _ = hs.decode_use_srtp(srtp_body)
            chosen_profile = next((p for p in config.srtp_profiles if p in offered_profiles), None)
            if chosen_profile is not None:
                self.srtp_profile = chosen_profile
                reply.append((ExtensionType.use_srtp, hs.encode_use_srtp([chosen_profile])))
        cid_body = hs.find_extension(extensions, ExtensionType.connection_id)
        if cid_body is not None and config.connection_id is not None:
            self.peer_connection_id = hs.decode_opaque8(cid_body)
            reply.append((ExtensionType.connection_id, hs.encode_opaque8(self.local_connection_id)))
        else:
            self.local_connection_id = b""
        ticket_body = hs.find_extension(extensions, ExtensionType.session_ticket)
        # Resumption: ticket first, then the session cache.
        session: Session | None = None
        if config.session_tickets and ticket_body:
            session = self._server_context.ticket_keys.open(ticket_body, hello.session_id)
        if session is None and hello.session_id:
            session = self._server_context.session_cache.get(hello.session_id)
        if session is not None and (
            session.cipher_suite not in hello.cipher_suites
            or session.cipher_suite not in config.cipher_suites
            or session.extended_master_secret != self.extended_master_secret
            or (session.server_name or None) != self.server_name
        ):
            session = None
        self._issue_ticket = config.session_tickets and ticket_body is not None and session is None
        if self._issue_ticket:
            reply.append((ExtensionType.session_ticket, b""))
        if session is not None:
            self._server_resume(hello, session, reply, now)
            return
        self.cipher_suite = self._server_choose_suite(hello, groups)
        self._suite = SUITE_PARAMETERS[self.cipher_suite]
        self.session_id = os.urandom(32)
        self._new_flight()
        self._queue_handshake(
            HandshakeType.server_hello,
            hs.encode_server_hello(
                hs.ServerHello(
                    server_version=DTLS_1_2,
                    random=self.server_random,
                    session_id=self.session_id,
                    cipher_suite=self.cipher_suite,
                    compression_method=0,
                    extensions=reply,
                )
            ),
        )
        key_exchange = self._suite.key_exchange
        if key_exchange in (KeyExchange.ECDHE_ECDSA, KeyExchange.ECDHE_RSA):
            assert self._selected_certificate is not None
            chain, private_key = self._selected_certificate
            self._queue_handshake(
                HandshakeType.certificate,
                hs.encode_certificate(hs.Certificate(certificates=[_der(c) for c in chain])),
            )
            group = self._server_choose_group(groups)
            self._key_share = KeyShare(group)
            params = (
                bytes((CURVE_TYPE_NAMED,))
                + int(group).to_bytes(2, "big")
                + bytes((len(self._key_share.public_bytes),))
                + self._key_share.public_bytes
            )
            scheme = choose_signature_scheme(private_key, schemes)
            signature = sign(private_key, scheme, self.client_random + self.server_random + params)
            self._queue_handshake(
                HandshakeType.server_key_exchange,
                params + scheme.to_bytes(2, "big") + len(signature).to_bytes(2, "big") + signature,
            )
            if config.request_client_certificate or config.require_client_certificate:
                request = hs.CertificateRequest(
                    certificate_types=bytes((64, 1)),  # ecdsa_sign, rsa_sign
                    signature_schemes=[int(s) for s in SUPPORTED_SIGNATURE_SCHEMES],
                    authorities=[c.subject.public_bytes() for c in config.ca_certificates or ()],
                )
                self._queue_handshake(
                    HandshakeType.certificate_request, hs.encode_certificate_request(request)
                )
                self._expect_client_certificate = True
        else:
            hint = config.psk_identity_hint
            if key_exchange is KeyExchange.ECDHE_PSK:
                group = self._server_choose_group(groups)
                self._key_share = KeyShare(group)
                self._queue_handshake(
                    HandshakeType.server_key_exchange,
                    len(hint).to_bytes(2, "big")
                    + hint
                    + bytes((CURVE_TYPE_NAMED,))
                    + int(group).to_bytes(2, "big")
                    + bytes((len(self._key_share.public_bytes),))
                    + self._key_share.public_bytes,
                )
            elif hint:
                self._queue_handshake(
                    HandshakeType.server_key_exchange, len(hint).to_bytes(2, "big") + hint
                )
        self._queue_handshake(HandshakeType.server_hello_done, b"")
        self._send_flight(now, expects_reply=True)
        self._state = HandshakeState.SERVER_WAIT_CLIENT_FLIGHT

    def _server_resume(
        self, hello: hs.ClientHello, session: Session, reply: hs.Extensions, now: int
    ) -> None:
        self._resuming = True
        self.session_resumed = True
        self.cipher_suite = CipherSuite(session.cipher_suite)
        self._suite = SUITE_PARAMETERS[self.cipher_suite]
        self.session_id = hello.session_id
        self._master_secret = session.master_secret
        self.peer_certificates = tuple(
            x509.load_der_x509_certificate(der) for der in session.peer_certificates
        )
        if self.alpn_protocol is None:
            self.alpn_protocol = session.alpn_protocol
        self.session = session
        self._new_flight()
        self._queue_handshake(
            HandshakeType.server_hello,
            hs.encode_server_hello(
                hs.ServerHello(
                    server_version=DTLS_1_2,
                    random=self.server_random,
                    session_id=self.session_id,
                    cipher_suite=self.cipher_suite,
                    compression_method=0,
                    extensions=reply,
                )
            ),
        )
        self._derive_keys(now)
        self._queue_change_cipher_spec()
        self._queue_finished()
        self._send_flight(now, expects_reply=True)
        self._state = HandshakeState.SERVER_WAIT_FINISHED

    def _server_choose_suite(self, hello: hs.ClientHello, groups: list[int] | None) -> CipherSuite:
        config = self.configuration
        certificates = config.certificates()
        have_psk = config.psk is not None or config.psk_lookup is not None
        have_group = groups is None or any(group in groups for group in config.groups)
        for suite in config.cipher_suites:
            if suite not in hello.cipher_suites:
                continue
            key_exchange = SUITE_PARAMETERS[suite].key_exchange
            if key_exchange is KeyExchange.PSK:
                if have_psk:
                    return suite
                continue
            if not have_group:
                continue
            if key_exchange is KeyExchange.ECDHE_PSK:
                if have_psk:
                    return suite
                continue
            wanted = (
                ec.EllipticCurvePrivateKey
                if key_exchange is KeyExchange.ECDHE_ECDSA
                else rsa.RSAPrivateKey
            )
            # A certificate registered for the requested name is the only candidate;
            # otherwise any certificate we hold (default first) may serve.
            named = certificates.select(self.server_name) if self.server_name else None
            if named is not None and named is not certificates.select(None):
                candidates = [named]
            else:
                candidates = certificates.all_entries()
            for entry in candidates:
                key = entry[1]
                if isinstance(key, ec.EllipticCurvePrivateKey) and groups is not None:
                    # RFC 8422 5.1: an ECDSA certificate's curve must be one the client named.
                    curve_group = _CURVE_GROUPS.get(key.curve.name)
                    if curve_group is not None and curve_group not in groups:
                        continue
                if isinstance(key, wanted) or (
                    key_exchange is KeyExchange.ECDHE_ECDSA
                    and isinstance(key, ed25519.Ed25519PrivateKey)
                ):
                    self._selected_certificate = entry
                    return suite
        raise AlertError(AlertDescription.handshake_failure, "no cipher suite in common")

    def _server_choose_group(self, groups: list[int] | None) -> NamedGroup:
        for group in self.configuration.groups:
            if groups is None or group in groups:
                return group
        raise AlertError(AlertDescription.handshake_failure, "no group in common")

    def _server_handle_client_flight(
        self, msg_type: int, body: bytes, transcript_before: bytes, now: int
    ) -> None:
        assert self._suite is not None
        config = self.configuration
        if msg_type == HandshakeType.certificate:
            if not self._expect_client_certificate or self._client_key_exchange_seen:
                raise AlertError(AlertDescription.unexpected_message, "unexpected Certificate")
            self._expect_client_certificate = False
            chain = load_peer_chain(hs.decode_certificate(body).certificates)
            if not chain:
                if config.require_client_certificate:
                    raise AlertError(
                        AlertDescription.handshake_failure, "client certificate required"
                    )
                return
            self._check_peer_chain(chain, as_server=False)
            self._expect_certificate_verify = True
        elif msg_type == HandshakeType.client_key_exchange:
            if self._expect_client_certificate or self._client_key_exchange_seen:
                raise AlertError(
                    AlertDescription.unexpected_message, "unexpected ClientKeyExchange"
                )
            self._client_key_exchange_seen = True
            premaster = self._server_premaster(body)
            self._derive_master_secret(premaster, now)
        elif msg_type == HandshakeType.certificate_verify:
            if not self._expect_certificate_verify or not self._client_key_exchange_seen:
                raise AlertError(
                    AlertDescription.unexpected_message, "unexpected CertificateVerify"
                )
            self._expect_certificate_verify = False
            reader = hs.Reader(body)
            scheme = reader.uint(2)
            signature = reader.vector(2)
            reader.finish()
            verify_signature(self.peer_certificates[0], scheme, signature, transcript_before)
        elif msg_type == HandshakeType.finished:
            if not self._client_key_exchange_seen or self._expect_certificate_verify:
                raise AlertError(AlertDescription.unexpected_message, "Finished too early")
            self._check_finished(body, transcript_before, from_client=True)
            self._new_flight()
            if self._issue_ticket:
                self.session = self._make_session(ticket=b"")
                ticket = self._server_context.ticket_keys.seal(self.session)
                self._queue_handshake(
                    HandshakeType.new_session_ticket,
                    hs.encode_new_session_ticket(
                        hs.NewSessionTicket(
                            lifetime_hint_seconds=TICKET_LIFETIME_HINT_SECONDS, ticket=ticket
                        )
                    ),
                )
            self._queue_change_cipher_spec()
            self._queue_finished()
            self._send_flight(now, expects_reply=False)
            self._complete_handshake()
        else:
            raise AlertError(AlertDescription.unexpected_message, f"message {msg_type} in flight")

    def _server_premaster(self, body: bytes) -> bytes:
        assert self._suite is not None
        key_exchange = self._suite.key_exchange
        reader = hs.Reader(body)
        psk = b""
        if key_exchange in (KeyExchange.PSK, KeyExchange.ECDHE_PSK):
            identity = reader.vector(2)
            self.psk_identity = identity
            config = self.configuration
            found = config.psk_lookup(identity) if config.psk_lookup is not None else config.psk
            if found is None:
                raise AlertError(AlertDescription.unknown_psk_identity, "unknown PSK identity")
            psk = found
            if key_exchange is KeyExchange.PSK:
                reader.finish()
                return _psk_premaster(bytes(len(psk)), psk)
        public = reader.vector(1, minimum=1)
        reader.finish()
        assert self._key_share is not None
        shared = self._key_share.exchange(public)
        if key_exchange is KeyExchange.ECDHE_PSK:
            return _psk_premaster(shared, psk)
        return shared

    # ------------------------------------------------------------------ shared helpers

    def _check_peer_chain(self, chain: tuple[x509.Certificate, ...], *, as_server: bool) -> None:
        config = self.configuration
        self.peer_certificates = chain
        if not config.verify_peer and config.verify_callback is None:
            return
        errors = validate_chain(
            chain,
            config.ca_certificates,
            server_name=config.server_name,
            as_server=as_server,
            at=config.certificate_validation_time,
        )
        self.peer_certificate_errors = errors
        if config.verify_callback is not None:
            if not config.verify_callback(chain, errors):
                raise AlertError(AlertDescription.bad_certificate, "rejected by verify callback")
            return
        if errors:
            raise AlertError(AlertDescription.bad_certificate, "; ".join(errors))

    def _derive_master_secret(self, premaster: bytes, now: int) -> None:
        """Master secret from the premaster (RFC 7627's session hash when negotiated),
        then the key block: the same step after either side's ClientKeyExchange."""
        assert self._suite is not None
        session_hash = (
            transcript_hash(self._suite.hash_name, bytes(self._transcript))
            if self.extended_master_secret
            else None
        )
        self._master_secret = derive_master_secret(
            self._suite.hash_name,
            premaster,
            client_random=self.client_random,
            server_random=self.server_random,
            session_hash=session_hash,
        )
        self._derive_keys(now)

    def _derive_keys(self, now: int) -> None:
        assert self._suite is not None
        block = derive_key_block(
            self._suite.hash_name,
            self._master_secret,
            client_random=self.client_random,
            server_random=self.server_random,
            key_bytes=self._suite.key_bytes,
            iv_bytes=self._suite.fixed_iv_bytes,
        )
        epoch = self._write_epoch + 1
        client_side = RecordProtection(self._suite.aead, block.client_key, block.client_iv, epoch)
        server_side = RecordProtection(self._suite.aead, block.server_key, block.server_iv, epoch)
        self._pending_write = client_side if self.is_client else server_side
        self._pending_read = server_side if self.is_client else client_side
        self._install_read_keys(now)

    def _queue_finished(self) -> None:
        assert self._suite is not None
        verify_data = finished_verify_data(
            self._suite.hash_name,
            self._master_secret,
            from_client=self.is_client,
            handshake_hash=transcript_hash(self._suite.hash_name, bytes(self._transcript)),
        )
        if self.is_client:
            self._client_finished = verify_data
        self._queue_handshake(HandshakeType.finished, verify_data)

    def _check_finished(self, body: bytes, transcript_before: bytes, *, from_client: bool) -> None:
        assert self._suite is not None
        expected = finished_verify_data(
            self._suite.hash_name,
            self._master_secret,
            from_client=from_client,
            handshake_hash=transcript_hash(self._suite.hash_name, transcript_before),
        )
        if body != expected:
            raise AlertError(AlertDescription.decrypt_error, "Finished does not verify")
        if from_client:
            self._client_finished = body

    def _make_session(self, *, ticket: bytes) -> Session:
        assert self.cipher_suite is not None
        return Session(
            session_id=self.session_id,
            cipher_suite=int(self.cipher_suite),
            master_secret=self._master_secret,
            extended_master_secret=self.extended_master_secret,
            ticket=ticket,
            server_name=self.server_name,
            alpn_protocol=self.alpn_protocol,
            peer_certificates=tuple(_der(c) for c in self.peer_certificates),
        )

    def _complete_handshake(self) -> None:
        self._state = HandshakeState.ESTABLISHED
        self._retransmit_deadline = None
        self._handshake_deadline = None
        if self.is_client:
            if self._resuming and self.configuration.session is not None:
                previous = self.configuration.session
                self.session = Session(
                    session_id=previous.session_id or self.session_id,
                    cipher_suite=previous.cipher_suite,
                    master_secret=previous.master_secret,
                    extended_master_secret=previous.extended_master_secret,
                    ticket=self._new_ticket or previous.ticket,
                    server_name=previous.server_name,
                    alpn_protocol=previous.alpn_protocol,
                    peer_certificates=previous.peer_certificates,
                )
            else:
                self.session = self._make_session(ticket=self._new_ticket)
        elif not self._resuming:
            if self.session is None:
                self.session = self._make_session(ticket=b"")
            self._server_context.session_cache.store(self.session)
        assert self.cipher_suite is not None
        self._events.append(
            HandshakeCompleted(
                peer=self.peer_id,
                cipher_suite=self.cipher_suite.name,
                alpn_protocol=self.alpn_protocol,
                session_resumed=self.session_resumed,
            )
        )
        pending, self._pending_send = self._pending_send, []
        for data in pending:
            self.send(data)


def _der(certificate: x509.Certificate) -> bytes:
    from cryptography.hazmat.primitives.serialization import Encoding

    return certificate.public_bytes(Encoding.DER)


def _psk_premaster(other_secret: bytes, psk: bytes) -> bytes:
    """RFC 4279 2 / RFC 5489 2: other_secret and psk, each with a 16-bit length."""
    return len(other_secret).to_bytes(2, "big") + other_secret + len(psk).to_bytes(2, "big") + psk


def _is_ip_address(name: str) -> bool:
    import ipaddress

    try:
        ipaddress.ip_address(name)
    except ValueError:
        return False
    return True


def encode_hello_verify_datagram(cookie: bytes, *, message_seq: int, record_sequence: int) -> bytes:
    """A whole HelloVerifyRequest datagram (RFC 6347 4.2.1: version field DTLS 1.0)."""
    body = hs.encode_hello_verify_request(
        hs.HelloVerifyRequest(server_version=DTLS_1_0, cookie=cookie)
    )
    message = hs.encode_handshake(HandshakeType.hello_verify_request, message_seq, body)
    return (
        encode_record_header(ContentType.handshake, DTLS_1_0, 0, record_sequence, len(message))
        + message
    )
