"""Interop with GnuTLS's ``gnutls-cli`` over UDP loopback (Debian's gnutls-bin).

``gnutls-cli --mtu 150`` fragments its first ClientHello (issue 9): our
endpoint must answer it statelessly and finish the handshake.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

from dtls_helpers import make_pki, pem_chain
from dtls_processes import PIPE, STEP_SECONDS, read_until, spawn
from system_packages import require_command

import dtls.asyncio as dtls_asyncio
from dtls.config import DTLSConfiguration


def test_gnutls_cli_with_small_mtu_against_our_server(tmp_path: Path) -> None:
    mtu = 150
    gnutls_cli = require_command("gnutls-cli", package="gnutls-bin")
    pki = make_pki()
    chain, key = pki.issue("localhost", sans=("127.0.0.1",))
    ca_file = tmp_path / "ca.pem"
    ca_file.write_bytes(pem_chain((pki.ca_certificate,)))
    configuration = DTLSConfiguration(is_client=False, certificate_chain=chain, private_key=key)

    async def run() -> tuple[int, bytes]:
        async with dtls_asyncio.serve("127.0.0.1", 0, configuration) as server:
            _, port = server.local_address
            async with spawn(
                gnutls_cli, "--udp", f"--mtu={mtu}", f"--x509cafile={ca_file}",
                "-p", str(port), "127.0.0.1",
                stdin=PIPE, stdout=PIPE, stderr=asyncio.subprocess.STDOUT,
            ) as client:  # fmt: skip
                assert client.stdin is not None and client.stdout is not None
                connection = await asyncio.wait_for(server.accept(), STEP_SECONDS)
                client.stdin.write(b"hello over a small mtu\n")
                await client.stdin.drain()
                assert await asyncio.wait_for(connection.recv(), STEP_SECONDS) == (
                    b"hello over a small mtu\n"
                )
                await connection.send(b"echo from python\n")
                output = await read_until(client.stdout, b"echo from python")
                client.stdin.close()  # gnutls-cli sends close_notify; we answer with ours
                assert await asyncio.wait_for(connection.recv(), STEP_SECONDS) == b""
                connection.close()
                await asyncio.wait_for(client.wait(), STEP_SECONDS)
                return server.endpoint.hello_verify_requests_sent, output

    hello_verify_requests, output = asyncio.run(run())
    assert hello_verify_requests == 1
    assert b"DTLS1.2" in output or b"DTLS 1.2" in output or b"(DTLS1.2)" in output
