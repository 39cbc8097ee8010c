"""What the ``dtls`` commands share: strict parsing, files, output, one-line failures, Ctrl-C.

``dtls`` must not import ``qotp``, so this is its own small common module
(``qotp.cli.common`` follows the same conventions).  A command fails by
raising :class:`CliError`; :func:`dtls.cli.main` prints it as one line (or
``{"ok": false, "error": ...}`` with ``--json``) and exits non-zero, never
with a traceback.  :func:`run_async` makes Ctrl-C one line and exit 130.
"""

from __future__ import annotations

import argparse
import asyncio
import errno
import json
import logging
import os
import signal
import socket
import sys
from collections.abc import Callable, Coroutine, Mapping
from pathlib import Path
from typing import Any, NoReturn, TextIO, TypeVar

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from ..config import (
    IMPLEMENTED_VERSIONS,
    CertificatePrivateKey,
    DTLSVersion,
    load_certificate_chain,
    load_private_key,
)
from ..errors import AlertDescription, DTLSError, HandshakeTimeout
from ..info import ConnectionInfo
from ..suites import (
    GROUP_ALIASES,
    OPENSSL_SUITE_NAMES,
    CipherSuite,
    NamedGroup,
    SrtpProfile,
    group_by_name,
    suite_by_name,
)

__all__ = [
    "EXIT_FAILURE",
    "EXIT_INTERRUPTED",
    "EXIT_USAGE",
    "CliError",
    "Output",
    "Parser",
    "describe_connect_failure",
    "describe_socket_error",
    "format_address",
    "info_record",
    "load_chain_and_key",
    "load_trust_anchors",
    "parse_ciphers",
    "parse_groups",
    "parse_hex",
    "parse_output_file",
    "parse_srtp_profiles",
    "run_async",
    "versions_from",
]

logger = logging.getLogger("dtls.cli")

EXIT_FAILURE = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 128 + signal.SIGINT
MAX_MESSAGE_CHARS = 600
SIGNING_KEY_TYPES = (
    ec.EllipticCurvePrivateKey,
    rsa.RSAPrivateKey,
    ed25519.Ed25519PrivateKey,
)  # one line, well under the 4 KB a failure may print

T = TypeVar("T")


class CliError(Exception):
    """A failure to report as one line: the likely cause and what to try."""

    def __init__(self, message: str, *, exit_status: int = EXIT_FAILURE) -> None:
        super().__init__(message)
        self.message = message if len(message) <= MAX_MESSAGE_CHARS else message[:597] + "..."
        self.exit_status = exit_status


class _HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """Shows each option's default, except where there is nothing worth showing."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if "%(default)" in text or action.default in (None, False, (), argparse.SUPPRESS):
            return text
        if action.option_strings:
            text += " (default: %(default)s)"
        return text


class Parser(argparse.ArgumentParser):
    """An ``ArgumentParser`` whose usage errors are one line and exit status 2."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("formatter_class", _HelpFormatter)
        super().__init__(*args, **kwargs)

    def error(self, message: str) -> NoReturn:
        raise CliError(f"{message} (see {self.prog} --help)", exit_status=EXIT_USAGE)


# -- parsing ----------------------------------------------------------------------------


def _names(text: str) -> list[str]:
    return [part for part in text.replace(":", ",").split(",") if part.strip()]


def parse_ciphers(text: str) -> tuple[CipherSuite, ...]:
    """IANA or OpenSSL cipher names, separated by commas or colons."""
    suites = []
    for name in _names(text):
        try:
            suites.append(suite_by_name(name))
        except KeyError:
            raise argparse.ArgumentTypeError(
                f"unknown cipher suite {name.strip()!r}: see `dtls --list-ciphers`"
            ) from None
    if not suites:
        raise argparse.ArgumentTypeError("no cipher suite named")
    return tuple(dict.fromkeys(suites))


