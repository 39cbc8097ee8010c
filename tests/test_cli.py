"""``qotp serve`` / ``qotp send`` as separate processes over loopback."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator

import pytest

SEED = "66ff156b54f06b514ab4d679056836c327d31f05a3c053150330f3097fa47385"
PUBLIC = "abcb28157945aefc8e3fddef3323588f1f742fb277bbbcc72813ecdb3aa8a745"


@pytest.fixture(params=["digest", "echo"])
def server(request: pytest.FixtureRequest) -> Iterator[tuple[str, str]]:
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "qotp",
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--seed-hex",
            SEED,
            "--mode",
            request.param,
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None
        first = process.stdout.readline().strip()
        assert first == f"pubkey={PUBLIC}"
        listening = process.stdout.readline().strip().removeprefix("listening=")
        yield listening, request.param
    finally:
        process.kill()
        process.wait()


@pytest.mark.parametrize("zero_rtt", [False, True])
def test_send_against_serve(server: tuple[str, str], zero_rtt: bool) -> None:
    address, mode = server
    command = [
        sys.executable,
        "-m",
        "qotp",
        "send",
        address,
        "--streams",
        "3",
        "--bytes",
        "200000",
        "--mode",
        mode,
        "--timeout",
        "30",
    ]
    if zero_rtt:
        command += ["--pubkey", PUBLIC]
    done = subprocess.run(command, capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stdout + done.stderr
    report = json.loads(done.stdout)
    assert report["ok"] and report["streams"] == 3 and report["total_bytes"] == 600_000
    assert report["mb_s"] > 0


def test_send_to_nobody_fails() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "qotp", "send", "127.0.0.1:9", "--timeout", "1"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 1
    assert json.loads(done.stdout)["ok"] is False
