"""The DTLS 1.2 server handshake as a state machine (RFC 6347, RFC 5246 7.3).

As on the client side, :data:`SERVER_TRANSITIONS` lists for each state the
messages that may arrive and the states each may lead to; anything else is an
``unexpected_message`` alert.

::

    WAIT_HELLO -ClientHello without a valid cookie (send HelloVerifyRequest)-> WAIT_HELLO
    WAIT_HELLO -ClientHello (send ServerHello ... ServerHelloDone)->
        WAIT_CERTIFICATE         we asked for a client certificate
        WAIT_KEY_EXCHANGE        we did not
        WAIT_RESUMED_FINISHED    abbreviated: we resumed, sent ChangeCipherSpec and Finished
    WAIT_CERTIFICATE -Certificate-> WAIT_CERTIFIED_KEY_EXCHANGE (a chain: CertificateVerify
        follows the key exchange) | WAIT_KEY_EXCHANGE (empty, allowed when not required)
    WAIT_CERTIFIED_KEY_EXCHANGE -ClientKeyExchange-> WAIT_CERTIFICATE_VERIFY
        -CertificateVerify-> WAIT_FINISHED
    WAIT_KEY_EXCHANGE -ClientKeyExchange-> WAIT_FINISHED
    WAIT_FINISHED -Finished (send [NewSessionTicket] ChangeCipherSpec Finished)-> ESTABLISHED
    WAIT_RESUMED_FINISHED -Finished-> ESTABLISHED

A ClientHello without a valid cookie is answered statelessly: the
HelloVerifyRequest goes out, the transcript is dropped, nothing else changes.
"""

from __future__ import annotations

import hmac
import logging
import os
from collections.abc import Callable
from enum import Enum
from functools import partial

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

from . import handshake as hs
from .config import CertificatePrivateKey, DTLSVersion
from .errors import AlertDescription, AlertError
from .handshake import ExtensionType, HandshakeType
from .handshake12 import CURVE_TYPE_NAMED, Handshake12, der, psk_premaster
from .handshake_context import HandshakeContext
from .primitives import (
    SUPPORTED_SIGNATURE_SCHEMES,
    KeyShare,
    certificate_public_key,
    choose_signature_scheme,
    load_peer_chain,
    sign,
    verify_signature,
)
from .reassembly import HandshakeMessage
from .records import DTLS_1_0, DTLS_1_2, ContentType, encode_record_header
from .sessions import Session
from .suites import SUITE_PARAMETERS, TLS13_SUITES, CipherSuite, KeyExchange

__all__ = [
    "RENEGOTIATION_SCSV",
    "SERVER_TRANSITIONS",
    "TICKET_LIFETIME_HINT_SECONDS",
    "ServerHandshake12",
    "ServerState",
    "encode_hello_verify_datagram",
]

message_logger = logging.getLogger("dtls.messages")
TICKET_LIFETIME_HINT_SECONDS = 7200
RENEGOTIATION_SCSV = 0x00FF
# Curves of ECDSA certificates as supported_groups values (RFC 8422 5.1.1).
_CURVE_GROUPS = {"secp256r1": 23, "secp384r1": 24, "secp521r1": 25}


class ServerState(Enum):
    """Where a DTLS 1.2 server handshake stands."""

    WAIT_HELLO = "wait ClientHello"
    WAIT_CERTIFICATE = "wait client Certificate"
    WAIT_CERTIFIED_KEY_EXCHANGE = "wait ClientKeyExchange (then CertificateVerify)"
    WAIT_KEY_EXCHANGE = "wait ClientKeyExchange"
    WAIT_CERTIFICATE_VERIFY = "wait CertificateVerify"
    WAIT_FINISHED = "wait client Finished"
    WAIT_RESUMED_FINISHED = "wait client Finished (abbreviated)"
    ESTABLISHED = "established"


_S = ServerState
_T = HandshakeType

