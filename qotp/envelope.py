"""QOTP's native envelope: the five message types and their double encryption.

Go: crypto.go (``chainedEncrypt`` / ``chainedDecrypt``) and codec.go.

Every message starts with a cleartext header whose first byte is
``(message type << 5) | version``.  All but InitSnd then carry a 6-byte
encrypted sequence number followed by a ChaCha20-Poly1305 sealed payload:

* the payload layer uses the 32-byte raw X25519 result as key, a 12-byte
  nonce of ``epoch u48 LE || sequence number u48 LE`` whose byte 0 bit 7 is
  replaced by the direction flag (set when the initiator sent the packet),
  and the whole cleartext header as associated data;
* the sequence-number layer XORs the 6 sequence-number bytes with the
  XChaCha20 key stream at block counter 1, under the same key, with the
  first 24 bytes of the sealed payload as its nonce.  That is what the
  reference gets by keeping the first 6 bytes of an XChaCha20-Poly1305
  seal; we compute the same bytes through libsodium.

The functions here are pure: keys, sequence numbers and epochs come in as
arguments.  Connection state (which key, which counter) lives elsewhere.
"""

from __future__ import annotations

import struct
from enum import IntEnum
from typing import Final, NamedTuple

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305
from nacl._sodium import ffi as _sodium_ffi
from nacl._sodium import lib as _sodium_lib

from qotp.errors import DecodeError, DecryptError, LocalProtocolError, SequenceSpaceExhausted
from qotp.payload import MIN_PAYLOAD_SIZE

__all__ = [
    "CONNECTION_ID_SIZE",
    "CRYPTO_VERSION",
    "DEFAULT_MTU",
    "EnvelopeHeader",
    "MAC_SIZE",
    "MAX_EPOCH",
    "MAX_SEQUENCE_NUMBER",
    "MIN_PACKET_SIZE",
    "MessageType",
    "OpenedPacket",
    "PUBLIC_KEY_SIZE",
    "PacketCipher",
    "SEQUENCE_NUMBER_SIZE",
    "SMALL_PAYLOAD_BYTES",
    "SequenceCounter",
    "connection_id_from_public_key",
    "data_connection_id",
    "data_header",
    "decode_envelope_header",
    "encode_init_snd",
    "header_size",
    "open_packet",
    "seal_data",
    "seal_init_crypto_rcv",
    "seal_init_crypto_snd",
    "seal_init_rcv",
    "sealed_overhead",
]


class MessageType(IntEnum):
    """The 3-bit message type in the top of the envelope's first byte."""

    INIT_SND = 0
    INIT_RCV = 1
    INIT_CRYPTO_SND = 2
    INIT_CRYPTO_RCV = 3
    DATA = 4


CRYPTO_VERSION: Final = 0
DEFAULT_MTU: Final = 1400
"""Datagram size the reference pads InitSnd / InitCryptoSnd to, and its receive buffer size."""

TYPE_BYTE_SIZE: Final = 1
CONNECTION_ID_SIZE: Final = 8
PUBLIC_KEY_SIZE: Final = 32
SEQUENCE_NUMBER_SIZE: Final = 6
MAC_SIZE: Final = 16
FILL_LENGTH_SIZE: Final = 2
SN_NONCE_SIZE: Final = 24

_HEADER_SIZES: Final = {
    MessageType.INIT_SND: TYPE_BYTE_SIZE + 2 * PUBLIC_KEY_SIZE,
    MessageType.INIT_RCV: TYPE_BYTE_SIZE + CONNECTION_ID_SIZE + 2 * PUBLIC_KEY_SIZE,
    MessageType.INIT_CRYPTO_SND: TYPE_BYTE_SIZE + 2 * PUBLIC_KEY_SIZE,
    MessageType.INIT_CRYPTO_RCV: TYPE_BYTE_SIZE + CONNECTION_ID_SIZE + PUBLIC_KEY_SIZE,
    MessageType.DATA: TYPE_BYTE_SIZE + CONNECTION_ID_SIZE,
}
_FOOTER_SIZE: Final = SEQUENCE_NUMBER_SIZE + MAC_SIZE

MIN_PACKET_SIZE: Final = _HEADER_SIZES[MessageType.DATA] + _FOOTER_SIZE + MIN_PAYLOAD_SIZE
"""39: the reference's listener drops anything shorter before looking at it."""

