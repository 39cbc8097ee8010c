"""All connections of one UDP socket, sans-IO: demultiplexing, new connections, timers.

Go: listener.go, minus the socket.

The crypto layer is pluggable (:mod:`qotp.protection`): QOTP's native
envelope by default, or DTLS (:class:`qotp.dtls_protection.DtlsCryptoLayer`).
Routing goes through it (QOTP: the connection id in the cleartext header;
DTLS: the source address or an RFC 9146 connection id).  A connection is
created only for a datagram the crypto layer accepts as a valid first packet
(InitSnd, authentic InitCryptoSnd, a DTLS ClientHello with a valid cookie),
never while merely decoding.  Anything undecodable, unauthenticated, or for
an unknown connection is dropped and counted in :attr:`QotpEndpoint.drops`;
nothing a peer sends can stop the endpoint or touch another connection.

Datagrams for a known connection may come from a new address (multi-homing,
NAT rebinding): once authenticated, replies move to the newest address and
the connection reports :class:`~qotp.events.PeerAddressChanged`.

Scale: only connections with work are visited when sending (a ready set),
and timers sit in a heap, so 10 000 idle connections cost nothing per call.
"""

from __future__ import annotations

import heapq
import logging
from collections import Counter, OrderedDict, deque
from collections.abc import Callable

from qotp.config import QotpConfiguration
from qotp.connection import Connection
from qotp.errors import DecodeError, DecryptError, LocalProtocolError
from qotp.events import Event
from qotp.keys import KeyPair
from qotp.native import NativeCryptoLayer
from qotp.protection import Address, CryptoLayer, Protection

__all__ = ["QotpEndpoint"]

logger = logging.getLogger(__name__)


