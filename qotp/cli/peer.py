"""``qotp peer``: meet another peer through a rendezvous, connect through NATs, move files."""

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
    describe_file_error,
    describe_socket_error,
    format_bytes,
    parse_bind_address,
    parse_peer_address,
    parse_positive_seconds,
    parse_private_key,
    parse_public_key,
    resolve_peer,
    run_async,
)
from qotp.cli.files import FileProgressDisplay, file_record
from qotp.keys import KeyPair
from qotp.rendezvous import (
    Peer,
    PeerConnected,
    PeerDisconnected,
    PeerError,
    PeerEvent,
    PeerLink,
    PeerPathChanged,
    PeerRegistered,
)
from qotp.rendezvous.messages import check_name
from qotp.tool import describe_close_reason, format_address
from qotp.transfer import (
    FileDone,
    FileReceiver,
    Manifest,
    ManifestError,
    SessionDone,
    TransferError,
    TransferEvent,
    build_manifest,
    send_files,
)
from qotp.transfer.paths import ReceiveDirectory

__all__ = ["COMMAND"]

CLOSE_GRACE_S = 2.0


def _name(text: str) -> str:
    try:
        return check_name(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(f"{text!r}: {error}") from None


def _configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--rendezvous",
        type=parse_peer_address,
        required=True,
        metavar="HOST:PORT",
        help="the `qotp rendezvous` both peers can reach",
    )
    parser.add_argument("--name", type=_name, required=True, help="our name at the rendezvous")
    parser.add_argument("--connect", type=_name, metavar="NAME", help="the peer to connect to")
    parser.add_argument(
        "--peer-key",
        type=parse_public_key,
        metavar="HEX",
        help="the public key --connect's peer must have (else: the key the rendezvous reports)",
    )
    parser.add_argument(
        "--send-file",
        type=Path,
        action="append",
        metavar="PATH",
        help="send this file or directory once connected (repeat for several)",
    )
    parser.add_argument(
        "--receive-dir", type=Path, metavar="DIR", help="accept files from peers into DIR"
    )
    parser.add_argument(
        "--allow-key",
        type=parse_public_key,
        action="append",
        metavar="HEX",
        help="with --receive-dir: accept files only from peers with this key (repeat for "
        "several); default: from any peer the rendezvous introduces",
    )
    parser.add_argument(
        "--once",
        action="store_true",
        help="with --receive-dir: exit after the first peer's files arrived",
    )
    parser.add_argument(
        "--listen",
        type=parse_bind_address,
        default=("0.0.0.0", 0),
        metavar="HOST:PORT",
        help="local address of our one socket (rendezvous, punching and the connection)",
    )
    parser.add_argument(
        "--seed-hex",
        type=parse_private_key,
        metavar="HEX",
        help="identity private key (from `qotp keygen`); default: a fresh one",
    )
    parser.add_argument(
        "--punch-timeout",
        type=parse_positive_seconds,
        default=3.0,
        metavar="SECONDS",
        help="how long to punch before relaying through the rendezvous",
    )
    parser.add_argument(
        "--timeout",
        type=parse_positive_seconds,
        default=30.0,
        metavar="SECONDS",
        help="give up registering or connecting after this long (the peer may start later)",
    )


