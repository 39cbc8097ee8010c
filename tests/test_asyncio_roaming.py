"""Roaming in the asyncio API: our side moves to a new socket mid-transfer; both sides hear."""

from __future__ import annotations

import asyncio
import hashlib
import os
from collections.abc import Coroutine
from typing import Any

from qotp.asyncio import listen
from qotp.asyncio.api import AddressChange
from qotp.protection import Address
from qotp.tool import serve_connection


def run(coroutine: Coroutine[Any, Any, None]) -> None:
    asyncio.run(asyncio.wait_for(coroutine, 60))


def test_rebinding_mid_transfer_keeps_the_connection() -> None:
    async def main() -> None:
        async with await listen("127.0.0.1", 0) as server, await listen("127.0.0.1", 0) as client:
            server_changes: list[AddressChange] = []

            async def serve() -> None:
                async for connection in server:
                    connection.on_address_change(server_changes.append)
                    asyncio.create_task(serve_connection(connection, "echo"))

            serving = asyncio.create_task(serve())
            connection = await client.dial(server.local_address, peer_public_key=server.public_key)
            client_changes: list[AddressChange] = []
            connection.on_address_change(client_changes.append)
            stream = connection.stream(4)
            data = os.urandom(3_000_000)
            echoed = bytearray()

            async def read() -> None:
                while chunk := await stream.read(65536):
                    echoed.extend(chunk)

            reading = asyncio.create_task(read())
            stream.write(data[:1_500_000])
            await stream.drain()
            while len(echoed) < 500_000:
                await asyncio.sleep(0.005)
            old = client.local_address
            new = await client.rebind()
            assert new != old and new[0] == "127.0.0.1"
            stream.write(data[1_500_000:])
            stream.close()
            await stream.drain()
            await reading
            assert hashlib.sha256(echoed).digest() == hashlib.sha256(data).digest()
            assert [(c.local, c.old_address, c.new_address) for c in client_changes] == [
                (True, old, new)
            ]
            assert server_changes and server_changes[-1].new_address == new
            assert not server_changes[-1].local
            serving.cancel()

    run(main())


def test_diverted_datagrams_share_the_socket() -> None:
    async def main() -> None:
        async with await listen("127.0.0.1", 0) as one, await listen("127.0.0.1", 0) as two:
            seen: list[tuple[bytes, Address]] = []
            two.divert(b"XYZ", lambda data, address, now: seen.append((data, address)))
            one.send_datagrams(
                [(b"XYZ hello", two.local_address), (b"\x51junk", two.local_address)]
            )
            while not seen:
                await asyncio.sleep(0.005)
            assert seen == [(b"XYZ hello", one.local_address)]
            # The engine still works, and counted the one it was given.
            connection = await one.dial(two.local_address)
            assert connection.peer_public_key == two.public_key
            assert two.endpoint.drops["undecodable"] == 1

    run(main())


def test_a_cancelled_accept_stream_loses_no_stream() -> None:
    async def main() -> None:
        async with await listen("127.0.0.1", 0) as server, await listen("127.0.0.1", 0) as client:
            connection = await client.dial(server.local_address)
            stream = connection.stream(8)
            stream.write(b"first")
            incoming = await server.accept()
            first = await incoming.accept_stream()
            waiting = asyncio.create_task(incoming.accept_stream())
            await asyncio.sleep(0.01)
            waiting.cancel()
            await asyncio.gather(waiting, return_exceptions=True)
            second = connection.stream(10)
            second.write(b"second")
            second.close()
            assert (await asyncio.wait_for(incoming.accept_stream(), 5)).stream_id == 10
            assert first.stream_id == 8

    run(main())
