"""The impaired path of a comparison: a network namespace, two TUN devices and the packet relay.

The measuring process (client side) stays in its own namespace; servers run
in a fresh namespace (``ip netns exec``); every packet between them passes
through :mod:`qotp.compare.packet_relay` in a process of its own.  Addresses
come from 198.18.0.0/15, the range RFC 2544 sets aside for benchmarks, one
pair per run, so concurrent runs on one machine do not collide.

Needs root, ``ip`` and ``tc`` (iproute2) and ``/dev/net/tun``;
:func:`namespaces_missing` says which is absent.
"""

from __future__ import annotations

import json
import os
import select
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from types import TracebackType
from typing import IO, Any, Self

from qotp.compare.impairment import Impairment
from qotp.compare.packet_relay import impairment_to_json

__all__ = ["LineReader", "NamespacePath", "RelayCeiling", "namespaces_missing"]

STARTUP_TIMEOUT_S = 10.0


def namespaces_missing() -> str | None:
    """Why the namespace path cannot be built here, or None."""
    if sys.platform != "linux":
        return "network namespaces need Linux"
    if os.geteuid() != 0:
        return "network namespaces and TUN devices need root"
    for command in ("ip", "tc"):
        if shutil.which(command) is None:
            return f"`{command}` is not installed (Debian: iproute2)"
    if not os.path.exists("/dev/net/tun"):
        return "/dev/net/tun is missing"
    return None


@dataclass(frozen=True, slots=True, kw_only=True)
class RelayCeiling:
    """What the relay forwarded when offered more than it could take."""

    datagram_bytes: int
    seconds: float
    offered: int
    relayed: int
    delivered: int
    relay_cpu_s: float

    @property
    def megabytes_per_s(self) -> float:
        """Relayed payload per wall second (MB = 10^6 bytes)."""
        return self.relayed * self.datagram_bytes / self.seconds / 1e6 if self.seconds else 0.0

    @property
    def megabytes_per_cpu_s(self) -> float:
        """Relayed payload per CPU second of the relay: its ceiling with a core to itself."""
        if not self.relay_cpu_s:
            return 0.0
        return self.relayed * self.datagram_bytes / self.relay_cpu_s / 1e6

    def describe(self) -> str:
        """One line for people."""
        return (
            f"relay ceiling ({self.datagram_bytes}-byte datagrams, {self.seconds:.1f} s): "
            f"{self.megabytes_per_s:.0f} MB/s wall, {self.megabytes_per_cpu_s:.0f} MB/s per "
            f"relay CPU second ({self.relayed:,} of {self.offered:,} offered relayed)"
        )


def process_cpu_seconds(pid: int) -> float | None:
    """User + system CPU seconds of a live process (Linux /proc), else None."""
    try:
        with open(f"/proc/{pid}/stat") as handle:
            fields = handle.read().rpartition(")")[2].split()
    except OSError:
        return None
    ticks = os.sysconf("SC_CLK_TCK")
    return (int(fields[11]) + int(fields[12])) / ticks


