"""An asyncio TCP relay with the impairment model's delay, jitter and rate cap.

The byte-stream sibling of :class:`qotp.compare.relay.UdpRelay`, for TCP and
TLS rows when no network namespace can be had (not root).  Each client
connection gets its own upstream connection to the server; the bytes of each
direction go through one :class:`~qotp.compare.impairment.ImpairedPath`
shared by all connections (one link), via
:meth:`~qotp.compare.impairment.ImpairedPath.schedule_in_order`.

It cannot lose, reorder or duplicate: both of its sockets are TCP, whose own
retransmissions would repair any loss before the transport under test saw it,
so :func:`stream_relay_limitation` names such an impairment and the comparison
skips those rows instead of showing TCP unharmed by a loss it never had.
Packet loss for TCP is what :mod:`qotp.compare.packet_relay` is for.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from dataclasses import dataclass

from qotp.compare.impairment import Direction, ImpairedPath, Impairment

__all__ = ["StreamStatistics", "TcpRelay", "stream_relay_limitation"]

READ_BYTES = 16 * 1024
"""One read, one scheduling decision: about a dozen packets' worth."""
QUEUE_CHUNKS = 64
"""Chunks held per direction before the relay stops reading (backpressure)."""


def stream_relay_limitation(impairment: Impairment) -> str | None:
    """Why a stream relay cannot apply ``impairment`` faithfully, or None."""
    for path in (impairment.to_server, impairment.to_client):
        if path.loss or path.reorder or path.duplicate:
            return (
                "a TCP relay cannot lose, reorder or duplicate segments (needs the namespace path)"
            )
    return None


@dataclass(slots=True)
class StreamStatistics:
    """Bytes and chunks the relay forwarded, per direction."""

    chunks: int = 0
    bytes: int = 0


class TcpRelay:
    """Listens on ``host:port`` and relays every connection to ``server_address``."""

    def __init__(self, server_address: tuple[str, int], impairment: Impairment) -> None:
        self.server_address = server_address
        self.impairment = impairment
        self._paths = {direction: impairment.impaired_path(direction) for direction in Direction}
        self.statistics = {direction: StreamStatistics() for direction in Direction}
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> tuple[str, int]:
        """Listen; returns the address clients connect to."""
        self._server = await asyncio.start_server(self._on_client, host, port, backlog=256)
        address = self._server.sockets[0].getsockname()
        return (address[0], address[1])

    async def _on_client(
        self, client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter
    ) -> None:
        try:
            server_reader, server_writer = await asyncio.open_connection(*self.server_address)
        except OSError:
            client_writer.close()
            return
        pumps = [
            asyncio.create_task(self._pump(client_reader, server_writer, Direction.TO_SERVER)),
            asyncio.create_task(self._pump(server_reader, client_writer, Direction.TO_CLIENT)),
        ]
        for pump in pumps:
            self._tasks.add(pump)
            pump.add_done_callback(self._tasks.discard)
        with contextlib.suppress(Exception):
            await asyncio.gather(*pumps)
        for writer in (client_writer, server_writer):
            writer.close()

    async def _pump(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, direction: Direction
    ) -> None:
        path: ImpairedPath = self._paths[direction]
        counters = self.statistics[direction]
        queue: asyncio.Queue[tuple[int, bytes] | None] = asyncio.Queue(QUEUE_CHUNKS)

        async def deliver() -> None:
            while (item := await queue.get()) is not None:
                deliver_at, data = item
                wait = (deliver_at - time.monotonic_ns()) / 1e9
                if wait > 0:
                    await asyncio.sleep(wait)
                writer.write(data)
                await writer.drain()
            if writer.can_write_eof():
                writer.write_eof()

        delivering = asyncio.create_task(deliver())
        try:
            while data := await reader.read(READ_BYTES):
                counters.chunks += 1
                counters.bytes += len(data)
                await queue.put((path.schedule_in_order(len(data), time.monotonic_ns()), data))
        except ConnectionError:
            pass
        finally:
            await queue.put(None)
            with contextlib.suppress(ConnectionError):
                await delivering

    def close(self) -> None:
        """Stop listening and drop every relayed connection."""
        if self._server is not None:
            self._server.close()
        for task in list(self._tasks):
            task.cancel()
