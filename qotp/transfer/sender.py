"""Sending files over one QOTP connection: a control stream, then one stream per file.

The session opens with an identity exchange on the control stream
(:mod:`qotp.identity_proof`), so that the receiver can admit only known
senders and we learn that the receiver holds its key.  Then up to
``parallel`` files move at once, each on its own stream; every file is read
from disk in 1 MiB pieces as the stream's send buffer takes them, so memory
does not grow with the file.  A file the receiver partly holds resumes after
the longest prefix whose chunk digests match ours.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
import time
import weakref
from collections.abc import Iterator

from qotp.asyncio import QotpConnection
from qotp.identity_proof import new_nonce, prove, verify
from qotp.transfer.blocking import run_blocking
from qotp.transfer.events import (
    FileDone,
    FileProgress,
    FileStarted,
    TransferEvent,
    TransferObserver,
    TransferSummary,
)
from qotp.transfer.filedata import (
    IO_CHUNK_BYTES,
    SMALL_FILE_BYTES,
    matching_prefix,
    matching_prefix_of,
    read_and_hash,
    read_small_file,
)
from qotp.transfer.framing import expect_message, write_message
from qotp.transfer.messages import (
    Data,
    End,
    FileHeader,
    Hello,
    Offer,
    Proof,
    Refuse,
    Result,
    TransferProtocolError,
    Welcome,
)
from qotp.transfer.paths import FileEntry, Manifest

__all__ = ["DEFAULT_PARALLEL_FILES", "TransferError", "TransferRefused", "send_files"]

logger = logging.getLogger(__name__)

DEFAULT_PARALLEL_FILES = 4
MAX_PARALLEL_FILES = 256


class TransferError(Exception):
    """The session could not run (the receiver did not prove its key, the connection broke)."""


class TransferRefused(TransferError):
    """The receiver refused the session (our key is not allowed, it takes no files)."""


_next_stream: weakref.WeakKeyDictionary[QotpConnection, int] = weakref.WeakKeyDictionary()


RESPONDER_FIRST_STREAM_ID = 1 << 31
"""The accepting side numbers its transfer streams from here; the dialing side from 2."""


def stream_ids(connection: QotpConnection) -> Iterator[int]:
    """Fresh stream ids for our sessions on this connection.

    Each side of a connection may send files, so the two sides number their
    streams apart: the dialing side from 2 up, the other from 2^31 up, never
    reusing one within the connection.  Consecutive ids keep the receiver's
    memory of finished streams compact (runs of ids, :mod:`qotp.recv`).
    Streams 0 and 1 are left alone: a 0-RTT dial pings on 0, peers prove their
    keys on 1.
    """
    first = 2 if connection.engine.is_initiator else RESPONDER_FIRST_STREAM_ID
    while True:
        current = _next_stream.get(connection, first)
        _next_stream[connection] = current + 1
        yield current


def _notify(observer: TransferObserver | None, event: TransferEvent) -> None:
    if observer is not None:
        observer(event)


async def _open_session(connection: QotpConnection, manifest: Manifest, stream_id: int) -> None:
    identity = connection.local_identity
    peer_key = connection.peer_public_key
    if identity is None or peer_key is None:
        raise TransferError("file transfer needs QOTP's native identity keys on both ends")
    control = connection.stream(stream_id)
    nonce = new_nonce()
    write_message(
        control, Hello(nonce=nonce, files=len(manifest.files), total_bytes=manifest.total_bytes)
    )
    await control.drain()
    reply = await expect_message(control, Welcome, Refuse)
    if isinstance(reply, Refuse):
        raise TransferRefused(f"the receiver refused: {reply.reason}")
    if not verify(
        identity,
        peer_key,
        reply.proof,
        peer_is_initiator=False,
        initiator_nonce=nonce,
        responder_nonce=reply.nonce,
    ):
        raise TransferError("the receiver could not prove that it holds its key")
    proof = prove(
        identity, peer_key, as_initiator=True, initiator_nonce=nonce, responder_nonce=reply.nonce
    )
    write_message(control, Proof(proof=proof))
    await control.drain()


async def _send_file(
    connection: QotpConnection,
    stream_id: int,
    entry: FileEntry,
    observer: TransferObserver | None,
) -> FileDone:
    try:
        fd, info, small = await run_blocking(read_small_file, entry.source, SMALL_FILE_BYTES)
    except OSError as error:
        return FileDone(
            path=entry.relative,
            size=entry.size,
            bytes_sent=0,
            bytes_skipped=0,
            sha256=None,
            ok=False,
            error=f"cannot read {entry.source}: {error.strerror}",
        )
    sent = 0
    offset = 0
    size = info.st_size
    reading: asyncio.Future[bytes] | None = None
    try:
        stream = connection.stream(stream_id)
        write_message(
            stream,
            FileHeader(
                path=entry.relative,
                size=size,
                mtime_ns=info.st_mtime_ns,
                executable=bool(info.st_mode & 0o100),
            ),
        )
        await stream.drain()
        reply = await expect_message(stream, Offer, Result)
        if isinstance(reply, Result):
            raise TransferProtocolError(reply.error or "the receiver refused the file")
        if small is not None:
            # A small file is in memory already: no more thread hops.
            offset, whole = matching_prefix_of(small, reply)
            write_message(stream, Data(offset=offset))
            _notify(observer, FileStarted(path=entry.relative, size=size, offset=offset))
            rest = small[offset:]
            whole.update(rest)
            stream.write(rest)
            sent = len(rest)
            _notify(observer, FileProgress(path=entry.relative, position=size, size=size))
        else:
            offset, whole = await run_blocking(matching_prefix, fd, size, reply)
            write_message(stream, Data(offset=offset))
            _notify(observer, FileStarted(path=entry.relative, size=size, offset=offset))
            position = offset

            def read_at(start: int) -> asyncio.Future[bytes]:
                length = min(IO_CHUNK_BYTES, size - start)
                return asyncio.ensure_future(run_blocking(read_and_hash, fd, start, length, whole))

            # The next piece is read (and hashed, in order) while this one is sent.
            reading = read_at(position) if position < size else None
            while reading is not None:
                data = await reading
                reading = None
                if not data:
                    raise TransferProtocolError("the file shrank while it was sent")
                position += len(data)
                sent += len(data)
                if position < size:
                    reading = read_at(position)
                stream.write(data)
                await stream.drain()
                _notify(observer, FileProgress(path=entry.relative, position=position, size=size))
        digest = whole.digest()
        write_message(stream, End(sha256=digest))
        stream.close()
        await stream.drain()
        result = await expect_message(stream, Result)
        if not result.ok:
            raise TransferProtocolError(result.error or "the receiver reported a failure")
        if result.sha256 != digest:
            raise TransferProtocolError("the receiver reported another SHA-256")
        return FileDone(
            path=entry.relative,
            size=size,
            bytes_sent=sent,
            bytes_skipped=offset,
            sha256=digest,
            ok=True,
        )
    except (TransferProtocolError, OSError, ConnectionError) as error:
        message = str(error) or type(error).__name__
        if isinstance(error, OSError) and error.strerror:
            message = f"{entry.source}: {error.strerror}"
        return FileDone(
            path=entry.relative,
            size=size,
            bytes_sent=sent,
            bytes_skipped=offset,
            sha256=None,
            ok=False,
            error=message,
        )
    finally:
        if reading is not None:  # a read ahead still running must not outlive the fd
            await asyncio.wait({reading})
            if not reading.cancelled():
                reading.exception()  # retrieved: its error, if any, was not the cause
        os.close(fd)


async def send_files(
    connection: QotpConnection,
    manifest: Manifest,
    *,
    parallel: int = DEFAULT_PARALLEL_FILES,
    on_event: TransferObserver | None = None,
) -> TransferSummary:
    """Send every file of ``manifest``; returns what happened (it does not raise for a file).

    Raises :class:`TransferRefused` or :class:`TransferError` only when the
    session itself cannot start.  ``parallel`` files are in flight at once.
    """
    if not 1 <= parallel <= MAX_PARALLEL_FILES:
        raise ValueError(f"parallel must be in 1..{MAX_PARALLEL_FILES}")
    started = time.perf_counter()
    ids = stream_ids(connection)
    control_id = next(ids)
    try:
        await _open_session(connection, manifest, control_id)
    except TransferProtocolError as error:
        raise TransferError(f"the receiver broke the protocol: {error}") from None
    except ConnectionError as error:
        raise TransferError(f"the connection ended: {error}") from None
    gate = asyncio.Semaphore(parallel)

    async def one(entry: FileEntry) -> FileDone:
        async with gate:
            done = await _send_file(connection, next(ids), entry, on_event)
        _notify(on_event, done)
        return done

    results = await asyncio.gather(*(one(entry) for entry in manifest.files))
    control = connection.stream(control_id)
    if not connection.is_closed:
        control.close()
        try:
            await control.drain()
        except ConnectionError:
            pass
    failed = [result for result in results if not result.ok]
    return TransferSummary(
        ok=not failed,
        files=len(results) - len(failed),
        files_failed=len(failed),
        bytes_sent=sum(result.bytes_sent for result in results),
        bytes_skipped=sum(result.bytes_skipped for result in results),
        elapsed_s=time.perf_counter() - started,
        errors=tuple(f"{result.path}: {result.error}" for result in failed),
    )


def sha256_file(path: os.PathLike[str] | str) -> str:
    """Hex SHA-256 of a file, read in pieces (for reports and tests)."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(IO_CHUNK_BYTES):
            digest.update(chunk)
    return digest.hexdigest()
