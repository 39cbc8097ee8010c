"""Send side of one QOTP connection: queued bytes, in-flight packets, retransmission.

Theory of operation
===================

The application hands bytes to :meth:`SendBuffer.write` per stream. They wait in
that stream's queue until :meth:`SendBuffer.next_packet` cuts them into packets.
A sent packet stays *in flight* until the peer acknowledges it or it is
retransmitted. The peer's ACK echoes the packet's exact ``(stream id, offset,
length)``, so that triple is the key of the in-flight registry and nothing else
(no ranges, no packet numbers) identifies what the peer received.

Facts taken from the Go reference (snd.go ``SendBuffer``, conn.go ``Flush`` and
``decode``, measurement.go ``backoff``, proto.go overheads), v0.2.19:

* One send buffer per connection with a capacity of 16 MiB
  (``sndBufferCapacity``), counting bytes that are queued *or* in flight. A write
  takes as many bytes as fit and reports how many (``QueueData``); space is
  freed only when an ACK removes an in-flight packet (``AcknowledgeRange``).
* Each stream has its own offset space; a packet's data starts at the stream's
  next unsent offset. The data budget of a packet is the MTU minus the crypto
  overhead of the current message type minus the payload header, and the
  payload header depends on whether an ACK rides along and on whether the
  stream offset *or* the ACK offset exceeds 0xFFFFFF (one flag switches both to
  48 bits): 8 bytes (24-bit) or 11 (48-bit) without an ACK, 18 or 24 with one
  (``calcCryptoOverheadWithData`` / ``calcProtoOverhead``).
* In-flight entries are keyed by ``(offset << 16) | length`` per stream, kept in
  insertion order; each records the data, the last send time, the send count,
  and whether it is a PING or carries the CLOSE flag.
* Retransmission: only the oldest entry of a stream is examined; it is due when
  ``now - last_send > RTO * 2^(sends - 1)`` with the RTO computed at that
  moment. A due PING is dropped, never resent. A due entry is re-encoded with
  the current message type and whatever ACK is pending; if its data no longer
  fits (the header grew, e.g. because an ACK is now piggybacked or the ACK
  offset crossed 2^24) it is split: the first part, sized to the budget, gets a
  new key and a send count one higher; the rest keeps the old entry (send count
  and send time unchanged, CLOSE flag kept) under a new key.
* Retry limit: ``backoff`` fails once the send count exceeds 5, so a packet is
  sent at most 6 times; the reference drops the connection on its next flush
  after the 6th send (about 6.2 s with the 200 ms default RTO) without waiting
  for an answer to that last send.
* An ACK whose key is in flight removes it, frees its bytes in the buffer and
  yields an RTT sample from the *last* send time; an ACK for a known stream but
  unknown key counts as a duplicate ACK (BBR backs off by 2 %); an ACK for an
  unknown stream is ignored. Every ACK, known or not, sets the peer's receive
  window to the value it carries.
* Bytes in flight: the connection adds the data length of every *new* packet
  (not of retransmissions) and subtracts the ACK's length on a successful ACK.
  Flow control: nothing but an ACK is sent while ``in_flight + MTU`` exceeds the
  peer's window. The initial peer window is 16 MiB.
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

* Retransmission looks at every in-flight packet, earliest deadline first,
  across all streams (one FIFO per send count, so the earliest deadline is one
  of at most :data:`MAX_SEND_ATTEMPTS` heads); the reference looks only at the
  oldest entry of the stream being flushed, which stalls recovery after burst
  losses.
* The retry limit (6 sends) is declared when the *last* send's backoff expires
  without any ACK from the peer since that send, not right after the send; the
  connection learns it from :class:`RetryLimitExceeded`. If other packets were
  ACKed meanwhile, the peer is alive and the packet is sent again at the
  longest backoff: with 20 % loss each way a round trip fails 36 % of the time,
  six in a row 0.2 % of the time, which would end a long transfer for nothing.
* Flow control allows exactly the peer's window: a new packet carries at most
  ``peer_window - bytes_in_flight`` bytes. Retransmissions are already counted
  in flight and are never held back by the window, but one larger than the
  peer's whole window is split to fit it, since the peer would drop it on every
  attempt (a peer buffer smaller than the initial 16 MiB assumption).
* Window probe: when the peer's window is zero and nothing at all is in flight,
  a PING goes out at most once per RTO, so the ACK that reopens the window is
  guaranteed to come (the reference can wait forever here).
* RTT samples follow Karn's rule: only packets sent once give a sample.

This module is sans-IO: time arrives as ``now`` (integer nanoseconds) and the
RTO comes from the caller's estimator.
"""

