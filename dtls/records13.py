"""DTLS 1.3 record framing (RFC 9147 4): plaintext records and the unified header.

A datagram carries records back to back; the first byte of each says what
it is (RFC 9147 4.1): 20..26 is a ``DTLSPlaintext`` record with the 13-byte
header of DTLS 1.2 (epoch 0 only in 1.3), ``001CSLEE`` is a
``DTLSCiphertext`` record with the unified header::

    0 0 1 C S L E E   C: connection id present, S: 16-bit sequence number,
    [connection id]   L: length present, EE: low two bits of the epoch
    sequence number (8 or 16 bits, encrypted)
    [length (16 bits)]
    encrypted record

The connection id's length is not on the wire: the receiver knows the one it
asked for.  A header without a length runs to the end of the datagram.

Decoding is pure and never raises: a malformed record ends the parse of the
datagram and is reported as a count, as in :mod:`dtls.records`.  Removing
the sequence-number mask and the AEAD are :mod:`dtls.protection13`'s job;
this module also reconstructs full sequence numbers and epochs from the
bits on the wire (RFC 9147 4.2.2).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from .records import DTLS_1_2, ContentType, Record

__all__ = [
    "ACK_CONTENT_TYPE",
    "MAX_CIPHERTEXT_BYTES",
    "PLAINTEXT_HEADER_BYTES",
    "UNIFIED_HEADER_FIXED",
    "CiphertextRecord",
    "PlaintextRecord",
    "UnifiedRecord",
    "decode_datagram13",
    "decode_datagram_records",
    "encode_plaintext_record",
    "encode_unified_header",
    "is_unified_header",
    "reconstruct_sequence_number",
    "resolve_epoch",
]

ACK_CONTENT_TYPE = 26
PLAINTEXT_HEADER_BYTES = 13
UNIFIED_HEADER_FIXED = 0b0010_0000
_FIXED_MASK = 0b1110_0000
_CID_BIT = 0b0001_0000
_SEQ16_BIT = 0b0000_1000
_LENGTH_BIT = 0b0000_0100
_EPOCH_BITS = 0b0000_0011
#: 2^14 plaintext + 256 bytes of expansion (RFC 8446 5.2) is the largest valid record.
MAX_CIPHERTEXT_BYTES = 16384 + 256
#: The sequence-number mask is made from the first 16 ciphertext bytes (RFC 9147 4.2.3).
MIN_CIPHERTEXT_BYTES = 16
_PLAINTEXT_HEADER = struct.Struct("!BHHHIH")  # type, version, epoch, seq_hi16, seq_lo32, length
_PLAINTEXT_TYPES = frozenset((20, 21, 22, 23, 25, ACK_CONTENT_TYPE))


@dataclass(frozen=True, slots=True, kw_only=True)
class PlaintextRecord:
    """A DTLSPlaintext record (13-byte header): handshake, alert or ACK before keys exist."""

    content_type: int
    version: int
    epoch: int
    sequence_number: int
    payload: bytes


@dataclass(frozen=True, slots=True, kw_only=True)
class CiphertextRecord:
    """A DTLSCiphertext record as received: the sequence number bits are still masked."""

    header: bytes  # the unified header exactly as on the wire
    epoch_bits: int
    connection_id: bytes
    sequence_offset: int  # where the sequence number starts in ``header``
    sequence_length: int  # 1 or 2 bytes
    encrypted_record: bytes


def encode_plaintext_record(
    content_type: int, version: int, epoch: int, sequence_number: int, payload: bytes
) -> bytes:
    """A DTLSPlaintext record with its 13-byte header."""
    return (
        _PLAINTEXT_HEADER.pack(
            content_type,
            version,
            epoch,
            sequence_number >> 32,
            sequence_number & 0xFFFFFFFF,
            len(payload),
        )
        + payload
    )


def encode_unified_header(
    epoch: int, sequence_number: int, length: int, connection_id: bytes = b""
) -> bytes:
    """A unified header with a 16-bit sequence number and a length (sequence not yet masked)."""
    flags = UNIFIED_HEADER_FIXED | _SEQ16_BIT | _LENGTH_BIT | (epoch & _EPOCH_BITS)
    if connection_id:
        flags |= _CID_BIT
    return (
        bytes((flags,))
        + connection_id
        + (sequence_number & 0xFFFF).to_bytes(2, "big")
        + length.to_bytes(2, "big")
    )


def is_unified_header(first_byte: int) -> bool:
    """Whether a record starts with a unified (ciphertext) header."""
    return first_byte & _FIXED_MASK == UNIFIED_HEADER_FIXED


def decode_datagram13(
    data: bytes, cid_length: int = 0
) -> tuple[list[PlaintextRecord | CiphertextRecord], int]:
    """Split a datagram into records; returns them and the count of bytes that did not parse.

    ``cid_length`` is the length of the connection id *we* asked the peer to
    put in its records (0: none).  Never raises.
    """
    records: list[PlaintextRecord | CiphertextRecord] = []
    offset = 0
    total = len(data)
    while offset < total:
        first = data[offset]
        if is_unified_header(first):
            record = _decode_ciphertext(data, offset, cid_length)
            if record is None:
                break
            parsed, offset = record
            records.append(parsed)
            continue
        if first not in _PLAINTEXT_TYPES or total - offset < PLAINTEXT_HEADER_BYTES:
            break
        content_type, version, epoch, seq_hi, seq_lo, length = _PLAINTEXT_HEADER.unpack_from(
            data, offset
        )
        start = offset + PLAINTEXT_HEADER_BYTES
        if version >> 8 != 0xFE or length > MAX_CIPHERTEXT_BYTES or total - start < length:
            break
        records.append(
            PlaintextRecord(
                content_type=content_type,
                version=version,
                epoch=epoch,
                sequence_number=(seq_hi << 32) | seq_lo,
                payload=data[start : start + length],
            )
        )
        offset = start + length
    return records, total - offset


def _decode_ciphertext(
    data: bytes, offset: int, cid_length: int
) -> tuple[CiphertextRecord, int] | None:
    flags = data[offset]
    position = offset + 1
    connection_id = b""
    if flags & _CID_BIT:
        if cid_length == 0:
            return None  # we asked for no connection id: cannot even find the record's end
        connection_id = data[position : position + cid_length]
        position += cid_length
    sequence_offset = position - offset
    sequence_length = 2 if flags & _SEQ16_BIT else 1
    position += sequence_length
    if flags & _LENGTH_BIT:
        if len(data) - position < 2:
            return None
        length = int.from_bytes(data[position : position + 2], "big")
        position += 2
    else:
        length = len(data) - position
    end = position + length
    if end > len(data):
        return None
    if not MIN_CIPHERTEXT_BYTES <= length <= MAX_CIPHERTEXT_BYTES:
        return None
    return (
        CiphertextRecord(
            header=data[offset:position],
            epoch_bits=flags & _EPOCH_BITS,
            connection_id=connection_id,
            sequence_offset=sequence_offset,
            sequence_length=sequence_length,
            encrypted_record=data[position:end],
        ),
        end,
    )


def reconstruct_sequence_number(low_bits: int, bit_count: int, expected_next: int) -> int:
    """The full sequence number closest to ``expected_next`` whose low bits match (RFC 9147 4.2.2).

    Never negative; at most 2^64 - 1.
    """
    window = 1 << bit_count
    candidate = (expected_next & ~(window - 1)) | low_bits
    if candidate - expected_next > window // 2 and candidate >= window:
        candidate -= window
    elif expected_next - candidate > window // 2 and candidate + window < 1 << 64:
        candidate += window
    return candidate


def resolve_epoch(epoch_bits: int, readable: list[int]) -> int:
    """The epoch a unified header's two bits mean, given the epochs we can read.

    The newest readable epoch with those bits; failing that the next epoch
    with those bits after the newest one (a record that overtook its keys:
    the layer may park it).  Never below 1.
    """
    matching = [epoch for epoch in readable if epoch & 3 == epoch_bits and epoch > 0]
    if matching:
        return max(matching)
    newest = max(readable)
    candidate = newest + 1
    while candidate & 3 != epoch_bits:
        candidate += 1
    return candidate


@dataclass(slots=True, kw_only=True)
class UnifiedRecord(Record):
    """A DTLSCiphertext record: ``epoch`` is resolved from ``epoch_bits`` when it is opened."""

    epoch_bits: int
    sequence_offset: int
    sequence_length: int


def decode_datagram_records(data: bytes, cid_length: int) -> tuple[list[Record], int]:
    """The record layer's decoder for DTLS 1.3: plaintext and unified-header records."""
    parsed, leftover = decode_datagram13(data, cid_length)
    records: list[Record] = []
    for item in parsed:
        if isinstance(item, CiphertextRecord):
            records.append(
                UnifiedRecord(
                    content_type=ContentType.application_data,  # the real type is inside
                    version=DTLS_1_2,
                    epoch=-1,
                    sequence_number=0,
                    connection_id=item.connection_id,
                    payload=item.encrypted_record,
                    header=item.header,
                    epoch_bits=item.epoch_bits,
                    sequence_offset=item.sequence_offset,
                    sequence_length=item.sequence_length,
                )
            )
        else:
            records.append(
                Record(
                    content_type=item.content_type,
                    version=item.version,
                    epoch=item.epoch,
                    sequence_number=item.sequence_number,
                    connection_id=b"",
                    payload=item.payload,
                    header=b"",
                )
            )
    return records, leftover
