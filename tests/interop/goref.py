"""Build and run our Go peer (``tests/interop/go``) on top of the Go reference.

The Go program is ours; the reference module ``github.com/qo-proto/qotp`` is
never stored in this repository, and ``go.mod`` keeps requiring v0.2.19.
The source directory is copied to a scratch directory before ``go`` touches
it, so a build never rewrites the committed ``go.mod`` (with ``-mod=mod`` the
go command adds the reference's own requirements and a ``go.sum``).

Where the reference comes from, first match wins:

1. ``$QOTP_REFERENCE_SOURCE``: a directory holding the reference's source tree;
2. ``../shared/reference/qotp-<version>`` beside the project root (CI lays out
   v0.2.19 there, because the module proxy reachable here refuses that
   version with 403);
3. the Go module proxy, as any other module.

For 1 and 2 the scratch copy gets ``go mod edit -replace=MODULE=<dir>``; the
reference's own dependencies still come from the proxy. ``go build`` only
reads the replaced directory (CI mounts it read-only).

The binary is cached outside the checkout (``tests/system_packages.py``
``cache_directory("go-peer")``), keyed by a fingerprint of our Go source, the
reference version, the reference source tree when built from one, and
``go version``; a file lock keeps two sessions from building it at once.

Whether the peer can be had at all is decided here, once per session, and
reported as a reason string that the tests hand to ``pytest.skip``: no ``go``
on the PATH, or (without a source tree) the proxy refusing the module version
(quoted verbatim). Everything else (our program failing to compile against
the reference, a peer that does not start) is a failure, not a skip.

``QOTP_REFERENCE_VERSION`` (e.g. ``v0.2.18``) replaces the version required in
``go.mod`` for local runs, applied with ``go mod edit -require`` in the copy.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import signal
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

MODULE = "github.com/qo-proto/qotp"
VERSION_ENVIRONMENT_VARIABLE = "QOTP_REFERENCE_VERSION"
SOURCE_ENVIRONMENT_VARIABLE = "QOTP_REFERENCE_SOURCE"
GO_SOURCE_DIRECTORY = Path(__file__).parent / "go"
REPOSITORY_ROOT = Path(__file__).resolve().parents[2]
SHARED_REFERENCE_DIRECTORY = REPOSITORY_ROOT.parent / "shared" / "reference"

# Fetching the module and its dependencies the first time takes a while.
DOWNLOAD_TIMEOUT_S = 300.0
BUILD_TIMEOUT_S = 300.0
# A peer that has not printed its key and address by then is broken.
STARTUP_TIMEOUT_S = 30.0
STOP_TIMEOUT_S = 5.0

_VERSION_PATTERN = re.compile(r"^v\d+\.\d+\.\d+([-+][0-9A-Za-z.+-]+)?$")
# Words in go's output that mean "the network or the proxy said no", as
# opposed to "the code does not compile".
_FETCH_FAILURE_MARKERS = (
    "reading https://",
    "proxy.golang.org",
    "dial tcp",
    "no such host",
    "i/o timeout",
    "connection refused",
    "unrecognized import path",
    "module lookup disabled",
    "not available",
    "403 Forbidden",
    "404 Not Found",
    "410 Gone",
)


class GoPeerUnavailable(Exception):
    """The Go peer cannot be had here; ``str(error)`` is the skip reason."""


class GoPeerBuildError(Exception):
    """The module was fetched, but our program did not build against it."""


def required_version(go_mod: Path = GO_SOURCE_DIRECTORY / "go.mod") -> str:
    """The reference version our committed go.mod requires."""
    match = re.search(
        rf"^\s*(?:require\s+)?{re.escape(MODULE)}\s+(\S+)", go_mod.read_text(), re.MULTILINE
    )
    if match is None:
        raise GoPeerBuildError(f"{go_mod} does not require {MODULE}")
    return match.group(1)


def reference_version() -> str:
    """The version to build against: the override if set, else go.mod's."""
    override = os.environ.get(VERSION_ENVIRONMENT_VARIABLE, "").strip()
    if override:
        if not _VERSION_PATTERN.match(override):
            raise GoPeerBuildError(
                f"{VERSION_ENVIRONMENT_VARIABLE}={override!r} is not a module version like v0.2.18"
            )
        return override
    return required_version()


