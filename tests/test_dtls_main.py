"""``python -m dtls`` against our own asyncio server (no openssl needed)."""

from __future__ import annotations

import asyncio

import pytest
from dtls_helpers import configs
from dtls_processes import PIPE, STEP_SECONDS, dtls_cli

import dtls.asyncio as dtls_asyncio


def test_cli_client_exits_when_server_closes_first() -> None:
    """stdin stays open; the server's close_notify alone must end the client, with 0."""
    _, server_config, _ = configs()

    async def run() -> tuple[int | None, bytes, bytes]:
        async with dtls_asyncio.serve("127.0.0.1", 0, server_config) as server:
            _, port = server.local_address
            async with dtls_cli(
                "client", f"127.0.0.1:{port}", "--insecure", stdin=PIPE, stdout=PIPE, stderr=PIPE
            ) as client:
                connection = await asyncio.wait_for(server.accept(), STEP_SECONDS)
                await connection.send(b"goodbye\n")
                connection.close()
                await asyncio.wait_for(client.wait(), STEP_SECONDS)
                assert client.stdout is not None and client.stderr is not None
                return client.returncode, await client.stdout.read(), await client.stderr.read()

    code, out, err = asyncio.run(run())
    assert code == 0, err
    assert out == b"goodbye\n"


def test_cli_usage_errors(capsys: pytest.CaptureFixture[str]) -> None:
    from dtls.__main__ import main

    assert main(["client", "not-an-address"]) == 2
    assert capsys.readouterr().err == (
        "dtls client: argument address: expected HOST:PORT, got 'not-an-address' "
        "(see dtls client --help)\n"
    )
