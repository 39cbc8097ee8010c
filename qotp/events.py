"""Events a QOTP connection or endpoint reports to its user.

Every event names its connection by ``connection_id`` so that an endpoint
can hand out one queue for all its connections.  Data is *not* pushed in
events: :class:`StreamDataAvailable` says there is something to read, and
the bytes stay in the receive buffer (and count against the advertised
window) until the application reads them.  That is what makes flow control
real.
"""

from __future__ import annotations

from dataclasses import dataclass

from qotp.protection import Address

__all__ = [
    "ConnectionEstablished",
    "ConnectionTerminated",
    "Event",
    "PeerAddressChanged",
    "StreamClosed",
    "StreamDataAvailable",
    "StreamOpened",
    "StreamWritable",
]


@dataclass(frozen=True, slots=True, kw_only=True)
class ConnectionEstablished:
    """The handshake completed (initiator: reply received; responder: first packet accepted)."""

    connection_id: int
    address: Address
    is_initiator: bool
    peer_public_key: bytes | None


@dataclass(frozen=True, slots=True, kw_only=True)
class StreamOpened:
    """The peer sent the first data or CLOSE on a stream we had not used yet."""

    connection_id: int
    stream_id: int


@dataclass(frozen=True, slots=True, kw_only=True)
class StreamDataAvailable:
    """New bytes (or the end of the stream) can be read from the stream."""

    connection_id: int
    stream_id: int


@dataclass(frozen=True, slots=True, kw_only=True)
class StreamWritable:
    """Send-buffer space was freed (by ACKs); writers blocked in drain() may go on."""

    connection_id: int


@dataclass(frozen=True, slots=True, kw_only=True)
class StreamClosed:
    """Both directions of the stream are finished and its state was removed."""

    connection_id: int
    stream_id: int


@dataclass(frozen=True, slots=True, kw_only=True)
class PeerAddressChanged:
    """An authenticated packet came from a new address; replies now go there."""

    connection_id: int
    old_address: Address
    new_address: Address


@dataclass(frozen=True, slots=True, kw_only=True)
class ConnectionTerminated:
    """The connection is gone: closed, timed out, failed its handshake, or misbehaved."""

    connection_id: int
    reason: str
    error: bool


Event = (
    ConnectionEstablished
    | StreamOpened
    | StreamDataAvailable
    | StreamWritable
    | StreamClosed
    | PeerAddressChanged
    | ConnectionTerminated
)
