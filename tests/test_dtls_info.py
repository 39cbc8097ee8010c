"""What a connection reports it negotiated: live values, the frozen snapshot, the event."""

from __future__ import annotations

import dataclasses

from dtls_helpers import CLIENT_ADDRESS, SERVER_ADDRESS, configs, run_pair

from dtls.config import DTLSVersion
from dtls.connection import DTLSConnection
from dtls.events import HandshakeCompleted
from dtls.info import ConnectionInfo
from dtls.suites import CipherSuite, NamedGroup


def test_info_before_and_after_the_handshake() -> None:
    client_config, server_config, _ = configs(alpn_protocols=("h", "x"), connection_id=b"")
    server_config = dataclasses.replace(
        server_config, alpn_protocols=("x",), connection_id=b"\x01\x02"
    )
    client = DTLSConnection(client_config, address=SERVER_ADDRESS)
    server = DTLSConnection(server_config, address=CLIENT_ADDRESS)
    before = client.info
    assert isinstance(before, ConnectionInfo)
    assert before.version is None and before.version_name is None and before.cipher_suite is None
    run_pair(client, server)
    for connection in (client, server):
        info = connection.info
        assert info.version is DTLSVersion.DTLS_1_2 and info.version_name == "DTLSv1.2"
        assert connection.version is DTLSVersion.DTLS_1_2
        assert connection.negotiated_version == "DTLSv1.2"
        assert info.cipher_suite is CipherSuite.TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256
        assert info.group is NamedGroup.x25519
        assert info.alpn_protocol == "x" and not info.session_resumed
        assert info.extended_master_secret
    assert client.info.peer_connection_id == b"\x01\x02" == server.info.connection_id
    assert client.info.server_name == server.info.server_name == "server.test"
    assert client.info.peer_certificates and not server.info.peer_certificates
    events = []
    while (event := client.next_event()) is not None:
        events.append(event)
    (completed,) = [e for e in events if isinstance(e, HandshakeCompleted)]
    assert completed.version is DTLSVersion.DTLS_1_2
