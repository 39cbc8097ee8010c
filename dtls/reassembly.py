"""Reassembly of fragmented handshake messages (RFC 6347 4.2.3).

Fragments may arrive out of order, overlap, repeat, or belong to messages a
few steps ahead.  In epoch 0 nothing is authenticated, so the reassembler must
also hold up against fragments an attacker made up:

* **No pinning.**  The first fragment of a ``message_seq`` does not fix the
  message's type and length for good.  A fragment that disagrees starts a
  *variant* of that message (at most ``MAX_VARIANTS_PER_MESSAGE`` per
  ``message_seq``, the least recently extended one is evicted for a new one);
  the first variant to complete is the message.  A spoofed fragment can no
  longer make the genuine flight's fragments "contradict" and be dropped.
* **Memory is the bytes received, not the length claimed.**  A variant stores
  only the fragment bytes that cover something new, so a 1-byte fragment that
  claims a 64 KiB message costs one byte.  All variants of all messages
  together hold at most ``MAX_BUFFERED_BYTES``.
* **The next message comes first.**  When the budget is full, bytes of
  messages further ahead are evicted to make room for a nearer one, so
  partial later messages cannot use up the buffer the message the handshake
  waits for needs.

Messages beyond ``MAX_MESSAGES_AHEAD`` of the next expected one, and messages
longer than ``MAX_HANDSHAKE_MESSAGE_BYTES``, are not buffered at all.
Whole messages are released strictly in ``message_seq`` order.
"""

from __future__ import annotations

from dataclasses import dataclass

from .errors import DecodeError
from .handshake import HandshakeFragment

__all__ = [
    "MAX_BUFFERED_BYTES",
    "MAX_HANDSHAKE_MESSAGE_BYTES",
    "MAX_MESSAGES_AHEAD",
    "MAX_VARIANTS_PER_MESSAGE",
    "HandshakeMessage",
    "HandshakeReassembler",
    "merge_range",
]

MAX_HANDSHAKE_MESSAGE_BYTES = 64 * 1024
MAX_MESSAGES_AHEAD = 8
# All partial messages of one connection together (a certificate chain fits easily).
MAX_BUFFERED_BYTES = 128 * 1024
MAX_VARIANTS_PER_MESSAGE = 4


@dataclass(frozen=True, slots=True, kw_only=True)
class HandshakeMessage:
    """A complete handshake message, in order."""

    msg_type: int
    message_seq: int
    body: bytes


class _Variant:
    """One candidate (type, length) of a message, built from the fragments claiming it."""

    __slots__ = ("covered", "last_touched", "length", "msg_type", "pieces", "stored")

    def __init__(self, msg_type: int, length: int, touched: int) -> None:
        self.msg_type = msg_type
        self.length = length
        self.pieces: list[tuple[int, bytes]] = []
        self.covered: list[tuple[int, int]] = []  # sorted, merged [start, end) ranges
        self.stored = 0
        self.last_touched = touched

    def new_parts(self, offset: int, data: bytes) -> list[tuple[int, bytes]]:
        """The parts of a fragment this variant does not hold yet."""
        parts: list[tuple[int, bytes]] = []
        position, end = offset, offset + len(data)
        for start, stop in self.covered:
            if stop <= position:
                continue
            if start >= end:
                break
            if start > position:
                parts.append((position, data[position - offset : start - offset]))
            position = max(position, stop)
            if position >= end:
                break
        if position < end:
            parts.append((position, data[position - offset :]))
        return parts

    def store(self, parts: list[tuple[int, bytes]], touched: int) -> None:
        for start, chunk in parts:
            self.pieces.append((start, chunk))
            self.stored += len(chunk)
            self.covered = merge_range(self.covered, start, start + len(chunk))
        self.last_touched = touched

    def complete(self) -> bool:
        return self.length == 0 or self.covered == [(0, self.length)]

    def body(self) -> bytes:
        if len(self.pieces) == 1 and len(self.pieces[0][1]) == self.length:
            return bytes(self.pieces[0][1])  # arrived whole: the common case
        assembled = bytearray(self.length)
        for start, chunk in self.pieces:
            assembled[start : start + len(chunk)] = chunk
        return bytes(assembled)


