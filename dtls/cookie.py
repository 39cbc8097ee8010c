"""Stateless HelloVerifyRequest cookies (RFC 6347 4.2.1).

The cookie is an HMAC-SHA256, under a server secret, of the client's address
and of the ClientHello fields RFC 6347 4.2.1 requires to stay the same that
sit before the cookie: version, random and session_id.  Nothing is stored per
client: a ClientHello with a cookie we can recompute proves the client can
receive at its claimed address.

Binding the whole hello (as we once did) broke clients that legitimately
reorder their extensions in the second hello (wolfSSL with ``-v d``), and
cipher_suites may lie beyond the first fragment of a fragmented hello, where a
stateless server cannot see them.  The handshake's Finished protects the
hello the connection actually used.  The secret rotates every
``COOKIE_SECRET_LIFETIME_NS``; cookies made with the previous secret stay valid
for one more period so a rotation does not fail handshakes in flight.
"""

from __future__ import annotations

import hmac as std_hmac
import os
from typing import Protocol

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives import hmac as crypto_hmac

__all__ = [
    "COOKIE_BYTES",
    "COOKIE_SECRET_LIFETIME_NS",
    "CookieGenerator",
    "HelloParameters",
    "RotatingSecret",
]

COOKIE_BYTES = 32
COOKIE_SECRET_LIFETIME_NS = 300 * 1_000_000_000


class HelloParameters(Protocol):
    """What a cookie binds: a ClientHello, or the prefix of one (its first fragment)."""

    @property
    def client_version(self) -> int: ...

    @property
    def random(self) -> bytes: ...

    @property
    def session_id(self) -> bytes: ...

    @property
    def cookie(self) -> bytes: ...


class RotatingSecret:
    """A server secret that changes every ``lifetime_ns``; the previous one stays valid
    for one more period, so a rotation does not fail exchanges in flight."""

    __slots__ = ("_lifetime_ns", "_rotated_at", "current", "previous")

    def __init__(self, lifetime_ns: int = COOKIE_SECRET_LIFETIME_NS) -> None:
        self._lifetime_ns = lifetime_ns
        self.current = os.urandom(32)
        self.previous: bytes | None = None
        self._rotated_at: int | None = None

    def secrets(self, now: int) -> tuple[bytes, bytes | None]:
        """(current, previous or None) at ``now``, rotating first when it is time."""
        if self._rotated_at is None:
            self._rotated_at = now
        elif now - self._rotated_at >= self._lifetime_ns:
            expired_twice = now - self._rotated_at >= 2 * self._lifetime_ns
            self.previous = None if expired_twice else self.current
            self.current = os.urandom(32)
            self._rotated_at = now
        return self.current, self.previous


class CookieGenerator:
    """Makes and checks cookies with a rotating secret; ``now`` comes from the caller."""

    __slots__ = ("_secret",)

    def __init__(self, lifetime_ns: int = COOKIE_SECRET_LIFETIME_NS) -> None:
        self._secret = RotatingSecret(lifetime_ns)

    @staticmethod
    def _compute(secret: bytes, address: object, hello: HelloParameters) -> bytes:
        mac = crypto_hmac.HMAC(secret, hashes.SHA256())
        mac.update(repr(address).encode())
        mac.update(b"\0")
        mac.update(hello.client_version.to_bytes(2, "big"))
        mac.update(hello.random)
        mac.update(bytes((len(hello.session_id),)) + hello.session_id)
        return mac.finalize()

    def make(self, address: object, hello: HelloParameters, now: int) -> bytes:
        """Cookie for this client's address and hello."""
        current, _ = self._secret.secrets(now)
        return self._compute(current, address, hello)

    def verify(self, address: object, hello: HelloParameters, now: int) -> bool:
        """Whether ``hello.cookie`` is one we made (this or the previous secret)."""
        current, previous = self._secret.secrets(now)
        if len(hello.cookie) != COOKIE_BYTES:
            return False
        if std_hmac.compare_digest(self._compute(current, address, hello), hello.cookie):
            return True
        return previous is not None and std_hmac.compare_digest(
            self._compute(previous, address, hello), hello.cookie
        )
