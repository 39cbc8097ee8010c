"""Every stream packet one side sent over a netsim link, and what became of it.

A :class:`LossLedger` watches a :class:`netsim.Network` (its ``tap`` and
``on_deliver`` hooks) and opens each datagram with the endpoints' key log
(:class:`wiretap.KeyLogDecryptor`): for the sender's stream packets it records
every copy and whether the link delivered it; for the receiver's datagrams, the
ACK each carried and whether that arrived. From that it tells, per
retransmission, whether it was needed (some of its bytes had not arrived) or
spurious (an earlier copy of every byte had arrived), and why a spurious one
went out: the ACKs of the earlier copy were all lost, or the sender did not
wait for an ACK that was coming. Nothing in the engine is consulted: this is
the wire's account, to hold the engine's counters against.

It assumes that a packet's ACK names it by its exact (stream, offset, length),
as QOTP's do, and looks at one connection.
"""

from __future__ import annotations

from dataclasses import dataclass

from netsim import SECOND, Address, LinkConditions, Network
from sortedcontainers import SortedDict
from transfer import Transfer
from wiretap import KeyLogDecryptor

from qotp.config import QotpConfiguration
from qotp.endpoint import QotpEndpoint
from qotp.payload import PacketKey, PayloadKind


class _Copy:
    """One datagram carrying stream data or a CLOSE (one copy of a packet)."""

    __slots__ = ("delivered_ns", "end", "key", "sent_ns")

    def __init__(self, key: PacketKey, sent_ns: int) -> None:
        self.key = key
        self.end = key[1] + key[2]
        self.sent_ns = sent_ns
        self.delivered_ns: int | None = None


class _AckCopy:
    """One datagram of the receiver's that carried an ACK."""

    __slots__ = ("delivered_ns", "sent_ns")

    def __init__(self, sent_ns: int) -> None:
        self.sent_ns = sent_ns
        self.delivered_ns: int | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class LossReport:
    """What the wire saw of one sender's stream packets."""

    packets: int
    """Stream packets sent the first time (data or CLOSE; PINGs are not counted)."""
    lost_packets: int
    """Copies of stream packets the link did not deliver (first sends and resends)."""
    lost_acks: int
    """Datagrams of the receiver's carrying an ACK that the link did not deliver."""
    retransmissions: int
    """Copies that repeated bytes (or a CLOSE) sent before."""
    spurious_ack_lost: int
    """Retransmissions of bytes that had all arrived, whose every ACK had been lost."""
    spurious_early: int
    """Retransmissions of bytes that had all arrived (or were still on their way) and
    whose ACK was delivered, or still coming, after the retransmission left."""

    @property
    def spurious(self) -> int:
        return self.spurious_ack_lost + self.spurious_early

    @property
    def per_lost_packet(self) -> float:
        """Retransmissions per lost stream packet (TCP's ratio is about 1)."""
        return self.retransmissions / self.lost_packets if self.lost_packets else 0.0

    @property
    def per_loss_either_way(self) -> float:
        """Retransmissions per datagram lost either way (a lost packet or a lost ACK)."""
        lost = self.lost_packets + self.lost_acks
        return self.retransmissions / lost if lost else 0.0