from __future__ import annotations

import logging
from collections import OrderedDict, deque
from typing import NamedTuple

from qotp.errors import LocalProtocolError, QotpError
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
    "MAX_SEND_ATTEMPTS",
    "SEND_BUFFER_BYTES",
    "AckResult",
    "InFlightPacket",
    "OutgoingPacket",
    "RetryLimitExceeded",
    "SendBuffer",
]

logger = logging.getLogger(__name__)

#: Default send buffer capacity (Go: sndBufferCapacity): queued plus unacknowledged bytes.
SEND_BUFFER_BYTES = 16 * 1024 * 1024
#: A packet is sent at most this often (Go: maxRetry = 5 retries after the first send).
MAX_SEND_ATTEMPTS = 6
#: Default peer receive window before the first ACK tells us better (Go: rcvBufferCapacity).
INITIAL_PEER_WINDOW_BYTES = 16 * 1024 * 1024


class RetryLimitExceeded(QotpError):
    """A packet went unanswered through all :data:`MAX_SEND_ATTEMPTS` sends.

    The peer is gone or the path is dead; the connection must end (with an event).
    """

    def __init__(self, key: PacketKey, attempts: int) -> None:
        stream_id, offset, length = key
        super().__init__(
            f"no ACK for stream {stream_id} offset {offset} length {length} after {attempts} sends"
        )
        self.key = key
        self.attempts = attempts


