"""A peer's rendezvous client against the real server core, sans-IO, on a hand-driven clock.

``Wire`` delivers datagrams between the parties at once (no NAT; a NAT that
eats punches is a ``blocked`` set of source-destination pairs).  The real
NATs are in test_netns_p2p.py.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from qotp.keys import KeyPair
from qotp.protection import Address
from qotp.rendezvous.client import (
    ClientEvent,
    ConnectFailed,
    Introduced,
    PunchFailed,
    PunchSucceeded,
    Registered,
    RelayBound,
    RendezvousClient,
)
from qotp.rendezvous.messages import MAGIC
from qotp.rendezvous.server import RendezvousServer

MS = 1_000_000
SERVER_AT: Address = ("192.0.2.1", 7000)
ALICE_AT: Address = ("203.0.113.10", 40001)
BOB_AT: Address = ("198.51.100.20", 50002)


@dataclass
class Wire:
    server: RendezvousServer
    clients: dict[Address, RendezvousClient]
    blocked: set[tuple[Address, Address]] = field(default_factory=set)
    now: int = 0
    events: dict[Address, list[ClientEvent]] = field(default_factory=dict)

    def pump(self) -> None:
        """Deliver until nothing moves at this instant."""
        moved = True
        while moved:
            moved = False
            for source, client in self.clients.items():
                for data, destination in client.datagrams_to_send(self.now):
                    moved = True
                    if (source, destination) in self.blocked:
                        continue
                    if destination == SERVER_AT:
                        self.server.receive_datagram(data, source, self.now)
                    elif destination in self.clients and data.startswith(MAGIC):
                        self.clients[destination].receive_datagram(data, source, self.now)
                while (event := client.next_event()) is not None:
                    self.events.setdefault(source, []).append(event)
            for data, destination in self.server.datagrams_to_send(self.now):
                moved = True
                if destination in self.clients:
                    self.clients[destination].receive_datagram(data, SERVER_AT, self.now)

    def advance(self, milliseconds: int) -> None:
        """Let time pass in 10 ms steps, firing every timer on the way."""
        end = self.now + milliseconds * MS
        while self.now < end:
            self.now += 10 * MS
            for client in self.clients.values():
                deadline = client.get_timer()
                if deadline is not None and deadline <= self.now:
                    client.handle_timer(self.now)
            deadline = self.server.get_timer()
            if deadline is not None and deadline <= self.now:
                self.server.handle_timer(self.now)
            self.pump()

    def of(self, address: Address, kind: type) -> list[ClientEvent]:
        return [event for event in self.events.get(address, []) if isinstance(event, kind)]


def two_peers() -> tuple[Wire, RendezvousClient, RendezvousClient]:
    alice = RendezvousClient(identity=KeyPair.generate(), name="alice", server=SERVER_AT)
    bob = RendezvousClient(identity=KeyPair.generate(), name="bob", server=SERVER_AT)
    wire = Wire(RendezvousServer(now=0), {ALICE_AT: alice, BOB_AT: bob})
    alice.start(0)
    bob.start(0)
    wire.pump()
    return wire, alice, bob


def test_registration_reports_the_public_address_and_keeps_alive() -> None:
    wire, alice, _ = two_peers()
    assert wire.of(ALICE_AT, Registered) == [Registered(public_address=ALICE_AT)]
    assert alice.public_address == ALICE_AT
    deadline = alice.get_timer()
    assert deadline is not None and 14_000 * MS <= deadline <= 16_000 * MS
    wire.advance(40_000)
    assert wire.server.statistics()["peers"] == 2  # keep-alives held the registration


def test_introduction_then_punching_finds_the_path() -> None:
    wire, alice, _ = two_peers()
    alice.connect("bob", wire.now)
    wire.pump()
    [to_alice] = wire.of(ALICE_AT, Introduced)
    [to_bob] = wire.of(BOB_AT, Introduced)
    assert isinstance(to_alice, Introduced) and isinstance(to_bob, Introduced)
    assert to_alice.token == to_bob.token and to_alice.dialer != to_bob.dialer
    assert wire.of(ALICE_AT, PunchSucceeded) == [
        PunchSucceeded(token=to_alice.token, address=BOB_AT)
    ]
    assert wire.of(BOB_AT, PunchSucceeded) == [PunchSucceeded(token=to_bob.token, address=ALICE_AT)]


def test_blocked_punches_fail_at_the_deadline_and_the_relay_binds() -> None:
    wire, alice, _ = two_peers()
    wire.blocked = {(ALICE_AT, BOB_AT), (BOB_AT, ALICE_AT)}
    alice.connect("bob", wire.now)
    wire.pump()
    wire.advance(2_900)
    assert wire.of(ALICE_AT, PunchFailed) == []
    wire.advance(200)
    [failed] = wire.of(ALICE_AT, PunchFailed)
    assert isinstance(failed, PunchFailed)
    alice.bind_relay(failed.token, 1234, wire.now)
    wire.pump()
    assert wire.of(ALICE_AT, RelayBound) == [RelayBound(token=failed.token, connection_id=1234)]
    # Punching again later, once the path opened, succeeds.
    wire.blocked = set()
    alice.punch(failed.token, wire.now)
    wire.pump()
    assert alice.peer_address(failed.token) == BOB_AT


def test_a_lost_introduction_is_resent() -> None:
    wire, alice, _ = two_peers()
    wire.blocked = {(BOB_AT, SERVER_AT)}  # Bob's acknowledgements are lost
    alice.connect("bob", wire.now)
    wire.pump()
    wire.advance(1_000)
    assert len(wire.of(BOB_AT, Introduced)) == 1  # one event, however many copies
    assert wire.server.get_timer() is not None


def test_connecting_to_nobody_fails_with_the_reason() -> None:
    wire, alice, _ = two_peers()
    alice.connect("carol", wire.now)
    wire.pump()
    [failure] = wire.of(ALICE_AT, ConnectFailed)
    assert isinstance(failure, ConnectFailed) and "carol" in failure.reason


def test_datagrams_from_strangers_are_dropped() -> None:
    wire, alice, _ = two_peers()
    alice.receive_datagram(b"QRV1\x03garbage", SERVER_AT, 0)
    alice.receive_datagram(b"QRV1\x08" + bytes(16), ("192.0.2.50", 1), 0)  # punch, no such token
    alice.receive_datagram(b"QRV1\x0b" + bytes(24), ("192.0.2.50", 1), 0)  # not the server
    assert alice.drops == 3