class NamespacePath:
    """Namespace + relay process; use as a context manager, it removes everything on exit."""

    def __init__(self) -> None:
        suffix = f"{os.getpid() % 100000}{int(time.monotonic() * 1000) % 1000:03d}"
        self.namespace = f"qcmp{suffix}"
        self.client_device = f"qcc{suffix}"
        self.server_device = f"qcs{suffix}"
        index = os.getpid() % 250 + 1
        self.client_address = f"198.18.{index}.1"
        self.server_address = f"198.19.{index}.1"
        self._relay: subprocess.Popen[str] | None = None
        self._relay_lines = LineReader(None)
        self._namespace_created = False

    @property
    def exec_prefix(self) -> list[str]:
        """Prefix that runs a command inside the servers' namespace."""
        return ["ip", "netns", "exec", self.namespace]

    @property
    def relay_pid(self) -> int | None:
        """The relay process, for its CPU time."""
        return self._relay.pid if self._relay is not None else None

    def __enter__(self) -> Self:
        try:
            subprocess.run(["ip", "netns", "add", self.namespace], check=True, capture_output=True)
            self._namespace_created = True
            subprocess.run(
                [*self.exec_prefix, "ip", "link", "set", "lo", "up"],
                check=True,
                capture_output=True,
            )
            self._relay = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "qotp.compare.packet_relay",
                    "relay",
                    "--namespace",
                    self.namespace,
                    "--client-device",
                    self.client_device,
                    "--server-device",
                    self.server_device,
                    "--client-address",
                    self.client_address,
                    "--server-address",
                    self.server_address,
                ],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
            self._relay_lines = LineReader(self._relay.stdout)
            ready = self._relay_lines.read_json(STARTUP_TIMEOUT_S)
            if not ready or not ready.get("ok"):
                raise RuntimeError("the packet relay did not start: " + self._relay_error())
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    def _relay_error(self) -> str:
        relay = self._relay
        if relay is None:
            return "not started"
        if relay.poll() is None:
            relay.kill()
        _out, error = relay.communicate(timeout=5)
        lines = [line for line in (error or "").splitlines() if line.strip()]
        return lines[-1] if lines else f"exit status {relay.returncode}"

    def command(self, **command: Any) -> dict[str, Any]:
        """Send one command to the relay and return its answer."""
        relay = self._relay
        if relay is None or relay.stdin is None or relay.poll() is not None:
            raise RuntimeError("the packet relay is not running: " + self._relay_error())
        relay.stdin.write(json.dumps(command) + "\n")
        relay.stdin.flush()
        answer = self._relay_lines.read_json(STARTUP_TIMEOUT_S)
        if answer is None or not answer.get("ok"):
            detail = answer.get("error") if answer else self._relay_error()
            raise RuntimeError(f"packet relay: {detail}")
        return answer

    def set_impairment(self, impairment: Impairment, *, tbf_bytes_per_s: int | None) -> None:
        """Apply a model (counters start again from zero) and a tbf cap (None: none)."""
        self.command(impairment=impairment_to_json(impairment), tbf=tbf_bytes_per_s)

    def statistics(self) -> dict[str, Any]:
        """The relay's counters since the last :meth:`set_impairment`."""
        stats: dict[str, Any] = self.command(stats=True)["stats"]
        return stats

    def measure_ceiling(self, *, seconds: float = 1.0, datagram_bytes: int = 1400) -> RelayCeiling:
        """Flood the relay with UDP from this namespace to a sink in the servers' one."""
        self.set_impairment(Impairment(), tbf_bytes_per_s=None)
        module = [sys.executable, "-m", "qotp.compare.packet_relay"]
        sink = subprocess.Popen(
            [*self.exec_prefix, *module, "sink", "--host", self.server_address],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        try:
            sink_lines = LineReader(sink.stdout)
            started = sink_lines.read_json(STARTUP_TIMEOUT_S)
            if started is None:
                raise RuntimeError("the ceiling's sink did not start")
            pid = self.relay_pid
            cpu_before = process_cpu_seconds(pid) if pid else None
            start = time.monotonic()
            blast = subprocess.run(
                [
                    *module,
                    "blast",
                    "--address",
                    f"{self.server_address}:{started['port']}",
                    "--bytes",
                    str(datagram_bytes),
                    "--seconds",
                    str(seconds),
                ],
                capture_output=True,
                text=True,
                check=True,
            )
            wall = time.monotonic() - start
            cpu_after = process_cpu_seconds(pid) if pid else None
            time.sleep(0.1)
            relayed = int(self.statistics()["to_server"]["passed"])
            assert sink.stdin is not None
            sink.stdin.close()
            delivered = sink_lines.read_json(STARTUP_TIMEOUT_S) or {"datagrams": 0}
        finally:
            if sink.poll() is None:
                sink.kill()
            sink.wait()
        return RelayCeiling(
            datagram_bytes=datagram_bytes,
            seconds=wall,
            offered=int(json.loads(blast.stdout)["datagrams"]),
            relayed=relayed,
            delivered=int(delivered["datagrams"]),
            relay_cpu_s=(cpu_after - cpu_before) if cpu_before is not None and cpu_after else 0.0,
        )

    def close(self) -> None:
        """Stop the relay (its devices vanish with it) and remove the namespace."""
        relay, self._relay = self._relay, None
        if relay is not None:
            if relay.stdin is not None:
                try:
                    relay.stdin.close()
                except OSError:
                    pass
            try:
                relay.wait(timeout=5)
            except subprocess.TimeoutExpired:
                relay.kill()
                relay.wait()
        if self._namespace_created:
            subprocess.run(["ip", "netns", "del", self.namespace], capture_output=True)
            self._namespace_created = False


class LineReader:
    """Lines from a child's pipe with a deadline (select on the raw descriptor, own buffer).

    A text stream's ``readline`` after ``select`` would leave further lines in
    Python's buffer, where ``select`` cannot see them.
    """

    def __init__(self, stream: IO[str] | None) -> None:
        self.descriptor = stream.fileno() if stream is not None else None
        self._buffer = b""

    def readline(self, timeout: float) -> str | None:
        """The next line, or None at the end of the pipe or after ``timeout``."""
        deadline = time.monotonic() + timeout
        while b"\n" not in self._buffer:
            remaining = deadline - time.monotonic()
            if self.descriptor is None or remaining <= 0:
                return None
            ready, _, _ = select.select([self.descriptor], [], [], remaining)
            if not ready:
                return None
            data = os.read(self.descriptor, 65536)
            if not data:
                return None
            self._buffer += data
        line, self._buffer = self._buffer.split(b"\n", 1)
        return line.decode(errors="replace")

    def read_json(self, timeout: float) -> dict[str, Any] | None:
        """The next line that is a JSON object (others are skipped), or None."""
        deadline = time.monotonic() + timeout
        while (line := self.readline(max(0.0, deadline - time.monotonic()))) is not None:
            try:
                value = json.loads(line)
            except ValueError:
                continue
            if isinstance(value, dict):
                return value
        return None
