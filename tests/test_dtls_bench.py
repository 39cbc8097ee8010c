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
    ours, theirs = module.bench_handshakes(2)
    assert ours > 0 and (theirs is None or theirs > 0)
    ours, theirs = module.bench_throughput(50)
    assert ours > 0 and (theirs is None or theirs > 0)
