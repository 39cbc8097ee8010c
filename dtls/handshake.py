"""Handshake message codecs (RFC 5246 7.4, RFC 6347 4.2, and the extensions we speak).

Every ``decode_*`` function takes untrusted bytes and raises only
:class:`DecodeError`.  Extensions travel as raw ``(type, body)`` pairs inside
the hello messages; the small helpers at the bottom encode and decode the
bodies we understand.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from enum import IntEnum

from .errors import DecodeError

__all__ = [
    "HANDSHAKE_HEADER_BYTES",
    "Certificate",
    "CertificateRequest",
    "ClientHello",
    "ClientHelloPrefix",
    "ExtensionType",
    "Extensions",
    "HandshakeFragment",
    "HandshakeType",
    "HelloVerifyRequest",
    "NewSessionTicket",
    "Reader",
    "ServerHello",
    "decode_certificate",
    "decode_certificate_request",
    "decode_client_hello",
    "decode_client_hello_prefix",
    "decode_handshake_fragment",
    "decode_hello_verify_request",
    "decode_new_session_ticket",
    "decode_server_hello",
    "encode_certificate",
    "encode_certificate_request",
    "encode_client_hello",
    "encode_extension_block",
    "encode_handshake",
    "encode_hello_verify_request",
    "encode_new_session_ticket",
    "encode_server_hello",
    "encode_handshake_fragment",
    "encode_vector",
    "fragment_handshake",
    "message_name",
    "read_extension_block",
    "uint16_values",
]

HANDSHAKE_HEADER_BYTES = 12
_HANDSHAKE_HEADER = struct.Struct("!B3sH3s3s")


class HandshakeType(IntEnum):
    """Handshake message type (RFC 5246 7.4, RFC 6347 4.3.2)."""

    hello_request = 0
    client_hello = 1
    server_hello = 2
    hello_verify_request = 3
    new_session_ticket = 4
    certificate = 11
    server_key_exchange = 12
    certificate_request = 13
    server_hello_done = 14
    certificate_verify = 15
    client_key_exchange = 16
    finished = 20


class ExtensionType(IntEnum):
    """Hello extensions we understand."""

    server_name = 0
    supported_groups = 10
    ec_point_formats = 11
    signature_algorithms = 13
    use_srtp = 14
    application_layer_protocol_negotiation = 16
    encrypt_then_mac = 22
    extended_master_secret = 23
    session_ticket = 35
    connection_id = 54
    renegotiation_info = 0xFF01


class Reader:
    """Bounds-checked big-endian reader over untrusted bytes."""

    __slots__ = ("_data", "_offset")

    def __init__(self, data: bytes) -> None:
        self._data = data
        self._offset = 0

    def remaining(self) -> int:
        """Bytes not yet consumed."""
        return len(self._data) - self._offset

    def take(self, length: int) -> bytes:
        """Consume exactly ``length`` bytes."""
        end = self._offset + length
        if length < 0 or end > len(self._data):
            raise DecodeError("message truncated")
        chunk = self._data[self._offset : end]
        self._offset = end
        return chunk

    def uint(self, width: int) -> int:
        """Consume an unsigned big-endian integer of ``width`` bytes."""
        return int.from_bytes(self.take(width), "big")

    def vector(self, length_width: int, minimum: int = 0, maximum: int | None = None) -> bytes:
        """Consume a length-prefixed opaque vector, checking its bounds."""
        length = self.uint(length_width)
        if length < minimum or (maximum is not None and length > maximum):
            raise DecodeError("vector length out of bounds")
        return self.take(length)

    def finish(self) -> None:
        """Require that everything was consumed."""
        if self._offset != len(self._data):
            raise DecodeError("trailing bytes in message")


def encode_vector(length_width: int, body: bytes) -> bytes:
    """``opaque body<..2^(8*length_width)-1>``: the length, big-endian, then the bytes."""
    return len(body).to_bytes(length_width, "big") + body


# --- handshake framing --------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class HandshakeFragment:
    """One handshake fragment as carried in a record (RFC 6347 4.2.2)."""

    msg_type: int
    length: int
    message_seq: int
    fragment_offset: int
    body: bytes


#: Handshake types only DTLS 1.3 has (``messages13.HandshakeType13`` has them all).
_DTLS13_ONLY_NAMES = {
    5: "end_of_early_data",
    8: "encrypted_extensions",
    9: "request_connection_id",
    10: "new_connection_id",
    24: "key_update",
    254: "message_hash",
}


def message_name(msg_type: int) -> str:
    """A handshake type's name for messages to people (``server_hello``), 1.2 or 1.3."""
    try:
        return HandshakeType(msg_type).name
    except ValueError:
        return _DTLS13_ONLY_NAMES.get(msg_type, f"handshake message {msg_type}")


