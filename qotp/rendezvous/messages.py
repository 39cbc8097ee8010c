"""Rendezvous messages: a small binary codec that shares a UDP socket with QOTP.

Pure functions.  Every rendezvous datagram starts with :data:`MAGIC`
(``b"QRV1"``); its first byte, 0x51, has a non-zero version field in QOTP's
type byte, so no QOTP packet can start that way, and one socket carries both:
the peer's socket talks to the rendezvous, punches holes and then carries the
QOTP connection, which is what keeps the NAT mapping the rendezvous saw.

Layouts after the magic and a one-byte :class:`Kind` (integers big-endian,
addresses as family 4|6, the IP bytes, a u16 port; names as a u8 length and
UTF-8)::

    REGISTER     key[32] cookie[16] proof[32] name
    CHALLENGE    server_key[32] cookie[16]
    REGISTERED   observed_address keepalive_s:u16
    CONNECT      request:u32 name
    INTRODUCE    token[16] dialer:u8 key[32] address name
    INTRO_ACK    token[16]
    ERROR        request:u32 code:u8 text
    PUNCH        token[16]
    PUNCH_ACK    token[16]
    RELAY_BIND   token[16] connection_id:u64
    RELAY_BOUND  token[16] connection_id:u64

:func:`decode_message` raises only :class:`RendezvousDecodeError`.
"""

from __future__ import annotations

import ipaddress
import struct
from dataclasses import dataclass
from enum import IntEnum

from qotp.errors import DecodeError
from qotp.protection import Address

__all__ = [
    "ChallengeMessage",
    "ConnectMessage",
    "ErrorCode",
    "ErrorMessage",
    "IntroAckMessage",
    "IntroduceMessage",
    "Kind",
    "MAGIC",
    "MAX_NAME_BYTES",
    "PunchAckMessage",
    "PunchMessage",
    "RegisterMessage",
    "RegisteredMessage",
    "RelayBindMessage",
    "RelayBoundMessage",
    "RendezvousDecodeError",
    "RendezvousMessage",
    "TOKEN_BYTES",
    "check_name",
    "decode_message",
    "encode_message",
    "is_rendezvous_datagram",
]

MAGIC = b"QRV1"
TOKEN_BYTES = 16
COOKIE_BYTES = 16
KEY_BYTES = 32
PROOF_BYTES = 32
MAX_NAME_BYTES = 64
MAX_TEXT_BYTES = 200

_U16 = struct.Struct(">H")
_U32 = struct.Struct(">I")
_U64 = struct.Struct(">Q")


class RendezvousDecodeError(DecodeError, ValueError):
    """Bytes that are not a well-formed rendezvous message (a :class:`qotp.errors.DecodeError`)."""


class Kind(IntEnum):
    """The message type byte after the magic."""

    REGISTER = 1
    CHALLENGE = 2
    REGISTERED = 3
    CONNECT = 4
    INTRODUCE = 5
    INTRO_ACK = 6
    ERROR = 7
    PUNCH = 8
    PUNCH_ACK = 9
    RELAY_BIND = 10
    RELAY_BOUND = 11


class ErrorCode(IntEnum):
    """Why the rendezvous refused a request."""

    UNKNOWN_PEER = 1
    NAME_TAKEN = 2
    NOT_REGISTERED = 3
    RELAY_REFUSED = 4
    BAD_REQUEST = 5


@dataclass(frozen=True, slots=True, kw_only=True)
class RegisterMessage:
    """Peer -> server: my name and key; cookie and proof once challenged (else zeros)."""

    name: str
    public_key: bytes
    cookie: bytes = bytes(COOKIE_BYTES)
    proof: bytes = bytes(PROOF_BYTES)


@dataclass(frozen=True, slots=True, kw_only=True)
class ChallengeMessage:
    """Server -> peer: prove your address (echo the cookie) and your key (the proof)."""

    server_key: bytes
    cookie: bytes


@dataclass(frozen=True, slots=True, kw_only=True)
class RegisteredMessage:
    """Server -> peer: registered; this is the address you appear from."""

    observed_address: Address
    keepalive_s: int


@dataclass(frozen=True, slots=True, kw_only=True)
class ConnectMessage:
    """Peer -> server: introduce me to the peer of this name."""

    request: int
    name: str


