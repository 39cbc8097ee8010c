"""The per-stream test protocol of ``qotp serve`` / ``qotp send`` and the Go interop peer.

On streams 0..K-1 of one connection:

* ``digest``: the client sends a u64 little-endian length N, then N bytes, and
  does not close; the server answers ``sha256=<hex> bytes=<N>\\n`` and closes.
* ``echo``: the server echoes every byte; the client closes once everything
  came back; the server closes when it sees the client's close. The client is
  done when the server's close arrives or the server acknowledged the client's
  (a reference server may never send its own close, see SPEC.md section 9).

Reports are honest: a client counts only bytes that came back verified
(digest: the server's SHA-256 matched; echo: every byte compared), computes
rates from those alone, and never puts payload bytes into a message.  A
failure is classified (:class:`ClientFailure`) and described in one line that
names the likely cause and what to try.
"""

from __future__ import annotations

import asyncio
import hashlib
import struct
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from enum import Enum
from typing import Any, NoReturn

from cryptography.hazmat.primitives.ciphers import Cipher, algorithms

from qotp.asyncio import PORT_UNREACHABLE, QotpConnection, QotpListener, QotpStream
from qotp.errors import LocalProtocolError
from qotp.events import TerminationReason
from qotp.protection import Address

__all__ = [
    "MODES",
    "ClientFailure",
    "ClientResult",
    "ConnectionReport",
    "TransferProgress",
    "describe_close_reason",
    "format_address",
    "run_client",
    "serve_connection",
]

MODES = ("digest", "echo")
CHUNK_BYTES = 256 * 1024
MAX_ANSWER_BYTES = 160
"""A digest answer is about 100 bytes; reading stops here, whatever the server sends."""
MAX_DIGEST_LENGTH = (1 << 48) - 1
"""The longest a stream can carry (48-bit offsets): longer announced lengths are refused."""
_U64 = struct.Struct("<Q")


def format_address(address: Address) -> str:
    """``("::1", 80)`` -> ``"[::1]:80"``; ``("127.0.0.1", 80)`` -> ``"127.0.0.1:80"``."""
    host, port = address[0], address[1]
    return f"[{host}]:{port}" if ":" in str(host) else f"{host}:{port}"


_REASON_WORDS = {
    TerminationReason.CLOSED: "closed normally",
    TerminationReason.CLOSED_BY_PEER: "closed by the peer",
    TerminationReason.IDLE_TIMEOUT: "idle timeout (the peer went silent)",
    TerminationReason.RETRY_LIMIT: "the peer stopped acknowledging (retransmission limit)",
    TerminationReason.ABORTED: "aborted",
    TerminationReason.PROTOCOL_VIOLATION: "protocol violation",
    TerminationReason.HANDSHAKE_FAILED: "handshake failed",
}


def describe_close_reason(reason: TerminationReason | None, detail: str = "") -> str:
    """Why a connection ended, in words for a log line (from the engine's reason)."""
    if reason is None:
        return "still open"
    if reason is TerminationReason.ABORTED and detail == "listener closed":
        return "closed by us (server stopping)"
    words = _REASON_WORDS[reason]
    return f"{words}: {detail}" if detail and reason.value not in detail else words


def _is_silence(reason: TerminationReason | None) -> bool:
    """Whether the connection ended because the peer went quiet."""
    return reason in (TerminationReason.IDLE_TIMEOUT, TerminationReason.RETRY_LIMIT)


# -- server -------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class ConnectionReport:
    """What ``qotp serve`` logs about one connection once it ended."""

    address: Address
    peer_public_key: bytes | None
    streams: int
    streams_completed: int
    """Streams that ran the protocol to the end (the rest were cut off)."""
    bytes_received: int
    bytes_sent: int
    duration_s: float
    reason: TerminationReason
    detail: str
    error: bool

    def as_json(self) -> dict[str, Any]:
        """Plain JSON types, for ``--json`` logs."""
        return {
            "event": "connection",
            "peer": format_address(self.address),
            "pubkey": None if self.peer_public_key is None else self.peer_public_key.hex(),
            "streams": self.streams,
            "streams_completed": self.streams_completed,
            "bytes_received": self.bytes_received,
            "bytes_sent": self.bytes_sent,
            "duration_s": round(self.duration_s, 3),
            "reason": self.reason.value,
            "detail": self.detail,
            "error": self.error,
        }


@dataclass(slots=True)
class _ServerCounters:
    streams: int = 0
    streams_completed: int = 0
    bytes_received: int = 0
    bytes_sent: int = 0


