"""Tests of qotp.recv: reassembly, dedup, contradicting overlaps, close offsets, ACK queue."""

from __future__ import annotations

import gc
import random
import tracemalloc

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from qotp.errors import LocalProtocolError, QotpError, RemoteProtocolError
from qotp.payload import PacketKey
from qotp.recv import (
    IN_ORDER_RESERVE_BYTES,
    PEER_RETRANSMISSION_SPAN_NS,
    RECV_BUFFER_BYTES,
    STREAM_TOMBSTONE_LIFETIME_NS,
    CloseOffsetError,
    InsertResult,
    OverlapMismatchError,
    ReceiveBuffer,
    StreamIntegrityError,
    StreamTombstones,
)

DATA = bytes(range(256)) * 40
SECOND = 1_000_000_000
LIFETIME = STREAM_TOMBSTONE_LIFETIME_NS
#: The longest a tombstone may outlive its lifetime (one generation).
GENERATION = STREAM_TOMBSTONE_LIFETIME_NS // 8


def drain_acks(buffer: ReceiveBuffer) -> list[PacketKey]:
    acks = []
    while (ack := buffer.pop_ack()) is not None:
        acks.append(ack)
    return acks


def test_in_order_data_is_readable_and_acked_with_its_exact_key() -> None:
    buffer = ReceiveBuffer()
    assert buffer.insert(7, 0, DATA[:100], now=0) is InsertResult.ACCEPTED
    assert buffer.insert(7, 100, DATA[100:250], now=0) is InsertResult.ACCEPTED
    assert buffer.readable(7) == 250
    assert buffer.window == RECV_BUFFER_BYTES - 250
    assert drain_acks(buffer) == [(7, 0, 100), (7, 100, 150)]
    assert buffer.read(7, 30) == DATA[:30]
    assert buffer.read(7) == DATA[30:250]
    assert buffer.read(7) == b""
    assert buffer.window == RECV_BUFFER_BYTES
    assert buffer.read_offset(7) == 250


def test_read_returns_bytes_even_for_a_single_view_chunk() -> None:
    buffer = ReceiveBuffer()
    payload = b"header" + DATA[:50]
    buffer.insert(1, 0, memoryview(payload)[6:], now=0)
    data = buffer.read(1)
    assert type(data) is bytes
    assert data == DATA[:50]


def test_writable_views_are_copied_so_the_caller_may_reuse_them() -> None:
    buffer = ReceiveBuffer()
    scratch = bytearray(DATA[:20])
    buffer.insert(1, 0, memoryview(scratch), now=0)
    buffer.insert(1, 40, memoryview(scratch), now=0)  # out of order, also copied
    scratch[:] = bytes(20)
    buffer.insert(1, 20, DATA[:20], now=0)
    assert buffer.read(1) == DATA[:20] * 3


def test_each_ack_names_the_streams_previous_ack_for_its_repeat() -> None:
    buffer = ReceiveBuffer()
    for offset in (0, 100, 200):
        buffer.insert(3, offset, DATA[offset : offset + 100], now=0)
    assert buffer.pop_ack() == (3, 0, 100)
    assert buffer.repeat_offset == -1
    assert buffer.pop_ack() == (3, 100, 100)
    assert (buffer.repeat_offset, buffer.repeat_length) == (0, 100)


def test_an_ack_put_back_repeats_what_it_repeated_before() -> None:
    buffer = ReceiveBuffer()
    for offset in (0, 100):
        buffer.insert(3, offset, DATA[offset : offset + 100], now=0)
    buffer.pop_ack()
    ack = buffer.pop_ack()
    assert ack == (3, 100, 100)
    buffer.return_ack(ack)
    assert buffer.pop_ack() == ack
    assert (buffer.repeat_offset, buffer.repeat_length) == (0, 100)


def test_out_of_order_segments_are_reassembled() -> None:
    buffer = ReceiveBuffer()
    assert buffer.insert(1, 200, DATA[200:300], now=0) is InsertResult.ACCEPTED
    assert buffer.insert(1, 100, DATA[100:200], now=0) is InsertResult.ACCEPTED
    assert buffer.readable(1) == 0
    assert buffer.buffered_bytes == 200
    buffer.insert(1, 0, DATA[:100], now=0)
    assert buffer.readable(1) == 300
    assert buffer.read(1) == DATA[:300]
    assert buffer.buffered_bytes == 0


