"""Packet-trace link simulator used by the send-buffer tests (netsim.py serves the transport).

Endpoints are any objects with the driving surface of our connections and
endpoints (``receive_datagram``, ``datagrams_to_send``, ``get_timer``,
``handle_timer``). Each has an address; every directed pair of addresses is a
link with its own :class:`LinkConfig`: one-way delay and jitter, seeded loss,
duplication, reordering (extra delay for some datagrams, so later ones overtake
them), single-bit corruption, an MTU, and a bandwidth limit with a drop-tail
queue.

Nothing here reads a clock or sleeps: :meth:`Network.run_until` jumps the
virtual clock straight to the next event (a delivery or an endpoint's timer),
so a simulated minute of idle retransmission timers costs a few iterations.
All randomness comes from one ``random.Random(seed)`` consumed in a fixed order
(endpoints are polled in the order they were added), so a run is reproducible
from its seed, including its statistics.
"""

from __future__ import annotations

import heapq
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

Addr = tuple[str, int]

NS_PER_SECOND = 1_000_000_000
#: Iterations at one virtual instant before the simulation declares a busy loop.
MAX_ITERATIONS_PER_INSTANT = 10_000


class SimulationStalled(RuntimeError):
    """An endpoint keeps asking for a timer at or before the current instant."""


class SimEndpoint(Protocol):
    """The sans-IO driving surface the simulator calls."""

    def receive_datagram(self, data: bytes, addr: Addr, now: int) -> None: ...

    def datagrams_to_send(self, now: int) -> list[tuple[bytes, Addr]]: ...

    def get_timer(self) -> int | None: ...

    def handle_timer(self, now: int) -> None: ...


@dataclass(frozen=True, slots=True, kw_only=True)
class LinkConfig:
    """Behaviour of one direction of a link. Probabilities are per datagram."""

    delay_ns: int = 5_000_000
    #: Uniform extra delay in [0, jitter_ns]; it reorders datagrams closer than that.
    jitter_ns: int = 0
    loss: float = 0.0
    duplicate: float = 0.0
    #: Probability that a datagram is held back by ``reorder_delay_ns``.
    reorder: float = 0.0
    reorder_delay_ns: int = 10_000_000
    #: Probability that one random bit of the datagram is flipped.
    corrupt: float = 0.0
    #: Serialisation rate; None means infinitely fast.
    bandwidth_bytes_per_s: int | None = None
    #: Drop-tail limit of the bytes waiting for the bandwidth limit; None: unbounded.
    queue_limit_bytes: int | None = None
    #: Datagrams larger than this are dropped; None: no limit.
    mtu: int | None = None


@dataclass(slots=True)
class LinkStats:
    """Counters of one link direction, or of the whole network."""

    sent: int = 0
    sent_bytes: int = 0
    delivered: int = 0
    delivered_bytes: int = 0
    dropped: int = 0
    dropped_queue: int = 0
    dropped_mtu: int = 0
    dropped_blackhole: int = 0
    dropped_unroutable: int = 0
    duplicated: int = 0
    corrupted: int = 0
    reordered: int = 0

    def add(self, other: LinkStats) -> None:
        """Add another set of counters into this one."""
        for name in self.__slots__:
            setattr(self, name, getattr(self, name) + getattr(other, name))


@dataclass(slots=True)
class _LinkState:
    config: LinkConfig
    stats: LinkStats = field(default_factory=LinkStats)
    #: When the bandwidth-limited link finishes sending what is queued.
    busy_until_ns: int = 0


@dataclass(frozen=True, slots=True)
class TraceEntry:
    """One datagram's fate, when tracing is on."""

    time_ns: int
    source: Addr
    destination: Addr
    size: int
    fate: str


