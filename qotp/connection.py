"""One QOTP connection, sans-IO: streams, ACKs, retransmission, congestion and flow control.

Go: conn.go (``Flush``, ``decode``), stream.go, and the per-connection half
of listener.go.

Theory of operation
===================

The connection sits on a :class:`~qotp.protection.Protection` (the crypto
seam) and never looks past it.  Everything it sends is one transport payload
(:mod:`qotp.payload`) sealed by the protection; everything it receives is
opened by the protection and decoded here.

Sending (:meth:`Connection.datagrams_to_send`) fills one batch:

1. the protection's own handshake datagrams (InitSnd and its repeats);
2. then, per datagram, the oldest pending ACK (the reference matches ACKs to
   in-flight packets by their exact ``(stream, offset, length)``, so every
   received packet gets its own ACK) rides along with the next packet that the
   send buffer chooses: a due retransmission first, else new data round-robin
   over streams.  Data waits for the congestion window and the pacer; an ACK
   never does -- it goes out alone (ACK-only) when no data may leave, and then
   repeats the stream's previous ACK in bytes the reference ignores
   (:mod:`qotp.payload`, "ACK repeats").

Until the protection reports the handshake complete, at most one packet of
new data is sent (the reference's rule); the rest waits.

Receiving (:meth:`Connection.receive_datagram`): open, decode, apply the ACK
(RTT sample, congestion control, free send-buffer space), then insert the
stream data into the receive buffer, which queues the ACK for it.  Received
bytes stay in the receive buffer -- and keep the advertised window small --
until the application reads them with :meth:`Connection.read`.

Streams close per direction (FIN/ACK): :meth:`Connection.close_stream` sets
the close offset; the peer's CLOSE ends the receive direction once everything
before it is read.  A stream whose two directions are done is removed.  The
connection ends on :meth:`Connection.close` once its streams are done, after
30 s without receiving anything, when a packet exhausts its retransmissions,
when the handshake fails, or when the peer contradicts data it sent before
(the reference panics there; we end only this connection).

Stream limits (not in the reference): the peer may hold at most
``QotpConfiguration.max_streams`` streams open.  A packet that would open one
more is refused -- not stored, not acknowledged, counted in
:attr:`Connection.refused_stream_packets` -- and the peer's retransmission gets
in once one of its streams has finished; the same holds while
``max_stream_tombstones`` finished streams are remembered.  Our own
application gets the same number of streams and a LocalProtocolError beyond
it, and cannot reuse the id of a stream that ended less than two minutes ago
(:mod:`qotp.recv`, "Tombstones").  For a packet on a known stream all this
costs nothing: the limit is looked at only when the stream table misses.
"""

from __future__ import annotations

import logging
from collections import deque
from dataclasses import dataclass

from qotp.config import QotpConfiguration
from qotp.congestion import Pacer
from qotp.congestion.ack_starvation import AckStarvation
from qotp.errors import (
    DecodeError,
    DecryptError,
    LocalProtocolError,
    RemoteProtocolError,
    ReplayedPacketError,
)
from qotp.events import (
    ConnectionEstablished,
    ConnectionTerminated,
    Event,
    PeerAddressChanged,
    StreamClosed,
    StreamDataAvailable,
    StreamOpened,
    StreamSendFinished,
    StreamWritable,
    TerminationReason,
)
from qotp.path import PATH_PROBE_STREAM_ID, PathValidator
from qotp.payload import (
    ACK_ONLY_SIZE_24,
    Ack,
    Payload,
    PayloadKind,
    decode_ack_repeat,
    decode_payload,
    encode_ack_repeat,
    encode_payload,
)
from qotp.protection import Address, Protection
from qotp.recovery import PacketRecovery, RetryLimitExceeded
from qotp.recv import STREAM_TOMBSTONE_LIFETIME_NS, InsertResult, ReceiveBuffer
from qotp.send import SendBuffer
from qotp.stream import StreamState, StreamTable

__all__ = ["Connection", "ConnectionStatistics", "EarlyData"]

logger = logging.getLogger(__name__)

_ACK_ONLY = PayloadKind.ACK_ONLY
_tuple_new = tuple.__new__
_PING = PayloadKind.PING
_DATA = PayloadKind.DATA
_BUFFER_FULL = InsertResult.BUFFER_FULL
_REFUSED = InsertResult.REFUSED
_WRITABLE_LOW_WATER_BYTES = 256 * 1024
"""StreamWritable is reported when free send-buffer space climbs back past this."""


@dataclass(frozen=True, slots=True, kw_only=True)
class EarlyData:
    """Stream bytes that arrived as 0-RTT data, in the initiator's first packet.

    ``replayable`` is True when they were delivered before the initiator proved
    anything (ZeroRttPolicy.ACCEPT): a recorded first packet replayed after the
    strike register's window would deliver them again, as TLS 1.3 early data can
    be.  Under ZeroRttPolicy.DEFER (the default) they were held until the
    initiator completed the handshake, which a replay cannot do: False.
    """

    stream_id: int
    offset: int
    length: int
    replayable: bool


