"""Anti-replay: a per-connection sliding window over received sequence numbers.

A QOTP sender seals every packet (retransmissions and repeated hellos
included) under a fresh ``(epoch, sequence number)`` pair from one counter
(Go: ``Conn.encode`` increments ``snCrypto`` after every packet), so an
authentic packet whose number was already accepted can only be a copy: a
duplicate from the network, or a replay by someone who recorded it.  Dropping
it *before* it is processed keeps a replayed packet from changing anything
(the peer's address above all, :mod:`qotp.path`).  The reference keeps no such
window; it changes nothing on the wire.

The window is DTLS's (RFC 9147 section 4.5.1) with a different representation:
the epoch and the sequence number form one 95-bit number (``epoch << 48 |
sequence``), which the sender's counter only ever increases.  A number above
the highest accepted one is new; one at most :data:`REPLAY_WINDOW_PACKETS`
below it is new unless it was seen; anything older is refused.  Instead of a
bitmap we keep the set of numbers *skipped* within the window (still
acceptable when they arrive late): in-order arrival, nearly every packet,
costs one comparison, and a window of thousands of packets costs memory only
for packets actually missing.
"""

from __future__ import annotations

__all__ = ["REPLAY_WINDOW_PACKETS", "ReplayWindow", "packet_number"]

REPLAY_WINDOW_PACKETS = 8192
"""How far behind the highest accepted number a packet may arrive and still count.

Deep enough for the reordering of a fast path (200 MB/s with 10 ms of jitter
reorders about 1500 packets); a packet later than that is dropped as if lost
and its data retransmitted under a new number.  DTLS uses 64, for far slower
records."""


def packet_number(sequence_number: int, epoch: int) -> int:
    """The one number an ``(epoch, sequence number)`` pair stands for in the window."""
    return (epoch << 48) | sequence_number


class ReplayWindow:
    """Which sequence numbers of one sender were already accepted (see module doc)."""

    __slots__ = ("_missing", "highest")

    def __init__(self) -> None:
        #: The highest number accepted so far (-1: none yet).
        self.highest = -1
        #: Numbers below ``highest`` (and within the window) not received yet.
        self._missing: set[int] = set()

    def accept(self, number: int) -> bool:
        """Record ``number`` if it is new and within the window; False for a copy.

        Call only for authenticated packets: forged numbers must not move the window.
        """
        highest = self.highest
        if number == highest + 1:  # in order: the common case
            self.highest = number
            return True
        missing = self._missing
        if number > highest:
            first_skipped = highest + 1
            if number - first_skipped > REPLAY_WINDOW_PACKETS:
                first_skipped = number - REPLAY_WINDOW_PACKETS
            missing.update(range(first_skipped, number))
            self.highest = number
            if len(missing) > 2 * REPLAY_WINDOW_PACKETS:
                floor = number - REPLAY_WINDOW_PACKETS
                self._missing = {skipped for skipped in missing if skipped >= floor}
            return True
        if number not in missing:
            return False  # seen before, or older than the window
        missing.discard(number)
        return number >= highest - REPLAY_WINDOW_PACKETS
