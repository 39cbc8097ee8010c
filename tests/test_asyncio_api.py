"""The asyncio API over real UDP loopback sockets."""

from __future__ import annotations

import asyncio
import hashlib
import os
import socket
import sys

import pytest

from qotp.asyncio import (
    PORT_UNREACHABLE,
    ConnectionClosedError,
    QotpConnection,
    QotpListener,
    listen,
)
from qotp.config import QotpConfiguration
from qotp.errors import LocalProtocolError
from qotp.events import TerminationReason
from qotp.tool import run_client, serve_connection


async def echo_server(listener: QotpListener) -> None:
    async for connection in listener:
        asyncio.create_task(serve_connection(connection, "echo"))


def run(coroutine: object) -> object:
    return asyncio.run(asyncio.wait_for(coroutine, 60))  # type: ignore[arg-type]


def test_dial_stream_echo_half_close() -> None:
    async def main() -> None:
        async with await listen("127.0.0.1", 0) as server, await listen("127.0.0.1", 0) as client:
            task = asyncio.create_task(echo_server(server))
            connection = await client.dial(server.local_address)
            assert connection.peer_public_key == server.public_key
            stream = connection.stream(3)
            data = os.urandom(300_000)
            stream.write(data)
            await stream.drain()
            stream.close()  # half-close: we still read the echo
            echoed = await stream.read()
            assert echoed == data
            assert stream.at_eof()
            stats = connection.statistics()
            assert stats.bytes_sent == len(data) and stats.smoothed_rtt_ns > 0
            task.cancel()

    run(main())


@pytest.mark.parametrize("mode", ["digest", "echo"])
@pytest.mark.parametrize("zero_rtt", [False, True])
def test_test_protocol_many_streams(mode: str, zero_rtt: bool) -> None:
    async def main() -> None:
        async with await listen("127.0.0.1", 0) as server, await listen("127.0.0.1", 0) as client:

            async def serve() -> None:
                async for connection in server:
                    asyncio.create_task(serve_connection(connection, mode))

            task = asyncio.create_task(serve())
            result = await run_client(
                client,
                server.local_address,
                streams=5,
                size=100_000,
                mode=mode,
                peer_public_key=server.public_key if zero_rtt else None,
                timeout=30,
            )
            assert result.ok, result.error
            assert result.total_bytes == 500_000
            task.cancel()

    run(main())


def test_accept_stream_and_readexactly() -> None:
    async def main() -> None:
        async with await listen("127.0.0.1", 0) as server, await listen("127.0.0.1", 0) as client:
            connection = await client.dial(server.local_address)
            outgoing = connection.stream(9)
            outgoing.write(b"0123456789")
            await outgoing.drain()
            incoming_connection = await server.accept()
            incoming = await incoming_connection.accept_stream()
            assert incoming.stream_id == 9
            assert await incoming.readexactly(4) == b"0123"
            assert await incoming.readexactly(6) == b"456789"
            outgoing.close()
            with pytest.raises(asyncio.IncompleteReadError):
                await incoming.readexactly(1)

    run(main())


def test_streams_beyond_max_streams_raise_and_finished_streams_are_forgotten() -> None:
    async def main() -> None:
        two = QotpConfiguration(max_streams=2)
        async with (
            await listen("127.0.0.1", 0) as server,
            await listen("127.0.0.1", 0, configuration=two) as client,
        ):
            task = asyncio.create_task(echo_server(server))
            connection = await client.dial(server.local_address)
            first, second, third = (connection.stream(index) for index in (1, 2, 3))
            first.write(b"one")
            second.write(b"two")
            with pytest.raises(LocalProtocolError, match="max_streams"):
                third.write(b"three")
            with pytest.raises(LocalProtocolError, match="max_streams"):
                third.close()
            first.close()
            assert await first.read() == b"one"
            await first.wait_closed()
            assert first.at_eof() and await first.read() == b""
            assert 1 not in connection._streams  # no object kept per finished stream
            third.write(b"three")  # a slot is free again; nothing of the refused write
            third.close()
            assert await third.read() == b"three"
            with pytest.raises(LocalProtocolError, match="reused"):
                connection.stream(1).write(b"again")
            second.close()
            assert await second.read() == b"two"
            task.cancel()

    run(main())


def test_dial_to_nobody_fails_with_timeout() -> None:
    async def main() -> None:
        async with await listen("127.0.0.1", 0) as client:
            with pytest.raises((TimeoutError, ConnectionClosedError)):
                await client.dial(("127.0.0.1", 9), timeout=0.5)

    run(main())


