"""Sending to a peer that paces its ACKs to one per 10 ms (the reference without an RTT sample).

What the reference does (v0.2.19 code, our summary; facts, not code):

* Every datagram it sends, ACK-only ones included, waits for its pacer
  (Go: ``Conn.Flush``, ``calcPacing``). Without a bandwidth estimate and without an
  RTT sample the interval is a fixed 10 ms (``fallbackInterval``).
* It gets RTT samples only from ACKs of its own data, PING or CLOSE packets. A
  side that only receives (an upload, a digest server) never has one, so it sends
  one datagram, carrying one ACK for one packet, per 10 ms: about 100 ACKs a
  second, in the order the packets arrived, however fast they arrive. Its own
  client is not clocked by ACKs (it has no congestion window, only the peer's
  receive window) and paces at one datagram per minimum RTT times 2.77; against
  its own server that moved about 1.2 to 1.8 MB/s here.
* The receive window in each ACK is computed when the ACK leaves
  (``capacity - buffered bytes``), not when the acknowledged packet arrived: an
  ACK that is seconds old in its queue still reports the buffer as it is now.
  A receiver whose application reads at once holds bytes only beyond a hole, so
  a window below its maximum says "a packet is missing, now"; the logarithmic
  code still tells "nothing held" (16 MiB) from "something held" (15 MiB).

An ACK-clocked sender (BBR, a congestion window) gets 100 ACKs of 1.4 KB a second
from such a peer: 140 kB/s, whatever the path. And its ACKs say nothing about the
path any more: the RTT samples measure the peer's ACK queue, the delivery rate its
pacer. :class:`AckStarvation` recognises the peer's pacing and, while it lasts,
sends as the reference's own sender does (no congestion window; the peer's receive
window still applies), with a rate that starts at the reference's estimate and is
steered by the one fresh signal left, the window:

* Recognised when the peer's datagrams arrive on the 10 ms grid (each of
  :data:`RECOGNITION_DATAGRAMS` in a row :data:`MIN_PACED_GAP_NS` to
  :data:`MAX_PACED_GAP_NS` after the one before), carrying no data, while packets
  of ours wait for their ACKs. Over with the first datagrams closer together (the peer got an
  RTT sample, usually from the ACK of its first data) or when nothing waits.
* Rate: starts at ``mtu * 2.77 / min RTT`` (the reference's first estimate),
  grows by 1/8 for each ACK showing no held bytes until the first hole, by 1/32
  after it; halves when a hole appears.
* A hole (the window dropped below the largest seen, right after an ACK that
  showed none) means a packet sent since shortly before that earlier ACK was lost.
  Its ACK would arrive only when the peer's queue reaches it, seconds later, so
  the unacknowledged packets sent in that span are resent at once
  (:meth:`AckStarvation.on_peer_datagram` returns the span), oldest first, until
  the window shows the hole filled. If it stays down once they all left, the
  span is extended further back a few times.

Everything here is sans-IO: time arrives as ``now`` (integer nanoseconds).
"""

from __future__ import annotations

from dataclasses import dataclass

from qotp.congestion.pacing import Pacer

__all__ = [
    "MAX_PACED_GAP_NS",
    "MIN_PACED_GAP_NS",
    "RECOGNITION_DATAGRAMS",
    "AckStarvation",
    "SuspectSpan",
]

SECOND_NS = 1_000_000_000
MS_NS = 1_000_000

