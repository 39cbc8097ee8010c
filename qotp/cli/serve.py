"""``qotp serve``: answer the test protocol (digest or echo) and log every connection."""

from __future__ import annotations

import argparse
import asyncio
import time

from qotp.cli.common import (
    CliError,
    Command,
    Output,
    add_idle_timeout_option,
    configuration_from,
    describe_socket_error,
    parse_bind_address,
    parse_private_key,
    run_async,
)
from qotp.cli.crypto import add_crypto_options, crypto_layer
from qotp.cli.keylog import add_key_log_option, key_log_writer
from qotp.events import TerminationReason
from qotp.keys import KeyPair
from qotp.tool import ConnectionReport, describe_close_reason, format_address, serve_connection

__all__ = ["COMMAND"]

STOP_GRACE_S = 1.0
"""How long a stopping server waits for its connections' handlers to report."""
STOP_LINGER_S = 2.0
"""How long a stopping server resends the CLOSEs its peers have not acknowledged."""


def _configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--listen",
        type=parse_bind_address,
        default=("127.0.0.1", 4242),
        metavar="HOST:PORT",
        help="address to listen on; port 0 picks a free one ([::]:PORT for IPv6)",
    )
    parser.add_argument(
        "--seed-hex",
        type=parse_private_key,
        metavar="HEX",
        help="identity private key, 64 hex digits (seed-hex from `qotp keygen`); "
        "default: a fresh one each start",
    )
    parser.add_argument(
        "--mode",
        choices=("digest", "echo"),
        default="digest",
        help="digest: read a u64 length and that many bytes per stream, answer "
        "'sha256=HEX bytes=N'; echo: send every byte back",
    )
    add_idle_timeout_option(
        parser,
        help_text="a connection that hears nothing for this long ends (QOTP has no connection "
        "close: a client that finished is logged after this long)",
    )
    add_key_log_option(parser)
    add_crypto_options(parser, server=True)


def _log_connection(output: Output, report: ConnectionReport) -> None:
    if output.json:
        output.result(report.as_json())
        return
    key = report.peer_public_key.hex() if report.peer_public_key is not None else "unknown"
    how = describe_close_reason(report.reason, report.detail)
    if (
        report.reason is TerminationReason.IDLE_TIMEOUT
        and report.streams
        and report.streams_completed == report.streams
    ):
        # QOTP has no connection close: a client that is done goes quiet.
        how = "all streams done, then idle timeout (the client went quiet)"
    output.note(
        f"{format_address(report.address)} key {key}: {_plural(report.streams, 'stream')} "
        f"({report.streams_completed} completed), "
        f"{report.bytes_received} bytes in, {report.bytes_sent} bytes out, "
        f"{report.duration_s:.2f} s, {how}"
    )


def _run(arguments: argparse.Namespace, output: Output) -> int:
    from qotp.asyncio import listen

    if arguments.crypto != "native" and arguments.seed_hex is not None:
        raise CliError(
            "--seed-hex is the native identity; with --crypto dtls use --cert/--key or --psk"
        )
    crypto = crypto_layer(arguments, server=True)
    identity: KeyPair = arguments.seed_hex or KeyPair.generate()
    host, port = arguments.listen
    started = time.monotonic()
    served: list[ConnectionReport] = []
    open_connections: set[asyncio.Task[ConnectionReport]] = set()
    closed_at_stop: list[int] = []

    async def main() -> None:
        try:
            listener = await listen(
                host,
                port,
                identity=identity if crypto is None else None,
                configuration=configuration_from(arguments),
                key_log=key_log_writer(arguments.keylog),
                crypto=crypto,
            )
        except OSError as error:
            raise CliError(describe_socket_error(error, host, port, binding=True)) from None
        bound = format_address(listener.local_address)
        if output.json:
            output.result(
                {"event": "listening", "address": bound,
                 "pubkey": identity.public_hex if crypto is None else None,
                 "mode": arguments.mode, "crypto": arguments.crypto}
            )  # fmt: skip
        else:
            # Scripts (and the interop harness) read these two lines; with DTLS the
            # native public key means nothing, so only the address is printed.
            if crypto is None:
                output.line(f"pubkey={identity.public_hex}")
            output.line(f"listening={bound}")
            output.note(f"serving {arguments.mode} mode on {bound}; Ctrl-C stops")

        def finished(task: asyncio.Task[ConnectionReport]) -> None:
            open_connections.discard(task)
            if not task.cancelled() and task.exception() is None:
                served.append(task.result())
                _log_connection(output, task.result())

        async with listener:
            try:
                async for connection in listener:
                    output.detail(f"{format_address(connection.address)} connected")
                    task = asyncio.create_task(serve_connection(connection, arguments.mode))
                    open_connections.add(task)
                    task.add_done_callback(finished)
            finally:
                # Stopping: every connection's streams get their CLOSE now, so peers
                # learn at once; then each connection is logged like any other.
                closed_at_stop.append(len(open_connections))
                # A busy peer may drop a CLOSE among our ACKs: resend for a while.
                await listener.aclose(linger=STOP_LINGER_S)
                if open_connections:
                    await asyncio.wait(open_connections, timeout=STOP_GRACE_S)

    def interrupted() -> str:
        closed = closed_at_stop[0] if closed_at_stop else 0
        line = (
            f"stopped after {time.monotonic() - started:.1f} s: "
            f"{_plural(len(served), 'connection')} logged"
        )
        if closed:
            line += f", {closed} of them still open (closed now, so their peers know)"
        return line

    run_async(main, interrupted=interrupted)
    return 0


def _plural(count: int, noun: str) -> str:
    return f"{count} {noun}" if count == 1 else f"{count} {noun}s"


COMMAND = Command(
    name="serve",
    help="answer the test protocol (digest or echo); Ctrl-C stops",
    description="Listen for QOTP connections and answer the test protocol on every stream "
    "a client opens. Prints pubkey=HEX and listening=HOST:PORT first (with --json: a "
    "'listening' object), then logs each connection on stderr once it ends: peer, its "
    "key, streams, bytes, duration and why it ended.",
    configure=_configure,
    run=_run,
)
