"""``dtls client HOST:PORT``: like ``openssl s_client -dtls``.

Sends stdin line by line (one datagram per line), writes what comes back to
stdout, sends close_notify at the end of input and exits 0 once the server's
close_notify comes back (or the server closed first).  A server that stopped
answering is a failure (exit 1): no close_notify back within 3 s of ours, or
an ICMP port unreachable for what we sent (its process is gone), as openssl
s_client also ends on.  What was negotiated (version, suite, group, ALPN, SRTP profile,
connection ids, resumption, exported keying material) goes to stderr, or as
JSON lines to stdout with ``--json``.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import threading
from typing import Any

from .. import asyncio as dtls_asyncio
from ..config import DTLSConfiguration, system_ca_certificates
from ..errors import DTLSError, LocalProtocolError
from ..sessions13 import load_saved_session
from .addresses import parse_bind_address, parse_peer_address
from .common import (
    CliError,
    Output,
    describe_connect_failure,
    describe_socket_error,
    format_address,
    load_chain_and_key,
    load_trust_anchors,
    parse_hex,
    parse_output_file,
    run_async,
    versions_from,
)
from .options import add_common_options, common_configuration, report_connected, write_key_log

__all__ = ["configure", "run"]

CLOSE_WAIT_SECONDS = 3.0


def configure(parser: argparse.ArgumentParser) -> None:
    """The client's options."""
    parser.add_argument("address", type=parse_peer_address, help="server HOST:PORT")
    trust = parser.add_mutually_exclusive_group()
    trust.add_argument(
        "--cafile",
        help="trusted CAs (PEM), or the server's own self-signed certificate "
        "(default: the system store)",
    )
    trust.add_argument("--insecure", action="store_true", help="accept any certificate")
    parser.add_argument("--servername", help="SNI and the name to verify (default: HOST)")
    parser.add_argument("--cert", help="client certificate chain (PEM)")
    parser.add_argument("--key", help="client private key (PEM; default: --cert)")
    parser.add_argument(
        "--psk-identity", default="Client_identity", help="identity sent with --psk"
    )
    parser.add_argument(
        "--cid",
        action="store_true",
        help="support RFC 9146 connection ids (the server may give us one to use)",
    )
    parser.add_argument(
        "--own-cid",
        type=parse_hex("connection id"),
        metavar="HEX",
        help="ask the server to put this connection id of ours on its records (implies --cid)",
    )
    parser.add_argument(
        "--bind", type=parse_bind_address, metavar="HOST:PORT", help="local address to send from"
    )
    parser.add_argument(
        "--sess-in",
        metavar="FILE",
        help="resume the session saved in FILE; a missing or unusable FILE is a warning "
        "and a full handshake (as with openssl), and the exit status is the session's",
    )
    parser.add_argument(
        "--sess-out",
        type=parse_output_file("session"),
        metavar="FILE",
        help="save the session to FILE at the end (it holds secrets); exit 1 when there "
        "is none to save",
    )
    add_common_options(parser)


def _configuration(arguments: argparse.Namespace, output: Output) -> DTLSConfiguration:
    host, _ = arguments.address
    options: dict[str, Any] = common_configuration(arguments)
    if arguments.cert:
        chain, key = load_chain_and_key(arguments.cert, arguments.key)
        options.update(certificate_chain=chain, private_key=key)
    elif arguments.key:
        raise CliError("--key needs --cert", exit_status=2)
    cas = load_trust_anchors(arguments.cafile) if arguments.cafile else None
    if cas is None and not arguments.insecure and arguments.psk is None:
        cas = system_ca_certificates()
        if not cas:
            raise CliError("no system CA store found: give --cafile (or --insecure)")
    if arguments.sess_in:
        try:
            with open(arguments.sess_in, "rb") as saved:
                options["session"] = load_saved_session(saved.read())
        except OSError as error:
            output.note(
                f"not resuming: {arguments.sess_in}: {error.strerror or error}; "
                "doing a full handshake"
            )
        except DTLSError as error:
            output.note(f"not resuming: {arguments.sess_in}: {error}; doing a full handshake")
    connection_id = None
    if arguments.own_cid is not None:
        connection_id = arguments.own_cid
    elif arguments.cid:
        connection_id = b""
    try:
        return DTLSConfiguration(
            is_client=True,
            versions=versions_from(arguments),
            ca_certificates=cas,
            verify_peer=not arguments.insecure,
            server_name=arguments.servername or host,
            psk=arguments.psk,
            psk_identity=arguments.psk_identity.encode(),
            connection_id=connection_id,
            **options,
        )
    except LocalProtocolError as error:
        raise CliError(str(error), exit_status=2) from None


def run(arguments: argparse.Namespace, output: Output) -> int:
    """Connect, pipe stdin to the server and the server to stdout."""
    configuration = _configuration(arguments, output)
    counts = {"sent": 0, "received": 0, "connected": 0}

    async def main() -> int:
        return await _client(arguments, configuration, output, counts)

    def interrupted() -> str:
        if not counts["connected"]:
            return "interrupted before the handshake finished"
        return f"interrupted: sent {counts['sent']} and received {counts['received']} datagrams"

    return run_async(main, interrupted=interrupted)


