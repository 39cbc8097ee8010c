"""The transport payload that travels inside every sealed QOTP packet.

Go: proto.go (``EncodeProto`` / ``DecodeProto``, ``EncodeRcvWindow``).

Layout (all integers little-endian)::

    header u8          bits 0-4 version (0), bits 5-6 type, bit 7 "48-bit offsets"
    [ACK section]      ack stream id u32, ack offset u24|u48, ack length u16,
                       receive window u8 (logarithmic code)           -- types 0 and 2
    [stream section]   stream id u32, stream offset u24|u48           -- unless ACK-only
    data               the rest of the payload

Types: 0 data with ACK, 1 data without ACK, 2 close with ACK, 3 close
without ACK.  A single flag (bit 7) widens *both* offsets to 48 bits.

The reference tells an ACK-only payload from a PING by ``nil`` versus empty
user data on the sending side, and on the receiving side by length alone: a
payload whose type carries an ACK and whose total length is below 18 bytes
has no stream section.  Our API names the three shapes with
:class:`PayloadKind`; the ``nil``/empty distinction lives only in this codec.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from enum import Enum

from qotp.errors import DecodeError, LocalProtocolError

__all__ = [
    "ACK_ONLY_SIZE_24",
    "ACK_ONLY_SIZE_48",
    "Ack",
    "MAX_OFFSET_24",
    "MAX_OFFSET_48",
    "MIN_PAYLOAD_SIZE",
    "PAYLOAD_VERSION",
    "Payload",
    "PayloadKind",
    "decode_payload",
    "decode_receive_window",
    "encode_payload",
    "encode_receive_window",
    "payload_header_size",
]

PAYLOAD_VERSION = 0
MIN_PAYLOAD_SIZE = 8
"""Shortest payload the decoder accepts (Go: MinProtoSize); also guarantees the
24 bytes of ciphertext that the sequence-number layer uses as its nonce."""

MAX_OFFSET_24 = 0xFFFFFF
MAX_OFFSET_48 = 0xFFFF_FFFF_FFFF
MAX_STREAM_ID = 0xFFFF_FFFF
MAX_ACK_LENGTH = 0xFFFF

_VERSION_MASK = 0x1F
_EXTENDED_FLAG = 0x80
_TYPE_SHIFT = 5

_TYPE_DATA_ACK = 0
_TYPE_DATA = 1
_TYPE_CLOSE_ACK = 2
_TYPE_CLOSE = 3

ACK_ONLY_SIZE_24 = 1 + 4 + 3 + 2 + 1
ACK_ONLY_SIZE_48 = 1 + 4 + 6 + 2 + 1
_STREAM_SECTION_24 = 4 + 3
_STREAM_SECTION_48 = 4 + 6
_ACK_ONLY_THRESHOLD = 18
"""The decoder's length rule: an ACK-carrying payload shorter than this has no
stream section.  It is the 24-bit "ACK + stream header" size, and the reference
applies it unchanged to 48-bit payloads (so 48-bit payloads of 18..23 bytes
with an ACK are rejected)."""

_U16 = struct.Struct("<H")
_U32 = struct.Struct("<I")


class PayloadKind(Enum):
    """The three shapes a payload can take on the wire."""

    DATA = "data"
    """A stream section with user bytes (or a bare CLOSE, whose data may be empty)."""
    PING = "ping"
    """A stream section with no user bytes and no close flag: acknowledged, never retransmitted."""
    ACK_ONLY = "ack_only"
    """An ACK section and nothing else (no stream section)."""


@dataclass(frozen=True, slots=True)
class Ack:
    """Acknowledges exactly one received packet by its (stream, offset, length) key.

    ``receive_window`` is the sender's free receive buffer in bytes, as decoded
    from the logarithmic one-byte code (so a decoded value is a step of the
    table, not the exact number that was encoded).
    """

    stream_id: int
    offset: int
    length: int
    receive_window: int


@dataclass(frozen=True, slots=True)
class Payload:
    """One decoded (or to-be-encoded) transport payload.

    For :attr:`PayloadKind.ACK_ONLY` the stream fields are 0 and ``data`` is empty.
    """

    kind: PayloadKind
    stream_id: int = 0
    stream_offset: int = 0
    data: bytes = b""
    ack: Ack | None = None
    is_close: bool = False


# --------------------------------------------------------------------------
# Receive window code
# --------------------------------------------------------------------------

MAX_RECEIVE_WINDOW_CODE = 255


def decode_receive_window(code: int) -> int:
    """Bytes represented by a one-byte window code.

    0 is 0, 1 is 128, and each further code is one of eight steps per power of
    two starting at 256: ``2^(8 + (c-2)//8) * (1 + ((c-2) % 8) / 8)``.
    """
    if code <= 0:
        return 0
    if code == 1:
        return 128
    step, substep = divmod(code - 2, 8)
    return (8 + substep) << (5 + step)


def encode_receive_window(nbytes: int) -> int:
    """The largest code whose decoded value does not exceed ``nbytes`` (floor).

    Values from 1 to 255 bytes all map to code 1 (128 bytes), as in the
    reference; anything past the top of the table clamps to 255.
    """
    if nbytes <= 0:
        return 0
    if nbytes < 256:
        return 1
    step = nbytes.bit_length() - 9
    substep = (nbytes >> (step + 5)) - 8
    code = 2 + 8 * step + substep
    return code if code < MAX_RECEIVE_WINDOW_CODE else MAX_RECEIVE_WINDOW_CODE


_WINDOW_DECODE_TABLE = tuple(decode_receive_window(code) for code in range(256))


# --------------------------------------------------------------------------
# Encoding
# --------------------------------------------------------------------------


def payload_header_size(*, has_ack: bool, kind: PayloadKind, extended: bool) -> int:
    """Bytes of payload header before the user data.

    Used by the sender to budget how much user data fits in one packet.
    """
    size = 1
    if has_ack:
        size += 4 + (6 if extended else 3) + 2 + 1
    if kind is not PayloadKind.ACK_ONLY:
        size += _STREAM_SECTION_48 if extended else _STREAM_SECTION_24
    return size


def encode_payload(payload: Payload) -> bytes:
    """Serialise a payload exactly as the reference encoder does.

    Raises :class:`LocalProtocolError` for payloads the wire cannot express
    (ACK-only without an ACK or with the close flag, out-of-range fields).
    """
    ack = payload.ack
    kind = payload.kind
    data = payload.data
    stream_offset = payload.stream_offset

    if kind is PayloadKind.ACK_ONLY:
        if ack is None:
            raise LocalProtocolError("an ACK-only payload needs an ACK")
        if payload.is_close:
            raise LocalProtocolError(
                "the wire has no ACK-only CLOSE; send a CLOSE with a stream header"
            )
        if data:
            raise LocalProtocolError("an ACK-only payload carries no data")
        has_stream = False
    else:
        if kind is PayloadKind.PING and (data or payload.is_close):
            raise LocalProtocolError("a PING carries no data and no close flag")
        if kind is PayloadKind.DATA and not data and not payload.is_close:
            raise LocalProtocolError("empty DATA is a PING; say PayloadKind.PING")
        if not 0 <= payload.stream_id <= MAX_STREAM_ID:
            raise LocalProtocolError(f"stream id out of range: {payload.stream_id}")
        if not 0 <= stream_offset <= MAX_OFFSET_48:
            raise LocalProtocolError(f"stream offset out of range: {stream_offset}")
        has_stream = True

    extended = has_stream and stream_offset > MAX_OFFSET_24
    if ack is not None:
        if not 0 <= ack.offset <= MAX_OFFSET_48:
            raise LocalProtocolError(f"ACK offset out of range: {ack.offset}")
        if not 0 <= ack.length <= MAX_ACK_LENGTH:
            raise LocalProtocolError(f"ACK length out of range: {ack.length}")
        if not 0 <= ack.stream_id <= MAX_STREAM_ID:
            raise LocalProtocolError(f"ACK stream id out of range: {ack.stream_id}")
        if ack.offset > MAX_OFFSET_24:
            extended = True
        type_bits = _TYPE_CLOSE_ACK if payload.is_close else _TYPE_DATA_ACK
    else:
        type_bits = _TYPE_CLOSE if payload.is_close else _TYPE_DATA

    header = (type_bits << _TYPE_SHIFT) | PAYLOAD_VERSION | (_EXTENDED_FLAG if extended else 0)
    offset_size = 6 if extended else 3
    parts = [bytes((header,))]
    if ack is not None:
        parts.append(_U32.pack(ack.stream_id))
        parts.append(ack.offset.to_bytes(offset_size, "little"))
        parts.append(_U16.pack(ack.length))
        parts.append(bytes((encode_receive_window(ack.receive_window),)))
    if has_stream:
        parts.append(_U32.pack(payload.stream_id))
        parts.append(stream_offset.to_bytes(offset_size, "little"))
        parts.append(data)
    return b"".join(parts)


# --------------------------------------------------------------------------
# Decoding
# --------------------------------------------------------------------------


def decode_payload(buffer: bytes | bytearray | memoryview) -> Payload:
    """Parse a decrypted payload; raises only :class:`DecodeError`.

    Follows the reference decoder's length rules exactly, including its
    quirks (see the module docstring and SPEC.md).
    """
    view = memoryview(buffer)
    size = len(view)
    if size < MIN_PAYLOAD_SIZE:
        raise DecodeError(f"payload of {size} bytes is below the minimum of {MIN_PAYLOAD_SIZE}")
    header = view[0]
    if header & _VERSION_MASK != PAYLOAD_VERSION:
        raise DecodeError(f"unsupported payload version {header & _VERSION_MASK}")
    type_bits = (header >> _TYPE_SHIFT) & 0x3
    extended = bool(header & _EXTENDED_FLAG)
    offset_size = 6 if extended else 3
    is_close = type_bits >= _TYPE_CLOSE_ACK
    position = 1

    ack: Ack | None = None
    if type_bits == _TYPE_DATA_ACK or type_bits == _TYPE_CLOSE_ACK:
        ack_size = ACK_ONLY_SIZE_48 if extended else ACK_ONLY_SIZE_24
        if size < ack_size:
            raise DecodeError(f"payload of {size} bytes is too short for its ACK section")
        ack_stream_id = _U32.unpack_from(view, 1)[0]
        ack_offset = int.from_bytes(view[5 : 5 + offset_size], "little")
        position = 5 + offset_size
        ack_length = _U16.unpack_from(view, position)[0]
        window_code = view[position + 2]
        position += 3
        ack = Ack(ack_stream_id, ack_offset, ack_length, _WINDOW_DECODE_TABLE[window_code])
        if size < _ACK_ONLY_THRESHOLD:
            # Trailing bytes after the ACK section are ignored, as in the reference.
            return Payload(PayloadKind.ACK_ONLY, 0, 0, b"", ack, is_close)

    stream_size = _STREAM_SECTION_48 if extended else _STREAM_SECTION_24
    if size < position + stream_size:
        raise DecodeError(f"payload of {size} bytes is too short for its stream section")
    stream_id = _U32.unpack_from(view, position)[0]
    stream_offset = int.from_bytes(view[position + 4 : position + stream_size], "little")
    data = bytes(view[position + stream_size :])
    if data or is_close:
        kind = PayloadKind.DATA
    else:
        kind = PayloadKind.PING
    return Payload(kind, stream_id, stream_offset, data, ack, is_close)
