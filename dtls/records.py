"""DTLS 1.2 record layer framing (RFC 6347 4.1) and the anti-replay window.

A datagram carries one or more records back to back.  Each record header is
13 bytes: content type, version, 16-bit epoch, 48-bit sequence number, length.
Records of the RFC 9146 ``tls12_cid`` type carry the connection id between the
sequence number and the length; its size is not on the wire, so the decoder
must be told how long our own connection id is.

Decoding is pure: :func:`decode_datagram` never raises for any input; a
malformed record ends the parse of that datagram (RFC 6347 4.1.2.7 lets a
receiver drop the rest of it) and is reported to the caller as a count.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from enum import IntEnum

__all__ = [
    "DTLS_1_0",
    "DTLS_1_2",
    "MAX_EPOCH",
    "MAX_SEQUENCE_NUMBER",
    "RECORD_HEADER_BYTES",
    "REPLAY_WINDOW_SIZE",
    "ContentType",
    "Record",
    "ReplayWindow",
    "decode_datagram",
    "encode_record_header",
]

DTLS_1_0 = 0xFEFF
DTLS_1_2 = 0xFEFD
RECORD_HEADER_BYTES = 13
MAX_SEQUENCE_NUMBER = (1 << 48) - 1
MAX_EPOCH = (1 << 16) - 1
# RFC 2^14 plaintext + 2048 expansion bound (RFC 5246 6.2.3): anything longer is malformed.
MAX_RECORD_PAYLOAD_BYTES = 16384 + 2048
REPLAY_WINDOW_SIZE = 64

_HEADER = struct.Struct("!BHHHIH")  # type, version, epoch, seq_hi16, seq_lo32, length
_CID_PREFIX = struct.Struct("!BHHHI")  # same, without the length


class ContentType(IntEnum):
    """Record content type (RFC 5246 6.2.1, RFC 9146 tls12_cid)."""

    change_cipher_spec = 20
    alert = 21
    handshake = 22
    application_data = 23
    tls12_cid = 25


@dataclass(slots=True, kw_only=True)
class Record:
    """One record as it came off the wire (payload still protected if epoch > 0)."""

    content_type: int
    version: int
    epoch: int
    sequence_number: int
    connection_id: bytes
    payload: bytes
    header: bytes  # the exact header bytes, needed for the CID additional data


def encode_record_header(
    content_type: int, version: int, epoch: int, sequence_number: int, length: int
) -> bytes:
    """Pack a plain 13-byte record header."""
    return _HEADER.pack(
        content_type, version, epoch, sequence_number >> 32, sequence_number & 0xFFFFFFFF, length
    )


def encode_cid_record_header(
    version: int, epoch: int, sequence_number: int, connection_id: bytes, length: int
) -> bytes:
    """Pack an RFC 9146 header: tls12_cid type, ..., connection id, length."""
    return (
        _CID_PREFIX.pack(
            ContentType.tls12_cid,
            version,
            epoch,
            sequence_number >> 32,
            sequence_number & 0xFFFFFFFF,
        )
        + connection_id
        + length.to_bytes(2, "big")
    )


def decode_datagram(data: bytes, cid_length: int = 0) -> tuple[list[Record], int]:
    """Split a datagram into records.

    Returns the records that parsed and the number of trailing bytes that did
    not (a truncated or malformed record stops the parse).  ``cid_length`` is
    the length of the connection id *we* asked the peer to use; records of type
    ``tls12_cid`` are only understood when it is non-zero.
    """
    records: list[Record] = []
    offset = 0
    total = len(data)
    while total - offset >= RECORD_HEADER_BYTES:
        content_type, version, epoch, seq_hi, seq_lo, length = _HEADER.unpack_from(data, offset)
        if version >> 8 != 0xFE:
            break
        connection_id = b""
        header_length = RECORD_HEADER_BYTES
        if content_type == ContentType.tls12_cid:
            if cid_length == 0:
                break
            header_length = RECORD_HEADER_BYTES + cid_length
            if total - offset < header_length:
                break
            connection_id = data[offset + 11 : offset + 11 + cid_length]
            length = int.from_bytes(data[offset + 11 + cid_length : offset + header_length], "big")
        if length > MAX_RECORD_PAYLOAD_BYTES or total - offset - header_length < length:
            break
        start = offset + header_length
        records.append(
            Record(
                content_type=content_type,
                version=version,
                epoch=epoch,
                sequence_number=(seq_hi << 32) | seq_lo,
                connection_id=connection_id,
                payload=data[start : start + length],
                header=data[offset:start],
            )
        )
        offset = start + length
    return records, total - offset


class ReplayWindow:
    """The sliding anti-replay window of RFC 6347 4.1.2.6, for one epoch.

    ``is_fresh`` is checked before decrypting (cheap rejection); ``mark`` only
    after the record authenticated, so forged records cannot move the window.
    ``size`` is 64 records by default (the RFC's preferred size); a receiver
    may choose a larger one, which a transport that reorders a lot needs.
    """

    __slots__ = ("_bitmap", "_highest", "_mask", "size")

    def __init__(self, size: int = REPLAY_WINDOW_SIZE) -> None:
        self.size = size
        self._mask = (1 << size) - 1
        self._highest = -1
        self._bitmap = 0  # bit i set: (highest - i) was received

    def is_fresh(self, sequence_number: int) -> bool:
        """True when the sequence number is new and not left of the window."""
        if sequence_number > self._highest:
            return True
        offset = self._highest - sequence_number
        if offset >= self.size:
            return False
        return not (self._bitmap >> offset) & 1

    @property
    def highest(self) -> int:
        """Highest authenticated sequence number so far (-1 before any)."""
        return self._highest

    def mark(self, sequence_number: int) -> None:
        """Record an authenticated sequence number as seen."""
        if sequence_number > self._highest:
            shift = sequence_number - self._highest
            if shift >= self.size:
                self._bitmap = 1  # never shift by a huge peer-chosen amount
            else:
                self._bitmap = ((self._bitmap << shift) | 1) & self._mask
            self._highest = sequence_number
        else:
            self._bitmap |= 1 << (self._highest - sequence_number)
