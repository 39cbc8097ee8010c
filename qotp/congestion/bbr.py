"""BBR congestion control with delivery-rate sampling and pacing (Go: measurement.go).

What the reference does (v0.2.19, our summary; facts, not code):

* Two states only: *startup* (pacing gain 2.77) and *normal*.  Every ACK yields one
  "bandwidth" sample ``(acked_payload + 42) * 1e9 / min_rtt`` -- one packet per minimum RTT
  -- kept as a running maximum ``bw_max``.  Startup ends after 3 consecutive samples that
  do not raise ``bw_max``.
* In the normal state each ACK re-derives the gain: 0.75 if ``srtt > 1.5 * min_rtt`` (RTT
  inflation: drain), 0.90 if ``srtt > 1.25 * min_rtt``, 1.25 for one ACK when more than
  ``8 * min_rtt`` passed since the last probe, otherwise 1.0.
* A retransmission multiplies ``bw_max`` by 0.95, sets the gain to 1.0 and leaves startup;
  an ACK for a packet no longer in flight (duplicate) multiplies ``bw_max`` by 0.98, sets the
  gain to 0.90 and leaves startup.
* Pacing interval per datagram (ACK-only ones too): ``size * 1e9 / (bw_max * gain)``; with
  no bandwidth estimate ``srtt / 10``; with no RTT sample either, a fixed 10 ms.  Nothing is
  sent, not even an ACK, until that interval has passed.
* There is no congestion window: the only in-flight limit is the peer's receive window
  (no new data when ``in_flight_payload + mtu > peer_window``; ACKs still go out).
* The minimum RTT is windowed over 10 s (see :mod:`qotp.congestion.rtt`).

Because a one-packet-per-RTT sample measures a single packet, not the path, the
reference's estimate stays near ``mtu / min_rtt`` whatever the link.  Here bandwidth comes
from delivery-rate samples (:class:`~qotp.congestion.base.DeliveryRateSampler`): bytes
acknowledged between a packet's send and its ACK over the elapsed time, fed to a windowed
maximum over ``BW_FILTER_ROUNDS`` round trips.  The states are those of BBR v1 with the
reference's gains:

``STARTUP``   pacing and window gain 2.77 until the bandwidth stops growing by 25 % for 3
              rounds, or for 2 rounds that each lost more than 2 % of their bytes.
``DRAIN``     pacing gain 0.75 until what is in flight fits one BDP.
``PROBE_BW``  eight phases of one minimum RTT each: 1.25 (probe; "every 8 x min-RTT";
              it runs on until 1.25 x BDP is in flight or a loss is seen, at most two
              min RTTs), 0.75 (drain what the probe queued; ends early once in flight is
              down to one BDP), then six at 1.0.  In the 1.0 phases the reference's checks
              still apply: 0.75 on heavy RTT inflation, 0.90 on moderate inflation or after
              a lossy round.  Inflation counts only beyond ``RTT_INFLATION_MIN_EXCESS_NS``
              so that event-loop jitter on a sub-millisecond path is not taken for a queue.
``PROBE_RTT`` when the 10 s minimum RTT has expired (the estimator replaced it with a
              higher sample), keep at most ``MIN_CWND_DATAGRAMS`` in flight for 200 ms and a
              round, to measure the empty-queue RTT again.

Loss: a lost datagram shrinks the window by its size (never below the floor), a loss
during the 1.25 probe ends the probe after its first min RTT, lossy rounds (more than 2 %
of the round's bytes lost) lower the cruise gain to 0.90, and lossy rounds without
bandwidth growth end STARTUP (where losses do not shrink the window).  The bandwidth
filter itself is not cut on loss (unlike the reference's ``bw_max * 0.95`` per
retransmission): delivery-rate samples already shrink by the loss fraction, and cutting
the filter as well makes the estimate shrink geometrically under random loss until the
flow starves (we measured exactly that in the simulation).

Window: ``cwnd = gain * (BDP + ACK-aggregation allowance) + 3 datagrams``, at least
``MIN_CWND_DATAGRAMS`` (4) datagrams: enough to keep per-packet ACKs flowing and to
recover by time-threshold loss detection after a single loss, and the BBR PROBE_RTT floor.
The initial window is ``INITIAL_CWND_DATAGRAMS`` (10, RFC 6928 / RFC 9002).  The
aggregation allowance (BBR's ``extra_acked``: how far ACKed bytes ran ahead of the
estimated rate, maximum over 10 rounds) matters when ACKs arrive in batches, as they do
from an event loop that reads many datagrams per wake-up: on a 50 us path with ACKs in
3 ms batches the feedback loop is 3 ms long, not 50 us.  Unlike BBR v1 the gain applies to
the allowance too, and PROBE_BW phases last at least one round as well as one min RTT;
without both, STARTUP and the probes stalled at 16 % of a 300 MB/s simulated link.
Pacing, not the window, keeps the queue small.

App-limited periods: samples taken while the sender had nothing to send only raise the
filter, and the filter ages only in rounds that produced a usable sample, so idle time and
PROBE_RTT never push the estimate out.

Measured in the seeded simulation of ``tests/test_congestion_bbr.py`` (100 Mbit/s, 40 ms,
buffer 4 x BDP): full rate after about 1 s, startup queue at most ~2.6 x BDP, steady queue
about 0.25 x BDP, no drops; with 20 % random loss it sends at about 0.9 of the link and
delivers 0.72; with a 0.1 x BDP buffer it loses about 2 % in steady state; 300 MB/s with a
50 us RTT and ACKs in 1 or 3 ms batches: >= 99 % of the link.
"""

