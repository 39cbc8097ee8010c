"""asyncio adapter: a UDP socket, one timer, and event fan-out over :class:`DTLSEndpoint`.

Server::

    async with dtls.asyncio.serve("0.0.0.0", 4433, configuration) as server:
        connection = await server.accept()
        data = await connection.recv()

Client::

    async with dtls.asyncio.connect("127.0.0.1", 4433, configuration) as connection:
        await connection.send(b"hello")
"""

from __future__ import annotations

from .protocol import (
    AsyncDTLSConnection,
    DTLSServer,
    EndpointProtocol,
    connect,
    serve,
)

__all__ = ["AsyncDTLSConnection", "DTLSServer", "EndpointProtocol", "connect", "serve"]
