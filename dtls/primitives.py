"""ECDHE key shares, handshake signatures and certificate validation, on ``cryptography``.

Thin wrappers that turn library exceptions into our :class:`AlertError`, so
the handshake code never sees a ``ValueError`` from a malformed peer value.
"""

from __future__ import annotations

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, rsa, x25519
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from .config import CertificatePrivateKey
from .errors import AlertDescription, AlertError
from .suites import NamedGroup, SignatureScheme
from .validation import validate_chain

__all__ = [
    "CertificatePublicKey",
    "KeyShare",
    "certificate_public_key",
    "choose_signature_scheme",
    "sign",
    "validate_chain",
    "verify_signature",
]

_CURVES: dict[NamedGroup, ec.EllipticCurve] = {
    NamedGroup.secp256r1: ec.SECP256R1(),
    NamedGroup.secp384r1: ec.SECP384R1(),
}

_SCHEME_HASH: dict[SignatureScheme, type[hashes.HashAlgorithm]] = {
    SignatureScheme.rsa_pkcs1_sha256: hashes.SHA256,
    SignatureScheme.rsa_pkcs1_sha384: hashes.SHA384,
    SignatureScheme.rsa_pkcs1_sha512: hashes.SHA512,
    SignatureScheme.ecdsa_secp256r1_sha256: hashes.SHA256,
    SignatureScheme.ecdsa_secp384r1_sha384: hashes.SHA384,
    SignatureScheme.ecdsa_secp521r1_sha512: hashes.SHA512,
    SignatureScheme.rsa_pss_rsae_sha256: hashes.SHA256,
    SignatureScheme.rsa_pss_rsae_sha384: hashes.SHA384,
    SignatureScheme.rsa_pss_rsae_sha512: hashes.SHA512,
}

SUPPORTED_SIGNATURE_SCHEMES: tuple[SignatureScheme, ...] = (
    SignatureScheme.ecdsa_secp256r1_sha256,
    SignatureScheme.ecdsa_secp384r1_sha384,
    SignatureScheme.ecdsa_secp521r1_sha512,
    SignatureScheme.ed25519,
    SignatureScheme.rsa_pss_rsae_sha256,
    SignatureScheme.rsa_pss_rsae_sha384,
    SignatureScheme.rsa_pss_rsae_sha512,
    SignatureScheme.rsa_pkcs1_sha256,
    SignatureScheme.rsa_pkcs1_sha384,
    SignatureScheme.rsa_pkcs1_sha512,
)


class KeyShare:
    """Our ephemeral ECDHE key for one group."""

    __slots__ = ("_private", "group", "public_bytes")

    def __init__(self, group: NamedGroup) -> None:
        self.group = group
        self._private: x25519.X25519PrivateKey | ec.EllipticCurvePrivateKey
        if group == NamedGroup.x25519:
            private = x25519.X25519PrivateKey.generate()
            self._private = private
            self.public_bytes = private.public_key().public_bytes_raw()
        else:
            ec_private = ec.generate_private_key(_CURVES[group])
            self._private = ec_private
            self.public_bytes = ec_private.public_key().public_bytes(
                encoding=Encoding.X962, format=PublicFormat.UncompressedPoint
            )

    def exchange(self, peer_public: bytes) -> bytes:
        """Shared secret with the peer's point; bad points become illegal_parameter."""
        try:
            if isinstance(self._private, x25519.X25519PrivateKey):
                if len(peer_public) != 32:
                    raise ValueError("x25519 share must be 32 bytes")
                return self._private.exchange(x25519.X25519PublicKey.from_public_bytes(peer_public))
            curve = self._private.curve
            # Only the uncompressed form was negotiated (ec_point_formats, RFC 8422 5.1.2).
            coordinate_bytes = (curve.key_size + 7) // 8
            if len(peer_public) != 1 + 2 * coordinate_bytes or peer_public[0] != 4:
                raise ValueError("ECDHE share is not an uncompressed point")
            peer = ec.EllipticCurvePublicKey.from_encoded_point(curve, peer_public)
            return self._private.exchange(ec.ECDH(), peer)
        except (ValueError, UnsupportedAlgorithm):
            raise AlertError(AlertDescription.illegal_parameter, "bad ECDHE share") from None


def choose_signature_scheme(
    private_key: CertificatePrivateKey, peer_schemes: list[int] | None
) -> SignatureScheme:
    """Pick a scheme our key can make and the peer accepts (RFC 5246 7.4.1.4.1 defaults)."""
    if isinstance(private_key, ec.EllipticCurvePrivateKey):
        by_curve = {
            "secp256r1": SignatureScheme.ecdsa_secp256r1_sha256,
            "secp384r1": SignatureScheme.ecdsa_secp384r1_sha384,
            "secp521r1": SignatureScheme.ecdsa_secp521r1_sha512,
        }
        preferred = [by_curve.get(private_key.curve.name, SignatureScheme.ecdsa_secp256r1_sha256)]
        preferred += [
            SignatureScheme.ecdsa_secp256r1_sha256,
            SignatureScheme.ecdsa_secp384r1_sha384,
            SignatureScheme.ecdsa_secp521r1_sha512,
        ]
    elif isinstance(private_key, ed25519.Ed25519PrivateKey):
        preferred = [SignatureScheme.ed25519]
    else:
        preferred = [
            SignatureScheme.rsa_pss_rsae_sha256,
            SignatureScheme.rsa_pkcs1_sha256,
            SignatureScheme.rsa_pss_rsae_sha384,
            SignatureScheme.rsa_pkcs1_sha384,
            SignatureScheme.rsa_pkcs1_sha512,
        ]
    if peer_schemes is None:
        return preferred[0]
    for scheme in preferred:
        if scheme in peer_schemes:
            return scheme
    raise AlertError(AlertDescription.handshake_failure, "no common signature scheme")


