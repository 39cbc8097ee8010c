"""The crypto seam between the QOTP transport and whatever protects its packets.

The transport (streams, ACKs, congestion and flow control, close) never looks
past this interface.  Two implementations exist: QOTP's native envelope
(:mod:`qotp.native`, wire-compatible with the Go reference) and DTLS 1.2
record protection (:mod:`qotp.dtls_protection`, over the :mod:`dtls`
package).  The seam is structural (:class:`typing.Protocol`), so the
:mod:`dtls` package never imports :mod:`qotp`; the adapter lives here.

Two roles:

* :class:`Protection` -- one per connection.  It owns the handshake and the
  per-packet envelope: it says whether a transport payload can be carried yet,
  how many payload bytes fit in the next datagram, seals a payload into a
  datagram, opens a datagram back into a payload, and emits its own handshake
  datagrams on its own timer.  It also names the connection (a u64 both
  sides agree on) and reports the peer's authenticated identity.
* :class:`CryptoLayer` -- one per endpoint (socket).  It routes an incoming
  datagram (with its source address) to a connection id, creates the
  responder-side protection for a valid first packet, creates initiator-side
  protections for dials, may answer statelessly (a DTLS HelloVerifyRequest),
  and forgets a connection the endpoint dropped.
"""

from __future__ import annotations

from enum import Enum
from typing import NamedTuple, Protocol

__all__ = ["Address", "CryptoLayer", "EarlyPayload", "FirstPacket", "Protection"]

Address = tuple[str, int]
"""A UDP address as the socket layer reports it: (host, port)."""


class EarlyPayload(NamedTuple):
    """A transport payload that arrived as 0-RTT data, before the handshake completed."""

    payload: bytes
    replayable: bool
    """Whether a replay of an old first packet could have produced it (it was taken
    before the initiator proved anything); False when the handshake completed first."""


class FirstPacket(Enum):
    """What a datagram for no connection asks of the crypto layer, cheapest first.

    Under a flood of first packets the endpoint sheds :attr:`NEW_HANDSHAKE` ones
    first: they cost public-key work and prove nothing yet.
    """

    NONE = "none"
    """Starts nothing and continues nothing: dropped as for an unknown connection."""
    CONTINUATION = "continuation"
    """Continues a handshake in progress, or is answered without state: cheap."""
    NEW_HANDSHAKE_KNOWN_PEER = "new handshake, known peer"
    """Would start a handshake, for a peer identity that completed one recently: likelier
    legitimate than a never-seen key, so shed after repeated first packets but before
    :attr:`NEW_HANDSHAKE` (the identity travels in clear, so this is a preference, not
    a proof)."""
    NEW_HANDSHAKE = "new handshake"
    """Would start a handshake (public-key work)."""


