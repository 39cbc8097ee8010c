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
from enum import Enum

from qotp.protection import Address

__all__ = [
    "ConnectionEstablished",
    "ConnectionTerminated",
    "Event",
    "PeerAddressChanged",
    "StreamClosed",
    "StreamDataAvailable",
    "StreamOpened",
    "StreamSendFinished",
    "StreamWritable",
    "TerminationReason",
]


class TerminationReason(Enum):
    """Why a connection ended; :attr:`ConnectionTerminated.detail` says more, in words.

    Only :attr:`CLOSED` is an ending in which every stream was finished on
    purpose.  After any other reason, a stream the peer had not finished is
    truncated: reading it raises (``qotp.asyncio.ConnectionClosedError``)
    instead of reporting the end of the stream.
    """

    CLOSED = "closed"
    """We closed the connection and every stream finished in both directions."""
    CLOSED_BY_PEER = "closed by peer"
    """The peer ended the association in an orderly way (DTLS close_notify; the
    native QOTP wire has no connection close)."""
    IDLE_TIMEOUT = "idle timeout"
    """Nothing authentic arrived for ``QotpConfiguration.idle_timeout_ns``."""
    RETRY_LIMIT = "retry limit"
    """A packet went unacknowledged through every retransmission: peer or path gone."""
    ABORTED = "aborted"
    """The local application (or the listener closing) ended the connection at once."""
    PROTOCOL_VIOLATION = "protocol violation"
    """The peer contradicted itself (stream data, close offsets) or its crypto failed."""
    HANDSHAKE_FAILED = "handshake failed"
    """The handshake did not complete: no reply, or the peer could not prove its identity."""


@dataclass(frozen=True, slots=True, kw_only=True)
class ConnectionEstablished:
    """The connection exists for the application.

    Initiator: the responder's reply opened.  Responder: the initiator's first
    Data packet proved that it holds its key and receives at its address (with
    ``ZeroRttPolicy.ACCEPT``: its 0-RTT first packet, unproven; see
    ``Connection.early_data``).  Nothing is reported for a first packet alone.
    """

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
class StreamSendFinished:
    """Our direction of the stream is finished: the peer acknowledged its CLOSE and
    every byte before it (or, with a reference peer that removed the stream, we gave
    up waiting for that ACK)."""

    connection_id: int
    stream_id: int


@dataclass(frozen=True, slots=True, kw_only=True)
class StreamClosed:
    """Both directions of the stream are finished and its state was removed."""

    connection_id: int
    stream_id: int


@dataclass(frozen=True, slots=True, kw_only=True)
class PeerAddressChanged:
    """Replies move to a new address of the peer: it sent authentic packets from there
    and proved that it receives there (it answered a probe; see :mod:`qotp.path`)."""

    connection_id: int
    old_address: Address
    new_address: Address


@dataclass(frozen=True, slots=True, kw_only=True)
class ConnectionTerminated:
    """The connection is gone: closed, timed out, failed its handshake, or misbehaved."""

    connection_id: int
    reason: TerminationReason
    detail: str
    """Human-readable specifics (which packet went unanswered, what the peer broke)."""
    error: bool
    """Whether the ending is a failure (retry limit, protocol violation, handshake)."""


Event = (
    ConnectionEstablished
    | StreamOpened
    | StreamDataAvailable
    | StreamWritable
    | StreamSendFinished
    | StreamClosed
    | PeerAddressChanged
    | ConnectionTerminated
)
