"""An asyncio UDP relay that puts an impaired network between a client and a server.

Clients send to the relay's listening address; the relay forwards to the
server through one upstream socket per client address, so the server sees as
many distinct peers as there are clients, and sends the server's answers back
from the listening socket. Both directions go through the seeded model of
:mod:`qotp.compare.impairment`.

For tests of hostile and changing networks it can also

* :meth:`UdpRelay.rebind` a client's upstream socket to a new source port,
  as a NAT that forgets a mapping does (or a roaming client), and
* :meth:`UdpRelay.inject` extra datagrams from another source address
  (replays or mutations of live packets seen through ``observer``).

It counts, per direction, what it received, passed, dropped and duplicated,
so a test can check that the loss it measured is the loss it asked for.

Speed: sockets are read in batches (with UDP GRO where the kernel has it) and
written with GSO through :class:`qotp.asyncio.transport.UdpSocket`; a
transparent direction skips the model. ``python -m qotp.compare.relay``
prints the relay's own ceiling (:func:`measure_ceiling`).

Timers go through the event loop, whose timeouts have millisecond
granularity: delays below about a millisecond come out longer.
"""

from __future__ import annotations

import argparse
import asyncio
import heapq
import ipaddress
import json
import multiprocessing
import socket
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from multiprocessing.connection import Connection as PipeConnection

from qotp.asyncio.driver import ClosesOnExit
from qotp.asyncio.transport import SOL_UDP, UDP_GRO, UDP_SEGMENT, UdpSocket
from qotp.compare.impairment import Direction, DropReason, ImpairedPath, Impairment
from qotp.protection import Address

__all__ = [
    "PathStatistics",
    "RelayCeiling",
    "RelayStatistics",
    "UdpRelay",
    "measure_ceiling",
]

DEFAULT_MAX_CLIENTS = 1024
"""Client addresses with an upstream socket at once; the least recently active goes first."""

Observer = Callable[[Direction, Address, bytes], None]
"""Called with every live datagram as it enters the relay: direction, client address, bytes."""


