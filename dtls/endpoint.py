"""Many DTLS peers on one datagram socket, sans-IO.

Routing: an established RFC 9146 connection id wins (so a peer that changes
address keeps its session); otherwise the source address picks the
connection.  A datagram from an unknown address is answered statelessly: it
must start with an epoch-0 record holding a ClientHello, or the first fragment
of one; without a valid cookie we send a HelloVerifyRequest and forget it
(nothing is allocated), with one we create the connection, which reassembles
the rest of a fragmented hello from the datagrams that follow.  Connections
that terminate are dropped from the maps once their last datagrams and events
have been collected.

An exception escaping one connection (which would be a bug of ours) is logged,
counted in ``internal_errors``, and ends only that connection: other peers on
the socket are never affected.
"""

from __future__ import annotations

import dataclasses
import heapq
import logging
import os
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass

from cryptography import x509

from . import handshake as hs
from . import handshake13_server
from .config import CertificatePrivateKey, DTLSConfiguration
from .connection import Address, DTLSConnection, ServerContext, encode_hello_verify_datagram
from .cookie import CookieGenerator
from .errors import DTLSError, LocalProtocolError
from .events import (
    ConnectionAccepted,
    ConnectionTerminated,
    Event,
    HandshakeCompleted,
    HandshakeFailed,
)
from .handshake import HandshakeType
from .messages13 import ExtensionType13, decode_cookie
from .records import ContentType, decode_datagram
from .records13 import is_unified_header

__all__ = [
    "DEFAULT_CONNECTION_ID_BYTES",
    "MAX_CONNECTIONS",
    "DTLSEndpoint",
    "HelloCheck",
    "check_client_hello",
    "starts_with_initial_hello",
]

logger = logging.getLogger(__name__)
message_logger = logging.getLogger("dtls.messages")

MAX_CONNECTIONS = 10_000
DEFAULT_CONNECTION_ID_BYTES = 8
_CID_OFFSET = 11  # type(1) version(2) epoch(2) sequence(6)


