"""The asyncio glue: socket, one timer, event fan-out.  No protocol logic lives here."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from collections.abc import Generator, Sequence
from types import TracebackType
from typing import Any, cast

from cryptography import x509

from ..config import CertificatePrivateKey, DTLSConfiguration
from ..connection import Address, DTLSConnection
from ..endpoint import DTLSEndpoint
from ..errors import HandshakeTimeout, LocalProtocolError
from ..events import (
    ApplicationDataReceived,
    ConnectionAccepted,
    ConnectionTerminated,
    HandshakeCompleted,
    PeerClosedWrite,
)
from ..suites import SrtpProfile

__all__ = ["AsyncDTLSConnection", "DTLSServer", "EndpointProtocol", "connect", "serve"]

logger = logging.getLogger(__name__)


class AsyncDTLSConnection:
    """One peer, seen from asyncio: ``send`` / ``recv`` datagrams, ``close``."""

    def __init__(self, protocol: EndpointProtocol, connection: DTLSConnection) -> None:
        self._protocol = protocol
        self.connection = connection
        self._handshake_done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._readable = asyncio.Event()
        if connection.is_established:
            self._handshake_done.set_result(None)

    # -- engine notifications (called by the protocol)
    def _on_event(self, event: object) -> None:
        if isinstance(event, HandshakeCompleted):
            if not self._handshake_done.done():
                self._handshake_done.set_result(None)
        elif isinstance(event, ConnectionTerminated):
            if not self._handshake_done.done():
                error: Exception = (
                    HandshakeTimeout(event.reason)
                    if event.reason.startswith("handshake timeout")
                    else ConnectionError(event.reason)
                )
                self._handshake_done.set_exception(error)
                self._handshake_done.exception()  # mark retrieved: callers may never await
            self._readable.set()
        elif isinstance(event, ApplicationDataReceived | PeerClosedWrite):
            self._readable.set()

    # -- API
    async def handshake(self) -> None:
        """Wait until the handshake completed.

        Raises :class:`HandshakeTimeout` when it timed out and ``ConnectionError``
        when it failed otherwise (the reason names the alert).
        """
        await asyncio.shield(self._handshake_done)

    async def send(self, data: bytes) -> None:
        """Send one datagram (handshaking first if needed)."""
        await self.handshake()
        self.connection.send(data)
        self._protocol.flush(self.connection)

    async def recv(self) -> bytes:
        """Next datagram; ``b""`` after the peer's close_notify (end of data).

        Raises ConnectionError when the connection ended without close_notify
        and ``require_close_notify`` is set.
        """
        await self.handshake()
        while True:
            data = self.connection.receive()
            if data is not None:
                return data
            if self.connection.peer_closed:
                return b""
            if self.connection.state.value == "closed":
                if self.connection.configuration.require_close_notify:
                    raise ConnectionError(self.connection.terminated_reason or "closed")
                return b""
            self._readable.clear()
            await self._readable.wait()

    def pending(self) -> int:
        """Datagrams received and not read yet."""
        return self.connection.pending()

    def shutdown(self, *, read: bool, write: bool) -> None:
        """Close one or both directions (write: sends close_notify)."""
        self.connection.shutdown(read=read, write=write)
        self._protocol.flush(self.connection)
        self._readable.set()

    def close(self) -> None:
        """Send close_notify and stop."""
        self.shutdown(read=True, write=True)

    async def __aenter__(self) -> AsyncDTLSConnection:
        await self.handshake()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        if self.connection.state.value != "closed":
            self.close()
        if self._protocol.owns_transport_for(self):
            self._protocol.close()

    # -- properties
    @property
    def peer_address(self) -> Address:
        """Where the peer is now (it may move when a connection id is in use)."""
        return self.connection.address

    @property
    def negotiated_version(self) -> str | None:
        """``"DTLSv1.2"``."""
        return self.connection.negotiated_version

    @property
    def cipher_suite(self) -> str | None:
        """IANA cipher-suite name."""
        return self.connection.cipher_suite_name

    @property
    def alpn_protocol(self) -> str | None:
        """Negotiated ALPN protocol."""
        return self.connection.alpn_protocol

    @property
    def srtp_profile(self) -> SrtpProfile | None:
        """Negotiated DTLS-SRTP profile."""
        return self.connection.srtp_profile

    @property
    def peer_certificates(self) -> tuple[x509.Certificate, ...]:
        """The peer's certificate chain, leaf first."""
        return self.connection.peer_certificates

    @property
    def peer_certificate_errors(self) -> tuple[str, ...]:
        """What validation found wrong with the peer chain (seen by the verify callback)."""
        return self.connection.peer_certificate_errors

    @property
    def client_random(self) -> bytes:
        """ClientHello.random."""
        return self.connection.client_random

    @property
    def server_random(self) -> bytes:
        """ServerHello.random."""
        return self.connection.server_random

    @property
    def connection_id(self) -> bytes:
        """The RFC 9146 connection id the peer puts on records to us (b"" when none)."""
        return self.connection.local_connection_id

    @property
    def peer_connection_id(self) -> bytes:
        """The connection id we put on records to the peer (b"" when none)."""
        return self.connection.peer_connection_id

    @property
    def session_resumed(self) -> bool:
        """Whether the handshake was abbreviated (session id or ticket)."""
        return self.connection.session_resumed

    def export_keying_material(
        self, label: bytes | str, context: bytes | None, length: int
    ) -> bytes:
        """RFC 5705 exporter."""
        return self.connection.export_keying_material(label, context, length)

    def channel_binding(self, binding_type: str = "tls-exporter") -> bytes:
        """Channel-binding data (``tls-exporter`` or ``tls-unique``)."""
        return self.connection.channel_binding(binding_type)


