"""The comparison's workloads and the byte protocol every transport carries them with.

One small protocol on any reliable byte stream, so that every transport
runs exactly the same exchange and every byte is checked by SHA-256:

* ``B`` (bulk): the client sends ``B``, a u64 little-endian length N and N
  pseudo-random bytes; the server answers the 32-byte SHA-256 of those N
  bytes and the u64 count it received.
* ``R`` (request/response): the client sends ``R``, then requests, each a
  u32 length and that many bytes; the server answers each with the 32-byte
  SHA-256 of the request.  A length of ``END_OF_REQUESTS`` ends the exchange.

Nothing relies on half-closing a stream (TLS over asyncio cannot), so the
same code runs over QOTP streams, TCP, TLS and QUIC streams.

Workloads:

* ``bulk``: one stream of N bytes (throughput, handshake excluded);
* ``bulk10``: ten parallel streams of N/10 bytes (ten connections where the
  transport has no streams: TCP, TLS);
* ``connect``: a 1 KB request on a new connection, handshake included,
  repeated (latency p50/p99 of connect + request + response);
* ``rr``: many small request/responses on one connection (requests/s and
  their latency).
"""

from __future__ import annotations

import enum
import hashlib
import struct
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Protocol

from cryptography.hazmat.primitives.ciphers import Cipher, algorithms

__all__ = [
    "BULK",
    "END_OF_REQUESTS",
    "REQUEST_RESPONSE",
    "ByteStream",
    "Workload",
    "WorkloadSizes",
    "VerificationError",
    "payload_chunks",
    "run_bulk_stream",
    "run_requests",
    "serve_stream",
]

BULK = b"B"
REQUEST_RESPONSE = b"R"
END_OF_REQUESTS = 0xFFFFFFFF
CHUNK_BYTES = 64 * 1024
_U64 = struct.Struct("<Q")
_U32 = struct.Struct("<I")
DIGEST_BYTES = 32


class Workload(enum.Enum):
    """What a row measures."""

    BULK = "bulk"
    BULK_PARALLEL = "bulk10"
    CONNECT = "connect"
    REQUEST_RESPONSE = "rr"

    @property
    def description(self) -> str:
        """A short human label."""
        return _DESCRIPTIONS[self]


_DESCRIPTIONS = {
    Workload.BULK: "bulk, 1 stream",
    Workload.BULK_PARALLEL: "bulk, 10 streams",
    Workload.CONNECT: "connect + 1 KB request",
    Workload.REQUEST_RESPONSE: "small req/resp, 1 conn",
}

PARALLEL_STREAMS = 10
CONNECT_REQUEST_BYTES = 1024
SMALL_REQUEST_BYTES = 64


@dataclass(frozen=True, slots=True, kw_only=True)
class WorkloadSizes:
    """How much each workload moves; ``--quick`` and the tests pick smaller ones."""

    bulk_bytes: int = 20_000_000
    """Total bytes of ``bulk`` and of ``bulk10`` (split over its streams)."""
    connects: int = 40
    """New connections of ``connect``."""
    requests: int = 1000
    """Request/responses of ``rr``."""
    go_bulk_bytes: int = 2_000_000
    """Bulk bytes of the Go reference's rows: its digest mode moves ~1 MB/s here, and
    under loss ~0.1 MB/s, so it gets less to move (MB/s stays comparable)."""

    @classmethod
    def quick(cls) -> WorkloadSizes:
        """Sizes for a run of a few minutes over the whole matrix."""
        return cls(bulk_bytes=3_000_000, connects=12, requests=200, go_bulk_bytes=300_000)


class ByteStream(Protocol):
    """A reliable ordered byte stream (QOTP stream, TCP/TLS socket, QUIC stream)."""

    async def readexactly(self, n: int) -> bytes:
        """Exactly ``n`` bytes, or :class:`asyncio.IncompleteReadError`."""
        ...

    def write(self, data: bytes) -> None:
        """Queue bytes for sending."""
        ...

    async def drain(self) -> None:
        """Wait until the send buffer has room again."""
        ...

    def close(self) -> None:
        """Finish our side of the stream."""
        ...


