"""DTLS 1.3 message and extension codecs: RFC 8448 bodies, round trips, and garbage."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dtls import messages13 as m
from dtls.errors import DecodeError

VECTORS = json.loads((Path(__file__).parent / "vectors" / "rfc8448.json").read_text())
MESSAGES = VECTORS["simple_1rtt"]["messages"]


def _body(name: str, msg_type: int) -> bytes:
    raw = bytes.fromhex(MESSAGES[name])
    assert raw[0] == msg_type and int.from_bytes(raw[1:4], "big") == len(raw) - 4
    return raw[4:]


def test_rfc8448_bodies_decode_and_reencode() -> None:
    extensions = m.decode_extension_block(_body("encrypted_extensions", 8))
    assert [ext for ext, _ in extensions] == [10, 28, 0]
    assert m.encode_extension_block(extensions) == _body("encrypted_extensions", 8)

    certificate = m.decode_certificate13(_body("certificate", 11))
    assert certificate.request_context == b"" and len(certificate.entries) == 1
    assert certificate.entries[0].certificate[:2] == b"\x30\x82"
    assert m.encode_certificate13(certificate) == _body("certificate", 11)

    verify = m.decode_certificate_verify(_body("certificate_verify", 15))
    assert verify.scheme == 0x0804 and len(verify.signature) == 128
    assert m.encode_certificate_verify(verify) == _body("certificate_verify", 15)

    ticket = m.decode_new_session_ticket13(_body("new_session_ticket", 4))
    assert (ticket.lifetime_seconds, ticket.age_add, ticket.nonce) == (30, 0xFAD6AAC5, b"\0\0")
    assert m.decode_early_data_indication(dict(ticket.extensions)[42], in_ticket=True) == 1024
    assert m.encode_new_session_ticket13(ticket) == _body("new_session_ticket", 4)

    finished = _body("server_finished", 20)
    assert m.decode_finished(finished, 32) == finished
    with pytest.raises(DecodeError):
        m.decode_finished(finished, 48)


def test_tls_form_and_message_hash() -> None:
    raw = bytes.fromhex(MESSAGES["server_finished"])
    assert m.tls_handshake(20, raw[4:]) == raw
    assert m.message_hash(b"\xaa" * 32) == b"\xfe\x00\x00\x20" + b"\xaa" * 32


_bytes = st.binary(max_size=40)
_nonempty = st.binary(min_size=1, max_size=40)
_u16 = st.integers(min_value=0, max_value=0xFFFF)
_u32 = st.integers(min_value=0, max_value=0xFFFFFFFF)
_u64 = st.integers(min_value=0, max_value=2**64 - 1)
_extensions = st.dictionaries(_u16, _bytes, max_size=4).map(lambda d: list(d.items()))


@given(st.lists(_u16, min_size=1, max_size=20))
def test_supported_versions_round_trip(versions: list[int]) -> None:
    assert (
        m.decode_supported_versions_client(m.encode_supported_versions_client(versions)) == versions
    )


@given(st.dictionaries(_u16, _nonempty, max_size=4))
def test_key_share_round_trip(shares: dict[int, bytes]) -> None:
    entries = list(shares.items())
    assert m.decode_key_share_client(m.encode_key_share_client(entries)) == entries
    for group, key in entries:
        assert m.decode_key_share_server(m.encode_key_share_server(group, key)) == (group, key)
        assert m.decode_key_share_hello_retry(m.encode_key_share_hello_retry(group)) == group


def test_key_share_refuses_a_group_twice() -> None:
    with pytest.raises(DecodeError):
        m.decode_key_share_client(m.encode_key_share_client([(29, b"a"), (29, b"b")]))


@given(
    st.lists(st.tuples(_nonempty, _u32), min_size=1, max_size=3),
    st.data(),
)
def test_pre_shared_key_round_trip(
    identities: list[tuple[bytes, int]], data: st.DataObject
) -> None:
    binders = [data.draw(st.binary(min_size=32, max_size=48)) for _ in identities]
    offered = m.OfferedPsks(identities=identities, binders=binders)
    encoded = m.encode_pre_shared_key_client(offered)
    assert m.decode_pre_shared_key_client(encoded) == offered
    assert encoded.endswith(m.binders_block(binders))


@given(_bytes, st.lists(st.tuples(_nonempty, _extensions), max_size=3))
def test_certificate_round_trip(
    context: bytes, entries: list[tuple[bytes, list[tuple[int, bytes]]]]
) -> None:
    message = m.Certificate13(
        request_context=context,
        entries=[m.CertificateEntry(certificate=c, extensions=e) for c, e in entries],
    )
    assert m.decode_certificate13(m.encode_certificate13(message)) == message


@given(_bytes, _extensions)
def test_certificate_request_round_trip(
    context: bytes, extensions: list[tuple[int, bytes]]
) -> None:
    message = m.CertificateRequest13(request_context=context, extensions=extensions)
    assert m.decode_certificate_request13(m.encode_certificate_request13(message)) == message


@given(_u32, _u32, _bytes, _nonempty, _extensions)
def test_new_session_ticket_round_trip(
    lifetime: int, age_add: int, nonce: bytes, ticket: bytes, extensions: list[tuple[int, bytes]]
) -> None:
    message = m.NewSessionTicket13(
        lifetime_seconds=lifetime,
        age_add=age_add,
        nonce=nonce,
        ticket=ticket,
        extensions=extensions,
    )
    assert m.decode_new_session_ticket13(m.encode_new_session_ticket13(message)) == message


@given(st.lists(st.builds(m.RecordNumber, _u64, _u64), max_size=30))
def test_ack_round_trip_sorted(numbers: list[m.RecordNumber]) -> None:
    assert m.decode_ack(m.encode_ack(numbers)) == sorted(numbers)


@given(st.lists(_nonempty, max_size=5), st.sampled_from(list(m.ConnectionIdUsage)))
def test_new_connection_id_round_trip(cids: list[bytes], usage: m.ConnectionIdUsage) -> None:
    message = m.NewConnectionId(connection_ids=cids, usage=usage)
    assert m.decode_new_connection_id(m.encode_new_connection_id(message)) == message


def test_small_messages() -> None:
    for request in m.KeyUpdateRequest:
        assert m.decode_key_update(m.encode_key_update(request)) is request
    assert m.decode_request_connection_id(m.encode_request_connection_id(3)) == 3
    assert m.decode_cookie(m.encode_cookie(b"c" * 100)) == b"c" * 100
    assert m.decode_psk_key_exchange_modes(m.encode_psk_key_exchange_modes([1])) == [1]
    assert m.decode_supported_versions_server(m.encode_supported_versions_server(0xFEFC)) == 0xFEFC
    assert m.decode_pre_shared_key_server(m.encode_pre_shared_key_server(0)) == 0
    assert m.decode_early_data_indication(b"", in_ticket=False) is None
    assert m.decode_certificate_authorities(m.encode_certificate_authorities([b"abc"])) == [b"abc"]
    for bad in (b"", b"\x02", b"\x00\x00"):
        with pytest.raises(DecodeError):
            m.decode_key_update(bad)


DECODERS: list[Callable[[bytes], object]] = [
    m.decode_extension_block,
    m.decode_supported_versions_client,
    m.decode_supported_versions_server,
    m.decode_key_share_client,
    m.decode_key_share_server,
    m.decode_key_share_hello_retry,
    m.decode_cookie,
    m.decode_psk_key_exchange_modes,
    m.decode_pre_shared_key_client,
    m.decode_pre_shared_key_server,
    lambda data: m.decode_early_data_indication(data, in_ticket=True),
    m.decode_certificate_authorities,
    m.decode_certificate13,
    m.decode_certificate_request13,
    m.decode_certificate_verify,
    lambda data: m.decode_finished(data, 32),
    m.decode_new_session_ticket13,
    m.decode_key_update,
    m.decode_request_connection_id,
    m.decode_new_connection_id,
    m.decode_ack,
]


@settings(max_examples=300)
@given(st.sampled_from(DECODERS), st.binary(max_size=120))
def test_decoders_raise_only_decode_error(decoder: Callable[[bytes], object], data: bytes) -> None:
    try:
        decoder(data)
    except DecodeError:
        pass
