"""Roaming: the sender's address is replaced in the middle of a transfer; the transfer completes.

Two namespaces joined by a veth pair (the sender's side limited to 80 Mbit/s
with tbf, so the transfer lasts long enough to move under it).  Halfway, the
sender's address 10.9.0.2 is deleted and 10.9.0.3 added: its socket (bound
to 0.0.0.0) keeps working, packets leave from the new address, the receiver
validates the new path and moves its replies there.  One connection, one
session, nothing resent, the file bit-exact.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from pathlib import Path

from netns import namespaces
from system_packages import require_command

FILE_BYTES = 24_000_000
TIMEOUT_S = 90


def test_a_transfer_survives_the_senders_address_change(tmp_path: Path) -> None:
    require_command("tc", package="iproute2")
    source = tmp_path / "roaming.bin"
    source.write_bytes(os.urandom(FILE_BYTES))
    inbox = tmp_path / "inbox"
    with namespaces() as spaces:
        spaces.add("server")
        spaces.add("client")
        spaces.link("client", "10.9.0.2/24", "server", "10.9.0.1/24", name_a="eth0")
        spaces.run(
            "client", "tc", "qdisc", "add", "dev", "eth0", "root", "tbf", "rate", "80mbit",
            "burst", "64kb", "latency", "100ms",
        )  # fmt: skip
        receiver = spaces.qotp(
            "server", "receive-files", "--listen", "10.9.0.1:4243", "--dir", str(inbox),
            "--once", "--json",
        )  # fmt: skip
        assert receiver.stdout is not None
        listening = json.loads(receiver.stdout.readline())
        sender = spaces.qotp(
            "client", "send-files", "10.9.0.1:4243", str(source), "--pubkey",
            listening["pubkey"], "--json",
        )  # fmt: skip
        partial = inbox / ".roaming.bin.qotp-partial"
        deadline = time.monotonic() + TIMEOUT_S
        while not partial.exists() or partial.stat().st_size < FILE_BYTES // 3:
            assert sender.poll() is None, "the transfer ended before the address changed"
            assert time.monotonic() < deadline
            time.sleep(0.01)
        moved_at = partial.stat().st_size
        spaces.run("client", "ip", "addr", "del", "10.9.0.2/24", "dev", "eth0")
        spaces.run("client", "ip", "addr", "add", "10.9.0.3/24", "dev", "eth0")
        sender_out, sender_err = sender.communicate(timeout=TIMEOUT_S)
        receiver_out, receiver_err = receiver.communicate(timeout=TIMEOUT_S)
    assert sender.returncode == 0, sender_out + sender_err
    assert receiver.returncode == 0, receiver_out + receiver_err
    assert "Traceback" not in sender_err + receiver_err
    summary = json.loads(sender_out.splitlines()[-1])
    assert summary["ok"] and summary["files"] == 1
    assert summary["bytes_sent"] == FILE_BYTES and summary["bytes_skipped"] == 0
    events = [json.loads(line) for line in receiver_out.splitlines()]
    assert [event["event"] for event in events].count("session") == 1
    moves = [event for event in events if event["event"] == "moved"]
    assert moves and moves[-1]["from"].startswith("10.9.0.2:")
    assert moves[-1]["to"].startswith("10.9.0.3:")
    assert moved_at < FILE_BYTES
    digest = hashlib.sha256(source.read_bytes()).hexdigest()
    assert hashlib.sha256((inbox / "roaming.bin").read_bytes()).hexdigest() == digest
