"""Our handshake flights: packing, fragmentation, retransmission (RFC 6347 4.2.4).

Theory of operation
-------------------
Everything we send during a handshake belongs to the current *flight*.  The
handshake starts one with :meth:`Flights.begin`, adds messages
(:meth:`add_handshake`, which numbers them with ``message_seq``) and other
records (:meth:`add_record`, e.g. ChangeCipherSpec), then calls
:meth:`send`.  Sending cuts every handshake message into fragments that fit
the MTU after the record overhead of the epoch it was queued in, seals one
record per fragment and packs as many records as fit into each datagram.

A flight that expects an answer arms the retransmit timer: 1 s, doubling up
to 60 s, at most 6 times (all configurable).  The last flight of a handshake
expects none; it is kept and resent when the peer repeats its own last flight
(:meth:`resend_on_peer_repeat`), at most once per received datagram.

DTLS 1.3 (RFC 9147 7) acknowledges records instead of answering with a
flight: every record we send is remembered with the handshake bytes it
carried (:meth:`sent_record`), :meth:`acknowledge` marks those bytes as
received, and a retransmission sends only what is not acknowledged yet.  When
everything is acknowledged the timer stops.  DTLS 1.2 never calls
:meth:`acknowledge`, so it always resends the whole flight.

Sans-IO: datagrams go to the ``outgoing`` list the connection owns; time only
comes in as ``now``.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass, field

from . import handshake as hs
from .reassembly import merge_range
from .record_layer import RecordLayer
from .records import ContentType

__all__ = ["MIN_FRAGMENT_BYTES", "FlightEntry", "Flights", "SentFragment"]

logger = logging.getLogger(__name__)
message_logger = logging.getLogger("dtls.messages")

# Even a hopelessly small MTU gets fragments of at least this many body bytes.
MIN_FRAGMENT_BYTES = 16


@dataclass(slots=True)
class FlightEntry:
    """One message (or one non-handshake record) of the current flight."""

    content_type: int
    epoch: int
    data: bytes  # handshake: the whole message with its 12-byte header; else the payload
    acknowledged: list[tuple[int, int]] = field(default_factory=list)  # body byte ranges


@dataclass(frozen=True, slots=True)
class SentFragment:
    """What one record we sent carried: bytes ``[start, end)`` of entry ``index``'s body."""

    index: int
    start: int
    end: int


