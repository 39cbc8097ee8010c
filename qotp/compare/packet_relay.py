"""A packet-level impairment relay between two TUN devices: the path every transport can share.

A userspace relay that splices sockets (like :class:`qotp.compare.relay.UdpRelay`
for UDP) cannot make TCP lose a segment: its own TCP connections repair every
loss before the transport under test sees it.  This relay sits one layer lower.
It owns two TUN devices: ``client_device`` in the caller's network namespace
and ``server_device`` moved into a namespace of its own, with a point-to-point
address on each.  Every IP packet the kernel routes between the two addresses
is read by this process, given its fate by the seeded model of
:mod:`qotp.compare.impairment` (loss, delay, jitter, reordering, duplication,
rate cap) and written to the other device.  TCP, TLS, QUIC and QOTP packets
all take exactly this path, so one model applies to all of them and a
dropped TCP segment is a real loss that the kernel's TCP has to recover.

Bandwidth caps use the kernel's ``tbf`` qdisc on both devices (this kernel has
no netem), set with :data:`Command` ``{"tbf": bytes_per_s}``.

The devices are not persistent: they vanish with this process.  The
namespace is the caller's (:mod:`qotp.compare.namespaces`), which also removes it.

Run as ``python -m qotp.compare.packet_relay relay --namespace NS --client-address A
--server-address B``.  It prints one JSON line when ready, then answers JSON
commands, one per line on stdin: ``{"impairment": {...}}`` (replace the
model, reset the counters), ``{"stats": true}``, ``{"tbf": N | null}``.
End of stdin ends it.  The ``sink`` and ``blast`` subcommands measure its ceiling.
"""

from __future__ import annotations

import argparse
import dataclasses
import fcntl
import heapq
import json
import os
import select
import socket
import struct
import subprocess
import sys
import time
from collections.abc import Sequence
from typing import Any

from qotp.compare.impairment import Direction, ImpairedPath, Impairment, PathImpairment

__all__ = [
    "TBF_BURST_BYTES",
    "impairment_from_json",
    "impairment_to_json",
    "main",
]

_TUNSETIFF = 0x400454CA
_IFF_TUN = 0x0001
_IFF_NO_PI = 0x1000
MAX_PACKET_BYTES = 65_535
READS_PER_WAKEUP = 256
DEVICE_MTU = 1500
DEVICE_QUEUE_PACKETS = 5000
"""Packets a device queues for the relay to read (default 500): bursts of a fast TCP
sender would otherwise overflow it and lose packets the model never decided on."""
TBF_BURST_BYTES = 32_000
"""tbf bucket: a few dozen packets, enough for the rates the comparison asks for."""
TBF_LATENCY_MS = 50
"""How long tbf queues a packet before dropping it (a 50 ms router buffer)."""


def impairment_to_json(impairment: Impairment) -> dict[str, Any]:
    """The model as JSON (for the command pipe and the result rows)."""
    return dataclasses.asdict(impairment)


def impairment_from_json(data: dict[str, Any]) -> Impairment:
    """The inverse of :func:`impairment_to_json`."""
    return Impairment(
        to_server=PathImpairment(**data["to_server"]),
        to_client=PathImpairment(**data["to_client"]),
        seed=data["seed"],
    )


def _open_tun(name: str) -> int:
    descriptor = os.open("/dev/net/tun", os.O_RDWR | os.O_NONBLOCK)
    try:
        fcntl.ioctl(
            descriptor, _TUNSETIFF, struct.pack("16sH", name.encode(), _IFF_TUN | _IFF_NO_PI)
        )
    except OSError:
        os.close(descriptor)
        raise
    return descriptor


def _run(*command: str) -> None:
    subprocess.run(command, check=True, capture_output=True, text=True)


class _Counters:
    __slots__ = ("dropped", "dropped_bytes", "duplicated", "passed", "received", "received_bytes")

    def __init__(self) -> None:
        self.received = self.received_bytes = self.passed = 0
        self.dropped = self.dropped_bytes = self.duplicated = 0

    def as_json(self) -> dict[str, int]:
        return {name: getattr(self, name) for name in self.__slots__}


