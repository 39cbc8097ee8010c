"""The ``qotp`` command line: serve/send over loopback, and every failure ending cleanly.

A failure is clean when it prints no traceback, exits non-zero, says one line
on stderr (``send`` adds its JSON result line on stdout) and stays under 4 KB.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from qotp.cli import COMMAND_MODULES, main
from qotp.cli.common import parse_bind_address, parse_peer_address, parse_public_key

SEED = "66ff156b54f06b514ab4d679056836c327d31f05a3c053150330f3097fa47385"
PUBLIC = "abcb28157945aefc8e3fddef3323588f1f742fb277bbbcc72813ecdb3aa8a745"
OTHER_PUBLIC = "8067ac19649668598bec286fd251c1c4a81bfdd1a682a13757c6f3bf21f8cd5d"
QOTP = [sys.executable, "-m", "qotp"]
MAX_OUTPUT_BYTES = 4096
PROGRESS_LINE = re.compile(r"^(digest|echo) to \S+: [0-9.]+ [kMG]?B of ")


@dataclass
class Server:
    process: subprocess.Popen[str]
    address: str

    def stop(self, signum: int = signal.SIGINT) -> tuple[int, str]:
        """Stop it like Ctrl-C does; its exit status and stderr."""
        if self.process.poll() is None:
            self.process.send_signal(signum)
        _, stderr = self.process.communicate(timeout=30)
        return self.process.returncode, stderr


def start_server(mode: str, *extra: str) -> Server:
    process = subprocess.Popen(
        [*QOTP, "serve", "--listen", "127.0.0.1:0", "--seed-hex", SEED, "--mode", mode, *extra],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert process.stdout is not None
    first = process.stdout.readline().strip()
    assert first == f"pubkey={PUBLIC}", first
    address = process.stdout.readline().strip().removeprefix("listening=")
    return Server(process, address)


@pytest.fixture
def servers() -> Iterator[list[Server]]:
    started: list[Server] = []
    yield started
    for server in started:
        if server.process.poll() is None:
            server.process.kill()
        server.process.communicate(timeout=30)


def serve(started: list[Server], mode: str, *extra: str) -> Server:
    server = start_server(mode, *extra)
    started.append(server)
    return server


def run(*arguments: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*QOTP, *arguments], capture_output=True, text=True, timeout=timeout, check=False
    )


def assert_clean_failure(
    stdout: str, stderr: str, returncode: int, *, expect: str, json_line: bool = False
) -> None:
    """No traceback, non-zero exit, one line naming the cause, under 4 KB.

    Progress lines (every few seconds of a long transfer, without a terminal) may
    come before the failure line.
    """
    everything = stdout + stderr
    assert returncode != 0, everything
    assert "Traceback" not in everything and "Task exception" not in everything, everything
    assert len(everything.encode()) < MAX_OUTPUT_BYTES, everything
    lines = [line for line in stderr.splitlines() if not PROGRESS_LINE.match(line)]
    assert len(lines) == 1, everything
    assert expect in lines[0], everything
    if json_line:
        report = json.loads(stdout)
        assert report["ok"] is False and expect in report["error"]
    else:
        assert stdout == "", everything


# -- the normal path -----------------------------------------------------------------


@pytest.mark.parametrize("zero_rtt", [False, True])
@pytest.mark.parametrize("mode", ["digest", "echo"])
def test_send_against_serve(servers: list[Server], mode: str, zero_rtt: bool) -> None:
    server = serve(servers, mode, "--idle-timeout", "0.5")
    command = ["send", server.address, "--streams", "3", "--bytes", "200000", "--mode", mode]
    if zero_rtt:
        command += ["--pubkey", PUBLIC]
    done = run(*command)
    assert done.returncode == 0, done.stdout + done.stderr
    report = json.loads(done.stdout)
    assert set(report) == {"ok", "streams", "total_bytes", "elapsed_s", "mb_s"}
    assert report["ok"] and report["streams"] == 3 and report["total_bytes"] == 600_000
    assert report["mb_s"] > 0
    assert "verified" in done.stderr
    # The server logs the connection once it ended (here: idle after 0.5 s).
    time.sleep(1.5)
    status, log = server.stop()
    assert status == 130, log
    line = next(line for line in log.splitlines() if " key " in line)
    assert line.startswith("127.0.0.1:") and "3 streams (3 completed)" in line
    assert line.endswith("all streams done, then idle timeout (the client went quiet)")
    expected_in = 3 * (200_000 + (8 if mode == "digest" else 0))
    assert f"{expected_in} bytes in" in line and "s, " in line
    assert log.splitlines()[-1].startswith("qotp serve: stopped after ")


def test_serve_json_log(servers: list[Server]) -> None:
    process = subprocess.Popen(
        [*QOTP, "serve", "--listen", "127.0.0.1:0", "--json", "--idle-timeout", "0.3"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert process.stdout is not None
    listening = json.loads(process.stdout.readline())
    servers.append(Server(process, listening["address"]))
    assert listening["event"] == "listening" and len(listening["pubkey"]) == 64
    done = run("send", listening["address"], "--streams", "2", "--json")
    assert done.returncode == 0 and json.loads(done.stdout)["ok"]
    event = json.loads(process.stdout.readline())
    assert event["event"] == "connection" and event["streams"] == 2
    assert event["reason"] == "idle timeout" and event["error"] is False


# -- failures: arguments --------------------------------------------------------------

ZERO_KEY = "00" * 32


@pytest.mark.parametrize(
    ("arguments", "expect"),
    [
        (["send", "127.0.0.1:4242", "--pubkey", "abcd"], "has 4 hex digits, expected 64"),
        (["send", "127.0.0.1:4242", "--pubkey", "zz"], "is not hex"),
        (["send", "127.0.0.1:4242", "--pubkey", ZERO_KEY], "not a usable X25519 key"),
        (["serve", "--seed-hex", ZERO_KEY], "all zeros"),
        (["serve", "--seed-hex", "12"], "has 2 hex digits"),
        (["send", "127.0.0.1:4242", "--bytes", "-5"], "-5 bytes: at least 0"),
        (["send", "127.0.0.1:4242", "--streams", "2000"], "2000 streams: at most 1024"),
        (["send", "127.0.0.1:4242", "--streams", "-1"], "-1 streams: at least 1"),
        (["send", "127.0.0.1:4242", "--streams", "0"], "0 streams: at least 1"),
        (["send", "127.0.0.1:4242", "--timeout", "-1"], "seconds must be more than 0"),
        (["serve", "--listen", "127.0.0.1:70000"], "port 70000 is out of range"),
        (["send", "127.0.0.1:99999"], "port 99999 is out of range"),
        (["send", "127.0.0.1:0"], "port 0 is out of range"),
        (["send", "localhost"], "expected HOST:PORT"),
        (["decrypt", "--epoch", "-1", "00"], "at least 0"),
        # An InitSnd needs no secret; a bad --secret is refused anyway (it passed).
        (["decrypt", "00" * 1200, "--secret", "zz"], "secret 'zz' is not hex"),
        (["decrypt", "00" * 1200, "--secret-id", "0011"], "secret has 4 hex digits"),
        (["nosuchcommand"], "invalid choice"),
    ],
)
def test_bad_arguments(
    capsys: pytest.CaptureFixture[str], arguments: list[str], expect: str
) -> None:
    status = main(arguments)
    captured = capsys.readouterr()
    assert status == 2
    assert_clean_failure(captured.out, captured.err, status, expect=expect)
    assert "--help" in captured.err


def test_json_mode_failures_are_json(capsys: pytest.CaptureFixture[str]) -> None:
    status = main(["send", "127.0.0.1:99999", "--json"])
    captured = capsys.readouterr()
    assert status == 2 and captured.err == ""
    assert json.loads(captured.out) == {
        "ok": False,
        "error": "argument HOST:PORT: port 99999 is out of range: use 1 to 65535 "
        "(see qotp send --help)",
    }


def test_version_and_help(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["--version"])
    assert exited.value.code == 0
    assert capsys.readouterr().out.startswith("qotp ")
    for name in COMMAND_MODULES:
        with pytest.raises(SystemExit):
            main([name, "--help"])
        text = capsys.readouterr().out
        assert "--json" in text and "--quiet" in text, name
    with pytest.raises(SystemExit):
        main(["send", "--help"])
    text = capsys.readouterr().out
    assert "(default: 1024)" in text and "echo:" in text and "digest:" in text


def test_address_and_key_parsing() -> None:
    assert parse_bind_address("[::1]:0") == ("::1", 0)
    assert parse_peer_address("example.org:65535") == ("example.org", 65535)
    with pytest.raises(Exception, match="IPv6"):
        parse_peer_address("::1:80")
    with pytest.raises(Exception, match="number"):
        parse_peer_address("127.0.0.1:+80")
    assert parse_public_key("0x" + PUBLIC).hex() == PUBLIC
    # A low-order point other than zero (RFC 7748: u = 1).
    with pytest.raises(Exception, match="usable"):
        parse_public_key("01" + "00" * 31)


# -- failures: the system and the peer -------------------------------------------------


def test_unknown_host(capsys: pytest.CaptureFixture[str]) -> None:
    for arguments in (["serve", "--listen", "no-such-host.invalid:0"],
                      ["send", "no-such-host.invalid:4242"]):  # fmt: skip
        status = main(arguments)
        captured = capsys.readouterr()
        assert_clean_failure(captured.out, captured.err, status, expect="cannot resolve host")


def test_port_in_use() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as taken:
        taken.bind(("127.0.0.1", 0))
        port = taken.getsockname()[1]
        done = run("serve", "--listen", f"127.0.0.1:{port}")
    assert_clean_failure(done.stdout, done.stderr, done.returncode, expect="already in use")


@pytest.mark.parametrize("zero_rtt", [False, True])
def test_no_answer(zero_rtt: bool) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as silent:
        silent.bind(("127.0.0.1", 0))  # receives, never answers
        address = f"127.0.0.1:{silent.getsockname()[1]}"
        extra = ["--pubkey", PUBLIC] if zero_rtt else []
        done = run("send", address, "--timeout", "1", *extra)
    expect = f"no answer from {address} after 1."
    assert_clean_failure(done.stdout, done.stderr, done.returncode, expect=expect, json_line=True)
    assert ("is --pubkey right?" in done.stderr) == zero_rtt


@pytest.mark.parametrize("crypto", [[], ["--crypto", "dtls", "--insecure"]])
def test_closed_port_fails_at_once(crypto: list[str]) -> None:
    """The ICMP port unreachable ends the handshake; it waited the whole --timeout."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.bind(("127.0.0.1", 0))
        address = f"127.0.0.1:{probe.getsockname()[1]}"
    done = run("send", address, "--timeout", "60", *crypto)
    expect = f"nothing answers at {address}: the port is closed (ICMP port unreachable)"
    assert_clean_failure(done.stdout, done.stderr, done.returncode, expect=expect, json_line=True)


