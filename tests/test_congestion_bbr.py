"""BBR, delivery-rate sampling and the controller seam (qotp.congestion.bbr, .base).

The end-to-end checks run a small deterministic packet simulation: one sender, a bottleneck
link of given rate with a FIFO queue, a fixed propagation RTT, seeded random loss, and a
receiver that acknowledges every datagram (as QOTP does).  The handshake gives one RTT
sample before data flows.  Losses are detected as a connection should: three later datagrams
acknowledged, or the RTO counted from the later of the send and the latest ACK (counting it
from the send alone fires spuriously once per-packet samples have shrunk RTTVAR to ~0 on a
path with a steady queue).
"""

from __future__ import annotations

import heapq
import random
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from qotp.congestion import (
    Bbr,
    BbrState,
    CongestionController,
    DeliveryRateSampler,
    NewReno,
    RttEstimator,
    SendSample,
)
from qotp.congestion.bbr import (
    DRAIN_GAIN_PCT,
    LOSS_CRUISE_GAIN_PCT,
    MIN_CWND_DATAGRAMS,
    PROBE_UP_GAIN_PCT,
    STARTUP_GAIN_PCT,
)

MS = 1_000_000
S = 1_000_000_000
DATAGRAM = 1400
LINK_100_MBIT = 12_500_000  # bytes per second


# -- simulation --------------------------------------------------------------------------


@dataclass
class Run:
    """What happened in one simulated transfer."""

    link_bytes_per_s: int
    bdp_bytes: int
    controller: CongestionController
    rtt: RttEstimator
    sent: list[tuple[int, int]] = field(default_factory=list)
    acked: list[tuple[int, int]] = field(default_factory=list)
    queue: list[tuple[int, int]] = field(default_factory=list)
    tail_drops: list[int] = field(default_factory=list)
    states: list[tuple[int, str]] = field(default_factory=list)
    gains: set[int] = field(default_factory=set)
    bandwidth: list[tuple[int, int]] = field(default_factory=list)

    def share(self, series: list[tuple[int, int]], start: int, end: int) -> float:
        """Rate of ``series`` in [start, end) as a share of the link rate."""
        total = sum(size for when, size in series if start <= when < end)
        return total * S / (end - start) / self.link_bytes_per_s

    def max_queue_bdp(self, start: int) -> float:
        return max((q for when, q in self.queue if when >= start), default=0) / self.bdp_bytes

    def state_names(self) -> list[str]:
        return [name for _, name in self.states]