class PacketRelay:
    """The relay loop: two TUN descriptors, a heap of held packets, the model."""

    def __init__(
        self,
        *,
        namespace: str,
        client_device: str,
        server_device: str,
        client_address: str,
        server_address: str,
    ) -> None:
        self.namespace = namespace
        self.client_device = client_device
        self.server_device = server_device
        self.client_fd = _open_tun(client_device)
        self.server_fd = _open_tun(server_device)
        self._configure(client_address, server_address)
        self.impairment = Impairment()
        self._reset()
        self._held: list[tuple[int, int, int, bytes]] = []
        self._sequence = 0
        self.write_errors = 0

    def _configure(self, client_address: str, server_address: str) -> None:
        namespace = ("ip", "netns", "exec", self.namespace)
        _run("ip", "link", "set", self.server_device, "netns", self.namespace)
        for prefix, device, local, peer in (
            ((), self.client_device, client_address, server_address),
            (namespace, self.server_device, server_address, client_address),
        ):
            _run(*prefix, "sysctl", "-qw", f"net.ipv6.conf.{device}.disable_ipv6=1")
            _run(*prefix, "ip", "link", "set", device, "mtu", str(DEVICE_MTU))
            _run(*prefix, "ip", "link", "set", device, "txqueuelen", str(DEVICE_QUEUE_PACKETS))
            _run(*prefix, "ip", "addr", "add", local, "peer", peer, "dev", device)
            _run(*prefix, "ip", "link", "set", device, "up")

    def _reset(self) -> None:
        self._paths = {
            direction: self.impairment.impaired_path(direction) for direction in Direction
        }
        self._transparent = {
            direction: self.impairment.path(direction).is_transparent for direction in Direction
        }
        self._counters = {direction: _Counters() for direction in Direction}

    def set_tbf(self, rate_bytes_per_s: int | None) -> None:
        """Cap both devices' egress with tbf (None: remove the cap)."""
        namespace = ("ip", "netns", "exec", self.namespace)
        for prefix, device in (((), self.client_device), (namespace, self.server_device)):
            subprocess.run(
                [*prefix, "tc", "qdisc", "del", "dev", device, "root"], capture_output=True
            )
            if rate_bytes_per_s is not None:
                _run(
                    *prefix,
                    "tc",
                    "qdisc",
                    "add",
                    "dev",
                    device,
                    "root",
                    "tbf",
                    "rate",
                    f"{rate_bytes_per_s * 8}bit",
                    "burst",
                    str(TBF_BURST_BYTES),
                    "latency",
                    f"{TBF_LATENCY_MS}ms",
                )

    def statistics(self) -> dict[str, Any]:
        """Counters per direction since the last model change."""
        return {direction.value: self._counters[direction].as_json() for direction in Direction} | {
            "write_errors": self.write_errors
        }

    def _command(self, line: str) -> dict[str, Any]:
        try:
            command = json.loads(line)
            if "impairment" in command:
                self.impairment = impairment_from_json(command["impairment"])
                self._reset()
            if "tbf" in command:
                self.set_tbf(command["tbf"])
            return {"ok": True, "stats": self.statistics()}
        except (ValueError, KeyError, TypeError, subprocess.CalledProcessError) as error:
            return {"ok": False, "error": str(error)}

    def _receive(self, source: int, now: int) -> None:
        direction = Direction.TO_SERVER if source == self.client_fd else Direction.TO_CLIENT
        target = self.server_fd if source == self.client_fd else self.client_fd
        counters = self._counters[direction]
        transparent = self._transparent[direction]
        path: ImpairedPath = self._paths[direction]
        for _ in range(READS_PER_WAKEUP):
            try:
                packet = os.read(source, MAX_PACKET_BYTES)
            except BlockingIOError:
                return
            if not packet or packet[0] >> 4 != 4:
                continue  # IPv4 only: the devices carry nothing else
            counters.received += 1
            counters.received_bytes += len(packet)
            if transparent:
                counters.passed += 1
                self._write(target, packet)
                continue
            verdict = path.decide(len(packet), now)
            if verdict.dropped:
                counters.dropped += 1
                counters.dropped_bytes += len(packet)
                continue
            counters.passed += 1
            counters.duplicated += len(verdict.deliver_at) - 1
            for deliver_at in verdict.deliver_at:
                if deliver_at <= now:
                    self._write(target, packet)
                else:
                    self._sequence += 1
                    heapq.heappush(self._held, (deliver_at, self._sequence, target, packet))

    def _write(self, target: int, packet: bytes) -> None:
        try:
            os.write(target, packet)
        except OSError:
            self.write_errors += 1

    def run(self, control: int) -> None:
        """Relay until ``control`` (a pipe of JSON commands) reaches its end."""
        poller = select.epoll()
        for descriptor in (self.client_fd, self.server_fd, control):
            poller.register(descriptor, select.EPOLLIN)
        pending = b""
        held = self._held
        while True:
            now = time.monotonic_ns()
            while held and held[0][0] <= now:
                _deliver_at, _sequence, target, packet = heapq.heappop(held)
                self._write(target, packet)
            timeout = max(0.0, (held[0][0] - now) / 1e9) if held else -1.0
            for descriptor, _events in poller.poll(timeout):
                if descriptor == control:
                    data = os.read(control, 65536)
                    if not data:
                        return
                    pending += data
                    while b"\n" in pending:
                        line, pending = pending.split(b"\n", 1)
                        answer = self._command(line.decode())
                        sys.stdout.write(json.dumps(answer) + "\n")
                        sys.stdout.flush()
                else:
                    self._receive(descriptor, time.monotonic_ns())


