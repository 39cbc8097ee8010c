"""Sending to a peer that paces its ACKs to 10 ms: recognition, rate, holes (explicit clock)."""

from __future__ import annotations

from collections import deque

from netsim import SECOND, Address, LinkConditions, Network
from transfer import Transfer

from qotp.congestion.ack_starvation import (
    FAST_DATAGRAMS,
    HOLE_LOOKBACK_INTERVALS,
    HOLE_RECHECK_DATAGRAMS,
    MAX_HOLE_EXTENSIONS,
    PEER_FALLBACK_INTERVAL_NS,
    RECOGNITION_DATAGRAMS,
    AckStarvation,
    SuspectSpan,
)
from qotp.endpoint import QotpEndpoint

MS = 1_000_000
MTU = 1400
FULL = 16 << 20
HELD = 15 << 20
RTT = 500_000


def _peer(
    starvation: AckStarvation,
    now: int,
    *,
    window: int | None = FULL,
    waiting: int = 100,
    carries_data: bool = False,
    pending: int = 0,
) -> SuspectSpan | None:
    return starvation.on_peer_datagram(
        now,
        carries_data=carries_data,
        window=window,
        waiting_packets=waiting,
        min_rtt_ns=RTT,
        resends_pending=pending,
    )


def _recognised(start: int = 0) -> tuple[AckStarvation, int]:
    starvation = AckStarvation(max_datagram_bytes=MTU)
    now = start
    for _ in range(RECOGNITION_DATAGRAMS):
        now += PEER_FALLBACK_INTERVAL_NS
        _peer(starvation, now)
    assert starvation.active
    return starvation, now


def test_the_reference_without_an_rtt_sample_is_recognised_on_its_10_ms_grid() -> None:
    starvation, _now = _recognised()
    assert starvation.episodes == 1
    # The reference's first estimate: one datagram per minimum RTT, at the startup gain.
    assert starvation.rate_bytes_per_s == MTU * 277 * 1_000_000_000 // (100 * RTT)


def test_fast_acks_are_not_starvation() -> None:
    starvation = AckStarvation(max_datagram_bytes=MTU)
    for index in range(50):
        _peer(starvation, index * 200_000)
    assert not starvation.active and starvation.episodes == 0


def test_a_peer_that_sends_data_or_has_nothing_to_acknowledge_is_not_starvation() -> None:
    for arguments in ({"carries_data": True}, {"waiting": 1}):
        starvation = AckStarvation(max_datagram_bytes=MTU)
        for index in range(1, 10):
            _peer(starvation, index * PEER_FALLBACK_INTERVAL_NS, **arguments)  # type: ignore[arg-type]
        assert not starvation.active


def test_a_slow_path_beyond_the_grid_is_not_starvation() -> None:
    starvation = AckStarvation(max_datagram_bytes=MTU)
    for index in range(1, 10):
        _peer(starvation, index * 50 * MS)
    assert not starvation.active


def test_it_ends_when_the_peer_speeds_up_or_nothing_waits() -> None:
    starvation, now = _recognised()
    # One short gap (our own late read) does not end it ...
    _peer(starvation, now + 100_000)
    assert starvation.active
    # ... several in a row do: the peer paces by a real estimate now.
    for index in range(FAST_DATAGRAMS):
        _peer(starvation, now + 200_000 * (index + 2))
    assert not starvation.active
    starvation, now = _recognised()
    _peer(starvation, now + PEER_FALLBACK_INTERVAL_NS, waiting=0)
    assert not starvation.active


def test_clean_windows_grow_the_rate_a_hole_halves_it_and_names_a_span() -> None:
    starvation, now = _recognised()
    rate = starvation.rate_bytes_per_s
    now += PEER_FALLBACK_INTERVAL_NS
    assert _peer(starvation, now) is None
    assert starvation.rate_bytes_per_s == rate + rate // 8
    clean_at = now
    rate = starvation.rate_bytes_per_s
    now += PEER_FALLBACK_INTERVAL_NS
    span = _peer(starvation, now, window=HELD)
    assert starvation.hole and starvation.holes == 1
    assert starvation.rate_bytes_per_s == rate // 2
    assert span == SuspectSpan(
        clean_at - HOLE_LOOKBACK_INTERVALS * PEER_FALLBACK_INTERVAL_NS - RTT, now
    )
    # While the window stays down and resends are pending, nothing more happens.
    now += PEER_FALLBACK_INTERVAL_NS
    assert _peer(starvation, now, window=HELD, pending=10) is None
    # Filled: the hole is gone, growth resumes more gently after a hole (1/32).
    rate = starvation.rate_bytes_per_s
    now += PEER_FALLBACK_INTERVAL_NS
    assert _peer(starvation, now) is None
    assert not starvation.hole
    assert starvation.rate_bytes_per_s == rate + rate // 32


