"""Blocking wrapper for simple scripts, built on the asyncio adapter.

Each call runs the adapter's event loop until the call completes, so timers
and incoming datagrams are handled only while a call is in progress - enough
for request/response scripts.  Use the asyncio API for anything long-lived.
"""

from __future__ import annotations

import asyncio
from types import TracebackType

from ..config import DTLSConfiguration
from .protocol import AsyncDTLSConnection, connect

__all__ = ["BlockingDTLSConnection", "blocking_connect"]


class BlockingDTLSConnection:
    """A DTLS client connection with plain blocking calls."""

    def __init__(self, runner: asyncio.Runner, connection: AsyncDTLSConnection) -> None:
        self._runner = runner
        self.connection = connection

    def send(self, data: bytes) -> None:
        """Send one datagram."""
        self._runner.run(self.connection.send(data))

    def recv(self, timeout: float | None = None) -> bytes:
        """Next datagram (``b""`` at end of data); raises TimeoutError after ``timeout`` s."""
        return self._runner.run(asyncio.wait_for(self.connection.recv(), timeout))

    def pending(self) -> int:
        """Datagrams received and not read yet."""
        return self.connection.pending()

    def close(self) -> None:
        """Send close_notify, close the socket and the private event loop."""

        async def _close() -> None:
            self.connection.close()
            await asyncio.sleep(0)
            await self.connection.__aexit__(None, None, None)

        try:
            self._runner.run(_close())
        finally:
            self._runner.close()

    def __enter__(self) -> BlockingDTLSConnection:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()


def blocking_connect(
    host: str, port: int, configuration: DTLSConfiguration, timeout: float | None = 60.0
) -> BlockingDTLSConnection:
    """Connect and handshake, blocking; returns a connection usable as a context manager."""
    runner = asyncio.Runner()
    try:
        connection = runner.run(asyncio.wait_for(_open(host, port, configuration), timeout))
    except BaseException:
        runner.close()
        raise
    return BlockingDTLSConnection(runner, connection)


async def _open(host: str, port: int, configuration: DTLSConfiguration) -> AsyncDTLSConnection:
    return await connect(host, port, configuration)