# state -> message type -> the states that message may lead to
SERVER_TRANSITIONS: dict[ServerState, dict[int, frozenset[ServerState]]] = {
    _S.WAIT_HELLO: {
        _T.client_hello: frozenset(
            {_S.WAIT_HELLO, _S.WAIT_CERTIFICATE, _S.WAIT_KEY_EXCHANGE, _S.WAIT_RESUMED_FINISHED}
        )
    },
    _S.WAIT_CERTIFICATE: {
        _T.certificate: frozenset({_S.WAIT_CERTIFIED_KEY_EXCHANGE, _S.WAIT_KEY_EXCHANGE})
    },
    _S.WAIT_CERTIFIED_KEY_EXCHANGE: {
        _T.client_key_exchange: frozenset({_S.WAIT_CERTIFICATE_VERIFY})
    },
    _S.WAIT_KEY_EXCHANGE: {_T.client_key_exchange: frozenset({_S.WAIT_FINISHED})},
    _S.WAIT_CERTIFICATE_VERIFY: {_T.certificate_verify: frozenset({_S.WAIT_FINISHED})},
    _S.WAIT_FINISHED: {_T.finished: frozenset({_S.ESTABLISHED})},
    _S.WAIT_RESUMED_FINISHED: {_T.finished: frozenset({_S.ESTABLISHED})},
    _S.ESTABLISHED: {},
}


