"""``--keylog FILE`` (or ``QOTP_KEYLOGFILE``): the reference's key-log lines, for decryption."""

from __future__ import annotations

import argparse
import os
from collections.abc import Callable

from qotp.cli.common import CliError

__all__ = ["KEY_LOG_ENVIRONMENT_VARIABLE", "add_key_log_option", "key_log_writer"]

KEY_LOG_ENVIRONMENT_VARIABLE = "QOTP_KEYLOGFILE"
"""When set, ``serve`` and ``send`` append key-log lines to the file it names."""


def add_key_log_option(parser: argparse.ArgumentParser) -> None:
    """``--keylog FILE``, defaulting to ``$QOTP_KEYLOGFILE``."""
    parser.add_argument(
        "--keylog",
        metavar="FILE",
        default=os.environ.get(KEY_LOG_ENVIRONMENT_VARIABLE) or None,
        help=f"append the secrets of every connection to FILE (default: "
        f"${KEY_LOG_ENVIRONMENT_VARIABLE} if set); `qotp decrypt` and Wireshark read it",
    )


def key_log_writer(path: str | None) -> Callable[[str], None] | None:
    """A function that appends one key-log line and flushes, or None without a path."""
    if not path:
        return None
    try:
        handle = open(path, "a", encoding="ascii")  # noqa: SIM115 - lives as long as the process
    except OSError as error:
        raise CliError(f"cannot write the key log {path}: {error.strerror}") from None

    def write(line: str) -> None:
        handle.write(line)
        handle.flush()

    return write
