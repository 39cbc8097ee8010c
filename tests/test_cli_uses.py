"""The file and peer commands fail in one line, never a traceback: bad input, dead peers, Ctrl-C."""

from __future__ import annotations

import io
import json
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from qotp.cli.common import Output
from qotp.cli.files import FileProgressDisplay
from qotp.transfer import FileDone, FileProgress, FileStarted

QOTP = [sys.executable, "-m", "qotp"]
KEY = "abcb28157945aefc8e3fddef3323588f1f742fb277bbbcc72813ecdb3aa8a745"


def qotp(*arguments: str, timeout: float = 30) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*QOTP, *arguments], capture_output=True, text=True, timeout=timeout, check=False
    )


def assert_one_line_failure(done: subprocess.CompletedProcess[str], status: int, text: str) -> None:
    assert done.returncode == status, done.stdout + done.stderr
    assert "Traceback" not in done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and text in lines[0], done.stderr


@pytest.mark.parametrize(
    ("arguments", "status", "text"),
    [
        (["send-files", "127.0.0.1:9", "/no/such/file"], 1, "cannot send /no/such/file"),
        (["send-files", "nohost", "x"], 2, "HOST:PORT"),
        (["send-files", "127.0.0.1:70000", "x"], 2, "out of range"),
        (["send-files", "127.0.0.1:9", "x", "--pubkey", "00" * 32], 2, "not a usable"),
        (["send-files", "127.0.0.1:9", "x", "--parallel", "0"], 2, "at least 1"),
        (["receive-files", "--dir", "/proc/qotp-no"], 1, "cannot use /proc/qotp-no"),
        # It exists but takes no files (not even root's): it started, then failed each file.
        (["receive-files", "--dir", "/sys"], 1, "cannot use /sys as the receive directory"),
        (["receive-files", "--dir", "x", "--allow-key", "zz"], 2, "not hex"),
        (["receive-files", "--dir", "x", "--listen", "127.0.0.1:x"], 2, "not a number"),
        (["rendezvous", "--listen", "256.0.0.1:1"], 1, "cannot resolve"),
        (["rendezvous", "--relay-rate", "-5"], 2, "at least 0"),
        (["peer", "--rendezvous", "127.0.0.1:1", "--name", " x"], 2, "spaces"),
        (["peer", "--rendezvous", "127.0.0.1:1", "--name", "a", "--once"], 1, "--receive-dir"),
        (["peer", "--name", "a"], 2, "--rendezvous"),
        (
            ["peer", "--rendezvous", "no-such-host.invalid:4244", "--name", "a", "--timeout", "5"],
            1,
            "cannot resolve host 'no-such-host.invalid'",
        ),
        (
            ["peer", "--rendezvous", "127.0.0.1:1", "--name", "a", "--allow-key", KEY],
            1,
            "goes with",
        ),
    ],
)
def test_bad_input_is_one_line(arguments: list[str], status: int, text: str) -> None:
    assert_one_line_failure(qotp(*arguments), status, text)


def test_missing_key_file_is_one_line(tmp_path: Path) -> None:
    done = qotp("receive-files", "--dir", str(tmp_path), "--allowed-keys", str(tmp_path / "k"))
    assert_one_line_failure(done, 1, "cannot read the key file")
    assert done.stderr.strip().endswith(": No such file or directory")  # not Python's repr
    (tmp_path / "k").write_text(f"# friends\n{KEY}\nnot-a-key\n")
    done = qotp("receive-files", "--dir", str(tmp_path), "--allowed-keys", str(tmp_path / "k"))
    assert_one_line_failure(done, 1, ":3:")


def test_nobody_listening_is_one_line(tmp_path: Path) -> None:
    (tmp_path / "a").write_bytes(b"a")
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as silent:
        silent.bind(("127.0.0.1", 0))  # receives, never answers
        address = f"127.0.0.1:{silent.getsockname()[1]}"
        done = qotp("send-files", address, str(tmp_path / "a"), "--timeout", "0.5")
    assert_one_line_failure(done, 1, f"no answer from {address} within 0.5 s")
    # Nothing bound there: the ICMP port unreachable ends it at once, not after --timeout.
    done = qotp("send-files", address, str(tmp_path / "a"), "--timeout", "60")
    assert_one_line_failure(done, 1, f"nothing answers at {address}: the port is closed")
    done = qotp("peer", "--rendezvous", "127.0.0.1:9", "--name", "a", "--timeout", "0.5")
    assert_one_line_failure(done, 1, "no answer from the rendezvous")


