"""A peer's side of the rendezvous, sans-IO: registration, introductions, punching, relay binds.

It shares the peer's UDP socket with QOTP: the adapter hands it only
datagrams that start with the rendezvous magic, and sends what it returns
from the same socket, so the NAT mapping the server saw is the one that
punches and later carries the QOTP connection.

Punching: on an introduction both peers send PUNCH datagrams to the other's
public address every ``punch_interval_ns`` until ``punch_timeout_ns``.  The
first PUNCH that gets through our NAT and theirs is answered with PUNCH_ACK;
receiving either proves a path, and the address it came from is the one to
use (for a peer behind a NAT that is port-preserving only towards some
destinations, that is not the address the server saw).  Reported as
:class:`PunchSucceeded`, or :class:`PunchFailed` at the deadline; the
adapter then relays through the server.
"""

from __future__ import annotations

import logging
from collections import deque
from dataclasses import dataclass, field

from qotp.keys import KeyPair
from qotp.protection import Address
from qotp.rendezvous.messages import (
    COOKIE_BYTES,
    ChallengeMessage,
    ConnectMessage,
    ErrorCode,
    ErrorMessage,
    IntroAckMessage,
    IntroduceMessage,
    PunchAckMessage,
    PunchMessage,
    RegisteredMessage,
    RegisterMessage,
    RelayBindMessage,
    RelayBoundMessage,
    RendezvousDecodeError,
    RendezvousMessage,
    check_name,
    decode_message,
    encode_message,
)
from qotp.rendezvous.registration import prove_registration

__all__ = [
    "ClientEvent",
    "ConnectFailed",
    "Introduced",
    "PunchFailed",
    "PunchSucceeded",
    "Registered",
    "RegistrationFailed",
    "RelayBound",
    "RelayFailed",
    "RendezvousClient",
]

logger = logging.getLogger(__name__)

MS_NS = 1_000_000
SECOND_NS = 1_000_000_000
REGISTER_RESEND_NS = 500 * MS_NS
REGISTER_RESEND_MAX_NS = 4 * SECOND_NS
REQUEST_RESEND_NS = 500 * MS_NS
REQUEST_MAX_SENDS = 10


# -- events -------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class Registered:
    """The server registered us; this is our public address as it sees it."""

    public_address: Address


@dataclass(frozen=True, slots=True, kw_only=True)
class RegistrationFailed:
    """The server refused our registration (name taken, full)."""

    reason: str


@dataclass(frozen=True, slots=True, kw_only=True)
class Introduced:
    """We were introduced to a peer; punching towards it has started."""

    token: bytes
    name: str
    public_key: bytes
    address: Address
    dialer: bool


@dataclass(frozen=True, slots=True, kw_only=True)
class ConnectFailed:
    """An introduction we asked for was refused or never came."""

    name: str
    reason: str


@dataclass(frozen=True, slots=True, kw_only=True)
class PunchSucceeded:
    """A direct path to the peer works; ``address`` is where it answers from."""

    token: bytes
    address: Address


@dataclass(frozen=True, slots=True, kw_only=True)
class PunchFailed:
    """No punch got through before the deadline."""

    token: bytes


@dataclass(frozen=True, slots=True, kw_only=True)
class RelayBound:
    """The server relays this connection id now."""

    token: bytes
    connection_id: int


@dataclass(frozen=True, slots=True, kw_only=True)
class RelayFailed:
    """The server would not relay (limits), or did not answer."""

    token: bytes
    reason: str


ClientEvent = (
    Registered
    | RegistrationFailed
    | Introduced
    | ConnectFailed
    | PunchSucceeded
    | PunchFailed
    | RelayBound
    | RelayFailed
)


# -- state ----------------------------------------------------------------------------


@dataclass(slots=True)
class _Request:
    message: RendezvousMessage
    next_send: int
    sends_left: int


@dataclass(slots=True)
class _Attempt:
    introduction: IntroduceMessage
    next_punch: int | None = None
    deadline: int = 0
    confirmed: Address | None = None
    reported_failure: bool = False
    binds: dict[int, _Request] = field(default_factory=dict)


