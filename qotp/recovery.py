"""Loss recovery of one QOTP connection: in-flight packets, ACKs, RTT, retransmission.

The one owner of what happens to a packet after it left (aioquic's
``QuicPacketRecovery`` plays this part there): it keeps every sent, not yet
acknowledged packet, matches ACKs to them, takes RTT samples, detects losses,
chooses due retransmissions, declares the retry limit, and drives the RTT
estimator and the congestion controller.  The send buffer (:mod:`qotp.send`)
keeps what has not been sent yet and the flow-control window; this module tells
it when the peer acknowledged bytes, so that their space is freed.

Theory of operation
===================

The peer's ACK echoes a packet's exact ``(stream id, offset, length)``, so that
triple is the key of the in-flight registry and nothing else (no ranges, no
packet numbers) identifies what the peer received.

Facts taken from the Go reference (snd.go ``SendBuffer``, conn.go ``Flush`` and
``decode``, measurement.go ``backoff``), v0.2.19:

* In-flight entries are keyed by ``(offset << 16) | length`` per stream, kept in
  insertion order; each records the data, the last send time, the send count,
  and whether it is a PING or carries the CLOSE flag.
* Retransmission: only the oldest entry of a stream is examined; it is due when
  ``now - last_send > RTO * 2^(sends - 1)`` with the RTO computed at that
  moment. A due PING is dropped, never resent. A due entry is re-encoded with
  the current message type and whatever ACK is pending; if its data no longer
  fits (the header grew, e.g. because an ACK is now piggybacked or the ACK
  offset crossed 2^24) it is split: the first part, sized to the budget, gets a
  new key and a send count one higher; the rest keeps the old entry (send count
  and send time unchanged, CLOSE flag kept) under a new key.
* Retry limit: ``backoff`` fails once the send count exceeds 5, so a packet is
  sent at most 6 times; the reference drops the connection on its next flush
  after the 6th send (about 6.2 s with the 200 ms default RTO) without waiting
  for an answer to that last send.
* An ACK whose key is in flight removes it, frees its bytes in the buffer and
  yields an RTT sample from the *last* send time; an ACK for a known stream but
  unknown key counts as a duplicate ACK (BBR backs off by 2 %); an ACK for an
  unknown stream is ignored. Every ACK, known or not, sets the peer's receive
  window to the value it carries.

Where we differ, on purpose
===========================

* Retransmission looks at every in-flight packet, earliest deadline first,
  across all streams (one FIFO per send count, so the earliest deadline is one
  of at most :data:`MAX_SEND_ATTEMPTS` heads); the reference looks only at the
  oldest entry of the stream being flushed, which stalls recovery after burst
  losses.
* The retry limit (6 sends) is declared when the *last* send's backoff expires
  without any ACK from the peer since that send, not right after the send; the
  connection learns it from :class:`RetryLimitExceeded`. If other packets were
  ACKed meanwhile, the peer is alive and the packet is sent again at the
  longest backoff: with 20 % loss each way a round trip fails 36 % of the time,
  six in a row 0.2 % of the time, which would end a long transfer for nothing.
  The same when the peer sent anything authentic since that send: its ACKs may
  lag behind (a reference peer that paces its ACKs to 10 ms answers the copies
  it queued first), and a peer that vanished sends nothing.
* Losses are also found by later ACKs (RFC 9002 section 6.1.2's time threshold,
  widened to the reordering seen so far), not only by the RTO; and, as that
  section asks, by a timer once the threshold has passed for a packet sent
  before an acknowledged one when no further ACK comes (the last packets before
  a pause or the end of a transfer: with the 100 ms minimum RTO, five round
  trips of a 20 ms path).
* A silent tail is probed (RFC 8985 section 7, RFC 9002 section 6.2): when the
  newest packet has had no ACK for ``srtt + 4 rttvar`` (at least
  :data:`MIN_PROBE_TIMEOUT_NS`) since it left or since the latest ACK, it is
  resent once, so that its ACK lets the loss detection find the others.  The
  probe neither backs off nor counts towards the retry limit, and is not a
  loss to the congestion controller; the next goes out only after another
  ACK.  Without it, a lost request or its lost ACK waits for the RTO (at least
  100 ms).  None while the peer paces its ACKs (``estimates_frozen``).
* A retransmission keeps the boundaries of its first send.  When an ACK now
  rides along and leaves too little room (the first send carried none, or a
  24-bit one), the packet goes without the ACK, which waits for the next
  datagram; the reference splits it.  Splitting is unsafe towards the
  reference's receive buffer (rcv.go ``Insert``/``RemoveOldestInOrder``): if
  the first copy was only late, not lost, and arrives after the shorter head,
  it starts below the next expected offset and ends above it; the reference
  stores it, never hands it to the application, and the stream stalls for
  good while every packet is acknowledged (the interop flake of the
  impairment relay, reproduced in tests/test_recovery.py).
* Retransmissions are already counted in flight and are never held back by the
  flow-control window, but one larger than the peer's whole window is split to
  fit it, since the peer would drop it on every attempt (the one split left).
* RTT samples follow Karn's rule: only packets sent once give a sample.  And an
  ACK sooner than the minimum RTT after a retransmission is taken for the first
  copy's (RFC 8985 section 6.2): it does not move the newest acknowledged send
  time that loss detection measures from, nor give the congestion controller a
  delivery-rate sample (the send it would measure from is not the one that
  arrived).
* Acknowledgements that arrive together (one socket read, one ``now``) form one
  event, as a stretch ACK does in TCP: one RTT sample, one delivery-rate sample,
  one pass of loss detection (:meth:`PacketRecovery.flush_ack_event`).

This module is sans-IO: time arrives as ``now`` (integer nanoseconds).
"""

