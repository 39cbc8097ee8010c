"""Reassembly of fragmented handshake messages (RFC 6347 4.2.3).

Fragments may arrive out of order, overlap, repeat, or belong to messages a
few steps ahead.  Memory is bounded three ways: we only buffer messages within
``MAX_MESSAGES_AHEAD`` of the next expected sequence number, each message may
be at most ``MAX_HANDSHAKE_MESSAGE_BYTES`` long, and all partial messages
together at most ``MAX_BUFFERED_BYTES``.  A fragment that
contradicts what we already hold (other type or length for the same
message_seq) is rejected with :class:`DecodeError`; the caller drops it.
"""

from __future__ import annotations

from dataclasses import dataclass

from .errors import DecodeError
from .handshake import HandshakeFragment

__all__ = [
    "MAX_HANDSHAKE_MESSAGE_BYTES",
    "MAX_BUFFERED_BYTES",
    "MAX_MESSAGES_AHEAD",
    "HandshakeMessage",
    "HandshakeReassembler",
]

MAX_HANDSHAKE_MESSAGE_BYTES = 64 * 1024
MAX_MESSAGES_AHEAD = 8
# All partial messages of one connection together (a certificate chain fits easily).
MAX_BUFFERED_BYTES = 128 * 1024


@dataclass(frozen=True, slots=True, kw_only=True)
class HandshakeMessage:
    """A complete handshake message, in order."""

    msg_type: int
    message_seq: int
    body: bytes


class _PartialMessage:
    __slots__ = ("body", "covered", "length", "msg_type")

    def __init__(self, msg_type: int, length: int) -> None:
        self.msg_type = msg_type
        self.length = length
        self.body = bytearray(length)
        self.covered: list[tuple[int, int]] = []  # sorted, merged [start, end) ranges

    def add(self, offset: int, data: bytes) -> None:
        end = offset + len(data)
        self.body[offset:end] = data
        merged: list[tuple[int, int]] = []
        start, stop = offset, end
        for range_start, range_end in self.covered:
            if range_end < start or range_start > stop:
                merged.append((range_start, range_end))
            else:
                start = min(start, range_start)
                stop = max(stop, range_end)
        merged.append((start, stop))
        merged.sort()
        self.covered = merged

    def complete(self) -> bool:
        return self.covered == [(0, self.length)] or self.length == 0


class HandshakeReassembler:
    """Buffers fragments and releases whole messages strictly in message_seq order."""

    __slots__ = ("_partial", "next_seq")

    def __init__(self, next_seq: int = 0) -> None:
        self.next_seq = next_seq
        self._partial: dict[int, _PartialMessage] = {}

    def add(self, fragment: HandshakeFragment) -> bool:
        """Store a fragment.  Returns False when it is old or too far ahead (ignored).

        Raises :class:`DecodeError` when it contradicts earlier fragments or is too big.
        """
        seq = fragment.message_seq
        if seq < self.next_seq or seq >= self.next_seq + MAX_MESSAGES_AHEAD:
            return False
        if fragment.length > MAX_HANDSHAKE_MESSAGE_BYTES:
            raise DecodeError("handshake message too large")
        partial = self._partial.get(seq)
        if partial is None:
            if self.buffered_bytes() + fragment.length > MAX_BUFFERED_BYTES:
                raise DecodeError("too many handshake bytes buffered")
            partial = _PartialMessage(fragment.msg_type, fragment.length)
            self._partial[seq] = partial
        elif partial.msg_type != fragment.msg_type or partial.length != fragment.length:
            raise DecodeError("handshake fragment disagrees with earlier fragments")
        partial.add(fragment.fragment_offset, fragment.body)
        return True

    def pop_ready(self) -> list[HandshakeMessage]:
        """Complete messages starting at ``next_seq``, in order."""
        ready: list[HandshakeMessage] = []
        while True:
            partial = self._partial.get(self.next_seq)
            if partial is None or not partial.complete():
                return ready
            del self._partial[self.next_seq]
            ready.append(
                HandshakeMessage(
                    msg_type=partial.msg_type, message_seq=self.next_seq, body=bytes(partial.body)
                )
            )
            self.next_seq += 1

    def buffered_bytes(self) -> int:
        """Memory held by partial messages (for tests and accounting)."""
        return sum(partial.length for partial in self._partial.values())
