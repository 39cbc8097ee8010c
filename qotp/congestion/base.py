"""The congestion-control seam: what a connection tells a controller and asks of it.

Contract (one controller per connection, all times ``now`` in monotonic nanoseconds, all
sizes in bytes *on the wire*, i.e. whole datagrams):

* The connection owns one :class:`~qotp.congestion.rtt.RttEstimator` and hands it to the
  controller's constructor.  On an acknowledgement it first feeds the RTT sample to the
  estimator (unless the packet was retransmitted: Karn's rule) and then calls
  :meth:`CongestionController.on_packet_acked`.  A connection that processes a batch of
  datagrams received together may instead report the batch as one *acknowledgement event*
  (:meth:`CongestionController.on_packets_acked`: the newest packet's sample and the bytes
  of all), as TCP does for a stretch ACK; QOTP has one ACK per packet, so at 40 000 packets
  per second the per-event work is what a batch saves.
* ``bytes_in_flight`` is always the connection's own count of datagram bytes sent and not
  yet acknowledged or declared lost, *excluding* the packet the call is about: before adding
  it in ``on_packet_sent``, after removing it (them) in ``on_packet_acked`` /
  ``on_packets_acked`` / ``on_packet_lost``.
  The controller keeps no in-flight count of its own, so the two can never disagree.
* Before sending a datagram that carries stream data, PING or CLOSE, the connection asks
  :meth:`can_send` (window) and :meth:`next_send_time` (pacing).  If the window is full it
  waits for an ACK or a loss; if pacing says later, it arms its timer for that time.  Then it
  sends and calls :meth:`on_packet_sent`, keeping the returned :class:`SendSample` with the
  in-flight packet (a retransmission gets a fresh sample; the old one is simply dropped,
  after ``on_packet_lost`` if the connection declared it lost).
* Losses: call :meth:`on_packet_lost` when the connection gives a packet up for lost --
  preferably because later packets were acknowledged (three later datagrams, or one sent
  :meth:`~qotp.congestion.rtt.RttEstimator.loss_delay_ns` after it), otherwise on RTO
  expiry.  Arm the RTO with ``RttEstimator.retransmit_time_ns(..., latest_ack_ns=...)`` so
  that it does not fire while ACKs are still flowing.
* ACK-only datagrams are never held back: the connection sends them without asking and
  does not report them (the reference paces ACK-only packets too, at a 10 ms fallback
  interval before its first RTT sample, which stalls its own transfers).
* When the connection has nothing more to send although the window would allow it, it calls
  :meth:`on_app_limited`, so that the quiet period does not read as a slow network.
* Every method accepts any integers without raising; nonsense (negative sizes, a clock
  that goes backwards) is clamped, never propagated as negative rates or windows.

:class:`DeliveryRateSampler` is the shared delivery-rate estimator (after
draft-cheng-iccrg-delivery-rate-estimation): it turns per-packet snapshots into
``delivered bytes / elapsed time`` samples covering everything acknowledged between a
packet's send and its ACK, instead of the reference's ``one packet / min RTT``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from qotp.congestion.rtt import RttEstimator

__all__ = [
    "SECOND_NS",
    "CongestionController",
    "CongestionControllerFactory",
    "DeliveryRateSampler",
    "SendSample",
]

SECOND_NS = 1_000_000_000


@dataclass(slots=True)
class SendSample:
    """Per-packet snapshot taken at send time; keep it with the in-flight packet.

    Treat it as immutable.  Not ``frozen``: one is built per datagram sent, and a frozen
    dataclass costs almost three times as much to build (0.85 us against 0.3 us here).
    """

    sent_time_ns: int
    """``now`` when the packet was sent."""
    size_bytes: int
    """Datagram bytes of the packet."""
    delivered_bytes: int
    """Bytes delivered (acknowledged) on the connection when the packet was sent."""
    delivered_time_ns: int
    """When ``delivered_bytes`` was last increased, as of the send."""
    first_sent_time_ns: int
    """Send time of the most recently acknowledged packet, as of the send."""
    is_app_limited: bool
    """Whether the connection was application-limited when the packet was sent."""


class CongestionController(Protocol):
    """What a connection needs from a congestion controller (see the module docstring)."""

    @property
    def state_name(self) -> str:
        """Short name of the controller's current state, for statistics and logs."""
        ...

    @property
    def congestion_window_bytes(self) -> int:
        """Bytes the controller allows in flight (always at least one datagram)."""
        ...

    @property
    def pacing_rate_bytes_per_s(self) -> int:
        """Current pacing rate; 0 means the controller does not pace."""
        ...

    @property
    def bandwidth_estimate_bytes_per_s(self) -> int:
        """Best estimate of the path's delivery rate; 0 while unknown."""
        ...

    def can_send(self, bytes_in_flight: int, size_bytes: int) -> bool:
        """Whether the window has room for a datagram of ``size_bytes`` now.

        Always true when nothing is in flight, so a connection can never stall itself.
        """
        ...

    def next_send_time(self, now: int, size_bytes: int) -> int:
        """Earliest time a datagram of ``size_bytes`` may leave; ``<= now`` means at once."""
        ...

    def on_packet_sent(self, now: int, size_bytes: int, bytes_in_flight: int) -> SendSample:
        """Record a sent datagram (charges the pacer); returns the snapshot to keep."""
        ...

    def on_packet_acked(self, now: int, sample: SendSample, bytes_in_flight: int) -> None:
        """Record that the datagram described by ``sample`` was acknowledged."""
        ...

    def on_packets_acked(
        self, now: int, newest: SendSample, acked_bytes: int, bytes_in_flight: int
    ) -> None:
        """One acknowledgement event: datagrams of ``acked_bytes`` in all, acknowledged at
        ``now``; ``newest`` is the sample of the most recently sent of them."""
        ...

    def on_packet_lost(self, now: int, sample: SendSample, bytes_in_flight: int) -> None:
        """Record that the datagram described by ``sample`` was declared lost."""
        ...

    def on_app_limited(self, bytes_in_flight: int) -> None:
        """The sender ran out of data while the window had room."""
        ...


