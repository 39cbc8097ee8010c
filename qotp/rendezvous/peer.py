"""A peer behind a NAT (asyncio): register, get introduced, punch, connect once, relay if need be.

One :class:`~qotp.asyncio.QotpListener` socket does everything: it registers
with the rendezvous (keeping that NAT mapping alive), punches towards an
introduced peer and carries the QOTP connection, so the hole the punches
opened is the one the connection uses.

Exactly one connection per pair: the introduction names one dialer (the
peer with the smaller key), so even when both peers ask at once only one
dials, with 0-RTT to the key the introduction carried.  The other accepts
only a connection from the key it was introduced to, and both then prove
their identity keys (:mod:`qotp.identity_proof`) before the link counts as
connected, because QOTP's handshake does not authenticate the dialer.

Where no punch gets through in time, the dialer binds its connection id at
the rendezvous and sends through it; the rendezvous forwards the sealed
datagrams.  Punching is retried now and then; when a direct path appears,
the dialer moves the connection to it and the other side follows once the
path proved itself (see :meth:`QotpConnection.move_to`).  Keep-alive PINGs
hold the NAT mappings (and QOTP's idle timeout) open.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any

from qotp.asyncio import AddressChange, QotpConnection, QotpListener, listen
from qotp.asyncio.driver import ClosesOnExit, DeadlineTimer
from qotp.config import QotpConfiguration
from qotp.events import TerminationReason
from qotp.identity_proof import NONCE_BYTES, PROOF_BYTES, new_nonce, prove, verify
from qotp.keys import KeyPair
from qotp.protection import Address
from qotp.rendezvous.client import (
    ConnectFailed,
    Introduced,
    PunchFailed,
    PunchSucceeded,
    Registered,
    RegistrationFailed,
    RelayBound,
    RelayFailed,
    RendezvousClient,
)
from qotp.rendezvous.messages import MAGIC

__all__ = [
    "AUTH_STREAM_ID",
    "KEEPALIVE_S",
    "Peer",
    "PeerConnected",
    "PeerDisconnected",
    "PeerError",
    "PeerEvent",
    "PeerLink",
    "PeerPathChanged",
    "PeerRegistered",
]

logger = logging.getLogger(__name__)

AUTH_STREAM_ID = 1
"""The stream on which the two peers prove their keys (file transfers use 2 and up)."""
KEEPALIVE_S = 10.0
"""PING interval on a link: well inside NAT UDP timeouts (30 s on Linux) and QOTP's idle timeout."""
UPGRADE_DELAYS_S = (5.0, 10.0, 20.0, 40.0, 60.0)
"""When a relayed link tries punching again (the last delay then repeats)."""
CONNECT_RETRY_S = 1.0
"""How often to ask again for a peer that has not registered yet."""


class PeerError(Exception):
    """Registering or connecting failed (the message says why)."""


# -- events -----------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class PeerRegistered:
    """The rendezvous registered us; ``public_address`` is how the internet sees us."""

    public_address: Address


@dataclass(frozen=True, slots=True, kw_only=True)
class PeerConnected:
    """A link to a peer is up and both keys are proven."""

    peer: str
    address: Address
    direct: bool
    setup_s: float = 0.0
    """From the introduction to the proven link: punching (or its timeout), handshake, proofs."""


@dataclass(frozen=True, slots=True, kw_only=True)
class PeerPathChanged:
    """A link moved: from the relay to a direct path, or to a peer's new address."""

    peer: str
    address: Address
    direct: bool


@dataclass(frozen=True, slots=True, kw_only=True)
class PeerDisconnected:
    """A link ended, and why (the connection's termination reason)."""

    peer: str
    reason: TerminationReason | None
    detail: str = ""


PeerEvent = PeerRegistered | PeerConnected | PeerPathChanged | PeerDisconnected


