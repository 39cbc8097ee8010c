"""DTLS 1.3 sessions: tickets (RFC 8446 4.6.1), resumption and the early-data replay guard.

A server issues tickets after the handshake; a ticket is the session state
sealed with AES-256-GCM under a key only that server holds, so it keeps no
per-client state.  The client keeps a :class:`Session13` per ticket and
offers it as a PSK on its next connection (``DTLSConfiguration.session``).

Early data (0-RTT) can be replayed by anyone who captured it, so a server
takes it only under :class:`EarlyDataGuard`'s rule (RFC 8446 8):

* the ticket allows early data and was issued by this server (it opens);
* the ClientHello is *fresh*: the ticket age the client claims and the age
  the server measured differ by at most ``freshness_window_ns`` (10 s);
* the ClientHello was not seen before: every accepted early-data hello's
  binder is recorded for the freshness window (a strike register); a second
  one is refused.  The register is bounded: when it is full, early data is
  refused, never accepted blindly.

A refused ClientHello still completes a full (1-RTT) resumption; only its
early data is ignored.  Ages use the server's own monotonic clock (``now``),
so tickets do not outlive the server process that issued them.
"""

from __future__ import annotations

import os
from collections import OrderedDict
from dataclasses import dataclass

from .errors import DecodeError
from .handshake import Reader
from .sessions import Session, TicketCipher

__all__ = [
    "DEFAULT_TICKET_LIFETIME_S",
    "EARLY_DATA_FRESHNESS_NS",
    "MAX_TICKET_LIFETIME_S",
    "EarlyDataGuard",
    "Session13",
    "TicketContents",
    "TicketSealer",
    "TicketStore",
    "load_saved_session",
]

DEFAULT_TICKET_LIFETIME_S = 7200
MAX_TICKET_LIFETIME_S = 7 * 24 * 3600  # RFC 8446 4.6.1
EARLY_DATA_FRESHNESS_NS = 10 * 1_000_000_000
EARLY_DATA_REGISTER_ENTRIES = 100_000
_SESSION_MAGIC = b"DTLS13-SESSION\x01"
_TICKET_MAGIC = b"\x13\x01"


def _text(value: str | None) -> bytes:
    raw = (value or "").encode()
    return bytes((len(raw),)) + raw


def _read_text(reader: Reader) -> str | None:
    try:
        return reader.vector(1).decode() or None
    except UnicodeDecodeError:
        raise DecodeError("bad text in session") from None


def _encode_context(
    server_name: str | None, alpn_protocol: str | None, peer_certificates: tuple[bytes, ...]
) -> bytes:
    """The tail a saved session and a ticket share: SNI, ALPN, the peer's chain."""
    return b"".join(
        (
            _text(server_name),
            _text(alpn_protocol),
            bytes((len(peer_certificates),)),
            *(len(der).to_bytes(3, "big") + der for der in peer_certificates),
        )
    )


def _read_context(reader: Reader) -> tuple[str | None, str | None, tuple[bytes, ...]]:
    """Inverse of :func:`_encode_context`."""
    server_name = _read_text(reader)
    alpn = _read_text(reader)
    count = reader.uint(1)
    return server_name, alpn, tuple(reader.vector(3, minimum=1) for _ in range(count))