MAX_SEQUENCE_NUMBER: Final = (1 << 48) - 1
MAX_EPOCH: Final = (1 << 47) - 1
"""The epoch has 48 bits in the nonce, but bit 7 of its low byte is overwritten
by the direction flag; the reference counts the space as 2^48 x 2^47 = 2^95."""

_tuple_new = tuple.__new__
_U64: Final = struct.Struct("<Q")
_U16: Final = struct.Struct("<H")


def header_size(message_type: MessageType) -> int:
    """Cleartext bytes before the encrypted sequence number (the AAD)."""
    return _HEADER_SIZES[message_type]


def sealed_overhead(message_type: MessageType) -> int:
    """Envelope bytes around a payload: header + encrypted SN + MAC (+ fill length)."""
    extra = FILL_LENGTH_SIZE if message_type is MessageType.INIT_CRYPTO_SND else 0
    return _HEADER_SIZES[message_type] + _FOOTER_SIZE + extra


def connection_id_from_public_key(ephemeral_public_key: bytes) -> int:
    """The connection id: the initiator's ephemeral public key bytes 0..7 as u64 LE.

    The reference never changes it afterwards (its Readme's XOR of identity
    keys is not implemented).
    """
    return int(_U64.unpack_from(ephemeral_public_key, 0)[0])


# --------------------------------------------------------------------------
# Sequence numbers and epochs
# --------------------------------------------------------------------------


class SequenceCounter:
    """One connection's send counter: a 48-bit sequence number rolling into the epoch.

    The reference keeps one counter for every message type, starting at 0 and
    advancing after every packet it encodes (the cleartext InitSnd too).
    """

    __slots__ = ("epoch", "sequence_number")

    def __init__(self, sequence_number: int = 0, epoch: int = 0) -> None:
        self.sequence_number = sequence_number
        self.epoch = epoch

    def take(self) -> tuple[int, int]:
        """Return the current (sequence number, epoch) and advance past it.

        Raises :class:`SequenceSpaceExhausted` instead of ever reusing a nonce.
        """
        sequence_number = self.sequence_number
        epoch = self.epoch
        if sequence_number == MAX_SEQUENCE_NUMBER:
            if epoch >= MAX_EPOCH:
                # Like the reference, the very last pair is never used: it would
                # roll the epoch past 47 bits.
                raise SequenceSpaceExhausted(
                    "the 2^95 sequence space of this connection is used up"
                )
            self.sequence_number = 0
            self.epoch = epoch + 1
        else:
            self.sequence_number = sequence_number + 1
        return sequence_number, epoch


# --------------------------------------------------------------------------
# The two encryption layers
# --------------------------------------------------------------------------

_xchacha_seal = _sodium_lib.crypto_aead_xchacha20poly1305_ietf_encrypt
_chacha_seal = _sodium_lib.crypto_aead_chacha20poly1305_ietf_encrypt
_chacha_open = _sodium_lib.crypto_aead_chacha20poly1305_ietf_decrypt
_NULL = _sodium_ffi.NULL
_unpack = _sodium_ffi.unpack

SMALL_PAYLOAD_BYTES: Final = 256
"""Payloads shorter than this are sealed and opened through libsodium.

Both libraries compute the same ChaCha20-Poly1305 (RFC 8439).  Measured here,
``cryptography`` costs ~1.3 us per call whatever the size (its per-call set-up
dominates), libsodium ~0.6 us for an ACK-sized payload but twice as much per
byte; they cross near 400 bytes.  Every data packet is answered by a small
ACK-only packet, so this halves the AEAD cost of half the traffic.
"""

_SCRATCH_BYTES: Final = SMALL_PAYLOAD_BYTES + MAC_SIZE


class OpenedPacket(NamedTuple):
    """What opening a sealed packet yields.

    A NamedTuple rather than a frozen dataclass: it is built once per received
    packet, and tuple construction costs a third of a frozen dataclass's.
    """

    sequence_number: int
    epoch: int
    payload: bytes


def _nonce(sequence_number: int, epoch: int, sent_by_initiator: bool) -> bytes:
    value = epoch | (sequence_number << 48)
    value = value | 0x80 if sent_by_initiator else value & ~0x80
    return value.to_bytes(12, "little")