from __future__ import annotations

from collections import OrderedDict, deque
from typing import TYPE_CHECKING

from qotp.congestion import (
    CongestionController,
    CongestionControllerFactory,
    RttEstimator,
    SendSample,
    make_congestion_controller,
)
from qotp.congestion.rtt import LOSS_DELAY_GRANULARITY_NS
from qotp.errors import LocalProtocolError, QotpError
from qotp.payload import (
    MAX_OFFSET_24,
    MAX_PACKET_DATA_BYTES,
    STREAM_HEADER_SIZE_24,
    STREAM_HEADER_SIZE_48,
    STREAM_HEADER_WITH_ACK_SIZE_24,
    STREAM_HEADER_WITH_ACK_SIZE_48,
    PacketKey,
)
from qotp.send import OutgoingPacket

if TYPE_CHECKING:
    from qotp.send import SendBuffer

__all__ = [
    "MAX_SEND_ATTEMPTS",
    "MIN_PROBE_TIMEOUT_NS",
    "InFlightPacket",
    "PacketRecovery",
    "RetryLimitExceeded",
]

#: A packet is sent at most this often (Go: maxRetry = 5 retries after the first send).
MAX_SEND_ATTEMPTS = 6
#: Floor of the tail-loss probe's timeout: an event loop's scheduling delays (a few ms
#: on a busy machine) must not read as a lost tail on a sub-millisecond path.
MIN_PROBE_TIMEOUT_NS = 10_000_000

_tuple_new = tuple.__new__


class RetryLimitExceeded(QotpError):
    """A packet went unanswered through all :data:`MAX_SEND_ATTEMPTS` sends.

    The peer is gone or the path is dead; the connection must end (with an event).
    """

    def __init__(self, key: PacketKey, attempts: int) -> None:
        stream_id, offset, length = key
        super().__init__(
            f"no ACK for stream {stream_id} offset {offset} length {length} after {attempts} sends"
        )
        self.key = key
        self.attempts = attempts


