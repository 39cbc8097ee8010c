"""What the DTLS 1.2 client and server handshakes share (RFC 6347 on RFC 5246).

The transcript holds each message in its unfragmented DTLS form (12-byte
header with offset 0), without the first ClientHello and the
HelloVerifyRequest (RFC 6347 4.2.6).  Keys: the master secret (RFC 7627's
session hash when extended master secret was negotiated) gives the key
block; read keys for epoch 1 are installed as soon as they exist, write keys
when we send our ChangeCipherSpec.  Finished is compared in constant time.

The state machines themselves are the transition tables in
``handshake12_client.py`` and ``handshake12_server.py``.
"""

from __future__ import annotations

import hmac
import logging
from collections.abc import Callable
from enum import Enum
from typing import TypeVar

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from . import handshake as hs
from .errors import AlertDescription, AlertError, LocalProtocolError
from .handshake import HandshakeFragment, HandshakeType, message_name
from .handshake_context import HandshakeContext
from .keyschedule import (
    derive_key_block,
    derive_master_secret,
    export_keying_material,
    finished_verify_data,
    transcript_hash,
)
from .protection import RecordProtection
from .reassembly import HandshakeMessage
from .records import ContentType
from .sessions import Session
from .suites import SuiteParameters
from .validation import peer_chain_verdict

__all__ = [
    "CURVE_TYPE_NAMED",
    "EXPORTER_CHANNEL_BINDING_LABEL",
    "Handshake12",
    "der",
    "psk_premaster",
]

logger = logging.getLogger(__name__)
StateT = TypeVar("StateT", bound=Enum)

CURVE_TYPE_NAMED = 3
EXPORTER_CHANNEL_BINDING_LABEL = b"EXPORTER-Channel-Binding"
# RFC 5705 4: labels the TLS key schedule itself uses may not be exported.
_RESERVED_EXPORTER_LABELS = (
    b"client finished",
    b"server finished",
    b"master secret",
    b"extended master secret",
    b"key expansion",
)