async def _serve_digest(stream: QotpStream, counters: _ServerCounters) -> None:
    header = await stream.readexactly(8)
    counters.bytes_received += 8
    remaining = total = _U64.unpack(header)[0]
    if total > MAX_DIGEST_LENGTH:
        # Not a length a stream can carry: most likely an echo-mode client's data.
        answer = f"error: announced length {total} is impossible; is the client in echo mode?\n"
        stream.write(answer.encode())
        counters.bytes_sent += len(answer)
        stream.close()
        await stream.drain()
        return
    digest = hashlib.sha256()
    while remaining:
        chunk = await stream.read(min(remaining, CHUNK_BYTES))
        if not chunk:
            raise asyncio.IncompleteReadError(b"", remaining)
        digest.update(chunk)
        remaining -= len(chunk)
        counters.bytes_received += len(chunk)
    answer = f"sha256={digest.hexdigest()} bytes={total}\n"
    stream.write(answer.encode())
    counters.bytes_sent += len(answer)
    stream.close()
    await stream.drain()


async def _serve_echo(stream: QotpStream, counters: _ServerCounters) -> None:
    while chunk := await stream.read(CHUNK_BYTES):
        counters.bytes_received += len(chunk)
        stream.write(chunk)
        await stream.drain()
        counters.bytes_sent += len(chunk)
    stream.close()


async def _serve_stream(stream: QotpStream, mode: str, counters: _ServerCounters) -> None:
    """One stream; a peer that leaves half-way ends the stream, nothing more."""
    handler = _serve_digest if mode == "digest" else _serve_echo
    try:
        await handler(stream, counters)
    except (ConnectionError, asyncio.IncompleteReadError, LocalProtocolError):
        return
    counters.streams_completed += 1


async def serve_connection(connection: QotpConnection, mode: str) -> ConnectionReport:
    """Answer every stream the peer opens on this connection until it ends; report it."""
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    started = time.monotonic()
    counters = _ServerCounters()
    tasks: set[asyncio.Task[None]] = set()
    try:
        while True:
            stream = await connection.accept_stream()
            counters.streams += 1
            task = asyncio.create_task(_serve_stream(stream, mode, counters))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
    except ConnectionError:
        pass
    finally:
        for task in list(tasks):
            task.cancel()
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)
    return ConnectionReport(
        address=connection.address,
        peer_public_key=connection.peer_public_key,
        streams=counters.streams,
        streams_completed=counters.streams_completed,
        bytes_received=counters.bytes_received,
        bytes_sent=counters.bytes_sent,
        duration_s=time.monotonic() - started,
        reason=connection.close_reason or TerminationReason.CLOSED,
        detail=connection.close_detail,
        error=connection.closed_by_error,
    )


# -- client -------------------------------------------------------------------------


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


class ClientFailure(Enum):
    """Why a test-protocol run failed, for messages and exit statuses."""

    NO_ANSWER = "no answer"
    """The handshake never completed: no server there, or the wrong ``--pubkey``."""
    HANDSHAKE_FAILED = "handshake failed"
    TIMEOUT = "timeout"
    """The connection worked but the run did not finish within the time allowed."""
    CONNECTION_LOST = "connection lost"
    """The peer went silent or ended the connection mid-run."""
    WRONG_MODE = "wrong mode"
    """The server speaks the other mode (digest versus echo)."""
    BAD_ANSWER = "bad answer"
    """The server's answer or echo does not match what was sent."""
    REFUSED = "refused"
    """Our own side would not do it (stream limits)."""


class _RunError(Exception):
    def __init__(self, failure: ClientFailure, message: str) -> None:
        super().__init__(message)
        self.failure = failure


@dataclass(slots=True)
class TransferProgress:
    """Live counters of one :func:`run_client` run, for progress bars and Ctrl-C reports."""

    streams: int
    bytes_per_stream: int
    started: float = field(default_factory=time.perf_counter)
    established: bool = False
    bytes_written: int = 0
    """Bytes the transport took (its send buffer), not yet proof of delivery."""
    bytes_returned: int = 0
    """Echo mode: bytes that came back, each compared."""
    streams_verified: int = 0

    @property
    def total_bytes(self) -> int:
        """Bytes the run sends in all."""
        return self.streams * self.bytes_per_stream

    @property
    def verified_bytes(self) -> int:
        """Bytes of streams that finished verified: the only ones a rate may count."""
        return self.streams_verified * self.bytes_per_stream

    def elapsed_s(self) -> float:
        """Seconds since the run started."""
        return time.perf_counter() - self.started

    def summary(self) -> str:
        """``"1 of 4 streams verified, 3.2 MB of 8.0 MB sent"``, for interruptions."""
        return (
            f"{self.streams_verified} of {self.streams} streams verified, "
            f"{_megabytes(self.bytes_written)} of {_megabytes(self.total_bytes)} sent"
        )


