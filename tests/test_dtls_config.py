"""Configuration validation and the SNI certificate store."""

from __future__ import annotations

import pytest
from dtls_helpers import make_pki, pem_chain, pem_key

from dtls.config import (
    DTLSConfiguration,
    DTLSVersion,
    ServerCertificates,
    load_certificate_chain,
    load_private_key,
)
from dtls.errors import LocalProtocolError
from dtls.suites import SUITE_PARAMETERS, CipherSuite, suite_by_name


def test_invalid_configurations_rejected() -> None:
    with pytest.raises(LocalProtocolError):
        DTLSConfiguration(mtu=100)
    with pytest.raises(LocalProtocolError):
        DTLSConfiguration(connection_id=bytes(256))
    with pytest.raises(LocalProtocolError):
        DTLSConfiguration(idle_timeout_ns=0)
    with pytest.raises(LocalProtocolError):
        DTLSConfiguration(replay_window_records=16)
    with pytest.raises(LocalProtocolError):
        DTLSConfiguration(replay_window_records=(1 << 16) + 1)
    pki = make_pki()
    chain, _ = pki.issue("x.test")
    with pytest.raises(LocalProtocolError):
        DTLSConfiguration(certificate_chain=chain)  # no key


def test_server_certificates_select_by_name_case_insensitive() -> None:
    pki = make_pki()
    default = pki.issue("default.test")
    named = pki.issue("named.test", "rsa")
    store = ServerCertificates()
    store.add(*default)
    store.add(*named, server_name="Named.Test")
    assert store.select("named.TEST") == named
    assert store.select("unknown.test") == default
    assert store.select(None) == default
    assert store.all_entries()[0] == default
    with pytest.raises(LocalProtocolError):
        store.add((), default[1])


def test_pem_loading_round_trip() -> None:
    pki = make_pki()
    chain, key = pki.issue("pem.test", "p384")
    assert load_certificate_chain(pem_chain(chain)) == chain
    assert load_private_key(pem_key(key)).private_numbers() == key.private_numbers()  # type: ignore[union-attr]


def test_every_suite_has_parameters_and_an_iana_name() -> None:
    for suite in CipherSuite:
        parameters = SUITE_PARAMETERS[suite]
        assert suite_by_name(suite.name) is suite
        assert parameters.key_bytes in (16, 32)
        assert parameters.fixed_iv_bytes + parameters.explicit_nonce_bytes == 12
        assert ("SHA384" in suite.name) == (parameters.hash_name == "sha384")


def test_versions_default_to_1_3_then_1_2_and_either_can_be_pinned() -> None:
    assert DTLSConfiguration().versions == (DTLSVersion.DTLS_1_3, DTLSVersion.DTLS_1_2)
    assert DTLSVersion.DTLS_1_2 == 0xFEFD and DTLSVersion.DTLS_1_3 == 0xFEFC
    assert DTLSVersion.DTLS_1_2.label == "DTLSv1.2" and DTLSVersion.DTLS_1_3.label == "DTLSv1.3"
    for pinned in ((DTLSVersion.DTLS_1_3,), (DTLSVersion.DTLS_1_2,)):
        assert DTLSConfiguration(versions=pinned).versions == pinned
    with pytest.raises(LocalProtocolError, match="max_early_data"):
        DTLSConfiguration(max_early_data=-1)
    with pytest.raises(LocalProtocolError, match="key_update_records"):
        DTLSConfiguration(key_update_records=0)
    with pytest.raises(LocalProtocolError, match="at least one version"):
        DTLSConfiguration(versions=())
    with pytest.raises(LocalProtocolError, match="each once"):
        DTLSConfiguration(versions=(DTLSVersion.DTLS_1_2, DTLSVersion.DTLS_1_2))
    with pytest.raises(LocalProtocolError, match="version 0x0303"):
        DTLSConfiguration(versions=(0x0303,))  # type: ignore[arg-type]
