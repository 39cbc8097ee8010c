"""Listener, connection and stream objects of the asyncio API.

The listener runs the engine: every socket read, timer expiry or user
command ends in one ``_flush``: send what the engine has, hand out its
events, re-arm the single timer.  User-facing objects only wait on futures
and events that ``_flush`` resolves.
"""

from __future__ import annotations

import asyncio
import socket
import time
from collections import deque
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from types import TracebackType

from qotp.config import QotpConfiguration
from qotp.connection import Connection, ConnectionStatistics, EarlyData
from qotp.endpoint import QotpEndpoint
from qotp.errors import LocalProtocolError, QotpError
from qotp.events import (
    ConnectionEstablished,
    ConnectionTerminated,
    Event,
    PeerAddressChanged,
    StreamClosed,
    StreamDataAvailable,
    StreamOpened,
    StreamSendFinished,
    StreamWritable,
    TerminationReason,
)
from qotp.keys import KeyPair
from qotp.protection import Address, CryptoLayer

from .driver import ClosesOnExit, DeadlineTimer
from .transport import UdpSocket

__all__ = [
    "AddressChange",
    "ConnectionClosedError",
    "QotpConnection",
    "QotpListener",
    "QotpStream",
    "listen",
]

DatagramHandler = Callable[[bytes, Address, int], None]
"""Takes a datagram diverted from the engine: data, source address, now (ns)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class AddressChange:
    """A connection's path changed: the peer's address (``local`` False) or our socket's."""

    connection_id: int
    local: bool
    old_address: Address
    new_address: Address


HANDSHAKE_BUDGET_NS = 2_000_000
"""How long first packets of *new* handshakes may run (X25519 work) in one go.

The engine acts on everything else in a socket read first (established
connections' packets, handshakes completing); first packets of new handshakes
wait in the engine's backlog and run in slices of this length, one per event
loop iteration, so every slice is followed by a socket read and timers: a flood
of first packets delays other traffic by at most one slice, while otherwise idle
time all goes to handshakes.  The engine sheds what waits too long
(``QotpEndpoint.process_handshakes``)."""
_HANDSHAKES_PER_STEP = 4
_HANDSHAKES_WHILE_BACKLOGGED = 4


class ConnectionClosedError(QotpError, ConnectionError):
    """The connection ended (or never came up) while an operation needed it.

    ``reason`` says how (:class:`qotp.events.TerminationReason`), ``detail`` the
    specifics.  Raised by :meth:`QotpListener.dial` and
    :meth:`QotpConnection.wait_established` (the handshake failed or went
    unanswered), :meth:`QotpConnection.accept_stream` (no more streams will
    come), :meth:`QotpStream.write`, :meth:`QotpStream.drain` and
    :meth:`QotpStream.ping` (nothing more can be sent), and the reading methods
    of :class:`QotpStream` for a stream the peer had not finished, so a
    truncated transfer never reads as a clean end of stream.  It is a
    :class:`ConnectionError`, so ``except ConnectionError`` catches it too.
    """

    def __init__(self, reason: TerminationReason, detail: str = "") -> None:
        message = f"connection ended: {reason.value}"
        super().__init__(f"{message} ({detail})" if detail else message)
        self.reason = reason
        self.detail = detail


