"""``qotp demo``: two endpoints on loopback, both handshakes, verified streams."""

from __future__ import annotations

import argparse

from qotp.cli.common import Command, Output, run_async

__all__ = ["COMMAND"]


def _configure(parser: argparse.ArgumentParser) -> None:
    del parser


def _run(arguments: argparse.Namespace, output: Output) -> int:
    from qotp.demo import run_demo_async

    ok = run_async(
        lambda: run_demo_async(output.result), interrupted=lambda: "interrupted; demo not finished"
    )
    output.result({"ok": ok}, "ok" if ok else "FAILED")
    return 0 if ok else 1


COMMAND = Command(
    name="demo",
    help="loopback demo: both handshakes, several verified streams",
    description="Starts a server and a client on 127.0.0.1, runs an in-band (1-RTT, "
    "forward-secret) connection with 4 echoed streams and a 0-RTT request, and verifies "
    "every byte.",
    configure=_configure,
    run=_run,
)
