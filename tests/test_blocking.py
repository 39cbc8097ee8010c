"""``qotp.blocking``: the blocking facade over real loopback sockets, with timeouts."""

from __future__ import annotations

import socket
import threading

import pytest

from qotp.asyncio import ConnectionClosedError
from qotp.blocking import BlockingListener, listen
from qotp.errors import LocalProtocolError
from qotp.events import TerminationReason


def echo_in_a_thread(server: BlockingListener, streams: int = 1) -> threading.Thread:
    """Echo ``streams`` streams of the first connection in capitals, line by line."""

    def serve() -> None:
        with server.accept(timeout=10) as connection:
            for count, stream in enumerate(connection, 1):
                for line in stream:
                    stream.write(line.upper())
                stream.close()
                if count == streams:
                    break

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    return thread


def test_echo_with_threads_lines_and_iteration() -> None:
    with listen("127.0.0.1", 0) as server, listen("127.0.0.1", 0) as client:
        thread = echo_in_a_thread(server, streams=2)
        connection = client.dial(server.local_address, timeout=10)
        assert connection.get_extra_info("peername") == server.local_address
        assert connection.peer_public_key == server.public_key
        for stream_id in (0, 4):
            stream = connection.stream(stream_id)
            stream.write(b"hello\nworld\n", timeout=10)
            stream.close()
            assert stream.readline(timeout=10) == b"HELLO\n"
            assert stream.read(timeout=10) == b"WORLD\n"
            assert stream.at_eof()
        connection.close()
        connection.wait_closed(timeout=10)
        assert connection.close_reason is TerminationReason.CLOSED
        thread.join(10)
        assert not thread.is_alive()


def test_zero_rtt_and_statistics() -> None:
    with listen("127.0.0.1", 0) as server, listen("127.0.0.1", 0) as client:
        echo_in_a_thread(server)
        connection = client.dial(
            server.local_address, peer_public_key=server.public_key, timeout=10
        )
        stream = connection.stream(0)
        stream.write(b"ping\n")
        assert stream.readuntil(b"\n", timeout=10) == b"PING\n"
        stream.ping()
        assert connection.statistics().datagrams_received > 0
        assert server.statistics()["datagrams_received"] > 0


def test_timeouts_leave_objects_usable() -> None:
    with listen("127.0.0.1", 0) as server, listen("127.0.0.1", 0) as client:
        with pytest.raises(TimeoutError):
            server.accept(timeout=0.05)
        connection = client.dial(server.local_address, timeout=10)
        stream = connection.stream(0)
        stream.write(b"partial line without end")
        incoming = server.accept(timeout=10).accept_stream(timeout=10)
        with pytest.raises(TimeoutError):
            incoming.readline(timeout=0.2)
        # Nothing was lost to the timed-out readline.
        stream.write(b"\n")
        assert incoming.readline(timeout=10) == b"partial line without end\n"
        with pytest.raises(TimeoutError):
            incoming.read(10, timeout=0.05)


def test_dial_to_nobody_times_out_and_closed_connections_raise() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as silent:
        silent.bind(("127.0.0.1", 0))
        with listen("127.0.0.1", 0) as client:
            with pytest.raises(TimeoutError):
                client.dial(silent.getsockname(), timeout=0.3)
    with listen("127.0.0.1", 0) as server, listen("127.0.0.1", 0) as client:
        connection = client.dial(server.local_address, timeout=10)
        connection.abort()
        with pytest.raises(ConnectionClosedError):
            connection.stream(0).write(b"x")
        with pytest.raises(ConnectionClosedError):
            connection.accept_stream(timeout=1)
    with pytest.raises(LocalProtocolError, match="closed"):
        server.accept(timeout=1)
    server.close()  # twice is fine


def test_adopted_socket() -> None:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    with listen(sock=sock) as server, listen() as client:
        assert server.local_address == sock.getsockname()
        echo_in_a_thread(server)
        stream = client.dial(server.local_address, timeout=10).stream(0)
        stream.write(b"adopted\n")
        assert stream.readline(timeout=10) == b"ADOPTED\n"