class Protection(Protocol):
    """Per-connection crypto state as the transport sees it."""

    @property
    def connection_id(self) -> int:
        """The u64 naming this connection in events and logs; the endpoint files it under it.

        QOTP: the connection id on the wire.  DTLS: taken from the ClientHello
        random, so both sides know the same number.
        """
        ...

    @property
    def handshake_complete(self) -> bool:
        """True once both sides are known to hold the final keys.

        Until then the transport keeps at most one packet of new data in
        flight, as the reference does.
        """
        ...

    @property
    def can_carry_payload(self) -> bool:
        """Whether :meth:`seal` can be called now (QOTP's InitSnd cannot carry one)."""
        ...

    @property
    def failure(self) -> str | None:
        """Why the protection failed for good (handshake failure, fatal alert), else None.

        Once set, the connection must end.
        """
        ...

    @property
    def closed_by_peer(self) -> bool:
        """Whether :attr:`failure` is the peer's orderly end (DTLS close_notify), not an error.

        Natively always False: the QOTP wire has no connection close.
        """
        ...

    @property
    def peer_identity(self) -> bytes | None:
        """The peer's authenticated identity, once known, else None.

        QOTP: its X25519 identity public key.  DTLS: the DER SubjectPublicKeyInfo
        of its certificate (None for PSK or a client without certificate).
        """
        ...

    @property
    def proven_address(self) -> Address | None:
        """Where the handshake proved that the peer receives: the connection starts there.

        A responder's reply went there and was answered (QOTP: the initiator's
        first Data packet; DTLS: the echoed cookie), or we dialed it.  None for a
        connection made on an unproven first packet (0-RTT under
        ZeroRttPolicy.ACCEPT): it starts at the packet's source, with replies held
        to three times the bytes received from there until proven.
        """
        ...

    @property
    def early_data_replayable(self) -> bool:
        """Whether payloads opened now are 0-RTT data that a replay could have produced."""
        ...

    def take_early_payload(self) -> EarlyPayload | None:
        """0-RTT data held back until the handshake completed, handed over once (else None)."""
        ...

    @property
    def datagrams_pending(self) -> bool:
        """Whether :meth:`datagrams_to_send` has something now, without waiting for a timer.

        DTLS: a flight that answers the datagram just opened.  QOTP: never (its
        hellos are timer-driven).
        """
        ...

    def payload_budget(self, mtu: int) -> int:
        """Transport payload bytes that fit in the next sealed datagram of ``mtu`` bytes."""
        ...

    def seal(self, payload: bytes, now: int) -> bytes:
        """Protect one encoded transport payload; returns the datagram."""
        ...

    def open(self, datagram: bytes, now: int) -> bytes | None:
        """Authenticate and decrypt a datagram routed to this connection.

        Returns the transport payload, or None when the datagram was only for
        the handshake: the transport then takes it as no proof of the peer's
        address and no sign of life.  Raises
        :class:`qotp.errors.DecodeError` or :class:`qotp.errors.DecryptError`
        for anything unacceptable.
        """
        ...

    def datagrams_to_send(self, now: int) -> list[bytes]:
        """Handshake datagrams the protection itself wants sent (e.g. InitSnd)."""
        ...

    def get_timer(self) -> int | None:
        """Absolute deadline (ns) of the protection's own retransmission timer."""
        ...

    def handle_timer(self, now: int) -> None:
        """The deadline from :meth:`get_timer` passed."""
        ...

    def key_log_lines(self) -> list[str]:
        """Key-log lines that became available since the last call (may be empty)."""
        ...


class CryptoLayer(Protocol):
    """Per-endpoint crypto: routing, accepting, dialing."""

    @property
    def local_identity(self) -> bytes | None:
        """What peers see as our :attr:`Protection.peer_identity` (None if nothing)."""
        ...

    def route(self, datagram: bytes, address: Address) -> int | None:
        """The connection id a datagram from ``address`` belongs to.

        QOTP reads it from the header and ignores the address; DTLS looks the
        address (or an RFC 9146 connection id) up.  The id may name no live
        connection, and None means the layer knows none: either way the
        endpoint then offers the datagram to :meth:`accept`.  Raises
        ``DecodeError`` for datagrams that cannot be routed at all.  Runs for
        every datagram: keep it cheap.
        """
        ...

    def classify(self, datagram: bytes, connection_id: int | None, now: int) -> FirstPacket:
        """What a datagram that routed to no connection would cost :meth:`accept`.

        Cheap (no cryptography): the endpoint asks before :meth:`accept`, drops
        :attr:`FirstPacket.NONE` and, under overload, sheds
        :attr:`FirstPacket.NEW_HANDSHAKE` first.
        """
        ...

    def accept(self, datagram: bytes, address: Address, now: int) -> Protection | None:
        """A responder-side protection for a datagram that routed to no connection.

        Returns None when the datagram makes no connection (yet): it was answered
        through :meth:`datagrams_to_send` (a DTLS ClientHello without a valid
        cookie; a QOTP first packet, whose handshake waits in progress until the
        initiator's first Data packet), or it is a copy of something already
        answered.  Raises ``DecodeError``/``DecryptError`` (``ReplayedPacketError``
        for a replayed 0-RTT first packet) for datagrams to drop.
        """
        ...

    def dial(self, address: Address, *, now: int, peer_identity: bytes | None = None) -> Protection:
        """A new initiator-side protection for a connection to ``address``.

        With ``peer_identity`` the handshake fails unless the peer proves that
        identity (QOTP: its public key, which also enables 0-RTT).
        """
        ...

    def datagrams_to_send(self, now: int) -> list[tuple[bytes, Address]]:
        """Stateless replies of the layer itself (no connection behind them)."""
        ...

    def forget(self, protection: Protection) -> None:
        """The endpoint dropped this protection's connection: stop routing to it."""
        ...
