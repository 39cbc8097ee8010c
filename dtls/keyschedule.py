"""TLS 1.2 key schedule (RFC 5246 5, 8.1, 6.3; RFC 7627; RFC 5705).

Everything here is a pure function of secrets and transcript hashes; HMAC and
hashes come from ``cryptography``.
"""

from __future__ import annotations

from cryptography.hazmat.primitives import hashes, hmac

__all__ = [
    "MASTER_SECRET_BYTES",
    "VERIFY_DATA_BYTES",
    "KeyBlock",
    "derive_key_block",
    "derive_master_secret",
    "export_keying_material",
    "finished_verify_data",
    "prf",
    "transcript_hash",
]

MASTER_SECRET_BYTES = 48
VERIFY_DATA_BYTES = 12


def _hash_for(hash_name: str) -> hashes.HashAlgorithm:
    return hashes.SHA384() if hash_name == "sha384" else hashes.SHA256()


def _hmac(hash_name: str, key: bytes, data: bytes) -> bytes:
    mac = hmac.HMAC(key, _hash_for(hash_name))
    mac.update(data)
    return mac.finalize()


def prf(hash_name: str, secret: bytes, label: bytes, seed: bytes, length: int) -> bytes:
    """The TLS 1.2 PRF: P_hash(secret, label + seed) cut to ``length`` (RFC 5246 5)."""
    full_seed = label + seed
    output = bytearray()
    a_value = full_seed
    while len(output) < length:
        a_value = _hmac(hash_name, secret, a_value)
        output += _hmac(hash_name, secret, a_value + full_seed)
    return bytes(output[:length])


def transcript_hash(hash_name: str, transcript: bytes) -> bytes:
    """Hash of the handshake messages so far."""
    digest = hashes.Hash(_hash_for(hash_name))
    digest.update(transcript)
    return digest.finalize()


def derive_master_secret(
    hash_name: str,
    premaster_secret: bytes,
    *,
    client_random: bytes,
    server_random: bytes,
    session_hash: bytes | None,
) -> bytes:
    """Master secret; with ``session_hash`` the RFC 7627 extended variant."""
    if session_hash is not None:
        return prf(
            hash_name,
            premaster_secret,
            b"extended master secret",
            session_hash,
            MASTER_SECRET_BYTES,
        )
    return prf(
        hash_name,
        premaster_secret,
        b"master secret",
        client_random + server_random,
        MASTER_SECRET_BYTES,
    )


class KeyBlock:
    """Write keys and implicit IVs of both directions (AEAD suites carry no MAC keys)."""

    __slots__ = ("client_iv", "client_key", "server_iv", "server_key")

    def __init__(self, client_key: bytes, server_key: bytes, client_iv: bytes, server_iv: bytes):
        self.client_key = client_key
        self.server_key = server_key
        self.client_iv = client_iv
        self.server_iv = server_iv


def derive_key_block(
    hash_name: str,
    master_secret: bytes,
    *,
    client_random: bytes,
    server_random: bytes,
    key_bytes: int,
    iv_bytes: int,
) -> KeyBlock:
    """Split the key expansion (RFC 5246 6.3; note server_random comes first here)."""
    material = prf(
        hash_name,
        master_secret,
        b"key expansion",
        server_random + client_random,
        2 * key_bytes + 2 * iv_bytes,
    )
    client_key = material[:key_bytes]
    server_key = material[key_bytes : 2 * key_bytes]
    client_iv = material[2 * key_bytes : 2 * key_bytes + iv_bytes]
    server_iv = material[2 * key_bytes + iv_bytes :]
    return KeyBlock(client_key, server_key, client_iv, server_iv)


def finished_verify_data(
    hash_name: str, master_secret: bytes, *, from_client: bool, handshake_hash: bytes
) -> bytes:
    """verify_data of a Finished message (RFC 5246 7.4.9)."""
    label = b"client finished" if from_client else b"server finished"
    return prf(hash_name, master_secret, label, handshake_hash, VERIFY_DATA_BYTES)


def export_keying_material(
    hash_name: str,
    master_secret: bytes,
    *,
    client_random: bytes,
    server_random: bytes,
    label: bytes,
    context: bytes | None,
    length: int,
) -> bytes:
    """RFC 5705 exporter; ``context=None`` and ``context=b""`` differ, as the RFC says."""
    seed = client_random + server_random
    if context is not None:
        seed += len(context).to_bytes(2, "big") + context
    return prf(hash_name, master_secret, label, seed, length)
