"""``qotp decrypt``: one captured packet, JSON requests on stdin, or a whole capture."""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections import Counter
from typing import TYPE_CHECKING, Any

from qotp.cli.common import (
    CliError,
    Command,
    Output,
    describe_file_error,
    parse_count,
    parse_port,
    parse_secret,
)
from qotp.cli.keylog import KEY_LOG_ENVIRONMENT_VARIABLE
from qotp.decrypt import decrypt_packet, describe_result
from qotp.envelope import DEFAULT_MTU, MAX_EPOCH
from qotp.tool import format_address

if TYPE_CHECKING:
    from qotp.capture import CaptureDecryptor, DecryptedDatagram, KeyLog

__all__ = ["COMMAND"]

MAX_HELD_LINES = 10_000
"""Lines held back while no key-log secret matched; past this they stream (memory)."""


def _configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("packet", nargs="?", help="one datagram (the UDP payload) in hex")
    parser.add_argument(
        "--secret",
        type=parse_secret,
        metavar="HEX",
        help="QOTP_SHARED_SECRET of the key log (InitRcv, Data, ...)",
    )
    parser.add_argument(
        "--secret-id",
        type=parse_secret,
        metavar="HEX",
        help="QOTP_SHARED_SECRET_ID of the key log (InitCryptoSnd)",
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
    capture = parser.add_argument_group("whole captures")
    capture.add_argument(
        "--pcap", metavar="FILE", help="a pcap or pcapng capture: decrypt every QOTP datagram"
    )
    capture.add_argument(
        "--keylog",
        metavar="FILE",
        default=os.environ.get(KEY_LOG_ENVIRONMENT_VARIABLE) or None,
        help=f"the key log of the capture's connections (default: ${KEY_LOG_ENVIRONMENT_VARIABLE})",
    )
    capture.add_argument(
        "--port", type=parse_port, help="only packets to or from this UDP port (default: all)"
    )
    capture.add_argument(
        "--mtu",
        type=parse_count(128, 65_507, what="bytes"),
        default=DEFAULT_MTU,
        help="the receivers' MTU: first packets shorter than it are marked receiver_drops",
    )
    capture.add_argument(
        "--write",
        metavar="OUT.pcapng",
        help="also write the decrypted datagrams as a capture for Wireshark "
        "(with contrib/wireshark/qotp.lua)",
    )


def _run(arguments: argparse.Namespace, output: Output) -> int:
    if arguments.pcap is not None:
        if arguments.packet is not None:
            raise CliError("give PACKET or --pcap, not both")
        return _decrypt_capture(arguments, output)
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


def _decrypt_capture(arguments: argparse.Namespace, output: Output) -> int:
    from qotp.capture import (
        CaptureDecryptor,
        CaptureError,
        KeyLog,
        read_capture,
        write_decrypted,
    )

    if not arguments.keylog:
        raise CliError(
            f"--pcap needs --keylog FILE (or ${KEY_LOG_ENVIRONMENT_VARIABLE}): the key log "
            "that `qotp serve/send --keylog` wrote during the capture"
        )
    if arguments.write:
        _check_writable(arguments.write)  # before the work, not after it
    counts: Counter[str] = Counter()
    failures: Counter[str] = Counter()
    packets: set[int] = set()
    split_packets: set[int] = set()
    written: list[DecryptedDatagram] = []
    first_timestamp: list[float] = []
    # Lines wait until a datagram needed a secret and the key log had it: a key log of
    # other connections is then one line, not one per datagram.
    held: list[tuple[dict[str, Any], str]] | None = []
    try:
        key_log = KeyLog.load(arguments.keylog)
        decryptor = CaptureDecryptor(key_log, mtu=arguments.mtu)
        for datagram in decryptor.decrypt_all(read_capture(arguments.pcap, port=arguments.port)):
            packets.add(datagram.packet.number)
            if datagram.segments > 1:
                split_packets.add(datagram.packet.number)
            counts["datagrams"] += 1
            if datagram.ok:
                counts["decrypted"] += 1
                counts["initiator" if datagram.from_initiator else "responder"] += 1
            else:
                failures[str(datagram.result.get("error", "?")).split(":")[0]] += 1
            if datagram.receiver_drops is not None:
                counts["receiver_drops"] += 1
            if arguments.write:
                written.append(datagram)
            if not first_timestamp:
                first_timestamp.append(datagram.packet.timestamp)
            line = (datagram.as_json(), _capture_line(datagram, first_timestamp[0]))
            if held is None:
                output.result(*line)
                continue
            held.append(line)
            if decryptor.connections_with_secret or len(held) >= MAX_HELD_LINES:
                for record, text in held:
                    output.result(record, text)
                held = None
        if decryptor.connections_without_secret and not decryptor.connections_with_secret:
            raise CliError(_no_matching_secret(arguments.keylog, key_log, decryptor))
        for record, text in held or ():
            output.result(record, text)
        if arguments.write:
            write_decrypted(arguments.write, written)
    except CaptureError as error:
        raise CliError(str(error)) from None
    total = counts["datagrams"]
    if not total:
        raise CliError(
            f"no UDP datagrams in {arguments.pcap}"
            + (f" to or from port {arguments.port}" if arguments.port else "")
            + ": was the capture taken on the right interface (tcpdump -i lo for loopback)?"
        )
    share = 100.0 * counts["decrypted"] / total
    summary = (
        f"{total} datagrams in {len(packets)} packets ({len(split_packets)} packets held "
        f"several, coalesced by GSO/GRO): {counts['decrypted']} decrypted ({share:.1f} %), "
        f"{counts['initiator']} from the initiator, {counts['responder']} from the responder"
    )
    if counts["receiver_drops"]:
        summary += f"; {counts['receiver_drops']} a receiver would drop"
    if failures:
        summary += "; not decrypted: " + ", ".join(f"{n} {why}" for why, n in failures.items())
    if arguments.write:
        summary += f"; written to {arguments.write}"
    output.note(summary)
    if not counts["decrypted"]:
        raise CliError(
            f"none of the {total} datagrams decrypted: is {arguments.keylog} the key log "
            "of this capture's connections?"
        )
    return 0


def _check_writable(path: str) -> None:
    """Fail now if ``--write`` cannot be written, leaving nothing behind."""
    existed = os.path.lexists(path)
    try:
        with open(path, "ab"):
            pass
        if not existed:
            os.unlink(path)
    except OSError as error:
        raise CliError(
            f"cannot write {path}: {describe_file_error(error)}: check --write"
        ) from None


def _no_matching_secret(path: str, key_log: KeyLog, decryptor: CaptureDecryptor) -> str:
    """The one line for a key log that holds no secret of the capture's connections."""
    missing = sorted(decryptor.connections_without_secret)
    names = ", ".join(f"{connection_id:x}" for connection_id in missing[:3])
    if len(missing) > 3:
        names += ", ..."
    held = len(key_log.shared_secrets) + len(key_log.shared_secret_ids)
    contents = (
        f"it holds {held} secret{'s' if held != 1 else ''} of other connections"
        if held
        else "it holds no QOTP secret lines at all"
    )
    many = "the connection" if len(missing) == 1 else f"any of the {len(missing)} connections"
    return (
        f"the key log {path} has no secret for {many} in the capture ({names}; {contents}): "
        "give the key log written while this capture was taken (`qotp serve/send --keylog "
        f"FILE` or ${KEY_LOG_ENVIRONMENT_VARIABLE})"
    )


def _capture_line(datagram: DecryptedDatagram, start: float) -> str:
    packet = datagram.packet
    where = f"#{packet.number}"
    if datagram.segments > 1:
        where += f".{datagram.segment + 1}/{datagram.segments}"
    direction = {True: "initiator", False: "responder", None: "?"}[datagram.from_initiator]
    line = (
        f"{where} {packet.timestamp - start:.6f} {format_address(packet.source)} -> "
        f"{format_address(packet.destination)} {direction}: {describe_result(datagram.result)}"
    )
    if datagram.receiver_drops is not None:
        line += f" [a receiver drops it: {datagram.receiver_drops}]"
    return line


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
    description="Decrypt a whole capture (--pcap FILE --keylog FILE: one line per datagram, "
    "directions worked out, GSO-coalesced datagrams split; --write OUT.pcapng for "
    "Wireshark), one captured datagram (PACKET in hex with --secret), or, without "
    "either, JSON requests (packet, secret, secret_id, epoch, from_initiator) one per "
    "stdin line, answered with one JSON line each.",
    configure=_configure,
    run=_run,
)
