"""DTLS 1.3 sessions: saved sessions, tickets of both kinds, the early-data anti-replay rule."""

from __future__ import annotations

import pytest

from dtls.errors import DecodeError
from dtls.sessions13 import EarlyDataGuard, Session13, TicketContents, TicketSealer, TicketStore

SECOND = 1_000_000_000


def _contents(issued_at: int = 0, max_early_data: int = 100, age_add: int = 7) -> TicketContents:
    return TicketContents(
        cipher_suite=0x1301,
        psk=b"p" * 32,
        issued_at_ns=issued_at,
        lifetime_seconds=60,
        age_add=age_add,
        max_early_data=max_early_data,
        server_name="server.test",
        alpn_protocol="h3",
        peer_certificates=(b"\x30\x01",),
    )


def test_saved_session_round_trip_and_garbage() -> None:
    session = Session13(
        cipher_suite=0x1302,
        psk=b"k" * 48,
        ticket=b"t" * 100,
        ticket_age_add=5,
        lifetime_seconds=7200,
        max_early_data=0,
        received_at_ns=-3,
        server_name=None,
        alpn_protocol="x",
    )
    assert Session13.from_bytes(session.to_bytes()) == session
    for garbage in (b"", b"DTLS12-SESSION\x01", session.to_bytes()[:-1], session.to_bytes() + b"x"):
        with pytest.raises(DecodeError):
            Session13.from_bytes(garbage)


def test_ticket_age_is_obfuscated_and_expires() -> None:
    session = Session13(
        cipher_suite=0x1301, psk=b"k", ticket=b"t", ticket_age_add=0xFFFFFFFF,
        lifetime_seconds=10, max_early_data=0, received_at_ns=0,
    )  # fmt: skip
    assert session.obfuscated_age(3 * SECOND) == (3000 + 0xFFFFFFFF) & 0xFFFFFFFF
    assert not session.expired(10 * SECOND) and session.expired(11 * SECOND)


def test_sealed_tickets_open_only_here_and_cached_ones_once() -> None:
    contents = _contents()
    sealer = TicketSealer()
    ticket = sealer.seal(contents)
    assert sealer.open(ticket) == contents
    assert TicketSealer().open(ticket) is None  # another server's key
    tampered = ticket[:-1] + bytes([ticket[-1] ^ 1])
    assert sealer.open(tampered) is None and sealer.open(b"short") is None
    store = TicketStore(limit=2)
    identity = store.issue(contents, stateless=False)
    assert len(identity) == 32 and store.peek(identity) == contents
    assert store.redeem(identity) == contents and store.redeem(identity) is None
    for _ in range(3):
        store.issue(contents, stateless=False)
    assert len(store) == 2  # the oldest went first
    stateless = store.issue(contents, stateless=True)
    assert store.redeem(stateless) == store.redeem(stateless) == contents


def test_early_data_needs_a_fresh_first_seen_hello() -> None:
    guard = EarlyDataGuard(freshness_window_ns=10 * SECOND)
    ticket = _contents(issued_at=0)
    now = 30 * SECOND
    honest_age = (30_000 + ticket.age_add) & 0xFFFFFFFF
    assert guard.admit(ticket, honest_age, b"binder-1", now)
    assert not guard.admit(ticket, honest_age, b"binder-1", now)  # the same hello again
    assert guard.refused_replays == 1
    stale_age = (5_000 + ticket.age_add) & 0xFFFFFFFF  # claims 5 s, we measure 30 s
    assert not guard.admit(ticket, stale_age, b"binder-2", now) and guard.refused_stale == 1
    assert not guard.admit(_contents(max_early_data=0), honest_age, b"binder-3", now)
    # An endpoint's claim is exclusive; the connection it creates may then use the binder once.
    assert guard.claim(b"binder-4", now, exclusive=True)
    assert not guard.claim(b"binder-4", now, exclusive=True)
    assert guard.claim(b"binder-4", now, exclusive=False)
    assert guard.admit(ticket, honest_age, b"binder-4", now)
    assert not guard.claim(b"binder-4", now, exclusive=False)  # used: a replay now
    # Entries outlive the window, then go (a replay that late fails freshness anyway).
    assert len(guard) == 2
    guard.claim(b"later", now + 25 * SECOND, exclusive=True)
    assert len(guard) == 1


def test_a_full_register_refuses_rather_than_forgets() -> None:
    guard = EarlyDataGuard(limit=2)
    ticket = _contents()
    age = ticket.age_add
    assert guard.admit(ticket, age, b"a", 0) and guard.admit(ticket, age, b"b", 0)
    assert not guard.admit(ticket, age, b"c", 0)
    assert not guard.claim(b"d", 0, exclusive=True)