async def listen(
    host: str = "127.0.0.1",
    port: int = 0,
    *,
    identity: KeyPair | None = None,
    configuration: QotpConfiguration | None = None,
    key_log: Callable[[str], None] | None = None,
    crypto: CryptoLayer | None = None,
    sock: socket.socket | None = None,
    icmp_errors: bool = False,
) -> QotpListener:
    """Bind a UDP socket and start the engine on it; the listener accepts and dials.

    ``icmp_errors``: a dial whose handshake has not completed ends at once
    (reason ABORTED, detail :data:`PORT_UNREACHABLE`) when the kernel reports
    an ICMP port unreachable for its address (Linux, ``IP_RECVERR``), instead
    of repeating its hello until a timeout.  ICMP is not authenticated, so
    nothing else ends this way (established connections, accepted ones).  Off
    by default: a dial may then wait for a server that is still starting.

    ``crypto`` picks the crypto layer (default: QOTP's native envelope with
    ``identity``); e.g. :class:`qotp.dtls_protection.DtlsCryptoLayer` runs
    the whole API over DTLS 1.2.

    ``sock`` adopts a UDP socket made elsewhere instead of binding one (``host``
    and ``port`` are then ignored): one set up with options of your own
    (``SO_BINDTODEVICE``, ``IP_TOS``, ``SO_REUSEPORT``, a port a hole-punching
    exchange already opened, a socket inherited from a service manager).  It
    must be an ``AF_INET`` or ``AF_INET6`` ``SOCK_DGRAM`` socket; an unbound
    one is bound to an ephemeral port.  The listener owns it from then on: it
    makes it non-blocking, asks for 4 MiB ``SO_RCVBUF``/``SO_SNDBUF`` (the
    kernel may cap them at ``net.core.rmem_max``/``wmem_max``), enables UDP GRO
    on Linux (``UDP_GRO``) and sends runs with GSO (``UDP_SEGMENT``) where the
    kernel allows, and closes it with the listener.  Nothing else may read
    from it meanwhile.
    """
    loop = asyncio.get_running_loop()
    if sock is not None:
        if sock.type != socket.SOCK_DGRAM or sock.family not in (
            socket.AF_INET,
            socket.AF_INET6,
        ):
            raise LocalProtocolError("listen(sock=...) needs an AF_INET/AF_INET6 UDP socket")
        if sock.getsockname()[1] == 0:
            sock.bind(("::", 0) if sock.family == socket.AF_INET6 else ("0.0.0.0", 0))
    else:
        infos = await loop.getaddrinfo(host, port, type=socket.SOCK_DGRAM)
        family, _type, _proto, _name, address = infos[0]
        sock = socket.socket(family, socket.SOCK_DGRAM)
        try:
            sock.bind(address)
        except OSError:
            sock.close()
            raise
    endpoint = QotpEndpoint(
        identity=identity, configuration=configuration, key_log=key_log, crypto=crypto
    )
    return QotpListener(endpoint, sock, loop, icmp_errors=icmp_errors)


PORT_UNREACHABLE = "the port is closed (ICMP port unreachable)"
"""The detail of a dial ended by an ICMP port unreachable (``listen(icmp_errors=True)``)."""

STREAM_LIMIT_BYTES = 64 * 1024
"""readuntil()/readline() give up when this many bytes came without a separator (asyncio's)."""
CHUNK_READ_BYTES = 64 * 1024
CLOSE_LINGER_S = 1.0
"""The longest :meth:`QotpListener.aclose` waits for peers to acknowledge the CLOSEs."""


def _unacknowledged(engine: Connection) -> bool:
    """Whether the connection still has data or a CLOSE that the peer did not acknowledge."""
    if engine.is_terminated:
        return False
    return bool(engine.recovery.in_flight) or engine.send_buffer.has_new_work()


