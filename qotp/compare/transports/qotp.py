"""QOTP over its native envelope, and QOTP over DTLS 1.2 records, through ``qotp.asyncio``.

Each client session binds its own UDP socket, as a TCP client gets its own
port: a DTLS layer routes by address, and a fresh socket per connection keeps
the ``connect`` workload the same for both crypto layers.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Coroutine

from dtls.config import DTLSConfiguration, load_certificate_chain, load_private_key
from qotp.asyncio import QotpConnection, QotpListener, QotpStream, listen
from qotp.compare.certificates import SERVER_NAME
from qotp.compare.transports.base import (
    Address,
    ClientSession,
    ClientTransport,
    ServerTransport,
    StreamHandler,
)
from qotp.compare.workloads import ByteStream
from qotp.dtls_protection import DtlsCryptoLayer
from qotp.protection import CryptoLayer

__all__ = [
    "QotpClient",
    "QotpDtlsClient",
    "QotpDtlsServer",
    "QotpServer",
]

CLOSE_WAIT_S = 2.0
"""How long a finished session waits for the peer to acknowledge its close."""


class _QotpSession(ClientSession):
    def __init__(self, listener: QotpListener, connection: QotpConnection) -> None:
        self.listener = listener
        self.connection = connection
        self._next_stream = 0

    async def open_stream(self) -> ByteStream:
        stream = self.connection.stream(self._next_stream)
        self._next_stream += 1
        return stream

    def retransmissions(self) -> int | None:
        return self.connection.statistics().retransmitted_packets

    async def close(self) -> None:
        self.connection.close()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.connection.wait_closed(), CLOSE_WAIT_S)
        self.listener.close()


class QotpClient(ClientTransport):
    """QOTP with its native crypto (X25519, ChaCha20-Poly1305), in-band handshake."""

    name = "qotp"

    def _crypto(self) -> CryptoLayer | None:
        return None

    async def connect(self, address: Address) -> ClientSession:
        host = "::" if ":" in address[0] else "0.0.0.0"
        listener = await listen(host, 0, crypto=self._crypto())
        try:
            connection = await listener.dial(address, timeout=self.settings.connect_timeout_s)
        except BaseException:
            listener.close()
            raise
        return _QotpSession(listener, connection)


class QotpDtlsClient(QotpClient):
    """The same QOTP transport over DTLS 1.2 records (ECDHE-ECDSA, certificate checked)."""

    name = "qotp-dtls"

    def _crypto(self) -> CryptoLayer | None:
        certificate = self.settings.credentials.ca_file.read_bytes()
        configuration = DTLSConfiguration(
            ca_certificates=load_certificate_chain(certificate), server_name=SERVER_NAME
        )
        return DtlsCryptoLayer(client=configuration)


class QotpServer(ServerTransport):
    """Accepts QOTP connections and serves each stream."""

    _listener: QotpListener | None = None
    _tasks: set[asyncio.Task[None]]

    def _crypto(self) -> CryptoLayer | None:
        return None

    async def start(self, host: str, port: int, handler: StreamHandler) -> Address:
        self._tasks = set()
        listener = self._listener = await listen(host, port, crypto=self._crypto())

        async def serve_stream(stream: QotpStream) -> None:
            try:
                await handler(stream)
            finally:
                stream.close()

        async def serve_connection(connection: QotpConnection) -> None:
            try:
                while True:
                    stream = await connection.accept_stream()
                    self._spawn(serve_stream(stream))
            except ConnectionError:
                pass

        async def accept() -> None:
            async for connection in listener:
                self._spawn(serve_connection(connection))

        self._spawn(accept())
        return listener.local_address

    def _spawn(self, coroutine: Coroutine[object, object, None]) -> None:
        task = asyncio.create_task(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._finished)

    def _finished(self, task: asyncio.Task[None]) -> None:
        """Forget the task; what it raised (a peer went away) ends only that stream."""
        self._tasks.discard(task)
        if not task.cancelled():
            task.exception()

    async def stop(self) -> None:
        if self._listener is not None:
            self._listener.close()
        for task in list(self._tasks):
            task.cancel()


class QotpDtlsServer(QotpServer):
    """Accepts QOTP-over-DTLS connections with the comparison's certificate."""

    def _crypto(self) -> CryptoLayer | None:
        credentials = self.settings.credentials
        configuration = DTLSConfiguration(
            is_client=False,
            certificate_chain=load_certificate_chain(credentials.certificate_file.read_bytes()),
            private_key=load_private_key(credentials.key_file.read_bytes()),
        )
        return DtlsCryptoLayer(server=configuration)
