"""The file-transfer protocol's messages: length-prefixed JSON, decoded strictly.

Pure functions (bytes <-> frozen dataclasses).  A frame is a u32 little-endian
length followed by that many bytes of a UTF-8 JSON object with a ``type``
field.  Everything read from the network passes :func:`decode_message`, which
raises only :class:`TransferProtocolError`: wrong types, missing fields, out of
range numbers and oversized frames are refused before anyone acts on them.

Conversation (``S`` sends files, ``R`` receives them)::

    control stream   S: hello(nonce, files, total_bytes)
                     R: welcome(nonce, proof)  |  refuse(reason)
                     S: proof(proof)
    per file stream  S: file(path, size, mtime_ns, executable)
                     R: offer(have, chunk_bytes, hashes)  |  result(ok=false)
                     S: data(offset) <size - offset raw bytes> end(sha256)
                     R: result(ok, sha256 | error)

The offer lists SHA-256 digests of the chunks of what R already holds for
that path (a partial file from an interrupted run, or the complete file), so
that S resumes after the longest prefix that matches its own data; nothing R
holds is trusted without that check.
"""

from __future__ import annotations

import json
import struct
from dataclasses import asdict, dataclass
from typing import Any

from qotp.errors import RemoteProtocolError

__all__ = [
    "Data",
    "End",
    "FileHeader",
    "Hello",
    "MAX_CHUNK_BYTES",
    "MAX_FILE_BYTES",
    "MAX_FRAME_BYTES",
    "MAX_OFFER_CHUNKS",
    "MIN_CHUNK_BYTES",
    "Message",
    "Offer",
    "PROTOCOL_VERSION",
    "Proof",
    "Refuse",
    "Result",
    "TransferProtocolError",
    "Welcome",
    "decode_message",
    "encode_message",
    "frame_length",
]

PROTOCOL_VERSION = 1
FRAME_HEADER = struct.Struct("<I")
MAX_FRAME_BYTES = 512 * 1024
"""Largest JSON message (an offer of MAX_OFFER_CHUNKS digests in hex fits)."""
MAX_FILE_BYTES = 1 << 50
MAX_OFFER_CHUNKS = 4096
MIN_CHUNK_BYTES = 64 * 1024
MAX_CHUNK_BYTES = 1 << 32
MAX_PATH_CHARS = 4096
MAX_TEXT_CHARS = 1024
DIGEST_BYTES = 32


class TransferProtocolError(RemoteProtocolError):
    """The peer sent something the file-transfer protocol does not allow."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Hello:
    """S -> R on the control stream: who is coming and how much."""

    nonce: bytes
    files: int
    total_bytes: int
    version: int = PROTOCOL_VERSION


@dataclass(frozen=True, slots=True, kw_only=True)
class Welcome:
    """R -> S: R's nonce and R's proof of its identity key."""

    nonce: bytes
    proof: bytes


@dataclass(frozen=True, slots=True, kw_only=True)
class Refuse:
    """R -> S: the whole session is refused (key not allowed, no receiving here)."""

    reason: str


@dataclass(frozen=True, slots=True, kw_only=True)
class Proof:
    """S -> R: S's proof of its identity key."""

    proof: bytes


@dataclass(frozen=True, slots=True, kw_only=True)
class FileHeader:
    """S -> R, first on a file stream."""

    path: str
    size: int
    mtime_ns: int | None = None
    executable: bool = False


@dataclass(frozen=True, slots=True, kw_only=True)
class Offer:
    """R -> S: R holds ``have`` bytes for this path; digests of its chunks."""

    have: int
    chunk_bytes: int
    digests: tuple[bytes, ...]
    complete: bool = False

    def ranges(self) -> list[tuple[int, int]]:
        """The (start, end) byte range each digest covers."""
        return [
            (index * self.chunk_bytes, min((index + 1) * self.chunk_bytes, self.have))
            for index in range(len(self.digests))
        ]


@dataclass(frozen=True, slots=True, kw_only=True)
class Data:
    """S -> R: the raw bytes from ``offset`` to the file's size follow this frame."""

    offset: int


@dataclass(frozen=True, slots=True, kw_only=True)
class End:
    """S -> R after the data: the SHA-256 of the whole file."""

    sha256: bytes


@dataclass(frozen=True, slots=True, kw_only=True)
class Result:
    """R -> S: the file was verified and put in place, or why not."""

    ok: bool
    sha256: bytes | None = None
    error: str | None = None


Message = Hello | Welcome | Refuse | Proof | FileHeader | Offer | Data | End | Result

_TYPE_NAMES: dict[type, str] = {
    Hello: "hello",
    Welcome: "welcome",
    Refuse: "refuse",
    Proof: "proof",
    FileHeader: "file",
    Offer: "offer",
    Data: "data",
    End: "end",
    Result: "result",
}


