"""DTLS 1.3 handshake messages and extensions (RFC 8446 4, RFC 9147 5, 7 and 9).

The hellos keep the DTLS 1.2 layout (legacy fields included), so
:mod:`dtls.handshake` codes them; this module adds the extension bodies
that 1.3 negotiates with, and the messages 1.3 introduces or changes:
EncryptedExtensions, the 1.3 Certificate and CertificateRequest,
CertificateVerify, Finished, NewSessionTicket, KeyUpdate, ACK (a record
content type of its own), RequestConnectionId and NewConnectionId.

Every ``decode_*`` function takes untrusted bytes and raises only
:class:`~dtls.errors.DecodeError`; every ``encode_*`` is its inverse.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from enum import IntEnum

from .errors import DecodeError
from .handshake import (
    Extensions,
    Reader,
    encode_extension_block,
    encode_vector,
    read_extension_block,
    uint16_values,
)

__all__ = [
    "DTLS_1_2_VERSION",
    "DTLS_1_3_VERSION",
    "HELLO_RETRY_REQUEST_RANDOM",
    "MESSAGE_HASH_TYPE",
    "Certificate13",
    "CertificateEntry",
    "CertificateRequest13",
    "CertificateVerify",
    "ConnectionIdUsage",
    "ExtensionType13",
    "HandshakeType13",
    "KeyUpdateRequest",
    "NewConnectionId",
    "NewSessionTicket13",
    "OfferedPsks",
    "PskKeyExchangeMode",
    "RecordNumber",
    "binders_block",
    "decode_ack",
    "decode_certificate13",
    "decode_certificate_authorities",
    "decode_certificate_request13",
    "decode_certificate_verify",
    "decode_cookie",
    "decode_early_data_indication",
    "decode_extension_block",
    "decode_finished",
    "decode_key_share_client",
    "decode_key_share_hello_retry",
    "decode_key_share_server",
    "decode_key_update",
    "decode_new_connection_id",
    "decode_new_session_ticket13",
    "decode_pre_shared_key_client",
    "decode_pre_shared_key_server",
    "decode_psk_key_exchange_modes",
    "decode_request_connection_id",
    "decode_supported_versions_client",
    "decode_supported_versions_server",
    "encode_ack",
    "encode_certificate13",
    "encode_certificate_authorities",
    "encode_certificate_request13",
    "encode_certificate_verify",
    "encode_cookie",
    "encode_early_data_indication",
    "encode_extension_block",
    "encode_key_share_client",
    "encode_key_share_hello_retry",
    "encode_key_share_server",
    "encode_key_update",
    "encode_new_connection_id",
    "encode_new_session_ticket13",
    "encode_pre_shared_key_client",
    "encode_pre_shared_key_server",
    "encode_psk_key_exchange_modes",
    "encode_request_connection_id",
    "encode_supported_versions_client",
    "encode_supported_versions_server",
    "message_hash",
    "tls_handshake",
]

DTLS_1_2_VERSION = 0xFEFD
DTLS_1_3_VERSION = 0xFEFC
#: ServerHello.random of a HelloRetryRequest: SHA-256("HelloRetryRequest") (RFC 8446 4.1.3).
HELLO_RETRY_REQUEST_RANDOM = bytes.fromhex(
    "cf21ad74e59a6111be1d8c021e65b891c2a211167abb8c5e079e09e2c8a8339c"
)
#: The synthetic message that stands for ClientHello1 after a HelloRetryRequest (RFC 8446 4.4.1).
MESSAGE_HASH_TYPE = 254
_RECORD_NUMBER = struct.Struct("!QQ")
MAX_ACK_RECORD_NUMBERS = 4095  # (2^16 - 1) // 16


class HandshakeType13(IntEnum):
    """Handshake message types of DTLS 1.3 (RFC 8446 4, RFC 9147 5.1)."""

    client_hello = 1
    server_hello = 2
    new_session_ticket = 4
    end_of_early_data = 5
    encrypted_extensions = 8
    request_connection_id = 9
    new_connection_id = 10
    certificate = 11
    certificate_request = 13
    certificate_verify = 15
    finished = 20
    key_update = 24
    message_hash = 254


class ExtensionType13(IntEnum):
    """Extensions of 1.3 beyond those :class:`dtls.handshake.ExtensionType` lists."""

    server_name = 0
    supported_groups = 10
    signature_algorithms = 13
    use_srtp = 14
    application_layer_protocol_negotiation = 16
    pre_shared_key = 41
    early_data = 42
    supported_versions = 43
    cookie = 44
    psk_key_exchange_modes = 45
    certificate_authorities = 47
    post_handshake_auth = 49
    signature_algorithms_cert = 50
    key_share = 51
    connection_id = 54


class PskKeyExchangeMode(IntEnum):
    """psk_key_exchange_modes values (RFC 8446 4.2.9)."""

    psk_ke = 0
    psk_dhe_ke = 1


class KeyUpdateRequest(IntEnum):
    """KeyUpdate.request_update (RFC 8446 4.6.3)."""

    update_not_requested = 0
    update_requested = 1


class ConnectionIdUsage(IntEnum):
    """NewConnectionId.usage (RFC 9147 9)."""

    cid_immediate = 0
    cid_spare = 1


def tls_handshake(msg_type: int, body: bytes) -> bytes:
    """A message in its TLS form (type, 24-bit length, body): what the transcript holds."""
    return bytes((msg_type,)) + len(body).to_bytes(3, "big") + body


def message_hash(client_hello_hash: bytes) -> bytes:
    """The synthetic message_hash that replaces ClientHello1 in the transcript (RFC 8446 4.4.1)."""
    return tls_handshake(MESSAGE_HASH_TYPE, client_hello_hash)


# --- extension blocks (always length-prefixed outside the hellos) ------------------------------


def decode_extension_block(data: bytes) -> Extensions:
    """Inverse of :func:`encode_extension_block` (EncryptedExtensions is exactly this)."""
    reader = Reader(data)
    extensions = read_extension_block(reader)
    reader.finish()
    return extensions


# --- hello extensions ---------------------------------------------------------------------------


def encode_supported_versions_client(versions: list[int] | tuple[int, ...]) -> bytes:
    """ClientHello supported_versions: ``ProtocolVersion versions<2..254>``."""
    return encode_vector(1, b"".join(version.to_bytes(2, "big") for version in versions))


def decode_supported_versions_client(data: bytes) -> list[int]:
    """Inverse of :func:`encode_supported_versions_client`."""
    reader = Reader(data)
    versions = uint16_values(reader.vector(1, minimum=2, maximum=254))
    reader.finish()
    return versions


def encode_supported_versions_server(version: int) -> bytes:
    """ServerHello / HelloRetryRequest supported_versions: the selected version."""
    return version.to_bytes(2, "big")


def decode_supported_versions_server(data: bytes) -> int:
    """Inverse of :func:`encode_supported_versions_server`."""
    reader = Reader(data)
    version = reader.uint(2)
    reader.finish()
    return version


def encode_key_share_client(shares: list[tuple[int, bytes]]) -> bytes:
    """ClientHello key_share: ``KeyShareEntry client_shares<0..2^16-1>``."""
    return encode_vector(
        2, b"".join(group.to_bytes(2, "big") + encode_vector(2, key) for group, key in shares)
    )


def decode_key_share_client(data: bytes) -> list[tuple[int, bytes]]:
    """Inverse of :func:`encode_key_share_client`; a group may appear only once."""
    reader = Reader(data)
    inner = Reader(reader.vector(2))
    reader.finish()
    shares: list[tuple[int, bytes]] = []
    groups: set[int] = set()
    while inner.remaining():
        group = inner.uint(2)
        key = inner.vector(2, minimum=1)
        if group in groups:
            raise DecodeError("duplicate key share group")
        groups.add(group)
        shares.append((group, key))
    return shares


def encode_key_share_server(group: int, key: bytes) -> bytes:
    """ServerHello key_share: one KeyShareEntry."""
    return group.to_bytes(2, "big") + encode_vector(2, key)


def decode_key_share_server(data: bytes) -> tuple[int, bytes]:
    """Inverse of :func:`encode_key_share_server`."""
    reader = Reader(data)
    group = reader.uint(2)
    key = reader.vector(2, minimum=1)
    reader.finish()
    return group, key


def encode_key_share_hello_retry(group: int) -> bytes:
    """HelloRetryRequest key_share: the selected group only."""
    return group.to_bytes(2, "big")


def decode_key_share_hello_retry(data: bytes) -> int:
    """Inverse of :func:`encode_key_share_hello_retry`."""
    reader = Reader(data)
    group = reader.uint(2)
    reader.finish()
    return group


def encode_cookie(cookie: bytes) -> bytes:
    """cookie extension: ``opaque cookie<1..2^16-1>``."""
    return encode_vector(2, cookie)


def decode_cookie(data: bytes) -> bytes:
    """Inverse of :func:`encode_cookie`."""
    reader = Reader(data)
    cookie = reader.vector(2, minimum=1)
    reader.finish()
    return cookie


def encode_psk_key_exchange_modes(modes: list[int] | tuple[int, ...]) -> bytes:
    """psk_key_exchange_modes: ``PskKeyExchangeMode ke_modes<1..255>``."""
    return encode_vector(1, bytes(modes))


def decode_psk_key_exchange_modes(data: bytes) -> list[int]:
    """Inverse of :func:`encode_psk_key_exchange_modes`."""
    reader = Reader(data)
    modes = list(reader.vector(1, minimum=1))
    reader.finish()
    return modes


@dataclass(frozen=True, slots=True, kw_only=True)
class OfferedPsks:
    """ClientHello pre_shared_key: identities with obfuscated ages, and one binder each."""

    identities: list[tuple[bytes, int]]
    binders: list[bytes]


def encode_pre_shared_key_client(offered: OfferedPsks) -> bytes:
    """``PskIdentity identities<7..2^16-1>; PskBinderEntry binders<33..2^16-1>``."""
    identities = b"".join(
        encode_vector(2, identity) + age.to_bytes(4, "big") for identity, age in offered.identities
    )
    return encode_vector(2, identities) + binders_block(offered.binders)


def binders_block(binders: list[bytes]) -> bytes:
    """The binders list alone: the part of a ClientHello the binders do not cover."""
    return encode_vector(2, b"".join(encode_vector(1, binder) for binder in binders))


def decode_pre_shared_key_client(data: bytes) -> OfferedPsks:
    """Inverse of :func:`encode_pre_shared_key_client`; counts must match."""
    reader = Reader(data)
    identities_reader = Reader(reader.vector(2, minimum=7))
    binders_reader = Reader(reader.vector(2, minimum=33))
    reader.finish()
    identities: list[tuple[bytes, int]] = []
    while identities_reader.remaining():
        identity = identities_reader.vector(2, minimum=1)
        identities.append((identity, identities_reader.uint(4)))
    binders: list[bytes] = []
    while binders_reader.remaining():
        binders.append(binders_reader.vector(1, minimum=32))
    if len(binders) != len(identities):
        raise DecodeError("pre_shared_key: one binder per identity")
    return OfferedPsks(identities=identities, binders=binders)


def encode_pre_shared_key_server(selected_identity: int) -> bytes:
    """ServerHello pre_shared_key: ``uint16 selected_identity``."""
    return selected_identity.to_bytes(2, "big")


def decode_pre_shared_key_server(data: bytes) -> int:
    """Inverse of :func:`encode_pre_shared_key_server`."""
    reader = Reader(data)
    selected = reader.uint(2)
    reader.finish()
    return selected


def encode_early_data_indication(max_early_data_size: int | None = None) -> bytes:
    """early_data: empty in ClientHello/EncryptedExtensions, a u32 in NewSessionTicket."""
    return b"" if max_early_data_size is None else max_early_data_size.to_bytes(4, "big")


def decode_early_data_indication(data: bytes, *, in_ticket: bool) -> int | None:
    """Inverse of :func:`encode_early_data_indication`."""
    reader = Reader(data)
    value = reader.uint(4) if in_ticket else None
    reader.finish()
    return value


def encode_certificate_authorities(names: list[bytes]) -> bytes:
    """certificate_authorities: ``DistinguishedName authorities<3..2^16-1>``."""
    return encode_vector(2, b"".join(encode_vector(2, name) for name in names))


def decode_certificate_authorities(data: bytes) -> list[bytes]:
    """Inverse of :func:`encode_certificate_authorities`."""
    reader = Reader(data)
    inner = Reader(reader.vector(2, minimum=3))
    reader.finish()
    names: list[bytes] = []
    while inner.remaining():
        names.append(inner.vector(2, minimum=1))
    return names


# --- certificates --------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class CertificateEntry:
    """One X.509 certificate (DER) and its per-certificate extensions."""

    certificate: bytes
    extensions: Extensions = field(default_factory=list)


@dataclass(frozen=True, slots=True, kw_only=True)
class Certificate13:
    """The 1.3 Certificate (RFC 8446 4.4.2): a request context, then entries, leaf first."""

    request_context: bytes
    entries: list[CertificateEntry]


def encode_certificate13(message: Certificate13) -> bytes:
    """Certificate body."""
    entries = b"".join(
        encode_vector(3, entry.certificate) + encode_extension_block(entry.extensions)
        for entry in message.entries
    )
    return encode_vector(1, message.request_context) + encode_vector(3, entries)


def decode_certificate13(data: bytes) -> Certificate13:
    """Inverse of :func:`encode_certificate13`."""
    reader = Reader(data)
    context = reader.vector(1)
    inner = Reader(reader.vector(3))
    reader.finish()
    entries: list[CertificateEntry] = []
    while inner.remaining():
        certificate = inner.vector(3, minimum=1)
        entries.append(
            CertificateEntry(certificate=certificate, extensions=read_extension_block(inner))
        )
    return Certificate13(request_context=context, entries=entries)


@dataclass(frozen=True, slots=True, kw_only=True)
class CertificateRequest13:
    """The 1.3 CertificateRequest (RFC 8446 4.3.2); signature_algorithms is required."""

    request_context: bytes
    extensions: Extensions


def encode_certificate_request13(message: CertificateRequest13) -> bytes:
    """CertificateRequest body."""
    return encode_vector(1, message.request_context) + encode_extension_block(message.extensions)


def decode_certificate_request13(data: bytes) -> CertificateRequest13:
    """Inverse of :func:`encode_certificate_request13`."""
    reader = Reader(data)
    context = reader.vector(1)
    extensions = read_extension_block(reader)
    reader.finish()
    return CertificateRequest13(request_context=context, extensions=extensions)


@dataclass(frozen=True, slots=True, kw_only=True)
class CertificateVerify:
    """CertificateVerify (RFC 8446 4.4.3)."""

    scheme: int
    signature: bytes


def encode_certificate_verify(message: CertificateVerify) -> bytes:
    """CertificateVerify body."""
    return message.scheme.to_bytes(2, "big") + encode_vector(2, message.signature)


def decode_certificate_verify(data: bytes) -> CertificateVerify:
    """Inverse of :func:`encode_certificate_verify`."""
    reader = Reader(data)
    scheme = reader.uint(2)
    signature = reader.vector(2, minimum=1)
    reader.finish()
    return CertificateVerify(scheme=scheme, signature=signature)


def decode_finished(data: bytes, hash_length: int) -> bytes:
    """Finished is the bare verify_data, as long as the suite's hash."""
    if len(data) != hash_length:
        raise DecodeError("Finished of the wrong length")
    return data