def encode_handshake(msg_type: int, message_seq: int, body: bytes) -> bytes:
    """A whole (unfragmented) handshake message; this form enters the transcript."""
    length = len(body).to_bytes(3, "big")
    return _HANDSHAKE_HEADER.pack(msg_type, length, message_seq, b"\0\0\0", length) + body


def encode_handshake_fragment(
    msg_type: int, length: int, message_seq: int, fragment_offset: int, chunk: bytes
) -> bytes:
    """One fragment (header + ``chunk``) of a message whose body is ``length`` bytes."""
    return (
        _HANDSHAKE_HEADER.pack(
            msg_type,
            length.to_bytes(3, "big"),
            message_seq,
            fragment_offset.to_bytes(3, "big"),
            len(chunk).to_bytes(3, "big"),
        )
        + chunk
    )


def fragment_handshake(message: bytes, max_fragment_body: int) -> list[bytes]:
    """Cut an encoded whole message into fragments whose bodies fit ``max_fragment_body``."""
    msg_type, length_bytes, message_seq, _, _ = _HANDSHAKE_HEADER.unpack_from(message)
    body = message[HANDSHAKE_HEADER_BYTES:]
    if len(body) <= max_fragment_body:
        return [message]
    fragments = []
    for offset in range(0, len(body), max_fragment_body):
        chunk = body[offset : offset + max_fragment_body]
        fragments.append(
            _HANDSHAKE_HEADER.pack(
                msg_type,
                length_bytes,
                message_seq,
                offset.to_bytes(3, "big"),
                len(chunk).to_bytes(3, "big"),
            )
            + chunk
        )
    return fragments


def decode_handshake_fragments(payload: bytes) -> list[HandshakeFragment]:
    """All handshake fragments of one record (a record may hold several)."""
    fragments = []
    offset = 0
    while offset < len(payload):
        fragment, consumed = decode_handshake_fragment(payload, offset)
        fragments.append(fragment)
        offset += consumed
    return fragments


def decode_handshake_fragment(payload: bytes, offset: int = 0) -> tuple[HandshakeFragment, int]:
    """Decode one fragment at ``offset``; returns it and the bytes consumed."""
    if len(payload) - offset < HANDSHAKE_HEADER_BYTES:
        raise DecodeError("handshake header truncated")
    msg_type, length_bytes, message_seq, offset_bytes, fragment_length_bytes = (
        _HANDSHAKE_HEADER.unpack_from(payload, offset)
    )
    length = int.from_bytes(length_bytes, "big")
    fragment_offset = int.from_bytes(offset_bytes, "big")
    fragment_length = int.from_bytes(fragment_length_bytes, "big")
    start = offset + HANDSHAKE_HEADER_BYTES
    if fragment_offset + fragment_length > length:
        raise DecodeError("handshake fragment beyond message length")
    if len(payload) - start < fragment_length:
        raise DecodeError("handshake fragment truncated")
    return (
        HandshakeFragment(
            msg_type=msg_type,
            length=length,
            message_seq=message_seq,
            fragment_offset=fragment_offset,
            body=payload[start : start + fragment_length],
        ),
        HANDSHAKE_HEADER_BYTES + fragment_length,
    )