def parse_groups(text: str) -> tuple[NamedGroup, ...]:
    """Group names (X25519, P-256, secp384r1...), separated by commas or colons."""
    groups = []
    for name in _names(text):
        try:
            groups.append(group_by_name(name))
        except KeyError:
            known = ", ".join(sorted({g.name for g in GROUP_ALIASES.values()}))
            raise argparse.ArgumentTypeError(
                f"unknown group {name.strip()!r}: use one of {known} (or P-256, P-384)"
            ) from None
    if not groups:
        raise argparse.ArgumentTypeError("no group named")
    return tuple(dict.fromkeys(groups))


def parse_srtp_profiles(text: str) -> tuple[SrtpProfile, ...]:
    """SRTP protection profile names, separated by commas or colons."""
    profiles = []
    for name in _names(text):
        try:
            profiles.append(SrtpProfile[name.strip().upper()])
        except KeyError:
            known = ", ".join(profile.name for profile in SrtpProfile)
            raise argparse.ArgumentTypeError(
                f"unknown SRTP profile {name.strip()!r}: use one of {known}"
            ) from None
    return tuple(dict.fromkeys(profiles))


def parse_hex(what: str, *, minimum: int = 1, maximum: int = 255) -> Callable[[str], bytes]:
    """An argparse type for hex bytes (a PSK, a connection id)."""

    def parse(text: str) -> bytes:
        cleaned = text.strip().removeprefix("0x")
        try:
            value = bytes.fromhex(cleaned)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{what} is not hex: {text[:40]!r}") from None
        if not minimum <= len(value) <= maximum:
            raise argparse.ArgumentTypeError(
                f"{what} must be {minimum} to {maximum} bytes, got {len(value)}"
            )
        return value

    parse.__name__ = what
    return parse


def parse_output_file(what: str) -> Callable[[str], str]:
    """An argparse type for a file we write at the end (``--sess-out``, ``--keylog``).

    Checked up front, so that a typo in the directory is a usage error at once
    rather than a failure after the whole session.
    """

    def parse(text: str) -> str:
        path = Path(text)
        if path.is_dir():
            raise argparse.ArgumentTypeError(f"{text} is a directory: name a file for the {what}")
        directory = path.parent
        if not directory.is_dir():
            raise argparse.ArgumentTypeError(
                f"cannot write the {what} to {text}: no directory {directory}"
            )
        writable = os.access(path, os.W_OK) if path.exists() else os.access(directory, os.W_OK)
        if not writable:
            raise argparse.ArgumentTypeError(
                f"cannot write the {what} to {text}: permission denied"
            )
        return text

    parse.__name__ = what
    return parse


def versions_from(arguments: argparse.Namespace) -> tuple[DTLSVersion, ...]:
    """The versions the ``--dtls1_2`` / ``--dtls1_3`` flags allow (none: all we implement)."""
    wanted = [
        version
        for version, flag in ((DTLSVersion.DTLS_1_3, "dtls1_3"), (DTLSVersion.DTLS_1_2, "dtls1_2"))
        if getattr(arguments, flag, False)
    ]
    if not wanted:
        return IMPLEMENTED_VERSIONS
    missing = [version.label for version in wanted if version not in IMPLEMENTED_VERSIONS]
    if missing:
        raise CliError(
            f"{', '.join(missing)} is not implemented in this build: use --dtls1_2 "
            "(or no version flag)",
            exit_status=EXIT_USAGE,
        )
    return tuple(wanted)


def list_ciphers() -> list[tuple[str, str, str]]:
    """(hex code, IANA name, OpenSSL name) of every suite we implement."""
    return [(f"0x{suite:04X}", suite.name, OPENSSL_SUITE_NAMES[suite]) for suite in CipherSuite]


# -- files ------------------------------------------------------------------------------


def _read(path: str, what: str) -> bytes:
    try:
        return Path(path).read_bytes()
    except OSError as error:
        raise CliError(f"cannot read the {what} file {path!r}: {error.strerror or error}") from None


def load_trust_anchors(path: str) -> tuple[x509.Certificate, ...]:
    """PEM certificates from ``--cafile``."""
    data = _read(path, "CA")
    try:
        anchors = tuple(x509.load_pem_x509_certificates(data))
    except ValueError:
        raise CliError(
            f"{path!r} holds no PEM certificate (-----BEGIN CERTIFICATE-----): give the CA "
            "certificate, or the peer's own self-signed one"
        ) from None
    return anchors