def closed_port() -> int:
    """A loopback UDP port nobody listens on (the kernel answers ICMP port unreachable)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.mark.skipif(sys.platform != "linux", reason="IP_RECVERR is Linux's")
def test_icmp_errors_end_a_dial_to_a_closed_port_at_once() -> None:
    """Only with icmp_errors=True, only dials still handshaking; the socket stays usable."""

    async def main() -> None:
        port = closed_port()
        async with await listen("127.0.0.1", 0, icmp_errors=True) as client:
            with pytest.raises(ConnectionClosedError) as ended:
                await client.dial(("127.0.0.1", port), timeout=30)
            assert ended.value.reason is TerminationReason.ABORTED
            assert ended.value.detail == PORT_UNREACHABLE
            async with await listen("127.0.0.1", 0) as server:
                task = asyncio.create_task(echo_server(server))
                connection = await client.dial(server.local_address, timeout=10)
                stream = connection.stream(0)
                stream.write(b"still fine")
                stream.close()
                assert await stream.read() == b"still fine"
                task.cancel()
        async with await listen("127.0.0.1", 0) as client:  # the default: ICMP is ignored
            with pytest.raises(TimeoutError):
                await client.dial(("127.0.0.1", port), timeout=0.3)

    run(main())


def test_garbage_on_the_socket_does_not_disturb_a_transfer() -> None:
    async def main() -> None:
        async with await listen("127.0.0.1", 0) as server, await listen("127.0.0.1", 0) as client:
            task = asyncio.create_task(echo_server(server))
            loop = asyncio.get_running_loop()
            transport, _ = await loop.create_datagram_endpoint(
                asyncio.DatagramProtocol, remote_addr=server.local_address
            )
            for size in (0, 1, 38, 39, 100, 1400, 2000):
                transport.sendto(os.urandom(size))
            connection = await client.dial(server.local_address)
            stream = connection.stream(0)
            data = os.urandom(100_000)
            stream.write(data)
            stream.close()
            assert hashlib.sha256(await stream.read()).digest() == hashlib.sha256(data).digest()
            transport.close()
            stats = server.statistics()
            # The garbage is dropped (the empty datagram never counts), except that a
            # random 1400 or 2000 bytes can be a well-formed InitSnd (its cleartext keys
            # are any 32 bytes): that one waits in the handshake table instead.
            dropped = sum(v for k, v in stats.items() if k.startswith("dropped_"))
            assert dropped + stats["handshakes_in_progress"] >= 6
            task.cancel()

    run(main())


def test_lines_streams_iteration_peer_address_and_ping() -> None:
    """readline/readuntil, async for over streams and lines, get_extra_info, ping."""

    async def main() -> None:
        async with await listen("127.0.0.1", 0) as server, await listen("127.0.0.1", 0) as client:
            connection = await client.dial(server.local_address)
            for stream_id in (0, 1):
                stream = connection.stream(stream_id)
                stream.write(b"first line\nsecond;third\nno newline at the end")
                stream.close()
            incoming = await server.accept()
            assert incoming.get_extra_info("peername") == client.local_address
            assert incoming.peer_address == client.local_address
            assert incoming.get_extra_info("sockname") == server.local_address
            assert incoming.get_extra_info("peer_public_key") == client.public_key
            assert incoming.get_extra_info("nonsense", "default") == "default"
            seen = []
            async for stream in incoming:
                seen.append(stream.stream_id)
                if stream.stream_id == 0:
                    assert await stream.readline() == b"first line\n"
                    assert await stream.readuntil(b";") == b"second;"
                    assert await stream.read(3) == b"thi"  # the read-ahead comes first
                    assert await stream.readline() == b"rd\n"
                    with pytest.raises(asyncio.IncompleteReadError) as ended:
                        await stream.readuntil(b"\n")
                    assert ended.value.partial == b"no newline at the end"
                    assert await stream.readline() == b"" and stream.at_eof()
                else:
                    lines = [line async for line in stream]
                    assert lines == [b"first line\n", b"second;third\n", b"no newline at the end"]
                if len(seen) == 2:
                    break
            assert seen == [0, 1]
            before = connection.statistics().datagrams_sent
            connection.stream(7).ping()
            await asyncio.sleep(0.05)
            assert connection.statistics().datagrams_sent > before
            connection.close()
            incoming.close()
            await asyncio.wait_for(incoming.wait_closed(), 5)
            # Iterating a closed connection's streams just ends.
            assert [stream async for stream in incoming] == []
            with pytest.raises(ConnectionClosedError):
                incoming.stream(3).ping()

    run(main())


def test_readline_limit() -> None:
    async def main() -> None:
        async with await listen("127.0.0.1", 0) as server, await listen("127.0.0.1", 0) as client:
            connection = await client.dial(server.local_address)
            stream = connection.stream(0)
            stream.write(b"x" * 100_000 + b"\nshort\n")
            stream.close()
            incoming = await (await server.accept()).accept_stream()
            with pytest.raises(asyncio.LimitOverrunError):
                await incoming.readuntil(b"\n", limit=1000)
            with pytest.raises(ValueError):
                await incoming.readline()  # over asyncio's 64 KiB: consumed and refused
            remaining = await incoming.read()
            assert remaining.endswith(b"\nshort\n")

    run(main())


def test_adopting_a_socket() -> None:
    """listen(sock=...) takes a socket set up elsewhere (here: unbound, with an option)."""
    import socket

    async def main() -> None:
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", 0))
        address = sock.getsockname()
        async with await listen(sock=sock) as server, await listen("127.0.0.1", 0) as client:
            assert server.local_address == address
            assert sock.getsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR)
            task = asyncio.create_task(echo_server(server))
            result = await run_client(client, address, streams=2, size=50_000, mode="echo")
            assert result.ok, result.error
            task.cancel()
        assert sock.fileno() == -1  # the listener owned and closed it
        with pytest.raises(LocalProtocolError):
            await listen(sock=socket.socket(socket.AF_INET, socket.SOCK_STREAM))


def test_read_after_idle_timeout_raises_instead_of_reporting_the_end() -> None:
    """A peer that vanishes mid-stream: the bytes that came are read, then the truncation raises."""

    async def main() -> None:
        quick = QotpConfiguration(idle_timeout_ns=300_000_000)
        async with await listen("127.0.0.1", 0, configuration=quick) as server:
            async with await listen("127.0.0.1", 0) as client:
                connection = await client.dial(server.local_address)
                stream = connection.stream(1)
                stream.write(b"partial")
                await stream.drain()
                accepted = await server.accept()
                incoming = await accepted.accept_stream()
                assert await incoming.read(7) == b"partial"
                client.socket.close()  # the peer vanishes without finishing the stream
                with pytest.raises(ConnectionClosedError) as raised:
                    await incoming.read()
                assert raised.value.reason is TerminationReason.IDLE_TIMEOUT
                assert accepted.close_reason is TerminationReason.IDLE_TIMEOUT
                with pytest.raises(ConnectionClosedError):
                    await incoming.read()  # and it stays raised, never b""

    run(main())


def test_read_of_a_stream_the_peer_finished_ends_cleanly_after_abort() -> None:
    async def main() -> None:
        async with await listen("127.0.0.1", 0) as server, await listen("127.0.0.1", 0) as client:
            connection = await client.dial(server.local_address)
            finished, unfinished = connection.stream(1), connection.stream(2)
            finished.write(b"whole")
            finished.close()
            unfinished.write(b"half")
            await finished.drain()
            await unfinished.drain()
            accepted = await server.accept()
            streams = {}
            for _ in range(2):
                incoming = await accepted.accept_stream()
                streams[incoming.stream_id] = incoming
            assert await streams[1].read() == b"whole"
            assert await streams[2].read(4) == b"half"
            accepted.abort()
            assert await streams[1].read() == b""
            with pytest.raises(ConnectionClosedError) as raised:
                await streams[2].read()
            assert raised.value.reason is TerminationReason.ABORTED

    run(main())


def test_echo_client_is_done_when_its_close_is_acknowledged() -> None:
    """A server that echoes but never sends its own CLOSE, as the reference may not
    (SPEC.md section 9): the client has every byte and its CLOSE acknowledged, so it is
    done, instead of waiting for the idle timeout."""

    async def echo_without_close(connection: QotpConnection) -> None:
        stream = await connection.accept_stream()
        while chunk := await stream.read(65536):
            stream.write(chunk)
            await stream.drain()

    async def main() -> None:
        async with await listen("127.0.0.1", 0) as server, await listen("127.0.0.1", 0) as client:

            async def serve() -> None:
                async for connection in server:
                    asyncio.create_task(echo_without_close(connection))

            task = asyncio.create_task(serve())
            result = await run_client(
                client, server.local_address, streams=1, size=300_000, mode="echo", timeout=20
            )
            assert result.ok, result.error
            task.cancel()

    run(main())


def test_wait_send_finished_raises_when_the_connection_ends_first() -> None:
    async def main() -> None:
        async with await listen("127.0.0.1", 0) as server, await listen("127.0.0.1", 0) as client:
            connection = await client.dial(server.local_address)
            stream = connection.stream(0)
            stream.write(b"x" * 1000)
            stream.close()
            await asyncio.wait_for(stream.wait_send_finished(), 10)  # acknowledged
            other = connection.stream(1)
            other.write(b"y")
            connection.abort()
            with pytest.raises(ConnectionClosedError):
                await other.wait_send_finished()

    run(main())
