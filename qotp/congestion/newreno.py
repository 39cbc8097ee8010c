"""NewReno (RFC 9002 appendix B / RFC 5681), paced: a loss-based comparison for BBR.

It exists to prove that the :class:`~qotp.congestion.base.CongestionController` seam is
honest (a connection can run either controller unchanged) and to give benchmarks and
simulations a classic baseline.  Pacing follows Linux: ``2 * cwnd / srtt`` in slow start,
``1.2 * cwnd / srtt`` afterwards, so the window, not the pacer, is what limits it.
"""

from __future__ import annotations

from qotp.congestion.base import SECOND_NS, DeliveryRateSampler, SendSample
from qotp.congestion.pacing import Pacer
from qotp.congestion.rtt import RttEstimator

__all__ = ["LOSS_REDUCTION_PCT", "NewReno"]

LOSS_REDUCTION_PCT = 50
"""Window kept after a loss, in percent (RFC 9002 kLossReductionFactor)."""
INITIAL_WINDOW_DATAGRAMS = 10
"""Initial window (RFC 9002)."""
MIN_WINDOW_DATAGRAMS = 2
"""Window floor (RFC 9002 kMinimumWindow)."""
SLOW_START_PACING_PCT = 200
CONGESTION_AVOIDANCE_PACING_PCT = 120
NOMINAL_RTT_NS = 1_000_000


class NewReno:
    """Slow start, congestion avoidance, one window reduction per round trip of losses."""

    __slots__ = (
        "_avoidance_credit",
        "_cwnd",
        "_max_datagram",
        "_min_cwnd",
        "_recovery_start_ns",
        "_ssthresh",
        "lost_packets",
        "pacer",
        "rtt",
        "sampler",
    )

    def __init__(self, rtt: RttEstimator, *, max_datagram_bytes: int = 1400) -> None:
        self.rtt = rtt
        self.sampler = DeliveryRateSampler()
        self._max_datagram = max(max_datagram_bytes, 1)
        self.pacer = Pacer(min_burst_bytes=2 * self._max_datagram)
        self._min_cwnd = MIN_WINDOW_DATAGRAMS * self._max_datagram
        self._cwnd = INITIAL_WINDOW_DATAGRAMS * self._max_datagram
        self._ssthresh: int | None = None
        self._recovery_start_ns: int | None = None
        self._avoidance_credit = 0
        self.lost_packets = 0
        """Datagrams reported lost (statistics)."""
        self._update_pacing_rate()

    @property
    def state_name(self) -> str:
        """``slow_start``, ``recovery`` or ``congestion_avoidance``."""
        if self._ssthresh is None or self._cwnd < self._ssthresh:
            return "slow_start"
        return "congestion_avoidance"

    @property
    def congestion_window_bytes(self) -> int:
        """Bytes allowed in flight."""
        return self._cwnd

    @property
    def pacing_rate_bytes_per_s(self) -> int:
        """Current pacing rate."""
        return self.pacer.rate_bytes_per_s

    @property
    def bandwidth_estimate_bytes_per_s(self) -> int:
        """``cwnd / srtt`` (NewReno has no bandwidth model of its own); 0 before an RTT."""
        srtt = self.rtt.srtt_ns
        return self._cwnd * SECOND_NS // srtt if srtt > 0 else 0

    def can_send(self, bytes_in_flight: int, size_bytes: int) -> bool:
        """Whether the datagram fits the window (always, if nothing is in flight)."""
        return bytes_in_flight <= 0 or bytes_in_flight + size_bytes <= self._cwnd

    def next_send_time(self, now: int, size_bytes: int) -> int:
        """Earliest time the pacer lets the datagram leave."""
        return self.pacer.next_send_time(now, size_bytes)

    def on_packet_sent(self, now: int, size_bytes: int, bytes_in_flight: int) -> SendSample:
        """Charge the pacer and snapshot delivery state."""
        self.pacer.on_sent(now, size_bytes)
        return self.sampler.on_sent(now, size_bytes, bytes_in_flight)

    def on_app_limited(self, bytes_in_flight: int) -> None:
        """Mark delivery-rate samples application-limited (statistics only here)."""
        self.sampler.on_app_limited(bytes_in_flight)

    def on_packet_acked(self, now: int, sample: SendSample, bytes_in_flight: int) -> None:
        """Grow the window unless the packet was sent before the current recovery began."""
        self.on_packets_acked(now, sample, sample.size_bytes, bytes_in_flight)

    def on_packets_acked(
        self, now: int, newest: SendSample, acked_bytes: int, bytes_in_flight: int
    ) -> None:
        """Grow the window by the batch unless its newest packet predates the recovery."""
        self.sampler.on_acked(now, newest, self.rtt.min_rtt_ns, acked_bytes)
        if self._recovery_start_ns is not None and newest.sent_time_ns <= self._recovery_start_ns:
            return
        acked = acked_bytes
        if self._ssthresh is None or self._cwnd < self._ssthresh:
            self._cwnd += acked
        else:
            # One datagram per window of ACKed bytes (RFC 9002 section 7.3.3).
            self._avoidance_credit += acked
            if self._avoidance_credit >= self._cwnd:
                self._avoidance_credit -= self._cwnd
                self._cwnd += self._max_datagram
        self._update_pacing_rate()

    def on_packet_lost(self, now: int, sample: SendSample, bytes_in_flight: int) -> None:
        """Halve the window once per round trip of losses."""
        self.lost_packets += 1
        if self._recovery_start_ns is not None and sample.sent_time_ns <= self._recovery_start_ns:
            return
        self._recovery_start_ns = now
        self._cwnd = max(self._cwnd * LOSS_REDUCTION_PCT // 100, self._min_cwnd)
        self._ssthresh = self._cwnd
        self._avoidance_credit = 0
        self._update_pacing_rate()

    def _update_pacing_rate(self) -> None:
        srtt = self.rtt.srtt_ns
        rtt = srtt if srtt > 0 else NOMINAL_RTT_NS
        gain = (
            SLOW_START_PACING_PCT
            if self.state_name == "slow_start"
            else (CONGESTION_AVOIDANCE_PACING_PCT)
        )
        self.pacer.set_rate(max(self._cwnd * gain * SECOND_NS // (100 * rtt), 1))
