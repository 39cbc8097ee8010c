"""The impairment model: each effect alone, by its numbers, with an explicit clock."""

from __future__ import annotations

import pytest

from qotp.compare.impairment import (
    Direction,
    DropReason,
    ImpairedPath,
    Impairment,
    PathImpairment,
)

SAMPLES = 100_000
MS = 1_000_000


def test_default_is_transparent() -> None:
    path = ImpairedPath(PathImpairment())
    assert PathImpairment().is_transparent
    for now in (0, 5, 10**12):
        verdict = path.decide(1400, now)
        assert verdict.deliver_at == (now,)
        assert verdict.drop_reason is None and not verdict.reordered and not verdict.duplicated


@pytest.mark.parametrize(
    "arguments",
    [
        {"loss": -0.1},
        {"loss": 1.5},
        {"reorder": 2.0},
        {"duplicate": -1.0},
        {"delay_ns": -1},
        {"jitter_ns": -1},
        {"queue_bytes": -1},
        {"rate_bytes_per_s": 0},
    ],
)
def test_nonsense_is_refused(arguments: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        PathImpairment(**arguments)  # type: ignore[arg-type]


@pytest.mark.parametrize("loss", [0.01, 0.05, 0.3])
def test_loss_rate_matches_the_model(loss: float) -> None:
    path = ImpairedPath(PathImpairment(loss=loss), seed=7)
    verdicts = [path.decide(1200, 0) for _ in range(SAMPLES)]
    dropped = [verdict for verdict in verdicts if verdict.dropped]
    assert all(verdict.drop_reason is DropReason.LOSS for verdict in dropped)
    # Five standard deviations of a binomial count: this seed is fixed, the bound is not luck.
    tolerance = 5 * (loss * (1 - loss) / SAMPLES) ** 0.5
    assert abs(len(dropped) / SAMPLES - loss) < tolerance


def test_same_seed_same_verdicts_and_directions_draw_apart() -> None:
    impairment = Impairment.symmetric(seed=3, loss=0.2, jitter_ns=MS, duplicate=0.1)
    first = impairment.impaired_path(Direction.TO_SERVER)
    again = impairment.impaired_path(Direction.TO_SERVER)
    other = impairment.impaired_path(Direction.TO_CLIENT)
    sequence = [first.decide(100, now) for now in range(1000)]
    assert sequence == [again.decide(100, now) for now in range(1000)]
    assert sequence != [other.decide(100, now) for now in range(1000)]


def test_delay_and_jitter_stay_within_bounds() -> None:
    path = ImpairedPath(PathImpairment(delay_ns=10 * MS, jitter_ns=3 * MS), seed=1)
    arrivals = [path.decide(1200, 1000).deliver_at[0] - 1000 for _ in range(10_000)]
    assert min(arrivals) >= 7 * MS and max(arrivals) <= 13 * MS
    # Uniform: both halves of the interval are used, the mean sits in the middle.
    assert min(arrivals) < 8 * MS and max(arrivals) > 12 * MS
    assert abs(sum(arrivals) / len(arrivals) - 10 * MS) < 0.1 * MS


def test_jitter_never_delivers_before_sending() -> None:
    path = ImpairedPath(PathImpairment(delay_ns=MS, jitter_ns=5 * MS), seed=2)
    assert all(path.decide(10, 50).deliver_at[0] >= 50 for _ in range(10_000))


def test_reordered_datagrams_are_held_back() -> None:
    path = ImpairedPath(PathImpairment(reorder=0.1, reorder_delay_ns=4 * MS), seed=5)
    verdicts = [path.decide(1200, 0) for _ in range(SAMPLES)]
    held = [verdict for verdict in verdicts if verdict.reordered]
    assert abs(len(held) / SAMPLES - 0.1) < 0.01
    assert {verdict.deliver_at for verdict in held} == {(4 * MS,)}
    assert {verdict.deliver_at for verdict in verdicts if not verdict.reordered} == {(0,)}


def test_duplicates_arrive_twice_never_before_the_original() -> None:
    path = ImpairedPath(PathImpairment(duplicate=0.05, jitter_ns=2 * MS, delay_ns=2 * MS), seed=9)
    verdicts = [path.decide(1200, 0) for _ in range(SAMPLES)]
    twice = [verdict for verdict in verdicts if verdict.duplicated]
    assert abs(len(twice) / SAMPLES - 0.05) < 0.005
    assert all(len(verdict.deliver_at) == 2 for verdict in twice)
    assert all(verdict.deliver_at[1] >= verdict.deliver_at[0] for verdict in twice)


def test_rate_cap_serialises_datagrams() -> None:
    # 1 MB/s: a 1000-byte datagram occupies the link for 1 ms.
    path = ImpairedPath(PathImpairment(rate_bytes_per_s=1_000_000, delay_ns=5 * MS))
    arrivals = [path.decide(1000, 0).deliver_at[0] for _ in range(5)]
    assert arrivals == [6 * MS, 7 * MS, 8 * MS, 9 * MS, 10 * MS]
    assert path.queued_bytes(0) == 5000
    assert path.queued_bytes(2 * MS) == 3000
    # Once the queue has drained, a datagram only waits for itself.
    assert path.decide(1000, 100 * MS).deliver_at == (106 * MS,)
    assert path.queued_bytes(200 * MS) == 0


def test_full_rate_cap_queue_drops_at_the_tail() -> None:
    path = ImpairedPath(PathImpairment(rate_bytes_per_s=1_000_000, queue_bytes=3000))
    verdicts = [path.decide(1000, 0) for _ in range(5)]
    assert [verdict.drop_reason for verdict in verdicts] == [
        None,
        None,
        None,
        DropReason.QUEUE,
        DropReason.QUEUE,
    ]
    # 1 ms later one datagram has left the link and one more fits.
    assert not path.decide(1000, MS).dropped


def test_rate_caps_throughput_over_a_long_run() -> None:
    rate = 2_000_000
    path = ImpairedPath(PathImpairment(rate_bytes_per_s=rate, queue_bytes=10**9))
    last = 0
    for index in range(10_000):
        # Offered at twice the rate: the link, not the sender, sets the pace.
        last = path.decide(1000, index * 250_000).deliver_at[0]
    assert last == pytest.approx(10_000 * 1000 / rate * 1e9, rel=1e-3)


def test_stream_schedule_keeps_order_and_never_drops() -> None:
    path = ImpairedPath(
        PathImpairment(
            loss=0.5, duplicate=0.5, reorder=0.5, delay_ns=MS, jitter_ns=MS, rate_bytes_per_s=10**6
        ),
        seed=11,
    )
    arrivals = [path.schedule_in_order(500, index * 100_000) for index in range(5000)]
    assert arrivals == sorted(arrivals)
    assert arrivals[0] >= 500 * 1000  # 500 bytes at 1 MB/s take 0.5 ms
    assert arrivals[-1] >= 5000 * 500 * 1000


def test_symmetric_and_per_direction_models() -> None:
    both = Impairment.symmetric(loss=0.05, duplicate=0.01, seed=2)
    assert both.path(Direction.TO_SERVER) == both.path(Direction.TO_CLIENT)
    assert both.path(Direction.TO_SERVER).loss == 0.05
    one_way = Impairment(to_client=PathImpairment(delay_ns=MS))
    assert one_way.path(Direction.TO_SERVER).is_transparent
    assert one_way.path(Direction.TO_CLIENT).delay_ns == MS
    with pytest.raises(AttributeError):
        both.seed = 3  # type: ignore[misc]
