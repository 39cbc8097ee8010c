"""``qotp demo``: two endpoints on loopback, both handshakes, several streams, verified."""

from __future__ import annotations

import asyncio
import time

from qotp.asyncio import listen
from qotp.tool import run_client, serve_connection

__all__ = ["run_demo"]


async def _demo() -> bool:
    server = await listen("127.0.0.1", 0)
    client = await listen("127.0.0.1", 0)

    async def serve() -> None:
        async for connection in server:
            asyncio.create_task(serve_connection(connection, "echo"))

    serving = asyncio.create_task(serve())
    print(f"server listening on {server.local_address[0]}:{server.local_address[1]}")
    print(f"server public key  {server.public_key.hex()}")
    ok = True
    async with server, client:
        result = await run_client(
            client, server.local_address, streams=4, size=2_000_000, mode="echo"
        )
        verdict = "ok" if result.ok else f"FAILED {result.error}"
        print(
            f"in-band (1-RTT, forward secret): {result.streams} streams x 2 MB echoed, "
            f"verified: {verdict}, {result.mb_s:.1f} MB/s each way"
        )
        ok = ok and result.ok
        started = time.perf_counter()
        result = await run_client(
            client, server.local_address, streams=1, size=1024, mode="echo",
            peer_public_key=server.public_key,
        )  # fmt: skip
        elapsed_ms = (time.perf_counter() - started) * 1e3
        print(
            f"0-RTT (data in the first packet): 1 KB request/response on a new connection: "
            f"{'ok' if result.ok else 'FAILED ' + str(result.error)}, {elapsed_ms:.1f} ms"
        )
        ok = ok and result.ok
        await asyncio.sleep(0.05)
        stats = server.statistics()
        received, sent = stats["datagrams_received"], stats["datagrams_sent"]
        print(f"server socket: {received} datagrams in, {sent} out")
    serving.cancel()
    return ok


def run_demo() -> int:
    """Run the demo; 0 when everything was verified."""
    ok = asyncio.run(_demo())
    print("ok" if ok else "FAILED")
    return 0 if ok else 1
