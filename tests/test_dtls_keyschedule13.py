"""The TLS 1.3 key schedule against the RFC 8448 traces (TLS labels), and its DTLS prefix."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric import x25519

from dtls.keyschedule13 import (
    DTLS13_LABEL_PREFIX,
    TLS13_LABEL_PREFIX,
    KeySchedule,
    export_keying_material,
    finished_verify_data,
    hkdf_expand_label,
    next_traffic_secret,
    resumption_psk,
    traffic_keys,
    transcript_hash,
    verify_finished,
)

VECTORS = json.loads((Path(__file__).parent / "vectors" / "rfc8448.json").read_text())
TLS = TLS13_LABEL_PREFIX


def _hex(vector: dict[str, Any], name: str) -> bytes:
    return bytes.fromhex(vector[name])


def _messages(*names: str) -> bytes:
    messages = VECTORS["simple_1rtt"]["messages"]
    return b"".join(bytes.fromhex(messages[name]) for name in names)


def test_simple_1rtt_handshake_trace() -> None:
    v = VECTORS["simple_1rtt"]
    private = x25519.X25519PrivateKey.from_private_bytes(_hex(v, "client_x25519_private"))
    shared = private.exchange(
        x25519.X25519PublicKey.from_public_bytes(_hex(v, "server_x25519_public"))
    )
    assert shared == _hex(v, "shared_secret")

    schedule = KeySchedule("sha256", None, TLS)
    assert schedule.secret == _hex(v, "early_secret")
    schedule.enter_handshake(shared)
    assert schedule.secret == _hex(v, "handshake_secret")
    hello_hash = transcript_hash("sha256", _messages("client_hello", "server_hello"))
    client_hs = schedule.derive(b"c hs traffic", hello_hash)
    server_hs = schedule.derive(b"s hs traffic", hello_hash)
    assert client_hs == _hex(v, "client_handshake_traffic_secret")
    assert server_hs == _hex(v, "server_handshake_traffic_secret")
    keys = traffic_keys("sha256", server_hs, 16, TLS)
    assert (keys.key, keys.iv) == (_hex(v, "server_handshake_key"), _hex(v, "server_handshake_iv"))
    keys = traffic_keys("sha256", client_hs, 16, TLS)
    assert (keys.key, keys.iv) == (_hex(v, "client_handshake_key"), _hex(v, "client_handshake_iv"))

    before_finished = transcript_hash(
        "sha256",
        _messages(
            "client_hello",
            "server_hello",
            "encrypted_extensions",
            "certificate",
            "certificate_verify",
        ),
    )
    server_verify = finished_verify_data("sha256", server_hs, before_finished, TLS)
    assert server_verify == _hex(v, "server_finished_verify_data")
    assert verify_finished("sha256", server_hs, before_finished, server_verify, TLS)
    assert not verify_finished("sha256", server_hs, before_finished, bytes(32), TLS)

    schedule.enter_master()
    assert schedule.secret == _hex(v, "master_secret")
    server_done = transcript_hash(
        "sha256",
        _messages(
            "client_hello",
            "server_hello",
            "encrypted_extensions",
            "certificate",
            "certificate_verify",
            "server_finished",
        ),
    )
    assert schedule.derive(b"c ap traffic", server_done) == _hex(
        v, "client_application_traffic_secret"
    )
    server_ap = schedule.derive(b"s ap traffic", server_done)
    assert server_ap == _hex(v, "server_application_traffic_secret")
    assert schedule.derive(b"exp master", server_done) == _hex(v, "exporter_master_secret")
    keys = traffic_keys("sha256", server_ap, 16, TLS)
    assert (keys.key, keys.iv) == (
        _hex(v, "server_application_key"),
        _hex(v, "server_application_iv"),
    )

    client_verify = finished_verify_data("sha256", client_hs, server_done, TLS)
    assert client_verify == _hex(v, "client_finished_verify_data")
    client_done = transcript_hash(
        "sha256",
        _messages(
            "client_hello",
            "server_hello",
            "encrypted_extensions",
            "certificate",
            "certificate_verify",
            "server_finished",
            "client_finished",
        ),
    )
    resumption_master = schedule.derive(b"res master", client_done)
    assert resumption_master == _hex(v, "resumption_master_secret")
    assert resumption_psk("sha256", resumption_master, _hex(v, "ticket_nonce"), TLS) == _hex(
        v, "resumption_psk"
    )


def test_resumed_0rtt_binder_and_early_secrets() -> None:
    v = VECTORS["resumed_0rtt"]
    psk = bytes.fromhex(VECTORS["simple_1rtt"]["resumption_psk"])
    schedule = KeySchedule("sha256", psk, TLS)
    assert schedule.secret == _hex(v, "early_secret")
    binder_key = schedule.binder_key(resumption=True)
    assert binder_key == _hex(v, "binder_key")
    prefix = _hex(v, "client_hello_prefix")
    binder = finished_verify_data("sha256", binder_key, transcript_hash("sha256", prefix), TLS)
    assert binder == _hex(v, "binder")
    hello_hash = transcript_hash("sha256", prefix + _hex(v, "binders"))
    early_traffic = schedule.derive(b"c e traffic", hello_hash)
    assert early_traffic == _hex(v, "client_early_traffic_secret")
    assert schedule.derive(b"e exp master", hello_hash) == _hex(v, "early_exporter_master_secret")
    keys = traffic_keys("sha256", early_traffic, 16, TLS)
    assert (keys.key, keys.iv) == (_hex(v, "client_early_key"), _hex(v, "client_early_iv"))

    schedule.enter_handshake(_hex(v, "shared_secret"))
    assert schedule.secret == _hex(v, "handshake_secret")
    with_server_hello = prefix + _hex(v, "binders") + _hex(v, "server_hello")
    hello_hash = transcript_hash("sha256", with_server_hello)
    assert schedule.derive(b"c hs traffic", hello_hash) == _hex(
        v, "client_handshake_traffic_secret"
    )
    assert schedule.derive(b"s hs traffic", hello_hash) == _hex(
        v, "server_handshake_traffic_secret"
    )
    schedule.enter_master()
    assert schedule.secret == _hex(v, "master_secret")
    server_done = transcript_hash(
        "sha256", with_server_hello + _hex(v, "encrypted_extensions") + _hex(v, "server_finished")
    )
    assert schedule.derive(b"c ap traffic", server_done) == _hex(
        v, "client_application_traffic_secret"
    )
    assert schedule.derive(b"s ap traffic", server_done) == _hex(
        v, "server_application_traffic_secret"
    )
    assert schedule.derive(b"exp master", server_done) == _hex(v, "exporter_master_secret")


def test_dtls_prefix_changes_every_label() -> None:
    secret = bytes(range(32))
    assert hkdf_expand_label("sha256", secret, b"key", b"", 16, DTLS13_LABEL_PREFIX) != (
        hkdf_expand_label("sha256", secret, b"key", b"", 16, TLS)
    )
    # HkdfLabel is "length || len(label) || 'dtls13' + label || len(context) || context":
    # the DTLS prefix is six bytes like "tls13 ", so the label lengths are the same.
    assert len(DTLS13_LABEL_PREFIX) == len(TLS)


@pytest.mark.parametrize(("hash_name", "size"), [("sha256", 32), ("sha384", 48)])
def test_key_update_and_exporter_shapes(hash_name: str, size: int) -> None:
    secret = bytes(size)
    updated = next_traffic_secret(hash_name, secret)
    assert len(updated) == size and updated != secret
    keys = traffic_keys(hash_name, updated, 32)
    assert (len(keys.key), len(keys.iv), len(keys.sn_key)) == (32, 12, 32)
    first = export_keying_material(hash_name, secret, b"EXTRACTOR-dtls_srtp", b"", 60)
    assert len(first) == 60
    assert first != export_keying_material(hash_name, secret, b"EXTRACTOR-dtls_srtp", b"x", 60)