class Flights:
    """The current flight, its retransmission timer and (1.3) its acknowledgements."""

    __slots__ = (
        "_entries",
        "_initial_retransmit_ns",
        "_max_retransmissions",
        "_max_retransmit_ns",
        "_records",
        "_resent_this_datagram",
        "_sent",
        "begun",
        "expects_reply",
        "mtu",
        "next_message_seq",
        "outgoing",
        "retransmissions",
        "retransmit_deadline",
        "retransmit_interval_ns",
    )

    def __init__(
        self,
        records: RecordLayer,
        outgoing: list[bytes],
        *,
        mtu: int,
        initial_retransmit_ns: int,
        max_retransmit_ns: int,
        max_retransmissions: int,
    ) -> None:
        self._records = records
        self.outgoing = outgoing
        self.mtu = mtu
        self._initial_retransmit_ns = initial_retransmit_ns
        self._max_retransmit_ns = max_retransmit_ns
        self._max_retransmissions = max_retransmissions
        self._entries: list[FlightEntry] = []
        self._sent: dict[tuple[int, int], SentFragment] = {}
        self._resent_this_datagram = False
        self.begun = 0  # flights started so far (the connection notes which message began one)
        self.next_message_seq = 0
        self.expects_reply = False
        self.retransmit_deadline: int | None = None
        self.retransmit_interval_ns = initial_retransmit_ns
        self.retransmissions = 0

    # ------------------------------------------------------------------ building a flight

    def begin(self) -> None:
        """Start a new flight (the previous one is answered, or replaced)."""
        self.begun += 1
        self._entries = []
        self._sent = {}

    def add_handshake(self, msg_type: int, body: bytes) -> bytes:
        """Queue a handshake message with the next ``message_seq``; returns it whole.

        The whole (unfragmented) form is what enters the handshake transcript.
        """
        message = hs.encode_handshake(msg_type, self.next_message_seq, body)
        if message_logger.isEnabledFor(logging.INFO):
            message_logger.info(
                ">>> %s (message_seq %d, %d bytes)",
                hs.message_name(msg_type),
                self.next_message_seq,
                len(body),
            )
        self.next_message_seq += 1
        self._entries.append(FlightEntry(ContentType.handshake, self._records.write_epoch, message))
        return message

    def add_record(self, content_type: int, data: bytes) -> None:
        """Queue a non-handshake record (ChangeCipherSpec) in the current write epoch."""
        if content_type == ContentType.change_cipher_spec:
            message_logger.info(">>> change_cipher_spec")
        self._entries.append(FlightEntry(content_type, self._records.write_epoch, data))

    @property
    def empty(self) -> bool:
        """Whether there is no flight to (re)send."""
        return not self._entries

    # ------------------------------------------------------------------ sending

    def send(self, now: int, *, expects_reply: bool) -> None:
        """Send the flight and (if it expects a reply) arm a fresh retransmit timer."""
        self.expects_reply = expects_reply
        self.retransmissions = 0
        self.retransmit_interval_ns = self._initial_retransmit_ns
        self.retransmit_deadline = now + self.retransmit_interval_ns if expects_reply else None
        self.emit()

    def emit(self) -> None:
        """Seal the flight's unacknowledged parts and pack them into datagrams."""
        records = self._records
        sealed: list[bytes] = []
        for index, entry in enumerate(self._entries):
            if entry.content_type != ContentType.handshake:
                sealed.append(records.seal(entry.content_type, entry.epoch, entry.data))
                continue
            room = self.mtu - records.overhead(entry.epoch) - hs.HANDSHAKE_HEADER_BYTES
            room = max(room, MIN_FRAGMENT_BYTES)
            message = entry.data
            body_length = len(message) - hs.HANDSHAKE_HEADER_BYTES
            msg_type = message[0]
            message_seq = int.from_bytes(message[4:6], "big")
            for start, end in _missing(entry.acknowledged, body_length):
                if start == 0 and end == body_length and body_length <= room:
                    pieces = [(0, body_length)]
                else:
                    pieces = [(at, min(at + room, end)) for at in range(start, end, room)]
                for piece_start, piece_end in pieces:
                    if start == 0 and piece_end - piece_start == body_length:
                        fragment = message
                    else:
                        fragment = hs.encode_handshake_fragment(
                            msg_type,
                            body_length,
                            message_seq,
                            piece_start,
                            message[
                                hs.HANDSHAKE_HEADER_BYTES + piece_start : hs.HANDSHAKE_HEADER_BYTES
                                + piece_end
                            ],
                        )
                    sequence_number = records.next_sequence_number(entry.epoch)
                    self._sent[(entry.epoch, sequence_number)] = SentFragment(
                        index, piece_start, piece_end
                    )
                    sealed.append(records.seal(ContentType.handshake, entry.epoch, fragment))
        datagram = b""
        for record in sealed:
            if datagram and len(datagram) + len(record) > self.mtu:
                self.outgoing.append(datagram)
                datagram = b""
            datagram += record
        if datagram:
            self.outgoing.append(datagram)

    # ------------------------------------------------------------------ timers and repeats

    def on_timer(self, now: int) -> bool:
        """Retransmit if the timer expired; False when retransmissions are used up."""
        deadline = self.retransmit_deadline
        if deadline is None or now < deadline:
            return True
        if self.retransmissions >= self._max_retransmissions:
            return False
        self.retransmissions += 1
        self.retransmit_interval_ns = min(2 * self.retransmit_interval_ns, self._max_retransmit_ns)
        message_logger.info(
            ">>> retransmitting the flight (%d of at most %d, next wait %.0f s)",
            self.retransmissions,
            self._max_retransmissions,
            self.retransmit_interval_ns / 1e9,
        )
        self.emit()
        self.retransmit_deadline = now + self.retransmit_interval_ns
        return True

    def stop(self) -> None:
        """No more retransmissions (handshake over, or connection closed)."""
        self.retransmit_deadline = None

    def new_datagram(self) -> None:
        """A datagram from the peer starts: allow one resend for it."""
        self._resent_this_datagram = False

    def resend_on_peer_repeat(self, *, established: bool) -> None:
        """The peer repeated its previous flight: ours was lost, send it again.

        RFC 6347 4.2.4.  Once established only the side that sent the last flight
        answers: the other side answering too would make two finished peers
        ping-pong forever.
        """
        if established and self.expects_reply:
            return
        if self._entries and not self._resent_this_datagram:
            self._resent_this_datagram = True
            message_logger.info(">>> the peer repeated its flight: resending ours")
            self.emit()

    # ------------------------------------------------------------------ acknowledgements (1.3)

    def sent_record(self, epoch: int, sequence_number: int) -> SentFragment | None:
        """What a record we sent in this flight carried (None: not one of ours)."""
        return self._sent.get((epoch, sequence_number))

    def acknowledge(self, record_numbers: Iterable[tuple[int, int]]) -> bool:
        """Mark the handshake bytes those (epoch, sequence) records carried as received.

        Returns True when the whole flight is acknowledged; the timer then stops.
        Unknown record numbers are ignored (RFC 9147 7.1).
        """
        for record_number in record_numbers:
            sent = self._sent.get(record_number)
            if sent is None:
                continue
            entry = self._entries[sent.index]
            entry.acknowledged = merge_range(entry.acknowledged, sent.start, sent.end)
        done = self.acknowledged
        if done:
            self.stop()
        return done

    @property
    def acknowledged(self) -> bool:
        """Whether every handshake message of the flight was acknowledged completely."""
        for entry in self._entries:
            if entry.content_type != ContentType.handshake:
                continue
            body_length = len(entry.data) - hs.HANDSHAKE_HEADER_BYTES
            if _missing(entry.acknowledged, body_length):
                return False
        return bool(self._entries)


def _missing(covered: list[tuple[int, int]], length: int) -> list[tuple[int, int]]:
    """The parts of ``[0, length)`` not in ``covered`` (an empty body is one empty part)."""
    if length == 0:
        return [] if covered else [(0, 0)]
    gaps: list[tuple[int, int]] = []
    position = 0
    for start, end in covered:
        if start > position:
            gaps.append((position, start))
        position = max(position, end)
    if position < length:
        gaps.append((position, length))
    return gaps
