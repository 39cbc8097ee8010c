"""Where a connection's replies go, and the proof an address owes before they move there.

Peers change addresses: a NAT rebinds, a laptop roams from Wi-Fi to a phone
network.  QOTP routes by connection id, so an authentic packet from a new
address still reaches its connection; the question is only where the replies
go.  Moving them on the first packet from a new address lets anyone who can
make such a packet appear there redirect the connection: an on-path attacker
who forwards a copy of a live packet from its own address faster than the
original arrives would otherwise have the replies for as long as it likes.

Theory of operation
===================

The connection keeps replying to its *current* address.  An authenticated
packet (it passed the AEAD tag and the replay window) from any other address
makes that address a *candidate*; the packet itself is processed normally, only
the replies stay where they were.  Each candidate gets a probe: a PING on
stream 0 at an offset drawn at random from 2^40..2^48 (the *challenge*).  The
offset travels inside the encrypted payload, and the peer acknowledges a PING
by echoing ``(stream, offset, 0)`` (the reference does so too: ``EmptyInsert``),
so an ACK naming the challenge proves that the probe was read by the key
holder; arriving *from the candidate address* it proves that the address both
reaches the peer and is where the peer sends from.  Only then do replies move
there (:class:`qotp.events.PeerAddressChanged`).

A candidate costs little and proves nothing until then:

* the probes to it never exceed three times the bytes received from it, so an
  unvalidated address cannot be used to amplify traffic towards a victim;
* it is probed at most :data:`MAX_PATH_PROBES` times, an RTO apart and doubling,
  then forgotten (a later packet from there starts over with a new challenge);
* at most :data:`MAX_PATH_CANDIDATES` are kept; a new one evicts the oldest.

Unauthenticated packets (an InitSnd repeated by anyone) and replays never make
a candidate.  NAT rebinding and roaming complete after one round trip: the
peer's packets keep arriving from the new address (and are used), while our
replies to the old address may be lost in that round trip and are
retransmitted after the move.
"""

from __future__ import annotations

import secrets

from qotp.protection import Address

__all__ = [
    "MAX_PATH_CANDIDATES",
    "MAX_PATH_PROBES",
    "PATH_AMPLIFICATION_FACTOR",
    "PATH_PROBE_STREAM_ID",
    "PathValidator",
]

PATH_PROBE_STREAM_ID = 0
"""The stream the probe PING names (the reference creates no state for a PING on it)."""
PATH_AMPLIFICATION_FACTOR = 3
"""Bytes sent to an unvalidated address stay within this multiple of the bytes received."""
MAX_PATH_PROBES = 4
"""Probes per candidate; without an answer the candidate is dropped."""
MAX_PATH_CANDIDATES = 4
"""Unvalidated addresses kept at once (the oldest is evicted)."""
_CHALLENGE_BITS = 48
_CHALLENGE_FLOOR = 1 << 40
"""Challenges lie above 1 TiB of stream offset, where no real PING of stream 0 sits."""


class _Candidate:
    __slots__ = ("challenge", "next_probe_ns", "probes_sent", "received_bytes", "sent_bytes")

    def __init__(self, received_bytes: int) -> None:
        self.challenge = _CHALLENGE_FLOOR + secrets.randbelow(
            (1 << _CHALLENGE_BITS) - _CHALLENGE_FLOOR
        )
        self.received_bytes = received_bytes
        self.sent_bytes = 0
        self.probes_sent = 0
        self.next_probe_ns = 0