def payload_chunks(seed: int, size: int) -> Iterator[bytes]:
    """``size`` pseudo-random bytes, made chunk by chunk as they are sent.

    A ChaCha20 key stream keyed by ``seed``: no period a transport bug could
    hide in, several GB/s (so the client measures the transport, not its data
    source), and only one chunk in memory.
    """
    key = hashlib.sha256(b"qotp compare %d" % seed).digest()
    keystream = Cipher(algorithms.ChaCha20(key, bytes(16)), mode=None).encryptor()
    zeros = bytes(CHUNK_BYTES)
    while size:
        length = min(size, CHUNK_BYTES)
        yield keystream.update(zeros[:length])
        size -= length


class VerificationError(Exception):
    """The bytes that came back do not match what was sent."""


async def serve_stream(stream: ByteStream) -> int:
    """Answer one stream of the compare protocol; returns the payload bytes received."""
    kind = await stream.readexactly(1)
    if kind == BULK:
        remaining = total = _U64.unpack(await stream.readexactly(8))[0]
        digest = hashlib.sha256()
        while remaining:
            chunk = await stream.readexactly(min(remaining, CHUNK_BYTES))
            digest.update(chunk)
            remaining -= len(chunk)
        stream.write(digest.digest() + _U64.pack(total))
        await stream.drain()
        return int(total)
    if kind == REQUEST_RESPONSE:
        received = 0
        while True:
            length = _U32.unpack(await stream.readexactly(4))[0]
            if length == END_OF_REQUESTS:
                stream.write(_U32.pack(END_OF_REQUESTS))
                await stream.drain()
                return received
            request = await stream.readexactly(length)
            received += length
            stream.write(hashlib.sha256(request).digest())
            await stream.drain()
    raise VerificationError(f"unknown request kind {kind!r}")


async def run_bulk_stream(stream: ByteStream, seed: int, size: int) -> None:
    """Send ``size`` bytes and check the server's SHA-256 of them."""
    expected = hashlib.sha256()
    stream.write(BULK + _U64.pack(size))
    for chunk in payload_chunks(seed, size):
        expected.update(chunk)
        stream.write(chunk)
        await stream.drain()
    answer = await stream.readexactly(DIGEST_BYTES + 8)
    count = _U64.unpack_from(answer, DIGEST_BYTES)[0]
    if answer[:DIGEST_BYTES] != expected.digest() or count != size:
        raise VerificationError(f"bulk: server hashed {count} bytes to a different SHA-256")


async def run_requests(
    stream: ByteStream,
    seed: int,
    count: int,
    size: int,
    clock: _Clock,
    *,
    time_limit_s: float | None = None,
    answered_at: list[float] | None = None,
) -> list[float]:
    """``count`` request/responses of ``size`` bytes, each checked; their latencies (s).

    With ``time_limit_s``, stops early once that much time has passed (at
    least one request runs), so a slow path does not stretch a run for minutes.
    ``answered_at`` collects the clock at each verified answer (before the
    closing exchange, which ``connect`` must not count).
    """
    latencies = []
    stream.write(REQUEST_RESPONSE)
    requests = payload_chunks(seed, count * size) if count else iter(())
    buffer = b"".join(requests)
    deadline = clock() + time_limit_s if time_limit_s is not None else None
    for index in range(count):
        if deadline is not None and index and clock() > deadline:
            break
        request = buffer[index * size : (index + 1) * size]
        start = clock()
        stream.write(_U32.pack(size) + request)
        await stream.drain()
        answer = await stream.readexactly(DIGEST_BYTES)
        now = clock()
        latencies.append(now - start)
        if answer != hashlib.sha256(request).digest():
            raise VerificationError(f"request {index}: wrong SHA-256 in the answer")
        if answered_at is not None:
            answered_at.append(now)
    stream.write(_U32.pack(END_OF_REQUESTS))
    await stream.drain()
    if _U32.unpack(await stream.readexactly(4))[0] != END_OF_REQUESTS:
        raise VerificationError("the server did not confirm the end of the requests")
    return latencies


class _Clock(Protocol):
    def __call__(self) -> float: ...