PEER_FALLBACK_INTERVAL_NS = 10 * MS_NS
"""The reference's pacing interval before its first RTT sample (Go: ``fallbackInterval``)."""
MIN_PACED_GAP_NS = 8 * MS_NS
"""Smallest spacing of the peer's datagrams taken for its 10 ms pacing (every gap counts:
a peer that answers with several datagrams at once is not pacing)."""
MAX_PACED_GAP_NS = 20 * MS_NS
"""Largest one (its timers, and ours, run late on a busy machine)."""
RECOGNITION_DATAGRAMS = 4
"""Datagrams of the peer on the grid (three intervals) before sending changes."""
FAST_GAP_NS = 4 * MS_NS
"""Datagrams this close together mean the peer paces by a real estimate now ..."""
FAST_DATAGRAMS = 4
"""... when that many in a row are."""
MIN_WAITING_PACKETS = 4
"""Our packets that must wait for ACKs for the peer's spacing to mean anything."""
STARTUP_GAIN_PCT = 277
"""The reference's startup gain, applied to its one-datagram-per-min-RTT estimate."""
DEFAULT_MIN_RTT_NS = 1 * MS_NS
"""Used for the first rate when no RTT sample exists yet."""
SLOW_START_GROWTH_DIVISOR = 8
"""Rate growth per clean ACK before the first hole: 1/8."""
AVOIDANCE_GROWTH_DIVISOR = 32
"""Rate growth per clean ACK after it: 1/32."""
HOLE_LOOKBACK_INTERVALS = 2
"""A hole's span starts this many peer intervals (plus a min RTT) before the clean ACK."""
HOLE_RECHECK_DATAGRAMS = 3
"""Peer datagrams after a resend before a hole still there extends the span back."""
MAX_HOLE_EXTENSIONS = 3
"""How often a span is extended back before waiting for the peer's ACKs to tell."""


@dataclass(frozen=True, slots=True)
class SuspectSpan:
    """Packets sent in ``[start_ns, end_ns]`` and still unacknowledged are probably lost."""

    start_ns: int
    end_ns: int


