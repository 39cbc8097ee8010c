"""Decrypting whole captures with a key log (``qotp decrypt --pcap``), and writing them back.

A capture holds UDP packets; the key log holds, per connection id, the secrets
an endpoint wrote (SPEC.md section 11.1).  For every packet this module

* splits what loopback GSO/GRO coalesced: ``tcpdump -i lo`` records a run of
  equal-sized datagrams sent with one ``sendmsg`` as one large UDP packet.  A
  QOTP datagram has no length field, so the segment size is found where the
  first datagram's header (type byte and connection id) repeats, checked by
  authenticating the first segment when its key is known;
* finds the secret by the connection id in the cleartext header;
* works out the direction: a connection's initiator is the source of its
  InitSnd / InitCryptoSnd (the destination of InitRcv / InitCryptoRcv); a
  Data packet is from the initiator when it comes from (or goes to) the
  addresses seen so; when the handshake is not in the capture, both
  directions are tried and the one that authenticates is remembered;
* follows each direction's epoch, so packets after a sequence-number
  rollover still open.

Decryption is offline and permissive: what a real receiver would drop (an
InitSnd shorter than the receiver's MTU, which the reference refuses as an
amplification guard) is still decoded, and marked ``receiver_drops`` with the
reason, so a capture shows both what was sent and what the peer did with it.

The pure part (key log, splitting, decryption) needs nothing beyond the
package; reading and writing capture files needs dpkt (the ``[cli]`` extra),
imported only by :func:`read_capture` and :func:`write_decrypted`.
"""

from __future__ import annotations

import ipaddress
import socket
import struct
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

from qotp.decrypt import MESSAGE_TYPE_NAMES, describe_payload
from qotp.envelope import (
    DEFAULT_MTU,
    MIN_PACKET_SIZE,
    EnvelopeHeader,
    MessageType,
    PacketCipher,
    decode_envelope_header,
    open_packet,
)
from qotp.errors import DecodeError, DecryptError, QotpError
from qotp.payload import decode_payload
from qotp.protection import Address

__all__ = [
    "DECRYPTED_MAGIC",
    "CaptureDecryptor",
    "CaptureError",
    "CapturedPacket",
    "DecryptedDatagram",
    "KeyLog",
    "encode_decrypted",
    "read_capture",
    "split_coalesced",
    "write_decrypted",
]

DECRYPTED_MAGIC = b"QOTP"
"""First bytes of a decrypted record in a written capture (see :func:`encode_decrypted`)."""
DECRYPTED_FORMAT_VERSION = 1
NO_SEQUENCE_NUMBER = (1 << 64) - 1
"""The sequence-number field of a decrypted InitSnd, which has none."""
_RECORD = struct.Struct("<4sBBBBQQQ")
_FLAG_FROM_INITIATOR = 0x01
_FLAG_RECEIVER_DROPS = 0x02
_FLAG_NOT_DECRYPTED = 0x04
_TYPE_BYTES_WITH_CONNECTION_ID = frozenset(
    message_type << 5
    for message_type in (MessageType.INIT_RCV, MessageType.INIT_CRYPTO_RCV, MessageType.DATA)
)


class CaptureError(QotpError):
    """A capture or key-log file cannot be read (the message says which and why)."""


# -- key log -------------------------------------------------------------------------