class QotpListener(ClosesOnExit):
    """One UDP socket with its QOTP engine: ``accept()`` incoming, ``dial()`` outgoing."""

    def __init__(
        self,
        endpoint: QotpEndpoint,
        sock: socket.socket,
        loop: asyncio.AbstractEventLoop,
        *,
        icmp_errors: bool = False,
    ) -> None:
        self.endpoint = endpoint
        self._icmp_errors = icmp_errors
        self._loop = loop
        self._connections: dict[int, QotpConnection] = {}
        self._accept_queue: asyncio.Queue[QotpConnection] = asyncio.Queue()
        self._dials: dict[int, asyncio.Future[QotpConnection]] = {}
        self._timer = DeadlineTimer(loop, self._on_timer)
        self._flush_scheduled = False
        self._handshakes_scheduled = False
        self._closed = False
        self._closed_event = asyncio.Event()
        self._diversion: tuple[bytes, DatagramHandler] | None = None
        self.socket = self._udp_socket(sock)

    # -- public API -----------------------------------------------------------

    @property
    def public_key(self) -> bytes:
        """Our identity public key; 0-RTT dialers need it."""
        return self.endpoint.public_key

    @property
    def local_address(self) -> Address:
        """The bound (host, port)."""
        return self.socket.local_address

    async def dial(
        self,
        address: Address,
        *,
        peer_public_key: bytes | None = None,
        timeout: float | None = 10.0,
    ) -> QotpConnection:
        """Open a connection; in-band handshake, or 0-RTT with the peer's public key.

        Returns when the handshake completed.  With 0-RTT, data written right
        away rides in the first packet; use :meth:`dial_nowait` for that.
        """
        connection = self.dial_nowait(address, peer_public_key=peer_public_key)
        await asyncio.wait_for(connection.wait_established(), timeout)
        return connection

    def dial_nowait(
        self, address: Address, *, peer_public_key: bytes | None = None
    ) -> QotpConnection:
        """Open a connection without waiting for the handshake (0-RTT: write at once)."""
        self._check_open()
        engine = self.endpoint.connect(
            (address[0], address[1]), now=time.monotonic_ns(), peer_public_key=peer_public_key
        )
        connection = QotpConnection(self, engine)
        self._connections[engine.connection_id] = connection
        self.schedule_flush()
        return connection

    async def accept(self) -> QotpConnection:
        """The next connection a peer opened to us."""
        return await self._accept_queue.get()

    def __aiter__(self) -> AsyncIterator[QotpConnection]:
        return self._iterate()

    async def _iterate(self) -> AsyncIterator[QotpConnection]:
        while not self._closed:
            yield await self.accept()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def aclose(self, *, linger: float | None = None) -> None:
        """Close every connection, give the CLOSEs a moment to be acknowledged, close the socket.

        QOTP has no connection close on the wire: peers learn that we stopped from
        the CLOSE of every stream.  This waits until those (and all other data we
        sent) are acknowledged, for at most ``linger`` seconds; by default long
        enough for two retransmissions (three RTOs) and at most
        :data:`CLOSE_LINGER_S`, so that a CLOSE lost once or twice is still
        resent.  ``async with`` uses it; :meth:`close` does not wait.
        """
        if self._closed:
            return
        now = time.monotonic_ns()
        for connection in list(self._connections.values()):
            connection.close()
        self._flush(now)
        if linger is None:
            # Long enough for two retransmissions (RTO, then twice that), when needed.
            longest_rto_s = max(
                (
                    connection.engine.rtt.base_rto_ns() / 1e9
                    for connection in self._connections.values()
                ),
                default=0.0,
            )
            linger = min(CLOSE_LINGER_S, 3 * longest_rto_s + 0.01)
        deadline = self._loop.time() + linger
        while self._loop.time() < deadline and any(
            _unacknowledged(connection.engine) for connection in self._connections.values()
        ):
            await asyncio.sleep(0.005)
        self.close()

    def divert(self, prefix: bytes, handler: DatagramHandler | None) -> None:
        """Hand datagrams that start with ``prefix`` to ``handler`` instead of the engine.

        For protocols that share the socket with QOTP (the rendezvous client:
        registration and hole punching must use the socket that later carries
        the connection).  ``prefix`` must be one no QOTP packet starts with;
        None as handler stops diverting.
        """
        self._diversion = None if handler is None else (bytes(prefix), handler)

    def send_datagrams(self, datagrams: list[tuple[bytes, Address]]) -> None:
        """Send datagrams of another protocol from our socket (see :meth:`divert`)."""
        self._check_open()
        if datagrams:
            self.socket.send(datagrams)

    async def rebind(
        self, host: str | None = None, port: int = 0, *, sock: socket.socket | None = None
    ) -> Address:
        """Move every connection to a new local socket: our side roams.

        Binds ``host``/``port`` (default host: the current socket's) or adopts
        ``sock``, closes the old socket, and pings every established
        connection, so that its peer sees our new address at once, validates
        it and moves its replies there.  Each connection reports an
        :class:`AddressChange` with ``local=True``.  Returns the new address.
        """
        self._check_open()
        old_address = self.local_address
        if sock is None:
            loop = asyncio.get_running_loop()
            wanted = old_address[0] if host is None else host
            infos = await loop.getaddrinfo(wanted, port, type=socket.SOCK_DGRAM)
            family, _type, _proto, _name, address = infos[0]
            sock = socket.socket(family, socket.SOCK_DGRAM)
            try:
                sock.bind(address)
            except OSError:
                sock.close()
                raise
        old_socket = self.socket
        self.socket = self._udp_socket(sock)
        old_socket.close()
        new_address = self.local_address
        now = time.monotonic_ns()
        for connection in list(self._connections.values()):
            if connection.is_closed:
                continue
            if connection.engine.is_established:
                connection.engine.ping(0, now=now)
                self.endpoint.mark_ready(connection.engine)
            connection._on_address_change(
                AddressChange(
                    connection_id=connection.connection_id,
                    local=True,
                    old_address=old_address,
                    new_address=new_address,
                )
            )
        self._flush(now)
        return new_address

    def close(self) -> None:
        """Close every connection and the socket now (:meth:`aclose` waits for the CLOSEs)."""
        if self._closed:
            return
        now = time.monotonic_ns()
        for connection in list(self._connections.values()):
            connection.engine.close(now=now)
        self._flush(now)
        self._closed = True
        self._timer.cancel()
        self.socket.close()
        for connection in list(self._connections.values()):
            connection._on_terminated(TerminationReason.ABORTED, "listener closed", error=False)
        self._closed_event.set()

    async def wait_closed(self) -> None:
        """Wait until :meth:`close` finished."""
        await self._closed_event.wait()

    def statistics(self) -> dict[str, int]:
        """Socket and endpoint counters (drops by reason included)."""
        stats = {
            "connections": len(self.endpoint.connections),
            "handshakes_in_progress": self.endpoint.handshakes_in_progress,
            "datagrams_sent": self.socket.datagrams_sent,
            "datagrams_received": self.socket.datagrams_received,
            "send_errors": self.socket.send_errors,
        }
        for reason, count in self.endpoint.drops.items():
            stats[f"dropped_{reason.replace(' ', '_')}"] = count
        return stats

    # -- engine driving -------------------------------------------------------

    def _check_open(self) -> None:
        if self._closed:
            raise LocalProtocolError("the listener is closed")

    def schedule_flush(self) -> None:
        """Run the engine soon (coalesced): after user commands."""
        if not self._flush_scheduled and not self._closed:
            self._flush_scheduled = True
            self._loop.call_soon(self._scheduled_flush)

    def _scheduled_flush(self) -> None:
        self._flush_scheduled = False
        if not self._closed:
            self._flush(time.monotonic_ns())

    def _udp_socket(self, sock: socket.socket) -> UdpSocket:
        on_error = self._on_socket_error if self._icmp_errors else None
        return UdpSocket(sock, self._loop, self._on_datagrams, on_error)

    def _on_socket_error(self, error: OSError, destination: Address) -> None:
        """An ICMP port unreachable ends our dials to that address that are still handshaking."""
        if not isinstance(error, ConnectionRefusedError) or self._closed:
            return
        now = time.monotonic_ns()
        for connection in list(self._connections.values()):
            engine = connection.engine
            if (
                engine.is_initiator
                and not engine.is_established
                and not engine.is_terminated
                and engine.path.address == destination
            ):
                engine.abort(now=now, detail=PORT_UNREACHABLE)
                self.endpoint.mark_ready(engine)
        self._flush(now)

    def _on_datagrams(self, datagrams: list[tuple[bytes, Address]]) -> None:
        now = time.monotonic_ns()
        diversion = self._diversion
        if diversion is not None:
            # Another protocol shares the socket (see divert): its datagrams never
            # reach the engine.
            prefix, handler = diversion
            kept = []
            for data, address in datagrams:
                if data.startswith(prefix):
                    handler(data, address, now)
                else:
                    kept.append((data, address))
            datagrams = kept
        endpoint = self.endpoint
        endpoint.receive_datagrams(datagrams, now)
        if self.socket.backlogged:
            # More datagrams wait in the kernel: drain them first, established
            # traffic may be among them.  First packets get a few handshakes
            # meanwhile (repeats and known peers first).
            endpoint.process_handshakes(now, _HANDSHAKES_WHILE_BACKLOGGED)
        else:
            self._run_handshakes(now)
        self._flush(now)

    def _run_handshakes(self, now: int) -> None:
        """One slice of new handshakes (HANDSHAKE_BUDGET_NS); the next one after I/O."""
        endpoint = self.endpoint
        if not endpoint.handshake_backlog:
            return
        deadline = time.monotonic_ns() + HANDSHAKE_BUDGET_NS
        while endpoint.process_handshakes(now, _HANDSHAKES_PER_STEP):
            if time.monotonic_ns() >= deadline:
                if not self._handshakes_scheduled:
                    # At most half the time for new handshakes while they keep coming:
                    # the rest is for established traffic, timers and other processes.
                    self._handshakes_scheduled = True
                    self._loop.call_later(HANDSHAKE_BUDGET_NS / 1e9, self._scheduled_handshakes)
                return

    def _scheduled_handshakes(self) -> None:
        self._handshakes_scheduled = False
        if not self._closed and not self.socket.backlogged:
            now = time.monotonic_ns()
            self._run_handshakes(now)
            self._flush(now)

    def _on_timer(self) -> None:
        if self._closed:
            return
        now = time.monotonic_ns()
        self.endpoint.handle_timer(now)
        self._flush(now)

    def _flush(self, now: int) -> None:
        endpoint = self.endpoint
        datagrams = endpoint.datagrams_to_send(now)
        if datagrams:
            self.socket.send(datagrams)
        while (event := endpoint.next_event()) is not None:
            self._dispatch(event)
        if self._closed:
            return
        if endpoint.more_to_send:
            # A burst of arrivals queued more ACKs than one call sends, and no timer
            # covers them: the rest go out on the next turn of the loop (after reads).
            self.schedule_flush()
        self._timer.arm(endpoint.get_timer())

    def _dispatch(self, event: Event) -> None:
        connection = self._connections.get(event.connection_id)
        if isinstance(event, ConnectionEstablished):
            if connection is None:
                engine = self.endpoint.connections.get(event.connection_id)
                if engine is None:
                    return
                connection = QotpConnection(self, engine)
                self._connections[event.connection_id] = connection
                connection._on_established()
                self._accept_queue.put_nowait(connection)
            else:
                connection._on_established()
            return
        if connection is None:
            # Every connection is announced by ConnectionEstablished (the responder's
            # on its first authenticated packet) before any stream event; events of
            # one already gone are moot.
            return
        if isinstance(event, StreamOpened):
            connection._on_stream_opened(event.stream_id)
        elif isinstance(event, StreamDataAvailable):
            connection._on_data(event.stream_id)
        elif isinstance(event, StreamWritable):
            connection._on_writable()
        elif isinstance(event, StreamSendFinished):
            connection._on_send_finished(event.stream_id)
        elif isinstance(event, StreamClosed):
            connection._on_stream_closed(event.stream_id)
        elif isinstance(event, PeerAddressChanged):
            connection.address = event.new_address
            connection._on_address_change(
                AddressChange(
                    connection_id=event.connection_id,
                    local=False,
                    old_address=event.old_address,
                    new_address=event.new_address,
                )
            )
        elif isinstance(event, ConnectionTerminated):
            self._connections.pop(event.connection_id, None)
            connection._on_terminated(event.reason, event.detail, error=event.error)


