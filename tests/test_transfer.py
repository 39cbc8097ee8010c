"""File transfer over real loopback sockets: trees, resume, key restrictions, hostile senders."""

from __future__ import annotations

import asyncio
import hashlib
import os
from collections.abc import AsyncIterator, Callable, Coroutine
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest

from qotp.asyncio import QotpConnection, QotpListener, listen
from qotp.identity_proof import new_nonce, prove
from qotp.keys import KeyPair
from qotp.transfer import (
    FileDone,
    FileReceiver,
    TransferEvent,
    TransferRefused,
    build_manifest,
    send_files,
)
from qotp.transfer.framing import expect_message, write_message
from qotp.transfer.messages import (
    Data,
    End,
    FileHeader,
    Hello,
    Offer,
    Proof,
    Result,
    Welcome,
)
from qotp.transfer.sender import stream_ids

MIB = 1 << 20


def run(coroutine: Coroutine[Any, Any, None]) -> None:
    asyncio.run(asyncio.wait_for(coroutine, 120))


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@asynccontextmanager
async def receiving(
    directory: Path, **options: Any
) -> AsyncIterator[tuple[QotpListener, list[TransferEvent]]]:
    events: list[TransferEvent] = []
    async with await listen("127.0.0.1", 0) as server:
        receiver = FileReceiver(directory, on_event=events.append, **options)
        task = asyncio.create_task(receiver.serve(server))
        try:
            yield server, events
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)


async def dial(client: QotpListener, server: QotpListener) -> QotpConnection:
    return await client.dial(server.local_address, peer_public_key=server.public_key)


def test_tree_arrives_bit_exact_and_a_second_run_sends_nothing(tmp_path: Path) -> None:
    source = tmp_path / "photos"
    (source / "2024" / "summer").mkdir(parents=True)
    sizes = [0, 1, 999, 65_536, 3 * MIB + 17]
    for index, size in enumerate(sizes):
        (source / "2024" / "summer" / f"img{index}.raw").write_bytes(os.urandom(size))
    (source / "index.txt").write_bytes(b"hello\n")
    os.chmod(source / "index.txt", 0o755)
    inbox = tmp_path / "inbox"

    async def main() -> None:
        async with receiving(inbox) as (server, events), await listen("127.0.0.1", 0) as client:
            connection = await dial(client, server)
            first = await send_files(connection, build_manifest([source]), parallel=3)
            assert first.ok and first.files == len(sizes) + 1
            assert first.bytes_sent == sum(sizes) + 6 and first.bytes_skipped == 0
            second = await send_files(connection, build_manifest([source]))
            assert second.ok and second.bytes_sent == 0
            assert second.bytes_skipped == first.bytes_sent
            done = [event for event in events if isinstance(event, FileDone)]
            assert len(done) == 2 * (len(sizes) + 1) and all(event.ok for event in done)

    run(main())
    for original in source.rglob("*"):
        if original.is_file():
            copy = inbox / "photos" / original.relative_to(source)
            assert digest(copy) == digest(original)
    assert os.stat(inbox / "photos" / "index.txt").st_mode & 0o100
    assert not list(inbox.rglob("*.qotp-partial"))


