"""asyncio adapter over real UDP loopback sockets."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest
from dtls_helpers import configs

import dtls.asyncio as dtls_asyncio
from dtls.asyncio.blocking import _LoopThread, blocking_connect
from dtls.config import DTLSConfiguration


async def _echo(server: dtls_asyncio.DTLSServer, count: int) -> None:
    async def serve_one(connection: dtls_asyncio.AsyncDTLSConnection) -> None:
        while data := await connection.recv():
            await connection.send(data.upper())
        connection.close()

    tasks = []
    for _ in range(count):
        connection = await server.accept()
        tasks.append(asyncio.create_task(serve_one(connection)))
    await asyncio.gather(*tasks)


def test_server_with_several_clients_and_clean_close() -> None:
    client_config, server_config, _ = configs(alpn_protocols=("echo",))
    server_config = DTLSConfiguration(
        is_client=False,
        certificate_chain=server_config.certificate_chain,
        private_key=server_config.private_key,
        alpn_protocols=("echo",),
    )

    async def main() -> None:
        async with dtls_asyncio.serve("127.0.0.1", 0, server_config) as server:
            host, port = server.local_address
            echo = asyncio.create_task(_echo(server, 3))

            async def client(index: int) -> None:
                async with dtls_asyncio.connect(host, port, client_config) as connection:
                    assert connection.alpn_protocol == "echo"
                    assert connection.negotiated_version == "DTLSv1.2"
                    for round_number in range(3):
                        await connection.send(f"c{index} r{round_number}".encode())
                        assert await connection.recv() == f"C{index} R{round_number}".encode()
                    connection.shutdown(read=False, write=True)
                    assert await connection.recv() == b""  # server answered with close_notify

            await asyncio.wait_for(asyncio.gather(*(client(i) for i in range(3))), 20)
            await asyncio.wait_for(echo, 5)
            assert server.endpoint.internal_errors == 0

    asyncio.run(main())


def test_failed_handshake_raises_connection_error() -> None:
    client_config, server_config, _ = configs(server_name="wrong.test")

    async def main() -> None:
        async with dtls_asyncio.serve("127.0.0.1", 0, server_config) as server:
            host, port = server.local_address
            with pytest.raises(ConnectionError):
                await asyncio.wait_for(dtls_asyncio.connect(host, port, client_config), 10)

    asyncio.run(main())


def test_blocking_wrapper_against_asyncio_server() -> None:
    client_config, server_config, _ = configs()
    ready = threading.Event()
    address: list[tuple[str, int]] = []
    stop: list[asyncio.AbstractEventLoop] = []

    async def server_main() -> None:
        async with dtls_asyncio.serve("127.0.0.1", 0, server_config) as server:
            address.append(server.local_address)
            stop.append(asyncio.get_running_loop())
            ready.set()
            await _echo(server, 1)

    thread = threading.Thread(target=asyncio.run, args=(server_main(),), daemon=True)
    thread.start()
    assert ready.wait(10)
    host, port = address[0]
    with blocking_connect(host, port, client_config, timeout=10) as connection:
        connection.send(b"blocking hello")
        assert connection.recv(timeout=10) == b"BLOCKING HELLO"
    thread.join(10)
    assert not thread.is_alive()


def test_handshake_timeout_raises_handshake_timeout() -> None:
    import socket

    from dtls.errors import HandshakeTimeout

    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as silent:
        silent.bind(("127.0.0.1", 0))  # bound but never answers: no ICMP, just silence
        port = silent.getsockname()[1]
        configuration = DTLSConfiguration(
            is_client=True, verify_peer=False, handshake_timeout_ns=2_000_000_000
        )

        async def main() -> None:
            with pytest.raises(HandshakeTimeout):
                await asyncio.wait_for(dtls_asyncio.connect("127.0.0.1", port, configuration), 10)

        asyncio.run(main())


@pytest.mark.parametrize("require", [True, False])
def test_require_close_notify(require: bool) -> None:
    client_config, server_config, _ = configs(require_close_notify=require)

    async def main() -> None:
        async with dtls_asyncio.serve("127.0.0.1", 0, server_config) as server:
            host, port = server.local_address
            async with dtls_asyncio.connect(host, port, client_config) as connection:
                await server.accept()
                connection.connection.abort("transport gone")  # no close_notify came
                if require:
                    with pytest.raises(ConnectionError):
                        await connection.recv()
                else:
                    assert await connection.recv() == b""

    asyncio.run(main())


def test_connection_id_over_udp() -> None:
    client_config, server_config, _ = configs(connection_id=b"")

    async def main() -> None:
        async with dtls_asyncio.serve(
            "127.0.0.1", 0, server_config, connection_id_bytes=8
        ) as server:
            host, port = server.local_address
            async with dtls_asyncio.connect(host, port, client_config) as connection:
                accepted = await server.accept()
                assert len(connection.peer_connection_id) == 8
                assert accepted.connection_id == connection.peer_connection_id
                await connection.send(b"with a connection id")
                assert await asyncio.wait_for(accepted.recv(), 5) == b"with a connection id"

    asyncio.run(main())


def test_accept_after_close_raises() -> None:
    _, server_config, _ = configs()

    async def main() -> None:
        server = await dtls_asyncio.serve("127.0.0.1", 0, server_config).start()
        waiter = asyncio.create_task(server.accept())
        await asyncio.sleep(0)
        server.close()
        with pytest.raises(ConnectionError):
            await asyncio.wait_for(waiter, 5)

    asyncio.run(main())


@pytest.mark.parametrize("abort_on_unreachable", [False, True])
def test_an_icmp_error_after_the_handshake_ends_the_session_only_when_asked(
    abort_on_unreachable: bool,
) -> None:
    """The server's socket goes away without a close_notify (a killed process).  By
    default an authenticated session outlives a (forgeable) ICMP error; with
    ``abort_on_unreachable`` it ends, as openssl s_client's does."""
    client_config, server_config, _ = configs()

    async def main() -> None:
        async with dtls_asyncio.serve("127.0.0.1", 0, server_config) as server:
            host, port = server.local_address
            accepted = asyncio.ensure_future(server.accept())
            connection = await dtls_asyncio.connect(
                host, port, client_config, abort_on_unreachable=abort_on_unreachable
            )
            await asyncio.wait_for(accepted, 5)
            assert server.protocol is not None and server.protocol.udp is not None
            server.protocol.udp.close()  # no close_notify: the port is simply closed
            await connection.send(b"anyone?")  # draws an ICMP port unreachable
            if abort_on_unreachable:
                with pytest.raises(ConnectionRefusedError, match="stopped answering"):
                    await asyncio.wait_for(connection.recv(), 5)
                with pytest.raises(ConnectionRefusedError):
                    await connection.send(b"still there?")
            else:
                await asyncio.sleep(0.2)
                assert connection.connection.is_established
            await connection.__aexit__(None, None, None)

    asyncio.run(main())


