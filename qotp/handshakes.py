"""Responder handshakes in progress: bounded, and no connection until the initiator proves itself.

Theory of operation
===================

A first packet (InitSnd, or an InitCryptoSnd that authenticates under our
identity key) costs the responder an X25519 key generation and exchange (about
50 us here) and the reply; it proves nothing about the sender: InitSnd is
cleartext, an InitCryptoSnd can be made by anyone who knows our public key, and
both can come from a forged source address.  So a first packet creates no
connection.  It creates a :class:`PendingHandshake`: the initiator's keys, the
responder's ephemeral public key and the session secret, the reply (made once
and resent byte for byte when the initiator repeats its first packet), the
addresses it went to, and for 0-RTT the opened early payload.  About 0.5 KB
(plus up to one MTU of early data), where a connection costs some 23 KB.

The reply carries, besides the ACK of the first packet, a PING on stream 0, so
that the initiator answers at once with a Data packet (both the reference and
we acknowledge every PING).  That first Data packet authenticates under the
session key, which only the holder of the initiator's ephemeral private key can
compute, and it answers a reply that went to the address we sent it to: it
proves return routability.  Only then does the endpoint make a connection and
tell the application (``accept()``, ``ConnectionEstablished``).

The table is bounded in count and in bytes.  When it is full the *oldest*
entry goes: a legitimate handshake completes one round trip after our reply,
so it is among the youngest entries, while a flood's entries are never
completed and age out first; an entry survives ``capacity / arrival rate``
(16384 entries at the 20,000 first packets per second of a flood are 0.8 s,
hundreds of round trips).  Entries also expire after
:data:`PENDING_HANDSHAKE_LIFETIME_NS`, the initiator's whole retry schedule.

The responder's ephemeral key is fresh for every handshake (and erased with the
entry); see SPEC.md section 10.11 for why it is not derived from a rotating
secret and the initiator's key.
"""

from __future__ import annotations

from collections import OrderedDict

from qotp.protection import Address

__all__ = [
    "HANDSHAKE_ENTRY_OVERHEAD_BYTES",
    "PENDING_HANDSHAKE_LIFETIME_NS",
    "HandshakeTable",
    "PendingHandshake",
    "RecentIds",
]

PENDING_HANDSHAKE_LIFETIME_NS = 15_000_000_000
"""How long a handshake may stay incomplete (the initiator gives up after 12.6 s)."""
HANDSHAKE_ENTRY_OVERHEAD_BYTES = 480
"""What an entry costs beyond its variable bytes (objects, slots, table slot), measured
with tracemalloc; used for the table's byte cap."""
_MAX_REPLY_ADDRESSES = 3


class PendingHandshake:
    """One responder handshake waiting for the initiator's first Data packet."""

    __slots__ = (
        "address",
        "addresses",
        "connection_id",
        "created_ns",
        "early_number",
        "early_payload",
        "init_secret",
        "initiator_identity",
        "initiator_ephemeral",
        "reply",
        "responder_ephemeral_private",
        "secret",
        "size_bytes",
    )

    def __init__(
        self,
        *,
        connection_id: int,
        initiator_ephemeral: bytes,
        initiator_identity: bytes,
        responder_ephemeral_private: bytes,
        secret: bytes,
        reply: bytes,
        address: Address,
        now: int,
        init_secret: bytes | None = None,
        early_payload: bytes | None = None,
        early_number: int = -1,
    ) -> None:
        self.connection_id = connection_id
        self.initiator_ephemeral = initiator_ephemeral
        self.initiator_identity = initiator_identity
        self.responder_ephemeral_private = responder_ephemeral_private
        #: The session key (X25519 of the two ephemeral keys).
        self.secret = secret
        #: 0-RTT only: the key under our identity that opened the first packet.
        self.init_secret = init_secret
        #: The reply (InitRcv / InitCryptoRcv, sequence number 0), resent unchanged.
        self.reply = reply
        #: The latest address the reply went to.
        self.address = address
        #: Every address the reply went to (a few at most).
        self.addresses = [address]
        self.created_ns = now
        #: 0-RTT only: the first packet's transport payload and its packet number.
        self.early_payload = early_payload
        self.early_number = early_number
        self.size_bytes = (
            HANDSHAKE_ENTRY_OVERHEAD_BYTES
            + len(reply)
            + (len(early_payload) if early_payload is not None else 0)
        )

    def replied_to(self, address: Address) -> None:
        """The reply was (re)sent to ``address``."""
        self.address = address
        if address not in self.addresses:
            if len(self.addresses) >= _MAX_REPLY_ADDRESSES:
                del self.addresses[0]
            self.addresses.append(address)


