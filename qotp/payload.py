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

Beyond the reference: ACK repeats
=================================

The reference's decoder ignores whatever follows the ACK section of an
ACK-only payload (it is shorter than 18 bytes, so there is no stream section;
vector ``payload_decode_edges[ackonly_with_6_trailing_bytes_17_total_trailing_ignored]``).
Our ACK-only payloads use those bytes to acknowledge once more the packet
whose ACK went out last on the same stream (:func:`encode_ack_repeat`):

* ``0xA7, u16 length`` (3 bytes): the packet ``(ack stream, ack offset - length,
  length)``, the one just before the acknowledged packet -- the usual case, and
  the only one that fits after a 48-bit ACK section (14 + 3 = 17 bytes);
* ``0xA8, u24 offset, u16 length`` (6 bytes, 24-bit payloads only): any packet
  of the stream below 16 MiB, for a path that reorders.

Each packet's ACK then travels in two datagrams, so a lost ACK-only datagram
no longer costs the peer a retransmission (QOTP acknowledges every packet once,
by its exact key: with loss both ways, half of all retransmissions were of
packets that had arrived). A reference peer ignores the bytes, and so does our
decoder from before this extension.
"""

from __future__ import annotations

import struct
from enum import Enum
from typing import NamedTuple

from qotp.errors import DecodeError, LocalProtocolError

__all__ = [
    "ACK_ONLY_SIZE_24",
    "ACK_ONLY_SIZE_48",
    "ACK_REPEAT_ADJACENT_TAG",
    "ACK_REPEAT_TAG",
    "Ack",
    "MAX_OFFSET_24",
    "MAX_OFFSET_48",
    "MAX_PACKET_DATA_BYTES",
    "MAX_STREAM_ID",
    "MIN_PAYLOAD_SIZE",
    "PAYLOAD_VERSION",
    "STREAM_HEADER_SIZE_24",
    "STREAM_HEADER_SIZE_48",
    "STREAM_HEADER_WITH_ACK_SIZE_24",
    "STREAM_HEADER_WITH_ACK_SIZE_48",
    "PacketKey",
    "Payload",
    "PayloadKind",
    "decode_ack_repeat",
    "decode_payload",
    "decode_receive_window",
    "encode_ack_repeat",
    "encode_payload",
    "encode_receive_window",
    "needs_extended_offsets",
    "payload_header_size",
]

PAYLOAD_VERSION = 0
MIN_PAYLOAD_SIZE = 8
"""Shortest payload the decoder accepts (Go: MinProtoSize); also guarantees the
24 bytes of ciphertext that the sequence-number layer uses as its nonce."""

MAX_OFFSET_24 = 0xFFFFFF
"""The largest offset a 24-bit field carries; beyond it both offsets widen to 48 bits."""
MAX_OFFSET_48 = 0xFFFF_FFFF_FFFF
"""The largest stream offset the wire can express."""
MAX_STREAM_ID = 0xFFFF_FFFF
MAX_ACK_LENGTH = 0xFFFF
MAX_PACKET_DATA_BYTES = MAX_ACK_LENGTH
"""An ACK echoes a packet's data length in a u16, so no packet may carry more."""

PacketKey = tuple[int, int, int]
"""``(stream_id, offset, length)``: what an ACK echoes, and so all that identifies a packet."""

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

ACK_REPEAT_ADJACENT_TAG = 0xA7
"""An ACK repeat naming the packet just before the acknowledged one (our extension)."""
ACK_REPEAT_TAG = 0xA8
"""An ACK repeat naming a packet by its 24-bit offset (our extension)."""
_REPEAT_ADJACENT = struct.Struct("<BH")
_REPEAT = struct.Struct("<BHBH")
_REPEAT_ADJACENT_AFTER_24 = ACK_ONLY_SIZE_24 + _REPEAT_ADJACENT.size
_REPEAT_ADJACENT_AFTER_48 = ACK_ONLY_SIZE_48 + _REPEAT_ADJACENT.size
_REPEAT_AFTER_24 = ACK_ONLY_SIZE_24 + _REPEAT.size


class PayloadKind(Enum):
    """The three shapes a payload can take on the wire."""

    DATA = "data"
    """A stream section with user bytes (or a bare CLOSE, whose data may be empty)."""
    PING = "ping"
    """A stream section with no user bytes and no close flag: acknowledged, never retransmitted."""
    ACK_ONLY = "ack_only"
    """An ACK section and nothing else (no stream section)."""


