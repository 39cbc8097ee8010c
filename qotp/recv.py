"""Receive side of one QOTP connection: reassembly, dedup, close offsets, ACK queue.

Theory of operation
===================

Every stream is a byte sequence. For each stream we keep three regions:

* ``[0, read_offset)``: handed to the application and forgotten;
* ``[read_offset, next_offset)``: contiguous, readable, not yet read (a list of
  chunks, so reading costs one copy and receiving in order costs none);
* beyond ``next_offset``: out-of-order segments in a ``SortedDict`` keyed by
  offset, never overlapping each other and never touching ``next_offset``.

Incoming data is checked against whatever of the two buffered regions it
overlaps: identical bytes are fine (retransmissions, re-splits), different bytes
end the connection with :class:`OverlapMismatchError`. Only the bytes that are
new are stored; they are views of the caller's (immutable) payload, not copies.

Facts taken from the Go reference (rcv.go ``ReceiveBuffer``, conn.go ``decode``
and ``Flush``, stream.go ``Read``), v0.2.19:

* One receive buffer per connection, 16 MiB by default (``rcvBufferCapacity``),
  counting every stored byte not yet read by the application, in order or not.
* ``Insert`` drops a packet (and does not ACK it) when ``size + len(data)``
  exceeds the capacity, even if the data is a duplicate; the sender retransmits.
* Every other data packet is ACKed with its exact ``(stream, offset, length)``,
  duplicates included (the earlier ACK may have been lost). A PING or a CLOSE
  without data is ACKed as ``(stream, offset, 0)`` (``EmptyInsert``). ACKs wait
  in a FIFO; each outgoing packet carries at most one, and the free space
  ``capacity - size`` is written into it at send time (log-encoded).
* Data entirely below the application's read position is a duplicate. An
  exactly matching start offset keeps the longer of the two segments; other
  overlaps are trimmed against the neighbours. Overlapping bytes that differ
  make the reference ``panic`` (the whole process dies): we raise
  :class:`OverlapMismatchError`, a RemoteProtocolError, so only that connection
  ends.
* CLOSE: the close offset is ``StreamOffset + len(data)`` of the packet with the
  close flag. A second CLOSE with another offset is only logged by the
  reference; data at or after the close offset is ACKed and dropped.
* A stream's receive direction is closed once the application has read up to
  the close offset; a CLOSE at offset 0 closes it at once.
* The reference never bounds the number of streams or pending ACKs, and forgets
  a finished stream completely.

Where we differ, on purpose
===========================

* The capacity check counts only *new* bytes, so duplicates are always ACKed.
* A buffer full of out-of-order data would never drain (the sender may overshoot
  a stale window, and ACKed data cannot be dropped again). So a stream with
  nothing readable may store the in-order bytes it waits for beyond the
  capacity, up to :data:`IN_ORDER_RESERVE_BYTES` in total; the advertised window
  is then 0 until the application reads.
* Identical ACKs waiting in the queue are sent once: the reference counts a
  repeated ACK as a duplicate ACK and its BBR then cuts its bandwidth estimate.
  An ACK-only payload does repeat the stream's previous ACK, in bytes the
  reference ignores (:mod:`qotp.payload`, "ACK repeats"): :meth:`ReceiveBuffer.pop_ack`
  keeps, per stream, the key it gave out last.
* Contradictions about the end of a stream (two different close offsets, data
  past the close offset, a close offset below data already received) raise
  :class:`CloseOffsetError`; no correct peer produces them.
* The ACK queue is bounded (:data:`MAX_PENDING_ACKS`); an ACK beyond that is
  dropped and counted, which only costs the peer a retransmission.
* A PING on a stream without receive state is acknowledged and leaves no state
  behind (the reference creates the stream).
* A new stream gets receive state only when the caller allows it
  (``may_open_stream``; the connection's stream limit); otherwise its packet is
  :attr:`InsertResult.REFUSED`: nothing stored, no ACK, the peer retransmits.
* Finished streams leave a *tombstone* (:class:`StreamTombstones`), so that a
  late retransmission of one is acknowledged again but not taken for the first
  packet of a new stream. The reference keeps nothing (a late retransmission
  there resurrects the stream).

Tombstones
==========

A stream is finished once the application read it to the peer's close offset
and our own CLOSE was acknowledged, so every byte the peer can still send for it
was received before: any later packet for its id is a retransmission whose
earlier ACK was lost. It must be acknowledged again (or the peer never stops)
and must not be delivered: without the tombstone a copy at offset 0 would open
the stream anew and hand the same bytes to the application twice.

How long is enough? The peer sends a packet at most six times, waiting
``RTO * 2**(k - 1)`` before the k-th retransmission, with the RTO clamped to at
most 2 s: its last copy leaves at most ``(1 + 2 + 4 + 8 + 16) * 2 s = 62 s``
after the first (:data:`PEER_RETRANSMISSION_SPAN_NS`), and the first left
before we finished the stream. Allowing the copy 30 s in the network (the
reference discards RTT samples above 30 s; a connection silent that long has
ended) gives 92 s; a tombstone lives :data:`STREAM_TOMBSTONE_LIFETIME_NS`
(120 s) after the last packet for its stream, since every late packet renews it.
With the reference as the peer nothing can arrive later. Our own sender goes on
after the sixth send while the peer keeps acknowledging *other* packets (a lossy
but live path), at its longest backoff of 64 s; since each copy that arrives
renews the tombstone, only a copy following more than 120 s of lost copies *and*
lost ACKs can outlive it. That copy would open the stream anew: data at offset
0 would reach the application a second time, data further in would leave a
stream that never becomes readable. That is the residual risk of a bound, and
the reason the lifetime is not shorter.

The other side of the trade-off: while its tombstone lives, a stream id cannot
be reused. Data on a reused id would be acknowledged and dropped, so the
connection refuses to open a local stream on an id it holds a tombstone for
(LocalProtocolError). That covers the usual case only: the peer's tombstone
starts when *it* finishes the stream, possibly later than ours. Nothing on the
wire tells a reused id from a late copy; applications should not reuse ids.

Cost: tombstones are u32 in arrays, not objects. Ids finished within one
*generation* (at most :data:`STREAM_TOMBSTONE_LIFETIME_NS` / 8, or 8192 ids)
sit in a sorted array, 4 bytes each; a full generation is sealed into runs of
consecutive ids (8 bytes a run, so sequentially numbered streams cost almost
nothing) and expires as a whole. Every id thus lives at least the lifetime and
at most one generation longer. The count is capped by the connection
(``QotpConfiguration.max_stream_tombstones``), which refuses new peer streams
rather than forget a tombstone early: a legitimate peer is slowed down, never
handed a duplicate.
"""