@dataclass(frozen=True, slots=True, kw_only=True)
class Session13:
    """A client's resumable DTLS 1.3 session: one ticket and the PSK it stands for.

    Give it back as ``DTLSConfiguration.session`` to resume.  ``received_at_ns``
    is the client's monotonic time when the ticket arrived (for the ticket age).
    """

    cipher_suite: int
    psk: bytes
    ticket: bytes
    ticket_age_add: int
    lifetime_seconds: int
    max_early_data: int
    received_at_ns: int
    server_name: str | None = None
    alpn_protocol: str | None = None
    peer_certificates: tuple[bytes, ...] = ()

    def obfuscated_age(self, now: int) -> int:
        """The ticket age in milliseconds plus ``ticket_age_add``, mod 2^32 (RFC 8446 4.2.11)."""
        age_ms = max(0, now - self.received_at_ns) // 1_000_000
        return (age_ms + self.ticket_age_add) & 0xFFFFFFFF

    def expired(self, now: int) -> bool:
        """Whether the ticket outlived its lifetime (on the client's clock)."""
        return now - self.received_at_ns > self.lifetime_seconds * 1_000_000_000

    def to_bytes(self) -> bytes:
        """Everything, for a client to keep across processes (holds the PSK: store it safely)."""
        parts = [
            _SESSION_MAGIC,
            self.cipher_suite.to_bytes(2, "big"),
            bytes((len(self.psk),)) + self.psk,
            len(self.ticket).to_bytes(2, "big") + self.ticket,
            self.ticket_age_add.to_bytes(4, "big"),
            self.lifetime_seconds.to_bytes(4, "big"),
            self.max_early_data.to_bytes(4, "big"),
            self.received_at_ns.to_bytes(8, "big", signed=True),
            _encode_context(self.server_name, self.alpn_protocol, self.peer_certificates),
        ]
        return b"".join(parts)

    @classmethod
    def from_bytes(cls, data: bytes) -> Session13:
        """Inverse of :meth:`to_bytes`; raises :class:`DecodeError` for anything else."""
        reader = Reader(data)
        if reader.take(len(_SESSION_MAGIC)) != _SESSION_MAGIC:
            raise DecodeError("not a saved DTLS 1.3 session")
        suite = reader.uint(2)
        psk = reader.vector(1, minimum=1)
        ticket = reader.vector(2, minimum=1)
        age_add = reader.uint(4)
        lifetime = reader.uint(4)
        max_early = reader.uint(4)
        received = int.from_bytes(reader.take(8), "big", signed=True)
        server_name, alpn, certificates = _read_context(reader)
        reader.finish()
        return cls(
            cipher_suite=suite,
            psk=psk,
            ticket=ticket,
            ticket_age_add=age_add,
            lifetime_seconds=lifetime,
            max_early_data=max_early,
            received_at_ns=received,
            server_name=server_name,
            alpn_protocol=alpn,
            peer_certificates=certificates,
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class TicketContents:
    """What a server seals into a ticket and finds again when the client offers it."""

    cipher_suite: int
    psk: bytes
    issued_at_ns: int
    lifetime_seconds: int
    age_add: int
    max_early_data: int
    server_name: str | None
    alpn_protocol: str | None
    peer_certificates: tuple[bytes, ...] = ()

    def encode(self) -> bytes:
        """Serialised form (inside the sealed ticket)."""
        parts = [
            _TICKET_MAGIC,
            self.cipher_suite.to_bytes(2, "big"),
            bytes((len(self.psk),)) + self.psk,
            self.issued_at_ns.to_bytes(8, "big", signed=True),
            self.lifetime_seconds.to_bytes(4, "big"),
            self.age_add.to_bytes(4, "big"),
            self.max_early_data.to_bytes(4, "big"),
            _encode_context(self.server_name, self.alpn_protocol, self.peer_certificates),
        ]
        return b"".join(parts)

    @classmethod
    def decode(cls, data: bytes) -> TicketContents:
        """Inverse of :meth:`encode`; raises :class:`DecodeError`."""
        reader = Reader(data)
        if reader.take(2) != _TICKET_MAGIC:
            raise DecodeError("not a DTLS 1.3 ticket")
        suite = reader.uint(2)
        psk = reader.vector(1, minimum=1)
        issued = int.from_bytes(reader.take(8), "big", signed=True)
        lifetime = reader.uint(4)
        age_add = reader.uint(4)
        max_early = reader.uint(4)
        server_name, alpn, certificates = _read_context(reader)
        reader.finish()
        return cls(
            cipher_suite=suite,
            psk=psk,
            issued_at_ns=issued,
            lifetime_seconds=lifetime,
            age_add=age_add,
            max_early_data=max_early,
            server_name=server_name,
            alpn_protocol=alpn,
            peer_certificates=certificates,
        )

    def age_ns(self, now: int) -> int:
        """How old the ticket is on the server's clock."""
        return now - self.issued_at_ns

    def valid_at(self, now: int) -> bool:
        """Whether the ticket is within its lifetime."""
        return 0 <= self.age_ns(now) <= self.lifetime_seconds * 1_000_000_000


class TicketSealer:
    """Seals and opens DTLS 1.3 tickets (:class:`~dtls.sessions.TicketCipher` underneath)."""

    __slots__ = ("_cipher",)

    def __init__(self, key: bytes | None = None) -> None:
        self._cipher = TicketCipher(key)

    def seal(self, contents: TicketContents) -> bytes:
        """Ticket bytes for ``contents``."""
        return self._cipher.seal(contents.encode())

    def open(self, ticket: bytes) -> TicketContents | None:
        """The contents of a ticket we issued, or None (not ours, damaged, or garbage)."""
        plain = self._cipher.open(ticket)
        if plain is None:
            return None
        try:
            return TicketContents.decode(plain)
        except DecodeError:
            return None


class TicketStore:
    """Tickets of both kinds: sealed (stateless) or a random id into a bounded cache.

    The cached kind is what a server issues when ``session_tickets`` is off (the
    1.3 counterpart of 1.2's session-id cache); each is good for one resumption
    (RFC 8446 8.1), the oldest are evicted first.
    """

    __slots__ = ("_cache", "_limit", "sealer")

    def __init__(self, limit: int = 1024) -> None:
        self.sealer = TicketSealer()
        self._cache: OrderedDict[bytes, TicketContents] = OrderedDict()
        self._limit = limit

    def issue(self, contents: TicketContents, *, stateless: bool) -> bytes:
        """The ticket bytes for ``contents``."""
        if stateless:
            return self.sealer.seal(contents)
        identity = os.urandom(32)
        self._cache[identity] = contents
        while len(self._cache) > self._limit:
            self._cache.popitem(last=False)
        return identity

    def peek(self, identity: bytes) -> TicketContents | None:
        """What a ticket stands for, without using it up (for stateless checks)."""
        cached = self._cache.get(identity)
        return cached if cached is not None else self.sealer.open(identity)

    def redeem(self, identity: bytes) -> TicketContents | None:
        """What a ticket stands for; a cached one is used up."""
        cached = self._cache.pop(identity, None)
        return cached if cached is not None else self.sealer.open(identity)

    def __len__(self) -> int:
        return len(self._cache)


class EarlyDataGuard:
    """The server's anti-replay register for resumption hellos (see the module docstring).

    Each resumption ClientHello is known by its first PSK binder, which only
    the ticket holder can compute.  A binder is *claimed* when a hello that
    carries it skips the cookie exchange (an endpoint's stateless check), and
    *used* when the connection takes early data under it; a binder already
    used, or claimed when an exclusive claim is asked for, is a replay.
    """

    __slots__ = ("_limit", "_seen", "freshness_window_ns", "refused_replays", "refused_stale")

    _CLAIMED = 1
    _USED = 2

    def __init__(
        self,
        freshness_window_ns: int = EARLY_DATA_FRESHNESS_NS,
        limit: int = EARLY_DATA_REGISTER_ENTRIES,
    ) -> None:
        self.freshness_window_ns = freshness_window_ns
        self._limit = limit
        self._seen: OrderedDict[bytes, tuple[int, int]] = OrderedDict()  # binder -> (ns, state)
        self.refused_replays = 0
        self.refused_stale = 0

    def fresh(self, ticket: TicketContents, obfuscated_age: int, now: int) -> bool:
        """Whether the client's ticket age matches ours within the window (RFC 8446 8.3)."""
        claimed_ms = (obfuscated_age - ticket.age_add) & 0xFFFFFFFF
        measured_ms = ticket.age_ns(now) // 1_000_000
        if abs(claimed_ms - measured_ms) * 1_000_000 > self.freshness_window_ns:
            self.refused_stale += 1
            return False
        return True

    def claim(self, binder: bytes, now: int, *, exclusive: bool) -> bool:
        """Record a resumption hello that skips the cookie exchange; False for a replay.

        ``exclusive``: only a binder never seen counts (an endpoint's stateless
        check); otherwise one the endpoint claimed for this very hello counts too.
        """
        self._expire(now)
        entry = self._seen.get(binder)
        if entry is not None and (exclusive or entry[1] == self._USED):
            self.refused_replays += 1
            return False
        if entry is None:
            if len(self._seen) >= self._limit:
                return False  # full: refuse rather than forget and risk a replay
            self._seen[binder] = (now, self._CLAIMED)
        return True

    def admit(self, ticket: TicketContents, obfuscated_age: int, binder: bytes, now: int) -> bool:
        """Whether early data under this hello may be accepted; marks its binder used."""
        if ticket.max_early_data == 0 or not self.fresh(ticket, obfuscated_age, now):
            return False
        self._expire(now)
        entry = self._seen.get(binder)
        if entry is not None and entry[1] == self._USED:
            self.refused_replays += 1
            return False
        if entry is None and len(self._seen) >= self._limit:
            return False
        self._seen[binder] = (now if entry is None else entry[0], self._USED)
        return True

    def _expire(self, now: int) -> None:
        # A hello older than the window fails the freshness test anyway: forget it.
        horizon = now - 2 * self.freshness_window_ns
        while self._seen:
            binder, (seen_at, _) = next(iter(self._seen.items()))
            if seen_at >= horizon:
                break
            del self._seen[binder]

    def __len__(self) -> int:
        return len(self._seen)


def load_saved_session(data: bytes) -> Session | Session13:
    """A session saved with ``to_bytes()``, DTLS 1.3 or 1.2; raises :class:`DecodeError`."""
    if data.startswith(_SESSION_MAGIC):
        return Session13.from_bytes(data)
    return Session.from_bytes(data)