def _go_environment(*, skip_checksum_database: bool) -> dict[str, str]:
    environment = dict(os.environ)
    # -mod=mod lets go record the reference's requirements in the scratch copy;
    # GOTOOLCHAIN=local forbids downloading another toolchain behind our back.
    environment["GOFLAGS"] = "-mod=mod -buildvcs=false"
    environment["GOTOOLCHAIN"] = "local"
    if skip_checksum_database:
        existing = environment.get("GONOSUMDB", "")
        environment["GONOSUMDB"] = f"{existing},{MODULE}" if existing else MODULE
    return environment


def _run_go(
    arguments: list[str], directory: Path, environment: dict[str, str], timeout: float
) -> subprocess.CompletedProcess[str]:
    try:
        return subprocess.run(
            ["go", *arguments],
            cwd=directory,
            env=environment,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
    except subprocess.TimeoutExpired as error:
        raise GoPeerUnavailable(
            f"'go {' '.join(arguments)}' took longer than {timeout:.0f} s (network?)"
        ) from error


def _download_error(result: subprocess.CompletedProcess[str]) -> str | None:
    """The error ``go mod download -json`` reported for the module, if any."""
    try:
        answer = json.loads(result.stdout)
    except ValueError:
        if result.returncode == 0:
            return None
        return (result.stderr or result.stdout).strip() or f"exit status {result.returncode}"
    error = answer.get("Error") if isinstance(answer, dict) else None
    return str(error) if error else None


def is_checksum_database_refusal(error: str) -> bool:
    # The module itself came through, only sum.golang.org does not know it
    # (seen here for v0.2.18: "verifying go.mod: ... sumdb ... 404 Not Found").
    return "verifying" in error and ("sumdb" in error or "sum.golang.org" in error)


def reference_source(version: str) -> Path | None:
    """The reference's source tree to build against, or None to fetch it from the proxy.

    An explicit ``$QOTP_REFERENCE_SOURCE`` that is not the module's source is
    a mistake worth failing on; the default location may simply be absent.
    """
    explicit = os.environ.get(SOURCE_ENVIRONMENT_VARIABLE, "").strip()
    if explicit:
        directory = Path(explicit).expanduser().resolve()
        if not _is_module_source(directory):
            raise GoPeerBuildError(
                f"{SOURCE_ENVIRONMENT_VARIABLE}={explicit!r} is not the source of {MODULE} "
                "(no go.mod declaring that module there)"
            )
        return directory
    directory = SHARED_REFERENCE_DIRECTORY / f"qotp-{version}"
    return directory.resolve() if _is_module_source(directory) else None


def _is_module_source(directory: Path) -> bool:
    try:
        go_mod = (directory / "go.mod").read_text()
    except OSError:
        return False
    return re.search(rf"^module\s+{re.escape(MODULE)}\s*$", go_mod, re.MULTILINE) is not None


def _tree_digest(directory: Path, digest: hashlib._Hash) -> None:
    for path in sorted(directory.rglob("*")):
        relative = path.relative_to(directory)
        if path.is_file() and not any(part.startswith(".") for part in relative.parts):
            digest.update(str(relative).encode() + b"\0" + path.read_bytes() + b"\0")


def source_fingerprint(version: str, source: Path | None) -> str:
    """The cache key of a build: our Go source, the version, the reference tree, go version."""
    digest = hashlib.sha256(version.encode())
    _tree_digest(GO_SOURCE_DIRECTORY, digest)
    if source is not None:
        digest.update(b"replace\0")
        _tree_digest(source, digest)
    go_version = subprocess.run(
        ["go", "version"], capture_output=True, text=True, check=False, timeout=60
    )
    digest.update(go_version.stdout.encode())
    return digest.hexdigest()[:16]


@dataclass(frozen=True, slots=True, kw_only=True)
class GoPeer:
    """A built Go peer binary and how it was obtained."""

    binary: Path
    version: str
    source: Path | None = None
    """The reference source tree it was built from (None: fetched from the proxy)."""
    notes: tuple[str, ...] = ()


def default_cache_directory() -> Path:
    """Where built peers live between runs: ``cache_directory("go-peer")``."""
    from system_packages import cache_directory

    return cache_directory("go-peer")


def build_go_peer(cache: Path | None = None) -> GoPeer:
    """Build (or reuse from ``cache``, default :func:`default_cache_directory`) the Go peer.

    Raises :class:`GoPeerUnavailable` when the peer cannot be had here and
    :class:`GoPeerBuildError` when our program does not build.
    """
    from system_packages import file_lock

    if shutil.which("go") is None:
        raise GoPeerUnavailable("the Go toolchain ('go') is not on the PATH")
    version = reference_version()
    source = reference_source(version)
    cache = cache if cache is not None else default_cache_directory()
    binary = cache / f"qotpinterop-{version}-{source_fingerprint(version, source)}"
    with file_lock("go-peer"):
        if not binary.exists():
            _build(binary, version, source)
    notes_file = binary.parent / (binary.name + ".notes")
    notes = tuple(notes_file.read_text().splitlines()) if notes_file.exists() else ()
    return GoPeer(binary=binary, version=version, source=source, notes=notes)


def _build(binary: Path, version: str, source: Path | None) -> None:
    notes_list: list[str] = []
    with tempfile.TemporaryDirectory(prefix="qotp-go-peer-") as scratch:
        directory = Path(scratch) / "go"
        shutil.copytree(GO_SOURCE_DIRECTORY, directory)
        environment = _go_environment(skip_checksum_database=False)
        if version != required_version():
            edit = _run_go(
                ["mod", "edit", f"-require={MODULE}@{version}"], directory, environment, 60.0
            )
            if edit.returncode:
                raise GoPeerBuildError(f"go mod edit failed: {edit.stderr.strip()}")
            notes_list.append(f"{VERSION_ENVIRONMENT_VARIABLE} overrides go.mod: {version}")

        if source is not None:
            edit = _run_go(
                ["mod", "edit", f"-replace={MODULE}={source}"], directory, environment, 60.0
            )
            if edit.returncode:
                raise GoPeerBuildError(f"go mod edit -replace failed: {edit.stderr.strip()}")
            notes_list.append(f"built from the reference source in {source}")
        else:
            _download(directory, environment, version, notes_list)
            environment = _go_environment(
                skip_checksum_database=any("GONOSUMDB" in note for note in notes_list)
            )

        output = directory / "qotpinterop"
        build = _run_go(["build", "-o", str(output), "."], directory, environment, BUILD_TIMEOUT_S)
        if build.returncode:
            message = build.stderr.strip()
            if any(marker in message for marker in _FETCH_FAILURE_MARKERS):
                raise GoPeerUnavailable(
                    f"cannot fetch the dependencies of {MODULE}@{version}: {message}"
                )
            raise GoPeerBuildError(
                f"our Go peer does not build against {MODULE}@{version}:\n{message}"
            )
        binary.parent.mkdir(parents=True, exist_ok=True)
        # Copy then rename, so a concurrent session never runs half a binary.
        staging = binary.parent / (binary.name + ".partial")
        shutil.copy2(output, staging)
        (binary.parent / (binary.name + ".notes")).write_text("\n".join(notes_list))
        staging.replace(binary)


def _download(directory: Path, environment: dict[str, str], version: str, notes: list[str]) -> None:
    """Fetch the reference from the module proxy (no source tree here)."""
    download_arguments = ["mod", "download", "-json", f"{MODULE}@{version}"]
    result = _run_go(download_arguments, directory, environment, DOWNLOAD_TIMEOUT_S)
    error = _download_error(result)
    if error and is_checksum_database_refusal(error):
        environment = _go_environment(skip_checksum_database=True)
        notes.append(
            f"checksum database does not list {MODULE}@{version}; "
            f"fetched from the proxy with GONOSUMDB={MODULE}"
        )
        result = _run_go(download_arguments, directory, environment, DOWNLOAD_TIMEOUT_S)
        error = _download_error(result)
    if error:
        raise GoPeerUnavailable(
            f"cannot fetch {MODULE}@{version} (and no source tree in "
            f"${SOURCE_ENVIRONMENT_VARIABLE} or {SHARED_REFERENCE_DIRECTORY}): {error}"
        )


# ------------------------------------------------------------------ processes


@dataclass(slots=True, kw_only=True)
class Server:
    """A running server process (ours or the reference) of the test protocol."""

    name: str
    process: subprocess.Popen[bytes]
    host: str
    port: int
    public_key_hex: str
    stdout_path: Path
    stderr_path: Path
    log_files: tuple[IO[bytes], ...] = field(repr=False, default=())

    @property
    def address(self) -> str:
        """HOST:PORT for a client's command line."""
        return f"{self.host}:{self.port}"

    def is_running(self) -> bool:
        """Whether the process is still alive (the reference may panic or stop)."""
        return self.process.poll() is None

    def stderr_tail(self, limit: int = 3000) -> str:
        """The end of its stderr, for failure messages."""
        return _tail(self.stderr_path, limit)


def _tail(path: Path, limit: int) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return ""
    return text[-limit:]


def _stop_process(process: subprocess.Popen[bytes]) -> None:
    """End a process we started (and its group, created for it), by its id."""
    if process.poll() is not None:
        return
    for sending in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(process.pid, sending)
        except ProcessLookupError:
            return
        try:
            process.wait(timeout=STOP_TIMEOUT_S)
            return
        except subprocess.TimeoutExpired:
            continue


def start_server(
    command: list[str],
    *,
    name: str,
    log_directory: Path,
    environment: dict[str, str] | None = None,
) -> Server:
    """Start a server, wait for its ``pubkey=`` and ``listening=`` lines.

    Output goes to files, not pipes: the reference prints debugging lines on
    stdout at times, and a full pipe would block it.
    """
    log_directory.mkdir(parents=True, exist_ok=True)
    stdout_path = log_directory / f"{name}.stdout"
    stderr_path = log_directory / f"{name}.stderr"
    stdout = stdout_path.open("wb")
    stderr = stderr_path.open("wb")
    process = subprocess.Popen(
        command,
        stdin=subprocess.DEVNULL,
        stdout=stdout,
        stderr=stderr,
        cwd=REPOSITORY_ROOT,
        env=None if environment is None else {**os.environ, **environment},
        start_new_session=True,
    )
    deadline = time.monotonic() + STARTUP_TIMEOUT_S
    try:
        while True:
            values = dict(
                line.split("=", 1)
                for line in stdout_path.read_text(errors="replace").splitlines()[:2]
                if "=" in line
            )
            if "pubkey" in values and "listening" in values:
                host, _, port = values["listening"].strip().rpartition(":")
                return Server(
                    name=name,
                    process=process,
                    host=host.strip("[]"),
                    port=int(port),
                    public_key_hex=values["pubkey"].strip(),
                    stdout_path=stdout_path,
                    stderr_path=stderr_path,
                    log_files=(stdout, stderr),
                )
            if process.poll() is not None:
                raise RuntimeError(
                    f"{name} exited with {process.returncode} before listening:\n"
                    + _tail(stderr_path, 3000)
                )
            if time.monotonic() > deadline:
                raise RuntimeError(
                    f"{name} did not print pubkey=/listening= within {STARTUP_TIMEOUT_S:.0f} s:\n"
                    + _tail(stderr_path, 3000)
                )
            time.sleep(0.02)
    except BaseException:
        _stop_process(process)
        stdout.close()
        stderr.close()
        raise


def stop_server(server: Server) -> None:
    """Stop the server and close its log files."""
    _stop_process(server.process)
    for handle in server.log_files:
        handle.close()


@dataclass(frozen=True, slots=True, kw_only=True)
class ClientRun:
    """What a client process did: exit status, its JSON report, its output."""

    returncode: int | None
    report: dict[str, object] | None
    stdout: str
    stderr: str
    wall_s: float

    def describe(self) -> str:
        """Everything useful for a failure message."""
        return (
            f"exit status {self.returncode}, {self.wall_s:.1f} s\n"
            f"report: {self.report}\nstdout tail: {self.stdout[-1500:]}\n"
            f"stderr tail: {self.stderr[-3000:]}"
        )


def run_client(
    command: list[str], *, timeout: float, environment: dict[str, str] | None = None
) -> ClientRun:
    """Run a client to completion (or kill it after ``timeout`` seconds).

    ``environment`` adds variables to ours (a key-log file, say).
    """
    start = time.monotonic()
    process = subprocess.Popen(
        command,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        cwd=REPOSITORY_ROOT,
        env=None if environment is None else {**os.environ, **environment},
        start_new_session=True,
    )
    try:
        stdout_bytes, stderr_bytes = process.communicate(timeout=timeout)
        returncode: int | None = process.returncode
    except subprocess.TimeoutExpired:
        _stop_process(process)
        stdout_bytes, stderr_bytes = process.communicate()
        returncode = None
    finally:
        _stop_process(process)
    stdout = stdout_bytes.decode(errors="replace")
    stderr = stderr_bytes.decode(errors="replace")
    return ClientRun(
        returncode=returncode,
        report=_last_json_line(stdout),
        stdout=stdout,
        stderr=stderr,
        wall_s=time.monotonic() - start,
    )


def _last_json_line(stdout: str) -> dict[str, object] | None:
    # The reference may print its own debugging lines on stdout; the report
    # is the last line that parses as a JSON object.
    for line in reversed(stdout.splitlines()):
        if line.startswith("{"):
            try:
                value = json.loads(line)
            except ValueError:
                continue
            if isinstance(value, dict):
                return value
    return None
