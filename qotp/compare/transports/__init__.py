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


def _sides(name: str) -> tuple[type[ClientTransport], type[ServerTransport]]:
    """The client and server classes of ``name`` (imported on demand: quic needs aioquic)."""
    from qotp.compare.transports import qotp, quic, tcp

    sides: dict[str, tuple[type[ClientTransport], type[ServerTransport]]] = {
        "qotp": (qotp.QotpClient, qotp.QotpServer),
        "qotp-dtls": (qotp.QotpDtlsClient, qotp.QotpDtlsServer),
        "tcp": (tcp.TcpClient, tcp.TcpServer),
        "tls": (tcp.TlsClient, tcp.TlsServer),
        "quic": (quic.QuicClient, quic.QuicServer),
    }
    if name not in sides:
        raise TransportUnavailable(f"unknown transport {name!r}")
    return sides[name]


def client_transport(name: str, settings: TransportSettings) -> ClientTransport:
    """The client side of ``name``."""
    return _sides(name)[0](settings)


def server_transport(name: str, settings: TransportSettings) -> ServerTransport:
    """The server side of ``name``."""
    return _sides(name)[1](settings)
