"""Receiving files into one directory from any number of senders.

Every connection may carry one session per direction: a control stream with
the identity exchange, then one stream per file.  A file is written to a
temporary ``.NAME.qotp-partial`` beside its target, verified against the
sender's SHA-256, and renamed into place; an interrupted file stays as a
partial file and the next attempt resumes after the prefix whose chunk
digests the sender confirmed.

Nothing a sender does can stop the receiver: a bad message, an unsafe path
or a failed disk write ends that file (with an error result to the sender)
or that connection, logged; the server and other connections go on.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import stat
from collections.abc import AsyncIterator, Collection
from dataclasses import dataclass, field
from pathlib import Path
from typing import NoReturn

from qotp.asyncio import QotpConnection, QotpListener, QotpStream
from qotp.asyncio.api import AddressChange
from qotp.identity_proof import new_nonce, prove, verify
from qotp.transfer.blocking import run_blocking
from qotp.transfer.events import (
    FileDone,
    FileProgress,
    FileStarted,
    SenderMoved,
    SessionDone,
    SessionStarted,
    TransferEvent,
    TransferObserver,
)
from qotp.transfer.filedata import (
    IO_CHUNK_BYTES,
    SMALL_FILE_BYTES,
    Hash,
    OfferState,
    copy_prefix,
    digest_chunks,
)
from qotp.transfer.filedata import write_and_hash as _write_and_hash
from qotp.transfer.framing import expect_message, read_message, write_message
from qotp.transfer.messages import (
    PROTOCOL_VERSION,
    Data,
    End,
    FileHeader,
    Hello,
    Proof,
    Refuse,
    Result,
    TransferProtocolError,
    Welcome,
)
from qotp.transfer.paths import Placement, ReceiveDirectory, UnsafePathError

__all__ = ["FileReceiver"]

logger = logging.getLogger(__name__)

MAX_FILES_PER_CONNECTION = 32
"""Files one connection writes at once; further file streams wait their turn."""
SESSION_START_TIMEOUT_S = 30.0
"""How long a file stream waits for its session's identity exchange."""
_NO_FOLLOW = os.O_NOFOLLOW | os.O_CLOEXEC


@dataclass(slots=True)
class _Session:
    """One sender's session: from its hello to the end of its control stream."""

    peer_public_key: bytes
    files_ok: int = 0
    files_failed: int = 0
    bytes_received: int = 0
    bytes_skipped: int = 0


@dataclass(slots=True)
class _Link:
    """What one connection's sessions share; one session at a time."""

    admitted: asyncio.Event = field(default_factory=asyncio.Event)
    session: _Session | None = None
    opening: bool = False
    gate: asyncio.Semaphore = field(
        default_factory=lambda: asyncio.Semaphore(MAX_FILES_PER_CONNECTION)
    )


class _FileFailed(Exception):
    """This file cannot be received; the message goes back to the sender."""