class InFlightPacket:
    """One sent, not yet acknowledged packet.  Read-only outside this module."""

    __slots__ = (
        "attempts",
        "backoff",
        "data",
        "is_close",
        "is_ping",
        "key",
        "lost",
        "sample",
        "sent_ns",
    )

    def __init__(
        self,
        key: PacketKey,
        data: bytes | memoryview,
        sent_ns: int,
        attempts: int,
        is_close: bool,
        is_ping: bool,
    ) -> None:
        self.key = key
        self.data = data
        self.sent_ns = sent_ns
        self.attempts = attempts
        #: Sends in a row with no ACK for anything in between (1 after an ACK): the
        #: RTO multiplier is ``2 ** (backoff - 1)`` and the retry limit counts these,
        #: so retransmissions while the peer is answering (fast, after a loss) neither
        #: stretch the timer nor bring the end closer.  It is also the index of the
        #: timer FIFO the packet waits in.
        self.backoff = 1
        self.is_close = is_close
        self.is_ping = is_ping
        #: The congestion controller's snapshot of the datagram now carrying this
        #: packet.  A split, an expired PING or a discarded stream releases it, so
        #: the count of datagram bytes in flight can never drift.
        self.sample: SendSample | None = None
        #: Declared lost by a later ACK: waits in ``PacketRecovery._lost``, due at once.
        self.lost = False


