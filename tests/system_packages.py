"""Debian packages and slow builds that tests need, installed or built on first use.

CI runs on a clean machine: the suite itself installs what a test needs
(``tshark``, ``tcpdump``, ``nftables``, ``gnutls-bin``, ...) from Debian's
package registry, the way a person would, and caches slow builds (the Go peer,
wolfSSL) outside the checkout so that later runs reuse them.

* :func:`require_command` returns the path of a command, installing its
  package with ``apt-get`` when missing, or calls ``pytest.skip`` with the
  reason when it truly cannot be had (no apt, not root, the registry refused).
* :func:`cache_directory` is where slow builds live between runs:
  ``$QOTP_TEST_CACHE`` if set, else ``~/.cache/qotp-tests``.

apt-get holds a lock of its own, but two sessions (or two pytest workers)
asking at once would make the second fail; a file lock serialises them, and
the outcome is remembered per process so a refusal is reported once.
"""

from __future__ import annotations

import fcntl
import os
import shutil
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

CACHE_ENVIRONMENT_VARIABLE = "QOTP_TEST_CACHE"
APT_TIMEOUT_S = 900.0

# Questions some packages ask while installing, answered the non-interactive way.
_DEBCONF_ANSWERS = {
    # tshark's wireshark-common: whether non-root users may capture (no).
    "wireshark-common": "wireshark-common wireshark-common/install-setuid boolean false",
}

_refusals: dict[str, str] = {}


def cache_directory(*parts: str) -> Path:
    """A directory for slow builds that outlives the checkout (created on demand)."""
    base = os.environ.get(CACHE_ENVIRONMENT_VARIABLE)
    root = Path(base) if base else Path.home() / ".cache" / "qotp-tests"
    directory = root.joinpath(*parts)
    directory.mkdir(parents=True, exist_ok=True)
    return directory


@contextmanager
def file_lock(name: str) -> Iterator[None]:
    """An exclusive lock shared by every process on this machine (for builds and apt)."""
    path = cache_directory("locks") / f"{name}.lock"
    with path.open("w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _apt_get(arguments: list[str]) -> subprocess.CompletedProcess[str]:
    environment = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    return subprocess.run(
        ["apt-get", "-y", "-q", "-o", "DPkg::Lock::Timeout=300", *arguments],
        env=environment,
        capture_output=True,
        text=True,
        timeout=APT_TIMEOUT_S,
        check=False,
    )


def install_packages(*packages: str) -> str | None:
    """Install Debian packages; returns None on success, else why it failed."""
    if shutil.which("apt-get") is None:
        return "apt-get is not available on this machine"
    if os.geteuid() != 0:
        return "installing packages needs root"
    for package in packages:
        answer = _DEBCONF_ANSWERS.get(package)
        if answer is not None:
            subprocess.run(["debconf-set-selections"], input=answer + "\n", text=True, check=False)
    install = ["install", "--no-install-recommends", *packages]
    try:
        result = _apt_get(install)
        if result.returncode != 0:
            # A fresh machine may have no package lists yet, or stale ones.
            _apt_get(["update"])
            result = _apt_get(install)
    except subprocess.TimeoutExpired:
        return f"apt-get install {' '.join(packages)} took longer than {APT_TIMEOUT_S:.0f} s"
    if result.returncode != 0:
        lines = (result.stderr or result.stdout).strip().splitlines()
        return f"apt-get install {' '.join(packages)} failed: {lines[-1] if lines else '?'}"
    return None


def require_command(command: str, *, package: str | None = None) -> str:
    """The path of ``command``, installing ``package`` (default: same name) if needed.

    Skips the calling test, with the reason, only when the package cannot be had.
    """
    path = shutil.which(command)
    if path is not None:
        return path
    package = package or command
    if package not in _refusals:
        with file_lock("apt"):
            path = shutil.which(command)
            if path is not None:
                return path
            refusal = install_packages(package)
            _refusals[package] = refusal or ""
    refusal = _refusals[package]
    path = shutil.which(command)
    if path is not None:
        return path
    pytest.skip(refusal or f"package {package} installed but has no command {command!r}")
