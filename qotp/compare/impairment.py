"""What an impaired network does to one datagram: a seeded model with an explicit clock.

The model is data (:class:`PathImpairment` per direction, :class:`Impairment`
for both plus a seed); the decision is a pure function of that data, the
datagram's size, ``now`` and the path's own random stream
(:class:`ImpairedPath`). No sockets and no clock, so the numbers can be
checked in a unit test and a relay run is reproducible from its seed.

It is transport-neutral: a datagram relay asks :meth:`ImpairedPath.decide`
(loss, rate-cap queue, delay, jitter, reordering, duplication), a byte-stream
relay asks :meth:`ImpairedPath.schedule_in_order` (delay, jitter and the rate
cap only: a stream cannot lose, reorder or duplicate bytes).

Order of effects for one datagram, as a lossy access link in front of a
bottleneck would apply them: random loss first; then the rate cap's queue
(tail drop when it holds more than ``queue_bytes``); then propagation delay
with jitter; then, with probability ``reorder``, an extra hold of
``reorder_delay_ns`` that lets later datagrams overtake it; then, with
probability ``duplicate``, a second copy that also takes its turn on the link.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from enum import Enum

__all__ = [
    "Direction",
    "DropReason",
    "ImpairedPath",
    "Impairment",
    "PathImpairment",
    "Verdict",
]

NS_PER_S = 1_000_000_000
DEFAULT_REORDER_DELAY_NS = 2_000_000
"""How long a reordered datagram is held back: long enough that, at loopback
speeds, dozens of later datagrams overtake it."""
DEFAULT_QUEUE_BYTES = 1_000_000
"""The rate cap's queue, in bytes (a generous router buffer)."""


class Direction(Enum):
    """Which way a datagram travels through a relay."""

    TO_SERVER = "to_server"
    TO_CLIENT = "to_client"


class DropReason(Enum):
    """Why the model dropped a datagram."""

    LOSS = "loss"
    """Random loss (probability ``loss``)."""
    QUEUE = "queue"
    """The rate cap's queue was full (tail drop)."""


def _check_probability(name: str, value: float) -> None:
    if not 0.0 <= value <= 1.0:
        raise ValueError(f"{name} must be a probability in [0, 1], not {value!r}")


