"""Registration with a rendezvous: return-routability cookies and proof of key possession.

Pure functions.  A peer registers in two steps: its first REGISTER is
answered by a CHALLENGE carrying a cookie (an HMAC of the address it came
from, its key and the current minute, under the server's secret: the server
keeps no state for it), and the peer repeats REGISTER with that cookie and a
proof, an HMAC under the static-static X25519 secret of its key and the
server's.  The cookie shows that the peer receives at that address (nobody
can register a victim's address by spoofing); the proof, that it holds the
private key of the key it registers (nobody can squat a peer's key).  Keep-
alives repeat the same REGISTER until the cookie's minute passes.
"""

from __future__ import annotations

import hmac
from hashlib import sha256

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from qotp.errors import DecryptError
from qotp.keys import KeyPair
from qotp.protection import Address
from qotp.rendezvous.messages import COOKIE_BYTES

__all__ = [
    "COOKIE_PERIOD_NS",
    "make_cookie",
    "prove_registration",
    "registration_cookies",
    "verify_registration",
]

COOKIE_PERIOD_NS = 60_000_000_000
"""A cookie is valid in the minute it was made and the next."""
_INFO = b"qotp rendezvous registration v1"


def make_cookie(secret: bytes, address: Address, public_key: bytes, period: int) -> bytes:
    """The cookie for this address and key in this period."""
    message = f"{address[0]}|{address[1]}|{period}|".encode() + public_key
    return hmac.new(secret, message, sha256).digest()[:COOKIE_BYTES]


def registration_cookies(
    secret: bytes, address: Address, public_key: bytes, now: int
) -> tuple[bytes, bytes]:
    """The current cookie and the previous period's, both accepted."""
    period = now // COOKIE_PERIOD_NS
    return (
        make_cookie(secret, address, public_key, period),
        make_cookie(secret, address, public_key, period - 1),
    )


def _proof(shared: bytes, cookie: bytes, name: str, server_key: bytes, peer_key: bytes) -> bytes:
    key = HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=_INFO).derive(shared)
    message = b"register|" + cookie + server_key + peer_key + name.encode("utf-8")
    return hmac.new(key, message, sha256).digest()


def prove_registration(identity: KeyPair, server_key: bytes, cookie: bytes, name: str) -> bytes:
    """The peer's proof for a REGISTER (raises DecryptError for a bad server key)."""
    shared = identity.exchange(server_key)
    return _proof(shared, cookie, name, server_key, identity.public_key)


def verify_registration(
    server: KeyPair, peer_key: bytes, cookie: bytes, name: str, proof: bytes
) -> bool:
    """Whether the proof shows the peer holds ``peer_key``'s private key."""
    try:
        shared = server.exchange(peer_key)
    except DecryptError:
        return False
    expected = _proof(shared, cookie, name, server.public_key, peer_key)
    return hmac.compare_digest(expected, proof)
