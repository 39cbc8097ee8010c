"""Cipher suites, groups and signature schemes this implementation speaks.

Wire values are IANA code points.  Each suite names its key exchange, its
AEAD and the hash its PRF uses (RFC 5246 5: the suite's PRF hash, SHA-256 at
the least).
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum, IntEnum

from cryptography.hazmat.primitives import hashes

__all__ = [
    "SUITE_PARAMETERS",
    "TLS13_SUITES",
    "AeadKind",
    "CipherSuite",
    "KeyExchange",
    "NamedGroup",
    "SignatureScheme",
    "SrtpProfile",
    "SuiteParameters",
    "GROUP_ALIASES",
    "OPENSSL_SUITE_NAMES",
    "group_by_name",
    "suite_by_name",
]


class CipherSuite(IntEnum):
    """Supported cipher suites; ``.name`` is the IANA name."""

    TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256 = 0xC02B
    TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384 = 0xC02C
    TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256 = 0xCCA9
    TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256 = 0xC02F
    TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384 = 0xC030
    TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256 = 0xCCA8
    TLS_PSK_WITH_AES_128_GCM_SHA256 = 0x00A8
    TLS_ECDHE_PSK_WITH_CHACHA20_POLY1305_SHA256 = 0xCCAC
    # DTLS 1.3 (RFC 8446 B.4): the suite names only the AEAD and the hash.
    TLS_AES_128_GCM_SHA256 = 0x1301
    TLS_AES_256_GCM_SHA384 = 0x1302
    TLS_CHACHA20_POLY1305_SHA256 = 0x1303


class KeyExchange(Enum):
    """How the premaster secret is made and whether the server signs."""

    ECDHE_ECDSA = "ECDHE_ECDSA"
    ECDHE_RSA = "ECDHE_RSA"
    PSK = "PSK"
    ECDHE_PSK = "ECDHE_PSK"
    TLS13 = "TLS13"  # DTLS 1.3: key exchange and authentication are negotiated apart


class AeadKind(Enum):
    """Record AEAD; fixes key size, implicit IV size and explicit nonce size."""

    AES_128_GCM = "AES_128_GCM"
    AES_256_GCM = "AES_256_GCM"
    CHACHA20_POLY1305 = "CHACHA20_POLY1305"


@dataclass(frozen=True, slots=True, kw_only=True)
class SuiteParameters:
    """What a cipher suite implies for the key schedule and the record layer."""

    key_exchange: KeyExchange
    aead: AeadKind
    hash_name: str  # "sha256" | "sha384"

    @property
    def key_bytes(self) -> int:
        """AEAD key length."""
        return 16 if self.aead is AeadKind.AES_128_GCM else 32

    @property
    def fixed_iv_bytes(self) -> int:
        """Implicit IV: 4-byte GCM salt (RFC 5288), 12-byte ChaCha IV (RFC 7905)."""
        return 12 if self.aead is AeadKind.CHACHA20_POLY1305 else 4

    @property
    def explicit_nonce_bytes(self) -> int:
        """Per-record nonce bytes sent on the wire (GCM only)."""
        return 0 if self.aead is AeadKind.CHACHA20_POLY1305 else 8

    def hash_algorithm(self) -> hashes.HashAlgorithm:
        """The PRF / transcript hash."""
        return hashes.SHA384() if self.hash_name == "sha384" else hashes.SHA256()


SUITE_PARAMETERS: dict[CipherSuite, SuiteParameters] = {
    CipherSuite.TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256: SuiteParameters(
        key_exchange=KeyExchange.ECDHE_ECDSA, aead=AeadKind.AES_128_GCM, hash_name="sha256"
    ),
    CipherSuite.TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384: SuiteParameters(
        key_exchange=KeyExchange.ECDHE_ECDSA, aead=AeadKind.AES_256_GCM, hash_name="sha384"
    ),
    CipherSuite.TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256: SuiteParameters(
        key_exchange=KeyExchange.ECDHE_ECDSA, aead=AeadKind.CHACHA20_POLY1305, hash_name="sha256"
    ),
    CipherSuite.TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256: SuiteParameters(
        key_exchange=KeyExchange.ECDHE_RSA, aead=AeadKind.AES_128_GCM, hash_name="sha256"
    ),
    CipherSuite.TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384: SuiteParameters(
        key_exchange=KeyExchange.ECDHE_RSA, aead=AeadKind.AES_256_GCM, hash_name="sha384"
    ),
    CipherSuite.TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256: SuiteParameters(
        key_exchange=KeyExchange.ECDHE_RSA, aead=AeadKind.CHACHA20_POLY1305, hash_name="sha256"
    ),
    CipherSuite.TLS_PSK_WITH_AES_128_GCM_SHA256: SuiteParameters(
        key_exchange=KeyExchange.PSK, aead=AeadKind.AES_128_GCM, hash_name="sha256"
    ),
    CipherSuite.TLS_ECDHE_PSK_WITH_CHACHA20_POLY1305_SHA256: SuiteParameters(
        key_exchange=KeyExchange.ECDHE_PSK, aead=AeadKind.CHACHA20_POLY1305, hash_name="sha256"
    ),
}


SUITE_PARAMETERS.update(
    {
        CipherSuite.TLS_AES_128_GCM_SHA256: SuiteParameters(
            key_exchange=KeyExchange.TLS13, aead=AeadKind.AES_128_GCM, hash_name="sha256"
        ),
        CipherSuite.TLS_AES_256_GCM_SHA384: SuiteParameters(
            key_exchange=KeyExchange.TLS13, aead=AeadKind.AES_256_GCM, hash_name="sha384"
        ),
        CipherSuite.TLS_CHACHA20_POLY1305_SHA256: SuiteParameters(
            key_exchange=KeyExchange.TLS13, aead=AeadKind.CHACHA20_POLY1305, hash_name="sha256"
        ),
    }
)
#: The DTLS 1.3 suites; every other suite is a DTLS 1.2 one.
TLS13_SUITES: frozenset[CipherSuite] = frozenset(
    suite
    for suite, parameters in SUITE_PARAMETERS.items()
    if parameters.key_exchange is KeyExchange.TLS13
)
OPENSSL_SUITE_NAMES: dict[CipherSuite, str] = {
    CipherSuite.TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256: "ECDHE-ECDSA-AES128-GCM-SHA256",
    CipherSuite.TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384: "ECDHE-ECDSA-AES256-GCM-SHA384",
    CipherSuite.TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256: "ECDHE-ECDSA-CHACHA20-POLY1305",
    CipherSuite.TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256: "ECDHE-RSA-AES128-GCM-SHA256",
    CipherSuite.TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384: "ECDHE-RSA-AES256-GCM-SHA384",
    CipherSuite.TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256: "ECDHE-RSA-CHACHA20-POLY1305",
    CipherSuite.TLS_PSK_WITH_AES_128_GCM_SHA256: "PSK-AES128-GCM-SHA256",
    CipherSuite.TLS_ECDHE_PSK_WITH_CHACHA20_POLY1305_SHA256: "ECDHE-PSK-CHACHA20-POLY1305",
    # OpenSSL calls the DTLS 1.3 suites by their IANA names.
    CipherSuite.TLS_AES_128_GCM_SHA256: "TLS_AES_128_GCM_SHA256",
    CipherSuite.TLS_AES_256_GCM_SHA384: "TLS_AES_256_GCM_SHA384",
    CipherSuite.TLS_CHACHA20_POLY1305_SHA256: "TLS_CHACHA20_POLY1305_SHA256",
}
"""OpenSSL's names for our suites (``openssl ciphers -V``)."""