class PacketCipher:
    """Both encryption layers under one 32-byte shared secret.

    Built once per key and reused: the ChaCha20-Poly1305 object and the
    libsodium output buffers are the expensive parts to create.  Not safe to
    share between threads (the scratch buffers are reused).

    ``seal`` and ``open`` are the per-packet hot path, so they use literals
    (6 = sequence-number bytes, 24 = XChaCha20 nonce bytes, 0x80 = direction
    bit, 256 = :data:`SMALL_PAYLOAD_BYTES`) and pre-bound methods instead of
    global lookups.
    """

    __slots__ = (
        "_aead_buffer",
        "_aead_chars",
        "_decrypt",
        "_encrypt",
        "_key",
        "_scratch",
        "_scratch_chars",
    )

    def __init__(self, shared_secret: bytes) -> None:
        if len(shared_secret) != 32:
            raise LocalProtocolError("a packet key is 32 bytes")
        self._key = bytes(shared_secret)
        aead = ChaCha20Poly1305(self._key)
        self._encrypt = aead.encrypt
        self._decrypt = aead.decrypt
        # libsodium wants unsigned char*; ffi.unpack returns bytes only for char*,
        # so each buffer is kept under both types.
        self._scratch_chars = _sodium_ffi.new("char[]", SEQUENCE_NUMBER_SIZE + MAC_SIZE)
        self._scratch = _sodium_ffi.cast("unsigned char *", self._scratch_chars)
        self._aead_chars = _sodium_ffi.new("char[]", _SCRATCH_BYTES)
        self._aead_buffer = _sodium_ffi.cast("unsigned char *", self._aead_chars)

    @property
    def key(self) -> bytes:
        """The shared secret (for the key log)."""
        return self._key

    def seal(
        self,
        header: bytes,
        sequence_number: int,
        epoch: int,
        sent_by_initiator: bool,
        plaintext: bytes,
    ) -> bytes:
        """``header || encrypted SN || ChaCha20-Poly1305(plaintext)``."""
        if sent_by_initiator:
            nonce_value = epoch | (sequence_number << 48) | 0x80
        else:
            nonce_value = (epoch | (sequence_number << 48)) & ~0x80
        length = len(plaintext)
        if length < 256:
            _chacha_seal(
                self._aead_buffer, _NULL, plaintext, length, header, len(header),
                _NULL, nonce_value.to_bytes(12, "little"), self._key,
            )  # fmt: skip
            sealed = _unpack(self._aead_chars, length + 16)
        else:
            sealed = self._encrypt(nonce_value.to_bytes(12, "little"), plaintext, header)
        # XChaCha20 at counter 1 is the ciphertext part of an XChaCha20-Poly1305
        # seal (the reference keeps its first 6 bytes); the raw libsodium call
        # costs ~0.6 us where PyNaCl's wrapper costs ~3.4 us.
        null = _NULL
        _xchacha_seal(
            self._scratch, null, sequence_number.to_bytes(6, "little"), 6,
            null, 0, null, sealed[:24], self._key,
        )  # fmt: skip
        return b"".join((header, _unpack(self._scratch_chars, 6), sealed))

    def _open_payload(self, nonce: bytes, sealed: bytes, header: bytes) -> bytes | None:
        """The payload layer alone; None when the tag does not verify."""
        length = len(sealed) - 16
        if length < 256:
            if _chacha_open(
                self._aead_buffer, _NULL, _NULL, sealed, length + 16, header, len(header),
                nonce, self._key,
            ):  # fmt: skip
                return None
            opened: bytes = _unpack(self._aead_chars, length)
            return opened
        try:
            return self._decrypt(nonce, sealed, header)
        except InvalidTag:
            return None

    def open(
        self,
        datagram: bytes,
        header_length: int,
        epoch: int,
        sent_by_initiator: bool,
    ) -> OpenedPacket:
        """Undo both layers, trying the receiver's epoch, then epoch-1, then epoch+1.

        The sequence number is recovered first (it is needed for the nonce);
        only the payload MAC authenticates anything.  Raises :class:`DecryptError`.
        The caller keeps ``epoch`` within 0..MAX_EPOCH (``open_packet`` checks it).
        """
        sealed_start = header_length + 6
        if len(datagram) < sealed_start + 24:
            raise DecryptError("packet too short to hold a sealed payload")
        sealed = datagram[sealed_start:]
        null = _NULL
        # XOR is its own inverse: the same call that masked the SN unmasks it.
        _xchacha_seal(
            self._scratch, null, datagram[header_length:sealed_start], 6,
            null, 0, null, sealed[:24], self._key,
        )  # fmt: skip
        sequence_number = int.from_bytes(_unpack(self._scratch_chars, 6), "little")
        header = datagram[:header_length]
        if sent_by_initiator:
            nonce_value = epoch | (sequence_number << 48) | 0x80
        else:
            nonce_value = (epoch | (sequence_number << 48)) & ~0x80
        # The receiver's own epoch first: almost always right.  Large payloads (data)
        # take cryptography inline, the hottest path of all.
        if len(sealed) >= 272:  # SMALL_PAYLOAD_BYTES + MAC
            try:
                plaintext: bytes | None = self._decrypt(
                    nonce_value.to_bytes(12, "little"), sealed, header
                )
            except InvalidTag:
                plaintext = None
        else:
            plaintext = self._open_payload(nonce_value.to_bytes(12, "little"), sealed, header)
        if plaintext is not None:
            return _tuple_new(OpenedPacket, (sequence_number, epoch, plaintext))
        for candidate in (epoch - 1, epoch + 1) if epoch > 0 else (epoch + 1,):
            if candidate > MAX_EPOCH:
                continue
            plaintext = self._open_payload(
                _nonce(sequence_number, candidate, sent_by_initiator), sealed, header
            )
            if plaintext is not None:
                return _tuple_new(OpenedPacket, (sequence_number, candidate, plaintext))
        raise DecryptError("packet failed authentication")