class ServerHandshake12(Handshake12):
    """One DTLS 1.2 server handshake."""

    is_client = False

    def __init__(self, context: HandshakeContext) -> None:
        super().__init__(context)
        self.state = ServerState.WAIT_HELLO
        self._server_context = context.server_context
        self._key_share: KeyShare | None = None
        self._selected_certificate: (
            tuple[tuple[x509.Certificate, ...], CertificatePrivateKey] | None
        ) = None
        self._issue_ticket = False

    # ------------------------------------------------------------------ facade surface

    @property
    def established(self) -> bool:
        """Whether the handshake completed."""
        return self.state is ServerState.ESTABLISHED

    @property
    def waiting_for_first_hello(self) -> bool:
        """No ClientHello taken yet."""
        return self.state is ServerState.WAIT_HELLO

    @property
    def state_name(self) -> str:
        """Current state, for logs."""
        return self.state.value

    def start(self, now: int) -> None:
        """Servers wait for the client."""

    def handle_message(self, message: HandshakeMessage, now: int) -> None:
        """One whole client message, in order: look it up in the table, run its handler."""
        handler = _SERVER_HANDLERS.get(message.msg_type)
        self.state = self._transition(
            SERVER_TRANSITIONS[self.state].get(message.msg_type),
            self.state.value,
            None if handler is None else partial(handler, self),
            message,
            now,
        )

    # ------------------------------------------------------------------ ClientHello

    def _on_client_hello(
        self, message: HandshakeMessage, transcript_before: bytes, now: int
    ) -> ServerState:
        hello = hs.decode_client_hello(message.body)
        config = self.configuration
        negotiated = self.negotiated
        records = self._records
        cookies = self._server_context.cookies
        address = self._context.address
        if config.cookie_exchange and not cookies.verify(address, hello, now):
            # Stateless answer: forget this hello, keep waiting for one with our cookie.
            cookie = cookies.make(address, hello, now)
            message_logger.info(">>> hello_verify_request (stateless cookie exchange)")
            self._context.outgoing.append(
                encode_hello_verify_datagram(
                    cookie, message_seq=message.message_seq, record_sequence=0
                )
            )
            self._transcript = bytearray()
            return ServerState.WAIT_HELLO
        # DTLS versions count downwards (FEFF is 1.0) and all start with FE: 0x0303 is TLS 1.2.
        if hello.client_version >> 8 != 0xFE or hello.client_version > DTLS_1_2:
            raise AlertError(
                AlertDescription.protocol_version,
                f"client_version {hello.client_version:#06x} is not DTLS 1.2 or later",
            )
        if 0 not in hello.compression_methods:
            raise AlertError(AlertDescription.illegal_parameter, "no null compression")
        negotiated.version = DTLSVersion.DTLS_1_2
        self._flights.next_message_seq = message.message_seq
        # RFC 6347 4.2.1: continue the record numbering of the hello, so our flight does not
        # look like a replay of the stateless HelloVerifyRequest (which reused that number).
        records.continue_numbering(0, records.current_sequence_number)
        negotiated.client_random = hello.random
        negotiated.server_random = os.urandom(32)
        if DTLSVersion.DTLS_1_3 in config.versions:
            # RFC 8446 4.1.3: a server that could do 1.3 marks a 1.2 answer, so a 1.3 client
            # can tell a downgrade by an attacker from a real 1.2-only peer.
            negotiated.server_random = negotiated.server_random[:24] + b"DOWNGRD\x01"
        extensions = hello.extensions
        name_body = hs.find_extension(extensions, ExtensionType.server_name)
        negotiated.server_name = hs.decode_server_name(name_body) if name_body is not None else None
        renegotiation = hs.find_extension(extensions, ExtensionType.renegotiation_info)
        if renegotiation is not None and hs.decode_opaque8(renegotiation) != b"":
            raise AlertError(AlertDescription.handshake_failure, "renegotiation_info not empty")
        secure_renegotiation = (
            renegotiation is not None or RENEGOTIATION_SCSV in hello.cipher_suites
        )
        negotiated.extended_master_secret = (
            hs.find_extension(extensions, ExtensionType.extended_master_secret) is not None
        )
        if config.require_extended_master_secret and not negotiated.extended_master_secret:
            raise AlertError(AlertDescription.handshake_failure, "extended master secret needed")
        groups = _u16_list_or_none(extensions, ExtensionType.supported_groups)
        schemes = _u16_list_or_none(extensions, ExtensionType.signature_algorithms)
        reply: hs.Extensions = []
        if secure_renegotiation:
            reply.append((ExtensionType.renegotiation_info, hs.encode_opaque8(b"")))
        if negotiated.extended_master_secret:
            reply.append((ExtensionType.extended_master_secret, b""))
        alpn_body = hs.find_extension(
            extensions, ExtensionType.application_layer_protocol_negotiation
        )
        if alpn_body is not None and config.alpn_protocols:
            offered_protocols = hs.decode_alpn(alpn_body)
            chosen = next((p for p in config.alpn_protocols if p in offered_protocols), None)
            if chosen is None:
                raise AlertError(AlertDescription.no_application_protocol, "no common ALPN")
            negotiated.alpn_protocol = chosen
            reply.append(
                (ExtensionType.application_layer_protocol_negotiation, hs.encode_alpn([chosen]))
            )
        srtp_body = hs.find_extension(extensions, ExtensionType.use_srtp)
        if srtp_body is not None and config.srtp_profiles:
            offered_profiles, _ = hs.decode_use_srtp(srtp_body)
            chosen_profile = next((p for p in config.srtp_profiles if p in offered_profiles), None)
            if chosen_profile is not None:
                negotiated.srtp_profile = chosen_profile
                reply.append((ExtensionType.use_srtp, hs.encode_use_srtp([chosen_profile])))
        cid_body = hs.find_extension(extensions, ExtensionType.connection_id)
        if cid_body is not None and config.connection_id is not None:
            records.peer_connection_id = hs.decode_opaque8(cid_body)
            reply.append(
                (ExtensionType.connection_id, hs.encode_opaque8(records.local_connection_id))
            )
        else:
            records.local_connection_id = b""
        ticket_body = hs.find_extension(extensions, ExtensionType.session_ticket)
        # Resumption: ticket first, then the session cache.
        session: Session | None = None
        if config.session_tickets and ticket_body:
            session = self._server_context.ticket_keys.open(ticket_body, hello.session_id)
        if session is None and hello.session_id:
            session = self._server_context.session_cache.get(hello.session_id)
        if session is not None and (
            session.cipher_suite not in hello.cipher_suites
            or session.cipher_suite not in config.cipher_suites
            or session.extended_master_secret != negotiated.extended_master_secret
            or (session.server_name or None) != negotiated.server_name
        ):
            session = None
        self._issue_ticket = config.session_tickets and ticket_body is not None and session is None
        if self._issue_ticket:
            reply.append((ExtensionType.session_ticket, b""))
        if session is not None:
            return self._resume(hello, session, reply, now)
        return self._full_handshake_flight(hello, groups, schemes, reply, now)

    def _full_handshake_flight(
        self,
        hello: hs.ClientHello,
        groups: list[int] | None,
        schemes: list[int] | None,
        reply: hs.Extensions,
        now: int,
    ) -> ServerState:
        config = self.configuration
        negotiated = self.negotiated
        negotiated.cipher_suite = self._choose_suite(hello, groups)
        self._suite = SUITE_PARAMETERS[negotiated.cipher_suite]
        negotiated.session_id = os.urandom(32)
        self._begin_with_server_hello(reply)
        next_state = ServerState.WAIT_KEY_EXCHANGE
        key_exchange = self._suite.key_exchange
        if key_exchange in (KeyExchange.ECDHE_ECDSA, KeyExchange.ECDHE_RSA):
            assert self._selected_certificate is not None
            chain, private_key = self._selected_certificate
            self._send(
                HandshakeType.certificate,
                hs.encode_certificate(hs.Certificate(certificates=[der(c) for c in chain])),
            )
            key_share = self._new_key_share(groups)
            params = (
                bytes((CURVE_TYPE_NAMED,))
                + int(key_share.group).to_bytes(2, "big")
                + bytes((len(key_share.public_bytes),))
                + key_share.public_bytes
            )
            scheme = choose_signature_scheme(private_key, schemes)
            signature = sign(
                private_key, scheme, negotiated.client_random + negotiated.server_random + params
            )
            self._send(
                HandshakeType.server_key_exchange,
                params + scheme.to_bytes(2, "big") + len(signature).to_bytes(2, "big") + signature,
            )
            if config.request_client_certificate or config.require_client_certificate:
                request = hs.CertificateRequest(
                    certificate_types=bytes((64, 1)),  # ecdsa_sign, rsa_sign
                    signature_schemes=[int(s) for s in SUPPORTED_SIGNATURE_SCHEMES],
                    authorities=[c.subject.public_bytes() for c in config.ca_certificates or ()],
                )
                self._send(
                    HandshakeType.certificate_request, hs.encode_certificate_request(request)
                )
                next_state = ServerState.WAIT_CERTIFICATE
        else:
            hint = config.psk_identity_hint
            if key_exchange is KeyExchange.ECDHE_PSK:
                key_share = self._new_key_share(groups)
                self._send(
                    HandshakeType.server_key_exchange,
                    len(hint).to_bytes(2, "big")
                    + hint
                    + bytes((CURVE_TYPE_NAMED,))
                    + int(key_share.group).to_bytes(2, "big")
                    + bytes((len(key_share.public_bytes),))
                    + key_share.public_bytes,
                )
            elif hint:
                self._send(HandshakeType.server_key_exchange, len(hint).to_bytes(2, "big") + hint)
        self._send(HandshakeType.server_hello_done, b"")
        self._flights.send(now, expects_reply=True)
        return next_state

    def _resume(
        self, hello: hs.ClientHello, session: Session, reply: hs.Extensions, now: int
    ) -> ServerState:
        negotiated = self.negotiated
        negotiated.session_resumed = True
        negotiated.cipher_suite = CipherSuite(session.cipher_suite)
        self._suite = SUITE_PARAMETERS[negotiated.cipher_suite]
        negotiated.session_id = hello.session_id
        self._master_secret = session.master_secret
        negotiated.peer_certificates = tuple(
            x509.load_der_x509_certificate(der) for der in session.peer_certificates
        )
        if negotiated.alpn_protocol is None:
            negotiated.alpn_protocol = session.alpn_protocol
        negotiated.session = session
        self._begin_with_server_hello(reply)
        self._derive_keys()
        self._change_cipher_spec()
        self._queue_finished()
        self._flights.send(now, expects_reply=True)
        return ServerState.WAIT_RESUMED_FINISHED

    def _begin_with_server_hello(self, reply: hs.Extensions) -> None:
        """A new flight, starting with our ServerHello."""
        negotiated = self.negotiated
        assert negotiated.cipher_suite is not None
        self._flights.begin()
        self._send(
            HandshakeType.server_hello,
            hs.encode_server_hello(
                hs.ServerHello(
                    server_version=DTLS_1_2,
                    random=negotiated.server_random,
                    session_id=negotiated.session_id,
                    cipher_suite=negotiated.cipher_suite,
                    compression_method=0,
                    extensions=reply,
                )
            ),
        )

    def _choose_suite(self, hello: hs.ClientHello, groups: list[int] | None) -> CipherSuite:
        config = self.configuration
        certificates = config.certificates()
        server_name = self.negotiated.server_name
        have_psk = config.psk is not None or config.psk_lookup is not None
        have_group = groups is None or any(group in groups for group in config.groups)
        for suite in config.cipher_suites:
            if suite not in hello.cipher_suites or suite in TLS13_SUITES:
                continue
            key_exchange = SUITE_PARAMETERS[suite].key_exchange
            if key_exchange is KeyExchange.PSK:
                if have_psk:
                    return suite
                continue
            if not have_group:
                continue
            if key_exchange is KeyExchange.ECDHE_PSK:
                if have_psk:
                    return suite
                continue
            wanted = (
                ec.EllipticCurvePrivateKey
                if key_exchange is KeyExchange.ECDHE_ECDSA
                else rsa.RSAPrivateKey
            )
            # A certificate registered for the requested name is the only candidate;
            # otherwise any certificate we hold (default first) may serve.
            named = certificates.select(server_name) if server_name else None
            if named is not None and named is not certificates.select(None):
                candidates = [named]
            else:
                candidates = certificates.all_entries()
            for entry in candidates:
                key = entry[1]
                if isinstance(key, ec.EllipticCurvePrivateKey) and groups is not None:
                    # RFC 8422 5.1: an ECDSA certificate's curve must be one the client named.
                    curve_group = _CURVE_GROUPS.get(key.curve.name)
                    if curve_group is not None and curve_group not in groups:
                        continue
                if isinstance(key, wanted) or (
                    key_exchange is KeyExchange.ECDHE_ECDSA
                    and isinstance(key, ed25519.Ed25519PrivateKey)
                ):
                    self._selected_certificate = entry
                    return suite
        # RFC 5246 7.4.1.3: no acceptable choice is a handshake_failure alert.  The reason
        # (for our logs) says when the cause is the kind of credentials, not the list.
        psk_kinds = (KeyExchange.PSK, KeyExchange.ECDHE_PSK)
        offered = [
            SUITE_PARAMETERS[CipherSuite(value)].key_exchange
            for value in hello.cipher_suites
            if value in SUITE_PARAMETERS and value not in TLS13_SUITES
        ]
        if offered and all(kind in psk_kinds for kind in offered) and not have_psk:
            reason = "the client offers only PSK suites and we have no PSK"
        elif (
            offered
            and not any(kind in psk_kinds for kind in offered)
            and not certificates.all_entries()
        ):
            reason = "the client offers only certificate suites and we have no certificate"
        else:
            reason = "no cipher suite in common"
        raise AlertError(AlertDescription.handshake_failure, reason)

    def _new_key_share(self, groups: list[int] | None) -> KeyShare:
        for group in self.configuration.groups:
            if groups is None or group in groups:
                self._key_share = KeyShare(group)
                self.negotiated.group = group
                return self._key_share
        raise AlertError(AlertDescription.handshake_failure, "no group in common")

    # ------------------------------------------------------------------ the client's flight

    def _on_certificate(
        self, message: HandshakeMessage, transcript_before: bytes, now: int
    ) -> ServerState:
        chain = load_peer_chain(hs.decode_certificate(message.body).certificates)
        if not chain:
            if self.configuration.require_client_certificate:
                raise AlertError(AlertDescription.handshake_failure, "client certificate required")
            return ServerState.WAIT_KEY_EXCHANGE
        certificate_public_key(chain[0])  # a key we can verify CertificateVerify with
        self._check_peer_chain(chain, as_server=False)
        return ServerState.WAIT_CERTIFIED_KEY_EXCHANGE

    def _on_client_key_exchange(
        self, message: HandshakeMessage, transcript_before: bytes, now: int
    ) -> ServerState:
        self._derive_master_secret(self._premaster(message.body))
        if self.state is ServerState.WAIT_CERTIFIED_KEY_EXCHANGE:
            return ServerState.WAIT_CERTIFICATE_VERIFY
        return ServerState.WAIT_FINISHED

    def _on_certificate_verify(
        self, message: HandshakeMessage, transcript_before: bytes, now: int
    ) -> ServerState:
        reader = hs.Reader(message.body)
        scheme = reader.uint(2)
        signature = reader.vector(2)
        reader.finish()
        verify_signature(self.negotiated.peer_certificates[0], scheme, signature, transcript_before)
        return ServerState.WAIT_FINISHED

    def _on_finished(
        self, message: HandshakeMessage, transcript_before: bytes, now: int
    ) -> ServerState:
        self._check_finished(message.body, transcript_before, from_client=True)
        negotiated = self.negotiated
        if self.state is ServerState.WAIT_RESUMED_FINISHED:
            return ServerState.ESTABLISHED
        self._flights.begin()
        if self._issue_ticket:
            negotiated.session = self._make_session(ticket=b"")
            ticket = self._server_context.ticket_keys.seal(negotiated.session)
            self._send(
                HandshakeType.new_session_ticket,
                hs.encode_new_session_ticket(
                    hs.NewSessionTicket(
                        lifetime_hint_seconds=TICKET_LIFETIME_HINT_SECONDS, ticket=ticket
                    )
                ),
            )
        self._change_cipher_spec()
        self._queue_finished()
        self._flights.send(now, expects_reply=False)
        session = negotiated.session
        if not isinstance(session, Session):
            session = self._make_session(ticket=b"")
            negotiated.session = session
        self._server_context.session_cache.store(session)
        return ServerState.ESTABLISHED

    def _premaster(self, body: bytes) -> bytes:
        """The premaster secret from the client's ClientKeyExchange."""
        assert self._suite is not None
        key_exchange = self._suite.key_exchange
        reader = hs.Reader(body)
        psk = b""
        if key_exchange in (KeyExchange.PSK, KeyExchange.ECDHE_PSK):
            identity = reader.vector(2)
            self.negotiated.psk_identity = identity
            config = self.configuration
            found: bytes | None = None
            if config.psk_lookup is not None:
                found = config.psk_lookup(identity)
            elif not config.psk_identity or hmac.compare_digest(identity, config.psk_identity):
                # A fixed psk with a psk_identity takes only that identity; without one, any
                # identity (reported as the peer claimed it, unchecked: see DTLSConfiguration).
                found = config.psk
            if found is None:
                raise AlertError(AlertDescription.unknown_psk_identity, "unknown PSK identity")
            psk = found
            if key_exchange is KeyExchange.PSK:
                reader.finish()
                return psk_premaster(bytes(len(psk)), psk)
        public = reader.vector(1, minimum=1)
        reader.finish()
        assert self._key_share is not None
        shared = self._key_share.exchange(public)
        if key_exchange is KeyExchange.ECDHE_PSK:
            return psk_premaster(shared, psk)
        return shared


