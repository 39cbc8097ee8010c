"""TLS 1.2 PRF and derived values."""

from __future__ import annotations

from dtls.keyschedule import derive_key_block, export_keying_material, prf


def test_prf_sha256_known_answer() -> None:
    # Widely circulated TLS 1.2 PRF (SHA-256) test vector, first 16 bytes of its 100-byte output.
    out = prf(
        "sha256",
        bytes.fromhex("9bbe436ba940f017b17652849a71db35"),
        b"test label",
        bytes.fromhex("a0ba9f936cda311827a6f796ffd5198c"),
        100,
    )
    assert len(out) == 100
    assert out[:16].hex() == "e3f229ba727be17b8d122620557cd453"


def test_prf_prefix_property_and_hashes_differ() -> None:
    long = prf("sha256", b"k", b"l", b"s", 80)
    assert prf("sha256", b"k", b"l", b"s", 33) == long[:33]
    assert prf("sha384", b"k", b"l", b"s", 33) != long[:33]


def test_key_block_split() -> None:
    block = derive_key_block(
        "sha256",
        b"m" * 48,
        client_random=b"c" * 32,
        server_random=b"s" * 32,
        key_bytes=16,
        iv_bytes=4,
    )
    material = prf("sha256", b"m" * 48, b"key expansion", b"s" * 32 + b"c" * 32, 40)
    assert block.client_key + block.server_key + block.client_iv + block.server_iv == material


def test_exporter_context_none_differs_from_empty() -> None:
    args = {"client_random": b"c" * 32, "server_random": b"s" * 32, "label": b"EXPERIMENTAL"}
    assert export_keying_material("sha256", b"m" * 48, context=None, length=16, **args) != (
        export_keying_material("sha256", b"m" * 48, context=b"", length=16, **args)
    )
