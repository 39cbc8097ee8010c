"""The DTLS 1.2 server state machine: its table, and the paths real handshakes take."""

from __future__ import annotations

import dataclasses

import pytest
from dtls_helpers import CLIENT_ADDRESS, SERVER_ADDRESS, configs, reachable, run_pair, trace_states

from dtls.connection import DTLSConnection
from dtls.errors import AlertDescription, AlertError
from dtls.handshake import HandshakeType
from dtls.handshake12_server import _SERVER_HANDLERS, SERVER_TRANSITIONS, ServerState
from dtls.reassembly import HandshakeMessage

S = ServerState


def test_table_is_closed_and_every_state_is_reachable() -> None:
    assert set(SERVER_TRANSITIONS) == set(ServerState)
    for transitions in SERVER_TRANSITIONS.values():
        for msg_type, targets in transitions.items():
            assert msg_type in _SERVER_HANDLERS
            assert targets <= set(ServerState)
    assert reachable(SERVER_TRANSITIONS, S.WAIT_HELLO) == set(ServerState)


@pytest.mark.parametrize("client_certificate", [True, False])
def test_full_handshake_paths(client_certificate: bool) -> None:
    client_config, server_config, pki = configs()
    if client_certificate:
        chain, key = pki.issue("client.test", client=True)
        client_config = dataclasses.replace(client_config, certificate_chain=chain, private_key=key)
    server_config = dataclasses.replace(
        server_config, request_client_certificate=True, ca_certificates=(pki.ca_certificate,)
    )
    client = DTLSConnection(client_config, address=SERVER_ADDRESS)
    server = DTLSConnection(server_config, address=CLIENT_ADDRESS)
    states = trace_states(server)
    run_pair(client, server)
    middle = (
        [S.WAIT_CERTIFIED_KEY_EXCHANGE, S.WAIT_CERTIFICATE_VERIFY]
        if client_certificate
        else [S.WAIT_KEY_EXCHANGE]
    )
    assert states == [
        s.value
        for s in (
            S.WAIT_HELLO,
            S.WAIT_HELLO,  # no cookie yet: HelloVerifyRequest, nothing kept
            S.WAIT_CERTIFICATE,
            *middle,
            S.WAIT_FINISHED,
            S.ESTABLISHED,
        )
    ]


def test_abbreviated_handshake_path() -> None:
    client_config, server_config, _ = configs()
    client = DTLSConnection(client_config, address=SERVER_ADDRESS)
    server = DTLSConnection(server_config, address=CLIENT_ADDRESS)
    run_pair(client, server)
    resumed = DTLSConnection(
        dataclasses.replace(client_config, session=client.session), address=SERVER_ADDRESS
    )
    server_again = DTLSConnection(
        server_config, address=CLIENT_ADDRESS, server_context=server.server_context
    )
    states = trace_states(server_again)
    run_pair(resumed, server_again)
    assert server_again.session_resumed
    assert states == [
        s.value for s in (S.WAIT_HELLO, S.WAIT_HELLO, S.WAIT_RESUMED_FINISHED, S.ESTABLISHED)
    ]


def test_a_message_the_table_does_not_list_is_unexpected() -> None:
    _, server_config, _ = configs()
    server = DTLSConnection(server_config, address=CLIENT_ADDRESS)
    message = HandshakeMessage(msg_type=HandshakeType.client_key_exchange, message_seq=0, body=b"")
    with pytest.raises(AlertError) as caught:
        server._handshake.handle_message(message, 0)
    assert caught.value.description is AlertDescription.unexpected_message
    assert "client_key_exchange while in state 'wait ClientHello'" in str(caught.value)
