"""Round-trip time estimation and retransmission timeouts (Go: measurement.go, snd.go).

Facts taken from the Go reference v0.2.19 (our wording; the numbers are the contract):

RTT smoothing (Go: ``updateMeasurements``)
    * A sample is ``now - sent_time`` of the acknowledged packet, where ``sent_time`` is the
      time of its *latest* (re)transmission; the reference does not apply Karn's rule.
    * Samples of 0 ns, or above 30 s (its idle deadline ``ReadDeadLine``), are ignored.
    * First sample: ``srtt = sample``, ``rttvar = sample // 2``.
    * Later samples, in integer nanoseconds, with ``delta = |sample - srtt_old|``:
      ``rttvar = rttvar * 3 // 4 + delta // 4`` and then ``srtt = srtt * 7 // 8 + sample // 8``
      (RFC 6298 weights, each term rounded down on its own).
    * Minimum RTT: replaced when a sample is lower than the current minimum, or when the
      current minimum is 10 s old or older (``now - stamp >= 10 s``); the replacement is
      the current sample, whatever its size.  (We also accept an *equal* sample as a
      refresh, as BBR does.)

Retransmission timeout (Go: ``rtoNano``, ``backoff``, ``ReadyToRetransmit``)
    * ``rto = srtt + 4 * rttvar``; 200 ms while there is no sample (``rto == 0``); clamped to
      [100 ms, 2 s].  The clamp applies to this base value only.
    * Backoff: a packet that has been transmitted ``n`` times (``n = 1`` for the original)
      is retransmitted once ``now - last_sent_time > rto * 2 ** (n - 1)`` (strictly greater,
      the RTO of *now*, not of the send time).  The doubled value is not clamped again, so
      the longest wait the reference uses is ``16 * 2 s = 32 s``.
    * Retry limit: ``maxRetry = 5``.  The check ``n > 5`` runs *before* the timeout test, so
      as soon as a packet has been transmitted 6 times (the original plus 5 retransmissions)
      the very next flush fails with ``max retry attempts: 6 exceeded limit 5`` and the
      connection is dropped, without waiting for a reply to the 6th copy.  With the 200 ms
      initial RTO an unanswered packet goes out at 0, 200, 600, 1400, 3000 and 6200 ms and
      the connection ends at about 6.2 s.
    * Only the oldest in-flight packet of each stream is examined per flush; a PING whose
      timeout expires is dropped, not retransmitted.

What we add (not in the reference): :meth:`RttEstimator.loss_delay_ns`, a time threshold
for declaring a packet lost before its RTO when later packets were already acknowledged
(RFC 9002 section 6.1.2).  QOTP acknowledges every packet by its exact key, so the
connection knows precisely which packets arrived after a gap.
"""

from __future__ import annotations

__all__ = [
    "INITIAL_RTO_NS",
    "LOSS_DELAY_GRANULARITY_NS",
    "MAX_RETRANSMISSIONS",
    "MAX_RTO_NS",
    "MAX_RTT_SAMPLE_NS",
    "MAX_TRANSMISSIONS",
    "MIN_RTO_NS",
    "MIN_RTT_WINDOW_NS",
    "RttEstimator",
    "retry_limit_exceeded",
]

MS_NS = 1_000_000
SECOND_NS = 1_000_000_000

MIN_RTO_NS = 100 * MS_NS
"""Lower clamp of the base RTO (Go: ``minRTO``)."""
MAX_RTO_NS = 2 * SECOND_NS
"""Upper clamp of the base RTO, before backoff (Go: ``maxRTO``)."""
INITIAL_RTO_NS = 200 * MS_NS
"""Base RTO before the first RTT sample (Go: ``defaultRTO``)."""
MAX_RTT_SAMPLE_NS = 30 * SECOND_NS
"""Samples above this are ignored as bogus (Go: ``ReadDeadLine``, the idle timeout)."""
MIN_RTT_WINDOW_NS = 10 * SECOND_NS
"""A minimum RTT this old is replaced by the next sample (Go: ``rttExpiry``)."""
MAX_RETRANSMISSIONS = 5
"""Retransmissions allowed per packet (Go: ``maxRetry``).

The connection ends when a packet has been *transmitted* ``MAX_RETRANSMISSIONS + 1`` times
and is still unacknowledged at the next check; see :func:`retry_limit_exceeded`.
"""
MAX_TRANSMISSIONS = MAX_RETRANSMISSIONS + 1
"""Transmissions of one packet (original included) after which the connection gives up."""
RTO_BACKOFF_FACTOR = 2
"""Each further transmission waits twice as long (Go: ``rtoBackoffPct = 200``)."""
LOSS_DELAY_GRANULARITY_NS = 1 * MS_NS
"""Floor of :meth:`RttEstimator.loss_delay_ns` (RFC 9002 kGranularity)."""


