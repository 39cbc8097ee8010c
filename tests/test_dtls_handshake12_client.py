"""The DTLS 1.2 client state machine: its table, and the paths real handshakes take."""

from __future__ import annotations

import dataclasses

import pytest
from dtls_helpers import CLIENT_ADDRESS, SERVER_ADDRESS, configs, reachable, run_pair, trace_states

from dtls.connection import DTLSConnection
from dtls.errors import AlertDescription, AlertError
from dtls.handshake import HandshakeType
from dtls.handshake12_client import _CLIENT_HANDLERS, CLIENT_TRANSITIONS, ClientState
from dtls.reassembly import HandshakeMessage
from dtls.suites import CipherSuite

S = ClientState


def test_table_is_closed_and_every_state_is_reachable() -> None:
    assert set(CLIENT_TRANSITIONS) == set(ClientState)
    for transitions in CLIENT_TRANSITIONS.values():
        for msg_type, targets in transitions.items():
            assert msg_type in _CLIENT_HANDLERS
            assert targets <= set(ClientState)
    assert reachable(CLIENT_TRANSITIONS, S.WAIT_HELLO) == set(ClientState) - {S.START}
    assert CLIENT_TRANSITIONS[S.ESTABLISHED] == {}


def _pair(client_config: object, server_config: object) -> tuple[DTLSConnection, DTLSConnection]:
    client = DTLSConnection(client_config, address=SERVER_ADDRESS)  # type: ignore[arg-type]
    server = DTLSConnection(server_config, address=CLIENT_ADDRESS)  # type: ignore[arg-type]
    return client, server


def test_full_handshake_with_a_certificate_request_and_a_ticket() -> None:
    client_config, server_config, pki = configs()
    chain, key = pki.issue("client.test", client=True)
    client_config = dataclasses.replace(client_config, certificate_chain=chain, private_key=key)
    server_config = dataclasses.replace(
        server_config, require_client_certificate=True, ca_certificates=(pki.ca_certificate,)
    )
    client, server = _pair(client_config, server_config)
    states = trace_states(client)
    run_pair(client, server)
    assert states == [
        s.value
        for s in (
            S.START,
            S.WAIT_HELLO,  # HelloVerifyRequest: hello again, with the cookie
            S.WAIT_CERTIFICATE,
            S.WAIT_KEY_EXCHANGE,
            S.WAIT_REQUEST_OR_DONE,
            S.WAIT_HELLO_DONE,
            S.WAIT_TICKET_OR_FINISHED,
            S.WAIT_FINISHED,
            S.ESTABLISHED,
        )
    ]


@pytest.mark.parametrize(
    ("suite", "hint", "path"),
    [
        (CipherSuite.TLS_PSK_WITH_AES_128_GCM_SHA256, b"", [S.WAIT_HINT_OR_DONE]),
        (
            CipherSuite.TLS_PSK_WITH_AES_128_GCM_SHA256,
            b"hint",
            [S.WAIT_HINT_OR_DONE, S.WAIT_HELLO_DONE],
        ),
        (
            CipherSuite.TLS_ECDHE_PSK_WITH_CHACHA20_POLY1305_SHA256,
            b"",
            [S.WAIT_KEY_EXCHANGE, S.WAIT_HELLO_DONE],
        ),
    ],
)
def test_psk_paths(suite: CipherSuite, hint: bytes, path: list[ClientState]) -> None:
    client_config, server_config, _ = configs(psk=b"k" * 16, cipher_suites=(suite,))
    server_config = dataclasses.replace(
        server_config, psk=b"k" * 16, psk_identity_hint=hint, session_tickets=False
    )
    client_config = dataclasses.replace(client_config, session_tickets=False)
    client, server = _pair(client_config, server_config)
    states = trace_states(client)
    run_pair(client, server)
    assert states == [
        s.value for s in (S.START, S.WAIT_HELLO, *path, S.WAIT_FINISHED, S.ESTABLISHED)
    ]


def test_abbreviated_handshake_path() -> None:
    client_config, server_config, _ = configs(session_tickets=False)
    server_config = dataclasses.replace(server_config, session_tickets=False)
    client, server = _pair(client_config, server_config)
    run_pair(client, server)
    resumed = DTLSConnection(
        dataclasses.replace(client_config, session=client.session), address=SERVER_ADDRESS
    )
    server_again = DTLSConnection(
        server_config, address=CLIENT_ADDRESS, server_context=server.server_context
    )
    states = trace_states(resumed)
    run_pair(resumed, server_again)
    assert resumed.session_resumed
    assert states == [s.value for s in (S.START, S.WAIT_HELLO, S.WAIT_FINISHED, S.ESTABLISHED)]


def test_a_message_the_table_does_not_list_is_unexpected() -> None:
    client_config, _, _ = configs()
    client = DTLSConnection(client_config, address=SERVER_ADDRESS)
    client.start_handshake(0)
    message = HandshakeMessage(msg_type=HandshakeType.finished, message_seq=0, body=b"x" * 12)
    with pytest.raises(AlertError) as caught:
        client._handshake.handle_message(message, 0)
    assert caught.value.description is AlertDescription.unexpected_message
    assert "finished while in state 'wait ServerHello'" in str(caught.value)
    unknown = HandshakeMessage(msg_type=99, message_seq=0, body=b"")
    with pytest.raises(AlertError, match="handshake message 99"):
        client._handshake.handle_message(unknown, 0)
