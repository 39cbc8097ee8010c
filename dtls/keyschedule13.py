"""The TLS 1.3 key schedule (RFC 8446 7.1) as DTLS 1.3 uses it (RFC 9147 5.9).

HKDF-Extract and HKDF-Expand come from ``cryptography``; this module only
adds the ``HkdfLabel`` encoding and the order of derivations.  DTLS 1.3 uses
the label prefix ``"dtls13"`` where TLS 1.3 uses ``"tls13 "``; the prefix is
a parameter so the RFC 8448 traces (TLS) test the same code.

Everything here is a pure function of secrets and transcript hashes.  The
transcript hash is over handshake messages in their TLS form (type and
24-bit length, then the body): DTLS's message_seq and fragment fields never
enter it (RFC 9147 5.2).
"""

from __future__ import annotations

import hmac as std_hmac
import struct

from cryptography.hazmat.primitives import hashes, hmac
from cryptography.hazmat.primitives.kdf.hkdf import HKDF, HKDFExpand

__all__ = [
    "DTLS13_LABEL_PREFIX",
    "TLS13_LABEL_PREFIX",
    "KeySchedule",
    "TrafficKeys",
    "derive_secret",
    "export_keying_material",
    "finished_verify_data",
    "hash_algorithm",
    "hash_length",
    "hkdf_expand_label",
    "hkdf_extract",
    "next_traffic_secret",
    "resumption_psk",
    "traffic_keys",
    "transcript_hash",
    "verify_finished",
]

DTLS13_LABEL_PREFIX = b"dtls13"
TLS13_LABEL_PREFIX = b"tls13 "
_LABEL_HEADER = struct.Struct("!HB")  # output length, label length


def hash_algorithm(hash_name: str) -> hashes.HashAlgorithm:
    """The suite's hash ("sha256" or "sha384")."""
    return hashes.SHA384() if hash_name == "sha384" else hashes.SHA256()


def hash_length(hash_name: str) -> int:
    """Bytes of the suite's hash output."""
    return 48 if hash_name == "sha384" else 32


def transcript_hash(hash_name: str, transcript: bytes) -> bytes:
    """Hash of handshake messages (TLS form) so far."""
    digest = hashes.Hash(hash_algorithm(hash_name))
    digest.update(transcript)
    return digest.finalize()


def hkdf_extract(hash_name: str, salt: bytes, key_material: bytes) -> bytes:
    """HKDF-Extract (RFC 5869 2.2); an empty salt means HashLen zero bytes."""
    return HKDF.extract(
        hash_algorithm(hash_name), salt or bytes(hash_length(hash_name)), key_material
    )


def hkdf_expand_label(
    hash_name: str,
    secret: bytes,
    label: bytes,
    context: bytes,
    length: int,
    prefix: bytes = DTLS13_LABEL_PREFIX,
) -> bytes:
    """HKDF-Expand-Label (RFC 8446 7.1) with the given protocol prefix."""
    full_label = prefix + label
    info = (
        _LABEL_HEADER.pack(length, len(full_label)) + full_label + bytes((len(context),)) + context
    )
    return HKDFExpand(hash_algorithm(hash_name), length, info).derive(secret)


def derive_secret(
    hash_name: str,
    secret: bytes,
    label: bytes,
    messages_hash: bytes,
    prefix: bytes = DTLS13_LABEL_PREFIX,
) -> bytes:
    """Derive-Secret: Expand-Label of a transcript hash, HashLen bytes long."""
    return hkdf_expand_label(
        hash_name, secret, label, messages_hash, hash_length(hash_name), prefix
    )


class TrafficKeys:
    """AEAD key, IV and the record-number key of one traffic secret (RFC 9147 4.2.3)."""

    __slots__ = ("iv", "key", "sn_key")

    def __init__(self, key: bytes, iv: bytes, sn_key: bytes) -> None:
        self.key = key
        self.iv = iv
        self.sn_key = sn_key


def traffic_keys(
    hash_name: str, secret: bytes, key_bytes: int, prefix: bytes = DTLS13_LABEL_PREFIX
) -> TrafficKeys:
    """key = Expand-Label(secret, "key"), iv = (.., "iv", 12), sn_key = (.., "sn", key length)."""
    return TrafficKeys(
        key=hkdf_expand_label(hash_name, secret, b"key", b"", key_bytes, prefix),
        iv=hkdf_expand_label(hash_name, secret, b"iv", b"", 12, prefix),
        sn_key=hkdf_expand_label(hash_name, secret, b"sn", b"", key_bytes, prefix),
    )


