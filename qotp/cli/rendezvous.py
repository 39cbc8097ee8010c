"""``qotp rendezvous``: the introduction server (and relay of last resort) for ``qotp peer``."""

from __future__ import annotations

import argparse
import asyncio
import time
from typing import Any

from qotp.cli.common import (
    CliError,
    Command,
    Output,
    describe_socket_error,
    format_bytes,
    parse_bind_address,
    parse_count,
    parse_private_key,
    run_async,
)
from qotp.keys import KeyPair
from qotp.rendezvous import RendezvousConfiguration, RendezvousService, serve_rendezvous
from qotp.rendezvous.server import (
    PeerExpired,
    PeerRegistered,
    PeersIntroduced,
    RelayOpened,
    ServerEvent,
)
from qotp.tool import format_address

__all__ = ["COMMAND"]

DEFAULTS = RendezvousConfiguration()


def _configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--listen",
        type=parse_bind_address,
        default=("0.0.0.0", 4244),
        metavar="HOST:PORT",
        help="public address to listen on; port 0 picks a free one",
    )
    parser.add_argument(
        "--seed-hex",
        type=parse_private_key,
        metavar="HEX",
        help="identity private key (peers prove their keys against it); default: a fresh one",
    )
    parser.add_argument(
        "--relay-rate",
        type=parse_count(0, 1 << 40, what="bytes per second"),
        default=DEFAULTS.relay_bytes_per_s_per_peer,
        metavar="BYTES_PER_S",
        help="bytes per second the relay forwards for each peer (0: relay nothing)",
    )
    parser.add_argument(
        "--relay-total-rate",
        type=parse_count(0, 1 << 40, what="bytes per second"),
        default=DEFAULTS.relay_bytes_per_s_total,
        metavar="BYTES_PER_S",
        help="bytes per second the relay forwards in total",
    )
    parser.add_argument(
        "--max-relays",
        type=parse_count(0, 1_000_000, what="relayed connections"),
        default=DEFAULTS.max_relays,
        help="relayed connections at once, in total (0: no relaying)",
    )
    parser.add_argument(
        "--max-peers",
        type=parse_count(1, 10_000_000, what="peers"),
        default=DEFAULTS.max_peers,
        help="registered peers at most",
    )


def _describe(event: ServerEvent) -> tuple[dict[str, Any], str]:
    record: dict[str, Any]
    if isinstance(event, PeerRegistered):
        record = {
            "event": "registered",
            "name": event.name,
            "addr": format_address(event.address),
            "pubkey": event.public_key.hex(),
        }
        return record, f"{event.name} registered from {format_address(event.address)}"
    if isinstance(event, PeerExpired):
        return {"event": "expired", "name": event.name}, f"{event.name} expired"
    if isinstance(event, PeersIntroduced):
        record = {"event": "introduced", "peers": [event.requester, event.target]}
        return record, f"introduced {event.requester} to {event.target}"
    if isinstance(event, RelayOpened):
        record = {
            "event": "relay_opened",
            "connection_id": f"{event.connection_id:016x}",
            "peers": list(event.peers),
        }
        return record, f"relaying {event.connection_id:016x} between {' and '.join(event.peers)}"
    record = {
        "event": "relay_closed",
        "connection_id": f"{event.connection_id:016x}",
        "peers": list(event.peers),
        "datagrams": event.datagrams,
        "bytes": event.bytes,
    }
    return record, (
        f"relay {event.connection_id:016x} closed after {event.datagrams} datagrams, "
        f"{format_bytes(event.bytes)}"
    )


def _run(arguments: argparse.Namespace, output: Output) -> int:
    identity: KeyPair = arguments.seed_hex or KeyPair.generate()
    host, port = arguments.listen
    configuration = RendezvousConfiguration(
        relay_bytes_per_s_per_peer=arguments.relay_rate,
        relay_bytes_per_s_total=arguments.relay_total_rate,
        max_relays=arguments.max_relays,
        max_peers=arguments.max_peers,
    )
    started = time.monotonic()
    services: list[RendezvousService] = []

    def on_event(event: ServerEvent) -> None:
        record, text = _describe(event)
        if output.json:
            output.result(record)
        else:
            output.note(text)

    async def main() -> None:
        try:
            service = await serve_rendezvous(
                host, port, identity=identity, configuration=configuration, on_event=on_event
            )
        except OSError as error:
            raise CliError(describe_socket_error(error, host, port, binding=True)) from None
        services.append(service)
        bound = format_address(service.local_address)
        if output.json:
            output.result({"event": "listening", "address": bound, "pubkey": identity.public_hex})
        else:
            output.line(f"pubkey={identity.public_hex}")
            output.line(f"listening={bound}")
            output.note(f"peers: qotp peer --rendezvous {bound} --name NAME ...; Ctrl-C stops")
        async with service:
            await asyncio.Event().wait()  # until Ctrl-C or SIGTERM

    def statistics() -> dict[str, Any]:
        stats: dict[str, Any] = {"event": "statistics"}
        if services:
            stats.update(services[0].statistics())
        return stats

    def interrupted() -> str:
        stats = statistics()
        return (
            f"stopped after {time.monotonic() - started:.1f} s: "
            f"{stats.get('registrations', 0)} registrations, "
            f"{stats.get('introductions', 0)} introductions, "
            f"{format_bytes(int(stats.get('relayed_bytes', 0)))} relayed"
        )

    run_async(main, interrupted=interrupted, report=statistics)
    return 0


COMMAND = Command(
    name="rendezvous",
    help="introduce `qotp peer`s to each other, relay when punching fails; Ctrl-C stops",
    description="Run on a host both peers can reach. Peers register under a name; the "
    "rendezvous learns each one's public address and key and, when one asks for another, "
    "tells both about each other at the same moment so that they can punch through their "
    "NATs. Where that fails (symmetric NATs), it relays their QOTP datagrams by connection "
    "id without holding any key, within --relay-rate per peer and --relay-total-rate in "
    "total. Prints pubkey= and listening= first; events on stderr (with --json: one object "
    "per line on stdout); on stop, a statistics object on stdout (relayed_bytes, ...).",
    configure=_configure,
    run=_run,
)
