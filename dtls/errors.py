"""Exception hierarchy of the DTLS engine.

Two families, as in h11: the *local* side misused the API
(:class:`LocalProtocolError`) or the *remote* side (or an attacker) sent
something we refuse (:class:`RemoteProtocolError` and subclasses).  Decoders
of network bytes raise only :class:`DecodeError`; record protection raises
only :class:`DecryptError`.  A handshake failure that must be reported to the
peer is an :class:`AlertError` carrying the :class:`AlertDescription` that goes
on the wire.  None of these escape ``receive_datagram``: they become counted
drops or a ``ConnectionTerminated`` event.
"""

from __future__ import annotations

from enum import IntEnum

__all__ = [
    "AlertDescription",
    "AlertError",
    "AlertLevel",
    "DTLSError",
    "DecodeError",
    "DecryptError",
    "HandshakeTimeout",
    "LocalProtocolError",
    "RemoteProtocolError",
]


class AlertLevel(IntEnum):
    """Alert severity byte (RFC 5246 7.2)."""

    WARNING = 1
    FATAL = 2


class AlertDescription(IntEnum):
    """Alert description byte (RFC 5246 7.2, RFC 7301, RFC 8446 registry)."""

    close_notify = 0
    unexpected_message = 10
    bad_record_mac = 20
    record_overflow = 22
    handshake_failure = 40
    bad_certificate = 42
    unsupported_certificate = 43
    certificate_revoked = 44
    certificate_expired = 45
    certificate_unknown = 46
    illegal_parameter = 47
    unknown_ca = 48
    access_denied = 49
    decode_error = 50
    decrypt_error = 51
    protocol_version = 70
    insufficient_security = 71
    internal_error = 80
    inappropriate_fallback = 86
    user_canceled = 90
    no_renegotiation = 100
    missing_extension = 109
    unsupported_extension = 110
    unrecognized_name = 112
    unknown_psk_identity = 115
    certificate_required = 116
    no_application_protocol = 120


class DTLSError(Exception):
    """Base class of every exception this package raises on purpose."""


class LocalProtocolError(DTLSError):
    """The caller asked for something the protocol or the API cannot do."""


class RemoteProtocolError(DTLSError):
    """The peer sent something that breaks the protocol."""


class DecodeError(RemoteProtocolError):
    """Bytes from the network do not parse (too short, bad length, bad value)."""


class DecryptError(RemoteProtocolError):
    """A record failed authentication; RFC 6347 4.1.2.7 says drop it silently."""


class AlertError(RemoteProtocolError):
    """A fatal condition that is reported to the peer with an alert.

    Raised inside the handshake; the connection turns it into an alert record
    and a ``ConnectionTerminated`` event.  ``received`` is true when the alert
    came *from* the peer (then nothing is sent back).
    """

    def __init__(
        self, description: AlertDescription, message: str = "", *, received: bool = False
    ) -> None:
        super().__init__(f"{description.name}: {message}" if message else description.name)
        self.description = description
        self.received = received


class HandshakeTimeout(DTLSError):
    """The handshake did not finish within the configured time or retransmissions.

    ``peer_answered``: the peer's hello had come (a client saw its ServerHello), so
    the handshake stalled later, not for want of a server; ``state`` is where.
    """

    def __init__(self, message: str, *, peer_answered: bool = False, state: str = "") -> None:
        super().__init__(message)
        self.peer_answered = peer_answered
        self.state = state
