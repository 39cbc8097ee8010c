"""The rendezvous server, sans-IO: registrations, introductions, and a relay of last resort.

Theory of operation
===================

Peers register under a name (:mod:`qotp.rendezvous.registration`); the
server records the public address each registration came from, which is the
address the peer's NAT gives that socket.  A peer asks to be introduced to
another by name; the server sends both an INTRODUCE at the same moment, each
naming the other's public address and key, one token for the pair, and who
dials (the smaller key, so both agree even when both asked at once).  Both
punch from their registered socket; the dialer then opens one QOTP
connection.

Where punching fails (both sides behind NATs that pick a new port per
destination), the dialer binds its QOTP connection id to the introduction
(RELAY_BIND) and sends its QOTP datagrams to the server, which forwards every
datagram carrying that connection id from one of the pair to the other's
registered address.  It reads nothing but the cleartext connection id: the
keys stay with the peers, so the relay sees only sealed packets.  Relaying is
bounded: per peer (a token bucket of bytes per second and a number of
relays) and in total (bytes per second and relays).

The server keeps no clock: every call takes ``now`` (ns).  It never raises for
what a peer sends; bad datagrams are counted in :attr:`RendezvousServer.drops`.
"""

from __future__ import annotations

import logging
import os
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import dataclass, field

from qotp.envelope import decode_envelope_header
from qotp.errors import DecodeError
from qotp.keys import KeyPair
from qotp.protection import Address
from qotp.rendezvous.messages import (
    ChallengeMessage,
    ConnectMessage,
    ErrorCode,
    ErrorMessage,
    IntroAckMessage,
    IntroduceMessage,
    RegisteredMessage,
    RegisterMessage,
    RelayBindMessage,
    RelayBoundMessage,
    RendezvousDecodeError,
    RendezvousMessage,
    decode_message,
    encode_message,
    is_rendezvous_datagram,
)
from qotp.rendezvous.registration import registration_cookies, verify_registration

__all__ = [
    "PeerExpired",
    "PeerRegistered",
    "PeersIntroduced",
    "RelayClosed",
    "RelayOpened",
    "RendezvousConfiguration",
    "RendezvousServer",
    "ServerEvent",
    "TokenBucket",
]

logger = logging.getLogger(__name__)

SECOND_NS = 1_000_000_000


@dataclass(frozen=True, slots=True, kw_only=True)
class RendezvousConfiguration:
    """Limits and timings of a rendezvous server."""

    keepalive_s: int = 15
    """How often peers re-register; also keeps their NAT mapping to us open."""
    registration_lifetime_ns: int = 50 * SECOND_NS
    """A peer not heard from for this long is forgotten (three keep-alives and some)."""
    max_peers: int = 10_000
    introduction_resend_ns: int = 250_000_000
    introduction_max_sends: int = 12
    introduction_reuse_ns: int = 30 * SECOND_NS
    """A second request for the same pair within this time gets the same token."""
    introduction_lifetime_ns: int = 600 * SECOND_NS
    """Tokens stay valid this long for relay binds."""
    max_relays: int = 1_000
    max_relays_per_peer: int = 8
    relay_idle_ns: int = 120 * SECOND_NS
    relay_bytes_per_s_per_peer: int = 8_000_000
    relay_bytes_per_s_total: int = 64_000_000
    relay_burst_bytes: int = 512 * 1024

    def __post_init__(self) -> None:
        if not 1 <= self.keepalive_s <= 3600:
            raise ValueError("keepalive_s must be in 1..3600")
        if min(self.max_peers, self.max_relays, self.max_relays_per_peer) < 0:
            raise ValueError("limits must not be negative")
        if min(self.relay_bytes_per_s_per_peer, self.relay_bytes_per_s_total) < 0:
            raise ValueError("relay rates must not be negative")


class TokenBucket:
    """Bytes per second with a burst allowance, refilled from ``now`` (ns)."""

    __slots__ = ("_level", "_updated", "burst", "rate")

    def __init__(self, rate: int, burst: int, now: int) -> None:
        self.rate = rate
        self.burst = burst
        self._level = float(burst)
        self._updated = now

    def take(self, amount: int, now: int) -> bool:
        """Spend ``amount`` bytes if the bucket holds them."""
        elapsed = max(0, now - self._updated)
        self._updated = now
        self._level = min(float(self.burst), self._level + elapsed * self.rate / SECOND_NS)
        if self._level < amount:
            return False
        self._level -= amount
        return True


# -- events ---------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class PeerRegistered:
    """A peer registered, or appears from a new address."""

    name: str
    address: Address
    public_key: bytes


@dataclass(frozen=True, slots=True, kw_only=True)
class PeerExpired:
    """A peer stopped refreshing its registration."""

    name: str