def _megabytes(count: int) -> str:
    return f"{count / 1e6:.1f} MB" if count >= 100_000 else f"{count} bytes"


@dataclass(frozen=True, slots=True)
class ClientResult:
    """What ``qotp send`` reports: only verified bytes count."""

    ok: bool
    streams: int
    total_bytes: int
    """Bytes of streams that finished verified (all of them when ``ok``)."""
    elapsed_s: float
    error: str | None = None
    failure: ClientFailure | None = None
    bytes_sent: int = 0
    """Bytes handed to the transport, verified or not."""

    @property
    def mb_s(self) -> float:
        """Verified megabytes (10^6) per second."""
        return self.total_bytes / self.elapsed_s / 1e6 if self.elapsed_s > 0 else 0.0

    def report(self) -> dict[str, Any]:
        """The JSON result line of ``qotp send`` (scripts and the interop harness parse it)."""
        record: dict[str, Any] = {
            "ok": self.ok,
            "streams": self.streams,
            "total_bytes": self.total_bytes,
            "elapsed_s": round(self.elapsed_s, 6),
            "mb_s": round(self.mb_s, 3),
        }
        if self.error:
            record["error"] = self.error
        if self.failure is not None:
            record["failure"] = self.failure.value
        return record


async def _client_digest(stream: QotpStream, size: int, progress: TransferProgress) -> None:
    header = _U64.pack(size)
    expected = hashlib.sha256()

    async def write() -> None:
        stream.write(header)
        for chunk in _stream_data(stream.stream_id, size):
            expected.update(chunk)
            stream.write(chunk)
            await stream.drain()
            progress.bytes_written += len(chunk)

    async with asyncio.TaskGroup() as group:
        # The answer is read while writing: an echo server's answer shows at once.
        group.create_task(write())
        answer = await group.create_task(_read_digest_answer(stream, header))
    want = f"sha256={expected.hexdigest()} bytes={size}\n".encode()
    if answer != want:
        raise _RunError(
            ClientFailure.BAD_ANSWER,
            f"stream {stream.stream_id}: the server's SHA-256 differs from what was sent "
            f"({size} bytes): data was corrupted on the way",
        )
    progress.streams_verified += 1


async def _read_digest_answer(stream: QotpStream, header: bytes) -> bytes:
    answer = b""
    while not answer.endswith(b"\n"):
        part = await stream.read(MAX_ANSWER_BYTES - len(answer))
        if not part:
            _raise_stream_ended(stream, "before answering")
        answer += part
        if len(answer) >= len(header) and answer.startswith(header):
            raise _RunError(
                ClientFailure.WRONG_MODE,
                "server is in echo mode (it sent our bytes back): use --mode echo",
            )
        if answer.startswith(b"error: "):
            if answer.endswith(b"\n") or len(answer) >= MAX_ANSWER_BYTES:
                text = answer.decode("ascii", "replace").strip()[:MAX_ANSWER_BYTES]
                raise _RunError(ClientFailure.BAD_ANSWER, f"server refused: {text}")
            continue
        if not b"sha256=".startswith(answer[:7]) or len(answer) >= MAX_ANSWER_BYTES:
            raise _RunError(
                ClientFailure.BAD_ANSWER,
                f"stream {stream.stream_id}: unexpected answer {answer[:16].hex()}...: "
                "is this a `qotp serve` (or the Go peer) in digest mode?",
            )
    return answer


def _raise_stream_ended(stream: QotpStream, what: str) -> NoReturn:
    connection = stream.connection
    if connection.is_closed:
        raise connection.closed_error()
    raise _RunError(
        ClientFailure.CONNECTION_LOST,
        f"server closed stream {stream.stream_id} {what}: was it stopped?",
    )


