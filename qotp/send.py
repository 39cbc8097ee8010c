"""Send side of one QOTP connection: queued bytes, new packets, flow control.

Theory of operation
===================

The application hands bytes to :meth:`SendBuffer.write` per stream. They wait in
that stream's queue until :meth:`SendBuffer.next_new_packet` cuts them into
packets, round-robin over streams. What happens to a packet once it left
(ACKs, losses, retransmission) is :mod:`qotp.recovery`'s business; it tells this
buffer when the peer acknowledged bytes, so that their space is freed.

Facts taken from the Go reference (snd.go ``SendBuffer``, conn.go ``Flush``),
v0.2.19:

* One send buffer per connection with a capacity of 16 MiB
  (``sndBufferCapacity``), counting bytes that are queued *or* in flight. A write
  takes as many bytes as fit and reports how many (``QueueData``); space is
  freed only when an ACK removes an in-flight packet (``AcknowledgeRange``).
* Each stream has its own offset space; a packet's data starts at the stream's
  next unsent offset. The data budget of a packet is the MTU minus the crypto
  overhead of the current message type minus the payload header
  (:mod:`qotp.payload`: 8 / 11 bytes, or 18 / 24 with an ACK riding along).
* Bytes in flight: the data length of every *new* packet is added, the length
  of an acknowledged one subtracted. Flow control: nothing but an ACK is sent
  while ``in_flight + MTU`` exceeds the peer's window. The initial peer window
  is 16 MiB; every ACK carries the current one.
* PING (``QueuePing``): an empty packet at the stream's current send offset,
  key ``(offset, 0)``; it is ACKed like data but dropped instead of resent.
* CLOSE (``Close``): the close offset is fixed at ``sent + queued`` when close is
  called (later writes fail). The packet whose data reaches that offset carries
  the CLOSE flag; if nothing is queued, an empty CLOSE packet at the close
  offset is sent once (key ``(close offset, 0)``, not while a PING with that key
  is in flight). A CLOSE is retransmitted and ACKed like data.
* The reference's "send side closed" test is: close offset set and the first
  in-flight key (insertion order, not lowest offset) is at or past it, or there
  is nothing in flight and everything was sent; so it may call the send side
  closed before its own CLOSE went out. This module reports a stream's send
  side finished only once its CLOSE is acknowledged and nothing of it is in
  flight.

Where we differ, on purpose
===========================

* Flow control allows exactly the peer's window: a new packet carries at most
  ``peer_window - bytes_in_flight`` bytes.
* Window probe: when the peer's window is zero and nothing at all is in flight,
  a PING goes out at most once per RTO, so the ACK that reopens the window is
  guaranteed to come (the reference can wait forever here).

This module is sans-IO: time arrives as ``now`` (integer nanoseconds) and the
RTO comes from the caller's estimator.
"""

from __future__ import annotations

import logging
from collections import OrderedDict, deque
from collections.abc import Collection
from typing import NamedTuple

from qotp.errors import LocalProtocolError
from qotp.payload import (
    MAX_OFFSET_24,
    MAX_OFFSET_48,
    MAX_PACKET_DATA_BYTES,
    MAX_STREAM_ID,
    STREAM_HEADER_SIZE_24,
    STREAM_HEADER_SIZE_48,
    STREAM_HEADER_WITH_ACK_SIZE_24,
    STREAM_HEADER_WITH_ACK_SIZE_48,
    PacketKey,
)

__all__ = [
    "INITIAL_PEER_WINDOW_BYTES",
    "SEND_BUFFER_BYTES",
    "OutgoingPacket",
    "SendBuffer",
]

logger = logging.getLogger(__name__)

#: Default send buffer capacity (Go: sndBufferCapacity): queued plus unacknowledged bytes.
SEND_BUFFER_BYTES = 16 * 1024 * 1024
#: Default peer receive window before the first ACK tells us better (Go: rcvBufferCapacity).
INITIAL_PEER_WINDOW_BYTES = 16 * 1024 * 1024

_tuple_new = tuple.__new__


