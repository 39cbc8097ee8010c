"""What every ``qotp`` command shares: argument parsing, output, failures, Ctrl-C.

A command module (``keygen.py``, ``serve.py``, ...) defines one :class:`Command`
and registers it by name in :data:`qotp.cli.COMMAND_MODULES`.  It parses its
arguments with the ``parse_*`` types below (strict: a port is 0-65535 and
never wraps, a key is 64 hex digits and a usable X25519 point), reports
through :class:`Output` (readable lines by default, JSON with ``--json``) and
fails by raising :class:`CliError`, which :func:`qotp.cli.main` turns into one
line and a non-zero exit status, never a traceback.  :func:`run_async` runs a
command's coroutine so that Ctrl-C (or SIGTERM) cancels it cleanly and ends
in one line saying what was done, with exit status 130 (143).
"""

from __future__ import annotations

import argparse
import asyncio
import errno
import json
import logging
import signal
import socket
import sys
import time
from collections.abc import Callable, Coroutine, Mapping
from dataclasses import dataclass
from typing import Any, NoReturn, TextIO, TypeVar

from dtls.cli.addresses import parse_bind_address, parse_peer_address, parse_port
from qotp.config import QotpConfiguration
from qotp.errors import DecryptError
from qotp.keys import KEY_SIZE, KeyPair
from qotp.protection import Address

__all__ = [
    "EXIT_FAILURE",
    "EXIT_INTERRUPTED",
    "EXIT_USAGE",
    "MAX_BYTES_PER_STREAM",
    "MAX_STREAMS",
    "CliError",
    "Command",
    "Output",
    "Parser",
    "Progress",
    "add_idle_timeout_option",
    "configuration_from",
    "describe_file_error",
    "describe_socket_error",
    "format_bytes",
    "format_seconds",
    "parse_bind_address",
    "parse_count",
    "parse_peer_address",
    "parse_port",
    "parse_positive_seconds",
    "parse_private_key",
    "parse_public_key",
    "parse_secret",
    "resolve_peer",
    "run_async",
]

logger = logging.getLogger("qotp.cli")

EXIT_FAILURE = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 128 + signal.SIGINT
"""Ctrl-C: 130, as shells report a process that SIGINT ended."""

MAX_STREAMS = QotpConfiguration().max_streams
"""Streams one side may have open on a connection (``max_streams``)."""
MAX_BYTES_PER_STREAM = (1 << 48) - 1 - 8
"""A stream's offsets are 48-bit; the digest protocol's 8-byte length header comes first."""

T = TypeVar("T")


class CliError(Exception):
    """A failure to report as one line: the likely cause and what to try.

    :func:`qotp.cli.main` prints it (``qotp COMMAND: MESSAGE``) and exits with
    :attr:`exit_status`; in ``--json`` mode it prints ``{"ok": false, "error":
    MESSAGE}`` on stdout instead, plus :attr:`report` when there is one.
    """

    def __init__(
        self,
        message: str,
        *,
        exit_status: int = EXIT_FAILURE,
        report: Mapping[str, Any] | None = None,
        program: str | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.exit_status = exit_status
        self.report = dict(report) if report is not None else None
        self.program = program
        """Who says it (``qotp send``), when the command line did not get far enough to know."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Command:
    """One subcommand: its name, help, argument set-up and the function that runs it.

    ``run`` returns the exit status (0 on success) or raises :class:`CliError`.
    """

    name: str
    help: str
    description: str
    configure: Callable[[argparse.ArgumentParser], None]
    run: Callable[[argparse.Namespace, Output], int]
    epilog: str | None = None


# -- argument parsing ----------------------------------------------------------


class _HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """Shows each option's default, except where there is nothing worth showing."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if "%(default)" in text or action.default in (None, False, argparse.SUPPRESS):
            return text
        if action.option_strings or action.nargs in (argparse.OPTIONAL, argparse.ZERO_OR_MORE):
            text += " (default: %(default)s)"
        return text


class Parser(argparse.ArgumentParser):
    """An ``ArgumentParser`` whose usage errors are one line (and exit status 2)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("formatter_class", _HelpFormatter)
        super().__init__(*args, **kwargs)

    def error(self, message: str) -> NoReturn:
        raise CliError(
            f"{message} (see {self.prog} --help)", exit_status=EXIT_USAGE, program=self.prog
        )


def parse_count(minimum: int, maximum: int, *, what: str) -> Callable[[str], int]:
    """An argparse type for a whole number within ``minimum..maximum``."""

    def parse(text: str) -> int:
        cleaned = text.strip().replace("_", "")
        try:
            value = int(cleaned)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"{value} {what}: at least {minimum}")
        if value > maximum:
            raise argparse.ArgumentTypeError(f"{value} {what}: at most {maximum}")
        return value

    parse.__name__ = what  # argparse names the type in some messages
    return parse


def parse_positive_seconds(text: str) -> float:
    """A duration in seconds, greater than zero."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
    if not 0 < value < float("inf"):
        raise argparse.ArgumentTypeError(f"{text!r}: seconds must be more than 0")
    return value


def _hex_key(text: str, *, what: str) -> bytes:
    cleaned = text.strip()
    if cleaned[:2].lower() == "0x":
        cleaned = cleaned[2:]
    try:
        raw = bytes.fromhex(cleaned)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{what} {_abbreviate(text)!r} is not hex: expected {2 * KEY_SIZE} hex digits"
        ) from None
    if len(raw) != KEY_SIZE:
        raise argparse.ArgumentTypeError(
            f"{what} has {len(cleaned)} hex digits, expected {2 * KEY_SIZE}"
        )
    return raw


