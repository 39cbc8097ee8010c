"""A deterministic simulated network of sans-IO endpoints, on a virtual clock.

The one network simulator of the test suite: QOTP pairs, DTLS client/server
pairs (``dtls_helpers.run_pair``) and a DTLS endpoint with many clients all run
on it.  Every endpoint is a node with an address; the link a node's datagrams
leave on has its own conditions and its own seeded random generator and applies,
in order: an MTU, loss, duplication, corruption (one changed byte), a bandwidth
limit with a bounded queue (tail drop), a fixed delay, random extra delay that
reorders datagrams (jitter), and, for some datagrams, a longer hold-back that
lets later ones overtake them (reorder).  Nothing here reads a clock or opens a
socket: the clock jumps from event to event, and the same seed gives the same
run, byte for byte.  A random draw is made only for a condition that is switched
on, so adding a new condition does not change the runs of existing tests.

A datagram leaves with its sender's current address as its source and is
delivered to the node that has its destination address when it arrives:
assigning a new address (``a_address``, or ``node.address``) is a NAT rebinding
(datagrams still addressed to the old address reach no one).  A node that is
not ``alive`` has vanished: it is no longer polled, and what reaches it is lost.

``Network(a, b)`` joins two endpoints named "a" and "b" (their conditions default
to each other's); :meth:`Network.add` puts more on the same network.

A test scripts its own faults with hooks that draw nothing: ``drop`` loses chosen
datagrams, ``hold`` delays chosen ones, ``tap`` sees every datagram sent and
``on_deliver`` every datagram handed to an endpoint (``tests/wiretap.py`` opens
them with the endpoints' key log).

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
    reorder_spread_ns: int = 0
    """A held-back datagram waits a further uniform [0, reorder_spread_ns) on top."""
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


@dataclass(slots=True, eq=False)
class Node:
    """One endpoint on the network, and the link its datagrams leave on."""

    name: str
    endpoint: Endpoint
    address: Address
    conditions: LinkConditions
    rng: random.Random
    alive: bool = True
    statistics: LinkStatistics = field(default_factory=LinkStatistics)
    busy_until: int = 0
    """When the bottleneck of this node's link is free again."""


