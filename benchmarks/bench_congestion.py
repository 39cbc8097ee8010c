"""Congestion control: per-packet CPU cost, and goodput on simulated paths.

Run: ``.venv/bin/python benchmarks/bench_congestion.py`` (or ``./run.sh bench``).

Two tables, each with a same-run baseline:

* CPU cost of one datagram's life in the controller (``on_packet_sent`` + RTT update +
  ``on_packet_acked``), for BBR and NewReno, against an empty loop over the same calls'
  bookkeeping.
* Goodput as a share of the bottleneck rate, from the deterministic simulation in
  ``tests/test_congestion_bbr.py``, for BBR, NewReno and ``ReferenceModel`` -- our model of
  the Go reference's measurement.go (a one-packet-per-min-RTT bandwidth sample, per-datagram
  pacing without bursts, no congestion window) -- with the ratio BBR / reference model.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from test_congestion_bbr import simulate  # noqa: E402

from qotp.congestion import Bbr, NewReno, RttEstimator, SendSample  # noqa: E402
from qotp.congestion.base import DeliveryRateSampler  # noqa: E402

MS = 1_000_000
S = 1_000_000_000


class ReferenceModel:
    """Our model of the reference's rate control (facts from measurement.go, conn.go)."""

    def __init__(self, rtt: RttEstimator) -> None:
        self.rtt = rtt
        self.sampler = DeliveryRateSampler()
        self.startup = True
        self.bw_max = 0
        self.bw_dec = 0
        self.gain_pct = 277
        self.last_probe_ns = 0
        self.next_write_ns = 0

    @property
    def state_name(self) -> str:
        return "startup" if self.startup else "normal"

    @property
    def congestion_window_bytes(self) -> int:
        return 16 * 1024 * 1024  # only the peer's receive window limits it

    @property
    def pacing_rate_bytes_per_s(self) -> int:
        return self.bw_max * self.gain_pct // 100

    @property
    def bandwidth_estimate_bytes_per_s(self) -> int:
        return self.bw_max

    def can_send(self, bytes_in_flight: int, size_bytes: int) -> bool:
        return bytes_in_flight + size_bytes <= self.congestion_window_bytes

    def next_send_time(self, now: int, size_bytes: int) -> int:
        return max(now, self.next_write_ns)

    def _interval_ns(self, size_bytes: int) -> int:
        if self.bw_max == 0:
            return self.rtt.srtt_ns // 10 if self.rtt.srtt_ns else 10 * MS
        rate = self.bw_max * self.gain_pct // 100
        return size_bytes * S // rate if rate else 10 * MS

    def on_packet_sent(self, now: int, size_bytes: int, bytes_in_flight: int) -> SendSample:
        self.next_write_ns = now + self._interval_ns(size_bytes)
        return self.sampler.on_sent(now, size_bytes, bytes_in_flight)

    def on_app_limited(self, bytes_in_flight: int) -> None:
        pass

    def on_packet_acked(self, now: int, sample: SendSample, bytes_in_flight: int) -> None:
        min_rtt = self.rtt.min_rtt_ns
        current = sample.size_bytes * S // min_rtt if min_rtt else 0
        if current > self.bw_max:
            self.bw_max, self.bw_dec = current, 0
        else:
            self.bw_dec += 1
        if self.last_probe_ns == 0:
            self.last_probe_ns = now
        if self.startup:
            if self.bw_dec >= 3:
                self.startup, self.gain_pct = False, 100
            return
        ratio = self.rtt.srtt_ns * 100 // min_rtt if min_rtt else 100
        if ratio > 150:
            self.gain_pct = 75
        elif ratio > 125:
            self.gain_pct = 90
        elif now - self.last_probe_ns > min_rtt * 8:
            self.gain_pct, self.last_probe_ns = 125, now
        else:
            self.gain_pct = 100

    def on_packet_lost(self, now: int, sample: SendSample, bytes_in_flight: int) -> None:
        self.bw_max = self.bw_max * 95 // 100
        self.gain_pct = 100
        self.startup = False


def _cpu_run(name: str, packets: int) -> float:
    """Seconds per datagram for one controller (``baseline``: the harness alone)."""
    rtt = RttEstimator()
    cc = Bbr(rtt) if name == "bbr" else NewReno(rtt) if name == "newreno" else None
    window: list[SendSample] = []
    now = 0
    start = time.perf_counter()
    for _ in range(packets):
        now += 10_000
        if cc is None:
            window.append(SendSample(now, 1400, 0, 0, 0, False))
            if len(window) > 100:
                sample = window.pop(0)
            continue
        cc.can_send(len(window) * 1400, 1400)
        cc.next_send_time(now, 1400)
        window.append(cc.on_packet_sent(now, 1400, len(window) * 1400))
        if len(window) > 100:
            sample = window.pop(0)
            rtt.update(now - sample.sent_time_ns, now)
            cc.on_packet_acked(now, sample, len(window) * 1400)
    return (time.perf_counter() - start) / packets


def bench_cpu(packets: int = 100_000, repeats: int = 5) -> None:
    print(
        f"# CPU per datagram: can_send + next_send_time + on_packet_sent + RTT update + "
        f"on_packet_acked ({packets} datagrams, 100 in flight; best of {repeats})"
    )
    names = ("baseline", "bbr", "newreno")
    best = dict.fromkeys(names, float("inf"))
    for _ in range(repeats):  # interleaved, so that load from elsewhere hits all alike
        for name in names:
            best[name] = min(best[name], _cpu_run(name, packets))
    for name in names:
        seconds = best[name]
        print(
            f"{name:10s} {seconds * 1e6:6.2f} us/datagram  {1 / seconds / 1000:7.0f} k/s  "
            f"x{seconds / best['baseline']:.1f} of baseline  "
            f"x{seconds / best['newreno']:.2f} of newreno"
        )


def bench_goodput() -> None:
    print("# goodput share of the bottleneck over the 2nd half of the run (simulated)")
    paths = [
        ("100 Mbit/s, 40 ms", 12_500_000, 40 * MS, 4 * S, 0, 0),
        ("200 MB/s, 0.2 ms, 1 ms timers", 200_000_000, 200_000, S // 5, MS, 0),
        ("300 MB/s, 50 us, ACKs per 3 ms", 300_000_000, 50_000, S // 5, MS, 3 * MS),
    ]
    factories = {"bbr": Bbr, "newreno": NewReno, "reference": ReferenceModel}
    for label, link, rtt_ns, duration, timer, batch in paths:
        for loss in (0.0, 0.05, 0.2):
            shares = {}
            for name, factory in factories.items():
                run = simulate(
                    factory,
                    link_bytes_per_s=link,
                    rtt_ns=rtt_ns,
                    loss=loss,
                    duration_ns=duration,
                    timer_ns=timer,
                    seed=3,
                    ack_batch_ns=batch,
                    queue_bytes=max(link * 4 * rtt_ns // S, 1_000_000),
                )
                shares[name] = run.share(run.acked, duration // 2, duration)
            ratio = shares["bbr"] / shares["reference"] if shares["reference"] else float("inf")
            cells = "  ".join(f"{name} {share:5.2f}" for name, share in shares.items())
            print(f"{label:30s} loss {loss:4.0%}  {cells}  bbr/reference x{ratio:.1f}")


if __name__ == "__main__":
    bench_cpu()
    bench_goodput()
