"""Blocking DTLS for scripts: a client and a server with plain calls and timeouts.

Like the seeds' synchronous ``createClient`` / ``createServer`` / ``accept``:
the asyncio adapter runs in a background thread with its own event loop, so
retransmissions, close_notify answers and idle timers keep running between
calls; each call hands a coroutine to that loop and waits for it, at most
``timeout`` seconds (``TimeoutError`` after).  One loop thread per client, or
per server and all the connections it accepted.

    with blocking_serve("127.0.0.1", 4433, server_config) as server:
        connection = server.accept(timeout=30)
        connection.send(connection.recv(timeout=5))

    with blocking_connect("127.0.0.1", 4433, client_config) as connection:
        connection.send(b"hello")
"""

from __future__ import annotations

import asyncio
import socket
import threading
from collections.abc import Coroutine
from types import TracebackType
from typing import Any, TypeVar

from cryptography import x509

from ..config import CertificatePrivateKey, DTLSConfiguration
from ..info import ConnectionInfo
from .protocol import AsyncDTLSConnection, DTLSServer, connect, serve
from .udp import SocketOptions

__all__ = ["BlockingDTLSConnection", "BlockingDTLSServer", "blocking_connect", "blocking_serve"]

T = TypeVar("T")


class _LoopThread:
    """An event loop running in a daemon thread; ``run`` waits for a coroutine on it."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, name="dtls-loop", daemon=True)
        self._thread.start()

    def run(self, coroutine: Coroutine[Any, Any, T], timeout: float | None) -> T:
        """Run a coroutine on the loop and wait for it; after ``timeout`` s it is cancelled there.

        The timeout runs inside the loop (``asyncio.wait_for``): work that completed
        is returned, never dropped (waiting here and cancelling afterwards lost a
        datagram or an accepted connection that came in between), and cancelled work
        has stopped before TimeoutError reaches the caller.
        """
        if threading.current_thread() is self._thread:
            coroutine.close()
            raise RuntimeError("a blocking DTLS call cannot run on its own loop thread")
        return asyncio.run_coroutine_threadsafe(_bounded(coroutine, timeout), self.loop).result()

    def finish(self, work: Coroutine[Any, Any, None], *, stop: bool) -> None:
        """Run a closing coroutine (if the loop still runs), then maybe stop the loop."""
        try:
            if self.loop.is_closed():
                work.close()
            else:
                self.run(work, None)
        finally:
            if stop:
                self.stop()

    def stop(self) -> None:
        if self.loop.is_closed():
            return
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join()
        self.loop.close()


async def _bounded(coroutine: Coroutine[Any, Any, T], timeout: float | None) -> T:
    if timeout is None:
        return await coroutine
    try:
        return await asyncio.wait_for(coroutine, timeout)
    except TimeoutError:
        raise TimeoutError(f"no result within {timeout} s") from None


class BlockingDTLSConnection:
    """One DTLS connection with plain blocking calls."""

    def __init__(
        self, runner: _LoopThread, connection: AsyncDTLSConnection, *, owns_loop: bool
    ) -> None:
        self._runner = runner
        self._owns_loop = owns_loop
        self.connection = connection

    def send(self, data: bytes, timeout: float | None = None) -> None:
        """Send one datagram."""
        self._runner.run(self.connection.send(data), timeout)

    def recv(self, timeout: float | None = None) -> bytes:
        """Next datagram (``b""`` at end of data); raises TimeoutError after ``timeout`` s."""
        return self._runner.run(self.connection.recv(), timeout)

    def pending(self) -> int:
        """Datagrams received and not read yet."""
        return self.connection.pending()

    def shutdown(self, *, read: bool, write: bool) -> None:
        """Close one or both directions (write: sends close_notify)."""

        async def _shutdown() -> None:
            self.connection.shutdown(read=read, write=write)

        self._runner.run(_shutdown(), None)

    @property
    def info(self) -> ConnectionInfo:
        """What was negotiated (version, suite, group, ALPN, SRTP, connection ids...)."""
        return self.connection.info

    @property
    def peer_address(self) -> object:
        """Where the peer is now."""
        return self.connection.peer_address

    @property
    def peer_certificates(self) -> tuple[x509.Certificate, ...]:
        """The peer's certificate chain, leaf first."""
        return self.connection.peer_certificates

    def export_keying_material(
        self, label: bytes | str, context: bytes | None, length: int
    ) -> bytes:
        """RFC 5705 exporter."""
        return self.connection.export_keying_material(label, context, length)

    def close(self) -> None:
        """Send close_notify; a client also closes its socket and its loop thread."""

        async def _close() -> None:
            self.connection.close()
            await asyncio.sleep(0)
            await self.connection.__aexit__(None, None, None)

        self._runner.finish(_close(), stop=self._owns_loop)

    def __enter__(self) -> BlockingDTLSConnection:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()


