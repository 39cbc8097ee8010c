"""Options the client and the server share, and how they become a configuration."""

from __future__ import annotations

import argparse
from pathlib import Path

from .. import asyncio as dtls_asyncio
from ..config import DEFAULT_MTU_BYTES, MIN_MTU_BYTES
from .common import (
    CliError,
    Output,
    info_record,
    info_text,
    parse_ciphers,
    parse_groups,
    parse_hex,
    parse_output_file,
    parse_srtp_profiles,
)

__all__ = [
    "SECOND_NS",
    "add_common_options",
    "common_configuration",
    "report_connected",
    "write_key_log",
]

SECOND_NS = 1_000_000_000


def _csv(text: str) -> tuple[str, ...]:
    return tuple(part.strip() for part in text.split(",") if part.strip())


def _mtu(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"mtu {text!r} is not a number") from None
    if not MIN_MTU_BYTES <= value <= 65507:
        raise argparse.ArgumentTypeError(f"mtu {value}: use {MIN_MTU_BYTES} to 65507 bytes")
    return value


def _timeout(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"timeout {text!r} is not a number of seconds") from None
    if not 2 <= value <= 120:
        raise argparse.ArgumentTypeError(f"timeout {value:g} s: use 2 to 120 seconds")
    return value


def _export_length(text: str) -> int:
    if not text.isdigit() or not 1 <= int(text) <= 1024:
        raise argparse.ArgumentTypeError(f"--keymatexport-len {text!r}: use 1 to 1024 bytes")
    return int(text)


def add_common_options(parser: argparse.ArgumentParser) -> None:
    """Versions, suites, groups, ALPN, SRTP, PSK, MTU, timeouts, key log, exporter."""
    versions = parser.add_argument_group(
        "protocol version (default: DTLS 1.3, falling back to 1.2; both flags: the same)"
    )
    versions.add_argument("--dtls1_2", action="store_true", help="DTLS 1.2 only")
    versions.add_argument("--dtls1_3", action="store_true", help="DTLS 1.3 only")
    parser.add_argument(
        "--cipher",
        type=parse_ciphers,
        default=(),
        metavar="LIST",
        help="cipher suites, IANA or OpenSSL names, comma or colon separated "
        "(see `dtls --list-ciphers`)",
    )
    parser.add_argument(
        "--groups",
        type=parse_groups,
        default=(),
        metavar="LIST",
        help="ECDHE groups in preference order, e.g. X25519:P-256 (default: X25519, P-256, P-384)",
    )
    parser.add_argument("--alpn", type=_csv, default=(), metavar="LIST", help="ALPN protocols")
    parser.add_argument(
        "--srtp",
        type=parse_srtp_profiles,
        default=(),
        metavar="LIST",
        help="DTLS-SRTP profiles, e.g. SRTP_AES128_CM_SHA1_80",
    )
    parser.add_argument(
        "--psk", type=parse_hex("PSK", maximum=512), metavar="HEX", help="pre-shared key (hex)"
    )
    parser.add_argument("--mtu", type=_mtu, default=DEFAULT_MTU_BYTES, help="datagram size")
    parser.add_argument(
        "--timeout", type=_timeout, default=60.0, metavar="SECONDS", help="handshake timeout"
    )
    parser.add_argument(
        "--keylog",
        type=parse_output_file("key log"),
        metavar="FILE",
        help="append NSS key-log lines (Wireshark, tshark -o tls.keylog_file:FILE); "
        "anyone with them can decrypt the session",
    )
    parser.add_argument(
        "--keymatexport",
        metavar="LABEL",
        help="print RFC 5705 keying material for LABEL (e.g. EXTRACTOR-dtls_srtp)",
    )
    parser.add_argument(
        "--keymatexport-len",
        type=_export_length,
        default=20,
        metavar="N",
        help="bytes of keying material",
    )


def common_configuration(arguments: argparse.Namespace) -> dict[str, object]:
    """DTLSConfiguration keyword arguments from the shared options."""
    options: dict[str, object] = {
        "alpn_protocols": arguments.alpn,
        "mtu": arguments.mtu,
        "handshake_timeout_ns": int(arguments.timeout * SECOND_NS),
    }
    if arguments.cipher:
        options["cipher_suites"] = arguments.cipher
    if arguments.groups:
        options["groups"] = arguments.groups
    if arguments.srtp:
        options["srtp_profiles"] = arguments.srtp
    return options


def report_connected(
    output: Output,
    connection: dtls_asyncio.AsyncDTLSConnection,
    arguments: argparse.Namespace,
    *,
    peer: str,
    lead: str,
) -> None:
    """What was negotiated (and ``--keymatexport``'s keying material), as text or JSON."""
    keying_material = None
    if arguments.keymatexport:
        keying_material = connection.export_keying_material(
            arguments.keymatexport, None, arguments.keymatexport_len
        )
    record = info_record(connection.info, keying_material)
    text = lead + info_text(record)
    if keying_material is not None:
        text += f"\nkeying material ({arguments.keymatexport}): {keying_material.hex().upper()}"
    output.event({"event": "connected", "peer": peer, **record}, text)


def write_key_log(path: str | None, lines: list[str]) -> None:
    """Append key-log lines; a file we cannot write is a clear failure."""
    if not path or not lines:
        return
    try:
        with Path(path).open("a", encoding="ascii") as log:
            for line in lines:
                log.write(line + "\n")
    except OSError as error:
        raise CliError(f"cannot write the key log {path!r}: {error.strerror or error}") from None
