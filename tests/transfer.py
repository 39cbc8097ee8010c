"""A multi-stream transfer between two QOTP endpoints, for netsim and EnginePair runs.

The client writes pseudo-random bytes on streams 0..K-1 and closes each; the
server reads them (and, by default, closes its half once it saw the end).  Any
crypto layer underneath: the driver only uses the transport's surface.
"""

from __future__ import annotations

import hashlib
import random

from qotp.connection import Connection
from qotp.endpoint import QotpEndpoint
from qotp.events import Event, StreamClosed


def stream_payload(stream_id: int, size: int) -> bytes:
    return random.Random(stream_id).randbytes(size)


class Transfer:
    """The client writes each stream and closes it; the server reads and closes its half.

    Done when every byte arrived and every stream is closed (FIN/ACK) on both sides;
    with ``close=False`` the server leaves its half open and done means every byte
    arrived.
    """

    def __init__(
        self, client: QotpEndpoint, server: QotpEndpoint, address: tuple[str, int],
        streams: int, size: int, *, peer_public_key: bytes | None = None, close: bool = True,
    ) -> None:  # fmt: skip
        self.close = close
        self.client = client
        self.server = server
        self.payloads = {stream_id: stream_payload(stream_id, size) for stream_id in range(streams)}
        self.offsets = dict.fromkeys(self.payloads, 0)
        self.received = {stream_id: bytearray() for stream_id in self.payloads}
        self.server_closed: set[int] = set()
        self.events: dict[str, list[Event]] = {"client": [], "server": []}
        self.connection: Connection = client.connect(
            address, now=0, peer_public_key=peer_public_key
        )

    @property
    def server_connection(self) -> Connection | None:
        return self.server.connections.get(self.connection.connection_id)

    def step(self, now: int) -> None:
        connection = self.connection
        if not connection.is_terminated:
            for stream_id, data in self.payloads.items():
                offset = self.offsets[stream_id]
                if offset < len(data):
                    written = connection.send_stream_data(
                        stream_id, data[offset : offset + 256 * 1024], now=now
                    )
                    self.offsets[stream_id] = offset + written
                    if self.offsets[stream_id] == len(data):
                        connection.close_stream(stream_id, now=now)
                    self.client.mark_ready(connection)
        server = self.server_connection
        if server is not None and not server.is_terminated:
            for stream_id in self.payloads:
                chunk = server.read(stream_id, now=now)
                if chunk:
                    self.received[stream_id].extend(chunk)
                    self.server.mark_ready(server)
                if self.close and stream_id not in self.server_closed and server.at_eof(stream_id):
                    self.server_closed.add(stream_id)
                    server.close_stream(stream_id, now=now)
                    self.server.mark_ready(server)
        for name, endpoint in (("client", self.client), ("server", self.server)):
            while (event := endpoint.next_event()) is not None:
                self.events[name].append(event)

    def closed_streams(self, side: str) -> set[int]:
        return {e.stream_id for e in self.events[side] if isinstance(e, StreamClosed)}

    def done(self) -> bool:
        arrived = all(len(self.received[k]) == len(v) for k, v in self.payloads.items())
        if not self.close:
            return arrived
        return (
            arrived
            and self.closed_streams("client") == set(self.payloads)
            and self.closed_streams("server") == set(self.payloads)
        )

    def verify(self) -> None:
        for stream_id, data in self.payloads.items():
            assert (
                hashlib.sha256(self.received[stream_id]).digest() == hashlib.sha256(data).digest()
            )
