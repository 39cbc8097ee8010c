"""Pacing: when may the next datagram leave, at a given rate, with a small burst allowance.

The reference (Go: ``calcPacing``) spaces *every* datagram, ACK-only ones included, by
``size * 1e9 / (bw_max * gain)`` ns; before it has a bandwidth estimate it uses ``srtt / 10``,
and before its first RTT sample a fixed 10 ms.  One datagram per timer tick cannot reach
high rates from an event loop whose timers fire about 1 ms late, so this pacer is a token
bucket: tokens accrue at the pacing rate up to a burst of ``rate * burst_ns`` (at least
``min_burst_bytes``), and a datagram may leave as soon as the bucket holds its size.  After
a late wake-up the sender finds the bucket refilled and sends a batch, so the average rate
holds; the burst bounds how much a late timer can bunch up.  ACK-only datagrams are not
paced at all (see :mod:`qotp.congestion.base`).

Arithmetic is integer nanoseconds; the bucket is kept as the time ``_empty_at_ns`` at
which it would be empty, so no fractional tokens are needed: the bucket holds
``min(burst, (now - _empty_at_ns) * rate)`` bytes.
"""

from __future__ import annotations

__all__ = [
    "DEFAULT_BURST_NS",
    "DEFAULT_MIN_BURST_BYTES",
    "Pacer",
]

SECOND_NS = 1_000_000_000

DEFAULT_BURST_NS = 2_000_000
"""Burst allowance as time at the pacing rate: twice the ~1 ms worst-case timer lateness of
an event loop (uvloop ticks in 1 ms steps), so a late wake-up loses no sending time."""
DEFAULT_MIN_BURST_BYTES = 2 * 1400
"""The burst is never smaller than two full datagrams (1400 bytes, the reference's MTU),
so that at low rates a datagram is not split across two timer wake-ups."""


class Pacer:
    """Token-bucket pacer in integer nanoseconds.

    ``rate_bytes_per_s <= 0`` disables pacing (every datagram may leave at once).
    """

    __slots__ = ("_burst_bytes", "_burst_ns", "_empty_at_ns", "_min_burst_bytes", "_rate")

    def __init__(
        self,
        rate_bytes_per_s: int = 0,
        *,
        burst_ns: int = DEFAULT_BURST_NS,
        min_burst_bytes: int = DEFAULT_MIN_BURST_BYTES,
    ) -> None:
        self._burst_ns = burst_ns if burst_ns > 0 else 0
        self._min_burst_bytes = min_burst_bytes if min_burst_bytes > 0 else 1
        self._rate = 0
        self._burst_bytes = self._min_burst_bytes
        # Far in the past: the bucket starts full.
        self._empty_at_ns: int | None = None
        self.set_rate(rate_bytes_per_s)

    @property
    def rate_bytes_per_s(self) -> int:
        """Current pacing rate (0: unpaced)."""
        return self._rate

    @property
    def burst_bytes(self) -> int:
        """Largest number of bytes the bucket can hold."""
        return self._burst_bytes

    def set_rate(self, rate_bytes_per_s: int) -> None:
        """Change the pacing rate; tokens already earned are kept (up to the new burst)."""
        rate = rate_bytes_per_s if rate_bytes_per_s > 0 else 0
        if rate == self._rate:
            return
        # The stored empty time is kept: a datagram that was owed ``d`` ns of waiting still
        # waits ``d`` ns, and a bucket that was full is full again (capped at the new burst).
        self._rate = rate
        burst = rate * self._burst_ns // SECOND_NS
        self._burst_bytes = burst if burst > self._min_burst_bytes else self._min_burst_bytes

    def reset(self) -> None:
        """Forget what earlier sends owe: the bucket is full again."""
        self._empty_at_ns = None

    def available_bytes(self, now: int) -> int:
        """Bytes that may leave at ``now`` back to back (negative: owed by earlier sends)."""
        if self._rate == 0 or self._empty_at_ns is None:
            return self._burst_bytes
        level = (now - self._empty_at_ns) * self._rate // SECOND_NS
        return level if level < self._burst_bytes else self._burst_bytes

    def next_send_time(self, now: int, size_bytes: int) -> int:
        """Earliest time a datagram of ``size_bytes`` may leave; ``now`` if it may leave now."""
        if self._rate == 0 or self._empty_at_ns is None:
            return now
        need = size_bytes if size_bytes < self._burst_bytes else self._burst_bytes
        if need < 0:
            need = 0
        # The bucket holds `need` bytes at empty_at + need / rate (ceil, so that the level
        # computed at that instant is really >= need).
        ready = self._empty_at_ns + (need * SECOND_NS + self._rate - 1) // self._rate
        return ready if ready > now else now

    def on_sent(self, now: int, size_bytes: int) -> None:
        """Charge a datagram of ``size_bytes`` sent at ``now`` against the bucket."""
        if self._rate == 0:
            self._empty_at_ns = None
            return
        size = size_bytes if size_bytes > 0 else 0
        # Bucket level now, capped at the burst, minus the datagram; store as empty time.
        full_at = now - self._burst_bytes * SECOND_NS // self._rate
        empty_at = self._empty_at_ns
        if empty_at is None or empty_at < full_at:
            empty_at = full_at
        self._empty_at_ns = empty_at + size * SECOND_NS // self._rate