class Ack(NamedTuple):
    """Acknowledges exactly one received packet by its (stream, offset, length) key.

    ``receive_window`` is the sender's free receive buffer in bytes, as decoded
    from the logarithmic one-byte code (so a decoded value is a step of the
    table, not the exact number that was encoded).
    """

    stream_id: int
    offset: int
    length: int
    receive_window: int


class Payload(NamedTuple):
    """One decoded (or to-be-encoded) transport payload.

    A NamedTuple rather than a frozen dataclass: one is built per packet in
    each direction, and tuple construction is several times cheaper.

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
# Hot-path helpers
# --------------------------------------------------------------------------
#
# encode_payload and decode_payload run once per packet in each direction, so
# the common shapes (DATA and PING with or without an ACK, ACK-only; 24- and
# 48-bit offsets, since a stream passes 16 MiB in well under a second) each get
# a straight-line path: one precompiled struct call for the whole fixed header,
# then one concatenation or slice for the data.  Everything else (errors, the
# CLOSE types on decode) goes through the general functions further down, which
# spell the layout out field by field.  tests/test_payload.py holds both to a
# plain reference codec.

_ACK_STREAM_24 = struct.Struct("<BIHBHBIHB")
"""Header, ACK section and stream section of a payload with an ACK, 24-bit offsets.

A 24-bit offset travels as a u16 (low bits) and a u8 (high bits), a 48-bit one
as a u32 and a u16: one struct call then writes (and range-checks, in C) the
whole header, which costs less than ``int.to_bytes`` per offset.  A negative
or too wide value raises ``struct.error``, which the encoder answers by taking
the general path: it raises the proper :class:`LocalProtocolError`."""
_ACK_STREAM_48 = struct.Struct("<BIIHHBIIH")
_ACK_24 = struct.Struct("<BIHBHB")
"""Header and ACK section of an ACK-only payload, 24-bit offset."""
_ACK_48 = struct.Struct("<BIIHHB")
_STREAM_24 = struct.Struct("<BIHB")
"""Header and stream section of a payload without an ACK, 24-bit offset."""
_STREAM_48 = struct.Struct("<BIIH")

_HEADER_DATA_ACK = _TYPE_DATA_ACK << _TYPE_SHIFT | PAYLOAD_VERSION
_HEADER_CLOSE_ACK = _TYPE_CLOSE_ACK << _TYPE_SHIFT | PAYLOAD_VERSION
_HEADER_DATA = _TYPE_DATA << _TYPE_SHIFT | PAYLOAD_VERSION
_HEADER_CLOSE = _TYPE_CLOSE << _TYPE_SHIFT | PAYLOAD_VERSION
_HEADER_DATA_ACK_48 = _HEADER_DATA_ACK | _EXTENDED_FLAG
_HEADER_DATA_48 = _HEADER_DATA | _EXTENDED_FLAG
_DATA_START_24 = 1 + _STREAM_SECTION_24
_DATA_START_48 = 1 + _STREAM_SECTION_48
_ACK_DATA_START_24 = ACK_ONLY_SIZE_24 + _STREAM_SECTION_24
_ACK_DATA_START_48 = ACK_ONLY_SIZE_48 + _STREAM_SECTION_48

_DATA = PayloadKind.DATA
_PING = PayloadKind.PING
_ACK_ONLY = PayloadKind.ACK_ONLY

# Payload and Ack are NamedTuples, so the decoder builds them with one
# tuple.__new__ call each (no per-field __setattr__ as a frozen dataclass needs).
_tuple_new = tuple.__new__


def _new_ack(stream_id: int, offset: int, length: int, receive_window: int) -> Ack:
    """Same as ``Ack(stream_id, offset, length, receive_window)``, cheaper."""
    return _tuple_new(Ack, (stream_id, offset, length, receive_window))


def _new_payload(
    kind: PayloadKind,
    stream_id: int,
    stream_offset: int,
    data: bytes,
    ack: Ack | None,
    is_close: bool,
) -> Payload:
    """Same as ``Payload(kind, stream_id, stream_offset, data, ack, is_close)``, cheaper."""
    return _tuple_new(Payload, (kind, stream_id, stream_offset, data, ack, is_close))


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


def needs_extended_offsets(stream_offset: int, ack_offset: int | None) -> bool:
    """Whether a payload must use 48-bit offsets (one flag covers stream and ACK offset)."""
    return stream_offset > MAX_OFFSET_24 or (ack_offset is not None and ack_offset > MAX_OFFSET_24)


STREAM_HEADER_SIZE_24 = payload_header_size(has_ack=False, kind=PayloadKind.DATA, extended=False)
"""8: header byte and stream section; the data budget of a packet is the rest.