def _abbreviate(text: str, limit: int = 24) -> str:
    return text if len(text) <= limit else text[:limit] + "..."


def parse_public_key(text: str) -> bytes:
    """A peer's X25519 public key: 64 hex digits that are a usable point.

    All-zero and the other low-order points give an all-zero shared secret
    (RFC 7748 section 6.1): such a key can only come from a typo or an attack.
    """
    raw = _hex_key(text, what="public key")
    try:
        KeyPair.generate().exchange(raw)
    except DecryptError:
        raise argparse.ArgumentTypeError(
            "public key is not a usable X25519 key (all zeros or another low-order point): "
            "copy pubkey= from `qotp serve` or `qotp keygen`"
        ) from None
    return raw


def parse_secret(text: str) -> bytes:
    """A 32-byte key-log secret (``QOTP_SHARED_SECRET``...): 64 hex digits."""
    return _hex_key(text, what="secret")


def parse_private_key(text: str) -> KeyPair:
    """An identity private key (the X25519 seed): 64 hex digits, not all zeros."""
    raw = _hex_key(text, what="private key")
    if not any(raw):
        raise argparse.ArgumentTypeError(
            "private key is all zeros, which is no secret: make one with `qotp keygen`"
        )
    return KeyPair.from_seed(raw)


IDLE_TIMEOUT_HELP = (
    "a connection that hears nothing for this long ends (a dead peer is noticed after this long)"
)


def add_idle_timeout_option(
    parser: argparse.ArgumentParser, *, help_text: str = IDLE_TIMEOUT_HELP
) -> None:
    """``--idle-timeout SECONDS``, QOTP's idle timeout; :func:`configuration_from` reads it."""
    parser.add_argument(
        "--idle-timeout",
        type=parse_positive_seconds,
        default=QotpConfiguration().idle_timeout_ns / 1e9,
        metavar="SECONDS",
        help=help_text,
    )


def configuration_from(arguments: argparse.Namespace) -> QotpConfiguration:
    """The engine configuration a command's options ask for (``--idle-timeout``)."""
    return QotpConfiguration(idle_timeout_ns=int(arguments.idle_timeout * 1e9))


# -- sockets ----------------------------------------------------------------------


async def resolve_peer(host: str, port: int) -> tuple[Address, str]:
    """The peer's address, and the wildcard host of its family for our own socket.

    A name that does not resolve is a one-line :class:`CliError`.
    """
    loop = asyncio.get_running_loop()
    try:
        infos = await loop.getaddrinfo(host, port, type=socket.SOCK_DGRAM)
    except OSError as error:
        raise CliError(describe_socket_error(error, host, port, binding=False)) from None
    family, _type, _proto, _name, address = infos[0]
    local_host = "::" if family == socket.AF_INET6 else "0.0.0.0"
    return (str(address[0]), int(address[1])), local_host


def describe_file_error(error: OSError | UnicodeDecodeError) -> str:
    """``No such file or directory``, not Python's ``[Errno 2] ...: 'name'`` repr."""
    if isinstance(error, UnicodeDecodeError):
        return f"not {error.encoding} text (byte {error.start})"
    return error.strerror or str(error)


def describe_socket_error(error: OSError, host: str, port: int, *, binding: bool) -> str:
    """One line for a failed bind, resolve or send: what happened and what to try."""
    where = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
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


# -- output -----------------------------------------------------------------------


class Output:
    """Where a command's results and messages go.

    Results go to stdout: readable lines, or one JSON object per line with
    ``--json``.  Messages about the work (notes, progress, connection logs)
    go to stderr; ``-q`` silences notes, ``-v`` adds details.
    """

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
        """``-q``: results only."""
        return self.verbosity < 0

    def result(self, record: Mapping[str, Any], text: str | None = None) -> None:
        """A result: ``record`` as one JSON line with ``--json``, else ``text``."""
        if self.json or text is None:
            print(json.dumps(record), file=self.stdout, flush=True)
        else:
            print(text, file=self.stdout, flush=True)

    def line(self, text: str) -> None:
        """A readable result line on stdout (callers check :attr:`json` first)."""
        print(text, file=self.stdout, flush=True)

    def note(self, text: str) -> None:
        """A readable line on stderr (not with ``-q``)."""
        if not self.quiet:
            print(text, file=self.stderr, flush=True)

    def detail(self, text: str) -> None:
        """A line on stderr for ``-v`` only."""
        if self.verbosity > 0:
            print(text, file=self.stderr, flush=True)

    def progress(self, total: int, description: str) -> Progress:
        """A byte-count progress display for long work (rich on a terminal, else lines)."""
        if self.json or self.quiet:
            return Progress(None, total, description, enabled=False)
        return Progress(self.stderr, total, description, enabled=True)