@dataclass(frozen=True, slots=True, kw_only=True)
class ConnectionStatistics:
    """A snapshot of one connection's counters and estimates."""

    smoothed_rtt_ns: int
    min_rtt_ns: int
    rto_ns: int
    bandwidth_estimate_bytes_per_s: int
    congestion_window_bytes: int
    congestion_state: str
    bytes_sent: int
    bytes_received: int
    datagrams_sent: int
    datagrams_received: int
    retransmitted_packets: int
    retransmitted_bytes: int
    dropped_datagrams: int
    replayed_datagrams: int
    """Of the dropped: authentic copies of packets already accepted (duplicates, replays)."""
    refused_stream_packets: int
    """Packets that would have opened a stream beyond the limits; not acknowledged."""
    open_streams: int
    peer_receive_window: int
    ack_starvation_episodes: int = 0
    """Times the peer was found pacing its ACKs to 10 ms (no RTT sample on its side);
    sending then follows :mod:`qotp.congestion.ack_starvation` until it stops."""
    ack_starvation_holes: int = 0
    """Holes its receive window reported meanwhile (each resent a span of packets)."""
    tail_probes: int = 0
    """Retransmissions that were tail-loss probes (counted in ``retransmitted_packets``)."""
    acks_repeated: int = 0
    """Packets only the peer's ACK repeat acknowledged: their own ACK was lost, and
    without the repeat they would have been retransmitted (qotp.payload)."""