# --- post-handshake messages ---------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class NewSessionTicket13:
    """NewSessionTicket (RFC 8446 4.6.1)."""

    lifetime_seconds: int
    age_add: int
    nonce: bytes
    ticket: bytes
    extensions: Extensions = field(default_factory=list)


def encode_new_session_ticket13(message: NewSessionTicket13) -> bytes:
    """NewSessionTicket body."""
    return (
        message.lifetime_seconds.to_bytes(4, "big")
        + message.age_add.to_bytes(4, "big")
        + encode_vector(1, message.nonce)
        + encode_vector(2, message.ticket)
        + encode_extension_block(message.extensions)
    )


def decode_new_session_ticket13(data: bytes) -> NewSessionTicket13:
    """Inverse of :func:`encode_new_session_ticket13`."""
    reader = Reader(data)
    lifetime = reader.uint(4)
    age_add = reader.uint(4)
    nonce = reader.vector(1)
    ticket = reader.vector(2, minimum=1)
    extensions = read_extension_block(reader)
    reader.finish()
    return NewSessionTicket13(
        lifetime_seconds=lifetime,
        age_add=age_add,
        nonce=nonce,
        ticket=ticket,
        extensions=extensions,
    )


def encode_key_update(request: KeyUpdateRequest) -> bytes:
    """KeyUpdate body."""
    return bytes((request,))


