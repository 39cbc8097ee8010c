"""The DTLS 1.2 client handshake as a state machine (RFC 6347, RFC 5246 7.3).

The table :data:`CLIENT_TRANSITIONS` is the whole protocol: for each state,
the messages that may arrive and the states each may lead to.  A message the
table does not list for the current state is an ``unexpected_message`` alert;
its handler only chooses among the listed next states (the suite decides
whether a Certificate follows, a PSK suite may skip ServerKeyExchange...).

Full handshake with a certificate suite::

    START -(send ClientHello)-> WAIT_HELLO
    WAIT_HELLO -HelloVerifyRequest-> WAIT_HELLO (resend ClientHello with the cookie)
    WAIT_HELLO -ServerHello-> WAIT_CERTIFICATE -Certificate-> WAIT_KEY_EXCHANGE
      -ServerKeyExchange-> WAIT_REQUEST_OR_DONE [-CertificateRequest-> WAIT_HELLO_DONE]
      -ServerHelloDone (send our flight)-> WAIT_TICKET_OR_FINISHED | WAIT_FINISHED
    WAIT_TICKET_OR_FINISHED -NewSessionTicket-> WAIT_FINISHED -Finished-> ESTABLISHED

PSK suites go from ServerHello to WAIT_HINT_OR_DONE (plain PSK: the identity
hint is optional) or WAIT_KEY_EXCHANGE (ECDHE_PSK).  An abbreviated handshake
(the server resumed our session) goes from ServerHello straight to
WAIT_TICKET_OR_FINISHED or WAIT_FINISHED; we send our ChangeCipherSpec and
Finished after the server's.
"""

from __future__ import annotations

import ipaddress
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
    CertificatePublicKey,
    KeyShare,
    certificate_public_key,
    choose_signature_scheme,
    load_peer_chain,
    sign,
    verify_signature,
)
from .reassembly import HandshakeMessage
from .records import DTLS_1_2
from .sessions import Session
from .suites import (
    SUITE_PARAMETERS,
    TLS13_SUITES,
    CipherSuite,
    KeyExchange,
    NamedGroup,
    SrtpProfile,
)

__all__ = [
    "CLIENT_TRANSITIONS",
    "MAX_HELLO_VERIFY_REQUESTS",
    "ClientHandshake12",
    "ClientState",
]

MAX_HELLO_VERIFY_REQUESTS = 4


class ClientState(Enum):
    """Where a DTLS 1.2 client handshake stands."""

    START = "start"
    WAIT_HELLO = "wait ServerHello"
    WAIT_CERTIFICATE = "wait server Certificate"
    WAIT_KEY_EXCHANGE = "wait ServerKeyExchange"
    WAIT_HINT_OR_DONE = "wait PSK hint or ServerHelloDone"
    WAIT_REQUEST_OR_DONE = "wait CertificateRequest or ServerHelloDone"
    WAIT_HELLO_DONE = "wait ServerHelloDone"
    WAIT_TICKET_OR_FINISHED = "wait NewSessionTicket or Finished"
    WAIT_FINISHED = "wait server Finished"
    ESTABLISHED = "established"


_S = ClientState
_T = HandshakeType
_AFTER_SERVER_FLIGHT = frozenset({_S.WAIT_TICKET_OR_FINISHED, _S.WAIT_FINISHED})