@dataclass(frozen=True, slots=True, kw_only=True)
class PeersIntroduced:
    """Two peers were told about each other."""

    requester: str
    target: str
    token: bytes


@dataclass(frozen=True, slots=True, kw_only=True)
class RelayOpened:
    """The relay forwards a connection between two peers."""

    connection_id: int
    peers: tuple[str, str]


@dataclass(frozen=True, slots=True, kw_only=True)
class RelayClosed:
    """A relayed connection went idle (or a peer left); what it carried."""

    connection_id: int
    peers: tuple[str, str]
    datagrams: int
    bytes: int


ServerEvent = PeerRegistered | PeerExpired | PeersIntroduced | RelayOpened | RelayClosed


# -- state ------------------------------------------------------------------------


@dataclass(slots=True)
class _Peer:
    name: str
    public_key: bytes
    address: Address
    last_seen: int
    bucket: TokenBucket
    relays: set[int] = field(default_factory=set)


@dataclass(slots=True)
class _Introduction:
    token: bytes
    names: tuple[str, str]
    created: int
    pending: dict[str, tuple[int, int]] = field(default_factory=dict)
    """Peer name -> (next send ns, sends left) until that peer acknowledges."""


@dataclass(slots=True)
class _Relay:
    token: bytes
    names: tuple[str, str]
    last_used: int
    datagrams: int = 0
    bytes: int = 0


