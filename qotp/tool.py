"""The per-stream test protocol shared by ``qotp serve`` / ``qotp send`` and the Go peer.

On streams 0..K-1 of one connection:

* ``digest``: the client sends a u64 little-endian length N, then N bytes, and
  does not close; the server answers ``sha256=<hex> bytes=<N>\\n`` and closes.
* ``echo``: the server echoes every byte; the client closes once everything
  came back; the server closes when it sees the client's close.
"""

from __future__ import annotations

import asyncio
import hashlib
import struct
import time
from collections.abc import Iterator
from dataclasses import dataclass

from cryptography.hazmat.primitives.ciphers import Cipher, algorithms

from qotp.asyncio import QotpConnection, QotpListener, QotpStream

__all__ = ["ClientResult", "run_client", "serve_connection"]

CHUNK_BYTES = 256 * 1024
_U64 = struct.Struct("<Q")


async def _serve_digest(stream: QotpStream) -> None:
    header = await stream.readexactly(8)
    remaining = _U64.unpack(header)[0]
    digest = hashlib.sha256()
    total = remaining
    while remaining:
        chunk = await stream.read(min(remaining, CHUNK_BYTES))
        if not chunk:
            return
        digest.update(chunk)
        remaining -= len(chunk)
    stream.write(f"sha256={digest.hexdigest()} bytes={total}\n".encode())
    stream.close()
    await stream.drain()


async def _serve_echo(stream: QotpStream) -> None:
    while chunk := await stream.read(CHUNK_BYTES):
        stream.write(chunk)
        await stream.drain()
    stream.close()


async def serve_connection(connection: QotpConnection, mode: str) -> None:
    """Answer every stream the peer opens on this connection, until it ends."""
    handler = _serve_digest if mode == "digest" else _serve_echo
    tasks: set[asyncio.Task[None]] = set()
    try:
        while True:
            stream = await connection.accept_stream()
            task = asyncio.create_task(handler(stream))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
    except ConnectionError:
        pass
    for task in list(tasks):
        task.cancel()


def _stream_data(stream_id: int, size: int) -> Iterator[bytes]:
    """``size`` pseudo-random bytes for one stream, made as they are sent.

    A ChaCha20 key stream keyed by the stream id: deterministic, different per
    stream, without a period a transport bug could hide in, and ~5 GB/s, so
    the client measures the transport rather than its data source (Python's
    ``randbytes`` made ~0.35 GB/s, a tenth of the time of a 100 MB run) and
    holds one chunk in memory instead of the whole transfer.
    """
    key = hashlib.sha256(b"qotp test data %d" % stream_id).digest()
    keystream = Cipher(algorithms.ChaCha20(key, bytes(16)), mode=None).encryptor()
    zeros = bytes(CHUNK_BYTES)
    while size:
        length = min(size, CHUNK_BYTES)
        yield keystream.update(zeros[:length] if length < CHUNK_BYTES else zeros)
        size -= length


@dataclass(frozen=True, slots=True)
class ClientResult:
    """What ``qotp send`` reports."""

    ok: bool
    streams: int
    total_bytes: int
    elapsed_s: float
    error: str | None = None

    @property
    def mb_s(self) -> float:
        """Throughput in megabytes (10^6) per second."""
        return self.total_bytes / self.elapsed_s / 1e6 if self.elapsed_s > 0 else 0.0


async def _client_digest(stream: QotpStream, size: int) -> None:
    chunks = _stream_data(stream.stream_id, size)
    expected = hashlib.sha256()
    stream.write(_U64.pack(size))
    for chunk in chunks:
        expected.update(chunk)
        stream.write(chunk)
        await stream.drain()
    line = b""
    while not line.endswith(b"\n"):
        part = await stream.read(256)
        if not part:
            break
        line += part
    want = f"sha256={expected.hexdigest()} bytes={size}\n".encode()
    if line != want:
        raise ValueError(f"stream {stream.stream_id}: got {line!r}, want {want!r}")


async def _client_echo(stream: QotpStream, size: int) -> None:
    chunks = _stream_data(stream.stream_id, size)
    expected = hashlib.sha256()

    async def writer() -> None:
        for chunk in chunks:
            expected.update(chunk)
            stream.write(chunk)
            await stream.drain()

    writing = asyncio.create_task(writer())
    received = hashlib.sha256()
    count = 0
    while count < size:
        chunk = await stream.read(CHUNK_BYTES)
        if not chunk:
            break
        received.update(chunk)
        count += len(chunk)
    await writing
    stream.close()
    await stream.read()  # the server's close
    if count != size or received.digest() != expected.digest():
        raise ValueError(f"stream {stream.stream_id}: echo mismatch ({count} of {size} bytes)")


async def run_client(
    listener: QotpListener,
    address: tuple[str, int],
    *,
    streams: int,
    size: int,
    mode: str,
    peer_public_key: bytes | None = None,
    timeout: float = 120.0,
) -> ClientResult:
    """Dial, run the test protocol on ``streams`` streams of ``size`` bytes each, verify."""
    start = time.perf_counter()
    try:
        if peer_public_key is not None:
            connection = listener.dial_nowait(address, peer_public_key=peer_public_key)
        else:
            connection = await listener.dial(address, timeout=timeout)
        handler = _client_digest if mode == "digest" else _client_echo
        await asyncio.wait_for(
            asyncio.gather(*(handler(connection.stream(index), size) for index in range(streams))),
            timeout,
        )
        elapsed = time.perf_counter() - start
        connection.close()
        return ClientResult(True, streams, streams * size, elapsed)
    except (TimeoutError, ValueError, ConnectionError, asyncio.IncompleteReadError) as error:
        elapsed = time.perf_counter() - start
        reason = str(error) or type(error).__name__
        return ClientResult(False, streams, streams * size, elapsed, reason)
