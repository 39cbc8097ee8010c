"""Sessions: cache bounds, tickets, and saved-session round trips."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from dtls.errors import DecodeError
from dtls.sessions import Session, SessionCache, TicketKeys

SESSION = Session(
    session_id=b"\x01" * 32,
    cipher_suite=0xC02B,
    master_secret=b"m" * 48,
    extended_master_secret=True,
    ticket=b"t" * 100,
    server_name="example.net",
    alpn_protocol="h2",
    peer_certificates=(b"der-1", b"der-2"),
)


def test_saved_session_round_trip() -> None:
    assert Session.from_bytes(SESSION.to_bytes()) == SESSION


@given(st.binary(max_size=300))
def test_saved_session_garbage_only_decode_error(data: bytes) -> None:
    try:
        Session.from_bytes(data)
    except DecodeError:
        pass


def test_ticket_round_trip_and_foreign_ticket() -> None:
    keys = TicketKeys()
    ticket = keys.seal(SESSION)
    opened = keys.open(ticket, b"sid")
    assert opened is not None and opened.master_secret == SESSION.master_secret
    assert opened.session_id == b"sid" and opened.ticket == ticket
    assert TicketKeys().open(ticket, b"sid") is None
    damaged = bytearray(ticket)
    damaged[-1] ^= 1
    assert keys.open(bytes(damaged), b"sid") is None


def test_session_cache_is_bounded() -> None:
    cache = SessionCache(limit=3)
    for index in range(5):
        cache.store(
            Session(
                session_id=bytes([index]) * 32,
                cipher_suite=0xC02B,
                master_secret=b"m" * 48,
                extended_master_secret=True,
            )
        )
    assert len(cache) == 3
    assert cache.get(b"\x00" * 32) is None
    assert cache.get(b"\x04" * 32) is not None