def test_duplicates_are_acked_again_but_stored_once() -> None:
    buffer = ReceiveBuffer()
    buffer.insert(1, 0, DATA[:100], now=0)
    drain_acks(buffer)
    assert buffer.insert(1, 0, DATA[:100], now=0) is InsertResult.DUPLICATE
    assert drain_acks(buffer) == [(1, 0, 100)]
    buffer.insert(1, 500, DATA[500:600], now=0)
    assert buffer.insert(1, 500, DATA[500:600], now=0) is InsertResult.DUPLICATE
    assert buffer.insert(1, 520, DATA[520:560], now=0) is InsertResult.DUPLICATE
    assert buffer.buffered_bytes == 200
    assert buffer.duplicate_packets == 3


def test_identical_acks_waiting_in_the_queue_are_sent_once() -> None:
    buffer = ReceiveBuffer()
    buffer.insert(1, 0, DATA[:10], now=0)
    buffer.insert(1, 0, DATA[:10], now=0)
    buffer.insert(1, 0, DATA[:10], now=0)
    assert drain_acks(buffer) == [(1, 0, 10)]


def test_data_already_read_counts_as_duplicate_without_comparison() -> None:
    buffer = ReceiveBuffer()
    buffer.insert(1, 0, DATA[:100], now=0)
    buffer.read(1)
    # The bytes are gone; the reference cannot check them either.
    assert buffer.insert(1, 0, b"x" * 100, now=0) is InsertResult.DUPLICATE


def test_partial_overlaps_store_only_new_bytes() -> None:
    buffer = ReceiveBuffer()
    buffer.insert(1, 0, DATA[:100], now=0)
    buffer.insert(1, 300, DATA[300:400], now=0)
    buffer.insert(1, 500, DATA[500:600], now=0)
    # Covers the readable tail, a gap, a segment, a gap and part of a segment.
    assert buffer.insert(1, 50, DATA[50:550], now=0) is InsertResult.ACCEPTED
    assert buffer.buffered_bytes == 600
    assert buffer.read(1) == DATA[:600]


def test_a_longer_segment_at_the_same_offset_extends_the_shorter_one() -> None:
    buffer = ReceiveBuffer()
    buffer.insert(1, 100, DATA[100:150], now=0)
    buffer.insert(1, 100, DATA[100:300], now=0)
    buffer.insert(1, 0, DATA[:100], now=0)
    assert buffer.read(1) == DATA[:300]


@pytest.mark.parametrize(
    ("stored", "incoming_offset", "incoming"),
    [
        ((0, DATA[:100]), 50, b"!" + DATA[51:120]),  # against readable bytes
        ((200, DATA[200:300]), 150, DATA[150:250] + b"!"),  # successor overlap
        ((200, DATA[200:300]), 250, b"!" + DATA[251:320]),  # predecessor overlap
        ((200, DATA[200:300]), 150, DATA[150:200] + b"!" + DATA[201:320]),  # covers segment
        ((200, DATA[200:300]), 200, DATA[200:299] + b"!"),  # same offset, same length
    ],
)
def test_contradicting_overlap_ends_the_connection_not_the_process(
    stored: tuple[int, bytes], incoming_offset: int, incoming: bytes
) -> None:
    buffer = ReceiveBuffer()
    buffer.insert(1, *stored, now=0)
    before = buffer.buffered_bytes
    with pytest.raises(OverlapMismatchError) as caught:
        buffer.insert(1, incoming_offset, incoming, now=0)
    assert isinstance(caught.value, RemoteProtocolError)
    assert caught.value.stream_id == 1
    assert buffer.buffered_bytes == before


