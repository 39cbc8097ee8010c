"""QOTP, the Quite OK Transport Protocol, wire-compatible with the Go reference v0.2.19.

The sans-IO engine and its vocabulary live here: :class:`QotpEndpoint` (one
socket's worth of connections), :class:`Connection`, the events they report,
:class:`QotpConfiguration`, :class:`KeyPair` and the exceptions.  Drivers:

* :mod:`qotp.asyncio` -- ``listen()``, connections and streams for asyncio;
* :mod:`qotp.blocking` -- the same with calls that wait, for scripts and threads;
* :mod:`qotp.dtls_protection` -- the transport over DTLS 1.3 or 1.2 records
  instead of QOTP's native envelope;
* :mod:`qotp.capture` -- decrypting captures with a key log.
"""

from __future__ import annotations

from qotp.config import QotpConfiguration
from qotp.congestion import (
    CONGESTION_CONTROLLERS,
    Bbr,
    CongestionController,
    CongestionControllerFactory,
    NewReno,
)
from qotp.connection import Connection, ConnectionStatistics
from qotp.endpoint import QotpEndpoint
from qotp.errors import (
    DecodeError,
    DecryptError,
    EarlyDataError,
    LocalProtocolError,
    QotpError,
    RemoteProtocolError,
    ReplayedPacketError,
    SequenceSpaceExhausted,
    ZeroRttReplayError,
)
from qotp.events import (
    ConnectionEstablished,
    ConnectionTerminated,
    Event,
    PeerAddressChanged,
    StreamClosed,
    StreamDataAvailable,
    StreamOpened,
    StreamSendFinished,
    StreamWritable,
    TerminationReason,
)
from qotp.keys import KeyPair
from qotp.protection import Address, CryptoLayer, Protection

__all__ = [
    "CONGESTION_CONTROLLERS",
    "Address",
    "Bbr",
    "CongestionController",
    "CongestionControllerFactory",
    "Connection",
    "ConnectionEstablished",
    "ConnectionStatistics",
    "ConnectionTerminated",
    "CryptoLayer",
    "DecodeError",
    "DecryptError",
    "EarlyDataError",
    "Event",
    "KeyPair",
    "LocalProtocolError",
    "NewReno",
    "PeerAddressChanged",
    "Protection",
    "QotpConfiguration",
    "QotpEndpoint",
    "QotpError",
    "RemoteProtocolError",
    "ReplayedPacketError",
    "SequenceSpaceExhausted",
    "StreamClosed",
    "StreamDataAvailable",
    "StreamOpened",
    "StreamSendFinished",
    "StreamWritable",
    "TerminationReason",
    "ZeroRttReplayError",
]
