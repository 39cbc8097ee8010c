"""``dtls server --listen HOST:PORT``: like ``openssl s_server -dtls``.

Prints every datagram a peer sends to stdout (or sends it back with
``--echo``), answers a peer's close_notify with its own, and logs each peer
on stderr: who, what was negotiated, datagrams each way, how it ended.  A
failed handshake is one line too (who, the alert, what to check), at most 10
per 10 s, then one line counting the others.  Ctrl-C sends close_notify to
every peer, then exits with status 130.
"""

from __future__ import annotations

import argparse
import asyncio
import time
from collections.abc import Callable
from typing import Any

from .. import asyncio as dtls_asyncio
from ..config import DTLSConfiguration, ServerCertificates
from ..errors import AlertDescription, DTLSError, LocalProtocolError
from ..events import HandshakeFailed
from .addresses import parse_bind_address
from .common import (
    CliError,
    Output,
    describe_socket_error,
    format_address,
    load_chain_and_key,
    load_trust_anchors,
    run_async,
    versions_from,
)
from .options import add_common_options, common_configuration, report_connected, write_key_log

__all__ = ["FAILURE_LINES_PER_WINDOW", "FAILURE_WINDOW_SECONDS", "FailureLog", "configure", "run"]

#: Failed handshakes get one line each, at most this many per window; the rest are counted
#: and summed up in one line when the window ends, so a flood cannot fill the terminal.
FAILURE_LINES_PER_WINDOW = 10
FAILURE_WINDOW_SECONDS = 10.0


def _cid_length(text: str) -> int:
    if not text.isdigit() or not 0 <= int(text) <= 255:
        raise argparse.ArgumentTypeError(f"--cid {text!r}: use 0 (off) to 255 bytes")
    return int(text)


def _count(text: str) -> int:
    if not text.isdigit():
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number (0: no limit)")
    return int(text)


def configure(parser: argparse.ArgumentParser) -> None:
    """The server's options."""
    parser.add_argument(
        "--listen",
        "--bind",
        dest="listen",
        type=parse_bind_address,
        required=True,
        metavar="HOST:PORT",
        help="address to listen on (port 0: any free port, printed at start)",
    )
    parser.add_argument("--cert", help="PEM certificate chain")
    parser.add_argument("--key", help="PEM private key (default: --cert)")
    parser.add_argument("--cafile", help="require client certificates issued by these CAs (PEM)")
    parser.add_argument(
        "--sni",
        action="append",
        default=[],
        metavar="NAME=CERT[,KEY]",
        help="another certificate for a server name (repeatable)",
    )
    parser.add_argument("--echo", action="store_true", help="send every datagram back")
    parser.add_argument("--psk-hint", default="", help="PSK identity hint")
    parser.add_argument(
        "--psk-identity",
        default="",
        help="with --psk: the only identity accepted (default: any; the one a client "
        "claims is printed, unchecked)",
    )
    parser.add_argument(
        "--naccept", type=_count, default=0, metavar="N", help="exit after N peers (0: never)"
    )
    parser.add_argument(
        "--cid",
        type=_cid_length,
        default=0,
        metavar="BYTES",
        help="connection-id bytes to hand out",
    )
    parser.add_argument(
        "--no-cookie",
        action="store_true",
        help="skip the HelloVerifyRequest exchange (no address check before the handshake: "
        "only for trusted networks or tests)",
    )
    add_common_options(parser)


def _configuration(arguments: argparse.Namespace) -> DTLSConfiguration:
    certificates = ServerCertificates()
    if arguments.cert:
        certificates.add(*load_chain_and_key(arguments.cert, arguments.key))
    elif arguments.key:
        raise CliError("--key needs --cert", exit_status=2)
    elif arguments.psk is None:
        raise CliError("a server needs --cert (and --key) or --psk", exit_status=2)
    for entry in arguments.sni:
        name, _, files = entry.partition("=")
        cert_file, _, key_file = files.partition(",")
        if not name or not cert_file:
            raise CliError(f"bad --sni {entry!r}: expected NAME=CERT[,KEY]", exit_status=2)
        certificates.add(*load_chain_and_key(cert_file, key_file or None), name)
    cas = load_trust_anchors(arguments.cafile) if arguments.cafile else None
    options: dict[str, Any] = common_configuration(arguments)
    if arguments.psk is not None:
        options.update(psk=arguments.psk, psk_identity=arguments.psk_identity.encode())
    try:
        return DTLSConfiguration(
            is_client=False,
            versions=versions_from(arguments),
            server_certificates=certificates,
            ca_certificates=cas,
            require_client_certificate=cas is not None,
            psk_identity_hint=arguments.psk_hint.encode(),
            cookie_exchange=not arguments.no_cookie,
            **options,
        )
    except LocalProtocolError as error:
        raise CliError(str(error), exit_status=2) from None


def run(arguments: argparse.Namespace, output: Output) -> int:
    """Serve until --naccept peers were served, or Ctrl-C."""
    configuration = _configuration(arguments)
    served = {"peers": 0, "datagrams": 0}

    async def main() -> int:
        return await _serve(arguments, configuration, output, served)

    def interrupted() -> str:
        return (
            f"interrupted: served {served['peers']} peer(s), "
            f"{served['datagrams']} datagram(s); sent close_notify to those still connected"
        )

    return run_async(main, interrupted=interrupted)


