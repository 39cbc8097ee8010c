"""The DTLS 1.3 server handshake as a state machine (RFC 9147 5, RFC 8446 4).

The table :data:`SERVER_TRANSITIONS` is the whole protocol::

    WAIT_CLIENT_HELLO -ClientHello-> (stateless HelloRetryRequest: stay, keep nothing)
        | (HelloRetryRequest for a key share) WAIT_CLIENT_HELLO_AFTER_RETRY
        | (send ServerHello ... Finished) WAIT_CLIENT_CERTIFICATE | WAIT_CLIENT_FINISHED
    WAIT_CLIENT_HELLO_AFTER_RETRY -ClientHello-> WAIT_CLIENT_CERTIFICATE | WAIT_CLIENT_FINISHED
    WAIT_CLIENT_CERTIFICATE -Certificate-> WAIT_CLIENT_CERTIFICATE_VERIFY | WAIT_CLIENT_FINISHED
    WAIT_CLIENT_CERTIFICATE_VERIFY -CertificateVerify-> WAIT_CLIENT_FINISHED
    WAIT_CLIENT_FINISHED -Finished (ACK, NewSessionTicket)-> ESTABLISHED

*Version.*  The first ClientHello decides: when its supported_versions and
our ``configuration.versions`` share DTLS 1.3 as the first choice, this
machine runs; otherwise the 1.2 server machine takes the hello
(``replacement``).

*Address validation.*  With ``cookie_exchange`` (the default) a ClientHello
without a valid cookie gets a HelloRetryRequest whose cookie carries the
suite, group and ClientHello1 hash (:mod:`dtls.cookie13`), and nothing is
kept: the HelloRetryRequest reuses the hello's record and message numbers
and leaves through ``outgoing``.  The second ClientHello rebuilds the
transcript from the cookie.  Endpoints run the same step before they
allocate a connection (:func:`stateless_retry`).

*PSK and tickets.*  An offered identity is first tried as one of our
tickets, then as an external PSK (``psk_lookup(identity)``, or ``psk`` when
``psk_identity`` is empty or equals the identity).  The first identity whose
binder verifies is used, always with (EC)DHE.  After the handshake a
NewSessionTicket is sent when ``session_tickets`` is on; early data is taken
only under :class:`~dtls.sessions13.EarlyDataGuard`'s anti-replay rule.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from enum import Enum

from cryptography import x509

from . import handshake as hs
from . import messages13 as m13
from .config import CertificatePrivateKey, DTLSConfiguration, DTLSVersion
from .errors import AlertDescription, AlertError, DTLSError
from .handshake import ExtensionType
from .handshake13 import (
    EPOCH_EARLY_DATA,
    EPOCH_HANDSHAKE,
    SIGNATURE_SCHEMES_13,
    Handshake13,
    choose_signature_scheme13,
)
from .handshake_context import Handshake, HandshakeContext
from .handshake_context import ServerContext as ServerContextLike
from .keyschedule13 import (
    KeySchedule,
    hash_length,
    resumption_psk,
    transcript_hash,
    verify_finished,
)
from .messages13 import ExtensionType13, HandshakeType13
from .primitives import KeyShare, load_peer_chain
from .reassembly import HandshakeMessage
from .records import DTLS_1_2, decode_datagram
from .records13 import encode_plaintext_record
from .sessions13 import DEFAULT_TICKET_LIFETIME_S, TicketContents
from .suites import SUITE_PARAMETERS, TLS13_SUITES, CipherSuite, NamedGroup, SrtpProfile

__all__ = [
    "SERVER_TRANSITIONS",
    "ServerHandshake13",
    "ServerState13",
    "encode_hello_retry_request",
    "offers_dtls13",
    "select_group13",
    "select_suite13",
    "stateless_retry",
    "verified_resumption",
]

logger = logging.getLogger(__name__)

_EXTERNAL_PSK_HASH = "sha256"


class ServerState13(Enum):
    """Where a DTLS 1.3 server handshake stands."""

    WAIT_CLIENT_HELLO = "wait ClientHello"
    WAIT_CLIENT_HELLO_AFTER_RETRY = "wait ClientHello after HelloRetryRequest"
    WAIT_CLIENT_CERTIFICATE = "wait client Certificate"
    WAIT_CLIENT_CERTIFICATE_VERIFY = "wait client CertificateVerify"
    WAIT_CLIENT_FINISHED = "wait client Finished"
    ESTABLISHED = "established"
    HANDED_TO_12 = "handed to DTLS 1.2"


_S = ServerState13
_T = HandshakeType13
_AFTER_HELLO = frozenset({_S.WAIT_CLIENT_CERTIFICATE, _S.WAIT_CLIENT_FINISHED})

SERVER_TRANSITIONS: dict[ServerState13, dict[int, frozenset[ServerState13]]] = {
    _S.WAIT_CLIENT_HELLO: {
        _T.client_hello: frozenset(
            {_S.WAIT_CLIENT_HELLO, _S.WAIT_CLIENT_HELLO_AFTER_RETRY, _S.HANDED_TO_12} | _AFTER_HELLO
        ),
    },
    _S.WAIT_CLIENT_HELLO_AFTER_RETRY: {_T.client_hello: _AFTER_HELLO},
    _S.WAIT_CLIENT_CERTIFICATE: {
        _T.certificate: frozenset({_S.WAIT_CLIENT_CERTIFICATE_VERIFY, _S.WAIT_CLIENT_FINISHED})
    },
    _S.WAIT_CLIENT_CERTIFICATE_VERIFY: {
        _T.certificate_verify: frozenset({_S.WAIT_CLIENT_FINISHED})
    },
    _S.WAIT_CLIENT_FINISHED: {_T.finished: frozenset({_S.ESTABLISHED})},
    _S.ESTABLISHED: {},
    _S.HANDED_TO_12: {},
}


# --------------------------------------------------------------------------- shared with endpoints


def offers_dtls13(hello: hs.ClientHello, configuration: DTLSConfiguration) -> bool:
    """Whether this hello gets a DTLS 1.3 answer from us (our first shared version is 1.3).

    A hello with a legacy (1.2) cookie is a client in the 1.2 cookie exchange: a
    fragmented first hello gets a HelloVerifyRequest, which makes a 1.3 client
    fall back to 1.2 (a stateless 1.3 retry needs the whole hello).
    """
    if hello.cookie:
        return False
    try:
        data = hs.find_extension(hello.extensions, ExtensionType13.supported_versions)
        offered = m13.decode_supported_versions_client(data) if data is not None else [DTLS_1_2]
    except DTLSError:
        return False
    for version in configuration.versions:
        if int(version) in offered:
            if version is DTLSVersion.DTLS_1_3 and select_suite13(hello, configuration) is None:
                continue  # no 1.3 suite in common: answer in 1.2 if we can
            return version is DTLSVersion.DTLS_1_3
    return False


def select_suite13(
    hello: hs.ClientHello, configuration: DTLSConfiguration, hash_name: str | None = None
) -> CipherSuite | None:
    """Our most preferred 1.3 suite the client offers (optionally with a given hash)."""
    for suite in configuration.cipher_suites:
        if suite in TLS13_SUITES and int(suite) in hello.cipher_suites:
            if hash_name is None or SUITE_PARAMETERS[suite].hash_name == hash_name:
                return suite
    return None


def select_group13(
    hello: hs.ClientHello, configuration: DTLSConfiguration
) -> tuple[NamedGroup | None, bool]:
    """(group, has a key share): a group the client sent a share for, else one it supports."""
    share_data = hs.find_extension(hello.extensions, ExtensionType13.key_share)
    shares = (
        {group for group, _ in m13.decode_key_share_client(share_data)} if share_data else set()
    )
    for group in configuration.groups:
        if int(group) in shares:
            return NamedGroup(group), True
    groups_data = hs.find_extension(hello.extensions, ExtensionType.supported_groups)
    supported = hs.decode_uint16_list(groups_data) if groups_data is not None else []
    for group in configuration.groups:
        if int(group) in supported:
            return NamedGroup(group), False
    return None, False


def encode_hello_retry_request(
    session_id: bytes, suite: int, group: int | None, cookie: bytes | None
) -> bytes:
    """The HelloRetryRequest body; deterministic, so a stateless server can rebuild it."""
    extensions: hs.Extensions = [
        (
            ExtensionType13.supported_versions,
            m13.encode_supported_versions_server(m13.DTLS_1_3_VERSION),
        )
    ]
    if group is not None:
        extensions.append((ExtensionType13.key_share, m13.encode_key_share_hello_retry(group)))
    if cookie is not None:
        extensions.append((ExtensionType13.cookie, m13.encode_cookie(cookie)))
    return hs.encode_server_hello(
        hs.ServerHello(
            server_version=DTLS_1_2,
            random=m13.HELLO_RETRY_REQUEST_RANDOM,
            session_id=session_id,
            cipher_suite=suite,
            compression_method=0,
            extensions=extensions,
        )
    )


def stateless_retry(
    hello: hs.ClientHello,
    configuration: DTLSConfiguration,
    cookies: object,
    address: object,
    now: int,
    *,
    message_seq: int,
    record_sequence: int,
) -> bytes | None:
    """The datagram answering a cookieless 1.3 ClientHello, or None when none fits.

    RFC 9147 5.1: the HelloRetryRequest reuses the hello's message_seq and
    record number, and the server keeps nothing.
    """
    from .cookie13 import RetryCookies, RetryState

    assert isinstance(cookies, RetryCookies)
    suite = select_suite13(hello, configuration)
    group, has_share = select_group13(hello, configuration)
    if suite is None or group is None:
        return None
    hash_name = SUITE_PARAMETERS[suite].hash_name
    hello_hash = transcript_hash(
        hash_name, m13.tls_handshake(HandshakeType13.client_hello, hs.encode_client_hello(hello))
    )
    retry_group = None if has_share else int(group)
    cookie = cookies.make(
        address,
        RetryState(cipher_suite=int(suite), group=retry_group, client_hello_hash=hello_hash),
        now,
    )
    body = encode_hello_retry_request(hello.session_id, int(suite), retry_group, cookie)
    return encode_plaintext_record(
        22,
        DTLS_1_2,
        0,
        record_sequence,
        hs.encode_handshake(HandshakeType13.server_hello, message_seq, body),
    )


def verified_resumption(
    hello: hs.ClientHello,
    configuration: DTLSConfiguration,
    server_context: ServerContextLike,
    now: int,
    *,
    exclusive: bool,
) -> bool:
    """Whether a cookieless 1.3 hello may skip the HelloRetryRequest (RFC 9147 5.1).

    Yes when its first PSK is one of our tickets, fresh, with a binder that
    verifies and that was not seen before (:class:`EarlyDataGuard`): such a
    hello can only come from the ticket holder, once, and our answer to it
    carries no certificate, so skipping the address check amplifies nothing.
    Never raises.
    """
    try:
        data = hs.find_extension(hello.extensions, ExtensionType13.pre_shared_key)
        if data is None or hello.extensions[-1][0] != ExtensionType13.pre_shared_key:
            return False
        modes = hs.find_extension(hello.extensions, ExtensionType13.psk_key_exchange_modes)
        if modes is None or (
            m13.PskKeyExchangeMode.psk_dhe_ke not in m13.decode_psk_key_exchange_modes(modes)
        ):
            return False
        offered = m13.decode_pre_shared_key_client(data)
        identity, age = offered.identities[0]
        binder = offered.binders[0]
        ticket = server_context.tickets13.peek(identity)
        if ticket is None or not ticket.valid_at(now):
            return False
        hash_name = SUITE_PARAMETERS[CipherSuite(ticket.cipher_suite)].hash_name
        if select_suite13(hello, configuration, hash_name) is None:
            return False
        guard = server_context.early_data_guard
        if not guard.fresh(ticket, age, now):
            return False
        whole = m13.tls_handshake(HandshakeType13.client_hello, hs.encode_client_hello(hello))
        truncated = whole[: len(whole) - len(m13.binders_block(offered.binders))]
        binder_key = KeySchedule(hash_name, ticket.psk).binder_key(resumption=True)
        if len(binder) != hash_length(hash_name) or not verify_finished(
            hash_name, binder_key, transcript_hash(hash_name, truncated), binder
        ):
            return False
        return guard.claim(binder, now, exclusive=exclusive)
    except (DTLSError, ValueError):
        return False


# --------------------------------------------------------------------------- the machine


class ServerHandshake13(Handshake13):
    """One DTLS 1.3 server handshake (or the 1.2 one, when the client wants 1.2)."""

    is_client = False

    def __init__(self, context: HandshakeContext, fallback: Handshake | None = None) -> None:
        super().__init__(context)
        self.state = ServerState13.WAIT_CLIENT_HELLO
        self._fallback = fallback
        self.replacement: Handshake | None = None
        self._retry_group: int | None = None
        self._sent_retry = False
        self._key_share_group: NamedGroup | None = None
        self._psk_selected = False
        self._ticket: TicketContents | None = None
        self._client_auth = False
        self._early_data_bytes = 0
        self._max_early_data = 0

    # ------------------------------------------------------------------ facade surface

    @property
    def established(self) -> bool:
        """Whether the handshake completed."""
        return self.state is ServerState13.ESTABLISHED

    @property
    def waiting_for_first_hello(self) -> bool:
        """No ClientHello taken yet (nothing is kept until one with a valid cookie)."""
        return self.state is ServerState13.WAIT_CLIENT_HELLO

    @property
    def state_name(self) -> str:
        """Current state, for logs."""
        return self.state.value

    def start(self, now: int) -> None:
        """Servers wait for a ClientHello."""

    def accept_early_data(self, length: int) -> bool:
        """Whether an epoch-1 application record of ``length`` bytes may be delivered."""
        if not self.negotiated.early_data_accepted or self.established:
            return False
        if self._early_data_bytes + length > self._max_early_data:
            return False
        self._early_data_bytes += length
        return True

    def handle_message(self, message: HandshakeMessage, now: int) -> None:
        """One whole client message, in order: look it up in the table, run its handler."""
        allowed = SERVER_TRANSITIONS[self.state].get(message.msg_type)
        if allowed is None:
            raise AlertError(
                AlertDescription.unexpected_message,
                f"{hs.message_name(message.msg_type)} while in state '{self.state.value}'",
            )
        handler = _SERVER_HANDLERS[message.msg_type]
        next_state = handler(self, message, now)
        assert next_state in allowed, (self.state, message.msg_type, next_state)
        self.state = next_state

    def handle_peer_repeat(self, now: int) -> None:
        """The client repeated a flight: resend ours, or (once established) acknowledge again."""
        if self.established:
            self._acknowledge_now()
        elif not self._flights.acknowledged:
            self._flights.resend_on_peer_repeat(established=False)

    # ------------------------------------------------------------------ ClientHello

    def _hand_over_to_12(self, message: HandshakeMessage, now: int) -> ServerState13:
        if self._fallback is None:
            raise AlertError(AlertDescription.protocol_version, "client does not offer DTLS 1.3")
        logger.debug("client wants DTLS 1.2: handing the handshake to the 1.2 server")
        self._records.decoder = decode_datagram
        self._records.resolve_unified_epoch = None
        self.replacement = self._fallback
        self._fallback.handle_message(message, now)
        return ServerState13.HANDED_TO_12

    def _on_client_hello(self, message: HandshakeMessage, now: int) -> ServerState13:
        config = self.configuration
        hello = hs.decode_client_hello(message.body)
        if self.state is ServerState13.WAIT_CLIENT_HELLO and not offers_dtls13(hello, config):
            return self._hand_over_to_12(message, now)
        # Whatever we send in epoch 0 now (an alert, our flight) continues the hello's record
        # numbers: a stateless HelloRetryRequest already used the first hello's number.
        self._records.continue_numbering(0, self._records.current_sequence_number + 1)
        if hello.client_version != DTLS_1_2 or hello.cookie:
            raise AlertError(AlertDescription.illegal_parameter, "bad legacy fields in 1.3 hello")
        if hello.compression_methods != b"\x00":
            raise AlertError(AlertDescription.illegal_parameter, "compression")
        if self._sent_retry and hello.random != self.negotiated.client_random:
            raise AlertError(AlertDescription.illegal_parameter, "second hello with a new random")
        cookies = self._context.server_context.retry_cookies
        cookie_data = hs.find_extension(hello.extensions, ExtensionType13.cookie)
        retry = (
            cookies.open(self.address, m13.decode_cookie(cookie_data), now)
            if cookie_data is not None and not self._sent_retry
            else None
        )
        if retry is None and self.state is ServerState13.WAIT_CLIENT_HELLO:
            if config.cookie_exchange and not verified_resumption(
                hello, config, self._context.server_context, now, exclusive=False
            ):
                # Stateless: answer and forget (the next hello starts everything again).
                datagram = stateless_retry(
                    hello,
                    config,
                    cookies,
                    self.address,
                    now,
                    message_seq=message.message_seq,
                    record_sequence=self._records.current_sequence_number,
                )
                if datagram is None:
                    raise AlertError(AlertDescription.handshake_failure, "no common suite or group")
                self._context.outgoing.append(datagram)
                return ServerState13.WAIT_CLIENT_HELLO
        self.negotiated.client_random = hello.random
        self.negotiated.version = DTLSVersion.DTLS_1_3
        # suite, and the transcript start after a (stateless or stateful) retry
        if retry is not None:
            suite: CipherSuite | None = CipherSuite(retry.cipher_suite)
            if int(retry.cipher_suite) not in hello.cipher_suites:
                raise AlertError(AlertDescription.illegal_parameter, "suite gone after retry")
            self._choose_suite_parameters(retry.cipher_suite)
            self._retry_group = retry.group
            self._transcript = bytearray(m13.message_hash(retry.client_hello_hash))
            self._transcript += m13.tls_handshake(
                HandshakeType13.server_hello,
                encode_hello_retry_request(
                    hello.session_id,
                    retry.cipher_suite,
                    retry.group,
                    m13.decode_cookie(cookie_data),  # type: ignore[arg-type]
                ),
            )
            self._sent_retry = True
        elif self._suite is None:
            suite = select_suite13(hello, config)
            if suite is None:
                raise AlertError(AlertDescription.handshake_failure, "no common cipher suite")
            self._choose_suite_parameters(suite)
        hello_message = m13.tls_handshake(HandshakeType13.client_hello, message.body)
        # key share
        group, has_share = select_group13(hello, config)
        if self._retry_group is not None:
            if group is None or int(group) != self._retry_group or not has_share:
                raise AlertError(AlertDescription.illegal_parameter, "no share for the HRR group")
        if group is None:
            raise AlertError(AlertDescription.handshake_failure, "no common group")
        if not has_share:
            if self._sent_retry:
                raise AlertError(AlertDescription.illegal_parameter, "still no usable key share")
            return self._stateful_retry(hello, hello_message, group, message, now)
        self._key_share_group = group
        share_data = hs.find_extension(hello.extensions, ExtensionType13.key_share)
        assert share_data is not None
        client_public = dict(m13.decode_key_share_client(share_data))[int(group)]
        # PSK (checks binders against the transcript so far plus the truncated hello)
        psk = self._select_psk(hello, hello_message, now)
        certificate = None
        if psk is None:
            if not config.certificates().all_entries():
                if hs.find_extension(hello.extensions, ExtensionType13.pre_shared_key):
                    raise AlertError(AlertDescription.unknown_psk_identity, "no PSK we know")
                # RFC 8446 4.1.1: no common way to authenticate is a handshake_failure.
                raise AlertError(
                    AlertDescription.handshake_failure,
                    "the client offers no PSK and we have no certificate",
                )
            # Chosen before the ServerHello, so that a failure is an alert in the clear,
            # which the client can read (under our handshake keys it could not yet).
            server_name = hs.find_extension(hello.extensions, ExtensionType.server_name)
            certificate = self._choose_certificate(
                hello, hs.decode_server_name(server_name) if server_name is not None else None
            )
        self._transcript += hello_message
        return self._send_server_flight(hello, message, group, client_public, psk, certificate, now)

    def _stateful_retry(
        self,
        hello: hs.ClientHello,
        hello_message: bytes,
        group: NamedGroup,
        message: HandshakeMessage,
        now: int,
    ) -> ServerState13:
        """A HelloRetryRequest asking for a key share (no cookie: we keep the state here)."""
        self._transcript = bytearray(
            m13.message_hash(transcript_hash(self._hash_name, hello_message))
        )
        self._retry_group = int(group)
        self._sent_retry = True
        assert self.negotiated.cipher_suite is not None
        body = encode_hello_retry_request(
            hello.session_id, int(self.negotiated.cipher_suite), int(group), None
        )
        self._flights.begin()
        self._flights.next_message_seq = message.message_seq
        self._send(HandshakeType13.server_hello, body)
        self._flights.send(now, expects_reply=True)
        self._flight_sent()
        return ServerState13.WAIT_CLIENT_HELLO_AFTER_RETRY

    def _select_psk(
        self, hello: hs.ClientHello, hello_message: bytes, now: int
    ) -> tuple[bytes, int, TicketContents | None, bytes] | None:
        """(key, index, ticket, binder) of the first offered PSK whose binder verifies."""
        data = hs.find_extension(hello.extensions, ExtensionType13.pre_shared_key)
        if data is None:
            return None
        if hello.extensions[-1][0] != ExtensionType13.pre_shared_key:
            raise AlertError(AlertDescription.illegal_parameter, "pre_shared_key is not last")
        modes_data = hs.find_extension(hello.extensions, ExtensionType13.psk_key_exchange_modes)
        if modes_data is None:
            raise AlertError(AlertDescription.missing_extension, "psk_key_exchange_modes")
        if m13.PskKeyExchangeMode.psk_dhe_ke not in m13.decode_psk_key_exchange_modes(modes_data):
            return None  # we only do PSK with (EC)DHE: a full handshake instead
        offered = m13.decode_pre_shared_key_client(data)
        config = self.configuration
        server_context = self._context.server_context
        truncated = hello_message[: len(hello_message) - len(m13.binders_block(offered.binders))]
        for index, ((identity, _age), binder) in enumerate(
            zip(offered.identities, offered.binders, strict=True)
        ):
            ticket = server_context.tickets13.redeem(identity)
            key: bytes | None
            if ticket is not None:
                if not ticket.valid_at(now) or (
                    SUITE_PARAMETERS[CipherSuite(ticket.cipher_suite)].hash_name != self._hash_name
                ):
                    continue
                key = ticket.psk
            else:
                if self._hash_name != _EXTERNAL_PSK_HASH:
                    continue
                if config.psk_lookup is not None:
                    key = config.psk_lookup(identity)
                elif config.psk is not None and config.psk_identity in (b"", identity):
                    key = config.psk
                else:
                    key = None
                if key is None:
                    continue
            schedule = KeySchedule(self._hash_name, key)
            binder_key = schedule.binder_key(resumption=ticket is not None)
            binder_hash = transcript_hash(self._hash_name, bytes(self._transcript) + truncated)
            if len(binder) != hash_length(self._hash_name) or not verify_finished(
                self._hash_name, binder_key, binder_hash, binder
            ):
                raise AlertError(AlertDescription.decrypt_error, "PSK binder does not verify")
            if ticket is None:
                self.negotiated.psk_identity = identity
            return key, index, ticket, binder
        return None

    def _send_server_flight(
        self,
        hello: hs.ClientHello,
        message: HandshakeMessage,
        group: NamedGroup,
        client_public: bytes,
        psk: tuple[bytes, int, TicketContents | None, bytes] | None,
        certificate: tuple[tuple[x509.Certificate, ...], CertificatePrivateKey] | None,
        now: int,
    ) -> ServerState13:
        config = self.configuration
        negotiated = self.negotiated
        records = self._records
        server_context = self._context.server_context
        share = KeyShare(group)
        shared_secret = share.exchange(client_public)
        negotiated.group = group
        # extensions of ServerHello and EncryptedExtensions
        server_extensions: hs.Extensions = [
            (
                ExtensionType13.supported_versions,
                m13.encode_supported_versions_server(m13.DTLS_1_3_VERSION),
            ),
            (
                ExtensionType13.key_share,
                m13.encode_key_share_server(int(group), share.public_bytes),
            ),
        ]
        if psk is not None:
            server_extensions.append(
                (ExtensionType13.pre_shared_key, m13.encode_pre_shared_key_server(psk[1]))
            )
        encrypted_extensions: hs.Extensions = []
        server_name = hs.find_extension(hello.extensions, ExtensionType.server_name)
        if server_name is not None:
            negotiated.server_name = hs.decode_server_name(server_name)
            encrypted_extensions.append((ExtensionType.server_name, b""))
        alpn = hs.find_extension(
            hello.extensions, ExtensionType.application_layer_protocol_negotiation
        )
        if alpn is not None and config.alpn_protocols:
            offered_alpn = hs.decode_alpn(alpn)
            chosen = next((p for p in config.alpn_protocols if p in offered_alpn), None)
            if chosen is None:
                raise AlertError(
                    AlertDescription.no_application_protocol, "no common ALPN protocol"
                )
            negotiated.alpn_protocol = chosen
            encrypted_extensions.append(
                (ExtensionType.application_layer_protocol_negotiation, hs.encode_alpn([chosen]))
            )
        srtp = hs.find_extension(hello.extensions, ExtensionType.use_srtp)
        if srtp is not None and config.srtp_profiles:
            client_profiles, _mki = hs.decode_use_srtp(srtp)
            profile = next((p for p in config.srtp_profiles if int(p) in client_profiles), None)
            if profile is not None:
                negotiated.srtp_profile = SrtpProfile(profile)
                encrypted_extensions.append((ExtensionType.use_srtp, hs.encode_use_srtp([profile])))
        cid = hs.find_extension(hello.extensions, ExtensionType.connection_id)
        if cid is not None and config.connection_id is not None:
            records.peer_connection_id = hs.decode_opaque8(cid)
            server_extensions.append(
                (ExtensionType.connection_id, hs.encode_opaque8(config.connection_id))
            )
        else:
            records.local_connection_id = b""
        # key schedule
        schedule = KeySchedule(self._hash_name, psk[0] if psk is not None else None)
        if psk is not None:
            self._psk_selected = True
            key, index, ticket, binder = psk
            negotiated.session_resumed = ticket is not None
            self._ticket = ticket
            if ticket is not None:
                negotiated.peer_certificates = (
                    load_peer_chain(list(ticket.peer_certificates))
                    if ticket.peer_certificates
                    else ()
                )
            early = hs.find_extension(hello.extensions, ExtensionType13.early_data)
            if (
                early is not None
                and index == 0
                and ticket is not None
                and not self._sent_retry
                and config.max_early_data > 0
                and ticket.cipher_suite == int(negotiated.cipher_suite or 0)
                and ticket.alpn_protocol == negotiated.alpn_protocol
                and server_context.early_data_guard.admit(
                    ticket, _offered_age(hello, index), binder, now
                )
            ):
                negotiated.early_data_accepted = True
                self._max_early_data = min(config.max_early_data, ticket.max_early_data)
                encrypted_extensions.append(
                    (ExtensionType13.early_data, m13.encode_early_data_indication())
                )
                self._client_early_secret = schedule.derive(b"c e traffic", self._transcript_hash())
                self._install_read(self._client_early_secret, EPOCH_EARLY_DATA)
        server_hello = hs.encode_server_hello(
            hs.ServerHello(
                server_version=DTLS_1_2,
                random=os.urandom(32),
                session_id=hello.session_id,
                cipher_suite=int(negotiated.cipher_suite or 0),
                compression_method=0,
                extensions=server_extensions,
            )
        )
        negotiated.server_random = server_hello[2:34]
        flights = self._flights
        flights.begin()
        flights.next_message_seq = message.message_seq
        records.plaintext_version = DTLS_1_2
        self._send(HandshakeType13.server_hello, server_hello)
        schedule.enter_handshake(shared_secret)
        hello_hash = self._transcript_hash()
        self._client_handshake_secret = schedule.derive(b"c hs traffic", hello_hash)
        self._server_handshake_secret = schedule.derive(b"s hs traffic", hello_hash)
        self._schedule = schedule
        self._install_read(self._client_handshake_secret, EPOCH_HANDSHAKE)
        self._activate_write(self._server_handshake_secret, EPOCH_HANDSHAKE)
        self._send(
            HandshakeType13.encrypted_extensions, m13.encode_extension_block(encrypted_extensions)
        )
        next_state = ServerState13.WAIT_CLIENT_FINISHED
        if certificate is not None:
            chain, private_key = certificate
            if config.request_client_certificate or config.require_client_certificate:
                self._client_auth = True
                request_extensions: hs.Extensions = [
                    (
                        ExtensionType13.signature_algorithms,
                        hs.encode_uint16_list(list(SIGNATURE_SCHEMES_13)),
                    )
                ]
                if config.ca_certificates:
                    names = [ca.subject.public_bytes() for ca in config.ca_certificates][:64]
                    request_extensions.append(
                        (
                            ExtensionType13.certificate_authorities,
                            m13.encode_certificate_authorities(names),
                        )
                    )
                self._send(
                    HandshakeType13.certificate_request,
                    m13.encode_certificate_request13(
                        m13.CertificateRequest13(request_context=b"", extensions=request_extensions)
                    ),
                )
                next_state = ServerState13.WAIT_CLIENT_CERTIFICATE
            self._send(
                HandshakeType13.certificate,
                m13.encode_certificate13(
                    m13.Certificate13(
                        request_context=b"",
                        entries=[m13.CertificateEntry(certificate=_der(c)) for c in chain],
                    )
                ),
            )
            schemes_data = hs.find_extension(hello.extensions, ExtensionType.signature_algorithms)
            peer_schemes = hs.decode_uint16_list(schemes_data) if schemes_data is not None else None
            self._send(
                HandshakeType13.certificate_verify,
                self._certificate_verify(private_key, peer_schemes),
            )
        self._send(HandshakeType13.finished, self._finished(self._server_handshake_secret))
        flights.send(now, expects_reply=True)
        self._flight_sent()
        schedule.enter_master()
        server_done = self._transcript_hash()
        self._client_application_secret = schedule.derive(b"c ap traffic", server_done)
        self._server_application_secret = schedule.derive(b"s ap traffic", server_done)
        self._exporter_master_secret = schedule.derive(b"exp master", server_done)
        return next_state

    def _choose_certificate(
        self, hello: hs.ClientHello, server_name: str | None
    ) -> tuple[tuple[x509.Certificate, ...], CertificatePrivateKey]:
        store = self.configuration.certificates()
        schemes_data = hs.find_extension(hello.extensions, ExtensionType.signature_algorithms)
        if schemes_data is None:
            raise AlertError(AlertDescription.missing_extension, "no signature_algorithms")
        peer_schemes = hs.decode_uint16_list(schemes_data)
        preferred = store.select(server_name)
        candidates = [preferred] if preferred is not None else []
        candidates += [entry for entry in store.all_entries() if entry is not preferred]
        for chain, key in candidates:
            try:
                choose_signature_scheme13(key, peer_schemes)
            except AlertError:
                continue
            return chain, key
        raise AlertError(AlertDescription.handshake_failure, "no certificate the client accepts")

    # ------------------------------------------------------------------ client's flight

    def _on_certificate(self, message: HandshakeMessage, now: int) -> ServerState13:
        certificate = m13.decode_certificate13(message.body)
        self._take_into_transcript(message)
        if certificate.request_context:
            raise AlertError(AlertDescription.illegal_parameter, "wrong request context")
        if not certificate.entries:
            if self.configuration.require_client_certificate:
                raise AlertError(
                    AlertDescription.certificate_required, "client sent no certificate"
                )
            return ServerState13.WAIT_CLIENT_FINISHED
        chain = load_peer_chain([entry.certificate for entry in certificate.entries])
        self._check_peer_chain(chain, as_server=False)
        return ServerState13.WAIT_CLIENT_CERTIFICATE_VERIFY

    def _on_certificate_verify(self, message: HandshakeMessage, now: int) -> ServerState13:
        before = self._take_into_transcript(message)
        self._check_certificate_verify(message.body, before)
        return ServerState13.WAIT_CLIENT_FINISHED

    def _on_finished(self, message: HandshakeMessage, now: int) -> ServerState13:
        before = self._take_into_transcript(message)
        self._check_finished(message.body, self._client_handshake_secret, before)
        schedule = self._schedule
        assert schedule is not None
        self._resumption_master_secret = schedule.derive(b"res master", self._transcript_hash())
        self._flights.begin()  # the client's Finished acknowledges our flight
        self._flights.stop()
        self._enter_application_epoch()
        self._records.retire_read(EPOCH_EARLY_DATA)
        self._acknowledge_now()  # RFC 9147 7: the client's last flight needs an explicit ACK
        self.state = ServerState13.ESTABLISHED
        self._send_ticket(now)
        return ServerState13.ESTABLISHED

    def _send_ticket(self, now: int) -> None:
        config = self.configuration
        negotiated = self.negotiated
        assert negotiated.cipher_suite is not None
        nonce = os.urandom(8)
        age_add = int.from_bytes(os.urandom(4), "big")
        contents = TicketContents(
            cipher_suite=int(negotiated.cipher_suite),
            psk=resumption_psk(self._hash_name, self._resumption_master_secret, nonce),
            issued_at_ns=now,
            lifetime_seconds=DEFAULT_TICKET_LIFETIME_S,
            age_add=age_add,
            max_early_data=config.max_early_data,
            server_name=negotiated.server_name,
            alpn_protocol=negotiated.alpn_protocol,
            peer_certificates=tuple(_der(c) for c in negotiated.peer_certificates),
        )
        ticket = self._context.server_context.tickets13.issue(
            contents, stateless=config.session_tickets
        )
        extensions: hs.Extensions = []
        if config.max_early_data > 0:
            extensions.append(
                (
                    ExtensionType13.early_data,
                    m13.encode_early_data_indication(config.max_early_data),
                )
            )
        self._send_post_handshake(
            HandshakeType13.new_session_ticket,
            m13.encode_new_session_ticket13(
                m13.NewSessionTicket13(
                    lifetime_seconds=DEFAULT_TICKET_LIFETIME_S,
                    age_add=age_add,
                    nonce=nonce,
                    ticket=ticket,
                    extensions=extensions,
                )
            ),
            now,
        )


def _offered_age(hello: hs.ClientHello, index: int) -> int:
    data = hs.find_extension(hello.extensions, ExtensionType13.pre_shared_key)
    assert data is not None
    return m13.decode_pre_shared_key_client(data).identities[index][1]


def _der(certificate: x509.Certificate) -> bytes:
    from cryptography.hazmat.primitives.serialization import Encoding

    return certificate.public_bytes(Encoding.DER)


_Handler = Callable[[ServerHandshake13, HandshakeMessage, int], ServerState13]
_SERVER_HANDLERS: dict[int, _Handler] = {
    _T.client_hello: ServerHandshake13._on_client_hello,
    _T.certificate: ServerHandshake13._on_certificate,
    _T.certificate_verify: ServerHandshake13._on_certificate_verify,
    _T.finished: ServerHandshake13._on_finished,
}
