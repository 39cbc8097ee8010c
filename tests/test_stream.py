"""Tests of qotp.stream: half-close phases of both directions and the stream table."""

from __future__ import annotations

import pytest
from sender import Sender

from qotp.errors import LocalProtocolError
from qotp.recv import ReceiveBuffer
from qotp.stream import (
    DirectionPhase,
    StreamPhase,
    StreamState,
    StreamTable,
)


def test_new_stream_is_open_both_ways() -> None:
    state = StreamState(3)
    assert state.phase is StreamPhase.OPEN
    assert state.can_write and not state.at_eof and not state.is_closed


def test_local_close_first() -> None:
    state = StreamState(1)
    state.close_send(100)
    assert state.phase is StreamPhase.HALF_CLOSED_LOCAL
    assert state.send_phase is DirectionPhase.CLOSING and not state.can_write
    state.close_send(100)  # idempotent
    state.on_send_finished()
    assert state.send_phase is DirectionPhase.CLOSED
    assert state.phase is StreamPhase.HALF_CLOSED_LOCAL
    state.on_peer_close(40)
    assert state.phase is StreamPhase.CLOSING
    state.on_eof()
    assert state.phase is StreamPhase.CLOSED and state.is_closed


def test_remote_close_first_keeps_our_send_side_open() -> None:
    state = StreamState(1)
    state.on_peer_close(50)
    assert state.phase is StreamPhase.HALF_CLOSED_REMOTE
    assert state.can_write
    state.on_peer_close(50)
    state.on_eof()
    assert state.at_eof and state.phase is StreamPhase.HALF_CLOSED_REMOTE
    state.close_send(10)
    assert state.phase is StreamPhase.CLOSING
    state.on_send_finished()
    assert state.phase is StreamPhase.CLOSED


def test_peer_close_at_zero_is_eof_at_once() -> None:
    state = StreamState(1)
    state.on_peer_close(0)
    assert state.recv_phase is DirectionPhase.CLOSED


def test_misuse_raises_local_protocol_error() -> None:
    state = StreamState(1)
    with pytest.raises(LocalProtocolError):
        state.on_send_finished()
    with pytest.raises(LocalProtocolError):
        state.on_eof()
    state.close_send(5)
    with pytest.raises(LocalProtocolError):
        state.close_send(6)


def test_table_tracks_closed_streams() -> None:
    table = StreamTable()
    first, created = table.open(1)
    assert created
    again, created = table.open(1)
    assert again is first and not created
    second, _ = table.open(2)
    assert len(table) == 2 and 1 in table and table.ids() == [1, 2]
    second.on_peer_close(0)
    second.close_send(0)
    second.on_send_finished()
    assert table.closed_ids() == [2]
    assert table.remove(2) is second
    assert table.get(2) is None
    with pytest.raises(LocalProtocolError):
        table.open(-1)


def test_table_counts_open_streams_per_opener() -> None:
    table = StreamTable()
    table.open(1)
    ours, _ = table.open(2)
    theirs, _ = table.open(3, by_peer=True)
    assert not ours.opened_by_peer and theirs.opened_by_peer
    assert (table.local_count, table.peer_count) == (2, 1)
    # An existing stream keeps its opener.
    assert table.open(3)[0] is theirs and table.peer_count == 1
    table.remove(3)
    table.remove(3)
    table.remove(1)
    assert (table.local_count, table.peer_count) == (1, 0)


def test_close_handshake_through_the_buffers() -> None:
    """A writes and closes; B answers and closes: the order the SPEC describes."""
    a_send, b_send = Sender(), Sender()
    a_recv, b_recv = ReceiveBuffer(), ReceiveBuffer()
    a_state, b_state = StreamState(0), StreamState(0)

    a_send.write(0, b"x" * 100)
    a_state.close_send(a_send.close(0))
    packet = a_send.next_packet(1, budget=1369, rto_ns=10**8)
    assert packet is not None and packet.is_close
    b_recv.insert(0, packet.offset, bytes(packet.data), is_close=True, now=0)
    close_offset = b_recv.close_offset(0)
    assert close_offset == 100
    b_state.on_peer_close(close_offset)
    assert b_state.phase is StreamPhase.HALF_CLOSED_REMOTE
    assert b_recv.read(0) == b"x" * 100 and b_recv.at_eof(0)
    b_state.on_eof()

    b_send.write(0, b"y" * 50)
    b_state.close_send(b_send.close(0))
    answer = b_send.next_packet(3, budget=1369, rto_ns=10**8, ack_offset=0)
    assert answer is not None and answer.is_close and answer.offset == 0
    ack = b_recv.pop_ack()
    assert ack is not None
    result = a_send.on_ack(*ack, now=4)
    assert result.send_finished
    a_state.on_send_finished()
    a_recv.insert(0, answer.offset, bytes(answer.data), is_close=answer.is_close, now=0)
    a_state.on_peer_close(50)
    a_recv.read(0)
    assert a_recv.at_eof(0)
    a_state.on_eof()
    assert a_state.is_closed
    reply_ack = a_recv.pop_ack()
    assert reply_ack == (0, 0, 50)
    assert b_send.on_ack(*reply_ack, now=5).send_finished
    b_state.on_send_finished()
    assert b_state.is_closed
