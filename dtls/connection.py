"""One DTLS association with one peer, sans-IO: the thin facade over its parts.

Theory of operation
-------------------
Bytes come in through ``receive_datagram(data, addr, now)`` and leave through
``datagrams_to_send(now)``; time only moves through ``handle_timer(now)``.
The connection itself holds only the application side (send queue, receive
queue, events, close state) and wires four parts together:

*Record layer* (``record_layer.py``).  Splits a datagram into records, finds
each record's epoch, checks its replay window, authenticates and decrypts.
Records of the next epoch that arrive before its keys (the peer's Finished
overtaking its ChangeCipherSpec) are parked and replayed once the datagram
that carried the keys is done.  A record's number is marked as seen only once
the record was kept: at once when it authenticated, and in the plaintext
epoch 0 only when a message it completed was taken by the handshake, so
spoofed epoch-0 records cannot move the window past the genuine ones.
Records that fail are dropped silently (RFC 6347 4.1.2.7) and counted in
``dropped_records``.

*Reassembly* (``reassembly.py``).  Handshake fragments go through a
:class:`HandshakeReassembler`, which hands out whole messages strictly in
``message_seq`` order, so the handshake sees a TLS-like message stream.  A
message from the peer's previous flight (an old ``message_seq``) means our
answer was lost: the flight is resent.

*Handshake* (``handshake12_client.py``, ``handshake12_server.py``).  A state
machine per version and role, written as a transition table; it takes whole
messages, fills in :class:`~dtls.info.Negotiated`, installs keys in the
record layer and sends flights.  Which machine runs is decided here, by
version (:meth:`DTLSConnection._choose_handshake`): DTLS 1.2 is the only one
implemented; 1.3 plugs in at that point.

*Flights* (``flights.py``).  What the handshake sends: fragmented to the MTU,
packed several records per datagram, retransmitted on a doubling timer (1 s
up to 60 s, at most 6 times), resent when the peer repeats its flight.  The
overall handshake deadline (default 60 s) bounds everything.

Errors inside the parts are typed: :class:`AlertError` and
:class:`DecodeError` end the connection with an alert and a
``ConnectionTerminated`` event; nothing a peer sends makes
``receive_datagram`` raise.
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Hashable
from enum import Enum

from cryptography import x509

from . import handshake as hs
from .config import DTLSConfiguration, DTLSVersion
from .errors import (
    AlertDescription,
    AlertError,
    AlertLevel,
    DecodeError,
    LocalProtocolError,
)
from .events import (
    ApplicationDataReceived,
    ConnectionTerminated,
    Event,
    HandshakeCompleted,
    PeerClosedWrite,
)
from .flights import Flights
from .handshake import HandshakeType, message_name
from .handshake12_client import ClientHandshake12
from .handshake12_server import ServerHandshake12, encode_hello_verify_datagram
from .handshake13 import EPOCH_EARLY_DATA, Handshake13
from .handshake13_client import ClientHandshake13
from .handshake13_server import ServerHandshake13
from .handshake_context import Handshake, HandshakeContext, ServerContext
from .info import ConnectionInfo, Negotiated
from .reassembly import HandshakeMessage, HandshakeReassembler
from .record_layer import OpenedRecord, RecordLayer, initial_plaintext_version
from .records import RECORD_HEADER_BYTES, ContentType, Record
from .records13 import ACK_CONTENT_TYPE
from .sessions import Session
from .sessions13 import Session13
from .suites import TLS13_SUITES, CipherSuite, SrtpProfile

__all__ = [
    "MAX_APPLICATION_DATAGRAM_BYTES",
    "Address",
    "DTLSConnection",
    "HandshakeState",
    "ServerContext",
    "encode_hello_verify_datagram",
]

logger = logging.getLogger(__name__)
# One line per handshake message, alert and retransmission, for `dtls -v` (INFO level).
message_logger = logging.getLogger("dtls.messages")

Address = Hashable
MAX_APPLICATION_DATAGRAM_BYTES = 16384


class HandshakeState(Enum):
    """Where the connection stands; the version's state machine has the details."""

    HANDSHAKING = "handshaking"
    ESTABLISHED = "established"
    CLOSED = "closed"


