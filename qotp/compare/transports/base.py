"""What the comparison needs of a transport, on each side.

A client transport opens sessions (connections, handshake included); a
session opens byte streams.  Transports without streams (TCP, TLS) open one
stream per session, and the parallel workload opens ten sessions instead.
A server transport accepts sessions and hands every stream to
:func:`qotp.compare.workloads.serve_stream`.
"""

from __future__ import annotations

import asyncio
from abc import ABC, abstractmethod
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from qotp.compare.certificates import Credentials
from qotp.compare.workloads import ByteStream

__all__ = [
    "Address",
    "ClientSession",
    "ClientTransport",
    "ServerTransport",
    "StreamHandler",
    "StreamPair",
    "TransportUnavailable",
    "TransportSettings",
]

Address = tuple[str, int]
StreamHandler = Callable[[ByteStream], Awaitable[object]]


class TransportUnavailable(Exception):
    """The transport cannot run here (a missing optional package); the text says why."""


@dataclass(frozen=True, slots=True, kw_only=True)
class TransportSettings:
    """What both sides of one transport are given."""

    credentials: Credentials
    connect_timeout_s: float = 15.0


class StreamPair:
    """An asyncio (reader, writer) pair as a :class:`ByteStream`."""

    __slots__ = ("reader", "writer")

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer

    async def readexactly(self, n: int) -> bytes:
        """Exactly ``n`` bytes."""
        return await self.reader.readexactly(n)

    def write(self, data: bytes) -> None:
        """Queue bytes."""
        self.writer.write(data)

    async def drain(self) -> None:
        """Wait for room in the send buffer."""
        await self.writer.drain()

    def close(self) -> None:
        """Close the writer (and with TCP and TLS, the connection)."""
        self.writer.close()


class ClientSession(ABC):
    """One connection of a client transport."""

    @abstractmethod
    async def open_stream(self) -> ByteStream:
        """A new stream on this connection."""

    def retransmissions(self) -> int | None:
        """Packets this side sent again so far, where the transport can tell."""
        return None

    @abstractmethod
    async def close(self) -> None:
        """End the connection (and wait as little as the transport allows)."""


class ClientTransport(ABC):
    """The client side of one transport, living in the measuring process."""

    name: str
    streams_share_connection: bool = True
    """Whether parallel streams ride one connection (QOTP, QUIC) or need one each (TCP)."""

    def __init__(self, settings: TransportSettings) -> None:
        self.settings = settings

    @abstractmethod
    async def connect(self, address: Address) -> ClientSession:
        """Open a connection to ``address``, handshake complete."""

    async def aclose(self) -> None:  # noqa: B027 - most transports keep nothing open
        """Release what the transport keeps between sessions."""


class ServerTransport(ABC):
    """The server side of one transport, living in its own process."""

    def __init__(self, settings: TransportSettings) -> None:
        self.settings = settings

    @abstractmethod
    async def start(self, host: str, port: int, handler: StreamHandler) -> Address:
        """Listen and serve every stream with ``handler``; returns the bound address."""

    @abstractmethod
    async def stop(self) -> None:
        """Stop listening and drop every connection."""
