"""Stateless HelloVerifyRequest cookies (RFC 6347 4.2.1).

The cookie is an HMAC-SHA256, under a server secret, of the client's address
and of its ClientHello with the cookie field emptied.  Nothing is stored per
client: a ClientHello with a cookie we can recompute proves the client can
receive at its claimed address.  The secret rotates every
``COOKIE_SECRET_LIFETIME_NS``; cookies made with the previous secret stay valid
for one more period so a rotation does not fail handshakes in flight.
"""

from __future__ import annotations

import hmac as std_hmac
import os
from dataclasses import replace

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives import hmac as crypto_hmac

from .handshake import ClientHello, encode_client_hello

__all__ = ["COOKIE_BYTES", "COOKIE_SECRET_LIFETIME_NS", "CookieGenerator"]

COOKIE_BYTES = 32
COOKIE_SECRET_LIFETIME_NS = 300 * 1_000_000_000


class CookieGenerator:
    """Makes and checks cookies with a rotating secret; ``now`` comes from the caller."""

    __slots__ = ("_current", "_lifetime_ns", "_previous", "_rotated_at")

    def __init__(self, lifetime_ns: int = COOKIE_SECRET_LIFETIME_NS) -> None:
        self._lifetime_ns = lifetime_ns
        self._current = os.urandom(32)
        self._previous: bytes | None = None
        self._rotated_at: int | None = None

    def _rotate(self, now: int) -> None:
        if self._rotated_at is None:
            self._rotated_at = now
        elif now - self._rotated_at >= self._lifetime_ns:
            expired_twice = now - self._rotated_at >= 2 * self._lifetime_ns
            self._previous = None if expired_twice else self._current
            self._current = os.urandom(32)
            self._rotated_at = now

    @staticmethod
    def _compute(secret: bytes, address: object, hello: ClientHello) -> bytes:
        mac = crypto_hmac.HMAC(secret, hashes.SHA256())
        mac.update(repr(address).encode())
        mac.update(b"\0")
        mac.update(encode_client_hello(replace(hello, cookie=b"")))
        return mac.finalize()

    def make(self, address: object, hello: ClientHello, now: int) -> bytes:
        """Cookie for this client's address and hello."""
        self._rotate(now)
        return self._compute(self._current, address, hello)

    def verify(self, address: object, hello: ClientHello, now: int) -> bool:
        """Whether ``hello.cookie`` is one we made (this or the previous secret)."""
        self._rotate(now)
        if len(hello.cookie) != COOKIE_BYTES:
            return False
        if std_hmac.compare_digest(self._compute(self._current, address, hello), hello.cookie):
            return True
        return self._previous is not None and std_hmac.compare_digest(
            self._compute(self._previous, address, hello), hello.cookie
        )
