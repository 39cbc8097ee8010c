"""Stateless cookies with a rotating secret."""

from __future__ import annotations

from dataclasses import replace

from dtls.cookie import CookieGenerator
from dtls.handshake import ClientHello

SECOND_NS = 1_000_000_000
HELLO = ClientHello(
    client_version=0xFEFD,
    random=bytes(32),
    session_id=b"",
    cookie=b"",
    cipher_suites=[0xC02B],
    compression_methods=b"\x00",
)


def test_cookie_binds_address_and_hello() -> None:
    cookies = CookieGenerator(lifetime_ns=10 * SECOND_NS)
    cookie = cookies.make(("1.2.3.4", 5), HELLO, 0)
    assert cookies.verify(("1.2.3.4", 5), replace(HELLO, cookie=cookie), 1)
    assert not cookies.verify(("1.2.3.4", 6), replace(HELLO, cookie=cookie), 1)
    other = replace(HELLO, random=b"\x01" * 32, cookie=cookie)
    assert not cookies.verify(("1.2.3.4", 5), other, 1)
    assert not cookies.verify(("1.2.3.4", 5), replace(HELLO, cookie=b"x"), 1)


def test_cookie_survives_one_rotation_not_two() -> None:
    cookies = CookieGenerator(lifetime_ns=10 * SECOND_NS)
    cookie = cookies.make("peer", HELLO, 0)
    hello = replace(HELLO, cookie=cookie)
    assert cookies.verify("peer", hello, 11 * SECOND_NS)
    assert not cookies.verify("peer", hello, 22 * SECOND_NS)
