"""Peer to peer over QOTP: simultaneous open (hole punching) and a NAT that rebinds.

Two peers that know each other's address and public key (exchanged out of
band, e.g. through a rendezvous server) dial each other at the same moment
with 0-RTT: each first packet opens the sender's NAT mapping for the other's
replies, which is all UDP hole punching needs.  Then peer B sits behind a
simulated NAT (a UDP forwarder on loopback) that changes B's public port in
the middle of a transfer; A keeps the connection, because every packet is
authenticated, and moves its replies to the new address.

    python examples/qotp_p2p.py
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import sys
from pathlib import Path
from typing import cast

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from qotp.asyncio import listen  # noqa: E402
from qotp.events import PeerAddressChanged  # noqa: E402
from qotp.tool import serve_connection  # noqa: E402


class Nat(asyncio.DatagramProtocol):
    """A one-client NAT: inside peer <-> this box <-> outside peer, with rebinding."""

    def __init__(self, outside_peer: tuple[str, int]) -> None:
        self.outside_peer = outside_peer
        self.inside: asyncio.DatagramTransport | None = None
        self.inside_client: tuple[str, int] | None = None
        self.outside: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.inside = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, address: tuple[str, int]) -> None:
        self.inside_client = address
        if self.outside is not None and not self.outside.is_closing():
            self.outside.sendto(data, self.outside_peer)

    async def open_mapping(self) -> tuple[str, int]:
        """(Re)bind the outside socket: a new public port, as a NAT that rebinds does."""
        if self.outside is not None:
            self.outside.close()
        loop = asyncio.get_running_loop()
        nat = self

        class Outside(asyncio.DatagramProtocol):
            def datagram_received(self, data: bytes, address: tuple[str, int]) -> None:
                inside = nat.inside
                if inside is not None and not inside.is_closing() and nat.inside_client:
                    inside.sendto(data, nat.inside_client)

        transport, _ = await loop.create_datagram_endpoint(Outside, local_addr=("127.0.0.1", 0))
        self.outside = transport
        name = transport.get_extra_info("sockname")
        return (name[0], name[1])


async def main() -> None:
    async with await listen("127.0.0.1", 0) as peer_a, await listen("127.0.0.1", 0) as peer_b:
        # 1. Simultaneous open: both dial at once, each with the other's public key.
        a_to_b, b_to_a = await asyncio.gather(
            peer_a.dial(peer_b.local_address, peer_public_key=peer_b.public_key),
            peer_b.dial(peer_a.local_address, peer_public_key=peer_a.public_key),
        )
        incoming_at_b = await peer_b.accept()
        incoming_at_a = await peer_a.accept()
        print("simultaneous open: both directions connected "
              f"(A sees B's key {incoming_at_a.peer_public_key == peer_b.public_key}, "
              f"B sees A's key {incoming_at_b.peer_public_key == peer_a.public_key})")  # fmt: skip
        for connection in (a_to_b, b_to_a, incoming_at_a, incoming_at_b):
            connection.close()

        # 2. B behind a NAT that rebinds mid-transfer.
        loop = asyncio.get_running_loop()
        nat = Nat(peer_a.local_address)
        inside, _ = await loop.create_datagram_endpoint(lambda: nat, local_addr=("127.0.0.1", 0))
        first_port = await nat.open_mapping()
        moves: list[PeerAddressChanged] = []
        original_dispatch = peer_a._dispatch

        def watch(event: object) -> None:
            if isinstance(event, PeerAddressChanged):
                moves.append(event)
            original_dispatch(event)  # type: ignore[arg-type]

        peer_a._dispatch = watch  # type: ignore[method-assign]

        async def serve() -> None:
            async for connection in peer_a:
                asyncio.create_task(serve_connection(connection, "echo"))

        serving = asyncio.create_task(serve())
        nat_address = inside.get_extra_info("sockname")
        connection = await peer_b.dial(
            (nat_address[0], nat_address[1]), peer_public_key=peer_a.public_key
        )
        stream = connection.stream(1)
        data = os.urandom(4_000_000)
        received = bytearray()

        async def reader() -> None:
            while chunk := await stream.read(65536):
                received.extend(chunk)

        reading = asyncio.create_task(reader())
        half = len(data) // 2
        stream.write(data[:half])
        await stream.drain()
        while len(received) < half // 2:
            await asyncio.sleep(0.01)
        second_port = await nat.open_mapping()  # the NAT rebinds: new public port
        stream.write(data[half:])
        stream.close()
        await stream.drain()
        await asyncio.wait_for(reading, 60)
        ok = hashlib.sha256(received).digest() == hashlib.sha256(data).digest()
        if not ok:
            print("diagnostics:", len(received), len(data), connection.close_reason)
        print(f"NAT rebinding: public port {first_port[1]} -> {second_port[1]}; "
              f"A saw {len(moves)} address change(s); 4 MB echoed intact: {ok}")  # fmt: skip
        serving.cancel()
        inside.close()
        if nat.outside is not None:
            nat.outside.close()
        if not ok or not moves:
            raise SystemExit("FAILED")
    print("ok")


if __name__ == "__main__":
    asyncio.run(main())