class HandshakeTable:
    """Handshakes in progress, capped in count and bytes, oldest evicted first."""

    __slots__ = ("_entries", "evicted", "expired", "max_bytes", "max_entries", "size_bytes")

    def __init__(self, *, max_entries: int, max_bytes: int) -> None:
        self.max_entries = max_entries
        self.max_bytes = max_bytes
        self._entries: OrderedDict[int, PendingHandshake] = OrderedDict()
        #: Bytes held by the entries (see :data:`HANDSHAKE_ENTRY_OVERHEAD_BYTES`).
        self.size_bytes = 0
        self.evicted = 0
        """Entries dropped to make room (a flood's, as a rule)."""
        self.expired = 0
        """Entries dropped after :data:`PENDING_HANDSHAKE_LIFETIME_NS`."""

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, connection_id: object) -> bool:
        return connection_id in self._entries

    def get(self, connection_id: int, now: int) -> PendingHandshake | None:
        """The live entry for ``connection_id``, or None (expired ones are dropped)."""
        entry = self._entries.get(connection_id)
        if entry is not None and now - entry.created_ns > PENDING_HANDSHAKE_LIFETIME_NS:
            self._remove(entry)
            self.expired += 1
            return None
        return entry

    def add(self, entry: PendingHandshake, now: int) -> None:
        """Keep ``entry``, making room by dropping expired and then the oldest entries."""
        entries = self._entries
        old = entries.pop(entry.connection_id, None)
        if old is not None:
            self.size_bytes -= old.size_bytes
        while entries:
            oldest = next(iter(entries.values()))
            if now - oldest.created_ns > PENDING_HANDSHAKE_LIFETIME_NS:
                self.expired += 1
            elif (
                len(entries) >= self.max_entries
                or self.size_bytes + entry.size_bytes > self.max_bytes
            ):
                self.evicted += 1
            else:
                break
            self._remove(oldest)
        entries[entry.connection_id] = entry
        self.size_bytes += entry.size_bytes

    def pop(self, connection_id: int) -> PendingHandshake | None:
        """Take the entry out (the handshake completed)."""
        entry = self._entries.pop(connection_id, None)
        if entry is not None:
            self.size_bytes -= entry.size_bytes
        return entry

    def _remove(self, entry: PendingHandshake) -> None:
        del self._entries[entry.connection_id]
        self.size_bytes -= entry.size_bytes


class RecentIds:
    """64-bit ids seen recently, in two rotating generations of at most ``capacity``.

    Remembers the connection ids of first packets the endpoint had to shed under
    overload, so that the initiator's repetition (the same connection id, 200 ms
    later) is preferred over never-seen keys; and the identities of initiators
    that completed a handshake.  Holds between ``capacity`` and ``2 * capacity``
    ids (integers in a set: about 60 bytes each).
    """

    __slots__ = ("_current", "_previous", "capacity")

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self._current: set[int] = set()
        self._previous: set[int] = set()

    def add(self, connection_id: int) -> None:
        """Remember ``connection_id``."""
        current = self._current
        if len(current) >= self.capacity:
            self._previous = current
            current = self._current = set()
        current.add(connection_id)

    def __contains__(self, connection_id: object) -> bool:
        return connection_id in self._current or connection_id in self._previous

    def __len__(self) -> int:
        return len(self._current) + len(self._previous)