class OutgoingPacket(NamedTuple):
    """One packet to send (new, or a retransmission chosen by :mod:`qotp.recovery`).

    ``data`` is empty for a PING and for a bare CLOSE; both still carry the stream
    header (stream id and offset). The ACK to piggyback is the caller's business.
    """

    stream_id: int
    offset: int
    data: bytes | memoryview
    is_close: bool
    is_ping: bool
    #: 1 for a first transmission, higher for a retransmission.
    attempt: int


class _SendStream:
    """Per-stream send state: the queue of unsent bytes and the close bookkeeping."""

    __slots__ = (
        "chunks",
        "close_offset",
        "close_sent",
        "finished",
        "in_flight_count",
        "next_offset",
        "ping_pending",
        "queued_bytes",
        "stream_id",
    )

    def __init__(self, stream_id: int) -> None:
        self.stream_id = stream_id
        self.chunks: deque[memoryview] = deque()
        self.queued_bytes = 0
        #: Offset of the first byte not yet sent (Go: bytesSentOffset).
        self.next_offset = 0
        self.close_offset: int | None = None
        self.close_sent = False
        self.finished = False
        self.ping_pending = False
        self.in_flight_count = 0

    def take(self, length: int) -> bytes | memoryview:
        """Remove ``length`` queued bytes; a view when they lie in one chunk, else one join."""
        chunks = self.chunks
        first = chunks[0]
        first_length = len(first)
        self.queued_bytes -= length
        if first_length > length:
            chunks[0] = first[length:]
            return first[:length]
        if first_length == length:
            chunks.popleft()
            return first
        parts: list[memoryview] = []
        needed = length
        while needed:
            chunk = chunks[0]
            if len(chunk) <= needed:
                parts.append(chunk)
                chunks.popleft()
                needed -= len(chunk)
            else:
                parts.append(chunk[:needed])
                chunks[0] = chunk[needed:]
                needed = 0
        return b"".join(parts)

    def has_new_work(self) -> bool:
        """Whether a new (not retransmitted) packet is waiting: data, PING or bare CLOSE."""
        return (
            self.queued_bytes > 0
            or self.ping_pending
            or (self.close_offset is not None and not self.close_sent)
        )


