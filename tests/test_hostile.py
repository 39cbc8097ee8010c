"""Transfers on a hostile network: an attacker replays and mutates live packets from elsewhere.

The attacker sees every datagram of the client and the server (on the path)
and injects, from its own address, exact copies (some ahead of the original,
some long after) and copies with one byte changed, in both directions.  The
transfer must complete bit-exact, the replies must never move to the
attacker, and the attacker may get no more than three times what it sent
(probes, from path validation).  Once on the seeded simulator, once over real
loopback sockets through the impairment relay (qotp.compare.relay).
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import random

from netsim import MS, SECOND, LinkConditions, Network
from transfer import Transfer

from qotp.asyncio import listen
from qotp.compare.impairment import Direction, Impairment
from qotp.compare.relay import UdpRelay
from qotp.endpoint import QotpEndpoint
from qotp.events import PeerAddressChanged
from qotp.path import PATH_AMPLIFICATION_FACTOR
from qotp.tool import serve_connection

ATTACKER = ("192.0.2.66", 6666)


def mutate(datagram: bytes, rng: random.Random) -> bytes:
    position = rng.randrange(len(datagram))
    return datagram[:position] + bytes((datagram[position] ^ 0x20,)) + datagram[position + 1 :]


def test_transfer_through_replays_and_mutations_from_another_address_is_bit_exact() -> None:
    client, server = QotpEndpoint(), QotpEndpoint()
    conditions = LinkConditions(delay_ns=10 * MS, jitter_ns=2 * MS, loss=0.02)
    network = Network(client, server, a_to_b=conditions, seed=11)
    rng = random.Random(11)
    seen: list[tuple[str, bytes]] = []
    injected = 0
    to_attacker = 0

    def tap(sender: str, datagram: bytes, destination: tuple[str, int]) -> None:
        nonlocal injected, to_attacker
        if destination == ATTACKER:
            to_attacker += len(datagram)
            return
        seen.append((sender, datagram))
        roll = rng.random()
        if roll < 0.10:  # a copy racing the original
            copy, delay = datagram, 5 * MS
        elif roll < 0.20:  # a copy long after (a replay)
            copy, delay = rng.choice(seen)[1], 50 * MS
            sender = next(s for s, d in seen if d == copy)
        elif roll < 0.30:  # a mutation
            copy, delay = mutate(datagram, rng), 5 * MS
        else:
            return
        injected += len(copy)
        network.inject(sender, copy, source=ATTACKER, delay_ns=delay)

    network.tap = tap
    transfer = Transfer(client, server, network.b_address, 3, 500_000)
    network.run_until(transfer.done, on_step=transfer.step, limit_ns=300 * SECOND)
    transfer.verify()
    server_connection = transfer.server_connection
    assert server_connection is not None
    assert server_connection.address == network.a_address
    assert transfer.connection.address == network.b_address
    for side in ("client", "server"):
        assert not any(isinstance(e, PeerAddressChanged) for e in transfer.events[side])
    assert server.drops["replayed"] > 0 and server.drops["unauthenticated"] > 0
    assert client.drops["replayed"] > 0 and client.drops["unauthenticated"] > 0
    assert to_attacker <= PATH_AMPLIFICATION_FACTOR * injected


def run(coroutine: object) -> object:
    return asyncio.run(asyncio.wait_for(coroutine, 120))  # type: ignore[arg-type]


async def echo_through_relay(relay: UdpRelay, size: int) -> bool:
    async with await listen("127.0.0.1", 0) as client:
        connection = await client.dial(relay.listen_address)
        stream = connection.stream(1)
        data = os.urandom(size)
        received = bytearray()

        async def reader() -> None:
            while chunk := await stream.read(65536):
                received.extend(chunk)

        reading = asyncio.create_task(reader())
        stream.write(data)
        await stream.drain()
        stream.close()
        await reading
        return hashlib.sha256(received).digest() == hashlib.sha256(data).digest()


def test_echo_over_loopback_through_a_relay_that_replays_and_mutates() -> None:
    """Real sockets: every 10th datagram each way is replayed from the relay's injector
    address at once (racing the original), every 10th (offset) mutated."""

    async def main() -> None:
        async with await listen("127.0.0.1", 0) as server:

            async def serve() -> None:
                async for connection in server:
                    asyncio.create_task(serve_connection(connection, "echo"))

            serving = asyncio.create_task(serve())
            relay = await UdpRelay.start(server.local_address, impairment=Impairment())
            rng = random.Random(5)
            counter = 0
            injected = 0

            def observe(direction: Direction, _client: tuple[str, int], data: bytes) -> None:
                nonlocal counter, injected
                counter += 1
                if counter % 10 == 0:
                    copy = data
                elif counter % 10 == 5:
                    copy = mutate(data, rng)
                else:
                    return
                injected += len(copy)
                relay.inject(copy, direction=direction)

            relay.observer = observe
            async with relay:
                assert await echo_through_relay(relay, 2_000_000)
                statistics = relay.statistics()
                assert statistics.injector_received_bytes <= PATH_AMPLIFICATION_FACTOR * injected
                (engine,) = server.endpoint.connections.values()
                assert engine.address == relay.upstream_address() and engine.path.moves == 0
                drops = server.endpoint.drops
                assert drops["replayed"] > 0 and drops["unauthenticated"] > 0
            serving.cancel()

    run(main())


def test_roaming_over_loopback_through_a_relay_that_rebinds_mid_transfer() -> None:
    async def main() -> None:
        async with await listen("127.0.0.1", 0) as server:

            async def serve() -> None:
                async for connection in server:
                    asyncio.create_task(serve_connection(connection, "echo"))

            serving = asyncio.create_task(serve())
            relay = await UdpRelay.start(server.local_address, impairment=Impairment())
            async with relay, await listen("127.0.0.1", 0) as client:
                connection = await client.dial(relay.listen_address)
                stream = connection.stream(1)
                data = os.urandom(3_000_000)
                received = bytearray()

                async def reader() -> None:
                    while chunk := await stream.read(65536):
                        received.extend(chunk)

                reading = asyncio.create_task(reader())
                stream.write(data[: len(data) // 2])
                await stream.drain()
                while len(received) < len(data) // 4:
                    await asyncio.sleep(0.005)
                old = relay.upstream_address()
                new = relay.rebind()  # the old source port is gone: a NAT rebinding
                stream.write(data[len(data) // 2 :])
                stream.close()
                await stream.drain()
                await reading
                assert hashlib.sha256(received).digest() == hashlib.sha256(data).digest()
                (engine,) = server.endpoint.connections.values()
                assert engine.address == new != old and engine.path.moves == 1
            serving.cancel()

    run(main())
