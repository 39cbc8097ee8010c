"""TCP, and TLS 1.3 over TCP, with asyncio streams and the ``ssl`` module.

One connection carries one stream, so the parallel workload opens ten
connections.  Nagle is off on both sides (``TCP_NODELAY``), as every latency-
minded TCP application does; the kernel's congestion control is whatever the
machine runs (usually CUBIC), and its retransmissions come from ``TCP_INFO``.
"""

from __future__ import annotations

import asyncio
import socket
import ssl
import struct

from qotp.compare.certificates import SERVER_NAME
from qotp.compare.transports.base import (
    Address,
    ClientSession,
    ClientTransport,
    ServerTransport,
    StreamHandler,
    StreamPair,
)
from qotp.compare.workloads import ByteStream

__all__ = ["TcpClient", "TcpServer", "TlsClient", "TlsServer", "total_retransmissions"]

_TCP_INFO_TOTAL_RETRANS_OFFSET = 100
"""Offset of ``tcpi_total_retrans`` (u32) in Linux's ``struct tcp_info``."""
_TCP_INFO_BYTES = 104
STREAM_LIMIT_BYTES = 1 << 20
"""asyncio reader buffer: large enough that reads are not the bottleneck."""


def total_retransmissions(sock: socket.socket | None) -> int | None:
    """Segments the kernel retransmitted on this socket (Linux ``TCP_INFO``), else None."""
    tcp_info = getattr(socket, "TCP_INFO", None)
    if sock is None or tcp_info is None:
        return None
    try:
        info = sock.getsockopt(socket.IPPROTO_TCP, tcp_info, _TCP_INFO_BYTES)
    except OSError:
        return None
    if len(info) < _TCP_INFO_BYTES:
        return None
    return int(struct.unpack_from("<I", info, _TCP_INFO_TOTAL_RETRANS_OFFSET)[0])


def _no_delay(writer: asyncio.StreamWriter) -> socket.socket | None:
    sock: socket.socket | None = writer.get_extra_info("socket")
    if sock is not None:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


class _TcpSession(ClientSession):
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.pair = StreamPair(reader, writer)
        self.socket = _no_delay(writer)
        self._retransmissions: int | None = None
        self._opened = False

    async def open_stream(self) -> ByteStream:
        if self._opened:
            raise RuntimeError("a TCP connection carries one stream")
        self._opened = True
        return self.pair

    def retransmissions(self) -> int | None:
        if self._retransmissions is None:
            return total_retransmissions(self.socket)
        return self._retransmissions

    async def close(self) -> None:
        self._retransmissions = total_retransmissions(self.socket)
        self.pair.writer.close()
        try:
            await self.pair.writer.wait_closed()
        except (ConnectionError, ssl.SSLError):
            pass


class TcpClient(ClientTransport):
    """Plain TCP: no encryption, the kernel's congestion control."""

    name = "tcp"
    streams_share_connection = False

    def _ssl(self) -> ssl.SSLContext | None:
        return None

    async def connect(self, address: Address) -> ClientSession:
        context = self._ssl()
        reader, writer = await asyncio.wait_for(
            asyncio.open_connection(
                address[0],
                address[1],
                ssl=context,
                server_hostname=SERVER_NAME if context is not None else None,
                limit=STREAM_LIMIT_BYTES,
            ),
            self.settings.connect_timeout_s,
        )
        return _TcpSession(reader, writer)


class TlsClient(TcpClient):
    """TLS 1.3 over TCP (Python's ``ssl``, i.e. OpenSSL), server certificate verified."""

    name = "tls"

    def _ssl(self) -> ssl.SSLContext | None:
        context = ssl.create_default_context(cafile=str(self.settings.credentials.ca_file))
        context.minimum_version = ssl.TLSVersion.TLSv1_3
        return context


class TcpServer(ServerTransport):
    """Accepts TCP connections; each one is one stream."""

    _server: asyncio.Server | None = None

    def _ssl(self) -> ssl.SSLContext | None:
        return None

    async def start(self, host: str, port: int, handler: StreamHandler) -> Address:
        async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            _no_delay(writer)
            pair = StreamPair(reader, writer)
            try:
                await handler(pair)
                # Wait for the client to close first, so its side holds TIME_WAIT.
                await reader.read()
            except (ConnectionError, asyncio.IncompleteReadError, ssl.SSLError):
                pass
            finally:
                writer.close()

        self._server = await asyncio.start_server(
            serve, host, port, ssl=self._ssl(), limit=STREAM_LIMIT_BYTES, backlog=256
        )
        address = self._server.sockets[0].getsockname()
        return (address[0], address[1])

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()


class TlsServer(TcpServer):
    """TLS 1.3 with the comparison's certificate."""

    def _ssl(self) -> ssl.SSLContext | None:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.minimum_version = ssl.TLSVersion.TLSv1_3
        credentials = self.settings.credentials
        context.load_cert_chain(str(credentials.certificate_file), str(credentials.key_file))
        return context
