"""Per-stream half-close state, both directions (Go: stream.go, plus the close logic of conn.go).

Theory of operation
===================

A stream has two independent directions, each with three phases::

    send:  OPEN --close()--> CLOSING --CLOSE and all data before it ACKed--> CLOSED
    recv:  OPEN --peer's CLOSE at offset X--> CLOSING --application read up to X--> CLOSED

The stream as a whole is OPEN, HALF_CLOSED_LOCAL (we sent or are sending our
CLOSE, the peer may still send), HALF_CLOSED_REMOTE (the peer closed, we may
still send), CLOSING (both sides closed, not everything acknowledged or read
yet) or CLOSED (both directions done: the connection forgets it; there is no
TIME_WAIT). The byte bookkeeping lives in :mod:`qotp.send` and
:mod:`qotp.recv`; the connection feeds their results into this object:
``SendBuffer.close`` -> :meth:`StreamState.close_send`,
``SendBuffer.finished_streams`` -> :meth:`StreamState.on_send_finished`, a packet
with the CLOSE flag -> :meth:`StreamState.on_peer_close`,
``ReceiveBuffer.at_eof`` after a read -> :meth:`StreamState.on_eof`.

Facts taken from the Go reference (stream.go, conn.go ``decode``, listener.go
``Flush``), v0.2.19:

* A stream exists as soon as either side names its 32-bit id; the opener picks
  the id. ``Stream.Close`` only fixes the send side's close offset; ``Write``
  then returns EOF (``IsCloseRequested``).
* The close offset of a received CLOSE is ``StreamOffset + len(data)`` of the
  packet carrying the flag. CLOSE packets are ACKed like data, a bare CLOSE as
  ``(stream, offset, 0)``.
* On receiving a CLOSE the reference also closes its *own* send side at its
  current write position (``SendBuffer.Close``), so it cannot answer after the
  peer's CLOSE: its Readme's "half-close supported" does not hold for the side
  that receives the CLOSE first. A CLOSE at offset 0 closes the receive side at
  once.
* ``rcvClosed`` is set when a read finds everything up to the close offset
  delivered; ``sndClosed`` when the send side's close offset is set and the first
  in-flight packet (insertion order) is at or past it, or nothing is in flight.
  That check runs only for packets with an ACK or a CLOSE, and an ACK-only
  packet is attributed to stream 0 (it has no stream header), so other streams
  can miss their transition.
* When both are set, the listener's flush removes the stream; a connection with
  no streams is no longer flushed, so ACKs still queued for it (such as the ACK
  for the peer's CLOSE) are never sent. Connections time out after 30 s without
  receiving (``ReadDeadLine``); there is no per-stream timer.

Where we differ, on purpose
===========================

* Receiving a CLOSE closes only the receive direction: real half-close. A
  connection talking to the reference still gets its request/response done,
  because the reference sends everything it queued before its own CLOSE.
* The send direction is CLOSED only when our CLOSE itself is acknowledged.
* Each stream records who opened it, and the table counts open streams per
  opener, so the connection can bound how many streams the peer holds open
  (``QotpConfiguration.max_streams``; the reference has no bound).
"""

from __future__ import annotations

import logging
from enum import Enum

from qotp.errors import LocalProtocolError

__all__ = [
    "DirectionPhase",
    "StreamPhase",
    "StreamState",
    "StreamTable",
]

logger = logging.getLogger(__name__)

#: Idle limit for a stream with no activity in either direction (Go: ReadDeadLine, 30 s).


class DirectionPhase(Enum):
    """Phase of one direction of a stream."""

    OPEN = "open"
    #: Close offset known, not all of it delivered (recv) or acknowledged (send).
    CLOSING = "closing"
    CLOSED = "closed"


class StreamPhase(Enum):
    """Phase of a stream as a whole."""

    OPEN = "open"
    #: Our side closed (CLOSE sent or queued); the peer may still send.
    HALF_CLOSED_LOCAL = "half_closed_local"
    #: The peer closed; we may still send.
    HALF_CLOSED_REMOTE = "half_closed_remote"
    #: Both sides closed, waiting for our CLOSE's ACK or for the application's reads.
    CLOSING = "closing"
    CLOSED = "closed"


