#!/usr/bin/env bash
# One entry point for people and CI: it makes its own virtual environment.
#   ./run.sh demo    loopback demo
#   ./run.sh test    ruff + mypy --strict + the whole pytest suite
#   ./run.sh bench   benchmarks (ratios against a baseline measured in the same run)
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
cd "$here"
venv="$here/.venv"
python="${PYTHON:-python3}"

ensure_venv() {
    local stamp="$venv/.installed"
    if [ ! -x "$venv/bin/python" ]; then
        "$python" -m venv "$venv"
    fi
    if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
        "$venv/bin/python" -m pip install --quiet --upgrade pip >/dev/null
        "$venv/bin/python" -m pip install --quiet -e ".[test,cli,bench]"
        touch "$stamp"
    fi
}

cmd="${1:-test}"
shift || true
ensure_venv
case "$cmd" in
    demo)
        exec "$venv/bin/python" -m qotp demo "$@" ;;
    test)
        "$venv/bin/ruff" check qotp dtls tests benchmarks examples
        "$venv/bin/mypy" --strict
        exec "$venv/bin/python" -m pytest -q "$@" ;;
    bench)
        for bench in benchmarks/bench_*.py; do
            "$venv/bin/python" "$bench" "$@"
        done ;;
    *)
        echo "usage: ./run.sh demo|test|bench" >&2; exit 2 ;;
esac
