"""The UDP impairment relay on loopback: forwarding, counting, rebinding, injecting."""

from __future__ import annotations

import asyncio
import itertools
import os
import socket
import struct
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar, cast

import pytest

from qotp.asyncio import listen
from qotp.compare.impairment import Direction, Impairment, PathImpairment
from qotp.compare.relay import UdpRelay, measure_ceiling
from qotp.protection import Address
from qotp.tool import run_client, serve_connection

T = TypeVar("T")
# Stops a hung test; not a performance limit.
TEST_TIMEOUT_S = 60.0
_SEQUENCE = struct.Struct("<I")


def run(make: Callable[[], Awaitable[T]]) -> T:
    async def bounded() -> T:
        return await asyncio.wait_for(make(), TEST_TIMEOUT_S)

    return asyncio.run(bounded())


class Peer(asyncio.DatagramProtocol):
    """A UDP socket that records what it receives and, as a server, echoes it."""

    def __init__(self, *, echo: bool) -> None:
        self.echo = echo
        self.received: list[tuple[bytes, Address]] = []
        self.transport: asyncio.DatagramTransport | None = None
        self.arrived = asyncio.Event()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.DatagramTransport, transport)
        # Room for bursts while a busy machine keeps this loop from reading.
        sock = transport.get_extra_info("socket")
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 * 1024 * 1024)

    def datagram_received(self, data: bytes, addr: tuple[str | bytes, int]) -> None:
        source = (str(addr[0]), int(addr[1]))
        self.received.append((data, source))
        self.arrived.set()
        if self.echo and self.transport is not None:
            self.transport.sendto(data, source)

    @property
    def address(self) -> Address:
        assert self.transport is not None
        host, port = self.transport.get_extra_info("sockname")[:2]
        return (host, port)

    def send(self, data: bytes, address: Address) -> None:
        assert self.transport is not None
        self.transport.sendto(data, address)

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()

    async def wait_for(self, count: int, *, settle_s: float = 0.0) -> None:
        """Until ``count`` datagrams have arrived (then ``settle_s`` more for stragglers)."""
        while len(self.received) < count:
            self.arrived.clear()
            await self.arrived.wait()
        if settle_s:
            await asyncio.sleep(settle_s)


async def _peer(*, echo: bool) -> Peer:
    loop = asyncio.get_running_loop()
    _transport, protocol = await loop.create_datagram_endpoint(
        lambda: Peer(echo=echo), local_addr=("127.0.0.1", 0)
    )
    return protocol


async def _send_paced(client: Peer, address: Address, count: int, size: int = 200) -> None:
    """``count`` numbered datagrams, a few at a time, so no socket buffer overflows."""
    for index in range(count):
        client.send(_SEQUENCE.pack(index) + bytes(size - _SEQUENCE.size), address)
        if index % 20 == 19:
            await asyncio.sleep(0.002)


async def _quiet(predicate: Callable[[], bool]) -> None:
    while not predicate():
        await asyncio.sleep(0.01)


def test_transparent_relay_forwards_both_ways_and_counts() -> None:
    async def main() -> None:
        server = await _peer(echo=True)
        client = await _peer(echo=False)
        async with await UdpRelay.start(server.address) as relay:
            await _send_paced(client, relay.listen_address, 500)
            await client.wait_for(500)
            statistics = relay.statistics()
        assert {source for _data, source in client.received} == {relay.listen_address}
        assert sorted(data for data, _source in client.received) == sorted(
            data for data, _source in server.received
        )
        for direction in Direction:
            path = statistics.path(direction)
            assert path.received_datagrams == path.passed_datagrams == 500
            assert path.received_bytes == path.passed_bytes == 500 * 200
            assert path.dropped_datagrams == path.duplicated_datagrams == 0
        assert statistics.clients == 1
        server.close()
        client.close()

    run(main)


def test_each_client_gets_its_own_source_address() -> None:
    async def main() -> None:
        server = await _peer(echo=True)
        clients = [await _peer(echo=False) for _ in range(3)]
        async with await UdpRelay.start(server.address) as relay:
            for index, client in enumerate(clients):
                client.send(b"hello %d" % index, relay.listen_address)
            for client in clients:
                await client.wait_for(1)
            sources = {source for _data, source in server.received}
            assert len(sources) == 3
            assert sources == {relay.upstream_address(client.address) for client in clients}
            for index, client in enumerate(clients):
                assert client.received[0][0] == b"hello %d" % index
            assert set(relay.clients) == {client.address for client in clients}
        server.close()
        for client in clients:
            client.close()

    run(main)


