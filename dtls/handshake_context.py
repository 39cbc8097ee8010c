"""What every handshake (DTLS 1.2 today, 1.3 next) gets from its connection, and owes it.

A handshake never touches sockets, events or timers of its own: the facade in
``connection.py`` hands it a :class:`HandshakeContext` (the record layer for
keys and connection ids, the flights for sending, the list datagrams go to,
the live :class:`~dtls.info.Negotiated` record) and drives it through the
:class:`Handshake` protocol.  Errors leave a handshake only as
:class:`~dtls.errors.AlertError` or :class:`~dtls.errors.DecodeError`; the
facade turns them into an alert and a ``ConnectionTerminated`` event.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from .config import DTLSConfiguration
from .cookie import CookieGenerator
from .cookie13 import RetryCookies
from .flights import Flights
from .handshake import HandshakeFragment
from .info import Negotiated
from .reassembly import HandshakeMessage
from .record_layer import RecordLayer
from .sessions import SessionCache, TicketKeys
from .sessions13 import EarlyDataGuard, TicketStore

__all__ = ["Handshake", "HandshakeContext", "ServerContext"]


class ServerContext:
    """State a server shares across its connections: cookies, session cache, ticket key."""

    def __init__(self) -> None:
        self.cookies = CookieGenerator()
        self.session_cache = SessionCache()
        self.ticket_keys = TicketKeys()
        # DTLS 1.3: stateless HelloRetryRequest cookies, tickets, the early-data replay guard.
        self.retry_cookies = RetryCookies()
        self.tickets13 = TicketStore()
        self.early_data_guard = EarlyDataGuard()


@dataclass(slots=True, kw_only=True)
class HandshakeContext:
    """The parts of a connection a handshake works with (``address`` follows the peer)."""

    configuration: DTLSConfiguration
    negotiated: Negotiated
    records: RecordLayer
    flights: Flights
    outgoing: list[bytes]  # datagrams sent outside any flight (HelloVerifyRequest)
    server_context: ServerContext
    address: object  # the peer's address as the connection knows it (cookies bind it)


class Handshake(Protocol):
    """The surface the connection facade drives; one object per connection and version."""

    @property
    def established(self) -> bool:
        """Whether the handshake completed."""
        ...

    @property
    def waiting_for_first_hello(self) -> bool:
        """Server: no ClientHello taken yet (its message_seq may restart the numbering)."""
        ...

    @property
    def state_name(self) -> str:
        """The state machine's current state, for logs and ``-v`` output."""
        ...

    def start(self, now: int) -> None:
        """Client: send the first ClientHello.  Server: nothing."""
        ...

    def fragment_allowed(self, fragment: HandshakeFragment, epoch: int) -> bool:
        """Whether a fragment may arrive in that epoch (1.2: Finished and only it protected)."""
        ...

    def handle_message(self, message: HandshakeMessage, now: int) -> None:
        """Take one whole handshake message, in order; may send a flight."""
        ...

    def export_keying_material(self, label: bytes, context: bytes | None, length: int) -> bytes:
        """RFC 5705 / RFC 8446 7.5 exporter."""
        ...

    def channel_binding(self, binding_type: str) -> bytes:
        """``tls-exporter`` or (1.2 only) ``tls-unique``."""
        ...

    def key_log_lines(self) -> list[str]:
        """NSS key-log lines for the secrets so far (empty before there are any)."""
        ...