def simulate(
    factory: Callable[[RttEstimator], CongestionController],
    *,
    link_bytes_per_s: int = LINK_100_MBIT,
    rtt_ns: int = 40 * MS,
    queue_bdp: float = 4.0,
    loss: float = 0.0,
    seed: int = 1,
    duration_ns: int = 3 * S,
    timer_ns: int = 0,
    ack_batch_ns: int = 0,
    queue_bytes: int | None = None,
    pause: tuple[int, int] | None = None,
) -> Run:
    """Bulk transfer through a bottleneck.

    ``timer_ns``: the sender's timer fires only on multiples of it.  ``ack_batch_ns``: the
    receiver handles arrivals in batches, so ACKs reach the sender on multiples of it (an
    event loop reading many datagrams per wake-up).  During ``pause`` the application
    sends one datagram every 10 ms only.
    """
    rng = random.Random(seed)
    rtt = RttEstimator()
    cc = factory(rtt)
    bdp = link_bytes_per_s * rtt_ns // S
    queue_cap = int(queue_bdp * bdp) if queue_bytes is None else queue_bytes
    run = Run(link_bytes_per_s, bdp, cc, rtt)
    inflight: OrderedDict[int, SendSample] = OrderedDict()
    bytes_in_flight = 0
    acks: list[tuple[int, int]] = []
    link_free_at = 0
    seq = 0
    now = 0
    trickle_at = 0
    last_ack_at = 0
    rtt.update(rtt_ns, 0)  # the handshake's sample
    while now < duration_ns:
        while acks and acks[0][0] <= now:
            _, acked_seq = heapq.heappop(acks)
            sample = inflight.pop(acked_seq, None)
            if sample is None:
                continue
            last_ack_at = now
            bytes_in_flight -= sample.size_bytes
            rtt.update(now - sample.sent_time_ns, now)
            cc.on_packet_acked(now, sample, bytes_in_flight)
            run.acked.append((now, sample.size_bytes))
            while inflight:  # packet threshold: 3 later datagrams acknowledged
                first = next(iter(inflight))
                if first >= acked_seq - 3:
                    break
                lost = inflight.pop(first)
                bytes_in_flight -= lost.size_bytes
                cc.on_packet_lost(now, lost, bytes_in_flight)
        while inflight:  # RTO
            first = next(iter(inflight))
            oldest = inflight[first]
            if now - max(oldest.sent_time_ns, last_ack_at) <= rtt.rto_ns():
                break
            del inflight[first]
            bytes_in_flight -= oldest.size_bytes
            cc.on_packet_lost(now, oldest, bytes_in_flight)
        if not run.states or run.states[-1][1] != cc.state_name:
            run.states.append((now, cc.state_name))
        if isinstance(cc, Bbr):
            run.gains.add(cc.pacing_gain_pct)
        run.bandwidth.append((now, cc.bandwidth_estimate_bytes_per_s))

        paused = pause is not None and pause[0] <= now < pause[1]
        next_send: int | None = None
        while cc.can_send(bytes_in_flight, DATAGRAM):
            if paused and now < trickle_at:
                cc.on_app_limited(bytes_in_flight)
                next_send = trickle_at
                break
            when = cc.next_send_time(now, DATAGRAM)
            if when > now:
                next_send = when
                break
            seq += 1
            inflight[seq] = cc.on_packet_sent(now, DATAGRAM, bytes_in_flight)
            bytes_in_flight += DATAGRAM
            run.sent.append((now, DATAGRAM))
            if paused:
                trickle_at = now + 10 * MS
            if loss and rng.random() < loss:
                continue
            queued = max(0, link_free_at - now) * link_bytes_per_s // S
            if queued + DATAGRAM > queue_cap:
                run.tail_drops.append(now)
                continue
            link_free_at = max(now, link_free_at) + DATAGRAM * S // link_bytes_per_s
            run.queue.append((now, queued + DATAGRAM))
            ack_at = link_free_at + rtt_ns
            if ack_batch_ns:
                ack_at = -(-ack_at // ack_batch_ns) * ack_batch_ns
            heapq.heappush(acks, (ack_at, seq))

        candidates = [duration_ns]
        if acks:
            candidates.append(acks[0][0])
        if next_send is not None:
            if timer_ns:
                next_send = -(-next_send // timer_ns) * timer_ns
            candidates.append(next_send)
        if inflight:
            oldest_sent = inflight[next(iter(inflight))].sent_time_ns
            candidates.append(max(oldest_sent, last_ack_at) + rtt.rto_ns() + 1)
        now = max(min(candidates), now + 1)
    return run


def bbr(rtt: RttEstimator) -> CongestionController:
    return Bbr(rtt)


def newreno(rtt: RttEstimator) -> CongestionController:
    return NewReno(rtt)


# -- end-to-end behaviour ----------------------------------------------------------------


def test_bbr_fills_a_100_mbit_link_and_keeps_the_queue_small() -> None:
    run = simulate(bbr)
    assert run.share(run.acked, 1 * S, 3 * S) >= 0.8
    assert run.share(run.acked, 2 * S, 3 * S) >= 0.95
    assert run.state_names()[:3] == ["startup", "drain", "probe_bw"]
    assert not run.tail_drops
    # STARTUP may queue up to its window, 2.77 x (BDP + ACK-aggregation allowance) -- the
    # allowance is inflated while the bandwidth estimate lags -- then DRAIN empties it; in
    # PROBE_BW only the probes queue a little.
    assert run.max_queue_bdp(0) <= 3.0
    assert run.max_queue_bdp(int(1.5 * S)) <= 0.5
    assert abs(run.controller.bandwidth_estimate_bytes_per_s - LINK_100_MBIT) < LINK_100_MBIT // 20
    assert {STARTUP_GAIN_PCT, DRAIN_GAIN_PCT, PROBE_UP_GAIN_PCT, 100} <= run.gains


def test_bbr_backs_off_under_random_loss_without_collapsing() -> None:
    clean = simulate(bbr)
    lossy = simulate(bbr, loss=0.2, seed=7)
    clean_rate = clean.share(clean.sent, 1 * S, 3 * S)
    lossy_rate = lossy.share(lossy.sent, 1 * S, 3 * S)
    assert lossy_rate < clean_rate * 0.95
    assert lossy_rate > 0.5
    assert lossy.share(lossy.sent, 2 * S, 3 * S) > 0.5  # and it stays there
    assert lossy.share(lossy.acked, 1 * S, 3 * S) > 0.4
    assert lossy.controller.congestion_window_bytes >= MIN_CWND_DATAGRAMS * DATAGRAM


def test_bbr_with_a_shallow_buffer_loses_little() -> None:
    run = simulate(bbr, queue_bdp=0.1)
    late_drops = sum(1 for when in run.tail_drops if when >= 1 * S)
    late_sent = sum(1 for when, _ in run.sent if when >= 1 * S)
    assert late_drops <= late_sent * 0.05
    assert run.share(run.acked, 1 * S, 3 * S) >= 0.85


def test_bbr_reaches_hundreds_of_megabytes_per_second_with_coarse_timers() -> None:
    """Loopback-like path: 200 MB/s, 0.2 ms RTT, timers firing on whole milliseconds."""
    run = simulate(
        bbr, link_bytes_per_s=200_000_000, rtt_ns=200_000, duration_ns=S // 5, timer_ns=MS
    )
    assert run.share(run.acked, S // 10, S // 5) >= 0.9


@pytest.mark.parametrize("ack_batch_ns", [1 * MS, 3 * MS])
def test_bbr_fills_a_fast_path_whose_acks_arrive_in_batches(ack_batch_ns: int) -> None:
    """300 MB/s, 50 us RTT, ACKs in 1-3 ms batches: the window must cover the batching
    (the ACK-aggregation allowance, scaled by the window gain) or STARTUP stalls."""
    run = simulate(
        bbr,
        link_bytes_per_s=300_000_000,
        rtt_ns=50_000,
        duration_ns=S // 5,
        timer_ns=MS,
        ack_batch_ns=ack_batch_ns,
        queue_bytes=1_000_000,
    )
    assert run.share(run.acked, S // 10, S // 5) >= 0.9


def test_bbr_probes_min_rtt_after_ten_seconds_and_recovers() -> None:
    run = simulate(bbr, link_bytes_per_s=LINK_100_MBIT // 10, rtt_ns=20 * MS, duration_ns=12 * S)
    names = run.state_names()
    assert "probe_rtt" in names
    entered = next(when for when, name in run.states if name == "probe_rtt")
    assert 10 * S <= entered <= 11 * S
    assert names[-1] == "probe_bw"
    assert run.share(run.acked, 11 * S, 12 * S) >= 0.9


def test_app_limited_pause_does_not_collapse_the_estimate() -> None:
    run = simulate(bbr, duration_ns=4 * S, pause=(1500 * MS, 3500 * MS))
    before = max(bw for when, bw in run.bandwidth if when < 1500 * MS)
    during = min(bw for when, bw in run.bandwidth if 1500 * MS <= when < 3500 * MS)
    assert during >= before * 0.9
    assert run.share(run.sent, 1600 * MS, 3400 * MS) < 0.05  # it really was paused
    assert run.share(run.acked, 3600 * MS, 4 * S) >= 0.8  # and picks up at once


def test_newreno_runs_through_the_same_seam() -> None:
    run = simulate(newreno)
    assert run.share(run.acked, 2 * S, 3 * S) >= 0.8
    assert run.state_names()[0] == "slow_start"


# -- delivery-rate sampling --------------------------------------------------------------


def test_delivery_rate_matches_a_steady_flow() -> None:
    sampler = DeliveryRateSampler()
    in_flight: list[SendSample] = []
    rates = []
    now = 0
    # 1000 bytes per ms (1 MB/s), each acknowledged 50 ms after it was sent.
    for step in range(500):
        now = step * MS
        while in_flight and in_flight[0].sent_time_ns + 50 * MS <= now:
            rates.append(sampler.on_acked(now, in_flight.pop(0), 50 * MS))
        in_flight.append(sampler.on_sent(now, 1000, len(in_flight) * 1000))
    assert all(990_000 <= rate <= 1_010_000 for rate in rates[100:])


def test_delivery_rate_ignores_ack_bursts_shorter_than_min_rtt() -> None:
    sampler = DeliveryRateSampler()
    first = sampler.on_sent(0, 1000, 0)
    second = sampler.on_sent(0, 1000, 1000)
    assert sampler.on_acked(10 * MS, first, 50 * MS) == 0
    assert sampler.on_acked(10 * MS, second, 0) == 2000 * S // (10 * MS)


def test_app_limited_mark_clears_once_its_data_is_delivered() -> None:
    sampler = DeliveryRateSampler()
    a = sampler.on_sent(0, 1000, 0)
    sampler.on_app_limited(1000)
    assert sampler.is_app_limited
    b = sampler.on_sent(1 * MS, 1000, 1000)
    assert b.is_app_limited and not a.is_app_limited
    sampler.on_acked(50 * MS, a, 0)
    assert sampler.is_app_limited  # delivered == mark, not beyond it yet
    sampler.on_acked(51 * MS, b, 0)
    assert not sampler.is_app_limited
    assert sampler.last_is_app_limited


# -- state machine on synthetic feeds -----------------------------------------------------


def test_initial_state() -> None:
    cc = Bbr(RttEstimator())
    assert cc.state is BbrState.STARTUP
    assert cc.state_name == "startup"
    assert cc.pacing_gain_pct == STARTUP_GAIN_PCT
    assert cc.congestion_window_bytes == 10 * DATAGRAM
    assert cc.bandwidth_estimate_bytes_per_s == 0
    assert cc.pacing_rate_bytes_per_s > 0
    assert cc.can_send(0, 10**9)  # nothing in flight: never blocked
    assert not cc.can_send(10 * DATAGRAM, 1)


def test_loss_shrinks_the_window_after_startup_but_not_below_the_floor() -> None:
    cc = Bbr(RttEstimator())
    samples = [cc.on_packet_sent(0, DATAGRAM, i * DATAGRAM) for i in range(10)]
    for number, sample in enumerate(samples):
        cc.on_packet_lost(200 * MS, sample, (9 - number) * DATAGRAM)
    assert cc.state is BbrState.STARTUP
    assert cc.congestion_window_bytes == 10 * DATAGRAM  # STARTUP ends instead of shrinking
    assert cc.lost_packets == 10

    run = simulate(bbr, duration_ns=2 * S)
    cruising = run.controller
    assert cruising.state_name == "probe_bw"
    window = cruising.congestion_window_bytes
    lost = SendSample(2 * S, DATAGRAM, 0, 0, 0, False)
    cruising.on_packet_lost(2 * S, lost, 0)
    assert cruising.congestion_window_bytes == window - DATAGRAM
    for _ in range(2000):
        cruising.on_packet_lost(2 * S, lost, 0)
    assert cruising.congestion_window_bytes == MIN_CWND_DATAGRAMS * DATAGRAM


def test_plateau_ends_startup_then_drain_then_probe_bw() -> None:
    """Feed a pipe that delivers exactly 1 MB/s with a 50 ms RTT whatever we send."""
    rtt = RttEstimator()
    rtt.update(50 * MS, 0)
    cc = Bbr(rtt)
    pending: list[SendSample] = []
    now = 0
    seen: list[tuple[BbrState, int]] = [(cc.state, cc.pacing_gain_pct)]
    delivered_at = 0
    for _ in range(20000):
        when: int | None = None
        if cc.can_send(len(pending) * DATAGRAM, DATAGRAM):
            when = cc.next_send_time(now, DATAGRAM)
            if when <= now:
                pending.append(cc.on_packet_sent(now, DATAGRAM, len(pending) * DATAGRAM))
                continue
        # The link releases one datagram every 1.4 ms, 50 ms after it was sent at the earliest.
        delivery = None
        if pending:
            delivery = max(delivered_at + 1_400_000, pending[0].sent_time_ns + 50 * MS)
        if when is not None and (delivery is None or when < delivery):
            now = when
            continue
        assert delivery is not None
        now = delivered_at = delivery
        sample = pending.pop(0)
        rtt.update(now - sample.sent_time_ns, now)
        cc.on_packet_acked(now, sample, len(pending) * DATAGRAM)
        if cc.state is not seen[-1][0]:
            seen.append((cc.state, cc.pacing_gain_pct))
        if cc.state is BbrState.PROBE_BW:
            break
    assert seen[:2] == [(BbrState.STARTUP, STARTUP_GAIN_PCT), (BbrState.DRAIN, DRAIN_GAIN_PCT)]
    # PROBE_BW starts cruising; SRTT still remembers the startup queue, so the reference's
    # RTT-inflation check may hold the gain below 1.0 for a while.
    assert seen[2][0] is BbrState.PROBE_BW
    assert seen[2][1] in (100, LOSS_CRUISE_GAIN_PCT, DRAIN_GAIN_PCT)
    assert cc.filled_pipe
    assert 900_000 <= cc.bandwidth_estimate_bytes_per_s <= 1_100_000


# -- robustness ----------------------------------------------------------------------------

OPS = st.lists(
    st.tuples(
        st.sampled_from(["send", "ack", "lose", "app", "rtt"]),
        st.integers(-(2**40), 2**40),
        st.integers(-(2**31), 2**31),
    ),
    max_size=80,
)


@pytest.mark.parametrize("factory", [bbr, newreno])
@settings(max_examples=150, deadline=None)
@given(ops=OPS)
def test_arbitrary_event_sequences_never_raise_or_go_negative(
    factory: Callable[[RttEstimator], CongestionController],
    ops: list[tuple[str, int, int]],
) -> None:
    rtt = RttEstimator()
    cc = factory(rtt)
    samples: list[SendSample] = []
    now = 0
    for op, step, value in ops:
        now += step
        in_flight = sum(sample.size_bytes for sample in samples)
        if op == "send":
            samples.append(cc.on_packet_sent(now, value, in_flight))
        elif op == "app":
            cc.on_app_limited(value)
        elif op == "rtt":
            rtt.update(value, now)
        elif samples:
            sample = samples.pop(value % len(samples))
            in_flight -= sample.size_bytes
            if op == "ack":
                cc.on_packet_acked(now, sample, in_flight)
            else:
                cc.on_packet_lost(now, sample, in_flight)
        assert cc.congestion_window_bytes >= DATAGRAM
        assert cc.pacing_rate_bytes_per_s >= 0
        assert cc.bandwidth_estimate_bytes_per_s >= 0
        assert cc.next_send_time(now, value) >= now
        assert cc.can_send(0, value)
        assert isinstance(cc.state_name, str)
