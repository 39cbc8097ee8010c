"""QOTP's native crypto behind the seam: X25519 handshakes and the double envelope.

Go: codec.go (``Conn.encode``, ``Listener.decode``), conn.go ``msgType``.

Which envelope a packet gets depends only on the connection's role and on
whether its handshake is done *from the receiving point of view*:

============  ==========================  =====================================
role          before the handshake is      after
              done
============  ==========================  =====================================
initiator     InitSnd (in-band, no         Data (once an InitRcv or
              payload) or InitCryptoSnd    InitCryptoRcv has been opened)
              (0-RTT, carries a payload)
responder     InitRcv or InitCryptoRcv     Data (once a Data packet from the
                                           initiator has been opened)
============  ==========================  =====================================

One sequence counter serves every message type, InitSnd included.  The
in-band initiator cannot carry a transport payload until the reply arrives,
so this module sends InitSnd itself and repeats it on its own timer (200 ms,
doubling, six sends).  A 0-RTT initiator whose application has not written
anything yet likewise sends an InitCryptoSnd carrying a PING on stream 0.

The responder treats a received InitSnd as the reference does: as a PING on
stream 0 at offset 0, so its first reply acknowledges ``(0, 0, 0)``.
"""

from __future__ import annotations

import logging
from enum import Enum

from qotp.envelope import (
    DEFAULT_MTU,
    MAX_SEQUENCE_NUMBER,
    EnvelopeHeader,
    MessageType,
    OpenedPacket,
    PacketCipher,
    SequenceCounter,
    connection_id_from_public_key,
    data_connection_id,
    data_header,
    decode_envelope_header,
    encode_init_snd,
    header_size,
    open_packet,
    seal_init_crypto_rcv,
    seal_init_crypto_snd,
    seal_init_rcv,
    sealed_overhead,
)
from qotp.errors import DecodeError, DecryptError, LocalProtocolError
from qotp.keys import KeyPair
from qotp.payload import Payload, PayloadKind, encode_payload
from qotp.protection import Address, Protection

__all__ = [
    "HANDSHAKE_INITIAL_RTO_NS",
    "HANDSHAKE_MAX_SENDS",
    "NativeCryptoLayer",
    "NativeProtection",
    "Role",
]

logger = logging.getLogger(__name__)

HANDSHAKE_INITIAL_RTO_NS = 200_000_000
"""Retransmission timeout before any RTT sample (Go: the 200 ms default RTO)."""
HANDSHAKE_MAX_SENDS = 6
ZERO_RTT_HELLO_GRACE_NS = 1_000_000
"""How long a 0-RTT dial waits for data to carry before it sends a PING hello."""
"""An unanswered first packet is sent this often; then the dial fails (reference: 6)."""

_INIT_SND_AS_PING = encode_payload(Payload(PayloadKind.PING, 0, 0))
"""What the reference's responder makes of an InitSnd: a PING on stream 0 at offset 0."""
_DATA_HEADER_SIZE = header_size(MessageType.DATA)
_LAST_SEQUENCE_NUMBER = MAX_SEQUENCE_NUMBER


class Role(Enum):
    """Which side of the connection we are; it never changes."""

    INITIATOR = "initiator"
    RESPONDER = "responder"


def _key_log_line(label: str, connection_id: int, secret: bytes) -> str:
    # Go prints the u64 with %x: lowercase, no leading zeros.
    return f"{label} {connection_id:x} {secret.hex()}\n"


