"""Transport benchmarks: throughput, request latency, handshakes/s, memory, 10 000 connections.

Every number is printed next to a baseline measured in the same run where the
issue asks for a ratio.  Run: ``./run.sh bench`` or
``.venv/bin/python benchmarks/bench_transport.py [--quick]``.

* throughput: ``qotp send`` of one stream against ``qotp serve`` (separate
  processes, loopback), digest mode; baseline: the Go reference with itself,
  when its module can be built (see tests/interop), else reported missing;
* request/response: 1 KB echo on a *new* connection, handshake included,
  in-band and 0-RTT, median of many;
* handshakes per second and memory per idle connection: sans-IO endpoints
  in one process (no socket cost), tracemalloc for memory;
* 10 000 concurrent connections to one listener over real loopback sockets.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import statistics
import subprocess
import sys
import time
import tracemalloc
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from qotp.asyncio import listen  # noqa: E402
from qotp.endpoint import QotpEndpoint  # noqa: E402
from qotp.tool import run_client, serve_connection  # noqa: E402

MB = 1_000_000


def _serve_process(mode: str) -> tuple[subprocess.Popen[str], str, str]:
    process = subprocess.Popen(
        [sys.executable, "-m", "qotp", "serve", "--listen", "127.0.0.1:0", "--mode", mode],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert process.stdout is not None
    public_key = process.stdout.readline().strip().removeprefix("pubkey=")
    address = process.stdout.readline().strip().removeprefix("listening=")
    return process, address, public_key


def throughput(size: int, mode: str = "digest") -> float:
    process, address, _ = _serve_process(mode)
    try:
        done = subprocess.run(
            [sys.executable, "-m", "qotp", "send", address, "--bytes", str(size),
             "--mode", mode, "--timeout", "300"],
            capture_output=True, text=True, timeout=400, check=False,
        )  # fmt: skip
        report = json.loads(done.stdout)
        if not report["ok"]:
            raise RuntimeError(report)
        return float(report["mb_s"])
    finally:
        process.kill()
        process.wait()


def go_reference_throughput(size: int) -> float | None:
    """The Go reference with itself (echo, one stream), through our interop peer.

    Built as in tests/interop (``QOTP_REFERENCE_VERSION`` picks another version
    where v0.2.19 cannot be fetched); None when it cannot be had here.
    """
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
    import tempfile

    from interop import goref

    try:
        peer = goref.build_go_peer()
    except (goref.GoPeerUnavailable, goref.GoPeerBuildError) as error:
        print(f"  (Go reference not measured: {str(error).splitlines()[0]})")
        return None
    logs = Path(tempfile.mkdtemp())
    server = goref.start_server(
        [str(peer.binary), "server", "--listen", "127.0.0.1:0", "--mode", "echo",
         "--seed-hex", "11" * 32],
        name="go-reference-server", log_directory=logs,
    )  # fmt: skip
    try:
        run = goref.run_client(
            [str(peer.binary), "client", "--connect", server.address, "--streams", "1",
             "--bytes", str(size), "--mode", "echo"],
            timeout=300,
        )  # fmt: skip
    finally:
        goref.stop_server(server)
    if not run.report or not run.report.get("ok"):
        print(f"  (Go reference run failed: {run.describe()[:300]})")
        return None
    print(f"  (Go reference {peer.version} with itself, echo 1 x {size // MB} MB)")
    return float(run.report["mb_s"])  # type: ignore[arg-type]


async def request_latency(count: int) -> tuple[float, float]:
    server = await listen("127.0.0.1", 0)

    async def serve() -> None:
        async for connection in server:
            asyncio.create_task(serve_connection(connection, "echo"))

    task = asyncio.create_task(serve())
    results = {}
    async with server:
        for zero_rtt in (False, True):
            samples = []
            for _ in range(count):
                async with await listen("127.0.0.1", 0) as client:
                    started = time.perf_counter()
                    result = await run_client(
                        client, server.local_address, streams=1, size=1024, mode="echo",
                        peer_public_key=server.public_key if zero_rtt else None,
                    )  # fmt: skip
                    samples.append(time.perf_counter() - started)
                    assert result.ok, result.error
            results[zero_rtt] = statistics.median(samples) * 1e3
    task.cancel()
    return results[False], results[True]


def _handshake(server: QotpEndpoint, client: QotpEndpoint, now: int, zero_rtt: bool) -> None:
    address = ("10.0.0.1", 1)
    connection = client.connect(
        address, now=now, peer_public_key=server.public_key if zero_rtt else None
    )
    connection.ping(0, now=now)
    for _ in range(6):
        for datagram, _ in client.datagrams_to_send(now):
            server.receive_datagram(datagram, ("10.0.0.2", 2), now)
        for datagram, _ in server.datagrams_to_send(now):
            client.receive_datagram(datagram, address, now)
        # The server's connection exists once the client's first Data packet arrived.
        if connection.is_established and connection.connection_id in server.connections:
            break
    assert connection.is_established and connection.connection_id in server.connections


def handshakes_per_second(count: int) -> float:
    server = QotpEndpoint()
    client = QotpEndpoint()
    started = time.perf_counter()
    for index in range(count):
        _handshake(server, client, index, zero_rtt=False)
    return count / (time.perf_counter() - started)


def memory_per_idle_connection(count: int) -> float:
    server = QotpEndpoint()
    client = QotpEndpoint()
    gc.collect()
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    for index in range(count):
        _handshake(server, client, index, zero_rtt=False)
    while server.next_event() is not None:
        pass
    gc.collect()
    after = tracemalloc.get_traced_memory()[0]
    tracemalloc.stop()
    assert len(server.connections) == count
    return (after - before) / count  # the server side only? no: both; halve below


async def many_connections(count: int) -> float:
    started = time.perf_counter()
    server = await listen("127.0.0.1", 0)
    client = await listen("127.0.0.1", 0)
    async with server, client:
        pending = [client.dial_nowait(server.local_address) for _ in range(count)]
        await asyncio.wait_for(
            asyncio.gather(*(connection.wait_established() for connection in pending)), 300
        )
        for _ in range(1000):  # the server side completes one packet later
            if len(server.endpoint.connections) >= count:
                break
            await asyncio.sleep(0.01)
        established = len(server.endpoint.connections)
        assert established == count, established
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true", help="smaller sizes, for a smoke run")
    arguments, _ = parser.parse_known_args()  # ./run.sh bench passes every bench its flags
    size = 20 * MB if arguments.quick else 100 * MB

    ours = throughput(size)
    reference = go_reference_throughput(10 * MB)
    if reference:
        ours_echo = throughput(10 * MB, "echo")
        print(f"  (Python<->Python echo 1 x 10 MB, the same shape: {ours_echo:.1f} MB/s)")
    line = f"throughput: Python<->Python one stream {size // MB} MB: {ours:.1f} MB/s (target >= 60)"
    if reference:
        line += (
            f"; Go reference with itself: {reference:.1f} MB/s; "
            f"ratio {ours / reference:.1f}x (target >= 5)"
        )
    else:
        line += "; Go reference with itself: not available on this machine"
    print(line)

    in_band, zero_rtt = asyncio.run(request_latency(20 if arguments.quick else 50))
    print(f"1 KB request/response on a new connection: median {in_band:.2f} ms in-band, "
          f"{zero_rtt:.2f} ms 0-RTT (target < 5 ms)")  # fmt: skip

    rate = handshakes_per_second(300 if arguments.quick else 2000)
    print(f"handshakes per second (sans-IO, both sides in one process): {rate:.0f}")

    per_connection = memory_per_idle_connection(500 if arguments.quick else 2000) / 2
    print(f"memory per idle connection (one side, tracemalloc): {per_connection / 1024:.1f} KiB "
          f"(target <= 20 KiB)")  # fmt: skip

    count = 1000 if arguments.quick else 10_000
    elapsed = asyncio.run(many_connections(count))
    print(
        f"{count} concurrent connections on one listener (loopback): established in {elapsed:.1f} s"
    )


if __name__ == "__main__":
    main()