class Network:
    """Endpoints joined by simulated links; drive them with :meth:`run_until`."""

    def __init__(
        self,
        a: Endpoint | None = None,
        b: Endpoint | None = None,
        *,
        a_address: Address = ("10.0.0.1", 1000),
        b_address: Address = ("10.0.0.2", 2000),
        a_to_b: LinkConditions | None = None,
        b_to_a: LinkConditions | None = None,
        seed: int = 0,
    ) -> None:
        self.seed = seed
        self.nodes: dict[str, Node] = {}
        self.now = 0
        self._queue: list[tuple[int, int, str, bytes, Address, Address]] = []
        self._sequence = 0
        self.drop: Callable[[str, bytes], bool] | None = None
        """A test's own loss pattern: ``drop(sender, datagram)`` returns True to lose it."""
        self.tap: Callable[[str, bytes, Address], None] | None = None
        """Sees every datagram sent, ``tap(sender, datagram, destination)`` (an eavesdropper)."""
        self.hold: Callable[[str, bytes], int] | None = None
        """A test's own reordering: ``hold(sender, datagram)`` returns extra delay (ns) for
        it, on top of the link's, so that later datagrams overtake it."""
        self.on_deliver: Callable[[str, bytes], None] | None = None
        """Sees every datagram handed to an endpoint, ``on_deliver(sender, datagram)``, in
        arrival order (a duplicate once per copy)."""
        if a is not None and b is not None:
            forward = a_to_b or LinkConditions()
            self.add("a", a, a_address, forward)
            self.add("b", b, b_address, b_to_a or forward)

    def add(
        self,
        name: str,
        endpoint: Endpoint,
        address: Address,
        conditions: LinkConditions | None = None,
    ) -> Node:
        """Put ``endpoint`` on the network at ``address`` (a node of that name is replaced).

        The n-th node added draws from ``random.Random(seed * 2 + n)`` (n from 1), so
        the two nodes of ``Network(a, b, seed=...)`` draw what they always drew.
        """
        rng = random.Random(self.seed * 2 + len(self.nodes) + 1)
        node = Node(name, endpoint, address, conditions or LinkConditions(), rng)
        self.nodes[name] = node
        return node

    # -- the two-endpoint view ----------------------------------------------------

    @property
    def a(self) -> Endpoint:
        return self.nodes["a"].endpoint

    @property
    def b(self) -> Endpoint:
        return self.nodes["b"].endpoint

    @property
    def a_address(self) -> Address:
        return self.nodes["a"].address

    @a_address.setter
    def a_address(self, address: Address) -> None:
        self.nodes["a"].address = address

    @property
    def b_address(self) -> Address:
        return self.nodes["b"].address

    @b_address.setter
    def b_address(self, address: Address) -> None:
        self.nodes["b"].address = address

    @property
    def a_alive(self) -> bool:
        return self.nodes["a"].alive

    @a_alive.setter
    def a_alive(self, alive: bool) -> None:
        self.nodes["a"].alive = alive

    @property
    def b_alive(self) -> bool:
        return self.nodes["b"].alive

    @b_alive.setter
    def b_alive(self, alive: bool) -> None:
        self.nodes["b"].alive = alive

    # -- counters -------------------------------------------------------------------

    def statistics(self, sender: str) -> LinkStatistics:
        """Counters of the link from ``sender`` ("a", "b", or a name given to :meth:`add`)."""
        return self.nodes[sender].statistics

    def total_statistics(self) -> LinkStatistics:
        """Counters of every link added up."""
        total = LinkStatistics()
        for node in self.nodes.values():
            total = total + node.statistics
        return total

    @property
    def in_flight(self) -> int:
        """Datagrams on their way."""
        return len(self._queue)

    # -- sending ----------------------------------------------------------------------

    def inject(
        self,
        sender: str,
        datagram: bytes,
        *,
        source: Address,
        delay_ns: int,
        destination: Address | None = None,
    ) -> None:
        """Put a datagram on the wire from ``source``, past every link condition.

        It arrives ``delay_ns`` from now at ``destination`` (default: the current
        address of the other side of a two-endpoint network): an attacker's copy,
        or a packet from a third host.  It counts on ``sender``'s link.
        """
        if destination is None:
            destination = self.b_address if sender == "a" else self.a_address
        self._sequence += 1
        heapq.heappush(
            self._queue,
            (self.now + delay_ns, self._sequence, sender, datagram, source, destination),
        )

    def _transmit(self, node: Node, datagram: bytes, destination: Address) -> None:
        sender = node.name
        if self.tap is not None:
            self.tap(sender, datagram, destination)
        conditions = node.conditions
        rng = node.rng
        stats = node.statistics
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
                start = max(self.now, node.busy_until)
                waiting = (start - self.now) * conditions.bandwidth_bytes_per_s // SECOND
                if waiting > conditions.queue_bytes:
                    stats.queue_dropped += 1
                    continue
                departure = start + len(data) * SECOND // conditions.bandwidth_bytes_per_s
                node.busy_until = departure
            arrival = departure + conditions.delay_ns
            if conditions.jitter_ns:
                arrival += rng.randrange(conditions.jitter_ns)
            if conditions.reorder and rng.random() < conditions.reorder:
                arrival += conditions.reorder_delay_ns
                if conditions.reorder_spread_ns:
                    arrival += rng.randrange(conditions.reorder_spread_ns)
                stats.reordered += 1
            if self.hold is not None:
                extra = self.hold(sender, data)
                if extra > 0:
                    arrival += extra
                    stats.reordered += 1
            self._sequence += 1
            heapq.heappush(
                self._queue, (arrival, self._sequence, sender, data, node.address, destination)
            )

    def _flush(self) -> None:
        for node in self.nodes.values():
            if node.alive:
                for datagram, address in node.endpoint.datagrams_to_send(self.now):
                    self._transmit(node, datagram, address)

    # -- running --------------------------------------------------------------------------

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
        outcome = self._run(condition, limit_ns, on_step)
        if outcome == "idle":
            raise AssertionError(f"nothing left to do at {self.now / SECOND:.3f} s")
        if outcome == "limit":
            raise AssertionError(f"condition not met within {limit_ns / SECOND:.0f} s")

    def run_until_quiet(self, *, limit_ns: int, until: Callable[[], bool] | None = None) -> None:
        """Advance until no datagram is in flight and no timer is set, or ``until()`` holds.

        Returns also when the next thing to do lies beyond ``limit_ns`` (the clock then
        stays at or before it): the caller checks what it expected.
        """
        self._run(until or (lambda: False), limit_ns, None)

    def _run(
        self,
        condition: Callable[[], bool],
        limit_ns: int,
        on_step: Callable[[int], None] | None,
    ) -> str:
        """The simulation loop: "met", "idle" (nothing left to do) or "limit"."""
        steps_at_instant = 0
        nodes = self.nodes
        queue = self._queue
        while True:
            if on_step is not None:
                on_step(self.now)
            self._flush()
            if condition():
                return "met"
            candidates = []
            if queue:
                candidates.append(queue[0][0])
            for node in nodes.values():
                timer = node.endpoint.get_timer() if node.alive else None
                if timer is not None:
                    candidates.append(timer)
            if not candidates:
                return "idle"
            next_time = min(candidates)
            if max(next_time, self.now) > limit_ns:
                return "limit"
            if next_time > self.now:
                self.now = next_time
                steps_at_instant = 0
            else:
                steps_at_instant += 1
                if steps_at_instant > MAX_STEPS_PER_INSTANT:
                    raise SimulationStalled(f"no progress at virtual time {self.now} ns")
            if queue and queue[0][0] <= self.now:
                by_address = {node.address: node for node in nodes.values()}
            while queue and queue[0][0] <= self.now:
                _arrival, _seq, sender, data, source, destination = heapq.heappop(queue)
                target = by_address.get(destination)
                stats = nodes[sender].statistics
                if target is None or not target.alive:
                    stats.undelivered += 1
                    continue
                stats.delivered += 1
                if self.on_deliver is not None:
                    self.on_deliver(sender, data)
                target.endpoint.receive_datagram(data, source, self.now)
            for node in nodes.values():
                if node.alive:
                    timer = node.endpoint.get_timer()
                    if timer is not None and timer <= self.now:
                        node.endpoint.handle_timer(self.now)