class NativeProtection:
    """One connection's QOTP envelope state (implements :class:`qotp.protection.Protection`)."""

    __slots__ = (
        "_cipher",
        "_counter",
        "_data_header",
        "_ephemeral",
        "_failure",
        "_first_payload",
        "_handshake_complete",
        "_hello_deadline",
        "_hello_sends",
        "_identity",
        "_init_cipher",
        "_is_initiator",
        "_key_log",
        "_mtu",
        "_sealed_anything",
        "_receive_epoch",
        "connection_id",
        "peer_ephemeral_public_key",
        "peer_identity_public_key",
        "role",
        "zero_rtt",
    )

    def __init__(
        self,
        *,
        role: Role,
        identity: KeyPair,
        ephemeral: KeyPair,
        connection_id: int,
        mtu: int,
        zero_rtt: bool,
        peer_identity_public_key: bytes | None = None,
        peer_ephemeral_public_key: bytes | None = None,
    ) -> None:
        self.role = role
        self._is_initiator = role is Role.INITIATOR
        self.zero_rtt = zero_rtt
        self.connection_id = connection_id
        self.peer_identity_public_key = peer_identity_public_key
        self.peer_ephemeral_public_key = peer_ephemeral_public_key
        self._identity = identity
        self._ephemeral = ephemeral
        self._mtu = mtu
        self._counter = SequenceCounter()
        self._receive_epoch = 0
        self._cipher: PacketCipher | None = None
        self._init_cipher: PacketCipher | None = None
        self._data_header = data_header(connection_id)
        self._handshake_complete = False
        self._failure: str | None = None
        self._sealed_anything = False
        self._hello_sends = 0
        self._hello_deadline: int | None = None
        self._first_payload: bytes | None = None
        self._key_log: list[str] = []

    # -- construction -------------------------------------------------------

    @classmethod
    def dial(
        cls,
        identity: KeyPair,
        *,
        peer_public_key: bytes | None = None,
        mtu: int = DEFAULT_MTU,
        now: int,
        ephemeral: KeyPair | None = None,
    ) -> NativeProtection:
        """The initiator: in-band when ``peer_public_key`` is None, else 0-RTT.

        A 0-RTT dial waits :data:`ZERO_RTT_HELLO_GRACE_NS` for the application's
        first bytes before sending a bare hello, so that data written right after
        the dial rides in the first packet (only one packet may precede the reply).
        """
        ephemeral = ephemeral or KeyPair.generate()
        protection = cls(
            role=Role.INITIATOR,
            identity=identity,
            ephemeral=ephemeral,
            connection_id=connection_id_from_public_key(ephemeral.public_key),
            mtu=mtu,
            zero_rtt=peer_public_key is not None,
            peer_identity_public_key=peer_public_key,
        )
        if peer_public_key is not None:
            secret = ephemeral.exchange(peer_public_key)
            protection._init_cipher = PacketCipher(secret)
            protection._key_log.append(
                _key_log_line("QOTP_SHARED_SECRET_ID", protection.connection_id, secret)
            )
        protection._hello_deadline = now + ZERO_RTT_HELLO_GRACE_NS if peer_public_key else now
        return protection

    # -- Protection interface -----------------------------------------------

    @property
    def peer_identity(self) -> bytes | None:
        """The peer's X25519 identity public key (from its first packet, or the dialed one)."""
        return self.peer_identity_public_key

    @property
    def datagrams_pending(self) -> bool:
        """Always False: the hellos leave on :meth:`get_timer`'s deadline."""
        return False

    @property
    def handshake_complete(self) -> bool:
        """Initiator: a reply was opened.  Responder: a Data packet was opened."""
        return self._handshake_complete

    @property
    def can_carry_payload(self) -> bool:
        """Only the in-band initiator must wait (InitSnd has no payload)."""
        if self.role is Role.RESPONDER or self.zero_rtt:
            return True
        return self._handshake_complete

    @property
    def failure(self) -> str | None:
        """Set when the first packet went unanswered too often."""
        return self._failure

    @property
    def closed_by_peer(self) -> bool:
        """Always False: the QOTP wire has no connection close."""
        return False

    def _next_message_type(self) -> MessageType:
        if self._handshake_complete:
            return MessageType.DATA
        if self.role is Role.INITIATOR:
            return MessageType.INIT_CRYPTO_SND if self.zero_rtt else MessageType.INIT_SND
        return MessageType.INIT_CRYPTO_RCV if self.zero_rtt else MessageType.INIT_RCV

    def payload_budget(self, mtu: int) -> int:
        """Payload bytes that fit once the next envelope's overhead is paid."""
        message_type = self._next_message_type()
        if message_type is MessageType.INIT_SND:
            return 0
        return mtu - sealed_overhead(message_type)

    def seal(self, payload: bytes, now: int) -> bytes:
        """Seal with the envelope the handshake state calls for."""
        if self._handshake_complete:  # the per-packet path: Data under the session key
            counter = self._counter
            sequence_number = counter.sequence_number
            if sequence_number < _LAST_SEQUENCE_NUMBER:
                counter.sequence_number = sequence_number + 1
                epoch = counter.epoch
            else:
                sequence_number, epoch = counter.take()
            return self._cipher.seal(  # type: ignore[union-attr]
                self._data_header, sequence_number, epoch, self._is_initiator, payload
            )
        message_type = self._next_message_type()
        sequence_number, epoch = self._counter.take()
        self._sealed_anything = True
        if message_type is MessageType.DATA:
            assert self._cipher is not None
            return self._cipher.seal(
                self._data_header,
                sequence_number,
                epoch,
                self.role is Role.INITIATOR,
                payload,
            )
        if message_type is MessageType.INIT_CRYPTO_SND:
            assert self._init_cipher is not None
            return seal_init_crypto_snd(
                self._init_cipher,
                ephemeral_public_key=self._ephemeral.public_key,
                identity_public_key=self._identity.public_key,
                sequence_number=sequence_number,
                epoch=epoch,
                payload=payload,
                mtu=self._mtu,
            )
        assert self._cipher is not None
        if message_type is MessageType.INIT_RCV:
            return seal_init_rcv(
                self._cipher,
                connection_id=self.connection_id,
                ephemeral_public_key=self._ephemeral.public_key,
                identity_public_key=self._identity.public_key,
                sequence_number=sequence_number,
                epoch=epoch,
                payload=payload,
            )
        if message_type is MessageType.INIT_CRYPTO_RCV:
            return seal_init_crypto_rcv(
                self._cipher,
                connection_id=self.connection_id,
                ephemeral_public_key=self._ephemeral.public_key,
                sequence_number=sequence_number,
                epoch=epoch,
                payload=payload,
            )
        raise LocalProtocolError("InitSnd carries no payload; wait for can_carry_payload")

    def open(self, datagram: bytes, now: int) -> bytes | None:
        """Open a datagram of this connection (any of the five types)."""
        if self._first_payload is not None:
            # The datagram that created this connection was already opened by accept().
            payload, self._first_payload = self._first_payload, None
            return payload
        cipher = self._cipher
        if cipher is not None and datagram[0] == 0x80 and len(datagram) >= 39:
            # Hot path: Data with the session key.
            opened = cipher.open(
                datagram, _DATA_HEADER_SIZE, self._receive_epoch, self.role is Role.RESPONDER
            )
            return self._accept_data(opened)
        header = decode_envelope_header(datagram, mtu=self._mtu)
        message_type = header.message_type
        if message_type is MessageType.DATA:
            if cipher is None:
                raise DecryptError("Data before the handshake")
            opened = open_packet(
                datagram,
                header,
                cipher,
                epoch=self._receive_epoch,
                sent_by_initiator=self.role is Role.RESPONDER,
            )
            return self._accept_data(opened)
        if self.role is Role.RESPONDER:
            return self._open_repeated_init(datagram, header)
        if message_type is MessageType.INIT_RCV or message_type is MessageType.INIT_CRYPTO_RCV:
            if (message_type is MessageType.INIT_CRYPTO_RCV) != self.zero_rtt:
                raise DecodeError(f"{message_type.name} does not answer this dial")
            peer_ephemeral = header.ephemeral_public_key
            assert peer_ephemeral is not None
            if cipher is None or peer_ephemeral != self.peer_ephemeral_public_key:
                if self._handshake_complete:
                    raise DecryptError("a reply with different keys after the handshake")
                cipher = PacketCipher(self._ephemeral.exchange(peer_ephemeral))
                opened = open_packet(datagram, header, cipher)
                # Authenticated: adopt the responder's keys.
                self._cipher = cipher
                self.peer_ephemeral_public_key = peer_ephemeral
                if header.identity_public_key is not None:
                    if (
                        self.peer_identity_public_key is not None
                        and self.peer_identity_public_key != header.identity_public_key
                    ):
                        raise DecryptError("responder identity differs from the one dialed")
                    self.peer_identity_public_key = header.identity_public_key
                self._key_log.append(
                    _key_log_line("QOTP_SHARED_SECRET", self.connection_id, cipher.key)
                )
            else:
                opened = open_packet(datagram, header, cipher)
            self._handshake_complete = True
            self._hello_deadline = None
            return opened.payload
        raise DecodeError(f"an initiator does not accept {message_type.name}")

    def _accept_data(self, opened: OpenedPacket) -> bytes:
        if opened.epoch > self._receive_epoch:
            self._receive_epoch = opened.epoch
        if not self._handshake_complete:
            if self.role is Role.INITIATOR:
                raise DecryptError("Data before the reply")  # unreachable: no key yet
            self._handshake_complete = True
        return opened.payload

    def _open_repeated_init(self, datagram: bytes, header: EnvelopeHeader) -> bytes:
        """The initiator repeated its first packet (our reply was lost or slow)."""
        message_type = header.message_type
        if header.ephemeral_public_key != self.peer_ephemeral_public_key:
            raise DecryptError("first packet with another key under a known connection id")
        if message_type is MessageType.INIT_SND and not self.zero_rtt:
            return _INIT_SND_AS_PING
        if message_type is MessageType.INIT_CRYPTO_SND and self.zero_rtt:
            assert self._init_cipher is not None
            return open_packet(datagram, header, self._init_cipher).payload
        raise DecodeError(f"a responder does not accept {message_type.name} here")

    def datagrams_to_send(self, now: int) -> list[bytes]:
        """The initiator's own first packet, and its repeats while unanswered."""
        deadline = self._hello_deadline
        if deadline is None or now < deadline or self._handshake_complete:
            return []
        if self.zero_rtt and self._sealed_anything and self._hello_sends == 0:
            # The transport already sent a real InitCryptoSnd and retransmits it itself.
            self._hello_deadline = None
            return []
        if self._hello_sends >= HANDSHAKE_MAX_SENDS:
            self._failure = f"no reply after {HANDSHAKE_MAX_SENDS} handshake packets"
            self._hello_deadline = None
            return []
        self._hello_sends += 1
        # 200 ms, doubling per send: sends at 0, 0.2, 0.6, 1.4, 3.0, 6.2 s; the
        # dial fails when the backoff after the sixth send also expires.
        self._hello_deadline = now + (HANDSHAKE_INITIAL_RTO_NS << (self._hello_sends - 1))
        if self.zero_rtt:
            return [self.seal(_INIT_SND_AS_PING, now)]
        self._counter.take()  # InitSnd consumes a sequence number it does not carry
        return [
            encode_init_snd(self._ephemeral.public_key, self._identity.public_key, mtu=self._mtu)
        ]

    def get_timer(self) -> int | None:
        """When the first packet must be repeated (initiator only)."""
        return None if self._handshake_complete else self._hello_deadline

    def handle_timer(self, now: int) -> None:
        """Nothing to do here: :meth:`datagrams_to_send` acts on the deadline."""

    def key_log_lines(self) -> list[str]:
        """Pending ``QOTP_SHARED_SECRET`` / ``QOTP_SHARED_SECRET_ID`` lines."""
        lines, self._key_log = self._key_log, []
        return lines