from __future__ import annotations

import logging
from enum import Enum

from qotp.congestion.base import SECOND_NS, DeliveryRateSampler, SendSample
from qotp.congestion.pacing import Pacer
from qotp.congestion.rtt import RttEstimator

__all__ = [
    "BW_FILTER_ROUNDS",
    "CRUISE_GAIN_PCT",
    "CWND_GAIN_PCT",
    "DEFAULT_MAX_DATAGRAM_BYTES",
    "DRAIN_GAIN_PCT",
    "INITIAL_CWND_DATAGRAMS",
    "LOSS_CRUISE_GAIN_PCT",
    "MIN_CWND_DATAGRAMS",
    "PROBE_BW_GAIN_CYCLE_PCT",
    "PROBE_RTT_DURATION_NS",
    "PROBE_UP_GAIN_PCT",
    "STARTUP_GAIN_PCT",
    "Bbr",
    "BbrState",
]

logger = logging.getLogger(__name__)

MS_NS = 1_000_000

STARTUP_GAIN_PCT = 277
"""Pacing and window gain in STARTUP (Go: ``startupGain``)."""
DRAIN_GAIN_PCT = 75
"""Pacing gain in DRAIN and after a probe (Go: ``drainGain``)."""
PROBE_UP_GAIN_PCT = 125
"""Pacing gain of the bandwidth probe (Go: ``probeGain``)."""
CRUISE_GAIN_PCT = 100
"""Pacing gain between probes (Go: ``normalGain``)."""
LOSS_CRUISE_GAIN_PCT = 90
"""Cruise gain after a lossy round or on moderate RTT inflation (Go: ``dupAckGain``)."""
CWND_GAIN_PCT = 200
"""Window gain outside STARTUP (BBR v1)."""
PROBE_BW_GAIN_CYCLE_PCT = (125, 75, 100, 100, 100, 100, 100, 100)
"""PROBE_BW phases, one minimum RTT each: a probe every 8 x min-RTT (Go: ``probeMultiplier``)."""
PROBE_UP_MAX_PHASES = 2
"""The 1.25 probe lasts at most this many minimum RTTs."""
PROBE_BW_FIRST_PHASE = 2
"""Enter PROBE_BW cruising (deterministic; BBR v1 picks a random phase)."""
BW_FILTER_ROUNDS = 10
"""Window of the bandwidth maximum filter, in round trips (BBR v1)."""
FULL_BW_GROWTH_PCT = 125
"""STARTUP continues while the bandwidth grows by this much per round..."""
FULL_BW_ROUNDS = 3
"""...and ends after this many rounds without such growth (Go: ``bwDecThreshold`` = 3)."""
FULL_BW_LOSSY_ROUNDS = 2
"""...or after this many such rounds when they also lost more than ``LOSS_THRESHOLD_PCT``."""
RTT_INFLATION_HIGH_PCT = 150
"""``srtt`` above this share of the minimum RTT means a queue: cruise at the drain gain."""
RTT_INFLATION_MODERATE_PCT = 125
"""``srtt`` above this share of the minimum RTT: cruise at 0.90."""
RTT_INFLATION_MIN_EXCESS_NS = 5 * MS_NS
"""RTT inflation below this absolute excess is jitter (timers, ACK batching), not a queue."""
LOSS_THRESHOLD_PCT = 2
"""A round that lost more than this share of its bytes is lossy (BBR v2's 2 %)."""
MIN_CWND_DATAGRAMS = 4
"""Window floor and PROBE_RTT window, in datagrams."""
INITIAL_CWND_DATAGRAMS = 10
"""Initial window, in datagrams (RFC 6928, RFC 9002)."""
PROBE_RTT_DURATION_NS = 200 * MS_NS
"""Time spent at the window floor in PROBE_RTT (BBR v1)."""
NOMINAL_RTT_NS = 1 * MS_NS
"""RTT assumed for the initial pacing rate before any sample (Linux BBR)."""
EXTRA_ACKED_MAX_NS = 100 * MS_NS
"""The ACK-aggregation allowance is at most this much data at the estimated bandwidth."""
WINDOW_HEADROOM_DATAGRAMS = 3
"""Added to the target window so per-packet ACK timing does not starve it (BBR v1)."""
DEFAULT_MAX_DATAGRAM_BYTES = 1400
"""The reference's default MTU; the unit of the window floor and initial window."""


