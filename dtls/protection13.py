"""DTLS 1.3 record protection for one epoch and one direction (RFC 9147 4.2, RFC 8446 5.2).

* The AEAD nonce is the traffic IV XOR the 64-bit record sequence number
  (the epoch is not part of it: every epoch has its own keys).
* The additional data is the unified header as sent, with the sequence number
  *not yet* masked.  The plaintext is ``DTLSInnerPlaintext``: content, the
  real content type, optional zero padding.
* After sealing, the sequence number bytes of the header are XORed with a
  mask made from the first 16 ciphertext bytes under ``sn_key`` (RFC 9147
  4.2.3): AES-ECB of those bytes for the AES-GCM suites, and for ChaCha20
  the key stream of a block whose counter is bytes 0..3 (little endian) and
  whose nonce is bytes 4..15.  ``cryptography``'s ChaCha20 takes exactly that
  16-byte counter || nonce value.

Every AEAD and cipher object is built once per key, as STYLE.md asks.
"""

from __future__ import annotations

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM, ChaCha20Poly1305

from .errors import DecryptError
from .keyschedule13 import TrafficKeys
from .records import Record
from .records13 import (
    CiphertextRecord,
    UnifiedRecord,
    encode_unified_header,
    reconstruct_sequence_number,
)
from .suites import AeadKind

__all__ = ["AEAD_TAG_BYTES", "Epoch13Protection", "RecordNumberCipher", "RecordProtection13"]

AEAD_TAG_BYTES = 16
_ZERO_BLOCK = bytes(16)


class RecordNumberCipher:
    """Makes the sequence-number mask of one epoch and direction from a ciphertext sample."""

    __slots__ = ("_ecb", "_is_chacha", "_key")

    def __init__(self, aead_kind: AeadKind, sn_key: bytes) -> None:
        self._key = sn_key
        self._is_chacha = aead_kind is AeadKind.CHACHA20_POLY1305
        self._ecb = (
            None if self._is_chacha else Cipher(algorithms.AES(sn_key), modes.ECB()).encryptor()
        )

    def mask(self, sample: bytes) -> bytes:
        """At least two mask bytes from the 16-byte ``sample``."""
        if self._ecb is not None:
            return self._ecb.update(sample)
        encryptor = Cipher(algorithms.ChaCha20(self._key, sample), mode=None).encryptor()
        return encryptor.update(_ZERO_BLOCK)