def test_ping_is_acked_with_length_zero() -> None:
    buffer = ReceiveBuffer()
    assert buffer.insert(3, 0, b"", now=0) is InsertResult.ACCEPTED
    assert buffer.insert(3, 0, b"", now=0) is InsertResult.ACCEPTED
    assert drain_acks(buffer) == [(3, 0, 0)]
    assert buffer.close_offset(3) is None


def test_close_with_data_sets_the_close_offset_after_the_data() -> None:
    buffer = ReceiveBuffer()
    buffer.insert(1, 0, DATA[:100], now=0)
    buffer.insert(1, 100, DATA[100:150], is_close=True, now=0)
    assert buffer.close_offset(1) == 150
    assert not buffer.at_eof(1)
    assert buffer.read(1, 149) == DATA[:149]
    assert not buffer.at_eof(1)
    assert buffer.read(1) == DATA[149:150]
    assert buffer.at_eof(1)
    assert drain_acks(buffer) == [(1, 0, 100), (1, 100, 50)]


def test_close_can_arrive_before_the_data_it_ends() -> None:
    buffer = ReceiveBuffer()
    buffer.insert(1, 100, b"", is_close=True, now=0)
    assert buffer.close_offset(1) == 100
    buffer.insert(1, 0, DATA[:100], now=0)
    assert buffer.read(1) == DATA[:100]
    assert buffer.at_eof(1)
    assert drain_acks(buffer) == [(1, 100, 0), (1, 0, 100)]


def test_bare_close_at_zero_is_eof_at_once() -> None:
    buffer = ReceiveBuffer()
    buffer.insert(9, 0, b"", is_close=True, now=0)
    assert buffer.at_eof(9)
    assert buffer.insert(9, 0, b"", is_close=True, now=0) is InsertResult.DUPLICATE


@pytest.mark.parametrize(
    "second",
    [
        (120, b"", True),  # another close offset
        (90, DATA[90:110], False),  # data past the close offset
        (100, b"x", False),  # data starting at the close offset
    ],
)
def test_contradicting_close_information_raises(second: tuple[int, bytes, bool]) -> None:
    buffer = ReceiveBuffer()
    buffer.insert(1, 0, DATA[:100], is_close=True, now=0)
    offset, data, is_close = second
    with pytest.raises(CloseOffsetError):
        buffer.insert(1, offset, data, is_close=is_close, now=0)


def test_close_below_received_data_raises() -> None:
    buffer = ReceiveBuffer()
    buffer.insert(1, 500, DATA[500:600], now=0)
    with pytest.raises(CloseOffsetError):
        buffer.insert(1, 0, DATA[:100], is_close=True, now=0)


def test_ping_after_the_close_offset_is_just_acked() -> None:
    buffer = ReceiveBuffer()
    buffer.insert(1, 0, DATA[:10], is_close=True, now=0)
    assert buffer.insert(1, 10, b"", now=0) is InsertResult.ACCEPTED


def test_full_buffer_drops_without_ack_but_still_acks_duplicates() -> None:
    buffer = ReceiveBuffer(capacity=150)
    buffer.insert(1, 0, DATA[:100], now=0)
    drain_acks(buffer)
    assert buffer.window == 50
    assert buffer.insert(1, 100, DATA[100:200], now=0) is InsertResult.BUFFER_FULL
    assert buffer.insert(2, 10, DATA[:51], now=0) is InsertResult.BUFFER_FULL
    assert buffer.pending_acks == 0
    assert buffer.insert(1, 0, DATA[:100], now=0) is InsertResult.DUPLICATE
    assert drain_acks(buffer) == [(1, 0, 100)]
    assert buffer.insert(1, 100, DATA[100:150], now=0) is InsertResult.ACCEPTED
    assert buffer.window == 0
    assert buffer.dropped_full == 2
    buffer.read(1, 60)
    assert buffer.window == 60


def test_full_buffer_does_not_record_a_close() -> None:
    buffer = ReceiveBuffer(capacity=10)
    assert buffer.insert(1, 5, DATA[:20], is_close=True, now=0) is InsertResult.BUFFER_FULL
    assert buffer.close_offset(1) is None