@dataclass(frozen=True, slots=True, kw_only=True)
class IntroduceMessage:
    """Server -> both peers: who the other is, where it appears from, who dials."""

    token: bytes
    dialer: bool
    public_key: bytes
    address: Address
    name: str


@dataclass(frozen=True, slots=True, kw_only=True)
class IntroAckMessage:
    """Peer -> server: the introduction arrived."""

    token: bytes


@dataclass(frozen=True, slots=True, kw_only=True)
class ErrorMessage:
    """Server -> peer: a request was refused."""

    request: int
    code: ErrorCode
    text: str


@dataclass(frozen=True, slots=True, kw_only=True)
class PunchMessage:
    """Peer -> peer, directly: opens our NAT's mapping towards the other."""

    token: bytes


@dataclass(frozen=True, slots=True, kw_only=True)
class PunchAckMessage:
    """Peer -> peer, directly: your punch came through."""

    token: bytes


@dataclass(frozen=True, slots=True, kw_only=True)
class RelayBindMessage:
    """Peer -> server: relay this QOTP connection id between the introduced pair."""

    token: bytes
    connection_id: int


@dataclass(frozen=True, slots=True, kw_only=True)
class RelayBoundMessage:
    """Server -> peer: the relay forwards that connection id now."""

    token: bytes
    connection_id: int


RendezvousMessage = (
    RegisterMessage
    | ChallengeMessage
    | RegisteredMessage
    | ConnectMessage
    | IntroduceMessage
    | IntroAckMessage
    | ErrorMessage
    | PunchMessage
    | PunchAckMessage
    | RelayBindMessage
    | RelayBoundMessage
)


def is_rendezvous_datagram(data: bytes) -> bool:
    """Whether a datagram is ours (not QOTP): it starts with the magic."""
    return data[:4] == MAGIC


def check_name(name: str) -> str:
    """A peer name: 1 to 64 bytes of UTF-8, printable, no spaces at either end."""
    encoded = name.encode("utf-8", "surrogatepass")
    if not 1 <= len(encoded) <= MAX_NAME_BYTES:
        raise ValueError(f"a name is 1 to {MAX_NAME_BYTES} bytes of UTF-8")
    if not name.isprintable() or name != name.strip():
        raise ValueError("a name is printable, without spaces at either end")
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError("a name is valid UTF-8") from None
    return name


def _encode_text(text: str, limit: int) -> bytes:
    raw = text.encode("utf-8")[:limit]
    return bytes([len(raw)]) + raw


def _encode_address(address: Address) -> bytes:
    ip = ipaddress.ip_address(address[0])
    return bytes([ip.version]) + ip.packed + _U16.pack(address[1])


def encode_message(message: RendezvousMessage) -> bytes:
    """The datagram for a message."""
    if isinstance(message, RegisterMessage):
        body = message.public_key + message.cookie + message.proof
        body += _encode_text(message.name, MAX_NAME_BYTES)
        kind = Kind.REGISTER
    elif isinstance(message, ChallengeMessage):
        kind, body = Kind.CHALLENGE, message.server_key + message.cookie
    elif isinstance(message, RegisteredMessage):
        kind = Kind.REGISTERED
        body = _encode_address(message.observed_address) + _U16.pack(message.keepalive_s)
    elif isinstance(message, ConnectMessage):
        kind = Kind.CONNECT
        body = _U32.pack(message.request) + _encode_text(message.name, MAX_NAME_BYTES)
    elif isinstance(message, IntroduceMessage):
        kind = Kind.INTRODUCE
        body = message.token + bytes([message.dialer]) + message.public_key
        body += _encode_address(message.address) + _encode_text(message.name, MAX_NAME_BYTES)
    elif isinstance(message, IntroAckMessage):
        kind, body = Kind.INTRO_ACK, message.token
    elif isinstance(message, ErrorMessage):
        kind = Kind.ERROR
        body = _U32.pack(message.request) + bytes([message.code])
        body += _encode_text(message.text, MAX_TEXT_BYTES)
    elif isinstance(message, PunchMessage):
        kind, body = Kind.PUNCH, message.token
    elif isinstance(message, PunchAckMessage):
        kind, body = Kind.PUNCH_ACK, message.token
    elif isinstance(message, RelayBindMessage):
        kind, body = Kind.RELAY_BIND, message.token + _U64.pack(message.connection_id)
    else:
        kind, body = Kind.RELAY_BOUND, message.token + _U64.pack(message.connection_id)
    return MAGIC + bytes([kind]) + body


