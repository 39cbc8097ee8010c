"""Two QOTP endpoints wired back to back on a virtual clock (no loss).

For loss, reordering and the like see ``netsim.py``; this driver is the
smallest thing that runs a conversation deterministically.
"""

from __future__ import annotations

from collections.abc import Callable

from qotp.endpoint import QotpEndpoint
from qotp.events import ConnectionTerminated, Event
from qotp.protection import Address

CLIENT_ADDRESS: Address = ("192.0.2.1", 1111)
SERVER_ADDRESS: Address = ("192.0.2.2", 2222)
ONE_WAY_DELAY_NS = 1_000_000


class EnginePair:
    """Client and server endpoints; datagrams take ONE_WAY_DELAY_NS each way."""

    def __init__(
        self, client: QotpEndpoint | None = None, server: QotpEndpoint | None = None
    ) -> None:
        self.client = client or QotpEndpoint()
        self.server = server or QotpEndpoint()
        self.client_address = CLIENT_ADDRESS
        self.now = 0
        self.events: dict[str, list[Event]] = {"client": [], "server": []}
        self.in_flight: list[tuple[int, str, bytes, Address]] = []
        self.drop: Callable[[str, bytes], bool] = lambda side, datagram: False

    def _collect(self) -> None:
        for name, endpoint in (("client", self.client), ("server", self.server)):
            while (event := endpoint.next_event()) is not None:
                self.events[name].append(event)

    def step(self) -> bool:
        """Move datagrams and time forward once; False when nothing at all is left to do."""
        for name, endpoint in (("client", self.client), ("server", self.server)):
            for datagram, _address in endpoint.datagrams_to_send(self.now):
                if not self.drop(name, datagram):
                    source = self.client_address if name == "client" else SERVER_ADDRESS
                    self.in_flight.append((self.now + ONE_WAY_DELAY_NS, name, datagram, source))
        self._collect()
        deadlines = [arrival for arrival, *_ in self.in_flight]
        for endpoint in (self.client, self.server):
            timer = endpoint.get_timer()
            if timer is not None:
                deadlines.append(timer)
        if not deadlines:
            return False
        self.now = max(self.now, min(deadlines))
        arriving = [item for item in self.in_flight if item[0] <= self.now]
        self.in_flight = [item for item in self.in_flight if item[0] > self.now]
        for _arrival, name, datagram, source in arriving:
            target = self.server if name == "client" else self.client
            target.receive_datagram(datagram, source, self.now)
        self.client.handle_timer(self.now)
        self.server.handle_timer(self.now)
        self._collect()
        return True

    def run_until(self, condition: Callable[[], bool], limit_ns: int = 60_000_000_000) -> None:
        """Step until ``condition()`` holds; fail if virtual time passes ``limit_ns``."""
        while not condition():
            if not self.step() or self.now > limit_ns:
                raise AssertionError(f"condition not reached by {self.now / 1e9:.3f} s")


def run_alone(
    endpoint: QotpEndpoint, *, limit_ns: int
) -> tuple[list[int], list[ConnectionTerminated], int]:
    """Drive an endpoint nobody answers on its own timers until it has none left.

    Returns the instants (ns) at which it sent something, the termination events
    of the connections that ended, and the last instant reached (at most ``limit_ns``).
    """
    now = 0
    sends: list[int] = []
    ended: list[ConnectionTerminated] = []
    while now < limit_ns:
        if endpoint.datagrams_to_send(now):
            sends.append(now)
        while (event := endpoint.next_event()) is not None:
            if isinstance(event, ConnectionTerminated):
                ended.append(event)
        timer = endpoint.get_timer()
        if timer is None:
            break
        now = max(now + 1, timer)
        endpoint.handle_timer(now)
    return sends, ended, now