def test_in_order_bytes_may_use_the_reserve_when_out_of_order_data_fills_the_buffer() -> None:
    buffer = ReceiveBuffer(capacity=100)
    assert buffer.insert(1, 10, DATA[10:110], now=0) is InsertResult.ACCEPTED
    assert buffer.window == 0
    # Without the reserve this stream could never make progress again.
    assert buffer.insert(1, 0, DATA[:10], now=0) is InsertResult.ACCEPTED
    assert buffer.buffered_bytes == 110
    assert buffer.window == 0
    # Only while nothing is readable on the stream, and only in order.
    assert buffer.insert(1, 110, DATA[110:120], now=0) is InsertResult.BUFFER_FULL
    assert buffer.insert(2, 5, DATA[:10], now=0) is InsertResult.BUFFER_FULL
    assert buffer.read(1) == DATA[:110]
    assert buffer.window == 100
    huge = ReceiveBuffer(capacity=10)
    assert huge.insert(1, 0, bytes(IN_ORDER_RESERVE_BYTES), now=0) is InsertResult.ACCEPTED
    assert huge.insert(2, 0, bytes(11), now=0) is InsertResult.BUFFER_FULL
    assert huge.insert(2, 0, bytes(10), now=0) is InsertResult.ACCEPTED


def test_finished_stream_acks_and_ignores_late_packets() -> None:
    buffer = ReceiveBuffer()
    buffer.insert(1, 0, DATA[:10], is_close=True, now=0)
    buffer.read(1)
    buffer.finish_stream(1, now=0)
    drain_acks(buffer)
    assert buffer.insert(1, 0, DATA[:10], is_close=True, now=0) is InsertResult.DUPLICATE
    assert drain_acks(buffer) == [(1, 0, 10)]
    assert buffer.readable(1) == 0
    assert buffer.at_eof(1)
    assert not buffer.has_stream(1)


def test_ping_on_an_unknown_stream_is_acked_without_keeping_state() -> None:
    buffer = ReceiveBuffer()
    assert buffer.insert(4, 9, b"", may_open_stream=False, now=0) is InsertResult.ACCEPTED
    assert drain_acks(buffer) == [(4, 9, 0)]
    assert not buffer.has_stream(4)


def test_a_new_stream_can_be_refused_without_ack_or_state() -> None:
    buffer = ReceiveBuffer()
    buffer.insert(1, 0, DATA[:10], now=0)
    drain_acks(buffer)
    for offset, data, is_close in ((0, DATA[:10], False), (10, b"", True), (50, DATA[:5], True)):
        result = buffer.insert(2, offset, data, is_close=is_close, may_open_stream=False, now=0)
        assert result is InsertResult.REFUSED
    assert buffer.pending_acks == 0 and not buffer.has_stream(2) and buffer.buffered_bytes == 10
    # Only *new* streams are refused; a known one takes data as ever.
    assert buffer.insert(1, 10, DATA[10:20], may_open_stream=False, now=0) is InsertResult.ACCEPTED
    # The retransmission, once allowed, opens the stream.
    assert buffer.insert(2, 0, DATA[:10], now=0) is InsertResult.ACCEPTED
    assert buffer.read(2) == DATA[:10]


def test_a_new_stream_that_does_not_fit_leaves_no_state() -> None:
    buffer = ReceiveBuffer(capacity=10)
    buffer.insert(1, 0, bytes(IN_ORDER_RESERVE_BYTES), now=0)  # full, reserve included
    assert buffer.insert(2, 0, DATA[:11], now=0) is InsertResult.BUFFER_FULL
    assert buffer.insert(3, 5, DATA[:5], is_close=True, now=0) is InsertResult.BUFFER_FULL
    assert buffer.has_stream(1) and not buffer.has_stream(2) and not buffer.has_stream(3)


