"""Multi-stream file transfer over QOTP: manifest, one stream per file, resume, SHA-256.

::

    manifest = build_manifest([Path("photos"), Path("notes.txt")])
    summary = await send_files(connection, manifest, parallel=4)

    receiver = FileReceiver(Path("inbox"), allowed_keys={sender_key})
    await receiver.serve(listener)          # or: await receiver.handle_connection(connection)

See :mod:`qotp.transfer.messages` for the protocol and
:mod:`qotp.transfer.paths` for what a receiver refuses.
"""

from __future__ import annotations

from qotp.transfer.events import (
    FileDone,
    FileProgress,
    FileStarted,
    SenderMoved,
    SessionDone,
    SessionStarted,
    TransferEvent,
    TransferObserver,
    TransferSummary,
)
from qotp.transfer.paths import (
    FileEntry,
    Manifest,
    ManifestError,
    UnsafePathError,
    build_manifest,
    check_relative_path,
)
from qotp.transfer.receiver import FileReceiver
from qotp.transfer.sender import (
    DEFAULT_PARALLEL_FILES,
    TransferError,
    TransferRefused,
    send_files,
    sha256_file,
)

__all__ = [
    "DEFAULT_PARALLEL_FILES",
    "FileDone",
    "FileEntry",
    "FileProgress",
    "FileReceiver",
    "FileStarted",
    "Manifest",
    "ManifestError",
    "SenderMoved",
    "SessionDone",
    "SessionStarted",
    "TransferError",
    "TransferEvent",
    "TransferObserver",
    "TransferRefused",
    "TransferSummary",
    "UnsafePathError",
    "build_manifest",
    "check_relative_path",
    "send_files",
    "sha256_file",
]
