"""Python client -> Go reference server, against the reference with itself, in the same run.

Run: ``.venv/bin/python benchmarks/bench_interop.py [--quick] [--repeats N]``.

Digest mode, one stream of 10 MB, over loopback, each pairing ``--repeats``
times in alternation (so that a busy moment of the machine hurts both): our
``qotp send`` against the reference server (our Go program in tests/interop, built
from the reference's source as the tests build it), and the same Go program as
client against the same server. Prints the median MB/s of each and their ratio.

The reference server sends one ACK per 10 ms until it has an RTT sample, which
in an upload it only gets at the very end; our sender recognises that and stops
being clocked by those ACKs (``qotp/congestion/ack_starvation.py``). Targets
(issue 8): Python -> reference at least the reference -> reference rate, and at
least 5 MB/s.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

from interop import goref  # noqa: E402

MB = 1_000_000
SEED_HEX = "5eed" * 16
TARGET_MB_S = 5.0


def _client_run(command: list[str], size: int) -> float:
    """MB/s of one verified transfer; 0 for a failed one (said on stdout)."""
    arguments = ["--bytes", str(size), "--mode", "digest", "--timeout", "120"]
    run = goref.run_client([*command, *arguments], timeout=180)
    if not run.report or run.report.get("ok") is not True:
        error = run.report.get("error") if run.report else run.describe()
        print(f"  a run of {Path(command[0]).name} failed: {str(error)[:200]}")
        return 0.0
    return float(run.report["mb_s"])  # type: ignore[arg-type]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="one run each, for a smoke test")
    parser.add_argument("--repeats", type=int, default=5, help="runs of each pairing (5)")
    parser.add_argument("--megabytes", type=int, default=10, help="size of the stream (10)")
    arguments, _ = parser.parse_known_args()  # ./run.sh bench passes every bench its flags
    repeats = 1 if arguments.quick else max(arguments.repeats, 1)
    size = arguments.megabytes * MB

    print("== interop with the Go reference ==")
    try:
        peer = goref.build_go_peer()
    except (goref.GoPeerUnavailable, goref.GoPeerBuildError) as error:
        print(f"  (not measured: {str(error).splitlines()[0]})")
        return 0
    logs = Path(tempfile.mkdtemp(prefix="qotp-bench-interop-"))
    server = goref.start_server(
        [str(peer.binary), "server", "--listen", "127.0.0.1:0", "--mode", "digest",
         "--seed-hex", SEED_HEX, "--max-seconds", "3600"],
        name="go-reference-server", log_directory=logs,
    )  # fmt: skip
    ours: list[float] = []
    theirs: list[float] = []
    try:
        for _ in range(repeats):
            theirs.append(
                _client_run([str(peer.binary), "client", "--connect", server.address], size)
            )
            ours.append(_client_run([sys.executable, "-m", "qotp", "send", server.address], size))
    finally:
        goref.stop_server(server)
    ours_median = statistics.median(ours)
    theirs_median = statistics.median(theirs)
    print(
        f"digest 1 x {size // MB} MB to the reference server ({peer.version}), median of {repeats}:"
    )
    print(f"  reference client: {theirs_median:6.2f} MB/s  {[round(x, 2) for x in theirs]}")
    print(f"  Python client:    {ours_median:6.2f} MB/s  {[round(x, 2) for x in ours]}")
    ratio = ours_median / theirs_median if theirs_median else float("inf")
    verdict = "met" if ratio >= 1.0 and ours_median >= TARGET_MB_S else "NOT met"
    print(
        f"  ratio Python/reference {ratio:.2f} (target >= 1.0, and >= {TARGET_MB_S:g} MB/s): "
        f"{verdict}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
