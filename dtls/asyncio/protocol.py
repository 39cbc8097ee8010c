"""The asyncio glue: socket, one timer, event fan-out.  No protocol logic lives here."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import socket
import time
from collections import deque
from collections.abc import Callable, Generator, Sequence
from types import TracebackType
from typing import Any

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
    HandshakeFailed,
    PeerClosedWrite,
)
from ..info import ConnectionInfo
from ..suites import SrtpProfile
from .udp import DatagramSocket, SocketOptions, open_udp_socket

__all__ = ["AsyncDTLSConnection", "DTLSServer", "EndpointProtocol", "connect", "serve"]

logger = logging.getLogger(__name__)


class AsyncDTLSConnection:
    """One peer, seen from asyncio: ``send`` / ``recv`` datagrams, ``close``."""

    def __init__(self, protocol: EndpointProtocol, connection: DTLSConnection) -> None:
        self._protocol = protocol
        self.connection = connection
        self._handshake_done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._readable = asyncio.Event()
        self._failure: BaseException | None = None  # set by the socket (ICMP) before an abort
        # After the handshake too, an ICMP port unreachable ends the connection (see connect()).
        self.abort_on_unreachable = False
        if connection.is_established:
            self._handshake_done.set_result(None)

    # -- engine notifications (called by the protocol)
    def _on_event(self, event: object) -> None:
        if isinstance(event, HandshakeCompleted):
            if not self._handshake_done.done():
                self._handshake_done.set_result(None)
        elif isinstance(event, ConnectionTerminated):
            if not self._handshake_done.done():
                error: BaseException = (
                    self._failure
                    if self._failure is not None
                    else HandshakeTimeout(
                        event.reason,
                        peer_answered=bool(self.connection.server_random),
                        state=self.connection.handshake_state,
                    )
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
        """Send one datagram (handshaking first if needed).

        Raises ConnectionError once the connection ended other than by a close
        (a fatal alert, a timeout; ``ConnectionRefusedError`` for an ICMP port
        unreachable, see ``connect(abort_on_unreachable=)``).
        """
        await self.handshake()
        reason = self.connection.terminated_reason
        if reason is not None and reason != "closed":
            raise self._failure or ConnectionError(reason)
        self.connection.send(data)
        self._protocol.flush(self.connection)

    async def recv(self) -> bytes:
        """Next datagram; ``b""`` after the peer's close_notify (end of data).

        Raises ConnectionError when the connection ended without close_notify
        and ``require_close_notify`` is set (``ConnectionRefusedError`` when an
        ICMP port unreachable ended it, see ``connect(abort_on_unreachable=)``).
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
                    if self._failure is not None:
                        raise self._failure
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
        """``"DTLSv1.2"`` (OpenSSL's spelling of the negotiated version)."""
        return self.connection.negotiated_version

    @property
    def info(self) -> ConnectionInfo:
        """Everything negotiated, as one frozen value (version, suite, group, ALPN...)."""
        return self.connection.info

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