class QotpConnection(ClosesOnExit):
    """One peer: many streams, opened by either side with ids the opener picks."""

    def __init__(self, listener: QotpListener, engine: Connection) -> None:
        self._listener = listener
        self.engine = engine
        self.connection_id = engine.connection_id
        self.address = engine.address
        self._streams: dict[int, QotpStream] = {}
        self._incoming: asyncio.Queue[QotpStream] = asyncio.Queue()
        self._established = asyncio.Event()
        self._terminated = asyncio.Event()
        self.close_reason: TerminationReason | None = None
        """How the connection ended (None while it is open)."""
        self.close_detail = ""
        """Specifics of the ending, in words."""
        self.closed_by_error = False
        self.address_changes: deque[AddressChange] = deque(maxlen=64)
        """The latest path changes, oldest first (see :meth:`on_address_change`)."""
        self._address_callbacks: list[Callable[[AddressChange], None]] = []
        if engine.is_established:
            self._established.set()

    @property
    def peer_public_key(self) -> bytes | None:
        """The peer's authenticated identity, once known (native: its public key)."""
        return self.engine.protection.peer_identity

    @property
    def early_data(self) -> list[EarlyData]:
        """Stream bytes that arrived as 0-RTT data; ``replayable`` ones could be a replay.

        See :class:`qotp.connection.EarlyData` and ``QotpConfiguration.zero_rtt``.
        """
        return list(self.engine.early_data)

    @property
    def peer_address(self) -> Address:
        """Where the peer is now: (host, port) of its latest authenticated packet.

        QOTP follows a peer across address changes (NAT rebinding, roaming), so
        this can change during the connection.  Same as ``address`` and as
        ``get_extra_info("peername")``.
        """
        return self.address

    def get_extra_info(self, name: str, default: object = None) -> object:
        """Transport facts by name, as asyncio transports give them.

        ``"peername"``: the peer's (host, port); ``"sockname"``: ours;
        ``"socket"``: the UDP socket (shared by every connection of the
        listener: do not read from it); ``"peer_public_key"``: the peer's
        authenticated identity; ``"connection_id"``: the QOTP connection id.
        """
        values: dict[str, object] = {
            "peername": self.address,
            "sockname": self._listener.local_address,
            "socket": self._listener.socket.sock,
            "peer_public_key": self.peer_public_key,
            "connection_id": self.connection_id,
        }
        return values.get(name, default)

    def __aiter__(self) -> AsyncIterator[QotpStream]:
        """``async for stream in connection``: each stream the peer opens, until the end."""
        return self._iterate_streams()

    async def _iterate_streams(self) -> AsyncIterator[QotpStream]:
        while True:
            try:
                stream = await self.accept_stream()
            except ConnectionClosedError:
                return
            yield stream

    @property
    def local_identity(self) -> KeyPair | None:
        """Our identity key pair (native crypto; None over DTLS): for identity proofs."""
        return self._listener.endpoint.identity

    @property
    def is_established(self) -> bool:
        """Whether the handshake completed (0-RTT dialers: the peer's reply arrived)."""
        return self._established.is_set()

    @property
    def is_closed(self) -> bool:
        """Whether the connection ended."""
        return self._terminated.is_set()

    def closed_error(self) -> ConnectionClosedError:
        """The exception describing how the connection ended (call once it did)."""
        return ConnectionClosedError(
            self.close_reason or TerminationReason.ABORTED, self.close_detail
        )

    def stream(self, stream_id: int) -> QotpStream:
        """The stream with this id (created locally if new).

        A stream is forgotten once both directions finished (StreamClosed), so
        asking again for its id gives a new stream; writing to it raises
        LocalProtocolError while the id cannot be reused yet (two minutes).
        Writing to a new stream also raises it when ``max_streams`` of ours are
        open.
        """
        stream = self._streams.get(stream_id)
        if stream is None:
            stream = self._streams[stream_id] = QotpStream(self, stream_id)
        return stream

    async def accept_stream(self) -> QotpStream:
        """The next stream the peer opened."""
        if self.is_closed and self._incoming.empty():
            raise self.closed_error()
        getter = asyncio.ensure_future(self._incoming.get())
        closed = asyncio.ensure_future(self._terminated.wait())
        try:
            done, _ = await asyncio.wait({getter, closed}, return_when=asyncio.FIRST_COMPLETED)
        except asyncio.CancelledError:
            # A cancelled caller must not leave a getter behind that would swallow
            # the next stream, nor lose one it already took.
            closed.cancel()
            if getter.done() and not getter.cancelled():
                self._incoming.put_nowait(getter.result())
            else:
                getter.cancel()
            raise
        if getter in done:
            closed.cancel()
            return getter.result()
        getter.cancel()
        raise self.closed_error()

    async def wait_established(self) -> None:
        """Wait for the handshake; raises if the connection ends first."""
        if self._established.is_set():
            return
        established = asyncio.ensure_future(self._established.wait())
        closed = asyncio.ensure_future(self._terminated.wait())
        done, _ = await asyncio.wait({established, closed}, return_when=asyncio.FIRST_COMPLETED)
        established.cancel()
        closed.cancel()
        if not self._established.is_set():
            raise self.closed_error()

    def statistics(self) -> ConnectionStatistics:
        """RTT, bandwidth estimate, bytes, retransmissions, drops."""
        return self.engine.statistics()

    def on_address_change(self, callback: Callable[[AddressChange], None]) -> None:
        """Call ``callback`` on every path change: the peer moved (its replies follow
        only once the new address proved it receives), or our listener rebound."""
        self._address_callbacks.append(callback)

    def ping(self) -> None:
        """Send an acknowledged PING: a keep-alive for NAT mappings and the idle timeout."""
        if not self.is_closed:
            self.engine.ping(0, now=time.monotonic_ns())
            self._kick()

    def move_to(self, address: Address) -> None:
        """Send to the peer at ``address`` from now on (e.g. a direct path found later).

        The peer sees our packets arrive from the new path and moves its
        replies there once the path is validated.
        """
        if self.is_closed or address == self.engine.address:
            return
        self.engine.move_to(address, now=time.monotonic_ns())
        self._kick()

    def close(self) -> None:
        """FIN every stream; the connection ends when they are done."""
        if not self.is_closed:
            for stream in self._streams.values():
                stream._flush_pending()
            self.engine.close(now=time.monotonic_ns())
            self._kick()

    def abort(self) -> None:
        """End the connection now."""
        self.engine.abort(now=time.monotonic_ns(), detail="by the application")
        self._kick()

    async def wait_closed(self) -> None:
        """Wait until the connection ended."""
        await self._terminated.wait()

    # -- from the listener ----------------------------------------------------

    def _kick(self) -> None:
        self._listener.endpoint.mark_ready(self.engine)
        self._listener.schedule_flush()

    def _on_established(self) -> None:
        self._established.set()

    def _on_address_change(self, change: AddressChange) -> None:
        self.address_changes.append(change)
        for callback in list(self._address_callbacks):
            callback(change)

    def _on_stream_opened(self, stream_id: int) -> None:
        self._incoming.put_nowait(self.stream(stream_id))

    def _on_data(self, stream_id: int) -> None:
        self.stream(stream_id)._wake_reader()

    def _on_writable(self) -> None:
        for stream in list(self._streams.values()):
            stream._on_writable()

    def _on_send_finished(self, stream_id: int) -> None:
        stream = self._streams.get(stream_id)
        if stream is not None:
            stream._send_finished.set()

    def _on_stream_closed(self, stream_id: int) -> None:
        # Forgotten here, or a long-lived connection would keep an object for
        # every stream it ever carried; the user's handle keeps working.
        stream = self._streams.pop(stream_id, None)
        if stream is not None:
            stream._on_finished()

    def _on_terminated(self, reason: TerminationReason, detail: str, *, error: bool) -> None:
        if self._terminated.is_set():
            return
        self.close_reason = reason
        self.close_detail = detail
        self.closed_by_error = error
        self._terminated.set()
        for stream in list(self._streams.values()):
            stream._on_closed()


