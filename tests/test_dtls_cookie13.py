"""Stateless HelloRetryRequest cookies: binding, rotation, forgery."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from dtls.cookie13 import RetryCookies, RetryState

SECOND = 1_000_000_000
STATE = RetryState(cipher_suite=0x1301, group=23, client_hello_hash=b"h" * 32)


def test_a_cookie_opens_for_its_address_only() -> None:
    cookies = RetryCookies()
    cookie = cookies.make(("192.0.2.1", 5000), STATE, 0)
    assert cookies.open(("192.0.2.1", 5000), cookie, SECOND) == STATE
    assert cookies.open(("192.0.2.1", 5001), cookie, SECOND) is None
    assert RetryCookies().open(("192.0.2.1", 5000), cookie, SECOND) is None
    no_group = RetryState(cipher_suite=0x1302, group=None, client_hello_hash=b"x" * 48)
    assert cookies.open("peer", cookies.make("peer", no_group, 0), 0) == no_group


def test_rotation_keeps_one_previous_secret() -> None:
    cookies = RetryCookies(lifetime_ns=10 * SECOND)
    cookie = cookies.make("peer", STATE, 0)
    assert cookies.open("peer", cookie, 15 * SECOND) == STATE  # rotated once: still valid
    assert cookies.open("peer", cookie, 25 * SECOND) is None  # rotated twice: gone


@given(st.binary(max_size=120))
def test_forged_cookies_never_open(cookie: bytes) -> None:
    assert RetryCookies().open("peer", cookie, 0) is None


def test_a_flipped_bit_breaks_the_mac() -> None:
    cookies = RetryCookies()
    cookie = bytearray(cookies.make("peer", STATE, 0))
    for position in (0, 3, 10, len(cookie) - 1):
        forged = bytearray(cookie)
        forged[position] ^= 0x01
        assert cookies.open("peer", bytes(forged), 0) is None
