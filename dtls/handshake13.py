"""What the DTLS 1.3 client and server handshakes share (RFC 9147 on RFC 8446).

Theory of operation
-------------------
*Records.*  DTLS 1.3 uses the connection's record layer (``record_layer.py``)
with two plug-ins defined here: :func:`decode_datagram_records` reads
plaintext and unified-header records into the layer's :class:`Record` type
(unified ones as :class:`UnifiedRecord`, whose epoch the layer resolves from
the two bits on the wire when it opens the record, so keys installed by an
earlier record of the same datagram count), and :class:`Epoch13Protection`
seals and opens records of one epoch, removing the record-number mask
before the replay check.  Epochs: 0 plaintext, 1 early data, 2 handshake,
3 and up application data (one more per KeyUpdate).

*Transcript and keys.*  The transcript holds messages in their TLS form
(type, 24-bit length, body: RFC 9147 5.2).  :class:`KeySchedule` walks the
early, handshake and master secrets; each traffic secret becomes a read or
write epoch here.

*Acknowledgements (RFC 9147 7).*  Every handshake record we keep is noted.
Sending our next flight acknowledges the peer's flight implicitly; when we
have nothing to send, an ACK record goes out: at once for a flight that
ends a handshake or a post-handshake message (the client's Finished flight,
NewSessionTicket, KeyUpdate, connection-id messages), and after a short
delay (a quarter of the retransmission interval) for a partial flight, so
the peer retransmits only what is missing.  ACKs we receive go to the
flights, which stop retransmitting what was acknowledged.

*Post-handshake.*  KeyUpdate (RFC 9147 8): the sender keeps its old write
keys until the KeyUpdate is acknowledged, then moves to the next epoch; a
receiver installs the next read epoch at once and answers
``update_requested`` with a KeyUpdate of its own.  We start one ourselves
before a key has protected ``key_update_records`` records.  Connection ids
(RFC 9147 9): RequestConnectionId is answered with NewConnectionId;
received spare ids are kept, and ``cid_immediate`` switches at once.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Hashable

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, rsa

from . import handshake as hs
from . import messages13 as m13
from .config import CertificatePrivateKey
from .errors import AlertDescription, AlertError, DecodeError, LocalProtocolError
from .handshake import HandshakeFragment
from .handshake_context import HandshakeContext
from .keyschedule13 import (
    KeySchedule,
    export_keying_material,
    finished_verify_data,
    hash_length,
    next_traffic_secret,
    traffic_keys,
    transcript_hash,
    verify_finished,
)
from .messages13 import HandshakeType13, RecordNumber
from .protection13 import Epoch13Protection, RecordProtection13
from .reassembly import HandshakeMessage
from .records13 import ACK_CONTENT_TYPE, decode_datagram_records, resolve_epoch
from .suites import SUITE_PARAMETERS, CipherSuite, SignatureScheme, SuiteParameters
from .validation import peer_chain_verdict

__all__ = [
    "EPOCH_APPLICATION",
    "EPOCH_EARLY_DATA",
    "EPOCH_HANDSHAKE",
    "SIGNATURE_SCHEMES_13",
    "Handshake13",
    "choose_signature_scheme13",
    "verify_signature13",
]

logger = logging.getLogger(__name__)

EPOCH_EARLY_DATA = 1
EPOCH_HANDSHAKE = 2
EPOCH_APPLICATION = 3
# AEAD confidentiality limits (RFC 8446 5.5, RFC 9147 4.5.3): AES-GCM 2^24.5 records per key.
# We update well before, by default at 2^23 records.
DEFAULT_KEY_UPDATE_RECORDS = 1 << 23
MAX_SPARE_CONNECTION_IDS = 8
MAX_CONNECTION_ID_REQUEST = 8
#: Signature schemes for CertificateVerify in 1.3 (RSA only with PSS: RFC 8446 4.2.3).
SIGNATURE_SCHEMES_13: tuple[SignatureScheme, ...] = (
    SignatureScheme.ecdsa_secp256r1_sha256,
    SignatureScheme.ecdsa_secp384r1_sha384,
    SignatureScheme.ecdsa_secp521r1_sha512,
    SignatureScheme.ed25519,
    SignatureScheme.rsa_pss_rsae_sha256,
    SignatureScheme.rsa_pss_rsae_sha384,
    SignatureScheme.rsa_pss_rsae_sha512,
)
_ECDSA_CURVES: dict[SignatureScheme, tuple[str, hashes.HashAlgorithm]] = {
    SignatureScheme.ecdsa_secp256r1_sha256: ("secp256r1", hashes.SHA256()),
    SignatureScheme.ecdsa_secp384r1_sha384: ("secp384r1", hashes.SHA384()),
    SignatureScheme.ecdsa_secp521r1_sha512: ("secp521r1", hashes.SHA512()),
}
_PSS_HASHES: dict[SignatureScheme, hashes.HashAlgorithm] = {
    SignatureScheme.rsa_pss_rsae_sha256: hashes.SHA256(),
    SignatureScheme.rsa_pss_rsae_sha384: hashes.SHA384(),
    SignatureScheme.rsa_pss_rsae_sha512: hashes.SHA512(),
}
_VERIFY_CONTEXT = {
    True: b"TLS 1.3, server CertificateVerify",
    False: b"TLS 1.3, client CertificateVerify",
}
#: Messages that end a flight needing an explicit ACK when they arrive after the handshake.
POST_HANDSHAKE_TYPES = frozenset(
    {
        HandshakeType13.new_session_ticket,
        HandshakeType13.key_update,
        HandshakeType13.request_connection_id,
        HandshakeType13.new_connection_id,
    }
)


# --------------------------------------------------------------------------- record layer plug-ins


# --------------------------------------------------------------------------- signatures


def choose_signature_scheme13(
    private_key: CertificatePrivateKey, peer_schemes: list[int] | None
) -> SignatureScheme:
    """A CertificateVerify scheme our key can make and the peer accepts (RFC 8446 4.4.3)."""
    if isinstance(private_key, ec.EllipticCurvePrivateKey):
        candidates = [
            s for s, (curve, _) in _ECDSA_CURVES.items() if curve == private_key.curve.name
        ]
    elif isinstance(private_key, ed25519.Ed25519PrivateKey):
        candidates = [SignatureScheme.ed25519]
    else:
        candidates = list(_PSS_HASHES)
    for scheme in candidates:
        if peer_schemes is None or scheme in peer_schemes:
            return scheme
    raise AlertError(AlertDescription.handshake_failure, "no common signature scheme")


def certificate_verify_input(*, from_server: bool, messages_hash: bytes) -> bytes:
    """What CertificateVerify signs (RFC 8446 4.4.3)."""
    return b" " * 64 + _VERIFY_CONTEXT[from_server] + b"\0" + messages_hash


def sign13(private_key: CertificatePrivateKey, scheme: SignatureScheme, data: bytes) -> bytes:
    """A CertificateVerify signature."""
    if isinstance(private_key, ed25519.Ed25519PrivateKey):
        return private_key.sign(data)
    if isinstance(private_key, ec.EllipticCurvePrivateKey):
        return private_key.sign(data, ec.ECDSA(_ECDSA_CURVES[scheme][1]))
    algorithm = _PSS_HASHES[scheme]
    return private_key.sign(
        data,
        padding.PSS(mgf=padding.MGF1(algorithm), salt_length=padding.PSS.DIGEST_LENGTH),
        algorithm,
    )


def verify_signature13(
    certificate: x509.Certificate, scheme_value: int, signature: bytes, data: bytes
) -> None:
    """Check a CertificateVerify; every failure is an AlertError, nothing else escapes."""
    if scheme_value not in SIGNATURE_SCHEMES_13:
        raise AlertError(AlertDescription.illegal_parameter, "signature scheme not allowed in 1.3")
    scheme = SignatureScheme(scheme_value)
    try:
        public_key = certificate.public_key()
        if scheme == SignatureScheme.ed25519:
            if not isinstance(public_key, ed25519.Ed25519PublicKey):
                raise AlertError(AlertDescription.illegal_parameter, "key does not match scheme")
            public_key.verify(signature, data)
        elif scheme in _ECDSA_CURVES:
            curve, algorithm = _ECDSA_CURVES[scheme]
            if not isinstance(public_key, ec.EllipticCurvePublicKey) or (
                public_key.curve.name != curve
            ):
                raise AlertError(AlertDescription.illegal_parameter, "key does not match scheme")
            public_key.verify(signature, data, ec.ECDSA(algorithm))
        else:
            if not isinstance(public_key, rsa.RSAPublicKey):
                raise AlertError(AlertDescription.illegal_parameter, "key does not match scheme")
            pss_hash = _PSS_HASHES[scheme]
            public_key.verify(
                signature,
                data,
                padding.PSS(mgf=padding.MGF1(pss_hash), salt_length=padding.PSS.AUTO),
                pss_hash,
            )
    except (InvalidSignature, ValueError, UnsupportedAlgorithm, TypeError):
        raise AlertError(AlertDescription.decrypt_error, "bad CertificateVerify") from None


# --------------------------------------------------------------------------- the shared machine


class Handshake13:
    """Transcript, keys, Finished, ACKs and post-handshake messages of one 1.3 handshake."""

    is_client = False
    version = 0xFEFC

    def __init__(self, context: HandshakeContext) -> None:
        self._context = context
        self.configuration = context.configuration
        self.negotiated = context.negotiated
        self._records = context.records
        self._flights = context.flights
        self._transcript = bytearray()
        self._suite: SuiteParameters | None = None
        self._schedule: KeySchedule | None = None
        self._client_handshake_secret = b""
        self._server_handshake_secret = b""
        self._client_application_secret = b""
        self._server_application_secret = b""
        self._client_early_secret = b""
        self._exporter_master_secret = b""
        self._resumption_master_secret = b""
        # acknowledgements (RFC 9147 7)
        self._to_acknowledge: list[RecordNumber] = []
        self._ack_deadline: int | None = None
        self._ack_now = False
        self._answered_this_datagram = False
        # post-handshake
        self._write_secret = b""  # current application write secret (KeyUpdate moves it)
        self._read_secret = b""
        self._read_epoch = 0
        self._key_update_pending: bytes | None = None  # next write secret, once ACKed
        self._key_update_wanted = False
        self._key_updates_sent = 0
        self._key_updates_received = 0
        self.peer_spare_connection_ids: list[bytes] = []
        self.issued_connection_ids: list[bytes] = []  # ours, for the endpoint to route
        self._post_handshake_messages = 0
        records = self._records
        records.decoder = decode_datagram_records
        records.resolve_unified_epoch = resolve_epoch

    # ------------------------------------------------------------------ facade surface

    @property
    def ack_deadline(self) -> int | None:
        """When a delayed ACK is due (None: none pending)."""
        return self._ack_deadline

    def fragment_allowed(self, fragment: HandshakeFragment, epoch: int) -> bool:
        """Hellos in epoch 0 only, everything else protected (epoch 2, or 3+ afterwards)."""
        if fragment.msg_type in (HandshakeType13.client_hello, HandshakeType13.server_hello):
            return epoch == 0
        if fragment.msg_type == hs.HandshakeType.hello_verify_request:
            return epoch == 0
        return epoch >= EPOCH_HANDSHAKE

    def export_keying_material(self, label: bytes, context: bytes | None, length: int) -> bytes:
        """RFC 8446 7.5 exporter (DTLS-SRTP: label ``EXTRACTOR-dtls_srtp``, no context)."""
        if not self._exporter_master_secret or self._suite is None:
            raise LocalProtocolError("no keys to export before the handshake completes")
        return export_keying_material(
            self._suite.hash_name, self._exporter_master_secret, label, context or b"", length
        )

    def channel_binding(self, binding_type: str) -> bytes:
        """``tls-exporter`` (RFC 9266); 1.3 has no ``tls-unique``."""
        if binding_type == "tls-exporter":
            return self.export_keying_material(b"EXPORTER-Channel-Binding", b"", 32)
        raise LocalProtocolError(f"channel binding {binding_type!r} does not exist in DTLS 1.3")

    def key_log_lines(self) -> list[str]:
        """NSS key-log lines of the secrets so far (the TLS 1.3 labels Wireshark reads)."""
        random = self.negotiated.client_random.hex()
        lines = []
        for label, secret in (
            ("CLIENT_EARLY_TRAFFIC_SECRET", self._client_early_secret),
            ("CLIENT_HANDSHAKE_TRAFFIC_SECRET", self._client_handshake_secret),
            ("SERVER_HANDSHAKE_TRAFFIC_SECRET", self._server_handshake_secret),
            ("CLIENT_TRAFFIC_SECRET_0", self._client_application_secret),
            ("SERVER_TRAFFIC_SECRET_0", self._server_application_secret),
            ("EXPORTER_SECRET", self._exporter_master_secret),
        ):
            if secret:
                lines.append(f"{label} {random} {secret.hex()}")
        return lines

    # ------------------------------------------------------------------ transcript and keys

    @property
    def _hash_name(self) -> str:
        assert self._suite is not None
        return self._suite.hash_name

    def _choose_suite_parameters(self, suite: int) -> None:
        self.negotiated.cipher_suite = CipherSuite(suite)
        self._suite = SUITE_PARAMETERS[self.negotiated.cipher_suite]

    def _transcript_hash(self) -> bytes:
        return transcript_hash(self._hash_name, bytes(self._transcript))

    def _take_into_transcript(self, message: HandshakeMessage) -> bytes:
        """Append a received message (TLS form); return the transcript before it."""
        before = bytes(self._transcript)
        self._transcript += m13.tls_handshake(message.msg_type, message.body)
        return before

    def _send(self, msg_type: int, body: bytes) -> None:
        """Queue a message into the current flight and the transcript."""
        self._flights.add_handshake(msg_type, body)
        self._transcript += m13.tls_handshake(msg_type, body)

    def _protection(
        self, secret: bytes, epoch: int, parameters: SuiteParameters | None = None
    ) -> Epoch13Protection:
        suite = parameters or self._suite
        assert suite is not None
        keys = traffic_keys(suite.hash_name, secret, suite.key_bytes)
        return Epoch13Protection(RecordProtection13(suite.aead, keys, epoch))

    def _install_read(self, secret: bytes, epoch: int) -> None:
        self._records.install_read(self._protection(secret, epoch))

    def _activate_write(self, secret: bytes, epoch: int) -> None:
        self._records.prepare_write(self._protection(secret, epoch))
        self._records.activate_write()

    def _finished(self, base_key: bytes) -> bytes:
        return finished_verify_data(self._hash_name, base_key, self._transcript_hash())

    def _check_finished(self, body: bytes, base_key: bytes, transcript_before: bytes) -> None:
        if len(body) != hash_length(self._hash_name) or not verify_finished(
            self._hash_name, base_key, transcript_hash(self._hash_name, transcript_before), body
        ):
            raise AlertError(AlertDescription.decrypt_error, "Finished does not verify")

    def _enter_application_epoch(self) -> None:
        """Both sides' first application keys are known: switch writes, install reads."""
        if self.is_client:
            self._write_secret = self._client_application_secret
            self._read_secret = self._server_application_secret
        else:
            self._write_secret = self._server_application_secret
            self._read_secret = self._client_application_secret
        self._activate_write(self._write_secret, EPOCH_APPLICATION)
        self._install_read(self._read_secret, EPOCH_APPLICATION)
        self._read_epoch = EPOCH_APPLICATION

    def _check_peer_chain(self, chain: tuple[x509.Certificate, ...], *, as_server: bool) -> None:
        self.negotiated.peer_certificates = chain
        errors, refusal = peer_chain_verdict(self.configuration, chain, as_server=as_server)
        self.negotiated.peer_certificate_errors = errors
        if refusal is not None:
            raise AlertError(AlertDescription.bad_certificate, refusal)

    def _certificate_verify(
        self, private_key: CertificatePrivateKey, peer_schemes: list[int] | None
    ) -> bytes:
        scheme = choose_signature_scheme13(private_key, peer_schemes)
        content = certificate_verify_input(
            from_server=not self.is_client, messages_hash=self._transcript_hash()
        )
        return m13.encode_certificate_verify(
            m13.CertificateVerify(scheme=scheme, signature=sign13(private_key, scheme, content))
        )

    def _check_certificate_verify(self, body: bytes, transcript_before: bytes) -> None:
        verify = m13.decode_certificate_verify(body)
        chain = self.negotiated.peer_certificates
        if not chain:
            raise AlertError(AlertDescription.unexpected_message, "CertificateVerify without chain")
        content = certificate_verify_input(
            from_server=self.is_client,
            messages_hash=transcript_hash(self._hash_name, transcript_before),
        )
        verify_signature13(chain[0], verify.scheme, verify.signature, content)

    # ------------------------------------------------------------------ acknowledgements

    def note_record(self, epoch: int, sequence_number: int, now: int) -> None:
        """A handshake record we kept: it will be acknowledged (explicitly or by our flight).

        Nothing is noted before we can send an ACK at all (epoch 2): a server that
        answered a hello statelessly keeps no timer, and the peer repeats its
        first flight anyway until our answer arrives.
        """
        if (
            self._records.write_epoch < EPOCH_HANDSHAKE
            or (epoch == 0 and not self.is_client)  # our flight answers the ClientHello
            or self._answered_this_datagram  # the record that completed the flight we sent
        ):
            return
        number = RecordNumber(epoch, sequence_number)
        if number not in self._to_acknowledge:
            self._to_acknowledge.append(number)
        if self._ack_deadline is None:
            delay = max(self._flights.retransmit_interval_ns // 4, 1_000_000)
            self._ack_deadline = now + delay

    def _flight_sent(self) -> None:
        """Our new flight acknowledges everything of the peer's so far (implicitly)."""
        self._to_acknowledge = []
        self._ack_deadline = None
        self._answered_this_datagram = True

    def _acknowledge_now(self) -> None:
        """Ask for an ACK as soon as the current datagram is handled."""
        self._ack_now = True

    def flush_acknowledgements(self, now: int, *, force: bool = False) -> None:
        """Send the ACK that is due (an immediate one, or the delayed one at its deadline).

        The connection calls this once every datagram is handled, and at the ACK timer.
        """
        self._answered_this_datagram = False
        due = (
            self._ack_now or force or (self._ack_deadline is not None and now >= self._ack_deadline)
        )
        if not due:
            return
        self._ack_now = False
        self._ack_deadline = None
        records = self._records
        epoch = records.write_epoch
        if epoch < EPOCH_HANDSHAKE or not self._to_acknowledge:
            return
        # RFC 9147 7: during the handshake an ACK's epoch may not be below the records it
        # acknowledges; afterwards it goes in our current epoch whatever the peer's is.
        numbers = [n for n in self._to_acknowledge if self.established or n.epoch <= epoch]
        self._to_acknowledge = []
        if numbers:
            self._context.outgoing.append(
                records.seal(ACK_CONTENT_TYPE, epoch, m13.encode_ack(numbers))
            )

    def handle_ack(self, payload: bytes, now: int) -> None:
        """An ACK record from the peer: stop retransmitting what it acknowledges."""
        try:
            numbers = m13.decode_ack(payload)
        except DecodeError:
            self._records.dropped_records += 1
            return
        flights = self._flights
        flights.acknowledge((n.epoch, n.sequence_number) for n in numbers)
        self._on_acknowledged(now)

    def _on_acknowledged(self, now: int) -> None:
        """What an acknowledged flight unlocks (the next write epoch after our KeyUpdate)."""
        if self._key_update_pending is not None and self._flights.acknowledged:
            secret, self._key_update_pending = self._key_update_pending, None
            self._write_secret = secret
            self._activate_write(secret, self._records.write_epoch + 1)
            logger.debug("KeyUpdate acknowledged: writing epoch %d", self._records.write_epoch)
            if self._key_update_wanted:
                self._key_update_wanted = False
                self.update_keys(now, request_peer=False)

    # ------------------------------------------------------------------ post-handshake

    def _begin_post_handshake_flight(self) -> None:
        """Post-handshake messages go in a fresh flight once the last one was acknowledged."""
        if self._flights.empty or self._flights.acknowledged:
            self._flights.begin()

    def _send_post_handshake(self, msg_type: int, body: bytes, now: int) -> None:
        self._begin_post_handshake_flight()
        self._flights.add_handshake(msg_type, body)  # not part of any transcript
        self._flights.send(now, expects_reply=True)

    def update_keys(self, now: int, *, request_peer: bool) -> None:
        """Send KeyUpdate; our new write keys take effect once it is acknowledged."""
        if not self.established:
            raise LocalProtocolError("KeyUpdate needs an established connection")
        if self._key_update_pending is not None:
            self._key_update_wanted = self._key_update_wanted or request_peer
            return
        self._key_update_pending = next_traffic_secret(self._hash_name, self._write_secret)
        self._key_updates_sent += 1
        request = (
            m13.KeyUpdateRequest.update_requested
            if request_peer
            else m13.KeyUpdateRequest.update_not_requested
        )
        self._send_post_handshake(HandshakeType13.key_update, m13.encode_key_update(request), now)

    def before_application_record(self, now: int) -> None:
        """Called before sealing application data: start a KeyUpdate before the AEAD limit."""
        if self._key_update_pending is not None or self._records.write_epoch < EPOCH_APPLICATION:
            return
        limit = (
            getattr(self.configuration, "key_update_records", None) or DEFAULT_KEY_UPDATE_RECORDS
        )
        protection = self._current_write_protection()
        if protection is not None and protection.records >= limit:
            logger.debug("%d records under one key: KeyUpdate", protection.records)
            self.update_keys(now, request_peer=False)

    def _current_write_protection(self) -> RecordProtection13 | None:
        write = self._records.write_protection()
        return write.protection if isinstance(write, Epoch13Protection) else None

    @property
    def key_updates(self) -> tuple[int, int]:
        """KeyUpdates (sent, received) so far."""
        return self._key_updates_sent, self._key_updates_received

    def request_connection_ids(self, count: int, now: int) -> None:
        """Ask the peer for ``count`` spare connection ids (RFC 9147 9)."""
        if not self._records.peer_connection_id:
            raise LocalProtocolError("no connection ids were negotiated")
        count = max(1, min(count, MAX_CONNECTION_ID_REQUEST))
        self._send_post_handshake(
            HandshakeType13.request_connection_id, m13.encode_request_connection_id(count), now
        )

    def offer_connection_ids(self, count: int, now: int, *, immediate: bool = False) -> None:
        """Give the peer ``count`` new ids it may put on records to us."""
        length = len(self._records.local_connection_id)
        if not length:
            raise LocalProtocolError("no connection ids were negotiated")
        fresh = [os.urandom(length) for _ in range(max(1, min(count, MAX_CONNECTION_ID_REQUEST)))]
        self.issued_connection_ids.extend(fresh)
        usage = (
            m13.ConnectionIdUsage.cid_immediate if immediate else m13.ConnectionIdUsage.cid_spare
        )
        self._send_post_handshake(
            HandshakeType13.new_connection_id,
            m13.encode_new_connection_id(m13.NewConnectionId(connection_ids=fresh, usage=usage)),
            now,
        )

    def use_spare_connection_id(self) -> bytes:
        """Switch the id we put on records to the next spare one the peer gave us."""
        if not self.peer_spare_connection_ids:
            raise LocalProtocolError("the peer gave no spare connection ids")
        cid = self.peer_spare_connection_ids.pop(0)
        self._records.peer_connection_id = cid
        return cid

    def handle_post_handshake(self, message: HandshakeMessage, epoch: int, now: int) -> None:
        """A handshake message after the handshake (epoch 3 and up)."""
        if epoch < EPOCH_APPLICATION:
            raise AlertError(
                AlertDescription.unexpected_message, "post-handshake message in epoch 2"
            )
        msg_type = message.msg_type
        self._post_handshake_messages += 1
        if msg_type == HandshakeType13.key_update:
            request = m13.decode_key_update(message.body)
            self._key_updates_received += 1
            self._read_secret = next_traffic_secret(self._hash_name, self._read_secret)
            self._read_epoch += 1
            self._install_read(self._read_secret, self._read_epoch)
            self._records.retire_read_below(self._read_epoch - 1)
            self._acknowledge_now()
            if request == m13.KeyUpdateRequest.update_requested:
                self.update_keys(now, request_peer=False)
        elif msg_type == HandshakeType13.request_connection_id:
            count = m13.decode_request_connection_id(message.body)
            self._acknowledge_now()
            if self._records.local_connection_id and count:
                self.offer_connection_ids(count, now)
        elif msg_type == HandshakeType13.new_connection_id:
            offered = m13.decode_new_connection_id(message.body)
            self._acknowledge_now()
            if not self._records.peer_connection_id:
                raise AlertError(AlertDescription.unexpected_message, "connection ids not in use")
            room = MAX_SPARE_CONNECTION_IDS - len(self.peer_spare_connection_ids)
            self.peer_spare_connection_ids.extend(offered.connection_ids[:room])
            if offered.usage == m13.ConnectionIdUsage.cid_immediate and offered.connection_ids:
                self.use_spare_connection_id()
        elif msg_type == HandshakeType13.new_session_ticket:
            self._acknowledge_now()
            self._on_new_session_ticket(message.body, now)
        else:
            raise AlertError(
                AlertDescription.unexpected_message,
                f"{hs.message_name(msg_type)} after the handshake",
            )

    def handle_peer_repeat(self, now: int) -> None:
        """The peer repeated a flight: resend ours if unacknowledged, else acknowledge again."""
        if self.established and self._flights.acknowledged:
            self._acknowledge_now()
        elif not self._flights.acknowledged:
            self._flights.resend_on_peer_repeat(established=False)
        else:
            self._acknowledge_now()

    def _on_new_session_ticket(self, body: bytes, now: int) -> None:
        raise AlertError(AlertDescription.unexpected_message, "NewSessionTicket to a server")

    @property
    def established(self) -> bool:  # overridden by the state machines
        """Whether the handshake completed."""
        return False

    @property
    def address(self) -> Hashable:
        """The peer's address (what retry cookies bind)."""
        return self._context.address