def test_client_aimed_at_a_closed_port_fails_at_once_from_the_icmp_error() -> None:
    # Issue 9: this used to wait for the 60 s handshake timeout.
    import socket

    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]  # closed again when the block ends
    configuration = DTLSConfiguration(is_client=True, verify_peer=False)

    async def main() -> None:
        loop = asyncio.get_running_loop()
        started = loop.time()
        with pytest.raises(ConnectionRefusedError, match="port is closed"):
            await asyncio.wait_for(dtls_asyncio.connect("127.0.0.1", port, configuration), 30)
        assert loop.time() - started < 30  # the retransmit timer (1 s) never mattered

    asyncio.run(main())


def test_datagrams_are_handled_in_batches() -> None:
    client_config, server_config, _ = configs()

    async def main() -> None:
        async with dtls_asyncio.serve("127.0.0.1", 0, server_config) as server:
            host, port = server.local_address
            async with dtls_asyncio.connect(host, port, client_config) as connection:
                accepted = await server.accept()
                for index in range(200):
                    connection.connection.send(index.to_bytes(2, "big"))
                connection._protocol.flush(connection.connection)  # 200 datagrams at once
                received = [await asyncio.wait_for(accepted.recv(), 5) for _ in range(200)]
                assert received == [index.to_bytes(2, "big") for index in range(200)]
                assert server.protocol is not None and server.protocol.udp is not None
                batches = server.protocol.batches
                assert server.protocol.udp.datagrams_received > batches  # more than one each

    asyncio.run(main())


def test_adopting_existing_sockets() -> None:
    import socket

    client_config, server_config, _ = configs()
    server_socket = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    server_socket.bind(("127.0.0.1", 0))
    host, port = server_socket.getsockname()
    client_socket = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)  # unconnected

    async def main() -> None:
        async with dtls_asyncio.serve(sock=server_socket, configuration=server_config) as server:
            assert server.local_address == (host, port)
            async with dtls_asyncio.connect(
                host, port, client_config, sock=client_socket
            ) as connection:
                accepted = await server.accept()
                await connection.send(b"over adopted sockets")
                assert await accepted.recv() == b"over adopted sockets"

    asyncio.run(main())
    assert server_socket.fileno() == -1 and client_socket.fileno() == -1  # closed with them


def test_blocking_server_accept_with_timeout_and_blocking_client() -> None:
    client_config, server_config, _ = configs()
    with dtls_asyncio.blocking_serve("127.0.0.1", 0, server_config) as server:
        with pytest.raises(TimeoutError):
            server.accept(timeout=0.05)
        host, port = server.local_address
        results: list[bytes] = []

        def client() -> None:
            with dtls_asyncio.blocking_connect(host, port, client_config, timeout=10) as conn:
                conn.send(b"ping")
                results.append(conn.recv(timeout=10))

        thread = threading.Thread(target=client)
        thread.start()
        connection = server.accept(timeout=10)
        assert connection.info.version_name == "DTLSv1.2"
        data = connection.recv(timeout=10)
        connection.send(data.upper())
        thread.join(10)
        assert results == [b"PING"]
        assert connection.recv(timeout=10) == b""  # the client's close_notify
        connection.close()
    with pytest.raises(ConnectionError):
        server.accept(timeout=1)


def test_blocking_call_whose_work_completes_late_returns_it_instead_of_dropping_it() -> None:
    """The loop is busy past the caller's timeout while the work completes (an accept or
    a recv finding its connection or datagram in the same turn): the result must reach
    the caller, not be thrown away with a TimeoutError."""
    runner = _LoopThread()
    try:

        async def completes_while_the_loop_is_busy() -> str:
            time.sleep(0.3)  # the loop thread is busy; the caller's 0.1 s run out meanwhile
            return "the accepted connection"

        assert runner.run(completes_while_the_loop_is_busy(), 0.1) == "the accepted connection"

        async def never() -> None:
            await asyncio.Event().wait()

        with pytest.raises(TimeoutError, match="no result within"):
            runner.run(never(), 0.05)

        async def from_the_loop_thread() -> None:
            runner.run(never(), None)  # would wait for itself forever

        with pytest.raises(RuntimeError, match="own loop thread"):
            runner.run(from_the_loop_thread(), 5)
    finally:
        runner.stop()