def test_measured_loss_is_close_to_the_asked_loss() -> None:
    async def main() -> None:
        server = await _peer(echo=True)
        client = await _peer(echo=False)
        impairment = Impairment.symmetric(loss=0.2, seed=4)
        async with await UdpRelay.start(server.address, impairment=impairment) as relay:
            await _send_paced(client, relay.listen_address, 3000)
            await _quiet(
                lambda: (
                    len(client.received) == relay.statistics().to_client.passed_datagrams
                    and relay.statistics().to_server.received_datagrams == 3000
                )
            )
            statistics = relay.statistics()
        to_server, to_client = statistics.to_server, statistics.to_client
        # What the relay passed is what arrived, both ways.
        assert len(server.received) == to_server.passed_datagrams
        assert len(client.received) == to_client.passed_datagrams
        assert to_server.passed_datagrams + to_server.dropped_datagrams == 3000
        assert to_client.received_datagrams == to_server.passed_datagrams
        # Five standard deviations of the binomial count around the asked 20 %.
        assert to_server.loss_ratio == pytest.approx(0.2, abs=5 * (0.16 / 3000) ** 0.5)
        assert to_client.loss_ratio == pytest.approx(0.2, abs=5 * (0.16 / 2400) ** 0.5)
        server.close()
        client.close()

    run(main)


def test_duplication_and_reordering_reach_the_receiver() -> None:
    async def main() -> None:
        server = await _peer(echo=False)
        client = await _peer(echo=False)
        impairment = Impairment(
            to_server=PathImpairment(duplicate=0.1, reorder=0.1, reorder_delay_ns=5_000_000),
            seed=8,
        )
        async with await UdpRelay.start(server.address, impairment=impairment) as relay:
            await _send_paced(client, relay.listen_address, 1000)
            await _quiet(lambda: relay.statistics().to_server.received_datagrams == 1000)
            statistics = relay.statistics().to_server
            expected = 1000 + statistics.duplicated_datagrams
            await server.wait_for(expected, settle_s=0.05)
        numbers = [_SEQUENCE.unpack_from(data)[0] for data, _source in server.received]
        assert len(numbers) == expected
        assert set(numbers) == set(range(1000))
        assert statistics.duplicated_datagrams == pytest.approx(100, abs=40)
        assert statistics.reordered_datagrams == pytest.approx(100, abs=40)
        overtaken = sum(1 for earlier, later in itertools.pairwise(numbers) if later < earlier)
        assert overtaken > 0
        server.close()
        client.close()

    run(main)


def test_delay_holds_datagrams_back() -> None:
    async def main() -> None:
        server = await _peer(echo=True)
        client = await _peer(echo=False)
        impairment = Impairment.symmetric(delay_ns=25_000_000)
        async with await UdpRelay.start(server.address, impairment=impairment) as relay:
            start = time.monotonic()
            client.send(b"ping", relay.listen_address)
            await client.wait_for(1)
            round_trip = time.monotonic() - start
        # A lower bound is the model's promise; no upper bound (the machine may be busy).
        assert round_trip >= 0.050
        server.close()
        client.close()

    run(main)


def test_rebind_moves_the_client_to_a_new_source_port() -> None:
    async def main() -> None:
        server = await _peer(echo=True)
        client = await _peer(echo=False)
        async with await UdpRelay.start(server.address) as relay:
            client.send(b"before", relay.listen_address)
            await client.wait_for(1)
            old_source = server.received[0][1]
            new_source = relay.rebind()
            assert new_source != old_source
            assert relay.upstream_address(client.address) == new_source
            client.send(b"after", relay.listen_address)
            await client.wait_for(2)
            assert server.received[1] == (b"after", new_source)
            assert client.received[1][0] == b"after"  # answers to the new port come through
            # The old mapping is gone: what the server sends there reaches nobody.
            server.send(b"to the old port", old_source)
            await asyncio.sleep(0.05)
            assert len(client.received) == 2
            assert relay.statistics().rebinds == 1
        server.close()
        client.close()

    run(main)