@dataclass(frozen=True, slots=True, kw_only=True)
class PathImpairment:
    """What one direction of the network does; the default changes nothing."""

    loss: float = 0.0
    """Probability that a datagram is lost."""
    delay_ns: int = 0
    """One-way propagation delay added to every datagram."""
    jitter_ns: int = 0
    """Each datagram's delay varies uniformly within ``delay_ns ± jitter_ns``
    (never below zero); unequal delays reorder datagrams, as on a real path."""
    reorder: float = 0.0
    """Probability that a datagram is held back a further ``reorder_delay_ns``."""
    reorder_delay_ns: int = DEFAULT_REORDER_DELAY_NS
    """The extra hold of a reordered datagram."""
    duplicate: float = 0.0
    """Probability that a datagram is delivered twice."""
    rate_bytes_per_s: int | None = None
    """The link's capacity; ``None`` for no cap. Datagrams queue behind each other."""
    queue_bytes: int = DEFAULT_QUEUE_BYTES
    """How many bytes may wait for the capped link before new datagrams are dropped."""

    def __post_init__(self) -> None:
        _check_probability("loss", self.loss)
        _check_probability("reorder", self.reorder)
        _check_probability("duplicate", self.duplicate)
        for name in ("delay_ns", "jitter_ns", "reorder_delay_ns", "queue_bytes"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must not be negative")
        if self.rate_bytes_per_s is not None and self.rate_bytes_per_s <= 0:
            raise ValueError("rate_bytes_per_s must be positive (or None for no cap)")

    @property
    def is_transparent(self) -> bool:
        """Whether this direction passes every datagram at once, unchanged."""
        return (
            self.loss == 0.0
            and self.delay_ns == 0
            and self.jitter_ns == 0
            and self.reorder == 0.0
            and self.duplicate == 0.0
            and self.rate_bytes_per_s is None
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class Impairment:
    """Both directions of a path and the seed of their random streams."""

    to_server: PathImpairment = field(default_factory=PathImpairment)
    to_client: PathImpairment = field(default_factory=PathImpairment)
    seed: int = 0

    @classmethod
    def symmetric(
        cls,
        *,
        seed: int = 0,
        loss: float = 0.0,
        delay_ns: int = 0,
        jitter_ns: int = 0,
        reorder: float = 0.0,
        reorder_delay_ns: int = DEFAULT_REORDER_DELAY_NS,
        duplicate: float = 0.0,
        rate_bytes_per_s: int | None = None,
        queue_bytes: int = DEFAULT_QUEUE_BYTES,
    ) -> Impairment:
        """The same impairment both ways (each direction still draws its own numbers)."""
        path = PathImpairment(
            loss=loss,
            delay_ns=delay_ns,
            jitter_ns=jitter_ns,
            reorder=reorder,
            reorder_delay_ns=reorder_delay_ns,
            duplicate=duplicate,
            rate_bytes_per_s=rate_bytes_per_s,
            queue_bytes=queue_bytes,
        )
        return cls(to_server=path, to_client=path, seed=seed)

    def path(self, direction: Direction) -> PathImpairment:
        """The impairment of one direction."""
        return self.to_server if direction is Direction.TO_SERVER else self.to_client

    def impaired_path(self, direction: Direction) -> ImpairedPath:
        """Fresh decision state for one direction, seeded from ``seed`` and the direction."""
        return ImpairedPath(self.path(direction), seed=f"{self.seed}:{direction.value}")


@dataclass(frozen=True, slots=True)
class Verdict:
    """The fate of one datagram."""

    deliver_at: tuple[int, ...]
    """When each copy arrives (absolute ns, same clock as ``now``); empty if dropped,
    two entries if duplicated."""
    drop_reason: DropReason | None = None
    reordered: bool = False

    @property
    def dropped(self) -> bool:
        """Whether no copy arrives."""
        return not self.deliver_at

    @property
    def duplicated(self) -> bool:
        """Whether more than one copy arrives."""
        return len(self.deliver_at) > 1


class ImpairedPath:
    """One direction's decisions: the model, its random stream and the rate cap's queue.

    The only state is the random generator and the time the capped link is
    next free; both advance with each call, so the same seed and the same
    sequence of ``(size, now)`` calls give the same verdicts.
    """

    __slots__ = ("impairment", "_random", "_link_free_at", "_last_in_order")

    def __init__(self, impairment: PathImpairment, *, seed: int | str = 0) -> None:
        self.impairment = impairment
        self._random = random.Random(seed)
        self._link_free_at = 0
        self._last_in_order = 0

    def queued_bytes(self, now: int) -> int:
        """Bytes still waiting for the capped link at ``now`` (0 without a cap)."""
        rate = self.impairment.rate_bytes_per_s
        if rate is None or self._link_free_at <= now:
            return 0
        return (self._link_free_at - now) * rate // NS_PER_S

    def _transmit(self, size: int, now: int) -> int:
        """When the capped link has finished sending ``size`` bytes queued at ``now``."""
        rate = self.impairment.rate_bytes_per_s
        if rate is None:
            return now
        start = max(now, self._link_free_at)
        self._link_free_at = start + size * NS_PER_S // rate
        return self._link_free_at

    def _propagation(self) -> int:
        impairment = self.impairment
        delay = impairment.delay_ns
        if impairment.jitter_ns:
            delay += self._random.randint(-impairment.jitter_ns, impairment.jitter_ns)
        return max(0, delay)

    def decide(self, size: int, now: int) -> Verdict:
        """The fate of a datagram of ``size`` bytes that enters the path at ``now``."""
        impairment = self.impairment
        draw = self._random.random
        if impairment.loss and draw() < impairment.loss:
            return Verdict((), DropReason.LOSS)
        if (
            impairment.rate_bytes_per_s is not None
            and self.queued_bytes(now) + size > impairment.queue_bytes
        ):
            return Verdict((), DropReason.QUEUE)
        arrival = self._transmit(size, now) + self._propagation()
        reordered = bool(impairment.reorder) and draw() < impairment.reorder
        if reordered:
            arrival += impairment.reorder_delay_ns
        if impairment.duplicate and draw() < impairment.duplicate:
            second = self._transmit(size, now) + self._propagation()
            return Verdict((arrival, max(second, arrival)), None, reordered)
        return Verdict((arrival,), None, reordered)

    def schedule_in_order(self, size: int, now: int) -> int:
        """When ``size`` bytes of a byte stream that enter at ``now`` arrive.

        Delay, jitter and the rate cap apply; loss, reordering and duplication
        do not (a stream transport repairs them itself, so a stream relay
        models only what it cannot repair). Never earlier than the bytes before.
        """
        arrival = max(self._transmit(size, now) + self._propagation(), self._last_in_order)
        self._last_in_order = arrival
        return arrival
