"""The ``qotp`` command line (``qotp`` / ``python -m qotp``).

One module per command, each a thin layer over a library API that tests and
examples use too.  To add a command: write ``qotp/cli/NAME.py`` defining
``COMMAND = Command(...)`` (see :mod:`qotp.cli.common`) and add ``"NAME"`` to
:data:`COMMAND_MODULES`, one line each.  The shared pieces (strict address,
port, key and count parsing; ``--json``, ``-v``/``-q``; one-line failures;
Ctrl-C) live in :mod:`qotp.cli.common`.

Only this package and the asyncio adapter touch clocks, sockets and the
terminal; optional libraries (rich, dpkt: the ``[cli]`` extra) are imported
where a command needs them, and the CLI works without rich.
"""

from __future__ import annotations

import importlib
import json
import logging
import sys
from collections.abc import Sequence
from importlib.metadata import PackageNotFoundError, version

from qotp.cli.common import EXIT_INTERRUPTED, CliError, Command, Output, Parser

__all__ = ["COMMAND_MODULES", "build_parser", "commands", "main"]

COMMAND_MODULES: tuple[str, ...] = (
    "keygen",
    "serve",
    "send",
    "decrypt",
    "demo",
    "send-files",
    "receive-files",
    "rendezvous",
    "peer",
    "bench",
)
"""Modules of :mod:`qotp.cli` that each define ``COMMAND``, in ``--help`` order."""


def commands() -> list[Command]:
    """Every registered command."""
    found = []
    for name in COMMAND_MODULES:
        module = importlib.import_module(f"qotp.cli.{name.replace('-', '_')}")
        command = module.COMMAND
        assert isinstance(command, Command), name
        found.append(command)
    return found


def _version() -> str:
    try:
        return version("qotp")
    except PackageNotFoundError:
        return "unknown (not installed)"


def build_parser() -> Parser:
    """The parser of the whole command line."""
    parser = Parser(
        prog="qotp",
        description="QOTP tools: a test server and client, keys, capture decryption, a demo, "
        "file transfer, peer to peer through NATs "
        "(wire-compatible with the Go reference qotp v0.2.19).",
    )
    parser.add_argument(
        "--version",
        action="version",
        version=f"qotp {_version()} (QOTP wire format of the Go reference v0.2.19)",
    )
    common = Parser(add_help=False)
    common.add_argument(
        "--json", action="store_true", help="machine-readable output: one JSON object per line"
    )
    loudness = common.add_mutually_exclusive_group()
    loudness.add_argument(
        "-v", "--verbose", action="count", default=0, help="more detail on stderr (-vv: debug log)"
    )
    loudness.add_argument(
        "-q", "--quiet", action="store_true", help="only results and errors, no notes"
    )
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for command in commands():
        sub = subparsers.add_parser(
            command.name,
            help=command.help,
            description=command.description,
            epilog=command.epilog,
            parents=[common],
            formatter_class=parser.formatter_class,
        )
        command.configure(sub)
        sub.set_defaults(command_object=command)
    return parser


def _configure_logging(verbosity: int) -> None:
    if verbosity <= 0:
        return
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(name)s: %(message)s"))
    root = logging.getLogger("qotp")
    root.addHandler(handler)
    root.setLevel(logging.DEBUG if verbosity > 1 else logging.INFO)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``qotp`` command: the exit status."""
    arguments_list = list(sys.argv[1:] if argv is None else argv)
    json_mode = "--json" in arguments_list
    prefix = "qotp"
    try:
        parser = build_parser()
        arguments = parser.parse_args(arguments_list)
        command: Command = arguments.command_object
        prefix = f"qotp {command.name}"
        verbosity = -1 if arguments.quiet else arguments.verbose
        _configure_logging(verbosity)
        output = Output(json_mode=arguments.json, verbosity=verbosity)
        return command.run(arguments, output)
    except CliError as error:
        return _fail(prefix, error, json_mode=json_mode)
    except KeyboardInterrupt:
        return _fail(prefix, CliError("interrupted", exit_status=EXIT_INTERRUPTED), json_mode)
    except BrokenPipeError:
        # `qotp ... | head`: the reader left; nothing more to say to it.
        return 1
    except Exception as error:  # a bug of ours: still one line, the traceback with -v
        logging.getLogger("qotp.cli").debug("internal error", exc_info=True)
        message = f"internal error: {type(error).__name__}: {error}"[:300]
        hint = "please report it (-vv shows the traceback)"
        return _fail(prefix, CliError(f"{message}; {hint}"), json_mode)


def _fail(prefix: str, error: CliError, json_mode: bool) -> int:
    if json_mode:
        record = dict(error.report or {})
        record["ok"] = False
        record["error"] = error.message
        print(json.dumps(record), flush=True)
    else:
        if error.report is not None:
            print(json.dumps(error.report), flush=True)
        print(f"{error.program or prefix}: {error.message}", file=sys.stderr, flush=True)
    return error.exit_status