from __future__ import annotations

import logging
from array import array
from bisect import bisect_left, bisect_right
from collections import deque
from enum import Enum

from sortedcontainers import SortedDict

from qotp.congestion.rtt import MAX_RTO_NS
from qotp.errors import LocalProtocolError, RemoteProtocolError
from qotp.payload import MAX_OFFSET_48, MAX_PACKET_DATA_BYTES, PacketKey

__all__ = [
    "IN_ORDER_RESERVE_BYTES",
    "MAX_PENDING_ACKS",
    "PEER_RETRANSMISSION_SPAN_NS",
    "RECV_BUFFER_BYTES",
    "STREAM_TOMBSTONE_LIFETIME_NS",
    "CloseOffsetError",
    "InsertResult",
    "OverlapMismatchError",
    "ReceiveBuffer",
    "StreamIntegrityError",
    "StreamTombstones",
]

logger = logging.getLogger(__name__)

#: Default receive buffer capacity (Go: rcvBufferCapacity), shared by all streams.
RECV_BUFFER_BYTES = 16 * 1024 * 1024
#: In-order bytes a stream with nothing readable may store beyond the capacity (one
#: maximal packet): the way out when out-of-order data fills the whole buffer.
IN_ORDER_RESERVE_BYTES = 0xFFFF
#: ACKs waiting to be sent, at most; more are dropped (the peer retransmits).
MAX_PENDING_ACKS = 16384
#: Compact a stream's list of readable chunks once this many are consumed.
_COMPACT_CHUNKS = 256
_SECOND_NS = 1_000_000_000
#: The latest a peer sends a copy of a packet after its first send: six sends,
#: ``RTO * 2**(k - 1)`` before the k-th retransmission, RTO at most 2 s (62 s).
PEER_RETRANSMISSION_SPAN_NS = (1 + 2 + 4 + 8 + 16) * MAX_RTO_NS
#: How long a finished stream's id is remembered after the last packet for it:
#: the retransmission span plus 30 s in the network is 92 s; we keep 120 s.
STREAM_TOMBSTONE_LIFETIME_NS = 120 * _SECOND_NS
#: A tombstone generation spans at most this long (expiry granularity) ...
_TOMBSTONE_GENERATION_NS = STREAM_TOMBSTONE_LIFETIME_NS // 8
#: ... and at most this many ids (32 KiB; bounds the cost of an insertion).
_TOMBSTONE_GENERATION_IDS = 8192
_STREAM_ID_LIMIT = 1 << 32
_U32 = "I" if array("I").itemsize >= 4 else "L"


