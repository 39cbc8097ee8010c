"""A model of the Go reference's receive buffer, to test our sender against its rules.

Facts taken from the reference (v0.2.19, rcv.go ``Insert`` and
``RemoveOldestInOrder``), in our words:

* Segments are kept per stream, keyed by their start offset; the application
  takes the lowest one only when it starts exactly at the next expected offset.
* An insert is dropped as a duplicate when it ends at or before the next
  expected offset, when a stored segment starts at the same offset and is at
  least as long (a longer one replaces it), or when the stored segment before
  it covers it completely. Otherwise its front is cut where that previous
  segment ends; the first stored segment after its *original* start is removed
  if the insert covers it completely, else the insert's end is cut there.
* Nothing trims a stored segment against the next expected offset: a segment
  that starts *below* it (and ends above it, or it would have been a duplicate)
  is never taken by the application, which logs "unexpected overlap" on every
  read from then on. The stream is stuck for good, while every packet of ours
  was acknowledged.

Our own receiver (qotp.recv) trims such a segment, so only a model shows what
a reference peer would make of the packets we send: a sender must never let a
range start below the peer's next expected offset and end above it, i.e.
never resend bytes under boundaries other than those of their first send.
"""

from __future__ import annotations

from sortedcontainers import SortedDict


class ReferenceReceiveStream:
    """One stream of the reference's receive buffer, read by a prompt application."""

    def __init__(self) -> None:
        self.segments: SortedDict = SortedDict()
        self.next_offset = 0
        self.delivered = bytearray()
        self.stuck_at: tuple[int, int] | None = None
        """``(segment start, next expected offset)`` once the stream is stuck."""

    def insert(self, offset: int, data: bytes) -> None:
        """Store a packet's data as rcv.go does, then let the application read."""
        self._insert(offset, bytes(data))
        self._read()

    def _insert(self, offset: int, data: bytes) -> None:
        segments = self.segments
        if offset + len(data) <= self.next_offset:
            return
        existing = segments.get(offset)
        if existing is not None:
            if len(data) > len(existing):
                segments[offset] = data
            return
        start = offset
        index = segments.bisect_left(offset)
        if index > 0:
            previous_offset = segments.keys()[index - 1]
            previous_end = previous_offset + len(segments[previous_offset])
            if previous_end > offset:
                if previous_end - offset >= len(data):
                    return
                data = data[previous_end - offset :]
                start = previous_end
        following = segments.bisect_right(offset)
        if following < len(segments):
            next_offset = segments.keys()[following]
            next_end = next_offset + len(segments[next_offset])
            end = start + len(data)
            if end > next_offset:
                if end >= next_end:
                    del segments[next_offset]
                else:
                    data = data[: next_offset - start]
        segments[start] = data

    def _read(self) -> None:
        segments = self.segments
        while segments and self.stuck_at is None:
            offset = segments.keys()[0]
            if offset > self.next_offset:
                return
            if offset < self.next_offset:
                self.stuck_at = (offset, self.next_offset)
                return
            data = segments.pop(offset)
            self.delivered += data
            self.next_offset += len(data)
