"""``qotp keygen``: a fresh X25519 identity, named as ``serve`` and ``send`` take it."""

from __future__ import annotations

import argparse

from qotp.cli.common import Command, Output
from qotp.keys import KeyPair

__all__ = ["COMMAND"]


def _configure(parser: argparse.ArgumentParser) -> None:
    del parser  # no options of its own


def _run(arguments: argparse.Namespace, output: Output) -> int:
    pair = KeyPair.generate()
    seed, public = pair.private_bytes.hex(), pair.public_hex
    output.result(
        {"seed_hex": seed, "pubkey": public},
        f"seed-hex={seed}\npubkey={public}",
    )
    output.note("keep seed-hex secret: `qotp serve --seed-hex HEX`; peers dial with --pubkey HEX")
    return 0


COMMAND = Command(
    name="keygen",
    help="make an identity key pair",
    description="Make a fresh X25519 identity. seed-hex is the private key (`qotp serve "
    "--seed-hex`); pubkey is what 0-RTT clients need (`qotp send --pubkey`).",
    configure=_configure,
    run=_run,
)