@dataclass(slots=True, eq=False)
class PeerLink:
    """One authenticated connection to a named peer."""

    name: str
    public_key: bytes
    connection: QotpConnection
    token: bytes
    relay_address: Address
    dialer: bool

    @property
    def direct(self) -> bool:
        """Whether packets go straight to the peer (not through the rendezvous relay)."""
        return self.connection.address != self.relay_address

    @property
    def address(self) -> Address:
        """Where our packets for the peer go now."""
        return self.connection.address


@dataclass(slots=True, eq=False)
class _Pending:
    introduction: Introduced
    punched: asyncio.Future[Address | None]
    incoming: asyncio.Future[QotpConnection]
    introduced_at: float = field(default_factory=time.monotonic)
    relay: asyncio.Future[str | None] = field(
        default_factory=lambda: asyncio.get_running_loop().create_future()
    )
    link: PeerLink | None = None


class Peer(ClosesOnExit):
    """A named peer on one socket; :meth:`connect` to others, :meth:`accept` those who connect."""

    def __init__(
        self,
        listener: QotpListener,
        *,
        name: str,
        rendezvous: Address,
        on_event: Callable[[PeerEvent], None] | None = None,
        punch_timeout_s: float = 3.0,
        connect_timeout_s: float = 30.0,
        upgrade_delays_s: tuple[float, ...] = UPGRADE_DELAYS_S,
        keepalive_s: float = KEEPALIVE_S,
    ) -> None:
        identity = listener.endpoint.identity
        if identity is None:
            raise PeerError("peers need QOTP's native identity keys")
        self.listener = listener
        self.identity: KeyPair = identity
        self.rendezvous = rendezvous
        self.client = RendezvousClient(
            identity=identity,
            name=name,
            server=rendezvous,
            punch_timeout_ns=int(punch_timeout_s * 1e9),
        )
        self.connect_timeout_s = connect_timeout_s
        self.upgrade_delays_s = upgrade_delays_s or UPGRADE_DELAYS_S
        self.keepalive_s = keepalive_s
        self._on_event = on_event
        self._loop = asyncio.get_running_loop()
        self._timer = DeadlineTimer(self._loop, self._on_timer)
        self._registered = asyncio.Event()
        self._registration_error: str | None = None
        self._pending: dict[bytes, _Pending] = {}
        self._links: asyncio.Queue[PeerLink] = asyncio.Queue()
        self._connect_waiters: dict[str, asyncio.Future[PeerLink]] = {}
        self._connect_failures: dict[str, asyncio.Queue[str]] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._closed = False
        listener.divert(MAGIC, self._on_datagram)
        self._spawn(self._accept_loop())

    @classmethod
    async def start(
        cls,
        rendezvous: Address,
        name: str,
        *,
        host: str = "0.0.0.0",
        port: int = 0,
        identity: KeyPair | None = None,
        on_event: Callable[[PeerEvent], None] | None = None,
        punch_timeout_s: float = 3.0,
        connect_timeout_s: float = 30.0,
        upgrade_delays_s: tuple[float, ...] = UPGRADE_DELAYS_S,
        keepalive_s: float = KEEPALIVE_S,
        configuration: QotpConfiguration | None = None,
    ) -> Peer:
        """Bind a socket, start registering as ``name`` with the rendezvous.

        ``keepalive_s`` must stay well below both the NATs' UDP timeouts and
        ``configuration.idle_timeout_ns``.
        """
        listener = await listen(host, port, identity=identity, configuration=configuration)
        try:
            peer = cls(
                listener,
                name=name,
                rendezvous=rendezvous,
                on_event=on_event,
                punch_timeout_s=punch_timeout_s,
                connect_timeout_s=connect_timeout_s,
                upgrade_delays_s=upgrade_delays_s,
                keepalive_s=keepalive_s,
            )
        except BaseException:
            listener.close()
            raise
        peer.client.start(time.monotonic_ns())
        peer._flush()
        return peer

    @property
    def public_key(self) -> bytes:
        """Our identity key."""
        return self.identity.public_key

    # -- public API ---------------------------------------------------------------

    async def wait_registered(self, timeout: float = 10.0) -> Address:
        """Our public address once registered; raises :class:`PeerError` otherwise."""
        try:
            # asyncio.timeout, not wait_for: on 3.11 wait_for can swallow a
            # cancellation (Ctrl-C) that arrives as the event is set.
            async with asyncio.timeout(timeout):
                await self._registered.wait()
        except TimeoutError:
            raise PeerError(
                f"no answer from the rendezvous at {self.rendezvous[0]}:{self.rendezvous[1]}"
                f" within {timeout:g} s"
            ) from None
        if self._registration_error is not None:
            raise PeerError(f"the rendezvous refused us: {self._registration_error}")
        assert self.client.public_address is not None
        return self.client.public_address

    async def connect(self, name: str, *, timeout: float | None = None) -> PeerLink:
        """A link to the peer registered as ``name`` (waits for it to register)."""
        timeout = self.connect_timeout_s if timeout is None else timeout
        waiter = self._connect_waiters.get(name)
        if waiter is None or waiter.done():
            waiter = self._connect_waiters[name] = self._loop.create_future()
        failures = self._connect_failures.setdefault(name, asyncio.Queue())
        deadline = self._loop.time() + timeout
        reason = "no answer"
        try:
            while True:
                self.client.connect(name, time.monotonic_ns())
                self._flush()
                failure: asyncio.Future[str] = asyncio.ensure_future(failures.get())
                remaining = deadline - self._loop.time()
                waiting: set[asyncio.Future[Any]] = {waiter, failure}
                done, _ = await asyncio.wait(
                    waiting, timeout=max(0.0, remaining), return_when=asyncio.FIRST_COMPLETED
                )
                if waiter in done:
                    failure.cancel()
                    return waiter.result()
                if failure not in done:
                    failure.cancel()
                    raise PeerError(f"could not connect to {name} within {timeout:g} s: {reason}")
                reason = failure.result()
                # Most likely not registered yet: ask again shortly.
                await asyncio.sleep(min(CONNECT_RETRY_S, max(0.0, deadline - self._loop.time())))
                if self._loop.time() >= deadline:
                    raise PeerError(f"could not connect to {name} within {timeout:g} s: {reason}")
        finally:
            if self._connect_waiters.get(name) is waiter and not waiter.done():
                del self._connect_waiters[name]

    async def rebind(self, host: str | None = None, port: int = 0) -> Address:
        """Move to a new local socket (we roam): links follow, the registration is renewed.

        Every link's peer sees our packets from the new address and moves its
        replies there once it is validated; the rendezvous learns the new
        public address from the renewed registration.
        """
        address = await self.listener.rebind(host, port)
        self.client.start(time.monotonic_ns())
        self._flush()
        return address

    async def accept(self) -> PeerLink:
        """The next link a peer opened to us (through an introduction it asked for)."""
        return await self._links.get()

    def close(self) -> None:
        """Stop: links, registration, the socket."""
        if self._closed:
            return
        self._closed = True
        for task in list(self._tasks):
            task.cancel()
        self._timer.cancel()
        self.listener.divert(MAGIC, None)
        self.listener.close()

    # -- driving the rendezvous client --------------------------------------------

    def _spawn(self, coroutine: Coroutine[Any, Any, None]) -> None:
        task = asyncio.ensure_future(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _emit(self, event: PeerEvent) -> None:
        if self._on_event is not None:
            try:
                self._on_event(event)
            except Exception:
                logger.exception("peer event callback failed")

    def _on_datagram(self, data: bytes, address: Address, now: int) -> None:
        self.client.receive_datagram(data, address, now)
        self._flush()

    def _on_timer(self) -> None:
        if not self._closed:
            self.client.handle_timer(time.monotonic_ns())
            self._flush()

    def _flush(self) -> None:
        if self._closed:
            return
        output = self.client.datagrams_to_send(time.monotonic_ns())
        if output:
            self.listener.send_datagrams(output)
        while (event := self.client.next_event()) is not None:
            self._handle(event)
        self._timer.arm(self.client.get_timer())

    def _handle(
        self,
        event: Registered
        | RegistrationFailed
        | Introduced
        | ConnectFailed
        | PunchSucceeded
        | PunchFailed
        | RelayBound
        | RelayFailed,
    ) -> None:
        if isinstance(event, Registered):
            self._registered.set()
            self._emit(PeerRegistered(public_address=event.public_address))
        elif isinstance(event, RegistrationFailed):
            self._registration_error = event.reason
            self._registered.set()
        elif isinstance(event, Introduced):
            pending = _Pending(
                introduction=event,
                punched=self._loop.create_future(),
                incoming=self._loop.create_future(),
            )
            self._pending[event.token] = pending
            self._spawn(self._establish(pending))
        elif isinstance(event, ConnectFailed):
            self._connect_failures.setdefault(event.name, asyncio.Queue()).put_nowait(event.reason)
        elif isinstance(event, PunchSucceeded | PunchFailed):
            pending_or_none = self._pending.get(event.token)
            if pending_or_none is None:
                return
            address = event.address if isinstance(event, PunchSucceeded) else None
            if not pending_or_none.punched.done():
                pending_or_none.punched.set_result(address)
            elif address is not None and pending_or_none.link is not None:
                self._upgrade(pending_or_none.link, address)
        elif isinstance(event, RelayBound | RelayFailed):
            pending_or_none = self._pending.get(event.token)
            if pending_or_none is not None and not pending_or_none.relay.done():
                failure = event.reason if isinstance(event, RelayFailed) else None
                pending_or_none.relay.set_result(failure)

    # -- links ----------------------------------------------------------------------

    async def _accept_loop(self) -> None:
        """Incoming connections: only from a key we were introduced to, as its acceptor."""
        async for connection in self.listener:
            self._spawn(self._match_incoming(connection))

    async def _match_incoming(self, connection: QotpConnection) -> None:
        key = connection.peer_public_key
        # The dialer's first packet may overtake our introduction by a moment.
        for _ in range(100):
            for pending in self._pending.values():
                introduction = pending.introduction
                if (
                    introduction.public_key == key
                    and not introduction.dialer
                    and not pending.incoming.done()
                ):
                    pending.incoming.set_result(connection)
                    return
            await asyncio.sleep(0.05)
        logger.info("refused a connection from %s: no introduction", connection.address)
        connection.abort()

    async def _establish(self, pending: _Pending) -> None:
        introduction = pending.introduction
        name = introduction.name
        try:
            async with asyncio.timeout(self.connect_timeout_s):
                link = await self._open_link(pending)
        except (PeerError, TimeoutError, ConnectionError, asyncio.IncompleteReadError) as error:
            reason = str(error) or type(error).__name__
            if isinstance(error, TimeoutError):
                reason = f"no connection within {self.connect_timeout_s:g} s"
            logger.info("link to %s failed: %s", name, reason)
            self._forget(introduction.token)
            waiter = self._connect_waiters.get(name)
            if waiter is not None and not waiter.done():
                waiter.set_exception(PeerError(f"could not connect to {name}: {reason}"))
            return
        pending.link = link
        self._emit(
            PeerConnected(
                peer=name,
                address=link.address,
                direct=link.direct,
                setup_s=time.monotonic() - pending.introduced_at,
            )
        )
        link.connection.on_address_change(lambda change: self._on_path_change(link, change))
        self._spawn(self._keep_alive(pending, link))
        waiter = self._connect_waiters.get(name)
        if waiter is not None and not waiter.done():
            waiter.set_result(link)
        else:
            self._links.put_nowait(link)

    async def _open_link(self, pending: _Pending) -> PeerLink:
        introduction = pending.introduction
        address = await pending.punched
        if introduction.dialer:
            target = address if address is not None else self.rendezvous
            connection = self.listener.dial_nowait(target, peer_public_key=introduction.public_key)
            if address is None:
                # Bound before the connection's first datagram leaves (that waits for
                # the next loop turn); if the bind is lost, QOTP resends its hello.
                self.client.bind_relay(
                    introduction.token, connection.connection_id, time.monotonic_ns()
                )
                self._flush()
            try:
                await connection.wait_established()
                if address is None:
                    failure = await pending.relay
                    if failure is not None:
                        raise PeerError(f"the rendezvous would not relay: {failure}")
                await self._prove_as_dialer(connection, introduction.public_key)
            except BaseException:
                connection.abort()
                raise
        else:
            connection = await pending.incoming
            try:
                await self._prove_as_acceptor(connection, introduction.public_key)
            except BaseException:
                connection.abort()
                raise
        return PeerLink(
            name=introduction.name,
            public_key=introduction.public_key,
            connection=connection,
            token=introduction.token,
            relay_address=self.rendezvous,
            dialer=introduction.dialer,
        )

    async def _prove_as_dialer(self, connection: QotpConnection, peer_key: bytes) -> None:
        stream = connection.stream(AUTH_STREAM_ID)
        nonce = new_nonce()
        stream.write(nonce)
        await stream.drain()
        reply = await stream.readexactly(NONCE_BYTES + PROOF_BYTES)
        their_nonce, their_proof = reply[:NONCE_BYTES], reply[NONCE_BYTES:]
        nonces = {"initiator_nonce": nonce, "responder_nonce": their_nonce}
        if not verify(self.identity, peer_key, their_proof, peer_is_initiator=False, **nonces):
            raise PeerError("the peer could not prove its key")
        stream.write(prove(self.identity, peer_key, as_initiator=True, **nonces))
        stream.close()
        await stream.drain()

    async def _prove_as_acceptor(self, connection: QotpConnection, peer_key: bytes) -> None:
        stream = await connection.accept_stream()
        if stream.stream_id != AUTH_STREAM_ID:
            raise PeerError("the peer did not start with its proof")
        their_nonce = await stream.readexactly(NONCE_BYTES)
        nonce = new_nonce()
        nonces = {"initiator_nonce": their_nonce, "responder_nonce": nonce}
        stream.write(nonce + prove(self.identity, peer_key, as_initiator=False, **nonces))
        await stream.drain()
        their_proof = await stream.readexactly(PROOF_BYTES)
        if not verify(self.identity, peer_key, their_proof, peer_is_initiator=True, **nonces):
            raise PeerError("the peer could not prove its key")
        stream.close()

    def _upgrade(self, link: PeerLink, address: Address) -> None:
        """A punch got through while relayed: the dialer moves the connection there."""
        if link.direct or link.connection.is_closed:
            return
        if link.dialer:
            logger.info("direct path to %s at %s:%d", link.name, *address)
            link.connection.move_to(address)

    def _on_path_change(self, link: PeerLink, change: AddressChange) -> None:
        if not change.local:
            self._emit(PeerPathChanged(peer=link.name, address=link.address, direct=link.direct))

    async def _keep_alive(self, pending: _Pending, link: PeerLink) -> None:
        connection = link.connection
        loop = self._loop
        delays = iter(self.upgrade_delays_s)
        delay = next(delays)
        next_ping = loop.time() + self.keepalive_s
        next_punch = loop.time() + delay
        try:
            while not connection.is_closed:
                wake = next_ping if link.direct else min(next_ping, next_punch)
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(max(0.0, wake - loop.time())):
                        await connection.wait_closed()
                if connection.is_closed:
                    break
                now = loop.time()
                if now >= next_ping:
                    connection.ping()
                    next_ping = now + self.keepalive_s
                if not link.direct and now >= next_punch:
                    self.client.punch(link.token, time.monotonic_ns())
                    self._flush()
                    delay = next(delays, delay)
                    next_punch = now + delay
        finally:
            self._forget(link.token)
            self._emit(
                PeerDisconnected(
                    peer=link.name, reason=connection.close_reason, detail=connection.close_detail
                )
            )

    def _forget(self, token: bytes) -> None:
        self._pending.pop(token, None)
        self.client.forget(token)