@dataclass(slots=True)
class KeyLog:
    """Secrets by connection id, from the reference's key-log format (SPEC.md 11.1)."""

    shared_secrets: dict[int, bytes] = field(default_factory=dict)
    """``QOTP_SHARED_SECRET``: InitRcv, InitCryptoRcv and Data."""
    shared_secret_ids: dict[int, bytes] = field(default_factory=dict)
    """``QOTP_SHARED_SECRET_ID``: InitCryptoSnd (0-RTT)."""
    ignored_lines: int = 0
    """Lines that are neither blank, comments, nor well-formed QOTP lines."""

    @classmethod
    def parse(cls, text: str) -> KeyLog:
        """Read key-log text; other labels (e.g. TLS lines in a shared file) are ignored."""
        log = cls()
        for line in text.splitlines():
            fields = line.split()
            if not fields or fields[0].startswith("#"):
                continue
            if len(fields) != 3 or fields[0] not in ("QOTP_SHARED_SECRET", "QOTP_SHARED_SECRET_ID"):
                log.ignored_lines += 1
                continue
            try:
                connection_id = int(fields[1], 16)
                secret = bytes.fromhex(fields[2])
            except ValueError:
                log.ignored_lines += 1
                continue
            if len(secret) != 32 or not 0 <= connection_id < 1 << 64:
                log.ignored_lines += 1
                continue
            table = (
                log.shared_secrets if fields[0] == "QOTP_SHARED_SECRET" else log.shared_secret_ids
            )
            table[connection_id] = secret
        return log

    @classmethod
    def load(cls, path: str | Path) -> KeyLog:
        """Read a key-log file."""
        try:
            return cls.parse(Path(path).read_text(encoding="ascii", errors="replace"))
        except OSError as error:
            raise CaptureError(f"cannot read the key log {path}: {error.strerror}") from None

    def __len__(self) -> int:
        return len(self.shared_secrets.keys() | self.shared_secret_ids.keys())


# -- reading captures ----------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class CapturedPacket:
    """One UDP packet of a capture (possibly several coalesced datagrams)."""

    number: int
    """Frame number in the capture, from 1, as Wireshark counts."""
    timestamp: float
    source: Address
    destination: Address
    payload: bytes


def _ip_layer(dpkt: Any, linktype: int, frame: bytes) -> Any:
    """The IPv4/IPv6 object of a frame, or None."""
    if linktype == dpkt.pcap.DLT_EN10MB:
        layer = dpkt.ethernet.Ethernet(frame).data
    elif linktype == dpkt.pcap.DLT_LINUX_SLL:
        layer = dpkt.sll.SLL(frame).data
    elif linktype == dpkt.pcap.DLT_LINUX_SLL2:
        layer = dpkt.sll2.SLL2(frame).data
    elif linktype in (dpkt.pcap.DLT_NULL, dpkt.pcap.DLT_LOOP):
        layer = dpkt.loopback.Loopback(frame).data
    elif linktype in (dpkt.pcap.DLT_RAW, 101, dpkt.pcap.DLT_IPV4, dpkt.pcap.DLT_IPV6):
        if not frame:
            return None
        layer = dpkt.ip.IP(frame) if frame[0] >> 4 == 4 else dpkt.ip6.IP6(frame)
    else:
        raise CaptureError(f"link type {linktype} is not supported (Ethernet, Linux SLL, raw IP)")
    return layer if isinstance(layer, dpkt.ip.IP | dpkt.ip6.IP6) else None


def _address(raw: bytes, port: int) -> Address:
    return (str(ipaddress.ip_address(raw)), port)


