"""Paths on both sides of a transfer: what a sender plans to send, where a receiver may write.

Sender: :func:`build_manifest` walks files and directories into relative
POSIX paths (a directory keeps its own name as the first component, like
``scp -r``).  Symbolic links met while walking a directory are skipped (and
listed), never followed: a link to ``/`` inside a tree must not send the disk.

Receiver: :func:`check_relative_path` refuses anything but a plain relative
path (absolute, ``..``, ``.``, empty components, backslashes, control
characters, our own partial-file names), and :class:`ReceiveDirectory`
creates parent directories one component at a time, refusing any symbolic
link whose target lies outside the receive directory.  Files are written
through a temporary name next to the target and renamed into place, and the
rename replaces a link instead of following it, so a sender can never write
outside the directory.
"""

from __future__ import annotations

import hashlib
import os
import stat
import tempfile
from dataclasses import dataclass
from pathlib import Path

__all__ = [
    "FileEntry",
    "Manifest",
    "ManifestError",
    "PARTIAL_SUFFIX",
    "Placement",
    "ReceiveDirectory",
    "UnsafePathError",
    "build_manifest",
    "check_relative_path",
]

PARTIAL_SUFFIX = ".qotp-partial"
MAX_COMPONENT_BYTES = 255
MAX_PATH_BYTES = 4096


class UnsafePathError(ValueError):
    """A path a receiver must not write to."""


class ManifestError(ValueError):
    """A path the sender cannot send (missing, unreadable, a name given twice)."""


def check_relative_path(text: str) -> tuple[str, ...]:
    """The components of a safe relative path; raises :class:`UnsafePathError`."""
    if not text:
        raise UnsafePathError("empty path")
    if len(text.encode("utf-8", "surrogatepass")) > MAX_PATH_BYTES:
        raise UnsafePathError("path too long")
    if any(ord(character) < 0x20 or character == "\x7f" for character in text):
        raise UnsafePathError("control character in path")
    if "\\" in text:
        raise UnsafePathError("backslash in path")
    if text.startswith("/"):
        raise UnsafePathError("absolute path")
    components = tuple(text.split("/"))
    for component in components:
        if component in ("", ".", ".."):
            raise UnsafePathError(f"path component {component!r} not allowed")
        try:
            encoded = component.encode("utf-8")
        except UnicodeEncodeError as error:
            raise UnsafePathError("path is not valid UTF-8") from error
        if len(encoded) > MAX_COMPONENT_BYTES:
            raise UnsafePathError("path component too long")
        if component.endswith(PARTIAL_SUFFIX):
            raise UnsafePathError("names ending in .qotp-partial are reserved")
    return components


# -- sender ------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class FileEntry:
    """One file to send: where it is here, and the relative path the receiver gets."""

    source: Path
    relative: str
    size: int


@dataclass(frozen=True, slots=True, kw_only=True)
class Manifest:
    """The files of one transfer, in sending order, and what was left out."""

    files: tuple[FileEntry, ...]
    skipped: tuple[str, ...] = ()
    """Symbolic links and special files met while walking directories."""

    @property
    def total_bytes(self) -> int:
        """The sum of the files' sizes when the manifest was built."""
        return sum(entry.size for entry in self.files)


def _walk(root: Path, prefix: tuple[str, ...]) -> tuple[list[FileEntry], list[str]]:
    files: list[FileEntry] = []
    skipped: list[str] = []

    def fail(error: OSError) -> None:
        raise ManifestError(f"cannot read {error.filename}: {error.strerror}")

    for directory, names, filenames in os.walk(root, onerror=fail, followlinks=False):
        names.sort()
        relative_directory = Path(directory).relative_to(root).parts
        for name in list(names):
            if os.path.islink(os.path.join(directory, name)):
                skipped.append("/".join((*prefix, *relative_directory, name)))
                names.remove(name)
        for name in sorted(filenames):
            path = Path(directory, name)
            relative = "/".join((*prefix, *relative_directory, name))
            info = path.lstat()
            if not stat.S_ISREG(info.st_mode):
                skipped.append(relative)
                continue
            files.append(FileEntry(source=path, relative=relative, size=info.st_size))
    return files, skipped


