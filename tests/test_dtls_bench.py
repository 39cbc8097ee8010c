"""Smoke test: the DTLS benchmark still runs (tiny sizes; no timing asserted)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

BENCH = Path(__file__).resolve().parent.parent / "benchmarks" / "bench_dtls.py"


def test_benchmark_functions_run() -> None:
    spec = importlib.util.spec_from_file_location("bench_dtls", BENCH)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    for rates in (module.bench_handshakes(2), module.bench_throughput(50)):
        assert rates[module.OURS_13] > 0 and rates[module.OURS_12] > 0
        assert rates[module.BASELINE] is None or rates[module.BASELINE] > 0
    module.report("smoke", "units", rates)
