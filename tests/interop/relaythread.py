"""The impairment relay in a thread of its own, for tests that drive processes synchronously.

The interop tests run the clients as processes and wait for them; the relay
(:mod:`qotp.compare.relay`, asyncio) needs a running event loop meanwhile, so it
gets one in a background thread. Everything that touches the relay runs in that
loop (:meth:`RelayThread.call`); what the observer captured is read after the
relay stopped, or through :meth:`RelayThread.call`.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from types import TracebackType
from typing import TypeVar

from qotp.compare.impairment import Direction, Impairment
from qotp.compare.relay import RelayStatistics, UdpRelay
from qotp.protection import Address

T = TypeVar("T")
START_TIMEOUT_S = 10.0


class RelayThread:
    """A :class:`UdpRelay` between test processes, optionally keeping every live datagram."""

    def __init__(
        self, server: Address, *, impairment: Impairment | None = None, capture: bool = False
    ) -> None:
        self.server = server
        self.impairment = impairment
        self.capture = capture
        #: (monotonic time, direction, client address, datagram) of every live datagram,
        #: in arrival order.
        self.captured: list[tuple[float, Direction, Address, bytes]] = []
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._relay: UdpRelay | None = None

    def __enter__(self) -> RelayThread:
        self._thread.start()
        observer = self._observe if self.capture else None
        self._relay = self._submit(
            UdpRelay.start(self.server, impairment=self.impairment, observer=observer)
        ).result(START_TIMEOUT_S)
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        if self._relay is not None:
            self.call(self._relay.close)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(START_TIMEOUT_S)
        self._loop.close()

    def _observe(self, direction: Direction, client: Address, data: bytes) -> None:
        self.captured.append((time.monotonic(), direction, client, data))

    def _submit(self, coroutine: object) -> Future[UdpRelay]:
        return asyncio.run_coroutine_threadsafe(coroutine, self._loop)  # type: ignore[arg-type]

    @property
    def relay(self) -> UdpRelay:
        assert self._relay is not None, "use the RelayThread as a context manager"
        return self._relay

    @property
    def address(self) -> str:
        """HOST:PORT where clients send to reach the server through the relay."""
        host, port = self.relay.listen_address
        return f"{host}:{port}"

    def call(self, function: Callable[[], T]) -> T:
        """Run ``function`` in the relay's loop and return its result."""

        async def run() -> T:
            return function()

        future: Future[T] = asyncio.run_coroutine_threadsafe(run(), self._loop)
        return future.result(START_TIMEOUT_S)

    def statistics(self) -> RelayStatistics:
        """The relay's counters now."""
        return self.call(self.relay.statistics)

    def rebind(self) -> Address:
        """Move the latest client's upstream to a new source port (see UdpRelay.rebind)."""
        return self.call(self.relay.rebind)

    def rebind_after(self, to_server_bytes: int) -> threading.Thread:
        """Rebind once the client has sent ``to_server_bytes`` through the relay.

        Runs in a thread of its own, so the caller can wait for a client process
        meanwhile; join the thread afterwards (it gives up when the relay closes).
        """

        def watch() -> None:
            while True:
                try:
                    received = self.statistics().to_server.received_bytes
                except (RuntimeError, TimeoutError):
                    return  # the relay stopped first
                if received >= to_server_bytes:
                    self.rebind()
                    return
                time.sleep(0.005)

        watcher = threading.Thread(target=watch, daemon=True)
        watcher.start()
        return watcher
