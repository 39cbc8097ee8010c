"""``python -m dtls`` against our own asyncio server (no openssl needed)."""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path

from dtls_helpers import configs

import dtls.asyncio as dtls_asyncio

REPO = Path(__file__).resolve().parent.parent


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    return env


def test_cli_client_exits_when_server_closes_first() -> None:
    """stdin stays open; the server's close_notify alone must end the client, with 0."""
    _, server_config, _ = configs()

    async def run() -> tuple[int | None, bytes, bytes]:
        async with dtls_asyncio.serve("127.0.0.1", 0, server_config) as server:
            _, port = server.local_address
            client = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "dtls",
                "client",
                f"127.0.0.1:{port}",
                "--insecure",
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
                env=_env(),
            )
            try:
                connection = await asyncio.wait_for(server.accept(), 15)
                await connection.send(b"goodbye\n")
                connection.close()
                await asyncio.wait_for(client.wait(), 15)
                assert client.stdout is not None and client.stderr is not None
                return client.returncode, await client.stdout.read(), await client.stderr.read()
            finally:
                if client.returncode is None:
                    client.kill()
                    await client.wait()

    code, out, err = asyncio.run(run())
    assert code == 0, err
    assert out == b"goodbye\n"


def test_cli_usage_errors() -> None:
    from dtls.__main__ import main

    try:
        main(["client", "not-an-address"])
    except SystemExit as exit_status:
        assert exit_status.code == 2
    else:  # pragma: no cover
        raise AssertionError("argparse accepted a bad address")