def read_capture(path: str | Path, *, port: int | None = None) -> Iterator[CapturedPacket]:
    """The UDP packets of a pcap or pcapng file (``port``: only those to or from it).

    IP fragments and non-UDP packets are skipped.  The UDP payload is taken
    from the IP length, not the UDP length field, which a GSO super-packet may
    not fill in.
    """
    try:
        import dpkt
    except ImportError:
        raise CaptureError(
            "reading captures needs dpkt: pip install 'qotp[cli]' (or pip install dpkt)"
        ) from None
    try:
        handle: BinaryIO = open(path, "rb")  # noqa: SIM115 - closed in finally
    except OSError as error:
        raise CaptureError(f"cannot read the capture {path}: {error.strerror}") from None
    try:
        try:
            reader = dpkt.pcap.UniversalReader(handle)
        except (ValueError, dpkt.dpkt.NeedData, dpkt.dpkt.UnpackError) as error:
            raise CaptureError(f"{path} is not a pcap or pcapng capture ({error})") from None
        linktype = reader.datalink()
        number = 0
        try:
            for timestamp, frame in reader:
                number += 1
                try:
                    ip = _ip_layer(dpkt, linktype, frame)
                except (dpkt.dpkt.NeedData, dpkt.dpkt.UnpackError):
                    continue
                if ip is None or not isinstance(ip.data, dpkt.udp.UDP):
                    continue
                if isinstance(ip, dpkt.ip.IP) and (ip.mf or ip.offset):
                    continue  # a fragment
                udp = ip.data
                if port is not None and port not in (udp.sport, udp.dport):
                    continue
                yield CapturedPacket(
                    number,
                    float(timestamp),
                    _address(ip.src, udp.sport),
                    _address(ip.dst, udp.dport),
                    bytes(udp.data),
                )
        except (dpkt.dpkt.NeedData, dpkt.dpkt.UnpackError, struct.error) as error:
            raise CaptureError(
                f"{path} is cut short or damaged after frame {number} ({error})"
            ) from None
    finally:
        handle.close()


# -- splitting coalesced datagrams ---------------------------------------------------


def split_coalesced(
    payload: bytes, *, first_opens: Callable[[bytes], bool | None] | None = None
) -> list[bytes]:
    """The datagrams inside one captured UDP payload (one, unless GSO coalesced them).

    GSO sends a run of datagrams of one size ``s`` (the last may be shorter)
    to one address, all of one connection, so the first datagram's type byte
    and connection id repeat at every multiple of ``s``.  ``first_opens(datagram)``,
    if given, returns True/False when it can authenticate a candidate first
    datagram and None when it has no key: a candidate it refuses is skipped.
    """
    size = len(payload)
    if size < 2 * MIN_PACKET_SIZE or payload[0] not in _TYPE_BYTES_WITH_CONNECTION_ID:
        return [payload]
    if first_opens is not None and first_opens(payload) is True:
        return [payload]
    connection_id = payload[1:9]
    data_type = bytes([MessageType.DATA << 5])
    start = MIN_PACKET_SIZE
    while True:
        # Later segments of a run are Data (a handshake reply may lead the run).
        found = payload.find(data_type + connection_id, start)
        if found < 0:
            return [payload]
        segment = found
        if _segments_consistent(payload, segment, connection_id) and (
            first_opens is None or first_opens(payload[:segment]) is not False
        ):
            return [payload[offset : offset + segment] for offset in range(0, size, segment)]
        start = found + 1


def _segments_consistent(payload: bytes, segment: int, connection_id: bytes) -> bool:
    size = len(payload)
    last = size % segment or segment
    if last < MIN_PACKET_SIZE:
        return False
    for offset in range(segment, size, segment):
        if (
            payload[offset] != MessageType.DATA << 5
            or payload[offset + 1 : offset + 9] != connection_id
        ):
            return False
    return True


# -- decrypting ---------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class DecryptedDatagram:
    """One datagram of a capture, decoded and (where a key was known) decrypted."""

    packet: CapturedPacket
    segment: int
    """Index within its captured packet (0 unless GSO coalesced several)."""
    segments: int
    datagram: bytes
    result: dict[str, Any]
    """``decrypt_packet``-shaped: ok, type, conn_id, sn, epoch, header, data (or error)."""
    from_initiator: bool | None
    payload: bytes | None
    """The decrypted transport payload (None for InitSnd and failures)."""
    receiver_drops: str | None
    """Why a real receiver would drop this datagram, if it would."""

    @property
    def ok(self) -> bool:
        """Whether it was decoded and, where encrypted, authenticated."""
        return bool(self.result.get("ok"))

    def as_json(self) -> dict[str, Any]:
        """The per-datagram JSON object of ``qotp decrypt --pcap --json``."""
        record = {
            "frame": self.packet.number,
            "time": round(self.packet.timestamp, 6),
            "src": _format(self.packet.source),
            "dst": _format(self.packet.destination),
            "length": len(self.datagram),
        }
        if self.segments > 1:
            record["segment"] = self.segment
            record["segments"] = self.segments
        if self.from_initiator is not None:
            record["direction"] = "initiator" if self.from_initiator else "responder"
        record.update(self.result)
        if self.receiver_drops is not None:
            record["receiver_drops"] = self.receiver_drops
        return record