async def _client_echo(stream: QotpStream, size: int, progress: TransferProgress) -> None:
    expected = hashlib.sha256()
    received = hashlib.sha256()
    sent_prefix = bytearray()

    async def write() -> None:
        for chunk in _stream_data(stream.stream_id, size):
            expected.update(chunk)
            if len(sent_prefix) < 16:
                sent_prefix.extend(chunk[: 16 - len(sent_prefix)])
            stream.write(chunk)
            await stream.drain()
            progress.bytes_written += len(chunk)

    async def read() -> int:
        count = 0
        while count < size:
            chunk = await stream.read(min(CHUNK_BYTES, size - count))
            if not chunk:
                _raise_stream_ended(stream, f"after echoing {count} of {size} bytes")
            if count == 0 and (chunk.startswith(b"sha256=") or chunk.startswith(b"error: ")):
                if not sent_prefix.startswith(chunk[:7]):
                    raise _RunError(
                        ClientFailure.WRONG_MODE,
                        "server is in digest mode (it answered with a digest line): "
                        "use --mode digest",
                    )
            received.update(chunk)
            count += len(chunk)
            progress.bytes_returned += len(chunk)
        return count

    async with asyncio.TaskGroup() as group:
        group.create_task(write())
        count = await group.create_task(read())
    stream.close()
    extra = await _read_until_closed(stream)
    if extra or count != size or received.digest() != expected.digest():
        raise _RunError(
            ClientFailure.BAD_ANSWER,
            f"stream {stream.stream_id}: the echo differs from what was sent "
            f"({count}{'+' if extra else ''} of {size} bytes came back)",
        )
    progress.streams_verified += 1


async def _read_until_closed(stream: QotpStream) -> bytes:
    """After our close: what else the server sends before its close (b"" for an echo).

    The server's CLOSE ends the wait, or the server acknowledging ours: the
    reference answers a CLOSE by closing its own direction where it stands, and
    when everything it sent was already acknowledged it removes the stream without
    sending its CLOSE (SPEC.md, section 9). The echo came back whole, so by then
    nothing more can come; waiting for the CLOSE would wait for the idle timeout.
    """
    reading = asyncio.ensure_future(stream.read(MAX_ANSWER_BYTES))
    acknowledged = asyncio.ensure_future(stream.wait_send_finished())
    try:
        await asyncio.wait({reading, acknowledged}, return_when=asyncio.FIRST_COMPLETED)
        if reading.done():
            return reading.result()
        acknowledged.result()  # a connection that ended raises here
        return b""
    finally:
        reading.cancel()
        acknowledged.cancel()


def _first_error(error: BaseException) -> BaseException:
    """The first error that is not a cancellation, out of nested task-group errors."""
    if isinstance(error, BaseExceptionGroup):
        for inner in error.exceptions:
            found = _first_error(inner)
            if not isinstance(found, asyncio.CancelledError):
                return found
        return _first_error(error.exceptions[0])
    return error


def _is_dtls(protection: object) -> bool:
    """Whether the connection runs over DTLS (``--crypto dtls``), without importing dtls."""
    return type(protection).__module__ == "qotp.dtls_protection"


_DTLS_HINTS = {
    "bad_certificate": "check --cafile and --server-name, or --insecure",
    "unknown_ca": "the server does not trust the certificate we showed",
    "handshake_failure": "the server holds no credentials or cipher suite we can use: "
    "--psk on both sides, or --cert on the server and --cafile or --insecure here",
    "decrypt_error": "the keys differ: check --psk on both sides",
    "unknown_psk_identity": "check --psk-identity on both sides",
    "protocol_version": "the server speaks another DTLS version",
}
"""What to try, by the DTLS alert that ended the handshake (qotp's option names)."""


def _dtls_hint(cause: str) -> str:
    return _DTLS_HINTS.get(cause.split(":", 1)[0].strip(), "")


