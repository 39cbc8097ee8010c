"""Record framing and the replay window (RFC 6347 4.1, 4.1.2.6)."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from dtls.records import (
    DTLS_1_2,
    REPLAY_WINDOW_SIZE,
    ContentType,
    ReplayWindow,
    decode_datagram,
    encode_cid_record_header,
    encode_record_header,
)


def test_header_layout_is_rfc6347() -> None:
    header = encode_record_header(ContentType.handshake, DTLS_1_2, 1, 0x0000_1234_5678, 5)
    assert header.hex() == "16fefd" + "0001" + "000012345678" + "0005"


def test_several_records_per_datagram() -> None:
    first = encode_record_header(ContentType.handshake, DTLS_1_2, 0, 7, 3) + b"abc"
    second = encode_record_header(ContentType.alert, DTLS_1_2, 1, 2**48 - 1, 2) + b"\x01\x00"
    records, junk = decode_datagram(first + second)
    assert junk == 0
    assert [(r.content_type, r.epoch, r.sequence_number, r.payload) for r in records] == [
        (22, 0, 7, b"abc"),
        (21, 1, 2**48 - 1, b"\x01\x00"),
    ]


def test_truncated_record_stops_parse_and_is_counted() -> None:
    good = encode_record_header(ContentType.handshake, DTLS_1_2, 0, 1, 3) + b"abc"
    bad = encode_record_header(ContentType.handshake, DTLS_1_2, 0, 2, 10) + b"short"
    records, junk = decode_datagram(good + bad)
    assert len(records) == 1
    assert junk == len(bad)


def test_cid_record_needs_known_cid_length() -> None:
    record = encode_cid_record_header(DTLS_1_2, 1, 9, b"\xaa\xbb", 2) + b"zz"
    assert decode_datagram(record, 0)[0] == []
    (parsed,), junk = decode_datagram(record, 2)
    assert junk == 0
    assert parsed.connection_id == b"\xaa\xbb"
    assert parsed.payload == b"zz"
    assert parsed.content_type == ContentType.tls12_cid


def test_replay_window_rejects_duplicates_and_old() -> None:
    window = ReplayWindow()
    for sequence in (5, 3, 4, 100):
        assert window.is_fresh(sequence)
        window.mark(sequence)
    assert not window.is_fresh(5)
    assert not window.is_fresh(100)
    assert window.is_fresh(99)
    assert window.is_fresh(100 - REPLAY_WINDOW_SIZE + 1)
    assert not window.is_fresh(100 - REPLAY_WINDOW_SIZE)
    assert not window.is_fresh(3)  # left of the window now


def test_replay_window_only_moves_on_mark() -> None:
    window = ReplayWindow()
    assert window.is_fresh(1000)
    assert window.is_fresh(1)  # checking does not move the window
    window.mark(1)
    assert not window.is_fresh(1)


@given(st.binary(max_size=300), st.integers(min_value=0, max_value=20))
def test_decode_never_raises(data: bytes, cid_length: int) -> None:
    records, junk = decode_datagram(data, cid_length)
    assert junk >= 0
    assert sum(len(r.header) + len(r.payload) for r in records) + junk == len(data)


def test_replay_window_big_jump_is_cheap() -> None:
    window = ReplayWindow()
    window.mark(5)
    window.mark(2**48 - 1)
    assert not window.is_fresh(2**48 - 1)
    assert window.is_fresh(2**48 - 2)
    assert not window.is_fresh(5)


def test_replay_window_of_another_size() -> None:
    window = ReplayWindow(1024)
    window.mark(2000)
    assert window.is_fresh(2000 - 1023)
    assert not window.is_fresh(2000 - 1024)
    window.mark(1500)
    assert not window.is_fresh(1500)
    window.mark(2600)  # shifts by 600: 1500 still inside, 1400 not
    assert not window.is_fresh(1500)
    assert window.is_fresh(1700)
    assert not window.is_fresh(2600 - 1024)