class QotpStream(ClosesOnExit):
    """Ordered reliable bytes in both directions, like an asyncio reader and writer in one."""

    def __init__(self, connection: QotpConnection, stream_id: int) -> None:
        self.connection = connection
        self.stream_id = stream_id
        self._engine = connection.engine
        self._pending: deque[bytes] = deque()
        self._pending_bytes = 0
        #: Bytes read from the engine beyond what readuntil() returned.
        self._buffer = bytearray()
        self._close_requested = False
        self._close_sent = False
        #: Both directions finished: the engine forgot the stream (its at_eof
        #: only remembers that for a while).
        self._finished = False
        self._readable = asyncio.Event()
        self._writable = asyncio.Event()
        self._closed = asyncio.Event()
        self._send_finished = asyncio.Event()

    # -- reading --------------------------------------------------------------

    async def read(self, n: int = -1) -> bytes:
        """Up to ``n`` bytes (all available if negative); b"" at the end of the stream.

        With ``n < 0`` it reads until the peer closes the stream, like
        ``asyncio.StreamReader.read()``.  b"" means the peer finished the stream:
        if the connection ends any other way first (idle timeout, retry limit,
        abort, protocol violation, failed handshake), what was received is still
        returned, and then :class:`ConnectionClosedError` is raised, so that a
        truncated transfer never reads as complete.
        """
        if n < 0:
            chunks = []
            while chunk := await self.read(1 << 20):
                chunks.append(chunk)
            return b"".join(chunks)
        if n == 0:
            return b""
        if self._buffer:
            data = bytes(self._buffer[:n])
            del self._buffer[:n]
            return data
        while True:
            engine = self._engine
            if engine.readable(self.stream_id):
                data = engine.read(self.stream_id, n, now=time.monotonic_ns())
                self.connection._kick()  # reading frees window; ACKs advertise it
                return data
            if self._finished or engine.at_eof(self.stream_id):
                return b""
            if self.connection.is_closed:
                raise self.connection.closed_error()
            self._readable.clear()
            await self._wait(self._readable)

    async def readexactly(self, n: int) -> bytes:
        """Exactly ``n`` bytes, or :class:`asyncio.IncompleteReadError` at the end of the stream."""
        chunks: list[bytes] = []
        missing = n
        while missing:
            chunk = await self.read(missing)
            if not chunk:
                raise asyncio.IncompleteReadError(b"".join(chunks), n)
            chunks.append(chunk)
            missing -= len(chunk)
        return b"".join(chunks)

    async def readuntil(
        self, separator: bytes = b"\n", *, limit: int = STREAM_LIMIT_BYTES
    ) -> bytes:
        """Bytes up to and including ``separator``, as ``asyncio.StreamReader.readuntil``.

        At the end of the stream before the separator, raises
        :class:`asyncio.IncompleteReadError` with what was read; when ``limit``
        bytes came without it, :class:`asyncio.LimitOverrunError` (the bytes
        stay to be read).
        """
        if not separator:
            raise ValueError("separator must not be empty")
        buffer = self._buffer
        searched = 0
        while True:
            found = buffer.find(separator, searched)
            if found >= 0:
                end = found + len(separator)
                if end > limit:
                    raise asyncio.LimitOverrunError("separator found after the limit", found)
                line = bytes(buffer[:end])
                del buffer[:end]
                return line
            if len(buffer) > limit:
                raise asyncio.LimitOverrunError("no separator within the limit", len(buffer))
            searched = max(0, len(buffer) - len(separator) + 1)
            self._buffer = bytearray()  # read() below must come from the engine
            try:
                chunk = await self.read(CHUNK_READ_BYTES)
            finally:
                self._buffer = buffer  # kept for later reads, whatever happened
            buffer.extend(chunk)
            if not chunk:
                partial = bytes(buffer)
                buffer.clear()
                raise asyncio.IncompleteReadError(partial, None)

    async def readline(self) -> bytes:
        """One line including ``b"\\n"``; at the end of the stream what is left (maybe b"")."""
        try:
            return await self.readuntil(b"\n")
        except asyncio.IncompleteReadError as error:
            return error.partial
        except asyncio.LimitOverrunError as error:
            # As asyncio does: a line over the limit is consumed and refused.
            del self._buffer[: error.consumed]
            raise ValueError(str(error)) from None

    def __aiter__(self) -> AsyncIterator[bytes]:
        """``async for line in stream``: lines until the end of the stream."""
        return self._iterate_lines()

    async def _iterate_lines(self) -> AsyncIterator[bytes]:
        while line := await self.readline():
            yield line

    def at_eof(self) -> bool:
        """Whether the peer closed the stream and everything was read."""
        engine = self._engine
        return (
            not self._buffer
            and (self._finished or engine.at_eof(self.stream_id))
            and not engine.readable(self.stream_id)
        )

    # -- writing --------------------------------------------------------------

    def write(self, data: bytes | bytearray | memoryview) -> None:
        """Queue bytes; never blocks.  ``await drain()`` for back-pressure."""
        if self._close_requested:
            raise LocalProtocolError("write after close()")
        if self.connection.is_closed:
            raise self.connection.closed_error()
        if data:
            chunk = bytes(data)
            self._pending.append(chunk)
            self._pending_bytes += len(chunk)
            try:
                self._flush_pending()
            except LocalProtocolError:
                # The engine would not open the stream (max_streams, or an id that
                # ended too recently): nothing of this write was taken.
                self._pending.pop()
                self._pending_bytes -= len(chunk)
                raise

    def _flush_pending(self) -> None:
        engine = self._engine
        if engine.is_terminated:
            return
        now = time.monotonic_ns()
        moved = False
        while self._pending:
            chunk = self._pending[0]
            accepted = engine.send_stream_data(self.stream_id, chunk, now=now)
            if accepted:
                moved = True
                self._pending_bytes -= accepted
            if accepted < len(chunk):
                self._pending[0] = chunk[accepted:]
                break
            self._pending.popleft()
        if not self._pending and self._close_requested and not self._close_sent:
            engine.close_stream(self.stream_id, now=now)
            self._close_sent = True
            moved = True
        if moved:
            self.connection._kick()

    async def drain(self) -> None:
        """Wait until every byte written so far was taken by the engine's send buffer."""
        while True:
            if self.connection.is_closed:
                raise self.connection.closed_error()
            self._flush_pending()
            if not self._pending:
                # Everything is inside the engine's send buffer, whose capacity
                # (16 MiB by default) is the high-water mark.
                return
            self._writable.clear()
            await self._wait(self._writable)

    def close(self) -> None:
        """Send FIN after what was written (half-close: reading goes on)."""
        if self._close_requested or self.connection.is_closed:
            return
        self._close_requested = True
        try:
            self._flush_pending()
        except LocalProtocolError:
            # Closing an unused stream opens it, beyond max_streams here.
            self._close_requested = False
            raise

    async def wait_closed(self) -> None:
        """Wait until both directions are finished (or the connection ended)."""
        await self._closed.wait()

    async def wait_send_finished(self) -> None:
        """Wait until the peer acknowledged everything written and the close.

        Call :meth:`close` first. Raises :class:`ConnectionClosedError` if the
        connection ends before. Useful where the peer's own end of the stream may
        never be signalled: a reference peer that had sent everything when our
        CLOSE reached it may drop its own CLOSE (SPEC.md, section 9).
        """
        while not (self._send_finished.is_set() or self._finished):
            if self.connection.is_closed:
                raise self.connection.closed_error()
            await self._wait(self._send_finished)

    def ping(self) -> None:
        """Send a PING on this stream: acknowledged by the peer, never retransmitted.

        A keep-alive and an RTT probe (its ACK updates
        ``connection.statistics().smoothed_rtt_ns``); it does not open the stream
        at the peer.  Raises :class:`ConnectionClosedError` on a closed connection.
        """
        if self.connection.is_closed:
            raise self.connection.closed_error()
        self._engine.ping(self.stream_id, now=time.monotonic_ns())
        self.connection._kick()

    # -- from the connection --------------------------------------------------

    async def _wait(self, event: asyncio.Event) -> None:
        waiter = asyncio.ensure_future(event.wait())
        closed = asyncio.ensure_future(self.connection._terminated.wait())
        try:
            await asyncio.wait({waiter, closed}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            waiter.cancel()
            closed.cancel()

    def _wake_reader(self) -> None:
        self._readable.set()

    def _on_writable(self) -> None:
        self._flush_pending()
        self._writable.set()

    def _on_finished(self) -> None:
        self._finished = True
        self._send_finished.set()
        self._on_closed()

    def _on_closed(self) -> None:
        self._readable.set()
        self._writable.set()
        self._closed.set()
