"""The UDP socket under the DTLS asyncio adapter: batched reads, queued writes, ICMP errors.

The stock ``DatagramProtocol`` path costs one event-loop callback per
datagram.  Here the socket's reader callback reads until the socket is empty
(at most ``MAX_READS_PER_WAKEUP`` datagrams) and hands the whole batch over
at once, so the endpoint processes them in one pass, sends once and re-arms
its timer once per wake-up.  Writes go straight out; what the kernel refuses
with EAGAIN waits for the socket to become writable, in order.

ICMP errors: on a *connected* socket (a client created by
:func:`dtls.asyncio.connect`), Linux reports an ICMP port unreachable as
``ConnectionRefusedError`` on the next read; :class:`DatagramSocket` passes
it to ``on_error`` so a handshake to a dead port fails at once instead of
after the handshake timeout.  On an unconnected socket the kernel says
nothing unless ``IP_RECVERR`` is set, which :class:`SocketOptions` can do:
the error then carries the address the failed datagram went to.

Socket options (:class:`SocketOptions`, applied to sockets we create, and to
adopted ones only for the fields given): receive/send buffer sizes (4 MiB by
default, best effort: the kernel caps them at ``net.core.rmem_max``), TTL /
hop limit, ``IPV6_V6ONLY``, ``SO_BINDTODEVICE`` (Linux, needs privileges)
and ``IP_RECVERR``.  The socket is always switched to non-blocking.  An
adopted socket (a file descriptor handed over by another task, as the seeds'
``createByFd`` or GLib's ``GDatagramBased`` do) keeps its binding and
connection; closing the DTLS side closes it.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import os
import socket
import struct
import sys
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Generic, TypeVar

__all__ = [
    "MAX_READS_PER_WAKEUP",
    "DatagramSocket",
    "QueuedWriteSocket",
    "SocketOptions",
    "open_udp_socket",
    "read_queued_icmp_error",
]

logger = logging.getLogger(__name__)

Address = tuple[str, int]
MAX_READS_PER_WAKEUP = 256
MAX_DATAGRAM_BYTES = 65_535
DEFAULT_BUFFER_BYTES = 4 * 1024 * 1024
# Linux values where the socket module lacks the names.
_IP_RECVERR = getattr(socket, "IP_RECVERR", 11)
_IPV6_RECVERR = getattr(socket, "IPV6_RECVERR", 25)
_SO_EE_ORIGIN_ICMP = 2
_SO_EE_ORIGIN_ICMP6 = 3
_EXTENDED_ERROR = struct.Struct("=IBBBBII")  # errno, origin, type, code, pad, info, data


def read_queued_icmp_error(sock: socket.socket) -> tuple[OSError, Address | None] | None:
    """The next ICMP error in the socket's error queue, and where the datagram it answers
    went (``msg_name``, ip(7)); None when the queue is empty or the platform has none.

    Linux queues ICMP errors for a socket with ``IP_RECVERR``; the queue must be read,
    or the socket stays readable.  The QOTP socket layer reads it too: the one copy
    lives here, since this package never depends on the QOTP one.
    """
    if sys.platform != "linux":
        return None
    try:
        _, ancillary, _, address = sock.recvmsg(1, 512, socket.MSG_ERRQUEUE)
    except OSError:
        return None  # empty: the connected-socket case reports the error on a read
    for level, kind, value in ancillary:
        if (level, kind) in (
            (socket.IPPROTO_IP, _IP_RECVERR),
            (socket.IPPROTO_IPV6, _IPV6_RECVERR),
        ) and len(value) >= _EXTENDED_ERROR.size:
            number = _EXTENDED_ERROR.unpack_from(value)[0]
            if number:
                error = (
                    ConnectionRefusedError(number, os.strerror(number))
                    if number == errno.ECONNREFUSED
                    else OSError(number, os.strerror(number))
                )
                return error, (_address(address) if address else None)
    return None


@dataclass(frozen=True, slots=True, kw_only=True)
class SocketOptions:
    """Options for the UDP socket under a DTLS server or client (None: leave as is)."""

    receive_buffer_bytes: int | None = DEFAULT_BUFFER_BYTES
    send_buffer_bytes: int | None = DEFAULT_BUFFER_BYTES
    ttl: int | None = None  # IP_TTL, or IPV6_UNICAST_HOPS on IPv6 sockets
    ipv6_only: bool | None = None  # IPV6_V6ONLY (IPv6 sockets, before bind)
    device: str | None = None  # SO_BINDTODEVICE (Linux; needs CAP_NET_RAW)
    receive_icmp_errors: bool = sys.platform == "linux"  # IP_RECVERR / IPV6_RECVERR

    def apply(self, sock: socket.socket, *, before_bind: bool = False) -> None:
        """Set what is set here; options the platform refuses are logged, not fatal."""
        ipv6 = sock.family == socket.AF_INET6
        settings: list[tuple[int, int, int | bytes]] = []
        if self.receive_buffer_bytes is not None:
            settings.append((socket.SOL_SOCKET, socket.SO_RCVBUF, self.receive_buffer_bytes))
        if self.send_buffer_bytes is not None:
            settings.append((socket.SOL_SOCKET, socket.SO_SNDBUF, self.send_buffer_bytes))
        if self.ttl is not None:
            if ipv6:
                settings.append((socket.IPPROTO_IPV6, socket.IPV6_UNICAST_HOPS, self.ttl))
            else:
                settings.append((socket.IPPROTO_IP, socket.IP_TTL, self.ttl))
        if self.ipv6_only is not None and ipv6 and before_bind:
            settings.append((socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, int(self.ipv6_only)))
        if self.device is not None:
            settings.append(
                (socket.SOL_SOCKET, getattr(socket, "SO_BINDTODEVICE", 25), self.device.encode())
            )
        if self.receive_icmp_errors and sys.platform == "linux":
            if ipv6:
                settings.append((socket.IPPROTO_IPV6, _IPV6_RECVERR, 1))
            else:
                settings.append((socket.IPPROTO_IP, _IP_RECVERR, 1))
        for level, option, value in settings:
            try:
                sock.setsockopt(level, option, value)
            except OSError as error:
                logger.debug("socket option %d/%d refused: %s", level, option, error)


def open_udp_socket(
    local: tuple[str, int] | None,
    remote: tuple[str, int] | None = None,
    options: SocketOptions | None = None,
) -> socket.socket:
    """A non-blocking UDP socket bound to ``local`` and, for a client, connected to ``remote``.

    Host names are resolved here (blocking ``getaddrinfo``: call it from a thread
    or accept the short wait).  Raises ``OSError`` (``socket.gaierror`` for names).
    """
    options = options or SocketOptions()
    target = remote if remote is not None else local
    assert target is not None
    family = socket.AF_INET
    infos = socket.getaddrinfo(target[0], target[1], type=socket.SOCK_DGRAM)
    if infos:
        family = infos[0][0]
    sock = socket.socket(family, socket.SOCK_DGRAM)
    try:
        options.apply(sock, before_bind=True)
        if local is not None:
            sock.bind(local)
        if remote is not None:
            sock.connect(infos[0][4][:2] if infos else remote)
        sock.setblocking(False)
    except BaseException:
        sock.close()
        raise
    return sock


Item = TypeVar("Item")


class QueuedWriteSocket(Generic[Item]):
    """What a non-blocking UDP socket on the event loop needs whatever it reads and
    sends: writes the kernel refuses (EAGAIN) wait in ``_backlog``, in order, until the
    socket is writable; :meth:`close` stops both callbacks.  The QOTP socket layer
    builds on it too.  A subclass adds the reader callback and :meth:`_send_list`,
    which leaves what the kernel refused in ``_backlog`` and calls :meth:`_arm_writer`.
    """

    def __init__(self, sock: socket.socket, loop: asyncio.AbstractEventLoop) -> None:
        self.sock = sock
        self._loop = loop
        self._backlog: deque[Item] = deque()
        self._writer_armed = False
        self._closed = False
        self.datagrams_received = 0
        self.datagrams_sent = 0
        self.send_errors = 0

    def _send_list(self, datagrams: deque[Item]) -> None:
        raise NotImplementedError

    def _arm_writer(self) -> None:
        if not self._writer_armed and not self._closed:
            self._writer_armed = True
            self._loop.add_writer(self.sock.fileno(), self._write_ready)

    def _write_ready(self) -> None:
        self._writer_armed = False
        self._loop.remove_writer(self.sock.fileno())
        backlog, self._backlog = self._backlog, deque()
        self._send_list(backlog)

    def close(self) -> None:
        """Stop reading and writing and close the socket."""
        if self._closed:
            return
        self._closed = True
        self._loop.remove_reader(self.sock.fileno())
        if self._writer_armed:
            self._loop.remove_writer(self.sock.fileno())
        self.sock.close()


class DatagramSocket(QueuedWriteSocket[tuple[bytes, Address | None]]):
    """A non-blocking UDP socket driven by the event loop's reader and writer callbacks."""

    def __init__(
        self,
        sock: socket.socket,
        loop: asyncio.AbstractEventLoop,
        on_datagrams: Callable[[list[tuple[bytes, Address]]], None],
        on_error: Callable[[OSError, Address | None], None],
    ) -> None:
        if sock.type != socket.SOCK_DGRAM:
            raise ValueError("a DTLS endpoint needs a UDP (SOCK_DGRAM) socket")
        super().__init__(sock, loop)
        self._on_datagrams = on_datagrams
        self._on_error = on_error
        self.wakeups = 0
        sock.setblocking(False)
        try:
            self.peer: Address | None = _address(sock.getpeername())
        except OSError:
            self.peer = None
        loop.add_reader(sock.fileno(), self._read_ready)

    @property
    def local_address(self) -> Address:
        """The bound (host, port)."""
        return _address(self.sock.getsockname())

    @property
    def closed(self) -> bool:
        """Whether :meth:`close` ran."""
        return self._closed

    # -- receiving ------------------------------------------------------------

    def _read_ready(self) -> None:
        self.wakeups += 1
        datagrams: list[tuple[bytes, Address]] = []
        sock = self.sock
        peer = self.peer
        for _ in range(MAX_READS_PER_WAKEUP):
            try:
                if peer is not None:
                    datagrams.append((sock.recv(MAX_DATAGRAM_BYTES), peer))
                else:
                    data, address = sock.recvfrom(MAX_DATAGRAM_BYTES)
                    datagrams.append((data, _address(address)))
            except (BlockingIOError, InterruptedError):
                break
            except OSError as error:
                self._socket_error(error)
                break
        if datagrams:
            self.datagrams_received += len(datagrams)
            self._on_datagrams(datagrams)

    def _socket_error(self, error: OSError) -> None:
        """A read failed: an ICMP error; find out where the failed datagram went."""
        destination = self.peer
        queued = read_queued_icmp_error(self.sock)
        if queued is not None:
            error, address = queued
            if address is not None:
                destination = address
        logger.debug("socket error for %s: %s", destination, error)
        self._on_error(error, destination)

    # -- sending --------------------------------------------------------------

    def send(self, datagrams: list[tuple[bytes, Address | None]]) -> None:
        """Send now what the kernel takes; queue the rest until the socket is writable."""
        if self._closed:
            return
        if self._backlog:
            self._backlog.extend(datagrams)
            return
        self._send_list(deque(datagrams))

    def _send_list(self, datagrams: deque[tuple[bytes, Address | None]]) -> None:
        sock = self.sock
        while datagrams:
            data, address = datagrams[0]
            try:
                if self.peer is not None or address is None:
                    sock.send(data)
                else:
                    sock.sendto(data, address)
            except (BlockingIOError, InterruptedError):
                self._backlog = datagrams
                self._arm_writer()
                return
            except OSError as error:
                # ICMP errors of earlier datagrams may surface on a send; unreachable
                # routes and oversize datagrams too.  One lost datagram, not a dead socket.
                self.send_errors += 1
                logger.debug("send error to %s: %s", address, error)
                if isinstance(error, ConnectionRefusedError):
                    self._on_error(error, self.peer or address)
            else:
                self.datagrams_sent += 1
            datagrams.popleft()


def _address(address: object) -> Address:
    assert isinstance(address, tuple)
    return (str(address[0]), int(address[1]))