class Progress:
    """Progress of a byte count: a rich bar (rate, ETA) on a terminal, plain lines elsewhere.

    Plain lines come every :attr:`PLAIN_INTERVAL_S`, so short work prints none.
    Works without rich installed (the ``[cli]`` extra): then lines everywhere.
    """

    PLAIN_INTERVAL_S = 5.0

    def __init__(self, stream: TextIO | None, total: int, description: str, *, enabled: bool):
        self._stream = stream
        self._total = total
        self._description = description
        self._enabled = enabled and stream is not None
        self._started = time.monotonic()
        self._last_line = self._started
        self._rich: Any = None
        self._task: Any = None
        if self._enabled and stream is not None and stream.isatty():
            try:
                from rich.console import Console
                from rich.progress import (
                    BarColumn,
                    DownloadColumn,
                    TimeRemainingColumn,
                    TransferSpeedColumn,
                )
                from rich.progress import Progress as RichProgress
            except ImportError:
                pass
            else:
                self._rich = RichProgress(
                    "[progress.description]{task.description}",
                    BarColumn(),
                    DownloadColumn(),
                    TransferSpeedColumn(),
                    TimeRemainingColumn(),
                    console=Console(file=stream),
                    transient=True,
                )
                self._rich.start()
                self._task = self._rich.add_task(description, total=total)

    def update(self, done: int) -> None:
        """Report ``done`` of the total."""
        if not self._enabled:
            return
        if self._rich is not None:
            self._rich.update(self._task, completed=done)
            return
        now = time.monotonic()
        if now - self._last_line < self.PLAIN_INTERVAL_S or done <= 0:
            return
        self._last_line = now
        elapsed = now - self._started
        rate = done / elapsed if elapsed > 0 else 0.0
        line = f"{self._description}: {format_bytes(done)} of {format_bytes(self._total)}"
        if rate > 0:
            line += f", {format_bytes(int(rate))}/s"
            if done < self._total:
                line += f", about {format_seconds((self._total - done) / rate)} left"
        assert self._stream is not None
        print(line, file=self._stream, flush=True)

    def close(self) -> None:
        """Remove the bar (rich) so that the result line stands alone."""
        if self._rich is not None:
            self._rich.stop()
            self._rich = None
        self._enabled = False


def format_bytes(count: int) -> str:
    """``1234567`` -> ``"1.2 MB"`` (decimal units, as rates are quoted)."""
    value = float(count)
    for unit in ("B", "kB", "MB", "GB", "TB"):
        if abs(value) < 1000 or unit == "TB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1000
    raise AssertionError("unreachable")


def format_seconds(seconds: float) -> str:
    """``0.0123`` -> ``"12 ms"``, ``12.6`` -> ``"12.6 s"``, ``754`` -> ``"12 min 34 s"``."""
    if seconds < 1:
        return f"{seconds * 1000:.0f} ms"
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, rest = divmod(int(seconds), 60)
    return f"{minutes} min {rest} s"


# -- running coroutines -------------------------------------------------------------


class _Stopped(Exception):
    """The command's task was cancelled by SIGINT/SIGTERM."""


def _log_loop_error(loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
    """Stray errors of tasks nobody awaited: for ``-v``, never a traceback on the terminal."""
    error = context.get("exception")
    logger.debug("event loop: %s%s", context.get("message"), f": {error!r}" if error else "")


def run_async(
    main: Callable[[], Coroutine[Any, Any, T]],
    *,
    interrupted: Callable[[], str],
    report: Callable[[], Mapping[str, Any]] | None = None,
) -> T:
    """Run ``main()`` on a new event loop; Ctrl-C cancels it and raises one-line CliError.

    SIGINT and SIGTERM cancel the main task, so its ``finally`` blocks and
    ``async with`` exits run (a server closes its connections, so peers learn
    at once); then :class:`CliError` carries ``interrupted()``, the line that
    says what was done, and ``report()`` if given, with exit status 130
    (SIGINT) or 143 (SIGTERM).
    Errors of tasks nobody awaited are logged at debug level instead of
    printed.
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
                pass  # not the main thread, or not a Unix loop: KeyboardInterrupt then
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
            received.append(signal.SIGINT)
    if received:
        raise CliError(
            interrupted(),
            exit_status=128 + received[0],
            report=report() if report is not None else None,
        )
    return value