class StreamIntegrityError(RemoteProtocolError):
    """The peer contradicted data or a close offset it sent before; the connection ends."""

    def __init__(self, message: str, *, stream_id: int) -> None:
        super().__init__(message)
        self.stream_id = stream_id


class OverlapMismatchError(StreamIntegrityError):
    """Retransmitted bytes differ from bytes already received at the same offsets.

    The Go reference panics here (rcv.go Insert); we end only this connection.
    """


class CloseOffsetError(StreamIntegrityError):
    """A CLOSE disagrees with an earlier CLOSE or with data received on the stream."""


class InsertResult(Enum):
    """What :meth:`ReceiveBuffer.insert` did with a packet."""

    #: New bytes stored (or a PING / CLOSE recorded); ACK queued.
    ACCEPTED = "accepted"
    #: Nothing new; ACK queued again since the first one may have been lost.
    DUPLICATE = "duplicate"
    #: The new bytes do not fit; dropped without an ACK, the peer will retransmit.
    BUFFER_FULL = "buffer_full"
    #: The packet would open a new stream, which the caller did not allow; dropped
    #: without an ACK and without keeping state, the peer will retransmit.
    REFUSED = "refused"


Chunk = bytes | memoryview


class _RecvStream:
    """Reassembly state of one stream."""

    __slots__ = (
        "acked_length",
        "acked_offset",
        "close_offset",
        "head",
        "highest_end",
        "last_receive_ns",
        "next_offset",
        "read_offset",
        "ready_chunks",
        "ready_starts",
        "segments",
        "stream_id",
    )

    def __init__(self, stream_id: int) -> None:
        self.stream_id = stream_id
        self.read_offset = 0
        self.next_offset = 0
        #: Readable chunks; ``ready_starts[i]`` is the offset of ``ready_chunks[i]``;
        #: entries before ``head`` are consumed.
        self.ready_chunks: list[Chunk] = []
        self.ready_starts: list[int] = []
        self.head = 0
        self.segments: SortedDict = SortedDict()
        self.close_offset: int | None = None
        #: End of the highest byte received (for close-offset checks).
        self.highest_end = 0
        self.last_receive_ns = 0
        #: The packet whose ACK went out last on this stream (offset -1: none yet), for
        #: the ACK repeat of the next one (qotp.payload).
        self.acked_offset = -1
        self.acked_length = 0

    def ready_equal(self, start: int, data: memoryview) -> bool:
        """Whether the readable bytes from ``start`` equal ``data`` (all inside the region)."""
        starts = self.ready_starts
        index = bisect_right(starts, start, self.head) - 1
        position = 0
        wanted = len(data)
        chunks = self.ready_chunks
        while position < wanted:
            chunk = chunks[index]
            inner = start + position - starts[index]
            take = min(len(chunk) - inner, wanted - position)
            if chunk[inner : inner + take] != data[position : position + take]:
                return False
            position += take
            index += 1
        return True

    def append_ready(self, offset: int, chunk: Chunk) -> None:
        self.ready_chunks.append(chunk)
        self.ready_starts.append(offset)
        self.next_offset = offset + len(chunk)