def test_a_hole_that_stays_extends_the_span_back_a_few_times() -> None:
    starvation, now = _recognised()
    now += PEER_FALLBACK_INTERVAL_NS
    first = _peer(starvation, now, window=HELD)
    assert first is not None
    spans = [first]
    for _ in range(HOLE_RECHECK_DATAGRAMS * (MAX_HOLE_EXTENSIONS + 2)):
        now += PEER_FALLBACK_INTERVAL_NS
        span = _peer(starvation, now, window=HELD)
        if span is not None:
            spans.append(span)
    assert len(spans) == 1 + MAX_HOLE_EXTENSIONS
    for earlier, later in zip(spans, spans[1:], strict=False):
        # Each extension ends where the last began and is twice as wide.
        assert later.end_ns == earlier.start_ns
        assert later.end_ns - later.start_ns == 2 * (earlier.end_ns - earlier.start_ns)


def test_pacing_while_active_follows_the_rate() -> None:
    starvation, now = _recognised()
    rate = starvation.rate_bytes_per_s
    sent = 0
    while starvation.next_send_time(now, MTU) <= now:
        starvation.on_sent(now, MTU)
        sent += MTU
    later = starvation.next_send_time(now, MTU)
    assert later > now
    assert sent <= rate * 2 * MS // 1_000_000_000 + 2 * MTU  # the burst allowance


class AckPacedPeer:
    """Our endpoint behind the reference's habit: one datagram leaves per 10 ms, in order."""

    def __init__(self, inner: QotpEndpoint) -> None:
        self.inner = inner
        self.queue: deque[tuple[bytes, Address]] = deque()
        self.next_release = 0

    def receive_datagram(self, data: bytes, address: Address, now: int) -> None:
        self.inner.receive_datagram(data, address, now)

    def datagrams_to_send(self, now: int) -> list[tuple[bytes, Address]]:
        self.queue.extend(self.inner.datagrams_to_send(now))
        if self.queue and now >= self.next_release:
            self.next_release = now + PEER_FALLBACK_INTERVAL_NS
            return [self.queue.popleft()]
        return []

    def get_timer(self) -> int | None:
        timer = self.inner.get_timer()
        if self.queue and (timer is None or self.next_release < timer):
            return self.next_release
        return timer

    def handle_timer(self, now: int) -> None:
        timer = self.inner.get_timer()
        if timer is not None and timer <= now:
            self.inner.handle_timer(now)


def test_upload_to_an_ack_pacing_peer_is_not_clocked_by_its_acks() -> None:
    """4 MB to a receiver that sends one ACK per 10 ms: ACK-clocked, that is 29 s at
    140 kB/s; recognised, it takes well under a second of simulated time."""
    client, server = QotpEndpoint(), QotpEndpoint()
    link = LinkConditions(delay_ns=MS // 4, bandwidth_bytes_per_s=50_000_000)
    network = Network(client, AckPacedPeer(server), a_to_b=link, b_to_a=link, seed=3)
    transfer = Transfer(client, server, network.b_address, 1, 4 << 20, close=False)
    network.run_until(transfer.done, on_step=transfer.step, limit_ns=3 * SECOND)
    transfer.verify()
    statistics = transfer.connection.statistics()
    assert statistics.ack_starvation_episodes == 1
    assert network.now < SECOND


def test_a_peer_that_acknowledges_at_once_never_looks_starved() -> None:
    client, server = QotpEndpoint(), QotpEndpoint()
    link = LinkConditions(delay_ns=5 * MS, bandwidth_bytes_per_s=10_000_000, loss=0.02)
    network = Network(client, server, a_to_b=link, b_to_a=link, seed=4)
    transfer = Transfer(client, server, network.b_address, 2, 1 << 20, close=False)
    network.run_until(transfer.done, on_step=transfer.step, limit_ns=60 * SECOND)
    transfer.verify()
    assert transfer.connection.statistics().ack_starvation_episodes == 0