def _run(arguments: argparse.Namespace, output: Output) -> int:
    manifest: Manifest | None = None
    if arguments.send_file:
        try:
            manifest = build_manifest(arguments.send_file)
        except ManifestError as error:
            raise CliError(str(error)) from None
    if arguments.once and arguments.receive_dir is None:
        raise CliError("--once goes with --receive-dir")
    if arguments.allow_key and arguments.receive_dir is None:
        raise CliError("--allow-key goes with --receive-dir")
    if arguments.peer_key is not None and arguments.connect is None:
        raise CliError("--peer-key goes with --connect")
    if arguments.receive_dir is not None:
        try:
            ReceiveDirectory(arguments.receive_dir)
        except OSError as error:
            raise CliError(
                f"cannot use {arguments.receive_dir} as the receive directory: "
                f"{describe_file_error(error)}: pick a directory we may write into"
            ) from None
    identity: KeyPair = arguments.seed_hex or KeyPair.generate()
    started = time.monotonic()
    stats = {"files_sent": 0, "files_received": 0, "failed": 0}

    def emit(record: dict[str, Any], text: str) -> None:
        if output.json:
            output.result(record)
        else:
            output.line(text)

    def on_peer_event(event: PeerEvent) -> None:
        if isinstance(event, PeerRegistered):
            address = format_address(event.public_address)
            emit(
                {"event": "registered", "name": arguments.name, "public_addr": address,
                 "pubkey": identity.public_hex},
                f"registered as {arguments.name}, seen from {address} (key {identity.public_hex})",
            )  # fmt: skip
        elif isinstance(event, PeerConnected):
            path = "direct" if event.direct else "through the rendezvous relay"
            emit(
                {"event": "connected", "peer": event.peer, "addr": format_address(event.address),
                 "direct": event.direct, "setup_s": round(event.setup_s, 3)},
                f"connected to {event.peer} at {format_address(event.address)} ({path}) "
                f"in {event.setup_s:.2f} s",
            )  # fmt: skip
        elif isinstance(event, PeerPathChanged):
            path = "direct" if event.direct else "through the rendezvous relay"
            emit(
                {"event": "path", "peer": event.peer, "addr": format_address(event.address),
                 "direct": event.direct},
                f"{event.peer} now at {format_address(event.address)} ({path})",
            )  # fmt: skip
        elif isinstance(event, PeerDisconnected):
            reason = describe_close_reason(event.reason, event.detail)
            emit(
                {"event": "disconnected", "peer": event.peer, "reason": reason},
                f"disconnected from {event.peer}: {reason}",
            )

    def file_observer(display: FileProgressDisplay, direction: str, peer: str) -> Any:
        def observe(event: TransferEvent) -> None:
            display(event)
            if isinstance(event, FileDone):
                if event.ok:
                    stats["files_sent" if direction == "sent" else "files_received"] += 1
                else:
                    stats["failed"] += 1
                record = file_record(event, direction=direction, peer=peer)
                if output.json:
                    output.result(record)
                elif event.ok:
                    digest = event.sha256.hex() if event.sha256 is not None else "?"
                    output.line(
                        f"file {event.path} {direction} ({event.size} bytes, sha256 {digest})"
                    )
                else:
                    output.note(f"file {event.path} FAILED: {event.error}")

        return observe

    async def receive(link: PeerLink, finished: asyncio.Event) -> None:
        assert arguments.receive_dir is not None
        display = FileProgressDisplay(output, verb="received", file_lines=False)
        observe = file_observer(display, "received", link.name)

        def on_event(event: TransferEvent) -> None:
            observe(event)
            if isinstance(event, SessionDone) and arguments.once:
                finished.set()

        allowed = set(arguments.allow_key) if arguments.allow_key else None
        receiver = FileReceiver(arguments.receive_dir, allowed_keys=allowed, on_event=on_event)
        try:
            await receiver.handle_connection(link.connection)
        finally:
            display.close()

    async def send(link: PeerLink) -> bool:
        assert manifest is not None
        display = FileProgressDisplay(
            output, verb="sent", total_bytes=manifest.total_bytes, file_lines=False
        )
        try:
            summary = await send_files(
                link.connection, manifest, on_event=file_observer(display, "sent", link.name)
            )
        except TransferError as error:
            raise CliError(f"sending to {link.name}: {error}") from None
        finally:
            display.close()
        if not summary.ok:
            first = summary.errors[0] if summary.errors else "failed"
            raise CliError(
                f"{summary.files_failed} of {len(manifest.files)} files to {link.name} failed "
                f"(first: {first}); run the same command again to resume"
            )
        if not output.json:
            output.note(
                f"sent {summary.files} files to {link.name}: {format_bytes(summary.bytes_sent)} "
                f"in {summary.elapsed_s:.2f} s ({summary.mb_s:.1f} MB/s)"
            )
        return True

    async def serve_link(link: PeerLink, finished: asyncio.Event) -> bool:
        tasks = []
        if arguments.receive_dir is not None:
            tasks.append(asyncio.create_task(receive(link, finished)))
        ok = True
        if manifest is not None:
            ok = await send(link)
        if tasks:
            await asyncio.gather(*tasks)
        return ok

    async def main() -> int:
        host, port = arguments.listen
        # Resolved now: a name that does not resolve is one line at once, and the
        # rendezvous's answers come from the address, which a host name never equals.
        rendezvous, _ = await resolve_peer(*arguments.rendezvous)
        try:
            peer = await Peer.start(
                rendezvous,
                arguments.name,
                host=host,
                port=port,
                identity=identity,
                on_event=on_peer_event,
                punch_timeout_s=arguments.punch_timeout,
                connect_timeout_s=arguments.timeout,
            )
        except OSError as error:
            raise CliError(describe_socket_error(error, host, port, binding=True)) from None
        finished = asyncio.Event()
        async with peer:
            try:
                await peer.wait_registered(timeout=arguments.timeout)
                if arguments.connect is not None:
                    link = await peer.connect(arguments.connect)
                    if arguments.peer_key is not None and link.public_key != arguments.peer_key:
                        raise CliError(
                            f"{arguments.connect} has key {link.public_key.hex()}, "
                            "not the one given with --peer-key"
                        )
                    serving = asyncio.create_task(serve_link(link, finished))
                    if arguments.receive_dir is None:
                        ok = await serving
                        link.connection.close()
                        await _quietly(link.connection.wait_closed(), CLOSE_GRACE_S)
                        return 0 if ok else 1
                    await _until(finished, serving)
                    return 1 if stats["failed"] else 0
                tasks: set[asyncio.Task[bool]] = set()
                while not finished.is_set():
                    accepting = asyncio.create_task(peer.accept())
                    stop = asyncio.create_task(finished.wait())
                    done, _ = await asyncio.wait(
                        {accepting, stop}, return_when=asyncio.FIRST_COMPLETED
                    )
                    stop.cancel()
                    if accepting not in done:
                        accepting.cancel()
                        break
                    task = asyncio.create_task(serve_link(accepting.result(), finished))
                    tasks.add(task)
                    task.add_done_callback(tasks.discard)
                return 1 if stats["failed"] else 0
            except PeerError as error:
                raise CliError(str(error)) from None

    def interrupted() -> str:
        return (
            f"stopped after {time.monotonic() - started:.1f} s: {stats['files_sent']} files sent, "
            f"{stats['files_received']} received"
        )

    return run_async(main, interrupted=interrupted)


async def _quietly(awaitable: Any, timeout: float) -> None:
    try:
        async with asyncio.timeout(timeout):
            await awaitable
    except TimeoutError:
        pass


async def _until(finished: asyncio.Event, serving: asyncio.Task[bool]) -> None:
    stop = asyncio.create_task(finished.wait())
    try:
        await asyncio.wait({stop, serving}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        stop.cancel()
        if not serving.done():
            serving.cancel()
        await asyncio.gather(serving, return_exceptions=True)


COMMAND = Command(
    name="peer",
    help="connect to another peer through NATs (via a rendezvous) and move files",
    description="Register with a `qotp rendezvous` under --name, optionally ask it for the peer "
    "--connect NAME, punch through both NATs from the same socket and keep one direct QOTP "
    "connection (0-RTT with the key the rendezvous reports), or relay through the rendezvous "
    "when punching fails (and move to a direct path if one opens later). Prints one line per "
    "event (with --json, one object per line: registered, connected, path, file, "
    "disconnected). Without --connect it waits for peers that connect to it.",
    configure=_configure,
    run=_run,
)