# state -> message type -> the states that message may lead to
CLIENT_TRANSITIONS: dict[ClientState, dict[int, frozenset[ClientState]]] = {
    _S.START: {},
    _S.WAIT_HELLO: {
        _T.hello_verify_request: frozenset({_S.WAIT_HELLO}),
        _T.server_hello: frozenset(
            {_S.WAIT_CERTIFICATE, _S.WAIT_KEY_EXCHANGE, _S.WAIT_HINT_OR_DONE} | _AFTER_SERVER_FLIGHT
        ),
    },
    _S.WAIT_CERTIFICATE: {_T.certificate: frozenset({_S.WAIT_KEY_EXCHANGE})},
    _S.WAIT_KEY_EXCHANGE: {
        _T.server_key_exchange: frozenset({_S.WAIT_REQUEST_OR_DONE, _S.WAIT_HELLO_DONE})
    },
    _S.WAIT_HINT_OR_DONE: {
        _T.server_key_exchange: frozenset({_S.WAIT_HELLO_DONE}),
        _T.server_hello_done: _AFTER_SERVER_FLIGHT,
    },
    _S.WAIT_REQUEST_OR_DONE: {
        _T.certificate_request: frozenset({_S.WAIT_HELLO_DONE}),
        _T.server_hello_done: _AFTER_SERVER_FLIGHT,
    },
    _S.WAIT_HELLO_DONE: {_T.server_hello_done: _AFTER_SERVER_FLIGHT},
    _S.WAIT_TICKET_OR_FINISHED: {
        _T.new_session_ticket: frozenset({_S.WAIT_FINISHED}),
        _T.finished: frozenset({_S.ESTABLISHED}),
    },
    _S.WAIT_FINISHED: {_T.finished: frozenset({_S.ESTABLISHED})},
    _S.ESTABLISHED: {},
}