def retry_limit_exceeded(transmissions: int) -> bool:
    """Whether a packet sent ``transmissions`` times (original = 1) ends the connection.

    True from the 6th transmission on.  The reference evaluates this at the first flush after
    the 6th copy went out (``max retry attempts: 6 exceeded limit 5``), i.e. at about 6.2 s
    for a packet that is never answered with the 200 ms initial RTO.
    """
    return transmissions > MAX_RETRANSMISSIONS


class RttEstimator:
    """Smoothed RTT, RTT variation, windowed minimum RTT and the RTO with backoff.

    Sans-IO: every update carries ``now`` (monotonic nanoseconds).  One instance per
    connection, shared by the connection (for RTO and loss detection) and its congestion
    controller (for the minimum RTT); the connection alone calls :meth:`update`.
    """

    __slots__ = (
        "_latest_rtt_ns",
        "_min_rtt_ns",
        "_min_rtt_stamp_ns",
        "_rttvar_ns",
        "_srtt_ns",
        "sample_count",
    )

    def __init__(self) -> None:
        self._srtt_ns = 0
        self._rttvar_ns = 0
        self._latest_rtt_ns = 0
        self._min_rtt_ns = 0
        self._min_rtt_stamp_ns = 0
        self.sample_count = 0
        """Accepted samples so far (statistics)."""

    # -- queries -----------------------------------------------------------------------

    @property
    def has_sample(self) -> bool:
        """Whether at least one RTT sample has been accepted."""
        return self.sample_count > 0

    @property
    def srtt_ns(self) -> int:
        """Smoothed RTT; 0 before the first sample."""
        return self._srtt_ns

    @property
    def rttvar_ns(self) -> int:
        """RTT variation; 0 before the first sample."""
        return self._rttvar_ns

    @property
    def latest_rtt_ns(self) -> int:
        """The most recent accepted sample; 0 before the first sample."""
        return self._latest_rtt_ns

    @property
    def min_rtt_ns(self) -> int:
        """Minimum RTT over (roughly) the last 10 s; 0 before the first sample.

        The window is the reference's: the minimum is replaced by the next sample once it is
        ``MIN_RTT_WINDOW_NS`` old, so after a long silence it may briefly be a high value.
        """
        return self._min_rtt_ns

    @property
    def min_rtt_stamp_ns(self) -> int:
        """When the current minimum RTT was taken (``now`` of that sample)."""
        return self._min_rtt_stamp_ns

    def min_rtt_expired(self, now: int) -> bool:
        """Whether the minimum RTT is at least ``MIN_RTT_WINDOW_NS`` old at ``now``."""
        return self.sample_count > 0 and now - self._min_rtt_stamp_ns >= MIN_RTT_WINDOW_NS

    def base_rto_ns(self) -> int:
        """``srtt + 4 * rttvar`` clamped to [MIN_RTO_NS, MAX_RTO_NS]; INITIAL_RTO_NS before
        the first sample (Go: ``rtoNano``)."""
        if self.sample_count == 0:
            return INITIAL_RTO_NS
        rto = self._srtt_ns + 4 * self._rttvar_ns
        if rto < MIN_RTO_NS:
            return MIN_RTO_NS
        if rto > MAX_RTO_NS:
            return MAX_RTO_NS
        return rto

    def rto_ns(self, attempt: int = 1) -> int:
        """How long to wait after the ``attempt``-th transmission of a packet (original = 1).

        ``base_rto_ns() * 2 ** (attempt - 1)`` (Go: ``backoff``).  ``attempt`` is clamped to
        [1, MAX_RETRANSMISSIONS] -- the largest value the reference ever uses -- so hostile
        or buggy counts cannot produce huge numbers; whether the packet may be sent again at
        all is :func:`retry_limit_exceeded`'s question.
        """
        if attempt < 1:
            attempt = 1
        elif attempt > MAX_RETRANSMISSIONS:
            attempt = MAX_RETRANSMISSIONS
        return self.base_rto_ns() << (attempt - 1)  # x RTO_BACKOFF_FACTOR per attempt

    def retransmit_time_ns(
        self, last_sent_ns: int, transmissions: int, latest_ack_ns: int = 0
    ) -> int:
        """Earliest time at which a packet last sent at ``last_sent_ns`` is due again.

        The reference retransmits when ``now - last_sent > rto`` (strictly), hence ``+ 1``.
        Pass ``latest_ack_ns`` (when the connection last received an ACK for new data) to
        count from the later of the two, as RFC 6298 section 5.3 restarts the timer on
        every ACK: per-packet RTT samples shrink RTTVAR to almost nothing on a steady path,
        so an RTO counted from the send alone fires spuriously as soon as the RTT drifts up
        by a fraction of a millisecond (observed in our simulation at the end of STARTUP:
        every packet in flight "lost").  For a peer that answers nothing, the latest ACK is
        older than the sends and the reference's schedule is unchanged.  Only do this
        together with ACK-based loss detection (:meth:`loss_delay_ns`, or three later
        packets acknowledged): otherwise a single lost packet waits for as long as ACKs for
        other packets keep arriving.
        """
        start = last_sent_ns if last_sent_ns > latest_ack_ns else latest_ack_ns
        return start + self.rto_ns(transmissions) + 1

    def loss_delay_ns(self) -> int:
        """Time threshold for loss detection: ``9/8 * max(srtt, latest_rtt)``, at least 1 ms.

        A packet sent this much earlier than a packet that has been acknowledged can be
        declared lost without waiting for its RTO (RFC 9002 section 6.1.2; not in the
        reference, which only knows the RTO).  Before the first sample: the initial RTO.
        """
        if self.sample_count == 0:
            return INITIAL_RTO_NS
        rtt = self._srtt_ns if self._srtt_ns > self._latest_rtt_ns else self._latest_rtt_ns
        delay = rtt * 9 // 8
        return delay if delay > LOSS_DELAY_GRANULARITY_NS else LOSS_DELAY_GRANULARITY_NS

    # -- update ------------------------------------------------------------------------

    def update(self, sample_ns: int, now: int) -> bool:
        """Feed one RTT sample taken at ``now``; return whether it was accepted.

        Rejected like the reference: non-positive samples and samples above
        ``MAX_RTT_SAMPLE_NS``.  Callers should not feed samples of retransmitted packets
        (Karn's rule); the reference does, against the latest send time.
        """
        if sample_ns <= 0 or sample_ns > MAX_RTT_SAMPLE_NS:
            return False
        self._latest_rtt_ns = sample_ns
        if self.sample_count == 0:
            self._srtt_ns = sample_ns
            self._rttvar_ns = sample_ns // 2
            self._min_rtt_ns = sample_ns
            self._min_rtt_stamp_ns = now
        else:
            srtt = self._srtt_ns
            delta = sample_ns - srtt if sample_ns > srtt else srtt - sample_ns
            self._rttvar_ns = self._rttvar_ns * 3 // 4 + delta // 4
            self._srtt_ns = srtt * 7 // 8 + sample_ns // 8
            # Go: rttMinNano; "now - stamp >= window" is the reference's expiry rule.  We also
            # refresh the stamp on a sample *equal* to the minimum (BBR; the reference needs a
            # strictly lower one), so a path sitting at its minimum is not re-probed for
            # nothing.  A clock that goes backwards must not stall the window: abs().
            if sample_ns <= self._min_rtt_ns or abs(now - self._min_rtt_stamp_ns) >= (
                MIN_RTT_WINDOW_NS
            ):
                self._min_rtt_ns = sample_ns
                self._min_rtt_stamp_ns = now
        self.sample_count += 1
        return True