def test_wrong_pubkey(servers: list[Server]) -> None:
    server = serve(servers, "digest")
    done = run("send", server.address, "--pubkey", OTHER_PUBLIC, "--timeout", "1")
    assert_clean_failure(
        done.stdout, done.stderr, done.returncode, expect="is --pubkey right?", json_line=True
    )


def test_digest_client_against_echo_server(servers: list[Server]) -> None:
    server = serve(servers, "echo")
    done = run("send", server.address, "--bytes", "3000000", "--streams", "2")
    assert_clean_failure(
        done.stdout, done.stderr, done.returncode, expect="server is in echo mode", json_line=True
    )
    report = json.loads(done.stdout)
    assert report["total_bytes"] == 0 and report["mb_s"] == 0


def test_echo_client_against_digest_server(servers: list[Server]) -> None:
    server = serve(servers, "digest")
    done = run("send", server.address, "--mode", "echo", "--bytes", "100000")
    assert_clean_failure(
        done.stdout, done.stderr, done.returncode, expect="server is in digest mode", json_line=True
    )


def test_killed_server(servers: list[Server]) -> None:
    """No FIN, no answer: the client gives up at the retry limit and counts nothing."""
    server = serve(servers, "digest")
    client = subprocess.Popen(
        [*QOTP, "send", server.address, "--bytes", "1000000000", "--streams", "2"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    time.sleep(1.0)
    server.process.kill()
    stdout, stderr = client.communicate(timeout=60)
    assert_clean_failure(stdout, stderr, client.returncode, expect="lost after", json_line=True)
    report = json.loads(stdout)
    assert report["total_bytes"] == 0 and report["mb_s"] == 0
    assert "was the server stopped?" in stderr


def test_stopped_server_tells_its_peers(servers: list[Server]) -> None:
    """Ctrl-C on serve closes the streams, so the client learns at once (not at the retry limit)."""
    server = serve(servers, "digest")
    client = subprocess.Popen(
        [*QOTP, "send", server.address, "--bytes", "1000000000", "--streams", "2"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    time.sleep(1.0)
    status, log = server.stop()
    stdout, stderr = client.communicate(timeout=60)
    assert "was it stopped?" in stderr, log
    assert_clean_failure(
        stdout, stderr, client.returncode, expect="was it stopped?", json_line=True
    )
    assert status == 130 and "Traceback" not in log
    assert "closed by us (server stopping)" in log
    assert "1 of them still open" in log.splitlines()[-1]


def test_ctrl_c_during_send(servers: list[Server]) -> None:
    server = serve(servers, "echo")
    client = subprocess.Popen(
        [
            *QOTP,
            "send",
            server.address,
            "--bytes",
            "1000000000",
            "--streams",
            "2",
            "--mode",
            "echo",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    time.sleep(1.5)
    client.send_signal(signal.SIGINT)
    stdout, stderr = client.communicate(timeout=30)
    assert client.returncode == 130
    assert_clean_failure(
        stdout, stderr, client.returncode, expect="interrupted after ", json_line=True
    )
    assert "0 of 2 streams verified" in stderr and " MB of 2000.0 MB sent" in stderr


@pytest.mark.skipif(not hasattr(os, "getuid") or os.getuid() == 0, reason="root may bind anything")
def test_privileged_port() -> None:
    done = run("serve", "--listen", "127.0.0.1:1")
    assert_clean_failure(done.stdout, done.stderr, done.returncode, expect="no permission")


def test_library_imports_pull_in_no_cli_extras() -> None:
    code = (
        "import sys, qotp, qotp.asyncio, qotp.blocking, qotp.capture, qotp.tool, qotp.cli, "
        "qotp.cli.send, qotp.cli.serve, qotp.cli.decrypt, qotp.dtls_protection\n"
        "assert 'rich' not in sys.modules and 'dpkt' not in sys.modules, sys.modules.keys()"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


def test_progress_without_rich_prints_plain_lines(monkeypatch: pytest.MonkeyPatch) -> None:
    """On a terminal without rich installed: plain progress lines, no crash."""
    import io

    from qotp.cli import common

    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    monkeypatch.setitem(sys.modules, "rich", None)
    monkeypatch.setitem(sys.modules, "rich.progress", None)
    monkeypatch.setitem(sys.modules, "rich.console", None)
    monkeypatch.setattr(common.Progress, "PLAIN_INTERVAL_S", 0.0)
    terminal = Terminal()
    output = common.Output(stderr=terminal)
    progress = output.progress(2_000_000, "echo to 127.0.0.1:1")
    progress.update(1_000_000)
    progress.close()
    assert terminal.getvalue().startswith("echo to 127.0.0.1:1: 1.0 MB of 2.0 MB")


def test_quiet_and_verbose(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["keygen"]) == 0
    assert "keep seed-hex secret" in capsys.readouterr().err
    assert main(["keygen", "-q"]) == 0
    captured = capsys.readouterr()
    assert captured.err == "" and captured.out.startswith("seed-hex=")
    status = main(["send", "127.0.0.1:1", "-q", "-v"])
    assert status == 2 and "not allowed with argument" in capsys.readouterr().err
