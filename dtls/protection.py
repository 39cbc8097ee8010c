"""AEAD record protection for one epoch and one direction.

Nonces: AES-GCM uses a 4-byte implicit salt from the key block plus an 8-byte
explicit nonce carried in front of the ciphertext (RFC 5288 3); we send the
record's epoch and sequence number as that explicit part, which is unique per
key.  ChaCha20-Poly1305 XORs the 64-bit epoch||sequence into the 12-byte IV
and sends no explicit nonce (RFC 7905 2).

Additional data is epoch||sequence, type, version, plaintext length (RFC 6347
4.1.2.1).  With a connection id (RFC 9146 5) the record type on the wire is
``tls12_cid``, the plaintext is ``content || real type`` and the additional
data starts with eight 0xff bytes and repeats the CID and its length.
"""

from __future__ import annotations

import struct

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM, ChaCha20Poly1305

from .errors import DecryptError
from .records import DTLS_1_2, ContentType, Record, encode_cid_record_header
from .suites import AeadKind

__all__ = ["AEAD_TAG_BYTES", "RecordProtection"]

AEAD_TAG_BYTES = 16
_SEQUENCE = struct.Struct("!HHI")  # epoch, seq_hi16, seq_lo32 == 8 bytes
_CID_AAD_PLACEHOLDER = b"\xff" * 8
_AAD_TAIL = struct.Struct("!BHH")  # type, version, plaintext length
_HEADER = struct.Struct("!BHHHIH")  # type, version, epoch, seq_hi16, seq_lo32, length


