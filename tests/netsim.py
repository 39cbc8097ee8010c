"""A deterministic simulated network between two sans-IO endpoints, on a virtual clock.

Each direction of the link has its own seeded random generator and applies,
in order: an MTU, loss, duplication, corruption (one changed byte), a bandwidth
limit with a bounded queue (tail drop), a fixed delay, random extra delay that
reorders datagrams (jitter), and, for some datagrams, a longer hold-back that
lets later ones overtake them (reorder).  Nothing here reads a clock or opens a
socket: the clock jumps from event to event, and the same seed gives the same
run, byte for byte.  A random draw is made only for a condition that is switched
on, so adding a new condition does not change the runs of existing tests.

Each endpoint has an address.  A datagram leaves with its sender's current
address as its source and is delivered only if its destination is the peer's
current address: assigning a new ``a_address`` is a NAT rebinding (datagrams
still addressed to the old address reach no one).  Setting ``b_alive = False``
makes the peer vanish: it is no longer polled, and what reaches it is lost.

Endpoints need the sans-IO surface only: ``receive_datagram(data, addr, now)``,
``datagrams_to_send(now) -> [(data, addr)]``, ``get_timer()``,
``handle_timer(now)``.
"""

from __future__ import annotations

import dataclasses
import heapq
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

Address = tuple[str, int]
MS = 1_000_000
SECOND = 1_000_000_000
#: Loop iterations at one virtual instant after which the simulation declares a busy loop.
MAX_STEPS_PER_INSTANT = 10_000


class SimulationStalled(AssertionError):
    """Time stopped moving: an endpoint keeps asking for a timer at or before now."""


class Endpoint(Protocol):
    def receive_datagram(self, data: bytes, address: Address, now: int) -> None: ...
    def datagrams_to_send(self, now: int) -> list[tuple[bytes, Address]]: ...
    def get_timer(self) -> int | None: ...
    def handle_timer(self, now: int) -> None: ...


@dataclass(frozen=True, slots=True, kw_only=True)
class LinkConditions:
    """What one direction of the link does to datagrams. Probabilities are per datagram."""

    delay_ns: int = 10 * MS
    jitter_ns: int = 0
    """Uniform extra delay in [0, jitter): datagrams overtake each other."""
    reorder: float = 0.0
    """Probability that a datagram is held back a further ``reorder_delay_ns``."""
    reorder_delay_ns: int = 10 * MS
    loss: float = 0.0
    duplicate: float = 0.0
    corrupt: float = 0.0
    bandwidth_bytes_per_s: int | None = None
    queue_bytes: int = 1 << 20
    """Bytes waiting for the bottleneck beyond which datagrams are dropped."""
    mtu: int | None = None
    """Datagrams longer than this are dropped."""


@dataclass(slots=True)
class LinkStatistics:
    """Counters of one direction (or, from :meth:`Network.total_statistics`, of both)."""

    sent: int = 0
    delivered: int = 0
    lost: int = 0
    """Lost at random, or by the test's own ``Network.drop``."""
    queue_dropped: int = 0
    mtu_dropped: int = 0
    undelivered: int = 0
    """Reached no one: the peer had vanished, or no longer had the destination address."""
    duplicated: int = 0
    corrupted: int = 0
    reordered: int = 0

    def __add__(self, other: LinkStatistics) -> LinkStatistics:
        names = [f.name for f in dataclasses.fields(self)]
        return LinkStatistics(**{n: getattr(self, n) + getattr(other, n) for n in names})


@dataclass(slots=True)
class _Direction:
    conditions: LinkConditions
    rng: random.Random
    statistics: LinkStatistics = field(default_factory=LinkStatistics)
    busy_until: int = 0