class RendezvousServer:
    """Introductions and relaying for peers behind NATs; drive it like an endpoint."""

    def __init__(
        self,
        *,
        identity: KeyPair | None = None,
        configuration: RendezvousConfiguration | None = None,
        random_bytes: Callable[[int], bytes] = os.urandom,
        now: int,
    ) -> None:
        self.identity = identity or KeyPair.generate()
        self.configuration = configuration or RendezvousConfiguration()
        self._random = random_bytes
        self._secret = random_bytes(32)
        self._peers: dict[str, _Peer] = {}
        self._by_address: dict[Address, str] = {}
        self._introductions: dict[bytes, _Introduction] = {}
        self._pair_tokens: dict[frozenset[str], bytes] = {}
        self._relays: dict[int, _Relay] = {}
        self._resending: set[bytes] = set()
        """Tokens of introductions some peer has not acknowledged yet."""
        self._output: list[tuple[bytes, Address]] = []
        self._events: deque[ServerEvent] = deque()
        config = self.configuration
        self._total_bucket = TokenBucket(
            config.relay_bytes_per_s_total, max(config.relay_burst_bytes, 4096), now
        )
        self._next_sweep = now + SECOND_NS
        self.drops: Counter[str] = Counter()
        """Datagrams dropped, by reason."""
        self.counters: Counter[str] = Counter()
        """Registrations, introductions, relayed datagrams and bytes."""

    @property
    def public_key(self) -> bytes:
        """The server's key, which peers prove their registration against."""
        return self.identity.public_key

    # -- driving surface -------------------------------------------------------------

    def receive_datagram(self, data: bytes, address: Address, now: int) -> None:
        """Handle one datagram: a rendezvous message, or one to relay."""
        if not is_rendezvous_datagram(data):
            self._relay(data, address, now)
            return
        try:
            message = decode_message(data)
        except RendezvousDecodeError as error:
            self.drops["undecodable"] += 1
            logger.debug("dropped datagram from %s: %s", address, error)
            return
        if isinstance(message, RegisterMessage):
            self._on_register(message, address, now)
        elif isinstance(message, ConnectMessage):
            self._on_connect(message, address, now)
        elif isinstance(message, IntroAckMessage):
            self._on_intro_ack(message, address)
        elif isinstance(message, RelayBindMessage):
            self._on_relay_bind(message, address, now)
        else:
            self.drops["unexpected message"] += 1

    def datagrams_to_send(self, now: int) -> list[tuple[bytes, Address]]:
        """Replies, introductions and relayed datagrams, in order."""
        output, self._output = self._output, []
        return output

    def get_timer(self) -> int | None:
        """The next deadline (ns): an introduction to resend, or the expiry sweep."""
        deadline = self._next_sweep
        for token in self._resending:
            for next_send, _left in self._introductions[token].pending.values():
                deadline = min(deadline, next_send)
        return deadline

    def handle_timer(self, now: int) -> None:
        """Resend unacknowledged introductions; forget expired peers, relays and tokens."""
        for token in list(self._resending):
            introduction = self._introductions[token]
            for name, (next_send, left) in list(introduction.pending.items()):
                if next_send > now:
                    continue
                if left <= 0:
                    del introduction.pending[name]
                    continue
                self._send_introduction(introduction, name, now, left - 1)
            if not introduction.pending:
                self._resending.discard(token)
        if now >= self._next_sweep:
            self._sweep(now)
            self._next_sweep = now + SECOND_NS

    def next_event(self) -> ServerEvent | None:
        """The oldest event (for logs), or None."""
        return self._events.popleft() if self._events else None

    def statistics(self) -> dict[str, int]:
        """Peers, relays, counters and drops, flat."""
        stats = {
            "peers": len(self._peers),
            "relays": len(self._relays),
            "relayed_datagrams": self.counters["relayed_datagrams"],
            "relayed_bytes": self.counters["relayed_bytes"],
            "registrations": self.counters["registrations"],
            "introductions": self.counters["introductions"],
        }
        for reason, count in self.drops.items():
            stats[f"dropped_{reason.replace(' ', '_')}"] = count
        return stats

    # -- messages --------------------------------------------------------------------

    def _send(self, message: RendezvousMessage, address: Address) -> None:
        self._output.append((encode_message(message), address))

    def _error(self, address: Address, request: int, code: ErrorCode, text: str) -> None:
        self._send(ErrorMessage(request=request, code=code, text=text), address)

    def _on_register(self, message: RegisterMessage, address: Address, now: int) -> None:
        cookies = registration_cookies(self._secret, address, message.public_key, now)
        if message.cookie not in cookies:
            self._send(ChallengeMessage(server_key=self.public_key, cookie=cookies[0]), address)
            return
        if not verify_registration(
            self.identity, message.public_key, message.cookie, message.name, message.proof
        ):
            self.drops["bad registration proof"] += 1
            return
        config = self.configuration
        peer = self._peers.get(message.name)
        if peer is not None and peer.public_key != message.public_key:
            if now - peer.last_seen < config.registration_lifetime_ns:
                self._error(address, 0, ErrorCode.NAME_TAKEN, f"{message.name} is taken")
                return
            self._forget_peer(peer)
            peer = None
        if peer is None:
            if len(self._peers) >= config.max_peers:
                self._error(address, 0, ErrorCode.BAD_REQUEST, "the rendezvous is full")
                return
            peer = _Peer(
                name=message.name,
                public_key=message.public_key,
                address=address,
                last_seen=now,
                bucket=TokenBucket(
                    config.relay_bytes_per_s_per_peer, config.relay_burst_bytes, now
                ),
            )
            self._peers[peer.name] = peer
            self._claim_address(peer, address)
            self.counters["registrations"] += 1
            self._events.append(
                PeerRegistered(name=peer.name, address=address, public_key=peer.public_key)
            )
        elif peer.address != address:
            # The same key from a new address: the peer roamed or its NAT rebound.
            self._by_address.pop(peer.address, None)
            peer.address = address
            self._claim_address(peer, address)
            self._events.append(
                PeerRegistered(name=peer.name, address=address, public_key=peer.public_key)
            )
        peer.last_seen = now
        self._send(
            RegisteredMessage(observed_address=address, keepalive_s=config.keepalive_s), address
        )

    def _claim_address(self, peer: _Peer, address: Address) -> None:
        previous = self._by_address.get(address)
        if previous is not None and previous != peer.name:
            # A NAT handed the port of a gone peer to a new one.
            stale = self._peers.get(previous)
            if stale is not None:
                self._forget_peer(stale)
        self._by_address[address] = peer.name

    def _on_connect(self, message: ConnectMessage, address: Address, now: int) -> None:
        requester_name = self._by_address.get(address)
        requester = None if requester_name is None else self._peers.get(requester_name)
        if requester is None:
            self._error(address, message.request, ErrorCode.NOT_REGISTERED, "register first")
            return
        requester.last_seen = now
        target = self._peers.get(message.name)
        if target is None:
            self._error(
                address, message.request, ErrorCode.UNKNOWN_PEER, f"no peer named {message.name}"
            )
            return
        if target is requester:
            self._error(address, message.request, ErrorCode.BAD_REQUEST, "that is you")
            return
        pair = frozenset((requester.name, target.name))
        token = self._pair_tokens.get(pair)
        introduction = None if token is None else self._introductions.get(token)
        if (
            introduction is None
            or now - introduction.created > self.configuration.introduction_reuse_ns
        ):
            token = self._random(16)
            introduction = _Introduction(
                token=token, names=(requester.name, target.name), created=now
            )
            self._introductions[token] = introduction
            self._pair_tokens[pair] = token
            self.counters["introductions"] += 1
            self._events.append(
                PeersIntroduced(requester=requester.name, target=target.name, token=token)
            )
        # Both at the same moment: that is what makes simultaneous punching work.
        left = self.configuration.introduction_max_sends - 1
        for name in introduction.names:
            self._send_introduction(introduction, name, now, left)

    def _send_introduction(
        self, introduction: _Introduction, name: str, now: int, left: int
    ) -> None:
        first, second = introduction.names
        peer = self._peers.get(name)
        other = self._peers.get(second if name == first else first)
        if peer is None or other is None:
            introduction.pending.pop(name, None)
            return
        self._send(
            IntroduceMessage(
                token=introduction.token,
                dialer=peer.public_key < other.public_key,
                public_key=other.public_key,
                address=other.address,
                name=other.name,
            ),
            peer.address,
        )
        introduction.pending[name] = (now + self.configuration.introduction_resend_ns, left)
        self._resending.add(introduction.token)

    def _on_intro_ack(self, message: IntroAckMessage, address: Address) -> None:
        introduction = self._introductions.get(message.token)
        name = self._by_address.get(address)
        if introduction is None or name is None:
            self.drops["stray acknowledgement"] += 1
            return
        introduction.pending.pop(name, None)
        if not introduction.pending:
            self._resending.discard(message.token)

    def _on_relay_bind(self, message: RelayBindMessage, address: Address, now: int) -> None:
        name = self._by_address.get(address)
        introduction = self._introductions.get(message.token)
        if name is None or introduction is None or name not in introduction.names:
            self._error(address, 0, ErrorCode.RELAY_REFUSED, "no such introduction")
            return
        relay = self._relays.get(message.connection_id)
        if relay is not None:
            if relay.token != message.token:
                self._error(address, 0, ErrorCode.RELAY_REFUSED, "connection id in use")
                return
        else:
            config = self.configuration
            peers = [self._peers.get(member) for member in introduction.names]
            if len(self._relays) >= config.max_relays or any(
                peer is None or len(peer.relays) >= config.max_relays_per_peer for peer in peers
            ):
                self.drops["relay limit"] += 1
                self._error(address, 0, ErrorCode.RELAY_REFUSED, "relay limit reached")
                return
            relay = _Relay(token=message.token, names=introduction.names, last_used=now)
            self._relays[message.connection_id] = relay
            for peer in peers:
                assert peer is not None
                peer.relays.add(message.connection_id)
            self._events.append(
                RelayOpened(connection_id=message.connection_id, peers=introduction.names)
            )
        relay.last_used = now
        self._send(
            RelayBoundMessage(token=message.token, connection_id=message.connection_id), address
        )

    # -- relaying --------------------------------------------------------------------

    def _relay(self, data: bytes, address: Address, now: int) -> None:
        name = self._by_address.get(address)
        if name is None:
            self.drops["relay from unknown address"] += 1
            return
        try:
            connection_id = int(decode_envelope_header(data, mtu=0).connection_id)
        except DecodeError:
            self.drops["undecodable"] += 1
            return
        relay = self._relays.get(connection_id)
        if relay is None or name not in relay.names:
            self.drops["relay not bound"] += 1
            return
        first, second = relay.names
        sender = self._peers.get(name)
        receiver = self._peers.get(second if name == first else first)
        if sender is None or receiver is None:
            self.drops["relay peer gone"] += 1
            return
        size = len(data)
        if not sender.bucket.take(size, now) or not self._total_bucket.take(size, now):
            self.drops["relay rate"] += 1
            return
        relay.last_used = now
        relay.datagrams += 1
        relay.bytes += size
        self.counters["relayed_datagrams"] += 1
        self.counters["relayed_bytes"] += size
        self._output.append((data, receiver.address))

    # -- expiry ----------------------------------------------------------------------

    def _forget_peer(self, peer: _Peer) -> None:
        self._peers.pop(peer.name, None)
        if self._by_address.get(peer.address) == peer.name:
            del self._by_address[peer.address]
        for connection_id in list(peer.relays):
            self._close_relay(connection_id)

    def _close_relay(self, connection_id: int) -> None:
        relay = self._relays.pop(connection_id, None)
        if relay is None:
            return
        for name in relay.names:
            peer = self._peers.get(name)
            if peer is not None:
                peer.relays.discard(connection_id)
        self._events.append(
            RelayClosed(
                connection_id=connection_id,
                peers=relay.names,
                datagrams=relay.datagrams,
                bytes=relay.bytes,
            )
        )

    def _sweep(self, now: int) -> None:
        config = self.configuration
        for peer in list(self._peers.values()):
            if now - peer.last_seen > config.registration_lifetime_ns:
                self._forget_peer(peer)
                self._events.append(PeerExpired(name=peer.name))
        for connection_id, relay in list(self._relays.items()):
            if now - relay.last_used > config.relay_idle_ns:
                self._close_relay(connection_id)
        live_tokens = {relay.token for relay in self._relays.values()}
        for token, introduction in list(self._introductions.items()):
            expired = now - introduction.created > config.introduction_lifetime_ns
            if expired and token not in live_tokens:
                del self._introductions[token]
                self._resending.discard(token)
                pair = frozenset(introduction.names)
                if self._pair_tokens.get(pair) == token:
                    del self._pair_tokens[pair]
