"""The ``dtls`` command: the parser of the whole command line, and ``main``."""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Sequence
from importlib.metadata import PackageNotFoundError, version

from ..config import IMPLEMENTED_VERSIONS
from . import client, server
from .common import EXIT_INTERRUPTED, CliError, Output, Parser, list_ciphers

__all__ = ["build_parser", "main"]


def _version() -> str:
    try:
        return version("qotp")
    except PackageNotFoundError:
        return "unknown (not installed)"


def build_parser() -> Parser:
    """The parser of the whole command line."""
    versions = ", ".join(v.label for v in IMPLEMENTED_VERSIONS)
    parser = Parser(
        prog="dtls",
        description="A DTLS server and client in pure Python, like openssl s_server/s_client "
        f"-dtls ({versions}).",
        epilog="Failures print one line naming the likely cause and exit non-zero "
        "(2: usage, 1: everything else, 130: Ctrl-C).",
    )
    parser.add_argument("--version", action="version", version=f"dtls {_version()} ({versions})")
    parser.add_argument(
        "--list-ciphers",
        action="store_true",
        help="list the cipher suites: hex code, IANA name, OpenSSL name",
    )
    common = Parser(add_help=False)
    common.add_argument(
        "--json", action="store_true", help="machine-readable output: one JSON object per line"
    )
    loudness = common.add_mutually_exclusive_group()
    loudness.add_argument(
        "-v",
        "--verbose",
        action="count",
        default=0,
        help="print handshake messages, alerts and retransmissions as they go (-vv: debug log)",
    )
    loudness.add_argument("-q", "--quiet", action="store_true", help="results and errors only")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, module, help_text in (
        ("server", server, "run a DTLS server (like openssl s_server -dtls)"),
        ("client", client, "connect to a DTLS server (like openssl s_client -dtls)"),
    ):
        sub = commands.add_parser(
            name,
            help=help_text,
            description=(module.__doc__ or "").strip(),
            parents=[common],
            formatter_class=parser.formatter_class,
        )
        module.configure(sub)
        sub.set_defaults(run=module.run)
    return parser


class _MessageFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        return record.getMessage()


def _configure_logging(verbosity: int, json_mode: bool) -> None:
    if verbosity <= 0:
        return
    handler = logging.StreamHandler(sys.stderr)
    if verbosity == 1:
        handler.setFormatter(_MessageFormatter())
        messages = logging.getLogger("dtls.messages")
        messages.addHandler(handler)
        messages.setLevel(logging.INFO)
        messages.propagate = False
        return
    handler.setFormatter(logging.Formatter("%(name)s: %(message)s"))
    root = logging.getLogger("dtls")
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``dtls``: the exit status."""
    arguments_list = list(sys.argv[1:] if argv is None else argv)
    json_mode = "--json" in arguments_list
    named = [word for word in arguments_list if word in ("server", "client")]
    prefix = f"dtls {named[0]}" if named else "dtls"
    try:
        parser = build_parser()
        arguments = parser.parse_args(arguments_list)
        if arguments.list_ciphers:
            for code, iana, openssl in list_ciphers():
                if json_mode:
                    print(json.dumps({"code": code, "iana": iana, "openssl": openssl}))
                else:
                    print(f"{code}  {iana:<48} {openssl}")
            return 0
        if arguments.command is None:
            raise CliError("name a command: server or client (see dtls --help)", exit_status=2)
        prefix = f"dtls {arguments.command}"
        verbosity = -1 if arguments.quiet else arguments.verbose
        _configure_logging(verbosity, arguments.json)
        output = Output(json_mode=arguments.json, verbosity=verbosity)
        status: int = arguments.run(arguments, output)
        return status
    except CliError as error:
        return _fail(prefix, error, json_mode)
    except KeyboardInterrupt:
        return _fail(prefix, CliError("interrupted", exit_status=EXIT_INTERRUPTED), json_mode)
    except BrokenPipeError:
        return 1  # `dtls ... | head`: the reader left
    except Exception as error:  # a bug of ours: still one line, the traceback with -vv
        logging.getLogger("dtls.cli").debug("internal error", exc_info=True)
        message = f"internal error: {type(error).__name__}: {error}"[:300]
        return _fail(prefix, CliError(f"{message}; please report it (-vv shows more)"), json_mode)


def _fail(prefix: str, error: CliError, json_mode: bool) -> int:
    if json_mode:
        print(json.dumps({"ok": False, "error": error.message}), flush=True)
    else:
        print(f"{prefix}: {error.message}", file=sys.stderr, flush=True)
    return error.exit_status
