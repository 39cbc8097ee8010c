"""The rendezvous server on a real UDP socket (asyncio): socket, one timer, events out."""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import Callable

from qotp.asyncio.driver import ClosesOnExit, DeadlineTimer
from qotp.asyncio.transport import UdpSocket
from qotp.keys import KeyPair
from qotp.protection import Address
from qotp.rendezvous.server import RendezvousConfiguration, RendezvousServer, ServerEvent

__all__ = ["RendezvousService", "serve_rendezvous"]


async def serve_rendezvous(
    host: str = "0.0.0.0",
    port: int = 0,
    *,
    identity: KeyPair | None = None,
    configuration: RendezvousConfiguration | None = None,
    on_event: Callable[[ServerEvent], None] | None = None,
) -> RendezvousService:
    """Bind ``host:port`` and serve registrations, introductions and relaying on it."""
    loop = asyncio.get_running_loop()
    infos = await loop.getaddrinfo(host, port, type=socket.SOCK_DGRAM)
    family, _type, _proto, _name, address = infos[0]
    sock = socket.socket(family, socket.SOCK_DGRAM)
    try:
        sock.bind(address)
    except OSError:
        sock.close()
        raise
    server = RendezvousServer(
        identity=identity, configuration=configuration, now=time.monotonic_ns()
    )
    return RendezvousService(server, sock, loop, on_event)


class RendezvousService(ClosesOnExit):
    """A :class:`RendezvousServer` driven by a socket and the event loop."""

    def __init__(
        self,
        server: RendezvousServer,
        sock: socket.socket,
        loop: asyncio.AbstractEventLoop,
        on_event: Callable[[ServerEvent], None] | None,
    ) -> None:
        self.server = server
        self._loop = loop
        self._on_event = on_event
        self._timer = DeadlineTimer(loop, self._on_timer)
        self._closed = asyncio.Event()
        self.socket = UdpSocket(sock, loop, self._on_datagrams)
        self._flush(time.monotonic_ns())

    @property
    def local_address(self) -> Address:
        """The bound (host, port)."""
        return self.socket.local_address

    def statistics(self) -> dict[str, int]:
        """The server's counters plus the socket's."""
        stats = self.server.statistics()
        stats["datagrams_received"] = self.socket.datagrams_received
        stats["datagrams_sent"] = self.socket.datagrams_sent
        return stats

    def _on_datagrams(self, datagrams: list[tuple[bytes, Address]]) -> None:
        now = time.monotonic_ns()
        receive = self.server.receive_datagram
        for data, address in datagrams:
            receive(data, address, now)
        self._flush(now)

    def _on_timer(self) -> None:
        if self._closed.is_set():
            return
        now = time.monotonic_ns()
        self.server.handle_timer(now)
        self._flush(now)

    def _flush(self, now: int) -> None:
        output = self.server.datagrams_to_send(now)
        if output:
            self.socket.send(output)
        while (event := self.server.next_event()) is not None:
            if self._on_event is not None:
                self._on_event(event)
        self._timer.arm(self.server.get_timer())

    def close(self) -> None:
        """Stop serving and close the socket."""
        if self._closed.is_set():
            return
        self._closed.set()
        self._timer.cancel()
        self.socket.close()

    async def wait_closed(self) -> None:
        """Wait until :meth:`close` ran."""
        await self._closed.wait()
