"""Identity and ephemeral key pairs."""

from __future__ import annotations

import hashlib

import pytest

from qotp.errors import DecryptError, LocalProtocolError
from qotp.keys import KeyPair, public_key_from_hex

SEED_HEX = "66ff156b54f06b514ab4d679056836c327d31f05a3c053150330f3097fa47385"
PUBLIC_HEX = "abcb28157945aefc8e3fddef3323588f1f742fb277bbbcc72813ecdb3aa8a745"


def test_from_seed_and_hex_agree() -> None:
    assert KeyPair.from_seed(bytes.fromhex(SEED_HEX)).public_hex == PUBLIC_HEX
    assert KeyPair.from_hex(SEED_HEX).public_hex == PUBLIC_HEX
    assert KeyPair.from_hex("0x" + SEED_HEX).public_hex == PUBLIC_HEX
    assert KeyPair.from_hex("0X" + SEED_HEX.upper()).public_hex == PUBLIC_HEX


def test_from_passphrase_is_sha256_seed() -> None:
    pair = KeyPair.from_passphrase("correct horse")
    assert pair.private_bytes == hashlib.sha256(b"correct horse").digest()


def test_generate_is_random() -> None:
    assert KeyPair.generate().public_key != KeyPair.generate().public_key


@pytest.mark.parametrize("text", ["", "zz", "00" * 31, "00" * 33, "0x"])
def test_bad_hex_is_a_local_error(text: str) -> None:
    with pytest.raises(LocalProtocolError):
        KeyPair.from_hex(text)
    with pytest.raises(LocalProtocolError):
        public_key_from_hex(text)


def test_low_order_peer_key_is_a_decrypt_error() -> None:
    with pytest.raises(DecryptError):
        KeyPair.generate().exchange(bytes(32))
    with pytest.raises(DecryptError):
        KeyPair.generate().exchange(bytes(31))