class RendezvousClient:
    """Registration under ``name`` with ``server``, and everything that follows from it."""

    def __init__(
        self,
        *,
        identity: KeyPair,
        name: str,
        server: Address,
        punch_timeout_ns: int = 3 * SECOND_NS,
        punch_interval_ns: int = 100 * MS_NS,
    ) -> None:
        self.identity = identity
        self.name = check_name(name)
        self.server = server
        self.punch_timeout_ns = punch_timeout_ns
        self.punch_interval_ns = punch_interval_ns
        self.public_address: Address | None = None
        self._cookie = bytes(COOKIE_BYTES)
        self._proof = bytes(32)
        self._keepalive_ns = 15 * SECOND_NS
        self._register_at: int | None = None
        self._register_backoff = REGISTER_RESEND_NS
        self._awaiting_registration = False
        self._next_request = 1
        self._connects: dict[int, tuple[str, _Request]] = {}
        self._attempts: dict[bytes, _Attempt] = {}
        self._output: list[tuple[bytes, Address]] = []
        self._events: deque[ClientEvent] = deque()
        self.drops = 0

    # -- commands -------------------------------------------------------------------

    def start(self, now: int) -> None:
        """Register (and keep re-registering: the keep-alive of our NAT mapping)."""
        self._send_register(now)

    def connect(self, name: str, now: int) -> None:
        """Ask the server to introduce us to ``name`` (resent until it answers)."""
        request = self._next_request
        self._next_request += 1
        message = ConnectMessage(request=request, name=check_name(name))
        self._connects[request] = (name, _Request(message, now, REQUEST_MAX_SENDS))
        self._flush_request(self._connects[request][1], now)

    def punch(self, token: bytes, now: int) -> None:
        """(Re)start punching towards an introduced peer (e.g. to leave the relay later)."""
        attempt = self._attempts.get(token)
        if attempt is None:
            return
        attempt.confirmed = None
        attempt.reported_failure = False
        attempt.deadline = now + self.punch_timeout_ns
        attempt.next_punch = now
        self._punch_due(attempt, now)

    def bind_relay(self, token: bytes, connection_id: int, now: int) -> None:
        """Ask the server to relay this QOTP connection id to the introduced peer."""
        attempt = self._attempts.get(token)
        if attempt is None:
            self._events.append(RelayFailed(token=token, reason="unknown introduction"))
            return
        request = _Request(
            RelayBindMessage(token=token, connection_id=connection_id), now, REQUEST_MAX_SENDS
        )
        attempt.binds[connection_id] = request
        self._flush_request(request, now)

    def forget(self, token: bytes) -> None:
        """Drop an introduction (its link ended): a new one with the same token starts afresh."""
        self._attempts.pop(token, None)

    def peer_address(self, token: bytes) -> Address | None:
        """The confirmed direct address of an introduced peer, if punching worked."""
        attempt = self._attempts.get(token)
        return None if attempt is None else attempt.confirmed

    # -- driving surface --------------------------------------------------------------

    def receive_datagram(self, data: bytes, address: Address, now: int) -> None:
        """One datagram that starts with the rendezvous magic."""
        try:
            message = decode_message(data)
        except RendezvousDecodeError as error:
            self.drops += 1
            logger.debug("dropped rendezvous datagram from %s: %s", address, error)
            return
        if isinstance(message, PunchMessage | PunchAckMessage):
            self._on_punch(message, address)
            return
        if address != self.server:
            self.drops += 1
            return
        if isinstance(message, ChallengeMessage):
            self._on_challenge(message, now)
        elif isinstance(message, RegisteredMessage):
            self._on_registered(message, now)
        elif isinstance(message, IntroduceMessage):
            self._on_introduce(message, now)
        elif isinstance(message, ErrorMessage):
            self._on_error(message)
        elif isinstance(message, RelayBoundMessage):
            self._on_relay_bound(message)
        else:
            self.drops += 1

    def datagrams_to_send(self, now: int) -> list[tuple[bytes, Address]]:
        """What to send from the shared socket."""
        output, self._output = self._output, []
        return output

    def get_timer(self) -> int | None:
        """The next deadline (ns)."""
        deadlines: list[int] = []
        if self._register_at is not None:
            deadlines.append(self._register_at)
        deadlines.extend(request.next_send for _name, request in self._connects.values())
        for attempt in self._attempts.values():
            if attempt.next_punch is not None:
                deadlines.append(min(attempt.next_punch, attempt.deadline))
            deadlines.extend(request.next_send for request in attempt.binds.values())
        return min(deadlines) if deadlines else None

    def handle_timer(self, now: int) -> None:
        """Resend, re-register, punch, give up."""
        if self._register_at is not None and now >= self._register_at:
            if self._awaiting_registration:
                # Unanswered: our cookie may have expired; ask for a new one.
                self._cookie = bytes(COOKIE_BYTES)
                self._register_backoff = min(2 * self._register_backoff, REGISTER_RESEND_MAX_NS)
            self._send_register(now)
        for request_id, (name, request) in list(self._connects.items()):
            if now >= request.next_send:
                if request.sends_left <= 0:
                    del self._connects[request_id]
                    self._events.append(ConnectFailed(name=name, reason="no answer"))
                else:
                    self._flush_request(request, now)
        for token, attempt in self._attempts.items():
            self._punch_due(attempt, now)
            for connection_id, request in list(attempt.binds.items()):
                if now >= request.next_send:
                    if request.sends_left <= 0:
                        del attempt.binds[connection_id]
                        self._events.append(RelayFailed(token=token, reason="no answer"))
                    else:
                        self._flush_request(request, now)

    def next_event(self) -> ClientEvent | None:
        """The oldest event, or None."""
        return self._events.popleft() if self._events else None

    # -- internals ----------------------------------------------------------------------

    def _send(self, message: RendezvousMessage, address: Address) -> None:
        self._output.append((encode_message(message), address))

    def _flush_request(self, request: _Request, now: int) -> None:
        self._send(request.message, self.server)
        request.sends_left -= 1
        request.next_send = now + REQUEST_RESEND_NS

    def _send_register(self, now: int) -> None:
        self._send(
            RegisterMessage(
                name=self.name,
                public_key=self.identity.public_key,
                cookie=self._cookie,
                proof=self._proof,
            ),
            self.server,
        )
        self._awaiting_registration = True
        self._register_at = now + self._register_backoff

    def _on_challenge(self, message: ChallengeMessage, now: int) -> None:
        try:
            proof = prove_registration(self.identity, message.server_key, message.cookie, self.name)
        except Exception:  # a low-order server key: nothing to prove against
            self.drops += 1
            return
        self._cookie, self._proof = message.cookie, proof
        self._send_register(now)

    def _on_registered(self, message: RegisteredMessage, now: int) -> None:
        changed = message.observed_address != self.public_address
        self.public_address = message.observed_address
        self._keepalive_ns = max(1, message.keepalive_s) * SECOND_NS
        self._awaiting_registration = False
        self._register_backoff = REGISTER_RESEND_NS
        self._register_at = now + self._keepalive_ns
        if changed:
            self._events.append(Registered(public_address=message.observed_address))

    def _on_introduce(self, message: IntroduceMessage, now: int) -> None:
        self._send(IntroAckMessage(token=message.token), self.server)
        for request_id, (name, _request) in list(self._connects.items()):
            if name == message.name:
                del self._connects[request_id]
        attempt = self._attempts.get(message.token)
        if attempt is not None:
            if attempt.confirmed is None and attempt.introduction.address != message.address:
                attempt.introduction = message
            return
        self._attempts[message.token] = _Attempt(introduction=message)
        self._events.append(
            Introduced(
                token=message.token,
                name=message.name,
                public_key=message.public_key,
                address=message.address,
                dialer=message.dialer,
            )
        )
        self.punch(message.token, now)

    def _on_error(self, message: ErrorMessage) -> None:
        if message.code in (ErrorCode.NAME_TAKEN, ErrorCode.BAD_REQUEST) and message.request == 0:
            self._events.append(RegistrationFailed(reason=message.text))
            self._register_at = None
            return
        if message.code is ErrorCode.RELAY_REFUSED:
            for token, attempt in self._attempts.items():
                if attempt.binds:
                    attempt.binds.clear()
                    self._events.append(RelayFailed(token=token, reason=message.text))
            return
        if message.code is ErrorCode.NOT_REGISTERED:
            self._cookie = bytes(COOKIE_BYTES)
            self._register_at = None
        entry = self._connects.pop(message.request, None)
        if entry is not None:
            self._events.append(ConnectFailed(name=entry[0], reason=message.text))

    def _on_relay_bound(self, message: RelayBoundMessage) -> None:
        attempt = self._attempts.get(message.token)
        if attempt is None or attempt.binds.pop(message.connection_id, None) is None:
            return
        self._events.append(RelayBound(token=message.token, connection_id=message.connection_id))

    def _on_punch(self, message: PunchMessage | PunchAckMessage, address: Address) -> None:
        attempt = self._attempts.get(message.token)
        if attempt is None:
            self.drops += 1
            return
        if isinstance(message, PunchMessage):
            self._send(PunchAckMessage(token=message.token), address)
        if attempt.confirmed is None:
            attempt.confirmed = address
            attempt.next_punch = None
            self._events.append(PunchSucceeded(token=message.token, address=address))

    def _punch_due(self, attempt: _Attempt, now: int) -> None:
        if attempt.next_punch is None or attempt.confirmed is not None:
            return
        if now >= attempt.deadline:
            attempt.next_punch = None
            if not attempt.reported_failure:
                attempt.reported_failure = True
                self._events.append(PunchFailed(token=attempt.introduction.token))
            return
        if now >= attempt.next_punch:
            self._send(PunchMessage(token=attempt.introduction.token), attempt.introduction.address)
            attempt.next_punch = now + self.punch_interval_ns
