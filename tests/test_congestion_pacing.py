"""Token-bucket pacer (qotp.congestion.pacing)."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from qotp.congestion.pacing import DEFAULT_BURST_NS, Pacer

MS = 1_000_000
S = 1_000_000_000


def test_unpaced_sends_at_once() -> None:
    pacer = Pacer(0)
    for now in (0, 5, 5, 10):
        assert pacer.next_send_time(now, 1400) == now
        pacer.on_sent(now, 1400)


def test_spacing_at_low_rate() -> None:
    # 1.4 MB/s: one 1400-byte datagram per millisecond; the burst floor is two datagrams.
    pacer = Pacer(1_400_000, min_burst_bytes=2800)
    assert pacer.burst_bytes == 2800
    assert pacer.next_send_time(0, 1400) == 0  # the bucket starts full
    pacer.on_sent(0, 1400)
    assert pacer.next_send_time(0, 1400) == 0
    pacer.on_sent(0, 1400)
    assert pacer.next_send_time(0, 1400) == 1 * MS
    now = 1 * MS
    for _ in range(100):
        pacer.on_sent(now, 1400)
        nxt = pacer.next_send_time(now, 1400)
        assert nxt - now == 1 * MS
        now = nxt


def test_sub_millisecond_spacing_is_exact() -> None:
    pacer = Pacer(100_000_000, burst_ns=0, min_burst_bytes=1400)  # 14 us per datagram
    now = 0
    times = []
    for _ in range(1000):
        now = pacer.next_send_time(now, 1400)
        times.append(now)
        pacer.on_sent(now, 1400)
    gaps = {b - a for a, b in zip(times[1:], times[2:], strict=False)}
    assert gaps == {14_000}


def test_late_wakeups_send_batches_and_keep_the_average_rate() -> None:
    """An event loop that wakes only on whole milliseconds still reaches the rate."""
    rate = 200_000_000
    pacer = Pacer(rate)
    assert pacer.burst_bytes == rate * DEFAULT_BURST_NS // S
    now = 0
    sent = 0
    batches = []
    while now < 100 * MS:
        batch = 0
        while pacer.next_send_time(now, 1400) <= now:
            pacer.on_sent(now, 1400)
            sent += 1400
            batch += 1
        batches.append(batch)
        wake = pacer.next_send_time(now, 1400)
        now = -(-wake // MS) * MS  # the timer fires on the next millisecond tick
    assert abs(sent - rate * 100 // 1000) <= rate * 100 // 1000 // 100 + pacer.burst_bytes
    assert min(batches[1:]) >= 100  # ~142 datagrams per 1 ms wake-up


def test_idle_bucket_is_capped_at_the_burst() -> None:
    pacer = Pacer(10_000_000, burst_ns=1 * MS, min_burst_bytes=1)
    pacer.on_sent(0, 1400)
    assert pacer.available_bytes(10 * S) == pacer.burst_bytes == 10_000
    now = 10 * S
    count = 0
    while pacer.next_send_time(now, 1000) <= now:
        pacer.on_sent(now, 1000)
        count += 1
    assert count == 10


def test_rate_change_keeps_pending_wait_and_oversized_datagrams_pass() -> None:
    pacer = Pacer(1_000_000, burst_ns=0, min_burst_bytes=1000)
    pacer.on_sent(0, 1000)
    pacer.on_sent(0, 1000)  # owes 1 ms
    assert pacer.next_send_time(0, 1000) == 2 * MS
    pacer.set_rate(2_000_000)
    assert pacer.rate_bytes_per_s == 2_000_000
    assert pacer.next_send_time(0, 1000) == 1 * MS + 500_000
    # A datagram larger than the burst waits for a full bucket, then goes (debt follows).
    assert pacer.next_send_time(10 * S, 50_000) == 10 * S
    pacer.on_sent(10 * S, 50_000)
    assert pacer.available_bytes(10 * S) < 0
    pacer.set_rate(0)
    assert pacer.next_send_time(10 * S, 1) == 10 * S


@given(
    st.lists(
        st.tuples(
            st.sampled_from(["rate", "sent", "ask"]),
            st.integers(-(2**62), 2**62),
            st.integers(-(2**40), 2**40),
        ),
        max_size=60,
    )
)
def test_arbitrary_use_never_raises(ops: list[tuple[str, int, int]]) -> None:
    pacer = Pacer(1_000_000)
    now = 0
    for op, value, step in ops:
        now += step
        if op == "rate":
            pacer.set_rate(value)
        elif op == "sent":
            pacer.on_sent(now, value)
        else:
            assert pacer.next_send_time(now, value) >= now
        assert pacer.rate_bytes_per_s >= 0
        assert pacer.burst_bytes > 0
        pacer.available_bytes(now)
