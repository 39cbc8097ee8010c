"""QOTP, the Quite OK Transport Protocol, wire-compatible with the Go reference v0.2.19."""

from __future__ import annotations

from qotp.errors import (
    DecodeError,
    DecryptError,
    LocalProtocolError,
    QotpError,
    RemoteProtocolError,
    SequenceSpaceExhausted,
)

__all__ = [
    "DecodeError",
    "DecryptError",
    "LocalProtocolError",
    "QotpError",
    "RemoteProtocolError",
    "SequenceSpaceExhausted",
]
