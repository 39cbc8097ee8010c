"""Command-line interface: ``qotp`` / ``python -m qotp``.

A thin layer over the public API; the only place (with the asyncio adapter)
that reads clocks, environment variables or sockets.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
from collections.abc import Callable, Sequence
from typing import Any

from qotp.decrypt import decrypt_packet
from qotp.keys import KeyPair

__all__ = ["main"]


def _command_keygen(arguments: argparse.Namespace) -> int:
    pair = KeyPair.generate()
    print(json.dumps({"private_key": pair.private_bytes.hex(), "public_key": pair.public_hex}))
    return 0


def _command_decrypt(arguments: argparse.Namespace) -> int:
    if arguments.packet is not None:
        try:
            packet = bytes.fromhex(arguments.packet.strip().removeprefix("0x"))
        except ValueError:
            print(json.dumps({"ok": False, "error": "packet is not hex"}))
            return 1
        result = decrypt_packet(
            packet,
            secret=arguments.secret,
            secret_id=arguments.secret_id,
            epoch=arguments.epoch,
            from_initiator=arguments.from_initiator,
        )
        print(json.dumps(result))
        return 0 if result["ok"] else 1
    # One JSON request per line on stdin, one JSON answer per line on stdout.
    for line in sys.stdin:
        if not line.strip():
            continue
        print(json.dumps(_decrypt_request(line)), flush=True)
    return 0


def _decrypt_request(line: str) -> dict[str, Any]:
    try:
        request = json.loads(line)
        if not isinstance(request, dict):
            raise ValueError("a request is a JSON object")
        packet = bytes.fromhex(str(request["packet"]).strip().removeprefix("0x"))
        epoch = request.get("epoch") or 0
        if not isinstance(epoch, int) or isinstance(epoch, bool):
            raise ValueError("epoch must be an integer")
    except (ValueError, KeyError, TypeError) as error:
        return {"ok": False, "error": f"bad request: {error}"}
    from_initiator = request.get("from_initiator", False)
    if not isinstance(from_initiator, bool):
        return {"ok": False, "error": "bad request: from_initiator must be true or false"}
    secret = request.get("secret")
    secret_id = request.get("secret_id")
    if not isinstance(secret, str | None) or not isinstance(secret_id, str | None):
        return {"ok": False, "error": "bad request: secrets are hex strings"}
    return decrypt_packet(
        packet, secret=secret, secret_id=secret_id, epoch=epoch, from_initiator=from_initiator
    )


def _command_demo(arguments: argparse.Namespace) -> int:
    from qotp.demo import run_demo

    return run_demo()


KEY_LOG_ENVIRONMENT_VARIABLE = "QOTP_KEYLOGFILE"
"""When set, ``serve`` and ``send`` append key-log lines to the file it names."""


def _key_log_writer() -> Callable[[str], None] | None:
    path = os.environ.get(KEY_LOG_ENVIRONMENT_VARIABLE)
    if not path:
        return None
    handle = open(path, "a", encoding="ascii")  # noqa: SIM115 - lives as long as the process

    def write(line: str) -> None:
        handle.write(line)
        handle.flush()

    return write


def _parse_address(text: str) -> tuple[str, int]:
    host, _, port = text.rpartition(":")
    if not host or not port.isdigit():
        raise argparse.ArgumentTypeError(f"expected HOST:PORT, got {text!r}")
    return (host.strip("[]"), int(port))


def _command_serve(arguments: argparse.Namespace) -> int:
    from qotp.asyncio import listen
    from qotp.tool import serve_connection

    identity = KeyPair.from_hex(arguments.seed_hex) if arguments.seed_hex else KeyPair.generate()

    async def main() -> None:
        host, port = arguments.listen
        listener = await listen(host, port, identity=identity, key_log=_key_log_writer())
        print(f"pubkey={listener.public_key.hex()}", flush=True)
        print(f"listening={listener.local_address[0]}:{listener.local_address[1]}", flush=True)
        tasks = set()
        async with listener:
            async for connection in listener:
                task = asyncio.create_task(serve_connection(connection, arguments.mode))
                tasks.add(task)
                task.add_done_callback(tasks.discard)

    try:
        asyncio.run(main())
    except KeyboardInterrupt:
        pass
    return 0


def _command_send(arguments: argparse.Namespace) -> int:
    from qotp.asyncio import listen
    from qotp.tool import run_client

    peer_key = bytes.fromhex(arguments.pubkey.removeprefix("0x")) if arguments.pubkey else None

    async def main() -> dict[str, Any]:
        listener = await listen("0.0.0.0", 0, key_log=_key_log_writer())
        async with listener:
            result = await run_client(
                listener,
                arguments.address,
                streams=arguments.streams,
                size=arguments.bytes,
                mode=arguments.mode,
                peer_public_key=peer_key,
                timeout=arguments.timeout,
            )
            # Let the last ACKs and CLOSEs leave before the socket goes.
            await asyncio.sleep(0.05)
        report: dict[str, Any] = {
            "ok": result.ok,
            "streams": result.streams,
            "total_bytes": result.total_bytes,
            "elapsed_s": round(result.elapsed_s, 6),
            "mb_s": round(result.mb_s, 3),
        }
        if result.error:
            report["error"] = result.error
        return report

    report = asyncio.run(main())
    print(json.dumps(report), flush=True)
    return 0 if report["ok"] else 1


def _build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="qotp", description="QOTP tools (wire-compatible with qotp v0.2.19)"
    )
    commands = parser.add_subparsers(dest="command", required=True)

    keygen = commands.add_parser("keygen", help="generate an identity key pair (JSON)")
    keygen.set_defaults(handler=_command_keygen)

    decrypt = commands.add_parser(
        "decrypt",
        help="decrypt a captured packet with key-log secrets (JSON out)",
        description="Without PACKET, reads JSON requests (packet, secret, secret_id, epoch, "
        "from_initiator) line by line on stdin and answers one JSON line each.",
    )
    decrypt.add_argument("packet", nargs="?", help="the datagram in hex")
    decrypt.add_argument("--secret", help="QOTP_SHARED_SECRET (InitRcv, InitCryptoRcv, Data)")
    decrypt.add_argument("--secret-id", help="QOTP_SHARED_SECRET_ID (InitCryptoSnd)")
    decrypt.add_argument("--epoch", type=int, default=0, help="receiver epoch to try first")
    decrypt.add_argument(
        "--from-initiator", action="store_true", help="the packet was sent by the dialing side"
    )
    decrypt.set_defaults(handler=_command_decrypt)

    serve = commands.add_parser("serve", help="answer the test protocol (digest or echo)")
    serve.add_argument("--listen", type=_parse_address, default=("127.0.0.1", 4242))
    serve.add_argument("--seed-hex", help="identity private key (64 hex digits)")
    serve.add_argument("--mode", choices=("digest", "echo"), default="digest")
    serve.set_defaults(handler=_command_serve)

    send = commands.add_parser(
        "send", help="run the test protocol against a server, verify, report"
    )
    send.add_argument("address", type=_parse_address, help="HOST:PORT")
    send.add_argument("--streams", type=int, default=1)
    send.add_argument("--bytes", type=int, default=1024, help="bytes per stream")
    send.add_argument("--mode", choices=("digest", "echo"), default="digest")
    send.add_argument("--pubkey", help="the server's public key: dial with 0-RTT")
    send.add_argument("--timeout", type=float, default=120.0)
    send.set_defaults(handler=_command_send)

    demo = commands.add_parser("demo", help="loopback demo")
    demo.set_defaults(handler=_command_demo)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``qotp`` command."""
    arguments = _build_parser().parse_args(argv)
    handler = arguments.handler
    result: int = handler(arguments)
    return result


if __name__ == "__main__":
    sys.exit(main())