def _relay(arguments: argparse.Namespace) -> int:
    relay = PacketRelay(
        namespace=arguments.namespace,
        client_device=arguments.client_device,
        server_device=arguments.server_device,
        client_address=arguments.client_address,
        server_address=arguments.server_address,
    )
    print(json.dumps({"ok": True, "pid": os.getpid()}), flush=True)
    try:
        relay.run(sys.stdin.fileno())
    except KeyboardInterrupt:
        pass
    return 0


def _sink(arguments: argparse.Namespace) -> int:
    """Count UDP datagrams until stdin ends; print the count."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 * 1024 * 1024)
    sock.bind((arguments.host, 0))
    sock.setblocking(False)
    print(json.dumps({"port": sock.getsockname()[1]}), flush=True)
    poller = select.epoll()
    poller.register(sock.fileno(), select.EPOLLIN)
    poller.register(sys.stdin.fileno(), select.EPOLLIN)
    count = 0
    while True:
        for descriptor, _events in poller.poll():
            if descriptor == sock.fileno():
                try:
                    while True:
                        sock.recv(MAX_PACKET_BYTES)
                        count += 1
                except BlockingIOError:
                    pass
            elif not os.read(sys.stdin.fileno(), 4096):
                print(json.dumps({"datagrams": count}), flush=True)
                return 0


def _blast(arguments: argparse.Namespace) -> int:
    """Send datagrams as fast as one process can for a while; print the count."""
    host, _, port = arguments.address.rpartition(":")
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    payload = bytes(arguments.bytes)
    target = (host, int(port))
    sent = 0
    deadline = time.monotonic() + arguments.seconds
    while time.monotonic() < deadline:
        for _ in range(64):
            try:
                sock.sendto(payload, target)
                sent += 1
            except OSError:
                pass
    print(json.dumps({"datagrams": sent}), flush=True)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m qotp.compare.packet_relay relay|sink|blast``."""
    parser = argparse.ArgumentParser(prog="python -m qotp.compare.packet_relay")
    commands = parser.add_subparsers(dest="command", required=True)
    relay = commands.add_parser("relay", help="relay between two TUN devices")
    relay.add_argument("--namespace", required=True)
    relay.add_argument("--client-device", required=True)
    relay.add_argument("--server-device", required=True)
    relay.add_argument("--client-address", required=True)
    relay.add_argument("--server-address", required=True)
    relay.set_defaults(handler=_relay)
    sink = commands.add_parser("sink", help="count UDP datagrams")
    sink.add_argument("--host", required=True)
    sink.set_defaults(handler=_sink)
    blast = commands.add_parser("blast", help="send UDP datagrams flat out")
    blast.add_argument("--address", required=True)
    blast.add_argument("--bytes", type=int, default=1400)
    blast.add_argument("--seconds", type=float, default=1.0)
    blast.set_defaults(handler=_blast)
    arguments = parser.parse_args(argv)
    result: int = arguments.handler(arguments)
    return result


if __name__ == "__main__":
    raise SystemExit(main())
