"""Regression tests for what the negative-test pass of issue 9 found, one test (or more) each.

Each hostile case must end in a counted drop or a clean ``ConnectionTerminated``
with the right alert; nothing escapes ``receive_datagram``.
"""

from __future__ import annotations

from dtls_helpers import CLIENT_ADDRESS, SECOND_NS, SERVER_ADDRESS, configs, run_pair

from dtls import handshake as hs
from dtls.connection import DTLSConnection
from dtls.handshake import HandshakeType
from dtls.reassembly import MAX_HANDSHAKE_MESSAGE_BYTES, MAX_MESSAGES_AHEAD
from dtls.records import DTLS_1_2, ContentType, encode_record_header


def _pair() -> tuple[DTLSConnection, DTLSConnection]:
    client_config, server_config, _ = configs()
    return (
        DTLSConnection(client_config, address=SERVER_ADDRESS),
        DTLSConnection(server_config, address=CLIENT_ADDRESS),
    )


def _spoofed(
    msg_type: int, message_seq: int, length: int, offset: int, body: bytes, record_seq: int
) -> bytes:
    """An epoch-0 record with one made-up handshake fragment."""
    fragment = hs.encode_handshake_fragment(msg_type, length, message_seq, offset, body)
    header = encode_record_header(ContentType.handshake, DTLS_1_2, 0, record_seq, len(fragment))
    return header + fragment


def _to_cookie_exchange_done(client: DTLSConnection, server: DTLSConnection) -> None:
    """Hello, HelloVerifyRequest: the client's hello with the cookie is queued, not sent."""
    client.start_handshake(0)
    for datagram, _ in client.datagrams_to_send(0):
        server.receive_datagram(datagram, CLIENT_ADDRESS, 0)
    for datagram, _ in server.datagrams_to_send(0):
        client.receive_datagram(datagram, SERVER_ADDRESS, 0)


# -- one spoofed epoch-0 datagram must not stall a handshake ----------------------------


def test_spoofed_record_far_ahead_does_not_move_the_epoch0_window() -> None:
    # Before: the window was marked for the spoofed record number (2^40) before the record
    # was dropped, so every genuine epoch-0 record after it was "left of the window".
    client, server = _pair()
    _to_cookie_exchange_done(client, server)
    client.receive_datagram(
        _spoofed(HandshakeType.server_hello, 1, 70, 0, b"\x00" * 10, 2**40), SERVER_ADDRESS, 0
    )
    now = run_pair(client, server)
    assert client.is_established and server.is_established
    assert now < SECOND_NS  # no retransmission was needed


def test_spoofed_first_fragment_does_not_pin_the_message() -> None:
    # Before: the spoofed fragment fixed type and length of message_seq 1, so the genuine
    # ServerHello "contradicted" it and was dropped, every time it was resent.
    client, server = _pair()
    _to_cookie_exchange_done(client, server)
    for record_seq, msg_type in enumerate((HandshakeType.server_hello, HandshakeType.certificate)):
        spoof = _spoofed(msg_type, 1, 5000, 100, b"\x00" * 50, record_seq + 1)
        client.receive_datagram(spoof, SERVER_ADDRESS, 0)
    now = run_pair(client, server)
    assert client.is_established and now < SECOND_NS


def test_partial_later_messages_cannot_take_the_reassembly_buffer() -> None:
    # The server waits for the client's Certificate/ClientKeyExchange flight; a spoofer fills
    # the messages after it with partial junk.  The genuine flight must still get through.
    client, server = _pair()
    _to_cookie_exchange_done(client, server)
    for datagram, _ in client.datagrams_to_send(0):  # hello with cookie
        server.receive_datagram(datagram, CLIENT_ADDRESS, 0)
    record_seq = 100
    chunk = b"j" * 1000
    for ahead in range(1, MAX_MESSAGES_AHEAD):
        for offset in range(0, 60_000, len(chunk)):
            record_seq += 1
            junk = _spoofed(11, 2 + ahead, MAX_HANDSHAKE_MESSAGE_BYTES, offset, chunk, record_seq)
            server.receive_datagram(junk, CLIENT_ADDRESS, 0)
    now = run_pair(client, server)
    assert client.is_established and server.is_established
    assert now < SECOND_NS
