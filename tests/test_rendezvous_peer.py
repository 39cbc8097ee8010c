"""Peers and the rendezvous over loopback sockets: one connection per pair, relay, upgrade.

Loopback has no NAT, so punches always get through; the relay tests make
them fail by dropping PUNCH datagrams at the sender (a NAT that eats them).
Real NATs are in test_netns_p2p.py.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Coroutine
from pathlib import Path
from typing import Any

import pytest

from qotp.config import QotpConfiguration
from qotp.protection import Address
from qotp.rendezvous import (
    Peer,
    PeerConnected,
    PeerError,
    PeerEvent,
    PeerPathChanged,
    serve_rendezvous,
)
from qotp.rendezvous.messages import MAGIC, Kind
from qotp.rendezvous.server import PeerRegistered, ServerEvent
from qotp.transfer import FileReceiver, build_manifest, send_files

PUNCHES = (Kind.PUNCH, Kind.PUNCH_ACK)


def run(coroutine: Coroutine[Any, Any, None]) -> None:
    asyncio.run(asyncio.wait_for(coroutine, 60))


def block_punches(peer: Peer, blocked: list[bool]) -> None:
    """While ``blocked[0]``, PUNCH datagrams from this peer are lost."""
    send = peer.listener.send_datagrams

    def filtered(datagrams: list[tuple[bytes, Address]]) -> None:
        if blocked[0]:
            datagrams = [
                (data, address)
                for data, address in datagrams
                if not (data.startswith(MAGIC) and data[4] in PUNCHES)
            ]
        send(datagrams)

    peer.listener.send_datagrams = filtered  # type: ignore[method-assign]


async def start_peer(rendezvous: Address, name: str, events: list[PeerEvent]) -> Peer:
    peer = await Peer.start(
        rendezvous,
        name,
        host="127.0.0.1",
        on_event=events.append,
        punch_timeout_s=1.0,
        upgrade_delays_s=(0.3,),
    )
    await peer.wait_registered()
    return peer


def test_both_connecting_at_once_gives_one_direct_zero_rtt_connection(tmp_path: Path) -> None:
    source = tmp_path / "hello.bin"
    source.write_bytes(os.urandom(300_000))

    async def main() -> None:
        async with await serve_rendezvous("127.0.0.1", 0) as rendezvous:
            alice_events: list[PeerEvent] = []
            bob_events: list[PeerEvent] = []
            alice = await start_peer(rendezvous.local_address, "alice", alice_events)
            bob = await start_peer(rendezvous.local_address, "bob", bob_events)
            async with alice, bob:
                to_bob, to_alice = await asyncio.gather(alice.connect("bob"), bob.connect("alice"))
                assert len(alice.listener.endpoint.connections) == 1
                assert len(bob.listener.endpoint.connections) == 1
                assert to_bob.connection.connection_id == to_alice.connection.connection_id
                assert to_bob.direct and to_alice.direct
                dialer = to_bob if to_bob.dialer else to_alice
                assert dialer.connection.engine.protection.zero_rtt  # type: ignore[attr-defined]
                assert to_bob.public_key == bob.public_key
                receiver = FileReceiver(tmp_path / "inbox")
                receiving = asyncio.create_task(receiver.handle_connection(to_alice.connection))
                summary = await send_files(to_bob.connection, build_manifest([source]))
                assert summary.ok
                receiving.cancel()
                stats = rendezvous.statistics()
                assert stats["relayed_datagrams"] == 0 and stats["relays"] == 0
            connected = [event for event in alice_events if isinstance(event, PeerConnected)]
            assert [(event.peer, event.address, event.direct) for event in connected] == [
                ("bob", to_bob.address, True)
            ]

    run(main())
    assert (tmp_path / "inbox" / "hello.bin").read_bytes() == source.read_bytes()


def test_when_punching_fails_the_rendezvous_relays_then_a_direct_path_takes_over() -> None:
    async def main() -> None:
        async with await serve_rendezvous("127.0.0.1", 0) as rendezvous:
            alice_events: list[PeerEvent] = []
            bob_events: list[PeerEvent] = []
            alice = await start_peer(rendezvous.local_address, "alice", alice_events)
            bob = await start_peer(rendezvous.local_address, "bob", bob_events)
            blocked = [True]
            block_punches(alice, blocked)
            block_punches(bob, blocked)
            async with alice, bob:
                to_bob = await alice.connect("bob")
                to_alice = await bob.accept()
                assert not to_bob.direct and not to_alice.direct
                assert to_bob.address == rendezvous.local_address
                stream = to_bob.connection.stream(100)
                payload = os.urandom(200_000)
                stream.write(payload)
                stream.close()
                incoming = await to_alice.connection.accept_stream()
                assert await incoming.read() == payload
                relayed = rendezvous.statistics()["relayed_bytes"]
                assert relayed > len(payload)
                # The NATs start letting punches through: the link goes direct.
                blocked[0] = False
                while not (to_bob.direct and to_alice.direct):
                    await asyncio.sleep(0.05)
                assert len(alice.listener.endpoint.connections) == 1
                stream = to_bob.connection.stream(102)
                stream.write(payload)
                stream.close()
                incoming = await to_alice.connection.accept_stream()
                assert await incoming.read() == payload
                assert rendezvous.statistics()["relayed_bytes"] < relayed + len(payload) // 2
            for events in (alice_events, bob_events):
                connected = [event for event in events if isinstance(event, PeerConnected)]
                assert [event.direct for event in connected] == [False]
                moved = [event for event in events if isinstance(event, PeerPathChanged)]
                assert moved and moved[-1].direct

    run(main())


def test_an_unreachable_rendezvous_is_one_clear_error() -> None:
    async def main() -> None:
        async with await serve_rendezvous("127.0.0.1", 0) as rendezvous:
            address = rendezvous.local_address
        async with await Peer.start(address, "alice", host="127.0.0.1") as peer:
            with pytest.raises(PeerError, match="no answer from the rendezvous"):
                await peer.wait_registered(timeout=0.5)

    run(main())


def test_connecting_to_a_peer_that_never_registers_times_out() -> None:
    async def main() -> None:
        async with await serve_rendezvous("127.0.0.1", 0) as rendezvous:
            alice = await start_peer(rendezvous.local_address, "alice", [])
            async with alice:
                with pytest.raises(PeerError, match="no peer named carol"):
                    await alice.connect("carol", timeout=1.5)

    run(main())


def test_both_peers_send_files_at_once_over_their_one_connection(tmp_path: Path) -> None:
    for name in ("alice", "bob"):
        (tmp_path / name).mkdir()
        (tmp_path / name / f"from-{name}.bin").write_bytes(os.urandom(500_000))

    async def main() -> None:
        async with await serve_rendezvous("127.0.0.1", 0) as rendezvous:
            alice = await start_peer(rendezvous.local_address, "alice", [])
            bob = await start_peer(rendezvous.local_address, "bob", [])
            async with alice, bob:
                to_bob, to_alice = await asyncio.gather(alice.connect("bob"), bob.connect("alice"))
                links = {"alice": to_bob, "bob": to_alice}
                receiving = [
                    asyncio.create_task(
                        FileReceiver(tmp_path / f"inbox-{name}").handle_connection(link.connection)
                    )
                    for name, link in links.items()
                ]
                summaries = await asyncio.gather(
                    *(
                        send_files(link.connection, build_manifest([tmp_path / name]))
                        for name, link in links.items()
                    )
                )
                assert all(summary.ok for summary in summaries)
                for task in receiving:
                    task.cancel()

    run(main())
    for sender, receiver in (("alice", "bob"), ("bob", "alice")):
        original = tmp_path / sender / f"from-{sender}.bin"
        copy = tmp_path / f"inbox-{receiver}" / sender / original.name
        assert copy.read_bytes() == original.read_bytes()


def test_a_peer_that_moves_keeps_its_link_and_its_registration() -> None:
    async def main() -> None:
        registered: list[ServerEvent] = []
        async with await serve_rendezvous("127.0.0.1", 0, on_event=registered.append) as server:
            alice_events: list[PeerEvent] = []
            alice = await start_peer(server.local_address, "alice", alice_events)
            bob = await start_peer(server.local_address, "bob", [])
            async with alice, bob:
                to_bob = await alice.connect("bob")
                to_alice = await bob.accept()
                new = await alice.rebind()
                stream = to_bob.connection.stream(50)
                stream.write(b"from my new address")
                stream.close()
                incoming = await to_alice.connection.accept_stream()
                assert await incoming.read() == b"from my new address"
                assert to_alice.address == new
                while alice.client.public_address != new:  # registered again from there
                    await asyncio.sleep(0.02)
                assert any(
                    isinstance(event, PeerRegistered) and event.address == new
                    for event in registered
                )

    run(main())


def test_keep_alives_hold_an_idle_link_open() -> None:
    async def main() -> None:
        short = QotpConfiguration(idle_timeout_ns=1_000_000_000)
        async with await serve_rendezvous("127.0.0.1", 0) as rendezvous:
            peers = [
                await Peer.start(
                    rendezvous.local_address,
                    name,
                    host="127.0.0.1",
                    keepalive_s=0.2,
                    configuration=short,
                )  # fmt: skip
                for name in ("alice", "bob")
            ]
            async with peers[0], peers[1]:
                for peer in peers:
                    await peer.wait_registered()
                to_bob = await peers[0].connect("bob")
                await asyncio.sleep(2.5)  # idle, two and a half idle timeouts
                assert not to_bob.connection.is_closed
                stream = to_bob.connection.stream(60)
                stream.write(b"still here")
                stream.close()
                to_alice = await peers[1].accept()
                incoming = await to_alice.connection.accept_stream()
                assert await incoming.read() == b"still here"

    run(main())
