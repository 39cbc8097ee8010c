"""RTT estimation, RTO clamping and backoff, the retry limit (qotp.congestion.rtt)."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from qotp.congestion.rtt import (
    INITIAL_RTO_NS,
    LOSS_DELAY_GRANULARITY_NS,
    MAX_RETRANSMISSIONS,
    MAX_RTO_NS,
    MAX_RTT_SAMPLE_NS,
    MAX_TRANSMISSIONS,
    MIN_RTO_NS,
    MIN_RTT_WINDOW_NS,
    RttEstimator,
    retry_limit_exceeded,
)

MS = 1_000_000
S = 1_000_000_000


def test_constants_match_reference() -> None:
    assert MIN_RTO_NS == 100 * MS
    assert MAX_RTO_NS == 2 * S
    assert INITIAL_RTO_NS == 200 * MS
    assert MIN_RTT_WINDOW_NS == 10 * S
    assert MAX_RETRANSMISSIONS == 5
    assert MAX_TRANSMISSIONS == 6


def test_no_sample_state() -> None:
    rtt = RttEstimator()
    assert not rtt.has_sample
    assert (rtt.srtt_ns, rtt.rttvar_ns, rtt.min_rtt_ns) == (0, 0, 0)
    assert rtt.base_rto_ns() == INITIAL_RTO_NS
    assert rtt.loss_delay_ns() == INITIAL_RTO_NS
    assert not rtt.min_rtt_expired(100 * S)


def test_first_sample_sets_srtt_and_half_variation() -> None:
    rtt = RttEstimator()
    assert rtt.update(100 * MS, now=1)
    assert rtt.has_sample
    assert rtt.srtt_ns == 100 * MS
    assert rtt.rttvar_ns == 50 * MS
    assert rtt.min_rtt_ns == 100 * MS
    assert rtt.min_rtt_stamp_ns == 1


def test_smoothing_uses_old_srtt_and_integer_fractions() -> None:
    rtt = RttEstimator()
    rtt.update(100 * MS, now=0)
    rtt.update(60 * MS, now=1)
    # delta = |60 - 100| ms against the *old* srtt; each term rounded down on its own.
    assert rtt.rttvar_ns == 50 * MS * 3 // 4 + 40 * MS // 4
    assert rtt.srtt_ns == 100 * MS * 7 // 8 + 60 * MS // 8
    rtt.update(7, now=2)  # odd values: check rounding of each term
    assert rtt.srtt_ns == (100 * MS * 7 // 8 + 60 * MS // 8) * 7 // 8 + 7 // 8
    assert rtt.latest_rtt_ns == 7


def test_rejects_bogus_samples() -> None:
    rtt = RttEstimator()
    assert not rtt.update(0, now=5)
    assert not rtt.update(-1, now=5)
    assert not rtt.update(MAX_RTT_SAMPLE_NS + 1, now=5)
    assert not rtt.has_sample
    assert rtt.update(MAX_RTT_SAMPLE_NS, now=5)


def test_rto_is_clamped() -> None:
    low = RttEstimator()
    low.update(10 * MS, now=0)  # 10 + 4 * 5 = 30 ms
    assert low.base_rto_ns() == MIN_RTO_NS
    mid = RttEstimator()
    mid.update(100 * MS, now=0)  # 100 + 4 * 50 = 300 ms
    assert mid.base_rto_ns() == 300 * MS
    high = RttEstimator()
    high.update(1 * S, now=0)  # 1 + 4 * 0.5 = 3 s
    assert high.base_rto_ns() == MAX_RTO_NS


def test_backoff_doubles_per_attempt_without_a_second_clamp() -> None:
    rtt = RttEstimator()
    assert [rtt.rto_ns(n) for n in range(1, 6)] == [
        200 * MS,
        400 * MS,
        800 * MS,
        1600 * MS,
        3200 * MS,
    ]
    high = RttEstimator()
    high.update(1 * S, now=0)
    assert high.rto_ns(5) == 16 * MAX_RTO_NS  # only the base value is clamped
    # Out-of-range attempts are clamped to what the reference can use.
    assert rtt.rto_ns(0) == rtt.rto_ns(-7) == 200 * MS
    assert rtt.rto_ns(6) == rtt.rto_ns(10**9) == 3200 * MS


def test_unanswered_packet_schedule_and_retry_limit() -> None:
    """An unanswered packet goes out at 0, 200, 600, 1400, 3000, 6200 ms, then the
    connection ends (the reference: 'max retry attempts: 6 exceeded limit 5')."""
    rtt = RttEstimator()
    sent_at = [0]
    transmissions = 1
    while not retry_limit_exceeded(transmissions):
        sent_at.append(rtt.retransmit_time_ns(sent_at[-1], transmissions))
        transmissions += 1
    assert transmissions == MAX_TRANSMISSIONS == 6
    assert [t // MS for t in sent_at] == [0, 200, 600, 1400, 3000, 6200]
    # Strictly after the timeout, as the reference compares with '>'.
    assert sent_at[1] == 200 * MS + 1
    assert not retry_limit_exceeded(5)
    assert retry_limit_exceeded(6)


def test_retransmit_timer_restarts_from_the_latest_ack() -> None:
    rtt = RttEstimator()
    for step in range(1, 200):  # a steady path: RTTVAR shrinks towards zero
        rtt.update(150 * MS, now=step * MS)
    assert rtt.rttvar_ns < 1 * MS
    sent = 1 * S
    assert rtt.retransmit_time_ns(sent, 1) == sent + rtt.base_rto_ns() + 1
    assert rtt.retransmit_time_ns(sent, 1, latest_ack_ns=sent + 100 * MS) == (
        sent + 100 * MS + rtt.base_rto_ns() + 1
    )
    base = rtt.base_rto_ns()
    assert rtt.retransmit_time_ns(sent, 2, latest_ack_ns=sent - 1) == sent + 2 * base + 1


def test_min_rtt_window() -> None:
    rtt = RttEstimator()
    rtt.update(50 * MS, now=0)
    rtt.update(80 * MS, now=5 * S)
    assert rtt.min_rtt_ns == 50 * MS
    assert not rtt.min_rtt_expired(10 * S - 1)
    assert rtt.min_rtt_expired(10 * S)
    rtt.update(80 * MS, now=10 * S)  # the old minimum expired: take the sample, whatever it is
    assert rtt.min_rtt_ns == 80 * MS
    assert rtt.min_rtt_stamp_ns == 10 * S
    rtt.update(70 * MS, now=11 * S)
    assert rtt.min_rtt_ns == 70 * MS
    rtt.update(70 * MS, now=15 * S)  # an equal sample refreshes the stamp
    assert rtt.min_rtt_stamp_ns == 15 * S


def test_loss_delay() -> None:
    rtt = RttEstimator()
    rtt.update(80 * MS, now=0)
    assert rtt.loss_delay_ns() == 90 * MS
    rtt.update(160 * MS, now=1)  # latest > srtt: the larger one counts
    assert rtt.loss_delay_ns() == 180 * MS
    tiny = RttEstimator()
    tiny.update(1000, now=0)
    assert tiny.loss_delay_ns() == LOSS_DELAY_GRANULARITY_NS


@given(st.lists(st.tuples(st.integers(-(2**70), 2**70), st.integers(-(2**64), 2**64))))
def test_arbitrary_samples_never_raise_or_go_negative(steps: list[tuple[int, int]]) -> None:
    rtt = RttEstimator()
    now = 0
    for sample, step in steps:
        now += step
        rtt.update(sample, now)
        assert rtt.srtt_ns >= 0
        assert rtt.rttvar_ns >= 0
        assert rtt.min_rtt_ns >= 0
        assert MIN_RTO_NS <= rtt.base_rto_ns() <= MAX_RTO_NS
        for attempt in (-1, 0, 1, 3, 5, 6, 2**40):
            assert MIN_RTO_NS <= rtt.rto_ns(attempt) <= 16 * MAX_RTO_NS
        assert rtt.loss_delay_ns() >= LOSS_DELAY_GRANULARITY_NS
        rtt.min_rtt_expired(now)
