"""X25519 key pairs: identity keys (long-lived) and ephemeral keys (one per connection).

Go: listener.go options ``WithSeed``, ``WithSeedStrHex``, ``WithSeedStr`` and
``WithPrvKeyId``.  A seed *is* the X25519 private key (clamping happens inside
X25519); a passphrase becomes a seed through SHA-256 of its UTF-8 bytes.
"""

from __future__ import annotations

import hashlib
import os

from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from nacl.bindings import crypto_scalarmult, crypto_scalarmult_base
from nacl.exceptions import RuntimeError as NaclRuntimeError

from qotp.errors import DecryptError, LocalProtocolError

__all__ = ["KEY_SIZE", "KeyPair", "public_key_from_hex", "x25519", "x25519_public_key"]

KEY_SIZE = 32


class KeyPair:
    """An X25519 private key with its public key precomputed.

    The private bytes are kept because the key log and tests need them; the
    ``cryptography`` key object is kept so exchanges do not re-parse it.
    """

    __slots__ = ("_private_key", "private_bytes", "public_key")

    def __init__(self, private_bytes: bytes) -> None:
        if len(private_bytes) != KEY_SIZE:
            raise LocalProtocolError(
                f"an X25519 private key is {KEY_SIZE} bytes, got {len(private_bytes)}"
            )
        self.private_bytes = bytes(private_bytes)
        self._private_key = X25519PrivateKey.from_private_bytes(self.private_bytes)
        self.public_key = self._private_key.public_key().public_bytes(
            Encoding.Raw, PublicFormat.Raw
        )

    @classmethod
    def generate(cls) -> KeyPair:
        """A fresh random key pair (from the operating system's CSPRNG)."""
        return cls(os.urandom(KEY_SIZE))

    @classmethod
    def from_seed(cls, seed: bytes) -> KeyPair:
        """The key pair whose private key is exactly these 32 bytes."""
        return cls(seed)

    @classmethod
    def from_hex(cls, text: str) -> KeyPair:
        """The key pair from 64 hex digits, with or without a ``0x`` prefix."""
        return cls(_decode_hex_key(text))

    @classmethod
    def from_passphrase(cls, passphrase: str) -> KeyPair:
        """The key pair whose private key is SHA-256 of the passphrase (UTF-8)."""
        return cls(hashlib.sha256(passphrase.encode("utf-8")).digest())

    @property
    def public_hex(self) -> str:
        """The public key as 64 lowercase hex digits."""
        return self.public_key.hex()

    def exchange(self, peer_public_key: bytes) -> bytes:
        """Raw X25519 with the peer's public key: the 32-byte packet key, no KDF.

        A peer key of the wrong size or of low order (all-zero result) raises
        :class:`DecryptError`, since it comes from the network.
        """
        if len(peer_public_key) != KEY_SIZE:
            raise DecryptError(f"peer public key must be {KEY_SIZE} bytes")
        try:
            return self._private_key.exchange(
                X25519PublicKey.from_public_bytes(bytes(peer_public_key))
            )
        except ValueError as error:  # low-order point: the shared secret would be all zeros
            raise DecryptError("peer public key gives an all-zero X25519 result") from error

    def __repr__(self) -> str:
        return f"KeyPair(public={self.public_hex})"


def _decode_hex_key(text: str) -> bytes:
    cleaned = text.strip()
    if cleaned[:2].lower() == "0x":
        cleaned = cleaned[2:]
    try:
        raw = bytes.fromhex(cleaned)
    except ValueError as error:
        raise LocalProtocolError(f"not a hex key: {text!r}") from error
    if len(raw) != KEY_SIZE:
        raise LocalProtocolError(
            f"a key is {KEY_SIZE} bytes ({2 * KEY_SIZE} hex digits), got {len(raw)}"
        )
    return raw


def public_key_from_hex(text: str) -> bytes:
    """A peer's 32-byte public key from hex (``0x`` prefix allowed)."""
    return _decode_hex_key(text)


def x25519_public_key(private_bytes: bytes) -> bytes:
    """The X25519 public key of 32 private bytes (libsodium: about half the cost of
    building a :class:`KeyPair`, for the responder's per-handshake key)."""
    return bytes(crypto_scalarmult_base(private_bytes))


def x25519(private_bytes: bytes, peer_public_key: bytes) -> bytes:
    """Raw X25519 of a private key with a peer's public key (no key object is built).

    A peer key of the wrong size or of low order (all-zero result) raises
    :class:`DecryptError`, since it comes from the network.
    """
    if len(peer_public_key) != KEY_SIZE:
        raise DecryptError(f"peer public key must be {KEY_SIZE} bytes")
    try:
        return bytes(crypto_scalarmult(private_bytes, bytes(peer_public_key)))
    except NaclRuntimeError as error:  # libsodium refuses an all-zero result
        raise DecryptError("peer public key gives an all-zero X25519 result") from error