def load_chain_and_key(
    certificate_path: str, key_path: str | None
) -> tuple[tuple[x509.Certificate, ...], CertificatePrivateKey]:
    """A certificate chain and its private key (``--key`` defaults to the certificate file)."""
    try:
        chain = load_certificate_chain(_read(certificate_path, "certificate"))
    except ValueError:
        raise CliError(
            f"{certificate_path!r} holds no PEM certificate (-----BEGIN CERTIFICATE-----): "
            "check --cert"
        ) from None
    key_file = key_path or certificate_path
    key = _load_key(key_file, _read(key_file, "private key"), key_option_given=key_path is not None)
    if _public(chain[0]) != _public_of_key(key):
        raise CliError(
            f"the private key in {key_file!r} does not belong to the certificate in "
            f"{certificate_path!r}: check --cert and --key"
        )
    return chain, key


def _load_key(path: str, data: bytes, *, key_option_given: bool) -> CertificatePrivateKey:
    """A PEM (or, like ``openssl -keyform DER``, DER) private key, or one line saying why not.

    cryptography's own messages (long, with a URL) are not shown: the cause is
    almost always the wrong file, which the line names.
    """
    try:
        if b"-----BEGIN" in data:
            return load_private_key(data)
        key = serialization.load_der_private_key(data, None)
    except TypeError:
        raise CliError(f"the private key in {path} is encrypted: give an unencrypted one") from None
    except (ValueError, UnsupportedAlgorithm):
        hint = "check --key" if key_option_given else "give --key"
        if b"PRIVATE KEY-----" not in data and b"-----BEGIN CERTIFICATE" in data:
            raise CliError(
                f"cannot read the private key {path}: it holds a certificate, not a key ({hint})"
            ) from None
        raise CliError(
            f"cannot read the private key {path}: not a PEM or DER private key ({hint})"
        ) from None
    except DTLSError:  # a PEM key of a type we cannot sign with
        key = None
    if not isinstance(key, SIGNING_KEY_TYPES):
        raise CliError(
            f"cannot use the private key {path}: DTLS signatures need an EC, RSA or Ed25519 key"
        )
    return key


def _public(certificate: x509.Certificate) -> bytes:
    try:
        return certificate.public_key().public_bytes(
            Encoding.DER, PublicFormat.SubjectPublicKeyInfo
        )
    except (ValueError, TypeError):
        return b""


def _public_of_key(key: CertificatePrivateKey) -> bytes:
    return key.public_key().public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo)


# -- errors as sentences ------------------------------------------------------------------