class FileReceiver:
    """Serves senders into ``directory``; optionally only those whose keys are allowed."""

    def __init__(
        self,
        directory: Path,
        *,
        allowed_keys: Collection[bytes] | None = None,
        on_event: TransferObserver | None = None,
    ) -> None:
        self.directory = ReceiveDirectory(directory)
        self.allowed_keys = None if allowed_keys is None else frozenset(allowed_keys)
        self.on_event = on_event
        self._owners: dict[str, asyncio.Task[None]] = {}
        self._superseded: set[asyncio.Task[None]] = set()
        self._connections: set[asyncio.Task[None]] = set()
        # Read once here: os.umask is process-wide and not safe to probe from threads.
        self._umask = os.umask(0)
        os.umask(self._umask)

    def _notify(self, event: TransferEvent) -> None:
        if self.on_event is not None:
            try:
                self.on_event(event)
            except Exception:  # an observer's bug must not stop a transfer
                logger.exception("transfer observer failed")

    # -- connections ----------------------------------------------------------

    async def serve(self, listener: QotpListener) -> None:
        """Accept connections forever and receive on each (cancel to stop)."""
        try:
            async for connection in listener:
                task = asyncio.create_task(self.handle_connection(connection))
                self._connections.add(task)
                task.add_done_callback(self._connections.discard)
        finally:
            for task in list(self._connections):
                task.cancel()

    async def handle_connection(self, connection: QotpConnection) -> None:
        """Receive every session and file on one connection until it ends."""
        link = _Link()
        tasks: set[asyncio.Task[None]] = set()

        def moved(change: AddressChange) -> None:
            if not change.local:
                self._notify(
                    SenderMoved(
                        peer_public_key=connection.peer_public_key,
                        old_address=change.old_address,
                        new_address=change.new_address,
                    )
                )

        connection.on_address_change(moved)
        try:
            while True:
                stream = await connection.accept_stream()
                task = asyncio.create_task(self._handle_stream(connection, link, stream))
                tasks.add(task)
                task.add_done_callback(tasks.discard)
        except ConnectionError:
            pass
        finally:
            if tasks:
                await asyncio.gather(*tasks, return_exceptions=True)

    async def _handle_stream(
        self, connection: QotpConnection, link: _Link, stream: QotpStream
    ) -> None:
        try:
            first = await read_message(stream)
            if first is None:
                stream.close()
            elif isinstance(first, Hello):
                await self._handle_control(connection, link, stream, first)
            elif isinstance(first, FileHeader):
                await self._handle_file(connection, link, stream, first)
            else:
                raise TransferProtocolError(f"a stream cannot start with {type(first).__name__}")
        except TransferProtocolError as error:
            logger.info("sender %s broke the protocol: %s", connection.address, error)
            connection.abort()
        except ConnectionError:
            pass
        except Exception:
            # Whatever went wrong is this connection's problem, not the server's.
            logger.exception("receiving from %s failed", connection.address)
            connection.abort()

    async def _handle_control(
        self, connection: QotpConnection, link: _Link, stream: QotpStream, hello: Hello
    ) -> None:
        if link.opening or link.session is not None:
            raise TransferProtocolError("a second session at once on one connection")
        link.opening = True
        try:
            await self._run_session(connection, link, stream, hello)
        finally:
            link.opening = False
            link.session = None
            link.admitted.clear()

    async def _run_session(
        self, connection: QotpConnection, link: _Link, stream: QotpStream, hello: Hello
    ) -> None:
        identity = connection.local_identity
        peer_key = connection.peer_public_key
        if identity is None or peer_key is None:
            write_message(stream, Refuse(reason="file transfer needs QOTP's native keys"))
            stream.close()
            return
        refusal = None
        if hello.version != PROTOCOL_VERSION:
            refusal = f"protocol version {hello.version} is not supported"
        elif self.allowed_keys is not None and peer_key not in self.allowed_keys:
            refusal = "your key is not allowed here"
        if refusal is not None:
            logger.info("refused sender %s: %s", peer_key.hex(), refusal)
            write_message(stream, Refuse(reason=refusal))
            stream.close()
            return
        nonce = new_nonce()
        proof = prove(
            identity, peer_key, as_initiator=False, initiator_nonce=hello.nonce,
            responder_nonce=nonce,
        )  # fmt: skip
        write_message(stream, Welcome(nonce=nonce, proof=proof))
        answer = await expect_message(stream, Proof)
        if not verify(
            identity,
            peer_key,
            answer.proof,
            peer_is_initiator=True,
            initiator_nonce=hello.nonce,
            responder_nonce=nonce,
        ):
            raise TransferProtocolError("the sender could not prove that it holds its key")
        session = link.session = _Session(peer_public_key=peer_key)
        link.opening = False
        link.admitted.set()
        self._notify(
            SessionStarted(
                peer_public_key=peer_key, files=hello.files, total_bytes=hello.total_bytes
            )
        )
        # The sender finishes the control stream once all its files are done.
        try:
            while await stream.read(4096):
                pass
        finally:
            stream.close()
            self._notify(
                SessionDone(
                    peer_public_key=peer_key,
                    files_ok=session.files_ok,
                    files_failed=session.files_failed,
                    bytes_received=session.bytes_received,
                    bytes_skipped=session.bytes_skipped,
                )
            )

    # -- files ----------------------------------------------------------------

    async def _handle_file(
        self, connection: QotpConnection, link: _Link, stream: QotpStream, header: FileHeader
    ) -> None:
        try:
            async with asyncio.timeout(SESSION_START_TIMEOUT_S):
                await link.admitted.wait()
        except TimeoutError:
            raise TransferProtocolError("a file stream without an admitted session") from None
        session = link.session
        if session is None:
            raise TransferProtocolError("a file stream without an admitted session")
        async with link.gate:
            received = 0
            skipped = 0
            digest: bytes | None = None
            error: str | None = None
            current = asyncio.current_task()
            try:
                # Owned by its path as sent (checked below): one thread hop then does
                # both the path and the offer.
                async with self._own(header.path):
                    received, skipped, digest = await self._receive(stream, header)
            except UnsafePathError as refusal:
                error = f"refused: {refusal}"
            except _FileFailed as failure:
                error = str(failure)
            except OSError as failure:
                error = f"cannot write {header.path}: {failure.strerror or failure}"
            except ConnectionError:
                error = "the connection ended"
            except asyncio.CancelledError:
                if current not in self._superseded:
                    raise
                self._superseded.discard(current)
                current.uncancel()
                error = "a newer transfer of the same file took over"
            if error is None:
                session.files_ok += 1
            else:
                session.files_failed += 1
                logger.info("file %r from %s failed: %s", header.path, connection.address, error)
            session.bytes_received += received
            session.bytes_skipped += skipped
            if not connection.is_closed:
                write_message(stream, Result(ok=error is None, sha256=digest, error=error))
                stream.close()
            self._notify(
                FileDone(
                    path=header.path,
                    size=header.size,
                    bytes_sent=received,
                    bytes_skipped=skipped,
                    sha256=digest,
                    ok=error is None,
                    error=error,
                )
            )

    @contextlib.asynccontextmanager
    async def _own(self, path: str) -> AsyncIterator[None]:
        """Be the only transfer writing ``path``: a newer attempt takes over from an older one.

        A sender that was killed leaves its old connection hanging until the
        idle timeout; its restarted self must not wait for that.
        """
        current = asyncio.current_task()
        assert current is not None
        while (previous := self._owners.get(path)) is not None and previous is not current:
            self._superseded.add(previous)
            previous.cancel()
            await asyncio.wait({previous})
            self._superseded.discard(previous)
        self._owners[path] = current
        try:
            yield
        finally:
            if self._owners.get(path) is current:
                del self._owners[path]

    async def _receive(self, stream: QotpStream, header: FileHeader) -> tuple[int, int, bytes]:
        """The file's bytes: offer what we hold, take the rest, verify, rename into place."""
        placement, source_fd, state = await run_blocking(
            _place_and_prepare, self.directory, header.path, header.size
        )
        partial_fd = -1
        writing: asyncio.Future[None] | None = None
        try:
            write_message(stream, state.offer)
            await stream.drain()
            data = await expect_message(stream, Data)
            offset = data.offset
            if offset > header.size or offset not in state.hash_at:
                raise TransferProtocolError(f"resume offset {offset} is not one we offered")
            whole = state.hash_at[offset].copy()
            complete = state.offer.complete
            self._notify(FileStarted(path=header.path, size=header.size, offset=offset))
            if not complete and header.size - offset <= SMALL_FILE_BYTES:
                # Small: take it all, verify, then write and rename in one thread hop.
                partial_fd, source_fd = source_fd, -1
                block = await self._read_small(stream, header.size - offset, partial_fd, offset)
                whole.update(block)
                digest = await self._check_end(stream, whole, header, placement)
                fd, partial_fd = partial_fd, -1
                await run_blocking(
                    _write_and_finish, fd, offset, block, placement, header, self._umask
                )
                self._notify(FileProgress(path=header.path, position=header.size, size=header.size))
                return header.size - offset, offset, digest
            if complete and offset == header.size:
                partial_fd = -1  # the file is here already: nothing to write
            elif complete:
                partial_fd = await run_blocking(_open_partial, placement)
                await run_blocking(copy_prefix, source_fd, partial_fd, offset)
            else:
                partial_fd, source_fd = source_fd, -1
                await run_blocking(os.ftruncate, partial_fd, offset)
            position = offset
            pending: list[bytes] = []
            pending_bytes = 0

            async def flush() -> None:
                # The write (and hash) of one block runs while the next is read from
                # the stream; blocks go to the thread one after the other, in order.
                nonlocal position, pending_bytes, writing
                block = b"".join(pending) if len(pending) > 1 else pending[0]
                if writing is not None:
                    await writing
                writing = asyncio.ensure_future(
                    run_blocking(_write_and_hash, partial_fd, position, block, whole)
                )
                position += pending_bytes
                pending.clear()
                pending_bytes = 0
                self._notify(FileProgress(path=header.path, position=position, size=header.size))

            while position + pending_bytes < header.size:
                want = min(header.size - position - pending_bytes, IO_CHUNK_BYTES)
                chunk = await _read_some(stream, want)
                if not chunk:
                    if pending:
                        await flush()  # kept for the next attempt to resume after
                    _raise_stopped(stream)
                pending.append(chunk)
                pending_bytes += len(chunk)
                if pending_bytes >= IO_CHUNK_BYTES or position + pending_bytes == header.size:
                    await flush()
            if writing is not None:
                await writing
            digest = await self._check_end(stream, whole, header, placement)
            if partial_fd >= 0:
                fd, partial_fd = partial_fd, -1
                await run_blocking(_finish, fd, placement, header, self._umask)
            return header.size - offset, offset, digest
        finally:
            if writing is not None:
                await asyncio.wait({writing})  # never close the file under a write
                if not writing.cancelled():
                    writing.exception()  # retrieved: an error here was already raised or moot
            for fd in (source_fd, partial_fd):
                if fd >= 0:
                    os.close(fd)

    async def _read_small(self, stream: QotpStream, length: int, fd: int, offset: int) -> bytes:
        """All ``length`` remaining bytes of a small file (what came is kept if it stops short)."""
        pieces: list[bytes] = []
        missing = length
        while missing:
            chunk = await _read_some(stream, missing)
            if not chunk:
                if pieces:
                    await run_blocking(_truncate_and_write, fd, offset, b"".join(pieces))
                _raise_stopped(stream)
            pieces.append(chunk)
            missing -= len(chunk)
        return b"".join(pieces)

    async def _check_end(
        self, stream: QotpStream, whole: Hash, header: FileHeader, placement: Placement
    ) -> bytes:
        """The sender's End must name the SHA-256 we computed; else the partial file goes."""
        end = await expect_message(stream, End)
        digest: bytes = whole.digest()
        if end.sha256 != digest:
            await run_blocking(_discard, placement)
            raise _FileFailed(f"{header.path}: SHA-256 mismatch, the partial file was removed")
        return digest


