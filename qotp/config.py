"""Tunables of a QOTP endpoint, in one frozen dataclass."""

from __future__ import annotations

from dataclasses import dataclass

from qotp.envelope import DEFAULT_MTU

__all__ = ["QotpConfiguration"]

MIB = 1024 * 1024


@dataclass(frozen=True, slots=True, kw_only=True)
class QotpConfiguration:
    """Everything a user may want to change, with the reference's defaults."""

    mtu: int = DEFAULT_MTU
    """Largest datagram we send; InitSnd / InitCryptoSnd are padded to it, and
    first packets shorter than it are refused (Go: 1400)."""
    send_buffer_bytes: int = 16 * MIB
    """Queued plus unacknowledged bytes per connection (Go: sndBufferCapacity)."""
    receive_buffer_bytes: int = 16 * MIB
    """Buffered received bytes per connection; free space is advertised (Go: rcvBufferCapacity)."""
    idle_timeout_ns: int = 30_000_000_000
    """A connection that hears nothing for this long ends (Go: ReadDeadLine, 30 s)."""
    congestion_control: str = "bbr"
    """``"bbr"`` (default) or ``"newreno"``."""
    max_datagrams_per_call: int = 64
    """Upper bound on datagrams one ``datagrams_to_send`` call returns per connection."""
    max_connections: int = 100_000
    """Connections one endpoint keeps at most; first packets beyond are dropped."""

    def __post_init__(self) -> None:
        if not 128 <= self.mtu <= 65_507:
            raise ValueError(f"mtu {self.mtu} out of range 128..65507")
        if self.send_buffer_bytes <= 0 or self.receive_buffer_bytes <= 0:
            raise ValueError("buffer sizes must be positive")
        if self.idle_timeout_ns <= 0:
            raise ValueError("idle_timeout_ns must be positive")
        if self.congestion_control not in ("bbr", "newreno"):
            raise ValueError(f"unknown congestion control {self.congestion_control!r}")
