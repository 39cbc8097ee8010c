"""A blocking QOTP API for scripts and threads: calls that wait, with timeouts.

::

    from qotp.blocking import listen

    with listen("127.0.0.1", 0) as server, listen() as client:
        connection = client.dial(server.local_address, timeout=5)
        stream = connection.stream(0)
        stream.write(b"hello")          # waits while the send buffer is full
        stream.close()
        incoming = server.accept(timeout=5)
        print(incoming.accept_stream(timeout=5).read(timeout=5))

Each listener runs the asyncio API (:mod:`qotp.asyncio`) on an event loop in
a background thread of its own; every call hands the work to that loop and
waits for the answer.  ``timeout`` is in seconds (None waits as long as it
takes); running out raises the built-in :class:`TimeoutError` and leaves the
object usable (a timed-out ``read`` or ``readline`` took nothing; a
timed-out ``readexactly`` may have taken part of what it waited for, as
with ``asyncio.wait_for``).  Failures raise what the
asyncio API raises: :class:`qotp.asyncio.ConnectionClosedError` when the
connection ended, :class:`qotp.errors.LocalProtocolError` for misuse.

The objects may be used from any thread, but not from the listener's own
loop thread (a callback waiting for its own loop would wait forever).
"""

from __future__ import annotations

import asyncio
import socket
import threading
from collections.abc import Callable, Coroutine, Iterator
from types import TracebackType
from typing import Any, Self, TypeVar

from qotp.asyncio import QotpConnection, QotpListener, QotpStream
from qotp.asyncio import listen as listen_async
from qotp.config import QotpConfiguration
from qotp.connection import ConnectionStatistics
from qotp.errors import LocalProtocolError
from qotp.events import TerminationReason
from qotp.keys import KeyPair
from qotp.protection import Address, CryptoLayer

__all__ = ["BlockingConnection", "BlockingListener", "BlockingStream", "listen"]

T = TypeVar("T")


class _Portal:
    """An event loop in a daemon thread, and the way in from other threads."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self.loop.run_forever, name="qotp-blocking", daemon=True
        )
        self._thread.start()

    def call(self, coroutine: Coroutine[Any, Any, T], timeout: float | None) -> T:
        """Run a coroutine on the loop and wait for it; on timeout it is cancelled there.

        The timeout runs inside the loop (``asyncio.wait_for``), so the work is
        fully cancelled before TimeoutError reaches the caller.
        """
        if threading.current_thread() is self._thread:
            coroutine.close()
            raise LocalProtocolError("blocking QOTP calls cannot run on the listener's own loop")
        if self.loop.is_closed():
            coroutine.close()
            raise LocalProtocolError("the listener is closed")
        bounded = coroutine if timeout is None else asyncio.wait_for(coroutine, timeout)
        return asyncio.run_coroutine_threadsafe(bounded, self.loop).result()

    def run(self, function: Callable[[], T]) -> T:
        """Run a plain function on the loop thread (the asyncio objects are not thread-safe)."""

        async def call() -> T:
            return function()

        return self.call(call(), None)

    def stop(self) -> None:
        """Cancel what is left, stop the loop, join the thread, close the loop."""
        if self.loop.is_closed():
            return

        async def cancel_all() -> None:
            current = asyncio.current_task()
            tasks = [task for task in asyncio.all_tasks() if task is not current]
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

        if threading.current_thread() is not self._thread:
            asyncio.run_coroutine_threadsafe(cancel_all(), self.loop).result(5.0)
            self.loop.call_soon_threadsafe(self.loop.stop)
            self._thread.join(5.0)
            self.loop.close()


def listen(
    host: str = "127.0.0.1",
    port: int = 0,
    *,
    identity: KeyPair | None = None,
    configuration: QotpConfiguration | None = None,
    key_log: Callable[[str], None] | None = None,
    crypto: CryptoLayer | None = None,
    sock: socket.socket | None = None,
) -> BlockingListener:
    """Bind (or adopt ``sock``) and start; the arguments of :func:`qotp.asyncio.listen`."""
    portal = _Portal()
    try:
        listener = portal.call(
            listen_async(
                host,
                port,
                identity=identity,
                configuration=configuration,
                key_log=key_log,
                crypto=crypto,
                sock=sock,
            ),
            None,
        )
    except BaseException:
        portal.stop()
        raise
    return BlockingListener(portal, listener)


class _ClosesOnExit:
    def close(self) -> None:
        raise NotImplementedError

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()


class BlockingListener(_ClosesOnExit):
    """One UDP socket: ``accept()`` incoming connections, ``dial()`` outgoing ones."""

    def __init__(self, portal: _Portal, listener: QotpListener) -> None:
        self._portal = portal
        self.listener = listener
        """The asyncio listener underneath (use it only on :attr:`loop`)."""

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        """The event loop in the background thread."""
        return self._portal.loop

    @property
    def public_key(self) -> bytes:
        """Our identity public key; 0-RTT dialers need it."""
        return self.listener.public_key

    @property
    def local_address(self) -> Address:
        """The bound (host, port)."""
        return self.listener.local_address

    def accept(self, timeout: float | None = None) -> BlockingConnection:
        """The next connection a peer opened; TimeoutError if none came in time."""
        connection = self._portal.call(self.listener.accept(), timeout)
        return BlockingConnection(self._portal, connection)

    def __iter__(self) -> Iterator[BlockingConnection]:
        """``for connection in listener``: accept forever (until closed)."""
        while True:
            yield self.accept()

    def dial(
        self,
        address: Address,
        *,
        peer_public_key: bytes | None = None,
        timeout: float | None = 10.0,
    ) -> BlockingConnection:
        """Open a connection and wait for the handshake (0-RTT with ``peer_public_key``).

        TimeoutError when no answer came in time; ConnectionClosedError when
        the handshake failed.
        """

        async def dial() -> QotpConnection:
            connection = self.listener.dial_nowait(address, peer_public_key=peer_public_key)
            try:
                await connection.wait_established()
            except asyncio.CancelledError:
                connection.abort()
                raise
            return connection

        return BlockingConnection(self._portal, self._portal.call(dial(), timeout))

    def statistics(self) -> dict[str, int]:
        """Socket and endpoint counters."""
        return self._portal.run(self.listener.statistics)

    def close(self) -> None:
        """Close every connection (peers get the CLOSEs), the socket, and the loop thread."""
        if self._portal.loop.is_closed():
            return
        try:
            self._portal.call(self.listener.aclose(), None)
        finally:
            self._portal.stop()


class BlockingConnection(_ClosesOnExit):
    """One peer; streams opened by either side."""

    def __init__(self, portal: _Portal, connection: QotpConnection) -> None:
        self._portal = portal
        self.connection = connection
        """The asyncio connection underneath."""

    @property
    def peer_address(self) -> Address:
        """The peer's (host, port) now (it may change: QOTP follows roaming peers)."""
        return self.connection.peer_address

    @property
    def peer_public_key(self) -> bytes | None:
        """The peer's authenticated identity."""
        return self.connection.peer_public_key

    @property
    def connection_id(self) -> int:
        """The QOTP connection id."""
        return self.connection.connection_id

    @property
    def is_closed(self) -> bool:
        """Whether the connection ended."""
        return self.connection.is_closed

    @property
    def close_reason(self) -> TerminationReason | None:
        """Why it ended, once it did (details in :attr:`close_detail`)."""
        return self.connection.close_reason

    @property
    def close_detail(self) -> str:
        """Specifics of :attr:`close_reason`."""
        return self.connection.close_detail

    def get_extra_info(self, name: str, default: object = None) -> object:
        """As :meth:`qotp.asyncio.QotpConnection.get_extra_info` (``"peername"``, ...)."""
        return self.connection.get_extra_info(name, default)

    def stream(self, stream_id: int) -> BlockingStream:
        """The stream with this id (opened by us if new)."""
        return BlockingStream(
            self._portal, self._portal.run(lambda: self.connection.stream(stream_id))
        )

    def accept_stream(self, timeout: float | None = None) -> BlockingStream:
        """The next stream the peer opened; ConnectionClosedError once none can come."""
        return BlockingStream(
            self._portal, self._portal.call(self.connection.accept_stream(), timeout)
        )

    def __iter__(self) -> Iterator[BlockingStream]:
        """``for stream in connection``: each stream the peer opens, until the connection ends."""
        while True:
            try:
                yield self.accept_stream()
            except ConnectionError:
                return

    def statistics(self) -> ConnectionStatistics:
        """RTT, bandwidth estimate, bytes, retransmissions."""
        return self._portal.run(self.connection.statistics)

    def close(self) -> None:
        """FIN every stream; the connection ends when they are done."""
        if not self._portal.loop.is_closed():
            self._portal.run(self.connection.close)

    def abort(self) -> None:
        """End the connection now."""
        self._portal.run(self.connection.abort)

    def wait_closed(self, timeout: float | None = None) -> None:
        """Wait until the connection ended."""
        self._portal.call(self.connection.wait_closed(), timeout)