async def _read_some(stream: QotpStream, limit: int) -> bytes:
    try:
        return await stream.read(limit)
    except ConnectionError:
        return b""


def _raise_stopped(stream: QotpStream) -> NoReturn:
    if stream.connection.is_closed:
        raise ConnectionError("the connection ended")
    raise _FileFailed("the sender stopped before the end of the file")


# -- blocking helpers (worker thread) -----------------------------------------


def _open_partial(placement: Placement) -> int:
    try:
        return os.open(placement.partial, os.O_RDWR | os.O_CREAT | _NO_FOLLOW, 0o600)
    except OSError:
        # Something that is not ours sits there (a link, a directory): move it aside.
        with contextlib.suppress(OSError):
            os.unlink(placement.partial)
        return os.open(placement.partial, os.O_RDWR | os.O_CREAT | os.O_EXCL | _NO_FOLLOW, 0o600)


def _place_and_prepare(
    directory: ReceiveDirectory, relative: str, size: int
) -> tuple[Placement, int, OfferState]:
    """Check the path, make its directories, open and digest what we hold of the file."""
    placement = directory.place(relative)
    fd, state = _prepare_offer(placement, size)
    return placement, fd, state


def _prepare_offer(placement: Placement, size: int) -> tuple[int, OfferState]:
    """Open what we hold for this file (the complete file, else a partial one) and digest it."""
    try:
        info = os.lstat(placement.final)
    except FileNotFoundError:
        info = None
    if info is not None and stat.S_ISDIR(info.st_mode):
        raise _FileFailed(f"refused: {placement.name} is a directory here")
    if info is not None and stat.S_ISREG(info.st_mode) and info.st_size == size:
        fd = os.open(placement.final, os.O_RDONLY | _NO_FOLLOW)
        try:
            return fd, digest_chunks(fd, size, complete=True)
        except BaseException:
            os.close(fd)
            raise
    fd = _open_partial(placement)
    try:
        have = os.fstat(fd).st_size
        if have > size:
            os.ftruncate(fd, 0)
            have = 0
        return fd, digest_chunks(fd, have, complete=False)
    except BaseException:
        os.close(fd)
        raise