def build_manifest(paths: list[Path] | tuple[Path, ...]) -> Manifest:
    """Files and directories (recursively) to send; relative paths keep the tree.

    Raises :class:`ManifestError` for a missing path, a special file given by
    name, or two inputs that would land on the same relative path.
    """
    files: list[FileEntry] = []
    skipped: list[str] = []
    for path in paths:
        try:
            info = path.stat()
        except OSError as error:
            raise ManifestError(f"cannot send {path}: {error.strerror}") from None
        if stat.S_ISDIR(info.st_mode):
            name = path.resolve().name
            walked, left_out = _walk(path, (name,) if name else ())
            files.extend(walked)
            skipped.extend(left_out)
        elif stat.S_ISREG(info.st_mode):
            name = path.resolve().name
            files.append(FileEntry(source=path, relative=name, size=info.st_size))
        else:
            raise ManifestError(f"cannot send {path}: not a regular file or directory")
    seen: set[str] = set()
    for entry in files:
        try:
            check_relative_path(entry.relative)
        except UnsafePathError as error:
            raise ManifestError(f"cannot send {entry.source}: {error}") from None
        if entry.relative in seen:
            raise ManifestError(f"two inputs would both be received as {entry.relative!r}")
        seen.add(entry.relative)
    return Manifest(files=tuple(files), skipped=tuple(skipped))


# -- receiver ----------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class Placement:
    """Where one received file goes: its directory (real path), final and partial names."""

    directory: Path
    name: str
    partial_name: str

    @property
    def final(self) -> Path:
        """The file's path once received."""
        return self.directory / self.name

    @property
    def partial(self) -> Path:
        """The temporary file that collects the bytes (kept for resuming)."""
        return self.directory / self.partial_name


def _partial_name(name: str) -> str:
    candidate = f".{name}{PARTIAL_SUFFIX}"
    if len(candidate.encode("utf-8")) <= MAX_COMPONENT_BYTES:
        return candidate
    digest = hashlib.sha256(name.encode("utf-8")).hexdigest()[:32]
    return f".{digest}{PARTIAL_SUFFIX}"


class ReceiveDirectory:
    """The directory a receiver writes into, and nothing outside it."""

    def __init__(self, root: Path) -> None:
        root.mkdir(parents=True, exist_ok=True)
        self.root = Path(os.path.realpath(root))
        # A directory we may not write into fails now (OSError), not once per file.
        handle, probe = tempfile.mkstemp(dir=self.root, prefix=".qotp-write-probe-")
        os.close(handle)
        os.unlink(probe)

    def _inside(self, path: Path) -> bool:
        return path == self.root or self.root in path.parents

    def place(self, relative: str) -> Placement:
        """Validate ``relative`` and create its parent directories (blocking file system calls).

        Raises :class:`UnsafePathError` for unsafe paths, links leading out of
        the root, and non-directories in the way.
        """
        components = check_relative_path(relative)
        current = self.root
        for component in components[:-1]:
            candidate = current / component
            try:
                info = candidate.lstat()
            except FileNotFoundError:
                try:
                    candidate.mkdir(mode=0o755)
                except FileExistsError:
                    pass  # made concurrently by another transfer: look again below
                info = candidate.lstat()
            if stat.S_ISLNK(info.st_mode):
                target = Path(os.path.realpath(candidate))
                if not self._inside(target):
                    raise UnsafePathError(f"{relative}: a symbolic link leads outside")
                if not target.is_dir():
                    raise UnsafePathError(f"{relative}: a component is not a directory")
                current = target
            elif stat.S_ISDIR(info.st_mode):
                current = candidate
            else:
                raise UnsafePathError(f"{relative}: a component is not a directory")
        if not self._inside(Path(os.path.realpath(current))):
            raise UnsafePathError(f"{relative}: leads outside the receive directory")
        name = components[-1]
        return Placement(directory=current, name=name, partial_name=_partial_name(name))