# --- extensions ----------------------------------------------------------------------------

Extensions = list[tuple[int, bytes]]


def encode_extension_block(extensions: Extensions) -> bytes:
    """``Extension extensions<0..2^16-1>`` with the length always present."""
    return encode_vector(
        2, b"".join(ext.to_bytes(2, "big") + encode_vector(2, body) for ext, body in extensions)
    )


def read_extension_block(reader: Reader) -> Extensions:
    """Inverse of :func:`encode_extension_block`, from ``reader``; a repeated type is refused."""
    inner = Reader(reader.vector(2))
    extensions: Extensions = []
    seen: set[int] = set()
    while inner.remaining():
        ext_type = inner.uint(2)
        if ext_type in seen:
            raise DecodeError("duplicate extension")
        seen.add(ext_type)
        extensions.append((ext_type, inner.vector(2)))
    return extensions


def _encode_extensions(extensions: Extensions) -> bytes:
    # In the hellos the whole block is absent when there are no extensions.
    return encode_extension_block(extensions) if extensions else b""


def _decode_extensions(reader: Reader) -> Extensions:
    return read_extension_block(reader) if reader.remaining() else []


def find_extension(extensions: Extensions, ext_type: int) -> bytes | None:
    """Body of an extension, or None when absent."""
    for candidate, data in extensions:
        if candidate == ext_type:
            return data
    return None


def encode_uint16_list(values: list[int] | tuple[int, ...]) -> bytes:
    """supported_groups / signature_algorithms body."""
    return encode_vector(2, b"".join(value.to_bytes(2, "big") for value in values))


def decode_uint16_list(data: bytes) -> list[int]:
    """Inverse of :func:`encode_uint16_list`."""
    reader = Reader(data)
    inner = reader.vector(2)
    reader.finish()
    return uint16_values(inner)


def uint16_values(data: bytes) -> list[int]:
    """Big-endian 16-bit values packed back to back (a vector's contents)."""
    if len(data) % 2:
        raise DecodeError("odd length in a list of 16-bit values")
    return [int.from_bytes(data[i : i + 2], "big") for i in range(0, len(data), 2)]


def encode_alpn(protocols: list[str] | tuple[str, ...]) -> bytes:
    """ALPN body (RFC 7301 3.1)."""
    return encode_vector(2, b"".join(encode_vector(1, name.encode()) for name in protocols))


def decode_alpn(data: bytes) -> list[str]:
    """Inverse of :func:`encode_alpn`."""
    reader = Reader(data)
    inner = Reader(reader.vector(2, minimum=2))
    reader.finish()
    names = []
    while inner.remaining():
        name = inner.vector(1, minimum=1)
        try:
            names.append(name.decode())
        except UnicodeDecodeError:
            raise DecodeError("ALPN name is not UTF-8") from None
    return names


def encode_server_name(host_name: str) -> bytes:
    """SNI body with one host_name entry (RFC 6066 3)."""
    name = host_name.encode("idna") if not host_name.isascii() else host_name.encode()
    return encode_vector(2, b"\0" + encode_vector(2, name))


def decode_server_name(data: bytes) -> str | None:
    """The host_name from an SNI body (None when the list has none)."""
    reader = Reader(data)
    inner = Reader(reader.vector(2))
    reader.finish()
    while inner.remaining():
        name_type = inner.uint(1)
        name = inner.vector(2, minimum=1)
        if name_type == 0:
            try:
                return name.decode("ascii").lower()
            except UnicodeDecodeError:
                raise DecodeError("server name is not ASCII") from None
    return None


def encode_use_srtp(profiles: list[int] | tuple[int, ...], mki: bytes = b"") -> bytes:
    """use_srtp body (RFC 5764 4.1.1)."""
    return encode_uint16_list(profiles) + encode_vector(1, mki)