def test_a_tombstone_outlives_the_peers_retransmissions_then_expires() -> None:
    # The peer's last copy of a packet leaves at most 62 s after the first.
    assert PEER_RETRANSMISSION_SPAN_NS == 62 * SECOND < LIFETIME
    buffer = ReceiveBuffer()
    buffer.insert(1, 0, DATA[:10], is_close=True, now=0)
    buffer.read(1)
    buffer.finish_stream(1, now=SECOND)
    drain_acks(buffer)
    late = SECOND + LIFETIME - 1
    assert buffer.insert(1, 0, DATA[:10], is_close=True, now=late) is InsertResult.DUPLICATE
    assert drain_acks(buffer) == [(1, 0, 10)]
    # That late copy renewed the tombstone: the peer was evidently still sending.
    assert buffer.is_finished(1, now=late + LIFETIME - 1)
    assert buffer.insert(1, 0, DATA[:10], now=late + LIFETIME - 1) is InsertResult.DUPLICATE
    gone = late + LIFETIME - 1 + LIFETIME + GENERATION
    assert not buffer.is_finished(1, now=gone)
    assert buffer.tombstone_count(gone) == 0
    # Now the id is a new stream.
    assert buffer.insert(1, 0, b"new", now=gone) is InsertResult.ACCEPTED
    assert buffer.read(1) == b"new"


def test_tombstones_keep_runs_of_ids_and_expire_generation_by_generation() -> None:
    tombstones = StreamTombstones()
    for stream_id in range(20_000):  # sequential ids: a run per generation
        tombstones.add(stream_id, now=0)
    assert len(tombstones) < 8192 and all(i in tombstones for i in (0, 8191, 8192, 19_999))
    assert 20_000 not in tombstones and -1 not in tombstones and "1" not in tombstones
    scattered = random.Random(3).sample(range(1 << 32), 3000)
    for index, stream_id in enumerate(scattered):
        tombstones.add(stream_id, now=index * SECOND // 100)  # 30 s: several generations
    assert all(stream_id in tombstones for stream_id in scattered)
    tombstones.expire(LIFETIME + GENERATION)
    assert 5 not in tombstones
    assert scattered[-1] in tombstones
    tombstones.expire(30 * SECOND + LIFETIME + GENERATION)
    assert len(tombstones) == 0
    with pytest.raises(LocalProtocolError):
        tombstones.add(1 << 32, now=0)


@settings(max_examples=100, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 40), st.integers(0, 40 * SECOND)), max_size=60))
def test_tombstones_live_at_least_the_lifetime_and_at_most_a_generation_more(
    additions: list[tuple[int, int]],
) -> None:
    tombstones = StreamTombstones()
    now = 0
    last_added: dict[int, int] = {}
    for stream_id, step in additions:
        now += step
        tombstones.add(stream_id, now)
        last_added[stream_id] = now
        tombstones.expire(now)
        for known, added in last_added.items():
            if now < added + LIFETIME:
                assert known in tombstones
            if now >= added + LIFETIME + GENERATION:
                assert known not in tombstones


@pytest.mark.parametrize("numbering", ["sequential", "random"])
def test_ten_thousand_finished_streams_cost_a_few_bytes_each(numbering: str) -> None:
    stream_ids = list(range(10_000))
    if numbering == "random":
        stream_ids = random.Random(5).sample(range(1 << 32), 10_000)
    buffer = ReceiveBuffer()
    buffer.insert(1 << 31, 0, DATA[:1], now=0)  # the streams' table exists before measuring
    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        for now, stream_id in enumerate(stream_ids):
            buffer.insert(stream_id, 0, DATA[:100], is_close=True, now=now)
            buffer.read(stream_id)
            buffer.finish_stream(stream_id, now=now)
            buffer.pop_ack()
        gc.collect()
        growth = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    # u32 ids in arrays (runs for consecutive ones); an open stream costs ~2 KB.
    assert growth < 10_000 * 16, growth
    assert all(buffer.at_eof(stream_id) for stream_id in stream_ids[::97])


def test_forget_stream_frees_its_bytes() -> None:
    buffer = ReceiveBuffer()
    buffer.insert(1, 0, DATA[:10], now=0)
    buffer.insert(1, 50, DATA[50:80], now=0)
    buffer.insert(2, 0, DATA[:5], now=0)
    assert buffer.forget_stream(1) == 40
    assert buffer.buffered_bytes == 5
    assert buffer.has_stream(2) and not buffer.has_stream(1)
    assert buffer.forget_stream(1) == 0