class EndpointProtocol(asyncio.DatagramProtocol):
    """Feeds the socket into a :class:`DTLSEndpoint` and runs its single timer."""

    def __init__(self, endpoint: DTLSEndpoint) -> None:
        self.endpoint = endpoint
        self.transport: asyncio.DatagramTransport | None = None
        self._loop = asyncio.get_running_loop()
        self._timer: asyncio.TimerHandle | None = None
        self._timer_deadline: int | None = None
        self._wrappers: dict[int, AsyncDTLSConnection] = {}
        self._accepted: asyncio.Queue[AsyncDTLSConnection] = asyncio.Queue()
        self._owner: AsyncDTLSConnection | None = None
        self.closed = self._loop.create_future()

    # -- asyncio callbacks
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        """asyncio: the socket is ready."""
        # Selector transports do not all subclass DatagramTransport, so no isinstance here.
        self.transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: Any) -> None:
        """asyncio: feed one datagram to the endpoint, then send, fan out, re-arm."""
        self.endpoint.receive_datagram(data, addr, time.monotonic_ns())
        self._process()

    def error_received(self, exc: Exception) -> None:
        """asyncio: ICMP errors and the like; DTLS relies on its own timers instead."""
        logger.debug("socket error: %s", exc)

    def connection_lost(self, exc: Exception | None) -> None:
        """asyncio: the socket closed; every connection on it ends."""
        if self._timer is not None:
            self._timer.cancel()
        for wrapper in self._wrappers.values():
            wrapper.connection.abort("socket closed")
            wrapper._on_event(ConnectionTerminated(peer=0, reason="socket closed"))
        if not self.closed.done():
            self.closed.set_result(None)

    # -- plumbing used by connections and servers
    def wrap(self, connection: DTLSConnection) -> AsyncDTLSConnection:
        """The asyncio face of an engine connection (one per peer)."""
        wrapper = self._wrappers.get(connection.peer_id)
        if wrapper is None:
            wrapper = AsyncDTLSConnection(self, connection)
            self._wrappers[connection.peer_id] = wrapper
        return wrapper

    def set_owner(self, wrapper: AsyncDTLSConnection) -> None:
        """A client connection that owns the socket closes it on exit."""
        self._owner = wrapper

    def owns_transport_for(self, wrapper: AsyncDTLSConnection) -> bool:
        """Whether closing ``wrapper`` should close the socket too (client sockets)."""
        return self._owner is wrapper

    def flush(self, connection: DTLSConnection) -> None:
        """Send what a command on ``connection`` produced and re-arm the timer."""
        self.endpoint.collect(connection)
        self._process()

    async def accept(self) -> AsyncDTLSConnection:
        """Next server connection whose handshake completed.

        Raises ``ConnectionError`` once the socket is closed, so no caller waits forever.
        """
        if not self._accepted.empty():
            return self._accepted.get_nowait()
        if self.closed.done():
            raise ConnectionError("server closed")
        getter = asyncio.ensure_future(self._accepted.get())
        await asyncio.wait({getter, self.closed}, return_when=asyncio.FIRST_COMPLETED)
        if getter.done():
            return getter.result()
        getter.cancel()
        raise ConnectionError("server closed")

    def close(self) -> None:
        """close_notify to every live connection, then close the socket."""
        for wrapper in list(self._wrappers.values()):
            if wrapper.connection.state.value != "closed":
                wrapper.connection.close()
                self.endpoint.collect(wrapper.connection)
        self._send()
        if self.transport is not None:
            self.transport.close()

    def _send(self) -> None:
        if self.transport is None:
            return
        for datagram, addr in self.endpoint.datagrams_to_send(time.monotonic_ns()):
            self.transport.sendto(datagram, addr if isinstance(addr, tuple) else None)

    def _process(self) -> None:
        self._send()
        while (event := self.endpoint.next_event()) is not None:
            if isinstance(event, ConnectionAccepted):
                connection = self.endpoint.accept()
                if connection is not None:
                    self._accepted.put_nowait(self.wrap(connection))
                continue
            wrapper = self._wrappers.get(event.peer)
            if wrapper is None:
                connection = self.endpoint.connection(event.peer)
                if connection is None:
                    continue
                wrapper = self.wrap(connection)
            wrapper._on_event(event)
            if isinstance(event, ConnectionTerminated):
                self._wrappers.pop(event.peer, None)
        self._arm_timer()

    def _arm_timer(self) -> None:
        deadline = self.endpoint.get_timer()
        if deadline == self._timer_deadline:
            return
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._timer_deadline = deadline
        if deadline is not None:
            delay = max(0.0, (deadline - time.monotonic_ns()) / 1e9)
            self._timer = self._loop.call_later(delay, self._on_timer)

    def _on_timer(self) -> None:
        self._timer = None
        self._timer_deadline = None
        self.endpoint.handle_timer(time.monotonic_ns())
        self._process()


