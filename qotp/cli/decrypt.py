"""``qotp decrypt``: one captured packet, JSON requests on stdin, or a whole capture."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from qotp.cli.common import CliError, Command, Output, parse_count
from qotp.decrypt import decrypt_packet, describe_result
from qotp.envelope import MAX_EPOCH

__all__ = ["COMMAND"]


def _configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("packet", nargs="?", help="one datagram (the UDP payload) in hex")
    parser.add_argument(
        "--secret", metavar="HEX", help="QOTP_SHARED_SECRET of the key log (InitRcv, Data, ...)"
    )
    parser.add_argument(
        "--secret-id", metavar="HEX", help="QOTP_SHARED_SECRET_ID of the key log (InitCryptoSnd)"
    )
    parser.add_argument(
        "--epoch",
        type=parse_count(0, MAX_EPOCH, what="epoch"),
        default=0,
        help="receiver epoch to try first",
    )
    parser.add_argument(
        "--from-initiator",
        action="store_true",
        help="the packet was sent by the dialing side (matters for Data only)",
    )


def _run(arguments: argparse.Namespace, output: Output) -> int:
    if arguments.packet is None:
        return _serve_requests(output)
    try:
        packet = bytes.fromhex(arguments.packet.strip().removeprefix("0x"))
    except ValueError:
        raise CliError("PACKET is not hex: give the UDP payload as hex digits") from None
    result = decrypt_packet(
        packet,
        secret=arguments.secret,
        secret_id=arguments.secret_id,
        epoch=arguments.epoch,
        from_initiator=arguments.from_initiator,
    )
    if not result["ok"]:
        raise CliError(_with_hint(result["error"], arguments))
    output.result(result, describe_result(result))
    return 0


def _with_hint(error: str, arguments: argparse.Namespace) -> str:
    if "authentication" not in error and "decrypt" not in error:
        return error
    flip = "without --from-initiator" if arguments.from_initiator else "with --from-initiator"
    return (
        f"{error}: a Data packet from the other side needs the opposite direction (try "
        f"{flip}); else check that --secret is this connection's QOTP_SHARED_SECRET"
    )


def _serve_requests(output: Output) -> int:
    """One JSON request per stdin line, one JSON answer per line (a machine interface)."""
    del output
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


COMMAND = Command(
    name="decrypt",
    help="decrypt captured packets with key-log secrets",
    description="Decrypt one captured QOTP datagram (PACKET in hex with --secret), or, "
    "without PACKET, answer JSON requests (packet, secret, secret_id, epoch, "
    "from_initiator) one per stdin line with one JSON line each.",
    configure=_configure,
    run=_run,
)
