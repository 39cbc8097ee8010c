"""The programs in examples/ run and verify what they claim."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def run_example(*arguments: str) -> str:
    done = subprocess.run(
        [sys.executable, *arguments], capture_output=True, text=True, timeout=120, check=False
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "Traceback" not in done.stderr, done.stderr
    return done.stdout


def test_file_transfer_example() -> None:
    output = run_example(str(EXAMPLES / "qotp_file_transfer.py"), "demo", "--size", "1000000")
    assert "SHA-256 verified" in output


def test_p2p_example() -> None:
    output = run_example(str(EXAMPLES / "qotp_p2p.py"))
    assert output.strip().endswith("ok")
    assert "A saw 1 address change" in output or "address change(s)" in output


def test_qotp_over_dtls_example() -> None:
    done = subprocess.run(
        [sys.executable, str(EXAMPLES / "qotp_over_dtls.py"), "--megabytes", "2", "--streams", "2"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "SHA-256 verified" in done.stdout and "QOTP over DTLS" in done.stdout