class OutgoingPacket(NamedTuple):
    """One packet chosen by :meth:`SendBuffer.next_packet`, for the payload encoder.

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


class AckResult(NamedTuple):
    """What one ACK did, for RTT, congestion control and stream state."""

    #: False when the key was not in flight (duplicate, or for a split packet).
    acked: bool
    stream_id: int
    #: Data bytes acknowledged (and freed in the send buffer); 0 for PING/bare CLOSE.
    length: int
    #: ``now - send time`` when the packet was sent exactly once, else None (Karn).
    rtt_sample_ns: int | None
    #: How often the acknowledged packet was sent.
    attempts: int
    is_close: bool
    is_ping: bool
    #: True exactly once per stream: its CLOSE and every byte before it are ACKed.
    send_finished: bool
    #: Data bytes acknowledged since the packet was (last) sent, this one included...
    delivered_bytes: int
    #: ...over this interval: delivery-rate sample ``delivered_bytes / interval``.
    delivery_interval_ns: int
    #: What the caller attached to the packet's last send (``InFlightPacket.sample``).
    sample: object | None = None


_NOT_ACKED_TEMPLATE = AckResult(False, 0, 0, None, 0, False, False, False, 0, 0, None)


class InFlightPacket:
    """One sent, not yet acknowledged packet (what :meth:`SendBuffer.acknowledge` returns).

    Read-only outside this module.
    """

    __slots__ = (
        "attempts",
        "backoff",
        "data",
        "delivered_at_send",
        "delivered_time_at_send",
        "is_close",
        "is_ping",
        "key",
        "lost",
        "sample",
        "sent_ns",
    )

    def __init__(
        self,
        key: PacketKey,
        data: bytes | memoryview,
        sent_ns: int,
        attempts: int,
        is_close: bool,
        is_ping: bool,
        delivered_at_send: int,
        delivered_time_at_send: int,
    ) -> None:
        self.key = key
        self.data = data
        self.sent_ns = sent_ns
        self.attempts = attempts
        #: Sends in a row with no ACK for anything in between (1 after an ACK): the
        #: RTO multiplier is ``2 ** (backoff - 1)`` and the retry limit counts these,
        #: so retransmissions while the peer is answering (fast, after a loss) neither
        #: stretch the timer nor bring the end closer.  It is also the index of the
        #: timer FIFO the packet waits in.
        self.backoff = 1
        self.is_close = is_close
        self.is_ping = is_ping
        self.delivered_at_send = delivered_at_send
        self.delivered_time_at_send = delivered_time_at_send
        #: The congestion controller's snapshot of the datagram now carrying this
        #: packet (opaque here), set by the caller through SendBuffer.last_record.
        #: Kept with the record, so that a split, an expired PING or a discarded
        #: stream releases it (through SendBuffer.lost_samples / released_samples)
        #: and the caller's count of datagram bytes in flight can never drift.
        self.sample: object | None = None
        #: Declared lost by a later ACK: waits in SendBuffer._lost, due at once.
        self.lost = False


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
    """The send side of one connection (Go: snd.go SendBuffer plus conn.go's flow control).

    Sans-IO: every time-dependent call takes ``now`` in nanoseconds, and the RTO
    comes from the caller's RTT estimator.
    """

    __slots__ = (
        "_delivered_bytes",
        "_delivered_time_ns",
        "_in_flight",
        "_last_probe_ns",
        "_latest_ack_ns",
        "_latest_acked_sent_ns",
        "_lost",
        "_reorder_window_ns",
        "reordered_acks",
        "_max_attempts",
        "_quiet_at_ns",
        "_quiet_rto_ns",
        "_ready",
        "_streams",
        "_timers",
        "buffered_bytes",
        "bytes_in_flight",
        "capacity",
        "lost_pings",
        "peer_window",
        "retransmitted_bytes",
        "retransmitted_packets",
        "finished_streams",
        "last_record",
        "lost_samples",
        "released_samples",
        "sent_bytes",
        "sent_packets",
        "split_packets",
    )

    def __init__(
        self,
        capacity: int = SEND_BUFFER_BYTES,
        *,
        initial_peer_window: int = INITIAL_PEER_WINDOW_BYTES,
        max_attempts: int = MAX_SEND_ATTEMPTS,
    ) -> None:
        if capacity <= 0:
            raise LocalProtocolError("send buffer capacity must be positive")
        if max_attempts < 1:
            raise LocalProtocolError("max_attempts must be at least 1")
        self.capacity = capacity
        #: Bytes queued or in flight; at most ``capacity`` (Go: SendBuffer.size).
        self.buffered_bytes = 0
        #: Data bytes sent and not yet acknowledged (Go: Conn.dataInFlight).
        self.bytes_in_flight = 0
        #: The peer's advertised free receive space, from its latest ACK (Go: rcvWndSize).
        self.peer_window = initial_peer_window
        self._max_attempts = max_attempts
        self._streams: dict[int, _SendStream] = {}
        #: Streams with new work, in round-robin order.
        self._ready: OrderedDict[int, None] = OrderedDict()
        self._in_flight: dict[PacketKey, InFlightPacket] = {}
        #: ``_timers[n]`` holds packets whose backoff is ``n + 1``, oldest send first: their
        #: deadlines share one multiplier, so each FIFO is also in deadline order.
        self._timers: list[OrderedDict[PacketKey, InFlightPacket]] = [
            OrderedDict() for _ in range(max_attempts)
        ]
        self._last_probe_ns: int | None = None
        #: ``now`` and RTO at which no retransmission was found due: at that same
        #: ``now`` none can become due (new sends are due an RTO later), so the rest
        #: of a batch of sends skips the search; a loss (``_lost``) still goes first.
        self._quiet_at_ns = -1
        self._quiet_rto_ns = -1
        #: When an ACK last matched a packet in flight (0: never).
        self._latest_ack_ns = 0
        #: Packets a later ACK showed to be lost, oldest first; due at once.
        self._lost: OrderedDict[PacketKey, InFlightPacket] = OrderedDict()
        #: Send time of the newest packet acknowledged so far.
        self._latest_acked_sent_ns = 0
        #: ACKs that arrived for a packet sent before one already acknowledged.
        self.reordered_acks = 0
        #: How far out of send order ACKs have been seen to arrive (RACK's reordering
        #: window): ACK-based loss detection waits at least this long, so a path or a
        #: peer that reorders (the reference acknowledges bursts very unevenly) does
        #: not turn every late ACK into a spurious retransmission.
        self._reorder_window_ns = 0
        self._delivered_bytes = 0
        self._delivered_time_ns = 0
        self.sent_packets = 0
        self.sent_bytes = 0
        self.retransmitted_packets = 0
        self.retransmitted_bytes = 0
        self.split_packets = 0
        self.lost_pings = 0
        #: Samples of datagrams declared lost (retransmitted, or an expired PING);
        #: the connection drains them to tell its congestion controller.
        self.lost_samples: list[object] = []
        #: Samples of datagrams forgotten without a verdict (discarded streams).
        self.released_samples: list[object] = []
        #: Streams whose sending :meth:`acknowledge` completed; the caller drains it.
        self.finished_streams: list[int] = []
        #: The in-flight record of the packet :meth:`next_packet` returned last, so that
        #: the caller can attach the datagram's congestion sample without a lookup.
        self.last_record: InFlightPacket | None = None

    # -- application side -------------------------------------------------------------

    @property
    def free_space(self) -> int:
        """Bytes :meth:`write` would accept now (for back-pressure / drain)."""
        return self.capacity - self.buffered_bytes

    @property
    def in_flight_packets(self) -> int:
        """Packets sent and neither acknowledged nor given up (PINGs included)."""
        return len(self._in_flight)

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

    def is_send_finished(self, stream_id: int) -> bool:
        """Whether the stream's CLOSE and all data before it are acknowledged."""
        stream = self._streams.get(stream_id)
        return stream is not None and stream.finished

    def queued_bytes(self, stream_id: int) -> int:
        """Bytes of the stream written but not yet sent."""
        stream = self._streams.get(stream_id)
        return 0 if stream is None else stream.queued_bytes

    def discard_stream(self, stream_id: int) -> int:
        """Forget the stream: drop its queued and in-flight data; return the bytes freed.

        For a stream the connection gives up on (reset, connection end, or the
        reference peer that removed its stream and will never ACK our CLOSE).
        """
        stream = self._streams.pop(stream_id, None)
        if stream is None:
            return 0
        self._ready.pop(stream_id, None)
        freed = stream.queued_bytes
        if stream.in_flight_count:
            for key in [key for key in self._in_flight if key[0] == stream_id]:
                record = self._in_flight.pop(key)
                self._unschedule(record)
                if record.sample is not None:
                    self.released_samples.append(record.sample)
                freed += len(record.data)
                self.bytes_in_flight -= len(record.data)
        self.buffered_bytes -= freed
        return freed

    # -- packet selection -------------------------------------------------------------

    def next_packet(
        self,
        now: int,
        *,
        budget: int,
        rto_ns: int,
        ack_offset: int | None = None,
        allow_new: bool = True,
    ) -> OutgoingPacket | None:
        """Choose the next packet to send, or None when there is nothing to send now.

        ``budget`` is the room for the transport payload (header + data), i.e. the
        datagram size minus the crypto overhead of the message type in use.
        ``ack_offset`` is the offset of the ACK that will ride along (None: no ACK);
        it decides the header size. Due retransmissions come first (earliest
        deadline first, across streams), then new data round-robin across streams.
        ``allow_new=False`` restricts the choice to retransmissions (e.g. while a
        handshake allows only one packet in flight).

        Raises :class:`RetryLimitExceeded` when a packet's last send timed out.
        """
        if self._in_flight and (
            self._lost or now != self._quiet_at_ns or rto_ns != self._quiet_rto_ns
        ):
            packet = self._next_retransmission(now, budget, rto_ns, ack_offset)
            if packet is not None:
                return packet
        if not allow_new or not self._ready:
            return None
        return self._next_new_packet(now, budget, rto_ns, ack_offset)

    def _earliest_due(self, rto_ns: int) -> tuple[int, InFlightPacket] | None:
        best: tuple[int, InFlightPacket] | None = None
        for index, timers in enumerate(self._timers):
            if not timers:
                continue
            record = next(iter(timers.values()))
            # RFC 6298 5.3: the timer restarts with every ACK for new data, so an RTO
            # counted from the send alone cannot fire while the path keeps answering
            # (losses then are found by ACKs, see on_ack).  For a silent peer the
            # latest ACK is older than the sends: the reference's schedule.
            sent = record.sent_ns
            latest_ack = self._latest_ack_ns
            deadline = (sent if sent > latest_ack else latest_ack) + (rto_ns << index)
            if best is None or deadline < best[0]:
                best = (deadline, record)
        return best

    def _next_retransmission(
        self, now: int, budget: int, rto_ns: int, ack_offset: int | None
    ) -> OutgoingPacket | None:
        while True:
            if self._lost:
                record = next(iter(self._lost.values()))
            else:
                due = self._earliest_due(rto_ns)
                if due is None or due[0] > now:
                    if rto_ns > 0:  # else a packet sent now is due now
                        self._quiet_at_ns = now
                        self._quiet_rto_ns = rto_ns
                    return None
                record = due[1]
            key = record.key
            if record.is_ping:
                # Go: a PING is removed, never resent.
                self._forget(record)
                self.lost_pings += 1
                if record.sample is not None:
                    self.lost_samples.append(record.sample)
                continue
            silent = self._latest_ack_ns <= record.sent_ns
            if silent and record.backoff >= self._max_attempts:
                # Sent the reference's six times in a row without the peer answering
                # anything, through the longest backoff: the peer or the path is gone.
                # Sends that an ACK for other data followed do not count: a peer that
                # keeps acknowledging is alive and the path only lossy (with 20 % loss
                # each way a packet fails six round trips in a row 0.2 % of the time,
                # which a transfer of thousands of packets meets every time).
                raise RetryLimitExceeded(key, record.attempts)
            backoff = record.backoff + 1 if silent else 1
            if backoff > self._max_attempts:
                backoff = self._max_attempts
            stream_id, offset, length = key
            if ack_offset is None:
                overhead = (
                    STREAM_HEADER_SIZE_48 if offset > MAX_OFFSET_24 else STREAM_HEADER_SIZE_24
                )
            elif offset > MAX_OFFSET_24 or ack_offset > MAX_OFFSET_24:
                overhead = STREAM_HEADER_WITH_ACK_SIZE_48
            else:
                overhead = STREAM_HEADER_WITH_ACK_SIZE_24
            max_data = min(budget - overhead, MAX_PACKET_DATA_BYTES)
            if max_data < 0 or (length and max_data == 0):
                return None
            if 0 < self.peer_window < max_data:
                # The peer cannot store more than its whole free space: a packet larger
                # than that would be dropped on every attempt (a smaller buffer than
                # our first packets assumed, or an application that stopped reading).
                max_data = self.peer_window
            self._unschedule(record)
            timers = self._timers[record.backoff - 1]
            if record.sample is not None:
                # The datagram that carried it last is lost; the new one gets its own.
                self.lost_samples.append(record.sample)
                record.sample = None
            if length <= max_data:
                if record.attempts < self._max_attempts:
                    record.attempts += 1
                record.backoff = backoff
                record.sent_ns = now
                record.delivered_at_send = self._delivered_bytes
                record.delivered_time_at_send = self._delivered_time_ns
                self._timers[backoff - 1][key] = record
                self.last_record = record
                self.retransmitted_packets += 1
                self.retransmitted_bytes += length
                return OutgoingPacket(
                    stream_id, offset, record.data, record.is_close, False, record.attempts
                )
            # Split (Go: ReadyToRetransmit): the head goes out now with a fresh key; the
            # tail keeps send count, send time and CLOSE flag, so it stays due.
            data = record.data
            head = InFlightPacket(
                (stream_id, offset, max_data),
                data[:max_data],
                now,
                min(record.attempts + 1, self._max_attempts),
                False,
                False,
                self._delivered_bytes,
                self._delivered_time_ns,
            )
            tail_key = (stream_id, offset + max_data, length - max_data)
            del self._in_flight[key]
            record.key = tail_key
            record.data = data[max_data:]
            self._in_flight[tail_key] = record
            timers[tail_key] = record
            timers.move_to_end(tail_key, last=False)
            head.backoff = backoff
            self._in_flight[head.key] = head
            self._timers[backoff - 1][head.key] = head
            self._streams[stream_id].in_flight_count += 1
            self.last_record = head
            self.split_packets += 1
            self.retransmitted_packets += 1
            self.retransmitted_bytes += max_data
            return OutgoingPacket(stream_id, offset, head.data, False, False, head.attempts)

    def _register(
        self,
        stream: _SendStream,
        offset: int,
        data: bytes | memoryview,
        now: int,
        is_close: bool,
        is_ping: bool,
    ) -> OutgoingPacket:
        length = len(data)
        if not self._in_flight:
            # Nothing in flight: an idle gap must not count as delivery time.
            self._delivered_time_ns = now
        key = (stream.stream_id, offset, length)
        record = InFlightPacket(
            key,
            data,
            now,
            1,
            is_close,
            is_ping,
            self._delivered_bytes,
            self._delivered_time_ns,
        )
        self._in_flight[key] = record
        self._timers[0][key] = record
        self.last_record = record
        stream.in_flight_count += 1
        self.bytes_in_flight += length
        self.sent_packets += 1
        self.sent_bytes += length
        return OutgoingPacket(stream.stream_id, offset, data, is_close, is_ping, 1)

    def _next_new_packet(
        self, now: int, budget: int, rto_ns: int, ack_offset: int | None
    ) -> OutgoingPacket | None:
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
        in_flight = self._in_flight
        for _ in range(len(ready)):
            stream_id = next(iter(ready))  # the head of the round-robin order
            stream = self._streams[stream_id]
            packet: OutgoingPacket | None = None
            offset = stream.next_offset
            overhead = overhead_48 if ack_extended or offset > MAX_OFFSET_24 else overhead_24
            if budget >= overhead:
                if stream.ping_pending and (stream_id, offset, 0) not in in_flight:
                    stream.ping_pending = False
                    packet = self._register(stream, offset, b"", now, False, True)
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
                        packet = self._register(stream, offset, data, now, is_close, False)
                    elif window <= 0 and window_blocked is None:
                        window_blocked = stream
                elif (
                    stream.close_offset is not None
                    and not stream.close_sent
                    and (stream_id, offset, 0) not in in_flight
                ):
                    stream.close_sent = True
                    packet = self._register(stream, offset, b"", now, True, False)
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
                return self._register(
                    window_blocked, window_blocked.next_offset, b"", now, False, True
                )
        return None

    def has_new_work(self) -> bool:
        """Whether :meth:`next_packet` could send something new right now (budget aside)."""
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

    def next_deadline(self, rto_ns: int) -> int | None:
        """Earliest time at which :meth:`next_packet` has a retransmission (or probe) to do."""
        if self._lost:
            return 0
        due = self._earliest_due(rto_ns)
        deadline = None if due is None else due[0]
        if (
            not self._in_flight
            and self.peer_window <= self.bytes_in_flight
            and any(self._streams[stream_id].queued_bytes for stream_id in self._ready)
        ):
            probe = 0 if self._last_probe_ns is None else self._last_probe_ns + rto_ns
            deadline = probe if deadline is None else min(deadline, probe)
        return deadline

    # -- acknowledgements -------------------------------------------------------------

    def _unschedule(self, record: InFlightPacket) -> None:
        """Take a record out of its retransmission queue (timer FIFO or lost list)."""
        if record.lost:
            record.lost = False
            del self._lost[record.key]
        else:
            del self._timers[record.backoff - 1][record.key]

    def _forget(self, record: InFlightPacket) -> None:
        key = record.key
        del self._in_flight[key]
        self._unschedule(record)
        self._streams[key[0]].in_flight_count -= 1

    def detect_losses(self, acked_sent_ns: int, now: int, loss_delay_ns: int) -> None:
        """Packets sent before an acknowledged one, and long enough ago, are lost.

        The time threshold of RFC 9002 section 6.1.2 (the caller passes
        ``9/8 * max(srtt, latest RTT)``, raised here to the reordering window seen
        so far): with one ACK per packet, an earlier packet still unacknowledged
        that long after is not merely reordered.  ``acked_sent_ns`` is the send
        time of the newest packet just acknowledged (negative: nothing to judge).
        Each timer FIFO is ordered by send time, so only heads are examined.
        """
        if acked_sent_ns < 0:
            return
        if loss_delay_ns < self._reorder_window_ns:
            loss_delay_ns = self._reorder_window_ns
        limit = now - loss_delay_ns
        if acked_sent_ns < limit:
            limit = acked_sent_ns
        lost = self._lost
        for timers in self._timers:
            while timers:
                record = next(iter(timers.values()))
                if record.sent_ns >= limit:
                    break
                del timers[record.key]
                record.lost = True
                lost[record.key] = record

    def acknowledge(
        self, stream_id: int, offset: int, length: int, now: int, peer_window: int
    ) -> InFlightPacket | None:
        """Apply one ACK; return the packet it acknowledged, or None (the per-ACK path).

        Go: AcknowledgeRange.  The window is taken from every ACK, matched or not,
        as the reference does.  An unmatched ACK is not an error: it is a duplicate,
        or it names a packet that was split for retransmission since.  A stream
        whose sending this ACK completes (CLOSE and every byte before it
        acknowledged) is appended to :attr:`finished_streams`.  Loss detection is
        the caller's next step (:meth:`detect_losses`), once per batch of ACKs.
        """
        self.peer_window = peer_window
        key = (stream_id, offset, length)
        record = self._in_flight.pop(key, None)
        if record is None:
            return None
        if record.lost:
            record.lost = False
            del self._lost[key]
        else:
            del self._timers[record.backoff - 1][key]
        stream = self._streams[stream_id]
        stream.in_flight_count -= 1
        sent = record.sent_ns
        if sent >= self._latest_acked_sent_ns:
            self._latest_acked_sent_ns = sent
        elif record.attempts == 1:
            self.reordered_acks += 1
            extent = self._latest_acked_sent_ns - sent
            window = extent + extent // 4
            if window > self._reorder_window_ns:
                self._reorder_window_ns = window
        data_length = len(record.data)
        self.bytes_in_flight -= data_length
        self.buffered_bytes -= data_length
        self._delivered_bytes += data_length
        self._delivered_time_ns = now
        self._latest_ack_ns = now
        if (
            stream.close_sent
            and not stream.finished
            and stream.in_flight_count == 0
            and stream.queued_bytes == 0
        ):
            stream.finished = True
            self.finished_streams.append(stream_id)
        return record

    def on_ack(
        self,
        stream_id: int,
        offset: int,
        length: int,
        now: int,
        *,
        peer_window: int | None = None,
        loss_delay_ns: int | None = None,
    ) -> AckResult:
        """Apply one ACK and describe what it did (:meth:`acknowledge`, then optionally
        :meth:`detect_losses` with ``loss_delay_ns``); ``peer_window`` is its decoded window.
        """
        finished = self.finished_streams
        finished_before = len(finished)
        record = self.acknowledge(
            stream_id, offset, length, now, self.peer_window if peer_window is None else peer_window
        )
        if record is None:
            return _NOT_ACKED_TEMPLATE._replace(stream_id=stream_id)
        send_finished = len(finished) > finished_before
        if send_finished:
            finished.pop()
        sent = record.sent_ns
        if loss_delay_ns is not None:
            self.detect_losses(sent, now, loss_delay_ns)
        return AckResult(
            True,
            stream_id,
            len(record.data),
            now - sent if record.attempts == 1 else None,
            record.attempts,
            record.is_close,
            record.is_ping,
            send_finished,
            self._delivered_bytes - record.delivered_at_send,
            now - record.delivered_time_at_send,
            record.sample,
        )
