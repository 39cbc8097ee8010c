"""The DTLS programs in examples/ run and do what they say."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

from dtls_helpers import make_pki, pem_chain, pem_key
from dtls_processes import free_udp_port

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def test_in_memory_example() -> None:
    done = subprocess.run(
        [sys.executable, str(EXAMPLES / "dtls_in_memory.py")],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert "server received: b'hello over DTLS'" in done.stdout


def test_echo_server_and_blocking_client_examples(tmp_path: Path) -> None:
    pki = make_pki()
    chain, key = pki.issue("localhost", "p256")
    (tmp_path / "ca.pem").write_bytes(pem_chain((pki.ca_certificate,)))
    (tmp_path / "cert.pem").write_bytes(pem_chain(chain))
    (tmp_path / "key.pem").write_bytes(pem_key(key))
    port = free_udp_port()
    server = subprocess.Popen(
        [
            sys.executable,
            str(EXAMPLES / "dtls_echo_server.py"),
            "--cert",
            str(tmp_path / "cert.pem"),
            "--key",
            str(tmp_path / "key.pem"),
            "--port",
            str(port),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert server.stdout is not None
        assert "listening on" in server.stdout.readline()
        client = subprocess.run(
            [
                sys.executable,
                str(EXAMPLES / "dtls_echo_client.py"),
                "--port",
                str(port),
                "--cafile",
                str(tmp_path / "ca.pem"),
            ],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert client.returncode == 0, client.stderr
        assert client.stdout.splitlines() == ["datagram 0", "datagram 1", "datagram 2"]
        deadline = time.monotonic() + 10
        seen = ""
        while "closed" not in seen and time.monotonic() < deadline:
            seen += server.stdout.readline()
        assert "closed" in seen  # the client's close_notify reached the server
    finally:
        server.kill()
        server.wait()