def _describe_failure(
    error: BaseException,
    *,
    where: str,
    connection: QotpConnection | None,
    progress: TransferProgress,
    zero_rtt: bool,
    timeout: float,
    mode: str,
) -> tuple[ClientFailure, str]:
    """The failure kind and its one line (likely cause, what to try)."""
    elapsed = f"{progress.elapsed_s():.1f} s"
    done = progress.summary()
    if isinstance(error, _RunError):
        return error.failure, error.args[0]
    established = progress.established or (connection is not None and connection.is_established)
    reason = connection.close_reason if connection is not None else None
    detail = connection.close_detail if connection is not None else ""
    key_hint = "is --pubkey right?" if zero_rtt else "is this its port?"
    engine = connection.engine if connection is not None else None
    heard_back = engine is not None and (
        engine.datagrams_received > 0 or engine.handshake_datagrams_received > 0
    )
    if not established:
        if reason is TerminationReason.ABORTED and detail == PORT_UNREACHABLE:
            return (
                ClientFailure.NO_ANSWER,
                f"nothing answers at {where}: {PORT_UNREACHABLE}: is the server running, "
                "on this port?",
            )
        dtls = engine is not None and _is_dtls(engine.protection)
        if reason is TerminationReason.HANDSHAKE_FAILED and heard_back and dtls:
            cause = detail.removeprefix("DTLS: ").replace("--servername", "--server-name")
            hint = "" if "--" in cause else _dtls_hint(cause)  # the cause may name it
            return (
                ClientFailure.HANDSHAKE_FAILED,
                f"handshake with {where} failed: {cause}" + (f" ({hint})" if hint else ""),
            )
        if reason is TerminationReason.HANDSHAKE_FAILED and heard_back:
            return (
                ClientFailure.HANDSHAKE_FAILED,
                f"handshake with {where} failed after {elapsed} ({detail}): {key_hint}",
            )
        if heard_back and dtls:
            return (
                ClientFailure.HANDSHAKE_FAILED,
                f"the DTLS handshake with {where} did not finish after {elapsed} although the "
                "server answered: is --psk the same on both sides? (DTLS 1.2 drops records "
                "under a wrong key without a word)",
            )
        return (
            ClientFailure.NO_ANSWER,
            f"no answer from {where} after {elapsed}: is the server running? {key_hint}",
        )
    if isinstance(error, TimeoutError) and (connection is None or not connection.is_closed):
        nothing_back = mode == "echo" and progress.bytes_returned == 0
        hint = "nothing came back: is the server in digest mode? " if nothing_back else ""
        return (
            ClientFailure.TIMEOUT,
            f"timed out after {elapsed} (--timeout {timeout:g}): {done}; "
            f"{hint}a slow path or server needs a larger --timeout",
        )
    if isinstance(error, LocalProtocolError):
        return ClientFailure.REFUSED, f"could not run the streams: {error}"
    if _is_silence(reason):
        return (
            ClientFailure.CONNECTION_LOST,
            f"connection to {where} lost after {elapsed}: "
            f"{describe_close_reason(reason, detail)}; was the server stopped? {done}",
        )
    if reason is TerminationReason.PROTOCOL_VIOLATION:
        return ClientFailure.CONNECTION_LOST, f"{where} broke the protocol ({detail}); {done}"
    words = describe_close_reason(reason, detail) if reason is not None else str(error)
    return (
        ClientFailure.CONNECTION_LOST,
        f"connection to {where} ended after {elapsed} ({words or type(error).__name__}) "
        f"before the run finished; {done}",
    )


async def run_client(
    listener: QotpListener,
    address: Address,
    *,
    streams: int,
    size: int,
    mode: str,
    peer_public_key: bytes | None = None,
    timeout: float = 120.0,
    progress: TransferProgress | None = None,
) -> ClientResult:
    """Dial, run the test protocol on ``streams`` streams of ``size`` bytes each, verify.

    Never raises for what the network or the server does: the result says
    what failed (``failure``, ``error``) and how many bytes were verified.
    ``progress`` (made if None) is updated as the run goes.
    """
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    progress = progress if progress is not None else TransferProgress(streams, size)
    handler = _client_digest if mode == "digest" else _client_echo
    connection: QotpConnection | None = None
    where = format_address(address)
    try:
        async with asyncio.timeout(timeout):
            if peer_public_key is not None:
                connection = listener.dial_nowait(address, peer_public_key=peer_public_key)
            else:
                connection = listener.dial_nowait(address)
                await connection.wait_established()
                progress.established = True
            async with asyncio.TaskGroup() as group:
                for index in range(streams):
                    group.create_task(handler(connection.stream(index), size, progress))
    except Exception as raised:  # noqa: BLE001 - every failure becomes a result
        error = _first_error(raised)
        if not isinstance(error, Exception):
            raise error from None
        failure, message = _describe_failure(
            error,
            where=where,
            connection=connection,
            progress=progress,
            zero_rtt=peer_public_key is not None,
            timeout=timeout,
            mode=mode,
        )
        if connection is not None:
            # Streams end with FIN where the peer may still hear it; silence needs no notice.
            if failure in (ClientFailure.NO_ANSWER, ClientFailure.CONNECTION_LOST):
                connection.abort()
            else:
                connection.close()
        return ClientResult(
            False,
            streams,
            progress.verified_bytes,
            progress.elapsed_s(),
            message,
            failure,
            progress.bytes_written,
        )
    elapsed = progress.elapsed_s()
    connection.close()
    return ClientResult(True, streams, progress.verified_bytes, elapsed, None, None,
                        progress.bytes_written)  # fmt: skip