def _discard(placement: Placement) -> None:
    with contextlib.suppress(FileNotFoundError):
        os.unlink(placement.partial)


def _truncate_and_write(fd: int, offset: int, data: bytes) -> None:
    os.ftruncate(fd, offset)
    os.pwrite(fd, data, offset)


def _write_and_finish(
    fd: int, offset: int, data: bytes, placement: Placement, header: FileHeader, umask: int
) -> None:
    """A small file's bytes after ``offset``, then :func:`_finish` (one thread hop)."""
    try:
        os.ftruncate(fd, offset)
        view = memoryview(data)
        position = offset
        while view:
            written = os.pwrite(fd, view, position)
            position += written
            view = view[written:]
    except BaseException:
        os.close(fd)
        raise
    _finish(fd, placement, header, umask)


def _finish(fd: int, placement: Placement, header: FileHeader, umask: int) -> None:
    """Make the partial file the real one: permissions, times, fsync, atomic rename."""
    try:
        os.fchmod(fd, (0o777 if header.executable else 0o666) & ~umask)
        if header.mtime_ns is not None:
            os.utime(fd, ns=(header.mtime_ns, header.mtime_ns))
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(placement.partial, placement.final)
    directory = os.open(placement.directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(directory)
    finally:
        os.close(directory)
