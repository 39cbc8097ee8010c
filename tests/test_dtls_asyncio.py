"""asyncio adapter over real UDP loopback sockets."""

from __future__ import annotations

import asyncio
import threading

import pytest
from dtls_helpers import configs

import dtls.asyncio as dtls_asyncio
from dtls.asyncio.blocking import blocking_connect
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
