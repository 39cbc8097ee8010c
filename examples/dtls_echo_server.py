"""An asyncio DTLS echo server for many peers on one UDP socket.

Run:  python examples/dtls_echo_server.py --cert cert.pem --key key.pem [--port 4433]
Try:  openssl s_client -dtls1_2 -connect 127.0.0.1:4433 -quiet -no_ign_eof
  or: python examples/dtls_echo_client.py --insecure
"""

from __future__ import annotations

import argparse
import asyncio
from pathlib import Path

import dtls.asyncio as dtls_asyncio
from dtls import DTLSConfiguration, load_certificate_chain, load_private_key


async def serve_peer(connection: dtls_asyncio.AsyncDTLSConnection) -> None:
    """Echo every datagram until the peer sends close_notify."""
    print(f"{connection.peer_address}: {connection.cipher_suite}", flush=True)
    try:
        while data := await connection.recv():
            await connection.send(data)
    except ConnectionError as error:
        print(f"{connection.peer_address}: {error}", flush=True)
        return
    connection.close()
    print(f"{connection.peer_address}: closed", flush=True)


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cert", required=True)
    parser.add_argument("--key", required=True)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=4433)
    arguments = parser.parse_args()
    configuration = DTLSConfiguration(
        is_client=False,
        certificate_chain=load_certificate_chain(Path(arguments.cert).read_bytes()),
        private_key=load_private_key(Path(arguments.key).read_bytes()),
        idle_timeout_ns=120 * 1_000_000_000,
    )
    async with dtls_asyncio.serve(arguments.host, arguments.port, configuration) as server:
        host, port = server.local_address
        print(f"listening on {host}:{port}", flush=True)
        tasks: set[asyncio.Task[None]] = set()
        while True:
            connection = await server.accept()
            task = asyncio.create_task(serve_peer(connection))
            tasks.add(task)
            task.add_done_callback(tasks.discard)


if __name__ == "__main__":
    asyncio.run(main())