def start(*arguments: str) -> tuple[subprocess.Popen[str], str]:
    process = subprocess.Popen(
        [*QOTP, *arguments], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    assert process.stdout is not None
    first = process.stdout.readline()
    return process, first


SENDER_PROGRESS = re.compile(r"^sent [0-9.]+ [kMG]?B of ")


@pytest.mark.parametrize("ending", ["receiver killed, --json", "receiver killed", "sender Ctrl-C"])
def test_a_transfer_cut_midway_is_one_line(tmp_path: Path, ending: str) -> None:
    """Without --json, stdout stays empty (Ctrl-C printed a JSON object there) and stderr
    is the one failure line (the 'receiver key' note and a FAILED line came first)."""
    (tmp_path / "big").write_bytes(bytes(60_000_000))
    receiver, first = start(
        "receive-files", "--listen", "127.0.0.1:0", "--dir", str(tmp_path / "in"), "--json"
    )
    listening = json.loads(first)
    json_mode = "--json" in ending
    options = ["--json", "--pubkey", listening["pubkey"]] if json_mode else []
    sender = subprocess.Popen(
        [*QOTP, "send-files", listening["address"], str(tmp_path / "big"),
         "--idle-timeout", "1.5", *options],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    partial = tmp_path / "in" / ".big.qotp-partial"
    try:
        while not partial.exists() or partial.stat().st_size < 1_000_000:
            time.sleep(0.01)
        if ending == "sender Ctrl-C":
            sender.send_signal(signal.SIGINT)
        else:
            receiver.kill()
        output, errors = sender.communicate(timeout=60)
    finally:
        receiver.kill()
        receiver.communicate()
    assert sender.returncode == (130 if ending == "sender Ctrl-C" else 1), output + errors
    assert "Traceback" not in errors
    if json_mode:
        summary = json.loads(output.splitlines()[-1])
        assert summary["ok"] is False and "run the same command again" in summary["error"]
        return
    assert output == ""
    lines = [line for line in errors.splitlines() if not SENDER_PROGRESS.match(line)]
    assert len(lines) == 1 and "run the same command again" in lines[0], errors
    assert lines[0].startswith("qotp send-files: ")


def test_failed_files_are_counted_in_one_line(tmp_path: Path) -> None:
    """A FAILED line per file came before the summary; -v still lists them."""
    for name in "abc":
        (tmp_path / name).write_bytes(name.encode())
        if name != "c":
            (tmp_path / "in" / name).mkdir(parents=True)  # the receiver refuses to replace it
    receiver, _ = start("receive-files", "--listen", "127.0.0.1:0", "--dir", str(tmp_path / "in"))
    assert receiver.stdout is not None
    address = receiver.stdout.readline().strip().removeprefix("listening=")
    try:
        several = qotp("send-files", address, *(str(tmp_path / name) for name in "abc"))
        one = qotp("send-files", address, str(tmp_path / "a"))
        listed = qotp("send-files", address, str(tmp_path / "a"), str(tmp_path / "b"), "-v")
    finally:
        receiver.kill()
        receiver.communicate()
    assert several.returncode == 1 and several.stdout == ""
    failures = [line for line in several.stderr.splitlines() if not line.startswith("sent c ")]
    assert failures == [
        "qotp send-files: 2 of 3 files failed (the first: a: refused: a is a directory here; "
        "-v lists each); run the same command again to resume"
    ], several.stderr
    assert_one_line_failure(one, 1, "1 of 1 files failed: a: refused: a is a directory here")
    assert listed.stderr.count("FAILED ") == 2 and "receiver key" in listed.stderr


@pytest.mark.parametrize(
    "arguments",
    [
        ["receive-files", "--listen", "127.0.0.1:0", "--dir", "{tmp}"],
        ["rendezvous", "--listen", "127.0.0.1:0"],
    ],
    ids=["receive-files", "rendezvous"],
)
def test_ctrl_c_is_one_line_and_130(arguments: list[str], tmp_path: Path) -> None:
    process, _ = start(*(argument.replace("{tmp}", str(tmp_path)) for argument in arguments))
    process.send_signal(signal.SIGINT)
    output, errors = process.communicate(timeout=30)
    assert process.returncode == 130
    assert "Traceback" not in errors
    assert errors.strip().splitlines()[-1].startswith(f"qotp {arguments[0]}: stopped after")


def test_ctrl_c_while_a_peer_waits_is_one_line(tmp_path: Path) -> None:
    rendezvous, _ = start("rendezvous", "--listen", "127.0.0.1:0")
    assert rendezvous.stdout is not None
    address = rendezvous.stdout.readline().strip().removeprefix("listening=")
    try:
        peer, first = start("peer", "--rendezvous", address, "--name", "solo", "--connect", "x")
        assert first.startswith("registered as solo")
        peer.send_signal(signal.SIGINT)
        _, errors = peer.communicate(timeout=30)
        assert peer.returncode == 130 and "Traceback" not in errors
        assert errors.strip().splitlines()[-1].startswith("qotp peer: stopped after")
    finally:
        rendezvous.send_signal(signal.SIGINT)
        output, errors = rendezvous.communicate(timeout=30)
    statistics = json.loads(output.splitlines()[-1])
    assert statistics["event"] == "statistics" and statistics["registrations"] == 1


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_progress_on_a_terminal_draws_with_rich_and_ends_clean() -> None:
    terminal = Terminal()
    output = Output(stderr=terminal, stdout=io.StringIO())
    display = FileProgressDisplay(output, verb="sent", total_bytes=3_000)
    assert display._rich is not None
    display(FileStarted(path="a/b.bin", size=2_000, offset=500))
    display(FileProgress(path="a/b.bin", position=1_500, size=2_000))
    display(FileDone(path="a/b.bin", size=2_000, bytes_sent=1_500, bytes_skipped=500,
                     sha256=bytes(32), ok=True))  # fmt: skip
    display(FileDone(path="c", size=1_000, bytes_sent=0, bytes_skipped=0, sha256=None,
                     ok=False, error="refused: absolute path"))  # fmt: skip
    display.close()
    assert display.done_bytes == 3_000 and (display.files_ok, display.files_failed) == (1, 1)
    assert "sent a/b.bin" in terminal.getvalue() and "FAILED c" in terminal.getvalue()


def test_the_libraries_do_not_import_the_cli_extras() -> None:
    code = (
        "import sys, qotp.transfer, qotp.rendezvous, qotp.asyncio; "
        "print(sorted(m for m in ('rich', 'dpkt') if m in sys.modules))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]"
