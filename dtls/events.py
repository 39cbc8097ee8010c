"""Events a connection or endpoint reports through ``next_event()``.

Every event carries ``peer``: the number of the connection it concerns (see
``DTLSConnection.peer_id``), so an endpoint serving many peers can route it.
"""

from __future__ import annotations

from collections.abc import Hashable
from dataclasses import dataclass

from .config import DTLSVersion
from .errors import AlertDescription

__all__ = [
    "ApplicationDataReceived",
    "ConnectionAccepted",
    "ConnectionTerminated",
    "Event",
    "HandshakeCompleted",
    "HandshakeFailed",
    "PeerClosedWrite",
]


@dataclass(frozen=True, slots=True, kw_only=True)
class HandshakeCompleted:
    """The handshake finished; application data may flow both ways."""

    peer: int
    cipher_suite: str
    alpn_protocol: str | None
    session_resumed: bool
    version: DTLSVersion = DTLSVersion.DTLS_1_2


@dataclass(frozen=True, slots=True, kw_only=True)
class ApplicationDataReceived:
    """The peer's application-data queue went from empty to non-empty.

    The data itself stays in the connection's bounded queue (256 datagrams);
    read it with ``receive()``.  Emitted once per empty -> non-empty change so
    an adapter can wake a reader without copying data into the event stream.
    """

    peer: int


@dataclass(frozen=True, slots=True, kw_only=True)
class PeerClosedWrite:
    """The peer sent close_notify: no more data will arrive from it."""

    peer: int


@dataclass(frozen=True, slots=True, kw_only=True)
class ConnectionTerminated:
    """The connection is over (handshake failure, fatal alert, timeout or close)."""

    peer: int
    reason: str
    alert: AlertDescription | None = None
    alert_received: bool = False


@dataclass(frozen=True, slots=True, kw_only=True)
class ConnectionAccepted:
    """An endpoint completed a server-side handshake with a new peer."""

    peer: int


@dataclass(frozen=True, slots=True, kw_only=True)
class HandshakeFailed:
    """An endpoint's server-side handshake with a peer ended before it completed.

    The counterpart of :class:`ConnectionAccepted`, reported after that connection's
    own ``ConnectionTerminated`` (whose fields it repeats) and carrying the peer's
    address, which is gone from the endpoint by then: a server can log who failed
    and why (a wrong PSK, a client refusing our certificate, a timeout).  Only
    peers that passed the cookie exchange get this far.
    """

    peer: int
    address: Hashable
    reason: str
    alert: AlertDescription | None = None
    alert_received: bool = False


Event = (
    HandshakeCompleted
    | ApplicationDataReceived
    | PeerClosedWrite
    | ConnectionTerminated
    | ConnectionAccepted
    | HandshakeFailed
)