class _Reader:
    """Bounds-checked reads over a message body."""

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.offset = 0

    def take(self, size: int) -> bytes:
        end = self.offset + size
        if end > len(self.data):
            raise RendezvousDecodeError("message truncated")
        chunk = self.data[self.offset : end]
        self.offset = end
        return chunk

    def u8(self) -> int:
        return self.take(1)[0]

    def u16(self) -> int:
        return int(_U16.unpack(self.take(2))[0])

    def u32(self) -> int:
        return int(_U32.unpack(self.take(4))[0])

    def u64(self) -> int:
        return int(_U64.unpack(self.take(8))[0])

    def text(self, limit: int) -> str:
        length = self.u8()
        if length > limit:
            raise RendezvousDecodeError("text too long")
        try:
            return self.take(length).decode("utf-8")
        except UnicodeDecodeError:
            raise RendezvousDecodeError("text is not UTF-8") from None

    def name(self) -> str:
        try:
            return check_name(self.text(MAX_NAME_BYTES))
        except ValueError as error:
            raise RendezvousDecodeError(str(error)) from None

    def address(self) -> Address:
        family = self.u8()
        if family == 4:
            host = str(ipaddress.IPv4Address(self.take(4)))
        elif family == 6:
            host = str(ipaddress.IPv6Address(self.take(16)))
        else:
            raise RendezvousDecodeError("unknown address family")
        return (host, self.u16())

    def end(self) -> None:
        if self.offset != len(self.data):
            raise RendezvousDecodeError("trailing bytes")


def decode_message(data: bytes) -> RendezvousMessage:
    """Parse a rendezvous datagram; raises only :class:`RendezvousDecodeError`."""
    if len(data) < 5 or data[:4] != MAGIC:
        raise RendezvousDecodeError("not a rendezvous message")
    try:
        kind = Kind(data[4])
    except ValueError:
        raise RendezvousDecodeError(f"unknown message kind {data[4]}") from None
    reader = _Reader(data[5:])
    message: RendezvousMessage
    if kind is Kind.REGISTER:
        key, cookie, proof = reader.take(KEY_BYTES), reader.take(COOKIE_BYTES), reader.take(32)
        message = RegisterMessage(name=reader.name(), public_key=key, cookie=cookie, proof=proof)
    elif kind is Kind.CHALLENGE:
        message = ChallengeMessage(server_key=reader.take(KEY_BYTES), cookie=reader.take(16))
    elif kind is Kind.REGISTERED:
        message = RegisteredMessage(observed_address=reader.address(), keepalive_s=reader.u16())
    elif kind is Kind.CONNECT:
        message = ConnectMessage(request=reader.u32(), name=reader.name())
    elif kind is Kind.INTRODUCE:
        token, dialer = reader.take(TOKEN_BYTES), reader.u8()
        if dialer > 1:
            raise RendezvousDecodeError("dialer flag must be 0 or 1")
        key, address = reader.take(KEY_BYTES), reader.address()
        message = IntroduceMessage(
            token=token, dialer=bool(dialer), public_key=key, address=address, name=reader.name()
        )
    elif kind is Kind.INTRO_ACK:
        message = IntroAckMessage(token=reader.take(TOKEN_BYTES))
    elif kind is Kind.ERROR:
        request, raw_code = reader.u32(), reader.u8()
        try:
            code = ErrorCode(raw_code)
        except ValueError:
            raise RendezvousDecodeError(f"unknown error code {raw_code}") from None
        message = ErrorMessage(request=request, code=code, text=reader.text(MAX_TEXT_BYTES))
    elif kind is Kind.PUNCH:
        message = PunchMessage(token=reader.take(TOKEN_BYTES))
    elif kind is Kind.PUNCH_ACK:
        message = PunchAckMessage(token=reader.take(TOKEN_BYTES))
    elif kind is Kind.RELAY_BIND:
        message = RelayBindMessage(token=reader.take(TOKEN_BYTES), connection_id=reader.u64())
    else:
        message = RelayBoundMessage(token=reader.take(TOKEN_BYTES), connection_id=reader.u64())
    reader.end()
    return message