class FailureLog:
    """One line per failed handshake (who, which alert, what to check), rate-limited.

    At most ``FAILURE_LINES_PER_WINDOW`` lines in each ``FAILURE_WINDOW_SECONDS``;
    the failures beyond are counted, and one line says how many when the window
    ends (or at exit).  A flood thus prints at most 11 lines per 10 s.
    """

    def __init__(
        self,
        output: Output,
        *,
        clock: Callable[[], float] = time.monotonic,
        call_later: Callable[[float, Callable[[], None]], object] | None = None,
    ) -> None:
        self._output = output
        self._clock = clock
        self._call_later = call_later
        self._window_start: float | None = None
        self._shown = 0
        self._not_shown = 0
        self._flush_scheduled = False

    def __call__(self, event: HandshakeFailed) -> None:
        now = self._clock()
        if self._window_start is None or now - self._window_start >= FAILURE_WINDOW_SECONDS:
            self.flush()
            self._window_start = now
            self._shown = 0
        if self._shown >= FAILURE_LINES_PER_WINDOW:
            self._not_shown += 1
            if not self._flush_scheduled and self._call_later is not None:
                self._flush_scheduled = True
                remaining = self._window_start + FAILURE_WINDOW_SECONDS - now
                self._call_later(max(0.0, remaining), self._flush_at_window_end)
            return
        self._shown += 1
        peer = _peer_text(event.address)
        hint = _failure_hint(event)
        self._output.event(
            {
                "event": "handshake_failed",
                "peer": peer,
                "reason": event.reason,
                "alert": None if event.alert is None else event.alert.name,
                "alert_received": event.alert_received,
            },
            f"peer {peer}: handshake failed: {event.reason}" + (f" ({hint})" if hint else ""),
        )

    def _flush_at_window_end(self) -> None:
        self._flush_scheduled = False
        self.flush()

    def flush(self) -> None:
        """Say how many failures were not shown (if any)."""
        if not self._not_shown:
            return
        count, self._not_shown = self._not_shown, 0
        self._output.event(
            {"event": "handshake_failures_not_shown", "count": count},
            f"{count} more failed handshake(s) not shown (at most "
            f"{FAILURE_LINES_PER_WINDOW} lines per {FAILURE_WINDOW_SECONDS:g} s)",
        )


def _failure_hint(event: HandshakeFailed) -> str:
    """What the server's operator might check, by alert."""
    alert = event.alert
    if event.reason.startswith("handshake timeout"):
        if "did not decrypt" in event.reason:
            return "check --psk on both sides"
        return "the client stopped answering mid-handshake"
    if alert is None:
        return ""
    if event.alert_received:
        if alert in (
            AlertDescription.bad_certificate,
            AlertDescription.unknown_ca,
            AlertDescription.certificate_unknown,
        ):
            return "the client does not accept our certificate: check its CA file and name"
        if alert is AlertDescription.handshake_failure:
            return "the client found nothing to agree on: compare credentials and --cipher"
        return ""
    return {
        AlertDescription.decrypt_error: "the keys differ: the client's PSK is not ours?",
        AlertDescription.unknown_psk_identity: "the client's PSK identity is not --psk-identity",
        AlertDescription.certificate_required: "the client sent no certificate (--cafile)",
    }.get(alert, "")


async def _serve(
    arguments: argparse.Namespace,
    configuration: DTLSConfiguration,
    output: Output,
    served: dict[str, int],
) -> int:
    host, port = arguments.listen
    loop = asyncio.get_running_loop()
    failures = FailureLog(output, call_later=lambda delay, then: loop.call_later(delay, then))
    server = dtls_asyncio.serve(
        host,
        port,
        configuration,
        connection_id_bytes=arguments.cid,
        on_handshake_failed=failures,
    )
    try:
        await server.start()
    except OSError as error:
        raise CliError(describe_socket_error(error, host, port, binding=True)) from None
    tasks: set[asyncio.Task[None]] = set()
    try:
        bound_host, bound_port = server.local_address
        output.event(
            {"event": "listening", "address": format_address(bound_host, bound_port)},
            f"listening on {format_address(bound_host, bound_port)}",
        )
        while arguments.naccept == 0 or served["peers"] < arguments.naccept:
            connection = await server.accept()
            served["peers"] += 1
            write_key_log(arguments.keylog, connection.connection.key_log_lines())
            task = asyncio.create_task(_serve_peer(connection, arguments, output, served))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
        if tasks:
            await asyncio.gather(*tasks)
    finally:
        for task in tasks:
            task.cancel()
        server.close()
        failures.flush()
    return 0


async def _serve_peer(
    connection: dtls_asyncio.AsyncDTLSConnection,
    arguments: argparse.Namespace,
    output: Output,
    served: dict[str, int],
) -> None:
    peer = _peer_text(connection.peer_address)
    started = time.monotonic()
    report_connected(output, connection, arguments, peer=peer, lead=f"peer {peer} connected: ")
    received = 0
    reason = "closed by the peer (close_notify)"
    try:
        while data := await connection.recv():
            received += 1
            served["datagrams"] += 1
            if arguments.echo:
                await connection.send(data)
            else:
                output.data(data)
    except (ConnectionError, DTLSError) as error:
        reason = str(error)
    finally:
        connection.close()
    duration = time.monotonic() - started
    output.event(
        {
            "event": "closed",
            "peer": peer,
            "datagrams_received": received,
            "seconds": round(duration, 3),
            "reason": reason,
        },
        f"peer {peer} gone after {duration:.1f} s, {received} datagram(s): {reason}",
    )


def _peer_text(address: object) -> str:
    if isinstance(address, tuple) and len(address) >= 2:
        return format_address(str(address[0]), int(address[1]))
    return str(address)
