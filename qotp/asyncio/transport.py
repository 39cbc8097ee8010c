"""The UDP socket under the asyncio API: batched reads and writes, GSO/GRO on Linux.

The stock ``DatagramProtocol`` path costs one event-loop callback per
datagram; reading in a loop from ``loop.add_reader`` until the socket is
empty moves several times more datagrams per second.  On Linux, UDP generic
segmentation offload (``UDP_SEGMENT``, level 17, option 103) sends a run of
equal-sized datagrams to one address with a single ``sendmsg``, and generic
receive offload (``UDP_GRO``, option 104) hands back coalesced runs; both
cut the per-datagram system-call cost several times.  Everything falls back
to plain ``sendto`` / ``recvfrom`` where the kernel says no.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import socket
import struct
import sys
from collections import deque
from collections.abc import Callable

from dtls.asyncio.udp import QueuedWriteSocket, read_queued_icmp_error
from qotp.protection import Address

__all__ = ["UdpSocket"]

logger = logging.getLogger(__name__)

SOL_UDP = 17
UDP_SEGMENT = 103
UDP_GRO = 104
MAX_GSO_SEGMENTS = 64
"""The kernel accepts at most 64 segments per GSO send."""
MAX_GSO_BYTES = 65_000
"""A GSO run travels as one UDP datagram until the kernel splits it: under 64 KiB."""
MAX_READS_PER_WAKEUP = 512
RECEIVE_BUFFER_BYTES = 32 * 1024 * 1024
"""Kernel receive buffer asked for: about 14,000 full-size datagrams (0.7 s of a
20,000 per second flood), so a burst never costs legitimate packets while the
engine works.  Root gets it whatever ``net.core.rmem_max`` says (SO_RCVBUFFORCE)."""
SEND_BUFFER_BYTES = 4 * 1024 * 1024
_SO_RCVBUFFORCE = getattr(socket, "SO_RCVBUFFORCE", 33)
GRO_BUFFER_BYTES = 65_535

_U16 = struct.Struct("=H")
_GRO_CMSG_SPACE = socket.CMSG_SPACE(4)
_IP_RECVERR = getattr(socket, "IP_RECVERR", 11)
_IPV6_RECVERR = getattr(socket, "IPV6_RECVERR", 25)
MAX_ERRORS_PER_WAKEUP = 64

ErrorHandler = Callable[[OSError, Address], None]
"""Takes an ICMP error the kernel reported and the destination of the datagram it answers."""


class UdpSocket(QueuedWriteSocket[tuple[bytes, Address]]):
    """A non-blocking UDP socket driven by the event loop's reader/writer callbacks."""

    def __init__(
        self,
        sock: socket.socket,
        loop: asyncio.AbstractEventLoop,
        on_datagrams: Callable[[list[tuple[bytes, Address]]], None],
        on_error: ErrorHandler | None = None,
    ) -> None:
        """``on_error``: report ICMP errors (Linux ``IP_RECVERR``; elsewhere never called)."""
        super().__init__(sock, loop)
        self._on_error = on_error
        self._on_datagrams = on_datagrams
        self.backlogged = False
        """The last read stopped at MAX_READS_PER_WAKEUP with datagrams still queued."""
        sock.setblocking(False)
        for options, value in (
            ((_SO_RCVBUFFORCE, socket.SO_RCVBUF), RECEIVE_BUFFER_BYTES),
            ((socket.SO_SNDBUF,), SEND_BUFFER_BYTES),
        ):
            for option in options:  # the privileged way first, then what rmem_max allows
                try:
                    sock.setsockopt(socket.SOL_SOCKET, option, value)
                    break
                except OSError:
                    continue
        self._gso = sys.platform == "linux" and sock.family in (socket.AF_INET, socket.AF_INET6)
        self._gro = False
        if self._gso:
            try:
                sock.setsockopt(SOL_UDP, UDP_GRO, 1)
                self._gro = True
            except OSError:
                self._gro = False
        if on_error is not None and sys.platform == "linux":
            # An unconnected socket hears of ICMP errors only with IP_RECVERR (ip(7)); a
            # v6 socket may carry v4-mapped traffic, so it asks for both.
            levels = [(socket.IPPROTO_IP, _IP_RECVERR)]
            if sock.family == socket.AF_INET6:
                levels.append((socket.IPPROTO_IPV6, _IPV6_RECVERR))
            for level, option in levels:
                try:
                    sock.setsockopt(level, option, 1)
                except OSError as error:
                    logger.debug("IP_RECVERR refused: %s", error)
        loop.add_reader(sock.fileno(), self._read_ready)

    @property
    def local_address(self) -> Address:
        """The bound (host, port)."""
        name = self.sock.getsockname()
        return (str(name[0]), int(name[1]))

    # -- receiving ------------------------------------------------------------

    def _read_ready(self) -> None:
        datagrams: list[tuple[bytes, Address]] = []
        sock = self.sock
        # True unless the socket ran dry below: more datagrams wait in the kernel.
        self.backlogged = True
        try:
            if self._gro:
                for _ in range(MAX_READS_PER_WAKEUP):
                    data, ancillary, _flags, address = sock.recvmsg(
                        GRO_BUFFER_BYTES, _GRO_CMSG_SPACE
                    )
                    segment = 0
                    for level, kind, value in ancillary:
                        if level == SOL_UDP and kind == UDP_GRO and len(value) >= 2:
                            # The kernel reports the segment size as a C int.
                            segment = int.from_bytes(value[:4], sys.byteorder)
                    peer = (address[0], address[1])
                    if segment and len(data) > segment:
                        for start in range(0, len(data), segment):
                            datagrams.append((data[start : start + segment], peer))
                    else:
                        datagrams.append((data, peer))
            else:
                for _ in range(MAX_READS_PER_WAKEUP):
                    data, address = sock.recvfrom(GRO_BUFFER_BYTES)
                    datagrams.append((data, (address[0], address[1])))
        except (BlockingIOError, InterruptedError):
            self.backlogged = False
        except OSError as error:
            self.backlogged = False
            # ICMP errors (port unreachable) surface here on Linux, with IP_RECVERR.
            logger.debug("recv error: %s", error)
            if self._on_error is not None:
                self._read_errors()
        if datagrams:
            self.datagrams_received += len(datagrams)
            self._on_datagrams(datagrams)

    def _read_errors(self) -> None:
        """Empty the error queue (else the socket stays readable), reporting each error."""
        assert self._on_error is not None
        for _ in range(MAX_ERRORS_PER_WAKEUP):
            queued = read_queued_icmp_error(self.sock)
            if queued is None:
                return  # empty (or not Linux)
            error, destination = queued
            if destination is not None:  # where the datagram the error answers went
                self._on_error(error, destination)

    # -- sending --------------------------------------------------------------

    def send(self, datagrams: list[tuple[bytes, Address]]) -> None:
        """Send now what the kernel takes; queue the rest until the socket is writable."""
        if self._closed:
            return
        if self._backlog:
            self._backlog.extend(datagrams)
            return
        self._send_list(datagrams)

    def _send_list(
        self, datagrams: list[tuple[bytes, Address]] | deque[tuple[bytes, Address]]
    ) -> None:
        sock = self.sock
        index = 0
        count = len(datagrams)
        items = list(datagrams)
        while index < count:
            data, address = items[index]
            run = 1
            if self._gso:
                size = len(data)
                # At most 64 segments, and the whole run must fit one 64 KiB UDP datagram.
                max_run = min(MAX_GSO_SEGMENTS, MAX_GSO_BYTES // size) if size else 1
                while (
                    index + run < count
                    and run < max_run
                    and items[index + run][1] == address
                    and len(items[index + run][0]) == size
                ):
                    run += 1
                # A shorter final segment is allowed by GSO.
                if (
                    index + run < count
                    and run < max_run
                    and items[index + run][1] == address
                    and len(items[index + run][0]) < size
                ):
                    run += 1
            try:
                if run > 1:
                    sock.sendmsg(
                        [item[0] for item in items[index : index + run]],
                        [(SOL_UDP, UDP_SEGMENT, _U16.pack(len(data)))],
                        0,
                        address,
                    )
                else:
                    sock.sendto(data, address)
            except (BlockingIOError, InterruptedError):
                self._backlog.extend(items[index:])
                self._arm_writer()
                return
            except OSError as error:
                if run > 1 and error.errno in (
                    errno.EIO,
                    errno.EINVAL,
                    errno.ENOPROTOOPT,
                    errno.EOPNOTSUPP,
                ):
                    logger.debug("GSO refused (%s); sending datagrams one by one", error)
                    self._gso = False
                    continue
                # Unreachable peers, oversize datagrams: the protocol copes with loss.
                self.send_errors += 1
                logger.debug("send error to %s: %s", address, error)
            self.datagrams_sent += run
            index += run