# --------------------------------------------------------------------------
# Message builders
# --------------------------------------------------------------------------


def _type_byte(message_type: MessageType) -> bytes:
    return bytes(((message_type << 5) | CRYPTO_VERSION,))


def _check_key(name: str, key: bytes) -> None:
    if len(key) != PUBLIC_KEY_SIZE:
        raise LocalProtocolError(f"{name} must be {PUBLIC_KEY_SIZE} bytes")


def _check_payload(payload: bytes, sequence_number: int, epoch: int) -> None:
    if len(payload) < MIN_PAYLOAD_SIZE:
        raise LocalProtocolError(f"an encoded payload has at least {MIN_PAYLOAD_SIZE} bytes")
    if not 0 <= sequence_number <= MAX_SEQUENCE_NUMBER:
        raise LocalProtocolError(f"sequence number out of range: {sequence_number}")
    if not 0 <= epoch <= MAX_EPOCH:
        raise LocalProtocolError(f"epoch out of range: {epoch}")


def encode_init_snd(
    ephemeral_public_key: bytes, identity_public_key: bytes, *, mtu: int = DEFAULT_MTU
) -> bytes:
    """InitSnd: cleartext keys padded with zeros to ``mtu`` (against amplification)."""
    _check_key("ephemeral_public_key", ephemeral_public_key)
    _check_key("identity_public_key", identity_public_key)
    body = _type_byte(MessageType.INIT_SND) + ephemeral_public_key + identity_public_key
    if mtu < len(body):
        raise LocalProtocolError(f"mtu {mtu} is too small for InitSnd")
    return body + bytes(mtu - len(body))


def seal_init_rcv(
    cipher: PacketCipher,
    *,
    connection_id: int,
    ephemeral_public_key: bytes,
    identity_public_key: bytes,
    sequence_number: int,
    epoch: int,
    payload: bytes,
) -> bytes:
    """InitRcv: the responder's reply in the in-band handshake (always responder-sent)."""
    _check_key("ephemeral_public_key", ephemeral_public_key)
    _check_key("identity_public_key", identity_public_key)
    _check_payload(payload, sequence_number, epoch)
    header = (
        _type_byte(MessageType.INIT_RCV)
        + _U64.pack(connection_id)
        + ephemeral_public_key
        + identity_public_key
    )
    return cipher.seal(header, sequence_number, epoch, False, payload)


