"""asyncio API for QOTP: one UDP socket that both accepts and dials.

A thin adapter over :class:`qotp.endpoint.QotpEndpoint`: it owns the socket,
one timer, and hands events to the objects users hold.  Demultiplexing,
retransmission and handshakes all live in the sans-IO engine.

::

    async with await qotp.asyncio.listen("127.0.0.1", 0) as listener:
        connection = await listener.dial(("127.0.0.1", 4242))
        stream = connection.stream(0)
        stream.write(b"hello")
        await stream.drain()
        stream.close()
        reply = await stream.read()
"""

from __future__ import annotations

from qotp.asyncio.api import (
    PORT_UNREACHABLE,
    AddressChange,
    ConnectionClosedError,
    QotpConnection,
    QotpListener,
    QotpStream,
    listen,
)

__all__ = [
    "PORT_UNREACHABLE",
    "AddressChange",
    "ConnectionClosedError",
    "QotpConnection",
    "QotpListener",
    "QotpStream",
    "listen",
]