def sign(private_key: CertificatePrivateKey, scheme: SignatureScheme, data: bytes) -> bytes:
    """Signature over ``data`` with the given scheme."""
    if isinstance(private_key, ed25519.Ed25519PrivateKey):
        return private_key.sign(data)
    hash_algorithm = _SCHEME_HASH[scheme]()
    if isinstance(private_key, ec.EllipticCurvePrivateKey):
        return private_key.sign(data, ec.ECDSA(hash_algorithm))
    if scheme in (
        SignatureScheme.rsa_pss_rsae_sha256,
        SignatureScheme.rsa_pss_rsae_sha384,
        SignatureScheme.rsa_pss_rsae_sha512,
    ):
        return private_key.sign(
            data,
            padding.PSS(mgf=padding.MGF1(hash_algorithm), salt_length=padding.PSS.DIGEST_LENGTH),
            hash_algorithm,
        )
    return private_key.sign(data, padding.PKCS1v15(), hash_algorithm)


def verify_signature(
    certificate: x509.Certificate, scheme_value: int, signature: bytes, data: bytes
) -> None:
    """Check a handshake signature; failures raise decrypt_error (RFC 5246 7.4.3)."""
    try:
        scheme = SignatureScheme(scheme_value)
    except ValueError:
        raise AlertError(AlertDescription.illegal_parameter, "unknown signature scheme") from None
    if scheme not in SUPPORTED_SIGNATURE_SCHEMES:
        raise AlertError(AlertDescription.illegal_parameter, "signature scheme not offered")
    public_key = certificate_public_key(certificate)
    try:
        if scheme == SignatureScheme.ed25519:
            if not isinstance(public_key, ed25519.Ed25519PublicKey):
                raise AlertError(AlertDescription.illegal_parameter, "key does not match scheme")
            public_key.verify(signature, data)
            return
        hash_algorithm = _SCHEME_HASH[scheme]()
        if isinstance(public_key, ec.EllipticCurvePublicKey):
            if scheme not in (
                SignatureScheme.ecdsa_secp256r1_sha256,
                SignatureScheme.ecdsa_secp384r1_sha384,
                SignatureScheme.ecdsa_secp521r1_sha512,
            ):
                raise AlertError(AlertDescription.illegal_parameter, "key does not match scheme")
            public_key.verify(signature, data, ec.ECDSA(hash_algorithm))
        elif isinstance(public_key, rsa.RSAPublicKey):
            if scheme in (
                SignatureScheme.rsa_pss_rsae_sha256,
                SignatureScheme.rsa_pss_rsae_sha384,
                SignatureScheme.rsa_pss_rsae_sha512,
            ):
                public_key.verify(
                    signature,
                    data,
                    padding.PSS(mgf=padding.MGF1(hash_algorithm), salt_length=padding.PSS.AUTO),
                    hash_algorithm,
                )
            elif scheme in (
                SignatureScheme.rsa_pkcs1_sha256,
                SignatureScheme.rsa_pkcs1_sha384,
                SignatureScheme.rsa_pkcs1_sha512,
            ):
                public_key.verify(signature, data, padding.PKCS1v15(), hash_algorithm)
            else:
                raise AlertError(AlertDescription.illegal_parameter, "key does not match scheme")
        else:
            raise AlertError(AlertDescription.unsupported_certificate, "unsupported key type")
    except (InvalidSignature, ValueError, TypeError, UnsupportedAlgorithm):
        raise AlertError(AlertDescription.decrypt_error, "bad handshake signature") from None


CertificatePublicKey = ec.EllipticCurvePublicKey | rsa.RSAPublicKey | ed25519.Ed25519PublicKey


def certificate_public_key(certificate: x509.Certificate) -> CertificatePublicKey:
    """The certificate's key, if it is one DTLS 1.2 can use; else unsupported_certificate.

    ``public_key()`` raises ``UnsupportedAlgorithm`` (or ``ValueError``) for a key
    algorithm ``cryptography`` does not know, or a malformed key: that must become
    our alert, never escape the handshake.
    """
    try:
        public_key = certificate.public_key()
    except (UnsupportedAlgorithm, ValueError):
        raise AlertError(
            AlertDescription.unsupported_certificate, "certificate has an unsupported key algorithm"
        ) from None
    if not isinstance(
        public_key, ec.EllipticCurvePublicKey | rsa.RSAPublicKey | ed25519.Ed25519PublicKey
    ):
        raise AlertError(
            AlertDescription.unsupported_certificate,
            f"certificate key type {type(public_key).__name__} is not usable for DTLS 1.2",
        )
    return public_key


def load_peer_chain(ders: list[bytes]) -> tuple[x509.Certificate, ...]:
    """Parse the peer's DER certificates; garbage becomes bad_certificate."""
    try:
        return tuple(x509.load_der_x509_certificate(der) for der in ders)
    except ValueError:
        raise AlertError(AlertDescription.bad_certificate, "unparsable certificate") from None
