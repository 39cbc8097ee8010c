"""The Go reference (github.com/qo-proto/qotp v0.2.19) as a comparison row.

It runs through our interop peer (``tests/interop/go``), which puts the
reference behind the same digest test protocol as ``qotp serve``/``qotp send``:
the client sends each stream's bytes and checks the server's SHA-256 of them.
The product does not build Go code: give the binary with ``--go-peer PATH``,
or build it once with the test suite (``tests/interop/goref.py``), which
caches it under ``$QOTP_TEST_CACHE`` (default ``~/.cache/qotp-tests``) in
``go-peer/``; :func:`find_go_peer` looks there.
"""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["GO_PEER_HINT", "find_go_peer"]

CACHE_ENVIRONMENT_VARIABLE = "QOTP_TEST_CACHE"
GO_PEER_HINT = (
    "the Go reference peer is not built: run the interop tests once "
    "(./run.sh test tests/test_interop_go.py) or pass --go-peer PATH"
)


def _cache_root() -> Path:
    base = os.environ.get(CACHE_ENVIRONMENT_VARIABLE)
    return Path(base) if base else Path.home() / ".cache" / "qotp-tests"


def find_go_peer(explicit: str | None = None) -> tuple[Path | None, str | None]:
    """The peer binary and None, or None and why it is not available."""
    if explicit is not None:
        path = Path(explicit)
        if not path.is_file() or not os.access(path, os.X_OK):
            return None, f"--go-peer {explicit}: not an executable file"
        return path, None
    candidates = []
    for directory in (_cache_root() / "go-peer", _cache_root()):
        if directory.is_dir():
            candidates += [
                path
                for path in directory.glob("qotpinterop-*")
                if path.suffix not in (".partial", ".notes") and os.access(path, os.X_OK)
            ]
    if not candidates:
        return None, GO_PEER_HINT
    return max(candidates, key=lambda path: path.stat().st_mtime), None
