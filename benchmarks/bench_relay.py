"""The impairment relay's own ceiling, and whether it slows a QOTP transfer down.

Run: ``.venv/bin/python benchmarks/bench_relay.py [--quick]``.

* ceiling: a load generator floods the relay on loopback from another process;
  datagrams forwarded per second of wall time and per CPU second of the relay
  (transparent, with 5 % loss, with 1 ms delay), against the same flood sent
  straight to the sink in the same run (the loopback's and the generator's own
  limit);
* a QOTP transfer (``qotp send`` -> ``qotp serve``, digest, one stream) straight
  and through a transparent relay in the same run: the ratio shows whether the
  relay is a bottleneck (1.0 means it costs nothing).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from qotp.compare.impairment import Impairment  # noqa: E402
from qotp.compare.relay import UdpRelay, measure_ceiling  # noqa: E402

MB = 1_000_000


async def _serve() -> tuple[asyncio.subprocess.Process, tuple[str, int]]:
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "qotp", "serve", "--listen", "127.0.0.1:0", "--mode", "digest",
        stdout=asyncio.subprocess.PIPE,
    )  # fmt: skip
    assert process.stdout is not None
    await process.stdout.readline()  # pubkey=
    listening = (await process.stdout.readline()).decode().strip().removeprefix("listening=")
    host, _, port = listening.rpartition(":")
    return process, (host, int(port))


async def _send(address: tuple[str, int], size: int) -> float:
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "qotp", "send", f"{address[0]}:{address[1]}",
        "--bytes", str(size), "--mode", "digest", "--timeout", "300",
        stdout=asyncio.subprocess.PIPE,
    )  # fmt: skip
    stdout, _ = await process.communicate()
    report = json.loads(stdout.decode().strip().splitlines()[-1])
    if not report["ok"]:
        raise RuntimeError(f"transfer failed: {report}")
    return float(report["mb_s"])


async def transfer(size: int, *, through_relay: bool) -> float:
    """MB/s of one digest stream of ``size`` bytes, straight or through the relay."""
    server, address = await _serve()
    try:
        if not through_relay:
            return await _send(address, size)
        async with await UdpRelay.start(address) as relay:
            return await _send(relay.listen_address, size)
    finally:
        server.terminate()
        await server.wait()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="shorter runs, for a smoke test")
    arguments, _ = parser.parse_known_args()  # ./run.sh bench passes every bench its flags
    seconds = 0.5 if arguments.quick else 2.0
    size = 5 * MB if arguments.quick else 30 * MB

    print("== impairment relay ==")
    for label, impairment in (
        ("transparent", None),
        ("5 % loss", Impairment.symmetric(loss=0.05, seed=1)),
        ("1 ms delay", Impairment.symmetric(delay_ns=1_000_000)),
    ):
        ceiling = asyncio.run(measure_ceiling(seconds=seconds, impairment=impairment))
        print(
            f"ceiling {label:>12}: {ceiling.datagrams_per_s:>10,.0f} datagrams/s wall "
            f"({ceiling.megabytes_per_s:6.1f} MB/s), {ceiling.datagrams_per_cpu_s:>10,.0f} "
            f"per CPU s ({ceiling.megabytes_per_cpu_s:6.1f} MB/s); "
            f"generator offered {ceiling.offered_datagrams / ceiling.seconds:,.0f}/s"
        )
    straight = asyncio.run(transfer(size, through_relay=False))
    relayed = asyncio.run(transfer(size, through_relay=True))
    print(
        f"qotp digest {size // MB} MB: straight {straight:.1f} MB/s, through the relay "
        f"{relayed:.1f} MB/s, ratio {relayed / straight:.2f} (1.0: the relay costs nothing)"
    )


if __name__ == "__main__":
    main()