class NativeCryptoLayer:
    """Per-endpoint native crypto: routes by connection id, accepts first packets."""

    __slots__ = ("identity", "mtu")

    def __init__(self, identity: KeyPair, *, mtu: int = DEFAULT_MTU) -> None:
        self.identity = identity
        self.mtu = mtu

    @property
    def local_identity(self) -> bytes:
        """Our identity public key (what 0-RTT dialers must know)."""
        return self.identity.public_key

    def route(self, datagram: bytes, address: Address) -> int:
        """The connection id from the header (the address plays no part).

        Raises :class:`DecodeError` for undecodable datagrams.
        """
        connection_id = data_connection_id(datagram)
        if connection_id is not None:
            return connection_id
        return int(decode_envelope_header(datagram, mtu=self.mtu).connection_id)

    def dial(
        self, address: Address, *, now: int, peer_identity: bytes | None = None
    ) -> NativeProtection:
        """A new initiator-side protection: in-band, or 0-RTT with the peer's public key."""
        return NativeProtection.dial(
            self.identity, peer_public_key=peer_identity, mtu=self.mtu, now=now
        )

    def datagrams_to_send(self, now: int) -> list[tuple[bytes, Address]]:
        """Nothing: native crypto never answers without a connection."""
        return []

    def forget(self, protection: Protection) -> None:
        """Nothing to forget: routing needs no table."""

    def accept(self, datagram: bytes, address: Address, now: int) -> NativeProtection | None:
        """A responder for a valid InitSnd / authentic InitCryptoSnd, else None.

        Nothing is created for anything else (a Data packet of an unknown
        connection, a reply nobody asked for).  The InitCryptoSnd is opened
        here, before any state exists, so forged ones cost no memory.
        """
        header = decode_envelope_header(datagram, mtu=self.mtu)
        message_type = header.message_type
        if (
            message_type is not MessageType.INIT_SND
            and message_type is not MessageType.INIT_CRYPTO_SND
        ):
            return None
        initiator_ephemeral = header.ephemeral_public_key
        assert initiator_ephemeral is not None
        ephemeral = KeyPair.generate()
        zero_rtt = message_type is MessageType.INIT_CRYPTO_SND
        first_payload = _INIT_SND_AS_PING
        init_cipher = None
        if zero_rtt:
            init_cipher = PacketCipher(self.identity.exchange(initiator_ephemeral))
            first_payload = open_packet(datagram, header, init_cipher).payload
        protection = NativeProtection(
            role=Role.RESPONDER,
            identity=self.identity,
            ephemeral=ephemeral,
            connection_id=header.connection_id,
            mtu=self.mtu,
            zero_rtt=zero_rtt,
            peer_identity_public_key=header.identity_public_key,
            peer_ephemeral_public_key=initiator_ephemeral,
        )
        secret = ephemeral.exchange(initiator_ephemeral)
        protection._cipher = PacketCipher(secret)
        protection._init_cipher = init_cipher
        protection._first_payload = first_payload
        protection._key_log.append(
            _key_log_line("QOTP_SHARED_SECRET", header.connection_id, secret)
        )
        if init_cipher is not None:
            protection._key_log.append(
                _key_log_line("QOTP_SHARED_SECRET_ID", header.connection_id, init_cipher.key)
            )
        return protection