class DTLSConnection:
    """A DTLS client or server connection with one peer."""

    def __init__(
        self,
        configuration: DTLSConfiguration,
        *,
        address: Address = None,
        peer_id: int = 0,
        server_context: ServerContext | None = None,
    ) -> None:
        self.configuration = configuration
        self.peer_id = peer_id
        self.is_client = configuration.is_client
        self._state = HandshakeState.HANDSHAKING
        self._outgoing: list[bytes] = []
        self._records = RecordLayer(
            plaintext_version=initial_plaintext_version(self.is_client),
            replay_window_records=configuration.replay_window_records,
            local_connection_id=configuration.connection_id or b"",
        )
        self._flights = Flights(
            self._records,
            self._outgoing,
            mtu=configuration.mtu,
            initial_retransmit_ns=configuration.initial_retransmit_ns,
            max_retransmit_ns=configuration.max_retransmit_ns,
            max_retransmissions=configuration.max_retransmissions,
        )
        self._negotiated = Negotiated(
            server_name=configuration.server_name if self.is_client else None
        )
        self._context = HandshakeContext(
            configuration=configuration,
            negotiated=self._negotiated,
            records=self._records,
            flights=self._flights,
            outgoing=self._outgoing,
            server_context=server_context if server_context is not None else ServerContext(),
            address=address,
        )
        self._handshake: Handshake = self._choose_handshake()
        self._reassembler = HandshakeReassembler()
        # DTLS 1.2: the peer's messages below this message_seq came before our current
        # flight (they are what it answers); a repeat of one means ours was lost.
        self._answered_below = 0
        self._handshake_deadline: int | None = None
        self._last_receive_ns = 0
        # application side
        self._events: deque[Event] = deque()
        self._application_queue: deque[bytes] = deque()
        self._pending_send: list[bytes] = []
        self._direct_receive: list[bytes] | None = None  # set while open_datagram runs
        self._early_data_sent = 0  # queued datagrams that left as 0-RTT data (1.3 client)
        self._now = 0  # the latest time we were given (commands without ``now`` use it)
        self._write_closed = False
        self._read_closed = False
        self.peer_closed = False
        self.terminated_reason: str | None = None
        self.dropped_application_datagrams = 0

    def _choose_handshake(self) -> Handshake:
        """The version dispatch: which handshake machine runs for this connection.

        With DTLS 1.3 among ``configuration.versions`` the 1.3 machine runs: a
        client offers every configured version and hands over to the 1.2
        machine on a 1.2 answer; a server picks by the first ClientHello's
        supported_versions and its own preference order, handing a 1.2 hello
        to the 1.2 machine.  Either hand-over replaces ``_handshake`` (see
        ``replacement``).  Without 1.3, the 1.2 machines run alone.
        """
        versions = self.configuration.versions
        with_12 = DTLSVersion.DTLS_1_2 in versions
        with_13 = DTLSVersion.DTLS_1_3 in versions and any(
            suite in TLS13_SUITES for suite in self.configuration.cipher_suites
        )
        if not with_13:
            if self.is_client:
                return ClientHandshake12(self._context)
            return ServerHandshake12(self._context)
        if self.is_client:
            return ClientHandshake13(
                self._context, ClientHandshake12(self._context) if with_12 else None
            )
        return ServerHandshake13(
            self._context, ServerHandshake12(self._context) if with_12 else None
        )

    @property
    def _handshake13(self) -> Handshake13 | None:
        """The running DTLS 1.3 machine (None for 1.2)."""
        handshake = self._handshake
        return handshake if isinstance(handshake, Handshake13) else None

    # ------------------------------------------------------------------ state and info

    @property
    def state(self) -> HandshakeState:
        """Handshaking, established or closed."""
        return self._state

    @property
    def server_context(self) -> ServerContext:
        """Cookies, session cache and ticket keys (shared by an endpoint's connections)."""
        return self._context.server_context

    @property
    def handshake_state(self) -> str:
        """The version's state machine state (``wait ServerHello``...), for logs."""
        return self._handshake.state_name

    @property
    def is_established(self) -> bool:
        """True once the handshake completed (and until the connection is closed)."""
        return self._state is HandshakeState.ESTABLISHED

    @property
    def address(self) -> Address:
        """Where the peer is (it may move when a connection id is in use)."""
        return self._context.address

    @address.setter
    def address(self, address: Address) -> None:
        self._context.address = address

    @property
    def info(self) -> ConnectionInfo:
        """A frozen snapshot of what was negotiated so far."""
        return self._negotiated.snapshot(
            connection_id=self._records.local_connection_id,
            peer_connection_id=self._records.peer_connection_id,
        )

    @property
    def version(self) -> DTLSVersion | None:
        """The negotiated version, once a ServerHello was exchanged."""
        return self._negotiated.version

    @property
    def negotiated_version(self) -> str | None:
        """``"DTLSv1.2"`` once a ServerHello was exchanged (OpenSSL's spelling)."""
        version = self._negotiated.version
        return None if version is None else version.label

    @property
    def cipher_suite(self) -> CipherSuite | None:
        """The negotiated cipher suite."""
        return self._negotiated.cipher_suite

    @property
    def cipher_suite_name(self) -> str | None:
        """IANA name of the negotiated cipher suite."""
        suite = self._negotiated.cipher_suite
        return None if suite is None else suite.name

    @property
    def client_random(self) -> bytes:
        """ClientHello.random (b"" before it exists)."""
        return self._negotiated.client_random

    @property
    def server_random(self) -> bytes:
        """ServerHello.random (b"" before it exists)."""
        return self._negotiated.server_random

    @property
    def session_id(self) -> bytes:
        """The session id the server gave."""
        return self._negotiated.session_id

    @property
    def extended_master_secret(self) -> bool:
        """Whether RFC 7627's extended master secret was negotiated."""
        return self._negotiated.extended_master_secret

    @property
    def alpn_protocol(self) -> str | None:
        """The negotiated ALPN protocol."""
        return self._negotiated.alpn_protocol

    @property
    def srtp_profile(self) -> SrtpProfile | None:
        """The negotiated DTLS-SRTP profile."""
        return self._negotiated.srtp_profile

    @property
    def server_name(self) -> str | None:
        """Client: the name we asked for.  Server: the name the client asked for (SNI)."""
        return self._negotiated.server_name

    @property
    def peer_certificates(self) -> tuple[x509.Certificate, ...]:
        """The peer's certificate chain, leaf first."""
        return self._negotiated.peer_certificates

    @property
    def peer_certificate_errors(self) -> tuple[str, ...]:
        """What validation found wrong with the peer chain (seen by the verify callback)."""
        return self._negotiated.peer_certificate_errors

    @property
    def psk_identity(self) -> bytes | None:
        """The PSK identity used (None without a PSK suite)."""
        return self._negotiated.psk_identity

    @property
    def session(self) -> Session | Session13 | None:
        """The session to resume later (set once established)."""
        return self._negotiated.session

    @property
    def session_resumed(self) -> bool:
        """Whether the handshake was abbreviated (session id or ticket)."""
        return self._negotiated.session_resumed

    @property
    def local_connection_id(self) -> bytes:
        """The RFC 9146 connection id the peer puts on records to us (b"" when none)."""
        return self._records.local_connection_id

    @property
    def peer_connection_id(self) -> bytes:
        """The connection id we put on records to the peer (b"" when none)."""
        return self._records.peer_connection_id

    @property
    def dropped_records(self) -> int:
        """Records dropped: unauthentic, replayed, malformed or out of place."""
        return self._records.dropped_records

    @property
    def parked_records(self) -> int:
        """Records waiting for the next epoch's keys."""
        return self._records.parked_count

    @property
    def max_application_payload(self) -> int:
        """Largest datagram ``send()`` can protect without exceeding the configured MTU.

        Larger ones (up to 2^14 bytes) are still sent, as one record the IP layer fragments.
        """
        records = self._records
        overhead = records.overhead() if records.write_epoch else RECORD_HEADER_BYTES + 24
        return max(0, self.configuration.mtu - overhead)

    @property
    def record_overhead(self) -> int:
        """Bytes one protected record adds to its plaintext in the current write epoch.

        Header, explicit nonce, AEAD tag and (RFC 9146) the connection id with its
        inner content-type byte: 37 for AES-GCM, 29 for ChaCha20-Poly1305, plus
        ``len(cid) + 1`` with a peer connection id.  Before the handshake it is the
        plaintext header alone.
        """
        return self._records.overhead()

    # ------------------------------------------------------------------ driving surface

    def start_handshake(self, now: int) -> None:
        """Client: send the first ClientHello.  Servers wait for one; calling this is harmless."""
        if not self.is_client or self._state is not HandshakeState.HANDSHAKING:
            return
        if self._handshake_deadline is None:
            self._handshake_deadline = now + self.configuration.handshake_timeout_ns
        self._now = now
        self._handshake.start(now)
        handshake = self._handshake13
        if isinstance(handshake, ClientHandshake13) and self._pending_send:
            self._early_data_sent = handshake.seal_early_data(self._pending_send)

    def handshake(self, now: int) -> None:
        """Explicit handshake start (the same as :meth:`start_handshake`).

        Optional: ``send()`` before the handshake queues data, and a server needs
        nothing but the client's datagrams.  Completion is the ``HandshakeCompleted``
        event (the asyncio adapter's ``await handshake()`` waits for it).
        """
        self.start_handshake(now)

    def receive_datagram(self, data: bytes, addr: Address, now: int) -> None:
        """Process one datagram from the peer; never raises for bad input."""
        state = self._state
        if state is HandshakeState.CLOSED:
            return
        self._now = now
        if state is HandshakeState.ESTABLISHED:
            if (
                not self._records.local_connection_id
                and len(data) > RECORD_HEADER_BYTES
                and data[0] == ContentType.application_data
            ):
                plaintext = self._records.open_application_fast(data)
                if plaintext is not False:
                    if plaintext is not None:
                        self._last_receive_ns = now
                        self._handle_application_data(plaintext, 1)
                    return
            handshake13 = self._handshake13
            if handshake13 is not None and data and data[0] & 0b1110_0000 == 0b0010_0000:
                opened = self._records.open_unified_fast(data)
                if opened is not False:
                    if opened is not None:
                        self._flights.new_datagram()
                        self._handle_opened(opened, addr, now)
                        if not self._closed():
                            handshake13.flush_acknowledgements(now)
                    return
        elif self._handshake_deadline is None and self._handshake.waiting_for_first_hello:
            self._handshake_deadline = now + self.configuration.handshake_timeout_ns
        records, junk = self._records.split(data)
        if junk:
            self._records.dropped_records += 1
        self._flights.new_datagram()
        for record in records:
            if self._closed():
                break
            self._handle_record(record, addr, now)
        while not self._closed() and self._records.has_parked():
            for record, source in self._records.take_parked():
                if not self._closed():
                    self._handle_record(record, source, now)
        handshake = self._handshake13
        if handshake is not None and not self._closed():
            handshake.flush_acknowledgements(now)

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

    def datagrams_to_send(self, now: int) -> list[tuple[bytes, Address]]:
        """Datagrams to put on the wire now, with their destination."""
        if not self._outgoing:
            return []
        address = self.address
        out = [(datagram, address) for datagram in self._outgoing]
        self._outgoing.clear()
        return out

    def get_timer(self) -> int | None:
        """Absolute deadline (ns) at which ``handle_timer`` must be called, or None."""
        state = self._state
        handshake = self._handshake13
        ack = handshake.ack_deadline if handshake is not None else None
        if state is HandshakeState.ESTABLISHED:
            idle = self.configuration.idle_timeout_ns
            candidates = [ack] if idle is None else [ack, self._last_receive_ns + idle]
            if handshake is not None:
                # 1.3 retransmits its last flight and post-handshake messages until acknowledged.
                candidates.append(self._flights.retransmit_deadline)
            deadlines = [t for t in candidates if t is not None]
            return min(deadlines) if deadlines else None
        if state is HandshakeState.CLOSED:
            return None
        pending = [
            t
            for t in (self._flights.retransmit_deadline, self._handshake_deadline, ack)
            if t is not None
        ]
        return min(pending) if pending else None

    def handle_timer(self, now: int) -> None:
        """Retransmit the flight or give up, as the deadlines say."""
        state = self._state
        self._now = now
        handshake = self._handshake13
        if state is HandshakeState.ESTABLISHED:
            idle = self.configuration.idle_timeout_ns
            if idle is not None and now >= self._last_receive_ns + idle:
                self._terminate("idle timeout")
                return
            if handshake is not None:
                handshake.flush_acknowledgements(now)
                if not self._flights.on_timer(now):
                    # Nobody acknowledges our post-handshake messages: stop repeating them.
                    logger.debug("connection %d: retransmissions exhausted", self.peer_id)
                    self._flights.stop()
            return
        if state is HandshakeState.CLOSED:
            return
        if self._handshake_deadline is not None and now >= self._handshake_deadline:
            self._terminate("handshake timeout" + self._timeout_detail())
            return
        if handshake is not None:
            handshake.flush_acknowledgements(now)
        if not self._flights.on_timer(now):
            self._terminate("handshake timeout: retransmissions exhausted" + self._timeout_detail())

    def _timeout_detail(self) -> str:
        """Why a handshake may have stalled, when we know more than "no answer".

        DTLS drops records that do not decrypt, without an alert (RFC 6347 4.1.2.7):
        a 1.2 peer with another PSK sends a Finished that never opens here, and the
        handshake just times out.  Say so.
        """
        if self._records.decrypt_failures:
            return (
                f" ({self._records.decrypt_failures} record(s) from the peer did not decrypt: "
                "the keys differ, a wrong PSK?)"
            )
        return ""

    def next_event(self) -> Event | None:
        """Pop the next event, or None."""
        return self._events.popleft() if self._events else None

    # ------------------------------------------------------------------ application data

    def send(self, data: bytes) -> None:
        """Queue one application datagram (sent right away once established)."""
        if self._write_closed or self._state is HandshakeState.CLOSED:
            raise LocalProtocolError("connection is closed for writing")
        if len(data) > MAX_APPLICATION_DATAGRAM_BYTES:
            raise LocalProtocolError("application datagram larger than 2^14 bytes")
        if self._state is not HandshakeState.ESTABLISHED:
            if len(self._pending_send) >= self.configuration.application_queue_datagrams:
                raise LocalProtocolError("too much data queued before the handshake finished")
            self._pending_send.append(bytes(data))
            return
        handshake = self._handshake13
        if handshake is not None:
            handshake.before_application_record(self._now)
        self._outgoing.append(self._records.seal_application(data))

    def seal_application_data(self, data: bytes) -> bytes:
        """Protect one application datagram as one record and return it, queueing nothing.

        For callers that schedule their own datagrams (a transport carrying one
        packet per record): the record goes wherever the caller sends it.  Only
        once established; :meth:`send` is the queueing form.
        """
        if self._state is not HandshakeState.ESTABLISHED or self._write_closed:
            raise LocalProtocolError("application data needs an established, writable connection")
        if len(data) > MAX_APPLICATION_DATAGRAM_BYTES:
            raise LocalProtocolError("application datagram larger than 2^14 bytes")
        handshake = self._handshake13
        if handshake is not None:
            handshake.before_application_record(self._now)
        return self._records.seal_application(data)

    def receive(self) -> bytes | None:
        """Next received application datagram, or None when the queue is empty."""
        return self._application_queue.popleft() if self._application_queue else None

    def pending(self) -> int:
        """Number of received application datagrams waiting in the queue."""
        return len(self._application_queue)

    # ------------------------------------------------------------------ closing

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

    def abort(self, reason: str = "aborted") -> None:
        """End the connection at once, sending nothing (no close_notify)."""
        self._terminate(reason)

    # ------------------------------------------------------------------ keys

    def key_log_lines(self) -> list[str]:
        """NSS key-log lines for Wireshark (empty until there are secrets).

        Anyone holding them can decrypt the session: write them only where the
        user asked for it (SSLKEYLOGFILE, ``--keylog``).
        """
        return self._handshake.key_log_lines()

    def key_log_line(self) -> str | None:
        """DTLS 1.2's one NSS key-log line (``CLIENT_RANDOM <random> <master secret>``)."""
        lines = self._handshake.key_log_lines()
        return "\n".join(lines) if lines else None

    def export_keying_material(
        self, label: bytes | str, context: bytes | None, length: int
    ) -> bytes:
        """RFC 5705 exporter (for DTLS-SRTP use label ``EXTRACTOR-dtls_srtp``, no context)."""
        label_bytes = label.encode() if isinstance(label, str) else label
        return self._handshake.export_keying_material(label_bytes, context, length)

    # ------------------------------------------------------------------ DTLS 1.3 only

    def _require13(self) -> Handshake13:
        handshake = self._handshake13
        if handshake is None or self._state is not HandshakeState.ESTABLISHED:
            raise LocalProtocolError("needs an established DTLS 1.3 connection")
        return handshake

    def update_keys(self, now: int, *, request_peer: bool = False) -> None:
        """Send a KeyUpdate (RFC 9147 8); ``request_peer`` asks the peer to update too.

        Our new keys take effect once the peer acknowledged the KeyUpdate.  The
        connection also does this by itself before a key protected
        ``key_update_records`` records.
        """
        self._now = now
        self._require13().update_keys(now, request_peer=request_peer)

    @property
    def key_updates(self) -> tuple[int, int]:
        """DTLS 1.3 KeyUpdates (sent, received); (0, 0) for 1.2."""
        handshake = self._handshake13
        return handshake.key_updates if handshake is not None else (0, 0)

    def request_connection_ids(self, count: int, now: int) -> None:
        """Ask the peer for spare connection ids (RFC 9147 9: RequestConnectionId)."""
        self._now = now
        self._require13().request_connection_ids(count, now)

    def offer_connection_ids(self, count: int, now: int, *, immediate: bool = False) -> None:
        """Give the peer new connection ids for records to us (NewConnectionId)."""
        self._now = now
        self._require13().offer_connection_ids(count, now, immediate=immediate)

    def use_spare_connection_id(self) -> bytes:
        """Put the next spare connection id the peer gave us on our records from now on."""
        return self._require13().use_spare_connection_id()

    @property
    def spare_connection_ids(self) -> tuple[bytes, ...]:
        """Connection ids the peer gave us that we have not used yet."""
        handshake = self._handshake13
        return tuple(handshake.peer_spare_connection_ids) if handshake is not None else ()

    @property
    def issued_connection_ids(self) -> tuple[bytes, ...]:
        """Connection ids we gave the peer after the handshake (endpoints route them to us)."""
        handshake = self._handshake13
        return tuple(handshake.issued_connection_ids) if handshake is not None else ()

    @property
    def early_data_accepted(self) -> bool:
        """Whether 0-RTT data was accepted (DTLS 1.3 with a resumed session)."""
        return self._negotiated.early_data_accepted

    def channel_binding(self, binding_type: str = "tls-exporter") -> bytes:
        """Channel binding data: ``tls-exporter`` (RFC 9266) or ``tls-unique`` (RFC 5929)."""
        return self._handshake.channel_binding(binding_type)

    # ------------------------------------------------------------------ records in

    def _closed(self) -> bool:
        """A method, not an inline test: handlers called in a loop may close the connection."""
        return self._state is HandshakeState.CLOSED

    def _handle_record(self, record: Record, addr: Address, now: int) -> None:
        opened = self._records.open(record, addr)
        if opened is not None:
            self._handle_opened(opened, addr, now)

    def _handle_opened(self, opened: OpenedRecord, addr: Address, now: int) -> None:
        records = self._records
        protected = opened.protected
        content_type = opened.content_type
        established = self._state is HandshakeState.ESTABLISHED
        if protected:
            newest = records.accept(opened)  # authentic: its number is spent
            self._last_receive_ns = now  # only authenticated traffic keeps a session alive
            if addr != self.address and records.local_connection_id and newest:
                # RFC 9146 6: an authenticated CID record from a new address moves the peer,
                # but only the newest one (a delayed older record must not move it back).
                logger.debug("peer %d moved from %r to %r", self.peer_id, self.address, addr)
                self.address = addr
        else:
            if established and content_type != ContentType.handshake:
                # After the handshake, plaintext records other than a repeated handshake
                # flight are unauthenticated noise: they may not touch the protected session.
                records.dropped_records += 1
                return
            if not established:
                self._last_receive_ns = now
        try:
            if content_type == ContentType.handshake:
                took = self._handle_handshake_record(opened.payload, opened.epoch, now)
                if took and not protected:
                    records.accept(opened)  # epoch 0: spent only once the handshake took it
                handshake = self._handshake13
                if handshake is not None and (took or protected):
                    handshake.note_record(opened.epoch, opened.sequence_number, now)
            elif content_type == ACK_CONTENT_TYPE:
                handshake = self._handshake13
                if handshake is None or not protected:
                    records.dropped_records += 1  # unauthenticated ACKs cannot stop our flight
                else:
                    handshake.handle_ack(opened.payload, now)
            elif content_type == ContentType.application_data:
                self._handle_application_data(opened.payload, opened.epoch)
            elif content_type == ContentType.alert:
                self._handle_alert(opened.payload)
            elif content_type == ContentType.change_cipher_spec:
                # Keys switch on our own schedule (section 2 of SPEC-DTLS.md), so the record
                # carries no decision; a malformed one is only counted.
                message_logger.info("<<< change_cipher_spec")
                if opened.payload != b"\x01":
                    records.dropped_records += 1
            else:
                records.dropped_records += 1
        except AlertError as error:
            self._fail(error)
        except DecodeError as error:
            self._fail(AlertError(AlertDescription.decode_error, str(error)))

    def _handle_handshake_record(self, payload: bytes, epoch: int, now: int) -> bool:
        """Feed a record's fragments to the reassembler and the handshake.

        Returns whether the handshake took a whole message from this record.
        """
        try:
            fragments = hs.decode_handshake_fragments(payload)
        except DecodeError:
            self._records.dropped_records += 1  # epoch-0 framing is not authenticated: drop
            return False
        took_message = False
        handshake = self._handshake
        for fragment in fragments:
            if self._closed():
                break
            if (
                handshake.waiting_for_first_hello
                and fragment.msg_type == HandshakeType.client_hello
                and fragment.message_seq != self._reassembler.next_seq
            ):
                # Before the cookie checks out we keep no handshake state: take the hello's
                # numbering as it comes (a repeat after a lost HelloVerifyRequest, or the
                # second hello when an endpoint did the stateless exchange for us).
                self._reassembler = HandshakeReassembler(fragment.message_seq)
            if fragment.message_seq < self._reassembler.next_seq:
                handshake13 = self._handshake13
                if handshake13 is not None:
                    handshake13.handle_peer_repeat(self._now)
                elif fragment.message_seq < self._answered_below:
                    self._flights.resend_on_peer_repeat(
                        established=self._state is HandshakeState.ESTABLISHED
                    )
                # else: a repeat of the flight the peer sent after ours, which therefore
                # arrived: resending ours would only answer its retransmissions with ours,
                # and two peers doing that ping-pong at wire speed (a 1.2 client with the
                # wrong PSK, whose Finished we cannot decrypt, met a server doing so).
                continue
            if self._state is HandshakeState.ESTABLISHED and self._handshake13 is None:
                # A new handshake after ours finished: renegotiation, which we refuse.
                if fragment.msg_type in (HandshakeType.client_hello, HandshakeType.hello_request):
                    self._send_alert(AlertLevel.WARNING, AlertDescription.no_renegotiation)
                continue
            if not handshake.fragment_allowed(fragment, epoch):
                self._records.dropped_records += 1
                continue
            try:
                if not self._reassembler.add(fragment):
                    continue
            except DecodeError:
                self._records.dropped_records += 1  # longer than any message we accept
                continue
            for message in self._reassembler.pop_ready():
                if self._closed():
                    break
                self._handle_message(message, epoch, now)
                took_message = True
        return took_message

    def _handle_message(self, message: HandshakeMessage, epoch: int, now: int) -> None:
        if self._state is HandshakeState.ESTABLISHED:
            handshake13 = self._handshake13
            if handshake13 is None:
                raise AlertError(
                    AlertDescription.unexpected_message, "handshake message out of place"
                )
            self._log_message(message)
            handshake13.handle_post_handshake(message, epoch, now)
            return
        self._log_message(message)
        flights_begun = self._flights.begun
        self._handshake.handle_message(message, now)
        if self._flights.begun != flights_begun:
            self._answered_below = message.message_seq + 1
        replacement = getattr(self._handshake, "replacement", None)
        if replacement is not None:
            self._handshake = replacement  # the version was decided: 1.2 took over
        if self._handshake.established:
            self._on_established()

    def _log_message(self, message: HandshakeMessage) -> None:
        if message_logger.isEnabledFor(logging.INFO):
            message_logger.info(
                "<<< %s (message_seq %d, %d bytes) in state '%s'",
                message_name(message.msg_type),
                message.message_seq,
                len(message.body),
                self._handshake.state_name,
            )

    def _on_established(self) -> None:
        self._state = HandshakeState.ESTABLISHED
        if self._handshake13 is None:
            self._flights.stop()
        self._handshake_deadline = None
        negotiated = self._negotiated
        assert negotiated.cipher_suite is not None and negotiated.version is not None
        self._events.append(
            HandshakeCompleted(
                peer=self.peer_id,
                cipher_suite=negotiated.cipher_suite.name,
                alpn_protocol=negotiated.alpn_protocol,
                session_resumed=negotiated.session_resumed,
                version=negotiated.version,
            )
        )
        pending, self._pending_send = self._pending_send, []
        if negotiated.early_data_accepted:
            pending = pending[self._early_data_sent :]  # those arrived as 0-RTT data
        for data in pending:
            self.send(data)

    def _handle_application_data(self, payload: bytes, epoch: int) -> None:
        if epoch == 0:
            self._records.dropped_records += 1
            return
        if self._state is not HandshakeState.ESTABLISHED:
            # 0-RTT: a 1.3 server delivers early data it accepted (epoch 1), nothing else.
            handshake = self._handshake
            if not (
                epoch == EPOCH_EARLY_DATA
                and isinstance(handshake, ServerHandshake13)
                and handshake.accept_early_data(len(payload))
            ):
                self._records.dropped_records += 1
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

    # ------------------------------------------------------------------ alerts and closing

    def _handle_alert(self, payload: bytes) -> None:
        if len(payload) != 2:
            raise AlertError(AlertDescription.decode_error, "bad alert")
        level, description_value = payload[0], payload[1]
        try:
            description = AlertDescription(description_value)
        except ValueError:
            description = AlertDescription.internal_error
        message_logger.info(
            "<<< alert %s (%s)",
            description.name,
            "fatal" if level == AlertLevel.FATAL else "warning",
        )
        established = self._state is HandshakeState.ESTABLISHED
        if description == AlertDescription.close_notify:
            if not established:
                self._terminate("peer closed during handshake", alert=description)
                return
            if not self.peer_closed:
                self.peer_closed = True
                self._events.append(PeerClosedWrite(peer=self.peer_id))
            if self._write_closed:
                self._terminate("closed")
            return
        if level == AlertLevel.FATAL or not established:
            raise AlertError(description, "received from peer", received=True)
        logger.debug("warning alert from peer: %s", description.name)

    def _send_alert(self, level: AlertLevel, description: AlertDescription) -> None:
        message_logger.info(">>> alert %s (%s)", description.name, level.name.lower())
        records = self._records
        self._outgoing.append(
            records.seal(ContentType.alert, records.write_epoch, bytes((level, description)))
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
        self._flights.stop()
        self._handshake_deadline = None
        self._events.append(
            ConnectionTerminated(
                peer=self.peer_id, reason=reason, alert=alert, alert_received=alert_received
            )
        )
