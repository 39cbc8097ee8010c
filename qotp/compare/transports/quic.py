"""QUIC through aioquic (optional: the ``[bench]`` extra).

Both sides use the same datagram size as QOTP (1400 bytes), NewReno (aioquic's
default) and flow-control windows large enough not to cap a 100 ms path.
Retransmissions are the packets aioquic declared lost: it keeps no public
counter, so the session wraps its recovery object's loss callback.
"""

from __future__ import annotations

import asyncio
import ssl
from contextlib import AbstractAsyncContextManager
from typing import TYPE_CHECKING, Any

from qotp.compare.certificates import SERVER_NAME
from qotp.compare.transports.base import (
    Address,
    ClientSession,
    ClientTransport,
    ServerTransport,
    StreamHandler,
    StreamPair,
    TransportSettings,
    TransportUnavailable,
)
from qotp.compare.workloads import ByteStream

if TYPE_CHECKING:
    from aioquic.asyncio.protocol import QuicConnectionProtocol
    from aioquic.asyncio.server import QuicServer as AioquicServer
    from aioquic.quic.configuration import QuicConfiguration

__all__ = ["QuicClient", "QuicServer", "aioquic_missing"]

ALPN = "qotp-compare"
DATAGRAM_BYTES = 1400
WINDOW_BYTES = 16 * 1024 * 1024


def aioquic_missing() -> str | None:
    """Why QUIC cannot run here, or None."""
    try:
        import aioquic  # noqa: F401
    except ImportError:
        return "aioquic is not installed (pip install 'qotp[bench]')"
    return None


def _configuration(*, is_client: bool) -> QuicConfiguration:
    reason = aioquic_missing()
    if reason is not None:
        raise TransportUnavailable(reason)
    from aioquic.quic.configuration import QuicConfiguration

    return QuicConfiguration(
        is_client=is_client,
        alpn_protocols=[ALPN],
        max_datagram_size=DATAGRAM_BYTES,
        max_data=WINDOW_BYTES,
        max_stream_data=WINDOW_BYTES,
    )


class _QuicStream(StreamPair):
    def close(self) -> None:
        self.writer.write_eof()


class _QuicSession(ClientSession):
    def __init__(
        self,
        context: AbstractAsyncContextManager[QuicConnectionProtocol],
        protocol: QuicConnectionProtocol,
    ) -> None:
        self.context = context
        self.protocol = protocol
        self.lost_packets = 0
        self._count_losses()

    def _count_losses(self) -> None:
        recovery: Any = getattr(self.protocol._quic, "_loss", None)
        original = getattr(recovery, "_on_packets_lost", None)
        if original is None:
            self.lost_packets = -1
            return

        def counted(*, packets: Any, **arguments: Any) -> Any:
            packets = list(packets)
            self.lost_packets += len(packets)
            return original(packets=packets, **arguments)

        recovery._on_packets_lost = counted

    async def open_stream(self) -> ByteStream:
        reader, writer = await self.protocol.create_stream()
        # aioquic hands out the next free id without taking it until data is
        # sent: take it now, or ten streams opened in a row share one id.
        writer.write(b"")
        return _QuicStream(reader, writer)

    def retransmissions(self) -> int | None:
        return self.lost_packets if self.lost_packets >= 0 else None

    async def close(self) -> None:
        await self.context.__aexit__(None, None, None)


class QuicClient(ClientTransport):
    """QUIC v1 (aioquic), TLS 1.3 inside, server certificate verified."""

    name = "quic"

    def __init__(self, settings: TransportSettings) -> None:
        super().__init__(settings)
        reason = aioquic_missing()
        if reason is not None:
            raise TransportUnavailable(reason)

    async def connect(self, address: Address) -> ClientSession:
        from aioquic.asyncio.client import connect

        configuration = _configuration(is_client=True)
        configuration.server_name = SERVER_NAME
        configuration.verify_mode = ssl.CERT_REQUIRED
        configuration.load_verify_locations(str(self.settings.credentials.ca_file))
        context = connect(address[0], address[1], configuration=configuration)
        protocol = await asyncio.wait_for(context.__aenter__(), self.settings.connect_timeout_s)
        return _QuicSession(context, protocol)


class QuicServer(ServerTransport):
    """Accepts QUIC connections and serves each bidirectional stream."""

    _server: AioquicServer | None = None

    async def start(self, host: str, port: int, handler: StreamHandler) -> Address:
        from aioquic.asyncio.server import serve

        configuration = _configuration(is_client=False)
        credentials = self.settings.credentials
        configuration.load_cert_chain(str(credentials.certificate_file), str(credentials.key_file))
        tasks: set[asyncio.Task[None]] = set()

        async def serve_stream(stream: _QuicStream) -> None:
            try:
                await handler(stream)
            except (ConnectionError, asyncio.IncompleteReadError):
                pass
            finally:
                stream.close()

        def on_stream(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            task = asyncio.ensure_future(serve_stream(_QuicStream(reader, writer)))
            tasks.add(task)
            task.add_done_callback(tasks.discard)

        self._server = await serve(
            host, port, configuration=configuration, stream_handler=on_stream
        )
        transport = self._server._transport
        if transport is None:
            raise TransportUnavailable("aioquic did not bind a socket")
        address = transport.get_extra_info("sockname")
        return (address[0], address[1])

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