class RecordProtection13:
    """Seals or opens DTLSCiphertext records of one epoch in one direction."""

    __slots__ = ("_aead", "_iv", "_sn", "epoch", "records", "tag_failures")

    def __init__(self, aead_kind: AeadKind, keys: TrafficKeys, epoch: int) -> None:
        self._aead: AESGCM | ChaCha20Poly1305 = (
            ChaCha20Poly1305(keys.key)
            if aead_kind is AeadKind.CHACHA20_POLY1305
            else AESGCM(keys.key)
        )
        self._iv = int.from_bytes(keys.iv, "big")
        self._sn = RecordNumberCipher(aead_kind, keys.sn_key)
        self.epoch = epoch
        self.records = 0  # records sealed (write side) or opened (read side) under this key
        self.tag_failures = 0  # records that failed authentication (read side)

    def _nonce(self, sequence_number: int) -> bytes:
        return (self._iv ^ sequence_number).to_bytes(12, "big")

    def seal(
        self,
        content_type: int,
        sequence_number: int,
        content: bytes,
        connection_id: bytes = b"",
        padding: int = 0,
    ) -> bytes:
        """One complete record: unified header (sequence masked), then the ciphertext."""
        inner = content + bytes((content_type,)) + bytes(padding)
        header = bytearray(
            encode_unified_header(
                self.epoch, sequence_number, len(inner) + AEAD_TAG_BYTES, connection_id
            )
        )
        ciphertext = self._aead.encrypt(self._nonce(sequence_number), inner, bytes(header))
        mask = self._sn.mask(ciphertext[:16])
        position = 1 + len(connection_id)
        header[position] ^= mask[0]
        header[position + 1] ^= mask[1]
        self.records += 1
        return bytes(header) + ciphertext

    def unmask_sequence(self, record: CiphertextRecord) -> tuple[int, bytes]:
        """The sequence number's low bits as sent, and the header with them unmasked (the AAD)."""
        mask = self._sn.mask(record.encrypted_record[:16])
        header = bytearray(record.header)
        start = record.sequence_offset
        value = 0
        for index in range(record.sequence_length):
            header[start + index] ^= mask[index]
            value = (value << 8) | header[start + index]
        return value, bytes(header)

    def unmask_whole(
        self, data: bytes, sequence_offset: int, header_length: int
    ) -> tuple[int, bytes]:
        """:meth:`unmask_sequence` for a datagram that is one record with a 16-bit number."""
        mask = self._sn.mask(data[header_length : header_length + 16])
        high = data[sequence_offset] ^ mask[0]
        low = data[sequence_offset + 1] ^ mask[1]
        aad = (
            data[:sequence_offset] + bytes((high, low)) + data[sequence_offset + 2 : header_length]
        )
        return (high << 8) | low, aad

    def open(self, aad: bytes, sequence_number: int, encrypted_record: bytes) -> tuple[int, bytes]:
        """Authenticate and decrypt: (real content type, content).  Raises only DecryptError."""
        try:
            inner = self._aead.decrypt(self._nonce(sequence_number), encrypted_record, aad)
        except InvalidTag:
            self.tag_failures += 1
            raise DecryptError("record failed authentication") from None
        end = len(inner)
        while end > 0 and inner[end - 1] == 0:
            end -= 1
        if end == 0:
            raise DecryptError("record without a content type")
        self.records += 1
        return inner[end - 1], inner[: end - 1]


class Epoch13Protection:
    """The record layer's view of one DTLS 1.3 epoch and direction."""

    __slots__ = ("_protection", "epoch")

    def __init__(self, protection: RecordProtection13) -> None:
        self._protection = protection
        self.epoch = protection.epoch

    @property
    def protection(self) -> RecordProtection13:
        """The AEAD and record-number cipher underneath (record counts live there)."""
        return self._protection

    @property
    def overhead(self) -> int:
        """Bytes beyond the 13-byte header the layer counts: unified header is 5 (+ CID)."""
        return 5 + AEAD_TAG_BYTES + 1 - 13

    def record_bytes(self, connection_id_length: int) -> int:
        """What one record adds to its content: header, inner type byte and tag."""
        return 5 + connection_id_length + 1 + AEAD_TAG_BYTES

    def recover_sequence_number(self, record: Record, highest: int) -> int:
        """Unmask the record number and widen it to 64 bits (RFC 9147 4.2.2, 4.2.3)."""
        if not isinstance(record, UnifiedRecord):
            raise DecryptError("plaintext record in a protected epoch")
        item = CiphertextRecord(
            header=record.header,
            epoch_bits=record.epoch_bits,
            connection_id=record.connection_id,
            sequence_offset=record.sequence_offset,
            sequence_length=record.sequence_length,
            encrypted_record=record.payload,
        )
        low_bits, unmasked = self._protection.unmask_sequence(item)
        record.header = unmasked  # the additional data
        return reconstruct_sequence_number(low_bits, 8 * record.sequence_length, highest + 1)

    def seal(
        self,
        content_type: int,
        version: int,
        sequence_number: int,
        plaintext: bytes,
        connection_id: bytes = b"",
    ) -> bytes:
        """One DTLSCiphertext record."""
        return self._protection.seal(content_type, sequence_number, plaintext, connection_id)

    def open(self, record: Record) -> tuple[int, bytes]:
        """(real content type, content); raises only DecryptError."""
        return self._protection.open(record.header, record.sequence_number, record.payload)