def test_inject_sends_from_another_address_and_counts_answers() -> None:
    async def main() -> None:
        server = await _peer(echo=True)
        client = await _peer(echo=False)
        seen: list[tuple[Direction, Address, bytes]] = []
        async with await UdpRelay.start(
            server.address, observer=lambda *item: seen.append(item)
        ) as relay:
            client.send(b"live", relay.listen_address)
            await client.wait_for(1)
            live = seen[0][2]
            injector = relay.inject(live + b"!")  # a mutated replay of the live packet
            await server.wait_for(2)
            assert server.received[1] == (b"live!", injector)
            assert injector != relay.upstream_address()
            await _quiet(lambda: relay.statistics().injector_received_datagrams == 1)
            relay.inject(b"to the client", direction=Direction.TO_CLIENT)
            await client.wait_for(2)
            assert client.received[1] == (b"to the client", injector)
            statistics = relay.statistics()
        assert statistics.injector_received_bytes == len(b"live!")
        assert statistics.to_server.injected_datagrams == 1
        assert statistics.to_client.injected_datagrams == 1
        assert statistics.to_server.received_datagrams == 1  # injections are not "received"
        # The observer saw the live datagrams of both directions, not the injected ones.
        assert seen == [
            (Direction.TO_SERVER, client.address, b"live"),
            (Direction.TO_CLIENT, client.address, b"live"),
        ]
        server.close()
        client.close()

    run(main)


def test_least_recently_active_client_is_evicted_at_the_cap() -> None:
    async def main() -> None:
        server = await _peer(echo=True)
        first = await _peer(echo=False)
        second = await _peer(echo=False)
        async with await UdpRelay.start(server.address, max_clients=1) as relay:
            first.send(b"one", relay.listen_address)
            await first.wait_for(1)
            second.send(b"two", relay.listen_address)
            await second.wait_for(1)
            statistics = relay.statistics()
            assert statistics.clients == 1 and statistics.evicted_clients == 1
            assert relay.clients == [second.address]
            with pytest.raises(LookupError):
                relay.upstream_address(first.address)
        server.close()
        first.close()
        second.close()

    run(main)


def test_qotp_transfer_through_a_lossy_reordering_relay() -> None:
    """Our own client and server through 5 % loss, reordering and duplication both ways."""

    async def main() -> None:
        impairment = Impairment.symmetric(seed=1, loss=0.05, reorder=0.02, duplicate=0.02)
        async with await listen("127.0.0.1", 0) as server, await listen("127.0.0.1", 0) as client:

            async def serve() -> None:
                async for connection in server:
                    asyncio.create_task(serve_connection(connection, "echo"))

            serving = asyncio.create_task(serve())
            async with await UdpRelay.start(server.local_address, impairment=impairment) as relay:
                result = await run_client(
                    client, relay.listen_address, streams=2, size=300_000, mode="echo", timeout=50
                )
                statistics = relay.statistics()
            serving.cancel()
        assert result.ok, result.error
        assert statistics.to_server.dropped_datagrams > 0
        assert statistics.to_client.dropped_datagrams > 0

    run(main)


def test_relay_with_unknown_client_lookups_fail_clearly() -> None:
    async def main() -> None:
        server = await _peer(echo=True)
        async with await UdpRelay.start(server.address) as relay:
            with pytest.raises(LookupError):
                relay.rebind()
            with pytest.raises(LookupError):
                relay.inject(b"x", direction=Direction.TO_CLIENT)
        with pytest.raises(RuntimeError):
            relay.inject(b"x")
        server.close()

    run(main)


def test_ceiling_measurement_reports_numbers() -> None:
    ceiling = run(lambda: measure_ceiling(seconds=0.3, datagram_bytes=1000))
    assert ceiling.relayed_datagrams > 0 and ceiling.offered_datagrams > 0
    assert ceiling.datagrams_per_s > 0 and ceiling.relay_cpu_s > 0
    assert "datagrams/s" in ceiling.describe()


def test_data_survives_the_relay_unchanged() -> None:
    async def main() -> None:
        server = await _peer(echo=True)
        client = await _peer(echo=False)
        payloads = [os.urandom(size) for size in (1, 100, 1400, 9000, 60_000)]
        async with await UdpRelay.start(server.address) as relay:
            for payload in payloads:
                client.send(payload, relay.listen_address)
                await client.wait_for(len(client.received) + 1)
        assert [data for data, _source in client.received] == payloads
        server.close()
        client.close()

    run(main)