class Network:
    """Two endpoints joined by a simulated link; drive it with :meth:`run_until`."""

    def __init__(
        self,
        a: Endpoint,
        b: Endpoint,
        *,
        a_address: Address = ("10.0.0.1", 1000),
        b_address: Address = ("10.0.0.2", 2000),
        a_to_b: LinkConditions | None = None,
        b_to_a: LinkConditions | None = None,
        seed: int = 0,
    ) -> None:
        self.a = a
        self.b = b
        self.a_address = a_address
        self.b_address = b_address
        forward = a_to_b or LinkConditions()
        self.directions = {
            "a": _Direction(forward, random.Random(seed * 2 + 1)),
            "b": _Direction(b_to_a or forward, random.Random(seed * 2 + 2)),
        }
        self.now = 0
        self._queue: list[tuple[int, int, str, bytes, Address, Address]] = []
        self._sequence = 0
        self.a_alive = True
        self.b_alive = True
        self.drop: Callable[[str, bytes], bool] | None = None
        """A test's own loss pattern: ``drop(sender, datagram)`` returns True to lose it."""
        self.tap: Callable[[str, bytes, Address], None] | None = None
        """Sees every datagram sent, ``tap(sender, datagram, destination)`` (an eavesdropper)."""

    def statistics(self, sender: str) -> LinkStatistics:
        """Counters of the direction from ``sender`` ("a" or "b")."""
        return self.directions[sender].statistics

    def total_statistics(self) -> LinkStatistics:
        """Counters of both directions added up."""
        return self.statistics("a") + self.statistics("b")

    @property
    def in_flight(self) -> int:
        """Datagrams on their way."""
        return len(self._queue)

    def inject(self, sender: str, datagram: bytes, *, source: Address, delay_ns: int) -> None:
        """Put a datagram on the wire towards the other side of ``sender``, from ``source``.

        It arrives ``delay_ns`` from now at the target's current address, past every
        link condition: an attacker's copy, or a packet from a third host.
        """
        target = "b" if sender == "a" else "a"
        destination = self.b_address if target == "b" else self.a_address
        self._sequence += 1
        heapq.heappush(
            self._queue,
            (self.now + delay_ns, self._sequence, target, datagram, source, destination),
        )

    def _transmit(self, sender: str, datagram: bytes, destination: Address) -> None:
        if self.tap is not None:
            self.tap(sender, datagram, destination)
        direction = self.directions[sender]
        conditions = direction.conditions
        rng = direction.rng
        stats = direction.statistics
        stats.sent += 1
        if conditions.mtu is not None and len(datagram) > conditions.mtu:
            stats.mtu_dropped += 1
            return
        if self.drop is not None and self.drop(sender, datagram):
            stats.lost += 1
            return
        if conditions.loss and rng.random() < conditions.loss:
            stats.lost += 1
            return
        copies = 1
        if conditions.duplicate and rng.random() < conditions.duplicate:
            copies = 2
            stats.duplicated += 1
        for _ in range(copies):
            data = datagram
            if conditions.corrupt and rng.random() < conditions.corrupt and data:
                position = rng.randrange(len(data))
                data = (
                    data[:position]
                    + bytes((data[position] ^ (1 + rng.randrange(255)),))
                    + data[position + 1 :]
                )
                stats.corrupted += 1
            departure = self.now
            if conditions.bandwidth_bytes_per_s:
                start = max(self.now, direction.busy_until)
                waiting = (start - self.now) * conditions.bandwidth_bytes_per_s // SECOND
                if waiting > conditions.queue_bytes:
                    stats.queue_dropped += 1
                    continue
                departure = start + len(data) * SECOND // conditions.bandwidth_bytes_per_s
                direction.busy_until = departure
            arrival = departure + conditions.delay_ns
            if conditions.jitter_ns:
                arrival += rng.randrange(conditions.jitter_ns)
            if conditions.reorder and rng.random() < conditions.reorder:
                arrival += conditions.reorder_delay_ns
                stats.reordered += 1
            target = "b" if sender == "a" else "a"
            source = self.a_address if sender == "a" else self.b_address
            self._sequence += 1
            heapq.heappush(
                self._queue, (arrival, self._sequence, target, data, source, destination)
            )

    def _flush(self) -> None:
        for name, endpoint, alive in (("a", self.a, self.a_alive), ("b", self.b, self.b_alive)):
            if not alive:
                continue
            for datagram, address in endpoint.datagrams_to_send(self.now):
                self._transmit(name, datagram, address)

    def run_until(
        self,
        condition: Callable[[], bool],
        *,
        limit_ns: int = 600 * SECOND,
        on_step: Callable[[int], None] | None = None,
    ) -> None:
        """Advance until ``condition()`` holds; AssertionError if virtual time passes the limit.

        ``limit_ns`` is an absolute virtual time. ``on_step(now)`` runs after every
        delivery batch (application logic: read streams, write more). The condition is
        checked after the endpoints have sent what they had, before time moves on; when
        no delivery and no timer is left, that is an AssertionError too.
        """
        steps_at_instant = 0
        while True:
            if on_step is not None:
                on_step(self.now)
            self._flush()
            if condition():
                return
            candidates = []
            if self._queue:
                candidates.append(self._queue[0][0])
            for endpoint, alive in ((self.a, self.a_alive), (self.b, self.b_alive)):
                timer = endpoint.get_timer() if alive else None
                if timer is not None:
                    candidates.append(timer)
            if not candidates:
                raise AssertionError(f"nothing left to do at {self.now / SECOND:.3f} s")
            next_time = min(candidates)
            if next_time > self.now:
                self.now = next_time
                steps_at_instant = 0
            else:
                steps_at_instant += 1
                if steps_at_instant > MAX_STEPS_PER_INSTANT:
                    raise SimulationStalled(f"no progress at virtual time {self.now} ns")
            if self.now > limit_ns:
                raise AssertionError(f"condition not met within {limit_ns / SECOND:.0f} s")
            queue = self._queue
            while queue and queue[0][0] <= self.now:
                _arrival, _seq, target, data, source, destination = heapq.heappop(queue)
                if target == "a":
                    endpoint, alive, address = self.a, self.a_alive, self.a_address
                else:
                    endpoint, alive, address = self.b, self.b_alive, self.b_address
                stats = self.directions["b" if target == "a" else "a"].statistics
                if not alive or destination != address:
                    stats.undelivered += 1
                    continue
                stats.delivered += 1
                endpoint.receive_datagram(data, source, self.now)
            for endpoint, alive in ((self.a, self.a_alive), (self.b, self.b_alive)):
                if alive:
                    timer = endpoint.get_timer()
                    if timer is not None and timer <= self.now:
                        endpoint.handle_timer(self.now)