class DTLSServer:
    """A listening DTLS server: ``await accept()`` yields one connection per peer."""

    def __init__(
        self, host: str, port: int, configuration: DTLSConfiguration, connection_id_bytes: int
    ) -> None:
        self._host = host
        self._port = port
        self._configuration = dataclasses.replace(configuration, is_client=False)
        self._connection_id_bytes = connection_id_bytes
        self.protocol: EndpointProtocol | None = None

    async def start(self) -> DTLSServer:
        """Bind the socket."""
        loop = asyncio.get_running_loop()
        endpoint = DTLSEndpoint(self._configuration, connection_id_bytes=self._connection_id_bytes)
        _, protocol = await loop.create_datagram_endpoint(
            lambda: EndpointProtocol(endpoint), local_addr=(self._host, self._port)
        )
        self.protocol = protocol
        return self

    @property
    def endpoint(self) -> DTLSEndpoint:
        """The sans-IO endpoint behind the socket (for add_certificate and counters)."""
        if self.protocol is None:
            raise LocalProtocolError("server not started")
        return self.protocol.endpoint

    @property
    def local_address(self) -> tuple[str, int]:
        """The bound (host, port)."""
        if self.protocol is None or self.protocol.transport is None:
            raise LocalProtocolError("server not started")
        name = self.protocol.transport.get_extra_info("sockname")
        return name[0], name[1]

    def add_certificate(
        self,
        chain: tuple[x509.Certificate, ...],
        private_key: CertificatePrivateKey,
        server_name: str | None = None,
    ) -> None:
        """Serve ``chain`` for ``server_name`` (SNI) from now on; works while running."""
        self.endpoint.add_certificate(chain, private_key, server_name)

    async def accept(self) -> AsyncDTLSConnection:
        """Wait for the next peer whose handshake completed."""
        if self.protocol is None:
            raise LocalProtocolError("server not started")
        return await self.protocol.accept()

    def close(self) -> None:
        """close_notify to every peer, then close the socket."""
        if self.protocol is not None:
            self.protocol.close()

    async def __aenter__(self) -> DTLSServer:
        if self.protocol is None:
            await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()


def serve(
    host: str, port: int, configuration: DTLSConfiguration, *, connection_id_bytes: int = 0
) -> DTLSServer:
    """A server on ``host:port``; use ``async with`` (or ``await serve(...).start()``)."""
    return DTLSServer(host, port, configuration, connection_id_bytes)


class _Connecting:
    """Lets ``connect()`` be awaited or used with ``async with``."""

    def __init__(
        self,
        host: str,
        port: int,
        configuration: DTLSConfiguration,
        early_data: Sequence[bytes] = (),
    ) -> None:
        self._host = host
        self._port = port
        self._configuration = dataclasses.replace(configuration, is_client=True)
        self._early_data = tuple(early_data)
        self._connection: AsyncDTLSConnection | None = None

    async def _open(self) -> AsyncDTLSConnection:
        loop = asyncio.get_running_loop()
        endpoint = DTLSEndpoint(self._configuration)
        transport, protocol = await loop.create_datagram_endpoint(
            lambda: EndpointProtocol(endpoint), remote_addr=(self._host, self._port)
        )
        peer = transport.get_extra_info("peername")
        connection = endpoint.connect(peer, time.monotonic_ns(), early_data=self._early_data)
        wrapper = protocol.wrap(connection)
        protocol.set_owner(wrapper)
        protocol._process()
        try:
            await wrapper.handshake()
        except BaseException:
            protocol.close()
            raise
        self._connection = wrapper
        return wrapper

    def __await__(self) -> Generator[Any, None, AsyncDTLSConnection]:
        return self._open().__await__()

    async def __aenter__(self) -> AsyncDTLSConnection:
        return await self._open()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        if self._connection is not None:
            await self._connection.__aexit__(exc_type, exc, traceback)


def connect(
    host: str, port: int, configuration: DTLSConfiguration, *, early_data: Sequence[bytes] = ()
) -> _Connecting:
    """Connect to a DTLS server: ``conn = await connect(...)`` or ``async with connect(...)``.

    ``early_data``: datagrams that go out as DTLS 1.3 0-RTT data when the
    configuration resumes a session that allows it and sets ``early_data``
    (``conn.connection.early_data_accepted`` tells), else after the handshake.
    """
    return _Connecting(host, port, configuration, early_data)