def format_address(host: str, port: int) -> str:
    """``HOST:PORT``, with brackets for IPv6 (``[::1]:4433``), as the parsers above take it."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def describe_socket_error(error: OSError, host: str, port: int, *, binding: bool) -> str:
    """One line for a failed bind, resolve or send: what happened and what to try."""
    where = format_address(host, port)
    if isinstance(error, socket.gaierror):
        reason = error.strerror or str(error)
        hint = (
            "check the name, or listen on 127.0.0.1 or 0.0.0.0"
            if binding
            else "check the name, or give an IP address"
        )
        return f"cannot resolve host {host!r} ({reason}): {hint}"
    if error.errno == errno.EADDRINUSE:
        return (
            f"{where} is already in use (another server running?): pick another port, "
            "or port 0 for any free one"
        )
    if error.errno == errno.EACCES:
        return f"no permission to use {where}: ports below 1024 need root; pick a higher port"
    if error.errno == errno.EADDRNOTAVAIL:
        return f"{host} is not an address of this machine: use 127.0.0.1, 0.0.0.0 or ::"
    if error.errno in (errno.ENETUNREACH, errno.EHOSTUNREACH):
        return f"{where} is unreachable ({error.strerror}): check the address and the network"
    return f"{where}: {error.strerror or error}"


def describe_connect_failure(
    error: BaseException, host: str, port: int, timeout: float, *, psk: bool = False
) -> str:
    """One line for a client whose handshake did not complete (``psk``: we offered one)."""
    where = format_address(host, port)
    if isinstance(error, ConnectionRefusedError):
        return str(error) or f"nothing answers at {where}: is the server running?"
    if isinstance(error, HandshakeTimeout) and error.peer_answered:
        hint = (
            "the keys may differ: check --psk on both sides"
            if psk
            else "see the server's log, or try -v"
        )
        return (
            f"the handshake with {where} stopped after the server's hello (in state "
            f"'{error.state}', timeout {timeout:g} s): {hint}"
        )
    if isinstance(error, HandshakeTimeout | TimeoutError):
        return (
            f"no answer from {where} after {timeout:g} s: is the server running, is the port "
            "right, and does a firewall let UDP through?"
        )
    if isinstance(error, OSError) and not isinstance(error, ConnectionError):
        return describe_socket_error(error, host, port, binding=False)
    reason = str(error)
    hint = _alert_hint(reason, psk=psk)
    return f"handshake with {where} failed: {reason}" + (f" ({hint})" if hint else "")


def _alert_hint(reason: str, *, psk: bool) -> str:
    """What to try for the alerts people meet most."""
    name = reason.split(":", 1)[0].strip()
    if name == AlertDescription.handshake_failure.name:
        if "did not take our PSK" in reason:
            return "give --cafile, or --insecure, instead of --psk"
        if "received from peer" in reason:
            # The server found nothing to agree on; most often the kind of credentials.
            wanted = (
                "certificate authentication (--cafile or --insecure instead of --psk)"
                if psk
                else "a PSK (--psk)"
            )
            return (
                f"the server accepts none of the cipher suites we offered: it may want {wanted}; "
                "else compare --cipher/--groups on both sides"
            )
    hints = {
        AlertDescription.bad_certificate.name: "check --cafile and --servername, or --insecure",
        AlertDescription.unknown_ca.name: "the peer does not trust our certificate",
        AlertDescription.handshake_failure.name: "no common cipher suite, group or credentials? "
        "compare --cipher/--groups/--psk on both sides",
        AlertDescription.unknown_psk_identity.name: "check --psk-identity",
        AlertDescription.decrypt_error.name: "the keys differ: check --psk on both sides",
        AlertDescription.protocol_version.name: "the peer speaks another DTLS version",
        AlertDescription.no_application_protocol.name: "no common ALPN protocol: check --alpn",
        AlertDescription.unsupported_certificate.name: "the certificate's key does not fit",
    }
    return hints.get(name, "")


# -- output -------------------------------------------------------------------------------


class Output:
    """Results on stdout (readable, or one JSON object per line), notes on stderr."""

    def __init__(
        self,
        *,
        json_mode: bool = False,
        verbosity: int = 0,
        stdout: TextIO | None = None,
        stderr: TextIO | None = None,
    ) -> None:
        self.json = json_mode
        self.verbosity = verbosity
        self.stdout = stdout if stdout is not None else sys.stdout
        self.stderr = stderr if stderr is not None else sys.stderr

    @property
    def quiet(self) -> bool:
        """``-q``: results and errors only."""
        return self.verbosity < 0

    def event(self, record: Mapping[str, Any], text: str | None) -> None:
        """A JSON line on stdout with ``--json``; else ``text`` as a note on stderr."""
        if self.json:
            print(json.dumps(record), file=self.stdout, flush=True)
        elif text is not None:
            self.note(text)

    def note(self, text: str) -> None:
        """A readable line on stderr (not with ``-q``)."""
        if not self.quiet:
            print(text, file=self.stderr, flush=True)

    def data(self, payload: bytes) -> None:
        """Application data from the peer: raw on stdout, or a JSON event."""
        if self.json:
            import base64

            record: dict[str, object] = {"event": "data", "bytes": len(payload)}
            record["base64"] = base64.b64encode(payload).decode()
            print(json.dumps(record), file=self.stdout, flush=True)
            return
        self.stdout.flush()
        self.stdout.buffer.write(payload)
        self.stdout.buffer.flush()


def info_record(info: ConnectionInfo, keying_material: bytes | None) -> dict[str, Any]:
    """What a connection negotiated, as JSON-ready values."""
    record: dict[str, Any] = {
        "version": info.version_name,
        "cipher": None if info.cipher_suite is None else info.cipher_suite.name,
        "cipher_openssl": None
        if info.cipher_suite is None
        else OPENSSL_SUITE_NAMES[info.cipher_suite],
        "group": None if info.group is None else info.group.name,
        "alpn": info.alpn_protocol,
        "srtp_profile": None if info.srtp_profile is None else info.srtp_profile.name,
        "server_name": info.server_name,
        "resumed": info.session_resumed,
        "extended_master_secret": info.extended_master_secret,
        "connection_id": info.connection_id.hex() or None,
        "peer_connection_id": info.peer_connection_id.hex() or None,
        "psk_identity": None
        if info.psk_identity is None
        else info.psk_identity.decode("utf-8", "replace"),
        "peer_certificate": info.peer_certificates[0].subject.rfc4514_string()
        if info.peer_certificates
        else None,
    }
    if keying_material is not None:
        record["keying_material"] = keying_material.hex()
    return record


def info_text(record: Mapping[str, Any]) -> str:
    """The readable one-liner of :func:`info_record`."""
    parts = [f"{record['version']} {record['cipher']} ({record['cipher_openssl']})"]
    if record["group"]:
        parts.append(f"group {record['group']}")
    for key, label in (
        ("alpn", "alpn"),
        ("srtp_profile", "srtp"),
        ("connection_id", "our cid"),
        ("peer_connection_id", "peer cid"),
        ("psk_identity", "psk identity"),
        ("peer_certificate", "peer"),
    ):
        if record.get(key):
            parts.append(f"{label} {record[key]}")
    parts.append("resumed" if record["resumed"] else "new session")
    return ", ".join(parts)


# -- running coroutines ---------------------------------------------------------------------


class _Stopped(Exception):
    """The command's task was cancelled by SIGINT/SIGTERM."""


