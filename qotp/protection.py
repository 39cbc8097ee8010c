"""The crypto seam between the QOTP transport and whatever protects its packets.

The transport (streams, ACKs, congestion and flow control, close) never looks
past this interface.  Two implementations exist or are planned: QOTP's native
envelope (:mod:`qotp.native`, wire-compatible with the Go reference) and DTLS
record protection.  The seam is structural (:class:`typing.Protocol`), so a
DTLS package can implement it without importing :mod:`qotp`.

Two roles:

* :class:`Protection` -- one per connection.  It owns the handshake and the
  per-packet envelope: it says whether a transport payload can be carried yet,
  how many payload bytes fit in the next datagram, seals a payload into a
  datagram, opens a datagram back into a payload, and emits its own handshake
  datagrams on its own timer.
* :class:`CryptoLayer` -- one per endpoint (socket).  It routes an incoming
  datagram to a connection key, creates the responder-side protection for a
  valid first packet, and creates initiator-side protections for dials.
"""

from __future__ import annotations

from collections.abc import Hashable
from typing import Protocol

__all__ = ["Address", "CryptoLayer", "Protection", "RouteKey"]

Address = tuple[str, int]
"""A UDP address as the socket layer reports it: (host, port)."""

RouteKey = Hashable
"""What the endpoint indexes connections by (QOTP: the u64 connection id)."""


class Protection(Protocol):
    """Per-connection crypto state as the transport sees it."""

    @property
    def route_key(self) -> RouteKey:
        """The key the endpoint finds this connection under."""
        ...

    @property
    def handshake_complete(self) -> bool:
        """True once both sides are known to hold the final keys.

        Until then the transport keeps at most one packet of new data in
        flight, as the reference does.
        """
        ...

    @property
    def can_carry_payload(self) -> bool:
        """Whether :meth:`seal` can be called now (QOTP's InitSnd cannot carry one)."""
        ...

    @property
    def failure(self) -> str | None:
        """Why the handshake failed for good (the connection must end), else None."""
        ...

    def payload_budget(self, mtu: int) -> int:
        """Transport payload bytes that fit in the next sealed datagram of ``mtu`` bytes."""
        ...

    def seal(self, payload: bytes, now: int) -> bytes:
        """Protect one encoded transport payload; returns the datagram."""
        ...

    def open(self, datagram: bytes, now: int) -> bytes | None:
        """Authenticate and decrypt a datagram routed to this connection.

        Returns the transport payload, or None when the datagram was only for
        the handshake.  Raises :class:`qotp.errors.DecodeError` or
        :class:`qotp.errors.DecryptError` for anything unacceptable.
        """
        ...

    def datagrams_to_send(self, now: int) -> list[bytes]:
        """Handshake datagrams the protection itself wants sent (e.g. InitSnd)."""
        ...

    def get_timer(self) -> int | None:
        """Absolute deadline (ns) of the protection's own retransmission timer."""
        ...

    def handle_timer(self, now: int) -> None:
        """The deadline from :meth:`get_timer` passed."""
        ...

    def key_log_lines(self) -> list[str]:
        """Key-log lines that became available since the last call (may be empty)."""
        ...


class CryptoLayer(Protocol):
    """Per-endpoint crypto: routing, accepting, dialing."""

    def route(self, datagram: bytes) -> RouteKey:
        """The connection key of a datagram; raises ``DecodeError`` if it has none."""
        ...

    def accept(self, datagram: bytes, now: int) -> Protection | None:
        """A responder-side protection for a datagram with an unknown route key.

        Returns None when the datagram cannot start a connection (it is then
        dropped); raises ``DecodeError``/``DecryptError`` for bad bytes.
        """
        ...