def next_traffic_secret(
    hash_name: str, secret: bytes, prefix: bytes = DTLS13_LABEL_PREFIX
) -> bytes:
    """application_traffic_secret_N+1 after a KeyUpdate (RFC 8446 7.2)."""
    return hkdf_expand_label(hash_name, secret, b"traffic upd", b"", hash_length(hash_name), prefix)


def finished_verify_data(
    hash_name: str, base_key: bytes, messages_hash: bytes, prefix: bytes = DTLS13_LABEL_PREFIX
) -> bytes:
    """HMAC(finished_key, transcript hash); also the PSK binder (RFC 8446 4.4.4, 4.2.11.2)."""
    finished_key = hkdf_expand_label(
        hash_name, base_key, b"finished", b"", hash_length(hash_name), prefix
    )
    mac = hmac.HMAC(finished_key, hash_algorithm(hash_name))
    mac.update(messages_hash)
    return mac.finalize()


def verify_finished(
    hash_name: str,
    base_key: bytes,
    messages_hash: bytes,
    received: bytes,
    prefix: bytes = DTLS13_LABEL_PREFIX,
) -> bool:
    """Constant-time comparison of a received Finished or binder with the expected value."""
    expected = finished_verify_data(hash_name, base_key, messages_hash, prefix)
    return std_hmac.compare_digest(expected, received)


def resumption_psk(
    hash_name: str,
    resumption_master_secret: bytes,
    ticket_nonce: bytes,
    prefix: bytes = DTLS13_LABEL_PREFIX,
) -> bytes:
    """The PSK a NewSessionTicket stands for (RFC 8446 4.6.1)."""
    return hkdf_expand_label(
        hash_name,
        resumption_master_secret,
        b"resumption",
        ticket_nonce,
        hash_length(hash_name),
        prefix,
    )


def export_keying_material(
    hash_name: str,
    exporter_master_secret: bytes,
    label: bytes,
    context: bytes,
    length: int,
    prefix: bytes = DTLS13_LABEL_PREFIX,
) -> bytes:
    """TLS-Exporter (RFC 8446 7.5); no context and an empty context are the same here."""
    empty_hash = transcript_hash(hash_name, b"")
    secret = derive_secret(hash_name, exporter_master_secret, label, empty_hash, prefix)
    return hkdf_expand_label(
        hash_name, secret, b"exporter", transcript_hash(hash_name, context), length, prefix
    )


class KeySchedule:
    """The three stages of RFC 8446 7.1: early, handshake and master secret.

    Create it with the PSK (None: no PSK, the stage starts from zeros), then
    call :meth:`enter_handshake` with the (EC)DHE shared secret and
    :meth:`enter_master`; each stage's secrets come from ``derive``.
    """

    __slots__ = ("_empty_hash", "hash_name", "prefix", "secret", "stage")

    def __init__(
        self, hash_name: str, psk: bytes | None = None, prefix: bytes = DTLS13_LABEL_PREFIX
    ) -> None:
        self.hash_name = hash_name
        self.prefix = prefix
        self._empty_hash = transcript_hash(hash_name, b"")
        zeros = bytes(hash_length(hash_name))
        self.secret = hkdf_extract(hash_name, zeros, psk if psk is not None else zeros)
        self.stage = "early"

    def derive(self, label: bytes, messages_hash: bytes) -> bytes:
        """Derive-Secret of the current stage's secret."""
        return derive_secret(self.hash_name, self.secret, label, messages_hash, self.prefix)

    def binder_key(self, *, resumption: bool) -> bytes:
        """The PSK binder key: "res binder" for tickets, "ext binder" for external PSKs."""
        assert self.stage == "early"
        return self.derive(b"res binder" if resumption else b"ext binder", self._empty_hash)

    def enter_handshake(self, shared_secret: bytes | None) -> None:
        """Handshake Secret = Extract(Derive-Secret(early, "derived"), (EC)DHE or zeros)."""
        assert self.stage == "early"
        salt = self.derive(b"derived", self._empty_hash)
        ikm = shared_secret if shared_secret is not None else bytes(hash_length(self.hash_name))
        self.secret = hkdf_extract(self.hash_name, salt, ikm)
        self.stage = "handshake"

    def enter_master(self) -> None:
        """Master Secret = Extract(Derive-Secret(handshake, "derived"), zeros)."""
        assert self.stage == "handshake"
        salt = self.derive(b"derived", self._empty_hash)
        self.secret = hkdf_extract(self.hash_name, salt, bytes(hash_length(self.hash_name)))
        self.stage = "master"