class DeliveryRateSampler:
    """Delivery-rate samples from send-time snapshots (draft-cheng-iccrg-delivery-rate-
    estimation, simplified for QOTP's one-ACK-per-packet feedback).

    A sample for packet P covers all bytes acknowledged between P's send and P's ACK:
    ``(delivered_now - P.delivered_bytes) / max(send interval, ACK interval)``.  Taking the
    larger interval keeps ACK compression from inflating the estimate.
    """

    __slots__ = (
        "_app_limited_until_bytes",
        "delivered_bytes",
        "delivered_time_ns",
        "first_sent_time_ns",
        "last_delivered_bytes",
        "last_interval_ns",
        "last_is_app_limited",
    )

    def __init__(self) -> None:
        self.delivered_bytes = 0
        """Total bytes acknowledged so far."""
        self.delivered_time_ns = 0
        """``now`` of the latest acknowledgement (or of the restart after idle)."""
        self.first_sent_time_ns = 0
        """Send time of the newest packet acknowledged so far."""
        self._app_limited_until_bytes = 0
        self.last_is_app_limited = False
        """Whether the latest sample came from an application-limited period."""
        self.last_delivered_bytes = 0
        """Bytes covered by the latest sample."""
        self.last_interval_ns = 0
        """Interval of the latest sample (0 when none was produced)."""

    @property
    def is_app_limited(self) -> bool:
        """Whether samples are currently marked application-limited."""
        return self._app_limited_until_bytes > 0

    def on_sent(self, now: int, size_bytes: int, bytes_in_flight: int) -> SendSample:
        """Snapshot the delivery state for a packet about to be sent."""
        if bytes_in_flight <= 0:
            # Restarting from idle: intervals start now, not at the last ACK long ago.
            self.first_sent_time_ns = now
            self.delivered_time_ns = now
        return SendSample(
            now,
            size_bytes if size_bytes > 0 else 0,
            self.delivered_bytes,
            self.delivered_time_ns,
            self.first_sent_time_ns,
            self._app_limited_until_bytes > 0,
        )

    def on_app_limited(self, bytes_in_flight: int) -> None:
        """Mark samples app-limited until the data now in flight has been delivered."""
        inflight = bytes_in_flight if bytes_in_flight > 0 else 0
        self._app_limited_until_bytes = max(self.delivered_bytes + inflight, 1)

    def on_acked(
        self, now: int, sample: SendSample, min_interval_ns: int, acked_bytes: int = -1
    ) -> int:
        """Account for acknowledged packets; return a delivery rate in bytes/s or 0.

        ``sample`` is the packet's snapshot, or for a batch acknowledged together the
        most recently sent one's, with ``acked_bytes`` covering the whole batch (default:
        the one packet's size).  0 means "no valid sample": the interval was shorter than
        ``min_interval_ns`` (the minimum RTT; shorter intervals measure ACK bursts, not
        the path) or not positive.
        """
        self.delivered_bytes += sample.size_bytes if acked_bytes < 0 else acked_bytes
        if now > self.delivered_time_ns:
            self.delivered_time_ns = now
        if sample.sent_time_ns > self.first_sent_time_ns:
            self.first_sent_time_ns = sample.sent_time_ns
        if self._app_limited_until_bytes and self.delivered_bytes > self._app_limited_until_bytes:
            self._app_limited_until_bytes = 0
        send_interval = sample.sent_time_ns - sample.first_sent_time_ns
        ack_interval = self.delivered_time_ns - sample.delivered_time_ns
        interval = send_interval if send_interval > ack_interval else ack_interval
        delivered = self.delivered_bytes - sample.delivered_bytes
        self.last_is_app_limited = sample.is_app_limited
        self.last_delivered_bytes = delivered
        if interval <= 0 or interval < min_interval_ns or delivered <= 0:
            self.last_interval_ns = 0
            return 0
        self.last_interval_ns = interval
        return delivered * SECOND_NS // interval


class CongestionControllerFactory(Protocol):
    """Makes a connection's controller: a controller class itself fits (``Bbr``, ``NewReno``).

    Called once per connection with the connection's RTT estimator (shared: the
    connection alone updates it) and its largest datagram size in bytes.
    """

    def __call__(self, rtt: RttEstimator, *, max_datagram_bytes: int) -> CongestionController: ...
