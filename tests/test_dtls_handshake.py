"""Handshake message codecs: round trips, fragmentation, and hostile bytes."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from dtls import handshake as hs
from dtls.errors import DecodeError


def _hello() -> hs.ClientHello:
    return hs.ClientHello(
        client_version=0xFEFD,
        random=bytes(range(32)),
        session_id=b"\x01" * 32,
        cookie=b"\x02" * 32,
        cipher_suites=[0xC02B, 0xCCA9],
        compression_methods=b"\x00",
        extensions=[
            (hs.ExtensionType.supported_groups, hs.encode_uint16_list([29, 23])),
            (hs.ExtensionType.extended_master_secret, b""),
            (hs.ExtensionType.application_layer_protocol_negotiation, hs.encode_alpn(["h2", "x"])),
        ],
    )


def test_client_hello_round_trip() -> None:
    hello = _hello()
    assert hs.decode_client_hello(hs.encode_client_hello(hello)) == hello


def test_server_hello_and_others_round_trip() -> None:
    server_hello = hs.ServerHello(
        server_version=0xFEFD,
        random=bytes(32),
        session_id=b"",
        cipher_suite=0xC02F,
        compression_method=0,
        extensions=[(hs.ExtensionType.renegotiation_info, hs.encode_opaque8(b""))],
    )
    assert hs.decode_server_hello(hs.encode_server_hello(server_hello)) == server_hello
    request = hs.CertificateRequest(
        certificate_types=b"\x40\x01", signature_schemes=[0x0403], authorities=[b"name"]
    )
    assert hs.decode_certificate_request(hs.encode_certificate_request(request)) == request
    certificate = hs.Certificate(certificates=[b"a" * 10, b"b"])
    assert hs.decode_certificate(hs.encode_certificate(certificate)) == certificate
    ticket = hs.NewSessionTicket(lifetime_hint_seconds=60, ticket=b"t" * 40)
    assert hs.decode_new_session_ticket(hs.encode_new_session_ticket(ticket)) == ticket
    verify = hs.HelloVerifyRequest(server_version=0xFEFF, cookie=b"c" * 20)
    assert hs.decode_hello_verify_request(hs.encode_hello_verify_request(verify)) == verify


def test_extension_helpers() -> None:
    assert hs.decode_alpn(hs.encode_alpn(["h2", "webrtc"])) == ["h2", "webrtc"]
    assert hs.decode_server_name(hs.encode_server_name("Example.COM")) == "example.com"
    assert hs.decode_use_srtp(hs.encode_use_srtp([1, 7])) == ([1, 7], b"")


def test_fragmentation_headers() -> None:
    message = hs.encode_handshake(hs.HandshakeType.certificate, 3, bytes(range(256)) * 4)
    fragments = hs.fragment_handshake(message, 300)
    assert len(fragments) == 4
    decoded = [hs.decode_handshake_fragment(f)[0] for f in fragments]
    assert [f.fragment_offset for f in decoded] == [0, 300, 600, 900]
    assert all(f.length == 1024 and f.message_seq == 3 for f in decoded)
    assert b"".join(f.body for f in decoded) == bytes(range(256)) * 4


def test_duplicate_extension_rejected() -> None:
    hello = _hello()
    doubled = hs.ClientHello(
        client_version=hello.client_version,
        random=hello.random,
        session_id=hello.session_id,
        cookie=hello.cookie,
        cipher_suites=hello.cipher_suites,
        compression_methods=hello.compression_methods,
        extensions=[(23, b""), (23, b"")],
    )
    with pytest.raises(DecodeError):
        hs.decode_client_hello(hs.encode_client_hello(doubled))


def test_fragment_beyond_length_rejected() -> None:
    bad = bytes.fromhex("01 000010 0000 00000c 000008".replace(" ", "")) + bytes(8)
    with pytest.raises(DecodeError):
        hs.decode_handshake_fragment(bad)


DECODERS = [
    hs.decode_client_hello,
    hs.decode_server_hello,
    hs.decode_certificate,
    hs.decode_certificate_request,
    hs.decode_hello_verify_request,
    hs.decode_new_session_ticket,
    hs.decode_alpn,
    hs.decode_server_name,
    hs.decode_use_srtp,
    hs.decode_uint16_list,
    hs.decode_opaque8,
    hs.decode_handshake_fragments,
]


@given(st.binary(max_size=200), st.sampled_from(DECODERS))
def test_decoders_raise_only_decode_error(data: bytes, decoder: object) -> None:
    try:
        decoder(data)  # type: ignore[operator]
    except DecodeError:
        pass


@given(st.integers(min_value=0, max_value=400), st.data())
def test_mutated_client_hello_only_decode_error(position: int, data: st.DataObject) -> None:
    encoded = bytearray(hs.encode_client_hello(_hello()))
    position %= len(encoded)
    encoded[position] = data.draw(st.integers(min_value=0, max_value=255))
    cut = data.draw(st.integers(min_value=0, max_value=len(encoded)))
    try:
        hs.decode_client_hello(bytes(encoded[:cut]))
    except DecodeError:
        pass


@given(
    st.binary(min_size=32, max_size=32),
    st.binary(max_size=32),
    st.binary(max_size=255),
    st.lists(st.integers(min_value=0, max_value=0xFFFF), min_size=1, max_size=20),
    st.dictionaries(st.integers(min_value=0, max_value=0xFFFF), st.binary(max_size=40), max_size=6),
)
def test_client_hello_round_trip_property(
    random: bytes, session_id: bytes, cookie: bytes, suites: list[int], extensions: dict[int, bytes]
) -> None:
    hello = hs.ClientHello(
        client_version=0xFEFD,
        random=random,
        session_id=session_id,
        cookie=cookie,
        cipher_suites=suites,
        compression_methods=b"\x00",
        extensions=list(extensions.items()),
    )
    assert hs.decode_client_hello(hs.encode_client_hello(hello)) == hello
