"""Captured datagrams, key logs and ``qotp decrypt``: what the key-log interop tests need.

A capture is what :class:`interop.relaythread.RelayThread` observed (both
directions, every live datagram). A key log is what ``QOTP_KEYLOGFILE`` made an
implementation write. :func:`decrypt_capture` feeds every datagram to the
``qotp decrypt`` command in its JSON-lines mode, as a person would, and
:func:`stream_bytes` puts the decrypted stream data back together.
"""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from qotp.compare.impairment import Direction
from qotp.decrypt import MESSAGE_TYPE_NAMES
from qotp.envelope import MessageType
from qotp.protection import Address

from .goref import REPOSITORY_ROOT

DECRYPT_TIMEOUT_S = 120.0


@dataclass(frozen=True, slots=True, kw_only=True)
class KeyLog:
    """The secrets of one connection, as a key log names them (hex)."""

    secret: str | None
    secret_id: str | None


def read_key_log(path: Path) -> KeyLog:
    """The last ``QOTP_SHARED_SECRET`` and ``QOTP_SHARED_SECRET_ID`` lines of a key log."""
    secret = secret_id = None
    for line in path.read_text().splitlines():
        parts = line.split()
        if len(parts) != 3:
            continue
        if parts[0] == "QOTP_SHARED_SECRET":
            secret = parts[2]
        elif parts[0] == "QOTP_SHARED_SECRET_ID":
            secret_id = parts[2]
    return KeyLog(secret=secret, secret_id=secret_id)


@dataclass(frozen=True, slots=True, kw_only=True)
class Decrypted:
    """One captured datagram and what ``qotp decrypt`` said about it."""

    direction: Direction
    datagram: bytes
    answer: dict[str, Any]

    @property
    def ok(self) -> bool:
        return bool(self.answer.get("ok"))

    @property
    def message_type(self) -> str | None:
        """From the cleartext header byte, so also for a datagram that did not open."""
        try:
            return MESSAGE_TYPE_NAMES[MessageType(self.datagram[0] >> 5)]
        except (IndexError, ValueError):
            return None


def decrypt_capture(
    captured: list[tuple[float, Direction, Address, bytes]], key_log: KeyLog
) -> list[Decrypted]:
    """Run every datagram through ``python -m qotp decrypt`` (JSON lines) with ``key_log``."""
    requests = [
        json.dumps(
            {
                "packet": datagram.hex(),
                "secret": key_log.secret,
                "secret_id": key_log.secret_id,
                "from_initiator": direction is Direction.TO_SERVER,
            }
        )
        for _time, direction, _client, datagram in captured
    ]
    done = subprocess.run(
        [sys.executable, "-m", "qotp", "decrypt"],
        input="\n".join(requests) + "\n",
        capture_output=True,
        text=True,
        cwd=REPOSITORY_ROOT,
        timeout=DECRYPT_TIMEOUT_S,
        check=True,
    )
    answers = [json.loads(line) for line in done.stdout.splitlines() if line.strip()]
    assert len(answers) == len(captured), done.stderr[-2000:]
    return [
        Decrypted(direction=direction, datagram=datagram, answer=answer)
        for (_time, direction, _client, datagram), answer in zip(captured, answers, strict=True)
    ]


def stream_pieces(decrypted: list[Decrypted], direction: Direction) -> dict[int, dict[int, bytes]]:
    """The stream data one direction carried: stream id -> offset -> bytes (repeats merged)."""
    pieces: dict[int, dict[int, bytes]] = {}
    for item in decrypted:
        header = item.answer.get("header")
        if item.direction is not direction or not item.ok or not header:
            continue
        data = bytes.fromhex(item.answer.get("data") or "")
        if data:
            pieces.setdefault(header["stream_id"], {})[header["stream_offset"]] = data
    return pieces


def stream_bytes(decrypted: list[Decrypted], direction: Direction) -> dict[int, bytes]:
    """Each stream's bytes from offset 0, as far as they are contiguous."""
    streams: dict[int, bytes] = {}
    for stream_id, parts in stream_pieces(decrypted, direction).items():
        joined = bytearray()
        for offset in sorted(parts):
            part = parts[offset]
            if offset > len(joined):
                break  # a gap: what follows cannot be placed
            joined[offset : offset + len(part)] = part
        streams[stream_id] = bytes(joined)
    return streams
