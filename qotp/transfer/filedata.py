"""Blocking file work of a transfer: chunk digests, hashing reads and writes.

These run in a worker thread (``loop.run_in_executor``) so that disk and
SHA-256 time does not stall the QOTP engine on the event loop; ``hashlib``
and file I/O release the GIL for large buffers, so a second core helps.

Resume rests on chunk digests: the receiver lists SHA-256 digests of the
chunks of what it holds (:func:`digest_chunks`), the sender recomputes the
same ranges over its own file (:func:`matching_prefix`) and resumes after the
longest prefix that matches.  Both sides feed the whole-file SHA-256 as they
go, so every byte is read once.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from typing import Any

from qotp.transfer.messages import MAX_OFFER_CHUNKS, MIN_CHUNK_BYTES, Offer

__all__ = [
    "IO_CHUNK_BYTES",
    "SMALL_FILE_BYTES",
    "Hash",
    "OfferState",
    "chunk_bytes_for",
    "copy_prefix",
    "digest_chunks",
    "matching_prefix",
    "read_and_hash",
    "write_and_hash",
]

IO_CHUNK_BYTES = 1024 * 1024
"""Bytes per read or write: large enough that thread hand-offs cost little."""
OFFER_CHUNK_BYTES = 1024 * 1024
SMALL_FILE_BYTES = 256 * 1024
"""Files (or rests of files) this small move through memory in one piece: fewer thread hops."""

Hash = Any  # hashlib's object type is private


def chunk_bytes_for(have: int) -> int:
    """A chunk size that keeps an offer within MAX_OFFER_CHUNKS digests (a power of two)."""
    size = max(OFFER_CHUNK_BYTES, MIN_CHUNK_BYTES)
    while -(-have // size) > MAX_OFFER_CHUNKS:
        size *= 2
    return size


@dataclass(slots=True)
class OfferState:
    """The receiver's side of an offer: digests sent, and the whole-file hash at each boundary."""

    offer: Offer
    hash_at: dict[int, Hash]
    """SHA-256 state after the first N bytes, for every N the sender may resume at."""


def digest_chunks(fd: int, have: int, *, complete: bool) -> OfferState:
    """Digest the first ``have`` bytes of ``fd`` chunk by chunk (blocking)."""
    chunk_bytes = chunk_bytes_for(have)
    whole = hashlib.sha256()
    hash_at: dict[int, Hash] = {0: whole.copy()}
    digests: list[bytes] = []
    position = 0
    while position < have:
        end = min(position + chunk_bytes, have)
        chunk = hashlib.sha256()
        while position < end:
            data = os.pread(fd, min(IO_CHUNK_BYTES, end - position), position)
            if not data:
                raise OSError("the file shrank while it was read")
            chunk.update(data)
            whole.update(data)
            position += len(data)
        digests.append(chunk.digest())
        hash_at[position] = whole.copy()
    offer = Offer(have=have, chunk_bytes=chunk_bytes, digests=tuple(digests), complete=complete)
    return OfferState(offer=offer, hash_at=hash_at)


def matching_prefix(fd: int, size: int, offer: Offer) -> tuple[int, Hash]:
    """The sender's side: how many leading bytes of the offer match our file (blocking).

    Returns that length and the whole-file SHA-256 state after exactly those
    bytes.  Stops at the first chunk that differs or that reaches past our
    file's ``size``.
    """
    matched = 0
    whole = hashlib.sha256()
    for (start, end), digest in zip(offer.ranges(), offer.digests, strict=True):
        if end > size:
            break
        chunk = hashlib.sha256()
        candidate = whole.copy()
        position = start
        while position < end:
            data = os.pread(fd, min(IO_CHUNK_BYTES, end - position), position)
            if not data:
                return matched, whole
            chunk.update(data)
            candidate.update(data)
            position += len(data)
        if chunk.digest() != digest:
            break
        whole = candidate
        matched = end
    return matched, whole


def matching_prefix_of(data: bytes, offer: Offer) -> tuple[int, Hash]:
    """:func:`matching_prefix` over a small file already in memory."""
    matched = 0
    whole = hashlib.sha256()
    view = memoryview(data)
    for (start, end), digest in zip(offer.ranges(), offer.digests, strict=True):
        if end > len(data) or hashlib.sha256(view[start:end]).digest() != digest:
            break
        whole.update(view[start:end])
        matched = end
    return matched, whole


def read_small_file(
    path: str | os.PathLike[str], limit: int
) -> tuple[int, os.stat_result, bytes | None]:
    """Open a file to send: its fd, its status, and its bytes when it has at most ``limit``."""
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        info = os.fstat(fd)
        data = None
        if info.st_size <= limit:
            data = os.pread(fd, info.st_size + 1, 0)  # one more: a file that changed is not small
            if len(data) != info.st_size:
                data = None
        return fd, info, data
    except BaseException:
        os.close(fd)
        raise


def read_and_hash(fd: int, position: int, length: int, whole: Hash) -> bytes:
    """Read up to ``length`` bytes at ``position`` and feed them to ``whole`` (blocking)."""
    data = os.pread(fd, length, position)
    whole.update(data)
    return data


def write_and_hash(fd: int, position: int, data: bytes, whole: Hash) -> None:
    """Write ``data`` at ``position`` and feed it to ``whole`` (blocking)."""
    view = memoryview(data)
    while view:
        written = os.pwrite(fd, view, position)
        position += written
        view = view[written:]
    whole.update(data)


def copy_prefix(source_fd: int, target_fd: int, length: int) -> None:
    """Copy the first ``length`` bytes of one file into an emptied other one (blocking)."""
    os.ftruncate(target_fd, 0)
    position = 0
    while position < length:
        data = os.pread(source_fd, min(IO_CHUNK_BYTES, length - position), position)
        if not data:
            raise OSError("the file shrank while it was copied")
        os.pwrite(target_fd, data, position)
        position += len(data)