class SendBuffer:
    """The unsent part of one connection's streams, and its flow control.

    Go: snd.go SendBuffer plus conn.go's flow control.  Sans-IO: every
    time-dependent call takes ``now`` in nanoseconds, and the RTO comes from the
    caller's RTT estimator.
    """

    __slots__ = (
        "_last_probe_ns",
        "_ready",
        "_streams",
        "buffered_bytes",
        "bytes_in_flight",
        "capacity",
        "finished_streams",
        "peer_window",
        "sent_bytes",
        "sent_packets",
    )

    def __init__(
        self,
        capacity: int = SEND_BUFFER_BYTES,
        *,
        initial_peer_window: int = INITIAL_PEER_WINDOW_BYTES,
    ) -> None:
        if capacity <= 0:
            raise LocalProtocolError("send buffer capacity must be positive")
        self.capacity = capacity
        #: Bytes queued or in flight; at most ``capacity`` (Go: SendBuffer.size).
        self.buffered_bytes = 0
        #: Data bytes sent and not yet acknowledged (Go: Conn.dataInFlight).
        self.bytes_in_flight = 0
        #: The peer's advertised free receive space, from its latest ACK (Go: rcvWndSize).
        self.peer_window = initial_peer_window
        self._streams: dict[int, _SendStream] = {}
        #: Streams with new work, in round-robin order.
        self._ready: OrderedDict[int, None] = OrderedDict()
        self._last_probe_ns: int | None = None
        self.sent_packets = 0
        self.sent_bytes = 0
        #: Streams whose sending completed (CLOSE and every byte before it
        #: acknowledged); the caller drains it.
        self.finished_streams: list[int] = []

    # -- application side -------------------------------------------------------------

    @property
    def free_space(self) -> int:
        """Bytes :meth:`write` would accept now (for back-pressure / drain)."""
        return self.capacity - self.buffered_bytes

    def _stream(self, stream_id: int) -> _SendStream:
        stream = self._streams.get(stream_id)
        if stream is None:
            if not 0 <= stream_id <= MAX_STREAM_ID:
                raise LocalProtocolError(f"stream id {stream_id} is not a u32")
            stream = self._streams[stream_id] = _SendStream(stream_id)
        return stream

    def write(self, stream_id: int, data: bytes | bytearray | memoryview) -> int:
        """Queue as much of ``data`` as the buffer has room for; return that count.

        ``bytes`` are kept without copying; mutable buffers are copied, so the
        caller may reuse them. Writing after :meth:`close` is a LocalProtocolError.
        """
        stream = self._stream(stream_id)
        if stream.close_offset is not None:
            raise LocalProtocolError(f"stream {stream_id} is closed for writing")
        view = memoryview(data).cast("B")
        accepted = min(
            len(view),
            self.capacity - self.buffered_bytes,
            MAX_OFFSET_48 + 1 - (stream.next_offset + stream.queued_bytes),
        )
        if accepted <= 0:
            return 0
        view = view[:accepted]
        if not view.readonly:
            view = memoryview(bytes(view))
        stream.chunks.append(view)
        stream.queued_bytes += accepted
        self.buffered_bytes += accepted
        if stream_id not in self._ready:
            self._ready[stream_id] = None
        return accepted

    def close(self, stream_id: int) -> int:
        """Mark the end of the stream at its current end (sent + queued); return that offset.

        The packet that reaches the offset carries the CLOSE flag, or a bare CLOSE is
        sent when nothing is queued. Closing twice keeps the first offset (Go: Close).
        """
        stream = self._stream(stream_id)
        if stream.close_offset is None:
            stream.close_offset = stream.next_offset + stream.queued_bytes
            if stream_id not in self._ready:
                self._ready[stream_id] = None
        return stream.close_offset

    def queue_ping(self, stream_id: int) -> None:
        """Ask for a PING on the stream: acknowledged by the peer, never retransmitted."""
        stream = self._stream(stream_id)
        stream.ping_pending = True
        if stream_id not in self._ready:
            self._ready[stream_id] = None

    def close_offset(self, stream_id: int) -> int | None:
        """The stream's close offset once :meth:`close` was called, else None."""
        stream = self._streams.get(stream_id)
        return None if stream is None else stream.close_offset

    def queued_bytes(self, stream_id: int) -> int:
        """Bytes of the stream written but not yet sent."""
        stream = self._streams.get(stream_id)
        return 0 if stream is None else stream.queued_bytes

    def discard_stream(self, stream_id: int, *, in_flight_bytes: int) -> None:
        """Forget the stream: its queue, and ``in_flight_bytes`` recovery gave up on.

        Called through :meth:`qotp.recovery.PacketRecovery.discard_stream`, which
        drops the stream's packets in flight.
        """
        stream = self._streams.pop(stream_id, None)
        if stream is None:
            return
        self._ready.pop(stream_id, None)
        self.bytes_in_flight -= in_flight_bytes
        self.buffered_bytes -= stream.queued_bytes + in_flight_bytes

    # -- told by recovery -------------------------------------------------------------

    def on_packet_acked(self, stream_id: int, data_bytes: int) -> None:
        """The peer acknowledged a packet of the stream: free its bytes (the per-ACK path).

        A stream whose sending this completes (CLOSE and every byte before it
        acknowledged) is appended to :attr:`finished_streams`.
        """
        stream = self._streams[stream_id]
        stream.in_flight_count -= 1
        self.bytes_in_flight -= data_bytes
        self.buffered_bytes -= data_bytes
        if (
            stream.close_sent
            and not stream.finished
            and stream.in_flight_count == 0
            and stream.queued_bytes == 0
        ):
            stream.finished = True
            self.finished_streams.append(stream_id)

    def on_packet_forgotten(self, stream_id: int) -> None:
        """A PING of the stream expired unanswered (it is never resent)."""
        self._streams[stream_id].in_flight_count -= 1

    def on_packet_split(self, stream_id: int) -> None:
        """A retransmission was split in two: the stream has one more packet in flight."""
        self._streams[stream_id].in_flight_count += 1

    # -- new packets ------------------------------------------------------------------

    def _register(
        self,
        stream: _SendStream,
        offset: int,
        data: bytes | memoryview,
        is_close: bool,
        is_ping: bool,
    ) -> OutgoingPacket:
        length = len(data)
        stream.in_flight_count += 1
        self.bytes_in_flight += length
        self.sent_packets += 1
        self.sent_bytes += length
        return _tuple_new(OutgoingPacket, (stream.stream_id, offset, data, is_close, is_ping, 1))

    def next_new_packet(
        self,
        now: int,
        budget: int,
        rto_ns: int,
        ack_offset: int | None,
        in_flight: Collection[PacketKey],
    ) -> OutgoingPacket | None:
        """The next new packet, round-robin over streams, or None.

        ``budget`` is the room for the transport payload (header + data), i.e. the
        datagram size minus the crypto overhead of the message type in use.
        ``ack_offset`` is the offset of the ACK that will ride along (None: no ACK);
        it decides the header size.  ``in_flight`` holds the keys of the packets in
        flight (recovery's registry): no PING or bare CLOSE reuses a key still in
        flight, and only with nothing at all in flight does a stream the peer's
        window blocks send a window probe.
        """
        window = self.peer_window - self.bytes_in_flight
        window_blocked: _SendStream | None = None
        # Payload header size (qotp.payload: 8 / 11 bytes, or 18 / 24 with an ACK).
        if ack_offset is None:
            overhead_24, overhead_48 = STREAM_HEADER_SIZE_24, STREAM_HEADER_SIZE_48
            ack_extended = False
        else:
            overhead_24 = STREAM_HEADER_WITH_ACK_SIZE_24
            overhead_48 = STREAM_HEADER_WITH_ACK_SIZE_48
            ack_extended = ack_offset > MAX_OFFSET_24
        ready = self._ready
        for _ in range(len(ready)):
            stream_id = next(iter(ready))  # the head of the round-robin order
            stream = self._streams[stream_id]
            packet: OutgoingPacket | None = None
            offset = stream.next_offset
            overhead = overhead_48 if ack_extended or offset > MAX_OFFSET_24 else overhead_24
            if budget >= overhead:
                if stream.ping_pending and (stream_id, offset, 0) not in in_flight:
                    stream.ping_pending = False
                    packet = self._register(stream, offset, b"", False, True)
                elif stream.queued_bytes:
                    length = min(
                        stream.queued_bytes, budget - overhead, MAX_PACKET_DATA_BYTES, window
                    )
                    if length > 0:
                        data = stream.take(length)
                        close_offset = stream.close_offset
                        is_close = close_offset is not None and offset + length >= close_offset
                        stream.next_offset = offset + length
                        if is_close:
                            stream.close_sent = True
                        packet = self._register(stream, offset, data, is_close, False)
                    elif window <= 0 and window_blocked is None:
                        window_blocked = stream
                elif (
                    stream.close_offset is not None
                    and not stream.close_sent
                    and (stream_id, offset, 0) not in in_flight
                ):
                    stream.close_sent = True
                    packet = self._register(stream, offset, b"", True, False)
            if stream.has_new_work():
                ready.move_to_end(stream_id)
            else:
                del ready[stream_id]
            if packet is not None:
                return packet
        if window_blocked is not None and not in_flight:
            last = self._last_probe_ns
            if last is None or now >= last + rto_ns:
                # Window probe: its ACK carries the reopened window.
                self._last_probe_ns = now
                return self._register(window_blocked, window_blocked.next_offset, b"", False, True)
        return None

    def has_new_work(self) -> bool:
        """Whether :meth:`next_new_packet` could send something right now (budget aside)."""
        window_open = self.peer_window > self.bytes_in_flight
        for stream_id in self._ready:
            stream = self._streams[stream_id]
            if stream.queued_bytes and window_open:
                return True
            if stream.ping_pending or (
                stream.close_offset is not None
                and not stream.close_sent
                and not stream.queued_bytes
            ):
                return True
        return False

    def probe_deadline(self, rto_ns: int) -> int | None:
        """When a window probe is due (call only with nothing in flight), else None."""
        if self.peer_window <= self.bytes_in_flight and any(
            self._streams[stream_id].queued_bytes for stream_id in self._ready
        ):
            return 0 if self._last_probe_ns is None else self._last_probe_ns + rto_ns
        return None