class BlockingDTLSServer:
    """A DTLS server with a blocking ``accept(timeout)``."""

    def __init__(self, runner: _LoopThread, server: DTLSServer) -> None:
        self._runner = runner
        self.server = server

    @property
    def local_address(self) -> tuple[str, int]:
        """The bound (host, port)."""
        return self.server.local_address

    def accept(self, timeout: float | None = None) -> BlockingDTLSConnection:
        """The next peer whose handshake completed; TimeoutError after ``timeout`` s.

        ``ConnectionError`` once the server is closed.
        """
        if self._runner.loop.is_closed():
            raise ConnectionError("server closed")
        connection = self._runner.run(self.server.accept(), timeout)
        return BlockingDTLSConnection(self._runner, connection, owns_loop=False)

    def add_certificate(
        self,
        chain: tuple[x509.Certificate, ...],
        private_key: CertificatePrivateKey,
        server_name: str | None = None,
    ) -> None:
        """Serve ``chain`` for ``server_name`` (SNI) from now on."""

        async def _add() -> None:
            self.server.add_certificate(chain, private_key, server_name)

        self._runner.run(_add(), None)

    def close(self) -> None:
        """close_notify to every peer, close the socket, stop the loop thread."""

        async def _close() -> None:
            self.server.close()
            await asyncio.sleep(0)

        self._runner.finish(_close(), stop=True)

    def __enter__(self) -> BlockingDTLSServer:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()


def blocking_connect(
    host: str | None,
    port: int | None,
    configuration: DTLSConfiguration,
    timeout: float | None = 60.0,
    *,
    local: tuple[str, int] | None = None,
    sock: socket.socket | None = None,
    socket_options: SocketOptions | None = None,
) -> BlockingDTLSConnection:
    """Connect and handshake, blocking; returns a connection usable as a context manager.

    Raises ``ConnectionRefusedError`` at once when the port is closed (ICMP),
    ``HandshakeTimeout``, ``ConnectionError`` (a failed handshake, with the
    alert), ``TimeoutError`` after ``timeout`` s, or ``OSError`` for the socket.
    """
    runner = _LoopThread()
    try:
        connection = runner.run(
            _open(host, port, configuration, local, sock, socket_options), timeout
        )
    except BaseException:
        runner.stop()
        raise
    return BlockingDTLSConnection(runner, connection, owns_loop=True)


def blocking_serve(
    host: str | None,
    port: int | None,
    configuration: DTLSConfiguration,
    *,
    connection_id_bytes: int = 0,
    sock: socket.socket | None = None,
    socket_options: SocketOptions | None = None,
) -> BlockingDTLSServer:
    """A listening server on ``host:port`` (or the adopted ``sock``), with blocking accept."""
    runner = _LoopThread()

    async def _start() -> DTLSServer:
        server = serve(
            host,
            port,
            configuration,
            connection_id_bytes=connection_id_bytes,
            sock=sock,
            socket_options=socket_options,
        )
        return await server.start()

    try:
        server = runner.run(_start(), None)
    except BaseException:
        runner.stop()
        raise
    return BlockingDTLSServer(runner, server)


async def _open(
    host: str | None,
    port: int | None,
    configuration: DTLSConfiguration,
    local: tuple[str, int] | None,
    sock: socket.socket | None,
    socket_options: SocketOptions | None,
) -> AsyncDTLSConnection:
    return await connect(
        host, port, configuration, local=local, sock=sock, socket_options=socket_options
    )
