"""Processes for the DTLS tests over real UDP loopback: our ``python -m dtls`` CLI and the
``openssl`` binary, each started in an async context manager that kills it on the way out.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import socket
import sys
from collections.abc import AsyncIterator
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
OPENSSL = shutil.which("openssl") or (
    "/usr/bin/openssl" if Path("/usr/bin/openssl").exists() else None
)
#: How long one step of a conversation with another process (a line, a handshake) may take.
STEP_SECONDS = 15

Process = asyncio.subprocess.Process
PIPE = asyncio.subprocess.PIPE


def free_udp_port() -> int:
    """A loopback UDP port that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


async def read_until(stream: asyncio.StreamReader, needle: bytes) -> bytes:
    """Lines from ``stream`` up to and including the one that completes ``needle``."""
    seen = b""
    while needle not in seen:
        line = await asyncio.wait_for(stream.readline(), STEP_SECONDS)
        if not line:
            raise AssertionError(f"stream ended before {needle!r}; saw {seen[-2000:]!r}")
        seen += line
    return seen


@contextlib.asynccontextmanager
async def spawn(
    *command: str,
    stdin: int | None = None,
    stdout: int | None = None,
    stderr: int | None = None,
    env: dict[str, str] | None = None,
) -> AsyncIterator[Process]:
    """Run ``command``; on the way out kill it if it is still running, and reap it."""
    process = await asyncio.create_subprocess_exec(
        *command, stdin=stdin, stdout=stdout, stderr=stderr, env=env
    )
    try:
        yield process
    finally:
        if process.returncode is None:
            process.kill()
        await process.wait()


def openssl(*arguments: str) -> contextlib.AbstractAsyncContextManager[Process]:
    """``openssl *arguments`` with stdin and stdout (stderr merged into it) piped."""
    assert OPENSSL is not None, "callers skip when there is no openssl binary"
    return spawn(OPENSSL, *arguments, stdin=PIPE, stdout=PIPE, stderr=asyncio.subprocess.STDOUT)


def cli_environment() -> dict[str, str]:
    """This environment, with the checkout first on PYTHONPATH so ``-m dtls`` finds it."""
    env = dict(os.environ)
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    return env


def dtls_cli(
    *arguments: str, stdin: int | None = None, stdout: int | None = None, stderr: int | None = None
) -> contextlib.AbstractAsyncContextManager[Process]:
    """``python -m dtls *arguments`` from this checkout."""
    return spawn(
        sys.executable,
        "-m",
        "dtls",
        *arguments,
        stdin=stdin,
        stdout=stdout,
        stderr=stderr,
        env=cli_environment(),
    )