def test_resume_trusts_only_the_prefix_that_matches(tmp_path: Path) -> None:
    data = os.urandom(5 * MIB)
    (tmp_path / "out").mkdir()
    good = tmp_path / "out" / "good.bin"
    bad = tmp_path / "out" / "bad.bin"
    good.write_bytes(data)
    bad.write_bytes(data)
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    # An interrupted run left 3.5 MiB of one file and a damaged 4 MiB of the other.
    (inbox / ".good.bin.qotp-partial").write_bytes(data[: 3 * MIB + MIB // 2])
    damaged = bytearray(data[: 4 * MIB])
    damaged[2 * MIB + 10] ^= 0xFF
    (inbox / ".bad.bin.qotp-partial").write_bytes(damaged)
    # A small file (its rest moves in one piece) with half of it there already.
    small = tmp_path / "out" / "small.bin"
    small.write_bytes(data[:200_000])
    (inbox / ".small.bin.qotp-partial").write_bytes(data[:100_000])

    async def main() -> None:
        async with receiving(inbox) as (server, _), await listen("127.0.0.1", 0) as client:
            connection = await dial(client, server)
            summary = await send_files(connection, build_manifest([good, bad, small]))
            assert summary.ok
            assert summary.bytes_skipped == (3 * MIB + MIB // 2) + 2 * MIB + 100_000
            assert summary.bytes_sent == 2 * len(data) + 200_000 - summary.bytes_skipped

    run(main())
    assert (inbox / "good.bin").read_bytes() == data
    assert (inbox / "bad.bin").read_bytes() == data
    assert (inbox / "small.bin").read_bytes() == data[:200_000]


def test_a_changed_complete_file_is_replaced(tmp_path: Path) -> None:
    data = os.urandom(3 * MIB)
    source = tmp_path / "doc.bin"
    source.write_bytes(data)
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    stale = bytearray(data)
    stale[-1] ^= 1
    (inbox / "doc.bin").write_bytes(stale)

    async def main() -> None:
        async with receiving(inbox) as (server, _), await listen("127.0.0.1", 0) as client:
            summary = await send_files(await dial(client, server), build_manifest([source]))
            assert summary.ok and summary.bytes_skipped == 2 * MIB and summary.bytes_sent == MIB

    run(main())
    assert (inbox / "doc.bin").read_bytes() == data


def test_an_interrupted_sender_resumes_on_a_new_connection(tmp_path: Path) -> None:
    data = os.urandom(24 * MIB)
    source = tmp_path / "big.bin"
    source.write_bytes(data)
    inbox = tmp_path / "inbox"

    async def main() -> None:
        async with receiving(inbox) as (server, _), await listen("127.0.0.1", 0) as client:
            connection = await dial(client, server)
            partial = inbox / ".big.bin.qotp-partial"
            sending = asyncio.create_task(send_files(connection, build_manifest([source])))
            while not partial.exists() or partial.stat().st_size < 6 * MIB:
                await asyncio.sleep(0.01)
            # The sender dies: no close reaches the receiver, whose old connection
            # lingers until its idle timeout.  The restart must not wait for that.
            sending.cancel()
            connection.abort()
            await asyncio.gather(sending, return_exceptions=True)
            held = partial.stat().st_size
            summary = await send_files(await dial(client, server), build_manifest([source]))
            assert summary.ok
            assert summary.bytes_skipped >= held - 4 * MIB  # whole chunks that had arrived
            assert summary.bytes_skipped + summary.bytes_sent == len(data)

    run(main())
    assert (inbox / "big.bin").read_bytes() == data


def test_only_allowed_keys_may_send(tmp_path: Path) -> None:
    source = tmp_path / "a.txt"
    source.write_bytes(b"payload")
    friend = KeyPair.generate()

    async def main() -> None:
        async with (
            receiving(tmp_path / "inbox", allowed_keys={friend.public_key}) as (server, _),
            await listen("127.0.0.1", 0, identity=friend) as allowed,
            await listen("127.0.0.1", 0) as stranger,
        ):
            with pytest.raises(TransferRefused, match="not allowed"):
                await send_files(await dial(stranger, server), build_manifest([source]))
            summary = await send_files(await dial(allowed, server), build_manifest([source]))
            assert summary.ok

    run(main())
    assert (tmp_path / "inbox" / "a.txt").read_bytes() == b"payload"


# -- hostile senders ------------------------------------------------------------------


async def hostile_session(connection: QotpConnection, *, proof: bytes | None = None) -> None:
    """Open a session like a sender would (optionally with a forged proof)."""
    identity = connection.local_identity
    assert identity is not None and connection.peer_public_key is not None
    control = connection.stream(next(stream_ids(connection)))
    nonce = new_nonce()
    write_message(control, Hello(nonce=nonce, files=1, total_bytes=1))
    welcome = await expect_message(control, Welcome)
    if proof is None:
        proof = prove(
            identity,
            connection.peer_public_key,
            as_initiator=True,
            initiator_nonce=nonce,
            responder_nonce=welcome.nonce,
        )
    write_message(control, Proof(proof=proof))
    await control.drain()


async def offer_file(connection: QotpConnection, path: str, size: int) -> Offer | Result:
    stream = connection.stream(next(stream_ids(connection)))
    write_message(stream, FileHeader(path=path, size=size))
    await stream.drain()
    return await expect_message(stream, Offer, Result)


HostileStep = Callable[[QotpConnection], Coroutine[Any, Any, None]]


async def dropped_by(receiver: QotpListener, connection: QotpConnection) -> None:
    """Wait until the receiver forgot this connection (QOTP sends no close: it goes quiet)."""
    while connection.connection_id in receiver.endpoint.connections:
        await asyncio.sleep(0.01)


def test_a_hostile_sender_cannot_escape_or_stop_the_receiver(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    os.symlink(outside, inbox / "escape")
    os.symlink(outside / "target", inbox / "trap")
    honest_source = tmp_path / "honest.txt"
    honest_source.write_bytes(b"still works")
    receivers: list[QotpListener] = []

    async def unsafe_paths(connection: QotpConnection) -> None:
        await hostile_session(connection)
        for path in ("../up", "/etc/evil", "a/../../up", "escape/x", "a\\..\\b", ".x.qotp-partial"):
            reply = await offer_file(connection, path, 4)
            assert isinstance(reply, Result) and not reply.ok and "refused" in (reply.error or "")
        # A link as the final name is replaced, never written through.
        stream = connection.stream(next(stream_ids(connection)))
        write_message(stream, FileHeader(path="trap", size=3))
        await expect_message(stream, Offer)
        write_message(stream, Data(offset=0))
        stream.write(b"abc")
        write_message(stream, End(sha256=hashlib.sha256(b"abc").digest()))
        stream.close()
        assert (await expect_message(stream, Result)).ok

    async def wrong_digest(connection: QotpConnection) -> None:
        await hostile_session(connection)
        stream = connection.stream(next(stream_ids(connection)))
        write_message(stream, FileHeader(path="liar.bin", size=5))
        await expect_message(stream, Offer)
        write_message(stream, Data(offset=0))
        stream.write(b"12345")
        write_message(stream, End(sha256=bytes(32)))
        result = await expect_message(stream, Result)
        assert not result.ok and "mismatch" in (result.error or "")

    async def bad_offset(connection: QotpConnection) -> None:
        await hostile_session(connection)
        stream = connection.stream(next(stream_ids(connection)))
        write_message(stream, FileHeader(path="offset.bin", size=100))
        await expect_message(stream, Offer)
        write_message(stream, Data(offset=50))  # not offered: the connection is dropped
        await asyncio.wait_for(dropped_by(receivers[0], connection), 10)

    async def file_without_session(connection: QotpConnection) -> None:
        stream = connection.stream(5)
        write_message(stream, FileHeader(path="sneaky", size=1))
        stream.write(b"x")
        await stream.drain()
        await asyncio.sleep(0.2)

    async def forged_proof(connection: QotpConnection) -> None:
        await hostile_session(connection, proof=bytes(32))
        await asyncio.wait_for(dropped_by(receivers[0], connection), 10)

    async def garbage(connection: QotpConnection) -> None:
        stream = connection.stream(7)
        stream.write(b"\xff\xff\xff\xff" + os.urandom(100))
        await stream.drain()
        await asyncio.wait_for(dropped_by(receivers[0], connection), 10)

    async def truncated(connection: QotpConnection) -> None:
        await hostile_session(connection)
        stream = connection.stream(next(stream_ids(connection)))
        write_message(stream, FileHeader(path="short.bin", size=1000))
        await expect_message(stream, Offer)
        write_message(stream, Data(offset=0))
        stream.write(b"only this")
        stream.close()
        result = await expect_message(stream, Result)
        assert not result.ok and "stopped" in (result.error or "")

    steps: list[HostileStep] = [
        unsafe_paths,
        wrong_digest,
        bad_offset,
        file_without_session,
        forged_proof,
        garbage,
        truncated,
    ]

    async def main() -> None:
        async with receiving(inbox) as (server, _), await listen("127.0.0.1", 0) as client:
            receivers.append(server)
            for step in steps:
                await step(await dial(client, server))
            summary = await send_files(await dial(client, server), build_manifest([honest_source]))
            assert summary.ok

    run(main())
    assert list(outside.iterdir()) == []
    assert (inbox / "honest.txt").read_bytes() == b"still works"
    assert not (inbox / "trap").is_symlink() and (inbox / "trap").read_bytes() == b"abc"
    assert not (inbox / "liar.bin").exists() and not (inbox / ".liar.bin.qotp-partial").exists()
    assert not (inbox / "sneaky").exists() and not (inbox / "offset.bin").exists()
    assert not (inbox / "short.bin").exists()
    assert (inbox / ".short.bin.qotp-partial").read_bytes() == b"only this"
