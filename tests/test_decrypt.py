"""``qotp decrypt``: the pure function and the command line."""

from __future__ import annotations

import json
import subprocess
import sys
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from vectors import load

from qotp.decrypt import decrypt_packet
from qotp.envelope import PacketCipher, seal_data
from qotp.keys import KeyPair
from qotp.payload import Ack, Payload, PayloadKind, encode_ack_repeat, encode_payload

VECTORS = load()
SECRET = VECTORS["crypto"]["shared_secrets"]["ephemeral_ephemeral"]["value"]
SECRET_ID = VECTORS["crypto"]["shared_secrets"]["initiator_ephemeral_responder_identity"]["value"]
TYPE_NAMES = {
    "InitSnd": "InitSnd",
    "InitRcv": "InitRcv",
    "InitCryptoSnd": "InitCryptoSnd",
    "InitCryptoRcv": "InitCryptoRcv",
    "Data": "Data",
}


@pytest.mark.parametrize("flow", ["in_band", "zero_rtt"])
def test_every_flow_packet_decrypts(flow: str) -> None:
    for case in VECTORS["flows"][flow]["packets"]:
        result = decrypt_packet(
            bytes.fromhex(case["packet"]),
            secret=SECRET,
            secret_id=SECRET_ID,
            from_initiator=case["from"] == "initiator",
        )
        assert result["ok"], result
        assert result["type"] == TYPE_NAMES[case["msg_type"]]
        assert result["conn_id"] == VECTORS["flows"][flow]["connId"]
        if case["payload"] is None:
            assert result["data"] is None and result["header"] is None
            continue
        assert result["sn"] == case["snCrypto"]
        decoded = case["payload_decoded"]
        header = result["header"]
        assert header["is_close"] == decoded["isClose"]
        assert header["stream_id"] == decoded["streamId"]
        assert header["stream_offset"] == decoded["streamOffset"]
        if decoded["userDataIsNil"]:
            assert result["data"] is None and header["kind"] == "ack_only"
        else:
            assert result["data"] == decoded["userData"]
        if decoded["ack"] is None:
            assert header["ack"] is None
        else:
            assert header["ack"]["length"] == decoded["ack"]["len"]
            assert header["ack"]["receive_window"] == decoded["ack"]["rcvWnd"]


@pytest.mark.parametrize("case", VECTORS["crypto"]["data"], ids=lambda c: c["name"])
def test_data_vectors_with_epoch(case: dict[str, Any]) -> None:
    result = decrypt_packet(
        bytes.fromhex(case["packet"]),
        secret=case["shared_secret"],
        epoch=case["decrypt"]["receiver_epoch"],
        from_initiator=case["isSender"],
    )
    assert result["ok"] and result["epoch"] == case["decrypt"]["result_epoch"]
    assert result["sn"] == case["snCrypto"]


@pytest.mark.parametrize(
    ("packet", "kwargs", "error"),
    [
        ("00", {}, "below the minimum"),
        (VECTORS["flows"]["in_band"]["packets"][2]["packet"], {}, "needs --secret"),
        (
            VECTORS["flows"]["zero_rtt"]["packets"][0]["packet"],
            {"secret": SECRET},
            "needs --secret-id",
        ),
        (VECTORS["flows"]["in_band"]["packets"][2]["packet"], {"secret": "zz"}, "not hex"),
        (
            VECTORS["flows"]["in_band"]["packets"][2]["packet"],
            {"secret": "00" * 32},
            "authentication",
        ),
        (
            VECTORS["flows"]["in_band"]["packets"][2]["packet"],
            {"secret": SECRET, "epoch": -1},
            "epoch",
        ),
    ],
)
def test_errors_are_answers(packet: str, kwargs: dict[str, Any], error: str) -> None:
    result = decrypt_packet(bytes.fromhex(packet), from_initiator=True, **kwargs)
    assert result["ok"] is False and error in result["error"]