def encode_message(message: Message) -> bytes:
    """One frame: u32 LE length, then the JSON object."""
    fields: dict[str, Any] = asdict(message)
    if isinstance(message, Offer):
        fields["digests"] = b"".join(message.digests).hex()
    for name, value in fields.items():
        if isinstance(value, bytes):
            fields[name] = value.hex()
    fields["type"] = _TYPE_NAMES[type(message)]
    body = json.dumps(fields, separators=(",", ":")).encode()
    if len(body) > MAX_FRAME_BYTES:
        raise ValueError(f"message of {len(body)} bytes exceeds {MAX_FRAME_BYTES}")
    return FRAME_HEADER.pack(len(body)) + body


def frame_length(header: bytes) -> int:
    """The body length announced by a 4-byte frame header; refuses oversized frames."""
    (length,) = FRAME_HEADER.unpack(header)
    if length > MAX_FRAME_BYTES:
        raise TransferProtocolError(f"frame of {length} bytes exceeds {MAX_FRAME_BYTES}")
    return int(length)


def _integer(fields: dict[str, Any], name: str, low: int, high: int) -> int:
    value = fields.get(name)
    if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
        raise TransferProtocolError(f"{name} must be an integer in {low}..{high}")
    return value


def _optional_integer(fields: dict[str, Any], name: str, low: int, high: int) -> int | None:
    if fields.get(name) is None:
        return None
    return _integer(fields, name, low, high)


def _boolean(fields: dict[str, Any], name: str) -> bool:
    value = fields.get(name, False)
    if not isinstance(value, bool):
        raise TransferProtocolError(f"{name} must be true or false")
    return value


def _text(fields: dict[str, Any], name: str, limit: int) -> str:
    value = fields.get(name)
    if not isinstance(value, str) or len(value) > limit:
        raise TransferProtocolError(f"{name} must be a string of at most {limit} characters")
    return value


def _hex(fields: dict[str, Any], name: str, size: int) -> bytes:
    value = _text(fields, name, 2 * size)
    try:
        raw = bytes.fromhex(value)
    except ValueError as error:
        raise TransferProtocolError(f"{name} is not hex") from error
    if len(raw) != size:
        raise TransferProtocolError(f"{name} must be {size} bytes")
    return raw


def decode_message(body: bytes) -> Message:
    """Parse one frame body; raises only :class:`TransferProtocolError`."""
    try:
        fields = json.loads(body)
    except (ValueError, RecursionError) as error:
        raise TransferProtocolError("a message is not valid JSON") from error
    if not isinstance(fields, dict):
        raise TransferProtocolError("a message is a JSON object")
    kind = fields.get("type")
    if kind == "hello":
        return Hello(
            version=_integer(fields, "version", 0, 1 << 16),
            nonce=_hex(fields, "nonce", 16),
            files=_integer(fields, "files", 0, 1 << 40),
            total_bytes=_integer(fields, "total_bytes", 0, 1 << 62),
        )
    if kind == "welcome":
        return Welcome(nonce=_hex(fields, "nonce", 16), proof=_hex(fields, "proof", 32))
    if kind == "refuse":
        return Refuse(reason=_text(fields, "reason", MAX_TEXT_CHARS))
    if kind == "proof":
        return Proof(proof=_hex(fields, "proof", 32))
    if kind == "file":
        return FileHeader(
            path=_text(fields, "path", MAX_PATH_CHARS),
            size=_integer(fields, "size", 0, MAX_FILE_BYTES),
            mtime_ns=_optional_integer(fields, "mtime_ns", 0, 1 << 63),
            executable=_boolean(fields, "executable"),
        )
    if kind == "offer":
        have = _integer(fields, "have", 0, MAX_FILE_BYTES)
        chunk_bytes = _integer(fields, "chunk_bytes", MIN_CHUNK_BYTES, MAX_CHUNK_BYTES)
        digests_hex = _text(fields, "digests", 2 * DIGEST_BYTES * MAX_OFFER_CHUNKS)
        try:
            raw = bytes.fromhex(digests_hex)
        except ValueError as error:
            raise TransferProtocolError("digests are not hex") from error
        count = -(-have // chunk_bytes)
        if len(raw) != count * DIGEST_BYTES:
            raise TransferProtocolError("an offer needs one digest per chunk")
        digests = tuple(raw[i : i + DIGEST_BYTES] for i in range(0, len(raw), DIGEST_BYTES))
        return Offer(
            have=have,
            chunk_bytes=chunk_bytes,
            digests=digests,
            complete=_boolean(fields, "complete"),
        )
    if kind == "data":
        return Data(offset=_integer(fields, "offset", 0, MAX_FILE_BYTES))
    if kind == "end":
        return End(sha256=_hex(fields, "sha256", DIGEST_BYTES))
    if kind == "result":
        ok = _boolean(fields, "ok")
        digest = None if fields.get("sha256") is None else _hex(fields, "sha256", DIGEST_BYTES)
        reason = None if fields.get("error") is None else _text(fields, "error", MAX_TEXT_CHARS)
        return Result(ok=ok, sha256=digest, error=reason)
    raise TransferProtocolError(f"unknown message type {str(kind)[:40]!r}")