def test_offsets_beyond_48_bits_and_oversized_packets_are_rejected() -> None:
    buffer = ReceiveBuffer()
    with pytest.raises(RemoteProtocolError):
        buffer.insert(1, (1 << 48) - 5, DATA[:10], now=0)
    with pytest.raises(RemoteProtocolError):
        buffer.insert(1, 0, bytes(0x10000), now=0)
    buffer.insert(1, (1 << 48) - 10, DATA[:10], now=0)


def test_ack_queue_is_bounded() -> None:
    buffer = ReceiveBuffer(max_pending_acks=3)
    for index in range(5):
        buffer.insert(1, index * 10, DATA[:10], now=0)
    assert buffer.pending_acks == 3
    assert buffer.dropped_acks == 2


def test_many_in_order_chunks_compact_and_read_in_pieces() -> None:
    buffer = ReceiveBuffer()
    payload = random.Random(5).randbytes(100_000)
    result = bytearray()
    for offset in range(0, len(payload), 100):
        buffer.insert(4, offset, payload[offset : offset + 100], now=0)
        if offset % 3000 == 0:
            result += buffer.read(4, 1234)
    result += buffer.read(4, 777)
    result += buffer.read(4)
    assert bytes(result) == payload
    assert buffer.read_offset(4) == len(payload)
    assert buffer.buffered_bytes == 0


@st.composite
def segmentations(draw: st.DrawFn) -> tuple[bytes, list[tuple[int, int]]]:
    size = draw(st.integers(1, 3000))
    payload = draw(st.binary(min_size=size, max_size=size))
    cuts = sorted(set(draw(st.lists(st.integers(1, size - 1), max_size=30)))) if size > 1 else []
    bounds = [0, *cuts, size]
    pieces = [(bounds[i], bounds[i + 1]) for i in range(len(bounds) - 1)]
    # Retransmissions re-split differently: add random overlapping ranges.
    extra = draw(
        st.lists(
            st.tuples(st.integers(0, size - 1), st.integers(1, 400)).map(
                lambda item: (item[0], min(size, item[0] + item[1]))
            ),
            max_size=15,
        )
    )
    order = draw(st.permutations(pieces + extra))
    return payload, list(order)


@settings(max_examples=150, deadline=None)
@given(segmentations(), st.integers(0, 2**32 - 1), st.data())
def test_any_segmentation_order_and_duplication_reassembles_exactly(
    case: tuple[bytes, list[tuple[int, int]]], stream_id: int, data: st.DataObject
) -> None:
    payload, order = case
    buffer = ReceiveBuffer()
    result = bytearray()
    for start, end in order:
        is_close = end == len(payload) and data.draw(st.booleans())
        buffer.insert(stream_id, start, payload[start:end], is_close=is_close, now=0)
        if data.draw(st.booleans()):
            result += buffer.read(stream_id, data.draw(st.integers(-1, 500)))
        assert 0 <= buffer.buffered_bytes <= buffer.capacity
    result += buffer.read(stream_id)
    assert bytes(result) == payload
    assert buffer.buffered_bytes == 0


@settings(max_examples=200, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.integers(0, 3),
            st.integers(0, 600),
            st.binary(max_size=120),
            st.booleans(),
            st.booleans(),
        ),
        max_size=40,
    ),
    st.integers(50, 2000),
)
def test_arbitrary_packets_raise_only_our_errors_and_respect_capacity(
    packets: list[tuple[int, int, bytes, bool, bool]], capacity: int
) -> None:
    buffer = ReceiveBuffer(capacity=capacity)
    for stream_id, offset, payload, is_close, read in packets:
        try:
            buffer.insert(stream_id, offset, payload, is_close=is_close, now=0)
        except StreamIntegrityError:
            pass
        except QotpError:
            raise AssertionError("only integrity errors are expected here") from None
        if read:
            buffer.read(stream_id)
        assert 0 <= buffer.buffered_bytes <= capacity + IN_ORDER_RESERVE_BYTES
        assert buffer.window == max(0, capacity - buffer.buffered_bytes)
