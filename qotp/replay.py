"""Anti-replay: a sliding window per connection, and a strike register of 0-RTT hellos.

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

import hashlib
import os

__all__ = [
    "REPLAY_WINDOW_PACKETS",
    "STRIKE_FILTER_BITS",
    "STRIKE_GENERATION_CAPACITY",
    "STRIKE_HASHES",
    "STRIKE_WINDOW_NS",
    "ReplayWindow",
    "StrikeRegister",
    "packet_number",
]

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


STRIKE_WINDOW_NS = 60_000_000_000
"""A 0-RTT first packet is recognised as a replay for at least this long (one generation)."""
STRIKE_GENERATION_CAPACITY = 65_536
"""Ids per generation; a generation also ends early once it holds this many."""
STRIKE_FILTER_BITS = 1 << 21
"""Bits per Bloom filter (256 KiB); two generations make 512 KiB in all."""
STRIKE_HASHES = 20
"""Bit positions per id: 20 slices of 21 bits of one keyed BLAKE2b-512 digest."""


class StrikeRegister:
    """The first packets of 0-RTT handshakes seen recently, as rotating Bloom filters.

    A 0-RTT first packet (InitCryptoSnd) is authenticated only by our *identity*
    key, so a recorded one opens again as long as that key lives; its initiator's
    ephemeral public key (whose first 8 bytes are the connection id) names it.
    The register answers "seen before?" for those keys with no false negatives
    within the window and a small, stated false-positive rate:

    * two generations, each a Bloom filter of :data:`STRIKE_FILTER_BITS` bits with
      :data:`STRIKE_HASHES` positions per key; a key is looked up in both and added
      to the current one;
    * a generation ends after :data:`STRIKE_WINDOW_NS` or once it holds
      :data:`STRIKE_GENERATION_CAPACITY` keys; the older one is then dropped, so a key
      is remembered for at least the window, or at least the last 65,536 keys when
      more arrive within it (a flood of fresh keys shortens the window, it never
      lets a key in twice within it);
    * at full load each filter answers a fresh key wrongly with probability
      ``(1 - exp(-20 * 65536 / 2**21)) ** 20`` = 2.2e-7, so a legitimate 0-RTT
      handshake is refused as a replay with probability under 5e-7 (its
      initiator's dial then fails; a new dial draws a new key); memory is 512 KiB
      whatever the load;
    * positions come from BLAKE2b keyed with a secret of this process, so an
      attacker who picks its keys cannot aim at particular bits.
    """

    __slots__ = ("_current", "_current_count", "_generation_start_ns", "_previous", "_secret")

    def __init__(self, now: int) -> None:
        self._secret = os.urandom(32)
        self._current = bytearray(STRIKE_FILTER_BITS // 8)
        self._previous = bytearray(STRIKE_FILTER_BITS // 8)
        self._current_count = 0
        self._generation_start_ns = now

    def _positions(self, key: bytes) -> list[int]:
        value = int.from_bytes(
            hashlib.blake2b(key, digest_size=64, key=self._secret).digest(), "little"
        )
        return [(value >> (21 * index)) & 0x1FFFFF for index in range(STRIKE_HASHES)]

    def _rotate_if_due(self, now: int) -> None:
        if (
            now - self._generation_start_ns >= STRIKE_WINDOW_NS
            or self._current_count >= STRIKE_GENERATION_CAPACITY
        ):
            self._previous = self._current
            self._current = bytearray(STRIKE_FILTER_BITS // 8)
            self._current_count = 0
            self._generation_start_ns = now

    def seen(self, key: bytes, now: int) -> bool:
        """Whether ``key`` was added within the window (False never errs; True rarely)."""
        self._rotate_if_due(now)
        positions = self._positions(key)
        for bits in (self._current, self._previous):
            if all(bits[position >> 3] & (1 << (position & 7)) for position in positions):
                return True
        return False

    def add(self, key: bytes, now: int) -> None:
        """Remember ``key``."""
        self._rotate_if_due(now)
        bits = self._current
        for position in self._positions(key):
            bits[position >> 3] |= 1 << (position & 7)
        self._current_count += 1