async def _client(
    arguments: argparse.Namespace,
    configuration: DTLSConfiguration,
    output: Output,
    counts: dict[str, int],
) -> int:
    host, port = arguments.address
    try:
        connection = await dtls_asyncio.connect(
            host, port, configuration, local=arguments.bind, abort_on_unreachable=True
        )
    except OSError as error:
        if arguments.bind is not None and not isinstance(error, ConnectionError):
            bind_host, bind_port = arguments.bind
            if getattr(error, "errno", None) in (98, 99, 13):  # in use, not ours, no permission
                raise CliError(
                    describe_socket_error(error, bind_host, bind_port, binding=True)
                ) from None
        raise CliError(
            describe_connect_failure(
                error, host, port, arguments.timeout, psk=arguments.psk is not None
            )
        ) from None
    except (ConnectionError, DTLSError) as error:
        raise CliError(
            describe_connect_failure(
                error, host, port, arguments.timeout, psk=arguments.psk is not None
            )
        ) from None
    counts["connected"] = 1
    write_key_log(arguments.keylog, connection.connection.key_log_lines())
    peer = format_address(host, port)
    report_connected(output, connection, arguments, peer=peer, lead=f"connected to {peer}: ")
    problem = await _pipe(connection, output, counts)
    # Saved at the end: a DTLS 1.3 server sends its ticket after the handshake.
    if arguments.sess_out:
        if problem is None:
            _save_session(connection, arguments.sess_out)
        elif connection.connection.session is not None:
            try:
                _save_session(connection, arguments.sess_out)
            except CliError:
                pass  # the session's own failure is the line to print
    if problem is not None:
        raise CliError(_describe_ending(problem, peer, counts))
    output.event(
        {
            "event": "closed",
            "clean": True,
            "datagrams_sent": counts["sent"],
            "datagrams_received": counts["received"],
        },
        None,
    )
    return 0


def _describe_ending(problem: BaseException, peer: str, counts: dict[str, int]) -> str:
    """One line for a session that did not end with a close_notify from the server."""
    traffic = f"{counts['sent']} datagram(s) sent, {counts['received']} received"
    if isinstance(problem, TimeoutError):
        return (
            f"the server at {peer} stopped answering: no close_notify back within "
            f"{CLOSE_WAIT_SECONDS:g} s of ours ({traffic}); is it still running?"
        )
    if isinstance(problem, ConnectionRefusedError):
        return (
            f"the server at {peer} stopped answering: its port is closed now (ICMP port "
            f"unreachable) ({traffic}); is it still running?"
        )
    return f"the connection with {peer} ended: {problem} ({traffic})"


def _save_session(connection: dtls_asyncio.AsyncDTLSConnection, path: str) -> None:
    session = connection.connection.session
    if session is None:
        raise CliError(
            f"no session to save to {path}: the server sent no ticket (it may not offer resumption)"
        )
    try:
        with open(path, "wb") as saved:
            saved.write(session.to_bytes())
    except OSError as error:
        raise CliError(f"cannot save the session to {path}: {error.strerror or error}") from None


async def _pipe(
    connection: dtls_asyncio.AsyncDTLSConnection, output: Output, counts: dict[str, int]
) -> BaseException | None:
    """stdin -> server, server -> stdout, until either side ends.

    None after a clean end (the server's close_notify came, before or after
    ours); otherwise why not: ``TimeoutError`` when ours got no answer within
    ``CLOSE_WAIT_SECONDS``, else the error that ended the connection.
    """
    peer_closed = asyncio.Event()
    ended: list[BaseException] = []

    async def printer() -> None:
        try:
            while data := await connection.recv():
                counts["received"] += 1
                output.data(data)
            peer_closed.set()
        except ConnectionError as error:
            ended.append(error)

    reader = asyncio.create_task(printer())
    lines = _stdin_lines(asyncio.get_running_loop())
    try:
        while True:
            next_line = asyncio.ensure_future(lines.get())
            await asyncio.wait({next_line, reader}, return_when=asyncio.FIRST_COMPLETED)
            if not next_line.done():
                next_line.cancel()  # the server closed (or went) first: stop reading input
                break
            line = next_line.result()
            if not line:
                break
            try:
                await connection.send(line)
                counts["sent"] += 1
            except (ConnectionError, DTLSError) as error:
                ended.append(error)
                break
        if not reader.done() and not ended:
            connection.shutdown(read=False, write=True)
            try:
                await asyncio.wait_for(asyncio.shield(reader), CLOSE_WAIT_SECONDS)
            except TimeoutError as error:
                ended.append(error)  # ours went out, nothing came back
    finally:
        if connection.connection.state.value != "closed":
            connection.close()
        await connection.__aexit__(None, None, None)
        reader.cancel()
    if peer_closed.is_set():
        return None
    return ended[0] if ended else None


def _stdin_lines(loop: asyncio.AbstractEventLoop) -> asyncio.Queue[bytes]:
    """Lines of stdin (b"" at the end), read by a daemon thread.

    A daemon thread rather than the loop's executor, so that the process can
    exit when the peer closes while a read from the terminal is still pending;
    it reads the file descriptor directly, because a thread parked inside
    ``sys.stdin.buffer`` holds that object's lock and aborts interpreter exit.
    """
    queue: asyncio.Queue[bytes] = asyncio.Queue()
    descriptor = sys.stdin.fileno()

    def deliver(line: bytes) -> bool:
        try:
            loop.call_soon_threadsafe(queue.put_nowait, line)
        except RuntimeError:  # the loop is gone: we are exiting
            return False
        return True

    def pump() -> None:
        pending = b""
        while True:
            try:
                chunk = os.read(descriptor, 65536)
            except OSError:
                chunk = b""
            if not chunk:
                if pending:
                    deliver(pending)
                deliver(b"")
                return
            pending += chunk
            while (end := pending.find(b"\n")) >= 0:
                line, pending = pending[: end + 1], pending[end + 1 :]
                if not deliver(line):
                    return

    threading.Thread(target=pump, name="dtls-stdin", daemon=True).start()
    return queue