class DTLSEndpoint:
    """A DTLS endpoint (server, client, or both) multiplexing peers on one socket."""

    def __init__(
        self,
        configuration: DTLSConfiguration,
        *,
        server_context: ServerContext | None = None,
        connection_id_bytes: int = 0,
        max_connections: int = MAX_CONNECTIONS,
    ) -> None:
        """``connection_id_bytes`` > 0 makes server connections offer RFC 9146 ids of that size."""
        if configuration.server_certificates is None and not configuration.is_client:
            configuration = dataclasses.replace(
                configuration, server_certificates=configuration.certificates()
            )
        self.configuration = configuration
        self.server_context = server_context or ServerContext()
        self.connection_id_bytes = connection_id_bytes
        self.max_connections = max_connections
        self.connections: dict[int, DTLSConnection] = {}
        self._by_address: dict[Address, int] = {}
        self._by_connection_id: dict[bytes, int] = {}
        self._address_of: dict[int, Address] = {}
        self._scheduled: dict[int, int] = {}  # peer id -> its current deadline
        self._timer_heap: list[tuple[int, int]] = []  # (deadline, peer id), may hold stale ones
        self._next_peer_id = 1
        self._events: deque[Event] = deque()
        self._accept_queue: deque[DTLSConnection] = deque()
        self._completed: set[int] = set()  # server connections whose handshake completed
        self._outgoing: list[tuple[bytes, Address]] = []
        self.hello_verify_requests_sent = 0
        self.dropped_datagrams = 0
        self.internal_errors = 0
        self.failed_handshakes = 0

    # ------------------------------------------------------------------ commands

    def add_certificate(
        self,
        chain: tuple[x509.Certificate, ...] | list[x509.Certificate],
        private_key: CertificatePrivateKey,
        server_name: str | None = None,
    ) -> None:
        """Serve ``chain`` for ``server_name`` (SNI) from now on."""
        store = self.configuration.server_certificates
        if store is None:
            raise LocalProtocolError("this endpoint has no server certificate store")
        store.add(tuple(chain), private_key, server_name)

    def connect(
        self,
        address: Address,
        now: int,
        configuration: DTLSConfiguration | None = None,
        *,
        early_data: Sequence[bytes] = (),
    ) -> DTLSConnection:
        """Start a client handshake with ``address`` from this endpoint's socket.

        ``early_data``: datagrams to send as DTLS 1.3 0-RTT data when the
        configuration's session allows it (``early_data=True``), else right
        after the handshake.
        """
        config = configuration or self.configuration
        if not config.is_client:
            config = dataclasses.replace(config, is_client=True)
        if address in self._by_address:
            raise LocalProtocolError(f"already connected to {address!r}")
        connection = self._new_connection(config, address)
        for datagram in early_data:
            connection.send(datagram)
        connection.start_handshake(now)
        self._collect(connection)
        return connection

    def accept(self) -> DTLSConnection | None:
        """The next server connection whose handshake completed, or None."""
        return self._accept_queue.popleft() if self._accept_queue else None

    def connection(self, peer_id: int) -> DTLSConnection | None:
        """The connection with that peer id (None once it is gone)."""
        return self.connections.get(peer_id)

    def connection_at(self, address: Address) -> DTLSConnection | None:
        """The connection routed by that peer address, if any."""
        peer_id = self._by_address.get(address)
        return None if peer_id is None else self.connections.get(peer_id)

    # ------------------------------------------------------------------ driving surface

    def receive_datagram(self, data: bytes, addr: Address, now: int) -> None:
        """Route one datagram to its connection, or answer a new client statelessly."""
        connection = self._route(data, addr)
        if (
            connection is not None
            and connection.is_established
            and not connection.is_client
            and starts_with_initial_hello(data)
        ):
            # RFC 6347 4.2.8: a new epoch-0 ClientHello on a live association is a client
            # that lost its state; check its cookie statelessly and, once valid, start over.
            replacement = self._stateless_hello(data, addr, now, replacing=connection)
            if replacement is None:
                return
            self._forget(connection)
            self._by_address[addr] = replacement.peer_id
            self._address_of[replacement.peer_id] = addr
            connection = replacement
        if connection is None:
            if self.configuration.is_client:
                self.dropped_datagrams += 1
                return
            connection = self._stateless_hello(data, addr, now)
            if connection is None:
                return
        try:
            connection.receive_datagram(data, addr, now)
        except Exception:  # noqa: BLE001  (a bug of ours must not take other peers down)
            self.internal_errors += 1
            logger.exception("internal error in connection %d", connection.peer_id)
            connection.abort("internal error")
        if connection.address != addr and self._by_address.get(addr) != connection.peer_id:
            self._readdress(connection)
        self._collect(connection)

    def datagrams_to_send(self, now: int) -> list[tuple[bytes, Address]]:
        """Everything every connection wants to send."""
        out, self._outgoing = self._outgoing, []
        return out

    def get_timer(self) -> int | None:
        """Earliest deadline of any connection."""
        heap = self._timer_heap
        scheduled = self._scheduled
        while heap and scheduled.get(heap[0][1]) != heap[0][0]:
            heapq.heappop(heap)  # stale: that connection's deadline moved or it is gone
        return heap[0][0] if heap else None

    def handle_timer(self, now: int) -> None:
        """Run every expired connection timer."""
        heap = self._timer_heap
        while heap and heap[0][0] <= now:
            deadline, peer_id = heapq.heappop(heap)
            if self._scheduled.get(peer_id) != deadline:
                continue
            del self._scheduled[peer_id]
            connection = self.connections.get(peer_id)
            if connection is not None:
                connection.handle_timer(now)
                self._collect(connection)

    def next_event(self) -> Event | None:
        """Next event of any connection (each carries its ``peer`` id)."""
        return self._events.popleft() if self._events else None

    def collect(self, connection: DTLSConnection) -> None:
        """Pick up datagrams and events after calling a command on a connection directly."""
        self._collect(connection)

    # ------------------------------------------------------------------ internals

    def _route(self, data: bytes, addr: Address) -> DTLSConnection | None:
        size = self.connection_id_bytes
        if size and len(data) > _CID_OFFSET + size and data[0] == ContentType.tls12_cid:
            cid = bytes(data[_CID_OFFSET : _CID_OFFSET + size])
            peer_id = self._by_connection_id.get(cid)
            if peer_id is not None:
                return self.connections.get(peer_id)
        elif size and len(data) > 1 + size and is_unified_header(data[0]) and data[0] & 0x10:
            # DTLS 1.3 unified header with the C bit: the connection id follows the flags.
            peer_id = self._by_connection_id.get(bytes(data[1 : 1 + size]))
            if peer_id is not None:
                return self.connections.get(peer_id)
        peer_id = self._by_address.get(addr)
        return None if peer_id is None else self.connections.get(peer_id)

    def _stateless_hello(
        self, data: bytes, addr: Address, now: int, replacing: DTLSConnection | None = None
    ) -> DTLSConnection | None:
        check = check_client_hello(
            data,
            addr,
            now,
            self.server_context.cookies,
            cookie_exchange=self.configuration.cookie_exchange,
            stale_random=None if replacing is None else replacing.client_random,
            configuration=self.configuration,
            server_context=self.server_context,
        )
        if check.reply is not None:
            retry = len(check.reply) > 13 and check.reply[13] == HandshakeType.server_hello
            message_logger.info(
                ">>> %s to %r (stateless cookie exchange)",
                "hello_retry_request" if retry else "hello_verify_request",
                addr,
            )
            self._outgoing.append((check.reply, addr))
            self.hello_verify_requests_sent += 1
            return None
        if check.hello is None:
            self.dropped_datagrams += 1
            return None
        if len(self.connections) >= self.max_connections:
            self.dropped_datagrams += 1
            return None
        config = self.configuration
        if self.connection_id_bytes:
            config = dataclasses.replace(config, connection_id=self._fresh_connection_id())
        return self._new_connection(config, addr)

    def _fresh_connection_id(self) -> bytes:
        while True:
            cid = os.urandom(self.connection_id_bytes)
            if cid not in self._by_connection_id:
                return cid

    def _new_connection(self, config: DTLSConfiguration, addr: Address) -> DTLSConnection:
        peer_id = self._next_peer_id
        self._next_peer_id += 1
        connection = DTLSConnection(
            config, address=addr, peer_id=peer_id, server_context=self.server_context
        )
        self.connections[peer_id] = connection
        self._by_address[addr] = peer_id
        self._address_of[peer_id] = addr
        if config.connection_id:
            self._by_connection_id[config.connection_id] = peer_id
        return connection

    def _readdress(self, connection: DTLSConnection) -> None:
        peer_id = connection.peer_id
        previous = self._address_of.get(peer_id)
        if previous is not None and self._by_address.get(previous) == peer_id:
            del self._by_address[previous]
        self._by_address[connection.address] = peer_id
        self._address_of[peer_id] = connection.address

    def _schedule(self, connection: DTLSConnection) -> None:
        peer_id = connection.peer_id
        deadline = connection.get_timer() if peer_id in self.connections else None
        if deadline == self._scheduled.get(peer_id):
            return
        if deadline is None:
            del self._scheduled[peer_id]
            return
        self._scheduled[peer_id] = deadline
        heapq.heappush(self._timer_heap, (deadline, peer_id))
        if len(self._timer_heap) > 4 * len(self._scheduled) + 64:
            # Deadlines that moved leave stale entries behind; rebuild before they pile up.
            self._timer_heap = [(t, p) for p, t in self._scheduled.items()]
            heapq.heapify(self._timer_heap)

    def _collect(self, connection: DTLSConnection) -> None:
        self._outgoing.extend(connection.datagrams_to_send(0))
        for cid in connection.issued_connection_ids:
            # Ids given out after the handshake (DTLS 1.3 NewConnectionId) route here too.
            if cid not in self._by_connection_id and connection.peer_id in self.connections:
                self._by_connection_id[cid] = connection.peer_id
        while (event := connection.next_event()) is not None:
            self._events.append(event)
            if isinstance(event, HandshakeCompleted) and not connection.is_client:
                self._completed.add(connection.peer_id)
                self._accept_queue.append(connection)
                self._events.append(ConnectionAccepted(peer=connection.peer_id))
            elif isinstance(event, ConnectionTerminated):
                if not connection.is_client and connection.peer_id not in self._completed:
                    self.failed_handshakes += 1
                    self._events.append(
                        HandshakeFailed(
                            peer=connection.peer_id,
                            address=connection.address,
                            reason=event.reason,
                            alert=event.alert,
                            alert_received=event.alert_received,
                        )
                    )
                self._forget(connection)
        self._schedule(connection)

    def _forget(self, connection: DTLSConnection) -> None:
        peer_id = connection.peer_id
        self.connections.pop(peer_id, None)
        self._completed.discard(peer_id)
        self._scheduled.pop(peer_id, None)
        address = self._address_of.pop(peer_id, None)
        if address is not None and self._by_address.get(address) == peer_id:
            del self._by_address[address]
        if connection.local_connection_id:
            self._by_connection_id.pop(connection.local_connection_id, None)
        for cid in connection.issued_connection_ids:
            if self._by_connection_id.get(cid) == peer_id:
                del self._by_connection_id[cid]


