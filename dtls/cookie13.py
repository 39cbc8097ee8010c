"""Stateless HelloRetryRequest cookies for DTLS 1.3 (RFC 9147 5.1, RFC 8446 4.2.2).

A DTLS 1.3 server proves that a client can receive at its address before it
keeps any state: it answers the first ClientHello with a HelloRetryRequest
whose cookie carries everything the server needs to continue later, and
forgets the client.  The cookie is::

    version (1) || cipher suite (2) || group (2, 0 = none) ||
    hash of ClientHello1 (32 or 48) || HMAC-SHA256(secret, address || the above) (32)

When the second ClientHello returns the cookie, the server checks the MAC
(binding the client's address), rebuilds the transcript start
``message_hash(Hash(ClientHello1)) || HelloRetryRequest`` from the cookie
alone, and continues with the suite and group it chose.  The secret rotates
every ``COOKIE_SECRET_LIFETIME_NS``; a cookie of the previous secret stays
valid for one more period.  Nothing here depends on per-client state, and
the HelloRetryRequest is smaller than most ClientHellos, so there is no
amplification.
"""

from __future__ import annotations

import hmac as std_hmac
import struct
from dataclasses import dataclass

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives import hmac as crypto_hmac

from .cookie import COOKIE_SECRET_LIFETIME_NS, RotatingSecret

__all__ = ["RetryCookies", "RetryState"]

_VERSION = 1
_HEADER = struct.Struct("!BHH")
_MAC_BYTES = 32


@dataclass(frozen=True, slots=True, kw_only=True)
class RetryState:
    """What a valid cookie tells the server about its own HelloRetryRequest."""

    cipher_suite: int
    group: int | None
    client_hello_hash: bytes


class RetryCookies:
    """Makes and opens HelloRetryRequest cookies with a rotating secret; ``now`` from the caller."""

    __slots__ = ("_secret",)

    def __init__(self, lifetime_ns: int = COOKIE_SECRET_LIFETIME_NS) -> None:
        self._secret = RotatingSecret(lifetime_ns)

    @staticmethod
    def _mac(secret: bytes, address: object, body: bytes) -> bytes:
        mac = crypto_hmac.HMAC(secret, hashes.SHA256())
        mac.update(repr(address).encode())
        mac.update(b"\0")
        mac.update(body)
        return mac.finalize()

    def make(self, address: object, state: RetryState, now: int) -> bytes:
        """The cookie for a HelloRetryRequest to ``address``."""
        current, _ = self._secret.secrets(now)
        body = (
            _HEADER.pack(_VERSION, state.cipher_suite, state.group or 0) + state.client_hello_hash
        )
        return body + self._mac(current, address, body)

    def open(self, address: object, cookie: bytes, now: int) -> RetryState | None:
        """The state in a cookie we made for ``address`` (None: forged, stale, or not ours)."""
        current, previous = self._secret.secrets(now)
        if len(cookie) not in (_HEADER.size + 32 + _MAC_BYTES, _HEADER.size + 48 + _MAC_BYTES):
            return None
        body, mac = cookie[:-_MAC_BYTES], cookie[-_MAC_BYTES:]
        valid = std_hmac.compare_digest(self._mac(current, address, body), mac) or (
            previous is not None
            and std_hmac.compare_digest(self._mac(previous, address, body), mac)
        )
        if not valid:
            return None
        version, suite, group = _HEADER.unpack_from(body)
        if version != _VERSION:
            return None
        return RetryState(
            cipher_suite=suite, group=group or None, client_hello_hash=body[_HEADER.size :]
        )