class ClientHandshake12(Handshake12):
    """One DTLS 1.2 client handshake."""

    is_client = True

    def __init__(self, context: HandshakeContext) -> None:
        super().__init__(context)
        self.state = ClientState.START
        self._hello: hs.ClientHello | None = None
        self._hello_verify_count = 0
        self._offered_session_id = b""
        self._peer_key_share: tuple[NamedGroup, bytes] | None = None
        self._certificate_request: hs.CertificateRequest | None = None
        self._expect_ticket = False
        self._new_ticket = b""
        self.psk_identity_hint = b""

    # ------------------------------------------------------------------ facade surface

    @property
    def established(self) -> bool:
        """Whether the handshake completed."""
        return self.state is ClientState.ESTABLISHED

    @property
    def waiting_for_first_hello(self) -> bool:
        """Clients never wait for a ClientHello."""
        return False

    @property
    def state_name(self) -> str:
        """Current state, for logs."""
        return self.state.value

    def start(self, now: int) -> None:
        """Send the first ClientHello."""
        if self.state is not ClientState.START:
            return
        self._send_client_hello(cookie=b"", now=now)
        self.state = ClientState.WAIT_HELLO

    def handle_message(self, message: HandshakeMessage, now: int) -> None:
        """One whole server message, in order: look it up in the table, run its handler."""
        handler = _CLIENT_HANDLERS.get(message.msg_type)
        self.state = self._transition(
            CLIENT_TRANSITIONS[self.state].get(message.msg_type),
            self.state.value,
            None if handler is None else partial(handler, self),
            message,
            now,
        )

    # ------------------------------------------------------------------ ClientHello

    def _offered_suites(self) -> list[CipherSuite]:
        """With a PSK configured we offer only PSK suites, otherwise only certificate ones."""
        has_psk = self.configuration.psk is not None
        return [
            suite
            for suite in self.configuration.cipher_suites
            if suite not in TLS13_SUITES
            and (SUITE_PARAMETERS[suite].key_exchange in (KeyExchange.PSK, KeyExchange.ECDHE_PSK))
            == has_psk
        ]

    # ------------------------------------------------------------------ taking over from 1.3

    def build_hello(self) -> hs.ClientHello:
        """The 1.2 part of a ClientHello that offers 1.3 too (the 1.3 client adds its part)."""
        return self._first_hello()

    def note_hello_sent(self, hello: hs.ClientHello, message_seq: int) -> None:
        """The 1.3 client sent ``hello``: continue from it if the server answers in 1.2.

        A HelloVerifyRequest makes us resend it with the cookie; a 1.2 ServerHello
        continues the transcript that starts with it.
        """
        self._hello = hello
        self._transcript = bytearray(
            hs.encode_handshake(
                HandshakeType.client_hello, message_seq, hs.encode_client_hello(hello)
            )
        )
        self.state = ClientState.WAIT_HELLO

    def _first_hello(self) -> hs.ClientHello:
        config = self.configuration
        self.negotiated.client_random = os.urandom(32)
        session_id = b""
        extensions: hs.Extensions = []
        if config.server_name and not _is_ip_address(config.server_name):
            extensions.append(
                (ExtensionType.server_name, hs.encode_server_name(config.server_name))
            )
        extensions += [
            (ExtensionType.supported_groups, hs.encode_uint16_list(list(config.groups))),
            (ExtensionType.ec_point_formats, hs.encode_opaque8(b"\x00")),
            (
                ExtensionType.signature_algorithms,
                hs.encode_uint16_list(list(SUPPORTED_SIGNATURE_SCHEMES)),
            ),
            (ExtensionType.extended_master_secret, b""),
            (ExtensionType.renegotiation_info, hs.encode_opaque8(b"")),
        ]
        if config.alpn_protocols:
            extensions.append(
                (
                    ExtensionType.application_layer_protocol_negotiation,
                    hs.encode_alpn(config.alpn_protocols),
                )
            )
        if config.srtp_profiles:
            extensions.append((ExtensionType.use_srtp, hs.encode_use_srtp(config.srtp_profiles)))
        if config.connection_id is not None:
            extensions.append(
                (ExtensionType.connection_id, hs.encode_opaque8(config.connection_id))
            )
        session = config.session if isinstance(config.session, Session) else None
        if config.session_tickets:
            ticket = session.ticket if session is not None else b""
            extensions.append((ExtensionType.session_ticket, ticket))
        if session is not None:
            session_id = session.session_id or os.urandom(32)
        self._offered_session_id = session_id
        return hs.ClientHello(
            client_version=DTLS_1_2,
            random=self.negotiated.client_random,
            session_id=session_id,
            cookie=b"",
            cipher_suites=[int(suite) for suite in self._offered_suites()],
            compression_methods=b"\x00",
            extensions=extensions,
        )

    def _send_client_hello(self, *, cookie: bytes, now: int) -> None:
        if self._hello is None:
            self._hello = self._first_hello()
        first = self._hello
        hello = hs.ClientHello(
            client_version=first.client_version,
            random=first.random,
            session_id=first.session_id,
            cookie=cookie,
            cipher_suites=first.cipher_suites,
            compression_methods=first.compression_methods,
            extensions=first.extensions,
        )
        self._transcript = bytearray()
        self._flights.begin()
        self._send(HandshakeType.client_hello, hs.encode_client_hello(hello))
        self._flights.send(now, expects_reply=True)

    # ------------------------------------------------------------------ handlers

    def _on_hello_verify_request(
        self, message: HandshakeMessage, transcript_before: bytes, now: int
    ) -> ClientState:
        request = hs.decode_hello_verify_request(message.body)
        self._hello_verify_count += 1
        if self._hello_verify_count > MAX_HELLO_VERIFY_REQUESTS:
            raise AlertError(AlertDescription.unexpected_message, "too many HelloVerifyRequests")
        # Some servers restart epoch-0 record numbers after the stateless exchange.
        self._records.restart_read_window(0)
        self._send_client_hello(cookie=request.cookie, now=now)
        return ClientState.WAIT_HELLO

    def _on_server_hello(
        self, message: HandshakeMessage, transcript_before: bytes, now: int
    ) -> ClientState:
        config = self.configuration
        negotiated = self.negotiated
        records = self._records
        hello = hs.decode_server_hello(message.body)
        if hello.server_version != DTLS_1_2:
            raise AlertError(AlertDescription.protocol_version, "server did not pick DTLS 1.2")
        assert self._hello is not None
        if hello.cipher_suite not in self._hello.cipher_suites:
            raise AlertError(AlertDescription.illegal_parameter, "suite we did not offer")
        if hello.compression_method != 0:
            raise AlertError(AlertDescription.illegal_parameter, "compression")
        offered = {ext_type for ext_type, _ in self._hello.extensions}
        for ext_type, _ in hello.extensions:
            if ext_type not in offered:
                raise AlertError(AlertDescription.unsupported_extension, f"extension {ext_type}")
        negotiated.version = DTLSVersion.DTLS_1_2
        records.plaintext_version = DTLS_1_2
        negotiated.cipher_suite = CipherSuite(hello.cipher_suite)
        self._suite = SUITE_PARAMETERS[negotiated.cipher_suite]
        negotiated.server_random = hello.random
        negotiated.session_id = hello.session_id
        extensions = hello.extensions
        renegotiation = hs.find_extension(extensions, ExtensionType.renegotiation_info)
        if renegotiation is not None and hs.decode_opaque8(renegotiation) != b"":
            raise AlertError(AlertDescription.handshake_failure, "bad renegotiation_info")
        negotiated.extended_master_secret = (
            hs.find_extension(extensions, ExtensionType.extended_master_secret) is not None
        )
        if config.require_extended_master_secret and not negotiated.extended_master_secret:
            raise AlertError(AlertDescription.handshake_failure, "extended master secret needed")
        alpn = hs.find_extension(extensions, ExtensionType.application_layer_protocol_negotiation)
        if alpn is not None:
            names = hs.decode_alpn(alpn)
            if len(names) != 1 or names[0] not in config.alpn_protocols:
                raise AlertError(AlertDescription.illegal_parameter, "bad ALPN answer")
            negotiated.alpn_protocol = names[0]
        srtp = hs.find_extension(extensions, ExtensionType.use_srtp)
        if srtp is not None:
            profiles, mki = hs.decode_use_srtp(srtp)
            if len(profiles) != 1 or profiles[0] not in config.srtp_profiles:
                raise AlertError(AlertDescription.illegal_parameter, "bad use_srtp answer")
            if mki:
                # RFC 5764 4.1.1: an MKI other than the one offered (we offer none): abort.
                raise AlertError(AlertDescription.illegal_parameter, "SRTP MKI we did not offer")
            negotiated.srtp_profile = SrtpProfile(profiles[0])
        cid = hs.find_extension(extensions, ExtensionType.connection_id)
        if cid is not None:
            records.peer_connection_id = hs.decode_opaque8(cid)
        else:
            records.local_connection_id = b""
        self._expect_ticket = (
            hs.find_extension(extensions, ExtensionType.session_ticket) is not None
        )
        after_server_flight = (
            ClientState.WAIT_TICKET_OR_FINISHED
            if self._expect_ticket
            else ClientState.WAIT_FINISHED
        )
        session = config.session if isinstance(config.session, Session) else None
        if (
            session is not None
            and hello.session_id
            and hello.session_id == self._offered_session_id
        ):
            if session.cipher_suite != hello.cipher_suite:
                raise AlertError(AlertDescription.illegal_parameter, "resumed with another suite")
            if session.extended_master_secret != negotiated.extended_master_secret:
                raise AlertError(AlertDescription.handshake_failure, "EMS mismatch on resumption")
            negotiated.session_resumed = True
            self._master_secret = session.master_secret
            negotiated.peer_certificates = tuple(
                x509.load_der_x509_certificate(der) for der in session.peer_certificates
            )
            if negotiated.alpn_protocol is None:
                negotiated.alpn_protocol = session.alpn_protocol
            self._derive_keys()
            return after_server_flight
        key_exchange = self._suite.key_exchange
        if key_exchange in (KeyExchange.ECDHE_ECDSA, KeyExchange.ECDHE_RSA):
            return ClientState.WAIT_CERTIFICATE
        if key_exchange is KeyExchange.ECDHE_PSK:
            return ClientState.WAIT_KEY_EXCHANGE
        return ClientState.WAIT_HINT_OR_DONE

    def _on_certificate(
        self, message: HandshakeMessage, transcript_before: bytes, now: int
    ) -> ClientState:
        chain = load_peer_chain(hs.decode_certificate(message.body).certificates)
        if not chain:
            raise AlertError(AlertDescription.bad_certificate, "empty server certificate")
        self._check_key_fits_suite(chain[0])
        self._check_peer_chain(chain, as_server=True)
        return ClientState.WAIT_KEY_EXCHANGE

    def _check_key_fits_suite(self, leaf: x509.Certificate) -> None:
        """RFC 8422 5.3 / RFC 5246 7.4.2: ECDHE_ECDSA needs an ECDSA or EdDSA key, ECDHE_RSA
        an RSA key; checked whether or not the chain is validated."""
        assert self._suite is not None
        key = certificate_public_key(leaf)
        if self._suite.key_exchange is KeyExchange.ECDHE_ECDSA:
            fits = isinstance(key, ec.EllipticCurvePublicKey | ed25519.Ed25519PublicKey)
            wanted = "an ECDSA or EdDSA"
        else:
            fits = isinstance(key, rsa.RSAPublicKey)
            wanted = "an RSA"
        if not fits:
            suite = self.negotiated.cipher_suite
            raise AlertError(
                AlertDescription.unsupported_certificate,
                f"{suite.name if suite else 'the suite'} needs {wanted} certificate, "
                f"the server sent an {_key_kind(key)} one (RFC 8422 5.3)",
            )

    def _on_server_key_exchange(
        self, message: HandshakeMessage, transcript_before: bytes, now: int
    ) -> ClientState:
        assert self._suite is not None
        body = message.body
        key_exchange = self._suite.key_exchange
        reader = hs.Reader(body)
        if key_exchange in (KeyExchange.PSK, KeyExchange.ECDHE_PSK):
            self.psk_identity_hint = reader.vector(2)  # we send the configured identity
            if key_exchange is KeyExchange.PSK:
                reader.finish()
                return ClientState.WAIT_HELLO_DONE
        params_start = len(body) - reader.remaining()
        if reader.uint(1) != CURVE_TYPE_NAMED:
            raise AlertError(AlertDescription.illegal_parameter, "only named curves")
        group_value = reader.uint(2)
        if group_value not in self.configuration.groups:
            raise AlertError(AlertDescription.illegal_parameter, "group we did not offer")
        public = reader.vector(1, minimum=1)
        params = body[params_start : len(body) - reader.remaining()]
        group = NamedGroup(group_value)
        self._peer_key_share = (group, public)
        self.negotiated.group = group
        if key_exchange is KeyExchange.ECDHE_PSK:
            reader.finish()
            return ClientState.WAIT_HELLO_DONE
        scheme = reader.uint(2)
        signature = reader.vector(2)
        reader.finish()
        negotiated = self.negotiated
        verify_signature(
            negotiated.peer_certificates[0],
            scheme,
            signature,
            negotiated.client_random + negotiated.server_random + params,
        )
        return ClientState.WAIT_REQUEST_OR_DONE

    def _on_certificate_request(
        self, message: HandshakeMessage, transcript_before: bytes, now: int
    ) -> ClientState:
        self._certificate_request = hs.decode_certificate_request(message.body)
        return ClientState.WAIT_HELLO_DONE

    def _on_server_hello_done(
        self, message: HandshakeMessage, transcript_before: bytes, now: int
    ) -> ClientState:
        if message.body:
            raise AlertError(AlertDescription.decode_error, "ServerHelloDone with a body")
        self._send_key_exchange_flight(now)
        return (
            ClientState.WAIT_TICKET_OR_FINISHED
            if self._expect_ticket
            else ClientState.WAIT_FINISHED
        )

    def _on_new_session_ticket(
        self, message: HandshakeMessage, transcript_before: bytes, now: int
    ) -> ClientState:
        self._new_ticket = hs.decode_new_session_ticket(message.body).ticket
        return ClientState.WAIT_FINISHED

    def _on_finished(
        self, message: HandshakeMessage, transcript_before: bytes, now: int
    ) -> ClientState:
        self._check_finished(message.body, transcript_before, from_client=False)
        if self.negotiated.session_resumed:
            self._flights.begin()
            self._change_cipher_spec()
            self._queue_finished()
            self._flights.send(now, expects_reply=False)
        self._remember_session()
        return ClientState.ESTABLISHED

    # ------------------------------------------------------------------ our second flight

    def _send_key_exchange_flight(self, now: int) -> None:
        assert self._suite is not None
        config = self.configuration
        key_exchange = self._suite.key_exchange
        self._flights.begin()
        signing_key: CertificatePrivateKey | None = None
        if self._certificate_request is not None:
            chain: tuple[x509.Certificate, ...] = ()
            if config.private_key is not None and config.certificate_chain:
                chain = config.certificate_chain
                signing_key = config.private_key
            self._send(
                HandshakeType.certificate,
                hs.encode_certificate(hs.Certificate(certificates=[der(c) for c in chain])),
            )
        premaster, exchange_body = self._premaster(key_exchange)
        self._send(HandshakeType.client_key_exchange, exchange_body)
        self._derive_master_secret(premaster)
        if signing_key is not None and self._certificate_request is not None:
            scheme = choose_signature_scheme(
                signing_key, self._certificate_request.signature_schemes
            )
            signature = sign(signing_key, scheme, bytes(self._transcript))
            self._send(
                HandshakeType.certificate_verify,
                scheme.to_bytes(2, "big") + len(signature).to_bytes(2, "big") + signature,
            )
        self._change_cipher_spec()
        self._queue_finished()
        self._flights.send(now, expects_reply=True)

    def _premaster(self, key_exchange: KeyExchange) -> tuple[bytes, bytes]:
        """(premaster secret, ClientKeyExchange body) for the negotiated key exchange."""
        config = self.configuration
        shared = b""
        public = b""
        if key_exchange is not KeyExchange.PSK:
            if self._peer_key_share is None:
                raise AlertError(AlertDescription.handshake_failure, "no server key share")
            group, peer_public = self._peer_key_share
            share = KeyShare(group)
            shared = share.exchange(peer_public)
            public = share.public_bytes
        if key_exchange in (KeyExchange.ECDHE_ECDSA, KeyExchange.ECDHE_RSA):
            return shared, bytes((len(public),)) + public
        if config.psk is None:
            raise AlertError(AlertDescription.handshake_failure, "PSK suite without a PSK")
        identity = config.psk_identity
        self.negotiated.psk_identity = identity
        identity_field = len(identity).to_bytes(2, "big") + identity
        if key_exchange is KeyExchange.PSK:
            return psk_premaster(bytes(len(config.psk)), config.psk), identity_field
        return psk_premaster(shared, config.psk), identity_field + bytes((len(public),)) + public

    def _remember_session(self) -> None:
        """The session to offer next time (a resumed one keeps its id, maybe a new ticket)."""
        previous = self.configuration.session
        negotiated = self.negotiated
        if negotiated.session_resumed and isinstance(previous, Session):
            negotiated.session = Session(
                session_id=previous.session_id or negotiated.session_id,
                cipher_suite=previous.cipher_suite,
                master_secret=previous.master_secret,
                extended_master_secret=previous.extended_master_secret,
                ticket=self._new_ticket or previous.ticket,
                server_name=previous.server_name,
                alpn_protocol=previous.alpn_protocol,
                peer_certificates=previous.peer_certificates,
            )
        else:
            negotiated.session = self._make_session(ticket=self._new_ticket)


_Handler = Callable[[ClientHandshake12, HandshakeMessage, bytes, int], ClientState]
_CLIENT_HANDLERS: dict[int, _Handler] = {
    HandshakeType.hello_verify_request: ClientHandshake12._on_hello_verify_request,
    HandshakeType.server_hello: ClientHandshake12._on_server_hello,
    HandshakeType.certificate: ClientHandshake12._on_certificate,
    HandshakeType.server_key_exchange: ClientHandshake12._on_server_key_exchange,
    HandshakeType.certificate_request: ClientHandshake12._on_certificate_request,
    HandshakeType.server_hello_done: ClientHandshake12._on_server_hello_done,
    HandshakeType.new_session_ticket: ClientHandshake12._on_new_session_ticket,
    HandshakeType.finished: ClientHandshake12._on_finished,
}


def _key_kind(key: CertificatePublicKey) -> str:
    if isinstance(key, rsa.RSAPublicKey):
        return "RSA"
    if isinstance(key, ed25519.Ed25519PublicKey):
        return "Ed25519"
    return "ECDSA"


def _is_ip_address(name: str) -> bool:
    try:
        ipaddress.ip_address(name)
    except ValueError:
        return False
    return True
