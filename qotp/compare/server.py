"""The server side of one transport, in a process of its own (``python -m qotp.compare.server``).

Its own process, so that its CPU time is its own and it does not share an
interpreter lock with the client; in the servers' namespace when the
comparison runs on the impaired path.  Prints one JSON line with the bound
address when ready; serves until stdin ends.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from collections.abc import Sequence
from pathlib import Path

from qotp.compare.certificates import Credentials
from qotp.compare.transports import server_transport
from qotp.compare.transports.base import TransportSettings
from qotp.compare.workloads import ByteStream, serve_stream

__all__ = ["main"]


async def _handle(stream: ByteStream) -> None:
    try:
        await serve_stream(stream)
    except (ConnectionError, asyncio.IncompleteReadError, ValueError):
        pass  # a client that went away or sent garbage ends only its own stream


async def _serve(arguments: argparse.Namespace) -> int:
    credentials = Credentials(
        ca_file=Path(arguments.ca),
        certificate_file=Path(arguments.cert),
        key_file=Path(arguments.key),
        psk=bytes.fromhex(arguments.psk),
    )
    server = server_transport(arguments.transport, TransportSettings(credentials=credentials))
    address = await server.start(arguments.host, arguments.port, _handle)
    print(json.dumps({"ok": True, "address": list(address)}), flush=True)
    loop = asyncio.get_running_loop()
    stdin_closed = asyncio.Event()
    loop.add_reader(sys.stdin.fileno(), lambda: stdin_closed.set())
    await stdin_closed.wait()
    await server.stop()
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Serve one transport until stdin ends."""
    parser = argparse.ArgumentParser(prog="python -m qotp.compare.server")
    parser.add_argument("--transport", required=True)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--ca", required=True)
    parser.add_argument("--cert", required=True)
    parser.add_argument("--key", required=True)
    parser.add_argument("--psk", required=True, help="hex")
    arguments = parser.parse_args(argv)
    try:
        return asyncio.run(_serve(arguments))
    except KeyboardInterrupt:
        return 130
    except Exception as error:  # noqa: BLE001 - one line for the parent, never a traceback
        print(json.dumps({"ok": False, "error": f"{type(error).__name__}: {error}"}), flush=True)
        return 1


if __name__ == "__main__":
    raise SystemExit(main())