class PathValidator:
    """The current address of one connection's peer and the candidates for a move."""

    __slots__ = (
        "_candidates",
        "_current",
        "address",
        "moves",
        "probes_sent",
        "refused_probes",
        "validated",
    )

    def __init__(self, address: Address, *, validated: bool = True) -> None:
        #: Where replies go.
        self.address = address
        #: Whether ``address`` is proven to reach the peer.  A connection made on an
        #: unproven first packet (0-RTT under ZeroRttPolicy.ACCEPT) starts without:
        #: what it sends there is held to three times what it received from there
        #: until the handshake completes from there (the initiator's first Data
        #: packet answers our reply).
        self.validated = validated
        self._current = _Candidate(0)
        self._candidates: dict[Address, _Candidate] = {}
        self.moves = 0
        """Validated moves so far."""
        self.probes_sent = 0
        self.refused_probes = 0
        """Probes not sent because the candidate's amplification budget was used up."""

    @property
    def has_candidates(self) -> bool:
        """Whether some address waits for validation (probes or their answers)."""
        return bool(self._candidates) or not self.validated

    @property
    def probe_pending(self) -> bool:
        """Whether a candidate has not been probed at all yet (send now)."""
        if not self.validated and self._current.probes_sent == 0:
            return True
        return any(candidate.probes_sent == 0 for candidate in self._candidates.values())

    def on_packet_from_unvalidated_address(
        self, datagram_bytes: int, handshake_complete: bool
    ) -> None:
        """An authentic packet from the current, not yet validated address.

        A packet under the completed handshake's key answers our reply there: the
        address is proven.
        """
        if handshake_complete:
            self.validated = True
        else:
            self._current.received_bytes += datagram_bytes

    def send_allowance(self, max_datagram_bytes: int) -> int:
        """Datagrams that may still go to the current, unvalidated address (3x received)."""
        current = self._current
        budget = PATH_AMPLIFICATION_FACTOR * current.received_bytes - current.sent_bytes
        return max(0, budget // max_datagram_bytes)

    def on_sent_to_unvalidated_address(self, datagram_bytes: int) -> None:
        """Bytes that went to the current, unvalidated address."""
        self._current.sent_bytes += datagram_bytes

    def on_authenticated_packet(self, address: Address, datagram_bytes: int) -> None:
        """An authentic, non-replayed packet came from ``address`` (not the current one)."""
        candidate = self._candidates.get(address)
        if candidate is not None:
            candidate.received_bytes += datagram_bytes
            return
        if len(self._candidates) >= MAX_PATH_CANDIDATES:
            del self._candidates[next(iter(self._candidates))]
        self._candidates[address] = _Candidate(datagram_bytes)

    def on_ack(self, stream_id: int, offset: int, length: int, address: Address) -> bool:
        """An ACK arrived from ``address``; True when it validated that address (replies move)."""
        if stream_id != PATH_PROBE_STREAM_ID or length:
            return False
        current = self._current
        if (
            not self.validated
            and address == self.address
            and current.probes_sent
            and current.challenge == offset
        ):
            self.validated = True  # the current address answered: proven, nothing moves
            return False
        candidate = self._candidates.get(address)
        if candidate is None or candidate.challenge != offset or not candidate.probes_sent:
            return False
        self.address = address
        self.validated = True
        self._candidates.clear()
        self.moves += 1
        return True

    def move(self, address: Address) -> None:
        """Our own side decided that replies go to ``address`` from now on.

        For an address learned out of band, to which the rules against a
        redirecting attacker do not apply: e.g. a direct path to a peer reached
        through a relay, found by hole punching.  The peer, seeing our packets
        from there, validates that path for its own replies.
        """
        self.address = address
        self.validated = True
        self._current = _Candidate(0)
        self._candidates.pop(address, None)
        self.moves += 1

    def due_probes(self, now: int, rto_ns: int, probe_bytes: int) -> list[tuple[Address, int]]:
        """``(address, challenge)`` of the probes to send now, within each budget.

        ``probe_bytes`` is the size of one probe datagram.  The caller seals and
        sends each, to that address.  Candidates whose probes are used up and
        answered by nothing are dropped here.
        """
        due: list[tuple[Address, int]] = []
        current = self._current
        if (
            not self.validated
            and current.next_probe_ns <= now
            and current.probes_sent < MAX_PATH_PROBES
        ):
            # Our own first address is unproven (0-RTT taken at once): probe it too,
            # within the same budget as everything else sent there.
            if probe_bytes <= self.send_allowance(1):
                current.sent_bytes += probe_bytes
                self.probes_sent += 1
                due.append((self.address, current.challenge))
            else:
                self.refused_probes += 1
            current.next_probe_ns = now + (rto_ns << current.probes_sent)
            current.probes_sent += 1
        for address, candidate in list(self._candidates.items()):
            if candidate.next_probe_ns > now:
                continue
            if candidate.probes_sent >= MAX_PATH_PROBES:
                del self._candidates[address]
                continue
            budget = PATH_AMPLIFICATION_FACTOR * candidate.received_bytes - candidate.sent_bytes
            if probe_bytes > budget:
                # Wait for more from that address (it grows the budget), or expire.
                self.refused_probes += 1
                candidate.next_probe_ns = now + (rto_ns << candidate.probes_sent)
                candidate.probes_sent += 1
                continue
            candidate.sent_bytes += probe_bytes
            candidate.next_probe_ns = now + (rto_ns << candidate.probes_sent)
            candidate.probes_sent += 1
            self.probes_sent += 1
            due.append((address, candidate.challenge))
        return due

    def next_deadline(self) -> int | None:
        """When :meth:`due_probes` has something to do (a probe or an expiry)."""
        deadlines = [candidate.next_probe_ns for candidate in self._candidates.values()]
        if not self.validated and self._current.probes_sent < MAX_PATH_PROBES:
            deadlines.append(self._current.next_probe_ns)
        return min(deadlines) if deadlines else None
