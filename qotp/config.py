"""Tunables of a QOTP endpoint, in one frozen dataclass."""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

from qotp.congestion import CONGESTION_CONTROLLERS, CongestionControllerFactory
from qotp.envelope import DEFAULT_MTU

__all__ = ["QotpConfiguration", "ZeroRttPolicy"]

MIB = 1024 * 1024


class ZeroRttPolicy(Enum):
    """What a responder does with the data in a 0-RTT first packet (InitCryptoSnd).

    Anyone who knows our public key can make such a packet, from any source
    address, and a recorded one opens again for as long as our identity key
    lives; so what it carries proves nothing until the initiator answers our
    reply.  See SPEC.md section 10.12.
    """

    DEFER = "defer"
    """Keep the data (acknowledged, at most one packet) until the initiator's first
    Data packet proves it holds its key and receives at its address; then the
    connection appears and the data is delivered.  A replayed first packet can
    never get that far, so it delivers nothing.  Costs the server application one
    round trip compared with TLS early data."""
    ACCEPT = "accept"
    """Deliver the data at once, as TLS 1.3 early data: the connection appears on
    the first packet, the data is marked replayable (``Connection.early_data``),
    a strike register refuses the same first packet again within its window
    (``qotp.replay.StrikeRegister``), and until the initiator's first Data packet
    the replies are held to three times the bytes received.  For idempotent
    requests only."""
    REFUSE = "refuse"
    """Do not take the data: it is not acknowledged, so the initiator sends it
    again as ordinary data once the handshake completed (after its retransmission
    timeout).  The handshake itself goes on as with DEFER."""


@dataclass(frozen=True, slots=True, kw_only=True)
class QotpConfiguration:
    """Everything a user may want to change, with the reference's defaults."""

    mtu: int = DEFAULT_MTU
    """Largest datagram we send; InitSnd / InitCryptoSnd are padded to it, and
    first packets shorter than it are refused (Go: 1400)."""
    send_buffer_bytes: int = 16 * MIB
    """Queued plus unacknowledged bytes per connection (Go: sndBufferCapacity)."""
    receive_buffer_bytes: int = 16 * MIB
    """Buffered received bytes per connection; free space is advertised (Go: rcvBufferCapacity)."""
    idle_timeout_ns: int = 30_000_000_000
    """A connection that hears nothing for this long ends (Go: ReadDeadLine, 30 s)."""
    congestion_control: str | CongestionControllerFactory = "bbr"
    """``"bbr"`` (default), ``"newreno"``, or a class (factory) making a controller.

    A class is called as ``cls(rtt, max_datagram_bytes=mtu)`` once per
    connection and must implement :class:`qotp.congestion.CongestionController`
    (see :mod:`qotp.congestion.base` for the calling contract)."""
    ack_repeats: bool = True
    """Repeat the previous ACK of a stream in each ACK-only payload, in three bytes the
    reference ignores (:mod:`qotp.payload`, "ACK repeats"): a lost ACK-only datagram then
    no longer costs the peer a retransmission. ``False`` sends what the reference sends."""
    max_datagrams_per_call: int = 64
    """Upper bound on datagrams one ``datagrams_to_send`` call returns per connection."""
    max_connections: int = 100_000
    """Connections one endpoint keeps at most; first packets beyond are dropped."""
    max_streams: int = 1024
    """Streams each side may have open at once on one connection (the reference has no bound).

    Every stream the peer opens costs us receive and close state (about 2 KB
    before any data), so a peer naming millions of stream ids would otherwise
    exhaust memory. Data or a CLOSE that would open a stream beyond this many
    peer-opened ones is *refused*: not stored and not acknowledged (an ACK says
    the bytes are kept), counted in ``ConnectionStatistics.refused_stream_packets``;
    the peer retransmits, and once one of its streams has finished the next copy
    is accepted. A PING never opens a stream and is always acknowledged.

    Our own application gets the same budget: opening a stream beyond it raises
    LocalProtocolError from the command instead of sending packets that a peer
    with this limit would refuse until they reach the retransmission backoff
    (between two of our endpoints with equal settings the refusal path is then
    only hit briefly, while the peer still holds a stream we already ended).
    The two budgets are separate, so a peer cannot use up ours. The wire has no
    way to announce the limit: a peer that keeps many multi-packet streams
    beyond it fills its congestion window with refused packets, which can
    starve its accepted streams until its retry limit ends the connection.

    1024 is a hundred times the ten concurrent streams of the interop tests and
    far above what a multi-stream file transfer uses; beyond it, each stream's
    share of the 16 MiB receive window drops under 16 KiB, so more streams would
    not move data faster. Worst case about 2 MB of stream state per connection.
    Against the reference, which gives up after six sends, keep its concurrent
    streams within this limit (or raise it)."""
    max_stream_tombstones: int = 65_536
    """Finished streams remembered at most per connection (tombstone entries).

    A finished stream's id is kept for two minutes (``qotp.recv``, "Tombstones"),
    so that a late retransmission is acknowledged again instead of opening the
    stream anew and delivering its bytes twice. Sequentially numbered streams
    share one entry per run; other ids cost one entry each (4 to 8 bytes). When
    the count is reached, new streams from the peer are refused until entries
    expire, never forgotten early: a peer numbering its streams at random is then
    held to about 480 new streams per second. At most about 512 KiB per
    connection."""

    zero_rtt: ZeroRttPolicy = ZeroRttPolicy.DEFER
    """What a responder does with 0-RTT data (see :class:`ZeroRttPolicy`)."""
    max_pending_handshakes: int = 16_384
    """Handshakes in progress a responder keeps at most (``qotp.handshakes``); the
    oldest goes first.  Each costs about 0.5 KB (up to 1.9 KB with 0-RTT data)."""
    max_pending_handshake_bytes: int = 16 * MIB
    """Bytes the handshakes in progress may hold at most, 0-RTT data included."""

    def __post_init__(self) -> None:
        if not 128 <= self.mtu <= 65_507:
            raise ValueError(f"mtu {self.mtu} out of range 128..65507")
        if self.send_buffer_bytes <= 0 or self.receive_buffer_bytes <= 0:
            raise ValueError("buffer sizes must be positive")
        if self.idle_timeout_ns <= 0:
            raise ValueError("idle_timeout_ns must be positive")
        if self.max_pending_handshakes <= 0 or self.max_pending_handshake_bytes <= 0:
            raise ValueError("handshake table limits must be positive")
        if self.max_streams <= 0 or self.max_stream_tombstones <= 0:
            raise ValueError("max_streams and max_stream_tombstones must be positive")
        if isinstance(self.congestion_control, str):
            if self.congestion_control not in CONGESTION_CONTROLLERS:
                names = ", ".join(sorted(CONGESTION_CONTROLLERS))
                raise ValueError(
                    f"unknown congestion control {self.congestion_control!r}: one of {names}, "
                    "or a controller class"
                )
        elif not callable(self.congestion_control):
            raise ValueError("congestion_control is a name or a controller class")