class AckStarvation:
    """Recognises a peer that paces its ACKs to 10 ms and drives sending while it does."""

    __slots__ = (
        "_arrivals",
        "_clean_at_ns",
        "_extensions",
        "_hole",
        "_fast_gaps",
        "_hole_age",
        "_holes_seen",
        "_span_start_ns",
        "_span_width_ns",
        "_max_datagram",
        "_max_window",
        "active",
        "episodes",
        "holes",
        "pacer",
    )

    def __init__(self, *, max_datagram_bytes: int) -> None:
        self._max_datagram = max(max_datagram_bytes, 1)
        #: Arrival times of the peer's latest datagrams (at most RECOGNITION_DATAGRAMS).
        self._arrivals: list[int] = []
        self._max_window = 0
        #: When the peer last reported nothing held (-1: not yet).
        self._clean_at_ns = -1
        self._hole = False
        self._hole_age = 0
        self._holes_seen = False
        self._extensions = 0
        self._span_start_ns = 0
        self._span_width_ns = 0
        self._fast_gaps = 0
        #: Whether sending follows this object instead of the congestion controller.
        self.active = False
        #: Times the peer's pacing was recognised.
        self.episodes = 0
        #: Holes seen while active.
        self.holes = 0
        self.pacer = Pacer(min_burst_bytes=2 * self._max_datagram)

    @property
    def rate_bytes_per_s(self) -> int:
        """The current sending rate while active."""
        return self.pacer.rate_bytes_per_s

    def on_peer_datagram(
        self,
        now: int,
        *,
        carries_data: bool,
        window: int | None,
        waiting_packets: int,
        min_rtt_ns: int,
        resends_pending: int = 0,
    ) -> SuspectSpan | None:
        """Account for one authenticated datagram from the peer.

        ``window`` is the receive window its ACK carried (None: no ACK),
        ``waiting_packets`` how many of our packets await an ACK, and
        ``resends_pending`` how many suspects of the last span are not resent yet.
        Returns the span of send times whose unacknowledged packets should be
        resent now, if any; :attr:`hole` going back to False means the rest of the
        suspects need not be resent.
        """
        if window is not None and window > self._max_window:
            self._max_window = window
        arrivals = self._arrivals
        if arrivals and self.active:
            # Several datagrams in a row closer than the 10 ms grid: the peer paces by
            # a real estimate now. (One short gap is often our own late read.)
            self._fast_gaps = self._fast_gaps + 1 if now - arrivals[-1] < FAST_GAP_NS else 0
            if self._fast_gaps >= FAST_DATAGRAMS:
                self._deactivate()
        if carries_data or waiting_packets < MIN_WAITING_PACKETS:
            arrivals.clear()
            if self.active and waiting_packets == 0:
                self._deactivate()
        arrivals.append(now)
        if len(arrivals) > RECOGNITION_DATAGRAMS:
            del arrivals[0]
        if not self.active:
            if len(arrivals) == RECOGNITION_DATAGRAMS and all(
                MIN_PACED_GAP_NS <= later - earlier <= MAX_PACED_GAP_NS
                for earlier, later in zip(arrivals, arrivals[1:], strict=False)
            ):
                self._activate(now, min_rtt_ns)
            return None
        if window is None:
            return None
        return self._on_window(now, window, min_rtt_ns, resends_pending)

    def _activate(self, now: int, min_rtt_ns: int) -> None:
        self.active = True
        self.episodes += 1
        rtt = min_rtt_ns if min_rtt_ns > 0 else DEFAULT_MIN_RTT_NS
        rate = self._max_datagram * STARTUP_GAIN_PCT * SECOND_NS // (100 * rtt)
        self.pacer = Pacer(rate, min_burst_bytes=2 * self._max_datagram)
        self._hole = False
        self._holes_seen = False
        self._clean_at_ns = now

    def _deactivate(self) -> None:
        self.active = False
        self._fast_gaps = 0
        self._arrivals.clear()

    @property
    def hole(self) -> bool:
        """Whether the peer's window last said it holds bytes beyond a hole."""
        return self._hole

    def _on_window(
        self, now: int, window: int, min_rtt_ns: int, resends_pending: int
    ) -> SuspectSpan | None:
        pacer = self.pacer
        rate = pacer.rate_bytes_per_s
        if window >= self._max_window:
            # Nothing held at the peer: no hole now.
            self._hole = False
            self._clean_at_ns = now
            divisor = AVOIDANCE_GROWTH_DIVISOR if self._holes_seen else SLOW_START_GROWTH_DIVISOR
            pacer.set_rate(rate + max(rate // divisor, self._max_datagram))
            return None
        rtt = min_rtt_ns if min_rtt_ns > 0 else DEFAULT_MIN_RTT_NS
        if not self._hole:
            # A hole appeared since the last clean report: halve, resend the span.
            self._hole = True
            self._holes_seen = True
            self.holes += 1
            self._hole_age = 0
            self._extensions = 0
            floor = self._max_datagram * SECOND_NS // PEER_FALLBACK_INTERVAL_NS
            pacer.set_rate(max(rate // 2, floor))
            start = self._clean_at_ns - HOLE_LOOKBACK_INTERVALS * PEER_FALLBACK_INTERVAL_NS - rtt
            self._span_start_ns = start
            self._span_width_ns = now - start
            return SuspectSpan(start, now)
        if resends_pending:
            return None  # the resends have not all left yet
        self._hole_age += 1
        if self._hole_age < HOLE_RECHECK_DATAGRAMS or self._extensions >= MAX_HOLE_EXTENSIONS:
            return None
        # Still held after the resends had time to arrive: the loss lies further back.
        self._hole_age = 0
        self._extensions += 1
        end = self._span_start_ns
        self._span_width_ns *= 2
        self._span_start_ns = end - self._span_width_ns
        return SuspectSpan(self._span_start_ns, end)

    def next_send_time(self, now: int, size_bytes: int) -> int:
        """Earliest time a datagram may leave while active."""
        return self.pacer.next_send_time(now, size_bytes)

    def on_sent(self, now: int, size_bytes: int) -> None:
        """Charge a datagram sent while active."""
        self.pacer.on_sent(now, size_bytes)