class BbrState(Enum):
    """BBR's modes; ``value`` is the name reported in statistics."""

    STARTUP = "startup"
    DRAIN = "drain"
    PROBE_BW = "probe_bw"
    PROBE_RTT = "probe_rtt"


class _RoundMaxFilter:
    """Maximum of the values seen over the last ``rounds`` round trips (one slot per round).

    Slots age only when a value is added, as in Linux BBR's ``minmax`` filter: rounds with
    no usable sample (app-limited, PROBE_RTT) do not push the estimate out of the window.
    """

    __slots__ = ("_last_round", "_rounds", "_slot_round", "_slot_value", "value")

    def __init__(self, rounds: int) -> None:
        self._rounds = rounds
        self._slot_value = [0] * rounds
        self._slot_round = [-rounds] * rounds
        self._last_round = 0
        self.value = 0

    def update(self, sample: int, round_count: int) -> None:
        """Add ``sample`` observed in round ``round_count``."""
        index = round_count % self._rounds
        if self._slot_round[index] != round_count:
            self._slot_round[index] = round_count
            self._slot_value[index] = sample
        elif sample > self._slot_value[index]:
            self._slot_value[index] = sample
        if round_count != self._last_round:
            self._last_round = round_count
            oldest = round_count - self._rounds
            best = 0
            for slot_round, slot_value in zip(self._slot_round, self._slot_value, strict=True):
                if slot_round > oldest and slot_value > best:
                    best = slot_value
            self.value = best
        elif sample > self.value:
            self.value = sample


