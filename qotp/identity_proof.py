"""Proof that each end of a connection holds the identity key it claims.

QOTP's handshake (Go v0.2.19, kept for wire compatibility) authenticates the
*responder* only when the initiator dials 0-RTT to its known key: the data
keys come from the two ephemeral keys, and the initiator's identity key is
merely sent along.  Anyone may claim anyone's identity key as initiator.  The
uses that decide on a peer's identity (a receiver that admits only some
senders, a peer that expects a named peer) run this small exchange on their
first stream before they trust ``peer_public_key``:

1. each side sends a fresh 16-byte nonce;
2. each side sends ``HMAC-SHA256(K, label || nonce_initiator || nonce_responder
   || key_initiator || key_responder)``, where ``K`` is HKDF-SHA256 of the
   static-static X25519 result of the two identity keys and ``label`` says
   which role made the proof.

Only holders of the two private keys can compute ``K``; the nonces make each
proof single-use, and the roles keep a proof from being reflected.  The
functions are pure: no sockets, no clock.
"""

from __future__ import annotations

import hmac
import os
from hashlib import sha256

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from qotp.errors import DecryptError
from qotp.keys import KEY_SIZE, KeyPair

__all__ = ["NONCE_BYTES", "PROOF_BYTES", "new_nonce", "prove", "verify"]

NONCE_BYTES = 16
PROOF_BYTES = 32
_HKDF_INFO = b"qotp identity proof v1"
_LABELS = {True: b"initiator proof", False: b"responder proof"}


def new_nonce() -> bytes:
    """A fresh random nonce for one exchange."""
    return os.urandom(NONCE_BYTES)


def _proof(
    identity: KeyPair,
    peer_public_key: bytes,
    *,
    by_initiator: bool,
    initiator_nonce: bytes,
    responder_nonce: bytes,
    initiator_key: bytes,
    responder_key: bytes,
) -> bytes:
    if len(initiator_nonce) != NONCE_BYTES or len(responder_nonce) != NONCE_BYTES:
        raise DecryptError("proof nonces must be 16 bytes")
    if len(initiator_key) != KEY_SIZE or len(responder_key) != KEY_SIZE:
        raise DecryptError("identity keys must be 32 bytes")
    shared = identity.exchange(peer_public_key)
    key = HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=_HKDF_INFO).derive(shared)
    message = (
        _LABELS[by_initiator] + initiator_nonce + responder_nonce + initiator_key + responder_key
    )
    return hmac.new(key, message, sha256).digest()


def prove(
    identity: KeyPair,
    peer_public_key: bytes,
    *,
    as_initiator: bool,
    initiator_nonce: bytes,
    responder_nonce: bytes,
) -> bytes:
    """Our proof for this exchange (``as_initiator``: we sent the first nonce).

    Raises :class:`DecryptError` for a malformed or low-order peer key.
    """
    ours, theirs = identity.public_key, peer_public_key
    initiator_key, responder_key = (ours, theirs) if as_initiator else (theirs, ours)
    return _proof(
        identity,
        peer_public_key,
        by_initiator=as_initiator,
        initiator_nonce=initiator_nonce,
        responder_nonce=responder_nonce,
        initiator_key=initiator_key,
        responder_key=responder_key,
    )


def verify(
    identity: KeyPair,
    peer_public_key: bytes,
    proof: bytes,
    *,
    peer_is_initiator: bool,
    initiator_nonce: bytes,
    responder_nonce: bytes,
) -> bool:
    """Whether ``proof`` shows that the peer holds the private key of ``peer_public_key``."""
    ours, theirs = identity.public_key, peer_public_key
    initiator_key, responder_key = (theirs, ours) if peer_is_initiator else (ours, theirs)
    try:
        expected = _proof(
            identity,
            peer_public_key,
            by_initiator=peer_is_initiator,
            initiator_nonce=initiator_nonce,
            responder_nonce=responder_nonce,
            initiator_key=initiator_key,
            responder_key=responder_key,
        )
    except DecryptError:
        return False
    return hmac.compare_digest(expected, proof)
