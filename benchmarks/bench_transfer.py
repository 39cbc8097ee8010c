"""File transfer benchmarks: ``qotp send-files`` to ``qotp receive-files``, separate processes.

Run: ``./run.sh bench`` or ``.venv/bin/python benchmarks/bench_transfer.py [--quick]
[--rss-gigabytes 1]``.  Every number comes with a baseline measured in the same run:

* one large file: MB/s, against ``qotp send`` moving the same number of bytes on
  one stream (the transport without files, disk or hashing);
* many small files: files/s and MB/s, against the large file's MB/s;
* resume: a sender killed halfway, run again: the share of the file it did
  not send again, against the share that had arrived;
* memory: peak RSS of both processes for the large file (and, with
  ``--rss-gigabytes``, for a file that large), against the same processes moving
  1 MB: files stream through, so the ratio stays near 1.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

MB = 1_000_000
QOTP = [sys.executable, "-m", "qotp"]


def _wait_rss(process: subprocess.Popen[str], timeout: float = 600) -> int:
    """Reap ``process``; its peak RSS in bytes (Linux reports KiB)."""
    deadline = time.monotonic() + timeout
    while True:
        pid, status, usage = os.wait4(process.pid, os.WNOHANG)
        if pid:
            process.returncode = os.waitstatus_to_exitcode(status)
            return usage.ru_maxrss * 1024
        if time.monotonic() > deadline:
            process.kill()
        time.sleep(0.02)


def _receiver(directory: Path) -> tuple[subprocess.Popen[str], str, str]:
    process = subprocess.Popen(
        [*QOTP, "receive-files", "--listen", "127.0.0.1:0", "--dir", str(directory), "--once"],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    assert process.stdout is not None
    key = process.stdout.readline().strip().removeprefix("pubkey=")
    address = process.stdout.readline().strip().removeprefix("listening=")
    return process, address, key


def send_files(paths: list[Path], inbox: Path) -> tuple[dict[str, Any], int, int]:
    """One transfer; the sender's summary and both processes' peak RSS."""
    receiver, address, key = _receiver(inbox)
    sender = subprocess.Popen(
        [*QOTP, "send-files", address, *map(str, paths), "--pubkey", key, "--json",
         "--parallel", "8"],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
    )  # fmt: skip
    assert sender.stdout is not None
    output = sender.stdout.read()
    sender_rss = _wait_rss(sender)
    receiver_rss = _wait_rss(receiver)
    summary: dict[str, Any] = json.loads(output.splitlines()[-1])
    if not summary["ok"]:
        raise SystemExit(f"send-files failed: {summary}")
    return summary, sender_rss, receiver_rss


def raw_stream(size: int) -> float:
    """``qotp send`` of ``size`` bytes on one stream (digest mode): MB/s."""
    server = subprocess.Popen(
        [*QOTP, "serve", "--listen", "127.0.0.1:0"], stdout=subprocess.PIPE, text=True
    )
    try:
        assert server.stdout is not None
        server.stdout.readline()
        address = server.stdout.readline().strip().removeprefix("listening=")
        done = subprocess.run(
            [*QOTP, "send", address, "--bytes", str(size), "--timeout", "300"],
            capture_output=True, text=True, timeout=400, check=False,
        )  # fmt: skip
        report = json.loads(done.stdout.splitlines()[-1])
        return float(report["mb_s"])
    finally:
        server.send_signal(signal.SIGINT)
        server.communicate()


def resume(path: Path, inbox: Path) -> tuple[int, int, int]:
    """Kill the sender halfway, run it again: (bytes that had arrived, skipped, sent)."""
    size = path.stat().st_size
    receiver, address, key = _receiver(inbox)
    command = [*QOTP, "send-files", address, str(path), "--pubkey", key, "--json"]
    first = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    partial = inbox / f".{path.name}.qotp-partial"
    while not partial.exists() or partial.stat().st_size < size // 2:
        time.sleep(0.005)
    first.kill()
    first.wait()
    time.sleep(0.3)
    arrived = partial.stat().st_size
    done = subprocess.run(command, capture_output=True, text=True, timeout=600, check=False)
    receiver.wait(timeout=60)
    summary = json.loads(done.stdout.splitlines()[-1])
    return arrived, int(summary["bytes_skipped"]), int(summary["bytes_sent"])


def _random_file(path: Path, size: int) -> None:
    with path.open("wb") as handle:
        remaining = size
        while remaining:
            chunk = min(remaining, 16 * MB)
            handle.write(os.urandom(chunk))
            remaining -= chunk


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true", help="smaller sizes, for a smoke run")
    parser.add_argument(
        "--rss-gigabytes", type=float, default=0.0, help="also measure RSS for a file this large"
    )
    arguments, _ = parser.parse_known_args()  # ./run.sh bench passes every bench its flags
    large = 40 * MB if arguments.quick else 200 * MB
    small_count = 200 if arguments.quick else 1000
    with tempfile.TemporaryDirectory(prefix="qotp-bench-transfer-") as scratch:
        root = Path(scratch)
        big = root / "large.bin"
        _random_file(big, large)
        tiny = root / "tiny.bin"
        _random_file(tiny, MB)
        many = root / "many"
        many.mkdir()
        for index in range(small_count):
            (many / f"{index:05d}.bin").write_bytes(os.urandom(10_000))

        baseline = raw_stream(large)
        summary, sender_rss, receiver_rss = send_files([big], root / "in1")
        print(f"one file of {large // MB} MB: {summary['mb_s']:.1f} MB/s; qotp send of the "
              f"same bytes on one stream: {baseline:.1f} MB/s; "
              f"ratio {summary['mb_s'] / baseline:.2f}")  # fmt: skip

        small, _, _ = send_files([many], root / "in2")
        files_per_s = small_count / small["elapsed_s"]
        print(f"{small_count} files of 10 kB: {files_per_s:.0f} files/s, {small['mb_s']:.2f} MB/s; "
              f"ratio to the large file's MB/s {small['mb_s'] / summary['mb_s']:.3f}")  # fmt: skip

        arrived, skipped, sent = resume(big, root / "in3")
        print(f"resume of {large // MB} MB killed halfway: {arrived / MB:.1f} MB had arrived, "
              f"{skipped / MB:.1f} MB not sent again, {sent / MB:.1f} MB sent; "
              f"saved {skipped / large:.0%} of the file (ratio to what had arrived "
              f"{skipped / arrived:.2f})")  # fmt: skip

        _, tiny_sender, tiny_receiver = send_files([tiny], root / "in4")
        print(f"peak RSS, {large // MB} MB file: sender {sender_rss / MB:.0f} MB, receiver "
              f"{receiver_rss / MB:.0f} MB; for 1 MB: {tiny_sender / MB:.0f} MB and "
              f"{tiny_receiver / MB:.0f} MB; ratio {sender_rss / tiny_sender:.2f} and "
              f"{receiver_rss / tiny_receiver:.2f}")  # fmt: skip
        if arguments.rss_gigabytes:
            huge_size = int(arguments.rss_gigabytes * 1000 * MB)
            huge = root / "huge.bin"
            big.unlink()
            _random_file(huge, huge_size)
            result, huge_sender, huge_receiver = send_files([huge], root / "in5")
            print(f"peak RSS, {huge_size / 1e9:.1f} GB file ({result['mb_s']:.1f} MB/s): sender "
                  f"{huge_sender / MB:.0f} MB, receiver {huge_receiver / MB:.0f} MB; ratio to "
                  f"1 MB: {huge_sender / tiny_sender:.2f} and "
                  f"{huge_receiver / tiny_receiver:.2f}")  # fmt: skip


if __name__ == "__main__":
    main()