@dataclass(frozen=True, slots=True, kw_only=True)
class PathStatistics:
    """What one direction of the relay did with the datagrams it received."""

    received_datagrams: int = 0
    received_bytes: int = 0
    passed_datagrams: int = 0
    """Datagrams forwarded (the first copy; duplicates are counted apart)."""
    passed_bytes: int = 0
    dropped_datagrams: int = 0
    """Datagrams dropped by the model, for any reason."""
    dropped_bytes: int = 0
    dropped_by_queue: int = 0
    """Of those, datagrams dropped because the rate cap's queue was full."""
    duplicated_datagrams: int = 0
    """Extra copies sent."""
    duplicated_bytes: int = 0
    reordered_datagrams: int = 0
    injected_datagrams: int = 0
    """Datagrams sent through :meth:`UdpRelay.inject` (not counted as received)."""
    injected_bytes: int = 0

    @property
    def loss_ratio(self) -> float:
        """Measured fraction of received datagrams that were dropped."""
        return self.dropped_datagrams / self.received_datagrams if self.received_datagrams else 0.0

    @property
    def duplicate_ratio(self) -> float:
        """Measured extra copies per received datagram."""
        return (
            self.duplicated_datagrams / self.received_datagrams if self.received_datagrams else 0.0
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class RelayStatistics:
    """A snapshot of the relay's counters."""

    to_server: PathStatistics
    to_client: PathStatistics
    clients: int
    """Client addresses with an upstream socket now."""
    rebinds: int
    evicted_clients: int
    stray_datagrams: int
    """Datagrams on an upstream socket from anyone but the server (ignored)."""
    injector_received_datagrams: int
    """Datagrams that came back to the injector's address (e.g. a server fooled by it)."""
    injector_received_bytes: int

    def path(self, direction: Direction) -> PathStatistics:
        """The counters of one direction."""
        return self.to_server if direction is Direction.TO_SERVER else self.to_client


@dataclass(slots=True, kw_only=True)
class _Counters:
    """The relay's running counts of one direction (snapshots are :class:`PathStatistics`)."""

    received_datagrams: int = 0
    received_bytes: int = 0
    passed_datagrams: int = 0
    passed_bytes: int = 0
    dropped_datagrams: int = 0
    dropped_bytes: int = 0
    dropped_by_queue: int = 0
    duplicated_datagrams: int = 0
    duplicated_bytes: int = 0
    reordered_datagrams: int = 0
    injected_datagrams: int = 0
    injected_bytes: int = 0

    def snapshot(self) -> PathStatistics:
        return PathStatistics(**asdict(self))


class _Upstream:
    """The socket that carries one client's datagrams to the server."""

    __slots__ = ("client", "socket", "last_active_ns")

    def __init__(self, client: Address, sock: UdpSocket, now: int) -> None:
        self.client = client
        self.socket = sock
        self.last_active_ns = now


def _family(host: str) -> socket.AddressFamily:
    try:
        return socket.AF_INET6 if ipaddress.ip_address(host).version == 6 else socket.AF_INET
    except ValueError:
        return socket.AF_INET


def _local_host_towards(host: str) -> str:
    """The address upstream sockets bind to: loopback for a loopback server, else any."""
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return "0.0.0.0"
    if address.version == 6:
        return "::1" if address.is_loopback else "::"
    return "127.0.0.1" if address.is_loopback else "0.0.0.0"


def _bound_socket(host: str, port: int = 0) -> socket.socket:
    sock = socket.socket(_family(host), socket.SOCK_DGRAM)
    try:
        sock.bind((host, port))
    except OSError:
        sock.close()
        raise
    return sock


class UdpRelay(ClosesOnExit):
    """Forwards UDP between clients and one server through an impairment model.

    Start it with :meth:`start`; close it with :meth:`close` or ``async with``.
    """

    def __init__(
        self,
        listen_socket: socket.socket,
        server_address: Address,
        *,
        impairment: Impairment | None = None,
        observer: Observer | None = None,
        max_clients: int = DEFAULT_MAX_CLIENTS,
        loop: asyncio.AbstractEventLoop | None = None,
    ) -> None:
        self._loop = loop or asyncio.get_running_loop()
        self.server_address: Address = (server_address[0], int(server_address[1]))
        self.impairment = impairment or Impairment()
        self.observer = observer
        """Set or replace at any time; ``None`` to stop observing."""
        self.max_clients = max_clients
        self._paths = {
            direction: self.impairment.impaired_path(direction) for direction in Direction
        }
        self._counters = {direction: _Counters() for direction in Direction}
        self._upstreams: dict[Address, _Upstream] = {}
        self._upstream_host = _local_host_towards(self.server_address[0])
        self._queue: list[tuple[int, int, Direction, Address, bytes]] = []
        self._sequence = 0
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at = 0
        self._injector: UdpSocket | None = None
        self._rebinds = 0
        self._evicted = 0
        self._stray = 0
        self._injector_received_datagrams = 0
        self._injector_received_bytes = 0
        self._closed = False
        self._listen = UdpSocket(listen_socket, self._loop, self._from_clients)
        self._listen_address = self._listen.local_address

    @classmethod
    async def start(
        cls,
        server_address: Address,
        *,
        impairment: Impairment | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
        observer: Observer | None = None,
        max_clients: int = DEFAULT_MAX_CLIENTS,
    ) -> UdpRelay:
        """Listen on ``host:port`` (0: any free port) and relay to ``server_address``."""
        return cls(
            _bound_socket(host, port),
            server_address,
            impairment=impairment,
            observer=observer,
            max_clients=max_clients,
        )

    # -- public surface -------------------------------------------------------

    @property
    def listen_address(self) -> Address:
        """Where clients send to reach the server through the relay."""
        return self._listen_address

    @property
    def clients(self) -> list[Address]:
        """Client addresses with an upstream socket, least recently active first."""
        ordered = sorted(self._upstreams.values(), key=lambda upstream: upstream.last_active_ns)
        return [upstream.client for upstream in ordered]

    def upstream_address(self, client: Address | None = None) -> Address:
        """The source address the server sees for ``client`` (default: the latest client)."""
        return self._upstream_of(client).socket.local_address

    def rebind(self, client: Address | None = None) -> Address:
        """Move ``client``'s upstream to a fresh source port, as a NAT rebinding does.

        The old socket is closed at once (answers sent to it are lost, as
        behind a real NAT); datagrams still delayed in the model leave from
        the new port. Returns the new source address the server will see.
        """
        upstream = self._upstream_of(client)
        old = upstream.socket
        upstream.socket = self._upstream_socket(upstream.client)
        old.close()
        self._rebinds += 1
        return upstream.socket.local_address

    def inject(
        self,
        data: bytes,
        *,
        direction: Direction = Direction.TO_SERVER,
        client: Address | None = None,
    ) -> Address:
        """Send ``data`` at once, unimpaired, from the injector's own address.

        ``TO_SERVER`` sends it to the server; ``TO_CLIENT`` to ``client``
        (default: the latest client). Whatever comes back to the injector's
        address is counted in :class:`RelayStatistics` and otherwise dropped.
        Returns the injector's address (the source the receiver sees).
        """
        if self._closed:
            raise RuntimeError("the relay is closed")
        if self._injector is None:
            self._injector = UdpSocket(
                _bound_socket(self._upstream_host), self._loop, self._to_injector
            )
        if direction is Direction.TO_SERVER:
            destination = self.server_address
        else:
            destination = self._upstream_of(client).client
        counters = self._counters[direction]
        counters.injected_datagrams += 1
        counters.injected_bytes += len(data)
        self._injector.send([(data, destination)])
        return self._injector.local_address

    def statistics(self) -> RelayStatistics:
        """A snapshot of every counter."""
        return RelayStatistics(
            to_server=self._counters[Direction.TO_SERVER].snapshot(),
            to_client=self._counters[Direction.TO_CLIENT].snapshot(),
            clients=len(self._upstreams),
            rebinds=self._rebinds,
            evicted_clients=self._evicted,
            stray_datagrams=self._stray,
            injector_received_datagrams=self._injector_received_datagrams,
            injector_received_bytes=self._injector_received_bytes,
        )

    def close(self) -> None:
        """Close every socket; datagrams still held by the model are discarded."""
        if self._closed:
            return
        self._closed = True
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._queue.clear()
        self._listen.close()
        for upstream in self._upstreams.values():
            upstream.socket.close()
        self._upstreams.clear()
        if self._injector is not None:
            self._injector.close()

    # -- clients and upstream sockets -----------------------------------------

    def _upstream_of(self, client: Address | None) -> _Upstream:
        if client is None:
            if not self._upstreams:
                raise LookupError("no client has sent anything through the relay yet")
            return max(self._upstreams.values(), key=lambda upstream: upstream.last_active_ns)
        try:
            return self._upstreams[(client[0], int(client[1]))]
        except KeyError:
            raise LookupError(f"{client} has no upstream socket") from None

    def _upstream_socket(self, client: Address) -> UdpSocket:
        def from_server(datagrams: list[tuple[bytes, Address]]) -> None:
            self._from_server(client, datagrams)

        return UdpSocket(_bound_socket(self._upstream_host), self._loop, from_server)

    def _new_upstream(self, client: Address, now: int) -> _Upstream:
        if len(self._upstreams) >= self.max_clients:
            oldest = min(self._upstreams.values(), key=lambda upstream: upstream.last_active_ns)
            del self._upstreams[oldest.client]
            oldest.socket.close()
            self._evicted += 1
        upstream = _Upstream(client, self._upstream_socket(client), now)
        self._upstreams[client] = upstream
        return upstream

    # -- forwarding -----------------------------------------------------------

    def _from_clients(self, datagrams: list[tuple[bytes, Address]]) -> None:
        now = time.monotonic_ns()
        direction = Direction.TO_SERVER
        counters = self._counters[direction]
        path = self._paths[direction]
        observer = self.observer
        server = self.server_address
        upstreams = self._upstreams
        outgoing: dict[UdpSocket, list[tuple[bytes, Address]]] = {}
        for data, client in datagrams:
            upstream = upstreams.get(client)
            if upstream is None:
                upstream = self._new_upstream(client, now)
            upstream.last_active_ns = now
            counters.received_datagrams += 1
            counters.received_bytes += len(data)
            if observer is not None:
                observer(direction, client, data)
            if self._admit(path, counters, direction, client, data, now):
                batch = outgoing.get(upstream.socket)
                if batch is None:
                    outgoing[upstream.socket] = batch = []
                batch.append((data, server))
        for sock, batch in outgoing.items():
            sock.send(batch)

    def _from_server(self, client: Address, datagrams: list[tuple[bytes, Address]]) -> None:
        now = time.monotonic_ns()
        direction = Direction.TO_CLIENT
        counters = self._counters[direction]
        path = self._paths[direction]
        observer = self.observer
        server = self.server_address
        outgoing: list[tuple[bytes, Address]] = []
        for data, source in datagrams:
            if source != server:
                self._stray += 1
                continue
            counters.received_datagrams += 1
            counters.received_bytes += len(data)
            if observer is not None:
                observer(direction, client, data)
            if self._admit(path, counters, direction, client, data, now):
                outgoing.append((data, client))
        upstream = self._upstreams.get(client)
        if upstream is not None:
            upstream.last_active_ns = now
        if outgoing:
            self._listen.send(outgoing)

    def _admit(
        self,
        path: ImpairedPath,
        counters: _Counters,
        direction: Direction,
        client: Address,
        data: bytes,
        now: int,
    ) -> bool:
        """Apply the model; True when the datagram goes out now, unchanged and alone."""
        size = len(data)
        if path.impairment.is_transparent:
            counters.passed_datagrams += 1
            counters.passed_bytes += size
            return True
        verdict = path.decide(size, now)
        if verdict.drop_reason is not None:
            counters.dropped_datagrams += 1
            counters.dropped_bytes += size
            if verdict.drop_reason is DropReason.QUEUE:
                counters.dropped_by_queue += 1
            return False
        counters.passed_datagrams += 1
        counters.passed_bytes += size
        if verdict.reordered:
            counters.reordered_datagrams += 1
        copies = verdict.deliver_at
        if len(copies) > 1:
            counters.duplicated_datagrams += len(copies) - 1
            counters.duplicated_bytes += (len(copies) - 1) * size
        send_now = False
        for index, deliver_at in enumerate(copies):
            if deliver_at <= now and index == 0:
                send_now = True
            else:
                self._hold(deliver_at, direction, client, data)
        return send_now

    def _hold(self, deliver_at: int, direction: Direction, client: Address, data: bytes) -> None:
        self._sequence += 1
        heapq.heappush(self._queue, (deliver_at, self._sequence, direction, client, data))
        if self._timer is None or deliver_at < self._timer_at:
            self._arm_timer(deliver_at)

    def _arm_timer(self, deliver_at: int) -> None:
        if self._timer is not None:
            self._timer.cancel()
        self._timer_at = deliver_at
        delay_s = max(0, deliver_at - time.monotonic_ns()) / 1e9
        self._timer = self._loop.call_later(delay_s, self._release)

    def _release(self) -> None:
        """Send every held datagram whose time has come, in order, in batches."""
        self._timer = None
        if self._closed:
            return
        now = time.monotonic_ns()
        queue = self._queue
        to_clients: list[tuple[bytes, Address]] = []
        to_server: dict[UdpSocket, list[tuple[bytes, Address]]] = {}
        while queue and queue[0][0] <= now:
            _deliver_at, _sequence, direction, client, data = heapq.heappop(queue)
            if direction is Direction.TO_CLIENT:
                to_clients.append((data, client))
                continue
            upstream = self._upstreams.get(client)
            if upstream is None:  # evicted meanwhile
                continue
            to_server.setdefault(upstream.socket, []).append((data, self.server_address))
        if to_clients:
            self._listen.send(to_clients)
        for sock, batch in to_server.items():
            sock.send(batch)
        if queue:
            self._arm_timer(queue[0][0])

    def _to_injector(self, datagrams: list[tuple[bytes, Address]]) -> None:
        self._injector_received_datagrams += len(datagrams)
        self._injector_received_bytes += sum(len(data) for data, _source in datagrams)


# ---------------------------------------------------------------- the ceiling


@dataclass(frozen=True, slots=True, kw_only=True)
class RelayCeiling:
    """How many datagrams per second the relay moves when offered more than it can take."""

    datagram_bytes: int
    seconds: float
    offered_datagrams: int
    """Sent towards the relay by the load generator."""
    relayed_datagrams: int
    """Forwarded by the relay (its ``to_server`` passed counter)."""
    delivered_datagrams: int
    """Counted by the sink behind the relay."""
    relay_cpu_s: float
    """CPU time of the relay's process over the run."""

    @property
    def datagrams_per_s(self) -> float:
        """Forwarded datagrams per second of wall time."""
        return self.relayed_datagrams / self.seconds

    @property
    def megabytes_per_s(self) -> float:
        """Forwarded payload in MB (10^6 bytes) per second of wall time."""
        return self.datagrams_per_s * self.datagram_bytes / 1e6

    @property
    def datagrams_per_cpu_s(self) -> float:
        """Forwarded datagrams per CPU second: the ceiling with a whole core to itself."""
        return self.relayed_datagrams / self.relay_cpu_s if self.relay_cpu_s else 0.0

    @property
    def megabytes_per_cpu_s(self) -> float:
        """The same in MB per CPU second."""
        return self.datagrams_per_cpu_s * self.datagram_bytes / 1e6

    def describe(self) -> str:
        """One line for people."""
        return (
            f"relay ceiling, {self.datagram_bytes}-byte datagrams: "
            f"{self.datagrams_per_s:,.0f} datagrams/s ({self.megabytes_per_s:.1f} MB/s) "
            f"over {self.seconds:.1f} s wall; "
            f"{self.datagrams_per_cpu_s:,.0f} datagrams/s ({self.megabytes_per_cpu_s:.1f} MB/s) "
            f"per CPU second; offered {self.offered_datagrams:,}, "
            f"delivered {self.delivered_datagrams:,}"
        )


GSO_SEGMENTS = 32


def _sink_process(pipe: PipeConnection, host: str) -> None:
    """Count datagrams until told to stop; report (datagrams, bytes)."""
    sock = _bound_socket(host)
    gro = True
    try:
        sock.setsockopt(SOL_UDP, UDP_GRO, 1)
    except OSError:
        gro = False
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 * 1024 * 1024)
    sock.settimeout(0.05)
    pipe.send(sock.getsockname()[1])
    count = 0
    total = 0
    cmsg_space = socket.CMSG_SPACE(4)
    while not pipe.poll():
        try:
            if gro:
                data, ancillary, _flags, _address = sock.recvmsg(65_535, cmsg_space)
                segment = 0
                for level, kind, value in ancillary:
                    if level == SOL_UDP and kind == UDP_GRO:
                        segment = int.from_bytes(value[:4], sys.byteorder)
                count += -(-len(data) // segment) if segment else 1
            else:
                data = sock.recv(65_535)
                count += 1
            total += len(data)
        except TimeoutError:
            continue
    pipe.send((count, total))
    sock.close()


def _blast_process(pipe: PipeConnection, address: Address, size: int, seconds: float) -> None:
    """Send ``size``-byte datagrams to ``address`` as fast as possible; report the count."""
    sock = _bound_socket(address[0])
    payload = [bytes(size)] * GSO_SEGMENTS
    control = [(SOL_UDP, UDP_SEGMENT, size.to_bytes(2, sys.byteorder))]
    gso = True
    sent = 0
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            if gso:
                sock.sendmsg(payload, control, 0, address)
                sent += GSO_SEGMENTS
            else:
                sock.sendto(payload[0], address)
                sent += 1
        except OSError:
            if gso:
                gso = False
    pipe.send(sent)
    sock.close()


async def measure_ceiling(
    *,
    seconds: float = 2.0,
    datagram_bytes: int = 1200,
    impairment: Impairment | None = None,
    host: str = "127.0.0.1",
) -> RelayCeiling:
    """Flood a relay on loopback from another process and count what comes through.

    The load generator and the sink run in processes of their own, so the
    relay's process does nothing else; the CPU-normalised rate is the figure
    to compare with a transport's throughput on a quiet machine. With
    ``impairment`` the model's cost is included.
    """
    context = multiprocessing.get_context("spawn")
    sink_pipe, sink_child = context.Pipe()
    sink = context.Process(target=_sink_process, args=(sink_child, host), daemon=True)
    sink.start()
    loop = asyncio.get_running_loop()
    try:
        sink_port = await loop.run_in_executor(None, sink_pipe.recv)
        relay = await UdpRelay.start((host, sink_port), impairment=impairment, host=host)
        async with relay:
            blast_pipe, blast_child = context.Pipe()
            blaster = context.Process(
                target=_blast_process,
                args=(blast_child, relay.listen_address, datagram_bytes, seconds),
                daemon=True,
            )
            blaster.start()
            # Start counting once the first datagrams arrive (process start-up is slow).
            while relay.statistics().to_server.received_datagrams == 0:
                if not blaster.is_alive():
                    raise RuntimeError("the load generator exited before sending")
                await asyncio.sleep(0.001)
            start_wall = time.monotonic()
            start_cpu = time.process_time()
            start_relayed = relay.statistics().to_server.passed_datagrams
            offered = await loop.run_in_executor(None, blast_pipe.recv)
            wall = time.monotonic() - start_wall
            cpu = time.process_time() - start_cpu
            relayed = relay.statistics().to_server.passed_datagrams - start_relayed
            blaster.join()
            await asyncio.sleep(0.1)  # let the last datagrams reach the sink
        sink_pipe.send("stop")
        delivered, _delivered_bytes = await loop.run_in_executor(None, sink_pipe.recv)
    finally:
        sink.join(timeout=5)
        if sink.is_alive():
            sink.kill()
    return RelayCeiling(
        datagram_bytes=datagram_bytes,
        seconds=wall,
        offered_datagrams=offered,
        relayed_datagrams=relayed,
        delivered_datagrams=delivered,
        relay_cpu_s=cpu,
    )


def main(argv: list[str] | None = None) -> int:
    """``python -m qotp.compare.relay``: print the relay's ceiling on loopback."""
    parser = argparse.ArgumentParser(
        prog="python -m qotp.compare.relay",
        description="Measure how many datagrams per second the impairment relay forwards.",
    )
    parser.add_argument("--seconds", type=float, default=2.0, help="length of the flood (2)")
    parser.add_argument("--bytes", type=int, default=1200, help="datagram size (1200)")
    parser.add_argument("--loss", type=float, default=0.0, help="loss probability (0)")
    parser.add_argument("--json", action="store_true", help="one JSON object instead of text")
    arguments = parser.parse_args(argv)
    impairment = Impairment.symmetric(loss=arguments.loss) if arguments.loss else None
    ceiling = asyncio.run(
        measure_ceiling(
            seconds=arguments.seconds, datagram_bytes=arguments.bytes, impairment=impairment
        )
    )
    if arguments.json:
        print(
            json.dumps(
                {
                    **asdict(ceiling),
                    "datagrams_per_s": ceiling.datagrams_per_s,
                    "megabytes_per_s": ceiling.megabytes_per_s,
                    "datagrams_per_cpu_s": ceiling.datagrams_per_cpu_s,
                    "megabytes_per_cpu_s": ceiling.megabytes_per_cpu_s,
                }
            )
        )
    else:
        print(ceiling.describe())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
