"""tshark decrypts a DTLS capture of ours with the NSS key log from ``--keylog`` (issue 10).

tcpdump records a handshake and application data on loopback (our CLI client
against our server); tshark, given the key log the client wrote, must show
the application data in clear, and must not without it.
"""

from __future__ import annotations

import asyncio
import os
import re
import signal
import subprocess
from pathlib import Path

import pytest
from dtls_helpers import make_pki, pem_chain
from dtls_processes import PIPE, STEP_SECONDS, dtls_cli, read_until, spawn
from system_packages import require_command

import dtls.asyncio as dtls_asyncio
from dtls.config import DTLSConfiguration

PAYLOAD = b"secret application payload, only readable with the key log\n"


@pytest.mark.parametrize("version", ["--dtls1_2", "--dtls1_3"])
def test_tshark_decrypts_our_capture_with_the_key_log(tmp_path: Path, version: str) -> None:
    tcpdump = require_command("tcpdump")
    tshark = require_command("tshark")
    if os.geteuid() != 0:
        pytest.skip("capturing on loopback needs root")
    pki = make_pki()
    chain, key = pki.issue("localhost", sans=("127.0.0.1",))
    ca_file = tmp_path / "ca.pem"
    ca_file.write_bytes(pem_chain((pki.ca_certificate,)))
    capture, key_log = tmp_path / "dtls.pcap", tmp_path / "keys.log"
    configuration = DTLSConfiguration(is_client=False, certificate_chain=chain, private_key=key)

    async def run() -> int:
        async with dtls_asyncio.serve("127.0.0.1", 0, configuration) as server:
            _, port = server.local_address
            async with spawn(
                # -Z root: Debian's tcpdump otherwise drops to a user who cannot write here;
                # --immediate-mode: no packet buffering that SIGINT could cut short.
                tcpdump, "-i", "lo", "--immediate-mode", "-U", "-n", "-Z", "root",
                "-w", str(capture), "udp", "port", str(port),
                stderr=PIPE,
            ) as recorder:  # fmt: skip
                assert recorder.stderr is not None
                await read_until(recorder.stderr, b"listening on")

                async def echo() -> None:
                    connection = await server.accept()
                    while data := await connection.recv():
                        await connection.send(data)
                    connection.close()

                echoing = asyncio.create_task(echo())
                async with dtls_cli(
                    "client", f"127.0.0.1:{port}", "--cafile", str(ca_file), "--keylog",
                    str(key_log), version, "-q", stdin=PIPE, stdout=PIPE, stderr=PIPE,
                ) as client:  # fmt: skip
                    out, err = await asyncio.wait_for(client.communicate(PAYLOAD), STEP_SECONDS)
                    assert client.returncode == 0, err
                    assert out == PAYLOAD
                await asyncio.wait_for(echoing, STEP_SECONDS)
                recorder.send_signal(signal.SIGINT)
                await asyncio.wait_for(recorder.wait(), STEP_SECONDS)
            return port

    port = asyncio.run(run())
    first = "CLIENT_RANDOM " if version == "--dtls1_2" else "CLIENT_HANDSHAKE_TRAFFIC_SECRET "
    assert key_log.read_text().startswith(first)

    def shown(*options: str) -> list[bytes]:
        result = subprocess.run(
            [tshark, "-r", str(capture), "-d", f"udp.port=={port},dtls", *options,
             "-Y", "data", "-T", "fields", "-e", "data.data"],
            capture_output=True, text=True, timeout=60, check=True,
        )  # fmt: skip
        return [bytes.fromhex(line.strip()) for line in result.stdout.splitlines() if line.strip()]

    assert PAYLOAD not in capture.read_bytes()
    assert PAYLOAD not in shown()
    if version == "--dtls1_3":
        lines = [line.split()[0] for line in key_log.read_text().splitlines()]
        assert "CLIENT_TRAFFIC_SECRET_0" in lines and "SERVER_TRAFFIC_SECRET_0" in lines
        if _tshark_version(tshark) < (4, 2):
            # Wireshark reads DTLS 1.3's unified header from 4.2 on; Debian 12 has 4.0, which
            # shows our 1.3 records as "Continuation Data" whatever the key log says.
            return
    decrypted = shown("-o", f"tls.keylog_file:{key_log}")
    assert decrypted.count(PAYLOAD) == 2  # the client's datagram and the server's echo


def _tshark_version(tshark: str) -> tuple[int, int]:
    output = subprocess.run(
        [tshark, "--version"], capture_output=True, text=True, timeout=60, check=False
    ).stdout
    match = re.search(r"TShark \(Wireshark\) (\d+)\.(\d+)", output)
    return (int(match.group(1)), int(match.group(2))) if match else (0, 0)
