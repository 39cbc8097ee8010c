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
import os
from collections import Counter
from enum import Enum

from qotp.config import QotpConfiguration, ZeroRttPolicy
from qotp.envelope import (
    DEFAULT_MTU,
    MAX_SEQUENCE_NUMBER,
    MIN_PACKET_SIZE,
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
from qotp.errors import (
    DecodeError,
    DecryptError,
    EarlyDataError,
    LateFirstPacketError,
    LocalProtocolError,
    ReplayedPacketError,
    ZeroRttReplayError,
)
from qotp.handshakes import HandshakeTable, PendingHandshake, RecentIds
from qotp.keys import KeyPair, x25519, x25519_public_key
from qotp.payload import (
    Ack,
    Payload,
    PayloadKind,
    decode_payload,
    decode_receive_window,
    encode_payload,
    encode_receive_window,
)
from qotp.protection import Address, EarlyPayload, FirstPacket, Protection
from qotp.replay import ReplayWindow, StrikeRegister, packet_number

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

KNOWN_PEERS_REMEMBERED = 16_384
"""Initiator identities remembered per generation (two generations) for overload priority."""

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
        "_accepts_early",
        "_cipher",
        "_counter",
        "_data_header",
        "_early",
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
        "_proven_address",
        "_sealed_anything",
        "_receive_epoch",
        "_replay",
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
        ephemeral: KeyPair | None,
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
        #: Sequence numbers of the peer already accepted (qotp.replay).
        self._replay = ReplayWindow()
        self._cipher: PacketCipher | None = None
        self._init_cipher: PacketCipher | None = None
        self._data_header = data_header(connection_id)
        self._handshake_complete = False
        self._failure: str | None = None
        self._sealed_anything = False
        self._hello_sends = 0
        self._hello_deadline: int | None = None
        self._first_payload: bytes | None = None
        self._early: EarlyPayload | None = None
        #: A responder that took a 0-RTT first packet at once (ZeroRttPolicy.ACCEPT).
        self._accepts_early = False
        self._proven_address: Address | None = None
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

    @property
    def proven_address(self) -> Address | None:
        """See :attr:`qotp.protection.Protection.proven_address` (set by the crypto layer)."""
        return self._proven_address

    @property
    def early_data_replayable(self) -> bool:
        """A responder under ZeroRttPolicy.ACCEPT, before the initiator's first Data packet."""
        return self._accepts_early and not self._handshake_complete

    def take_early_payload(self) -> EarlyPayload | None:
        """The 0-RTT payload a completed handshake held back (ZeroRttPolicy.DEFER), once."""
        early, self._early = self._early, None
        return early

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
        assert self._ephemeral is not None  # only a promoted responder has none, and sends Data
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
            replay = self._replay
            number = (opened[1] << 48) | opened[0]
            if number == replay.highest + 1:
                replay.highest = number  # in order: the window's fast path, inlined
            elif not replay.accept(number):
                raise ReplayedPacketError(f"packet {opened[1]}:{opened[0]} was accepted before")
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
            self._check_replay(opened)
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
                assert self._ephemeral is not None
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
            self._check_replay(opened)
            self._handshake_complete = True
            self._hello_deadline = None
            return opened.payload
        raise DecodeError(f"an initiator does not accept {message_type.name}")

    def _check_replay(self, opened: OpenedPacket) -> None:
        """Drop an authentic packet whose number was accepted before (qotp.replay)."""
        if not self._replay.accept(packet_number(opened.sequence_number, opened.epoch)):
            raise ReplayedPacketError(
                f"packet {opened.epoch}:{opened.sequence_number} was accepted before"
            )

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
        if message_type is MessageType.INIT_SND:
            # Unauthenticated, and answered already: the handshake completed on the
            # initiator's Data packet (a late copy, or anyone's replay).
            raise LateFirstPacketError("InitSnd for a connection whose handshake completed")
        if message_type is MessageType.INIT_CRYPTO_SND and self.zero_rtt:
            assert self._init_cipher is not None
            opened = open_packet(datagram, header, self._init_cipher)
            self._check_replay(opened)
            return opened.payload
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
        assert self._ephemeral is not None
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
    """Per-endpoint native crypto: routes by connection id, answers and completes handshakes.

    Responder handshakes wait in a bounded table until the initiator's first Data
    packet (:mod:`qotp.handshakes`); first packets are answered without making a
    connection, through :meth:`datagrams_to_send`.
    """

    __slots__ = (
        "_outgoing",
        "_reply_window",
        "_strikes",
        "configuration",
        "known_peers",
        "handshakes",
        "identity",
        "mtu",
        "statistics",
    )

    def __init__(
        self,
        identity: KeyPair,
        *,
        mtu: int = DEFAULT_MTU,
        configuration: QotpConfiguration | None = None,
    ) -> None:
        config = configuration or QotpConfiguration(mtu=mtu)
        self.identity = identity
        self.mtu = mtu
        self.configuration = config
        self.handshakes = HandshakeTable(
            max_entries=config.max_pending_handshakes,
            max_bytes=config.max_pending_handshake_bytes,
        )
        """Responder handshakes in progress (qotp.handshakes)."""
        self.statistics: Counter[str] = Counter()
        """Handshakes started, first packets answered again, handshakes completed."""
        self.known_peers = RecentIds(KNOWN_PEERS_REMEMBERED)
        """Identity keys (their first 8 bytes) of initiators that completed a handshake."""
        self._strikes: StrikeRegister | None = None
        self._outgoing: list[tuple[bytes, Address]] = []
        # Our receive window as the reply's ACK advertises it (the whole buffer is free).
        self._reply_window = decode_receive_window(
            encode_receive_window(config.receive_buffer_bytes)
        )

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
        if (datagram[:1] == b"\x00" or datagram[:1] == b"\x40") and len(datagram) >= self.mtu:
            # InitSnd / InitCryptoSnd (version 0), the flood's shape: the connection id
            # is the ephemeral key's first 8 bytes; accept() parses the rest.
            return int.from_bytes(datagram[1:9], "little")
        return int(decode_envelope_header(datagram, mtu=self.mtu).connection_id)

    def classify(self, datagram: bytes, connection_id: int | None, now: int) -> FirstPacket:
        """A first packet of an unknown handshake is costly; its repeats and completion are not."""
        if connection_id is None or len(datagram) < MIN_PACKET_SIZE:
            return FirstPacket.NONE
        message_type = datagram[0] >> 5
        if message_type == MessageType.DATA:
            return (
                FirstPacket.CONTINUATION if connection_id in self.handshakes else FirstPacket.NONE
            )
        if message_type == MessageType.INIT_SND or message_type == MessageType.INIT_CRYPTO_SND:
            if connection_id in self.handshakes or len(datagram) < self.mtu:
                return FirstPacket.CONTINUATION  # answered from the table, or refused cheaply
            if int.from_bytes(datagram[33:41], "little") in self.known_peers:
                return FirstPacket.NEW_HANDSHAKE_KNOWN_PEER
            return FirstPacket.NEW_HANDSHAKE
        return FirstPacket.NONE

    def dial(
        self, address: Address, *, now: int, peer_identity: bytes | None = None
    ) -> NativeProtection:
        """A new initiator-side protection: in-band, or 0-RTT with the peer's public key."""
        return NativeProtection.dial(
            self.identity, peer_public_key=peer_identity, mtu=self.mtu, now=now
        )

    def datagrams_to_send(self, now: int) -> list[tuple[bytes, Address]]:
        """Replies to first packets (InitRcv / InitCryptoRcv), made without a connection."""
        outgoing, self._outgoing = self._outgoing, []
        return outgoing

    def forget(self, protection: Protection) -> None:
        """Nothing to forget: routing needs no table."""

    def accept(self, datagram: bytes, address: Address, now: int) -> NativeProtection | None:
        """Answer a first packet, or complete a handshake in progress.

        * InitSnd, or an InitCryptoSnd that authenticates under our identity key and
          carries a valid payload: a handshake in progress is kept and the reply
          queued; no connection yet (None).  A repeat is answered with the same
          reply.
        * The initiator's first Data packet, authentic under the session key: the
          handshake completed; the responder protection is returned (its first
          :meth:`NativeProtection.open` yields this packet's payload).
        * Under ZeroRttPolicy.ACCEPT an InitCryptoSnd makes the protection at once.

        Nothing is kept for anything else (None), nor for a forged or replayed
        first packet (:class:`DecryptError`, :class:`ZeroRttReplayError`).
        """
        header = decode_envelope_header(datagram, mtu=self.mtu)
        message_type = header.message_type
        connection_id = header.connection_id
        if message_type is MessageType.DATA:
            pending = self.handshakes.get(connection_id, now)
            if pending is None:
                return None
            return self._complete(pending, datagram, header, address)
        if (
            message_type is not MessageType.INIT_SND
            and message_type is not MessageType.INIT_CRYPTO_SND
        ):
            return None
        pending = self.handshakes.get(connection_id, now)
        if pending is not None:
            if header.ephemeral_public_key != pending.initiator_ephemeral:
                raise DecryptError("first packet with another key under a pending connection id")
            if (message_type is MessageType.INIT_CRYPTO_SND) != (pending.init_secret is not None):
                raise DecodeError(f"{message_type.name} repeats a handshake of the other kind")
            # The initiator repeats its first packet: our reply was lost or is late.
            pending.replied_to(address)
            self._outgoing.append((pending.reply, address))
            self.statistics["first packets answered again"] += 1
            return None
        if message_type is MessageType.INIT_SND:
            self._start(header, address, now)
            return None
        return self._start_zero_rtt(datagram, header, address, now)

    # -- handshakes in progress ---------------------------------------------------

    def _start(
        self,
        header: EnvelopeHeader,
        address: Address,
        now: int,
        *,
        init_secret: bytes | None = None,
        early: Payload | None = None,
        early_payload: bytes | None = None,
        early_number: int = -1,
    ) -> None:
        """Keep a handshake in progress and queue its reply (one key generation and exchange)."""
        initiator_ephemeral = header.ephemeral_public_key
        assert initiator_ephemeral is not None and header.identity_public_key is not None
        responder_private = os.urandom(32)
        secret = x25519(responder_private, initiator_ephemeral)
        responder_public = x25519_public_key(responder_private)
        # The reply acknowledges the first packet (InitSnd reads as a PING on stream 0
        # at offset 0) and carries a PING, so that the initiator answers at once with
        # the Data packet that completes the handshake.
        if early is None:
            ack: Ack | None = Ack(0, 0, 0, self._reply_window)
        elif early.kind is PayloadKind.ACK_ONLY or early_payload is None:
            ack = None  # nothing to acknowledge, or the data is refused
        else:
            ack = Ack(early.stream_id, early.stream_offset, len(early.data), self._reply_window)
        payload = encode_payload(Payload(PayloadKind.PING, 0, 0, b"", ack, False))
        cipher = PacketCipher(secret)
        connection_id = header.connection_id
        if init_secret is None:
            reply = seal_init_rcv(
                cipher,
                connection_id=connection_id,
                ephemeral_public_key=responder_public,
                identity_public_key=self.identity.public_key,
                sequence_number=0,
                epoch=0,
                payload=payload,
            )
        else:
            reply = seal_init_crypto_rcv(
                cipher,
                connection_id=connection_id,
                ephemeral_public_key=responder_public,
                sequence_number=0,
                epoch=0,
                payload=payload,
            )
        self.handshakes.add(
            PendingHandshake(
                connection_id=connection_id,
                initiator_ephemeral=initiator_ephemeral,
                initiator_identity=header.identity_public_key,
                responder_ephemeral_private=responder_private,
                secret=secret,
                reply=reply,
                address=address,
                now=now,
                init_secret=init_secret,
                early_payload=early_payload,
                early_number=early_number,
            ),
            now,
        )
        self._outgoing.append((reply, address))
        self.statistics["handshakes started"] += 1

    def _start_zero_rtt(
        self, datagram: bytes, header: EnvelopeHeader, address: Address, now: int
    ) -> NativeProtection | None:
        """An InitCryptoSnd: refuse a replay, open it under our identity key, check its payload."""
        initiator_ephemeral = header.ephemeral_public_key
        assert initiator_ephemeral is not None
        strikes = self._strikes
        if strikes is None:
            strikes = self._strikes = StrikeRegister(now)
        if strikes.seen(initiator_ephemeral, now):
            raise ZeroRttReplayError("0-RTT first packet seen before (strike register)")
        init_secret = x25519(self.identity.private_bytes, initiator_ephemeral)
        opened = open_packet(datagram, header, PacketCipher(init_secret))
        try:
            early = decode_payload(opened.payload)
        except DecodeError as error:
            raise EarlyDataError(f"0-RTT first packet carries a bad payload: {error}") from error
        strikes.add(initiator_ephemeral, now)
        number = packet_number(opened.sequence_number, opened.epoch)
        policy = self.configuration.zero_rtt
        if policy is ZeroRttPolicy.ACCEPT:
            return self._accept_at_once(header, init_secret, opened.payload, number)
        keep = policy is ZeroRttPolicy.DEFER
        self._start(
            header,
            address,
            now,
            init_secret=init_secret,
            early=early,
            early_payload=opened.payload if keep else None,
            early_number=number,
        )
        return None

    def _accept_at_once(
        self, header: EnvelopeHeader, init_secret: bytes, payload: bytes, number: int
    ) -> NativeProtection:
        """ZeroRttPolicy.ACCEPT: the connection starts on the 0-RTT first packet itself."""
        initiator_ephemeral = header.ephemeral_public_key
        assert initiator_ephemeral is not None
        ephemeral = KeyPair.generate()
        protection = NativeProtection(
            role=Role.RESPONDER,
            identity=self.identity,
            ephemeral=ephemeral,
            connection_id=header.connection_id,
            mtu=self.mtu,
            zero_rtt=True,
            peer_identity_public_key=header.identity_public_key,
            peer_ephemeral_public_key=initiator_ephemeral,
        )
        secret = ephemeral.exchange(initiator_ephemeral)
        protection._cipher = PacketCipher(secret)
        protection._init_cipher = PacketCipher(init_secret)
        protection._first_payload = payload
        protection._replay.accept(number)
        protection._accepts_early = True
        protection._key_log.append(
            _key_log_line("QOTP_SHARED_SECRET", header.connection_id, secret)
        )
        protection._key_log.append(
            _key_log_line("QOTP_SHARED_SECRET_ID", header.connection_id, init_secret)
        )
        self.statistics["0-RTT connections accepted at once"] += 1
        return protection

    def _complete(
        self,
        pending: PendingHandshake,
        datagram: bytes,
        header: EnvelopeHeader,
        address: Address,
    ) -> NativeProtection:
        """The initiator's first Data packet: authentic under the session key, it completes."""
        cipher = PacketCipher(pending.secret)
        opened = open_packet(datagram, header, cipher, epoch=0, sent_by_initiator=True)
        connection_id = pending.connection_id
        self.handshakes.pop(connection_id)
        zero_rtt = pending.init_secret is not None
        protection = NativeProtection(
            role=Role.RESPONDER,
            identity=self.identity,
            ephemeral=None,
            connection_id=connection_id,
            mtu=self.mtu,
            zero_rtt=zero_rtt,
            peer_identity_public_key=pending.initiator_identity,
            peer_ephemeral_public_key=pending.initiator_ephemeral,
        )
        protection._cipher = cipher
        protection._counter = SequenceCounter(1)  # the reply took sequence number 0
        protection._handshake_complete = True
        protection._first_payload = opened.payload
        protection._receive_epoch = opened.epoch
        protection._replay.accept(packet_number(opened.sequence_number, opened.epoch))
        if pending.early_number >= 0:
            protection._replay.accept(pending.early_number)
        if pending.early_payload is not None:
            protection._early = EarlyPayload(pending.early_payload, replayable=False)
        # The reply went to ``pending.addresses`` and was answered: proven.  A Data
        # packet from elsewhere makes its source a candidate like any other move.
        protection._proven_address = address if address in pending.addresses else pending.address
        protection._key_log.append(
            _key_log_line("QOTP_SHARED_SECRET", connection_id, pending.secret)
        )
        if pending.init_secret is not None:
            protection._init_cipher = PacketCipher(pending.init_secret)
            protection._key_log.append(
                _key_log_line("QOTP_SHARED_SECRET_ID", connection_id, pending.init_secret)
            )
        self.known_peers.add(int.from_bytes(pending.initiator_identity[:8], "little"))
        self.statistics["handshakes completed"] += 1
        return protection