def _format(address: Address) -> str:
    host, port = address[0], address[1]
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


@dataclass(slots=True)
class _Connection:
    """What the capture taught about one connection: who is who, and the epochs."""

    initiator: set[Address] = field(default_factory=set)
    responder: set[Address] = field(default_factory=set)
    epochs: dict[bool, int] = field(default_factory=lambda: {True: 0, False: 0})

    def learn(self, source: Address, destination: Address, from_initiator: bool) -> None:
        (self.initiator if from_initiator else self.responder).add(source)
        (self.responder if from_initiator else self.initiator).add(destination)

    def guess(self, source: Address, destination: Address) -> list[bool]:
        """Directions to try, the likely one first."""
        if source in self.initiator or destination in self.responder:
            return [True, False]
        if source in self.responder or destination in self.initiator:
            return [False, True]
        return [True, False]


class CaptureDecryptor:
    """Decrypts the datagrams of one capture in order, learning directions and epochs."""

    def __init__(self, key_log: KeyLog, *, mtu: int = DEFAULT_MTU) -> None:
        self.key_log = key_log
        self.mtu = mtu
        self._connections: dict[int, _Connection] = {}
        self._ciphers: dict[bytes, PacketCipher] = {}
        self.connections_with_secret: set[int] = set()
        """Connections whose datagrams needed a secret, and the key log had it."""
        self.connections_without_secret: set[int] = set()
        """Connections whose datagrams needed a secret the key log lacks."""

    def _cipher(self, key: bytes) -> PacketCipher:
        cipher = self._ciphers.get(key)
        if cipher is None:
            cipher = self._ciphers[key] = PacketCipher(key)
        return cipher

    def decrypt_all(self, packets: Iterable[CapturedPacket]) -> Iterator[DecryptedDatagram]:
        """Every datagram of every packet, in capture order."""
        for packet in packets:
            yield from self.decrypt(packet)

    def decrypt(self, packet: CapturedPacket) -> list[DecryptedDatagram]:
        """The datagrams of one captured packet."""
        datagrams = split_coalesced(
            packet.payload, first_opens=lambda datagram: self._authenticates(packet, datagram)
        )
        return [
            self._decrypt_one(packet, index, len(datagrams), datagram)
            for index, datagram in enumerate(datagrams)
        ]

    def _authenticates(self, packet: CapturedPacket, datagram: bytes) -> bool | None:
        try:
            header = decode_envelope_header(datagram, mtu=0)
        except DecodeError:
            return False
        key = self.key_log.shared_secrets.get(header.connection_id)
        if key is None or header.message_type is MessageType.INIT_CRYPTO_SND:
            return None
        state = self._connections.get(header.connection_id) or _Connection()
        for direction in _directions(header, state, packet):
            try:
                open_packet(
                    datagram,
                    header,
                    self._cipher(key),
                    epoch=state.epochs[direction],
                    sent_by_initiator=direction,
                )
                return True
            except (DecodeError, DecryptError):
                continue
        return False

    def _decrypt_one(
        self, packet: CapturedPacket, index: int, count: int, datagram: bytes
    ) -> DecryptedDatagram:
        def done(
            result: dict[str, Any],
            from_initiator: bool | None = None,
            payload: bytes | None = None,
            drops: str | None = None,
        ) -> DecryptedDatagram:
            return DecryptedDatagram(
                packet, index, count, datagram, result, from_initiator, payload, drops
            )

        try:
            header = decode_envelope_header(datagram, mtu=0)
        except DecodeError as error:
            return done({"ok": False, "error": f"not a QOTP datagram: {error}"})
        drops = _receiver_drops(datagram, header, self.mtu)
        type_name = MESSAGE_TYPE_NAMES[header.message_type]
        result: dict[str, Any] = {"ok": True, "type": type_name, "conn_id": header.connection_id}
        if header.ephemeral_public_key is not None:
            result["ephemeral_public_key"] = header.ephemeral_public_key.hex()
        if header.identity_public_key is not None:
            result["identity_public_key"] = header.identity_public_key.hex()
        state = self._connections.setdefault(header.connection_id, _Connection())
        message_type = header.message_type
        if message_type in (MessageType.INIT_SND, MessageType.INIT_CRYPTO_SND):
            state.learn(packet.source, packet.destination, True)
        elif message_type in (MessageType.INIT_RCV, MessageType.INIT_CRYPTO_RCV):
            state.learn(packet.source, packet.destination, False)
        if message_type is MessageType.INIT_SND:
            result.update(sn=None, epoch=0, header=None, data=None)
            return done(result, True, None, drops)
        secrets = (
            self.key_log.shared_secret_ids
            if message_type is MessageType.INIT_CRYPTO_SND
            else self.key_log.shared_secrets
        )
        key = secrets.get(header.connection_id)
        label = "QOTP_SHARED_SECRET_ID" if message_type is MessageType.INIT_CRYPTO_SND else (
            "QOTP_SHARED_SECRET"
        )  # fmt: skip
        if key is None:
            self.connections_without_secret.add(header.connection_id)
            missing = f"no {label} for connection {header.connection_id:x} in the key log"
            return done({**result, "ok": False, "error": missing}, None, None, drops)
        self.connections_with_secret.add(header.connection_id)
        failure = "packet failed authentication"
        for direction in _directions(header, state, packet):
            try:
                opened = open_packet(
                    datagram,
                    header,
                    self._cipher(key),
                    epoch=state.epochs[direction],
                    sent_by_initiator=direction,
                )
            except (DecodeError, DecryptError) as error:
                failure = str(error)
                continue
            state.learn(packet.source, packet.destination, direction)
            state.epochs[direction] = opened.epoch
            try:
                payload = decode_payload(opened.payload)
            except DecodeError as error:
                result.update(sn=opened.sequence_number, epoch=opened.epoch)
                return done(
                    {**result, "ok": False, "error": f"authentic, but the payload does not "
                     f"decode: {error}"},
                    direction, bytes(opened.payload), drops or f"payload: {error}",
                )  # fmt: skip
            result.update(
                sn=opened.sequence_number,
                epoch=opened.epoch,
                header=describe_payload(payload, bytes(opened.payload)),
                data=None if payload.kind.value == "ack_only" else payload.data.hex(),
            )
            return done(result, direction, bytes(opened.payload), drops)
        return done(
            {**result, "ok": False, "error": f"{failure} with the key log's {label}"},
            None,
            None,
            drops,
        )