class LossLedger:
    """Watches ``network`` for the stream packets ``sender`` ("a" or "b") sends."""

    def __init__(self, network: Network, decryptor: KeyLogDecryptor, *, sender: str = "a") -> None:
        self.network = network
        self.decryptor = decryptor
        self.sender = sender
        self.initiator = "a"
        """Which side dialled (``from_initiator`` when opening its datagrams)."""
        self._copies: dict[bytes, _Copy] = {}
        self._acks: dict[bytes, tuple[PacketKey, _AckCopy]] = {}
        self._order: list[_Copy] = []
        self._ack_copies: dict[PacketKey, list[_AckCopy]] = {}
        self._chained_tap = network.tap
        self._chained_deliver = network.on_deliver
        network.tap = self._on_send
        network.on_deliver = self._on_deliver

    def _on_send(self, sender: str, datagram: bytes, destination: Address) -> None:
        if self._chained_tap is not None:
            self._chained_tap(sender, datagram, destination)
        payload = self.decryptor.payload(datagram, from_initiator=sender == self.initiator)
        if payload is None:
            return
        now = self.network.now
        if sender == self.sender:
            if payload.data or (payload.is_close and payload.kind is not PayloadKind.ACK_ONLY):
                key = (payload.stream_id, payload.stream_offset, len(payload.data))
                copy = _Copy(key, now)
                self._copies[datagram] = copy
                self._order.append(copy)
        elif payload.ack is not None:
            ack = payload.ack
            ack_copy = _AckCopy(now)
            key = (ack[0], ack[1], ack[2])
            self._acks[datagram] = (key, ack_copy)
            self._ack_copies.setdefault(key, []).append(ack_copy)

    def _on_deliver(self, sender: str, datagram: bytes) -> None:
        if self._chained_deliver is not None:
            self._chained_deliver(sender, datagram)
        now = self.network.now
        copy = self._copies.get(datagram)
        if copy is not None:
            if copy.delivered_ns is None:
                copy.delivered_ns = now
            return
        found = self._acks.get(datagram)
        if found is not None and found[1].delivered_ns is None:
            found[1].delivered_ns = now

    def report(self) -> LossReport:
        """The account so far."""
        streams: dict[int, SortedDict] = {}
        packets = retransmissions = ack_lost = early = 0
        for copy in self._order:
            stream_id, offset, length = copy.key
            earlier_by_offset = streams.setdefault(stream_id, SortedDict())
            starts = earlier_by_offset.irange(offset - (1 << 16), copy.end, inclusive=(True, False))
            earlier = [other for start in starts for other in earlier_by_offset[start]]
            if length:
                earlier = [other for other in earlier if other.end > offset]
            else:
                same = earlier_by_offset.get(offset, [])
                earlier = [other for other in same if other.key == copy.key]
            earlier_by_offset.setdefault(offset, []).append(copy)
            if not earlier:
                packets += 1
                continue
            retransmissions += 1
            arrived = [other for other in earlier if other.delivered_ns is not None]
            if not _covers(arrived, offset, copy.end, length == 0):
                continue  # needed: some of it had not arrived (and never would)
            acks = [ack for other in arrived for ack in self._ack_copies.get(other.key, [])]
            sent_before = [ack for ack in acks if ack.sent_ns <= copy.sent_ns]
            if sent_before and all(ack.delivered_ns is None for ack in sent_before):
                ack_lost += 1
            else:
                early += 1
        lost = sum(1 for copy in self._order if copy.delivered_ns is None)
        lost_acks = sum(1 for _key, ack in self._acks.values() if ack.delivered_ns is None)
        return LossReport(
            packets=packets,
            lost_packets=lost,
            lost_acks=lost_acks,
            retransmissions=retransmissions,
            spurious_ack_lost=ack_lost,
            spurious_early=early,
        )


def _covers(copies: list[_Copy], start: int, end: int, empty: bool) -> bool:
    """Whether ``copies`` together carry every byte of ``[start, end)`` (or the bare CLOSE)."""
    if empty:
        return bool(copies)
    position = start
    for copy in sorted(copies, key=lambda c: c.key[1]):
        if copy.key[1] > position:
            return False
        position = max(position, copy.end)
        if position >= end:
            return True
    return position >= end


@dataclass(frozen=True, slots=True, kw_only=True)
class MeasuredTransfer:
    """One bulk transfer over netsim: the wire's account and the sender's own."""

    report: LossReport
    seconds: float
    """Virtual time until every byte had reached the receiving application."""
    acknowledged_seconds: float
    """Virtual time until, besides, every packet was acknowledged (the sender's view)."""
    goodput_bytes_per_s: float
    """Bytes delivered to the receiving application per (virtual) second."""
    engine_retransmissions: int
    """What the sending connection counted (``retransmitted_packets``)."""


def measure_transfer(
    conditions: LinkConditions,
    *,
    streams: int,
    total_bytes: int,
    seed: int,
    back: LinkConditions | None = None,
    ack_repeats: bool = True,
) -> MeasuredTransfer:
    """Client to server, ``total_bytes`` over ``streams`` streams; server reads promptly."""
    decryptor = KeyLogDecryptor()
    configuration = QotpConfiguration(ack_repeats=ack_repeats)
    client = QotpEndpoint(configuration=configuration, key_log=decryptor.add_line)
    server = QotpEndpoint(configuration=configuration)
    network = Network(client, server, a_to_b=conditions, b_to_a=back or conditions, seed=seed)
    ledger = LossLedger(network, decryptor)
    transfer = Transfer(
        client, server, network.b_address, streams, total_bytes // streams, close=False
    )
    connection = transfer.connection
    arrived_ns = 0

    def step(now: int) -> None:
        nonlocal arrived_ns
        transfer.step(now)
        if not arrived_ns and transfer.done():
            arrived_ns = now

    def everything_acknowledged() -> bool:
        return transfer.done() and connection.send_buffer.buffered_bytes == 0

    network.run_until(everything_acknowledged, on_step=step, limit_ns=600 * SECOND)
    transfer.verify()
    seconds = (arrived_ns or network.now) / SECOND
    return MeasuredTransfer(
        report=ledger.report(),
        seconds=seconds,
        acknowledged_seconds=network.now / SECOND,
        goodput_bytes_per_s=streams * (total_bytes // streams) / seconds,
        engine_retransmissions=connection.statistics().retransmitted_packets,
    )
