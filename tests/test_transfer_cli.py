"""``qotp send-files`` / ``receive-files`` as processes, through the impairment relay.

The relay (:mod:`qotp.compare.relay`) runs in the test's event loop between
the two processes and loses and reorders datagrams in both directions.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import signal
import subprocess
import sys
from collections.abc import AsyncIterator, Coroutine
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from qotp.compare.impairment import Impairment
from qotp.compare.relay import UdpRelay

MB = 1_000_000
IMPAIRMENT = Impairment.symmetric(
    seed=11, loss=0.02, reorder=0.05, delay_ns=1_000_000, jitter_ns=300_000
)
QOTP = [sys.executable, "-m", "qotp"]


def run(coroutine: Coroutine[Any, Any, None]) -> None:
    asyncio.run(asyncio.wait_for(coroutine, 240))


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@asynccontextmanager
async def receiver_behind_relay(directory: Path) -> AsyncIterator[tuple[str, str, UdpRelay]]:
    """A ``receive-files`` process; yields the relay's address, the receiver's key, the relay."""
    process = await asyncio.create_subprocess_exec(
        *QOTP, "receive-files", "--listen", "127.0.0.1:0", "--dir", str(directory),
        stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )  # fmt: skip
    try:
        assert process.stdout is not None
        key = (await process.stdout.readline()).decode().strip().removeprefix("pubkey=")
        bound = (await process.stdout.readline()).decode().strip().removeprefix("listening=")
        host, _, port = bound.rpartition(":")
        async with await UdpRelay.start((host, int(port)), impairment=IMPAIRMENT) as relay:
            address = relay.listen_address
            yield f"{address[0]}:{address[1]}", key, relay
    finally:
        process.send_signal(signal.SIGINT)
        _, errors = await process.communicate()
        assert process.returncode == 130 and b"Traceback" not in errors, errors


async def send(address: str, key: str, *paths: Path) -> dict[str, Any]:
    process = await asyncio.create_subprocess_exec(
        *QOTP, "send-files", address, *map(str, paths), "--pubkey", key, "--json",
        stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )  # fmt: skip
    output, errors = await process.communicate()
    assert b"Traceback" not in errors, errors
    summary: dict[str, Any] = json.loads(output.decode().splitlines()[-1])
    assert process.returncode == (0 if summary["ok"] else 1)
    return summary


def test_fifty_files_up_to_fifty_megabytes_arrive_bit_exact(tmp_path: Path) -> None:
    tree = tmp_path / "tree"
    sizes = [0] + [round(8 * MB ** (index / 47)) for index in range(48)] + [50 * MB]
    for index, size in enumerate(sizes):
        folder = tree / f"group{index % 5}"
        folder.mkdir(parents=True, exist_ok=True)
        (folder / f"file{index:02d}.bin").write_bytes(os.urandom(size))
    inbox = tmp_path / "inbox"

    async def main() -> None:
        async with receiver_behind_relay(inbox) as (address, key, relay):
            summary = await send(address, key, tree)
            statistics = relay.statistics()
        assert summary["ok"] and summary["files"] == 50
        assert summary["bytes_sent"] == sum(sizes) and summary["bytes_skipped"] == 0
        assert statistics.to_server.dropped_datagrams > 0 < statistics.to_client.dropped_datagrams
        assert statistics.to_server.reordered_datagrams > 0

    run(main())
    originals = sorted(path for path in tree.rglob("*") if path.is_file())
    assert len(originals) == 50
    for original in originals:
        assert digest(inbox / "tree" / original.relative_to(tree)) == digest(original)


def test_a_killed_transfer_resumes_without_resending_what_arrived(tmp_path: Path) -> None:
    source = tmp_path / "large.bin"
    source.write_bytes(os.urandom(40 * MB))
    inbox = tmp_path / "inbox"
    partial = inbox / ".large.bin.qotp-partial"

    async def main() -> None:
        async with receiver_behind_relay(inbox) as (address, key, _):
            process = await asyncio.create_subprocess_exec(
                *QOTP, "send-files", address, str(source), "--pubkey", key, "--json",
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            )  # fmt: skip
            while not partial.exists() or partial.stat().st_size < 20 * MB:
                assert process.returncode is None, "finished before it could be killed"
                await asyncio.sleep(0.01)
            process.kill()
            await process.wait()
            await asyncio.sleep(0.3)  # what was in flight lands
            arrived = partial.stat().st_size
            summary = await send(address, key, source)
        assert summary["ok"]
        assert summary["bytes_skipped"] >= arrived
        assert summary["bytes_sent"] == 40 * MB - summary["bytes_skipped"]
        print(f"resume: {arrived} bytes had arrived, {summary['bytes_skipped']} skipped, "
              f"{summary['bytes_sent']} sent")  # fmt: skip

    run(main())
    assert digest(inbox / "large.bin") == digest(source)
    assert not partial.exists()