def _log_loop_error(loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
    """Stray errors of tasks nobody awaited: for ``-v``, never a traceback on the terminal."""
    error = context.get("exception")
    logger.debug("event loop: %s%s", context.get("message"), f": {error!r}" if error else "")


def run_async(main: Callable[[], Coroutine[Any, Any, T]], *, interrupted: Callable[[], str]) -> T:
    """Run ``main()``; Ctrl-C (SIGINT) or SIGTERM cancels it and becomes one-line CliError.

    The cancellation runs the command's ``finally`` and ``async with`` exits (a
    server sends close_notify to its peers), then ``interrupted()`` says what
    was done, with exit status 130 (143 for SIGTERM).
    """
    received: list[int] = []

    async def guarded() -> T:
        loop = asyncio.get_running_loop()
        task = asyncio.current_task()
        assert task is not None

        def stop(signum: int) -> None:
            if not received:
                received.append(signum)
                task.cancel()

        installed = []
        for signum in (signal.SIGINT, signal.SIGTERM):
            try:
                loop.add_signal_handler(signum, stop, signum)
                installed.append(signum)
            except (NotImplementedError, RuntimeError, ValueError):
                pass
        try:
            return await main()
        except asyncio.CancelledError:
            if received:
                raise _Stopped() from None
            raise
        finally:
            for signum in installed:
                loop.remove_signal_handler(signum)

    with asyncio.Runner() as runner:
        runner.get_loop().set_exception_handler(_log_loop_error)
        try:
            value = runner.run(guarded())
        except (_Stopped, KeyboardInterrupt):
            if not received:
                received.append(signal.SIGINT)
    if received:
        raise CliError(interrupted(), exit_status=128 + received[0])
    return value


def fail(message: str, *, exit_status: int = EXIT_FAILURE) -> NoReturn:
    """Raise :class:`CliError`."""
    raise CliError(message, exit_status=exit_status)