_Handler = Callable[[ServerHandshake12, HandshakeMessage, bytes, int], ServerState]
_SERVER_HANDLERS: dict[int, _Handler] = {
    HandshakeType.client_hello: ServerHandshake12._on_client_hello,
    HandshakeType.certificate: ServerHandshake12._on_certificate,
    HandshakeType.client_key_exchange: ServerHandshake12._on_client_key_exchange,
    HandshakeType.certificate_verify: ServerHandshake12._on_certificate_verify,
    HandshakeType.finished: ServerHandshake12._on_finished,
}


def _u16_list_or_none(extensions: hs.Extensions, ext_type: int) -> list[int] | None:
    body = hs.find_extension(extensions, ext_type)
    return None if body is None else hs.decode_uint16_list(body)


def encode_hello_verify_datagram(cookie: bytes, *, message_seq: int, record_sequence: int) -> bytes:
    """A whole HelloVerifyRequest datagram (RFC 6347 4.2.1: version field DTLS 1.0)."""
    body = hs.encode_hello_verify_request(
        hs.HelloVerifyRequest(server_version=DTLS_1_0, cookie=cookie)
    )
    message = hs.encode_handshake(HandshakeType.hello_verify_request, message_seq, body)
    return (
        encode_record_header(ContentType.handshake, DTLS_1_0, 0, record_sequence, len(message))
        + message
    )
