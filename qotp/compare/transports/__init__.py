"""The transports a comparison can run, by name.

``go`` (the Go reference, through our interop peer's test protocol) is not
here: it brings its own client and server binary, see :mod:`qotp.compare.goref`.
"""

from __future__ import annotations

from qotp.compare.transports.base import (
    ClientTransport,
    ServerTransport,
    TransportSettings,
    TransportUnavailable,
)

__all__ = [
    "PYTHON_TRANSPORTS",
    "client_transport",
    "server_transport",
    "transport_missing",
]

PYTHON_TRANSPORTS = ("qotp", "qotp-dtls", "tcp", "tls", "quic")
"""Transports whose both sides run in Python, in the order of the table."""


def transport_missing(name: str) -> str | None:
    """Why a transport cannot run here, or None."""
    if name == "quic":
        from qotp.compare.transports.quic import aioquic_missing

        return aioquic_missing()
    if name not in PYTHON_TRANSPORTS:
        raise TransportUnavailable(f"unknown transport {name!r}")
    return None


def client_transport(name: str, settings: TransportSettings) -> ClientTransport:
    """The client side of ``name``."""
    from qotp.compare.transports import qotp, quic, tcp

    classes: dict[str, type[ClientTransport]] = {
        "qotp": qotp.QotpClient,
        "qotp-dtls": qotp.QotpDtlsClient,
        "tcp": tcp.TcpClient,
        "tls": tcp.TlsClient,
        "quic": quic.QuicClient,
    }
    if name not in classes:
        raise TransportUnavailable(f"unknown transport {name!r}")
    return classes[name](settings)


def server_transport(name: str, settings: TransportSettings) -> ServerTransport:
    """The server side of ``name``."""
    from qotp.compare.transports import qotp, quic, tcp

    classes: dict[str, type[ServerTransport]] = {
        "qotp": qotp.QotpServer,
        "qotp-dtls": qotp.QotpDtlsServer,
        "tcp": tcp.TcpServer,
        "tls": tcp.TlsServer,
        "quic": quic.QuicServer,
    }
    if name not in classes:
        raise TransportUnavailable(f"unknown transport {name!r}")
    return classes[name](settings)
