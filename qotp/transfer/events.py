"""What a transfer reports while it runs (progress) and when it ends (summary).

The library only calls a callback with these frozen events; drawing progress
bars or printing lines is the command line's job, so no display library is
imported here.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from qotp.protection import Address

__all__ = [
    "FileDone",
    "FileProgress",
    "FileStarted",
    "SessionDone",
    "SenderMoved",
    "SessionStarted",
    "TransferEvent",
    "TransferObserver",
    "TransferSummary",
]


@dataclass(frozen=True, slots=True, kw_only=True)
class SessionStarted:
    """A peer's identity was proven and the session admitted."""

    peer_public_key: bytes
    files: int
    total_bytes: int


@dataclass(frozen=True, slots=True, kw_only=True)
class FileStarted:
    """A file's bytes start to move; ``offset`` bytes were already at the receiver."""

    path: str
    size: int
    offset: int


@dataclass(frozen=True, slots=True, kw_only=True)
class FileProgress:
    """``position`` of ``size`` bytes of a file are through (sent or written)."""

    path: str
    position: int
    size: int


@dataclass(frozen=True, slots=True, kw_only=True)
class FileDone:
    """A file ended: verified and in place (``ok``) or failed (``error``)."""

    path: str
    size: int
    bytes_sent: int
    bytes_skipped: int
    sha256: bytes | None
    ok: bool
    error: str | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class SessionDone:
    """A receiver's session with one sender ended (its control stream finished or broke)."""

    peer_public_key: bytes
    files_ok: int
    files_failed: int
    bytes_received: int
    bytes_skipped: int


@dataclass(frozen=True, slots=True, kw_only=True)
class SenderMoved:
    """A sender's packets come from a new address, which proved it receives (roaming, NAT)."""

    peer_public_key: bytes | None
    old_address: Address
    new_address: Address


TransferEvent = SessionStarted | FileStarted | FileProgress | FileDone | SessionDone | SenderMoved
TransferObserver = Callable[[TransferEvent], None]


@dataclass(frozen=True, slots=True, kw_only=True)
class TransferSummary:
    """What ``send-files`` reports (the fields of its ``--json`` object)."""

    ok: bool
    files: int
    files_failed: int
    bytes_sent: int
    bytes_skipped: int
    elapsed_s: float
    errors: tuple[str, ...] = ()

    @property
    def mb_s(self) -> float:
        """Bytes that moved, in megabytes (10^6) per second."""
        return self.bytes_sent / self.elapsed_s / 1e6 if self.elapsed_s > 0 else 0.0