class HandshakeReassembler:
    """Buffers fragments and releases whole messages strictly in message_seq order."""

    __slots__ = ("_buffered", "_clock", "_variants", "next_seq")

    def __init__(self, next_seq: int = 0) -> None:
        self.next_seq = next_seq
        self._variants: dict[int, list[_Variant]] = {}
        self._buffered = 0
        self._clock = 0  # orders variants by when they last grew

    def add(self, fragment: HandshakeFragment) -> bool:
        """Store a fragment.  Returns whether it added anything (False: old, far, known, no room).

        Raises :class:`DecodeError` for a message longer than we accept.
        """
        seq = fragment.message_seq
        if seq < self.next_seq or seq >= self.next_seq + MAX_MESSAGES_AHEAD:
            return False
        if fragment.length > MAX_HANDSHAKE_MESSAGE_BYTES:
            raise DecodeError("handshake message too large")
        self._clock += 1
        length = fragment.length
        if (
            fragment.fragment_offset == 0
            and len(fragment.body) == length
            and length
            and seq not in self._variants
        ):
            # A whole message nobody claimed yet: the common case, no range bookkeeping.
            if not self._make_room(length, seq, None):
                return False
            whole = _Variant(fragment.msg_type, length, self._clock)
            whole.pieces.append((0, fragment.body))
            whole.covered = [(0, length)]
            whole.stored = length
            self._variants[seq] = [whole]
            self._buffered += length
            return True
        variants = self._variants.setdefault(seq, [])
        variant = next(
            (
                v
                for v in variants
                if v.msg_type == fragment.msg_type and v.length == fragment.length
            ),
            None,
        )
        created = variant is None
        if variant is None:
            if len(variants) >= MAX_VARIANTS_PER_MESSAGE:
                self._evict(seq, min(variants, key=lambda v: v.last_touched))
                variants = self._variants.setdefault(seq, [])
            variant = _Variant(fragment.msg_type, fragment.length, self._clock)
            variants.append(variant)
        if variant.length == 0:
            variant.last_touched = self._clock
            return created  # an empty message is complete as soon as it is named
        parts = variant.new_parts(fragment.fragment_offset, fragment.body)
        size = sum(len(chunk) for _, chunk in parts)
        if size == 0:
            if created:
                self._evict(seq, variant)
            else:
                variant.last_touched = self._clock  # a repeat: the variant is alive
            return False
        if not self._make_room(size, seq, variant):
            if created:
                self._evict(seq, variant)
            return False
        variant.store(parts, self._clock)
        self._buffered += size
        return True

    def pop_ready(self) -> list[HandshakeMessage]:
        """Complete messages starting at ``next_seq``, in order."""
        ready: list[HandshakeMessage] = []
        while True:
            variants = self._variants.get(self.next_seq)
            if not variants:
                return ready
            done = next((v for v in variants if v.complete()), None)
            if done is None:
                return ready
            for variant in variants:
                self._buffered -= variant.stored
            del self._variants[self.next_seq]
            ready.append(
                HandshakeMessage(
                    msg_type=done.msg_type, message_seq=self.next_seq, body=done.body()
                )
            )
            self.next_seq += 1

    def buffered_bytes(self) -> int:
        """Fragment bytes held by partial messages (for tests and accounting)."""
        return self._buffered

    def variant_count(self, message_seq: int) -> int:
        """How many candidate (type, length) versions of a message are buffered."""
        return len(self._variants.get(message_seq, ()))

    def _make_room(self, size: int, seq: int, keep: _Variant | None) -> bool:
        """Evict farther messages' bytes (then older variants of ``seq``) until ``size`` fits."""
        if size > MAX_BUFFERED_BYTES:
            return False
        while self._buffered + size > MAX_BUFFERED_BYTES:
            farthest = max(self._variants)
            if farthest > seq:
                victims = self._variants[farthest]
                self._evict(farthest, min(victims, key=lambda v: v.last_touched))
                continue
            others = [v for v in self._variants.get(seq, ()) if v is not keep and v.stored]
            if not others:
                return False
            self._evict(seq, min(others, key=lambda v: v.last_touched))
        return True

    def _evict(self, seq: int, variant: _Variant) -> None:
        variants = self._variants[seq]
        variants.remove(variant)
        self._buffered -= variant.stored
        if not variants:
            del self._variants[seq]


def merge_range(ranges: list[tuple[int, int]], start: int, end: int) -> list[tuple[int, int]]:
    """Add ``[start, end)`` to sorted, disjoint ranges, merging what touches."""
    merged: list[tuple[int, int]] = []
    for range_start, range_end in ranges:
        if range_end < start or range_start > end:
            merged.append((range_start, range_end))
        else:
            start, end = min(start, range_start), max(end, range_end)
    merged.append((start, end))
    merged.sort()
    return merged
