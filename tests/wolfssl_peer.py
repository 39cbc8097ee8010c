"""wolfSSL's example client and server as a DTLS 1.2 / 1.3 peer, built from Debian's source.

wolfSSL is the only DTLS 1.3 stack to be had here, and Debian's binary
``libwolfssl`` is built without it, so the tests build the *source* package:

* The newest wolfSSL source Debian offers (bookworm, bookworm-security,
  trixie, trixie-security) is found and fetched with ``apt-get source``
  through a private sources list and private package lists under the cache
  directory: the machine's apt configuration is never touched.
* It is configured with DTLS 1.3, Connection IDs and what the interop tests
  drive (:data:`CONFIGURE_FLAGS`), built once per machine into
  ``cache_directory("wolfssl", "<version>-<flags hash>")`` under
  ``file_lock("wolfssl")``, and reused by every later run.  The debian
  version is looked up again at most once a week; offline, the newest build
  already in the cache is used.
* Tests skip, with the reason, only where it cannot be built (no apt, no
  network and nothing cached, a failing build).

The example programs look for their "wolf root" (a directory holding
``certs/dh2048.pem``) from their working directory, so the cache keeps that
file beside the two binaries and the programs run from there.  Notes on
driving them: ``-u`` is DTLS, ``-u<N>`` also sets the MTU; ``-v 3`` is 1.2,
``-v 4`` is 1.3 and ``-v d`` offers 1.3 with a 1.2 fallback; ``--cid STR``
asks for a connection id whose bytes are the (at most two) characters of
STR; a UDP server prints nothing until its first handshake, so readiness is
seen in ``/proc/net/udp``.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
from dtls_processes import STEP_SECONDS, free_udp_port
from system_packages import cache_directory, file_lock, install_packages

__all__ = [
    "CONFIGURE_FLAGS",
    "DEBIAN_SUITES",
    "WolfSSL",
    "WolfSSLRun",
    "build_wolfssl",
    "DropRule",
    "dropping_relay",
    "wolfssl",
    "wolfssl_client",
    "wolfssl_server",
]

#: Debian suites searched for the newest wolfSSL source package.
DEBIAN_SUITES = (
    ("http://deb.debian.org/debian", "bookworm"),
    ("http://deb.debian.org/debian-security", "bookworm-security"),
    ("http://deb.debian.org/debian", "trixie"),
    ("http://deb.debian.org/debian-security", "trixie-security"),
)
#: ``./configure`` flags: DTLS 1.2 and 1.3, CIDs, MTU setting, and the features the
#: interop tests drive (ALPN, SNI, SRTP, PSK, tickets and early data); static, so the
#: two example programs are all that needs keeping.
CONFIGURE_FLAGS = (
    "--enable-dtls",
    "--enable-tls13",
    "--enable-dtls13",
    "--enable-dtlscid",
    "--enable-dtls-mtu",
    "--enable-dtls-frag-ch",
    "--enable-alpn",
    "--enable-srtp",
    "--enable-sni",
    "--enable-curve25519",
    "--enable-chacha",
    "--enable-poly1305",
    "--enable-aesgcm",
    "--enable-supportedcurves",
    "--enable-psk",
    "--enable-hkdf",
    "--enable-session-ticket",
    "--enable-earlydata",
    "--enable-opensslextra",
    "--enable-examples",
    "--disable-crypttests",
    "--disable-shared",
)
#: Commands the build needs, and the Debian package of each.
BUILD_TOOLS = {
    "autoreconf": "autoconf",
    "automake": "automake",
    "libtoolize": "libtool",
    "dpkg-source": "dpkg-dev",
    "make": "make",
    "gcc": "gcc",
}
RESOLVE_EVERY_S = 7 * 24 * 3600
BUILD_STEP_TIMEOUT_S = 1800
_COMPLETE = ".complete"


@dataclass(frozen=True)
class WolfSSL:
    """A built wolfSSL: where its example programs are and what was built."""

    root: Path
    version: str

    @property
    def server(self) -> Path:
        """``examples/server/server``."""
        return self.root / "server"

    @property
    def client(self) -> Path:
        """``examples/client/client``."""
        return self.root / "client"


def _flags_hash() -> str:
    return hashlib.sha256(" ".join(CONFIGURE_FLAGS).encode()).hexdigest()[:12]


def _run(command: list[str], cwd: Path, what: str) -> None:
    result = subprocess.run(
        command,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=BUILD_STEP_TIMEOUT_S,
        check=False,
        env=dict(os.environ, DEBIAN_FRONTEND="noninteractive", LC_ALL="C"),
    )
    if result.returncode != 0:
        tail = (result.stderr or result.stdout).strip().splitlines()[-5:]
        raise RuntimeError(f"{what} failed: {' | '.join(tail)}")


class _PrivateApt:
    """apt-get with its own sources list and package lists, leaving the system's alone."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        lists = directory / "lists"
        (lists / "partial").mkdir(parents=True, exist_ok=True)
        (directory / "cache" / "archives" / "partial").mkdir(parents=True, exist_ok=True)
        self.sources = directory / "sources.list"
        keyring = "/usr/share/keyrings/debian-archive-keyring.gpg"
        signed = f"[signed-by={keyring}] " if Path(keyring).exists() else ""
        self.sources.write_text(
            "".join(f"deb-src {signed}{uri} {suite} main\n" for uri, suite in DEBIAN_SUITES)
        )
        self.options = [
            "-o", f"Dir::Etc::SourceList={self.sources}",
            "-o", "Dir::Etc::SourceParts=/dev/null",
            "-o", f"Dir::State::Lists={lists}",
            "-o", f"Dir::Cache={directory / 'cache'}",
            "-o", "APT::Sandbox::User=root",
        ]  # fmt: skip

    def update(self) -> None:
        _run(["apt-get", "-q", *self.options, "update"], self.directory, "apt-get update")

    def source_versions(self) -> list[str]:
        result = subprocess.run(
            ["apt-cache", *self.options, "showsrc", "wolfssl"],
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        return [
            line.split(":", 1)[1].strip()
            for line in result.stdout.splitlines()
            if line.startswith("Version:")
        ]

    def download(self, version: str, into: Path) -> None:
        _run(
            ["apt-get", "-q", *self.options, "source", "--download-only", f"wolfssl={version}"],
            into,
            "apt-get source",
        )


def _newest(versions: list[str]) -> str:
    best = versions[0]
    for candidate in versions[1:]:
        newer = subprocess.run(
            ["dpkg", "--compare-versions", candidate, "gt", best], check=False
        ).returncode
        if newer == 0:
            best = candidate
    return best


def _resolve_version(base: Path) -> str:
    """The newest wolfSSL source version Debian offers (remembered for a week)."""
    stamp = base / "resolved.json"
    with contextlib.suppress(OSError, ValueError, KeyError):
        known = json.loads(stamp.read_text())
        if time.time() - float(known["checked"]) < RESOLVE_EVERY_S:
            return str(known["version"])
    apt = _PrivateApt(base / "apt")
    apt.update()
    versions = apt.source_versions()
    if not versions:
        raise RuntimeError("Debian offers no wolfssl source package in " + str(DEBIAN_SUITES))
    version = _newest(versions)
    stamp.write_text(json.dumps({"version": version, "checked": time.time()}))
    return version


def _newest_cached_build(base: Path) -> WolfSSL | None:
    builds = [
        path
        for path in base.iterdir()
        if path.is_dir() and path.name.endswith("-" + _flags_hash()) and (path / _COMPLETE).exists()
    ]
    if not builds:
        return None
    versions = {path.name.rsplit("-", 1)[0]: path for path in builds}
    version = _newest(list(versions))
    return WolfSSL(root=versions[version], version=version)


def _ensure_build_tools() -> None:
    missing = sorted({pkg for cmd, pkg in BUILD_TOOLS.items() if shutil.which(cmd) is None})
    if missing:
        with file_lock("apt"):
            refusal = install_packages(*missing)
        if refusal is not None:
            raise RuntimeError(refusal)


def _build(base: Path, version: str, target: Path) -> None:
    _ensure_build_tools()
    with tempfile.TemporaryDirectory(dir=base, prefix="build-") as scratch:
        work = Path(scratch)
        _PrivateApt(base / "apt").download(version, work)
        dsc = next(work.glob("wolfssl_*.dsc"))
        _run(["dpkg-source", "-x", dsc.name, "src"], work, "dpkg-source -x")
        source = work / "src"
        _run(["./autogen.sh"], source, "autogen.sh")
        _run(["./configure", *CONFIGURE_FLAGS], source, "configure")
        _run(["make", f"-j{os.cpu_count() or 2}"], source, "make")
        staging = work / "out"
        (staging / "certs").mkdir(parents=True)
        shutil.copy2(source / "examples" / "server" / "server", staging / "server")
        shutil.copy2(source / "examples" / "client" / "client", staging / "client")
        # The programs' "wolf root" marker (and their default DH parameters).
        shutil.copy2(source / "certs" / "dh2048.pem", staging / "certs" / "dh2048.pem")
        (staging / "BUILD-INFO").write_text(
            f"wolfssl {version} from Debian's source package\n"
            f"./configure {' '.join(CONFIGURE_FLAGS)}\n"
        )
        (staging / _COMPLETE).touch()
        if target.exists():
            shutil.rmtree(target)
        staging.rename(target)


_outcome: WolfSSL | str | None = None


def build_wolfssl() -> WolfSSL:
    """The cached wolfSSL build, building it first if needed; skips with the reason if it cannot."""
    global _outcome
    if _outcome is None:
        _outcome = _build_or_reason()
    if isinstance(_outcome, str):
        pytest.skip(_outcome)
    return _outcome


def _build_or_reason() -> WolfSSL | str:
    base = cache_directory("wolfssl")
    with file_lock("wolfssl"):
        try:
            version = _resolve_version(base)
        except (RuntimeError, OSError, subprocess.TimeoutExpired) as error:
            cached = _newest_cached_build(base)
            if cached is not None:
                return cached
            return f"wolfSSL cannot be built: no source version resolved ({error})"
        target = base / f"{version}-{_flags_hash()}"
        if not (target / _COMPLETE).exists():
            try:
                _build(base, version, target)
            except (RuntimeError, OSError, StopIteration, subprocess.TimeoutExpired) as error:
                return f"wolfSSL {version} cannot be built here: {error}"
        return WolfSSL(root=target, version=version)


@pytest.fixture(scope="session")
def wolfssl() -> WolfSSL:
    """The wolfSSL example programs (built once per machine), or a skip with the reason."""
    return build_wolfssl()


# --------------------------------------------------------------------------- running peers


@dataclass
class WolfSSLRun:
    """A running example program: its process, port and what it printed."""

    process: asyncio.subprocess.Process
    port: int
    stderr_path: Path

    async def output(self) -> str:
        """Everything it printed on stdout once it exits (waits at most a step)."""
        assert self.process.stdout is not None
        data = await asyncio.wait_for(self.process.stdout.read(), STEP_SECONDS)
        await asyncio.wait_for(self.process.wait(), STEP_SECONDS)
        return data.decode(errors="replace")

    def errors(self) -> str:
        """What it printed on stderr so far (for assertion messages)."""
        try:
            return self.stderr_path.read_text(errors="replace")[-3000:]
        except OSError:
            return ""


def _udp_port_bound(port: int) -> bool:
    needle = f":{port:04X} "
    for table in ("/proc/net/udp", "/proc/net/udp6"):
        with contextlib.suppress(OSError):
            for line in Path(table).read_text().splitlines()[1:]:
                fields = line.split()
                if len(fields) > 1 and (fields[1] + " ").endswith(needle):
                    return True
    return False


@contextlib.asynccontextmanager
async def _spawn(
    build: WolfSSL, program: Path, arguments: list[str], port: int
) -> AsyncIterator[WolfSSLRun]:
    with tempfile.NamedTemporaryFile(prefix="wolfssl-", suffix=".err", delete=False) as err:
        stderr_path = Path(err.name)
    with stderr_path.open("wb") as stderr:
        process = await asyncio.create_subprocess_exec(
            str(program),
            *arguments,
            cwd=build.root,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=stderr,
        )
    try:
        yield WolfSSLRun(process=process, port=port, stderr_path=stderr_path)
    finally:
        if process.returncode is None:
            process.kill()
        await process.wait()
        stderr_path.unlink(missing_ok=True)


@contextlib.asynccontextmanager
async def wolfssl_server(build: WolfSSL, *arguments: str) -> AsyncIterator[WolfSSLRun]:
    """``server -u -p PORT *arguments`` on loopback, once its socket is bound."""
    port = free_udp_port()
    async with _spawn(build, build.server, ["-u", "-p", str(port), *arguments], port) as run:
        deadline = time.monotonic() + STEP_SECONDS
        while not _udp_port_bound(port):
            if run.process.returncode is not None or time.monotonic() > deadline:
                raise AssertionError(f"wolfSSL server did not bind {port}: {run.errors()}")
            await asyncio.sleep(0.02)
        yield run


@contextlib.asynccontextmanager
async def wolfssl_client(build: WolfSSL, port: int, *arguments: str) -> AsyncIterator[WolfSSLRun]:
    """``client -u -h 127.0.0.1 -p PORT *arguments``."""
    async with _spawn(
        build, build.client, ["-u", "-h", "127.0.0.1", "-p", str(port), *arguments], port
    ) as run:
        yield run


# --------------------------------------------------------------------------- a dropping relay

#: (direction "to_server" | "to_client", datagram) -> drop it?
DropRule = Callable[[str, bytes], bool]


class _RelaySide(asyncio.DatagramProtocol):
    def __init__(self, on_datagram: Callable[[bytes, tuple[str, int]], None]) -> None:
        self.on_datagram = on_datagram
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # a datagram transport

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        self.on_datagram(data, addr)


@contextlib.asynccontextmanager
async def dropping_relay(server_port: int, drop: DropRule) -> AsyncIterator[tuple[int, list[str]]]:
    """A UDP relay on loopback to ``server_port`` that drops what ``drop`` says.

    Yields the relay's port and a log of what it dropped ("to_server 3" ...),
    for assertions.  One client at a time, which is all the interop tests need.
    """
    loop = asyncio.get_running_loop()
    client_address: list[tuple[str, int]] = []
    dropped: list[str] = []
    counts = {"to_server": 0, "to_client": 0}
    upstream: _RelaySide
    downstream: _RelaySide

    def forward(direction: str, data: bytes) -> bool:
        index = counts[direction]
        counts[direction] += 1
        if drop(direction, data):
            dropped.append(f"{direction} {index}")
            return False
        return True

    def from_client(data: bytes, addr: tuple[str, int]) -> None:
        if not client_address:
            client_address.append(addr)
        if forward("to_server", data) and upstream.transport is not None:
            upstream.transport.sendto(data, ("127.0.0.1", server_port))

    def from_server(data: bytes, addr: tuple[str, int]) -> None:
        if client_address and forward("to_client", data) and downstream.transport is not None:
            downstream.transport.sendto(data, client_address[0])

    downstream = _RelaySide(from_client)
    upstream = _RelaySide(from_server)
    down_transport, _ = await loop.create_datagram_endpoint(
        lambda: downstream, local_addr=("127.0.0.1", 0)
    )
    up_transport, _ = await loop.create_datagram_endpoint(
        lambda: upstream, local_addr=("127.0.0.1", 0)
    )
    try:
        yield down_transport.get_extra_info("sockname")[1], dropped
    finally:
        down_transport.close()
        up_transport.close()