def suite_by_name(name: str) -> CipherSuite:
    """Look a suite up by IANA name (``TLS_...``) or OpenSSL name (``ECDHE-...``).

    Case does not matter.  Raises KeyError when unknown.
    """
    wanted = name.strip().upper()
    for suite in CipherSuite:
        if wanted in (suite.name, OPENSSL_SUITE_NAMES[suite]):
            return suite
    raise KeyError(name)


class NamedGroup(IntEnum):
    """ECDHE groups (RFC 8422 5.1.1, RFC 7748)."""

    secp256r1 = 23
    secp384r1 = 24
    x25519 = 29


GROUP_ALIASES: dict[str, NamedGroup] = {
    "x25519": NamedGroup.x25519,
    "secp256r1": NamedGroup.secp256r1,
    "p-256": NamedGroup.secp256r1,
    "prime256v1": NamedGroup.secp256r1,
    "secp384r1": NamedGroup.secp384r1,
    "p-384": NamedGroup.secp384r1,
}
"""Names a group goes by (IANA, NIST, OpenSSL), lower case."""


def group_by_name(name: str) -> NamedGroup:
    """``X25519``, ``P-256``, ``secp256r1``, ``prime256v1``...; raises KeyError when unknown."""
    return GROUP_ALIASES[name.strip().lower()]


class SignatureScheme(IntEnum):
    """TLS 1.2 SignatureAndHashAlgorithm values, written as TLS 1.3 schemes."""

    rsa_pkcs1_sha256 = 0x0401
    rsa_pkcs1_sha384 = 0x0501
    rsa_pkcs1_sha512 = 0x0601
    ecdsa_secp256r1_sha256 = 0x0403
    ecdsa_secp384r1_sha384 = 0x0503
    ecdsa_secp521r1_sha512 = 0x0603
    rsa_pss_rsae_sha256 = 0x0804
    rsa_pss_rsae_sha384 = 0x0805
    rsa_pss_rsae_sha512 = 0x0806
    ed25519 = 0x0807


class SrtpProfile(IntEnum):
    """DTLS-SRTP protection profiles (RFC 5764 4.1.2, RFC 7714)."""

    SRTP_AES128_CM_SHA1_80 = 0x0001
    SRTP_AES128_CM_SHA1_32 = 0x0002
    SRTP_AEAD_AES_128_GCM = 0x0007
    SRTP_AEAD_AES_256_GCM = 0x0008
