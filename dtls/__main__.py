"""``python -m dtls``: a small DTLS 1.2 server and client (like ``openssl s_server -dtls1_2``).

server: prints (or with ``--echo`` sends back) every datagram a peer sends;
answers a peer's close_notify with its own.  client: sends stdin line by line
(one datagram per line), prints what comes back, sends close_notify at end of
input and exits 0 after a clean close.  Diagnostics go to stderr.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys
import threading
from pathlib import Path

from cryptography import x509

from . import asyncio as dtls_asyncio
from .config import (
    DTLSConfiguration,
    ServerCertificates,
    load_certificate_chain,
    load_private_key,
    system_ca_certificates,
)
from .errors import DTLSError
from .sessions import Session
from .suites import CipherSuite, SrtpProfile

SECOND_NS = 1_000_000_000
CLOSE_WAIT_SECONDS = 3.0


def _host_port(text: str) -> tuple[str, int]:
    host, _, port = text.rpartition(":")
    if not host or not port.isdigit():
        raise argparse.ArgumentTypeError("expected HOST:PORT")
    return host.strip("[]"), int(port)


def _csv(text: str) -> tuple[str, ...]:
    return tuple(part for part in text.split(",") if part)


def _load_cas(path: str | None) -> tuple[x509.Certificate, ...] | None:
    if path is None:
        return None
    return tuple(x509.load_pem_x509_certificates(Path(path).read_bytes()))


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--alpn", type=_csv, default=(), help="ALPN protocols, comma separated")
    parser.add_argument("--mtu", type=int, default=1200, help="datagram size (default 1200)")
    parser.add_argument("--psk", help="pre-shared key in hex (selects PSK cipher suites)")
    parser.add_argument(
        "--srtp", type=_csv, default=(), help="SRTP profiles, e.g. SRTP_AES128_CM_SHA1_80"
    )
    parser.add_argument("--cipher", type=_csv, default=(), help="IANA cipher suite name(s)")
    parser.add_argument("--timeout", type=float, default=60.0, help="handshake timeout, seconds")
    parser.add_argument("--keylog", help="append NSS key-log lines (for Wireshark) to this file")
    parser.add_argument("-v", "--verbose", action="store_true")


def _key_log(path: str | None, connection: dtls_asyncio.AsyncDTLSConnection) -> None:
    line = connection.connection.key_log_line()
    if path and line:
        with Path(path).open("a", encoding="ascii") as log:
            log.write(line + "\n")


def _suites(names: tuple[str, ...]) -> dict[str, object]:
    if not names:
        return {}
    try:
        return {"cipher_suites": tuple(CipherSuite[name] for name in names)}
    except KeyError as error:
        raise SystemExit(f"unknown cipher suite {error}") from None


def _srtp(names: tuple[str, ...]) -> dict[str, object]:
    if not names:
        return {}
    try:
        return {"srtp_profiles": tuple(SrtpProfile[name] for name in names)}
    except KeyError as error:
        raise SystemExit(f"unknown SRTP profile {error}") from None


async def _serve(arguments: argparse.Namespace) -> int:
    certificates = ServerCertificates()
    if arguments.cert:
        chain = load_certificate_chain(Path(arguments.cert).read_bytes())
        key = load_private_key(Path(arguments.key or arguments.cert).read_bytes())
        certificates.add(chain, key)
    elif not arguments.psk:
        raise SystemExit("server needs --cert/--key or --psk")
    for entry in arguments.sni:
        name, _, files = entry.partition("=")
        cert_file, _, key_file = files.partition(",")
        if not name or not cert_file:
            raise SystemExit(f"bad --sni {entry!r}: expected NAME=CERT,KEY")
        certificates.add(
            load_certificate_chain(Path(cert_file).read_bytes()),
            load_private_key(Path(key_file or cert_file).read_bytes()),
            name,
        )
    cas = _load_cas(arguments.cafile)
    psk = bytes.fromhex(arguments.psk) if arguments.psk else None
    options: dict[str, object] = {**_suites(arguments.cipher), **_srtp(arguments.srtp)}
    configuration = DTLSConfiguration(
        is_client=False,
        server_certificates=certificates,
        ca_certificates=cas,
        require_client_certificate=cas is not None,
        alpn_protocols=arguments.alpn,
        mtu=arguments.mtu,
        psk_lookup=(lambda identity: psk) if psk is not None else None,
        psk_identity_hint=arguments.psk_hint.encode(),
        handshake_timeout_ns=int(arguments.timeout * SECOND_NS),
        **options,  # type: ignore[arg-type]
    )
    listen_host, listen_port = arguments.listen
    async with dtls_asyncio.serve(
        listen_host, listen_port, configuration, connection_id_bytes=arguments.cid
    ) as server:
        host, port = server.local_address
        print(f"listening on {host}:{port}", file=sys.stderr, flush=True)
        served = 0
        tasks: set[asyncio.Task[None]] = set()
        while arguments.naccept == 0 or served < arguments.naccept:
            connection = await server.accept()
            served += 1
            _key_log(arguments.keylog, connection)
            task = asyncio.create_task(_serve_peer(connection, arguments.echo))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
        if tasks:
            await asyncio.gather(*tasks)
    return 0


async def _serve_peer(connection: dtls_asyncio.AsyncDTLSConnection, echo: bool) -> None:
    peer = connection.peer_address
    print(
        f"peer {peer} connected: {connection.cipher_suite}"
        + (f" alpn={connection.alpn_protocol}" if connection.alpn_protocol else ""),
        file=sys.stderr,
        flush=True,
    )
    try:
        while data := await connection.recv():
            if echo:
                await connection.send(data)
            else:
                sys.stdout.buffer.write(data)
                sys.stdout.flush()
    except (ConnectionError, DTLSError) as error:
        print(f"peer {peer}: {error}", file=sys.stderr, flush=True)
        return
    connection.close()
    print(f"peer {peer} closed", file=sys.stderr, flush=True)


async def _client(arguments: argparse.Namespace) -> int:
    host, port = arguments.address
    chain: tuple[x509.Certificate, ...] = ()
    key = None
    if arguments.cert:
        chain = load_certificate_chain(Path(arguments.cert).read_bytes())
        key = load_private_key(Path(arguments.key or arguments.cert).read_bytes())
    cas = _load_cas(arguments.cafile)
    if cas is None and not arguments.insecure and not arguments.psk:
        cas = system_ca_certificates()
    options: dict[str, object] = {**_suites(arguments.cipher), **_srtp(arguments.srtp)}
    if arguments.sess_in:
        try:
            options["session"] = Session.from_bytes(Path(arguments.sess_in).read_bytes())
        except DTLSError as error:
            print(f"ignoring {arguments.sess_in}: {error}", file=sys.stderr)
    configuration = DTLSConfiguration(
        is_client=True,
        ca_certificates=cas,
        verify_peer=not arguments.insecure,
        server_name=arguments.servername or host,
        certificate_chain=chain,
        private_key=key,
        alpn_protocols=arguments.alpn,
        mtu=arguments.mtu,
        psk=bytes.fromhex(arguments.psk) if arguments.psk else None,
        psk_identity=arguments.psk_identity.encode(),
        handshake_timeout_ns=int(arguments.timeout * SECOND_NS),
        connection_id=b"" if arguments.cid else None,
        **options,  # type: ignore[arg-type]
    )
    try:
        connection = await dtls_asyncio.connect(host, port, configuration)
    except (ConnectionError, DTLSError, OSError) as error:
        print(f"handshake failed: {error}", file=sys.stderr, flush=True)
        return 1
    _key_log(arguments.keylog, connection)
    session = connection.connection.session
    if arguments.sess_out and session is not None:
        Path(arguments.sess_out).write_bytes(session.to_bytes())
    print(
        f"connected: {connection.negotiated_version} {connection.cipher_suite}"
        + (f" alpn={connection.alpn_protocol}" if connection.alpn_protocol else "")
        + (" (resumed)" if connection.session_resumed else ""),
        file=sys.stderr,
        flush=True,
    )
    clean = asyncio.Event()

    async def printer() -> None:
        try:
            while data := await connection.recv():
                sys.stdout.buffer.write(data)
                sys.stdout.flush()
            clean.set()
        except ConnectionError as error:
            print(f"connection ended: {error}", file=sys.stderr, flush=True)

    reader = asyncio.create_task(printer())
    lines = _stdin_lines(asyncio.get_running_loop())
    while True:
        next_line = asyncio.ensure_future(lines.get())
        await asyncio.wait({next_line, reader}, return_when=asyncio.FIRST_COMPLETED)
        if not next_line.done():
            next_line.cancel()  # the peer closed first: stop reading input
            break
        line = next_line.result()
        if not line:
            break
        try:
            await connection.send(line)
        except (ConnectionError, DTLSError) as error:
            print(f"send failed: {error}", file=sys.stderr, flush=True)
            break
    if not reader.done():
        connection.shutdown(read=False, write=True)
        try:
            await asyncio.wait_for(asyncio.shield(reader), CLOSE_WAIT_SECONDS)
        except TimeoutError:
            pass  # the peer did not answer close_notify; ours went out, which is a clean close
    connection.close()
    await connection.__aexit__(None, None, None)
    reader.cancel()
    return 0


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


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``python -m dtls``."""
    parser = argparse.ArgumentParser(prog="python -m dtls", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    server = commands.add_parser("server", help="run a DTLS server")
    server.add_argument("--listen", type=_host_port, required=True, help="HOST:PORT")
    server.add_argument("--cert", help="PEM certificate chain")
    server.add_argument("--key", help="PEM private key")
    server.add_argument("--cafile", help="require client certificates issued by these CAs")
    server.add_argument(
        "--sni",
        action="append",
        default=[],
        metavar="NAME=CERT,KEY",
        help="extra certificate for a server name (repeatable)",
    )
    server.add_argument("--echo", action="store_true", help="send every datagram back")
    server.add_argument("--psk-hint", default="", help="PSK identity hint")
    server.add_argument("--naccept", type=int, default=0, help="exit after N peers (0: never)")
    server.add_argument("--cid", type=int, default=0, help="connection-id bytes to hand out")
    _common(server)
    client = commands.add_parser("client", help="connect to a DTLS server")
    client.add_argument("address", type=_host_port, help="HOST:PORT")
    trust = client.add_mutually_exclusive_group()
    trust.add_argument("--cafile", help="trusted CAs (PEM); default: the system store")
    trust.add_argument("--insecure", action="store_true", help="accept any certificate")
    client.add_argument("--servername", help="SNI and name to verify (default: HOST)")
    client.add_argument("--cert", help="client certificate chain (PEM)")
    client.add_argument("--key", help="client private key (PEM)")
    client.add_argument("--psk-identity", default="Client_identity", help="PSK identity")
    client.add_argument("--cid", action="store_true", help="ask for an RFC 9146 connection id")
    client.add_argument("--sess-in", help="resume the session saved in this file")
    client.add_argument("--sess-out", help="save the session to this file (holds secrets)")
    _common(client)
    arguments = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if arguments.verbose else logging.WARNING, stream=sys.stderr
    )
    try:
        if arguments.command == "server":
            return asyncio.run(_serve(arguments))
        return asyncio.run(_client(arguments))
    except KeyboardInterrupt:
        return 130
    except (OSError, DTLSError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