class BlockingStream(_ClosesOnExit):
    """Ordered reliable bytes both ways; reads and writes wait, with timeouts."""

    def __init__(self, portal: _Portal, stream: QotpStream) -> None:
        self._portal = portal
        self.stream = stream
        """The asyncio stream underneath."""

    @property
    def stream_id(self) -> int:
        """The stream id."""
        return self.stream.stream_id

    def read(self, n: int = -1, timeout: float | None = None) -> bytes:
        """Up to ``n`` bytes (to the end of the stream if negative); b"" at the end."""
        return self._portal.call(self.stream.read(n), timeout)

    def readexactly(self, n: int, timeout: float | None = None) -> bytes:
        """Exactly ``n`` bytes, or :class:`asyncio.IncompleteReadError` at the end."""
        return self._portal.call(self.stream.readexactly(n), timeout)

    def readline(self, timeout: float | None = None) -> bytes:
        """One line including ``b"\\n"``; what is left (maybe b"") at the end."""
        return self._portal.call(self.stream.readline(), timeout)

    def readuntil(self, separator: bytes = b"\n", timeout: float | None = None) -> bytes:
        """Bytes up to and including ``separator``."""
        return self._portal.call(self.stream.readuntil(separator), timeout)

    def __iter__(self) -> Iterator[bytes]:
        """``for line in stream``: lines until the end of the stream."""
        while line := self.readline():
            yield line

    def write(self, data: bytes | bytearray | memoryview, timeout: float | None = None) -> None:
        """Send bytes; waits while the send buffer is full (TimeoutError: the rest is queued)."""
        payload = bytes(data)

        async def write() -> None:
            self.stream.write(payload)
            await self.stream.drain()

        self._portal.call(write(), timeout)

    def close(self) -> None:
        """Send FIN after what was written (reading goes on)."""
        if not self._portal.loop.is_closed():
            self._portal.run(self.stream.close)

    def ping(self) -> None:
        """Send a PING (an RTT probe and keep-alive)."""
        self._portal.run(self.stream.ping)

    def at_eof(self) -> bool:
        """Whether the peer closed the stream and everything was read."""
        return self._portal.run(self.stream.at_eof)

    def wait_closed(self, timeout: float | None = None) -> None:
        """Wait until both directions are finished (or the connection ended)."""
        self._portal.call(self.stream.wait_closed(), timeout)