def decode_use_srtp(data: bytes) -> tuple[list[int], bytes]:
    """Inverse of :func:`encode_use_srtp`."""
    reader = Reader(data)
    inner = reader.vector(2, minimum=2)
    mki = reader.vector(1)
    reader.finish()
    if len(inner) % 2:
        raise DecodeError("odd SRTP profile list")
    return [int.from_bytes(inner[i : i + 2], "big") for i in range(0, len(inner), 2)], mki


def decode_opaque8(data: bytes) -> bytes:
    """Body that is a single <0..255> vector (renegotiation_info, connection_id)."""
    reader = Reader(data)
    value = reader.vector(1)
    reader.finish()
    return value


def encode_opaque8(value: bytes) -> bytes:
    """Inverse of :func:`decode_opaque8`."""
    return encode_vector(1, value)


# --- hello messages -------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class ClientHello:
    """ClientHello with the DTLS cookie field (RFC 6347 4.2.1)."""

    client_version: int
    random: bytes
    session_id: bytes
    cookie: bytes
    cipher_suites: list[int]
    compression_methods: bytes
    extensions: Extensions = field(default_factory=list)


def encode_client_hello(hello: ClientHello) -> bytes:
    """ClientHello body."""
    suites = b"".join(suite.to_bytes(2, "big") for suite in hello.cipher_suites)
    return (
        hello.client_version.to_bytes(2, "big")
        + hello.random
        + encode_vector(1, hello.session_id)
        + encode_vector(1, hello.cookie)
        + encode_vector(2, suites)
        + encode_vector(1, hello.compression_methods)
        + _encode_extensions(hello.extensions)
    )


def decode_client_hello(data: bytes) -> ClientHello:
    """Parse a ClientHello body."""
    reader = Reader(data)
    client_version = reader.uint(2)
    random = reader.take(32)
    session_id = reader.vector(1, maximum=32)
    cookie = reader.vector(1)
    suites = reader.vector(2, minimum=2)
    if len(suites) % 2:
        raise DecodeError("odd cipher suite list")
    compression_methods = reader.vector(1, minimum=1)
    extensions = _decode_extensions(reader)
    reader.finish()
    return ClientHello(
        client_version=client_version,
        random=random,
        session_id=session_id,
        cookie=cookie,
        cipher_suites=[int.from_bytes(suites[i : i + 2], "big") for i in range(0, len(suites), 2)],
        compression_methods=compression_methods,
        extensions=extensions,
    )


@dataclass(frozen=True, slots=True, kw_only=True)
class ClientHelloPrefix:
    """The leading fields of a ClientHello, up to and including the cookie.

    They sit in the first 2 + 32 + 33 + 256 bytes at most, so a stateless server
    can read them from the first fragment of a fragmented hello; they are also
    what the cookie binds (RFC 6347 4.2.1).
    """

    client_version: int
    random: bytes
    session_id: bytes
    cookie: bytes


def decode_client_hello_prefix(data: bytes) -> ClientHelloPrefix:
    """Parse the leading fields of a ClientHello body (or of its first fragment)."""
    reader = Reader(data)
    client_version = reader.uint(2)
    random = reader.take(32)
    session_id = reader.vector(1, maximum=32)
    cookie = reader.vector(1)
    return ClientHelloPrefix(
        client_version=client_version, random=random, session_id=session_id, cookie=cookie
    )


@dataclass(frozen=True, slots=True, kw_only=True)
class HelloVerifyRequest:
    """The server's cookie challenge (RFC 6347 4.2.1)."""

    server_version: int
    cookie: bytes


def encode_hello_verify_request(message: HelloVerifyRequest) -> bytes:
    """HelloVerifyRequest body."""
    return message.server_version.to_bytes(2, "big") + encode_vector(1, message.cookie)


def decode_hello_verify_request(data: bytes) -> HelloVerifyRequest:
    """Parse a HelloVerifyRequest body."""
    reader = Reader(data)
    version = reader.uint(2)
    cookie = reader.vector(1)
    reader.finish()
    return HelloVerifyRequest(server_version=version, cookie=cookie)