class Connection:
    """One peer over one protection; drive it with the sans-IO surface."""

    def __init__(
        self,
        *,
        protection: Protection,
        address: Address,
        is_initiator: bool,
        now: int,
        configuration: QotpConfiguration | None = None,
        address_validated: bool = True,
    ) -> None:
        """``address_validated=False``: the handshake did not prove that ``address``
        reaches the peer (0-RTT under ZeroRttPolicy.ACCEPT); replies to it are held to
        three times the bytes received until it is proven (:mod:`qotp.path`)."""
        config = configuration or QotpConfiguration()
        self.configuration = config
        self.protection = protection
        self.connection_id = protection.connection_id
        self.path = PathValidator(address, validated=address_validated)
        """The peer's address and the validation of a new one (qotp.path)."""
        self.is_initiator = is_initiator
        self.send_buffer = SendBuffer(config.send_buffer_bytes)
        self.recovery = PacketRecovery(
            self.send_buffer,
            max_datagram_bytes=config.mtu,
            congestion_control=config.congestion_control,
        )
        self.rtt = self.recovery.rtt
        self.congestion = self.recovery.congestion
        self.ack_starvation = AckStarvation(max_datagram_bytes=config.mtu)
        #: When the protection's first handshake datagram left, and how many left before
        #: the reply: one, answered, is an RTT sample (the reference's initiator has one
        #: from its InitSnd, which it counts as a packet the InitRcv acknowledges).
        self._hello_sent_ns = -1
        self._hello_sends = 0
        self.receive_buffer = ReceiveBuffer(config.receive_buffer_bytes)
        self.streams = StreamTable()
        self._events: deque[Event] = deque()
        self._reported_address = address
        self._established = False
        #: The protection's handshake is complete (after which no payload is 0-RTT data).
        self._handshake_confirmed = False
        #: Established, handshake confirmed, path validated and nothing to probe: a
        #: packet from the peer's address takes the short path.
        self._settled = False
        self.early_data: list[EarlyData] = []
        """Stream bytes that arrived as 0-RTT data (see :class:`EarlyData`)."""
        self._sent_new_before_handshake = False
        self._closing = False
        self._terminated = False
        self._farewell_pending = False
        self._failure_farewell = False
        self._last_receive_ns = now
        self._pacing_deadline: int | None = None
        self._max_streams = config.max_streams
        self._max_stream_tombstones = config.max_stream_tombstones
        self.bytes_sent = 0
        self.bytes_received = 0
        self.datagrams_sent = 0
        self.datagrams_received = 0
        self.handshake_datagrams_received = 0
        """Datagrams the protection took for itself (handshake, alerts): proof of an answer."""
        self.dropped_datagrams = 0
        self.replayed_datagrams = 0
        self.last_drop_reason = ""
        """Why the latest dropped datagram was dropped (the endpoint counts by it)."""
        """Authentic copies of packets already accepted (network duplicates or replays)."""
        self.refused_stream_packets = 0
        """Packets refused because they would open a stream beyond the limits."""
        self.acks_repeated = 0
        """Packets acknowledged by the peer's ACK repeat only (their own ACK was lost)."""

    # -- state ----------------------------------------------------------------

    @property
    def address(self) -> Address:
        """Where replies go: the peer's latest *validated* address (qotp.path)."""
        return self.path.address

    @property
    def is_established(self) -> bool:
        """Whether the handshake completed."""
        return self._established

    @property
    def is_terminated(self) -> bool:
        """Whether the connection ended; it only drains its events then."""
        return self._terminated

    def statistics(self) -> ConnectionStatistics:
        """Current counters and estimates."""
        self.recovery.flush_ack_event()
        recovery = self.recovery
        return ConnectionStatistics(
            smoothed_rtt_ns=self.rtt.srtt_ns,
            min_rtt_ns=self.rtt.min_rtt_ns,
            rto_ns=self.rtt.base_rto_ns(),
            bandwidth_estimate_bytes_per_s=self.congestion.bandwidth_estimate_bytes_per_s,
            congestion_window_bytes=self.congestion.congestion_window_bytes,
            congestion_state=self.congestion.state_name,
            bytes_sent=self.bytes_sent,
            bytes_received=self.bytes_received,
            datagrams_sent=self.datagrams_sent,
            datagrams_received=self.datagrams_received,
            retransmitted_packets=recovery.retransmitted_packets,
            retransmitted_bytes=recovery.retransmitted_bytes,
            dropped_datagrams=self.dropped_datagrams,
            replayed_datagrams=self.replayed_datagrams,
            refused_stream_packets=self.refused_stream_packets,
            open_streams=len(self.streams),
            peer_receive_window=self.send_buffer.peer_window,
            ack_starvation_episodes=self.ack_starvation.episodes,
            ack_starvation_holes=self.ack_starvation.holes,
            tail_probes=recovery.probes_sent,
            acks_repeated=self.acks_repeated,
        )

    def next_event(self) -> Event | None:
        """The oldest pending event, or None."""
        return self._events.popleft() if self._events else None

    # -- commands -------------------------------------------------------------

    def _check_open(self) -> None:
        if self._terminated:
            raise LocalProtocolError("the connection is terminated")

    def send_stream_data(
        self, stream_id: int, data: bytes, *, now: int, end_stream: bool = False
    ) -> int:
        """Queue as much of ``data`` as the send buffer takes; return the count.

        With ``end_stream`` the stream is closed after the data, but only when all
        of it was accepted (otherwise write the rest, then close).
        """
        self._check_open()
        state = self.streams.get(stream_id)
        if state is None:
            state = self._open_local_stream(stream_id, now)
        if not state.can_write:
            raise LocalProtocolError(f"stream {stream_id} is closed for writing")
        accepted = self.send_buffer.write(stream_id, data) if data else 0
        if end_stream and accepted == len(data):
            self.close_stream(stream_id, now=now)
        return accepted

    def close_stream(self, stream_id: int, *, now: int) -> None:
        """Send FIN: the stream ends after what was written so far (idempotent).

        Closing a stream that already finished (and was removed) does nothing;
        a close on an unused id opens the stream and sends a bare CLOSE.
        """
        self._check_open()
        state = self.streams.get(stream_id)
        if state is None:
            if self.receive_buffer.is_finished(stream_id, now):
                return
            state = self._open_local_stream(stream_id, now)
        if state.can_write:
            state.close_send(self.send_buffer.close(stream_id))

    def _open_local_stream(self, stream_id: int, now: int) -> StreamState:
        """Open a stream for our application, within its budget of streams.

        Raising here (rather than sending) keeps us within what a peer with the
        same ``max_streams`` accepts, and keeps data off an id the peer still
        holds a tombstone for: it would acknowledge that data and drop it.
        """
        if self.receive_buffer.is_finished(stream_id, now):
            raise LocalProtocolError(
                f"stream {stream_id} ended less than "
                f"{STREAM_TOMBSTONE_LIFETIME_NS // 1_000_000_000} s ago; its id cannot be "
                "reused yet (the peer would take new data for a late retransmission)"
            )
        if self.streams.local_count >= self._max_streams:
            raise LocalProtocolError(
                f"{self._max_streams} streams are open (max_streams); wait for one to "
                "close (StreamClosed) before opening another"
            )
        state, _ = self.streams.open(stream_id)
        return state

    def ping(self, stream_id: int, *, now: int) -> None:
        """Send a PING on the stream (acknowledged, never retransmitted; an RTT probe)."""
        self._check_open()
        self.send_buffer.queue_ping(stream_id)

    def move_to(self, address: Address, *, now: int) -> None:
        """Send to the peer at ``address`` from now on: our own decision, not the peer's.

        For an address the application learned out of band (a hole punched to a
        peer reached through a relay).  Reported as :class:`PeerAddressChanged`;
        a PING goes out at once, so that the peer sees the new path.
        """
        self._check_open()
        if address == self.path.address:
            return
        self.path.move(address)
        self.send_buffer.queue_ping(PATH_PROBE_STREAM_ID)
        self._on_path_validated(address)

    def read(self, stream_id: int, max_bytes: int = -1, *, now: int) -> bytes:
        """Take up to ``max_bytes`` received in-order bytes of the stream (b"" if none).

        Reading frees receive-buffer space, which the next ACK advertises.
        """
        data = self.receive_buffer.read(stream_id, max_bytes)
        self._maybe_finish_receive(stream_id, now)
        return data

    def readable(self, stream_id: int) -> int:
        """Bytes that :meth:`read` would return now."""
        return self.receive_buffer.readable(stream_id)

    def at_eof(self, stream_id: int) -> bool:
        """Whether the peer closed the stream and everything before the close was read."""
        state = self.streams.get(stream_id)
        if state is None:
            # Removed streams are finished (while their tombstone lives); unknown
            # ones are open.
            return self.receive_buffer.is_finished(stream_id)
        return self.receive_buffer.at_eof(stream_id) or state.at_eof

    def send_space(self) -> int:
        """Bytes the send buffer would accept now (for back-pressure)."""
        return self.send_buffer.free_space

    def close(self, *, now: int) -> None:
        """Close every stream (FIN); the connection ends once they are all done."""
        if self._terminated:
            return
        self._closing = True
        for stream_id in self.streams.ids():
            state = self.streams.get(stream_id)
            if state is not None and state.can_write:
                state.close_send(self.send_buffer.close(stream_id))
        self._sweep_streams(now)

    def abort(self, *, now: int, detail: str = "") -> None:
        """End the connection at once, without waiting for anything (reason ABORTED)."""
        self._terminate(TerminationReason.ABORTED, detail, error=False)

    # -- receiving ------------------------------------------------------------

    def receive_datagram(self, data: bytes, address: Address, now: int) -> None:
        """Process one datagram routed to this connection; bad ones are counted and dropped."""
        if self._terminated:
            return
        try:
            raw = self.protection.open(data, now)
        except (DecodeError, DecryptError) as error:
            self.dropped_datagrams += 1
            if isinstance(error, ReplayedPacketError):
                self.replayed_datagrams += 1
                self.last_drop_reason = "replayed"
            else:
                self.last_drop_reason = getattr(error, "drop_reason", "unauthenticated")
            logger.debug("connection %016x: dropped datagram: %s", self.connection_id, error)
            return
        if raw is None:
            self.handshake_datagrams_received += 1
            self._on_handshake_datagram(now)
            return
        # Authenticated (and not a replay) from here on.
        self._last_receive_ns = now
        self.recovery.peer_heard_ns = now
        self.datagrams_received += 1
        if self._settled and address == self.path.address:
            # The per-packet path: handshake done, path validated, nothing to probe.
            try:
                payload = decode_payload(raw)
            except DecodeError as error:
                self.dropped_datagrams += 1
                self.last_drop_reason = "undecodable payload"
                logger.debug("connection %016x: undecodable payload: %s", self.connection_id, error)
                return
            try:
                self._process_payload(payload, now, raw)
            except RemoteProtocolError as error:
                self._terminate(TerminationReason.PROTOCOL_VIOLATION, str(error), error=True)
            return
        self._receive_unsettled(raw, data, address, now)

    def _receive_unsettled(self, raw: bytes, data: bytes, address: Address, now: int) -> None:
        """An authentic payload while the handshake or the peer's address is not settled."""
        path = self.path
        if address != path.address:
            # Replies move only once the address proves it reaches the peer (qotp.path).
            path.on_authenticated_packet(address, len(data))
        elif not path.validated:
            path.on_packet_from_unvalidated_address(len(data), self.protection.handshake_complete)
        if not self._established and (self.protection.handshake_complete or not self.is_initiator):
            # The responder holds the final keys from the first authenticated packet
            # on; the initiator once the reply opened.
            self._on_established(now)
            early = self.protection.take_early_payload()
            if early is not None:
                self._receive_early_payload(early.payload, early.replayable, now)
                if self._terminated:
                    return
        try:
            payload = decode_payload(raw)
        except DecodeError as error:
            self.dropped_datagrams += 1
            self.last_drop_reason = "undecodable payload"
            logger.debug("connection %016x: undecodable payload: %s", self.connection_id, error)
            return
        if not self._handshake_confirmed:
            if self.protection.handshake_complete:
                self._handshake_confirmed = True
            elif self.protection.early_data_replayable:
                self._note_early_data(payload, replayable=True)
        if path.has_candidates:
            ack = payload.ack
            if ack is not None and path.on_ack(ack[0], ack[1], ack[2], address):
                self._on_path_validated(address)
        self._settled = self._established and self._handshake_confirmed and not path.has_candidates
        try:
            self._process_payload(payload, now, raw)
        except RemoteProtocolError as error:
            self._terminate(TerminationReason.PROTOCOL_VIOLATION, str(error), error=True)

    def _receive_early_payload(self, raw: bytes, replayable: bool, now: int) -> None:
        """0-RTT data a completed handshake held back: processed before the packet at hand."""
        try:
            payload = decode_payload(raw)
        except DecodeError as error:  # checked when it arrived; kept for safety
            self.dropped_datagrams += 1
            self.last_drop_reason = "undecodable payload"
            logger.debug(
                "connection %016x: undecodable 0-RTT payload: %s", self.connection_id, error
            )
            return
        self._note_early_data(payload, replayable=replayable)
        try:
            self._process_payload(payload, now)
        except RemoteProtocolError as error:
            self._terminate(TerminationReason.PROTOCOL_VIOLATION, str(error), error=True)

    def _note_early_data(self, payload: Payload, *, replayable: bool) -> None:
        if payload.kind is _DATA and payload.data:
            self.early_data.append(
                EarlyData(
                    stream_id=payload.stream_id,
                    offset=payload.stream_offset,
                    length=len(payload.data),
                    replayable=replayable,
                )
            )

    def _on_path_validated(self, address: Address) -> None:
        old = self._reported_address
        self._reported_address = address
        logger.debug("connection %016x: replies move to %s", self.connection_id, address)
        self._events.append(
            PeerAddressChanged(
                connection_id=self.connection_id, old_address=old, new_address=address
            )
        )

    def _on_handshake_datagram(self, now: int) -> None:
        """The protection took a datagram for itself: no payload, no proof of the peer's address."""
        protection = self.protection
        if not self._established and protection.handshake_complete:
            self._on_established(now)
        if protection.failure is not None:
            self._on_protection_failure(protection.failure)

    def _on_protection_failure(self, failure: str) -> None:
        # The protection may owe the peer its reason (a DTLS alert): it leaves as a farewell.
        self._failure_farewell = not self._terminated
        if not self._established:
            self._terminate(TerminationReason.HANDSHAKE_FAILED, failure, error=True)
        elif self.protection.closed_by_peer:
            self._terminate(TerminationReason.CLOSED_BY_PEER, failure, error=False)
        else:
            self._terminate(TerminationReason.PROTOCOL_VIOLATION, failure, error=True)

    def _on_established(self, now: int) -> None:
        self._established = True
        if self.is_initiator and self._hello_sends == 1 and self._hello_sent_ns >= 0:
            # One hello, answered: its round trip is an RTT sample (Karn: not after repeats).
            self.rtt.update(now - self._hello_sent_ns, now)
        self._events.append(
            ConnectionEstablished(
                connection_id=self.connection_id,
                address=self.address,
                is_initiator=self.is_initiator,
                peer_public_key=self.protection.peer_identity,
            )
        )

    def _process_payload(self, payload: Payload, now: int, raw: bytes = b"") -> None:
        """Apply one decoded payload; ``raw`` is its encoding, for an ACK repeat."""
        ack = payload.ack
        if ack is not None:
            self._on_ack(ack, now)
        starvation = self.ack_starvation
        recovery = self.recovery
        had_hole = starvation.hole
        span = starvation.on_peer_datagram(
            now,
            carries_data=payload.kind is not _ACK_ONLY,
            window=None if ack is None else ack[3],
            waiting_packets=len(recovery.in_flight),
            min_rtt_ns=self.rtt.min_rtt_ns,
            resends_pending=recovery.suspects_pending,
        )
        if starvation.active is not recovery.estimates_frozen:
            self._on_starvation_change()
        if span is not None:
            recovery.suspect_sent_between(span.start_ns, span.end_ns)
        elif had_hole and not starvation.hole:
            recovery.clear_suspects()
        if payload.kind is _ACK_ONLY:
            if len(raw) > ACK_ONLY_SIZE_24 and ack is not None:
                self._on_ack_repeat(raw, ack, now)
            return
        stream_id = payload.stream_id
        data = payload.data
        self.bytes_received += len(data)
        receive = self.receive_buffer
        readable_before = receive.readable(stream_id)
        state = self.streams.get(stream_id)
        result = receive.insert(
            stream_id,
            payload.stream_offset,
            data,
            is_close=payload.is_close,
            now=now,
            # Evaluated only when the stream table misses (short-circuit).
            may_open_stream=state is not None or self._may_open_peer_stream(now),
        )
        if result is _BUFFER_FULL:
            return
        if state is None:
            if result is _REFUSED:
                self.refused_stream_packets += 1
                logger.debug(
                    "connection %016x: refused a packet opening stream %d (%d open, %d finished)",
                    self.connection_id,
                    stream_id,
                    self.streams.peer_count,
                    receive.tombstone_count(now),
                )
                return
            if not receive.has_stream(stream_id):
                return  # a PING, or a late retransmission for a stream already finished
            state, _ = self.streams.open(stream_id, by_peer=True)
            self._events.append(StreamOpened(connection_id=self.connection_id, stream_id=stream_id))
        if payload.is_close:
            close_offset = receive.close_offset(stream_id)
            if close_offset is not None:
                state.on_peer_close(close_offset)
        if result is InsertResult.ACCEPTED:
            # Edge-triggered: readers are told when a stream *becomes* readable
            # (or reaches its end), not once per packet.
            if (not readable_before and receive.readable(stream_id)) or (
                state.recv_close_offset is not None and receive.at_eof(stream_id)
            ):
                self._events.append(
                    StreamDataAvailable(connection_id=self.connection_id, stream_id=stream_id)
                )
        if state.recv_close_offset is not None:
            self._maybe_finish_receive(stream_id, now)

    def _on_ack_repeat(self, raw: bytes, ack: Ack, now: int) -> None:
        """The peer acknowledged once more the packet before ``ack`` (qotp.payload): it
        matters only when that packet's own ACK was lost."""
        repeat = decode_ack_repeat(raw, ack[1])
        if repeat is None:
            return
        stream_id = ack[0]
        offset, length = repeat
        if (stream_id, offset, length) in self.recovery.in_flight:
            self.acks_repeated += 1
            self._on_ack(_tuple_new(Ack, (stream_id, offset, length, ack[3])), now)

    def _on_starvation_change(self) -> None:
        """The peer started or stopped pacing its ACKs to 10 ms (see ack_starvation).

        While it does, its ACKs measure its own queue, not the path: the RTT
        estimator and the congestion controller stop listening, and sending follows
        the starvation pacer. Afterwards the controller's pacer forgets the debt
        those sends ran up on it, and its estimates start again from where they were.
        """
        active = self.ack_starvation.active
        self.recovery.estimates_frozen = active
        if active:
            logger.debug(
                "connection %016x: the peer paces its ACKs to 10 ms; sending at %d B/s",
                self.connection_id,
                self.ack_starvation.rate_bytes_per_s,
            )
            return
        logger.debug("connection %016x: the peer's ACKs come faster again", self.connection_id)
        pacer = getattr(self.congestion, "pacer", None)
        if isinstance(pacer, Pacer):
            pacer.reset()

    def _may_open_peer_stream(self, now: int) -> bool:
        """Whether the peer may open one more stream now (see the module docstring)."""
        return (
            self.streams.peer_count < self._max_streams
            and self.receive_buffer.tombstone_count(now) < self._max_stream_tombstones
        )

    def _on_ack(self, ack: Ack, now: int) -> None:
        send = self.send_buffer
        was_low = send.free_space < _WRITABLE_LOW_WATER_BYTES
        self.recovery.on_ack_received(ack[0], ack[1], ack[2], ack[3], now)
        if was_low and send.free_space >= _WRITABLE_LOW_WATER_BYTES:
            self._events.append(StreamWritable(connection_id=self.connection_id))
        if send.finished_streams:
            finished, send.finished_streams = send.finished_streams, []
            for stream_id in finished:
                state = self.streams.get(stream_id)
                if state is not None:
                    state.on_send_finished()
                    self._events.append(
                        StreamSendFinished(connection_id=self.connection_id, stream_id=stream_id)
                    )
                    self._sweep_stream(stream_id, now)

    def _maybe_finish_receive(self, stream_id: int, now: int) -> None:
        state = self.streams.get(stream_id)
        if state is None:
            return
        if not state.at_eof and self.receive_buffer.at_eof(stream_id):
            state.on_eof()
        self._sweep_stream(stream_id, now)

    def _sweep_stream(self, stream_id: int, now: int) -> None:
        state = self.streams.get(stream_id)
        if state is None or not state.is_closed:
            return
        self.streams.remove(stream_id)
        self.receive_buffer.finish_stream(stream_id, now)
        self.recovery.discard_stream(stream_id, now)
        self._events.append(StreamClosed(connection_id=self.connection_id, stream_id=stream_id))
        if self._closing and not len(self.streams):
            self._terminate(TerminationReason.CLOSED, "", error=False)

    def _sweep_streams(self, now: int) -> None:
        for stream_id in self.streams.closed_ids():
            self._sweep_stream(stream_id, now)
        if self._closing and not len(self.streams):
            self._terminate(TerminationReason.CLOSED, "", error=False)

    # -- sending --------------------------------------------------------------

    def datagrams_to_send(self, now: int) -> list[tuple[bytes, Address]]:
        """Everything that may leave now, with its destination.

        Handshake, retransmissions, data and ACKs go to the peer's address; path
        probes to the addresses being validated.
        """
        if self._terminated:
            return self._farewell_datagrams(now)
        self.recovery.flush_ack_event()
        protection = self.protection
        datagrams: list[tuple[bytes, Address]] = []
        if protection.can_carry_payload:
            if self.path.has_candidates:
                self._path_probes(now, datagrams)
            self._transport_datagrams(now, datagrams)
        # The protection's own datagrams go last: a 0-RTT hello is only needed
        # when the transport had nothing to put in the first packet.
        if not self._terminated:
            own = protection.datagrams_to_send(now)
            if own:
                address = self.path.address
                datagrams.extend((datagram, address) for datagram in own)
                if not protection.handshake_complete:
                    # The protection's hello is the one packet allowed before the reply.
                    self._sent_new_before_handshake = True
                    self._hello_sends += 1
                    if self._hello_sent_ns < 0:
                        self._hello_sent_ns = now
            if protection.failure is not None:
                self._on_protection_failure(protection.failure)
        return datagrams

    def _path_probes(self, now: int, datagrams: list[tuple[bytes, Address]]) -> None:
        """PINGs carrying a challenge to addresses that must prove themselves (qotp.path)."""
        protection = self.protection
        mtu = self.configuration.mtu
        overhead = mtu - protection.payload_budget(mtu)
        rto = self.rtt.base_rto_ns()
        payload_bytes = len(encode_payload(Payload(_PING, PATH_PROBE_STREAM_ID, 1 << 40)))
        for address, challenge in self.path.due_probes(now, rto, overhead + payload_bytes):
            payload = encode_payload(Payload(_PING, PATH_PROBE_STREAM_ID, challenge))
            datagrams.append((protection.seal(payload, now), address))
            self.datagrams_sent += 1

    def _transport_datagrams(self, now: int, datagrams: list[tuple[bytes, Address]]) -> None:
        # The per-packet path (~40 000 times a second): locals instead of attribute
        # look-ups, payload tuples built without their keyword-checking constructors.
        protection = self.protection
        config = self.configuration
        mtu = config.mtu
        limit = config.max_datagrams_per_call
        repeats = config.ack_repeats
        send = self.send_buffer
        recovery = self.recovery
        in_flight = recovery.in_flight
        next_retransmission = recovery.next_retransmission
        next_new_packet = send.next_new_packet
        on_packet_sent = recovery.on_packet_sent
        receive = self.receive_buffer
        congestion = self.congestion
        seal = protection.seal
        rto = self.rtt.base_rto_ns()
        budget = protection.payload_budget(mtu)
        handshake_complete = protection.handshake_complete
        path = self.path
        address = path.address
        first = len(datagrams)
        if not path.validated:
            # An unproven address gets three times what came from it (qotp.path).
            limit = min(limit, path.send_allowance(mtu))
        starvation = self.ack_starvation
        starved = starvation.active
        self._pacing_deadline = None
        data_allowed = True
        sent = 0
        # An ACK a retransmission had no room for (PacketRecovery.ack_displaced).
        held_ack = None
        while sent < limit:
            if held_ack is None:
                ack = receive.pop_ack()
            else:
                ack, held_ack = held_ack, None
            packet = None
            if data_allowed:
                send_time = (
                    starvation.next_send_time(now, mtu)
                    if starved
                    else congestion.next_send_time(now, mtu)
                )
                if send_time > now:
                    self._pacing_deadline = send_time
                    data_allowed = False
                else:
                    # A full window still lets due retransmissions out: they replace
                    # packets that are lost, and waiting for an ACK that cannot come
                    # would deadlock.
                    # A peer pacing its ACKs cannot clock a congestion window; only its
                    # receive window limits then, as for the reference's own sender.
                    allow_new = (handshake_complete or not self._sent_new_before_handshake) and (
                        starved or congestion.can_send(recovery.datagram_bytes_in_flight, mtu)
                    )
                    ack_offset = None if ack is None else ack[1]
                    try:
                        packet = next_retransmission(now, budget, rto, ack_offset)
                    except RetryLimitExceeded as error:
                        if self._give_up_on(error, now):
                            held_ack = ack  # still owed to the peer
                            continue
                        self._terminate(TerminationReason.RETRY_LIMIT, str(error), error=True)
                        return
                    if packet is None:
                        if allow_new:
                            packet = next_new_packet(now, budget, rto, ack_offset, in_flight)
                    elif recovery.ack_displaced:
                        held_ack, ack = ack, None
                    if packet is None:
                        data_allowed = False
                        if allow_new and not send.has_new_work():
                            recovery.on_app_limited()
            if packet is None and ack is None:
                break
            wire_ack = (
                None if ack is None else _tuple_new(Ack, (ack[0], ack[1], ack[2], receive.window))
            )
            if packet is None:
                ack_only = encode_payload(
                    _tuple_new(Payload, (_ACK_ONLY, 0, 0, b"", wire_ack, False))
                )
                if repeats and receive.repeat_offset >= 0 and ack is not None:
                    ack_only += encode_ack_repeat(
                        ack[1], receive.repeat_offset, receive.repeat_length
                    )
                datagrams.append((seal(ack_only, now), address))
                sent += 1
                continue
            stream_id, offset, data, is_close, is_ping, attempt = packet
            datagram = seal(
                encode_payload(
                    _tuple_new(
                        Payload,
                        (_PING if is_ping else _DATA, stream_id, offset, data, wire_ack, is_close),
                    )
                ),
                now,
            )
            datagrams.append((datagram, address))
            sent += 1
            if attempt == 1:
                self.bytes_sent += len(data)
            if not handshake_complete:
                self._sent_new_before_handshake = True
            on_packet_sent(packet, len(datagram), now)
            if starved:
                starvation.on_sent(now, len(datagram))
        if held_ack is not None:
            receive.return_ack(held_ack)
        self.datagrams_sent += sent
        if not path.validated:
            for datagram, _address in datagrams[first:]:
                path.on_sent_to_unvalidated_address(len(datagram))

    def _give_up_on(self, error: RetryLimitExceeded, now: int) -> bool:
        """A bare CLOSE the peer never acknowledges ends its stream, not the connection.

        The reference removes a stream once both directions are closed and then
        never sends the ACK for the peer's CLOSE; insisting would kill every
        connection to it a few seconds after each stream ends.
        """
        stream_id, _offset, length = error.key
        close_offset = self.send_buffer.close_offset(stream_id)
        if length != 0 or close_offset is None or _offset != close_offset:
            return False
        self.recovery.discard_stream(stream_id, now)
        state = self.streams.get(stream_id)
        if state is not None:
            state.on_send_finished()
            self._events.append(
                StreamSendFinished(connection_id=self.connection_id, stream_id=stream_id)
            )
            self._sweep_stream(stream_id, now)
        return True

    # -- timers ---------------------------------------------------------------

    def get_timer(self) -> int | None:
        """The next absolute deadline (ns) at which :meth:`handle_timer` must run."""
        if self._terminated:
            return None
        self.recovery.flush_ack_event()
        deadline = self._last_receive_ns + self.configuration.idle_timeout_ns
        protection_timer = self.protection.get_timer()
        if protection_timer is not None and protection_timer < deadline:
            deadline = protection_timer
        if self.protection.can_carry_payload:
            probe_deadline = self.path.next_deadline()
            if probe_deadline is not None and probe_deadline < deadline:
                deadline = probe_deadline
            rto = self.rtt.base_rto_ns()
            retransmit = self.recovery.next_deadline(rto)
            if not self.recovery.in_flight:
                probe = self.send_buffer.probe_deadline(rto)
                if probe is not None and (retransmit is None or probe < retransmit):
                    retransmit = probe
            pacing = self._pacing_deadline
            if pacing is not None:
                # Nothing leaves before the pacer allows it, retransmissions included.
                if retransmit is not None and retransmit < pacing:
                    retransmit = pacing
                if self.send_buffer.has_new_work() and pacing < deadline:
                    deadline = pacing
            if retransmit is not None and retransmit < deadline:
                deadline = retransmit
        return deadline

    def handle_timer(self, now: int) -> None:
        """Run expired timers: idle timeout and the protection's; sending follows."""
        if self._terminated:
            return
        self.recovery.flush_ack_event()
        if now >= self._last_receive_ns + self.configuration.idle_timeout_ns:
            self._terminate(
                TerminationReason.IDLE_TIMEOUT,
                f"nothing received for {self.configuration.idle_timeout_ns / 1e9:g} s",
                error=False,
            )
            return
        self.protection.handle_timer(now)
        self._pacing_deadline = None

    def has_pending_output(self) -> bool:
        """Whether :meth:`datagrams_to_send` would produce something right now (cheap hint)."""
        return (
            bool(self.receive_buffer.pending_acks)
            or self.send_buffer.has_new_work()
            or self.protection.datagrams_pending
            or self.path.probe_pending
        )

    # -- ending ---------------------------------------------------------------

    @property
    def has_farewell(self) -> bool:
        """Whether the ended connection still owes the peer its last ACKs (see below)."""
        if self._failure_farewell and self.protection.datagrams_pending:
            return True
        return self._farewell_pending and bool(self.receive_buffer.pending_acks)

    def _farewell_datagrams(self, now: int) -> list[tuple[bytes, Address]]:
        """ACK-only datagrams for what arrived last, once, after the connection ended well.

        The packet that ends a connection normally is often the peer's CLOSE: it
        must still be acknowledged, or the peer resends it until its retry limit
        and reports a failure where both sides closed cleanly.  A connection
        that ended because its protection failed sends what the protection
        still holds instead (a DTLS alert), so the peer learns why at once.
        """
        if self._failure_farewell:
            self._failure_farewell = False
            address = self.path.address
            return [(datagram, address) for datagram in self.protection.datagrams_to_send(now)]
        if not self._farewell_pending:
            return []
        self._farewell_pending = False
        receive = self.receive_buffer
        address = self.path.address
        datagrams = []
        repeats = self.configuration.ack_repeats
        while (ack := receive.pop_ack()) is not None:
            wire_ack = _tuple_new(Ack, (ack[0], ack[1], ack[2], receive.window))
            ack_only = encode_payload(_tuple_new(Payload, (_ACK_ONLY, 0, 0, b"", wire_ack, False)))
            if repeats and receive.repeat_offset >= 0:
                ack_only += encode_ack_repeat(ack[1], receive.repeat_offset, receive.repeat_length)
            datagrams.append((self.protection.seal(ack_only, now), address))
        return datagrams

    def _terminate(self, reason: TerminationReason, detail: str, *, error: bool) -> None:
        if self._terminated:
            return
        self._terminated = True
        self._farewell_pending = not error
        logger.debug("connection %016x terminated: %s %s", self.connection_id, reason.value, detail)
        self._events.append(
            ConnectionTerminated(
                connection_id=self.connection_id, reason=reason, detail=detail, error=error
            )
        )