class StreamState:
    """Close state of one stream, both directions."""

    __slots__ = (
        "opened_by_peer",
        "recv_close_offset",
        "recv_phase",
        "send_close_offset",
        "send_phase",
        "stream_id",
    )

    def __init__(self, stream_id: int, *, opened_by_peer: bool = False) -> None:
        self.stream_id = stream_id
        #: Whether a packet from the peer created the stream (else our application did).
        self.opened_by_peer = opened_by_peer
        self.send_phase = DirectionPhase.OPEN
        self.recv_phase = DirectionPhase.OPEN
        self.send_close_offset: int | None = None
        self.recv_close_offset: int | None = None

    @property
    def phase(self) -> StreamPhase:
        """The combined phase of both directions."""
        send_open = self.send_phase is DirectionPhase.OPEN
        recv_open = self.recv_phase is DirectionPhase.OPEN
        if send_open and recv_open:
            return StreamPhase.OPEN
        if recv_open:
            return StreamPhase.HALF_CLOSED_LOCAL
        if send_open:
            return StreamPhase.HALF_CLOSED_REMOTE
        if self.is_closed:
            return StreamPhase.CLOSED
        return StreamPhase.CLOSING

    @property
    def is_closed(self) -> bool:
        """Both directions closed: the stream can be forgotten (Go: IsClosed)."""
        return self.send_phase is DirectionPhase.CLOSED and self.recv_phase is DirectionPhase.CLOSED

    @property
    def can_write(self) -> bool:
        """Whether the application may still write (no close requested)."""
        return self.send_phase is DirectionPhase.OPEN

    @property
    def at_eof(self) -> bool:
        """Whether the application has read everything the peer will send."""
        return self.recv_phase is DirectionPhase.CLOSED

    def close_send(self, close_offset: int) -> None:
        """The application closed its side at ``close_offset`` (Go: Stream.Close).

        A second call is harmless; a different offset is a LocalProtocolError.
        """
        if self.send_close_offset is not None:
            if self.send_close_offset != close_offset:
                raise LocalProtocolError(
                    f"stream {self.stream_id}: close at {close_offset} after close at "
                    f"{self.send_close_offset}"
                )
            return
        self.send_close_offset = close_offset
        self.send_phase = DirectionPhase.CLOSING

    def on_send_finished(self) -> None:
        """Our CLOSE and every byte before it are acknowledged."""
        if self.send_phase is DirectionPhase.OPEN:
            raise LocalProtocolError(f"stream {self.stream_id}: send finished without close")
        self.send_phase = DirectionPhase.CLOSED

    def on_peer_close(self, close_offset: int) -> None:
        """The peer's CLOSE arrived; ``close_offset`` is StreamOffset + len(data).

        The receive buffer has already checked it against earlier CLOSEs and data.
        A CLOSE at offset 0 closes the receive direction at once (Go: decode).
        """
        if self.recv_close_offset is not None:
            return
        self.recv_close_offset = close_offset
        self.recv_phase = DirectionPhase.CLOSED if close_offset == 0 else DirectionPhase.CLOSING

    def on_eof(self) -> None:
        """The application has read up to the peer's close offset."""
        if self.recv_close_offset is None:
            raise LocalProtocolError(f"stream {self.stream_id}: EOF before the peer's CLOSE")
        self.recv_phase = DirectionPhase.CLOSED


class StreamTable:
    """The streams of one connection, in creation order.

    Open streams are counted per opener (:attr:`peer_count`, :attr:`local_count`)
    so that limits cost a comparison, not a scan.
    """

    __slots__ = ("_streams", "local_count", "peer_count")

    def __init__(self) -> None:
        self._streams: dict[int, StreamState] = {}
        #: Open streams that a packet from the peer created.
        self.peer_count = 0
        #: Open streams that our application created.
        self.local_count = 0

    def __len__(self) -> int:
        return len(self._streams)

    def __contains__(self, stream_id: object) -> bool:
        return stream_id in self._streams

    def get(self, stream_id: int) -> StreamState | None:
        """The stream's state, or None when it does not exist (any more)."""
        return self._streams.get(stream_id)

    def open(self, stream_id: int, *, by_peer: bool = False) -> tuple[StreamState, bool]:
        """The stream's state, created if needed; the flag says whether it is new.

        ``by_peer`` says who creates a new stream (it is ignored for an existing
        one: a stream keeps its opener).
        """
        state = self._streams.get(stream_id)
        if state is not None:
            return state, False
        if not 0 <= stream_id <= 0xFFFFFFFF:
            raise LocalProtocolError(f"stream id {stream_id} is not a u32")
        state = self._streams[stream_id] = StreamState(stream_id, opened_by_peer=by_peer)
        if by_peer:
            self.peer_count += 1
        else:
            self.local_count += 1
        return state, True

    def remove(self, stream_id: int) -> StreamState | None:
        """Forget a stream (closed, idle or reset); return its last state."""
        state = self._streams.pop(stream_id, None)
        if state is not None:
            if state.opened_by_peer:
                self.peer_count -= 1
            else:
                self.local_count -= 1
        return state

    def ids(self) -> list[int]:
        """Stream ids in creation order."""
        return list(self._streams)

    def closed_ids(self) -> list[int]:
        """Streams whose both directions are closed."""
        return [stream_id for stream_id, state in self._streams.items() if state.is_closed]
