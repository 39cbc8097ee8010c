"""DTLS 1.3 and 1.2 in pure Python on ``cryptography`` (sans-IO engine, asyncio adapter, CLI).

The engine (:class:`DTLSConnection`, :class:`DTLSEndpoint`) never touches
sockets or clocks: feed it datagrams and ``now`` (monotonic ns) and send what
``datagrams_to_send`` returns.  See SPEC-DTLS.md for the protocol details.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ._lazy import lazy_attributes

if TYPE_CHECKING:
    from .config import (
        DTLSConfiguration,
        DTLSVersion,
        ServerCertificates,
        load_certificate_chain,
        load_private_key,
        system_ca_certificates,
    )
    from .connection import DTLSConnection, HandshakeState, ServerContext
    from .endpoint import DTLSEndpoint
    from .errors import (
        AlertDescription,
        AlertError,
        AlertLevel,
        DecodeError,
        DecryptError,
        DTLSError,
        HandshakeTimeout,
        LocalProtocolError,
        RemoteProtocolError,
    )
    from .events import (
        ApplicationDataReceived,
        ConnectionAccepted,
        ConnectionTerminated,
        Event,
        HandshakeCompleted,
        HandshakeFailed,
        PeerClosedWrite,
    )
    from .info import ConnectionInfo
    from .sessions import Session
    from .sessions13 import Session13
    from .suites import CipherSuite, NamedGroup, SrtpProfile

# Where each public name lives; each is imported on first use (dtls._lazy).
_MODULES: dict[str, tuple[str, ...]] = {
    "config": (
        "DTLSConfiguration",
        "DTLSVersion",
        "ServerCertificates",
        "load_certificate_chain",
        "load_private_key",
        "system_ca_certificates",
    ),
    "connection": ("DTLSConnection", "HandshakeState", "ServerContext"),
    "endpoint": ("DTLSEndpoint",),
    "errors": (
        "AlertDescription",
        "AlertError",
        "AlertLevel",
        "DecodeError",
        "DecryptError",
        "DTLSError",
        "HandshakeTimeout",
        "LocalProtocolError",
        "RemoteProtocolError",
    ),
    "events": (
        "ApplicationDataReceived",
        "ConnectionAccepted",
        "ConnectionTerminated",
        "Event",
        "HandshakeCompleted",
        "HandshakeFailed",
        "PeerClosedWrite",
    ),
    "info": ("ConnectionInfo",),
    "sessions": ("Session",),
    "sessions13": ("Session13",),
    "suites": ("CipherSuite", "NamedGroup", "SrtpProfile"),
}
__all__ = [
    "AlertDescription",
    "AlertError",
    "AlertLevel",
    "ApplicationDataReceived",
    "CipherSuite",
    "ConnectionAccepted",
    "ConnectionInfo",
    "ConnectionTerminated",
    "DTLSConfiguration",
    "DTLSConnection",
    "DTLSEndpoint",
    "DTLSError",
    "DTLSVersion",
    "DecodeError",
    "DecryptError",
    "Event",
    "HandshakeCompleted",
    "HandshakeFailed",
    "HandshakeState",
    "HandshakeTimeout",
    "LocalProtocolError",
    "NamedGroup",
    "PeerClosedWrite",
    "RemoteProtocolError",
    "ServerCertificates",
    "ServerContext",
    "Session",
    "Session13",
    "SrtpProfile",
    "load_certificate_chain",
    "load_private_key",
    "system_ca_certificates",
]

__getattr__, __dir__ = lazy_attributes(__name__, _MODULES, __all__)