def seal_init_crypto_snd(
    cipher: PacketCipher,
    *,
    ephemeral_public_key: bytes,
    identity_public_key: bytes,
    sequence_number: int,
    epoch: int,
    payload: bytes,
    mtu: int = DEFAULT_MTU,
) -> bytes:
    """InitCryptoSnd: 0-RTT first packet, padded inside the encryption to exactly ``mtu``."""
    _check_key("ephemeral_public_key", ephemeral_public_key)
    _check_key("identity_public_key", identity_public_key)
    _check_payload(payload, sequence_number, epoch)
    fill_length = mtu - sealed_overhead(MessageType.INIT_CRYPTO_SND) - len(payload)
    if fill_length < 0:
        raise LocalProtocolError(
            f"payload of {len(payload)} bytes does not fit an InitCryptoSnd of {mtu}"
        )
    header = _type_byte(MessageType.INIT_CRYPTO_SND) + ephemeral_public_key + identity_public_key
    plaintext = _U16.pack(fill_length) + bytes(fill_length) + payload
    return cipher.seal(header, sequence_number, epoch, True, plaintext)


def seal_init_crypto_rcv(
    cipher: PacketCipher,
    *,
    connection_id: int,
    ephemeral_public_key: bytes,
    sequence_number: int,
    epoch: int,
    payload: bytes,
) -> bytes:
    """InitCryptoRcv: the responder's reply in the 0-RTT handshake."""
    _check_key("ephemeral_public_key", ephemeral_public_key)
    _check_payload(payload, sequence_number, epoch)
    header = (
        _type_byte(MessageType.INIT_CRYPTO_RCV) + _U64.pack(connection_id) + ephemeral_public_key
    )
    return cipher.seal(header, sequence_number, epoch, False, payload)


_DATA_TYPE_BYTE: Final = _type_byte(MessageType.DATA)


def data_header(connection_id: int) -> bytes:
    """The 9 cleartext bytes of every Data packet of a connection (cache it)."""
    return _DATA_TYPE_BYTE + _U64.pack(connection_id)


def seal_data(
    cipher: PacketCipher,
    *,
    connection_id: int,
    sequence_number: int,
    epoch: int,
    sent_by_initiator: bool,
    payload: bytes,
) -> bytes:
    """Data: every packet after the handshake, in either direction."""
    if len(payload) < MIN_PAYLOAD_SIZE:
        raise LocalProtocolError(f"an encoded payload has at least {MIN_PAYLOAD_SIZE} bytes")
    return cipher.seal(
        _DATA_TYPE_BYTE + _U64.pack(connection_id),
        sequence_number,
        epoch,
        sent_by_initiator,
        payload,
    )


# --------------------------------------------------------------------------
# Parsing
# --------------------------------------------------------------------------


def data_connection_id(datagram: bytes) -> int | None:
    """Routing fast path: the connection id if this looks like a Data packet, else None.

    Callers fall back to :func:`decode_envelope_header` on None.
    """
    if len(datagram) >= MIN_PACKET_SIZE and datagram[0] == _DATA_TYPE_VALUE:
        return int.from_bytes(datagram[1:9], "little")
    return None


class EnvelopeHeader(NamedTuple):
    """The cleartext part of a datagram: enough to route it, nothing decrypted.

    ``ephemeral_public_key`` is the initiator's for InitSnd / InitCryptoSnd and
    the responder's for InitRcv / InitCryptoRcv; ``identity_public_key`` is the
    sender's identity where the message carries one.
    """

    message_type: MessageType
    connection_id: int
    header_size: int
    ephemeral_public_key: bytes | None = None
    identity_public_key: bytes | None = None


_DATA: Final = MessageType.DATA
_DATA_TYPE_VALUE: Final = (MessageType.DATA << 5) | CRYPTO_VERSION
_DATA_HEADER_SIZE: Final = _HEADER_SIZES[MessageType.DATA]
_MESSAGE_TYPES: Final = tuple(MessageType)

_MIN_SIZES: Final = {
    MessageType.INIT_RCV: _HEADER_SIZES[MessageType.INIT_RCV] + _FOOTER_SIZE + MIN_PAYLOAD_SIZE,
    MessageType.INIT_CRYPTO_RCV: _HEADER_SIZES[MessageType.INIT_CRYPTO_RCV]
    + _FOOTER_SIZE
    + MIN_PAYLOAD_SIZE,
    MessageType.DATA: MIN_PACKET_SIZE,
}