@dataclass(frozen=True, slots=True)
class HelloCheck:
    """What a server does with a datagram from an address it has no connection for.

    Three outcomes: ``hello`` set -- a ClientHello (whole, or the first fragment of
    one) whose cookie verified (or no cookie exchange is configured): create the
    connection and feed it the datagram; ``reply`` set -- send this
    HelloVerifyRequest back and keep no state; both None -- drop the datagram.
    """

    hello: hs.ClientHelloPrefix | None = None
    reply: bytes | None = None


def check_client_hello(
    data: bytes,
    addr: Address,
    now: int,
    cookies: CookieGenerator,
    *,
    cookie_exchange: bool = True,
    stale_random: bytes | None = None,
    configuration: DTLSConfiguration | None = None,
    server_context: ServerContext | None = None,
) -> HelloCheck:
    """The stateless first step of a server (RFC 6347 4.2.1), without allocating anything.

    Only the first record is parsed; it must be an epoch-0 record starting a
    ClientHello: the whole message, or its first fragment (offset 0) as long
    as that holds the fields up to the cookie.  A fragmented first hello is
    answered from those fields alone (they are all the cookie binds), so a
    client with a small MTU gets its HelloVerifyRequest and nothing is kept;
    once the cookie verifies, the connection reassembles the rest.  A hello
    whose random equals ``stale_random`` (a late copy of the hello that built
    a live association) is dropped.  Never raises for bad input.

    Given the server's ``configuration`` and ``server_context``, a hello that
    will be answered in DTLS 1.3 is checked the 1.3 way (RFC 9147 5.1): it
    passes with a valid HelloRetryRequest cookie or as a verified first-seen
    resumption, and otherwise gets a stateless HelloRetryRequest.  A 1.3 hello
    must be whole (unfragmented): its cookie and PSK binders come last.
    """
    records, _ = decode_datagram(data)
    if not records:
        return HelloCheck()
    record = records[0]
    if record.content_type != ContentType.handshake or record.epoch != 0:
        return HelloCheck()
    try:
        fragment, _ = hs.decode_handshake_fragment(record.payload)
        if fragment.msg_type != HandshakeType.client_hello or fragment.fragment_offset != 0:
            return HelloCheck()
        whole = None
        if len(fragment.body) == fragment.length:
            whole = hs.decode_client_hello(fragment.body)  # check it all before any state
        hello = hs.decode_client_hello_prefix(fragment.body)
    except DTLSError:
        return HelloCheck()
    if stale_random is not None and hello.random == stale_random:
        return HelloCheck()
    if (
        configuration is not None
        and server_context is not None
        and whole is not None
        and handshake13_server.offers_dtls13(whole, configuration)
    ):
        return _check_client_hello13(
            whole,
            hello,
            addr,
            now,
            configuration,
            server_context,
            cookie_exchange=cookie_exchange,
            message_seq=fragment.message_seq,
            record_sequence=record.sequence_number,
        )
    if cookie_exchange and not cookies.verify(addr, hello, now):
        cookie = cookies.make(addr, hello, now)
        return HelloCheck(
            reply=encode_hello_verify_datagram(
                cookie, message_seq=fragment.message_seq, record_sequence=record.sequence_number
            )
        )
    return HelloCheck(hello=hello)