class _SealedTombstones:
    """One expired-as-a-whole generation of tombstones: sorted runs of consecutive ids."""

    __slots__ = ("expires_ns", "firsts", "lasts")

    def __init__(self, sorted_ids: array[int], expires_ns: int) -> None:
        self.expires_ns = expires_ns
        firsts: list[int] = []
        lasts: list[int] = []
        previous = -2
        for stream_id in sorted_ids:
            if stream_id == previous + 1:
                lasts[-1] = stream_id
            else:
                firsts.append(stream_id)
                lasts.append(stream_id)
            previous = stream_id
        #: ``firsts[i]..lasts[i]`` (inclusive) are finished; sorted, disjoint runs.
        self.firsts = array(_U32, firsts)
        self.lasts = array(_U32, lasts)

    def __len__(self) -> int:
        return len(self.firsts)

    def __contains__(self, stream_id: int) -> bool:
        index = bisect_right(self.firsts, stream_id) - 1
        return index >= 0 and stream_id <= self.lasts[index]


class StreamTombstones:
    """Ids of finished streams, each kept for at least a lifetime after it was added.

    See "Tombstones" in the module docstring for why and for how long. Ids go
    into an open generation, a sorted ``array`` of u32 (4 bytes an id; in-order
    ids append, others cost one memmove). Once it spans
    :data:`_TOMBSTONE_GENERATION_NS` or holds :data:`_TOMBSTONE_GENERATION_IDS`
    ids it is sealed into runs of consecutive ids (8 bytes a run) and expires as
    a whole, ``lifetime_ns`` after its newest id. Adding an id that is present
    renews it. Membership costs one bisection per generation (a handful); only
    packets for streams without receive state ask.
    """

    __slots__ = (
        "_lifetime_ns",
        "_open",
        "_open_latest_ns",
        "_open_since_ns",
        "_sealed",
        "_sealed_runs",
    )

    def __init__(self, lifetime_ns: int = STREAM_TOMBSTONE_LIFETIME_NS) -> None:
        if lifetime_ns <= 0:
            raise LocalProtocolError("tombstone lifetime must be positive")
        self._lifetime_ns = lifetime_ns
        self._open = array(_U32)
        self._open_since_ns = 0
        self._open_latest_ns = 0
        self._sealed: deque[_SealedTombstones] = deque()
        self._sealed_runs = 0

    def __len__(self) -> int:
        """Entries kept: ids of the open generation plus runs of the sealed ones.

        An id renewed in a later generation counts once per generation.
        """
        return self._sealed_runs + len(self._open)

    def __contains__(self, stream_id: object) -> bool:
        if not isinstance(stream_id, int):
            return False
        open_ids = self._open
        index = bisect_left(open_ids, stream_id)
        if index < len(open_ids) and open_ids[index] == stream_id:
            return True
        return any(stream_id in generation for generation in self._sealed)

    def add(self, stream_id: int, now: int) -> None:
        """Remember ``stream_id`` (again) until at least ``now`` plus the lifetime."""
        if not 0 <= stream_id < _STREAM_ID_LIMIT:
            raise LocalProtocolError(f"stream id {stream_id} is not a u32")
        self.expire(now)
        open_ids = self._open
        if open_ids and (
            now - self._open_since_ns >= _TOMBSTONE_GENERATION_NS
            or len(open_ids) >= _TOMBSTONE_GENERATION_IDS
        ):
            self._seal()
            open_ids = self._open
        if not open_ids:
            self._open_since_ns = self._open_latest_ns = now
        if not open_ids or stream_id > open_ids[-1]:
            open_ids.append(stream_id)
        else:
            index = bisect_left(open_ids, stream_id)
            if open_ids[index] != stream_id:
                open_ids.insert(index, stream_id)
        if now > self._open_latest_ns:
            self._open_latest_ns = now

    def expire(self, now: int) -> None:
        """Forget generations whose newest id is older than the lifetime."""
        sealed = self._sealed
        while sealed and sealed[0].expires_ns <= now:
            self._sealed_runs -= len(sealed.popleft())
        if self._open and self._open_latest_ns + self._lifetime_ns <= now:
            self._open = array(_U32)

    def _seal(self) -> None:
        generation = _SealedTombstones(self._open, self._open_latest_ns + self._lifetime_ns)
        self._sealed.append(generation)
        self._sealed_runs += len(generation)
        self._open = array(_U32)