class Network:
    """Endpoints joined by seeded links on a virtual clock."""

    def __init__(
        self,
        *,
        seed: int,
        start_ns: int = 0,
        default_link: LinkConfig | None = None,
        trace: bool = False,
    ) -> None:
        self._rng = random.Random(seed)
        self.now = start_ns
        self.default_link = default_link if default_link is not None else LinkConfig()
        self._endpoints: dict[Addr, SimEndpoint] = {}
        self._links: dict[tuple[Addr, Addr], _LinkState] = {}
        self._configs: dict[tuple[Addr, Addr], LinkConfig] = {}
        self._queue: list[tuple[int, int, Addr, Addr, bytes]] = []
        self._sequence = 0
        self._blackholes: set[Addr] = set()
        self.unroutable = LinkStats()
        self.trace: list[TraceEntry] | None = [] if trace else None

    # -- topology ---------------------------------------------------------------------

    def add(self, endpoint: SimEndpoint, addr: Addr) -> None:
        """Attach an endpoint at an address."""
        if addr in self._endpoints:
            raise ValueError(f"address {addr} is taken")
        self._endpoints[addr] = endpoint

    def set_link(
        self, source: Addr, destination: Addr, config: LinkConfig, *, symmetric: bool = True
    ) -> None:
        """Configure the link from ``source`` to ``destination`` (and back, if symmetric)."""
        self._configs[(source, destination)] = config
        self._link(source, destination).config = config
        if symmetric:
            self._configs[(destination, source)] = config
            self._link(destination, source).config = config

    def rebind(self, old: Addr, new: Addr) -> None:
        """Move an endpoint to a new address, as a NAT rebinding does.

        Its datagrams now come from ``new``; datagrams still addressed to ``old``
        find no one and are dropped. Link configurations move along.
        """
        endpoint = self._endpoints.pop(old)
        self.add(endpoint, new)
        for (source, destination), config in list(self._configs.items()):
            if source == old:
                self._configs[(new, destination)] = config
            if destination == old:
                self._configs[(source, new)] = config

    def blackhole(self, addr: Addr, enabled: bool = True) -> None:
        """Drop every datagram from or to ``addr`` (a peer that vanishes), or stop doing so."""
        if enabled:
            self._blackholes.add(addr)
        else:
            self._blackholes.discard(addr)

    def _link(self, source: Addr, destination: Addr) -> _LinkState:
        link = self._links.get((source, destination))
        if link is None:
            config = self._configs.get((source, destination), self.default_link)
            link = self._links[(source, destination)] = _LinkState(config)
        return link

    # -- statistics -------------------------------------------------------------------

    def link_stats(self, source: Addr, destination: Addr) -> LinkStats:
        """Counters of one direction of one link."""
        return self._link(source, destination).stats

    @property
    def stats(self) -> LinkStats:
        """Counters summed over all links, plus datagrams to unknown addresses."""
        total = LinkStats()
        for link in self._links.values():
            total.add(link.stats)
        total.add(self.unroutable)
        return total

    @property
    def in_flight(self) -> int:
        """Datagrams on their way."""
        return len(self._queue)

    # -- the link model ---------------------------------------------------------------

    def _record(self, source: Addr, destination: Addr, size: int, fate: str) -> None:
        if self.trace is not None:
            self.trace.append(TraceEntry(self.now, source, destination, size, fate))

    def _schedule(self, time_ns: int, source: Addr, destination: Addr, data: bytes) -> None:
        self._sequence += 1
        heapq.heappush(self._queue, (time_ns, self._sequence, destination, source, data))

    def _transmit(self, source: Addr, destination: Addr, data: bytes) -> None:
        link = self._link(source, destination)
        config = link.config
        stats = link.stats
        rng = self._rng
        size = len(data)
        stats.sent += 1
        stats.sent_bytes += size
        if source in self._blackholes or destination in self._blackholes:
            stats.dropped_blackhole += 1
            self._record(source, destination, size, "blackhole")
            return
        if config.mtu is not None and size > config.mtu:
            stats.dropped_mtu += 1
            self._record(source, destination, size, "mtu")
            return
        departure = self.now
        if config.bandwidth_bytes_per_s is not None:
            start = max(self.now, link.busy_until_ns)
            if config.queue_limit_bytes is not None:
                backlog = (start - self.now) * config.bandwidth_bytes_per_s // NS_PER_SECOND
                if backlog + size > config.queue_limit_bytes:
                    stats.dropped_queue += 1
                    self._record(source, destination, size, "queue")
                    return
            departure = start + size * NS_PER_SECOND // config.bandwidth_bytes_per_s
            link.busy_until_ns = departure
        if config.loss and rng.random() < config.loss:
            stats.dropped += 1
            self._record(source, destination, size, "lost")
            return
        copies = 1
        if config.duplicate and rng.random() < config.duplicate:
            copies = 2
            stats.duplicated += 1
        for _ in range(copies):
            payload = data
            if config.corrupt and size and rng.random() < config.corrupt:
                corrupted = bytearray(data)
                corrupted[rng.randrange(size)] ^= 1 << rng.randrange(8)
                payload = bytes(corrupted)
                stats.corrupted += 1
            arrival = departure + config.delay_ns
            if config.jitter_ns:
                arrival += rng.randint(0, config.jitter_ns)
            if config.reorder and rng.random() < config.reorder:
                arrival += config.reorder_delay_ns
                stats.reordered += 1
            self._schedule(arrival, source, destination, payload)
        self._record(source, destination, size, "sent" if copies == 1 else "duplicated")

    # -- the event loop ---------------------------------------------------------------

    def _collect(self) -> None:
        """Take every datagram every endpoint wants to send now."""
        for addr, endpoint in list(self._endpoints.items()):
            for data, destination in endpoint.datagrams_to_send(self.now):
                self._transmit(addr, destination, bytes(data))

    def _next_event_time(self) -> int | None:
        best = self._queue[0][0] if self._queue else None
        for endpoint in self._endpoints.values():
            timer = endpoint.get_timer()
            if timer is not None and (best is None or timer < best):
                best = timer
        return best

    def _deliver_due(self) -> None:
        queue = self._queue
        while queue and queue[0][0] <= self.now:
            _, _, destination, source, data = heapq.heappop(queue)
            endpoint = self._endpoints.get(destination)
            if endpoint is None:
                self.unroutable.dropped_unroutable += 1
                self._record(source, destination, len(data), "unroutable")
                continue
            if destination in self._blackholes or source in self._blackholes:
                self._link(source, destination).stats.dropped_blackhole += 1
                self._record(source, destination, len(data), "blackhole")
                continue
            stats = self._link(source, destination).stats
            stats.delivered += 1
            stats.delivered_bytes += len(data)
            endpoint.receive_datagram(data, source, self.now)

    def _fire_timers(self) -> None:
        for endpoint in list(self._endpoints.values()):
            timer = endpoint.get_timer()
            if timer is not None and timer <= self.now:
                endpoint.handle_timer(self.now)

    def run_until(self, predicate: Callable[[], bool], max_time_ns: int) -> bool:
        """Run until ``predicate()`` holds or ``max_time_ns`` of virtual time have passed.

        Returns the predicate's final value. The clock jumps from event to event;
        when nothing is left to happen before the limit, it jumps to the limit.
        """
        limit = self.now + max_time_ns
        iterations_at_instant = 0
        while True:
            self._collect()
            if predicate():
                return True
            next_time = self._next_event_time()
            if next_time is None or next_time > limit:
                self.now = limit
                return predicate()
            if next_time > self.now:
                self.now = next_time
                iterations_at_instant = 0
            else:
                iterations_at_instant += 1
                if iterations_at_instant > MAX_ITERATIONS_PER_INSTANT:
                    raise SimulationStalled(f"no progress at virtual time {self.now} ns")
            self._deliver_due()
            self._fire_timers()

    def run_for(self, duration_ns: int) -> None:
        """Advance the virtual clock by ``duration_ns``, processing every event on the way."""
        self.run_until(lambda: False, duration_ns)