class Handshake12:
    """Transcript, key derivation, Finished, sessions and exporters of one 1.2 handshake."""

    is_client = False

    def __init__(self, context: HandshakeContext) -> None:
        self._context = context
        self.configuration = context.configuration
        self.negotiated = context.negotiated
        self._records = context.records
        self._flights = context.flights
        self._transcript = bytearray()
        self._suite: SuiteParameters | None = None
        self._master_secret = b""
        self._client_finished = b""

    # ------------------------------------------------------------------ facade surface

    def fragment_allowed(self, fragment: HandshakeFragment, epoch: int) -> bool:
        """Finished must be protected, nothing else may be (1.2 has one protected message)."""
        return (fragment.msg_type == HandshakeType.finished) == (epoch > 0)

    def export_keying_material(self, label: bytes, context: bytes | None, length: int) -> bytes:
        """RFC 5705 exporter (for DTLS-SRTP use label ``EXTRACTOR-dtls_srtp``, no context)."""
        if not self._master_secret or self._suite is None:
            raise LocalProtocolError("no keys to export before the handshake completes")
        if label in _RESERVED_EXPORTER_LABELS:
            raise LocalProtocolError("that label is reserved by the TLS key schedule")
        return export_keying_material(
            self._suite.hash_name,
            self._master_secret,
            client_random=self.negotiated.client_random,
            server_random=self.negotiated.server_random,
            label=label,
            context=context,
            length=length,
        )

    def channel_binding(self, binding_type: str) -> bytes:
        """``tls-exporter`` (RFC 9266) or ``tls-unique`` (RFC 5929)."""
        if binding_type == "tls-exporter":
            return self.export_keying_material(EXPORTER_CHANNEL_BINDING_LABEL, b"", 32)
        if binding_type == "tls-unique":
            if not self._client_finished:
                raise LocalProtocolError("no Finished message yet")
            return self._client_finished
        raise LocalProtocolError(f"unknown channel binding {binding_type!r}")

    def key_log_lines(self) -> list[str]:
        """``CLIENT_RANDOM <random> <master secret>`` once the master secret exists."""
        if not self._master_secret:
            return []
        random = self.negotiated.client_random.hex()
        return [f"CLIENT_RANDOM {random} {self._master_secret.hex()}"]

    # ------------------------------------------------------------------ shared steps

    def _transition(
        self,
        allowed: frozenset[StateT] | None,
        state_name: str,
        handler: Callable[[HandshakeMessage, bytes, int], StateT] | None,
        message: HandshakeMessage,
        now: int,
    ) -> StateT:
        """One step of a transition table: refuse what the state does not list, else run it.

        The handler chooses the next state among ``allowed`` (the table's entry).
        """
        if allowed is None or handler is None:
            raise AlertError(
                AlertDescription.unexpected_message,
                f"{message_name(message.msg_type)} while in state '{state_name}'",
            )
        transcript_before = self._take_into_transcript(message)
        next_state = handler(message, transcript_before, now)
        assert next_state in allowed, (state_name, message.msg_type, next_state)
        return next_state

    def _take_into_transcript(self, message: HandshakeMessage) -> bytes:
        """Append a received message to the transcript; return the transcript before it."""
        before = bytes(self._transcript)
        if message.msg_type != HandshakeType.hello_verify_request:
            self._transcript += hs.encode_handshake(
                message.msg_type, message.message_seq, message.body
            )
        return before

    def _send(self, msg_type: HandshakeType, body: bytes) -> None:
        """Queue a message into the current flight and the transcript."""
        self._transcript += self._flights.add_handshake(msg_type, body)

    def _change_cipher_spec(self) -> None:
        """Queue ChangeCipherSpec; what we queue after it is protected."""
        self._flights.add_record(ContentType.change_cipher_spec, b"\x01")
        self._records.activate_write()

    def _check_peer_chain(self, chain: tuple[x509.Certificate, ...], *, as_server: bool) -> None:
        self.negotiated.peer_certificates = chain
        errors, refusal = peer_chain_verdict(self.configuration, chain, as_server=as_server)
        self.negotiated.peer_certificate_errors = errors
        if refusal is not None:
            raise AlertError(AlertDescription.bad_certificate, refusal)

    def _derive_master_secret(self, premaster: bytes) -> None:
        """Master secret from the premaster (RFC 7627's session hash when negotiated),
        then the key block: the same step after either side's ClientKeyExchange."""
        assert self._suite is not None
        negotiated = self.negotiated
        session_hash = (
            transcript_hash(self._suite.hash_name, bytes(self._transcript))
            if negotiated.extended_master_secret
            else None
        )
        self._master_secret = derive_master_secret(
            self._suite.hash_name,
            premaster,
            client_random=negotiated.client_random,
            server_random=negotiated.server_random,
            session_hash=session_hash,
        )
        self._derive_keys()

    def _derive_keys(self) -> None:
        """Key block -> epoch 1: read keys installed now, write keys at our ChangeCipherSpec."""
        assert self._suite is not None
        block = derive_key_block(
            self._suite.hash_name,
            self._master_secret,
            client_random=self.negotiated.client_random,
            server_random=self.negotiated.server_random,
            key_bytes=self._suite.key_bytes,
            iv_bytes=self._suite.fixed_iv_bytes,
        )
        epoch = self._records.write_epoch + 1
        client_side = RecordProtection(self._suite.aead, block.client_key, block.client_iv, epoch)
        server_side = RecordProtection(self._suite.aead, block.server_key, block.server_iv, epoch)
        self._records.prepare_write(client_side if self.is_client else server_side)
        # Parked records are replayed by the connection once the current datagram is done,
        # never from inside message processing: a parked Finished must not overtake messages
        # that the reassembler already released to the loop that is running now.
        self._records.install_read(server_side if self.is_client else client_side)

    def _queue_finished(self) -> None:
        assert self._suite is not None
        verify_data = finished_verify_data(
            self._suite.hash_name,
            self._master_secret,
            from_client=self.is_client,
            handshake_hash=transcript_hash(self._suite.hash_name, bytes(self._transcript)),
        )
        if self.is_client:
            self._client_finished = verify_data
        self._send(HandshakeType.finished, verify_data)

    def _check_finished(self, body: bytes, transcript_before: bytes, *, from_client: bool) -> None:
        assert self._suite is not None
        expected = finished_verify_data(
            self._suite.hash_name,
            self._master_secret,
            from_client=from_client,
            handshake_hash=transcript_hash(self._suite.hash_name, transcript_before),
        )
        if not hmac.compare_digest(body, expected):
            raise AlertError(AlertDescription.decrypt_error, "Finished does not verify")
        if from_client:
            self._client_finished = body

    def _make_session(self, *, ticket: bytes) -> Session:
        negotiated = self.negotiated
        assert negotiated.cipher_suite is not None
        return Session(
            session_id=negotiated.session_id,
            cipher_suite=int(negotiated.cipher_suite),
            master_secret=self._master_secret,
            extended_master_secret=negotiated.extended_master_secret,
            ticket=ticket,
            server_name=negotiated.server_name,
            alpn_protocol=negotiated.alpn_protocol,
            peer_certificates=tuple(der(c) for c in negotiated.peer_certificates),
        )


def der(certificate: x509.Certificate) -> bytes:
    """DER bytes of a certificate."""
    return certificate.public_bytes(Encoding.DER)


def psk_premaster(other_secret: bytes, psk: bytes) -> bytes:
    """RFC 4279 2 / RFC 5489 2: other_secret and psk, each with a 16-bit length."""
    return len(other_secret).to_bytes(2, "big") + other_secret + len(psk).to_bytes(2, "big") + psk
