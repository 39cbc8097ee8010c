"""Multi-stream file transfer over QOTP, verified by SHA-256.

Run both ends on loopback in one go (the default), or separately::

    python examples/qotp_file_transfer.py                      # self-contained demo
    python examples/qotp_file_transfer.py receive --listen 127.0.0.1:5000 --out /tmp/copy
    python examples/qotp_file_transfer.py send FILE --to 127.0.0.1:5000 --pubkey HEX

The file is cut into as many parts as streams; each part travels on its own
stream, prefixed with its offset and length, and the receiver writes it at
that offset.  Stream 0 carries the file's size and SHA-256 first.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import os
import struct
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from qotp.asyncio import QotpConnection, QotpStream, listen  # noqa: E402

HEADER = struct.Struct("<QQ")  # offset, length
MANIFEST = struct.Struct("<QI32s")  # size, number of parts, sha256


async def send_file(connection: QotpConnection, path: Path, streams: int) -> None:
    data = path.read_bytes()
    manifest = connection.stream(0)
    manifest.write(MANIFEST.pack(len(data), streams, hashlib.sha256(data).digest()))
    manifest.close()
    part = -(-len(data) // streams) if data else 0

    async def send_part(index: int) -> None:
        stream = connection.stream(index + 1)
        start = index * part
        chunk = data[start : start + part]
        stream.write(HEADER.pack(start, len(chunk)))
        stream.write(chunk)
        stream.close()
        await stream.drain()
        await stream.read()  # the receiver closes its side once the part is written

    await asyncio.gather(*(send_part(index) for index in range(streams)))
    assert await manifest.read() == b"ok", "receiver reported a checksum mismatch"


async def receive_file(connection: QotpConnection, out: Path) -> int:
    manifest = await connection.accept_stream()
    size, parts, digest = MANIFEST.unpack(await manifest.readexactly(MANIFEST.size))
    buffer = bytearray(size)

    async def receive_part(stream: QotpStream) -> int:
        offset, length = HEADER.unpack(await stream.readexactly(HEADER.size))
        if offset + length > size:
            raise ValueError("part outside the file")
        buffer[offset : offset + length] = await stream.readexactly(length)
        stream.close()
        return length

    tasks = [
        asyncio.create_task(receive_part(await connection.accept_stream())) for _ in range(parts)
    ]
    received = sum(await asyncio.gather(*tasks))
    ok = received == size and hashlib.sha256(buffer).digest() == digest
    out.write_bytes(buffer)
    manifest.write(b"ok" if ok else b"bad")
    manifest.close()
    await manifest.drain()
    return received if ok else -1


async def self_test(size: int, streams: int) -> None:
    with tempfile.TemporaryDirectory() as directory:
        source = Path(directory) / "source.bin"
        target = Path(directory) / "copy.bin"
        source.write_bytes(os.urandom(size))
        async with await listen("127.0.0.1", 0) as receiver, await listen("127.0.0.1", 0) as sender:

            async def accept() -> int:
                connection = await receiver.accept()
                return await receive_file(connection, target)

            accepting = asyncio.create_task(accept())
            started = time.perf_counter()
            connection = await sender.dial(
                receiver.local_address, peer_public_key=receiver.public_key
            )
            await send_file(connection, source, streams)
            received = await accepting
            elapsed = time.perf_counter() - started
        assert received == size and target.read_bytes() == source.read_bytes()
        print(f"sent {size} bytes on {streams} streams, SHA-256 verified, "
              f"{size / elapsed / 1e6:.1f} MB/s")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command")
    receive = commands.add_parser("receive")
    receive.add_argument("--listen", default="127.0.0.1:5000")
    receive.add_argument("--out", type=Path, required=True)
    send = commands.add_parser("send")
    send.add_argument("file", type=Path)
    send.add_argument("--to", required=True)
    send.add_argument("--pubkey")
    send.add_argument("--streams", type=int, default=8)
    demo = commands.add_parser("demo")
    demo.add_argument("--size", type=int, default=5_000_000)
    demo.add_argument("--streams", type=int, default=8)
    arguments = parser.parse_args()

    if arguments.command == "receive":
        host, _, port = arguments.listen.rpartition(":")

        async def run_receiver() -> None:
            async with await listen(host, int(port)) as listener:
                print(f"pubkey={listener.public_key.hex()}", flush=True)
                connection = await listener.accept()
                print(f"received {await receive_file(connection, arguments.out)} bytes")

        asyncio.run(run_receiver())
    elif arguments.command == "send":
        host, _, port = arguments.to.rpartition(":")

        async def run_sender() -> None:
            async with await listen("0.0.0.0", 0) as listener:
                key = bytes.fromhex(arguments.pubkey) if arguments.pubkey else None
                connection = await listener.dial((host, int(port)), peer_public_key=key)
                await send_file(connection, arguments.file, arguments.streams)
                print("sent and verified by the receiver")

        asyncio.run(run_sender())
    else:
        size = getattr(arguments, "size", 5_000_000)
        streams = getattr(arguments, "streams", 8)
        asyncio.run(self_test(size, streams))


if __name__ == "__main__":
    main()
