"""asyncio adapter: a UDP socket, one timer, and event fan-out over :class:`DTLSEndpoint`.

Server::

    async with dtls.asyncio.serve("0.0.0.0", 4433, configuration) as server:
        connection = await server.accept()
        data = await connection.recv()

Client::

    async with dtls.asyncio.connect("127.0.0.1", 4433, configuration) as connection:
        await connection.send(b"hello")

An existing UDP socket can be adopted (``serve(sock=...)``, ``connect(sock=...)``),
socket options set with :class:`SocketOptions`, and scripts can use the
blocking forms (``blocking_serve(...).accept(timeout)``, ``blocking_connect``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .._lazy import lazy_attributes

if TYPE_CHECKING:
    from .blocking import (
        BlockingDTLSConnection,
        BlockingDTLSServer,
        blocking_connect,
        blocking_serve,
    )
    from .protocol import (
        AsyncDTLSConnection,
        DTLSServer,
        EndpointProtocol,
        connect,
        serve,
    )
    from .udp import SocketOptions

# Where each public name lives; each is imported on first use (dtls._lazy).
_MODULES: dict[str, tuple[str, ...]] = {
    "blocking": (
        "BlockingDTLSConnection",
        "BlockingDTLSServer",
        "blocking_connect",
        "blocking_serve",
    ),
    "protocol": ("AsyncDTLSConnection", "DTLSServer", "EndpointProtocol", "connect", "serve"),
    "udp": ("SocketOptions",),
}

__all__ = [
    "AsyncDTLSConnection",
    "BlockingDTLSConnection",
    "BlockingDTLSServer",
    "DTLSServer",
    "EndpointProtocol",
    "SocketOptions",
    "blocking_connect",
    "blocking_serve",
    "connect",
    "serve",
]

__getattr__, __dir__ = lazy_attributes(__name__, _MODULES, __all__)