class EndpointProtocol:
    """Drives a :class:`DTLSEndpoint` from a UDP socket: batches in, one timer, fan-out.

    Each wake-up of the socket delivers every datagram waiting (see ``udp.py``);
    they all go through the endpoint before anything is sent, events are fanned
    out and the single timer is re-armed once per batch, not once per datagram.
    """

    def __init__(self, endpoint: DTLSEndpoint) -> None:
        self.endpoint = endpoint
        self.udp: DatagramSocket | None = None
        self._loop = asyncio.get_running_loop()
        self._timer: asyncio.TimerHandle | None = None
        self._timer_deadline: int | None = None
        self._wrappers: dict[int, AsyncDTLSConnection] = {}
        self._accepted: deque[AsyncDTLSConnection] = deque()
        self._accept_ready = asyncio.Event()
        self._owner: AsyncDTLSConnection | None = None
        self.closed = self._loop.create_future()
        self.batches = 0
        # Called with every server-side handshake that failed (for logs; keep it cheap).
        self.on_handshake_failed: Callable[[HandshakeFailed], None] | None = None

    def attach(self, sock: socket.socket) -> None:
        """Start reading ``sock`` (made non-blocking; closed with this protocol)."""
        self.udp = DatagramSocket(sock, self._loop, self.datagrams_received, self.socket_error)

    # -- socket callbacks
    def datagrams_received(self, datagrams: list[tuple[bytes, tuple[str, int]]]) -> None:
        """A batch from one wake-up: all into the endpoint, then send, fan out, re-arm once."""
        now = time.monotonic_ns()
        receive = self.endpoint.receive_datagram
        for data, addr in datagrams:
            receive(data, addr, now)
        self.batches += 1
        self._process()

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        """One datagram (a batch of one)."""
        self.datagrams_received([(data, addr)])

    def socket_error(self, error: OSError, destination: tuple[str, int] | None) -> None:
        """An ICMP error: a handshake to a closed port fails now, with a clear reason.

        By default only handshakes: once established, an ICMP error (which anyone
        on the path can forge) is no reason to drop a session that the peer
        authenticated.  A connection opened with ``abort_on_unreachable`` (as
        openssl s_client behaves, and the ``dtls client`` command) ends then too:
        the peer process is most likely gone.
        """
        if not isinstance(error, ConnectionRefusedError) or destination is None:
            return
        connection = self.endpoint.connection_at(destination)
        if connection is None or not connection.is_client:
            return
        wrapper = self.wrap(connection)
        host, port = _host_port(destination)
        if connection.is_established:
            if not wrapper.abort_on_unreachable:
                return
            reason = (
                f"{_address_text(host, port)} stopped answering: its port is closed now "
                "(ICMP port unreachable)"
            )
        else:
            reason = (
                f"nothing answers at {_address_text(host, port)}: the port is closed "
                "(ICMP port unreachable); is the server running, and is the port right?"
            )
        wrapper._failure = ConnectionRefusedError(reason)
        connection.abort(reason)
        self.flush(connection)

    def connection_lost(self, exc: Exception | None) -> None:
        """The socket closed; every connection on it ends."""
        if self._timer is not None:
            self._timer.cancel()
        for wrapper in list(self._wrappers.values()):
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

        Raises ``ConnectionError`` once the socket is closed, so no caller waits
        forever.  Cancelling it (``wait_for``, a timeout) loses no connection.
        """
        while True:
            if self._accepted:
                return self._accepted.popleft()
            if self.closed.done():
                raise ConnectionError("server closed")
            self._accept_ready.clear()
            waiter = asyncio.ensure_future(self._accept_ready.wait())
            try:
                await asyncio.wait({waiter, self.closed}, return_when=asyncio.FIRST_COMPLETED)
            finally:
                waiter.cancel()

    def close(self) -> None:
        """close_notify to every live connection, then close the socket."""
        for wrapper in list(self._wrappers.values()):
            if wrapper.connection.state.value != "closed":
                wrapper.connection.close()
                self.endpoint.collect(wrapper.connection)
        self._send()
        if self.udp is not None and not self.udp.closed:
            self.udp.close()
            self.connection_lost(None)

    def _send(self) -> None:
        datagrams = self.endpoint.datagrams_to_send(time.monotonic_ns())
        if self.udp is None or not datagrams:
            return
        self.udp.send(
            [(data, addr if isinstance(addr, tuple) else None) for data, addr in datagrams]
        )

    def _process(self) -> None:
        self._send()
        while (event := self.endpoint.next_event()) is not None:
            if isinstance(event, ConnectionAccepted):
                connection = self.endpoint.accept()
                if connection is not None:
                    self._accepted.append(self.wrap(connection))
                    self._accept_ready.set()
                continue
            if isinstance(event, HandshakeFailed):
                if self.on_handshake_failed is not None:
                    try:
                        self.on_handshake_failed(event)
                    except Exception:  # noqa: BLE001  (a bad callback must not stop the loop)
                        logger.exception("on_handshake_failed callback failed")
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


def _host_port(address: object) -> tuple[str, int]:
    if isinstance(address, tuple) and len(address) >= 2:
        return str(address[0]), int(address[1])
    return str(address), 0


def _address_text(host: str, port: int) -> str:
    """``HOST:PORT``, with brackets for IPv6 (``[::1]:4433``)."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


class DTLSServer:
    """A listening DTLS server: ``await accept()`` yields one connection per peer."""

    def __init__(
        self,
        host: str | None,
        port: int | None,
        configuration: DTLSConfiguration,
        connection_id_bytes: int,
        *,
        sock: socket.socket | None = None,
        socket_options: SocketOptions | None = None,
        on_handshake_failed: Callable[[HandshakeFailed], None] | None = None,
    ) -> None:
        self._host = host
        self._port = port
        self._configuration = dataclasses.replace(configuration, is_client=False)
        self._connection_id_bytes = connection_id_bytes
        self._sock = sock
        self._socket_options = socket_options
        self._on_handshake_failed = on_handshake_failed
        self.protocol: EndpointProtocol | None = None

    async def start(self) -> DTLSServer:
        """Bind the socket (or adopt the one given) and start serving."""
        sock = self._sock
        if sock is None:
            assert self._host is not None and self._port is not None
            local = (self._host, self._port)
            sock = await asyncio.to_thread(open_udp_socket, local, None, self._socket_options)
        elif self._socket_options is not None:
            self._socket_options.apply(sock)
        endpoint = DTLSEndpoint(self._configuration, connection_id_bytes=self._connection_id_bytes)
        protocol = EndpointProtocol(endpoint)
        protocol.on_handshake_failed = self._on_handshake_failed
        try:
            protocol.attach(sock)
        except BaseException:
            sock.close()
            raise
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
        if self.protocol is None or self.protocol.udp is None:
            raise LocalProtocolError("server not started")
        return self.protocol.udp.local_address

    @property
    def socket(self) -> socket.socket:
        """The UDP socket (for options this module does not cover); do not read from it."""
        if self.protocol is None or self.protocol.udp is None:
            raise LocalProtocolError("server not started")
        return self.protocol.udp.sock

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
    host: str | None = None,
    port: int | None = None,
    configuration: DTLSConfiguration | None = None,
    *,
    connection_id_bytes: int = 0,
    sock: socket.socket | None = None,
    socket_options: SocketOptions | None = None,
    on_handshake_failed: Callable[[HandshakeFailed], None] | None = None,
) -> DTLSServer:
    """A server on ``host:port``, or on an existing UDP socket ``sock`` (adopted: it is
    closed with the server); use ``async with`` (or ``await serve(...).start()``).

    ``on_handshake_failed`` is called with each :class:`~dtls.events.HandshakeFailed`
    (peer address, reason, alert), for logs; failures never reach ``accept()``."""
    if configuration is None:
        raise LocalProtocolError("serve() needs a configuration")
    if sock is None and (host is None or port is None):
        raise LocalProtocolError("serve() needs host and port, or sock")
    return DTLSServer(
        host,
        port,
        configuration,
        connection_id_bytes,
        sock=sock,
        socket_options=socket_options,
        on_handshake_failed=on_handshake_failed,
    )


