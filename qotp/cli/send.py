"""``qotp send``: run the test protocol against a server, verify every byte, report."""

from __future__ import annotations

import argparse
import asyncio
from typing import Any

from qotp.cli.common import (
    MAX_BYTES_PER_STREAM,
    MAX_STREAMS,
    CliError,
    Command,
    Output,
    describe_socket_error,
    format_bytes,
    parse_count,
    parse_peer_address,
    parse_positive_seconds,
    parse_public_key,
    resolve_peer,
    run_async,
)
from qotp.cli.crypto import add_crypto_options, crypto_layer
from qotp.cli.keylog import add_key_log_option, key_log_writer
from qotp.tool import ClientResult, TransferProgress, format_address, run_client

__all__ = ["COMMAND"]


def _configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("address", type=parse_peer_address, metavar="HOST:PORT", help="the server")
    parser.add_argument(
        "--streams",
        type=parse_count(1, MAX_STREAMS, what="streams"),
        default=1,
        help=f"streams on the connection, 1 to {MAX_STREAMS}",
    )
    parser.add_argument(
        "--bytes",
        type=parse_count(0, MAX_BYTES_PER_STREAM, what="bytes"),
        default=1024,
        help="bytes per stream",
    )
    parser.add_argument(
        "--mode",
        choices=("digest", "echo"),
        default="digest",
        help="digest: send the bytes, the server answers their SHA-256; echo: the server "
        "sends them back and every byte is compared. Must match the server's --mode",
    )
    parser.add_argument(
        "--pubkey",
        type=parse_public_key,
        metavar="HEX",
        help="the server's public key (pubkey= of `qotp serve`): 0-RTT, data in the "
        "first packet; default: in-band handshake (1-RTT, forward secret)",
    )
    parser.add_argument(
        "--timeout",
        type=parse_positive_seconds,
        default=120.0,
        metavar="SECONDS",
        help="give up after this long (handshake included)",
    )
    add_key_log_option(parser)
    add_crypto_options(parser, server=False)


def _run(arguments: argparse.Namespace, output: Output) -> int:
    from qotp.asyncio import listen

    host, port = arguments.address
    if arguments.crypto != "native" and arguments.pubkey is not None:
        raise CliError("--pubkey (0-RTT) is native QOTP only; --crypto dtls always handshakes")
    crypto = crypto_layer(arguments, server=False, server_host=host)
    progress = TransferProgress(arguments.streams, arguments.bytes)
    bar = output.progress(progress.total_bytes, f"{arguments.mode} to {host}:{port}")

    async def watch() -> None:
        while True:
            bar.update(
                progress.bytes_returned if arguments.mode == "echo" else progress.bytes_written
            )
            await asyncio.sleep(0.2)

    async def main() -> ClientResult:
        address, local_host = await resolve_peer(host, port)
        try:
            listener = await listen(
                local_host,
                0,
                key_log=key_log_writer(arguments.keylog),
                crypto=crypto,
                icmp_errors=True,  # a closed port fails at once, not after --timeout
            )
        except OSError as error:
            raise CliError(describe_socket_error(error, local_host, 0, binding=True)) from None
        watching = asyncio.create_task(watch())
        try:
            async with listener:
                result = await run_client(
                    listener,
                    address,
                    streams=arguments.streams,
                    size=arguments.bytes,
                    mode=arguments.mode,
                    peer_public_key=arguments.pubkey,
                    timeout=arguments.timeout,
                    progress=progress,
                )
        finally:
            watching.cancel()
            bar.close()
        return result

    def interrupted() -> str:
        return f"interrupted after {progress.elapsed_s():.1f} s: {progress.summary()}"

    def partial_report() -> dict[str, Any]:
        bar.close()
        return ClientResult(
            False,
            progress.streams,
            progress.verified_bytes,
            progress.elapsed_s(),
            interrupted(),
            None,
            progress.bytes_written,
        ).report()

    result = run_async(main, interrupted=interrupted, report=partial_report)
    # The single JSON result line on stdout, in every mode: scripts and the interop
    # harness parse it.  The readable line goes to stderr.
    report: dict[str, Any] = result.report()
    if not result.ok:
        raise CliError(result.error or "failed", report=report)
    output.result(report)
    output.note(
        f"{result.streams} streams x {format_bytes(arguments.bytes)} {arguments.mode} to "
        f"{format_address(arguments.address)} verified in {result.elapsed_s:.2f} s, "
        f"{result.mb_s:.1f} MB/s"
    )
    return 0


COMMAND = Command(
    name="send",
    help="run the test protocol against a server, verify, report",
    description="Open one connection to a `qotp serve` (or the Go interop peer), run the "
    "test protocol on --streams streams of --bytes bytes each, verify every byte and print "
    'one JSON line on stdout: {"ok", "streams", "total_bytes", "elapsed_s", "mb_s"} (plus '
    '"error" on failure). total_bytes and mb_s count verified bytes only. A readable '
    "summary, or the reason of a failure, goes to stderr.",
    configure=_configure,
    run=_run,
)
