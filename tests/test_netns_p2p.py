"""``qotp rendezvous`` and two ``qotp peer``s behind real NATs (network namespaces, nftables).

Cone NATs (plain masquerade, port-preserving): the peers punch through and
connect directly; the file's bytes never pass the rendezvous (its relay
counters stay at zero).  Symmetric NATs (``masquerade fully-random``): no
punch gets through, the rendezvous relays, and the file still arrives
bit-exact.  The connected events say which.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest
from netns import RENDEZVOUS_IP, nat_topology

FILE_BYTES = 3_000_000
PROCESS_TIMEOUT_S = 90


def json_lines(text: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in text.splitlines() if line.startswith("{")]


def first_line(process: subprocess.Popen[str]) -> str:
    assert process.stdout is not None
    return process.stdout.readline()


@pytest.mark.parametrize("kind", ["cone", "symmetric"])
def test_peers_behind_nats_connect_and_move_a_file(kind: str, tmp_path: Path) -> None:
    source = tmp_path / "payload.bin"
    source.write_bytes(os.urandom(FILE_BYTES))
    inbox = tmp_path / "inbox"
    with nat_topology(kind) as topology:
        spaces = topology.spaces
        rendezvous_at = f"{RENDEZVOUS_IP}:4244"
        rendezvous = spaces.qotp("public", "rendezvous", "--listen", rendezvous_at, "--json")
        assert json.loads(first_line(rendezvous))["event"] == "listening"
        common = ["--rendezvous", rendezvous_at, "--json", "--punch-timeout", "1.5"]
        bob = spaces.qotp(
            "peer-b", "peer", "--name", "bob", "--receive-dir", str(inbox), "--once", *common
        )
        assert json.loads(first_line(bob))["event"] == "registered"
        started = time.monotonic()
        alice = spaces.qotp(
            "peer-a", "peer", "--name", "alice", "--connect", "bob", "--send-file", str(source),
            *common,
        )  # fmt: skip
        alice_out, alice_err = alice.communicate(timeout=PROCESS_TIMEOUT_S)
        elapsed = time.monotonic() - started
        assert alice.returncode == 0, alice_out + alice_err
        bob_out, bob_err = bob.communicate(timeout=PROCESS_TIMEOUT_S)
        assert bob.returncode == 0, bob_out + bob_err
        rendezvous.send_signal(signal.SIGTERM)
        rendezvous_out, rendezvous_err = rendezvous.communicate(timeout=PROCESS_TIMEOUT_S)
        assert "Traceback" not in alice_err + bob_err + rendezvous_err

    alice_events, bob_events = json_lines(alice_out), json_lines(bob_out)
    direct = kind == "cone"
    for events, other, nat_ip in (
        (alice_events, "bob", topology.nat_ips[1]),
        (bob_events, "alice", topology.nat_ips[0]),
    ):
        [connected] = [event for event in events if event["event"] == "connected"]
        assert connected["peer"] == other and connected["direct"] is direct
        if direct:
            assert connected["addr"].startswith(nat_ip + ":")  # the other's NAT, not the relay
        else:
            assert connected["addr"] == rendezvous_at
    digest = hashlib.sha256(source.read_bytes()).hexdigest()
    [sent] = [event for event in alice_events if event["event"] == "file"]
    [received] = [event for event in bob_events if event["event"] == "file"]
    for event in (sent, received):
        assert (event["name"], event["bytes"], event["sha256"]) == (
            "payload.bin",
            FILE_BYTES,
            digest,
        )
    assert (inbox / "payload.bin").read_bytes() == source.read_bytes()

    statistics = [event for event in json_lines(rendezvous_out) if event["event"] == "statistics"]
    assert statistics, rendezvous_out
    relayed = statistics[-1]["relayed_bytes"]
    if direct:
        assert relayed == 0 and statistics[-1]["relays"] == 0
    else:
        assert relayed > FILE_BYTES
    setup = [event["setup_s"] for event in alice_events if event["event"] == "connected"][0]
    print(f"{kind} NAT: connected in {setup:.2f} s ({'direct' if direct else 'relayed'}), "
          f"whole run {elapsed:.1f} s, {relayed} bytes relayed")  # fmt: skip
