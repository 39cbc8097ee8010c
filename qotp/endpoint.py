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
NAT rebinding, roaming): once authenticated, they are used, and replies move
there after the address proved it reaches the peer (:mod:`qotp.path`); the
connection then reports :class:`~qotp.events.PeerAddressChanged`.

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
from qotp.handshakes import RecentIds
from qotp.keys import KeyPair
from qotp.native import NativeCryptoLayer
from qotp.protection import Address, CryptoLayer, FirstPacket, Protection

__all__ = ["QotpEndpoint"]

logger = logging.getLogger(__name__)

MAX_HANDSHAKE_BACKLOG = 4096
"""First packets of new handshakes that may wait, per kind; beyond, the oldest are shed."""
MAX_HANDSHAKE_WAIT_NS = 150_000_000
"""A first packet that waited this long is shed unanswered: its initiator repeats it at
200 ms, and that repeat then goes first."""
SHED_IDS_REMEMBERED = 65_536
"""Connection ids of shed first packets remembered (per generation, two generations)."""


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
            crypto = NativeCryptoLayer(
                self.identity, mtu=self.configuration.mtu, configuration=self.configuration
            )
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
        # First packets of new handshakes waiting for process_handshakes (receive_datagrams):
        # those whose connection id was shed before (likely a real initiator repeating),
        # and never-seen ones.
        self._retry_backlog: deque[tuple[bytes, Address, int, int]] = deque()
        self._known_backlog: deque[tuple[bytes, Address, int, int]] = deque()
        self._fresh_backlog: deque[tuple[bytes, Address, int, int]] = deque()
        self._shed_ids = RecentIds(SHED_IDS_REMEMBERED)
        self._more_to_send = False

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
        self,
        protection: Protection,
        address: Address,
        *,
        is_initiator: bool,
        now: int,
        validated: bool = True,
    ) -> Connection:
        connection = Connection(
            protection=protection,
            address=address,
            is_initiator=is_initiator,
            now=now,
            configuration=self.configuration,
            address_validated=validated,
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
        """Route one datagram and act on it at once (a handshake's public-key work included)."""
        try:
            route = self.crypto.route(data, address)
        except DecodeError as error:
            self._undecodable(address, error)
            return
        connection = None if route is None else self.connections.get(route)
        if connection is None:
            kind = self.crypto.classify(data, route, now)
            if kind is FirstPacket.NONE:
                self.drops["unknown connection"] += 1
                return
            if kind is FirstPacket.NEW_HANDSHAKE and self._at_connection_limit():
                return
            self._accept(data, address, now)
            return
        # The per-packet path: _deliver, inlined.
        dropped = connection.dropped_datagrams
        connection.receive_datagram(data, address, now)
        if connection.dropped_datagrams != dropped:
            self._count_connection_drop(connection)
        self._touched[connection.connection_id] = connection

    def receive_datagrams(self, datagrams: list[tuple[bytes, Address]], now: int) -> None:
        """A batch (one socket read), packets of connections first; new handshakes wait.

        Datagrams of existing connections, and cheap handshake steps (repeated first
        packets, the Data packet that completes a handshake), are acted on at once,
        in order.  First packets of *new* handshakes, which cost public-key work and
        prove nothing, wait in a backlog for :meth:`process_handshakes`; what the
        caller has no time for, :meth:`shed_handshakes` drops.  Those whose
        connection id was shed before (an initiator repeats its first packet with
        the same key) go first.  A flood of first packets so never delays the
        packets of established connections.
        """
        connections = self.connections
        crypto = self.crypto
        touched = self._touched
        for data, address in datagrams:
            try:
                route = crypto.route(data, address)
            except DecodeError as error:
                self._undecodable(address, error)
                continue
            connection = None if route is None else connections.get(route)
            if connection is not None:  # the per-packet path: _deliver, inlined
                dropped = connection.dropped_datagrams
                connection.receive_datagram(data, address, now)
                if connection.dropped_datagrams != dropped:
                    self._count_connection_drop(connection)
                touched[connection.connection_id] = connection
                continue
            kind = crypto.classify(data, route, now)
            if kind is FirstPacket.NONE:
                self.drops["unknown connection"] += 1
            elif kind is FirstPacket.CONTINUATION:
                self._accept(data, address, now)
            elif not self._at_connection_limit():
                assert route is not None
                if route in self._shed_ids:
                    backlog = self._retry_backlog
                elif kind is FirstPacket.NEW_HANDSHAKE_KNOWN_PEER:
                    backlog = self._known_backlog
                else:
                    backlog = self._fresh_backlog
                if len(backlog) >= MAX_HANDSHAKE_BACKLOG:
                    self._shed(backlog.popleft())
                backlog.append((data, address, route, now))

    @property
    def handshakes_in_progress(self) -> int:
        """Responder handshakes waiting for the initiator's first Data packet (native)."""
        handshakes = getattr(self.crypto, "handshakes", None)
        return 0 if handshakes is None else len(handshakes)

    @property
    def handshake_backlog(self) -> int:
        """First packets of new handshakes waiting for :meth:`process_handshakes`."""
        return len(self._retry_backlog) + len(self._known_backlog) + len(self._fresh_backlog)

    def process_handshakes(self, now: int, limit: int, *, fresh: bool = True) -> int:
        """Act on up to ``limit`` waiting first packets; return how many still wait.

        ``fresh=False`` leaves never-seen keys waiting (the caller is behind on
        reading its socket and gives time only to the likeliest legitimate ones).

        Repeated ones (their connection id was shed before) go first, oldest first;
        then those of peer identities that completed a handshake recently; then
        never-seen ones, newest first (the oldest are the likeliest to have been
        repeated already).  Ones that waited :data:`MAX_HANDSHAKE_WAIT_NS` are shed.
        """
        take_fresh = fresh
        retry = self._retry_backlog
        known = self._known_backlog
        never_seen = self._fresh_backlog
        oldest = now - MAX_HANDSHAKE_WAIT_NS
        # Repeats are not shed for their age: their initiators have waited the longest,
        # and answering late still answers them (they accept an InitRcv at any time
        # before giving up); shedding them again would fail a burst of legitimate
        # initiators whose repeats all arrive together.  Only their count is capped.
        for backlog in (known, never_seen):
            while backlog and backlog[0][3] < oldest:
                self._shed(backlog.popleft())
        connections = self.connections
        while limit > 0 and (retry or known or (take_fresh and never_seen)):
            if retry:
                data, address, connection_id, _arrival = retry.popleft()
            elif known:
                data, address, connection_id, _arrival = known.popleft()
            else:
                data, address, connection_id, _arrival = never_seen.pop()
            connection = connections.get(connection_id)
            if connection is not None:
                # Another copy completed the handshake while this one waited: the
                # connection answers it (a fresh handshake would reply with other keys).
                self._deliver(connection, data, address, now)
                continue
            limit -= 1
            if not self._at_connection_limit():
                self._accept(data, address, now)
        return len(retry) + len(known) + len(never_seen)

    def shed_handshakes(self) -> None:
        """Drop the first packets still waiting (counted); a repeat of one will go first."""
        for backlog in (self._retry_backlog, self._known_backlog, self._fresh_backlog):
            while backlog:
                self._shed(backlog.popleft())

    def _shed(self, item: tuple[bytes, Address, int, int]) -> None:
        self.drops["handshake overload"] += 1
        self._shed_ids.add(item[2])

    # -- receiving: the pieces ----------------------------------------------------

    def _undecodable(self, address: Address, error: DecodeError) -> None:
        self.drops["undecodable"] += 1
        logger.debug("dropped datagram from %s: %s", address, error)

    def _at_connection_limit(self) -> bool:
        if len(self.connections) >= self.configuration.max_connections:
            self.drops["connection limit"] += 1
            return True
        return False

    def _accept(self, data: bytes, address: Address, now: int) -> None:
        """Let the crypto layer answer, continue or complete a handshake."""
        crypto = self.crypto
        try:
            protection = crypto.accept(data, address, now)
        except (DecodeError, DecryptError) as error:
            self.drops[getattr(error, "drop_reason", "bad first packet")] += 1
            logger.debug("dropped first packet from %s: %s", address, error)
            return
        if protection is None:
            return
        if protection.connection_id in self.connections:
            # A layer whose ids the peer influences (DTLS: the ClientHello random).
            crypto.forget(protection)
            self.drops["connection id collision"] += 1
            return
        if len(self.connections) >= self.configuration.max_connections:
            crypto.forget(protection)
            self.drops["connection limit"] += 1
            return
        proven = protection.proven_address
        connection = self._add(
            protection, proven or address, is_initiator=False, now=now, validated=proven is not None
        )
        self._deliver(connection, data, address, now)

    def _deliver(self, connection: Connection, data: bytes, address: Address, now: int) -> None:
        dropped = connection.dropped_datagrams
        connection.receive_datagram(data, address, now)
        if connection.dropped_datagrams != dropped:
            self._count_connection_drop(connection)
        # Settled once per batch, not per datagram (see _settle).
        self._touched[connection.connection_id] = connection

    def _count_connection_drop(self, connection: Connection) -> None:
        """The connection dropped the datagram just delivered: count it by its reason."""
        self.drops[connection.last_drop_reason] += 1

    # -- sending --------------------------------------------------------------

    @property
    def more_to_send(self) -> bool:
        """Whether the last :meth:`datagrams_to_send` stopped at a connection's per-call cap.

        Then there is more to send right now (ACKs for a burst of arrivals, say),
        and no timer will say so: call :meth:`datagrams_to_send` again soon.
        """
        return self._more_to_send

    def datagrams_to_send(self, now: int) -> list[tuple[bytes, Address]]:
        """Datagrams of every connection with work, round-robin over connections.

        At most ``max_datagrams_per_call`` per connection; see :attr:`more_to_send`.
        """
        self._settle()
        output = self.crypto.datagrams_to_send(now)
        ready = self._ready
        self._ready = OrderedDict()
        self._more_to_send = False
        for connection_id in ready:
            connection = self.connections.get(connection_id)
            if connection is None:
                continue
            datagrams = connection.datagrams_to_send(now)
            if datagrams:
                output.extend(datagrams)
                if len(datagrams) >= self.configuration.max_datagrams_per_call:
                    self._ready[connection_id] = None  # more to come: stay ready
                    self._more_to_send = True
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
