"""Multi-stream file transfer over QOTP with the library API (what `qotp send-files` runs).

    python examples/qotp_file_transfer.py demo [--size BYTES]   # both ends on loopback

A receiver serves a directory; a sender builds a manifest of files and
directories and sends each file on its own stream, verified by SHA-256 and
resumable.  The command-line tools are `qotp receive-files` / `qotp send-files`.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from qotp.asyncio import listen  # noqa: E402
from qotp.transfer import FileDone, FileReceiver, build_manifest, send_files, sha256_file  # noqa: E402


async def demo(size: int) -> None:
    with tempfile.TemporaryDirectory() as scratch:
        album = Path(scratch, "album")
        (album / "raw").mkdir(parents=True)
        (album / "raw" / "big.bin").write_bytes(os.urandom(size))
        for index in range(5):
            (album / f"photo{index}.jpg").write_bytes(os.urandom(20_000 * (index + 1)))
        inbox = Path(scratch, "inbox")

        async with await listen("127.0.0.1", 0) as server, await listen("127.0.0.1", 0) as client:
            received: list[FileDone] = []
            receiver = FileReceiver(
                inbox, on_event=lambda e: received.append(e) if isinstance(e, FileDone) else None
            )
            serving = asyncio.create_task(receiver.serve(server))

            # 0-RTT: the sender knows the receiver's key, so data rides in the first packet.
            connection = await client.dial(server.local_address, peer_public_key=server.public_key)
            summary = await send_files(connection, build_manifest([album]), parallel=4)
            print(f"sent {summary.files} files, {summary.bytes_sent} bytes, "
                  f"{summary.mb_s:.1f} MB/s")  # fmt: skip

            # Again: everything is already there (checked chunk by chunk), nothing moves.
            again = await send_files(connection, build_manifest([album]))
            print(f"second run: {again.bytes_sent} bytes sent, {again.bytes_skipped} already there")
            serving.cancel()

        for original in album.rglob("*"):
            if original.is_file():
                copy = inbox / "album" / original.relative_to(album)
                assert sha256_file(copy) == sha256_file(original), original
        print(f"{len({done.path for done in received})} files received, SHA-256 verified")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command")
    run_demo = commands.add_parser("demo")
    run_demo.add_argument("--size", type=int, default=5_000_000)
    arguments = parser.parse_args()
    asyncio.run(demo(getattr(arguments, "size", 5_000_000)))


if __name__ == "__main__":
    main()
