"""``HOST:PORT`` and port arguments, strictly: ports 0/1 to 65535, never wrapped.

The ``qotp`` command line parses its addresses with these too; this module needs
nothing but the standard library, so importing it loads no DTLS engine.
"""

from __future__ import annotations

import argparse

__all__ = ["parse_bind_address", "parse_peer_address", "parse_port"]


def _split_host_port(text: str) -> tuple[str, str]:
    text = text.strip()
    if text.startswith("["):
        host, bracket, rest = text[1:].partition("]")
        if not bracket or not rest.startswith(":"):
            raise argparse.ArgumentTypeError(f"expected [IPv6]:PORT, got {text!r}")
        return host, rest[1:]
    host, colon, port = text.rpartition(":")
    if not colon or not host:
        raise argparse.ArgumentTypeError(f"expected HOST:PORT, got {text!r}")
    if ":" in host:
        raise argparse.ArgumentTypeError(f"write IPv6 addresses as [ADDRESS]:PORT, got {text!r}")
    return host, port


def _port(text: str, *, minimum: int) -> int:
    if not text.isdigit() or not text.isascii():
        raise argparse.ArgumentTypeError(f"port {text!r} is not a number from {minimum} to 65535")
    port = int(text)
    if not minimum <= port <= 65535:
        raise argparse.ArgumentTypeError(f"port {port} is out of range: use {minimum} to 65535")
    return port


def parse_port(text: str) -> int:
    """A port to bind: 0 (any free port) to 65535."""
    return _port(text.strip(), minimum=0)


def parse_bind_address(text: str) -> tuple[str, int]:
    """``HOST:PORT`` (or ``[IPv6]:PORT``) to bind or listen on; port 0 picks a free one."""
    host, port = _split_host_port(text)
    return host, _port(port, minimum=0)


def parse_peer_address(text: str) -> tuple[str, int]:
    """``HOST:PORT`` (or ``[IPv6]:PORT``) of a peer: port 1 to 65535."""
    host, port = _split_host_port(text)
    return host, _port(port, minimum=1)
