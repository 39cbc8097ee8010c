"""Stateless cookies with a rotating secret."""

from __future__ import annotations

from dataclasses import replace

from dtls.cookie import CookieGenerator
from dtls.handshake import ClientHello, ClientHelloPrefix

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


def test_cookie_binds_what_rfc_6347_keeps_the_same_and_nothing_else() -> None:
    cookies = CookieGenerator()
    cookie = cookies.make("peer", HELLO, 0)
    # Extension order and suites may differ in the second hello (wolfSSL -v d reorders).
    second = replace(
        HELLO,
        cookie=cookie,
        cipher_suites=[0xC02F, 0xC02B],
        extensions=[(10, b"\x00\x02\x00\x1d"), (23, b"")],
    )
    assert cookies.verify("peer", second, 1)
    prefix = ClientHelloPrefix(
        client_version=HELLO.client_version, random=HELLO.random, session_id=b"", cookie=cookie
    )
    assert cookies.verify("peer", prefix, 1)  # the first fragment is enough
    for changed in (
        replace(second, client_version=0xFEFF),
        replace(second, session_id=b"\x01"),
        replace(second, random=b"\x02" * 32),
    ):
        assert not cookies.verify("peer", changed, 1)


def test_cookie_survives_one_rotation_not_two() -> None:
    cookies = CookieGenerator(lifetime_ns=10 * SECOND_NS)
    cookie = cookies.make("peer", HELLO, 0)
    hello = replace(HELLO, cookie=cookie)
    assert cookies.verify("peer", hello, 11 * SECOND_NS)
    assert not cookies.verify("peer", hello, 22 * SECOND_NS)
