"""The UDP socket under the DTLS adapter: batches, socket options, ICMP errors."""

from __future__ import annotations

import asyncio
import socket

import pytest

from dtls.asyncio.udp import DatagramSocket, SocketOptions, open_udp_socket


def test_one_wakeup_reads_everything_waiting() -> None:
    async def main() -> None:
        loop = asyncio.get_running_loop()
        batches: list[int] = []
        receiver = DatagramSocket(
            open_udp_socket(("127.0.0.1", 0)),
            loop,
            lambda datagrams: batches.append(len(datagrams)),
            lambda error, address: None,
        )
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sender:
            for index in range(50):
                sender.sendto(bytes([index]), receiver.local_address)
            await asyncio.sleep(0.2)
        receiver.close()
        assert sum(batches) == 50 and len(batches) < 50

    asyncio.run(main())


def test_socket_options_are_applied() -> None:
    sock = open_udp_socket(
        ("127.0.0.1", 0), options=SocketOptions(ttl=7, receive_buffer_bytes=65536)
    )
    with sock:
        assert sock.getsockopt(socket.IPPROTO_IP, socket.IP_TTL) == 7
        assert sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF) >= 65536  # Linux doubles it
        assert sock.gettimeout() == 0.0  # non-blocking


def test_icmp_errors_name_the_destination_on_an_unconnected_socket() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.bind(("127.0.0.1", 0))
        closed = probe.getsockname()

    async def main() -> list[tuple[type[OSError], object]]:
        loop = asyncio.get_running_loop()
        errors: list[tuple[type[OSError], object]] = []
        udp = DatagramSocket(
            open_udp_socket(("127.0.0.1", 0)),
            loop,
            lambda datagrams: None,
            lambda error, address: errors.append((type(error), address)),
        )
        udp.send([(b"anyone?", closed)])
        for _ in range(50):
            if errors:
                break
            await asyncio.sleep(0.01)
        udp.close()
        return errors

    errors = asyncio.run(main())
    if not errors:
        pytest.skip("this kernel reports no ICMP errors on unconnected sockets (IP_RECVERR)")
    assert errors[0] == (ConnectionRefusedError, closed)


def test_only_udp_sockets() -> None:
    async def main() -> None:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as tcp:
            with pytest.raises(ValueError, match="UDP"):
                DatagramSocket(tcp, asyncio.get_running_loop(), print, print)

    asyncio.run(main())
