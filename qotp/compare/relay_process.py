"""The loopback relays in a process of their own (``python -m qotp.compare.relay_process``).

When no namespace can be had, each transport's server gets a relay on
loopback: :class:`qotp.compare.relay.UdpRelay` for the UDP transports,
:class:`qotp.compare.tcp_relay.TcpRelay` for TCP and TLS.  Running it in its
own process keeps its CPU time off the client's and lets it use a core of its
own.  Commands arrive as JSON lines on stdin and each gets one JSON line back:
``{"impairment": {...}}`` starts a fresh relay with that model (counters from
zero) and answers the address to dial; ``{"stats": true}`` answers
``{"received", "dropped"}`` (datagrams for UDP, chunks for TCP).  End of
stdin ends it.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from collections.abc import Sequence
from typing import Any

from qotp.compare.impairment import Direction
from qotp.compare.packet_relay import impairment_from_json
from qotp.compare.relay import UdpRelay
from qotp.compare.tcp_relay import TcpRelay

__all__ = ["RelayProcess", "main"]

STARTUP_TIMEOUT_S = 10.0


class _Host:
    def __init__(self, protocol: str, server: tuple[str, int], host: str) -> None:
        self.protocol = protocol
        self.server = server
        self.host = host
        self.udp: UdpRelay | None = None
        self.tcp: TcpRelay | None = None

    async def command(self, command: dict[str, Any]) -> dict[str, Any]:
        if "impairment" in command:
            impairment = impairment_from_json(command["impairment"])
            self.close()
            if self.protocol == "udp":
                self.udp = await UdpRelay.start(self.server, impairment=impairment, host=self.host)
                address = self.udp.listen_address
            else:
                self.tcp = TcpRelay(self.server, impairment)
                address = await self.tcp.start(self.host)
            return {"ok": True, "address": [address[0], address[1]]}
        if "stats" in command:
            return {"ok": True, "stats": self.statistics()}
        return {"ok": False, "error": f"unknown command {sorted(command)}"}

    def statistics(self) -> dict[str, int]:
        if self.udp is not None:
            stats = self.udp.statistics()
            return {
                "received": stats.to_server.received_datagrams + stats.to_client.received_datagrams,
                "dropped": stats.to_server.dropped_datagrams + stats.to_client.dropped_datagrams,
            }
        if self.tcp is not None:
            return {
                "received": sum(self.tcp.statistics[d].chunks for d in Direction),
                "dropped": 0,
            }
        return {"received": 0, "dropped": 0}

    def close(self) -> None:
        if self.udp is not None:
            self.udp.close()
            self.udp = None
        if self.tcp is not None:
            self.tcp.close()
            self.tcp = None


async def _serve(arguments: argparse.Namespace) -> int:
    host_part, _, port = arguments.server.rpartition(":")
    relay = _Host(arguments.protocol, (host_part.strip("[]"), int(port)), arguments.host)
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    print(json.dumps({"ok": True}), flush=True)
    try:
        while line := await reader.readline():
            try:
                answer = await relay.command(json.loads(line))
            except (ValueError, KeyError, TypeError, OSError) as error:
                answer = {"ok": False, "error": f"{type(error).__name__}: {error}"}
            print(json.dumps(answer), flush=True)
    finally:
        relay.close()
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Relay to one server until stdin ends."""
    parser = argparse.ArgumentParser(prog="python -m qotp.compare.relay_process")
    parser.add_argument("--protocol", choices=("udp", "tcp"), required=True)
    parser.add_argument("--server", required=True, metavar="HOST:PORT")
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on")
    arguments = parser.parse_args(argv)
    try:
        return asyncio.run(_serve(arguments))
    except KeyboardInterrupt:
        return 130


class RelayProcess:
    """The caller's handle on a relay process: start, send commands, stop."""

    def __init__(self, protocol: str, server: tuple[str, int], host: str = "127.0.0.1") -> None:
        import subprocess

        from qotp.compare.namespaces import LineReader

        self.process = subprocess.Popen(
            [
                sys.executable, "-m", "qotp.compare.relay_process",
                "--protocol", protocol, "--server", f"{server[0]}:{server[1]}", "--host", host,
            ],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
        )  # fmt: skip
        self._lines = LineReader(self.process.stdout)
        if not (self._lines.read_json(STARTUP_TIMEOUT_S) or {}).get("ok"):
            self.close()
            raise RuntimeError(f"the {protocol} relay did not start")

    def command(self, **command: Any) -> dict[str, Any]:
        """One command, its answer (RuntimeError if the relay failed)."""
        stdin = self.process.stdin
        if stdin is None or self.process.poll() is not None:
            raise RuntimeError("the relay process is not running")
        stdin.write(json.dumps(command) + "\n")
        stdin.flush()
        answer = self._lines.read_json(STARTUP_TIMEOUT_S)
        if answer is None or not answer.get("ok"):
            raise RuntimeError(f"relay: {answer.get('error') if answer else 'no answer'}")
        return answer

    def close(self) -> None:
        """Stop it (end of stdin), or kill it if it does not stop."""
        import subprocess

        if self.process.stdin is not None and not self.process.stdin.closed:
            self.process.stdin.close()
        try:
            self.process.wait(timeout=3)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        if self.process.stdout is not None:
            self.process.stdout.close()


if __name__ == "__main__":
    raise SystemExit(main())