def _check_client_hello13(
    hello: hs.ClientHello,
    prefix: hs.ClientHelloPrefix,
    addr: Address,
    now: int,
    configuration: DTLSConfiguration,
    server_context: ServerContext,
    *,
    cookie_exchange: bool,
    message_seq: int,
    record_sequence: int,
) -> HelloCheck:
    try:
        cookie = hs.find_extension(hello.extensions, ExtensionType13.cookie)
        if cookie is not None and (
            server_context.retry_cookies.open(addr, decode_cookie(cookie), now) is not None
        ):
            return HelloCheck(hello=prefix)
    except DTLSError:
        return HelloCheck()
    if not cookie_exchange or handshake13_server.verified_resumption(
        hello, configuration, server_context, now, exclusive=True
    ):
        return HelloCheck(hello=prefix)
    try:
        reply = handshake13_server.stateless_retry(
            hello,
            configuration,
            server_context.retry_cookies,
            addr,
            now,
            message_seq=message_seq,
            record_sequence=record_sequence,
        )
    except DTLSError:
        return HelloCheck()
    return HelloCheck(reply=reply) if reply is not None else HelloCheck()


def starts_with_initial_hello(data: bytes) -> bool:
    """Cheap test: the datagram starts with an epoch-0 record carrying a ClientHello.

    A server that sees this from the address of a live association may be
    facing a client that lost its state (RFC 6347 4.2.8).
    """
    return (
        len(data) >= 25
        and data[0] == ContentType.handshake
        and data[3:5] == b"\0\0"
        and data[13] == HandshakeType.client_hello
    )
