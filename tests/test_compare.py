"""The comparison harness (qotp.compare, ``qotp bench compare``) on tiny sizes.

Checks the harness, not the numbers: every transport's bytes are verified
end to end, the relay applies the loss it was asked for, and the command
line's JSON, chart and failures behave.  No timings are checked.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from pathlib import Path

import pytest

from qotp.compare.namespaces import namespaces_missing
from qotp.compare.runner import (
    IMPAIRMENTS,
    CompareConfig,
    CompareResult,
    parse_impairment,
    run_comparison,
)
from qotp.compare.transports import PYTHON_TRANSPORTS
from qotp.compare.workloads import Workload, WorkloadSizes

TINY = WorkloadSizes(bulk_bytes=200_000, connects=2, requests=20)
LOSS = 0.05


@pytest.fixture(scope="module")
def comparison() -> CompareResult:
    """All Python transports, all workloads, unimpaired and at 5 % loss, once per module."""
    missing = namespaces_missing()
    if missing is not None:
        pytest.skip(f"the impaired path cannot be built here: {missing}")
    config = CompareConfig(
        transports=PYTHON_TRANSPORTS,
        impairments=(IMPAIRMENTS["none"], parse_impairment(f"loss={LOSS}")),
        sizes=TINY,
        ceiling_seconds=0.3,
    )
    return asyncio.run(run_comparison(config))


def test_every_transport_verifies_every_byte(comparison: CompareResult) -> None:
    assert comparison.path == "netns"
    rows = {(row.transport, row.workload, row.impairment.loss): row for row in comparison.rows}
    assert len(rows) == len(PYTHON_TRANSPORTS) * len(Workload) * 2
    for key, row in rows.items():
        assert row.ok, (key, row.error, row.skipped)
    for transport in PYTHON_TRANSPORTS:
        for loss in (0.0, LOSS):
            assert rows[(transport, Workload.BULK, loss)].bytes == TINY.bulk_bytes
            assert rows[(transport, Workload.BULK_PARALLEL, loss)].bytes == TINY.bulk_bytes
            assert rows[(transport, Workload.CONNECT, loss)].latency_ms_p99 is not None


def test_the_relay_applies_the_loss_it_was_asked_for(comparison: CompareResult) -> None:
    lossy = [row for row in comparison.rows if row.impairment.loss == LOSS]
    clean = [row for row in comparison.rows if row.impairment.loss == 0]
    assert all(row.measured_loss == 0 for row in clean)
    # Over all lossy rows together (thousands of packets), the measured loss is close to 5 %.
    packets = sum(row.relayed_packets or 0 for row in lossy)
    dropped = sum((row.measured_loss or 0) * (row.relayed_packets or 0) for row in lossy)
    assert packets > 1000
    assert abs(dropped / packets - LOSS) < 0.015
    # Lost packets cost the senders retransmissions where they can tell.
    bulk = [row for row in lossy if row.workload is Workload.BULK]
    assert sum(row.retransmissions or 0 for row in bulk) > 0


def test_the_relay_ceiling_is_measured(comparison: CompareResult) -> None:
    assert comparison.ceiling is not None
    assert comparison.ceiling.relayed > 0
    assert comparison.as_json()["relay_ceiling"]["mb_s"] > 0


def test_cpu_is_counted_per_side(comparison: CompareResult) -> None:
    for row in comparison.rows:
        assert row.cpu_s_client is not None and row.cpu_s_client >= 0
        assert row.cpu_s_server is not None and row.cpu_s_server >= 0


def test_parse_impairment() -> None:
    assert parse_impairment("loss2") is IMPAIRMENTS["loss2"]
    spec = parse_impairment("loss=2%,rtt=20,jitter=1,rate=10")
    assert (spec.loss, spec.rtt_ms, spec.jitter_ms, spec.rate_mbit) == (0.02, 20, 1, 10)
    assert spec.model(seed=1).to_server.delay_ns == 10_000_000
    assert spec.tbf_bytes_per_s == 1_250_000
    for bad in ("lossy", "loss=x", "loss=2", "rtt=-1", "color=red"):
        with pytest.raises(ValueError):
            parse_impairment(bad)


def _qotp(*arguments: str, timeout: float = 240) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "qotp", *arguments],
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def test_bench_compare_json_and_chart(tmp_path: Path) -> None:
    if namespaces_missing() is not None:
        pytest.skip(f"the impaired path cannot be built here: {namespaces_missing()}")
    chart = tmp_path / "out.png"
    result = _qotp(
        "bench", "compare", "--json", "--chart", str(chart),
        "--transports", "qotp", "tcp", "--workloads", "bulk", "rr",
        "--impairments", "none", "rtt20-loss2", "--bytes", "100000", "--requests", "10",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["ok"] is True
    assert len(report["rows"]) == 2 * 2 * 2
    row = report["rows"][0]
    assert {"transport", "workload", "impairment", "mb_s", "ok"} <= row.keys()
    assert {"loss", "rtt_ms"} <= row["impairment"].keys()
    assert chart.read_bytes().startswith(b"\x89PNG\r\n\x1a\n")
    assert "Traceback" not in result.stderr


def test_bench_compare_readable_table_on_loopback() -> None:
    result = _qotp(
        "bench", "compare", "--path", "direct", "--transports", "tcp", "go",
        "--go-peer", "/nonexistent", "--workloads", "connect", "--impairments", "none", "loss2",
        "--connects", "2",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "transport" in result.stdout and "tcp" in result.stdout
    assert "skipped" in result.stdout  # loss2 without the namespace path, and the Go peer
    assert "--go-peer /nonexistent: not an executable file" in result.stdout


@pytest.mark.parametrize(
    "arguments",
    [
        ["--transports", "carrier-pigeon"],
        ["--workloads", "nap"],
        ["--impairments", "loss=200%"],
        ["--chart", "/nonexistent-directory/out.png"],
        ["--chart", "out.jpg"],
        ["--bytes", "0"],
    ],
)
def test_bench_compare_bad_arguments_fail_in_one_line(arguments: list[str]) -> None:
    result = _qotp("bench", "compare", *arguments, timeout=60)
    assert result.returncode != 0
    assert "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr


def test_loopback_relays_without_namespaces() -> None:
    """--path relay: UDP relay for QOTP, TCP relay for TCP; TCP cannot be given loss there."""
    config = CompareConfig(
        transports=("qotp", "tcp"),
        workloads=(Workload.BULK, Workload.CONNECT),
        impairments=(parse_impairment("rtt=10"), parse_impairment(f"loss={LOSS}")),
        sizes=TINY,
        path="relay",
        ceiling_seconds=0.3,
    )
    result = asyncio.run(run_comparison(config))
    assert result.path == "relay"
    assert result.ceiling is not None and result.ceiling.relayed > 0
    rows = {(row.transport, row.workload, row.impairment.loss): row for row in result.rows}
    for workload in (Workload.BULK, Workload.CONNECT):
        assert rows[("qotp", workload, 0.0)].ok
        assert rows[("qotp", workload, LOSS)].ok
        assert rows[("tcp", workload, 0.0)].ok
        skipped = rows[("tcp", workload, LOSS)]
        assert not skipped.ok and skipped.skipped and "TCP relay" in skipped.skipped
    # 10 ms of added RTT shows in every connect: handshake and request take at least one RTT.
    assert (rows[("tcp", Workload.CONNECT, 0.0)].latency_ms_p50 or 0) >= 10
    assert (rows[("qotp", Workload.BULK, LOSS)].measured_loss or 0) > 0


def test_impairment_json_round_trip() -> None:
    from qotp.compare.packet_relay import impairment_from_json, impairment_to_json

    model = parse_impairment("loss=1%,rtt=30,jitter=2,reorder=0.5%,rate=5").model(7, with_rate=True)
    assert impairment_from_json(impairment_to_json(model)) == model


def test_without_the_bench_extra_quic_is_skipped_and_the_rest_runs(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setitem(sys.modules, "aioquic", None)  # import aioquic -> ImportError
    config = CompareConfig(
        transports=("quic", "tcp"),
        workloads=(Workload.CONNECT,),
        impairments=(IMPAIRMENTS["none"],),
        sizes=TINY,
        path="direct",
    )
    result = asyncio.run(run_comparison(config))
    quic, tcp = result.rows
    assert quic.skipped is not None and "aioquic is not installed" in quic.skipped
    assert tcp.ok
    assert any("aioquic" in note for note in result.notes)