def _directions(header: EnvelopeHeader, state: _Connection, packet: CapturedPacket) -> list[bool]:
    """Whether the initiator sent it: fixed by the type, except for Data."""
    if header.message_type is MessageType.DATA:
        return state.guess(packet.source, packet.destination)
    return [header.message_type in (MessageType.INIT_SND, MessageType.INIT_CRYPTO_SND)]


def _receiver_drops(datagram: bytes, header: EnvelopeHeader, mtu: int) -> str | None:
    """What a receiver with this MTU refuses before decrypting (the reference's checks)."""
    try:
        decode_envelope_header(datagram, mtu=mtu)
    except DecodeError as error:
        return str(error)
    del header
    return None


# -- writing decrypted captures -----------------------------------------------------


def encode_decrypted(datagram: DecryptedDatagram) -> bytes:
    """The UDP payload of a decrypted record, as ``contrib/wireshark/qotp.lua`` reads it.

    Layout (little-endian, 32 bytes, then the transport payload as on the wire
    inside the envelope, SPEC.md section 6)::

        0  4  magic "QOTP"
        4  1  format version (1)
        5  1  message type (0 InitSnd .. 4 Data)
        6  1  flags: 1 sent by the initiator, 2 a receiver would drop it,
                     4 not decrypted (no key, or authentication failed)
        7  1  reserved, 0
        8  8  connection id
        16 8  sequence number (2^64 - 1: none, as in InitSnd)
        24 8  epoch
        32 .. transport payload (empty for InitSnd and for failures)
    """
    result = datagram.result
    flags = 0
    if datagram.from_initiator:
        flags |= _FLAG_FROM_INITIATOR
    if datagram.receiver_drops is not None:
        flags |= _FLAG_RECEIVER_DROPS
    message_type = next(
        (kind for kind, name in MESSAGE_TYPE_NAMES.items() if name == result.get("type")),
        None,
    )
    if not datagram.ok or message_type is None:
        flags |= _FLAG_NOT_DECRYPTED
    sequence_number = result.get("sn")
    header = _RECORD.pack(
        DECRYPTED_MAGIC,
        DECRYPTED_FORMAT_VERSION,
        int(message_type) if message_type is not None else 0xFF,
        flags,
        0,
        int(result.get("conn_id") or 0),
        NO_SEQUENCE_NUMBER if sequence_number is None else int(sequence_number),
        int(result.get("epoch") or 0),
    )
    return header + (datagram.payload or b"")