class RecordProtection:
    """Seals or opens records of one epoch in one direction.

    The AEAD object is built once per key, as STYLE.md asks for speed.
    """

    __slots__ = ("_aead", "_explicit_nonce_bytes", "_fixed_iv", "_is_chacha", "_iv_int", "epoch")

    def __init__(self, aead_kind: AeadKind, key: bytes, fixed_iv: bytes, epoch: int) -> None:
        self._is_chacha = aead_kind is AeadKind.CHACHA20_POLY1305
        self._aead: AESGCM | ChaCha20Poly1305 = (
            ChaCha20Poly1305(key) if self._is_chacha else AESGCM(key)
        )
        self._fixed_iv = fixed_iv
        self._iv_int = int.from_bytes(fixed_iv, "big")
        self._explicit_nonce_bytes = 0 if self._is_chacha else 8
        self.epoch = epoch

    @property
    def overhead(self) -> int:
        """Bytes a record's payload grows by when sealed (explicit nonce + tag)."""
        return self._explicit_nonce_bytes + AEAD_TAG_BYTES

    def recover_sequence_number(self, record: Record, highest: int) -> int:
        """DTLS 1.2 carries the whole sequence number in the clear."""
        return record.sequence_number

    def _nonce(self, explicit: bytes) -> bytes:
        if self._is_chacha:
            return (self._iv_int ^ int.from_bytes(explicit, "big")).to_bytes(12, "big")
        return self._fixed_iv + explicit

    def seal(
        self,
        content_type: int,
        version: int,
        sequence_number: int,
        plaintext: bytes,
        connection_id: bytes = b"",
    ) -> bytes:
        """Return a complete protected record (header included)."""
        explicit = _SEQUENCE.pack(self.epoch, sequence_number >> 32, sequence_number & 0xFFFFFFFF)
        nonce = self._nonce(explicit)
        prefix = explicit if self._explicit_nonce_bytes else b""
        if connection_id:
            inner = plaintext + bytes((content_type,))
            cid_length = len(connection_id)
            aad = (
                _CID_AAD_PLACEHOLDER
                + bytes((ContentType.tls12_cid, cid_length, ContentType.tls12_cid))
                + version.to_bytes(2, "big")
                + explicit
                + connection_id
                + len(inner).to_bytes(2, "big")
            )
            body = prefix + self._aead.encrypt(nonce, inner, aad)
            header = encode_cid_record_header(
                version, self.epoch, sequence_number, connection_id, len(body)
            )
            return header + body
        aad = explicit + _AAD_TAIL.pack(content_type, version, len(plaintext))
        sealed = self._aead.encrypt(nonce, plaintext, aad)
        return (
            _HEADER.pack(
                content_type,
                version,
                self.epoch,
                sequence_number >> 32,
                sequence_number & 0xFFFFFFFF,
                len(prefix) + len(sealed),
            )
            + prefix
            + sealed
        )

    def seal_plain(self, content_type: int, sequence_number: int, plaintext: bytes) -> bytes:
        """The no-connection-id, DTLS 1.2 case of :meth:`seal`, for the send fast path."""
        high = sequence_number >> 32
        low = sequence_number & 0xFFFFFFFF
        explicit = _SEQUENCE.pack(self.epoch, high, low)
        aad = explicit + _AAD_TAIL.pack(content_type, DTLS_1_2, len(plaintext))
        if self._is_chacha:
            nonce = (self._iv_int ^ int.from_bytes(explicit, "big")).to_bytes(12, "big")
            sealed = self._aead.encrypt(nonce, plaintext, aad)
            return _HEADER.pack(content_type, DTLS_1_2, self.epoch, high, low, len(sealed)) + sealed
        sealed = self._aead.encrypt(self._fixed_iv + explicit, plaintext, aad)
        return (
            _HEADER.pack(content_type, DTLS_1_2, self.epoch, high, low, 8 + len(sealed))
            + explicit
            + sealed
        )

    def open_plain(
        self, content_type: int, version: int, epoch: int, sequence_number: int, payload: bytes
    ) -> bytes:
        """Open a record without a connection id, given its header fields.

        The receive fast path calls this directly; raises only :class:`DecryptError`.
        """
        explicit_bytes = self._explicit_nonce_bytes
        if len(payload) < explicit_bytes + AEAD_TAG_BYTES:
            raise DecryptError("record too short for its AEAD")
        sequence = _SEQUENCE.pack(epoch, sequence_number >> 32, sequence_number & 0xFFFFFFFF)
        if explicit_bytes:
            nonce = self._fixed_iv + payload[:explicit_bytes]
            ciphertext = payload[explicit_bytes:]
        else:
            nonce = (self._iv_int ^ int.from_bytes(sequence, "big")).to_bytes(12, "big")
            ciphertext = payload
        aad = sequence + _AAD_TAIL.pack(content_type, version, len(ciphertext) - AEAD_TAG_BYTES)
        try:
            return self._aead.decrypt(nonce, ciphertext, aad)
        except InvalidTag:
            raise DecryptError("record failed authentication") from None

    def open(self, record: Record) -> tuple[int, bytes]:
        """Authenticate and decrypt; return (real content type, plaintext).

        Raises only :class:`DecryptError`.
        """
        if record.content_type != ContentType.tls12_cid:
            return record.content_type, self.open_plain(
                record.content_type,
                record.version,
                record.epoch,
                record.sequence_number,
                record.payload,
            )
        payload = record.payload
        explicit_bytes = self._explicit_nonce_bytes
        if len(payload) < explicit_bytes + AEAD_TAG_BYTES:
            raise DecryptError("record too short for its AEAD")
        sequence = _SEQUENCE.pack(
            record.epoch, record.sequence_number >> 32, record.sequence_number & 0xFFFFFFFF
        )
        explicit = payload[:explicit_bytes] if explicit_bytes else sequence
        ciphertext = payload[explicit_bytes:]
        plaintext_length = len(ciphertext) - AEAD_TAG_BYTES
        cid = record.connection_id
        aad = (
            _CID_AAD_PLACEHOLDER
            + bytes((ContentType.tls12_cid, len(cid), ContentType.tls12_cid))
            + record.version.to_bytes(2, "big")
            + sequence
            + cid
            + plaintext_length.to_bytes(2, "big")
        )
        try:
            plaintext = self._aead.decrypt(self._nonce(explicit), ciphertext, aad)
        except InvalidTag:
            raise DecryptError("record failed authentication") from None
        # DTLSInnerPlaintext: content, real type, zero padding (RFC 9146 4).
        end = len(plaintext)
        while end > 0 and plaintext[end - 1] == 0:
            end -= 1
        if end == 0:
            raise DecryptError("connection-id record without a content type")
        return plaintext[end - 1], plaintext[: end - 1]
