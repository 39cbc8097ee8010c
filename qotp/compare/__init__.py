"""Comparing transports under impairment: the impairment model and the relays that apply it.

``qotp.compare.impairment`` decides what a lossy, slow or reordering network
does to each datagram (pure, seeded, explicit ``now``); ``qotp.compare.relay``
applies it to live UDP traffic between a client and a server.
"""

from __future__ import annotations

from qotp.compare.impairment import (
    Direction,
    DropReason,
    ImpairedPath,
    Impairment,
    PathImpairment,
    Verdict,
)

__all__ = [
    "Direction",
    "DropReason",
    "ImpairedPath",
    "Impairment",
    "PathImpairment",
    "Verdict",
]
