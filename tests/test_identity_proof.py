"""Identity proofs: only the holders of both private keys can make them."""

from __future__ import annotations

from qotp.identity_proof import new_nonce, prove, verify
from qotp.keys import KeyPair


def test_each_side_verifies_the_other() -> None:
    initiator, responder = KeyPair.generate(), KeyPair.generate()
    nonces = {"initiator_nonce": new_nonce(), "responder_nonce": new_nonce()}
    by_initiator = prove(initiator, responder.public_key, as_initiator=True, **nonces)
    by_responder = prove(responder, initiator.public_key, as_initiator=False, **nonces)
    assert verify(responder, initiator.public_key, by_initiator, peer_is_initiator=True, **nonces)
    assert verify(initiator, responder.public_key, by_responder, peer_is_initiator=False, **nonces)
    # A proof cannot be reflected to its maker as the other role's.
    assert not verify(
        initiator, responder.public_key, by_initiator, peer_is_initiator=False, **nonces
    )


def test_a_claimed_key_without_its_private_half_fails() -> None:
    victim, impostor, responder = KeyPair.generate(), KeyPair.generate(), KeyPair.generate()
    nonces = {"initiator_nonce": new_nonce(), "responder_nonce": new_nonce()}
    forged = prove(impostor, responder.public_key, as_initiator=True, **nonces)
    assert not verify(responder, victim.public_key, forged, peer_is_initiator=True, **nonces)


def test_fresh_nonces_make_old_proofs_useless() -> None:
    initiator, responder = KeyPair.generate(), KeyPair.generate()
    first = {"initiator_nonce": new_nonce(), "responder_nonce": new_nonce()}
    proof = prove(initiator, responder.public_key, as_initiator=True, **first)
    second = {"initiator_nonce": first["initiator_nonce"], "responder_nonce": new_nonce()}
    assert not verify(responder, initiator.public_key, proof, peer_is_initiator=True, **second)


def test_malformed_inputs_do_not_raise() -> None:
    responder = KeyPair.generate()
    nonces = {"initiator_nonce": new_nonce(), "responder_nonce": b"short"}
    assert not verify(responder, bytes(32), bytes(32), peer_is_initiator=True, **nonces)
    assert not verify(responder, b"\x01", bytes(32), peer_is_initiator=True, **nonces)
