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
from types import TracebackType
from typing import Self

from qotp.config import QotpConfiguration
from qotp.connection import Connection, ConnectionStatistics
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
    StreamWritable,
    TerminationReason,
)
from qotp.keys import KeyPair
from qotp.protection import Address, CryptoLayer

from .transport import UdpSocket

__all__ = ["ConnectionClosedError", "QotpConnection", "QotpListener", "QotpStream", "listen"]


class ConnectionClosedError(QotpError, ConnectionError):
    """The connection ended before a stream operation could complete.

    ``reason`` says how (:class:`qotp.events.TerminationReason`), ``detail`` the
    specifics.  :meth:`QotpStream.read` raises it for a stream the peer had not
    finished, so a truncated transfer never reads as a clean end of stream.
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
) -> QotpListener:
    """Bind a UDP socket and start the engine on it; the listener accepts and dials.

    ``crypto`` picks the crypto layer (default: QOTP's native envelope with
    ``identity``); e.g. :class:`qotp.dtls_protection.DtlsCryptoLayer` runs
    the whole API over DTLS 1.2.
    """
    loop = asyncio.get_running_loop()
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
    return QotpListener(endpoint, sock, loop)


class _ClosesOnExit:
    """``async with`` support for objects whose ``close()`` needs no waiting."""

    def close(self) -> None:
        raise NotImplementedError

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()


class QotpListener(_ClosesOnExit):
    """One UDP socket with its QOTP engine: ``accept()`` incoming, ``dial()`` outgoing."""

    def __init__(
        self, endpoint: QotpEndpoint, sock: socket.socket, loop: asyncio.AbstractEventLoop
    ) -> None:
        self.endpoint = endpoint
        self._loop = loop
        self._connections: dict[int, QotpConnection] = {}
        self._accept_queue: asyncio.Queue[QotpConnection] = asyncio.Queue()
        self._dials: dict[int, asyncio.Future[QotpConnection]] = {}
        self._timer: asyncio.TimerHandle | None = None
        self._timer_deadline: int | None = None
        self._flush_scheduled = False
        self._closed = False
        self._closed_event = asyncio.Event()
        self.socket = UdpSocket(sock, loop, self._on_datagrams)

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

    def close(self) -> None:
        """Close every connection and the socket (no waiting: QOTP has no connection close)."""
        if self._closed:
            return
        now = time.monotonic_ns()
        for connection in list(self._connections.values()):
            connection.engine.close(now=now)
        self._flush(now)
        self._closed = True
        if self._timer is not None:
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

    def _on_datagrams(self, datagrams: list[tuple[bytes, Address]]) -> None:
        now = time.monotonic_ns()
        receive = self.endpoint.receive_datagram
        for data, address in datagrams:
            receive(data, address, now)
        self._flush(now)

    def _on_timer(self) -> None:
        self._timer = None
        self._timer_deadline = None
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
        deadline = endpoint.get_timer()
        if deadline != self._timer_deadline:
            if self._timer is not None:
                self._timer.cancel()
                self._timer = None
            self._timer_deadline = deadline
            if deadline is not None:
                # loop.time() is time.monotonic() on every stock loop.
                self._timer = self._loop.call_at(deadline / 1e9, self._on_timer)

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
        elif isinstance(event, StreamClosed):
            connection._on_stream_closed(event.stream_id)
        elif isinstance(event, PeerAddressChanged):
            connection.address = event.new_address
        elif isinstance(event, ConnectionTerminated):
            self._connections.pop(event.connection_id, None)
            connection._on_terminated(event.reason, event.detail, error=event.error)


class QotpConnection(_ClosesOnExit):
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
        if engine.is_established:
            self._established.set()

    @property
    def peer_public_key(self) -> bytes | None:
        """The peer's authenticated identity, once known (native: its public key)."""
        return self.engine.protection.peer_identity

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
        done, _ = await asyncio.wait({getter, closed}, return_when=asyncio.FIRST_COMPLETED)
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

    def _on_stream_opened(self, stream_id: int) -> None:
        self._incoming.put_nowait(self.stream(stream_id))

    def _on_data(self, stream_id: int) -> None:
        self.stream(stream_id)._wake_reader()

    def _on_writable(self) -> None:
        for stream in list(self._streams.values()):
            stream._on_writable()

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


class QotpStream(_ClosesOnExit):
    """Ordered reliable bytes in both directions, like an asyncio reader and writer in one."""

    def __init__(self, connection: QotpConnection, stream_id: int) -> None:
        self.connection = connection
        self.stream_id = stream_id
        self._engine = connection.engine
        self._pending: deque[bytes] = deque()
        self._pending_bytes = 0
        self._close_requested = False
        self._close_sent = False
        #: Both directions finished: the engine forgot the stream (its at_eof
        #: only remembers that for a while).
        self._finished = False
        self._readable = asyncio.Event()
        self._writable = asyncio.Event()
        self._closed = asyncio.Event()

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

    def at_eof(self) -> bool:
        """Whether the peer closed the stream and everything was read."""
        engine = self._engine
        return (self._finished or engine.at_eof(self.stream_id)) and not engine.readable(
            self.stream_id
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
        self._on_closed()

    def _on_closed(self) -> None:
        self._readable.set()
        self._writable.set()
        self._closed.set()
