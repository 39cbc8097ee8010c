"""Loss recovery: retransmissions per lost packet, spurious ones, and goodput under loss.

Run: ``.venv/bin/python benchmarks/bench_recovery.py [--megabytes N] [--seeds K]``
(or ``./run.sh bench``).

Each row is a bulk transfer from a client to a server over ``tests/netsim.py``:
20 ms RTT, random loss the same both ways, a 25 MiB/s bottleneck (about what one
core of this machine moves) with a 2 MiB queue, on a virtual clock, so the
numbers are exact and repeatable (no wall clock; ``--seeds`` averages over
loss patterns). What happened to every packet is read off the wire, decrypted
with the client's key log (``tests/lossledger.py``), not from the engine:

* lost: stream packets (data or CLOSE) the link dropped; lost ACK: the
  receiver's datagrams carrying an ACK that it dropped;
* retx / lost: retransmissions per lost stream packet (TCP's is about 1);
* spurious: retransmissions of bytes that had all arrived, because every ACK of
  them was lost ("ACK lost") or because the sender did not wait ("early");
* goodput: bytes delivered to the receiving application per second, and its
  ratio to the same workload without loss in the same run.

The last rows repeat 2 % loss with ``ack_repeats=False`` (the reference's ACKs),
to show what the ACK repeats of SPEC.md 10.13 save.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from lossledger import MeasuredTransfer, measure_transfer  # noqa: E402
from netsim import MS, LinkConditions  # noqa: E402

MIB = 1 << 20
BOTTLENECK_BYTES_PER_S = 25 * MIB
QUEUE_BYTES = 2 * MIB
LOSSES = (0.0, 0.01, 0.02, 0.05)
STREAMS = (1, 10)


def path(loss: float) -> LinkConditions:
    return LinkConditions(
        delay_ns=10 * MS,
        loss=loss,
        bandwidth_bytes_per_s=BOTTLENECK_BYTES_PER_S,
        queue_bytes=QUEUE_BYTES,
    )


def run(
    loss: float, streams: int, total_bytes: int, seeds: int, *, ack_repeats: bool = True
) -> list[MeasuredTransfer]:
    return [
        measure_transfer(
            path(loss),
            streams=streams,
            total_bytes=total_bytes,
            seed=seed,
            ack_repeats=ack_repeats,
        )
        for seed in range(1, seeds + 1)
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--megabytes", type=int, default=8, help="MiB per transfer (8)")
    parser.add_argument("--seeds", type=int, default=2, help="loss patterns per row (2)")
    arguments = parser.parse_args()
    total = arguments.megabytes * MIB
    print(
        f"bulk transfers of {arguments.megabytes} MiB over netsim: 20 ms RTT, loss both ways, "
        f"{BOTTLENECK_BYTES_PER_S // MIB} MiB/s bottleneck, {QUEUE_BYTES // MIB} MiB queue; "
        f"{arguments.seeds} seeds per row"
    )
    header = (
        f"{'loss':>5} {'streams':>7} {'repeats':>7} {'lost':>6} {'lost ACK':>8} {'retx':>6} "
        f"{'retx/lost':>9} {'spurious (ACK lost/early)':>25} {'MB/s':>6} {'vs 0 %':>6}"
    )
    print(header)
    print("-" * len(header))
    baseline: dict[int, float] = {}
    rows = [(loss, streams, True) for loss in LOSSES for streams in STREAMS]
    rows += [(0.02, streams, False) for streams in STREAMS]
    for loss, streams, repeats in rows:
        runs = run(loss, streams, total, arguments.seeds, ack_repeats=repeats)
        lost = sum(m.report.lost_packets for m in runs)
        lost_acks = sum(m.report.lost_acks for m in runs)
        retransmissions = sum(m.report.retransmissions for m in runs)
        ack_lost = sum(m.report.spurious_ack_lost for m in runs)
        early = sum(m.report.spurious_early for m in runs)
        goodput = sum(m.goodput_bytes_per_s for m in runs) / len(runs)
        if loss == 0.0:
            baseline[streams] = goodput
        ratio = retransmissions / lost if lost else 0.0
        spurious = f"{ack_lost + early} ({ack_lost}/{early})"
        print(
            f"{loss:5.0%} {streams:7d} {'yes' if repeats else 'no':>7} {lost:6d} {lost_acks:8d} "
            f"{retransmissions:6d} {ratio:9.2f} {spurious:>25} {goodput / 1e6:6.2f} "
            f"{goodput / baseline[streams]:6.2f}",
            flush=True,
        )


if __name__ == "__main__":
    main()