class ReceiveBuffer:
    """The receive side of one connection (Go: rcv.go ReceiveBuffer).

    Raises only our own errors: :class:`StreamIntegrityError` subclasses (the peer
    contradicted itself: end the connection) and RemoteProtocolError for offsets
    that cannot exist on the wire.
    """

    __slots__ = (
        "_ack_keys",
        "_acks",
        "_finished",
        "_streams",
        "buffered_bytes",
        "capacity",
        "dropped_acks",
        "dropped_full",
        "duplicate_packets",
        "max_pending_acks",
        "repeat_length",
        "repeat_offset",
    )

    def __init__(
        self, capacity: int = RECV_BUFFER_BYTES, *, max_pending_acks: int = MAX_PENDING_ACKS
    ) -> None:
        if capacity <= 0:
            raise LocalProtocolError("receive buffer capacity must be positive")
        self.capacity = capacity
        #: Stored, unread bytes over all streams (Go: ReceiveBuffer.size).
        self.buffered_bytes = 0
        self.max_pending_acks = max_pending_acks
        self._streams: dict[int, _RecvStream] = {}
        self._finished = StreamTombstones()
        self._acks: deque[PacketKey] = deque()
        self._ack_keys: set[PacketKey] = set()
        self.duplicate_packets = 0
        self.dropped_full = 0
        self.dropped_acks = 0
        #: For the ACK :meth:`pop_ack` returned last: the packet whose ACK went out
        #: before it on its stream (offset -1: none), which an ACK-only payload
        #: acknowledges once more (qotp.payload, "ACK repeats").
        self.repeat_offset = -1
        self.repeat_length = 0

    # -- ACK queue --------------------------------------------------------------------

    @property
    def window(self) -> int:
        """Free receive space to advertise in the next ACK (Go: capacity - Size())."""
        return max(0, self.capacity - self.buffered_bytes)

    @property
    def pending_acks(self) -> int:
        """ACKs waiting to be sent."""
        return len(self._acks)

    def pop_ack(self) -> PacketKey | None:
        """The key of the oldest packet to acknowledge, or None (Go: GetSndAck).

        The caller adds the receive window (:attr:`window`) when it encodes the ACK,
        and may repeat the ACK :attr:`repeat_offset` names in an ACK-only payload.
        """
        if not self._acks:
            return None
        ack = self._acks.popleft()
        self._ack_keys.discard(ack)
        stream = self._streams.get(ack[0])
        if stream is None:
            self.repeat_offset = -1
        else:
            self.repeat_offset = stream.acked_offset
            self.repeat_length = stream.acked_length
            stream.acked_offset = ack[1]
            stream.acked_length = ack[2]
        return ack

    def return_ack(self, ack: PacketKey) -> None:
        """Put back an ACK :meth:`pop_ack` gave out that found no datagram: it goes first,
        and the stream's previous ACK is again the one its repeat names."""
        if ack not in self._ack_keys:
            self._acks.appendleft(ack)
            self._ack_keys.add(ack)
            stream = self._streams.get(ack[0])
            if stream is not None and stream.acked_offset == ack[1]:
                stream.acked_offset = self.repeat_offset
                stream.acked_length = self.repeat_length

    def _queue_ack(self, stream_id: int, offset: int, length: int) -> None:
        ack = (stream_id, offset, length)
        if ack in self._ack_keys:
            return
        if len(self._acks) >= self.max_pending_acks:
            self.dropped_acks += 1
            return
        self._acks.append(ack)
        self._ack_keys.add(ack)

    # -- inserting --------------------------------------------------------------------

    def insert(
        self,
        stream_id: int,
        offset: int,
        data: bytes | memoryview,
        *,
        now: int,
        is_close: bool = False,
        may_open_stream: bool = True,
    ) -> InsertResult:
        """Take one data / PING / CLOSE packet of a stream (Go: Insert, EmptyInsert, Close).

        ``data`` is kept by reference, so it must not change afterwards (a ``bytes``
        object or a read-only view of one; writable views are copied). Empty
        ``data`` is a PING, or a bare CLOSE with ``is_close``. ACK-only packets
        have no stream header and must not be passed here.

        ``may_open_stream=False`` refuses data or a CLOSE for a stream that has
        neither receive state nor a tombstone (:attr:`InsertResult.REFUSED`).
        """
        length = len(data)
        end = offset + length
        if offset < 0 or end > MAX_OFFSET_48 + 1 or length > MAX_PACKET_DATA_BYTES:
            raise RemoteProtocolError(
                f"stream {stream_id}: segment {offset}+{length} outside the 48-bit offset space"
            )
        stream = self._streams.get(stream_id)
        if stream is None:
            # Off the per-packet path: a new stream, a PING, or a late retransmission.
            return self._insert_unknown(stream_id, offset, data, is_close, now, may_open_stream)
        stream.last_receive_ns = now
        close_offset = stream.close_offset
        if is_close:
            if close_offset is not None and close_offset != end:
                raise CloseOffsetError(
                    f"stream {stream_id}: CLOSE at {end} after CLOSE at {close_offset}",
                    stream_id=stream_id,
                )
            if end < stream.highest_end:
                raise CloseOffsetError(
                    f"stream {stream_id}: CLOSE at {end} below received data up to "
                    f"{stream.highest_end}",
                    stream_id=stream_id,
                )
        elif length and close_offset is not None and end > close_offset:
            raise CloseOffsetError(
                f"stream {stream_id}: data up to {end} past CLOSE at {close_offset}",
                stream_id=stream_id,
            )
        if not length:
            if is_close and close_offset is None:
                stream.close_offset = end
                result = InsertResult.ACCEPTED
            else:
                result = InsertResult.ACCEPTED if not is_close else InsertResult.DUPLICATE
            self._queue_ack(stream_id, offset, 0)
            return result
        if isinstance(data, memoryview):
            if not data.readonly:
                data = bytes(data)
            elif data.format != "B" or data.ndim != 1:
                data = data.cast("B")
        segments = stream.segments
        # Fast path: the next expected bytes, not reaching into a stored segment.
        if offset == stream.next_offset and (not segments or segments.keys()[0] >= end):
            if length > self.capacity - self.buffered_bytes and not self._may_use_reserve(
                stream, length
            ):
                self.dropped_full += 1
                return InsertResult.BUFFER_FULL
            stream.append_ready(offset, data)
            self.buffered_bytes += length
            if end > stream.highest_end:
                stream.highest_end = end
            if is_close:
                stream.close_offset = end
            if segments:
                self._pull_segments(stream)
            self._queue_ack(stream_id, offset, length)
            return InsertResult.ACCEPTED
        pieces = self._new_pieces(stream, offset, memoryview(data))
        new_bytes = 0
        for _piece_offset, piece_view in pieces:
            new_bytes += len(piece_view)
        if (
            new_bytes
            and new_bytes > self.capacity - self.buffered_bytes
            and not (
                pieces[0][0] == stream.next_offset and self._may_use_reserve(stream, new_bytes)
            )
        ):
            self.dropped_full += 1
            return InsertResult.BUFFER_FULL
        if is_close:
            stream.close_offset = end
        self._queue_ack(stream_id, offset, length)
        if not new_bytes:
            self.duplicate_packets += 1
            return InsertResult.DUPLICATE
        for piece_offset, piece in pieces:
            if piece_offset == stream.next_offset:
                stream.append_ready(piece_offset, piece)
            else:
                segments[piece_offset] = piece
        self.buffered_bytes += new_bytes
        if end > stream.highest_end:
            stream.highest_end = end
        if segments:
            self._pull_segments(stream)
        return InsertResult.ACCEPTED

    def _insert_unknown(
        self,
        stream_id: int,
        offset: int,
        data: bytes | memoryview,
        is_close: bool,
        now: int,
        may_open_stream: bool,
    ) -> InsertResult:
        """:meth:`insert` for a stream without receive state."""
        length = len(data)
        finished = self._finished
        finished.expire(now)
        if stream_id in finished:
            # A late retransmission for a stream already read to its end: its first
            # ACK was lost. The peer is still sending copies, so keep the tombstone
            # for another lifetime.
            finished.add(stream_id, now)
            self.duplicate_packets += 1
            self._queue_ack(stream_id, offset, length)
            return InsertResult.DUPLICATE
        if not length and not is_close:
            # A PING asks for an ACK and nothing else: no state for it.
            self._queue_ack(stream_id, offset, 0)
            return InsertResult.ACCEPTED
        if not may_open_stream:
            return InsertResult.REFUSED
        self._streams[stream_id] = _RecvStream(stream_id)
        kept = False
        try:
            result = self.insert(stream_id, offset, data, is_close=is_close, now=now)
            kept = result is not InsertResult.BUFFER_FULL
        finally:
            if not kept:
                # Nothing was stored: keep no state for a stream that does not exist.
                del self._streams[stream_id]
        return result

    def _may_use_reserve(self, stream: _RecvStream, new_bytes: int) -> bool:
        """Whether in-order bytes may go beyond the capacity, into the reserve.

        Only for a stream with nothing readable: then the application cannot free
        anything without these bytes, and without them a buffer full of
        out-of-order data (after the peer overshot a stale window) never drains.
        """
        return (
            stream.next_offset == stream.read_offset
            and self.buffered_bytes + new_bytes <= self.capacity + IN_ORDER_RESERVE_BYTES
        )

    @staticmethod
    def _pull_segments(stream: _RecvStream) -> None:
        """Move stored segments that now continue the readable region into it."""
        segments = stream.segments
        while segments:
            first_offset = segments.keys()[0]
            if first_offset != stream.next_offset:
                return
            stream.append_ready(first_offset, segments.pop(first_offset))

    @staticmethod
    def _new_pieces(
        stream: _RecvStream, offset: int, view: memoryview
    ) -> list[tuple[int, memoryview]]:
        """Check ``view`` at ``offset`` against stored bytes; return the parts not stored yet.

        Raises OverlapMismatchError on the first differing overlap; changes nothing.
        """
        end = offset + len(view)
        start = offset
        stream_id = stream.stream_id
        if start < stream.next_offset:
            check_start = max(start, stream.read_offset)
            check_end = min(end, stream.next_offset)
            if check_start < check_end and not stream.ready_equal(
                check_start, view[check_start - offset : check_end - offset]
            ):
                raise OverlapMismatchError(
                    f"stream {stream_id}: bytes {check_start}..{check_end} differ from "
                    "bytes received before",
                    stream_id=stream_id,
                )
            if end <= stream.next_offset:
                return []
            start = stream.next_offset
        segments = stream.segments
        keys = segments.keys()
        index = segments.bisect_right(start) - 1
        if index >= 0:
            previous_offset = keys[index]
            previous = segments[previous_offset]
            previous_end = previous_offset + len(previous)
            if previous_end > start:
                overlap_end = min(previous_end, end)
                if (
                    previous[start - previous_offset : overlap_end - previous_offset]
                    != view[start - offset : overlap_end - offset]
                ):
                    raise OverlapMismatchError(
                        f"stream {stream_id}: bytes {start}..{overlap_end} differ from "
                        "bytes received before",
                        stream_id=stream_id,
                    )
                if previous_end >= end:
                    return []
                start = previous_end
        index += 1
        pieces: list[tuple[int, memoryview]] = []
        cursor = start
        count = len(keys)
        while index < count:
            segment_offset = keys[index]
            if segment_offset >= end:
                break
            segment = segments[segment_offset]
            if segment_offset > cursor:
                pieces.append((cursor, view[cursor - offset : segment_offset - offset]))
            segment_end = segment_offset + len(segment)
            overlap_end = min(segment_end, end)
            if (
                segment[: overlap_end - segment_offset]
                != view[segment_offset - offset : overlap_end - offset]
            ):
                raise OverlapMismatchError(
                    f"stream {stream_id}: bytes {segment_offset}..{overlap_end} differ from "
                    "bytes received before",
                    stream_id=stream_id,
                )
            cursor = segment_end
            index += 1
        if cursor < end:
            pieces.append((cursor, view[cursor - offset :]))
        return pieces

    # -- application side -------------------------------------------------------------

    def readable(self, stream_id: int) -> int:
        """Bytes of the stream that :meth:`read` can return now."""
        stream = self._streams.get(stream_id)
        return 0 if stream is None else stream.next_offset - stream.read_offset

    def read(self, stream_id: int, max_bytes: int = -1) -> bytes:
        """Return up to ``max_bytes`` in-order bytes (all if negative); b"" if none.

        The single copy of the data on its way to the application happens here.
        """
        stream = self._streams.get(stream_id)
        if stream is None:
            return b""
        available = stream.next_offset - stream.read_offset
        if max_bytes < 0 or max_bytes > available:
            max_bytes = available
        if max_bytes == 0:
            return b""
        chunks = stream.ready_chunks
        starts = stream.ready_starts
        head = stream.head
        parts: list[Chunk] = []
        needed = max_bytes
        while needed:
            chunk = chunks[head]
            chunk_length = len(chunk)
            if chunk_length <= needed:
                parts.append(chunk)
                needed -= chunk_length
                head += 1
            else:
                parts.append(chunk[:needed])
                chunks[head] = chunk[needed:]
                starts[head] += needed
                needed = 0
        if head >= _COMPACT_CHUNKS and head * 2 >= len(chunks):
            del chunks[:head]
            del starts[:head]
            head = 0
        stream.head = head
        stream.read_offset += max_bytes
        self.buffered_bytes -= max_bytes
        if len(parts) == 1:
            return bytes(parts[0])
        return b"".join(parts)

    def close_offset(self, stream_id: int) -> int | None:
        """Where the peer said the stream ends, once a CLOSE arrived; else None."""
        stream = self._streams.get(stream_id)
        return None if stream is None else stream.close_offset

    def read_offset(self, stream_id: int) -> int:
        """How many bytes of the stream the application has read."""
        stream = self._streams.get(stream_id)
        return 0 if stream is None else stream.read_offset

    def at_eof(self, stream_id: int) -> bool:
        """Whether everything up to the peer's close offset has been read (Go: IsReadyToClose).

        True for a finished stream while its tombstone lives.
        """
        stream = self._streams.get(stream_id)
        if stream is None:
            return stream_id in self._finished
        return stream.close_offset is not None and stream.read_offset >= stream.close_offset

    def has_stream(self, stream_id: int) -> bool:
        """Whether the stream has receive state (tombstones of finished streams excluded)."""
        return stream_id in self._streams

    def is_finished(self, stream_id: int, now: int | None = None) -> bool:
        """Whether the stream finished recently enough to still have a tombstone.

        With ``now``, expired tombstones are dropped first; without, the answer
        may still include some (the safe side for refusing to reuse an id).
        """
        if now is not None:
            self._finished.expire(now)
        return stream_id in self._finished

    def tombstone_count(self, now: int) -> int:
        """Tombstone entries kept after dropping expired ones (see :class:`StreamTombstones`)."""
        self._finished.expire(now)
        return len(self._finished)

    def finish_stream(self, stream_id: int, now: int) -> int:
        """Drop the stream's state and leave a tombstone; return the bytes freed.

        For :data:`STREAM_TOMBSTONE_LIFETIME_NS` after ``now`` (renewed by every
        later packet), packets for it are ACKed and ignored, so a late
        retransmission does not resurrect the stream as a new one.
        """
        freed = self.forget_stream(stream_id)
        self._finished.add(stream_id, now)
        return freed

    def forget_stream(self, stream_id: int) -> int:
        """Drop the stream's state without a tombstone; return the bytes freed."""
        stream = self._streams.pop(stream_id, None)
        if stream is None:
            return 0
        freed = stream.next_offset - stream.read_offset
        for segment in stream.segments.values():
            freed += len(segment)
        self.buffered_bytes -= freed
        return freed
