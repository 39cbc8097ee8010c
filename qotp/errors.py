"""Exception hierarchy of the QOTP implementation.

Two families, as in h11 and wsproto: the *local* side misused the API
(:class:`LocalProtocolError`), or the *remote* side (or an attacker) sent
something we cannot accept (:class:`RemoteProtocolError` and its
subclasses).  Decoders of network bytes raise only :class:`DecodeError` or
:class:`DecryptError`; the endpoint turns those into counted drops, so they
never escape ``receive_datagram``.
"""

from __future__ import annotations

__all__ = [
    "DecodeError",
    "DecryptError",
    "EarlyDataError",
    "LateFirstPacketError",
    "LocalProtocolError",
    "QotpError",
    "RemoteProtocolError",
    "ReplayedPacketError",
    "SequenceSpaceExhausted",
    "ZeroRttReplayError",
]


class QotpError(Exception):
    """Base class of every exception this package raises on purpose."""


class LocalProtocolError(QotpError):
    """The caller asked for something the protocol or the API cannot do."""


class SequenceSpaceExhausted(LocalProtocolError):
    """The 2^95 (epoch, sequence number) space of a connection is used up.

    The reference keeps no way to re-key; a new connection is the only way on.
    """


class RemoteProtocolError(QotpError):
    """The peer sent something that breaks the protocol."""


class DecodeError(RemoteProtocolError):
    """Bytes from the network do not parse: too short, bad version, bad length."""


class DecryptError(RemoteProtocolError):
    """A packet failed authentication (wrong key, epoch, direction, or tampered)."""


class ReplayedPacketError(DecryptError):
    """An authentic packet whose sequence number was already accepted (or is too old).

    A network duplicate or a deliberate replay: dropped before it changes anything.
    """


class ZeroRttReplayError(ReplayedPacketError):
    """A 0-RTT first packet whose initiator key the strike register has seen before."""

    drop_reason = "0-RTT replay"


class LateFirstPacketError(DecodeError):
    """A copy of an InitSnd whose handshake already completed (a late repeat, or a replay).

    Unauthenticated and answered before: it changes nothing, not even the address.
    """

    drop_reason = "late first packet"


class EarlyDataError(DecodeError):
    """A 0-RTT first packet that authenticates but carries no valid transport payload."""

    drop_reason = "bad 0-RTT payload"
