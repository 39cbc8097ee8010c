"""The send side as a connection composes it: a SendBuffer under a PacketRecovery.

Tests of qotp.send and qotp.recovery drive both through this small harness,
without crypto, congestion gating or pacing: ``next_packet`` offers a due
retransmission first, then new data, exactly as ``Connection`` does.
"""

from __future__ import annotations

from dataclasses import dataclass

from qotp.recovery import MAX_SEND_ATTEMPTS, PacketRecovery
from qotp.send import INITIAL_PEER_WINDOW_BYTES, SEND_BUFFER_BYTES, OutgoingPacket, SendBuffer

#: What a packet's datagram is assumed to cost beyond its data (header, SN, MAC).
DATAGRAM_OVERHEAD_BYTES = 49


@dataclass(frozen=True, slots=True)
class Acked:
    """What one ACK did."""

    acked: bool
    stream_id: int
    length: int
    rtt_sample_ns: int | None
    attempts: int
    is_close: bool
    is_ping: bool
    send_finished: bool


class Sender:
    """SendBuffer + PacketRecovery, wired as in qotp.connection."""

    def __init__(
        self,
        capacity: int = SEND_BUFFER_BYTES,
        *,
        initial_peer_window: int = INITIAL_PEER_WINDOW_BYTES,
        max_attempts: int = MAX_SEND_ATTEMPTS,
    ) -> None:
        self.buffer = SendBuffer(capacity, initial_peer_window=initial_peer_window)
        self.recovery = PacketRecovery(
            self.buffer, max_datagram_bytes=1400, max_attempts=max_attempts
        )
        self.finished: set[int] = set()

    # -- sending ------------------------------------------------------------------

    def next_packet(
        self,
        now: int,
        *,
        budget: int,
        rto_ns: int,
        ack_offset: int | None = None,
        allow_new: bool = True,
    ) -> OutgoingPacket | None:
        recovery = self.recovery
        packet = recovery.next_retransmission(
            now, budget=budget, rto_ns=rto_ns, ack_offset=ack_offset
        )
        if packet is None and allow_new:
            packet = self.buffer.next_new_packet(
                now,
                budget=budget,
                rto_ns=rto_ns,
                ack_offset=ack_offset,
                in_flight=recovery.in_flight,
            )
        if packet is not None:
            recovery.on_packet_sent(packet, len(packet.data) + DATAGRAM_OVERHEAD_BYTES, now)
        return packet

    def next_deadline(self, rto_ns: int) -> int | None:
        deadline = self.recovery.next_deadline(rto_ns)
        if not self.recovery.in_flight:
            probe = self.buffer.probe_deadline(rto_ns)
            if probe is not None and (deadline is None or probe < deadline):
                deadline = probe
        return deadline

    # -- acknowledgements ---------------------------------------------------------

    def on_ack(
        self,
        stream_id: int,
        offset: int,
        length: int,
        now: int,
        *,
        peer_window: int | None = None,
        loss_delay_ns: int | None = None,
    ) -> Acked:
        buffer = self.buffer
        window = buffer.peer_window if peer_window is None else peer_window
        record = self.recovery.acknowledge(stream_id, offset, length, window, now)
        send_finished = False
        if buffer.finished_streams:
            self.finished.update(buffer.finished_streams)
            send_finished = stream_id in buffer.finished_streams
            buffer.finished_streams.clear()
        if record is None:
            return Acked(False, stream_id, 0, None, 0, False, False, False)
        if loss_delay_ns is not None:
            self.recovery.detect_losses(record.sent_ns, now, loss_delay_ns)
        return Acked(
            True,
            stream_id,
            len(record.data),
            now - record.sent_ns if record.attempts == 1 else None,
            record.attempts,
            record.is_close,
            record.is_ping,
            send_finished,
        )

    # -- the send buffer's side ---------------------------------------------------

    def write(self, stream_id: int, data: bytes | bytearray | memoryview) -> int:
        return self.buffer.write(stream_id, data)

    def close(self, stream_id: int) -> int:
        return self.buffer.close(stream_id)

    def queue_ping(self, stream_id: int) -> None:
        self.buffer.queue_ping(stream_id)

    def close_offset(self, stream_id: int) -> int | None:
        return self.buffer.close_offset(stream_id)

    def queued_bytes(self, stream_id: int) -> int:
        return self.buffer.queued_bytes(stream_id)

    def has_new_work(self) -> bool:
        return self.buffer.has_new_work()

    def is_send_finished(self, stream_id: int) -> bool:
        return stream_id in self.finished

    def discard_stream(self, stream_id: int) -> int:
        """Forget the stream; the bytes freed in the buffer."""
        before = self.buffer.buffered_bytes
        self.recovery.discard_stream(stream_id, 0)
        return before - self.buffer.buffered_bytes

    @property
    def capacity(self) -> int:
        return self.buffer.capacity

    @property
    def free_space(self) -> int:
        return self.buffer.free_space

    @property
    def buffered_bytes(self) -> int:
        return self.buffer.buffered_bytes

    @property
    def bytes_in_flight(self) -> int:
        return self.buffer.bytes_in_flight

    @property
    def peer_window(self) -> int:
        return self.buffer.peer_window

    @property
    def in_flight_packets(self) -> int:
        return len(self.recovery.in_flight)

    @property
    def retransmitted_packets(self) -> int:
        return self.recovery.retransmitted_packets

    @property
    def split_packets(self) -> int:
        return self.recovery.split_packets

    @property
    def lost_pings(self) -> int:
        return self.recovery.lost_pings