class _Connecting:
    """Lets ``connect()`` be awaited or used with ``async with``."""

    def __init__(
        self,
        host: str | None,
        port: int | None,
        configuration: DTLSConfiguration,
        *,
        local: tuple[str, int] | None,
        sock: socket.socket | None,
        socket_options: SocketOptions | None,
        early_data: Sequence[bytes] = (),
        abort_on_unreachable: bool = False,
    ) -> None:
        self._abort_on_unreachable = abort_on_unreachable
        self._host = host
        self._port = port
        self._configuration = dataclasses.replace(configuration, is_client=True)
        self._local = local
        self._sock = sock
        self._socket_options = socket_options
        self._early_data = tuple(early_data)
        self._connection: AsyncDTLSConnection | None = None

    async def _open(self) -> AsyncDTLSConnection:
        sock = self._sock
        if sock is None:
            assert self._host is not None and self._port is not None
            remote = (self._host, self._port)
            sock = await asyncio.to_thread(
                open_udp_socket, self._local, remote, self._socket_options
            )
        elif self._socket_options is not None:
            self._socket_options.apply(sock)
        endpoint = DTLSEndpoint(self._configuration)
        protocol = EndpointProtocol(endpoint)
        try:
            protocol.attach(sock)
        except BaseException:
            sock.close()
            raise
        assert protocol.udp is not None
        peer: Address | None = protocol.udp.peer
        if peer is None:
            if self._host is None or self._port is None:
                protocol.close()
                raise LocalProtocolError("an unconnected socket needs host and port to dial")
            infos = await asyncio.get_running_loop().getaddrinfo(
                self._host, self._port, family=sock.family, type=socket.SOCK_DGRAM
            )
            peer = (str(infos[0][4][0]), int(infos[0][4][1]))
        connection = endpoint.connect(peer, time.monotonic_ns(), early_data=self._early_data)
        wrapper = protocol.wrap(connection)
        wrapper.abort_on_unreachable = self._abort_on_unreachable
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
    host: str | None = None,
    port: int | None = None,
    configuration: DTLSConfiguration | None = None,
    *,
    local: tuple[str, int] | None = None,
    sock: socket.socket | None = None,
    socket_options: SocketOptions | None = None,
    early_data: Sequence[bytes] = (),
    abort_on_unreachable: bool = False,
) -> _Connecting:
    """Connect to a DTLS server: ``conn = await connect(...)`` or ``async with connect(...)``.

    The socket is connected to the server, so an ICMP port unreachable ends the
    handshake at once (``ConnectionRefusedError``).  ``local`` binds it first
    (``--bind``); ``sock`` adopts an existing UDP socket instead (connected or not;
    unconnected, ``host``/``port`` say where to dial).  ``early_data``: datagrams
    that go out as DTLS 1.3 0-RTT data when the configuration resumes a session that
    allows it and sets ``early_data`` (``conn.connection.early_data_accepted`` tells),
    else right after the handshake.  ``abort_on_unreachable``: an ICMP port unreachable
    after the handshake ends the connection too (``recv()``/``send()`` raise
    ``ConnectionRefusedError``), as with openssl s_client; off by default, because
    anyone on the path can forge one.
    """
    if configuration is None:
        raise LocalProtocolError("connect() needs a configuration")
    if sock is None and (host is None or port is None):
        raise LocalProtocolError("connect() needs host and port, or sock")
    return _Connecting(
        host,
        port,
        configuration,
        local=local,
        sock=sock,
        socket_options=socket_options,
        early_data=early_data,
        abort_on_unreachable=abort_on_unreachable,
    )
