"""``qotp demo``: two endpoints on loopback, both handshakes, several streams, verified."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Mapping
from typing import Any

from qotp.asyncio import listen
from qotp.tool import format_address, run_client, serve_connection

__all__ = ["run_demo", "run_demo_async"]

Reporter = Callable[[Mapping[str, Any], str], None]


def _print(record: Mapping[str, Any], text: str) -> None:
    del record
    print(text, flush=True)


async def run_demo_async(report: Reporter = _print) -> bool:
    """Run the demo, reporting each step as (JSON record, readable line); True if all verified."""
    server = await listen("127.0.0.1", 0)
    client = await listen("127.0.0.1", 0)
    serving: set[asyncio.Task[Any]] = set()

    async def serve() -> None:
        async for connection in server:
            task = asyncio.create_task(serve_connection(connection, "echo"))
            serving.add(task)
            task.add_done_callback(serving.discard)

    accepting = asyncio.create_task(serve())
    address = format_address(server.local_address)
    report(
        {"event": "listening", "address": address, "pubkey": server.public_key.hex()},
        f"server listening on {address}\nserver public key  {server.public_key.hex()}",
    )
    ok = True
    try:
        async with server, client:
            result = await run_client(
                client, server.local_address, streams=4, size=2_000_000, mode="echo"
            )
            verdict = "ok" if result.ok else f"FAILED {result.error}"
            report(
                {"event": "in-band", **result.report()},
                f"in-band (1-RTT, forward secret): {result.streams} streams x 2 MB echoed, "
                f"verified: {verdict}, {result.mb_s:.1f} MB/s each way",
            )
            ok = ok and result.ok
            started = time.perf_counter()
            result = await run_client(
                client, server.local_address, streams=1, size=1024, mode="echo",
                peer_public_key=server.public_key,
            )  # fmt: skip
            elapsed_ms = (time.perf_counter() - started) * 1e3
            report(
                {"event": "0-rtt", **result.report()},
                f"0-RTT (data in the first packet): 1 KB request/response on a new connection: "
                f"{'ok' if result.ok else 'FAILED ' + str(result.error)}, {elapsed_ms:.1f} ms",
            )
            ok = ok and result.ok
            await asyncio.sleep(0.05)
            stats = server.statistics()
            received, sent = stats["datagrams_received"], stats["datagrams_sent"]
            report(
                {"event": "socket", "datagrams_received": received, "datagrams_sent": sent},
                f"server socket: {received} datagrams in, {sent} out",
            )
    finally:
        accepting.cancel()
        for task in list(serving):
            task.cancel()
        await asyncio.gather(accepting, *serving, return_exceptions=True)
    return ok


def run_demo() -> int:
    """Run the demo, printing as it goes; 0 when everything was verified."""
    ok = asyncio.run(run_demo_async())
    print("ok" if ok else "FAILED")
    return 0 if ok else 1