def decode_envelope_header(
    datagram: bytes | bytearray | memoryview, *, mtu: int = DEFAULT_MTU
) -> EnvelopeHeader:
    """Parse the cleartext header; raises only :class:`DecodeError`.

    ``mtu`` is the *receiver's*: like the reference, InitSnd and InitCryptoSnd
    shorter than it are refused (they must be padded against amplification).
    Unlike the reference we do not truncate longer datagrams; the MAC decides.
    """
    size = len(datagram)
    if size < MIN_PACKET_SIZE:
        raise DecodeError(f"datagram of {size} bytes is below the minimum of {MIN_PACKET_SIZE}")
    type_byte = datagram[0]
    if type_byte == _DATA_TYPE_VALUE:  # the hot path: one branch, no enum lookup
        return EnvelopeHeader(_DATA, int.from_bytes(datagram[1:9], "little"), _DATA_HEADER_SIZE)
    view = memoryview(datagram)
    if type_byte & 0x1F != CRYPTO_VERSION:
        raise DecodeError(f"unsupported envelope version {type_byte & 0x1F}")
    raw_type = type_byte >> 5
    if raw_type > MessageType.DATA:
        raise DecodeError(f"unknown message type {raw_type}")
    message_type = _MESSAGE_TYPES[raw_type]
    length = _HEADER_SIZES[message_type]

    if message_type is MessageType.INIT_SND or message_type is MessageType.INIT_CRYPTO_SND:
        if size < mtu:
            raise DecodeError(f"{message_type.name} of {size} bytes is shorter than the mtu {mtu}")
        ephemeral = bytes(view[1:33])
        return EnvelopeHeader(
            message_type,
            connection_id_from_public_key(ephemeral),
            length,
            ephemeral,
            bytes(view[33:65]),
        )

    if size < _MIN_SIZES[message_type]:
        raise DecodeError(f"{message_type.name} of {size} bytes is below its minimum size")
    connection_id = int(_U64.unpack_from(view, 1)[0])
    if message_type is MessageType.DATA:
        return EnvelopeHeader(message_type, connection_id, length)
    ephemeral = bytes(view[9:41])
    identity = bytes(view[41:73]) if message_type is MessageType.INIT_RCV else None
    return EnvelopeHeader(message_type, connection_id, length, ephemeral, identity)


_INITIATOR_SENT: Final = {
    MessageType.INIT_RCV: False,
    MessageType.INIT_CRYPTO_SND: True,
    MessageType.INIT_CRYPTO_RCV: False,
}


def open_packet(
    datagram: bytes,
    header: EnvelopeHeader,
    cipher: PacketCipher,
    *,
    epoch: int = 0,
    sent_by_initiator: bool | None = None,
) -> OpenedPacket:
    """Authenticate and decrypt a parsed datagram; return its transport payload bytes.

    The direction of handshake messages is fixed by their type; for Data the
    caller says who sent it (the opposite of its own role).  InitCryptoSnd's
    filler is removed, with the bounds check the reference lacks.  Raises
    :class:`DecryptError` or :class:`DecodeError`.
    """
    message_type = header.message_type
    if not 0 <= epoch <= MAX_EPOCH:
        raise LocalProtocolError(f"epoch out of range: {epoch}")
    if message_type is MessageType.INIT_SND:
        raise DecodeError("InitSnd is not encrypted; nothing to open")
    if message_type is MessageType.DATA:
        if sent_by_initiator is None:
            raise LocalProtocolError("opening Data needs the sender's role")
        direction = sent_by_initiator
    else:
        direction = _INITIATOR_SENT[message_type]
    opened = cipher.open(datagram, header.header_size, epoch, direction)
    if message_type is not MessageType.INIT_CRYPTO_SND:
        return opened
    plaintext = opened.payload
    if len(plaintext) < FILL_LENGTH_SIZE:
        raise DecodeError("InitCryptoSnd too short for its fill length")
    fill_length = _U16.unpack_from(plaintext, 0)[0]
    payload_start = FILL_LENGTH_SIZE + fill_length
    if payload_start > len(plaintext):
        raise DecodeError(f"InitCryptoSnd fill length {fill_length} points past the end")
    return OpenedPacket(opened.sequence_number, opened.epoch, plaintext[payload_start:])