def decode_key_update(data: bytes) -> KeyUpdateRequest:
    """Inverse of :func:`encode_key_update`; other values are refused."""
    if len(data) != 1 or data[0] > 1:
        raise DecodeError("bad KeyUpdate")
    return KeyUpdateRequest(data[0])


def encode_request_connection_id(count: int) -> bytes:
    """RequestConnectionId: ``uint8 num_cids``."""
    return bytes((count,))


def decode_request_connection_id(data: bytes) -> int:
    """Inverse of :func:`encode_request_connection_id`."""
    if len(data) != 1:
        raise DecodeError("bad RequestConnectionId")
    return data[0]


@dataclass(frozen=True, slots=True, kw_only=True)
class NewConnectionId:
    """NewConnectionId (RFC 9147 9): connection ids the sender will accept."""

    connection_ids: list[bytes]
    usage: ConnectionIdUsage


def encode_new_connection_id(message: NewConnectionId) -> bytes:
    """NewConnectionId body: ``ConnectionId cids<0..2^16-1>; ConnectionIdUsage usage``."""
    return encode_vector(
        2, b"".join(encode_vector(1, cid) for cid in message.connection_ids)
    ) + bytes((message.usage,))


def decode_new_connection_id(data: bytes) -> NewConnectionId:
    """Inverse of :func:`encode_new_connection_id`."""
    reader = Reader(data)
    inner = Reader(reader.vector(2))
    usage = reader.uint(1)
    reader.finish()
    if usage > 1:
        raise DecodeError("bad connection id usage")
    cids: list[bytes] = []
    while inner.remaining():
        cids.append(inner.vector(1, minimum=1))
    return NewConnectionId(connection_ids=cids, usage=ConnectionIdUsage(usage))


# --- ACK (its own content type, RFC 9147 7) ------------------------------------------------------


@dataclass(frozen=True, slots=True, order=True)
class RecordNumber:
    """A record's full number: 64-bit epoch and 64-bit sequence number."""

    epoch: int
    sequence_number: int


def encode_ack(record_numbers: list[RecordNumber]) -> bytes:
    """ACK body: ``RecordNumber record_numbers<0..2^16-1>``, sorted ascending."""
    numbers = sorted(record_numbers)[:MAX_ACK_RECORD_NUMBERS]
    return encode_vector(
        2, b"".join(_RECORD_NUMBER.pack(item.epoch, item.sequence_number) for item in numbers)
    )


def decode_ack(data: bytes) -> list[RecordNumber]:
    """Inverse of :func:`encode_ack`."""
    reader = Reader(data)
    inner = reader.vector(2)
    reader.finish()
    if len(inner) % _RECORD_NUMBER.size:
        raise DecodeError("ACK list is not a whole number of record numbers")
    return [
        RecordNumber(*_RECORD_NUMBER.unpack_from(inner, offset))
        for offset in range(0, len(inner), _RECORD_NUMBER.size)
    ]