def _frame(datagram: DecryptedDatagram, payload: bytes) -> bytes:
    """An Ethernet/IP/UDP frame with the original addresses and ports around ``payload``."""
    import dpkt

    source, destination = datagram.packet.source, datagram.packet.destination
    udp = dpkt.udp.UDP(sport=source[1], dport=destination[1], data=payload)
    udp.ulen = len(udp)
    ip: Any
    if ":" in source[0]:
        ip = dpkt.ip6.IP6(
            src=socket.inet_pton(socket.AF_INET6, source[0]),
            dst=socket.inet_pton(socket.AF_INET6, destination[0]),
            nxt=dpkt.ip.IP_PROTO_UDP,
            hlim=64,
            data=udp,
            plen=len(udp),
        )
        ether_type = dpkt.ethernet.ETH_TYPE_IP6
    else:
        ip = dpkt.ip.IP(
            src=socket.inet_aton(source[0]),
            dst=socket.inet_aton(destination[0]),
            p=dpkt.ip.IP_PROTO_UDP,
            ttl=64,
            data=udp,
        )
        ip.len = len(ip)
        ether_type = dpkt.ethernet.ETH_TYPE_IP
    ethernet = dpkt.ethernet.Ethernet(
        src=b"\x02" + bytes(5), dst=b"\x02" + bytes(5), type=ether_type, data=ip
    )
    return bytes(ethernet)


def write_decrypted(path: str | Path, datagrams: Iterable[DecryptedDatagram]) -> int:
    """Write one pcapng frame per datagram (decrypted record as UDP payload); the count."""
    try:
        import dpkt
    except ImportError:
        raise CaptureError("writing captures needs dpkt: pip install 'qotp[cli]'") from None
    count = 0
    try:
        with open(path, "wb") as handle:
            writer = dpkt.pcapng.Writer(handle, snaplen=262_144, linktype=dpkt.pcap.DLT_EN10MB)
            for datagram in datagrams:
                writer.writepkt(
                    _frame(datagram, encode_decrypted(datagram)), ts=datagram.packet.timestamp
                )
                count += 1
    except OSError as error:
        raise CaptureError(f"cannot write {path}: {error.strerror}") from None
    return count
