"""Peer to peer over QOTP: a rendezvous, two peers, one connection, a file, and roaming.

    python examples/qotp_p2p.py

Everything runs on loopback in one process (the namespace tests put real NATs
in between; `qotp rendezvous` and `qotp peer` are the command-line tools):

1. a rendezvous server introduces alice and bob, who both ask at once: they
   punch and end up with exactly one (0-RTT) connection;
2. alice sends bob a file over it;
3. alice moves to a new socket (a new address, as when a laptop changes
   networks) in the middle of a stream; bob sees her new address and the
   stream goes on.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from qotp.asyncio import AddressChange  # noqa: E402
from qotp.rendezvous import Peer, PeerConnected, PeerEvent, serve_rendezvous  # noqa: E402
from qotp.transfer import FileReceiver, build_manifest, send_files  # noqa: E402


def show(event: PeerEvent) -> None:
    if isinstance(event, PeerConnected):
        print(f"connected to {event.peer} (direct: {event.direct}) in {event.setup_s:.3f} s")


async def main() -> None:
    async with await serve_rendezvous("127.0.0.1", 0) as rendezvous:
        where = rendezvous.local_address
        alice = await Peer.start(where, "alice", host="127.0.0.1", on_event=show)
        bob = await Peer.start(where, "bob", host="127.0.0.1", on_event=show)
        async with alice, bob:
            await alice.wait_registered()
            await bob.wait_registered()

            # 1. Both ask for the other at the same moment: still one connection.
            to_bob, to_alice = await asyncio.gather(alice.connect("bob"), bob.connect("alice"))
            assert to_bob.connection.connection_id == to_alice.connection.connection_id
            print(f"one connection, direct: {to_bob.direct}")

            # 2. A file, verified end to end.
            with tempfile.TemporaryDirectory() as scratch:
                notes = Path(scratch, "notes.txt")
                notes.write_text("meet at the usual place\n" * 1000)
                receiving = asyncio.create_task(
                    FileReceiver(Path(scratch, "inbox")).handle_connection(to_alice.connection)
                )
                summary = await send_files(to_bob.connection, build_manifest([notes]))
                print(f"file sent: {summary.ok}, {summary.bytes_sent} bytes")
                receiving.cancel()

            # 3. Alice roams to a new socket in the middle of a stream.
            changes: list[AddressChange] = []
            to_alice.connection.on_address_change(changes.append)
            data = os.urandom(2_000_000)
            stream = to_bob.connection.stream(1000)
            stream.write(data[:1_000_000])
            await stream.drain()
            old = alice.listener.local_address
            new = await alice.listener.rebind()
            stream.write(data[1_000_000:])
            stream.close()
            incoming = await to_alice.connection.accept_stream()
            arrived = await incoming.read()
            intact = hashlib.sha256(arrived).digest() == hashlib.sha256(data).digest()
            print(f"alice moved from port {old[1]} to {new[1]}; bob saw {len(changes)} "
                  f"address change(s); 2 MB intact: {intact}")  # fmt: skip
            if not (intact and changes):
                raise SystemExit("FAILED")
    print("ok")


if __name__ == "__main__":
    asyncio.run(main())