class Bbr:
    """BBR controller implementing :class:`~qotp.congestion.base.CongestionController`.

    ``rtt`` is the connection's estimator (the connection feeds it; BBR only reads it).

    Per ACK, a fast path takes the delivery-rate sample, counts rounds, measures ACK
    aggregation and grows the window toward a cached target.  The state machine, the
    target window and the pacing rate are recomputed (slow path) only when an input changed:
    a new round, a new bandwidth maximum, a new minimum RTT, the end of a PROBE_BW phase, or
    the in-flight condition that DRAIN / PROBE_RTT wait for.
    """

    __slots__ = (
        "_ack_epoch_bytes",
        "_ack_epoch_start_ns",
        "_bdp",
        "_bw_filter",
        "_cwnd",
        "_cwnd_gain_pct",
        "_cycle_index",
        "_extra_acked_filter",
        "_full_bw",
        "_full_bw_count",
        "_initial_cwnd",
        "_loss_in_probe",
        "_lossy_round",
        "_max_datagram",
        "_min_cwnd",
        "_model_bw",
        "_model_min_rtt_ns",
        "_next_round_delivered",
        "_pacing_from_bw",
        "_pacing_gain_pct",
        "_phase_end_ns",
        "_phase_round",
        "_probe_rtt_done_ns",
        "_probe_rtt_round",
        "_round_acked_bytes",
        "_round_bw_max",
        "_round_extra_acked_max",
        "_round_lost_bytes",
        "_state",
        "_target_cwnd",
        "filled_pipe",
        "lost_packets",
        "pacer",
        "round_count",
        "rtt",
        "sampler",
    )

    def __init__(
        self,
        rtt: RttEstimator,
        *,
        max_datagram_bytes: int = DEFAULT_MAX_DATAGRAM_BYTES,
        initial_cwnd_datagrams: int = INITIAL_CWND_DATAGRAMS,
        pacer: Pacer | None = None,
    ) -> None:
        self.rtt = rtt
        self.sampler = DeliveryRateSampler()
        self._max_datagram = max(max_datagram_bytes, 1)
        self.pacer = pacer if pacer is not None else Pacer(min_burst_bytes=2 * self._max_datagram)
        self._min_cwnd = MIN_CWND_DATAGRAMS * self._max_datagram
        self._initial_cwnd = max(initial_cwnd_datagrams * self._max_datagram, self._min_cwnd)
        self._cwnd = self._initial_cwnd
        self._target_cwnd = self._initial_cwnd
        self._bdp = self._initial_cwnd
        self._state = BbrState.STARTUP
        self._pacing_gain_pct = STARTUP_GAIN_PCT
        self._cwnd_gain_pct = STARTUP_GAIN_PCT
        self._bw_filter = _RoundMaxFilter(BW_FILTER_ROUNDS)
        self._extra_acked_filter = _RoundMaxFilter(BW_FILTER_ROUNDS)
        self._model_bw = 0
        self._model_min_rtt_ns = 0
        self._ack_epoch_start_ns = 0
        self._ack_epoch_bytes = 0
        self.round_count = 0
        """Round trips completed (a round ends when a packet sent after its start is ACKed)."""
        self._next_round_delivered = 0
        self._round_acked_bytes = 0
        self._round_lost_bytes = 0
        self._round_bw_max = 0
        self._round_extra_acked_max = 0
        self._lossy_round = False
        self._loss_in_probe = False
        self.filled_pipe = False
        """Whether STARTUP found the bottleneck bandwidth."""
        self._full_bw = 0
        self._full_bw_count = 0
        self._cycle_index = PROBE_BW_FIRST_PHASE
        self._phase_end_ns = 0
        self._phase_round = 0
        self._probe_rtt_done_ns = 0
        self._probe_rtt_round = 0
        self._pacing_from_bw = False
        self.lost_packets = 0
        """Datagrams reported lost (statistics)."""
        self._update_pacing_rate()

    # -- queries -----------------------------------------------------------------------

    @property
    def state(self) -> BbrState:
        """Current BBR state."""
        return self._state

    @property
    def state_name(self) -> str:
        """Current state name, for statistics."""
        return self._state.value

    @property
    def pacing_gain_pct(self) -> int:
        """Current pacing gain in percent."""
        return self._pacing_gain_pct

    @property
    def congestion_window_bytes(self) -> int:
        """Bytes allowed in flight (the window floor while probing the RTT)."""
        if self._state is BbrState.PROBE_RTT and self._cwnd > self._min_cwnd:
            return self._min_cwnd
        return self._cwnd

    @property
    def pacing_rate_bytes_per_s(self) -> int:
        """Current pacing rate."""
        return self.pacer.rate_bytes_per_s

    @property
    def bandwidth_estimate_bytes_per_s(self) -> int:
        """Windowed maximum delivery rate; 0 before the first valid sample."""
        return self._bw_filter.value

    def bdp_bytes(self, gain_pct: int = 100) -> int:
        """``gain * bandwidth * min_rtt``, or the initial window while either is unknown."""
        bw = self._bw_filter.value
        min_rtt = self.rtt.min_rtt_ns
        if bw == 0 or min_rtt == 0:
            return self._initial_cwnd
        return bw * min_rtt * gain_pct // (100 * SECOND_NS)

    def can_send(self, bytes_in_flight: int, size_bytes: int) -> bool:
        """Whether ``size_bytes`` more fit the window (always, if nothing is in flight)."""
        if bytes_in_flight <= 0:
            return True
        cwnd = self._cwnd
        if self._state is BbrState.PROBE_RTT and cwnd > self._min_cwnd:
            cwnd = self._min_cwnd
        return bytes_in_flight + size_bytes <= cwnd

    def next_send_time(self, now: int, size_bytes: int) -> int:
        """Earliest time the pacer lets a datagram of ``size_bytes`` leave."""
        return self.pacer.next_send_time(now, size_bytes)

    # -- events ------------------------------------------------------------------------

    def on_packet_sent(self, now: int, size_bytes: int, bytes_in_flight: int) -> SendSample:
        """Snapshot delivery state for the datagram and charge the pacer."""
        self.pacer.on_sent(now, size_bytes)
        return self.sampler.on_sent(now, size_bytes, bytes_in_flight)

    def on_app_limited(self, bytes_in_flight: int) -> None:
        """Mark the following samples application-limited."""
        self.sampler.on_app_limited(bytes_in_flight)

    def on_packet_lost(self, now: int, sample: SendSample, bytes_in_flight: int) -> None:
        """Shrink the window by the lost datagram and remember the loss for this round."""
        size = sample.size_bytes
        self.lost_packets += 1
        self._round_lost_bytes += size
        state = self._state
        if state is BbrState.STARTUP:
            # STARTUP answers loss by ending (see _check_full_pipe), not by shrinking the
            # window: under random loss, a window that loses what is lost grows too slowly
            # to tell growth from a plateau.
            return
        cwnd = self._cwnd - size
        self._cwnd = cwnd if cwnd > self._min_cwnd else self._min_cwnd
        if state is BbrState.PROBE_BW and self._cycle_index == 0:
            self._loss_in_probe = True

    def on_packet_acked(self, now: int, sample: SendSample, bytes_in_flight: int) -> None:
        """Take a delivery-rate sample, grow the window, run the state machine if needed."""
        self.on_packets_acked(now, sample, sample.size_bytes, bytes_in_flight)

    def on_packets_acked(
        self, now: int, newest: SendSample, acked_bytes: int, bytes_in_flight: int
    ) -> None:
        """The same for a batch: one rate sample from the newest packet, growth by all."""
        sampler = self.sampler
        sample = newest
        acked = acked_bytes
        min_rtt = self.rtt.min_rtt_ns
        rate = sampler.on_acked(now, sample, min_rtt, acked)

        slow = min_rtt != self._model_min_rtt_ns or self._model_bw == 0
        bw_filter = self._bw_filter
        round_start = False
        if sample.delivered_bytes >= self._next_round_delivered:
            # A round ends: fold its maxima into the windowed filters (which age only when
            # a round had a usable sample) and judge its loss.
            finished = self.round_count
            if self._round_bw_max:
                bw_filter.update(self._round_bw_max, finished)
                self._round_bw_max = 0
            if self._round_extra_acked_max:
                self._extra_acked_filter.update(self._round_extra_acked_max, finished)
                self._round_extra_acked_max = 0
            self._next_round_delivered = sampler.delivered_bytes
            self.round_count = finished + 1
            round_start = slow = True
            lost = self._round_lost_bytes
            total = lost + self._round_acked_bytes
            self._lossy_round = lost > 0 and lost * 100 > total * LOSS_THRESHOLD_PCT
            self._round_lost_bytes = 0
            self._round_acked_bytes = 0
        self._round_acked_bytes += acked

        bw = bw_filter.value
        if rate > self._round_bw_max and (not sampler.last_is_app_limited or rate >= bw):
            self._round_bw_max = rate
            if rate > bw:  # a new maximum counts at once
                bw_filter.update(rate, self.round_count)
                bw = rate
        if bw != self._model_bw:
            slow = True

        # ACK aggregation (BBR v1 "extra_acked"): bytes ACKed beyond bw * elapsed in this
        # epoch; a new epoch starts whenever the ACKs fall behind the estimated rate.
        if bw:
            elapsed = now - self._ack_epoch_start_ns
            expected = bw * elapsed // SECOND_NS if elapsed > 0 else 0
            epoch_bytes = self._ack_epoch_bytes
            if epoch_bytes <= expected:
                epoch_bytes = 0
                self._ack_epoch_start_ns = now
                expected = 0
            epoch_bytes += acked
            self._ack_epoch_bytes = epoch_bytes
            extra = epoch_bytes - expected
            if extra > self._round_extra_acked_max:
                cap = bw * EXTRA_ACKED_MAX_NS // SECOND_NS
                if cap > self._cwnd:
                    cap = self._cwnd
                self._round_extra_acked_max = extra if extra < cap else cap

        state = self._state
        if not slow:
            if state is BbrState.PROBE_BW:
                slow = (now >= self._phase_end_ns and self.round_count > self._phase_round) or (
                    self._cycle_index == 1 and bytes_in_flight <= self._bdp
                )
            elif state is not BbrState.STARTUP:
                slow = True  # DRAIN and PROBE_RTT wait for in-flight conditions
        if slow:
            self._slow_path(now, bytes_in_flight, round_start)

        cwnd = self._cwnd
        target = self._target_cwnd
        if self.filled_pipe:
            if cwnd != target:
                cwnd = cwnd + acked if cwnd + acked < target else target
        elif cwnd < target or sampler.delivered_bytes < self._initial_cwnd:
            # STARTUP grows like slow start; pacing at 2.77 x bw keeps the bursts in check.
            cwnd += acked
        self._cwnd = cwnd if cwnd > self._min_cwnd else self._min_cwnd

    # -- slow path ---------------------------------------------------------------------

    def _slow_path(self, now: int, bytes_in_flight: int, round_start: bool) -> None:
        min_rtt = self.rtt.min_rtt_ns
        seen_min_rtt = self._model_min_rtt_ns
        self._model_min_rtt_ns = min_rtt
        bw = self._model_bw = self._bw_filter.value
        if bw and min_rtt:
            self._bdp = bw * min_rtt // SECOND_NS
        else:
            self._bdp = self._initial_cwnd

        # PROBE_RTT entry: the estimator replaced an expired minimum by a higher sample.
        if self._state is not BbrState.PROBE_RTT and 0 < seen_min_rtt < min_rtt:
            self._state = BbrState.PROBE_RTT
            self._pacing_gain_pct = CRUISE_GAIN_PCT
            self._probe_rtt_done_ns = 0
            logger.debug("bbr: min RTT expired, entering probe_rtt")

        if round_start:
            self._check_full_pipe()
        self._update_state(now, bytes_in_flight, min_rtt)
        self._update_target_cwnd()
        self._update_pacing_rate()

    def _check_full_pipe(self) -> None:
        if self.filled_pipe or self.sampler.last_is_app_limited:
            return
        bw = self._bw_filter.value
        if bw * 100 >= self._full_bw * FULL_BW_GROWTH_PCT:
            self._full_bw = bw
            self._full_bw_count = 0
            return
        self._full_bw_count += 1
        # Loss while the bandwidth no longer grows (two rounds, so that one lumpy round of
        # batched ACKs is not taken for a plateau): the bottleneck queue is overflowing.
        if self._full_bw_count >= FULL_BW_ROUNDS or (
            self._lossy_round and self._full_bw_count >= FULL_BW_LOSSY_ROUNDS
        ):
            self.filled_pipe = True
            logger.debug("bbr: pipe full at %d B/s after %d rounds", bw, self.round_count)

    def _enter_probe_bw(self, now: int, min_rtt: int) -> None:
        self._state = BbrState.PROBE_BW
        self._cwnd_gain_pct = CWND_GAIN_PCT
        self._cycle_index = PROBE_BW_FIRST_PHASE
        self._phase_end_ns = now + (min_rtt if min_rtt > 0 else NOMINAL_RTT_NS)
        self._phase_round = self.round_count
        self._loss_in_probe = False
        self._pacing_gain_pct = self._cruise_gain(min_rtt)

    def _update_state(self, now: int, bytes_in_flight: int, min_rtt: int) -> None:
        state = self._state
        if state is BbrState.STARTUP:
            if self.filled_pipe:
                self._state = state = BbrState.DRAIN
                self._pacing_gain_pct = DRAIN_GAIN_PCT
                self._cwnd_gain_pct = STARTUP_GAIN_PCT
        if state is BbrState.DRAIN:
            if bytes_in_flight <= self._bdp:
                self._enter_probe_bw(now, min_rtt)
        elif state is BbrState.PROBE_BW:
            self._advance_cycle(now, bytes_in_flight, min_rtt)
        elif state is BbrState.PROBE_RTT:
            # The low delivery rate of this mode says nothing about the path (Linux BBR).
            self.sampler.on_app_limited(bytes_in_flight)
            self._update_probe_rtt(now, bytes_in_flight, min_rtt)

    def _advance_cycle(self, now: int, bytes_in_flight: int, min_rtt: int) -> None:
        phase_ns = min_rtt if min_rtt > 0 else NOMINAL_RTT_NS
        phase_end = self._phase_end_ns
        # A phase lasts one min RTT and at least one round: with ACKs in batches a round is
        # far longer than the min RTT, and a probe shorter than a round measures nothing.
        full_length = (now >= phase_end or phase_end - now > phase_ns) and (
            self.round_count > self._phase_round
        )
        gain = PROBE_BW_GAIN_CYCLE_PCT[self._cycle_index]
        if gain > CRUISE_GAIN_PCT:
            # BBR v1: probe for at least one min RTT, then until the queue is built or
            # losses show that the extra rate does not fit.  Ending at the first loss would
            # starve the flow under random (non-congestive) loss.  Unlike BBR v1 the probe
            # also ends after PROBE_UP_MAX_PHASES min RTTs: a flow held back by the peer's
            # window or the application never builds the queue and would probe forever.
            advance = full_length and (
                self._loss_in_probe
                or bytes_in_flight * 100 >= self._bdp * gain
                or now >= phase_end + (PROBE_UP_MAX_PHASES - 1) * phase_ns
            )
        elif gain < CRUISE_GAIN_PCT:
            advance = full_length or bytes_in_flight <= self._bdp
        else:
            advance = full_length
        if advance:
            self._cycle_index = (self._cycle_index + 1) % len(PROBE_BW_GAIN_CYCLE_PCT)
            self._phase_end_ns = now + phase_ns
            self._phase_round = self.round_count
            self._loss_in_probe = False
            gain = PROBE_BW_GAIN_CYCLE_PCT[self._cycle_index]
        if gain == CRUISE_GAIN_PCT:
            gain = self._cruise_gain(min_rtt)
        self._pacing_gain_pct = gain

    def _cruise_gain(self, min_rtt: int) -> int:
        # The reference's RTT inflation check, ignoring excess below scheduling jitter.
        srtt = self.rtt.srtt_ns
        if min_rtt > 0 and srtt - min_rtt > RTT_INFLATION_MIN_EXCESS_NS:
            if srtt * 100 > min_rtt * RTT_INFLATION_HIGH_PCT:
                return DRAIN_GAIN_PCT
            if srtt * 100 > min_rtt * RTT_INFLATION_MODERATE_PCT:
                return LOSS_CRUISE_GAIN_PCT
        if self._lossy_round:
            return LOSS_CRUISE_GAIN_PCT
        return CRUISE_GAIN_PCT

    def _update_probe_rtt(self, now: int, bytes_in_flight: int, min_rtt: int) -> None:
        if self._probe_rtt_done_ns == 0:
            if bytes_in_flight <= self._min_cwnd:
                self._probe_rtt_done_ns = now + PROBE_RTT_DURATION_NS
                self._probe_rtt_round = self.round_count
            return
        if self.round_count > self._probe_rtt_round and now >= self._probe_rtt_done_ns:
            self._probe_rtt_done_ns = 0
            if self.filled_pipe:
                self._enter_probe_bw(now, min_rtt)
            else:
                self._state = BbrState.STARTUP
                self._pacing_gain_pct = STARTUP_GAIN_PCT
                self._cwnd_gain_pct = STARTUP_GAIN_PCT

    def _update_target_cwnd(self) -> None:
        if self._model_bw == 0 or self._model_min_rtt_ns == 0:
            target = self._initial_cwnd
        else:
            # The gain applies to the ACK-aggregation allowance too: with ACKs in batches the
            # real feedback loop is min RTT + batch period long, and a window of gain x that
            # is what lets STARTUP and the probes grow at all.
            extra = self._extra_acked_filter.value
            if self._round_extra_acked_max > extra:
                extra = self._round_extra_acked_max
            target = (self._bdp + extra) * self._cwnd_gain_pct // 100 + (
                WINDOW_HEADROOM_DATAGRAMS * self._max_datagram
            )
        self._target_cwnd = target if target > self._min_cwnd else self._min_cwnd

    def _update_pacing_rate(self) -> None:
        bw = self._bw_filter.value
        if bw == 0:
            if self._pacing_from_bw:
                return
            # Initial rate (Linux BBR): the window per RTT at the startup gain.
            srtt = self.rtt.srtt_ns
            rtt = srtt if srtt > 0 else NOMINAL_RTT_NS
            rate = self._cwnd * STARTUP_GAIN_PCT * SECOND_NS // (100 * rtt)
        else:
            self._pacing_from_bw = True
            rate = bw * self._pacing_gain_pct // 100
            if not self.filled_pipe:
                # Before the pipe is full, never slow down: the first delivery-rate samples
                # cover a single initial window and are far below the path's rate.
                current = self.pacer.rate_bytes_per_s
                rate = rate if rate > current else current
        self.pacer.set_rate(rate if rate > 1 else 1)
