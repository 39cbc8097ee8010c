"""The DTLS 1.3 client handshake as a state machine (RFC 9147 5, RFC 8446 4).

The table :data:`CLIENT_TRANSITIONS` is the whole protocol: for each state,
the messages that may arrive and the states each may lead to; anything else
is an ``unexpected_message`` alert.  Full handshake::

    START -(send ClientHello)-> WAIT_SERVER_HELLO
    WAIT_SERVER_HELLO -HelloRetryRequest (send ClientHello2)-> WAIT_SERVER_HELLO_AFTER_RETRY
    WAIT_SERVER_HELLO[_AFTER_RETRY] -ServerHello-> WAIT_ENCRYPTED_EXTENSIONS
    WAIT_ENCRYPTED_EXTENSIONS -EncryptedExtensions-> WAIT_CERTIFICATE_OR_REQUEST
                                                   | WAIT_FINISHED (PSK)
    WAIT_CERTIFICATE_OR_REQUEST -CertificateRequest-> WAIT_CERTIFICATE
                                -Certificate-> WAIT_CERTIFICATE_VERIFY
    WAIT_CERTIFICATE -Certificate-> WAIT_CERTIFICATE_VERIFY -CertificateVerify-> WAIT_FINISHED
    WAIT_FINISHED -Finished (send [Certificate, CertificateVerify,] Finished)-> ESTABLISHED

*Version negotiation.*  The ClientHello offers ``configuration.versions``
through supported_versions.  When 1.2 is among them, the hello is also a
complete DTLS 1.2 hello (built by the 1.2 client machine, with the 1.2
suites next to the 1.3 ones), and a HelloVerifyRequest or a ServerHello
without supported_versions hands the handshake to that 1.2 machine
(``replacement``), which continues from the hello we sent.  A 1.2 ServerHello
whose random ends in the RFC 8446 4.1.3 downgrade sentinel is refused.

*Resumption and early data.*  A :class:`~dtls.sessions13.Session13` in
``configuration.session`` (and an external PSK) is offered as a PSK with its
binder; with ``early_data`` set and a ticket that allows it, data queued
before the handshake goes out in epoch 1 right after the ClientHello.  If the
server does not accept it, the connection sends it again after the handshake.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from enum import Enum

from . import handshake as hs
from . import messages13 as m13
from .config import DTLSVersion
from .errors import AlertDescription, AlertError
from .handshake import ExtensionType
from .handshake13 import (
    EPOCH_EARLY_DATA,
    EPOCH_HANDSHAKE,
    Handshake13,
)
from .handshake_context import Handshake, HandshakeContext
from .keyschedule13 import (
    KeySchedule,
    finished_verify_data,
    hash_length,
    resumption_psk,
    transcript_hash,
)
from .messages13 import ExtensionType13, HandshakeType13
from .primitives import KeyShare, load_peer_chain
from .reassembly import HandshakeMessage
from .records import DTLS_1_2, decode_datagram
from .sessions13 import Session13
from .suites import SUITE_PARAMETERS, TLS13_SUITES, CipherSuite, NamedGroup, SrtpProfile

__all__ = ["CLIENT_TRANSITIONS", "DOWNGRADE_SENTINEL_12", "ClientHandshake13", "ClientState13"]

logger = logging.getLogger(__name__)

#: The last eight bytes of a 1.2 ServerHello.random from a server that could do 1.3.
DOWNGRADE_SENTINEL_12 = b"DOWNGRD\x01"
_EXTERNAL_PSK_HASH = "sha256"  # RFC 8446 4.2.11: SHA-256 unless agreed otherwise


class ClientState13(Enum):
    """Where a DTLS 1.3 client handshake stands."""

    START = "start"
    WAIT_SERVER_HELLO = "wait ServerHello"
    WAIT_SERVER_HELLO_AFTER_RETRY = "wait ServerHello after HelloRetryRequest"
    WAIT_ENCRYPTED_EXTENSIONS = "wait EncryptedExtensions"
    WAIT_CERTIFICATE_OR_REQUEST = "wait Certificate or CertificateRequest"
    WAIT_CERTIFICATE = "wait server Certificate"
    WAIT_CERTIFICATE_VERIFY = "wait CertificateVerify"
    WAIT_FINISHED = "wait server Finished"
    ESTABLISHED = "established"
    FALLBACK_12 = "handed to DTLS 1.2"


_S = ClientState13
_T = HandshakeType13

CLIENT_TRANSITIONS: dict[ClientState13, dict[int, frozenset[ClientState13]]] = {
    _S.START: {},
    _S.WAIT_SERVER_HELLO: {
        _T.server_hello: frozenset(
            {_S.WAIT_SERVER_HELLO_AFTER_RETRY, _S.WAIT_ENCRYPTED_EXTENSIONS, _S.FALLBACK_12}
        ),
        hs.HandshakeType.hello_verify_request: frozenset({_S.FALLBACK_12}),
    },
    _S.WAIT_SERVER_HELLO_AFTER_RETRY: {
        _T.server_hello: frozenset({_S.WAIT_ENCRYPTED_EXTENSIONS}),
    },
    _S.WAIT_ENCRYPTED_EXTENSIONS: {
        _T.encrypted_extensions: frozenset({_S.WAIT_CERTIFICATE_OR_REQUEST, _S.WAIT_FINISHED}),
    },
    _S.WAIT_CERTIFICATE_OR_REQUEST: {
        _T.certificate_request: frozenset({_S.WAIT_CERTIFICATE}),
        _T.certificate: frozenset({_S.WAIT_CERTIFICATE_VERIFY}),
    },
    _S.WAIT_CERTIFICATE: {_T.certificate: frozenset({_S.WAIT_CERTIFICATE_VERIFY})},
    _S.WAIT_CERTIFICATE_VERIFY: {_T.certificate_verify: frozenset({_S.WAIT_FINISHED})},
    _S.WAIT_FINISHED: {_T.finished: frozenset({_S.ESTABLISHED})},
    _S.ESTABLISHED: {},
    _S.FALLBACK_12: {},
}

#: Extensions a ServerHello (and a HelloRetryRequest) may carry in 1.3.
_SERVER_HELLO_EXTENSIONS = frozenset(
    {
        ExtensionType13.supported_versions,
        ExtensionType13.key_share,
        ExtensionType13.pre_shared_key,
        ExtensionType13.connection_id,
    }
)
#: What a 1.3-only hello leaves out of the hello the 1.2 machine builds.
_ONLY_12_EXTENSIONS = frozenset(
    {
        ExtensionType.ec_point_formats,
        ExtensionType.extended_master_secret,
        ExtensionType.renegotiation_info,
        ExtensionType.session_ticket,
    }
)
_RETRY_EXTENSIONS = frozenset(
    {ExtensionType13.supported_versions, ExtensionType13.key_share, ExtensionType13.cookie}
)


class _OfferedPsk:
    """One PSK we offer: its key, hash, the session it came from (None: external)."""

    __slots__ = ("hash_name", "identity", "key", "obfuscated_age", "session")

    def __init__(
        self,
        identity: bytes,
        key: bytes,
        hash_name: str,
        obfuscated_age: int,
        session: Session13 | None,
    ) -> None:
        self.identity = identity
        self.key = key
        self.hash_name = hash_name
        self.obfuscated_age = obfuscated_age
        self.session = session


class ClientHandshake13(Handshake13):
    """One DTLS 1.3 client handshake (with 1.2 fallback when configured)."""

    is_client = True

    def __init__(self, context: HandshakeContext, fallback: Handshake | None = None) -> None:
        super().__init__(context)
        self.state = ClientState13.START
        self._fallback = fallback
        self.replacement: Handshake | None = None
        self._hello: hs.ClientHello | None = None
        self._hello_message_seq = 0
        self._key_shares: dict[int, KeyShare] = {}
        self._offered_psks: list[_OfferedPsk] = []
        self._selected_psk: _OfferedPsk | None = None
        self._retried = False
        self._retry_cookie: bytes | None = None
        self._certificate_request: m13.CertificateRequest13 | None = None
        self._offered_early_data = False
        self.early_data_sent = 0
        self._final_flight_unacknowledged = False

    # ------------------------------------------------------------------ facade surface

    @property
    def established(self) -> bool:
        """Whether the handshake completed."""
        return self.state is ClientState13.ESTABLISHED

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
        if self.state is not ClientState13.START:
            return
        self._send_client_hello(now)
        self.state = ClientState13.WAIT_SERVER_HELLO

    def seal_early_data(self, pending: list[bytes]) -> int:
        """Send queued datagrams as 0-RTT data in epoch 1; returns how many went out."""
        if not self._offered_early_data or self.state is not ClientState13.WAIT_SERVER_HELLO:
            return 0
        session = self._offered_psks[0].session if self._offered_psks else None
        budget = session.max_early_data if session is not None else 0
        sent = 0
        for data in pending:
            if len(data) > budget:
                break
            budget -= len(data)
            self._context.outgoing.append(self._records.seal_application(data))
            sent += 1
        self.early_data_sent = sent
        return sent

    def handle_message(self, message: HandshakeMessage, now: int) -> None:
        """One whole server message, in order: look it up in the table, run its handler."""
        allowed = CLIENT_TRANSITIONS[self.state].get(message.msg_type)
        if allowed is None:
            raise AlertError(
                AlertDescription.unexpected_message,
                f"{hs.message_name(message.msg_type)} while in state '{self.state.value}'",
            )
        handler = _CLIENT_HANDLERS[message.msg_type]
        next_state = handler(self, message, now)
        assert next_state in allowed, (self.state, message.msg_type, next_state)
        self.state = next_state

    # ------------------------------------------------------------------ ClientHello

    def _offered_suites(self) -> list[CipherSuite]:
        return [suite for suite in self.configuration.cipher_suites if suite in TLS13_SUITES]

    def _build_psks(self, now: int) -> list[_OfferedPsk]:
        config = self.configuration
        offered: list[_OfferedPsk] = []
        session = config.session
        if isinstance(session, Session13) and not session.expired(now):
            try:
                suite = CipherSuite(session.cipher_suite)
            except ValueError:
                suite = None
            if suite is not None and suite in self._offered_suites():
                offered.append(
                    _OfferedPsk(
                        session.ticket,
                        session.psk,
                        SUITE_PARAMETERS[suite].hash_name,
                        session.obfuscated_age(now),
                        session,
                    )
                )
        if config.psk is not None and config.psk_identity:
            offered.append(
                _OfferedPsk(config.psk_identity, config.psk, _EXTERNAL_PSK_HASH, 0, None)
            )
        return offered

    def _base_hello(self) -> hs.ClientHello:
        """The shared part of the hello, built by the 1.2 machine (one place for it).

        With 1.2 allowed it is a complete 1.2 hello; pinned to 1.3 the 1.2 suites
        and the extensions only 1.2 reads are left out.
        """
        if self._fallback is not None:
            hello: hs.ClientHello = self._fallback.build_hello()  # type: ignore[attr-defined]
            return hello
        from .handshake12_client import ClientHandshake12

        hello = ClientHandshake12(self._context).build_hello()
        return hs.ClientHello(
            client_version=hello.client_version,
            random=hello.random,
            session_id=b"",
            cookie=b"",
            cipher_suites=[],
            compression_methods=b"\x00",
            extensions=[(t, d) for t, d in hello.extensions if t not in _ONLY_12_EXTENSIONS],
        )

    def _send_client_hello(self, now: int, retry_group: int | None = None) -> None:
        config = self.configuration
        if self._hello is None:
            base = self._base_hello()
            suites = [int(suite) for suite in self._offered_suites()] + list(base.cipher_suites)
            if not self._offered_suites():
                raise AlertError(AlertDescription.internal_error, "no DTLS 1.3 cipher suite")
            self._base = base
            self._suites = suites
            self._offered_psks = self._build_psks(now)
            group = NamedGroup(config.groups[0])
            self._key_shares = {group: KeyShare(group)}
        elif retry_group is not None:
            # RFC 8446 4.1.2: a new share only for the group the HelloRetryRequest names;
            # a retry that only carries a cookie gets the very same shares again.
            group = NamedGroup(retry_group)
            self._key_shares = {group: KeyShare(group)}
        versions = [int(version) for version in config.versions]
        extensions = list(self._base.extensions) + [
            (ExtensionType13.supported_versions, m13.encode_supported_versions_client(versions)),
            (
                ExtensionType13.key_share,
                m13.encode_key_share_client(
                    [(g, share.public_bytes) for g, share in self._key_shares.items()]
                ),
            ),
        ]
        if self._retry_cookie is not None:
            extensions.append((ExtensionType13.cookie, m13.encode_cookie(self._retry_cookie)))
        psks = self._offered_psks
        if psks:
            extensions.append(
                (
                    ExtensionType13.psk_key_exchange_modes,
                    m13.encode_psk_key_exchange_modes([m13.PskKeyExchangeMode.psk_dhe_ke]),
                )
            )
            session = psks[0].session
            self._offered_early_data = bool(
                config.early_data
                and not self._retried
                and session is not None
                and session.max_early_data > 0
                and (
                    session.alpn_protocol is None or session.alpn_protocol in config.alpn_protocols
                )
            )
            if self._offered_early_data:
                extensions.append((ExtensionType13.early_data, m13.encode_early_data_indication()))
        else:
            self._offered_early_data = False
        hello = hs.ClientHello(
            client_version=DTLS_1_2,
            random=self._base.random,
            session_id=self._base.session_id,
            cookie=self._base.cookie,
            cipher_suites=self._suites,
            compression_methods=b"\x00",
            extensions=extensions,
        )
        if psks:
            hello = self._with_binders(hello, extensions)
        self._hello = hello
        body = hs.encode_client_hello(hello)
        self._flights.begin()
        self._hello_message_seq = self._flights.next_message_seq
        self._send(HandshakeType13.client_hello, body)
        if self._fallback is not None:
            self._fallback.note_hello_sent(hello, self._hello_message_seq)  # type: ignore[attr-defined]
        self._flights.send(now, expects_reply=True)
        if self._offered_early_data:
            psk = psks[0]
            schedule = KeySchedule(psk.hash_name, psk.key)
            self._client_early_secret = schedule.derive(
                b"c e traffic", transcript_hash(psk.hash_name, bytes(self._transcript))
            )
            # Early data uses the ticket's suite for its keys (RFC 8446 4.2.10).
            assert psk.session is not None
            parameters = SUITE_PARAMETERS[CipherSuite(psk.session.cipher_suite)]
            self._records.prepare_write(
                self._protection(self._client_early_secret, EPOCH_EARLY_DATA, parameters)
            )
            self._records.activate_write()

    def _with_binders(self, hello: hs.ClientHello, extensions: hs.Extensions) -> hs.ClientHello:
        """Fill in the PSK binders over the hello truncated before them (RFC 8446 4.2.11.2)."""
        psks = self._offered_psks
        placeholders = [bytes(hash_length(psk.hash_name)) for psk in psks]
        offered = m13.OfferedPsks(
            identities=[(psk.identity, psk.obfuscated_age) for psk in psks], binders=placeholders
        )
        draft_extensions = extensions + [
            (ExtensionType13.pre_shared_key, m13.encode_pre_shared_key_client(offered))
        ]
        draft = hs.ClientHello(
            client_version=hello.client_version,
            random=hello.random,
            session_id=hello.session_id,
            cookie=hello.cookie,
            cipher_suites=hello.cipher_suites,
            compression_methods=hello.compression_methods,
            extensions=draft_extensions,
        )
        whole = m13.tls_handshake(HandshakeType13.client_hello, hs.encode_client_hello(draft))
        truncated = whole[: len(whole) - len(m13.binders_block(placeholders))]
        binders = []
        for psk in psks:
            schedule = KeySchedule(psk.hash_name, psk.key)
            binder_key = schedule.binder_key(resumption=psk.session is not None)
            binders.append(
                finished_verify_data(
                    psk.hash_name,
                    binder_key,
                    transcript_hash(psk.hash_name, bytes(self._transcript) + truncated),
                )
            )
        final = m13.OfferedPsks(identities=offered.identities, binders=binders)
        return hs.ClientHello(
            client_version=hello.client_version,
            random=hello.random,
            session_id=hello.session_id,
            cookie=hello.cookie,
            cipher_suites=hello.cipher_suites,
            compression_methods=hello.compression_methods,
            extensions=extensions
            + [(ExtensionType13.pre_shared_key, m13.encode_pre_shared_key_client(final))],
        )

    # ------------------------------------------------------------------ handlers

    def _hand_over_to_12(self, message: HandshakeMessage, now: int) -> ClientState13:
        if self._fallback is None or DTLSVersion.DTLS_1_2 not in self.configuration.versions:
            raise AlertError(AlertDescription.protocol_version, "server does not speak DTLS 1.3")
        logger.debug("server chose DTLS 1.2: handing the handshake to the 1.2 client")
        self._records.decoder = decode_datagram
        self._records.resolve_unified_epoch = None
        if self._records.write_epoch == EPOCH_EARLY_DATA:
            raise AlertError(AlertDescription.protocol_version, "early data sent to a 1.2 server")
        self.replacement = self._fallback
        self._fallback.handle_message(message, now)
        return ClientState13.FALLBACK_12

    def _on_hello_verify_request(self, message: HandshakeMessage, now: int) -> ClientState13:
        return self._hand_over_to_12(message, now)

    def _on_server_hello(self, message: HandshakeMessage, now: int) -> ClientState13:
        hello = hs.decode_server_hello(message.body)
        versions = hs.find_extension(hello.extensions, ExtensionType13.supported_versions)
        if versions is None:
            if (
                hello.random[-8:] == DOWNGRADE_SENTINEL_12
                and DTLSVersion.DTLS_1_3 in self.configuration.versions
            ):
                raise AlertError(
                    AlertDescription.illegal_parameter, "downgrade to DTLS 1.2 detected"
                )
            return self._hand_over_to_12(message, now)
        if m13.decode_supported_versions_server(versions) != m13.DTLS_1_3_VERSION:
            raise AlertError(AlertDescription.illegal_parameter, "bad supported_versions")
        if hello.server_version != DTLS_1_2:
            raise AlertError(AlertDescription.illegal_parameter, "bad legacy_version")
        assert self._hello is not None
        if hello.cipher_suite not in self._offered_suites() or hello.compression_method != 0:
            raise AlertError(AlertDescription.illegal_parameter, "suite we did not offer")
        if hello.session_id != self._hello.session_id:
            raise AlertError(AlertDescription.illegal_parameter, "legacy_session_id_echo differs")
        if hello.random == m13.HELLO_RETRY_REQUEST_RANDOM:
            return self._on_hello_retry_request(hello, message, now)
        for ext_type, _ in hello.extensions:
            if ext_type not in _SERVER_HELLO_EXTENSIONS:
                raise AlertError(AlertDescription.illegal_parameter, f"extension {ext_type} in SH")
        if self._retried and self.negotiated.cipher_suite != CipherSuite(hello.cipher_suite):
            raise AlertError(AlertDescription.illegal_parameter, "suite changed after HRR")
        self._choose_suite_parameters(hello.cipher_suite)
        negotiated = self.negotiated
        negotiated.version = DTLSVersion.DTLS_1_3
        negotiated.server_random = hello.random
        records = self._records
        records.plaintext_version = DTLS_1_2
        self._take_into_transcript(message)
        # PSK
        psk_data = hs.find_extension(hello.extensions, ExtensionType13.pre_shared_key)
        psk_key: bytes | None = None
        if psk_data is not None:
            index = m13.decode_pre_shared_key_server(psk_data)
            if index >= len(self._offered_psks):
                raise AlertError(AlertDescription.illegal_parameter, "PSK we did not offer")
            selected = self._offered_psks[index]
            if selected.hash_name != self._hash_name:
                raise AlertError(AlertDescription.illegal_parameter, "PSK hash does not fit suite")
            self._selected_psk = selected
            psk_key = selected.key
            negotiated.session_resumed = selected.session is not None
            negotiated.psk_identity = None if selected.session is not None else selected.identity
            if selected.session is not None:
                negotiated.peer_certificates = (
                    tuple(load_peer_chain(list(selected.session.peer_certificates)))
                    if selected.session.peer_certificates
                    else ()
                )
        # key exchange
        share_data = hs.find_extension(hello.extensions, ExtensionType13.key_share)
        if share_data is None:
            raise AlertError(
                AlertDescription.missing_extension, "no key_share (psk_ke not offered)"
            )
        group, public = m13.decode_key_share_server(share_data)
        share = self._key_shares.get(group)
        if share is None:
            raise AlertError(AlertDescription.illegal_parameter, "key share for a group not sent")
        negotiated.group = NamedGroup(group)
        shared_secret = share.exchange(public)
        # connection id
        cid = hs.find_extension(hello.extensions, ExtensionType13.connection_id)
        if cid is not None:
            if self.configuration.connection_id is None:
                raise AlertError(AlertDescription.unsupported_extension, "connection_id")
            records.peer_connection_id = hs.decode_opaque8(cid)
        else:
            records.local_connection_id = b""
        # keys
        schedule = KeySchedule(self._hash_name, psk_key)
        schedule.enter_handshake(shared_secret)
        hello_hash = self._transcript_hash()
        self._client_handshake_secret = schedule.derive(b"c hs traffic", hello_hash)
        self._server_handshake_secret = schedule.derive(b"s hs traffic", hello_hash)
        self._schedule = schedule
        self._install_read(self._server_handshake_secret, EPOCH_HANDSHAKE)
        # Early data (if any) ends here: DTLS 1.3 has no EndOfEarlyData (RFC 9147 5.6).
        self._activate_write(self._client_handshake_secret, EPOCH_HANDSHAKE)
        return ClientState13.WAIT_ENCRYPTED_EXTENSIONS

    def _on_hello_retry_request(
        self, hello: hs.ServerHello, message: HandshakeMessage, now: int
    ) -> ClientState13:
        if self._retried:
            raise AlertError(AlertDescription.unexpected_message, "second HelloRetryRequest")
        for ext_type, _ in hello.extensions:
            if ext_type not in _RETRY_EXTENSIONS:
                raise AlertError(AlertDescription.illegal_parameter, f"extension {ext_type} in HRR")
        self._retried = True
        self._choose_suite_parameters(hello.cipher_suite)
        self.negotiated.version = DTLSVersion.DTLS_1_3
        cookie = hs.find_extension(hello.extensions, ExtensionType13.cookie)
        share = hs.find_extension(hello.extensions, ExtensionType13.key_share)
        if cookie is None and share is None:
            raise AlertError(AlertDescription.illegal_parameter, "HRR that changes nothing")
        retry_group: int | None = None
        if share is not None:
            retry_group = m13.decode_key_share_hello_retry(share)
            if retry_group not in self.configuration.groups or retry_group in self._key_shares:
                raise AlertError(AlertDescription.illegal_parameter, "HRR names a bad group")
        self._retry_cookie = m13.decode_cookie(cookie) if cookie is not None else None
        # Transcript: message_hash(Hash(ClientHello1)) || HelloRetryRequest (RFC 8446 4.4.1).
        first_hash = transcript_hash(self._hash_name, bytes(self._transcript))
        self._transcript = bytearray(m13.message_hash(first_hash))
        self._take_into_transcript(message)
        # Only PSKs whose hash fits the chosen suite may stay in the second hello.
        self._offered_psks = [psk for psk in self._offered_psks if psk.hash_name == self._hash_name]
        if self._records.write_epoch == EPOCH_EARLY_DATA:
            self._records.write_epoch = 0  # the second hello is plaintext; early data is over
        self._send_client_hello(now, retry_group=retry_group)
        return ClientState13.WAIT_SERVER_HELLO_AFTER_RETRY

    def _on_encrypted_extensions(self, message: HandshakeMessage, now: int) -> ClientState13:
        extensions = m13.decode_extension_block(message.body)
        self._take_into_transcript(message)
        config = self.configuration
        negotiated = self.negotiated
        assert self._hello is not None
        offered = {ext_type for ext_type, _ in self._hello.extensions}
        for ext_type, data in extensions:
            if ext_type not in offered:
                raise AlertError(AlertDescription.unsupported_extension, f"extension {ext_type}")
            if ext_type == ExtensionType13.application_layer_protocol_negotiation:
                names = hs.decode_alpn(data)
                if len(names) != 1 or names[0] not in config.alpn_protocols:
                    raise AlertError(AlertDescription.illegal_parameter, "bad ALPN answer")
                negotiated.alpn_protocol = names[0]
            elif ext_type == ExtensionType13.use_srtp:
                profiles, mki = hs.decode_use_srtp(data)
                if len(profiles) != 1 or profiles[0] not in config.srtp_profiles or mki:
                    raise AlertError(AlertDescription.illegal_parameter, "bad use_srtp answer")
                negotiated.srtp_profile = SrtpProfile(profiles[0])
            elif ext_type == ExtensionType13.early_data:
                m13.decode_early_data_indication(data, in_ticket=False)
                if not self._offered_early_data:
                    raise AlertError(AlertDescription.unsupported_extension, "early_data")
                negotiated.early_data_accepted = True
            elif ext_type in (
                ExtensionType13.key_share,
                ExtensionType13.pre_shared_key,
                ExtensionType13.supported_versions,
                ExtensionType13.cookie,
                ExtensionType13.psk_key_exchange_modes,
            ):
                raise AlertError(AlertDescription.illegal_parameter, f"{ext_type} in EE")
        if self._selected_psk is not None:
            return ClientState13.WAIT_FINISHED
        return ClientState13.WAIT_CERTIFICATE_OR_REQUEST

    def _on_certificate_request(self, message: HandshakeMessage, now: int) -> ClientState13:
        request = m13.decode_certificate_request13(message.body)
        self._take_into_transcript(message)
        if request.request_context:
            raise AlertError(AlertDescription.illegal_parameter, "request context in handshake")
        if hs.find_extension(request.extensions, ExtensionType13.signature_algorithms) is None:
            raise AlertError(AlertDescription.missing_extension, "no signature_algorithms")
        self._certificate_request = request
        return ClientState13.WAIT_CERTIFICATE

    def _on_certificate(self, message: HandshakeMessage, now: int) -> ClientState13:
        certificate = m13.decode_certificate13(message.body)
        self._take_into_transcript(message)
        if certificate.request_context:
            raise AlertError(AlertDescription.illegal_parameter, "request context in handshake")
        if not certificate.entries:
            raise AlertError(AlertDescription.decode_error, "server sent no certificate")
        chain = load_peer_chain([entry.certificate for entry in certificate.entries])
        config = self.configuration
        if (
            config.psk is not None
            and config.verify_peer
            and config.verify_callback is None
            and not config.ca_certificates
        ):
            # We offered a PSK and can check no certificate: no authentication in common
            # (RFC 8446 4.1.1), not a bad certificate.
            self.negotiated.peer_certificates = chain
            raise AlertError(
                AlertDescription.handshake_failure,
                "the server did not take our PSK: it wants certificate authentication, "
                "and we have no trust anchors",
            )
        self._check_peer_chain(chain, as_server=True)
        return ClientState13.WAIT_CERTIFICATE_VERIFY

    def _on_certificate_verify(self, message: HandshakeMessage, now: int) -> ClientState13:
        before = self._take_into_transcript(message)
        self._check_certificate_verify(message.body, before)
        return ClientState13.WAIT_FINISHED

    def _on_finished(self, message: HandshakeMessage, now: int) -> ClientState13:
        before = self._take_into_transcript(message)
        self._check_finished(message.body, self._server_handshake_secret, before)
        schedule = self._schedule
        assert schedule is not None
        schedule.enter_master()
        server_done = self._transcript_hash()
        self._client_application_secret = schedule.derive(b"c ap traffic", server_done)
        self._server_application_secret = schedule.derive(b"s ap traffic", server_done)
        self._exporter_master_secret = schedule.derive(b"exp master", server_done)
        self._send_final_flight(now)
        self._resumption_master_secret = schedule.derive(b"res master", self._transcript_hash())
        self._enter_application_epoch()
        self._records.retire_read_below(EPOCH_HANDSHAKE)
        return ClientState13.ESTABLISHED

    def _send_final_flight(self, now: int) -> None:
        config = self.configuration
        self._flights.begin()
        request = self._certificate_request
        if request is not None:
            schemes_data = hs.find_extension(
                request.extensions, ExtensionType13.signature_algorithms
            )
            peer_schemes = hs.decode_uint16_list(schemes_data) if schemes_data is not None else None
            chain = config.certificate_chain
            key = config.private_key
            entries = [m13.CertificateEntry(certificate=_der(c)) for c in chain] if key else []
            self._send(
                HandshakeType13.certificate,
                m13.encode_certificate13(
                    m13.Certificate13(request_context=request.request_context, entries=entries)
                ),
            )
            if key is not None and entries:
                self._send(
                    HandshakeType13.certificate_verify, self._certificate_verify(key, peer_schemes)
                )
        self._send(HandshakeType13.finished, self._finished(self._client_handshake_secret))
        self._flights.send(now, expects_reply=True)  # the reply is the server's ACK
        self._final_flight_unacknowledged = True
        self._flight_sent()

    def _on_acknowledged(self, now: int) -> None:
        if self._flights.acknowledged:
            self._final_flight_unacknowledged = False
        super()._on_acknowledged(now)

    def _on_new_session_ticket(self, body: bytes, now: int) -> None:
        ticket = m13.decode_new_session_ticket13(body)
        if self._final_flight_unacknowledged:
            # A ticket needs our Finished: the server has our final flight.
            self._final_flight_unacknowledged = False
            self._flights.begin()
            self._flights.stop()
        if ticket.lifetime_seconds == 0 or ticket.lifetime_seconds > 7 * 24 * 3600:
            return
        max_early = 0
        early = hs.find_extension(ticket.extensions, ExtensionType13.early_data)
        if early is not None:
            max_early = m13.decode_early_data_indication(early, in_ticket=True) or 0
        negotiated = self.negotiated
        assert negotiated.cipher_suite is not None
        self.negotiated.session = Session13(
            cipher_suite=int(negotiated.cipher_suite),
            psk=resumption_psk(self._hash_name, self._resumption_master_secret, ticket.nonce),
            ticket=ticket.ticket,
            ticket_age_add=ticket.age_add,
            lifetime_seconds=ticket.lifetime_seconds,
            max_early_data=max_early,
            received_at_ns=now,
            server_name=self.configuration.server_name,
            alpn_protocol=negotiated.alpn_protocol,
            peer_certificates=tuple(_der(c) for c in negotiated.peer_certificates),
        )

    def handle_peer_repeat(self, now: int) -> None:
        """The server repeated a flight: ours did not arrive; resend what is unacknowledged."""
        if not self._flights.acknowledged:
            self._flights.resend_on_peer_repeat(established=False)


def _der(certificate: object) -> bytes:
    from cryptography.hazmat.primitives.serialization import Encoding

    return certificate.public_bytes(Encoding.DER)  # type: ignore[attr-defined,no-any-return]


_Handler = Callable[[ClientHandshake13, HandshakeMessage, int], ClientState13]
_CLIENT_HANDLERS: dict[int, _Handler] = {
    hs.HandshakeType.hello_verify_request: ClientHandshake13._on_hello_verify_request,
    _T.server_hello: ClientHandshake13._on_server_hello,
    _T.encrypted_extensions: ClientHandshake13._on_encrypted_extensions,
    _T.certificate_request: ClientHandshake13._on_certificate_request,
    _T.certificate: ClientHandshake13._on_certificate,
    _T.certificate_verify: ClientHandshake13._on_certificate_verify,
    _T.finished: ClientHandshake13._on_finished,
}
