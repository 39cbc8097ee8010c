"""``qotp send-files``: send files and directories to a ``qotp receive-files``, resumable."""

from __future__ import annotations

import argparse
import asyncio
import time
from pathlib import Path
from typing import Any

from qotp.cli.common import (
    CliError,
    Command,
    Output,
    add_idle_timeout_option,
    configuration_from,
    describe_socket_error,
    format_bytes,
    parse_count,
    parse_peer_address,
    parse_positive_seconds,
    parse_private_key,
    parse_public_key,
    resolve_peer,
    run_async,
)
from qotp.cli.files import FileProgressDisplay, summary_record
from qotp.keys import KeyPair
from qotp.tool import format_address
from qotp.transfer import (
    DEFAULT_PARALLEL_FILES,
    ManifestError,
    TransferError,
    TransferSummary,
    build_manifest,
    send_files,
)
from qotp.transfer.sender import MAX_PARALLEL_FILES

__all__ = ["COMMAND"]

CLOSE_GRACE_S = 2.0
"""How long we wait for the receiver to acknowledge our last CLOSEs before leaving."""


def _configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "address", type=parse_peer_address, metavar="HOST:PORT", help="the receiver"
    )
    parser.add_argument(
        "paths", type=Path, nargs="+", metavar="PATH", help="files and directories (recursive)"
    )
    parser.add_argument(
        "--pubkey",
        type=parse_public_key,
        metavar="HEX",
        help="the receiver's public key (pubkey= of `qotp receive-files`): only that "
        "receiver is accepted, and the first packet already carries data (0-RTT); "
        "default: take the key the receiver shows (and print it)",
    )
    parser.add_argument(
        "--parallel",
        type=parse_count(1, MAX_PARALLEL_FILES, what="files at once"),
        default=DEFAULT_PARALLEL_FILES,
        help="files in flight at once, each on its own stream",
    )
    parser.add_argument(
        "--seed-hex",
        type=parse_private_key,
        metavar="HEX",
        help="our identity private key (a receiver with --allow-key admits its public key); "
        "default: a fresh one",
    )
    parser.add_argument(
        "--timeout",
        type=parse_positive_seconds,
        default=10.0,
        metavar="SECONDS",
        help="give up when the receiver does not answer the handshake within this long",
    )
    add_idle_timeout_option(parser)


def _run(arguments: argparse.Namespace, output: Output) -> int:
    from qotp.asyncio import PORT_UNREACHABLE, ConnectionClosedError, listen

    host, port = arguments.address
    try:
        manifest = build_manifest(arguments.paths)
    except ManifestError as error:
        raise CliError(str(error)) from None
    for skipped in manifest.skipped:
        output.note(f"skipping {skipped} (a link or a special file)")
    identity: KeyPair = arguments.seed_hex or KeyPair.generate()
    # Failed files: the failure line names the first; -v lists each as it fails.
    display = FileProgressDisplay(
        output,
        verb="sent",
        total_bytes=manifest.total_bytes,
        failure_lines=output.verbosity > 0,
    )
    key_note: list[str] = []  # shown once the transfer succeeded (a failure is one line)
    started = time.monotonic()

    async def main() -> TransferSummary:
        address, local_host = await resolve_peer(host, port)
        try:
            listener = await listen(
                local_host,
                0,
                identity=identity,
                configuration=configuration_from(arguments),
                icmp_errors=True,  # a closed port fails at once, not after --timeout
            )
        except OSError as error:
            raise CliError(describe_socket_error(error, local_host, 0, binding=True)) from None
        async with listener:
            try:
                connection = await listener.dial(
                    address, peer_public_key=arguments.pubkey, timeout=arguments.timeout
                )
            except (TimeoutError, ConnectionError) as error:
                where = format_address(address)
                if isinstance(error, ConnectionClosedError) and error.detail == PORT_UNREACHABLE:
                    message = (
                        f"nothing answers at {where}: {PORT_UNREACHABLE}: "
                        "is `qotp receive-files` running there, on this port?"
                    )
                else:
                    message = (
                        f"no answer from {where} within {arguments.timeout:g} s: "
                        "is `qotp receive-files` running there (and the --pubkey right)?"
                    )
                raise CliError(message) from None
            if arguments.pubkey is None and connection.peer_public_key is not None:
                key_note.append(
                    f"receiver key {connection.peer_public_key.hex()} "
                    "(pin it next time with --pubkey)"
                )
                output.detail(key_note[0])
            try:
                summary = await send_files(
                    connection, manifest, parallel=arguments.parallel, on_event=display
                )
            except TransferError as error:
                raise CliError(str(error)) from None
            finally:
                display.close()
            connection.close()
            try:
                async with asyncio.timeout(CLOSE_GRACE_S):
                    await connection.wait_closed()
            except TimeoutError:
                pass
            return summary

    def interrupted() -> str:
        display.close()
        return (
            f"interrupted after {time.monotonic() - started:.1f} s: {display.files_ok} of "
            f"{len(manifest.files)} files sent; run the same command again to resume"
        )

    def partial_report() -> dict[str, Any]:
        return {"ok": False, "files": display.files_ok, "interrupted": True}

    summary = run_async(
        main, interrupted=interrupted, report=partial_report if output.json else None
    )
    record = summary_record(summary)
    if not summary.ok:
        first = summary.errors[0] if summary.errors else "failed"
        failed = f"{summary.files_failed} of {len(manifest.files)} files failed"
        if summary.files_failed == 1:
            message = f"{failed}: {first}"
        else:
            listed = "" if output.verbosity > 0 else "; -v lists each"
            message = f"{failed} (the first: {first}{listed})"
        raise CliError(
            f"{message}; run the same command again to resume",
            report=record if output.json else None,
        )
    if key_note and output.verbosity <= 0:
        output.note(key_note[0])
    if output.json:
        output.result(record)
    else:
        output.line(
            f"sent {summary.files} files to {format_address(arguments.address)}: "
            f"{format_bytes(summary.bytes_sent)} in {summary.elapsed_s:.2f} s "
            f"({summary.mb_s:.1f} MB/s), {format_bytes(summary.bytes_skipped)} already there, "
            "SHA-256 verified"
        )
    return 0


COMMAND = Command(
    name="send-files",
    help="send files and directories to `qotp receive-files` (verified, resumable)",
    description="Send files and directories (recursively, keeping relative paths) to a "
    "`qotp receive-files`, each file on its own stream, --parallel at once. Every file is "
    "verified by SHA-256 at the receiver. Run the same command again after an interruption: "
    "only what is missing is sent (what the receiver holds is checked chunk by chunk first). "
    "Progress goes to stderr; with --json, stdout gets one summary object: ok, files, "
    "bytes_sent, bytes_skipped, elapsed_s, mb_s.",
    configure=_configure,
    run=_run,
)