@settings(max_examples=200)
@given(st.binary(max_size=200), st.integers(-5, 2**50), st.booleans())
def test_never_raises(packet: bytes, epoch: int, from_initiator: bool) -> None:
    result = decrypt_packet(
        packet, secret=SECRET, secret_id=SECRET_ID, epoch=epoch, from_initiator=from_initiator
    )
    assert isinstance(result["ok"], bool)


def run_cli(*arguments: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "qotp", *arguments],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_cli_single_packet() -> None:
    case = VECTORS["flows"]["in_band"]["packets"][3]
    done = run_cli("decrypt", case["packet"], "--secret", SECRET, "--json")
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert result["ok"] and result["type"] == "Data" and result["data"] == "6869207468657265"
    readable = run_cli("decrypt", case["packet"], "--secret", SECRET)
    assert readable.returncode == 0, readable.stderr
    assert readable.stdout.startswith("Data conn ") and "8 bytes" in readable.stdout


def test_cli_single_packet_hints_at_the_direction() -> None:
    """A Data packet opened in the wrong direction fails authentication: say so."""
    case = next(
        case
        for case in VECTORS["flows"]["in_band"]["packets"]
        if case["msg_type"] == "Data" and case["from"] == "initiator"
    )
    done = run_cli("decrypt", case["packet"], "--secret", SECRET)
    assert done.returncode == 1 and done.stdout == ""
    assert "--from-initiator" in done.stderr and len(done.stderr.splitlines()) == 1
    assert (
        run_cli("decrypt", case["packet"], "--secret", SECRET, "--from-initiator").returncode == 0
    )


def test_cli_stdin_lines() -> None:
    packets = VECTORS["flows"]["zero_rtt"]["packets"]
    requests = [
        {
            "packet": case["packet"],
            "secret": SECRET,
            "secret_id": SECRET_ID,
            "epoch": 0,
            "from_initiator": case["from"] == "initiator",
        }
        for case in packets
    ]
    lines = [json.dumps(request) for request in requests] + ["not json", '{"packet": 5}', "[]"]
    done = run_cli("decrypt", stdin="\n".join(lines) + "\n")
    assert done.returncode == 0, done.stderr
    answers = [json.loads(line) for line in done.stdout.splitlines()]
    assert len(answers) == len(lines)
    assert [answer["type"] for answer in answers[: len(packets)]] == [
        TYPE_NAMES[case["msg_type"]] for case in packets
    ]
    assert all(answer["ok"] for answer in answers[: len(packets)])
    assert not any(answer["ok"] for answer in answers[len(packets) :])


def test_cli_keygen_and_demo() -> None:
    done = run_cli("keygen", "--json")
    keys = json.loads(done.stdout)
    assert len(bytes.fromhex(keys["pubkey"])) == 32
    assert KeyPair.from_hex(keys["seed_hex"]).public_hex == keys["pubkey"]
    readable = run_cli("keygen").stdout.splitlines()
    assert readable[0].startswith("seed-hex=") and readable[1].startswith("pubkey=")
    demo = run_cli("demo")
    assert demo.returncode == 0, demo.stderr
    assert demo.stdout.strip().endswith("ok")


def test_an_ack_repeat_is_described() -> None:
    """Our ACK-only payloads may carry an ACK repeat (SPEC.md 10.13); decrypt names it."""
    ack_only = encode_payload(Payload(PayloadKind.ACK_ONLY, ack=Ack(3, 2722, 1361, 1 << 24)))
    for trailer, repeat in ((b"", None), (encode_ack_repeat(2722, 1361, 1361), (1361, 1361))):
        datagram = seal_data(
            PacketCipher(bytes.fromhex(SECRET)),
            connection_id=7,
            sequence_number=1,
            epoch=0,
            sent_by_initiator=False,
            payload=ack_only + trailer,
        )
        header = decrypt_packet(datagram, secret=SECRET)["header"]
        assert header["kind"] == "ack_only" and header["ack"]["offset"] == 2722
        expected = None if repeat is None else dict(stream_id=3, offset=repeat[0], length=1361)
        assert header.get("ack_repeat") == expected
