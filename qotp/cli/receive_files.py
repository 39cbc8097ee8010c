"""``qotp receive-files``: receive files from any number of senders into one directory."""

from __future__ import annotations

import argparse
import asyncio
import time
from pathlib import Path

from qotp.cli.common import (
    CliError,
    Command,
    Output,
    add_idle_timeout_option,
    configuration_from,
    describe_file_error,
    describe_socket_error,
    format_bytes,
    parse_bind_address,
    parse_private_key,
    parse_public_key,
    run_async,
)
from qotp.cli.files import FileProgressDisplay, file_record
from qotp.keys import KeyPair
from qotp.tool import format_address
from qotp.transfer import (
    FileDone,
    FileReceiver,
    SenderMoved,
    SessionDone,
    SessionStarted,
    TransferEvent,
)

__all__ = ["COMMAND", "read_key_file"]


def _configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--listen",
        type=parse_bind_address,
        default=("0.0.0.0", 4243),
        metavar="HOST:PORT",
        help="address to listen on; port 0 picks a free one",
    )
    parser.add_argument(
        "--dir", type=Path, required=True, metavar="DIR", help="where received files go"
    )
    parser.add_argument(
        "--seed-hex",
        type=parse_private_key,
        metavar="HEX",
        help="identity private key (from `qotp keygen`), so senders can pin our public key "
        "across restarts; default: a fresh one each start",
    )
    parser.add_argument(
        "--allow-key",
        type=parse_public_key,
        action="append",
        metavar="HEX",
        help="admit only senders with this public key (repeat for several); default: any sender",
    )
    parser.add_argument(
        "--allowed-keys",
        type=Path,
        metavar="FILE",
        help="admit only senders whose public key is in FILE (one hex key a line, # comments)",
    )
    parser.add_argument(
        "--once",
        action="store_true",
        help="exit after the first sender's session ends (exit status 1 if a file failed)",
    )
    add_idle_timeout_option(parser)


def read_key_file(path: Path) -> set[bytes]:
    """Public keys from a file: one hex key a line; blank lines and ``#`` comments ignored."""
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as error:
        raise CliError(f"cannot read the key file {path}: {describe_file_error(error)}") from None
    keys = set()
    for number, line in enumerate(lines, 1):
        text = line.split("#", 1)[0].strip()
        if not text:
            continue
        try:
            keys.add(parse_public_key(text))
        except argparse.ArgumentTypeError as error:
            raise CliError(f"{path}:{number}: {error}") from None
    return keys


def _run(arguments: argparse.Namespace, output: Output) -> int:
    from qotp.asyncio import listen

    identity: KeyPair = arguments.seed_hex or KeyPair.generate()
    allowed: set[bytes] | None = None
    if arguments.allow_key or arguments.allowed_keys:
        allowed = set(arguments.allow_key or ())
        if arguments.allowed_keys is not None:
            allowed |= read_key_file(arguments.allowed_keys)
    host, port = arguments.listen
    started = time.monotonic()
    display = FileProgressDisplay(output, verb="received")
    totals = {"files": 0, "failed": 0, "bytes": 0, "senders": 0}

    async def main() -> None:
        done = asyncio.Event()

        def observe(event: TransferEvent) -> None:
            display(event)
            if isinstance(event, SessionStarted):
                totals["senders"] += 1
                who = event.peer_public_key.hex()
                if output.json:
                    output.result(
                        {"event": "session", "peer": who, "files": event.files,
                         "bytes": event.total_bytes}
                    )  # fmt: skip
                else:
                    output.note(
                        f"sender {who}: {event.files} files, {format_bytes(event.total_bytes)}"
                    )
            elif isinstance(event, FileDone):
                totals["files" if event.ok else "failed"] += 1
                totals["bytes"] += event.bytes_sent
                if output.json:
                    output.result(file_record(event, direction="received"))
            elif isinstance(event, SenderMoved):
                who = event.peer_public_key.hex() if event.peer_public_key else "?"
                old, new = format_address(event.old_address), format_address(event.new_address)
                if output.json:
                    output.result({"event": "moved", "peer": who, "from": old, "to": new})
                else:
                    output.note(f"sender {who} moved from {old} to {new}")
            elif isinstance(event, SessionDone):
                if not output.json:
                    output.note(
                        f"sender {event.peer_public_key.hex()} done: {event.files_ok} files "
                        f"received, {event.files_failed} failed, "
                        f"{format_bytes(event.bytes_received)} moved, "
                        f"{format_bytes(event.bytes_skipped)} already here"
                    )
                if arguments.once:
                    done.set()

        try:
            receiver = FileReceiver(arguments.dir, allowed_keys=allowed, on_event=observe)
        except OSError as error:
            raise CliError(
                f"cannot use {arguments.dir} as the receive directory: "
                f"{describe_file_error(error)}: pick a directory we may write into"
            ) from None
        try:
            listener = await listen(
                host,
                port,
                identity=identity,
                configuration=configuration_from(arguments),
            )
        except OSError as error:
            raise CliError(describe_socket_error(error, host, port, binding=True)) from None
        bound = format_address(listener.local_address)
        if output.json:
            output.result(
                {"event": "listening", "address": bound, "pubkey": identity.public_hex,
                 "dir": str(receiver.directory.root)}
            )  # fmt: skip
        else:
            output.line(f"pubkey={identity.public_hex}")
            output.line(f"listening={bound}")
            output.note(
                f"receiving into {receiver.directory.root}; senders: qotp send-files {bound} "
                f"PATH... --pubkey {identity.public_hex}; Ctrl-C stops"
            )
        async with listener:
            serving = asyncio.create_task(receiver.serve(listener))
            stopping = asyncio.create_task(done.wait())
            try:
                await asyncio.wait({serving, stopping}, return_when=asyncio.FIRST_COMPLETED)
            finally:
                serving.cancel()
                stopping.cancel()
                display.close()
                await asyncio.gather(serving, return_exceptions=True)

    def summary() -> str:
        return (
            f"{totals['files']} files received ({format_bytes(totals['bytes'])}) from "
            f"{totals['senders']} senders, {totals['failed']} failed"
        )

    def interrupted() -> str:
        display.close()
        return f"stopped after {time.monotonic() - started:.1f} s: {summary()}"

    run_async(main, interrupted=interrupted)
    if not output.json:
        output.note(summary())
    return 1 if arguments.once and totals["failed"] else 0


COMMAND = Command(
    name="receive-files",
    help="receive files from `qotp send-files` into a directory; Ctrl-C stops",
    description="Serve any number of `qotp send-files` senders into DIR. Prints pubkey=HEX and "
    "listening=HOST:PORT first (with --json: a 'listening' object). Files arrive under "
    "temporary .NAME.qotp-partial names, are checked against the sender's SHA-256 and only "
    "then renamed into place; an interrupted file stays partial and is resumed (after a "
    "chunk-by-chunk check) when the sender runs again. Paths that would leave DIR (absolute, "
    "'..', links pointing out) are refused. With --json, one object per received file.",
    configure=_configure,
    run=_run,
)