With an ACK riding along: 18, and 11 / 24 with 48-bit offsets (the Readme's
19 / 25 are wrong, see the vector notes).  Go: calcProtoOverhead."""
STREAM_HEADER_SIZE_48 = payload_header_size(has_ack=False, kind=PayloadKind.DATA, extended=True)
STREAM_HEADER_WITH_ACK_SIZE_24 = payload_header_size(
    has_ack=True, kind=PayloadKind.DATA, extended=False
)
STREAM_HEADER_WITH_ACK_SIZE_48 = payload_header_size(
    has_ack=True, kind=PayloadKind.DATA, extended=True
)


def encode_payload(payload: Payload) -> bytes:
    """Serialise a payload exactly as the reference encoder does.

    Raises :class:`LocalProtocolError` for payloads the wire cannot express
    (ACK-only without an ACK or with the close flag, out-of-range fields).
    """
    kind = payload.kind
    ack = payload.ack
    try:
        if kind is not _ACK_ONLY:
            data = payload.data
            is_close = payload.is_close
            if data or is_close:
                if kind is not _DATA:
                    return _encode_general(payload)  # a PING with data: raises
            elif kind is not _PING:
                return _encode_general(payload)  # empty DATA: raises
            offset = payload.stream_offset
            if ack is None:
                if offset <= MAX_OFFSET_24:
                    return (
                        _STREAM_24.pack(
                            _HEADER_CLOSE if is_close else _HEADER_DATA,
                            payload.stream_id,
                            offset & 0xFFFF,
                            offset >> 16,
                        )
                        + data
                    )
                return (
                    _STREAM_48.pack(
                        (_HEADER_CLOSE if is_close else _HEADER_DATA) | _EXTENDED_FLAG,
                        payload.stream_id,
                        offset & 0xFFFF_FFFF,
                        offset >> 32,
                    )
                    + data
                )
            window = ack.receive_window
            if window >= 256:  # encode_receive_window, inlined
                step = window.bit_length() - 9
                window_code = 8 * step - 6 + (window >> (step + 5))
                if window_code > MAX_RECEIVE_WINDOW_CODE:
                    window_code = MAX_RECEIVE_WINDOW_CODE
            else:
                window_code = 1 if window > 0 else 0
            ack_offset = ack.offset
            if offset <= MAX_OFFSET_24 and ack_offset <= MAX_OFFSET_24:
                return (
                    _ACK_STREAM_24.pack(
                        _HEADER_CLOSE_ACK if is_close else _HEADER_DATA_ACK,
                        ack.stream_id,
                        ack_offset & 0xFFFF,
                        ack_offset >> 16,
                        ack.length,
                        window_code,
                        payload.stream_id,
                        offset & 0xFFFF,
                        offset >> 16,
                    )
                    + data
                )
            return (
                _ACK_STREAM_48.pack(
                    (_HEADER_CLOSE_ACK if is_close else _HEADER_DATA_ACK) | _EXTENDED_FLAG,
                    ack.stream_id,
                    ack_offset & 0xFFFF_FFFF,
                    ack_offset >> 32,
                    ack.length,
                    window_code,
                    payload.stream_id,
                    offset & 0xFFFF_FFFF,
                    offset >> 32,
                )
                + data
            )
        if ack is not None and not payload.is_close and not payload.data:
            window = ack.receive_window
            if window >= 256:  # encode_receive_window, inlined
                step = window.bit_length() - 9
                window_code = 8 * step - 6 + (window >> (step + 5))
                if window_code > MAX_RECEIVE_WINDOW_CODE:
                    window_code = MAX_RECEIVE_WINDOW_CODE
            else:
                window_code = 1 if window > 0 else 0
            ack_offset = ack.offset
            if ack_offset <= MAX_OFFSET_24:
                return _ACK_24.pack(
                    _HEADER_DATA_ACK,
                    ack.stream_id,
                    ack_offset & 0xFFFF,
                    ack_offset >> 16,
                    ack.length,
                    window_code,
                )
            return _ACK_48.pack(
                _HEADER_DATA_ACK_48,
                ack.stream_id,
                ack_offset & 0xFFFF_FFFF,
                ack_offset >> 32,
                ack.length,
                window_code,
            )
    except struct.error:
        pass  # a field is out of range (negative, or too wide even for 48 bits)
    return _encode_general(payload)


def _encode_general(payload: Payload) -> bytes:
    """Every shape, with every check; the fast paths above must agree with it."""
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


def encode_ack_repeat(ack_offset: int, offset: int, length: int) -> bytes:
    """The bytes an ACK-only payload acknowledging ``ack_offset`` appends to acknowledge
    once more the packet ``(same stream, offset, length)``; empty when they cannot say it
    (see the module docstring)."""
    if not 0 <= length <= MAX_ACK_LENGTH:
        raise LocalProtocolError(f"ACK length {length} out of range")
    if offset + length == ack_offset:
        return _REPEAT_ADJACENT.pack(ACK_REPEAT_ADJACENT_TAG, length)
    if 0 <= offset <= MAX_OFFSET_24 and ack_offset <= MAX_OFFSET_24:
        return _REPEAT.pack(ACK_REPEAT_TAG, offset & 0xFFFF, offset >> 16, length)
    return b""


def decode_ack_repeat(
    buffer: bytes | bytearray | memoryview, ack_offset: int
) -> tuple[int, int] | None:
    """``(offset, length)`` of the packet an ACK-only payload's repeat names, or None.

    Call for a payload that :func:`decode_payload` found to be ACK-only, with its ACK's
    offset; never raises.
    """
    size = len(buffer)
    header = buffer[0]
    if size == _REPEAT_AFTER_24 and header == _HEADER_DATA_ACK:
        tag, offset_low, offset_high, length = _REPEAT.unpack_from(buffer, ACK_ONLY_SIZE_24)
        if tag == ACK_REPEAT_TAG:
            return offset_high << 16 | offset_low, length
        return None
    if size == _REPEAT_ADJACENT_AFTER_24 and header == _HEADER_DATA_ACK:
        tag, length = _REPEAT_ADJACENT.unpack_from(buffer, ACK_ONLY_SIZE_24)
    elif size == _REPEAT_ADJACENT_AFTER_48 and header == _HEADER_DATA_ACK_48:
        tag, length = _REPEAT_ADJACENT.unpack_from(buffer, ACK_ONLY_SIZE_48)
    else:
        return None
    if tag != ACK_REPEAT_ADJACENT_TAG or length > ack_offset:
        return None
    return ack_offset - length, length


# --------------------------------------------------------------------------
# Decoding
# --------------------------------------------------------------------------


def decode_payload(buffer: bytes | bytearray | memoryview) -> Payload:
    """Parse a decrypted payload; raises only :class:`DecodeError`.

    Follows the reference decoder's length rules exactly, including its
    quirks (see the module docstring and SPEC.md).
    """
    size = len(buffer)
    if size >= MIN_PAYLOAD_SIZE:
        header = buffer[0]
        if header == _HEADER_DATA_ACK:
            # 18 bytes is both the full 24-bit header and _ACK_ONLY_THRESHOLD.
            if size >= _ACK_DATA_START_24:
                (
                    _,
                    ack_stream_id,
                    ack_offset_low,
                    ack_offset_high,
                    ack_length,
                    window_code,
                    stream_id,
                    offset_low,
                    offset_high,
                ) = _ACK_STREAM_24.unpack_from(buffer)
                data = buffer[_ACK_DATA_START_24:]
                if data.__class__ is not bytes:
                    data = bytes(data)
                ack = _new_ack(
                    ack_stream_id,
                    ack_offset_high << 16 | ack_offset_low,
                    ack_length,
                    _WINDOW_DECODE_TABLE[window_code],
                )
                return _new_payload(
                    _DATA if data else _PING,
                    stream_id,
                    offset_high << 16 | offset_low,
                    data,
                    ack,
                    False,
                )
            if size >= ACK_ONLY_SIZE_24:
                # Below _ACK_ONLY_THRESHOLD: no stream section, trailing bytes ignored.
                (
                    _,
                    ack_stream_id,
                    ack_offset_low,
                    ack_offset_high,
                    ack_length,
                    window_code,
                ) = _ACK_24.unpack_from(buffer)
                ack = _new_ack(
                    ack_stream_id,
                    ack_offset_high << 16 | ack_offset_low,
                    ack_length,
                    _WINDOW_DECODE_TABLE[window_code],
                )
                return _new_payload(_ACK_ONLY, 0, 0, b"", ack, False)
        elif header == _HEADER_DATA:
            # MIN_PAYLOAD_SIZE covers the header and the 24-bit stream section.
            _, stream_id, offset_low, offset_high = _STREAM_24.unpack_from(buffer)
            data = buffer[_DATA_START_24:]
            if data.__class__ is not bytes:
                data = bytes(data)
            return _new_payload(
                _DATA if data else _PING,
                stream_id,
                offset_high << 16 | offset_low,
                data,
                None,
                False,
            )
        elif header == _HEADER_DATA_ACK_48:
            # Past 16 MiB of a stream every offset is 48-bit: as hot as the above.
            if size >= _ACK_DATA_START_48:
                (
                    _,
                    ack_stream_id,
                    ack_offset_low,
                    ack_offset_high,
                    ack_length,
                    window_code,
                    stream_id,
                    offset_low,
                    offset_high,
                ) = _ACK_STREAM_48.unpack_from(buffer)
                data = buffer[_ACK_DATA_START_48:]
                if data.__class__ is not bytes:
                    data = bytes(data)
                ack = _new_ack(
                    ack_stream_id,
                    ack_offset_high << 32 | ack_offset_low,
                    ack_length,
                    _WINDOW_DECODE_TABLE[window_code],
                )
                return _new_payload(
                    _DATA if data else _PING,
                    stream_id,
                    offset_high << 32 | offset_low,
                    data,
                    ack,
                    False,
                )
            if ACK_ONLY_SIZE_48 <= size < _ACK_ONLY_THRESHOLD:
                (
                    _,
                    ack_stream_id,
                    ack_offset_low,
                    ack_offset_high,
                    ack_length,
                    window_code,
                ) = _ACK_48.unpack_from(buffer)
                ack = _new_ack(
                    ack_stream_id,
                    ack_offset_high << 32 | ack_offset_low,
                    ack_length,
                    _WINDOW_DECODE_TABLE[window_code],
                )
                return _new_payload(_ACK_ONLY, 0, 0, b"", ack, False)
        elif header == _HEADER_DATA_48 and size >= _DATA_START_48:
            _, stream_id, offset_low, offset_high = _STREAM_48.unpack_from(buffer)
            data = buffer[_DATA_START_48:]
            if data.__class__ is not bytes:
                data = bytes(data)
            return _new_payload(
                _DATA if data else _PING,
                stream_id,
                offset_high << 32 | offset_low,
                data,
                None,
                False,
            )
    return _decode_general(buffer, size)


def _decode_general(buffer: bytes | bytearray | memoryview, size: int) -> Payload:
    """Every shape and every error; the fast path above must agree with it."""
    if size < MIN_PAYLOAD_SIZE:
        raise DecodeError(f"payload of {size} bytes is below the minimum of {MIN_PAYLOAD_SIZE}")
    view = memoryview(buffer)
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
        ack = _new_ack(ack_stream_id, ack_offset, ack_length, _WINDOW_DECODE_TABLE[window_code])
        if size < _ACK_ONLY_THRESHOLD:
            # Trailing bytes after the ACK section are ignored, as in the reference.
            return _new_payload(_ACK_ONLY, 0, 0, b"", ack, is_close)

    stream_size = _STREAM_SECTION_48 if extended else _STREAM_SECTION_24
    if size < position + stream_size:
        raise DecodeError(f"payload of {size} bytes is too short for its stream section")
    stream_id = _U32.unpack_from(view, position)[0]
    stream_offset = int.from_bytes(view[position + 4 : position + stream_size], "little")
    data = bytes(view[position + stream_size :])
    kind = _DATA if data or is_close else _PING
    return _new_payload(kind, stream_id, stream_offset, data, ack, is_close)