class QotpEndpoint:
    """The engine behind one socket: accepts and dials, many connections at once."""

    def __init__(
        self,
        *,
        identity: KeyPair | None = None,
        configuration: QotpConfiguration | None = None,
        key_log: Callable[[str], None] | None = None,
        crypto: CryptoLayer | None = None,
    ) -> None:
        """``crypto`` defaults to QOTP's native envelope with ``identity`` (made if None).

        ``identity`` belongs to the native layer: give one or the other.
        """
        self.configuration = configuration or QotpConfiguration()
        if crypto is not None and identity is not None:
            raise LocalProtocolError("identity is the native layer's: pass it to the crypto layer")
        self.identity = identity
        if crypto is None:
            self.identity = identity or KeyPair.generate()
            crypto = NativeCryptoLayer(self.identity, mtu=self.configuration.mtu)
        self.crypto: CryptoLayer = crypto
        self.connections: dict[int, Connection] = {}
        self.drops: Counter[str] = Counter()
        """Dropped datagrams by reason (``"undecodable"``, ``"unknown connection"``, ...)."""
        self._key_log = key_log
        self._events: deque[Event] = deque()
        self._ready: OrderedDict[int, None] = OrderedDict()
        self._timers: list[tuple[int, int]] = []
        self._timer_of: dict[int, int] = {}
        self._touched: dict[int, Connection] = {}

    @property
    def public_key(self) -> bytes:
        """Our identity as peers see it (native: the X25519 key 0-RTT dialers must know).

        Over DTLS: the DER SubjectPublicKeyInfo of our certificate.  Raises
        :class:`LocalProtocolError` when the crypto layer has no identity.
        """
        identity = self.crypto.local_identity
        if identity is None:
            raise LocalProtocolError("this crypto layer has no identity of its own")
        return identity

    # -- commands -------------------------------------------------------------

    def connect(
        self, address: Address, *, now: int, peer_public_key: bytes | None = None
    ) -> Connection:
        """Dial a peer.

        ``peer_public_key`` is the identity the peer must prove (its
        :attr:`public_key`): natively it also makes the handshake 0-RTT.
        """
        protection = self.crypto.dial(address, now=now, peer_identity=peer_public_key)
        if protection.connection_id in self.connections:
            self.crypto.forget(protection)
            raise LocalProtocolError("connection id collision; dial again")
        connection = self._add(protection, address, is_initiator=True, now=now)
        return connection

    def _add(
        self, protection: Protection, address: Address, *, is_initiator: bool, now: int
    ) -> Connection:
        connection = Connection(
            protection=protection,
            address=address,
            is_initiator=is_initiator,
            now=now,
            configuration=self.configuration,
        )
        self.connections[connection.connection_id] = connection
        self.mark_ready(connection)
        return connection

    def mark_ready(self, connection: Connection) -> None:
        """Tell the endpoint that a connection may have something to send (after a command)."""
        self._ready[connection.connection_id] = None
        self._touched[connection.connection_id] = connection

    # -- receiving ------------------------------------------------------------

    def receive_datagram(self, data: bytes, address: Address, now: int) -> None:
        """Route one datagram; creates a connection for a valid first packet."""
        crypto = self.crypto
        try:
            route = crypto.route(data, address)
        except DecodeError as error:
            self.drops["undecodable"] += 1
            logger.debug("dropped datagram from %s: %s", address, error)
            return
        connection = None if route is None else self.connections.get(route)
        if connection is None:
            if len(self.connections) >= self.configuration.max_connections:
                self.drops["connection limit"] += 1
                return
            try:
                protection = crypto.accept(data, address, now)
            except (DecodeError, DecryptError) as error:
                self.drops["bad first packet"] += 1
                logger.debug("dropped first packet from %s: %s", address, error)
                return
            if protection is None:
                self.drops["unknown connection"] += 1
                return
            if protection.connection_id in self.connections:
                # A layer whose ids the peer influences (DTLS: the ClientHello random).
                crypto.forget(protection)
                self.drops["connection id collision"] += 1
                return
            connection = self._add(protection, address, is_initiator=False, now=now)
        before = connection.dropped_datagrams
        connection.receive_datagram(data, address, now)
        if connection.dropped_datagrams != before:
            self.drops["unauthenticated"] += 1
        # Settled once per batch, not per datagram (see _settle).
        self._touched[connection.connection_id] = connection

    # -- sending --------------------------------------------------------------

    def datagrams_to_send(self, now: int) -> list[tuple[bytes, Address]]:
        """Datagrams of every connection with work, round-robin over connections."""
        self._settle()
        output = self.crypto.datagrams_to_send(now)
        ready = self._ready
        self._ready = OrderedDict()
        for connection_id in ready:
            connection = self.connections.get(connection_id)
            if connection is None:
                continue
            datagrams = connection.datagrams_to_send(now)
            if datagrams:
                address = connection.address
                output.extend((datagram, address) for datagram in datagrams)
                if len(datagrams) >= self.configuration.max_datagrams_per_call:
                    self._ready[connection_id] = None  # more to come: stay ready
            self._after(connection)
        return output

    # -- timers ---------------------------------------------------------------

    def get_timer(self) -> int | None:
        """The earliest deadline over all connections (ns), or None."""
        self._settle()
        timers = self._timers
        timer_of = self._timer_of
        while timers:
            deadline, connection_id = timers[0]
            if timer_of.get(connection_id) == deadline:
                return deadline
            heapq.heappop(timers)  # stale entry
        return None

    def handle_timer(self, now: int) -> None:
        """Run every connection whose deadline passed; they become ready to send."""
        self._settle()
        timers = self._timers
        timer_of = self._timer_of
        due: list[Connection] = []
        while timers and timers[0][0] <= now:
            deadline, connection_id = heapq.heappop(timers)
            if timer_of.get(connection_id) != deadline:
                continue
            del timer_of[connection_id]
            connection = self.connections.get(connection_id)
            if connection is not None:
                due.append(connection)
        # Collected first: re-arming may push deadlines that are due already, and
        # those belong to the next call (after datagrams_to_send acted on them).
        for connection in due:
            connection.handle_timer(now)
            self._ready[connection.connection_id] = None
            self._after(connection)

    # -- events ---------------------------------------------------------------

    def next_event(self) -> Event | None:
        """The oldest event of any connection, or None."""
        if self._touched:
            self._settle()
        return self._events.popleft() if self._events else None

    def _settle(self) -> None:
        """Collect events and re-arm timers of connections that received datagrams."""
        if self._touched:
            touched, self._touched = self._touched, {}
            for connection in touched.values():
                self._after(connection)

    # -- bookkeeping ----------------------------------------------------------

    def _after(self, connection: Connection) -> None:
        """Collect a connection's events and key-log lines; re-arm its timer."""
        events = self._events
        while (event := connection.next_event()) is not None:
            events.append(event)
        if self._key_log is not None:
            for line in connection.protection.key_log_lines():
                self._key_log(line)
        connection_id = connection.connection_id
        if connection.is_terminated:
            if connection.has_farewell:
                # Its last ACKs leave with the next datagrams_to_send; removed after.
                self._ready[connection_id] = None
                return
            if self.connections.get(connection_id) is connection:
                del self.connections[connection_id]
                self.crypto.forget(connection.protection)
            self._timer_of.pop(connection_id, None)
            self._ready.pop(connection_id, None)
            return
        if connection.has_pending_output():
            self._ready[connection_id] = None
        deadline = connection.get_timer()
        if deadline is None:
            self._timer_of.pop(connection_id, None)
        elif self._timer_of.get(connection_id) != deadline:
            self._timer_of[connection_id] = deadline
            heapq.heappush(self._timers, (deadline, connection_id))
