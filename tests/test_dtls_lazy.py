"""dtls and dtls.asyncio import their public names on first use (dtls._lazy)."""

from __future__ import annotations

import subprocess
import sys

import pytest

import dtls
import dtls.asyncio


def _modules_after(statement: str) -> set[str]:
    """The dtls modules a fresh interpreter holds after running ``statement``."""
    script = (
        f"{statement}\nimport sys\nprint(' '.join(m for m in sys.modules if m.startswith('dtls')))"
    )
    output = subprocess.run(
        [sys.executable, "-c", script], check=True, capture_output=True, text=True
    ).stdout
    return set(output.split())


def test_the_shared_socket_module_does_not_load_the_engine() -> None:
    # The QOTP socket layer imports dtls.asyncio.udp.
    assert _modules_after("import dtls.asyncio.udp") == {
        "dtls",
        "dtls._lazy",
        "dtls.asyncio",
        "dtls.asyncio.udp",
    }
    assert "dtls.connection" not in _modules_after("import qotp.asyncio")
    # Nor the one the qotp command line shares (dtls.cli.addresses).
    assert _modules_after("import qotp.cli.common") == {
        "dtls",
        "dtls._lazy",
        "dtls.cli",
        "dtls.cli.addresses",
    }


def test_every_exported_name_resolves_to_its_object() -> None:
    for package in (dtls, dtls.asyncio):
        for name in package.__all__:
            value = getattr(package, name)
            assert getattr(value, "__name__", name) == name or not callable(value)
        assert set(package.__all__) <= set(dir(package))


def test_submodules_and_unknown_names() -> None:
    from dtls import errors

    assert dtls.errors is errors
    with pytest.raises(AttributeError, match="no attribute 'nothing_here'"):
        _ = dtls.nothing_here  # type: ignore[attr-defined]