@dataclass(frozen=True, slots=True, kw_only=True)
class ServerHello:
    """ServerHello."""

    server_version: int
    random: bytes
    session_id: bytes
    cipher_suite: int
    compression_method: int
    extensions: Extensions = field(default_factory=list)


def encode_server_hello(hello: ServerHello) -> bytes:
    """ServerHello body."""
    return (
        hello.server_version.to_bytes(2, "big")
        + hello.random
        + encode_vector(1, hello.session_id)
        + hello.cipher_suite.to_bytes(2, "big")
        + bytes((hello.compression_method,))
        + _encode_extensions(hello.extensions)
    )


def decode_server_hello(data: bytes) -> ServerHello:
    """Parse a ServerHello body."""
    reader = Reader(data)
    version = reader.uint(2)
    random = reader.take(32)
    session_id = reader.vector(1, maximum=32)
    suite = reader.uint(2)
    compression = reader.uint(1)
    extensions = _decode_extensions(reader)
    reader.finish()
    return ServerHello(
        server_version=version,
        random=random,
        session_id=session_id,
        cipher_suite=suite,
        compression_method=compression,
        extensions=extensions,
    )


# --- certificates and friends ----------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class Certificate:
    """Certificate message: DER certificates, leaf first."""

    certificates: list[bytes]


def encode_certificate(message: Certificate) -> bytes:
    """Certificate body."""
    return encode_vector(3, b"".join(encode_vector(3, der) for der in message.certificates))


def decode_certificate(data: bytes) -> Certificate:
    """Parse a Certificate body."""
    reader = Reader(data)
    inner = Reader(reader.vector(3))
    reader.finish()
    certificates = []
    while inner.remaining():
        certificates.append(inner.vector(3, minimum=1))
    return Certificate(certificates=certificates)


@dataclass(frozen=True, slots=True, kw_only=True)
class CertificateRequest:
    """TLS 1.2 CertificateRequest (RFC 5246 7.4.4)."""

    certificate_types: bytes
    signature_schemes: list[int]
    authorities: list[bytes]


def encode_certificate_request(message: CertificateRequest) -> bytes:
    """CertificateRequest body."""
    return (
        encode_vector(1, message.certificate_types)
        + encode_uint16_list(message.signature_schemes)
        + encode_vector(2, b"".join(encode_vector(2, name) for name in message.authorities))
    )


def decode_certificate_request(data: bytes) -> CertificateRequest:
    """Parse a CertificateRequest body."""
    reader = Reader(data)
    types = reader.vector(1, minimum=1)
    schemes_raw = reader.vector(2, minimum=2)
    if len(schemes_raw) % 2:
        raise DecodeError("odd signature scheme list")
    authorities_reader = Reader(reader.vector(2))
    reader.finish()
    authorities = []
    while authorities_reader.remaining():
        authorities.append(authorities_reader.vector(2, minimum=1))
    return CertificateRequest(
        certificate_types=types,
        signature_schemes=[
            int.from_bytes(schemes_raw[i : i + 2], "big") for i in range(0, len(schemes_raw), 2)
        ],
        authorities=authorities,
    )


@dataclass(frozen=True, slots=True, kw_only=True)
class NewSessionTicket:
    """RFC 5077 3.3 NewSessionTicket."""

    lifetime_hint_seconds: int
    ticket: bytes


def encode_new_session_ticket(message: NewSessionTicket) -> bytes:
    """NewSessionTicket body."""
    return message.lifetime_hint_seconds.to_bytes(4, "big") + encode_vector(2, message.ticket)


def decode_new_session_ticket(data: bytes) -> NewSessionTicket:
    """Parse a NewSessionTicket body."""
    reader = Reader(data)
    hint = reader.uint(4)
    ticket = reader.vector(2)
    reader.finish()
    return NewSessionTicket(lifetime_hint_seconds=hint, ticket=ticket)