class PacketRecovery:
    """Everything in flight on one connection, and what ACKs and silence make of it."""

    __slots__ = (
        "_ack_event_bytes",
        "_ack_event_newest",
        "_ack_event_now",
        "_ack_event_rtt_ns",
        "_ack_event_sent_ns",
        "_last_record",
        "_latest_ack_ns",
        "peer_heard_ns",
        "_probe_armed",
        "_latest_acked_sent_ns",
        "_lost",
        "_max_attempts",
        "_quiet_at_ns",
        "_quiet_rto_ns",
        "_reorder_window_ns",
        "_send",
        "_suspects",
        "_timers",
        "ack_displaced",
        "congestion",
        "datagram_bytes_in_flight",
        "estimates_frozen",
        "in_flight",
        "lost_pings",
        "probes_sent",
        "reordered_acks",
        "retransmitted_bytes",
        "retransmitted_packets",
        "rtt",
        "split_packets",
    )

    def __init__(
        self,
        send_buffer: SendBuffer,
        *,
        max_datagram_bytes: int,
        congestion_control: str | CongestionControllerFactory = "bbr",
        max_attempts: int = MAX_SEND_ATTEMPTS,
    ) -> None:
        if max_attempts < 1:
            raise LocalProtocolError("max_attempts must be at least 1")
        self._send = send_buffer
        self.rtt = RttEstimator()
        self.congestion: CongestionController = make_congestion_controller(
            congestion_control, self.rtt, max_datagram_bytes=max_datagram_bytes
        )
        self._max_attempts = max_attempts
        #: Every packet sent and neither acknowledged nor given up (PINGs included).
        #: Read-only outside this module.
        self.in_flight: dict[PacketKey, InFlightPacket] = {}
        #: ``_timers[n]`` holds packets whose backoff is ``n + 1``, oldest send first: their
        #: deadlines share one multiplier, so each FIFO is also in deadline order.
        self._timers: list[OrderedDict[PacketKey, InFlightPacket]] = [
            OrderedDict() for _ in range(max_attempts)
        ]
        #: Packets a later ACK showed to be lost, oldest first; due at once.
        self._lost: OrderedDict[PacketKey, InFlightPacket] = OrderedDict()
        #: Packets probably lost (:meth:`suspect_sent_between`), with the send time
        #: that was suspected, oldest first: resent after the lost ones, unless
        #: acknowledged or resent meanwhile, or :meth:`clear_suspects` came first.
        self._suspects: deque[tuple[PacketKey, int]] = deque()
        #: ``now`` and RTO at which no retransmission was found due: at that same
        #: ``now`` none can become due (new sends are due an RTO later), so the rest
        #: of a batch of sends skips the search; a loss (``_lost``) still goes first.
        self._quiet_at_ns = -1
        self._quiet_rto_ns = -1
        #: When an ACK last matched a packet in flight (0: never).
        self._latest_ack_ns = 0
        #: When the peer last sent anything authentic (set by the connection): a peer
        #: that speaks is alive even when its ACKs match nothing in flight (a reference
        #: peer pacing its ACKs to 10 ms works through a queue of ACKs for copies).
        self.peer_heard_ns = 0
        #: A tail-loss probe may go out: an ACK matched since the last one.
        self._probe_armed = False
        #: Send time of the newest packet acknowledged so far.
        self._latest_acked_sent_ns = 0
        #: How far out of send order ACKs have been seen to arrive (RACK's reordering
        #: window): ACK-based loss detection waits at least this long, so a path or a
        #: peer that reorders (the reference acknowledges bursts very unevenly) does
        #: not turn every late ACK into a spurious retransmission.
        self._reorder_window_ns = 0
        #: Set by :meth:`next_retransmission` when the packet it returned must go without
        #: the ACK it was offered (it fits only without it); the caller keeps that ACK for
        #: the next datagram.
        self.ack_displaced = False
        #: The record :meth:`next_retransmission` returned last (its new datagram's
        #: congestion sample is attached in :meth:`on_packet_sent`).
        self._last_record: InFlightPacket | None = None
        #: Bytes of the datagrams carrying packets in flight (congestion control's view;
        #: flow control counts data bytes, in the send buffer).
        self.datagram_bytes_in_flight = 0
        # The acknowledgement event being gathered (see flush_ack_event).
        self._ack_event_now = -1
        self._ack_event_bytes = 0
        self._ack_event_newest: SendSample | None = None
        self._ack_event_rtt_ns = 0
        self._ack_event_sent_ns = -1
        #: ACKs that arrived for a packet sent before one already acknowledged.
        self.reordered_acks = 0
        self.retransmitted_packets = 0
        self.retransmitted_bytes = 0
        self.split_packets = 0
        self.lost_pings = 0
        #: Tail-loss probes sent (counted in ``retransmitted_packets`` too).
        self.probes_sent = 0
        #: While set, ACKs and losses no longer reach the RTT estimator and the
        #: congestion controller: they would measure the peer's ACK queue, not the
        #: path (see :mod:`qotp.congestion.ack_starvation`). Loss detection goes on.
        self.estimates_frozen = False

    # -- sending ----------------------------------------------------------------------

    def on_packet_sent(self, packet: OutgoingPacket, datagram_bytes: int, now: int) -> None:
        """A packet from :meth:`next_retransmission` or the send buffer left in a datagram.

        A first transmission enters the registry; either way the datagram's congestion
        sample is taken and attached to the packet's record.
        """
        if packet[5] == 1:  # attempt: a new packet (the per-packet path)
            key = (packet[0], packet[1], len(packet[2]))
            record = InFlightPacket(key, packet[2], now, 1, packet[3], packet[4])
            self.in_flight[key] = record
            self._timers[0][key] = record
        else:
            record = self._last_record  # type: ignore[assignment]
        record.sample = self.congestion.on_packet_sent(
            now, datagram_bytes, self.datagram_bytes_in_flight
        )
        self.datagram_bytes_in_flight += datagram_bytes

    def can_send(self, datagram_bytes: int) -> bool:
        """Whether the congestion window has room for one more datagram."""
        return self.congestion.can_send(self.datagram_bytes_in_flight, datagram_bytes)

    def on_app_limited(self) -> None:
        """The application has nothing to send: do not read the window as a limit."""
        self.congestion.on_app_limited(self.datagram_bytes_in_flight)

    def _release(self, sample: SendSample | None, now: int, *, lost: bool) -> None:
        """The datagram behind ``sample`` left the in-flight count (lost, or forgotten)."""
        if sample is None:
            return
        self.datagram_bytes_in_flight -= sample.size_bytes
        if lost and not self.estimates_frozen:
            self.congestion.on_packet_lost(now, sample, self.datagram_bytes_in_flight)

    # -- retransmission ---------------------------------------------------------------

    def _loss_delay_ns(self) -> int:
        """How long a packet older than an acknowledged one may still be reordered."""
        delay = self.rtt.loss_delay_ns()
        window = self._reorder_window_ns
        return delay if delay > window else window

    def _probe_timeout_ns(self) -> int:
        """RFC 9002 6.2.1's PTO, for a peer that acknowledges at once (no ACK delay)."""
        rtt = self.rtt
        variation = 4 * rtt.rttvar_ns
        if variation < LOSS_DELAY_GRANULARITY_NS:
            variation = LOSS_DELAY_GRANULARITY_NS
        timeout = rtt.srtt_ns + variation
        return timeout if timeout > MIN_PROBE_TIMEOUT_NS else MIN_PROBE_TIMEOUT_NS

    def _newest_probe_candidate(self) -> InFlightPacket | None:
        """The packet in flight sent last (PINGs aside): what a tail-loss probe resends."""
        newest: InFlightPacket | None = None
        for timers in self._timers:
            if timers:
                record = next(reversed(timers.values()))
                if not record.is_ping and (newest is None or record.sent_ns > newest.sent_ns):
                    newest = record
        return newest

    def _earliest_due(self, rto_ns: int) -> tuple[int, InFlightPacket | None, bool] | None:
        """The earliest deadline and what is due then: a packet's retransmission timer
        (the record), the loss-detection timer of a packet sent before one already
        acknowledged (None), or the tail-loss probe (the record, and True)."""
        best: tuple[int, InFlightPacket | None, bool] | None = None
        latest_ack = self._latest_ack_ns
        acked_sent = self._latest_acked_sent_ns
        loss_delay = -1
        for index, timers in enumerate(self._timers):
            if not timers:
                continue
            record = next(iter(timers.values()))
            # RFC 6298 5.3: the timer restarts with every ACK for new data, so an RTO
            # counted from the send alone cannot fire while the path keeps answering
            # (losses then are found by ACKs, see detect_losses).  For a silent peer
            # the latest ACK is older than the sends: the reference's schedule.
            sent = record.sent_ns
            deadline = (sent if sent > latest_ack else latest_ack) + (rto_ns << index)
            if sent < acked_sent:
                # RFC 9002 6.1.2: a packet sent before an acknowledged one is lost once
                # the loss delay has passed, ACK or no ACK (the last packets before a
                # pause or the end of a transfer have no later ACK to find them).
                if loss_delay < 0:
                    loss_delay = self._loss_delay_ns() + 1  # detect_losses: strictly older
                if sent + loss_delay < deadline:
                    if best is None or sent + loss_delay < best[0]:
                        best = (sent + loss_delay, None, False)
                    continue
            if best is None or deadline < best[0]:
                best = (deadline, record, False)
        if (
            self._probe_armed
            and best is not None
            and best[1] is not None
            and not self.estimates_frozen
            and self.rtt.sample_count
        ):
            # RFC 8985 7 / RFC 9002 6.2: when the newest packets get no ACK for a PTO
            # (srtt + 4 rttvar, without the RTO's 100 ms floor), resend the newest once;
            # its ACK lets the loss detection find the others.
            newest = self._newest_probe_candidate()
            if newest is not None:
                sent = newest.sent_ns
                deadline = (sent if sent > latest_ack else latest_ack) + self._probe_timeout_ns()
                if deadline < best[0]:
                    best = (deadline, newest, True)
        return best

    def next_deadline(self, rto_ns: int) -> int | None:
        """Earliest time at which :meth:`next_retransmission` has something to do."""
        if self._lost or self._suspects:
            return 0
        due = self._earliest_due(rto_ns)
        return None if due is None else due[0]

    def next_retransmission(
        self, now: int, budget: int, rto_ns: int, ack_offset: int | None
    ) -> OutgoingPacket | None:
        """The most urgent due retransmission, or None.

        ``budget`` is the room for the transport payload, ``ack_offset`` the offset
        of the ACK that rides along (None: no ACK); together they decide how much
        data fits, and a packet that no longer fits is split.  Raises
        :class:`RetryLimitExceeded` when a packet's last send timed out.
        """
        if not self.in_flight or (
            not self._lost
            and not self._suspects
            and now == self._quiet_at_ns
            and rto_ns == self._quiet_rto_ns
        ):
            return None
        send = self._send
        suspects = self._suspects
        self.ack_displaced = False
        while True:
            probe = False
            if self._lost:
                record = next(iter(self._lost.values()))
            elif suspects:
                key, suspected_sent_ns = suspects.popleft()
                found = self.in_flight.get(key)
                if found is None or found.lost or found.sent_ns != suspected_sent_ns:
                    continue  # acknowledged, declared lost, or resent meanwhile
                record = found
            else:
                due = self._earliest_due(rto_ns)
                if due is None or due[0] > now:
                    if rto_ns > 0:  # else a packet sent now is due now
                        self._quiet_at_ns = now
                        self._quiet_rto_ns = rto_ns
                    return None
                found = due[1]
                if found is None:  # the loss-detection timer
                    self.detect_losses(self._latest_acked_sent_ns, now, self._loss_delay_ns())
                    continue
                record = found
                probe = due[2]
            key = record.key
            if record.is_ping:
                # Go: a PING is removed, never resent.
                self._forget(record)
                send.on_packet_forgotten(key[0])
                self.lost_pings += 1
                self._release(record.sample, now, lost=True)
                continue
            silent = self._latest_ack_ns <= record.sent_ns
            if probe:
                # A probe is not a timeout: it neither backs off nor counts to the limit,
                # and the datagram it repeats is not taken for lost.
                backoff = record.backoff
            elif (
                silent
                and record.backoff >= self._max_attempts
                and self.peer_heard_ns <= record.sent_ns
            ):
                # Sent the reference's six times in a row without the peer answering
                # anything, through the longest backoff: the peer or the path is gone.
                # Sends that an ACK for other data followed do not count: a peer that
                # keeps acknowledging is alive and the path only lossy (with 20 % loss
                # each way a packet fails six round trips in a row 0.2 % of the time,
                # which a transfer of thousands of packets meets every time).  Nor do
                # sends the peer said anything after: its ACKs may lag (a reference peer
                # without an RTT sample acknowledges one packet per 10 ms, in arrival
                # order, duplicates included).  It is resent at the longest backoff.
                raise RetryLimitExceeded(key, record.attempts)
            else:
                backoff = record.backoff + 1 if silent else 1
                if backoff > self._max_attempts:
                    backoff = self._max_attempts
            stream_id, offset, length = key
            overhead = STREAM_HEADER_SIZE_48 if offset > MAX_OFFSET_24 else STREAM_HEADER_SIZE_24
            if ack_offset is not None:
                with_ack = (
                    STREAM_HEADER_WITH_ACK_SIZE_48
                    if offset > MAX_OFFSET_24 or ack_offset > MAX_OFFSET_24
                    else STREAM_HEADER_WITH_ACK_SIZE_24
                )
                if length <= budget - with_ack:
                    overhead = with_ack
                else:
                    # The packet went out with a smaller header (no ACK, or a 24-bit one):
                    # it goes again without the ACK rather than split, which waits for the
                    # next datagram.  New boundaries would stall a reference receiver for
                    # good when the first copy turns up after the head (see the module
                    # docstring).
                    self.ack_displaced = True
            max_data = min(budget - overhead, MAX_PACKET_DATA_BYTES)
            if max_data < 0 or (length and max_data == 0):
                self.ack_displaced = False
                return None
            peer_window = send.peer_window
            if 0 < peer_window < max_data:
                # The peer cannot store more than its whole free space: a packet larger
                # than that would be dropped on every attempt (a smaller buffer than
                # our first packets assumed, or an application that stopped reading).
                max_data = peer_window
            if probe:
                self._probe_armed = False
                self.probes_sent += 1
            self._unschedule(record)
            timers = self._timers[record.backoff - 1]
            # The datagram that carried it last is lost; the new one gets its own sample.
            self._release(record.sample, now, lost=not probe)
            record.sample = None
            if length <= max_data:
                if record.attempts < self._max_attempts:
                    record.attempts += 1
                record.backoff = backoff
                record.sent_ns = now
                self._timers[backoff - 1][key] = record
                self._last_record = record
                self.retransmitted_packets += 1
                self.retransmitted_bytes += length
                return _tuple_new(
                    OutgoingPacket,
                    (stream_id, offset, record.data, record.is_close, False, record.attempts),
                )
            # Split (Go: ReadyToRetransmit): the head goes out now with a fresh key; the
            # tail keeps send count, send time and CLOSE flag, so it stays due.
            data = record.data
            head = InFlightPacket(
                (stream_id, offset, max_data),
                data[:max_data],
                now,
                min(record.attempts + 1, self._max_attempts),
                False,
                False,
            )
            tail_key = (stream_id, offset + max_data, length - max_data)
            del self.in_flight[key]
            record.key = tail_key
            record.data = data[max_data:]
            self.in_flight[tail_key] = record
            timers[tail_key] = record
            timers.move_to_end(tail_key, last=False)
            head.backoff = backoff
            self.in_flight[head.key] = head
            self._timers[backoff - 1][head.key] = head
            send.on_packet_split(stream_id)
            self._last_record = head
            self.split_packets += 1
            self.retransmitted_packets += 1
            self.retransmitted_bytes += max_data
            return _tuple_new(
                OutgoingPacket, (stream_id, offset, head.data, False, False, head.attempts)
            )

    def _unschedule(self, record: InFlightPacket) -> None:
        """Take a record out of its retransmission queue (timer FIFO or lost list)."""
        if record.lost:
            record.lost = False
            del self._lost[record.key]
        else:
            del self._timers[record.backoff - 1][record.key]

    def _forget(self, record: InFlightPacket) -> None:
        del self.in_flight[record.key]
        self._unschedule(record)

    def discard_stream(self, stream_id: int, now: int) -> None:
        """Forget the stream's packets in flight, and the stream in the send buffer.

        For a stream the connection gives up on (its end, or a reference peer that
        removed its stream and will never ACK our CLOSE).
        """
        freed = 0
        in_flight = self.in_flight
        for key in [key for key in in_flight if key[0] == stream_id]:
            record = in_flight.pop(key)
            self._unschedule(record)
            self._release(record.sample, now, lost=False)
            freed += len(record.data)
        self._send.discard_stream(stream_id, in_flight_bytes=freed)

    # -- acknowledgements -------------------------------------------------------------

    def on_ack_received(
        self, stream_id: int, offset: int, length: int, peer_window: int, now: int
    ) -> None:
        """Apply one ACK (the per-ACK path): :meth:`acknowledge`, then gather the event.

        RTT, congestion control and loss detection see the acknowledgements of one
        ``now`` together, in :meth:`flush_ack_event`.
        """
        if self._ack_event_now >= 0 and now != self._ack_event_now:
            self.flush_ack_event()
        record = self.acknowledge(stream_id, offset, length, peer_window, now)
        if record is None:
            return
        self._ack_event_now = now
        sent = record.sent_ns
        # An ACK sooner than the minimum RTT after a retransmission is the first copy's,
        # sent an unknown time before (see acknowledge): it says nothing of this send's
        # delivery rate or round, nor of what it overtook.
        first_copy = record.attempts > 1 and now - sent < self.rtt.min_rtt_ns
        sample = record.sample
        if sample is not None:
            size = sample.size_bytes
            self.datagram_bytes_in_flight -= size
            self._ack_event_bytes += size
            newest = self._ack_event_newest
            if not first_copy and (newest is None or sample.sent_time_ns >= newest.sent_time_ns):
                self._ack_event_newest = sample
        if sent > self._ack_event_sent_ns and not first_copy:
            self._ack_event_sent_ns = sent
            if record.attempts == 1:
                # All of the batch was acknowledged at ``now``: the newest packet's RTT
                # is the smallest, and the sample a stretch ACK would give (Karn's rule:
                # none from a retransmitted packet).
                self._ack_event_rtt_ns = now - sent

    def acknowledge(
        self, stream_id: int, offset: int, length: int, peer_window: int, now: int
    ) -> InFlightPacket | None:
        """Remove the packet one ACK names and free its bytes; return it, or None.

        Go: AcknowledgeRange.  The window is taken from every ACK, matched or not,
        as the reference does.  An unmatched ACK is not an error: it is a duplicate,
        or it names a packet that was split for retransmission since.  The RTT
        estimator and the congestion controller are not told here
        (:meth:`on_ack_received` is).
        """
        send = self._send
        send.peer_window = peer_window
        key = (stream_id, offset, length)
        record = self.in_flight.pop(key, None)
        if record is None:
            return None
        if record.lost:
            record.lost = False
            del self._lost[key]
        else:
            del self._timers[record.backoff - 1][key]
        sent = record.sent_ns
        if record.attempts > 1 and now - sent < self.rtt.min_rtt_ns:
            # RFC 8985 6.2: an ACK sooner than the minimum RTT after a retransmission is
            # the first copy's (its ACK was late, or lost and repeated), and that copy
            # left an unknown time earlier.  Taking the retransmission's send time for
            # the newest acknowledged one would make every packet sent before it look
            # overtaken: the loss detection would declare a whole round trip lost.
            pass
        elif sent >= self._latest_acked_sent_ns:
            self._latest_acked_sent_ns = sent
        elif record.attempts == 1:
            self.reordered_acks += 1
            extent = self._latest_acked_sent_ns - sent
            window = extent + extent // 4
            if window > self._reorder_window_ns:
                self._reorder_window_ns = window
        self._latest_ack_ns = now
        self._probe_armed = True
        send.on_packet_acked(stream_id, len(record.data))
        return record

    def flush_ack_event(self) -> None:
        """Hand the acknowledgements gathered at one ``now`` to RTT, congestion and loss.

        Datagrams that arrive together (one socket read, one GRO batch) are one event,
        as a stretch ACK is in TCP: one RTT sample (the newest packet's), one
        delivery-rate sample over all the bytes, one pass of loss detection from the
        newest acknowledged send time.  Per ACK, only the records are touched.  Runs
        before anything reads the estimates (sending, timers, statistics) and when an
        ACK arrives at a later ``now``.
        """
        now = self._ack_event_now
        if now < 0:
            return
        self._ack_event_now = -1
        rtt_sample = self._ack_event_rtt_ns
        frozen = self.estimates_frozen
        if rtt_sample > 0:
            self._ack_event_rtt_ns = 0
            if not frozen:
                self.rtt.update(rtt_sample, now)
        newest = self._ack_event_newest
        if newest is not None:
            self._ack_event_newest = None
            acked_bytes, self._ack_event_bytes = self._ack_event_bytes, 0
            if not frozen:
                self.congestion.on_packets_acked(
                    now, newest, acked_bytes, self.datagram_bytes_in_flight
                )
        sent, self._ack_event_sent_ns = self._ack_event_sent_ns, -1
        self.detect_losses(sent, now, self.rtt.loss_delay_ns())

    @property
    def suspects_pending(self) -> int:
        """Suspected packets not resent yet (some may have been acknowledged since)."""
        return len(self._suspects)

    def suspect_sent_between(self, start_ns: int, end_ns: int) -> int:
        """Resend, oldest first, every packet last sent in ``[start_ns, end_ns]``.

        For evidence of loss that names no packet: a peer's receive window showing
        bytes held beyond a hole (:mod:`qotp.congestion.ack_starvation`). The
        packets stay on their timers; a suspect that is acknowledged or resent
        before its turn is skipped. PINGs are left to their timers. Returns how
        many packets were added.
        """
        found = [
            (record.sent_ns, record.key)
            for timers in self._timers
            for record in timers.values()
            if start_ns <= record.sent_ns <= end_ns and not record.is_ping
        ]
        found.sort()
        known = {key for key, _sent in self._suspects}
        self._suspects.extend((key, sent) for sent, key in found if key not in known)
        return len(found)

    def clear_suspects(self) -> None:
        """The evidence is gone (the hole filled): suspects not resent yet stay in flight."""
        self._suspects.clear()

    def detect_losses(self, acked_sent_ns: int, now: int, loss_delay_ns: int) -> None:
        """Packets sent before an acknowledged one, and long enough ago, are lost.

        The time threshold of RFC 9002 section 6.1.2 (the caller passes
        ``9/8 * max(srtt, latest RTT)``, raised here to the reordering window seen
        so far): with one ACK per packet, an earlier packet still unacknowledged
        that long after is not merely reordered.  ``acked_sent_ns`` is the send
        time of the newest packet just acknowledged (negative: nothing to judge).
        Each timer FIFO is ordered by send time, so only heads are examined.
        """
        if acked_sent_ns < 0:
            return
        if loss_delay_ns < self._reorder_window_ns:
            loss_delay_ns = self._reorder_window_ns
        limit = now - loss_delay_ns
        if acked_sent_ns < limit:
            limit = acked_sent_ns
        lost = self._lost
        for timers in self._timers:
            while timers:
                record = next(iter(timers.values()))
                if record.sent_ns >= limit:
                    break
                del timers[record.key]
                record.lost = True
                lost[record.key] = record
